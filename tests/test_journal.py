"""The call journal (Redis Stream) and the open-call store, against a real Redis.

Faults are real: a client pointed at a closed local port, and a private redis-server process
that is killed mid-use.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging

import pytest
import redis.asyncio as aioredis
from redis.client import NEVER_DECODE

from telephony.model import ABANDONED, ANSWERED, FinishedCall, RecordingRef, TimelineEntry
from tests.conftest import REDIS_URL
from tests.support import free_port
from workorders import journal as journal_mod
from workorders.journal import (
    CallJournal,
    JournalDecodeError,
    JournalUnavailable,
    OpenCallStore,
    deserialize_call,
    serialize_call,
)


def full_call(linkedid: str = "1700000000.101", node: str = "n1") -> FinishedCall:
    """A call with every field set to a non-default value."""
    return FinishedCall(
        node=node,
        linkedid=linkedid,
        caller_number="13800138000",
        caller_name="张三 \"Zhang\" O'Neil\\ 🙂",
        started_at=1700000000.123456,
        answered_at=1700000012.5,
        ended_at=1700000100.75,
        outcome=ANSWERED,
        ivr_choice="2",
        queue="hotline-business",
        category="business_environment",
        queue_position=3,
        seat="Seat 8001 王",
        seat_interface="PJSIP/8001",
        hold_seconds=12,
        talk_seconds=88,
        hangup_cause=16,
        hangup_cause_text="Normal Clearing",
        recordings=(
            RecordingRef(path="/var/rec/1700000000.102.wav", uniqueid="1700000000.102", started_at=1700000005.0),
            RecordingRef(path="/var/rec/录音.wav", uniqueid="1700000000.105", started_at=1700000013.25),
        ),
        timeline=(
            TimelineEntry(1700000000.123456, "call_start"),
            TimelineEntry(1700000003.0, "ivr_choice", {"key": "2"}),
            TimelineEntry(1700000004.0, "queue_join", {"queue": "hotline-business", "position": 3}),
            TimelineEntry(1700000012.5, "answered", {"seat": "Seat 8001 王", "hold": 12, "ring": 2}),
            TimelineEntry(1700000100.75, "hangup", {"cause": None, "outcome": "answered", "ratio": 0.1}),
        ),
        variables={"HOTLINE_QUEUE": "hotline-business", "HOTLINE_NOTE": "多行\r\n文本"},
        closed_by="resync",
        survey="basically_satisfied",
    )


def sparse_call(linkedid: str = "1700000000.201", node: str = "n1") -> FinishedCall:
    """A call with every optional field None or empty."""
    return FinishedCall(node=node, linkedid=linkedid, caller_number=None, caller_name=None,
                        started_at=1700000000.0, answered_at=None, ended_at=1700000009.0, outcome=ABANDONED)








# --- serialising ----------------------------------------------------------------------------


def test_round_trip_full_call():
    call = full_call()
    text = serialize_call(call)
    assert deserialize_call(text) == call
    assert "张三" in text  # kept readable, not \u-escaped
    back = deserialize_call(text.encode())  # bytes, as a raw Redis reply gives it
    assert back == call
    assert isinstance(back.recordings, tuple) and isinstance(back.recordings[0], RecordingRef)
    assert isinstance(back.timeline, tuple) and isinstance(back.timeline[1], TimelineEntry)


def test_round_trip_sparse_call():
    call = sparse_call()
    assert deserialize_call(serialize_call(call)) == call


def test_sample_covers_every_field():
    """The round-trip sample sets every field away from its default, so all are exercised."""
    call, bare = full_call(), sparse_call()
    for f in dataclasses.fields(FinishedCall):
        if f.name not in ("node", "linkedid", "started_at", "ended_at", "outcome"):
            assert getattr(call, f.name) != getattr(bare, f.name), f.name


@dataclasses.dataclass(frozen=True, slots=True)
class FinishedCallV2(FinishedCall):
    """FinishedCall as a later version might have it: one more field, with a default."""

    transferred_to: tuple[str, ...] = ()


def test_field_added_later_round_trips():
    call = FinishedCallV2(**{f.name: getattr(full_call(), f.name) for f in dataclasses.fields(FinishedCall)},
                          transferred_to=("110", "119"))
    text = serialize_call(call)
    assert json.loads(text)["transferred_to"] == ["110", "119"]
    assert journal_mod._decode(FinishedCallV2, json.loads(text), "call") == call
    # an entry written before the field existed reads with the field's default
    old = journal_mod._decode(FinishedCallV2, json.loads(serialize_call(full_call())), "call")
    assert old.transferred_to == ()


def test_unknown_field_is_ignored_with_a_warning(caplog):
    data = json.loads(serialize_call(full_call()))
    data["transferred_to"] = ["110"]
    with caplog.at_level(logging.WARNING, logger="hotline.journal"):
        call = deserialize_call(json.dumps(data))
    assert call == full_call()
    assert "transferred_to" in caplog.text


@pytest.mark.parametrize("mutate, where", [
    (lambda d: d.pop("linkedid"), "linkedid"),
    (lambda d: d.update(started_at="soon"), "started_at"),
    (lambda d: d.update(queue_position=True), "queue_position"),
    (lambda d: d.update(recordings=[{"path": "/x.wav", "uniqueid": "1.2"}]), "started_at"),
    (lambda d: d.update(timeline={"at": 1}), "timeline"),
    (lambda d: d.update(variables={"A": 1}), "variables.A"),
    (lambda d: d.update(outcome=None), "outcome"),
])
def test_invalid_entries_raise_decode_error(mutate, where):
    data = json.loads(serialize_call(full_call()))
    mutate(data)
    with pytest.raises(JournalDecodeError, match=where):
        deserialize_call(json.dumps(data))


@pytest.mark.parametrize("text", ["", "{", "[]", "null", b"\xff\xfe{", '{"node": "n1"'])
def test_not_a_call_raises_decode_error(text):
    with pytest.raises(JournalDecodeError):
        deserialize_call(text)


# --- the journal stream ---------------------------------------------------------------------


async def test_append_pending_ack(redis_client, node_id):
    journal = CallJournal(redis_client, node_id)
    calls = [full_call("1700000000.1", node_id), sparse_call("1700000000.2", node_id), full_call("1700000000.3", node_id)]
    ids = [await journal.append(c) for c in calls]
    assert all(isinstance(i, str) for i in ids)
    assert await redis_client.xlen(f"hotline:{node_id}:journal") == 3

    pending = await journal.pending()
    assert pending == list(zip(ids, calls))  # oldest first, decoded equal
    assert await journal.pending(limit=2) == list(zip(ids, calls))[:2]

    await journal.ack(ids[1])
    await journal.ack(ids[1])  # twice is harmless
    assert await journal.pending() == [(ids[0], calls[0]), (ids[2], calls[2])]

    # a new journal object (a restarted service) sees the same backlog
    again = CallJournal(redis_client, node_id)
    assert [c for _, c in await again.pending()] == [calls[0], calls[2]]
    for entry_id, _ in await again.pending():
        await again.ack(entry_id)
    assert await journal.pending() == []
    assert await redis_client.xlen(f"hotline:{node_id}:journal") == 0


async def test_pending_reads_past_one_batch(redis_client, node_id, monkeypatch):
    monkeypatch.setattr(journal_mod, "_BATCH", 3)
    journal = CallJournal(redis_client, node_id)
    calls = [sparse_call(f"1700000000.{i}", node_id) for i in range(10)]
    ids = [await journal.append(c) for c in calls]
    assert await journal.pending() == list(zip(ids, calls))
    assert await journal.pending(limit=4) == list(zip(ids, calls))[:4]


async def test_bad_entries_are_moved_aside(redis_client, node_id, caplog):
    key, bad_key = f"hotline:{node_id}:journal", f"hotline:{node_id}:journal:bad"
    journal = CallJournal(redis_client, node_id)
    first = await journal.append(full_call("1700000000.1", node_id))
    broken_json = await redis_client.xadd(key, {"call": '{"node": ', "linkedid": "x"})
    no_call_field = await redis_client.xadd(key, {"something": "else"})
    wrong_type = await redis_client.xadd(key, {"call": json.dumps({**json.loads(serialize_call(sparse_call())),
                                                                   "ended_at": "later"})})
    raw = aioredis.from_url(REDIS_URL, decode_responses=False)
    try:
        not_utf8 = (await raw.xadd(key, {b"call": b"\xff\xfe not utf-8"})).decode()
    finally:
        await raw.aclose()
    last = await journal.append(sparse_call("1700000000.9", node_id))

    with caplog.at_level(logging.ERROR, logger="hotline.journal"):
        pending = await journal.pending()
    assert [i for i, _ in pending] == [first, last]
    assert [c.linkedid for _, c in pending] == ["1700000000.1", "1700000000.9"]

    # moved, not lost: the bad stream holds them with their reason and original id
    bad = await redis_client.execute_command("XRANGE", bad_key, "-", "+", **{NEVER_DECODE: True})
    moved = {fields[b"journal_id"].decode(): fields for _, fields in bad}
    assert set(moved) == {broken_json, no_call_field, wrong_type, not_utf8}
    assert moved[broken_json][b"call"] == b'{"node": '
    assert moved[not_utf8][b"call"] == b"\xff\xfe not utf-8"
    assert b"ended_at" in moved[wrong_type][b"error"]
    assert b"no 'call' field" in moved[no_call_field][b"error"]
    assert caplog.text.count("cannot be decoded") == 4
    # and not retried: the journal holds only the good entries now
    assert await redis_client.xlen(key) == 2
    caplog.clear()
    assert [i for i, _ in await journal.pending()] == [first, last]
    assert "cannot be decoded" not in caplog.text


async def test_unreachable_redis_raises_journal_unavailable(node_id):
    client = aioredis.from_url(f"redis://127.0.0.1:{free_port()}/0", decode_responses=True)
    try:
        journal = CallJournal(client, node_id, op_timeout=1.0)
        with pytest.raises(JournalUnavailable):
            await journal.append(full_call())
        with pytest.raises(JournalUnavailable):
            await journal.pending()
        with pytest.raises(JournalUnavailable):
            await journal.ack("1-0")
        store = OpenCallStore(client, node_id, op_timeout=1.0)
        with pytest.raises(JournalUnavailable):
            await store.save({"1.1": "{}"}, [])
        with pytest.raises(JournalUnavailable):
            await store.load()
    finally:
        await client.aclose()


async def test_redis_killed_mid_use_raises_journal_unavailable(private_redis, node_id):
    client, proc = private_redis
    journal = CallJournal(client, node_id, op_timeout=1.0)
    store = OpenCallStore(client, node_id, op_timeout=1.0)
    entry = await journal.append(full_call())
    await store.save({"1.1": "{}"})
    assert [i for i, _ in await journal.pending()] == [entry]

    proc.kill()
    with pytest.raises(JournalUnavailable):
        await journal.append(sparse_call())
    with pytest.raises(JournalUnavailable):
        await journal.pending()
    with pytest.raises(JournalUnavailable):
        await journal.ack(entry)
    with pytest.raises(JournalUnavailable):
        await store.save({"1.2": "{}"}, ["1.1"])
    with pytest.raises(JournalUnavailable):
        await store.load()


# --- calls in progress ----------------------------------------------------------------------


async def test_open_call_store(redis_client, node_id):
    store = OpenCallStore(redis_client, node_id)
    assert await store.load() == {}
    await store.save({"1.1": '{"caller_name": "李四"}', "1.2": "{}"}, [])
    await store.save({"1.3": "{}", "1.2": '{"queue": "q"}'}, ["1.1"])
    await store.save({}, [])  # nothing to do
    assert await store.load() == {"1.2": '{"queue": "q"}', "1.3": "{}"}
    await store.save({"1.4": "{}"}, ["1.4", "1.3", "missing"])  # removal is applied last
    assert await OpenCallStore(redis_client, node_id).load() == {"1.2": '{"queue": "q"}'}
    assert await redis_client.hgetall(f"hotline:{node_id}:open") == {"1.2": '{"queue": "q"}'}
