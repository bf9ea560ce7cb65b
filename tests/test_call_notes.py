"""Notes on a call in progress (call_notes, migration 0007): the leader hotline pre-screens a
first-time caller before any work order exists; the call writer moves the notes onto the call's
order in its transaction, exactly once, and a rolled-back write keeps them. Real Postgres."""

from __future__ import annotations

import asyncio
import json

import asyncpg
import pytest

from queues.leader import CallRef, LeaderDesk, LeaderError, check_call
from recordings.check import RecordingCheck
from workorders.store import CallStore

from .test_workorders import make_call

RECORD = {"name": "Zhang San", "number": "13800138000", "matter": "no water", "notes": "building 7"}


@pytest.fixture
def store(pg_pool) -> CallStore:
    return CallStore(pg_pool)


@pytest.fixture
def desk(pg_pool) -> LeaderDesk:
    return LeaderDesk(pg_pool, None)


async def notes(pool, call) -> list[str]:
    rows = await pool.fetch("SELECT kind FROM call_notes WHERE node = $1 AND linkedid = $2 ORDER BY id",
                            call.node, call.linkedid)
    return [r["kind"] for r in rows]


async def order_events(pool, number: str) -> list[tuple[str, str, dict]]:
    rows = await pool.fetch("SELECT e.kind, e.actor, e.detail FROM work_order_events e"
                            " JOIN work_orders w ON w.id = e.work_order_id WHERE w.number = $1 ORDER BY e.id", number)
    return [(r["kind"], r["actor"], json.loads(r["detail"])) for r in rows]


def ref(call) -> CallRef:
    return CallRef(call.node, call.linkedid)


async def test_notes_written_during_the_call_are_moved_onto_its_order_once(store, desk, pg_pool):
    call = make_call(node="pbx1", linkedid="1763800000.42")
    written = await desk.prescreen_call(ref(call), RECORD, None, "op1")
    assert (written["order_number"], written["event_id"]) == (None, None) and written["note_id"]
    other = make_call(node="pbx1", linkedid="1763800000.43")          # another call keeps its note
    await desk.prescreen_call(ref(other), RECORD, None, "op1")
    assert await notes(pg_pool, call) == ["prescreen"]

    stored = await store.record_call(call, [])
    assert stored.order_created
    kinds = await order_events(pg_pool, stored.order_number)
    assert [(k, a) for k, a, _ in kinds] == [("created", "system"), ("prescreen", "op1")]
    detail = kinds[1][2]
    assert detail == {**RECORD, "operator_id": None, "slot_id": None, "call_id": stored.call_id}
    assert await notes(pg_pool, call) == [] and await notes(pg_pool, other) == ["prescreen"]

    again = await store.record_call(call, [])                          # a replay: nothing moves again
    assert again.duplicate and len(await order_events(pg_pool, stored.order_number)) == 2

    # once the call is stored, its notes go straight onto its order
    later = await desk.prescreen_call(ref(call), {**RECORD, "matter": "still no water"}, None, "op1")
    assert (later["order_number"], later["note_id"]) == (stored.order_number, None) and later["event_id"]
    assert [k for k, _, _ in await order_events(pg_pool, stored.order_number)] == ["created", "prescreen", "prescreen"]
    assert await notes(pg_pool, call) == []


async def test_concurrent_duplicate_writes_move_the_notes_exactly_once(store, desk, pg_pool):
    call = make_call(caller=None, node="pbx1")   # anonymous: no per-number lock, the unique key decides
    await desk.prescreen_call(ref(call), RECORD, None, "op1")
    await desk.prescreen_call(ref(call), {**RECORD, "notes": "second"}, None, "op1")
    results = await asyncio.gather(*(store.record_call(call, []) for _ in range(8)))
    assert sum(not r.duplicate for r in results) == 1
    (number,) = {r.order_number for r in results}
    events = await order_events(pg_pool, number)
    assert [(k, d.get("notes")) for k, _, d in events] == [("created", None), ("prescreen", "building 7"),
                                                          ("prescreen", "second")]
    assert await notes(pg_pool, call) == []
    assert await pg_pool.fetchval("SELECT count(*) FROM work_orders") == 1


async def test_a_rolled_back_write_keeps_the_notes(store, desk, pg_pool):
    call = make_call(node="pbx1")
    await desk.prescreen_call(ref(call), RECORD, None, "op1")
    with pytest.raises(asyncpg.CheckViolationError):   # fails at the recording rows, after the notes moved
        await store.record_call(call, [RecordingCheck("/x.wav", 1, 1.0, "00", "weird")])
    assert await notes(pg_pool, call) == ["prescreen"]
    assert await pg_pool.fetchval("SELECT count(*) FROM work_order_events") == 0
    stored = await store.record_call(call, [])
    assert [k for k, _, _ in await order_events(pg_pool, stored.order_number)] == ["created", "prescreen"]
    assert await notes(pg_pool, call) == []


async def test_a_note_racing_the_writer_is_never_left_behind(store, desk, pg_pool):
    for i in range(20):
        call = make_call(caller=f"1380000{i:04d}", node="pbx1")
        _, stored = await asyncio.gather(desk.prescreen_call(ref(call), RECORD, None, "op1"),
                                         store.record_call(call, []))
        assert await notes(pg_pool, call) == []
        events = await order_events(pg_pool, stored.order_number)
        assert [k for k, _, _ in events] == ["created", "prescreen"]


@pytest.mark.parametrize(("node", "linkedid", "field"), [
    ("", "1763800000.42", "node"), ("pbx 1", "1763800000.42", "node"), (None, "1763800000.42", "node"),
    ("n" * 65, "1763800000.42", "node"), ("pbx1", "", "linkedid"), ("pbx1", "1.2\r\nAction: x", "linkedid"),
    ("pbx1", 17638.42, "linkedid"), ("pbx1", "1" * 151, "linkedid")])
async def test_a_call_reference_is_validated(desk, pg_pool, node, linkedid, field):
    with pytest.raises(LeaderError) as caught:
        check_call(node, linkedid)
    assert (caught.value.status, caught.value.field) == (400, field)
    with pytest.raises(LeaderError) as caught:
        await desk.prescreen_call(CallRef(node, linkedid), RECORD, None, "op1")
    assert (caught.value.status, caught.value.field) == (400, field)
    with pytest.raises(LeaderError) as caught:                         # the body is checked too
        await desk.prescreen_call(CallRef("pbx1", "1763800000.42"), {**RECORD, "name": ""}, None, "op1")
    assert caught.value.field == "name"
    assert await pg_pool.fetchval("SELECT count(*) FROM call_notes") == 0
