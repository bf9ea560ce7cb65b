"""Writes one finished call with its timeline and recordings, linked to its work order.

How this works (``CallStore.record_call``), all in one transaction:
1. If (node, linkedid) is already stored, return it as a duplicate: nothing is written.
2. Serialise per caller number with ``pg_advisory_xact_lock(ns, hashtext(number))``, so two
   concurrent calls of one number never open two orders. Anonymous callers skip the lock and
   the lookup: they always get a new order.
3. Link to the number's newest open order (status not closed/archived) created within
   ``repeat_window_days`` before the call: event 'repeat_call_linked', and an answered call
   moves a 'callback_pending' order to 'intake' (event 'status_changed'). Otherwise allocate
   the day's next number and create an order: 'intake' if answered, else 'callback_pending'
   (missed calls are called back); event 'created'.
4. ``INSERT`` the call ``ON CONFLICT (node, linkedid) DO NOTHING RETURNING id``. No row means a
   concurrent writer stored the same call first: the whole transaction (order, number, events)
   rolls back and the stored call is returned as a duplicate.
5. Move the call's notes (``call_notes``, written by queues/leader.py while the call ran and
   there was no order yet) onto the order as ``work_order_events`` (same kind, actor, at and
   detail, plus ``call_id``), under the call's advisory lock (``lock_call_notes``) so a note
   written concurrently is either moved here or, once this commits, written onto the order.
   A duplicate call never reaches this step; a rollback keeps the notes.
6. Timeline rows, recording rows.
7. The missed-call callback (漏接回拨, migration 0008): a missed call (abandoned, queue_timeout,
   dropped, ivr_hangup after ``callback_ivr_seconds`` in the IVR, or any call that accepted the
   IVR's callback offer, HOTLINE_CALLBACK_REQUESTED=1) of a callable number (digits, not
   anonymous) opens a ``callback_tasks`` row, or refreshes the number's open one (one open task
   per number: the new call is noted, a pending task is due at once); an answered call cancels
   the number's pending tasks whose last missed call ended before it ("caller got through"), and
   a missed call that an answered call already followed opens none. Each is a
   ``callback_task`` event on the order. The per-number advisory lock of step 2 serialises it.
   Then commit. Any error rolls everything back, the number too.
An order's ``created_at`` is its intake time (the first call's start), so the repeat window
and the number's day follow the calls' own clock even when a write is delayed.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone as dt_timezone
from decimal import Decimal
from typing import Mapping, Sequence
from zoneinfo import ZoneInfo

import asyncpg

from recordings.check import RecordingCheck
from telephony.model import (ABANDONED, ANSWERED, DIALLABLE_NUMBER, DROPPED, IVR_HANGUP, QUEUE_TIMEOUT,
                             SURVEY_NO_ANSWER, SURVEY_VALUES, FinishedCall)
from workorders.numbering import next_order_number, order_day

OPEN_EXCLUDED = ("closed", "archived")
ANONYMOUS = frozenset({"", "anonymous", "unknown", "<unknown>", "restricted", "private", "unavailable"})
CALLER_LOCK_NS = 12345  # first key of the per-caller advisory lock
CALL_NOTES_LOCK_NS = 12346  # first key of the per-call (node, linkedid) advisory lock over call_notes
CALLBACK_REQUESTED = "HOTLINE_CALLBACK_REQUESTED"   # set to "1" by the IVR when its callback offer is accepted
MISSED_REASONS = {ABANDONED: "abandoned", QUEUE_TIMEOUT: "queue_timeout", DROPPED: "dropped",
                  IVR_HANGUP: "ivr_hangup"}


@dataclass(frozen=True, slots=True)
class RecordResult:
    call_id: int
    order_number: str
    order_created: bool
    duplicate: bool


class _AlreadyStored(Exception):
    """A concurrent writer stored the same (node, linkedid) first."""


_FIND_CALL = """
SELECT c.id, w.number FROM calls c JOIN work_orders w ON w.id = c.work_order_id
WHERE c.node = $1 AND c.linkedid = $2
"""
_OPEN_ORDER = """
SELECT id, number, status FROM work_orders
WHERE caller_number = $1 AND created_at >= $2 AND status <> ALL($3::text[])
ORDER BY created_at DESC, id DESC LIMIT 1
FOR UPDATE
"""
_NEW_ORDER = """
INSERT INTO work_orders (number, caller_number, caller_name, category, status, created_at)
VALUES ($1, $2, $3, $4, $5, $6) RETURNING id
"""
_INSERT_CALL = """
INSERT INTO calls (node, linkedid, caller_number, caller_name, started_at, answered_at, ended_at,
    outcome, ivr_choice, queue, category, queue_position, seat, seat_interface, hold_seconds,
    talk_seconds, hangup_cause, hangup_cause_text, variables, closed_by, work_order_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19::jsonb, $20, $21)
ON CONFLICT (node, linkedid) DO NOTHING
RETURNING id
"""
_SATISFACTION = """
UPDATE work_orders SET satisfaction = $2, first_satisfaction = coalesce(first_satisfaction, $2), updated_at = now()
WHERE id = $1
"""
_ORDER_EVENT = "INSERT INTO work_order_events (work_order_id, kind, actor, detail) VALUES ($1, $2, 'system', $3::jsonb)"
_MOVE_NOTES = """
WITH moved AS (DELETE FROM call_notes WHERE node = $1 AND linkedid = $2 RETURNING id, kind, actor, at, detail)
INSERT INTO work_order_events (work_order_id, at, kind, actor, detail)
SELECT $3, at, kind, actor, detail || jsonb_build_object('call_id', $4::bigint) FROM moved ORDER BY id
"""
# one open task per number (partial unique index): a new missed call refreshes it
_OPEN_TASK = """
INSERT INTO callback_tasks (node, work_order_id, call_id, last_call_id, number, reason, max_attempts,
                            missed_at, last_missed_at)
VALUES ($1, $2, $3, $3, $4, $5, $6, $7, $7)
ON CONFLICT (number) WHERE status IN ('pending', 'dialing') DO UPDATE SET
    node = EXCLUDED.node, work_order_id = EXCLUDED.work_order_id, last_call_id = EXCLUDED.last_call_id,
    missed_calls = callback_tasks.missed_calls + 1,
    last_missed_at = greatest(callback_tasks.last_missed_at, EXCLUDED.last_missed_at),
    next_attempt_at = CASE WHEN callback_tasks.status = 'pending'
                           THEN least(callback_tasks.next_attempt_at, now()) ELSE callback_tasks.next_attempt_at END,
    updated_at = now()
RETURNING id, (xmax = 0) AS created, status, reason, missed_calls
"""
_GOT_THROUGH_SINCE = """
SELECT true FROM calls WHERE caller_number = $1 AND ended_at >= $2 AND outcome = 'answered' LIMIT 1
"""
_CANCEL_TASKS = """
UPDATE callback_tasks SET status = 'cancelled', status_reason = 'caller got through', updated_at = now()
WHERE number = $1 AND status = 'pending' AND last_missed_at <= $2
RETURNING id, work_order_id, reason, attempts
"""
_CALL_EVENT = "INSERT INTO call_events (call_id, seq, at, kind, detail) VALUES ($1, $2, $3, $4, $5::jsonb)"
_RECORDING = """
INSERT INTO recordings (call_id, path, uniqueid, started_at, bytes, duration_seconds, sha256, status)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (call_id, path) DO NOTHING
"""


class CallStore:
    def __init__(self, pool: asyncpg.Pool, *, timezone: str = "Asia/Shanghai", repeat_window_days: int = 7,
                 callback_ivr_seconds: float = 10.0, callback_max_attempts: int = 3) -> None:
        """``callback_ivr_seconds``: an IVR hang-up is called back only after this long in the IVR
        (a caller who hangs up during the greeting is not); ``callback_max_attempts``: the dials of
        a new callback task (queues.callbacks.CallbackPolicy holds the same two settings)."""
        if not 1 <= callback_max_attempts <= 20:
            raise ValueError("callback_max_attempts must be 1 to 20")
        self.pool = pool
        self.tz = ZoneInfo(timezone)
        self.repeat_window = timedelta(days=repeat_window_days)
        self.callback_ivr_seconds = callback_ivr_seconds
        self.callback_max_attempts = callback_max_attempts

    async def record_call(self, call: FinishedCall, recordings: Sequence[RecordingCheck]) -> RecordResult:
        async with self.pool.acquire() as conn:
            stored = await self._find(conn, call)
            if stored is not None:
                return stored
            try:
                async with conn.transaction():
                    return await self._write(conn, call, recordings)
            except _AlreadyStored:
                pass
            stored = await self._find(conn, call)
            if stored is None:  # the winner's row is committed before our insert returns
                raise RuntimeError(f"call {call.node}/{call.linkedid} conflicted but cannot be found")
            return stored

    async def _find(self, conn: asyncpg.Connection, call: FinishedCall) -> RecordResult | None:
        row = await conn.fetchrow(_FIND_CALL, _text(call.node), _text(call.linkedid))
        return None if row is None else RecordResult(row["id"], row["number"], False, True)

    async def _write(self, conn: asyncpg.Connection, call: FinishedCall,
                     recordings: Sequence[RecordingCheck]) -> RecordResult:
        started = _ts(call.started_at)
        number = (_text(call.caller_number) or "").strip()
        order = None
        if not is_anonymous(number):
            await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", CALLER_LOCK_NS, number)
            order = await conn.fetchrow(_OPEN_ORDER, number, started - self.repeat_window, list(OPEN_EXCLUDED))
        events: list[tuple[str, dict]] = []
        if order is None:
            order_number = await next_order_number(conn, order_day(call.started_at, self.tz))
            status = "intake" if call.outcome == ANSWERED else "callback_pending"
            order_id = await conn.fetchval(_NEW_ORDER, order_number, number or None, _text(call.caller_name),
                                           _text(call.category) or "general", status, started)
            events.append(("created", {"status": status}))
        else:
            order_id, order_number = order["id"], order["number"]
            events.append(("repeat_call_linked", {}))
            status = order["status"]
            if call.outcome == ANSWERED and status == "callback_pending":
                status = "intake"
                events.append(("status_changed", {"from": "callback_pending", "to": "intake",
                                                  "reason": "repeat call answered"}))
            await conn.execute("UPDATE work_orders SET status = $2, updated_at = now() WHERE id = $1",
                               order_id, status)
        call_id = await conn.fetchval(_INSERT_CALL, *_call_values(call), order_id)
        if call_id is None:
            raise _AlreadyStored
        about = {"call_id": call_id, "node": call.node, "linkedid": call.linkedid, "outcome": call.outcome}
        await conn.executemany(_ORDER_EVENT, [(order_id, kind, _json({**about, **detail})) for kind, detail in events])
        await lock_call_notes(conn, _text(call.node), _text(call.linkedid))
        await conn.execute(_MOVE_NOTES, _text(call.node), _text(call.linkedid), order_id, call_id)
        await conn.executemany(_CALL_EVENT, [
            (call_id, seq, _ts(e.at), _text(e.kind), _json(dict(e.detail))) for seq, e in enumerate(call.timeline)])
        await conn.executemany(_RECORDING, _recording_rows(call_id, call, recordings))
        if call.survey in SURVEY_VALUES:   # the satisfaction survey after the seat hung up (ivr/survey.py)
            await conn.execute("UPDATE calls SET survey = $2 WHERE id = $1", call_id, call.survey)
            if call.survey != SURVEY_NO_ANSWER:
                await conn.execute(_SATISFACTION, order_id, call.survey)
            await conn.execute(_ORDER_EVENT, order_id, "survey", _json({**about, "result": call.survey}))
        if not is_anonymous(number):
            await self._callback(conn, call, number, call_id, order_id)
        return RecordResult(call_id, order_number, order is None, False)

    def callback_reason(self, call: FinishedCall) -> str | None:
        """Why this call is to be called back, or None (answered, or a quick IVR hang-up)."""
        if call.outcome == ANSWERED:
            return None
        if (call.variables or {}).get(CALLBACK_REQUESTED) == "1":
            return "requested"
        if call.outcome == IVR_HANGUP and call.ended_at - call.started_at < self.callback_ivr_seconds:
            return None
        if call.outcome == IVR_HANGUP and (call.variables or {}).get("HOTLINE_IVR_DONE") == "1":
            return None   # the flow itself ended the call (self-service answered, a goodbye): nothing missed
        return MISSED_REASONS.get(call.outcome)

    async def _callback(self, conn: asyncpg.Connection, call: FinishedCall, number: str, call_id: int,
                        order_id: int) -> None:
        """Step 7: open, refresh or cancel the number's callback task (under the caller lock)."""
        about = {"call_id": call_id, "node": call.node, "linkedid": call.linkedid, "outcome": call.outcome}
        if call.outcome == ANSWERED:
            rows = await conn.fetch(_CANCEL_TASKS, number, _ts(call.ended_at))
            await conn.executemany(_ORDER_EVENT, [
                (r["work_order_id"], "callback_task", _json({**about, "task_id": r["id"], "action": "cancelled",
                                                             "status": "cancelled", "reason": r["reason"],
                                                             "attempts": r["attempts"],
                                                             "status_reason": "caller got through"}))
                for r in rows])
            return
        reason = self.callback_reason(call)
        if reason is None or not DIALLABLE_NUMBER.fullmatch(number):
            return
        ended = _ts(call.ended_at)
        if await conn.fetchval(_GOT_THROUGH_SINCE, number, ended):
            return   # written late: the caller already got through on a later call
        task = await conn.fetchrow(_OPEN_TASK, _text(call.node), order_id, call_id, number, reason,
                                   self.callback_max_attempts, ended)
        detail = {**about, "task_id": task["id"], "action": "created" if task["created"] else "refreshed",
                  "reason": reason, "task_reason": task["reason"], "status": task["status"],
                  "missed_calls": task["missed_calls"]}
        await conn.execute(_ORDER_EVENT, order_id, "callback_task", _json(detail))


async def lock_call_notes(conn: asyncpg.Connection, node: str, linkedid: str) -> None:
    """Serialise, until the transaction ends, everything that writes or moves one call's notes."""
    await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2::text || '/' || $3::text))",
                       CALL_NOTES_LOCK_NS, node, linkedid)


def is_anonymous(number: str | None) -> bool:
    """No usable caller number: withheld, unknown, or empty."""
    return number is None or number.strip().lower() in ANONYMOUS


def _call_values(call: FinishedCall) -> tuple:
    return (
        _text(call.node), _text(call.linkedid), _text(call.caller_number), _text(call.caller_name),
        _ts(call.started_at), _ts(call.answered_at), _ts(call.ended_at), call.outcome,
        _text(call.ivr_choice), _text(call.queue), _text(call.category), call.queue_position,
        _text(call.seat), _text(call.seat_interface), call.hold_seconds, call.talk_seconds,
        call.hangup_cause, _text(call.hangup_cause_text), _json(dict(call.variables)), call.closed_by,
    )


def _recording_rows(call_id: int, call: FinishedCall, checks: Sequence[RecordingCheck]) -> list[tuple]:
    refs = {ref.path: ref for ref in call.recordings}  # MixMonitorStart facts, by file
    rows = []
    for check in checks:
        ref = refs.get(check.path)
        duration = None if check.duration_seconds is None else Decimal(str(check.duration_seconds))
        rows.append((call_id, _text(check.path), _text(ref.uniqueid) if ref else None,
                     _ts(ref.started_at) if ref else None, check.bytes, duration, check.sha256, check.status))
    return rows


def _ts(epoch: float | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, dt_timezone.utc)


def _text(value: str | None) -> str | None:
    """Text Postgres accepts: no NUL, no lone surrogates (caller ID names are caller-controlled)."""
    if value is None:
        return None
    return str(value).replace("\x00", "").encode("utf-8", "replace").decode("utf-8")


def _clean(value: object) -> object:
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, bool) or value is None or isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None  # jsonb has no NaN/Infinity
    if isinstance(value, Mapping):
        return {_text(str(k)): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return _text(str(value))


def _json(value: object) -> str:
    return json.dumps(_clean(value), ensure_ascii=False)
