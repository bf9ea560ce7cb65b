"""The IVR flow interpreter: runs a validated flow (ivr.flow) over a call and says where it ends.

How this works: ``run_flow`` starts at the flow's start node and runs one node after another.
Each node plays prompts or reads keys through the ``CallPort`` (the media side: an AGI session in
production, a script in tests), asks ``FlowServices`` for business facts (leader slot live, topic
switched on, order status, estimated wait, business hours, caller lists), appends a ``PathStep``
to the call's path and names the next node, until a node routes: a queue, a transfer to 110, a
callback request, or a hang-up. The result (``FlowResult``) is data; ``ivr.agi_port.apply_result``
turns it into the channel variables the dialplan reads.

Nothing escapes ``run_flow`` but cancellation:
- the caller hanging up (``CallerHungUp`` from the port) ends the run with kind ``hangup``;
- a prompt that fails to play (``MediaFailed``) is skipped in a play, queue, topic or hang-up
  node; in a menu or language node it takes ``on_timeout`` at once (choice ``error``); in an
  order-number entry it plays ``unavailable``; an emergency confirmation that fails declines;
- a service call that raises, answers something of the wrong type or takes over
  ``SERVICE_TIMEOUT`` seconds takes the node's safe branch: leader closed (fallback), topic off,
  order unavailable, no callback offer, business hours closed (the 7x24 side), no list boost;
- any other exception (a bug, the AGI connection lost) and a run over the step budget end in the
  flow's ``fallback_queue`` with choice ``error``: never dead air.
A validated flow has no loop, so a run visits each node at most once; the step budget (the
number of nodes unless given) also bounds a flow built without validation.

``flow_choice`` (HOTLINE_IVR_CHOICE) is the caller's decisions joined by '-': a menu's key or
``timeout``/``invalid``/``error``, then the self-service outcomes (``order_found``,
``order_not_found``, ``order_none``, ``order_unavailable``, ``order_error``, ``callback_yes``,
``callback_no``, ``transfer_yes``, ``transfer_no``), and ``hangup`` last when the caller hung
up; ``none`` when nothing was asked. Today's one-menu flow gives today's values ("1", "timeout",
"invalid", "error"). Keys typed for an order number never appear in the choice or the path.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Awaitable, Callable, Literal, Protocol

from ivr.flow import (PRIORITY_MAX, SERVICE_TIMEOUT, STATUS_RE, CallbackOfferNode, CallerListNode, EmergencyNode,
                      Flow, HangupNode, HoursNode, LanguageNode, LeaderNode, MenuNode, OrderStatusNode, PlayNode,
                      QueueNode, TopicNode)
from telephony.model import DIALLABLE_NUMBER, PHONE_NUMBER

log = logging.getLogger("hotline.ivr.flow")

_ORDER_DIGITS_RE = re.compile(r"[0-9]{1,20}")
CHOICE_MAX = 64


class CallerHungUp(Exception):
    """The caller hung up (raised by a CallPort)."""


class MediaFailed(Exception):
    """A prompt could not be played or keys read on a live channel (e.g. a missing sound)."""


class CallPort(Protocol):
    """The media side of one call."""

    async def play(self, audio: str, escape_keys: str = "") -> str | None:
        """Play a sound; return the key among ``escape_keys`` that interrupted it, or None."""

    async def read_digits(self, audio: str, timeout_ms: int, max_digits: int) -> str:
        """Play a sound and collect up to ``max_digits`` keys; '' when none came in time."""


class FlowServices(Protocol):
    """The business facts a flow asks for. Each may be async (awaited with a time limit) or plain."""

    async def leader_open(self, queue: str) -> bool: ...
    async def topic_active(self, topic: str, now: datetime) -> bool: ...
    async def order_status(self, order_no: str, caller_number: str) -> str | None: ...
    async def estimated_wait(self, queue: str) -> float | None: ...
    async def in_hours(self, calendar: str, now: datetime) -> bool: ...
    async def caller_lists(self, number: str) -> set[str]: ...


@dataclass(frozen=True)
class PathStep:
    """One node of the call's path: what happened there, and the menu key pressed, if any."""

    node: str
    type: str
    outcome: str
    key: str = ""


@dataclass(frozen=True)
class FlowResult:
    kind: Literal["queue", "transfer", "callback", "hangup"]
    queue: str | None           # queue: where to; transfer: the fallback if it fails; callback: whose wait
    priority: int               # QUEUE_PRIO, 0..10, caller-list boosts included
    target: str | None          # transfer: the number (110)
    path: tuple[PathStep, ...]
    flow_choice: str            # HOTLINE_IVR_CHOICE
    language: str | None        # HOTLINE_LANGUAGE, chosen in a language node or by a dialect queue
    steps: int                  # nodes visited
    by_caller: bool = False     # hangup: the caller hung up (not a hangup node)
    error: bool = False         # ended in the fallback queue after an error or the step budget


async def run_flow(flow: Flow, call: CallPort, services: FlowServices, *, caller: str | None,
                   now: datetime, service_timeout: float = SERVICE_TIMEOUT,
                   max_steps: int | None = None) -> FlowResult:
    """Run ``flow`` for one call. ``caller``: the calling number (anything that is not 3 to 20
    digits counts as unknown); ``now``: the time business hours and topics are judged at."""
    run = _Run(flow, call, services, caller, now, service_timeout)
    budget = max_steps if max_steps is not None else max(1, len(flow.nodes))
    return await run.go(budget)


class _Run:
    def __init__(self, flow: Flow, call: CallPort, services: FlowServices, caller: str | None,
                 now: datetime, service_timeout: float) -> None:
        self.flow = flow
        self.call = call
        self.services = services
        self.caller = caller if isinstance(caller, str) and PHONE_NUMBER.fullmatch(caller) else None
        self.now = now
        self.service_timeout = service_timeout
        self.path: list[PathStep] = []
        self.choices: list[str] = []
        self.boost = 0
        self.language: str | None = None
        self.pending: str | None = None    # a key pressed during a barge-in play, for the next node
        self.steps = 0

    async def go(self, budget: int) -> FlowResult:
        node_id, node_type = self.flow.start, "?"
        try:
            while True:
                if self.steps >= budget:
                    log.error("IVR flow %r: step budget of %d spent at node %r; fallback queue",
                              self.flow.name, budget, node_id)
                    return self._fallback()
                node = self.flow.nodes[node_id]
                node_type = node.type
                self.steps += 1
                pending, self.pending = self.pending, None
                handler: Callable[..., Awaitable[str | FlowResult]] = getattr(self, "_" + node.type)
                outcome = await handler(node_id, node, pending)
                if isinstance(outcome, FlowResult):
                    return outcome
                node_id = outcome
        except CallerHungUp:
            self._step(node_id, node_type, "hangup")
            self.choices.append("hangup")
            return self._result("hangup", None, by_caller=True)
        except Exception as exc:  # noqa: BLE001 - every failure still routes the caller
            log.error("IVR flow %r: node %r failed: %r; fallback queue", self.flow.name, node_id, exc)
            self._step(node_id, node_type, "error")
            return self._fallback()

    # results ---------------------------------------------------------------------------------

    def _step(self, node_id: str, node_type: str, outcome: str, key: str = "") -> None:
        self.path.append(PathStep(node_id, node_type, outcome, key))

    def _choice(self) -> str:
        text = ""
        for token in self.choices or ["none"]:
            joined = f"{text}-{token}" if text else token
            if len(joined) > CHOICE_MAX:
                break
            text = joined
        return text

    def _result(self, kind, queue: str | None, priority: int = 0, target: str | None = None, *,
                by_caller: bool = False, error: bool = False, choice: str | None = None) -> FlowResult:
        priority = max(0, min(PRIORITY_MAX, priority + self.boost)) if kind != "hangup" else 0
        return FlowResult(kind=kind, queue=queue, priority=priority, target=target, path=tuple(self.path),
                          flow_choice=choice or self._choice(), language=self.language, steps=self.steps,
                          by_caller=by_caller, error=error)

    def _fallback(self) -> FlowResult:
        return self._result("queue", self.flow.fallback_queue, error=True, choice="error")

    # media -----------------------------------------------------------------------------------

    async def _say(self, prompt: str, escape: str = "") -> tuple[bool, str | None]:
        """Play one prompt: (played, the escape key that interrupted it)."""
        audio = self.flow.prompts[prompt].audio
        try:
            key = await self.call.play(audio, escape)
        except MediaFailed as exc:
            log.warning("IVR flow %r: prompt %r (%s) failed: %s; going on", self.flow.name, prompt, audio, exc)
            return False, None
        if isinstance(key, str) and len(key) == 1 and key in escape:
            return True, key
        return True, None

    async def _read(self, prompt: str, timeout_ms: int, max_digits: int) -> str | None:
        """Play a prompt and read keys: the keys, '' for none, None when the prompt failed."""
        audio = self.flow.prompts[prompt].audio
        try:
            got = await self.call.read_digits(audio, timeout_ms, max_digits)
        except MediaFailed as exc:
            log.warning("IVR flow %r: reading keys after %r (%s) failed: %s", self.flow.name, prompt, audio, exc)
            return None
        return got if isinstance(got, str) else ""

    async def _ask(self, node: MenuNode | LanguageNode, valid, pending: str | None) -> tuple[str, str]:
        """One key of ``valid``, with retries: (choice token, key) where the key is '' unless valid."""
        last = "timeout"
        for attempt in range(1 + node.retries):
            if attempt == 0 and pending is not None:
                got = pending
            else:
                got = await self._read(node.prompt, node.timeout_ms, 1)
                if got is None:
                    return "error", ""
            if got == "":
                last = "timeout"
                continue
            if got in valid:
                return got, got
            last = "invalid"
            if node.invalid_prompt is not None:
                await self._say(node.invalid_prompt)
        return last, ""

    async def _service(self, node_id: str, what: str, call: Callable[[], Any]) -> tuple[bool, Any]:
        """Ask a service: (answered, answer). Exceptions and slow answers are (False, None)."""
        try:
            answer = call()
            if inspect.isawaitable(answer):
                answer = await asyncio.wait_for(answer, self.service_timeout)
            return True, answer
        except Exception as exc:  # noqa: BLE001 - the node's safe branch, whatever went wrong
            log.warning("IVR flow %r: node %r: %s failed (%s); safe branch", self.flow.name, node_id, what,
                        type(exc).__name__ if isinstance(exc, TimeoutError) else repr(exc))
            return False, None

    # nodes -----------------------------------------------------------------------------------

    async def _play(self, node_id: str, node: PlayNode, pending) -> str:
        escape = ""
        if node.barge_in:
            nxt = self.flow.nodes.get(node.next)
            if isinstance(nxt, MenuNode):
                escape = "".join(sorted(nxt.keys))
            elif isinstance(nxt, LanguageNode):
                escape = "".join(sorted(nxt.choices))
        failed = False
        for prompt in node.prompts:
            played, key = await self._say(prompt, escape)
            failed = failed or not played
            if key is not None:
                self.pending = key
                self._step(node_id, node.type, "key", key)
                return node.next
        self._step(node_id, node.type, "failed" if failed else "played")
        return node.next

    async def _choose(self, node_id: str, node: MenuNode | LanguageNode, valid, pending) -> tuple[str, str]:
        """Ask a menu or language node, record the choice and the step: (token, key or "")."""
        token, key = await self._ask(node, valid, pending)
        self.choices.append(token)
        self._step(node_id, node.type, "key" if key else token, key)
        return token, key

    @staticmethod
    def _no_choice(node: MenuNode | LanguageNode, token: str) -> str:
        return node.on_invalid if token == "invalid" and node.on_invalid is not None else node.on_timeout

    async def _menu(self, node_id: str, node: MenuNode, pending) -> str:
        token, key = await self._choose(node_id, node, node.keys, pending)
        return node.keys[key] if key else self._no_choice(node, token)

    async def _language(self, node_id: str, node: LanguageNode, pending) -> str:
        token, key = await self._choose(node_id, node, node.choices, pending)
        if not key:
            return self._no_choice(node, token)
        choice = node.choices[key]
        self.language = choice.language
        return choice.next

    async def _queue(self, node_id: str, node: QueueNode, pending) -> FlowResult:
        self._step(node_id, node.type, "route")
        if node.language is not None:
            self.language = node.language
        if node.announce is not None:
            await self._say(node.announce)
        return self._result("queue", node.queue, node.priority)

    async def _leader(self, node_id: str, node: LeaderNode, pending) -> str | FlowResult:
        answered, live = await self._service(node_id, "leader_open", lambda: self.services.leader_open(node.queue))
        if answered and live is True:
            self._step(node_id, node.type, "open")
            if node.announce is not None:
                await self._say(node.announce)
            return self._result("queue", node.queue, node.priority)
        self._step(node_id, node.type, "closed" if answered else "error")
        return node.fallback

    async def _topic(self, node_id: str, node: TopicNode, pending) -> str:
        answered, active = await self._service(
            node_id, "topic_active", lambda: self.services.topic_active(node.topic, self.now))
        if answered and active is True:
            self._step(node_id, node.type, "active")
            for prompt in node.prompts:
                await self._say(prompt)
            return node.active_next or node.next
        self._step(node_id, node.type, "inactive" if answered else "error")
        return node.next

    async def _emergency(self, node_id: str, node: EmergencyNode, pending) -> str | FlowResult:
        if node.confirm_key is None:
            self._step(node_id, node.type, "transfer")
            await self._say(node.prompt)
            return self._result("transfer", self.flow.fallback_queue, target=node.target)
        got = await self._read(node.prompt, node.timeout_ms, 1)
        if got == node.confirm_key:
            self.choices.append("transfer_yes")
            self._step(node_id, node.type, "transfer", got)
            return self._result("transfer", self.flow.fallback_queue, target=node.target)
        self.choices.append("transfer_no")
        self._step(node_id, node.type, "error" if got is None else ("declined" if got else "timeout"))
        if node.on_decline is None:   # only in a flow built without validation
            return self._fallback()
        return node.on_decline

    async def _order_status(self, node_id: str, node: OrderStatusNode, pending) -> str:
        sorry = node.unavailable or node.not_found
        if self.caller is None:     # only the calling number's own orders: no number, no look-up
            outcome = "unavailable"
            await self._say(sorry)
        else:
            outcome = "none"
            for _ in range(1 + node.retries):
                digits = await self._read(node.prompt, node.timeout_ms, node.max_digits)
                if digits is None:
                    outcome = "error"
                    await self._say(sorry)
                    break
                if digits == "":
                    outcome = "none"
                    continue
                if not _ORDER_DIGITS_RE.fullmatch(digits):
                    outcome = "not_found"
                    await self._say(node.not_found)
                    continue
                answered, status = await self._service(
                    node_id, "order_status", lambda: self.services.order_status(digits, self.caller))
                if answered and status is None:
                    outcome = "not_found"
                    await self._say(node.not_found)
                    continue
                prompt = node.status_prompts.get(status) if answered and isinstance(status, str) else None
                if prompt is None:
                    if answered:
                        log.warning("IVR flow %r: node %r: order status %r has no prompt", self.flow.name,
                                    node_id, status if isinstance(status, str) and STATUS_RE.fullmatch(status)
                                    else type(status).__name__)
                    outcome = "unavailable"
                    await self._say(sorry)
                    break
                outcome = "found"
                await self._say(prompt)
                break
        self.choices.append("order_" + outcome)
        self._step(node_id, node.type, outcome)
        return node.next

    async def _callback_offer(self, node_id: str, node: CallbackOfferNode, pending) -> str | FlowResult:
        if self.caller is None or not DIALLABLE_NUMBER.fullmatch(self.caller):
            # no number the callback desk can dial (withheld, or not plain digits): never promise one
            self._step(node_id, node.type, "no_number")
            return node.next
        answered, wait = await self._service(
            node_id, "estimated_wait", lambda: self.services.estimated_wait(node.queue))
        usable = (answered and isinstance(wait, (int, float)) and not isinstance(wait, bool)
                  and math.isfinite(wait) and wait >= 0)
        if not usable:
            self._step(node_id, node.type, "no_estimate" if answered else "error")
            return node.next
        if wait <= node.threshold_seconds:
            self._step(node_id, node.type, "short_wait")
            return node.next
        got = await self._read(node.prompt, node.timeout_ms, 1)
        if got == node.accept_key:
            self.choices.append("callback_yes")
            self._step(node_id, node.type, "accepted", got)
            if node.accepted_prompt is not None:
                try:
                    await self._say(node.accepted_prompt)
                except CallerHungUp:    # accepted: hanging up on the confirmation keeps the request
                    pass
            return self._result("callback", node.queue)
        self.choices.append("callback_no")
        self._step(node_id, node.type, "error" if got is None else ("declined" if got else "timeout"))
        return node.next

    async def _hours(self, node_id: str, node: HoursNode, pending) -> str:
        answered, inside = await self._service(
            node_id, "in_hours", lambda: self.services.in_hours(node.calendar, self.now))
        if answered and inside is True:
            self._step(node_id, node.type, "open")
            return node.open
        if answered and inside is False:
            self._step(node_id, node.type, "closed")
            if node.closed_prompt is not None:
                await self._say(node.closed_prompt)
            return node.closed
        self._step(node_id, node.type, "error")
        return node.closed

    async def _caller_list(self, node_id: str, node: CallerListNode, pending) -> str:
        if self.caller is None:
            self._step(node_id, node.type, "no_number")
            return node.next
        answered, found = await self._service(node_id, "caller_lists", lambda: self.services.caller_lists(self.caller))
        if not answered or not isinstance(found, (set, frozenset, list, tuple)):
            self._step(node_id, node.type, "error")
            return node.next
        names = {name for name in found if isinstance(name, str)}
        hits = [name for name in node.lists if name in names]
        if hits:
            self.boost = max(self.boost, max(node.lists[name] for name in hits))
        routed = next((name for name in node.routes if name in names), None)
        listed = sorted(set(hits) | ({routed} if routed else set()))
        self._step(node_id, node.type, "lists:" + "+".join(listed) if listed else "none")
        return node.routes[routed] if routed else node.next

    async def _hangup(self, node_id: str, node: HangupNode, pending) -> FlowResult:
        self._step(node_id, node.type, "hangup")
        if node.prompt is not None:
            try:
                await self._say(node.prompt)
            except CallerHungUp:
                pass
        return self._result("hangup", None)

