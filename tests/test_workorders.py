"""CallStore against real Postgres (rows, idempotence, repeat callers, numbering, rollback), the writer
task, the run summary, and seats into app_queue (live views: tests/test_live.py)."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import time
import uuid
from datetime import date, datetime, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from config.settings import SeatConfig
from queues.seats import reconcile_seats
from recordings.check import RecordingCheck, check_recording
from telephony.actions import PbxActions
from telephony.ami_codec import Frame
from telephony.ami_protocol import AmiResponse
from telephony.model import OUTCOMES, FinishedCall, RecordingRef, TimelineEntry
from workorders.numbering import ORDER_NUMBER, format_order_number, next_order_number, order_day
from workorders.pipeline import TRANSIENT, CallWriter
from workorders.reports import run_summary
from workorders.store import CallStore, RecordResult, is_anonymous

from .conftest import FIXTURES
from .support import running, until

SHANGHAI = ZoneInfo("Asia/Shanghai")
TABLES = ("calls", "call_events", "recordings", "work_orders", "work_order_events", "order_day_counters")
_ids = itertools.count(1)


def make_call(caller: str | None = "13800138000", outcome: str = "answered", *, at: float | None = None,
              linkedid: str | None = None, node: str = "pbx-a", **fields) -> FinishedCall:
    start = time.time() if at is None else at
    answered = outcome == "answered"
    timeline = (
        TimelineEntry(start, "call_start", {"channel": "PJSIP/trunk-0001"}),
        TimelineEntry(start + 2.5, "ivr_choice", {"key": "1"}),
        TimelineEntry(start + 3, "queue_join", {"queue": "hotline-general", "position": 1}),
    ) + ((TimelineEntry(start + 7, "answered", {"seat": "Seat 8001"}),) if answered else ()) + (
        TimelineEntry(start + 20, "hangup", {"cause": 16}),)
    values = dict(
        node=node, linkedid=linkedid or f"1795314872.{next(_ids)}", caller_number=caller, caller_name="张三",
        started_at=start, answered_at=start + 7 if answered else None, ended_at=start + 20, outcome=outcome,
        ivr_choice="1", queue="hotline-general", category="housing", queue_position=1,
        seat="Seat 8001" if answered else None, seat_interface="PJSIP/8001" if answered else None,
        hold_seconds=4, talk_seconds=13 if answered else None, hangup_cause=16,
        hangup_cause_text="Normal Clearing", timeline=timeline, variables={"HOTLINE_CATEGORY": "housing"},
    )
    values.update(fields)
    return FinishedCall(**values)


@pytest.fixture
def store(pg_pool) -> CallStore:
    return CallStore(pg_pool)


async def counts(pool) -> dict[str, int]:
    async with pool.acquire() as conn:
        return {t: await conn.fetchval(f"SELECT count(*) FROM {t}") for t in TABLES}


async def order_of(pool, number: str):
    return await pool.fetchrow("SELECT * FROM work_orders WHERE number = $1", number)


async def order_events(pool, number: str) -> list[str]:
    rows = await pool.fetch("SELECT e.kind FROM work_order_events e JOIN work_orders w ON w.id = e.work_order_id "
                            "WHERE w.number = $1 ORDER BY e.id", number)
    return [r["kind"] for r in rows]


def today() -> str:
    return f"{datetime.now(SHANGHAI):%Y%m%d}"


# --- one call, all its rows -----------------------------------------------------------------

async def test_answered_call_writes_call_timeline_recording_and_order(store, pg_pool):
    start = time.time()
    call = make_call(at=start, recordings=(
        RecordingRef(str(FIXTURES / "answered.recording.wav"), "1795314872.2", start + 7),))
    checks = [check_recording(FIXTURES / "answered.recording.wav")]
    result = await store.record_call(call, checks)

    assert result == RecordResult(result.call_id, f"12345-{today()}-000001", True, False)
    row = await pg_pool.fetchrow("SELECT * FROM calls WHERE id = $1", result.call_id)
    assert (row["node"], row["linkedid"], row["caller_number"], row["caller_name"]) == (
        "pbx-a", call.linkedid, "13800138000", "张三")
    assert row["started_at"] == datetime.fromtimestamp(call.started_at, timezone.utc)
    assert row["answered_at"].timestamp() == pytest.approx(call.started_at + 7)
    assert row["ended_at"].timestamp() == pytest.approx(call.started_at + 20)
    assert (row["outcome"], row["ivr_choice"], row["queue"], row["category"], row["queue_position"]) == (
        "answered", "1", "hotline-general", "housing", 1)
    assert (row["seat"], row["seat_interface"], row["hold_seconds"], row["talk_seconds"]) == (
        "Seat 8001", "PJSIP/8001", 4, 13)
    assert (row["hangup_cause"], row["hangup_cause_text"]) == (16, "Normal Clearing")
    assert json.loads(row["variables"]) == {"HOTLINE_CATEGORY": "housing"}

    timeline = await pg_pool.fetch("SELECT * FROM call_events WHERE call_id = $1 ORDER BY seq", result.call_id)
    assert [(e["seq"], e["kind"]) for e in timeline] == [
        (0, "call_start"), (1, "ivr_choice"), (2, "queue_join"), (3, "answered"), (4, "hangup")]
    assert json.loads(timeline[2]["detail"]) == {"queue": "hotline-general", "position": 1}
    assert timeline[1]["at"].timestamp() == pytest.approx(call.started_at + 2.5)

    rec = await pg_pool.fetchrow("SELECT * FROM recordings WHERE call_id = $1", result.call_id)
    data = (FIXTURES / "answered.recording.wav").read_bytes()
    assert (rec["path"], rec["bytes"], rec["sha256"], rec["status"], rec["uniqueid"]) == (
        str(FIXTURES / "answered.recording.wav"), 96044, hashlib.sha256(data).hexdigest(), "ok", "1795314872.2")
    assert 5.9 < float(rec["duration_seconds"]) < 6.1
    assert rec["started_at"].timestamp() == pytest.approx(call.started_at + 7)

    order = await order_of(pg_pool, result.order_number)
    assert row["work_order_id"] == order["id"]
    assert (order["caller_number"], order["caller_name"], order["request_type"], order["category"],
            order["urgency"], order["status"]) == ("13800138000", "张三", None, "housing", "normal", "intake")
    assert order["created_at"] == row["started_at"]
    events = await pg_pool.fetch("SELECT * FROM work_order_events WHERE work_order_id = $1", order["id"])
    assert [(e["kind"], e["actor"]) for e in events] == [("created", "system")]
    assert json.loads(events[0]["detail"]) == {
        "call_id": result.call_id, "node": "pbx-a", "linkedid": call.linkedid, "outcome": "answered",
        "status": "intake"}
    assert await counts(pg_pool) == dict(calls=1, call_events=5, recordings=1, work_orders=1,
                                         work_order_events=1, order_day_counters=1)


@pytest.mark.parametrize("outcome", ["abandoned", "queue_timeout", "ivr_hangup", "dropped"])
async def test_missed_call_opens_an_order_to_call_back(store, pg_pool, outcome):
    result = await store.record_call(make_call(outcome=outcome, category=None), [])
    order = await order_of(pg_pool, result.order_number)
    assert (order["status"], order["category"]) == ("callback_pending", "general")
    assert await pg_pool.fetchval("SELECT count(*) FROM recordings") == 0


async def test_every_model_outcome_passes_the_check(store):
    for outcome in OUTCOMES:
        await store.record_call(make_call(caller=None, outcome=outcome), [])


async def test_missing_and_short_recordings_are_stored_with_their_verdict(store, pg_pool, tmp_path):
    checks = [check_recording(tmp_path / "gone.wav"), RecordingCheck("/x/short.wav", 800, 0.05, "ab" * 32, "short")]
    result = await store.record_call(make_call(), checks)
    rows = await pg_pool.fetch("SELECT path, bytes, duration_seconds, sha256, status, uniqueid FROM recordings "
                               "WHERE call_id = $1 ORDER BY id", result.call_id)
    assert [tuple(r) for r in rows] == [
        (str(tmp_path / "gone.wav"), None, None, None, "missing", None),
        ("/x/short.wav", 800, Decimal("0.050"), "ab" * 32, "short", None)]


async def test_caller_controlled_text_is_stored_safely(store, pg_pool):
    call = make_call(caller_name="Evil\x00Name\udcff", timeline=(
        TimelineEntry(time.time(), "ivr_choice", {"key": "1\x00", "bad": float("nan"), "when": date(2024, 1, 1)}),))
    result = await store.record_call(call, [])
    row = await pg_pool.fetchrow("SELECT caller_name FROM calls WHERE id = $1", result.call_id)
    assert row["caller_name"] == "EvilName?"
    detail = json.loads(await pg_pool.fetchval("SELECT detail FROM call_events WHERE call_id = $1", result.call_id))
    assert detail == {"key": "1", "bad": None, "when": "2024-01-01"}


# --- idempotence ----------------------------------------------------------------------------

async def test_recording_the_same_call_again_writes_nothing(store, pg_pool):
    call = make_call()
    checks = [check_recording(FIXTURES / "answered.recording.wav")]
    first = await store.record_call(call, checks)
    before = await counts(pg_pool)
    updated = await pg_pool.fetchval("SELECT updated_at FROM work_orders")
    again = await store.record_call(call, checks)
    assert again == RecordResult(first.call_id, first.order_number, False, True)
    assert await counts(pg_pool) == before
    assert await pg_pool.fetchval("SELECT last FROM order_day_counters") == 1
    assert await pg_pool.fetchval("SELECT updated_at FROM work_orders") == updated


async def test_same_linkedid_on_another_node_is_another_call(store):
    call = make_call()
    a = await store.record_call(call, [])
    b = await store.record_call(make_call(linkedid=call.linkedid, node="pbx-b"), [])
    assert a.call_id != b.call_id and not b.duplicate


async def test_concurrent_replays_of_one_call_store_it_once(store, pg_pool):
    call = make_call(caller=None)  # anonymous: no per-number lock, so the unique key decides
    results = await asyncio.gather(*(store.record_call(call, []) for _ in range(8)))
    assert sum(not r.duplicate for r in results) == 1
    assert {(r.call_id, r.order_number) for r in results} == {(results[0].call_id, results[0].order_number)}
    assert (await counts(pg_pool))["calls"] == 1 and (await counts(pg_pool))["work_orders"] == 1
    # the losers' orders and numbers rolled back with them: no gap
    assert await pg_pool.fetchval("SELECT last FROM order_day_counters") == 1


# --- repeat callers -------------------------------------------------------------------------

async def test_repeat_call_within_the_window_links_to_the_open_order(store, pg_pool):
    now = time.time()
    first = await store.record_call(make_call(at=now - 6 * 86400), [])
    second = await store.record_call(make_call(at=now), [])
    assert (second.order_number, second.order_created) == (first.order_number, False)
    assert await order_events(pg_pool, first.order_number) == ["created", "repeat_call_linked"]
    links = await pg_pool.fetch("SELECT DISTINCT work_order_id FROM calls")
    assert len(links) == 1
    order = await order_of(pg_pool, first.order_number)
    assert order["updated_at"] > order["created_at"]
    assert await pg_pool.fetchval("SELECT count(*) FROM work_orders") == 1


async def test_repeat_call_outside_the_window_opens_a_new_order(store, pg_pool):
    now = time.time()
    first = await store.record_call(make_call(at=now - 8 * 86400), [])
    second = await store.record_call(make_call(at=now), [])
    assert second.order_created and second.order_number != first.order_number
    assert second.order_number == f"12345-{today()}-000001"  # a new day, its own sequence


async def test_repeat_window_is_configurable(pg_pool):
    store = CallStore(pg_pool, repeat_window_days=1)
    now = time.time()
    await store.record_call(make_call(at=now - 2 * 86400), [])
    assert (await store.record_call(make_call(at=now), [])).order_created


@pytest.mark.parametrize("status", ["closed", "archived"])
async def test_closed_order_is_not_reopened(store, pg_pool, status):
    first = await store.record_call(make_call(), [])
    await pg_pool.execute("UPDATE work_orders SET status = $1", status)
    second = await store.record_call(make_call(), [])
    assert second.order_created and second.order_number != first.order_number
    assert (await order_of(pg_pool, first.order_number))["status"] == status


async def test_repeat_links_to_the_newest_open_order(store, pg_pool):
    now = time.time()
    older = await store.record_call(make_call(at=now - 3 * 86400), [])
    await pg_pool.execute("UPDATE work_orders SET status = 'closed'")
    newer = await store.record_call(make_call(at=now - 86400), [])
    assert (await store.record_call(make_call(at=now), [])).order_number == newer.order_number != older.order_number


async def test_answered_repeat_moves_callback_pending_to_intake(store, pg_pool):
    missed = await store.record_call(make_call(outcome="abandoned"), [])
    assert (await order_of(pg_pool, missed.order_number))["status"] == "callback_pending"
    missed_again = await store.record_call(make_call(outcome="queue_timeout"), [])
    assert (await order_of(pg_pool, missed.order_number))["status"] == "callback_pending"
    answered = await store.record_call(make_call(outcome="answered"), [])
    assert missed.order_number == missed_again.order_number == answered.order_number
    assert (await order_of(pg_pool, missed.order_number))["status"] == "intake"
    assert await order_events(pg_pool, missed.order_number) == [
        "created", "callback_task", "repeat_call_linked", "callback_task", "repeat_call_linked", "status_changed",
        "callback_task"]   # the callback task: opened, refreshed, cancelled (tests/test_callbacks.py)
    change = await pg_pool.fetchval("SELECT detail FROM work_order_events WHERE kind = 'status_changed'")
    linkedid = await pg_pool.fetchval("SELECT linkedid FROM calls WHERE id = $1", answered.call_id)
    assert json.loads(change) == {
        "call_id": answered.call_id, "node": "pbx-a", "linkedid": linkedid, "outcome": "answered",
        "from": "callback_pending", "to": "intake", "reason": "repeat call answered"}


async def test_missed_repeat_leaves_an_order_in_intake(store, pg_pool):
    first = await store.record_call(make_call(), [])
    await store.record_call(make_call(outcome="abandoned"), [])
    assert (await order_of(pg_pool, first.order_number))["status"] == "intake"


@pytest.mark.parametrize("caller", [None, "", "  ", "anonymous", "<unknown>", "Restricted"])
async def test_anonymous_callers_always_get_a_new_order(store, pg_pool, caller):
    results = [await store.record_call(make_call(caller=caller), []) for _ in range(3)]
    assert all(r.order_created for r in results)
    assert len({r.order_number for r in results}) == 3


def test_is_anonymous():
    assert is_anonymous(None) and is_anonymous(" ") and is_anonymous("Anonymous")
    assert not is_anonymous("13800138000") and not is_anonymous("110")


# --- numbering and concurrency --------------------------------------------------------------

async def test_fifty_concurrent_callers_get_numbers_one_to_fifty(store, pg_pool):
    now = time.time()
    calls = [make_call(caller=f"1390000{i:04d}", at=now) for i in range(50)]
    results = await asyncio.gather(*(store.record_call(c, []) for c in calls))
    day = f"{datetime.fromtimestamp(now, SHANGHAI):%Y%m%d}"
    assert sorted(r.order_number for r in results) == [f"12345-{day}-{n:06d}" for n in range(1, 51)]
    assert all(r.order_created and not r.duplicate for r in results)
    assert await pg_pool.fetchval("SELECT last FROM order_day_counters") == 50


async def test_ten_concurrent_calls_of_one_number_open_exactly_one_order(store, pg_pool):
    results = await asyncio.gather(*(store.record_call(make_call(caller="13512345678"), []) for _ in range(10)))
    assert len({r.order_number for r in results}) == 1
    assert sum(r.order_created for r in results) == 1
    assert len({r.call_id for r in results}) == 10
    c = await counts(pg_pool)
    assert (c["work_orders"], c["calls"], c["work_order_events"]) == (1, 10, 10)
    assert await order_events(pg_pool, results[0].order_number) == ["created"] + ["repeat_call_linked"] * 9


async def test_number_day_follows_the_centre_time_zone(pg_pool):
    midnight = datetime(2024, 3, 1, tzinfo=SHANGHAI).timestamp()  # 2024-02-29 16:00 UTC
    store = CallStore(pg_pool)
    before = await store.record_call(make_call(caller=None, at=midnight - 1), [])
    after = await store.record_call(make_call(caller=None, at=midnight), [])
    assert (before.order_number, after.order_number) == ("12345-20240229-000001", "12345-20240301-000001")
    utc = await CallStore(pg_pool, timezone="UTC").record_call(make_call(caller=None, at=midnight), [])
    assert utc.order_number == "12345-20240229-000002"


def test_number_format():
    assert format_order_number(date(2024, 5, 6), 7) == "12345-20240506-000007"
    assert ORDER_NUMBER.match("12345-20240506-000007").groups() == ("20240506", "000007")
    assert order_day(datetime(2024, 1, 1, 16, 30, tzinfo=timezone.utc).timestamp(), SHANGHAI) == date(2024, 1, 2)


async def test_number_needs_a_transaction(pg_pool):
    async with pg_pool.acquire() as conn:
        with pytest.raises(RuntimeError, match="transaction"):
            await next_order_number(conn, date(2024, 1, 1))
        async with conn.transaction():
            assert await next_order_number(conn, date(2024, 1, 1)) == "12345-20240101-000001"
            assert await next_order_number(conn, date(2024, 1, 1)) == "12345-20240101-000002"
        try:
            async with conn.transaction():
                await next_order_number(conn, date(2024, 1, 1))
                raise LookupError
        except LookupError:
            pass
        async with conn.transaction():
            assert await next_order_number(conn, date(2024, 1, 1)) == "12345-20240101-000003"


# --- failures leave nothing half-written ----------------------------------------------------

async def test_failing_insert_leaves_nothing_and_consumes_no_number(store, pg_pool):
    with pytest.raises(asyncpg.CheckViolationError):
        await store.record_call(make_call(outcome="not-an-outcome"), [check_recording(FIXTURES / "answered.recording.wav")])
    assert await counts(pg_pool) == dict.fromkeys(TABLES, 0)
    ok = await store.record_call(make_call(), [])
    assert ok.order_number == f"12345-{today()}-000001"


async def test_failing_repeat_call_leaves_the_open_order_untouched(store, pg_pool):
    first = await store.record_call(make_call(outcome="abandoned"), [])
    before = await counts(pg_pool)
    order = await order_of(pg_pool, first.order_number)
    with pytest.raises(asyncpg.CheckViolationError):
        await store.record_call(make_call(outcome="bogus"), [])
    with pytest.raises(asyncpg.CheckViolationError):  # fails at the recording rows, after the call row
        await store.record_call(make_call(), [RecordingCheck("/x.wav", 1, 1.0, "00", "weird")])
    assert await counts(pg_pool) == before
    assert await order_of(pg_pool, first.order_number) == order


async def test_concurrent_calls_with_failures_keep_numbers_gapless(store, pg_pool):
    now = time.time()
    calls = [make_call(caller=f"1370000{i:04d}", at=now, outcome="bad" if i % 3 == 0 else "answered")
             for i in range(30)]
    results = await asyncio.gather(*(store.record_call(c, []) for c in calls), return_exceptions=True)
    good = [r for r in results if isinstance(r, RecordResult)]
    assert len(good) == 20
    assert all(isinstance(r, asyncpg.CheckViolationError) for r in results if r not in good)
    seqs = sorted(int(ORDER_NUMBER.match(r.order_number).group(2)) for r in good)
    assert seqs == list(range(1, 21))


# --- schema rules an agent's edits must obey ------------------------------------------------

@pytest.mark.parametrize("column, value", [("request_type", "闲聊"), ("urgency", "high"), ("status", "lost")])
async def test_order_checks_refuse_unknown_values(store, pg_pool, column, value):
    result = await store.record_call(make_call(), [])
    with pytest.raises(asyncpg.CheckViolationError):
        await pg_pool.execute(f"UPDATE work_orders SET {column} = $1 WHERE number = $2", value, result.order_number)


async def test_order_checks_accept_the_domain_values(store, pg_pool):
    result = await store.record_call(make_call(), [])
    for request_type in ("咨询", "求助", "投诉", "举报", "建议", "表扬"):
        await pg_pool.execute("UPDATE work_orders SET request_type = $1 WHERE number = $2", request_type,
                              result.order_number)
    for urgency in ("normal", "urgent", "critical"):
        await pg_pool.execute("UPDATE work_orders SET urgency = $1 WHERE number = $2", urgency, result.order_number)


async def test_a_call_cannot_exist_without_an_order(store, pg_pool):
    await store.record_call(make_call(), [])
    with pytest.raises(asyncpg.NotNullViolationError):
        await pg_pool.execute("UPDATE calls SET work_order_id = NULL")


# --- several writers at once, each with its own pool (as two service processes would) ---------

async def test_writers_with_their_own_pools_link_repeat_callers_and_number_without_gaps(pg_dsn, pg_pool):
    noon = datetime(2024, 6, 1, 12, tzinfo=SHANGHAI).timestamp()
    numbers = [f"1350000{i:04d}" for i in range(6)]
    calls = [make_call(caller=numbers[i % 6], at=noon + i, outcome=("answered", "abandoned", "ivr_hangup")[i % 3])
             for i in range(36)]
    pools = [await asyncpg.create_pool(pg_dsn, min_size=1, max_size=6) for _ in range(2)]
    try:
        stores = [CallStore(p) for p in pools]
        results = await asyncio.gather(*(stores[i % 2].record_call(c, []) for i, c in enumerate(calls)))
    finally:
        for p in pools:
            await p.close()
    assert sum(r.order_created for r in results) == 6 and not any(r.duplicate for r in results)
    for number in numbers:
        assert len({r.order_number for r, c in zip(results, calls) if c.caller_number == number}) == 1
    assert sorted({r.order_number for r in results}) == [f"12345-20240601-{n:06d}" for n in range(1, 7)]
    rows = await pg_pool.fetch("SELECT w.caller_number, count(c.id) AS n FROM work_orders w "
                               "JOIN calls c ON c.work_order_id = w.id GROUP BY w.caller_number")
    assert {r["caller_number"]: r["n"] for r in rows} == dict.fromkeys(numbers, 6)
    assert await pg_pool.fetchval("SELECT last FROM order_day_counters") == 6
    kinds = await pg_pool.fetch("SELECT kind, count(*) AS n FROM work_order_events GROUP BY kind")
    # each number's calls have one outcome: 4 numbers x 6 missed calls open or refresh a callback task
    assert {r["kind"]: r["n"] for r in kinds} == {"created": 6, "repeat_call_linked": 30, "callback_task": 24}
    tasks = await pg_pool.fetch("SELECT number, missed_calls FROM callback_tasks ORDER BY number")
    assert [(t["number"], t["missed_calls"]) for t in tasks] == [(numbers[i], 6) for i in (1, 2, 4, 5)]


# --- the writer task (workorders/pipeline.py) -----------------------------------------------





async def test_writer_writes_each_call_once_and_reports_replays(store, pg_pool):
    told = []
    writer = CallWriter(store, on_written=lambda call, result, checks: told.append((call.linkedid, result, checks)))
    a, b = make_call(recordings=(RecordingRef(str(FIXTURES / "answered.recording.wav"), "u", time.time()),)), \
        make_call(caller="13900001111", outcome="abandoned")
    async with running(writer):
        for call in (a, a, b):
            writer.submit(call)
        assert await writer.drain(30)
    assert writer.written == 3 and writer.failed == [] and writer.backlog == 0
    assert sorted((linkedid, r.duplicate) for linkedid, r, _ in told) == sorted(
        [(a.linkedid, False), (a.linkedid, True), (b.linkedid, False)])  # four workers: any order
    assert len({r.order_number for linkedid, r, _ in told if linkedid == a.linkedid}) == 1
    assert all([c.status for c in checks] == ["ok"] for linkedid, _, checks in told if linkedid == a.linkedid)
    assert (await counts(pg_pool))["calls"] == 2 and (await counts(pg_pool))["recordings"] == 1


async def test_writer_attempt_that_hangs_times_out_and_is_retried(store, pg_pool):
    at = datetime(2031, 1, 1, 12, tzinfo=SHANGHAI).timestamp()
    await pg_pool.execute("INSERT INTO order_day_counters (day, last) VALUES ('2031-01-01', 1)")
    writer = CallWriter(store, write_timeout=0.2, retry_cap=0.05)
    async with pg_pool.acquire() as locker, running(writer):
        tx = locker.transaction()
        await tx.start()
        await locker.execute("SELECT * FROM order_day_counters WHERE day = '2031-01-01' FOR UPDATE")
        writer.submit(make_call(caller=None, at=at))
        await until(lambda: writer.retries >= 3, "three timed-out attempts")
        assert writer.written == 0 and await pg_pool.fetchval("SELECT count(*) FROM calls") == 0
        await tx.rollback()
        assert await writer.drain(30)
    assert writer.written == 1 and writer.failed == []
    assert await pg_pool.fetchval("SELECT number FROM work_orders") == "12345-20310101-000002"
    assert await pg_pool.fetchval("SELECT last FROM order_day_counters WHERE day = '2031-01-01'") == 2


async def test_writer_retries_when_its_connection_is_killed_mid_write(pg_dsn, pg_pool):
    app = f"writer-{uuid.uuid4().hex[:8]}"
    pool = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=2, server_settings={"application_name": app})
    writer = CallWriter(CallStore(pool), retry_cap=0.05)
    at = datetime(2031, 2, 1, 12, tzinfo=SHANGHAI).timestamp()
    await pg_pool.execute("INSERT INTO order_day_counters (day, last) VALUES ('2031-02-01', 1)")
    try:
        async with pg_pool.acquire() as locker, running(writer):
            tx = locker.transaction()
            await tx.start()
            await locker.execute("SELECT * FROM order_day_counters WHERE day = '2031-02-01' FOR UPDATE")
            writer.submit(make_call(caller=None, at=at))
            await until(lambda: pg_pool.fetchval("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 "
                                                 "AND wait_event_type = 'Lock'", app), "the write waiting on the lock")
            killed = await pg_pool.fetchval("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                            "WHERE application_name = $1", app)
            assert killed >= 1
            await until(lambda: writer.retries >= 1, "a retry after the killed connection")
            await tx.rollback()
            assert await writer.drain(30)
    finally:
        await pool.close()
    assert writer.written == 1 and writer.failed == []
    assert await pg_pool.fetchval("SELECT count(*) FROM calls") == 1
    assert await pg_pool.fetchval("SELECT number FROM work_orders") == "12345-20310201-000002"


async def test_writer_holds_a_call_it_cannot_write_and_goes_on(store, pg_pool):
    writer = CallWriter(store, retry_cap=0.01)
    bad, good = make_call(outcome="not-an-outcome"), make_call(caller="13900002222")
    async with running(writer):
        writer.submit(bad)
        writer.submit(good)
        assert await writer.drain(30)
    assert writer.failed == [bad] and writer.written == 1
    assert [r["linkedid"] for r in await pg_pool.fetch("SELECT linkedid FROM calls")] == [good.linkedid]


def test_postgres_outage_errors_are_transient_and_data_errors_are_not():
    for exc in (asyncpg.exceptions.AdminShutdownError, asyncpg.exceptions.CannotConnectNowError,
                asyncpg.exceptions.ConnectionDoesNotExistError, asyncpg.exceptions.TooManyConnectionsError,
                asyncpg.exceptions.DeadlockDetectedError, asyncpg.exceptions.SerializationError,
                asyncpg.exceptions.ReadOnlySQLTransactionError, asyncpg.InterfaceError, ConnectionRefusedError,
                asyncio.TimeoutError):
        assert issubclass(exc, TRANSIENT), exc
    for exc in (asyncpg.CheckViolationError, asyncpg.UniqueViolationError, asyncpg.UndefinedTableError):
        assert not issubclass(exc, TRANSIENT), exc


# --- the run summary (workorders/reports.py) ------------------------------------------------

async def test_run_summary_counts_one_nodes_calls_from_postgres(store, pg_pool, tmp_path):
    rec = RecordingRef(str(FIXTURES / "answered.recording.wav"), "u1", time.time())
    gone = RecordingRef(str(tmp_path / "gone.wav"), "u2", time.time())
    await store.record_call(make_call(node="run-1", recordings=(rec,)), [check_recording(rec.path)])
    await store.record_call(make_call(node="run-1", outcome="ivr_hangup"), [])            # repeat: same order
    await store.record_call(make_call(node="run-1", caller="13900003333", outcome="abandoned",
                                      recordings=(gone,)), [check_recording(gone.path)])
    await store.record_call(make_call(node="run-1", caller=None, outcome="queue_timeout"), [])
    await store.record_call(make_call(node="run-1", caller=None, outcome="dropped"), [])
    await store.record_call(make_call(node="run-0", caller="13900004444"), [])            # another run
    assert await run_summary(pg_pool, "run-1") == {
        "calls": 5, "answered": 1, "abandoned": 2, "ivr_hangup": 1, "dropped": 1, "work_orders": 4,
        "emergency_transfer": 0, "callback_requested": 0, "surveyed": 0, "satisfied": 0,
        "calls_without_order": 0, "recordings": 1, "recordings_not_ok": 1,
        "callback_tasks": 2}   # the abandoned caller, and the 20 s IVR hang-up (anonymous ones: none)
    assert (await run_summary(pg_pool, "nobody"))["calls"] == 0


# --- seats into app_queue (queues/seats.py) -------------------------------------------------

class _AsteriskAnswers:
    """Answers QueueAdd as Asterisk 22 does in the actions capture, for the queues it has."""

    def __init__(self, queues: set[str]) -> None:
        self.queues, self.members, self.sent = queues, set(), []

    async def send_action(self, action, fields=None, *, timeout=None):
        self.sent.append((action, dict(fields or {})))
        if action == "QueueStatus":   # the members, as QueueMember items of the list
            items = tuple(Frame((("Event", "QueueMember"), ("Queue", q), ("Location", i), ("Membership", "dynamic"),
                                 ("Penalty", "0"))) for q, i in sorted(self.members))
            return AmiResponse(Frame((("Response", "Success"), ("EventList", "start"))), items)
        queue, iface = fields["Queue"], fields["Interface"]
        if queue not in self.queues:
            headers = (("Response", "Error"), ("Message", "Unable to add interface to queue: No such queue"))
        elif (queue, iface) in self.members:
            headers = (("Response", "Error"), ("Message", "Unable to add interface: Already there"))
        else:
            self.members.add((queue, iface))
            headers = (("Response", "Success"), ("Message", "Added interface to queue"))
        return AmiResponse(Frame(headers))


async def test_one_refused_membership_does_not_keep_other_seats_out():
    pbx = _AsteriskAnswers({"hotline-general"})
    seats = [SeatConfig(interface="PJSIP/8001", name="Seat 8001", queues=["hotline-typo", "hotline-general"]),
             SeatConfig(interface="PJSIP/8002", name="Seat 8002", state_interface="Custom:seat8002")]
    queues = ["hotline-general", "hotline-typo"]
    first = await reconcile_seats(PbxActions(pbx), seats, queues)
    assert (first.added, first.refused) == (2, 1)
    assert pbx.members == {("hotline-general", "PJSIP/8001"), ("hotline-general", "PJSIP/8002")}
    add_8002 = next(f for a, f in pbx.sent if a == "QueueAdd" and f["Interface"] == "PJSIP/8002")
    assert add_8002["MemberName"] == "Seat 8002" and add_8002["StateInterface"] == "Custom:seat8002"
    again = await reconcile_seats(PbxActions(pbx), seats, queues)   # on the next login: already there
    assert (again.present, again.added) == (2, 0)
