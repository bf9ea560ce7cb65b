"""Live views in real Redis (queues/live.py): the captures and synthetic calls through LiveStats,
replays, service level / ASA / AHT, longest wait, seat states, the published messages, outages."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import time
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
import redis.asyncio as aioredis

from config.settings import QueueConfig
from queues.live import LiveStats, member_state, seat_states
from telephony.ami_codec import Frame
from telephony.events import to_event
from telephony.model import FinishedCall
from tests.support import running, until
from tests.conftest import capture
from tests.test_ami_captures import finished_calls, frames_of

SHANGHAI = ZoneInfo("Asia/Shanghai")
NOON = datetime(2024, 3, 1, 12, 0, 0, tzinfo=SHANGHAI).timestamp()
_ids = itertools.count(1)






def capture_events(name: str) -> list:
    return [to_event(f) for f in frames_of(capture(name)) if f.event]


def call(outcome: str = "answered", *, queue: str | None = "hotline-general", hold: int | None = 4,
         talk: int | None = 13, at: float = NOON, linkedid: str | None = None) -> FinishedCall:
    answered = outcome == "answered"
    return FinishedCall(
        node="pbx-a", linkedid=linkedid or f"1795314872.{next(_ids)}", caller_number="13800138000",
        caller_name=None, started_at=at, answered_at=at + 7 if answered else None, ended_at=at + 20,
        outcome=outcome, queue=queue, hold_seconds=hold, talk_seconds=talk if answered else None,
        seat="Seat 8001" if answered else None)


def caller_event(name: str, queue: str, uniqueid: str, at: float, count: int | None = None):
    headers = [("Event", name), ("Timestamp", f"{at:.6f}"), ("Uniqueid", uniqueid), ("Linkedid", uniqueid),
               ("Queue", queue), ("Position", "1")]
    if count is not None:
        headers.append(("Count", str(count)))
    return to_event(Frame(headers))


def member_event(name: str, queue: str, seat: str, *, paused: bool = False, status: int = 1, at: float = NOON,
                 reason: str = "", in_call: bool = False):
    return to_event(Frame((("Event", name), ("Timestamp", f"{at:.6f}"), ("Queue", queue), ("MemberName", seat),
                           ("Interface", "PJSIP/8001"), ("InCall", "1" if in_call else "0"), ("Status", str(status)),
                           ("Paused", "1" if paused else "0"), ("PausedReason", reason))))


def states(snap: dict) -> dict[str, str]:
    return {seat: record["state"] for seat, record in snap["seats"].items()}


# --- queues and seats from the captures ---------------------------------------------------------

async def test_live_views_follow_the_abandon_capture_and_a_replay_changes_nothing(redis_client, node_id):
    events = capture_events("abandon.ami")
    cut = next(i for i, e in enumerate(events) if e.name == "QueueCallerAbandon")
    joined = next(e for e in events if e.name == "QueueCallerJoin").timestamp   # 1795314902.730845
    live = LiveStats(redis_client, node_id)
    async with running(live):
        for _ in range(2):  # the same events twice: a replay after a reconnect
            for e in events[:cut]:
                live.push_event(e)
            assert await live.drain()
            snap = await live.snapshot(joined + 7.2)
            assert snap["waiting"] == {"hotline-general": 1}
            assert states(snap) == {"Seat 1002": "paused"}
            assert snap["seats"]["Seat 1002"]["reason"] == "break"
            queue = snap["queues"]["hotline-general"]
            assert queue["waiting"] == 1 and queue["oldest_join"] == joined
            assert queue["longest_wait"] == 7              # by the join Timestamp, Asterisk's clock
            assert queue["seats"] == {"available": 0, "paused": 1, "on_call": 0, "ringing": 0,
                                      "unavailable": 0, "unknown": 0}
        for e in events[cut:]:
            live.push_event(e)
        assert await live.drain()
        snap = await live.snapshot(joined + 30)
        assert snap["waiting"] == {"hotline-general": 0} and snap["seats"] == {}
        assert snap["queues"]["hotline-general"]["longest_wait"] == 0
        assert snap["queues"]["hotline-general"]["oldest_join"] is None


async def test_seat_states_and_since_follow_the_agi_errors_capture(redis_client, node_id):
    events = capture_events("agi_errors.ami")
    statuses = [e for e in events if e.name == "QueueMemberStatus"]
    assert [e.status for e in statuses] == [2, 1]
    live = LiveStats(redis_client, node_id)
    async with running(live):
        for e in events[:events.index(statuses[0]) + 1]:
            live.push_event(e)
        assert await live.drain()
        seat = (await live.snapshot(statuses[0].timestamp))["seats"]["Seat 1003"]
        assert seat["state"] == "on_call" and seat["since"] == statuses[0].timestamp
        assert seat["interface"] == "Local/1003@agents/n" and seat["queues"] == ["hotline-general"]
        for e in events[:events.index(statuses[1]) + 1]:   # a replay from the start, then on
            live.push_event(e)
        assert await live.drain()
        snap = await live.snapshot(statuses[1].timestamp)
        assert snap["seats"]["Seat 1003"]["state"] == "available"
        assert snap["seats"]["Seat 1003"]["since"] == statuses[1].timestamp
        assert snap["queues"]["hotline-general"]["seats"]["available"] == 1
        live.push_event(statuses[1])                         # the same state again: since is kept
        live.push_event(member_event("QueueMemberStatus", "hotline-general", "Seat 1003",
                                     at=statuses[1].timestamp + 60))
        assert await live.drain()
        assert (await live.snapshot(statuses[1].timestamp))["seats"]["Seat 1003"]["since"] == statuses[1].timestamp


async def test_a_seat_in_two_queues_stays_when_it_leaves_one(redis_client, node_id):
    live = LiveStats(redis_client, node_id)
    async with running(live):
        live.push_event(member_event("QueueMemberAdded", "hotline-general", "Seat 8001"))
        live.push_event(member_event("QueueMemberAdded", "hotline-business", "Seat 8001", paused=True,
                                     reason="lunch"))
        live.push_event(member_event("QueueMemberAdded", "hotline-general", "Seat 8002", status=2))
        assert await live.drain()
        snap = await live.snapshot(NOON)
        assert states(snap) == {"Seat 8001": "available", "Seat 8002": "on_call"}
        assert snap["seats_by_state"] == {"available": 1, "on_call": 1}
        assert snap["queues"]["hotline-general"]["seats"]["available"] == 1
        assert snap["queues"]["hotline-general"]["seats"]["on_call"] == 1
        assert snap["queues"]["hotline-business"]["seats"]["paused"] == 1
        live.push_event(member_event("QueueMemberRemoved", "hotline-general", "Seat 8001", at=NOON + 5))
        assert await live.drain()
        snap = await live.snapshot(NOON + 5)
        assert states(snap) == {"Seat 8001": "paused", "Seat 8002": "on_call"}
        assert snap["seats"]["Seat 8001"]["reason"] == "lunch" and snap["seats"]["Seat 8001"]["since"] == NOON + 5
        assert snap["seats"]["Seat 8001"]["queues"] == ["hotline-business"]


@pytest.mark.parametrize("status, paused, in_call, state", [
    (0, False, False, "unknown"), (1, False, False, "available"), (2, False, False, "on_call"),
    (3, False, False, "on_call"), (4, False, False, "unavailable"), (5, False, False, "unavailable"),
    (6, False, False, "ringing"), (7, False, False, "on_call"), (8, False, False, "on_call"),
    (1, True, False, "paused"), (5, True, False, "paused"), (2, True, False, "on_call"), (6, True, False, "ringing"),
    (1, False, True, "on_call"), (None, False, False, "unknown"),
])
def test_member_state_follows_the_device_state_numbers(status, paused, in_call, state):
    assert member_state(status, paused, in_call) == state


def test_seat_states_of_a_members_hash():
    members = {"q1\nSeat 1": json.dumps({"state": "paused"}), "q2\nSeat 1": json.dumps({"state": "available"}),
               "q1\nSeat 2": json.dumps({"state": "paused"}), "q2\nSeat 3": json.dumps({"state": "ringing"}),
               "q1\nSeat 3": json.dumps({"state": "paused"})}
    assert seat_states(members) == {"Seat 1": "available", "Seat 2": "paused", "Seat 3": "ringing"}


async def test_longest_wait_is_the_oldest_caller_still_waiting(redis_client, node_id):
    live = LiveStats(redis_client, node_id)
    q = "hotline-general"
    async with running(live):
        live.push_event(caller_event("QueueCallerJoin", q, "a", NOON, 1))
        live.push_event(caller_event("QueueCallerJoin", q, "b", NOON + 10, 2))
        live.push_event(caller_event("QueueCallerJoin", "hotline-business", "c", NOON + 20, 1))
        assert await live.drain()
        snap = await live.snapshot(NOON + 30)
        assert snap["queues"][q]["longest_wait"] == 30 and snap["queues"][q]["waiting"] == 2
        assert snap["queues"]["hotline-business"]["longest_wait"] == 10
        live.push_event(caller_event("QueueCallerAbandon", q, "a", NOON + 31))
        assert await live.drain()
        assert (await live.snapshot(NOON + 40))["queues"][q]["longest_wait"] == 30   # b joined at +10
        # b's Leave is lost (AMI outage); d joins: Count 1 says only d waits, b is dropped
        live.push_event(caller_event("QueueCallerLeave", q, "a", NOON + 32, 1))
        live.push_event(caller_event("QueueCallerJoin", q, "d", NOON + 50, 1))
        assert await live.drain()
        snap = await live.snapshot(NOON + 60)
        assert snap["queues"][q]["waiting"] == 1 and snap["queues"][q]["longest_wait"] == 10
        live.push_event(to_event(Frame((("Event", "QueueParams"), ("Queue", q), ("Calls", "0")))))
        assert await live.drain()
        snap = await live.snapshot(NOON + 60)
        assert snap["queues"][q]["waiting"] == 0 and snap["queues"][q]["longest_wait"] == 0


# --- today's figures ----------------------------------------------------------------------------

async def test_replayed_calls_count_once_on_the_call_day_in_shanghai(redis_client, node_id):
    late = datetime(2024, 3, 1, 23, 59, 59, tzinfo=SHANGHAI).timestamp()  # 15:59:59 UTC
    live = LiveStats(redis_client, node_id)
    answered, missed = call(at=late), call("queue_timeout", at=late, hold=120)
    async with running(live):
        for c in (answered, missed, answered, missed, answered):
            live.push_call(c)
        assert await live.drain()
    snap = await live.snapshot(late)
    assert snap["day"] == "2024-03-01"
    assert snap["today"] == {"offered": 2, "answered": 1, "abandoned": 1, "dropped": 0, "answered_within_sl": 1,
                             "asa": 4.0, "aht": 13.0, "queued": 2, "emergency_transfer": 0, "callback_requested": 0}
    empty = (await live.snapshot(late + 1))["today"]
    assert empty == {"offered": 0, "answered": 0, "abandoned": 0, "dropped": 0, "answered_within_sl": 0,
                     "asa": None, "aht": None, "queued": 0, "emergency_transfer": 0, "callback_requested": 0}


async def test_service_level_asa_and_aht_per_queue_and_in_total(redis_client, node_id):
    queues = [QueueConfig(name="hotline-general"), QueueConfig(name="hotline-leader", purpose="leader",
                                                               service_level=30)]
    live = LiveStats(redis_client, node_id, queues=queues)
    calls = [
        call(hold=0, talk=60), call(hold=15, talk=120), call(hold=16, talk=30),        # general: 2 of 3 in 15 s
        call("abandoned", hold=40), call("queue_timeout", hold=120), call("dropped", hold=3),
        call(queue="hotline-leader", hold=25, talk=300), call(queue="hotline-leader", hold=31, talk=100),
        call("ivr_hangup", queue=None, hold=None),                                     # offered, never queued
    ]
    async with running(live):
        for _ in range(2):   # a replay: the same numbers
            for c in calls:
                live.push_call(c)
            assert await live.drain()
            snap = await live.snapshot(NOON)
            general, leader = snap["queues"]["hotline-general"], snap["queues"]["hotline-leader"]
            assert general["today"] == {"offered": 6, "answered": 3, "abandoned": 2, "dropped": 1,
                                        "answered_within_sl": 2, "asa": 10.3, "aht": 70.0}
            assert general["service_level_seconds"] == 15 and general["service_level"] == round(2 / 6, 4)
            assert leader["today"] == {"offered": 2, "answered": 2, "abandoned": 0, "dropped": 0,
                                       "answered_within_sl": 1, "asa": 28.0, "aht": 200.0}
            assert leader["service_level_seconds"] == 30 and leader["service_level"] == 0.5
            assert snap["today"] == {"offered": 9, "queued": 8, "emergency_transfer": 0, "callback_requested": 0, "answered": 5, "abandoned": 2, "dropped": 1,
                                     "answered_within_sl": 3, "asa": round(87 / 5, 1), "aht": 122.0}
            assert snap["service_level"] == {"total": round(3 / 8, 4),
                                             "queues": {"hotline-general": round(2 / 6, 4), "hotline-leader": 0.5}}


async def test_calls_of_the_captures_through_the_tracker(redis_client, node_id):
    calls = [c for name in ("answered.ami", "abandon.ami", "agi_errors.ami", "ivr_hangup.ami")
             for c in finished_calls(capture(name))[0]]
    live = LiveStats(redis_client, node_id, service_level=20)
    async with running(live):
        for c in calls + calls:
            live.push_call(c)
        assert await live.drain()
    snap = await live.snapshot(calls[0].started_at)
    # answered (hold 0, talk 6) twice, abandoned after 10 s, abandoned in the leader queue, an IVR hang-up
    assert snap["today"] == {"offered": 5, "queued": 4, "emergency_transfer": 0, "callback_requested": 0, "answered": 2, "abandoned": 2, "dropped": 0,
                             "answered_within_sl": 2, "asa": 0.0, "aht": 6.0}
    assert snap["queues"]["hotline-leader"]["today"]["abandoned"] == 1
    assert snap["queues"]["hotline-general"]["service_level_seconds"] == 20
    assert snap["service_level"]["total"] == 0.5


# --- published messages -------------------------------------------------------------------------

async def test_a_subscriber_receives_what_changed(redis_client, node_id):
    live = LiveStats(redis_client, node_id)
    pubsub = redis_client.pubsub()
    await pubsub.subscribe(f"hotline:{node_id}:live")
    received: list[dict] = []

    async def take(n: int) -> list[dict]:
        async def more():
            while True:
                m = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if m is not None:
                    received.append(json.loads(m["data"]))
                    return
        while len(received) < n:
            await asyncio.wait_for(more(), 30)   # the limit only turns a hang into a failure
        out = received[:n]
        del received[:n]
        return out

    answered = call(hold=5, talk=42)
    try:
        async with running(live):
            live.push_event(caller_event("QueueCallerJoin", "hotline-general", "u1", NOON, 1))
            live.push_event(member_event("QueueMemberPause", "hotline-general", "Seat 8001", paused=True,
                                         reason="break", at=NOON + 1))
            live.push_call(answered)
            live.push_call(answered)   # a replay: nothing published
            live.push_event(member_event("QueueMemberRemoved", "hotline-general", "Seat 8001", at=NOON + 2))
            assert await live.drain()
            assert await take(4) == [
                {"type": "queue", "queue": "hotline-general", "waiting": 1, "oldest": NOON},
                {"type": "seat", "seat": "Seat 8001", "queue": "hotline-general", "member": "paused",
                 "state": "paused", "since": NOON + 1, "reason": "break"},
                {"type": "call", "day": "2024-03-01", "queue": "hotline-general", "outcome": "answered",
                 "hold": 5, "talk": 42, "within_sl": True},
                {"type": "seat", "seat": "Seat 8001", "queue": "hotline-general", "member": None,
                 "state": "offline", "since": NOON + 2, "reason": None},
            ]
            assert received == []
    finally:
        await pubsub.aclose()


# --- Redis down -----------------------------------------------------------------------------------

async def test_redis_down_never_reaches_the_caller_and_counters_recover(redis_client, node_id):
    down = aioredis.from_url("redis://127.0.0.1:1/0", decode_responses=True, socket_connect_timeout=1)
    live = LiveStats(down, node_id, retry_interval=0.01)
    calls = [call(), call("abandoned")]
    try:
        async with running(live):
            for c in calls:
                live.push_call(c)      # never waits, never raises
            live.push_event(capture_events("abandon.ami")[0])
            assert await live.drain()
            assert not live.healthy
            live.redis = redis_client     # Redis is back
            await until(lambda: live.healthy, "the live views to recover")
        snap = await live.snapshot(calls[0].started_at)
        assert snap["today"]["offered"] == 2 and snap["today"]["answered"] == 1 and snap["today"]["abandoned"] == 1
    finally:
        await down.aclose()


async def test_a_real_redis_outage_then_the_figures_catch_up(private_redis):
    client, server = private_redis
    live = LiveStats(client, "outage", retry_interval=0.01)
    before, during = call(hold=3, talk=10), [call(hold=20, talk=30), call("abandoned", hold=50)]
    async with running(live):
        live.push_call(before)          # the script is loaded into this Redis
        assert await live.drain()
        assert (await live.snapshot(NOON))["today"]["answered"] == 1
        server.kill()
        for c in during:
            live.push_call(c)           # never waits, never raises
        live.push_event(caller_event("QueueCallerJoin", "hotline-general", "u9", NOON, 1))
        live.push_event(member_event("QueueMemberAdded", "hotline-general", "Seat 8001"))
        assert await live.drain()
        assert not live.healthy
        await server.start()            # empty: nothing kept on disk, the script cache is gone too
        live.push_call(before)          # counted again into the new, empty Redis: once
        await until(lambda: live.healthy and not live._unsent, "the live views to recover")
        snap = await live.snapshot(NOON)
    assert snap["today"] == {"offered": 3, "queued": 3, "emergency_transfer": 0, "callback_requested": 0, "answered": 2, "abandoned": 1, "dropped": 0,
                             "answered_within_sl": 1, "asa": round(23 / 2, 1), "aht": 20.0}


# --- operators ------------------------------------------------------------------------------------

async def _live_messages(pubsub, n: int, kind: str = "operator") -> list[dict]:
    """The next ``n`` messages of this type on the live channel (others skipped)."""
    out: list[dict] = []

    async def more() -> dict:
        while True:
            m = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if m is not None:
                return json.loads(m["data"])

    while len(out) < n:
        message = await asyncio.wait_for(more(), 30)   # the limit only turns a hang into a failure
        if message["type"] == kind:
            out.append(message)
    return out


async def _nothing_more(pubsub) -> list[dict]:
    """What else is on the channel now: a Ping's answer on the same link comes after every message
    published before it."""
    await pubsub.ping()
    out = []

    async def until_pong() -> None:
        while True:
            m = await pubsub.get_message(timeout=1.0)
            if m is not None and m["type"] == "pong":
                return
            if m is not None and m["type"] == "message":
                out.append(json.loads(m["data"]))

    await asyncio.wait_for(until_pong(), 30)   # the limit only turns a hang into a failure
    return out


def _operator(oid: int, state: str, since: float, reason: str | None = None, seat: str | None = "PJSIP/8101",
              name: str = "Ann") -> dict:
    return {"operator_id": oid, "name": name, "state": state, "since": since, "reason": reason,
            "seat": None if state == "offline" else seat}


async def test_operator_states_replace_each_other_and_a_logout_removes_the_operator(redis_client, node_id):
    live = LiveStats(redis_client, node_id)
    key = f"hotline:{node_id}:operators"
    pubsub = redis_client.pubsub()
    await pubsub.subscribe(f"hotline:{node_id}:live")
    steps = [_operator(7, "available", NOON), _operator(7, "paused", NOON + 60, "lunch"),
             _operator(7, "available", NOON + 900), _operator(7, "offline", NOON + 950)]
    try:
        async with running(live):
            bob = _operator(8, "on_call", NOON + 5, seat="PJSIP/8102", name="Bob")
            live.push_operator(**bob)
            live.push_operator(**steps[0])
            assert await live.drain()
            live.push_operator(**steps[1])
            live.push_operator(**steps[1])              # the same state again: nothing written or published
            assert await live.drain()
            assert {k: json.loads(v) for k, v in (await redis_client.hgetall(key)).items()} == {
                "7": steps[1], "8": bob}
            snap = await live.snapshot(NOON + 61)
            assert snap["operators"] == {"7": steps[1], "8": bob}
            assert snap["operators_by_state"] == {"paused": 1, "on_call": 1}
            for record in steps[2:]:
                live.push_operator(**record)
                assert await live.drain()
            snap = await live.snapshot(NOON + 951)
            assert snap["operators"] == {"8": bob} and snap["operators_by_state"] == {"on_call": 1}
            assert await _live_messages(pubsub, 5) == [{"type": "operator", **r} for r in [bob, *steps]]
            assert await _nothing_more(pubsub) == []
            # pushed faster than they are written: the latest state wins, never an older one
            again = [_operator(7, "available", NOON + 1000), _operator(7, "paused", NOON + 1010, "meeting")]
            for record in again:
                live.push_operator(**record)
            assert await live.drain()
            assert (await live.snapshot(NOON + 1010))["operators"]["7"] == again[1]
            assert await _live_messages(pubsub, 1) == [{"type": "operator", **again[1]}]
            assert await _nothing_more(pubsub) == []
    finally:
        await pubsub.aclose()


async def test_a_reload_replaces_the_operators_view(redis_client, node_id):
    live = LiveStats(redis_client, node_id)
    key = f"hotline:{node_id}:operators"
    ann, bob = _operator(7, "paused", NOON, "lunch"), _operator(8, "available", NOON + 5, seat="PJSIP/8102", name="Bob")
    # left by an earlier process: Carl (no longer logged in here) and an older state of Bob
    await redis_client.hset(key, mapping={"9": json.dumps(_operator(9, "available", NOON - 99, name="Carl")),
                                          "8": json.dumps(_operator(8, "on_call", NOON - 50, name="Bob"))})
    pubsub = redis_client.pubsub()
    await pubsub.subscribe(f"hotline:{node_id}:live")
    try:
        async with running(live):
            live.push_operators([ann, bob, _operator(10, "offline", NOON - 10, name="Dan")], at=NOON + 10)
            assert await live.drain()
            assert (await live.snapshot(NOON + 10))["operators"] == {"7": ann, "8": bob}
            published = await _live_messages(pubsub, 3)
            assert sorted(published, key=lambda m: m["operator_id"]) == [
                {"type": "operator", **r} for r in (ann, bob, _operator(9, "offline", NOON + 10, name="Carl"))]
            # the same set again (the next reconcile): nothing published; one left out goes offline
            live.push_operators([ann, bob], at=NOON + 20)
            live.push_operators([bob], at=NOON + 30)
            assert await live.drain()
            assert (await live.snapshot(NOON + 30))["operators"] == {"8": bob}
            assert await _live_messages(pubsub, 1) == [{"type": "operator", **_operator(7, "offline", NOON + 30)}]
            assert await _nothing_more(pubsub) == []
    finally:
        await pubsub.aclose()


async def test_operator_states_written_while_redis_was_down_are_there_when_it_is_back(private_redis):
    client, server = private_redis
    live = LiveStats(client, "outage-operators", retry_interval=0.01)
    key = "hotline:outage-operators:operators"
    async with running(live):
        live.push_operator(**_operator(7, "available", NOON))
        live.push_operator(**_operator(8, "available", NOON, seat="PJSIP/8102", name="Bob"))
        assert await live.drain()
        server.kill()
        live.push_operator(**_operator(7, "paused", NOON + 60, "lunch"))   # never waits, never raises
        live.push_operator(**_operator(8, "offline", NOON + 70, name="Bob"))
        assert await live.drain()
        assert not live.healthy
        await server.start()            # empty: nothing kept on disk
        await until(lambda: live.healthy and live._operators_synced, "the operators' view to recover")
        assert {k: json.loads(v) for k, v in (await client.hgetall(key)).items()} == {
            "7": _operator(7, "paused", NOON + 60, "lunch")}


async def test_operator_states_dropped_from_a_full_backlog_are_written_all_the_same(redis_client, node_id):
    live = LiveStats(redis_client, node_id, backlog=2, retry_interval=0.01)
    records = [_operator(oid, "paused", NOON + oid, "training", seat=f"PJSIP/81{oid:02d}") for oid in range(1, 6)]
    for record in records:
        live.push_operator(**record)            # the task is not running: three do not fit
    assert live.dropped == 3
    async with running(live):
        await until(lambda: live._operators_synced, "the operators written")
        assert await live.drain()
        assert (await live.snapshot(NOON))["operators"] == {str(r["operator_id"]): r for r in records}


async def test_bad_operator_updates_are_refused_without_raising(redis_client, node_id):
    live = LiveStats(redis_client, node_id)
    live.push_operator(7, name="Ann", state="lunching", since=NOON)
    live.push_operator(7, name="Ann", state="available", since=None)
    live.push_operators([{"name": "no id"}], at=NOON)
    assert live.dropped == 3 and live._queue.empty()


# --- the configured queues at run time ------------------------------------------------------------

async def test_set_queues_changes_the_service_level_of_calls_counted_afterwards(redis_client, node_id, pg_pool):
    live = LiveStats(redis_client, node_id, queues=[QueueConfig(name="hotline-general"),
                                                    QueueConfig(name="hotline-old", service_level=20)])
    before = call(hold=20, talk=30)                 # pushed under the old level (15 s): not within
    live.push_call(before)
    # the configuration in Postgres changes: general gets 30 s, hotline-old goes, hotline-typhoon comes
    await pg_pool.execute("INSERT INTO queues (name, purpose, service_level_seconds) VALUES"
                          " ('hotline-general', 'general', 30), ('hotline-typhoon', 'special', 25)")
    live.set_queues(await pg_pool.fetch("SELECT name, service_level_seconds FROM queues ORDER BY name"))
    assert live.service_levels == {"hotline-general": 30, "hotline-typhoon": 25}
    after = call(hold=20, talk=30)                  # now within 30 s
    async with running(live):
        live.push_call(after)
        assert await live.drain()
    snap = await live.snapshot(NOON)
    general = snap["queues"]["hotline-general"]
    assert general["service_level_seconds"] == 30
    assert general["today"]["answered"] == 2 and general["today"]["answered_within_sl"] == 1
    assert snap["queues"]["hotline-typhoon"]["service_level_seconds"] == 25       # listed while idle
    assert "hotline-old" not in snap["queues"]                                     # idle, no longer configured
    # the settings' own objects work too; bad input changes nothing
    live.set_queues([QueueConfig(name="hotline-general", service_level=10), {"name": "hotline-x"}])
    assert live.service_levels == {"hotline-general": 10, "hotline-x": 15}
    for bad in ([{"name": ""}], [{"name": "q", "service_level": 0}], [{"name": "q", "service_level": "15"}]):
        with pytest.raises(ValueError):
            live.set_queues(bad)
    assert live.service_levels == {"hotline-general": 10, "hotline-x": 15}


async def test_the_ivr_s_own_endings_count_in_no_queue(redis_client, node_id):
    live = LiveStats(redis_client, node_id, queues=[QueueConfig(name="hotline-general")])
    async with running(live):
        live.push_call(call("answered"))
        live.push_call(call("emergency_transfer", queue=None, hold=None))
        live.push_call(call("callback_requested", queue="hotline-general", hold=None))   # the IVR's queue, never joined
        assert await live.drain()
    snap = await live.snapshot(NOON + 60)
    assert (snap["today"]["offered"], snap["today"]["queued"]) == (3, 1)
    assert (snap["today"]["emergency_transfer"], snap["today"]["callback_requested"]) == (1, 1)
    general = snap["queues"]["hotline-general"]
    assert (general["today"]["offered"], general["service_level"]) == (1, 1.0)


async def test_a_queue_that_a_call_overflowed_from_counts_it_offered_and_missed(redis_client, node_id):
    from telephony.model import TimelineEntry

    live = LiveStats(redis_client, node_id, queues=[QueueConfig(name="hotline-dialect"),
                                                    QueueConfig(name="hotline-general")])
    hopped = call("answered", queue="hotline-general", hold=70)
    hopped = dataclasses.replace(hopped, timeline=(
        TimelineEntry(NOON + 2, "queue_join", {"queue": "hotline-dialect"}),
        TimelineEntry(NOON + 62, "queue_overflow", {"from_queue": "hotline-dialect", "to_queue": "hotline-general",
                                                    "waited": 60})))
    async with running(live):
        live.push_call(hopped)
        assert await live.drain()
    snap = await live.snapshot(NOON + 100)
    dialect, general = snap["queues"]["hotline-dialect"]["today"], snap["queues"]["hotline-general"]["today"]
    assert (dialect["offered"], dialect["abandoned"], dialect["answered"]) == (1, 1, 0)
    assert (general["offered"], general["answered"]) == (1, 1)
    assert (snap["today"]["offered"], snap["today"]["queued"], snap["today"]["abandoned"]) == (1, 1, 0)
