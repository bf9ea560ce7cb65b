"""The flow engine over a FastAGI session: the media port, and the channel variables of a result.

How this works: ``AgiCallPort`` plays prompts with STREAM FILE and reads keys with GET DATA; a
dead channel (511, AgiHangup) becomes ``CallerHungUp`` and ``result=-1`` (AgiCommandFailed: a
missing sound on a live channel, or a hang-up that the next command will show as 511) becomes
``MediaFailed``, which the engine treats per node (see ivr.engine). ``apply_result`` sets the
variables the dialplan reads, each value checked against a whitelist (never the caller's keys):

- HOTLINE_IVR_CHOICE   the flow's choice ("1", "timeout", "9-order_found", "error", ...)
- HOTLINE_LANGUAGE     a language code, when the flow chose one (yue, nan, ...)
- HOTLINE_TRANSFER     110 when the flow ends in a transfer
- HOTLINE_CALLBACK_REQUESTED  1 when the caller accepted a callback
- HOTLINE_CATEGORY, HOTLINE_QUEUE_TIMEOUT  from the queue (``queue_lookup``: the catalog's)
- HOTLINE_PRIORITY     0..10, the caller's QUEUE_PRIO (the dialplan only takes small numbers)
- HOTLINE_QUEUE        last: the dialplan treats it as "the IVR finished"

A transfer or a callback also sets HOTLINE_QUEUE (the fallback queue, the callback's queue):
a dialplan that does not act on HOTLINE_TRANSFER / HOTLINE_CALLBACK_REQUESTED still puts the
caller through to a person, and the call's category is right. A flow that ends with a hangup
node sets the choice and hangs up (AGI HANGUP); after the caller hung up only the choice is set
(SET VARIABLE works on a dead channel), so the call's record says where the caller gave up.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime, timezone
from typing import Callable, Mapping, Protocol

from ivr.engine import CallerHungUp, FlowResult, FlowServices, MediaFailed, PathStep, run_flow
from ivr.flow import LANGUAGE_RE, PRIORITY_MAX, QUEUE_RE, SERVICE_TIMEOUT, TRANSFER_TARGETS, Flow
from telephony.agi_server import AgiCommandFailed, AgiHangup, AgiSession
from telephony.model import PHONE_NUMBER

log = logging.getLogger("hotline.ivr")

DEFAULT_CATEGORY = "general"
DEFAULT_QUEUE_TIMEOUT = 120
_CHOICE_RE = re.compile(r"[0-9a-z_*#+:-]{1,64}")
_CATEGORY_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class AgiCallPort:
    """``ivr.engine.CallPort`` over one FastAGI session."""

    def __init__(self, session: AgiSession) -> None:
        self.session = session

    async def play(self, audio: str, escape_keys: str = "") -> str | None:
        try:
            return await self.session.stream_file(audio, escape_keys)
        except AgiHangup as exc:
            raise CallerHungUp(str(exc)) from exc
        except AgiCommandFailed as exc:
            raise await self._failed(exc) from exc

    async def read_digits(self, audio: str, timeout_ms: int, max_digits: int) -> str:
        try:
            return await self.session.get_data(audio, timeout_ms, max_digits)
        except AgiHangup as exc:
            raise CallerHungUp(str(exc)) from exc
        except AgiCommandFailed as exc:
            raise await self._failed(exc) from exc

    async def _failed(self, exc: AgiCommandFailed) -> Exception:
        """``result=-1`` is a hang-up or a failed prompt on a live channel; Asterisk tells which by
        the HANGUP line it sends on a hang-up, before that reply or before the next one. A NOOP
        (allowed on a dead channel) fetches that next reply, so a caller who hung up in a menu is
        not routed as if the prompt had failed."""
        if not self.session.hungup:
            try:
                await self.session.send_command("NOOP")
            except AgiHangup:
                pass
        if self.session.hungup:
            return CallerHungUp(str(exc))
        return MediaFailed(str(exc))


class QueueInfo(Protocol):
    """What apply_result needs of a queue (config.settings.QueueConfig has it)."""

    category: str
    max_wait: int


QueueLookup = Callable[[str], "QueueInfo | None"]


def caller_number(headers: Mapping[str, str]) -> str | None:
    """The calling number from the AGI headers, or None when withheld or not a plain number."""
    number = (headers.get("agi_callerid") or "").strip()
    return number if PHONE_NUMBER.fullmatch(number) else None


async def apply_result(session: AgiSession, result: FlowResult, queue_lookup: QueueLookup) -> None:
    """Set the channel variables of ``result`` (see the module's docstring)."""
    choice = result.flow_choice if _CHOICE_RE.fullmatch(result.flow_choice or "") else "error"
    await session.set_variable("HOTLINE_IVR_CHOICE", choice)
    if result.language is not None and LANGUAGE_RE.fullmatch(result.language):
        await session.set_variable("HOTLINE_LANGUAGE", result.language)
    if result.kind == "hangup":
        if not result.by_caller:
            # the flow ended the call itself (a goodbye): no missed call if the caller was served;
            # one whose order look-up failed (not found, unavailable, no number) is called back
            if not any(step.type == "order_status" and step.outcome != "found" for step in result.path):
                await session.set_variable("HOTLINE_IVR_DONE", "1")
            await session.send_command("HANGUP")
        return
    if result.kind == "transfer" and result.target in TRANSFER_TARGETS:
        await session.set_variable("HOTLINE_TRANSFER", result.target)
    if result.kind == "callback":
        await session.set_variable("HOTLINE_CALLBACK_REQUESTED", "1")
    queue = result.queue if result.queue is not None and QUEUE_RE.fullmatch(result.queue) else None
    if queue is None:   # never from a validated flow; the dialplan routes to its default queue
        log.error("IVR: result without a usable queue (%r); the dialplan's default applies", result.queue)
        return
    info = queue_lookup(queue)
    category = getattr(info, "category", None)
    category = category if isinstance(category, str) and _CATEGORY_RE.fullmatch(category) else DEFAULT_CATEGORY
    wait = getattr(info, "max_wait", None)
    wait = wait if isinstance(wait, int) and not isinstance(wait, bool) and 1 <= wait <= 9999 else DEFAULT_QUEUE_TIMEOUT
    priority = result.priority if isinstance(result.priority, int) and 0 <= result.priority <= PRIORITY_MAX else 0
    await session.set_variable("HOTLINE_CATEGORY", category)
    await session.set_variable("HOTLINE_QUEUE_TIMEOUT", str(wait))
    await session.set_variable("HOTLINE_PRIORITY", str(priority))
    # HOTLINE_QUEUE last: the dialplan treats it as "the IVR finished".
    await session.set_variable("HOTLINE_QUEUE", queue)


def error_result(queue: str, path: tuple[PathStep, ...] = ()) -> FlowResult:
    """The safe route: ``queue`` with choice "error"."""
    return FlowResult(kind="queue", queue=queue, priority=0, target=None, path=path, flow_choice="error",
                      language=None, steps=0, error=True)


async def run_agi_flow(session: AgiSession, flow: Flow, services: FlowServices, queue_lookup: QueueLookup, *,
                       now: datetime | None = None, service_timeout: float = SERVICE_TIMEOUT) -> FlowResult:
    """Answer, run ``flow`` over the session, set the result's variables; returns the result.

    For FastAgiServer: ``add_route("ivr", handler, on_error=...)`` with a handler calling this and
    an on_error calling ``safe_route(session, flow.fallback_queue, queue_lookup)``."""
    uniqueid = session.headers.get("agi_uniqueid", "?")
    try:
        await session.answer()
    except AgiHangup:
        result = FlowResult(kind="hangup", queue=None, priority=0, target=None, path=(), flow_choice="none",
                            language=None, steps=0, by_caller=True)
        await apply_result(session, result, queue_lookup)
        return result
    except AgiCommandFailed as exc:
        log.warning("IVR %s: ANSWER failed (%s); running the flow anyway", uniqueid, exc)
    result = await run_flow(flow, AgiCallPort(session), services, caller=caller_number(session.headers),
                            now=now or datetime.now(timezone.utc), service_timeout=service_timeout)
    await apply_result(session, result, queue_lookup)
    where = {"transfer": f" -> {result.target}", "hangup": " by the caller" if result.by_caller else ""}
    log.info("IVR %s: flow %r ended %s%s, choice %s, %d steps", uniqueid, flow.name, result.kind,
             where.get(result.kind, f" -> {result.queue}"), result.flow_choice, result.steps)
    return result


async def safe_route(session: AgiSession, queue: str, queue_lookup: QueueLookup) -> None:
    """After any failure: ``queue`` with choice "error". SET VARIABLE works even on a dead channel."""
    try:
        await apply_result(session, error_result(queue), queue_lookup)
    except AgiHangup:
        pass
