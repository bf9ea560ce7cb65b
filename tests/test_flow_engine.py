"""The IVR flow interpreter: every node type over a scripted call, the default flow over real
FastAGI dialogues, and a property test (any valid flow, any keys, hang-ups and service failures:
a route or a hang-up within the budget, never an exception)."""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections import namedtuple
from datetime import datetime, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ivr.agi_port import apply_result, run_agi_flow, safe_route
from ivr.engine import CallerHungUp, FlowResult, MediaFailed, PathStep, run_flow
from ivr.flow import (TRANSFER_TARGETS, Flow, PlayNode, Prompt, QueueNode, parse_flow)
from telephony.agi_server import FastAgiServer
from tests.agi_peer import Dialogue, load_dialogues, play_asterisk
from tests.test_flow_model import DEFAULT_TEXT, EVERY_NODE_TYPE, QUEUES

pytestmark = pytest.mark.ivr

NOW = datetime(2025, 7, 1, 9, 30, tzinfo=timezone.utc)
CALLER = "13800138000"
EVERY = parse_flow(EVERY_NODE_TYPE, QUEUES)
DEFAULT = parse_flow(DEFAULT_TEXT, QUEUES)

HANGUP, FAIL, BOOM = "<hangup>", "<media failed>", "<bug>"


class ScriptedCall:
    """The media side: each play or read takes the next scripted answer (a key, '' or None,
    or HANGUP / FAIL / BOOM to raise); an empty script plays through and reads nothing."""

    def __init__(self, *answers) -> None:
        self.answers = list(answers)
        self.used: list = []
        self.calls: list[tuple] = []

    def _next(self, default):
        if not self.answers:
            return default
        answer = self.answers.pop(0)
        self.used.append(answer)
        if answer == HANGUP:
            raise CallerHungUp()
        if answer == FAIL:
            raise MediaFailed("result=-1")
        if answer == BOOM:
            raise RuntimeError("a bug in the port")
        return answer

    async def play(self, audio: str, escape_keys: str = "") -> str | None:
        self.calls.append(("play", audio, escape_keys))
        return self._next(None)

    async def read_digits(self, audio: str, timeout_ms: int, max_digits: int) -> str:
        self.calls.append(("read", audio, timeout_ms, max_digits))
        return self._next("")

    def sounds(self) -> list[str]:
        return [call[1] for call in self.calls]


SLOW = "<slow>"
DEFAULTS = {"leader_open": False, "topic_active": False, "order_status": None, "estimated_wait": 0.0,
            "in_hours": True, "caller_lists": set()}


class FakeServices:
    """Business facts: a fixed answer per question, or a function of the question's arguments;
    an exception instance is raised, SLOW never answers in time."""

    def __init__(self, **answers) -> None:
        self.answers = {**DEFAULTS, **answers}
        self.asked: list[tuple] = []

    async def _answer(self, name, *args):
        self.asked.append((name, *args))
        answer = self.answers[name]
        if callable(answer):
            answer = answer(*args)
        if isinstance(answer, BaseException):
            raise answer
        if answer == SLOW:
            await asyncio.sleep(5)
        return answer

    async def leader_open(self, queue):
        return await self._answer("leader_open", queue)

    async def topic_active(self, topic, now):
        return await self._answer("topic_active", topic, now)

    async def order_status(self, order_no, caller_number):
        return await self._answer("order_status", order_no, caller_number)

    async def estimated_wait(self, queue):
        return await self._answer("estimated_wait", queue)

    async def in_hours(self, calendar, now):
        return await self._answer("in_hours", calendar, now)

    async def caller_lists(self, number):
        return await self._answer("caller_lists", number)


async def run(call, services=None, *, flow=EVERY, caller=CALLER, **kw) -> FlowResult:
    return await run_flow(flow, call, services or FakeServices(), caller=caller, now=NOW,
                          service_timeout=0.05, **kw)


def outcomes(result: FlowResult) -> list[tuple[str, str]]:
    return [(step.node, step.outcome) for step in result.path]


MENU_KEYS = "01234568"
GREET = ("play", "t/greet", MENU_KEYS)
MENU_READ = ("read", "t/menu", 3000, 1)


# --------------------------------------------------------------------------- play and menu

async def test_no_key_passes_the_pre_menu_nodes_and_lands_on_the_general_queue():
    call = ScriptedCall()
    result = await run(call)
    assert (result.kind, result.queue, result.priority) == ("queue", "hotline-general", 0)
    assert result.flow_choice == "timeout"
    assert outcomes(result) == [("lists", "none"), ("typhoon", "inactive"), ("greet", "played"),
                                ("menu", "timeout"), ("general", "route")]
    assert call.calls == [GREET, MENU_READ, MENU_READ]       # retries = 1: asked twice
    assert result.steps == 5 and not result.error and result.language is None


async def test_a_key_during_the_greeting_is_the_menu_choice():
    call = ScriptedCall("2")
    result = await run(call)
    assert call.calls == [GREET, ("play", "t/queued", "")]    # the menu is not asked again
    assert (result.kind, result.queue, result.priority, result.flow_choice) == ("queue", "hotline-business", 1, "2")
    assert result.path[2] == PathStep("greet", "play", "key", "2")
    assert result.path[3] == PathStep("menu", "menu", "key", "2")


async def test_a_key_outside_the_menu_during_the_greeting_is_ignored():
    result = await run(ScriptedCall("7", "1"))
    assert result.flow_choice == "1" and result.path[2].outcome == "played"


async def test_invalid_key_plays_the_invalid_prompt_then_asks_again():
    call = ScriptedCall(None, "7", None, "1")
    result = await run(call)
    assert call.sounds() == ["t/greet", "t/menu", "t/invalid", "t/menu"]
    assert (result.queue, result.flow_choice) == ("hotline-general", "1")


async def test_invalid_keys_until_the_retries_are_spent_take_on_invalid():
    result = await run(ScriptedCall(None, "7", None, "99"))
    assert (result.queue, result.flow_choice) == ("hotline-general", "invalid")
    assert result.path[3] == PathStep("menu", "menu", "invalid", "")


async def test_a_failed_menu_prompt_takes_on_timeout_at_once():
    call = ScriptedCall(None, FAIL)
    result = await run(call)
    assert call.calls == [GREET, MENU_READ]        # not asked again: a missing sound fails again
    assert (result.queue, result.flow_choice) == ("hotline-general", "error")
    assert not result.error


async def test_a_failed_greeting_goes_on_to_the_menu():
    result = await run(ScriptedCall(FAIL, "1"))
    assert result.path[2] == PathStep("greet", "play", "failed")
    assert result.flow_choice == "1"


# --------------------------------------------------------------------------- queue, leader, topic

async def test_leader_line_only_while_the_slot_is_live():
    services = FakeServices(leader_open=lambda queue: queue == "hotline-leader")
    call = ScriptedCall(None, "4")
    result = await run(call, services)
    assert (result.kind, result.queue, result.priority, result.flow_choice) == ("queue", "hotline-leader", 5, "4")
    assert call.sounds()[-1] == "t/leader" and ("leader_open", "hotline-leader") in services.asked
    assert outcomes(result)[-1] == ("leader", "open")


@pytest.mark.parametrize("answer, outcome", [(False, "closed"), ("yes", "closed"), (None, "closed"),
                                             (RuntimeError("redis down"), "error"), (SLOW, "error")])
async def test_leader_line_closed_failing_or_slow_goes_to_the_fallback(answer, outcome):
    call = ScriptedCall(None, "4")
    result = await run(call, FakeServices(leader_open=answer))
    assert (result.queue, result.priority) == ("hotline-general", 0)
    assert outcomes(result)[-2:] == [("leader", outcome), ("general", "route")]
    assert "t/leader" not in call.sounds()


async def test_special_topic_plays_only_while_switched_on():
    services = FakeServices(topic_active=lambda topic, now: topic == "typhoon" and now == NOW)
    call = ScriptedCall()
    result = await run(call, services)
    assert call.sounds()[:2] == ["t/typhoon", "t/greet"]
    assert outcomes(result)[1] == ("typhoon", "active")
    for answer in (False, ValueError("no such topic"), SLOW, 1):
        call = ScriptedCall()
        result = await run(call, FakeServices(topic_active=answer))
        assert "t/typhoon" not in call.sounds() and result.queue == "hotline-general"


# --------------------------------------------------------------------------- emergency

async def test_emergency_confirmed_transfers_to_110():
    call = ScriptedCall(None, "0", "1")
    result = await run(call)
    assert call.calls[-1] == ("read", "t/emergency", 5000, 1)
    assert (result.kind, result.target, result.queue, result.flow_choice) == ("transfer", "110", "hotline-general",
                                                                             "0-transfer_yes")


@pytest.mark.parametrize("answer, outcome", [("2", "declined"), ("", "timeout"), (FAIL, "error")])
async def test_emergency_not_confirmed_goes_to_on_decline(answer, outcome):
    result = await run(ScriptedCall(None, "0", answer))
    assert (result.kind, result.queue, result.flow_choice) == ("queue", "hotline-general", "0-transfer_no")
    assert outcomes(result)[-2] == ("emergency", outcome)


@pytest.mark.parametrize("key, kind, queue", [("1", "transfer", "hotline-general"), ("", "queue", "hotline-general"),
                                              ("5", "queue", "hotline-general")])
async def test_the_shipped_flow_transfers_to_110_only_on_the_confirm_key(key, kind, queue):
    call = ScriptedCall("0", key)
    result = await run(call, flow=DEFAULT)
    assert call.sounds() == ["hotline/welcome", "hotline/emergency-110"]
    assert (result.kind, result.queue) == (kind, queue)
    assert (result.target == "110") == (kind == "transfer")


# --------------------------------------------------------------------------- order status

ORDER = "20250630000042"


async def test_order_status_of_the_callers_own_order():
    services = FakeServices(order_status=lambda no, number: "closed" if (no, number) == (ORDER, CALLER) else None)
    call = ScriptedCall(None, "5", ORDER)
    result = await run(call, services)
    assert call.calls[2] == ("read", "t/order-ask", 8000, 14)
    assert call.sounds()[3:] == ["t/order-closed", "t/bye"]
    assert ("order_status", ORDER, CALLER) in services.asked
    assert (result.kind, result.by_caller, result.flow_choice) == ("hangup", False, "5-order_found")
    assert ORDER not in repr(result)          # the keyed number is in neither the path nor the choice


async def test_order_not_found_then_found_on_the_retry():
    services = FakeServices(order_status=lambda no, number: "handling" if no == ORDER else None)
    call = ScriptedCall(None, "5", "123", None, ORDER)
    result = await run(call, services)
    assert call.sounds()[2:] == ["t/order-ask", "t/order-not-found", "t/order-ask", "t/order-handling", "t/bye"]
    assert result.flow_choice == "5-order_found"


@pytest.mark.parametrize("script, answer, choice, heard", [
    ([ORDER, None, ORDER], None, "order_not_found", ["t/order-not-found", "t/order-not-found"]),
    (["", ""], "closed", "order_none", []),
    (["12*3", None, ""], "closed", "order_none", ["t/order-not-found"]),      # the last try counts
    ([ORDER], RuntimeError("db down"), "order_unavailable", ["t/order-unavailable"]),
    ([ORDER], SLOW, "order_unavailable", ["t/order-unavailable"]),
    ([ORDER], "revisit", "order_unavailable", ["t/order-unavailable"]),     # a status without a prompt
    ([ORDER], 42, "order_unavailable", ["t/order-unavailable"]),
    ([FAIL], "closed", "order_error", ["t/order-unavailable"]),
])
async def test_order_status_failures(script, answer, choice, heard):
    services = FakeServices(order_status=answer)
    call = ScriptedCall(None, "5", *script)
    result = await run(call, services)
    said = [c[1] for c in call.calls[2:] if c[0] == "play" and c[1] != "t/bye"]
    assert said == heard
    assert (result.kind, result.flow_choice) == ("hangup", "5-" + choice)
    if "12*3" in script or "" in script:
        assert not any(a[0] == "order_status" and a[1] in ("12*3", "") for a in services.asked)


async def test_order_status_needs_the_callers_number():
    services = FakeServices(order_status="closed")
    for caller in (None, "anonymous", "+86 138"):
        call = ScriptedCall(None, "5")
        result = await run(call, services, caller=caller)
        assert call.sounds()[2:] == ["t/order-unavailable", "t/bye"]       # never asked for a number
        assert result.flow_choice == "5-order_unavailable"
    assert not [a for a in services.asked if a[0] in ("order_status", "caller_lists")]


# --------------------------------------------------------------------------- callback offer

async def test_callback_offered_over_the_threshold_and_accepted():
    services = FakeServices(estimated_wait=lambda queue: 300.0 if queue == "hotline-general" else 0.0)
    call = ScriptedCall(None, "6", "1")
    result = await run(call, services)
    assert call.sounds()[2:] == ["t/wait", "t/callback-ok"]
    assert (result.kind, result.queue, result.flow_choice) == ("callback", "hotline-general", "6-callback_yes")


@pytest.mark.parametrize("caller", [None, "+8613800138000", "anonymous"])
async def test_no_callback_is_offered_to_a_number_the_desk_cannot_dial(caller):
    call = ScriptedCall(None, "6", "1")
    result = await run(call, FakeServices(estimated_wait=300), caller=caller)
    assert "t/wait" not in call.sounds() and result.kind == "queue"       # never promised
    assert any(step.outcome == "no_number" for step in result.path)


async def test_callback_accepted_survives_a_hang_up_during_the_confirmation():
    result = await run(ScriptedCall(None, "6", "1", HANGUP), FakeServices(estimated_wait=300))
    assert result.kind == "callback"


@pytest.mark.parametrize("wait, key, outcome, offered", [
    (300, "2", "declined", True), (300, "", "timeout", True), (60, "1", "short_wait", False),
    (None, "1", "no_estimate", False), (float("nan"), "1", "no_estimate", False), (True, "1", "no_estimate", False),
    ("long", "1", "no_estimate", False), (-5, "1", "no_estimate", False),
    (TimeoutError(), "1", "error", False), (SLOW, "1", "error", False),
])
async def test_callback_not_offered_or_declined_goes_on(wait, key, outcome, offered):
    call = ScriptedCall(None, "6", key)
    result = await run(call, FakeServices(estimated_wait=wait))
    assert result.kind == "queue" and result.queue == "hotline-general"
    assert ("t/wait" in call.sounds()) == offered
    assert outcomes(result)[-2] == ("callback", outcome)
    assert result.flow_choice == ("6-callback_no" if offered else "6")


# --------------------------------------------------------------------------- language, hours

async def test_language_choice_routes_to_the_dialect_queue_and_records_the_language():
    call = ScriptedCall(None, "3", "2")
    result = await run(call)
    assert call.calls[2] == ("read", "t/lang", 3000, 1)
    assert (result.queue, result.language, result.flow_choice) == ("hotline-dialect", "nan", "3-2")


async def test_language_timeout_keeps_no_language():
    result = await run(ScriptedCall(None, "3", ""))
    assert (result.queue, result.language, result.flow_choice) == ("hotline-general", None, "3-timeout")


async def test_dialect_queue_node_records_its_language():
    result = await run(ScriptedCall("3"), flow=DEFAULT)
    assert (result.queue, result.language, result.flow_choice) == ("hotline-dialect", "yue", "3")


async def test_business_hours_open_closed_and_failing():
    services = FakeServices(in_hours=lambda calendar, now: calendar == "business" and now == NOW)
    assert (await run(ScriptedCall(None, "2"), services)).queue == "hotline-business"
    call = ScriptedCall(None, "2")
    result = await run(call, FakeServices(in_hours=False))
    assert result.queue == "hotline-general" and "t/closed" in call.sounds()
    for answer in (LookupError("no calendar"), SLOW, "open"):
        call = ScriptedCall(None, "2")
        result = await run(call, FakeServices(in_hours=answer))
        assert result.queue == "hotline-general" and "t/closed" not in call.sounds()   # no wrong notice
        assert outcomes(result)[-2] == ("business_hours", "error")


# --------------------------------------------------------------------------- caller lists

@pytest.mark.parametrize("lists, priority, outcome", [
    ({"vip"}, 1 + 2, "lists:vip"),
    ({"elderly", "vip", "unknown"}, 1 + 3, "lists:elderly+vip"),   # the highest boost, not the sum
    (frozenset(), 1, "none"),
    (["vip"], 1 + 2, "lists:vip"),
    (RuntimeError("db down"), 1, "error"),
    (SLOW, 1, "error"),
    ("vip", 1, "error"),
])
async def test_caller_lists_raise_the_priority_of_later_routes(lists, priority, outcome):
    services = FakeServices(caller_lists=lists)
    result = await run(ScriptedCall(None, "2"), services)
    assert (result.queue, result.priority) == ("hotline-business", priority)
    assert outcomes(result)[0] == ("lists", outcome)


async def test_caller_list_route_and_the_priority_cap():
    result = await run(ScriptedCall(), FakeServices(caller_lists={"disabled"}))
    assert outcomes(result) == [("lists", "lists:disabled"), ("general", "route")]   # straight to a person
    assert result.priority == 3
    flow = parse_flow(EVERY_NODE_TYPE.replace("vip = 2", "vip = 10"), QUEUES)
    result = await run(ScriptedCall(None, "4"), FakeServices(caller_lists={"vip"}, leader_open=True), flow=flow)
    assert (result.queue, result.priority) == ("hotline-leader", 10)


async def test_caller_lists_need_a_number():
    services = FakeServices(caller_lists={"vip"})
    result = await run(ScriptedCall(None, "2"), services, caller=None)
    assert outcomes(result)[0] == ("lists", "no_number") and result.priority == 1
    assert not [a for a in services.asked if a[0] == "caller_lists"]


# --------------------------------------------------------------------------- ends

async def test_hangup_node():
    call = ScriptedCall(None, "8")
    result = await run(call)
    assert call.sounds()[-1] == "t/bye"
    assert (result.kind, result.queue, result.by_caller, result.flow_choice) == ("hangup", None, False, "8")


async def test_caller_hang_up_ends_the_run_where_it_happened():
    result = await run(ScriptedCall(HANGUP))
    assert (result.kind, result.by_caller, result.flow_choice) == ("hangup", True, "hangup")
    assert result.path[-1] == PathStep("greet", "play", "hangup")
    result = await run(ScriptedCall(None, "5", HANGUP), FakeServices(order_status="closed"))
    assert (result.flow_choice, result.path[-1]) == ("5-hangup", PathStep("order", "order_status", "hangup"))


async def test_an_unexpected_error_lands_on_the_fallback_queue():
    result = await run(ScriptedCall(None, "4", BOOM), FakeServices(leader_open=True))
    assert (result.kind, result.queue, result.flow_choice, result.error) == ("queue", "hotline-general", "error", True)
    assert result.path[-1] == PathStep("leader", "leader", "error")


async def test_step_budget_and_a_flow_built_without_validation():
    result = await run(ScriptedCall(), max_steps=2)
    assert (result.queue, result.flow_choice, result.error, result.steps) == ("hotline-general", "error", True, 2)
    prompt = Prompt(text="你好", audio="t/hi")
    looping = Flow(name="loop", start="a", fallback_queue="hotline-general", description="",
                   prompts={"p": prompt},
                   nodes={"a": PlayNode(type="play", prompts=("p",), next="b"),
                          "b": PlayNode(type="play", prompts=("p",), next="a")})
    call = ScriptedCall()
    result = await run(call, flow=looping)
    assert (result.queue, result.error, result.steps, len(call.calls)) == ("hotline-general", True, 2, 2)
    dangling = Flow(name="dangling", start="a", fallback_queue="hotline-general", description="",
                    prompts={"p": prompt}, nodes={"a": PlayNode(type="play", prompts=("p",), next="nowhere")})
    result = await run(ScriptedCall(), flow=dangling)
    assert (result.queue, result.error) == ("hotline-general", True)
    bare = Flow(name="bare", start="q", fallback_queue="hotline-general", description="", prompts={},
                nodes={"q": QueueNode(type="queue", queue="hotline-business", priority=2)})
    assert (await run(ScriptedCall(), flow=bare)).priority == 2


async def test_sync_services_are_accepted_too():
    class Plain:
        def __getattr__(self, name):
            return lambda *args: {"caller_lists": {"vip"}, "topic_active": True}.get(name, False)

    call = ScriptedCall()
    result = await run_flow(EVERY, call, Plain(), caller=CALLER, now=NOW)
    assert "t/typhoon" in call.sounds() and result.priority == 2


# --------------------------------------------------------------------------- over FastAGI

Queue = namedtuple("Queue", "category max_wait")
QUEUE_INFO = {"hotline-general": Queue("general", 120), "hotline-business": Queue("business_environment", 300),
              "hotline-dialect": Queue("dialect", 180)}
HEADERS = load_dialogues("answered.agi")[0].headers     # agi_callerid 13800138000


async def agi_run(steps, services=None, flow=DEFAULT) -> tuple[list[str], list[FlowResult]]:
    results: list[FlowResult] = []
    services = services or FakeServices()

    async def route(session):
        results.append(await run_agi_flow(session, flow, services, QUEUE_INFO.get, now=NOW, service_timeout=0.05))

    server = FastAgiServer()
    server.add_route("ivr", route, on_error=lambda s: safe_route(s, flow.fallback_queue, QUEUE_INFO.get))
    port = await server.start("127.0.0.1", 0)
    dialogue = Dialogue(headers=HEADERS, steps=steps)
    try:
        sent = await play_asterisk(port, dialogue)
    finally:
        await server.stop()
    assert sent == [command for command, _ in steps]
    return sent, results


OK = ["200 result=1"]
ANSWER = ("ANSWER", ["200 result=0"])
WELCOME = 'STREAM FILE hotline/welcome "01239"'
MENU = "GET DATA hotline/menu 1500 1"


def route_vars(choice, category="general", wait="120", priority="0", queue="hotline-general", extra=()):
    return [(f'SET VARIABLE HOTLINE_IVR_CHOICE "{choice}"', OK), *extra,
            (f'SET VARIABLE HOTLINE_CATEGORY "{category}"', OK),
            (f'SET VARIABLE HOTLINE_QUEUE_TIMEOUT "{wait}"', OK),
            (f'SET VARIABLE HOTLINE_PRIORITY "{priority}"', OK),
            (f'SET VARIABLE HOTLINE_QUEUE "{queue}"', OK)]


async def test_agi_default_flow_no_key_reaches_the_general_queue():
    _, (result,) = await agi_run([ANSWER, (WELCOME, ["200 result=0 endpos=8000"]),
                                  (MENU, ["200 result= (timeout)"]), *route_vars("timeout")])
    assert (result.kind, result.queue) == ("queue", "hotline-general")


async def test_agi_default_flow_key_during_greeting_and_a_dialect_with_its_language():
    await agi_run([ANSWER, (WELCOME, ["200 result=50 endpos=3000"]),          # '2' is ASCII 50
                   *route_vars("2", "business_environment", "300", queue="hotline-business")])
    await agi_run([ANSWER, (WELCOME, ["200 result=0 endpos=8000"]), (MENU, ["200 result=3"]),
                   *route_vars("3", "dialect", "180", queue="hotline-dialect",
                               extra=[('SET VARIABLE HOTLINE_LANGUAGE "yue"', OK)])])


async def test_agi_emergency_sets_the_transfer_and_a_fallback_queue():
    _, (result,) = await agi_run([
        ANSWER, (WELCOME, ["200 result=48 endpos=3000"]),                     # '0'
        ("GET DATA hotline/emergency-110 5000 1", ["200 result=1"]),        # confirmed
        *route_vars("0-transfer_yes", extra=[('SET VARIABLE HOTLINE_TRANSFER "110"', OK)])])
    assert (result.kind, result.target) == ("transfer", "110")


async def test_agi_order_progress_uses_the_calling_number_and_hangs_up():
    services = FakeServices(order_status=lambda no, number: "handling" if (no, number) == (ORDER, CALLER) else None)
    _, (result,) = await agi_run([
        ANSWER, (WELCOME, ["200 result=0 endpos=8000"]), (MENU, ["200 result=9"]),
        ("GET DATA hotline/order-ask 8000 14", [f"200 result={ORDER}"]),
        ('STREAM FILE hotline/order-handling ""', ["200 result=0 endpos=16000"]),
        ('STREAM FILE hotline/goodbye ""', ["200 result=0 endpos=8000"]),
        ('SET VARIABLE HOTLINE_IVR_CHOICE "9-order_found"', OK),
        ('SET VARIABLE HOTLINE_IVR_DONE "1"', OK),   # served: no callback for this "IVR hang-up"
        ("HANGUP", OK)], services)
    assert result.kind == "hangup" and not result.by_caller


async def test_agi_missing_greeting_sound_goes_on_and_hang_up_in_the_menu_is_recorded():
    await agi_run([ANSWER, (WELCOME, ["200 result=-1 endpos=0"]), ("NOOP", ["200 result=0"]),   # no HANGUP: alive
                   (MENU, ["200 result=1"]), *route_vars("1")])
    _, (result,) = await agi_run([
        ANSWER, (WELCOME, ["200 result=0 endpos=8000"]),
        (MENU, ["HANGUP", "511 Command Not Permitted on a dead channel or intercept routine"]),
        ('SET VARIABLE HOTLINE_IVR_CHOICE "hangup"', OK)])        # SET VARIABLE works on a dead channel
    assert (result.kind, result.by_caller) == ("hangup", True)


async def test_agi_hang_up_before_answer():
    _, (result,) = await agi_run([("ANSWER", ["HANGUP", "511 Command Not Permitted on a dead channel"]),
                                  ('SET VARIABLE HOTLINE_IVR_CHOICE "none"', OK)])
    assert result.by_caller and result.steps == 0


CALLBACK_FLOW = parse_flow("""
[flow]
name = "callback"
start = "offer"
fallback_queue = "hotline-general"

[prompts.wait]
text = "当前排队较长，需要回电请按1。"
audio = "hotline/wait"

[prompts.ok]
text = "我们将尽快给您回电。"
audio = "hotline/callback-ok"

[nodes.offer]
type = "callback_offer"
queue = "hotline-business"
threshold_seconds = 120
prompt = "wait"
accepted_prompt = "ok"
next = "business"

[nodes.business]
type = "queue"
queue = "hotline-business"
""", QUEUES)


async def test_agi_callback_request_and_a_short_wait():
    services = FakeServices(estimated_wait=lambda queue: 600.0 if queue == "hotline-business" else None)
    _, (result,) = await agi_run([
        ANSWER, ("GET DATA hotline/wait 5000 1", ["200 result=1"]),
        ('STREAM FILE hotline/callback-ok ""', ["200 result=0 endpos=8000"]),
        *route_vars("callback_yes", "business_environment", "300", queue="hotline-business",
                    extra=[('SET VARIABLE HOTLINE_CALLBACK_REQUESTED "1"', OK)])], services, flow=CALLBACK_FLOW)
    assert (result.kind, result.queue) == ("callback", "hotline-business")
    await agi_run([ANSWER, *route_vars("none", "business_environment", "300", queue="hotline-business")],
                  FakeServices(estimated_wait=30), flow=CALLBACK_FLOW)


async def test_agi_safe_route_after_a_failing_handler():
    server = FastAgiServer()

    async def broken(session):
        await session.answer()
        raise RuntimeError("flow bug")

    server.add_route("ivr", broken, on_error=lambda s: safe_route(s, "hotline-general", QUEUE_INFO.get))
    port = await server.start("127.0.0.1", 0)
    steps = [ANSWER, *route_vars("error")]
    try:
        assert await play_asterisk(port, Dialogue(headers=HEADERS, steps=steps)) == [c for c, _ in steps]
    finally:
        await server.stop()


# --------------------------------------------------------------------------- apply_result

class RecordingSession:
    def __init__(self) -> None:
        self.commands: list[tuple[str, ...]] = []

    async def set_variable(self, name, value):
        self.commands.append((name, value))

    async def send_command(self, command):
        self.commands.append((command,))


async def test_apply_result_whitelists_every_value():
    session = RecordingSession()
    evil = FlowResult(kind="transfer", queue="hotline-general\nx", priority=99, target="12345678",
                      path=(), flow_choice="1\r\nSET", language="Yue;x", steps=1)
    await apply_result(session, evil, QUEUE_INFO.get)
    assert session.commands == [("HOTLINE_IVR_CHOICE", "error")]    # no usable queue: the dialplan's default
    session = RecordingSession()
    odd = FlowResult(kind="queue", queue="hotline-other", priority=-1, target=None, path=(), flow_choice="1",
                     language=None, steps=1)
    await apply_result(session, odd, lambda name: Queue("bad category!", 10 ** 6))
    assert session.commands == [("HOTLINE_IVR_CHOICE", "1"), ("HOTLINE_CATEGORY", "general"),
                                ("HOTLINE_QUEUE_TIMEOUT", "120"), ("HOTLINE_PRIORITY", "0"),
                                ("HOTLINE_QUEUE", "hotline-other")]


# --------------------------------------------------------------------------- property test

TYPES = ["play", "menu", "language", "queue", "leader", "topic", "emergency", "order_status", "callback_offer",
         "hours", "caller_list", "hangup"]
TERMINAL = ["queue", "hangup", "emergency"]
PROMPT_POOL = {"p0": ("您好，12345热线。", "s/p0"), "p1": ("请按键。", "s/p1"), "p2": ("再见。", "s/p2")}
QUEUE_POOL = ["hotline-general", "hotline-business", "hotline-dialect"]
LIST_POOL = ["elderly", "disabled", "vip"]


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{ " + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + " }"


def to_toml(doc: dict) -> str:
    out = []
    for section in ("flow",):
        out.append(f"[{section}]")
        out += [f"{k} = {toml_value(v)}" for k, v in doc[section].items()]
    for kind in ("prompts", "nodes"):
        for name, body in doc[kind].items():
            out += ["", f"[{kind}.{name}]"] + [f"{k} = {toml_value(v)}" for k, v in body.items()]
    return "\n".join(out) + "\n"


@st.composite
def flow_texts(draw) -> str:
    """A random flow that validates: node i only names nodes after it (so no loop), the last is
    terminal; optional keys are drawn too."""
    n = draw(st.integers(1, 9))
    ids = [f"n{i}" for i in range(n)]
    types = [draw(st.sampled_from(TYPES if i < n - 1 else TERMINAL)) for i in range(n)]
    prompt = lambda: draw(st.sampled_from(sorted(PROMPT_POOL)))           # noqa: E731
    queue = lambda: draw(st.sampled_from(QUEUE_POOL))                     # noqa: E731
    maybe = lambda: draw(st.booleans())                                   # noqa: E731
    keys = lambda: draw(st.lists(st.sampled_from("0123456789*#"), min_size=1, max_size=4, unique=True))  # noqa: E731
    nodes = {}
    for i, kind in enumerate(types):
        later = ids[i + 1:]
        to = (lambda: draw(st.sampled_from(later))) if later else None
        body: dict = {"type": kind}
        if kind == "play":
            body["prompts"] = [prompt() for _ in range(draw(st.integers(1, 3)))]
            body["next"] = to()
            if types[ids.index(body["next"])] in ("menu", "language"):
                body["barge_in"] = maybe()
        elif kind in ("menu", "language"):
            body["prompt"] = prompt()
            if kind == "menu":
                body["keys"] = {k: to() for k in keys()}
            else:
                body["choices"] = {k: {"language": draw(st.sampled_from(["yue", "nan", "zh-wuu"])), "next": to()}
                                   for k in keys()}
            body["timeout_ms"] = draw(st.integers(1000, 15000))
            body["retries"] = draw(st.integers(0, 3))
            if maybe():
                body["invalid_prompt"] = prompt()
            body["on_timeout"] = to()
            if maybe():
                body["on_invalid"] = to()
        elif kind == "queue":
            body.update(queue=queue(), priority=draw(st.integers(0, 10)))
            if maybe():
                body["announce"] = prompt()
            if maybe():
                body["language"] = "yue"
        elif kind == "leader":
            body.update(queue=queue(), priority=draw(st.integers(0, 10)), fallback=to())
            if maybe():
                body["announce"] = prompt()
        elif kind == "topic":
            body.update(topic="typhoon", prompts=[prompt()], next=to())
            if maybe():
                body["active_next"] = to()
        elif kind == "emergency":
            body["prompt"] = prompt()
            body["target"] = draw(st.sampled_from(TRANSFER_TARGETS))
            if later and maybe():
                body.update(confirm_key=draw(st.sampled_from("0123456789*#")), on_decline=to())
        elif kind == "order_status":
            body.update(prompt=prompt(), max_digits=draw(st.integers(1, 20)), retries=draw(st.integers(0, 2)),
                        status_prompts={"closed": prompt(), "handling": prompt()}, not_found=prompt(), next=to())
            if maybe():
                body["unavailable"] = prompt()
        elif kind == "callback_offer":
            body.update(queue=queue(), threshold_seconds=draw(st.integers(10, 600)), prompt=prompt(),
                        accept_key=draw(st.sampled_from("0123456789*#")), next=to())
            if maybe():
                body["accepted_prompt"] = prompt()
        elif kind == "hours":
            body.update(calendar="business", open=to(), closed=to())
            if maybe():
                body["closed_prompt"] = prompt()
        elif kind == "caller_list":
            body["lists"] = {name: draw(st.integers(1, 10)) for name in draw(st.lists(
                st.sampled_from(LIST_POOL), unique=True))}
            body["routes"] = {name: to() for name in draw(st.lists(st.sampled_from(LIST_POOL), unique=True))}
            body["next"] = to()
        elif kind == "hangup":
            if maybe():
                body["prompt"] = prompt()
        nodes[ids[i]] = body
    doc = {"flow": {"name": "random", "start": "n0", "fallback_queue": "hotline-general"},
           "prompts": {name: {"text": text, "audio": audio} for name, (text, audio) in PROMPT_POOL.items()},
           "nodes": nodes}
    return to_toml(doc)


EVENTS = st.one_of(st.sampled_from([None, "", "1", HANGUP, FAIL, BOOM]),
                   st.text(alphabet="0123456789*#A", min_size=1, max_size=3))
ANSWERS = st.sampled_from([True, False, None, "closed", "handling", "weird", 0.0, 30.0, 500.0, math.nan, math.inf,
                           -3, {"vip"}, {"elderly", "vip"}, ["disabled"], set(), 7, SLOW,
                           RuntimeError("down"), TimeoutError(), LookupError("none")])
SERVICE_NAMES = list(DEFAULTS)


def media_bound(flow: Flow) -> int:
    """The most prompts and reads a run can make: each node at most once (no loops)."""
    total = 0
    for node in flow.nodes.values():
        retries = getattr(node, "retries", 0)
        total += {"play": len(getattr(node, "prompts", ())), "topic": len(getattr(node, "prompts", ())),
                  "menu": 2 * (1 + retries), "language": 2 * (1 + retries), "order_status": 2 * (1 + retries),
                  "callback_offer": 2, "caller_list": 0}.get(node.type, 1)
    return total


_CHOICE = re.compile(r"[0-9a-z_*#+:-]{1,64}")


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=flow_texts(), events=st.lists(EVENTS, max_size=25),
       answers=st.fixed_dictionaries({name: ANSWERS for name in SERVICE_NAMES}),
       caller=st.sampled_from([CALLER, None, "anonymous"]))
def test_any_valid_flow_and_any_input_ends_in_a_route_or_hang_up(text, events, answers, caller):
    flow = parse_flow(text, set(QUEUE_POOL))
    call = ScriptedCall(*events)
    services = FakeServices(**answers)

    async def go():
        result = await run_flow(flow, call, services, caller=caller, now=NOW, service_timeout=0.005)
        session = RecordingSession()
        await apply_result(session, result, QUEUE_INFO.get)
        return result, session

    result, session = asyncio.run(go())
    assert isinstance(result, FlowResult)
    assert 1 <= result.steps <= len(flow.nodes)
    assert len(call.calls) <= media_bound(flow)
    assert 0 <= result.priority <= 10
    assert _CHOICE.fullmatch(result.flow_choice)
    assert result.language in (None, "yue", "nan", "zh-wuu")
    if result.kind in ("queue", "callback"):
        assert result.queue in flow.queues()
    if result.kind == "transfer":
        assert result.target in TRANSFER_TARGETS and result.queue == flow.fallback_queue
    if result.kind == "hangup":
        assert result.queue is None and result.priority == 0
        assert not result.by_caller or HANGUP in call.used
    assert result.error == (BOOM in call.used)
    names = [command[0] for command in session.commands]
    assert names[0] == "HOTLINE_IVR_CHOICE"
    if result.kind != "hangup":
        assert names[-1] == "HOTLINE_QUEUE" and session.commands[-1][1] in flow.queues()


async def _asterisk(port: int, keys: list[str]) -> list[str]:
    """Asterisk's side of one FastAGI session, answering every command as Asterisk 22 does for a
    live channel; each GET DATA takes the next of ``keys`` ("" times out). The commands sent."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(("\n".join(HEADERS) + "\n\n").encode())
    keys, sent = list(keys), []
    while line := (await asyncio.wait_for(reader.readline(), 5)).decode().rstrip("\n"):
        sent.append(line)
        if line.startswith("GET DATA"):
            key = keys.pop(0) if keys else ""
            reply = f"200 result={key}" if key else "200 result= (timeout)"
        elif line.startswith("STREAM FILE"):
            reply = "200 result=0 endpos=8000"
        elif line.startswith(("SET VARIABLE", "HANGUP")):
            reply = "200 result=1"
        else:
            reply = "200 result=0"
        writer.write((reply + "\n").encode())
        await writer.drain()
    writer.close()
    return sent


async def test_every_node_type_over_a_scripted_agi_session():
    """Each path of the every-node flow through the real FastAGI server and AGI protocol: between
    them the calls pass every node type, and each ends with the variables the dialplan reads."""
    from ivr.flow import Node

    services = FakeServices(leader_open=lambda queue: True, topic_active=True, in_hours=True,
                            caller_lists={"elderly"}, estimated_wait=300,
                            order_status=lambda no, number: "handling" if no == ORDER else None)
    results: list[FlowResult] = []

    async def route(session):
        results.append(await run_agi_flow(session, EVERY, services, QUEUE_INFO.get, now=NOW, service_timeout=0.5))

    server = FastAgiServer()
    server.add_route("ivr", route)
    port = await server.start("127.0.0.1", 0)
    try:
        paths = {"menu": ["1"], "hours": ["2"], "language": ["3", "1"], "leader": ["4"], "order": ["5", ORDER],
                 "callback": ["6", "1"], "emergency": ["0", "1"], "bye": ["8"]}
        sent = {name: await _asterisk(port, keys) for name, keys in paths.items()}
    finally:
        await server.stop()
    visited = {step.type for result in results for step in result.path}
    all_types = {cls.model_fields["type"].annotation.__args__[0] for cls in Node.__subclasses__()}
    assert visited == all_types, all_types - visited
    by = dict(zip(paths, results))
    assert (by["leader"].kind, by["leader"].queue) == ("queue", "hotline-leader")
    assert by["callback"].kind == "callback" and 'SET VARIABLE HOTLINE_CALLBACK_REQUESTED "1"' in sent["callback"]
    assert by["emergency"].kind == "transfer" and 'SET VARIABLE HOTLINE_TRANSFER "110"' in sent["emergency"]
    assert by["bye"].kind == "hangup" and sent["bye"][-1] == "HANGUP"
    assert by["menu"].priority == 3 and 'SET VARIABLE HOTLINE_PRIORITY "3"' in sent["menu"]   # elderly boost
    for name in ("menu", "hours", "language", "leader", "callback", "emergency"):   # routed: the queue last
        assert sent[name][-1].startswith("SET VARIABLE HOTLINE_QUEUE "), name
