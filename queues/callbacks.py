"""Missed-call callbacks (漏接电话回拨): dial the callback tasks when a seat is free, seat first.

How this works. The call writer (workorders/store.py, step 7) opens a ``callback_tasks`` row
(migration 0008) in the transaction that stores a missed call; one open task per number. This
desk, one per node and active only while its instance owns the node, runs ``run``:

* every ``poll_seconds``: time out lost attempts (below), then, while ``free_seat()`` names a seat
  that no callback attempt holds, take the oldest due task (``status = 'pending' AND
  next_attempt_at <= now``, ``FOR UPDATE SKIP LOCKED``), write an attempt row and mark the task
  ``dialing`` (committed before anything is sent: a crash never dials twice), then Originate the
  seat (Channel = the seat, ``hotline-callback,<number>,1``, HOTLINE_CALLBACK=<order number>,
  HOTLINE_CALLBACK_TASK=<task id>, HOTLINE_CALLBACK_ATTEMPT=<attempt id>); the dialplan then
  dials the citizen;
* the outcome comes from AMI, through ``on_event`` (non-blocking, called by the node runner in
  event order; the Postgres writes run in ``run``'s writer, in that order). The seat's channel is
  known by its VarSet HOTLINE_CALLBACK_ATTEMPT (or the OriginateResponse's Uniqueid). The first
  definite outcome wins: OriginateResponse Failure, or a Hangup before the seat answered (no
  DialBegin) -> ``seat_failed``; the citizen leg's DialEnd DialStatus, or VarSet DIALSTATUS,
  ANSWER -> ``connected`` (at the answer: DIALSTATUS comes only when the talk is over), NOANSWER
  -> ``no_answer``, BUSY -> ``busy``, CANCEL (the seat hung up first) -> ``seat_failed``,
  anything else (CHANUNAVAIL, CONGESTION) -> ``failed``; without either, the channel's Hangup cause (17 busy, 18/19 no answer, else failed).
  A connected attempt's ``ended_at`` is its channel's Hangup.
* each outcome is one transaction: the attempt row, the task, a ``callback_attempt`` event on the
  order (and, connected, the order moves from callback_pending to intake). ``connected`` ends the
  task. ``no_answer``/``busy``/``failed``/``lost`` count: the task is due again after
  ``retry_spacing_seconds``, or ``failed`` once ``max_attempts`` (the task's own) are used.
  ``seat_failed`` does not count against the citizen (a seat that did not answer, or an
  Originate Asterisk refused): due again after ``seat_retry_seconds``, and bounded by
  ``max_seat_failures``, after which the task fails ("seats did not answer").
* an attempt with no outcome after ``outcome_timeout_seconds`` (AMI link lost, service restart,
  takeover: this instance never saw the channel) is resolved ``lost``: counted (the citizen may
  have been rung), so it is bounded by ``max_attempts`` like any other. An Originate whose
  answer timed out or whose link dropped is left to its events or to this timeout, since
  Asterisk may have run it.
* a seat is free when ``free_seat()`` names it and no callback attempt on it is still open
  (``ended_at IS NULL``: a connected callback until its Hangup, bounded by
  ``max_call_seconds``). The default ``free_seat`` reads the operator desk: an operator
  ``available`` on a seat whose device is not in use or ringing, the longest available first.

``list_tasks`` and ``cancel`` serve the HTTP API (hotline/api_callbacks.py). AMI goes only
through ``telephony.actions.PbxActions``; times are this desk's ``clock`` (wall time).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import asyncpg

from queues.config_store import to_json
from queues.errors import Refused
from queues.operator_state import Status
from telephony.actions import PbxActions
from telephony.ami_client import AmiError, AmiTimeout
from telephony.ami_protocol import AmiLinkLost
from telephony.events import AmiEvent

log = logging.getLogger("hotline.callbacks")

CALLBACK_CONTEXT = "hotline-callback"
ORDER_VAR, TASK_VAR, ATTEMPT_VAR = "HOTLINE_CALLBACK", "HOTLINE_CALLBACK_TASK", "HOTLINE_CALLBACK_ATTEMPT"
STATUSES = ("pending", "dialing", "connected", "failed", "cancelled")
OPEN = ("pending", "dialing")
OUTCOMES = ("connected", "no_answer", "busy", "failed", "seat_failed", "lost")
COUNTED = frozenset({"connected", "no_answer", "busy", "failed", "lost"})   # seat_failed is not
# others: failed. CANCEL: the seat hung up while the citizen's phone rang: not the citizen's doing
DIAL_OUTCOMES = {"ANSWER": "connected", "NOANSWER": "no_answer", "BUSY": "busy", "CANCEL": "seat_failed"}
CAUSE_OUTCOMES = {17: "busy", 18: "no_answer", 19: "no_answer"}                  # others: failed
FREE_DEVICE = (None, 0, 1)   # AST_DEVICE unknown / not in use (queues.operator_state.DEVICE_STATES)
_EVENTS = frozenset({"OriginateResponse", "VarSet", "DialBegin", "DialEnd", "Hangup"})
_STASH = 200                 # OriginateResponses kept while an Originate's answer is on its way
_WRITE_TRIES = 5
# Postgres unreachable or restarting: an outcome waits for it rather than being dropped
_OUTAGE = (OSError, asyncio.TimeoutError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError,
           asyncpg.CannotConnectNowError, asyncpg.AdminShutdownError)


@dataclass(frozen=True)
class CallbackPolicy:
    """The callback rules (settings are mapped onto it by the composition root).
    ``ivr_hangup_after_seconds`` and ``max_attempts`` are applied by the call writer when it opens
    a task (workorders.store.CallStore's ``callback_ivr_seconds``, ``callback_max_attempts``)."""

    ivr_hangup_after_seconds: float = 10.0
    max_attempts: int = 3
    retry_spacing_seconds: float = 600.0
    ring_seconds: float = 30.0               # the seat's ring (Originate Timeout)
    poll_seconds: float = 2.0
    # ring the seat + ring the citizen (60 s in hotline-callback) + margin
    outcome_timeout_seconds: float = 150.0
    seat_retry_seconds: float = 30.0
    max_seat_failures: int = 10
    max_call_seconds: float = 4 * 3600.0     # a connected callback whose Hangup never came frees its seat
    caller_id: str | None = '"12345" <12345>'

    def __post_init__(self) -> None:
        if not 1 <= self.max_attempts <= 20:
            raise ValueError("max_attempts must be 1 to 20")
        if self.max_seat_failures < 1:
            raise ValueError("max_seat_failures must be >= 1")
        for name in ("ivr_hangup_after_seconds", "retry_spacing_seconds", "seat_retry_seconds"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0")
        for name in ("ring_seconds", "poll_seconds", "outcome_timeout_seconds", "max_call_seconds"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0")
        if self.outcome_timeout_seconds <= self.ring_seconds:
            raise ValueError("outcome_timeout_seconds must exceed ring_seconds")


class CallbackError(Refused):
    """A request the desk refuses: ``status`` is the HTTP answer, ``field`` the input."""

    def __init__(self, status: int, message: str, field: str | None = None):
        super().__init__(message, field, status=status)


@dataclass
class _Leg:
    """An attempt this instance dialled, while its channel lives."""
    attempt_id: int
    task_id: int
    seat: str
    started: float
    action_id: str | None = None
    uniqueids: set[str] = field(default_factory=set)
    seat_answered: bool = False
    dialled: bool = False            # DialBegin: the dialplan rings the citizen
    resolved: bool = False           # an outcome was queued
    connected_at: float | None = None


def _ts(epoch: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc)



_DUE = """
SELECT t.id, t.number, t.work_order_id, w.number AS order_number
FROM callback_tasks t JOIN work_orders w ON w.id = t.work_order_id
WHERE t.status = 'pending' AND t.next_attempt_at <= $1 AND ($2::text IS NULL OR t.node = $2)
ORDER BY t.next_attempt_at, t.id
LIMIT 1
FOR UPDATE OF t SKIP LOCKED
"""
_SEATS_HELD = "SELECT DISTINCT lower(seat) AS seat FROM callback_attempts WHERE ended_at IS NULL"
_SEAT_HELD = "SELECT true FROM callback_attempts WHERE ended_at IS NULL AND lower(seat) = lower($1) LIMIT 1"
_NEW_ATTEMPT = """
INSERT INTO callback_attempts (task_id, attempt_no, started_at, seat)
VALUES ($1, (SELECT coalesce(max(attempt_no), 0) + 1 FROM callback_attempts WHERE task_id = $1), $2, $3)
RETURNING id, attempt_no
"""
_ATTEMPT = """
SELECT a.id, a.attempt_no, a.started_at, a.seat, a.outcome, a.action_id, t.id AS task_id, t.status, t.attempts,
       t.max_attempts, t.seat_failures, t.current_attempt_id, t.number, t.work_order_id
FROM callback_attempts a JOIN callback_tasks t ON t.id = a.task_id
WHERE a.id = $1
FOR UPDATE
"""
_EVENT = ("INSERT INTO work_order_events (work_order_id, at, kind, actor, detail)"
          " VALUES ($1, $2, $3, $4, $5::jsonb)")
_LOST = """
SELECT a.id FROM callback_attempts a JOIN callback_tasks t ON t.id = a.task_id
WHERE a.outcome IS NULL AND a.started_at < $1 AND ($2::text IS NULL OR t.node = $2)
ORDER BY a.id
"""
# an answered call of the task's number since its last missed call (the writer cancels pending
# tasks itself; this catches the one that was dialling then)
_GOT_THROUGH = """
SELECT true FROM callback_tasks t JOIN calls c ON c.caller_number = t.number
WHERE t.id = $1 AND c.outcome = 'answered' AND c.ended_at >= t.last_missed_at LIMIT 1
"""
_STALE_CALLS = """
UPDATE callback_attempts a SET ended_at = $1, detail = a.detail || '{"ended": "assumed"}'::jsonb
FROM callback_tasks t
WHERE t.id = a.task_id AND a.ended_at IS NULL AND a.outcome IS NOT NULL AND a.started_at < $2
  AND ($3::text IS NULL OR t.node = $3)
"""
_LIST = """
SELECT t.id, t.node, w.number AS order_number, t.call_id, t.last_call_id, t.missed_calls, t.number, t.reason,
       t.status, t.status_reason, t.attempts, t.max_attempts, t.seat_failures, t.next_attempt_at, t.missed_at,
       t.last_missed_at, t.created_at, t.updated_at,
       (SELECT a.outcome FROM callback_attempts a WHERE a.task_id = t.id AND a.outcome IS NOT NULL
        ORDER BY a.attempt_no DESC LIMIT 1) AS last_outcome
FROM callback_tasks t JOIN work_orders w ON w.id = t.work_order_id
WHERE ($1::text IS NULL OR t.status = $1)
ORDER BY t.id DESC
LIMIT $2
"""


class CallbackDesk:
    """The callbacks' manager layer: Postgres for the tasks, PbxActions for Asterisk."""

    def __init__(self, pool: asyncpg.Pool, actions: PbxActions | None, *, owning: Callable[[], bool] = lambda: True,
                 free_seat: Callable[[], Awaitable[str | None]] | None = None, operators: Any = None,
                 node_id: str | None = None, policy: CallbackPolicy | None = None,
                 clock: Callable[[], float] = time.time,
                 waiting: Callable[[], Awaitable[dict[str, int]]] | None = None) -> None:
        """``free_seat``: an async callable naming a seat free now (or None); without it the
        operator desk ``operators`` (queues.operators.OperatorDesk) is read; with neither, no seat
        is ever free. ``node_id``: the node whose tasks this desk dials (None: every task)."""
        self.pool = pool
        self.actions = actions
        self.owning = owning
        self.operators = operators
        self.free_seat = free_seat if free_seat is not None else self.operator_seat
        self.waiting = waiting   # callers waiting per queue now (queues.live.LiveStats.waiting_counts)
        self.node_id = node_id
        self.policy = policy or CallbackPolicy()
        self.clock = clock
        self._legs: dict[int, _Leg] = {}
        self._by_action: dict[str, int] = {}
        self._by_uid: dict[str, int] = {}
        self._stash: OrderedDict[str, AmiEvent] = OrderedDict()
        self._in_flight = 0
        self._writes: asyncio.Queue[tuple] = asyncio.Queue()
        self._unwritten: set[int] = set()   # attempts whose outcome waits for Postgres

    # ---- seats ----------------------------------------------------------------------------------

    async def operator_seat(self) -> str | None:
        """The seat of the operator available longest whose device is free and none of whose
        queues has a caller waiting (None: nobody). Inbound callers come first: the 15 s answer
        standard is about them, and a callback taken from a surge makes more missed calls. While
        the waiting counts cannot be read (Redis down), nobody is dialled: the tasks wait."""
        desk = self.operators
        if desk is None:
            return None
        waiting: dict[str, int] = {}
        if self.waiting is not None:
            try:
                waiting = await self.waiting()
            except Exception as exc:  # noqa: BLE001 - unknown: inbound callers might be waiting
                log.warning("callbacks: waiting callers unknown (%s); no callback dialled now", type(exc).__name__)
                return None
        free = []
        for oid, m in list(desk.machines.items()):
            if m.state.status is not Status.AVAILABLE or not m.state.seat or m.state.device not in FREE_DEVICE:
                continue
            info = desk.info.get(oid)
            queues = [q for q, _ in info.skills] if info is not None else []
            if any(waiting.get(q, 0) > 0 for q in queues):
                continue
            free.append((m.state.since, m.state.seat))
        if not free:
            return None
        held = {r["seat"] for r in await self.pool.fetch(_SEATS_HELD)}   # one query, not one per seat
        return next((seat for _, seat in sorted(free) if seat.lower() not in held), None)

    def _ready(self) -> bool:
        client = getattr(self.actions, "client", None)
        ready = getattr(client, "ready", None)
        return self.actions is not None and self.owning() and (ready is None or ready.is_set())

    # ---- the loop -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Owner only: dial due tasks on free seats, time out lost attempts, write outcomes."""
        writer = asyncio.create_task(self._writer())
        try:
            while True:
                try:
                    if self._ready():
                        await self.expire()
                        while self._ready() and await self.dial_next():
                            pass
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - Postgres or AMI down: the next round retries
                    log.warning("callbacks: round failed (%s); retrying", exc)
                await asyncio.sleep(self.policy.poll_seconds)
        finally:
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)

    async def dial_next(self) -> bool:
        """Dial the oldest due task on a free seat; False if there is no free seat or no due task."""
        if self.actions is None or not self.owning():
            return False
        seat = await self.free_seat()
        if not seat:
            return False
        now = self.clock()
        async with self.pool.acquire() as conn, conn.transaction():
            if await conn.fetchval(_SEAT_HELD, seat):
                return False
            task = await conn.fetchrow(_DUE, _ts(now), self.node_id)
            if task is None:
                return False
            attempt = await conn.fetchrow(_NEW_ATTEMPT, task["id"], _ts(now), seat)
            await conn.execute("UPDATE callback_tasks SET status = 'dialing', current_attempt_id = $2,"
                               " updated_at = now() WHERE id = $1", task["id"], attempt["id"])
        attempt_id = attempt["id"]
        leg = self._legs[attempt_id] = _Leg(attempt_id, task["id"], seat, now)
        log.info("callbacks: task %s attempt %s: %s calls %s back (order %s)", task["id"], attempt["attempt_no"],
                 seat, task["number"], task["order_number"])
        self._in_flight += 1
        try:
            resp = await self.actions.originate(
                seat, context=CALLBACK_CONTEXT, exten=task["number"], caller_id=self.policy.caller_id,
                timeout_ms=int(self.policy.ring_seconds * 1000),
                variables={ORDER_VAR: task["order_number"], TASK_VAR: str(task["id"]), ATTEMPT_VAR: str(attempt_id)})
        except (AmiTimeout, AmiLinkLost) as exc:
            # Asterisk may have run it: its events, or the outcome timeout, decide
            log.warning("callbacks: attempt %s: Originate unanswered (%s); waiting for its outcome", attempt_id, exc)
            return True
        except (AmiError, ValueError) as exc:
            self._forget(attempt_id)
            await self.resolve(attempt_id, "seat_failed", {"error": str(exc)[:200]})
            return True
        finally:
            self._in_flight -= 1
        action_id = resp.frame.action_id
        if action_id:
            leg.action_id = action_id
            if attempt_id in self._legs:
                self._by_action[action_id] = attempt_id
            await self.pool.execute("UPDATE callback_attempts SET action_id = $2 WHERE id = $1", attempt_id, action_id)
            early = self._stash.pop(action_id, None)
            if early is not None:
                self.on_event(early)
        return True

    async def expire(self) -> int:
        """Resolve as ``lost`` the attempts without an outcome after ``outcome_timeout_seconds``,
        and end connected callbacks whose Hangup never came after ``max_call_seconds``."""
        now = self.clock()
        rows = await self.pool.fetch(_LOST, _ts(now - self.policy.outcome_timeout_seconds), self.node_id)
        rows = [row for row in rows if row["id"] not in self._unwritten]   # its outcome is on its way
        for row in rows:
            self._forget(row["id"])
            await self.resolve(row["id"], "lost", {"timeout_seconds": self.policy.outcome_timeout_seconds})
        await self.pool.execute(_STALE_CALLS, _ts(now), _ts(now - self.policy.max_call_seconds), self.node_id)
        for attempt_id, leg in list(self._legs.items()):
            if leg.started < now - self.policy.outcome_timeout_seconds - self.policy.max_call_seconds:
                self._forget(attempt_id)
        return len(rows)

    def _forget(self, attempt_id: int) -> None:
        leg = self._legs.pop(attempt_id, None)
        if leg is None:
            return
        leg.resolved = True
        if leg.action_id:
            self._by_action.pop(leg.action_id, None)
        for uid in leg.uniqueids:
            self._by_uid.pop(uid, None)

    # ---- AMI events -----------------------------------------------------------------------------

    def expects(self, event: AmiEvent) -> bool:
        """Is this an event of one of this desk's callbacks (or one it must look at)?"""
        name = event.name
        if name not in _EVENTS:
            return False
        if name == "OriginateResponse":
            action_id = event.frame.action_id
            return bool(action_id) and (action_id in self._by_action or self._in_flight > 0)
        if name == "VarSet" and event.frame.get("Variable") == ATTEMPT_VAR:
            return True
        return event.frame.get("Uniqueid") in self._by_uid

    def on_event(self, event: AmiEvent) -> None:
        """From the node runner (owner only), in event order; non-blocking: the outcome is queued
        for ``run``'s writer."""
        if not self.expects(event):
            return
        try:
            self._on_event(event)
        except Exception:  # noqa: BLE001 - never break the event path; the outcome timeout resolves it
            log.exception("callbacks: event %s not followed", event.name)

    def _on_event(self, event: AmiEvent) -> None:
        frame, name = event.frame, event.name
        if name == "OriginateResponse":
            self._originate_response(event)
            return
        if name == "VarSet" and frame.get("Variable") == ATTEMPT_VAR:
            channel = frame.get("Channel") or ""
            try:
                attempt_id = int(frame.get("Value") or "")
            except ValueError:
                return
            leg = self._legs.get(attempt_id)
            uid = frame.get("Uniqueid")
            if leg is not None and uid and not channel.endswith(";2"):   # a Local seat: the ;1 runs our dialplan
                leg.uniqueids.add(uid)
                self._by_uid[uid] = attempt_id
            return
        uid = frame.get("Uniqueid") or ""
        leg = self._legs.get(self._by_uid.get(uid, -1))
        if leg is None:
            self._by_uid.pop(uid, None)
            return
        if name == "DialBegin":
            leg.seat_answered = leg.dialled = True
        elif name == "DialEnd":
            self._dial_status(leg, frame.get("DialStatus") or "", "DialEnd")
        elif name == "VarSet" and frame.get("Variable") == "DIALSTATUS":
            self._dial_status(leg, frame.get("Value") or "", "DIALSTATUS")
        elif name == "Hangup":
            self._hangup(leg, uid, frame)

    def _originate_response(self, event: AmiEvent) -> None:
        frame = event.frame
        action_id = frame.action_id or ""
        attempt_id = self._by_action.pop(action_id, None)
        leg = self._legs.get(attempt_id) if attempt_id is not None else None
        if leg is None:
            if attempt_id is None and self._in_flight > 0:   # the Originate's answer is not back yet
                self._stash[action_id] = event
                while len(self._stash) > _STASH:
                    self._stash.popitem(last=False)
            return
        if frame.get("Response") == "Success":
            leg.seat_answered = True
            uid = frame.get("Uniqueid")
            if uid and uid != "<unknown>" and not (frame.get("Channel") or "").endswith(";2"):
                leg.uniqueids.add(uid)
                self._by_uid[uid] = leg.attempt_id
            return
        self._queue_outcome(leg, "seat_failed", {"originate": "Failure", "originate_reason": frame.get("Reason")})
        if not leg.uniqueids:
            self._forget(leg.attempt_id)

    def _dial_status(self, leg: _Leg, status: str, source: str) -> None:
        leg.seat_answered = leg.dialled = True
        if leg.resolved:
            return
        outcome = DIAL_OUTCOMES.get(status.upper(), "failed")
        if outcome == "connected":
            leg.connected_at = self.clock()
        self._queue_outcome(leg, outcome, {"dialstatus": status, "source": source})

    def _hangup(self, leg: _Leg, uid: str, frame) -> None:
        cause = frame.get("Cause")
        if not leg.resolved:
            if not leg.dialled:
                outcome = "seat_failed"
            else:
                try:
                    outcome = CAUSE_OUTCOMES.get(int(cause or ""), "failed")
                except ValueError:
                    outcome = "failed"
            self._queue_outcome(leg, outcome, {"hangup_cause": cause, "source": "Hangup"})
        elif leg.connected_at is not None:
            talk = max(0, round(self.clock() - leg.connected_at))
            self._writes.put_nowait(("ended", leg.attempt_id, {"talk_seconds": talk, "hangup_cause": cause}))
        self._forget(leg.attempt_id)

    def _queue_outcome(self, leg: _Leg, outcome: str, detail: dict) -> None:
        leg.resolved = True
        self._writes.put_nowait(("outcome", leg.attempt_id, outcome, detail))

    async def _writer(self) -> None:
        while True:
            item = await self._writes.get()
            try:
                await self._write(item)
            finally:
                self._writes.task_done()

    async def _write(self, item: tuple) -> None:
        """Write one outcome. A Postgres outage is retried for as long as it lasts (a connected
        callback whose result was dropped would be timed out as lost and the served citizen rung
        again); while it is pending, ``expire`` leaves the attempt alone. Any other error is a bug
        or bad data: tried ``_WRITE_TRIES`` times, then logged."""
        self._unwritten.add(item[1])
        tries = 0
        try:
            while True:
                tries += 1
                try:
                    if item[0] == "outcome":
                        await self.resolve(item[1], item[2], item[3])
                    else:
                        await self.ended(item[1], item[2])
                    return
                except asyncio.CancelledError:
                    raise
                except _OUTAGE as exc:
                    if tries == 1:
                        log.warning("callbacks: attempt %s: %s waits for Postgres (%s)", item[1], item[2],
                                    type(exc).__name__)
                except Exception as exc:  # noqa: BLE001 - not an outage: a few tries, then logged
                    if tries >= _WRITE_TRIES:
                        log.error("callbacks: attempt %s: %s not written (%s)", item[1], item[2], exc)
                        return
                await asyncio.sleep(min(5.0, 0.2 * 2 ** min(tries, 5)))
        finally:
            self._unwritten.discard(item[1])

    async def drain(self) -> None:
        """Until every outcome queued so far is written (needs ``run``'s writer)."""
        await self._writes.join()

    # ---- outcomes -------------------------------------------------------------------------------

    async def resolve(self, attempt_id: int, outcome: str, detail: dict | None = None) -> dict | None:
        """Write one attempt's outcome, the task's next state and the order's event in one
        transaction. The first outcome wins: a later one for the same attempt writes nothing."""
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown callback outcome {outcome!r}")
        p, now = self.policy, self.clock()
        at = _ts(now)
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(_ATTEMPT, attempt_id)
            if row is None or row["outcome"] is not None:
                return None
            ended = None if outcome == "connected" else max(at, row["started_at"])
            await conn.execute("UPDATE callback_attempts SET outcome = $2, ended_at = $3,"
                               " detail = detail || $4::jsonb WHERE id = $1",
                               attempt_id, outcome, ended, json.dumps(detail or {}))
            status, attempts, seat_failures = row["status"], row["attempts"], row["seat_failures"]
            next_at, why = None, None
            current = status == "dialing" and row["current_attempt_id"] == attempt_id
            if current:
                if outcome == "seat_failed":
                    seat_failures += 1
                    if seat_failures >= p.max_seat_failures:
                        status, why = "failed", "seats did not answer"
                    else:
                        status, next_at = "pending", now + p.seat_retry_seconds
                else:
                    attempts += 1
                    if outcome == "connected":
                        status = "connected"
                    elif attempts >= row["max_attempts"]:
                        status, why = "failed", f"no contact after {attempts} attempts"
                    else:
                        status, next_at = "pending", now + p.retry_spacing_seconds
                if status == "pending" and await conn.fetchval(_GOT_THROUGH, row["task_id"]):
                    # the citizen called in and was answered while this attempt rang: done
                    status, why, next_at = "cancelled", "caller got through", None
                await conn.execute(
                    "UPDATE callback_tasks SET status = $2, attempts = $3, seat_failures = $4, status_reason = $5,"
                    " next_attempt_at = coalesce($6, next_attempt_at), updated_at = now() WHERE id = $1",
                    row["task_id"], status, attempts, seat_failures, why, _ts(next_at) if next_at else None)
            event = {"task_id": row["task_id"], "attempt_id": attempt_id, "attempt_no": row["attempt_no"],
                     "seat": row["seat"], "number": row["number"], "outcome": outcome,
                     "counted": outcome in COUNTED and current, "task_status": status, "attempts": attempts,
                     "max_attempts": row["max_attempts"], "status_reason": why,
                     "next_attempt_at": _ts(next_at).isoformat() if next_at else None, **(detail or {})}
            await conn.execute(_EVENT, row["work_order_id"], at, "callback_attempt", "asterisk", json.dumps(event))
            if current and status == "connected":
                moved = await conn.fetchval("UPDATE work_orders SET status = 'intake', updated_at = now()"
                                            " WHERE id = $1 AND status = 'callback_pending' RETURNING id",
                                            row["work_order_id"])
                if moved:
                    await conn.execute(_EVENT, row["work_order_id"], at, "status_changed", "system", json.dumps(
                        {"from": "callback_pending", "to": "intake", "reason": "callback connected",
                         "task_id": row["task_id"]}))
        log.info("callbacks: task %s attempt %s: %s -> task %s", row["task_id"], row["attempt_no"], outcome, status)
        return event

    async def ended(self, attempt_id: int, detail: dict | None = None) -> bool:
        """A connected callback's channel hung up: the attempt's end."""
        done = await self.pool.fetchval(
            "UPDATE callback_attempts SET ended_at = greatest($2, started_at), detail = detail || $3::jsonb"
            " WHERE id = $1 AND ended_at IS NULL RETURNING id", attempt_id, _ts(self.clock()), json.dumps(detail or {}))
        return done is not None

    # ---- API ------------------------------------------------------------------------------------

    async def list_tasks(self, status: str | None = None, limit: int = 500) -> list[dict]:
        if status is not None and status not in STATUSES:
            raise CallbackError(400, f"status must be one of {', '.join(STATUSES)}", "status")
        rows = await self.pool.fetch(_LIST, status, limit)
        return [to_json(dict(r)) for r in rows]

    async def attempts(self, task_id: int) -> list[dict]:
        rows = await self.pool.fetch("SELECT id, attempt_no, started_at, ended_at, seat, action_id, outcome, detail"
                                     " FROM callback_attempts WHERE task_id = $1 ORDER BY attempt_no", task_id)
        return [{**to_json(dict(r)), "detail": json.loads(r["detail"])} for r in rows]

    async def cancel(self, task_id: int, actor: str, reason: str | None = None) -> dict:
        """Cancel an open task (a call in progress goes on; its outcome no longer moves the task)."""
        why = (reason or "").strip() or f"cancelled by {actor}"
        if len(why) > 200 or any(ord(c) < 32 for c in why):
            raise CallbackError(400, "reason must be up to 200 characters without control characters", "reason")
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow("SELECT id, status, work_order_id, attempts FROM callback_tasks WHERE id = $1"
                                      " FOR UPDATE", task_id)
            if row is None:
                raise CallbackError(404, f"no callback task {task_id}")
            if row["status"] not in OPEN:
                raise CallbackError(409, f"callback task {task_id} is {row['status']}, not open")
            await conn.execute("UPDATE callback_tasks SET status = 'cancelled', status_reason = $2, updated_at = now()"
                               " WHERE id = $1", task_id, why)
            await conn.execute(_EVENT, row["work_order_id"], _ts(self.clock()), "callback_task", actor, json.dumps(
                {"task_id": task_id, "action": "cancelled", "status": "cancelled", "was": row["status"],
                 "attempts": row["attempts"], "status_reason": why}))
        log.info("callbacks: task %s cancelled by %s", task_id, actor)
        return {"id": task_id, "status": "cancelled", "status_reason": why, "was": row["status"]}
