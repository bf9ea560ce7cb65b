"""Live state in Redis for desks and wallboards: queues, seats and today's figures, published.

How this works: AMI events and finished calls are pushed (without waiting) onto a bounded
in-memory queue; one task applies them to Redis and, after each applied change, PUBLISHes what
changed. Redis being down never blocks or fails a call: ``push_*`` never wait and never raise, and
``run`` survives any error, with one warning per outage. ``snapshot(at)`` reads Redis only, so any
instance can serve ``GET /api/live``. Every update is idempotent, so a replayed event or call never
counts twice:
- waiting callers per queue are set from app_queue's own ``Count`` (QueueCallerJoin/Leave) or
  ``Calls`` (QueueParams), never incremented when a Count is there;
- the callers still waiting are a sorted set per queue (Uniqueid -> the QueueCallerJoin
  ``Timestamp``, Asterisk's clock), removed on QueueCallerAbandon/Leave; each Count/Calls trims it
  to that many newest entries, so a Leave missed during an AMI outage does not stay the longest
  wait for ever (callers leave a queue mostly in order: the stale ones are the oldest);
- a seat's view is kept per (queue, seat) membership, as app_queue reports it (Status: the
  AST_DEVICE_* state, Paused, PausedReason, InCall), so leaving one queue does not hide a seat that
  is still in another; the seat's own state and since when (the event Timestamp of the change) is
  derived from all its memberships;
- today's figures: a call is counted by one Lua script that SADDs its Linkedid to the day's set
  and, only if it was new, HINCRBYs the day's sums and publishes the call: atomic, so a replayed
  call (or one re-applied after a Redis error) never counts twice, and the snapshot reads a few
  sums, not every call of the day. The day is the call's start day in the centre's time zone.
Call updates that failed while Redis was down are kept (bounded) and re-applied when it is back,
so today's figures recover; state updates (waiting, seats) are simply superseded by later events.
A call is judged by the service level its queue had when it was pushed (``set_queues`` replaces
the configured queues and their service levels at run time; calls pushed earlier keep theirs).

Operators (pushed by the operator desk, queues/operators.py, as the node's owner, after each
change it keeps and after each reload or reconcile): P:operators holds one record per operator
LOGGED IN on this node, ``{operator_id, name, state, since, reason, seat}`` (state: available,
paused, ringing, on_call, wrap_up; since: epoch seconds of the change, to the microsecond as
Postgres keeps it, so a reload gives the same record; reason: the pause reason, paused only). An
operator who logs out is REMOVED from the hash (as a seat in no queue is); the removal is published
as a record with state "offline" and since = the logout. So the hash mirrors the logged-in rows of
``operator_sessions`` for this node, and the desk's full push after every reload
(``push_operators``) replaces it whole, dropping operators a crash or another owner left behind.
The snapshot lists them under ``operators`` (id -> record), counted under ``operators_by_state``.
Each push records the operator's latest state in memory at once; the task then writes and
publishes that latest state, so updates never go back in time, a record equal to the one written
before writes and publishes nothing, and when updates come faster than Redis takes them a
passing state may be skipped. After a failed write (Redis down) or a full backlog, the retry
replaces the whole hash from memory and publishes only the records Redis did not hold: operators'
states recover after an outage instead of waiting for each operator's next change.

Figures (per queue, and in total under ``today``): offered (total: every call; per queue: every
call that reached it, a queue it overflowed from included), answered, abandoned (abandoned +
queue_timeout; per queue also each caller it lost to an overflow), dropped (Asterisk restarted
under the call; kept apart), emergency_transfer and callback_requested (total only: calls the IVR
sent to 110 or that asked to be called back; they never wait in a queue, so they count in no
queue's figures), queued (total only: calls that reached a queue), answered_within_sl
(answered with hold_seconds <= the queue's service level, 15 s unless configured), asa (mean
hold_seconds of answered calls), aht (mean talk_seconds of answered calls). The service level
ratio is answered_within_sl / offered (per queue) or / queued (total); None when nothing offered.

Seat states (per membership and per seat): ringing (device 6), on_call (2 in use, 3 busy,
7 ring+in use, 8 on hold, or InCall=1), else paused (Paused=1), else available (1), unknown (0;
app_queue still rings such a member), unavailable (4 invalid, 5 unavailable). A seat is ringing
or on call if its device is; otherwise paused only if paused in every queue it is in.

Redis keys (P = hotline:<node>): P:waiting (hash queue -> callers), P:callers:<queue> (sorted set
Uniqueid -> join time), P:members (hash "<queue>\\n<seat>" -> JSON view; AMI values never hold
LF), P:seats (hash seat -> JSON {state, since, reason, interface, queues}), P:operators (hash
operator id -> JSON {operator_id, name, state, since, reason, seat}), P:counted:<day> (set of
Linkedids), P:today:<day> (hash "<figure>" and "<figure>\\n<queue>" -> integer sums).

Messages on channel ``hotline:<node>:live`` (compact JSON, one per applied change):
- ``{"type":"queue","queue":q,"waiting":n,"oldest":t|null}``: waiting callers changed (oldest:
  join time of the longest waiting caller, Asterisk's clock);
- ``{"type":"seat","seat":s,"queue":q,"member":state|null,"state":state,"since":t,"reason":r|null}``:
  a membership changed (member null: removed from q; state "offline": in no queue any more);
- ``{"type":"call","day":d,"queue":q|null,"outcome":o,"hold":h|null,"talk":t|null,"within_sl":b}``:
  a call was counted for the first time (a replay publishes nothing);
- ``{"type":"operator","operator_id":i,"name":n,"state":s,"since":t,"reason":r|null,"seat":x|null}``:
  an operator's state changed (state "offline": logged out, or no longer logged in after a reload;
  then seat and reason are null).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from datetime import datetime
from typing import Any, Iterable, Mapping
from zoneinfo import ZoneInfo

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from telephony import events as ev
from telephony.model import (ABANDONED, ANSWERED, CALLBACK_REQUESTED, DROPPED, EMERGENCY_TRANSFER, QUEUE_TIMEOUT,
                             FinishedCall)

log = logging.getLogger("hotline.live")

DAY_TTL = 3 * 24 * 3600
DEFAULT_SERVICE_LEVEL = 15
SEAT_STATES = ("available", "paused", "on_call", "ringing", "unavailable", "unknown")
OPERATOR_STATES = ("offline", "available", "paused", "ringing", "on_call", "wrap_up")   # queues.operator_state
OFFLINE = "offline"
_SEP = "\n"  # between names in a field: an AMI value never holds LF
_ON_CALL = frozenset({2, 3, 7, 8})   # AST_DEVICE_INUSE, BUSY, RINGINUSE, ONHOLD
_RINGING = 6                         # AST_DEVICE_RINGING
_OFF = {0: "unknown", 1: "available", 4: "unavailable", 5: "unavailable"}
_REASON_MAX = 80                     # app_queue keeps reason_paused in char[80]

# KEYS: the day's set of counted Linkedids, the day's sums. ARGV: linkedid, ttl, channel, message,
# then (field, increment) pairs. Counts and publishes only a call not counted before.
_COUNT_CALL = """
local added = redis.call('SADD', KEYS[1], ARGV[1])
if added == 1 then
  for i = 5, #ARGV, 2 do redis.call('HINCRBY', KEYS[2], ARGV[i], ARGV[i + 1]) end
  redis.call('PUBLISH', ARGV[3], ARGV[4])
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
return added
"""


def _dumps(value) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class LiveStats:
    def __init__(self, redis: aioredis.Redis, node: str, timezone: str = "Asia/Shanghai", backlog: int = 10000,
                 retry_interval: float = 5.0, *, queues: Iterable = (),
                 service_level: int = DEFAULT_SERVICE_LEVEL) -> None:
        """``queues``: the configured queues (see ``set_queues``): their service levels, and they are
        listed in the snapshot even when idle."""
        self.redis = redis
        self.node = node
        self.prefix = f"hotline:{node}"
        self.channel = f"{self.prefix}:live"
        self.tz = ZoneInfo(timezone)
        self.retry_interval = retry_interval
        self.default_service_level = service_level
        self.service_levels = service_levels(queues, service_level)
        self._queue: asyncio.Queue = asyncio.Queue(maxsize=backlog)
        # call updates Redis refused, at most ``backlog``: (call, its queue's service level when pushed)
        self._unsent: deque[tuple[FinishedCall, int]] = deque()
        # operator id (str) -> record, offline ones included: the latest pushed, and the last written
        self._operators: dict[str, dict] = {}
        self._written_operators: dict[str, dict] = {}
        self._operators_synced = True   # False after a failed write: the next one replaces the hash
        self._backlog = backlog
        self._count_call = redis.register_script(_COUNT_CALL)
        self.healthy = True
        self.dropped = 0

    def service_level(self, queue: str | None) -> int:
        return self.service_levels.get(queue, self.default_service_level) if queue else self.default_service_level

    def set_queues(self, queues: Iterable) -> None:
        """Replace the configured queues at run time (the queue configuration changed).

        ``queues``: objects or mappings with ``name`` and ``service_level`` or
        ``service_level_seconds`` (Settings.queues, rows of the ``queues`` table); a missing or None
        level is the default. Calls pushed from now on are judged by the new levels (one pushed
        earlier keeps its level); the snapshot lists the new queues, and a queue no longer configured
        only while it still has waiting callers, members or figures today. Bad input raises
        ValueError and changes nothing."""
        self.service_levels = service_levels(queues, self.default_service_level)

    # -- feeding (never waits, never raises) ------------------------------------------------------

    def push_event(self, event: ev.AmiEvent) -> None:
        if isinstance(event, (ev.QueueCallerEvent, ev.QueueMemberEvent)) or event.name == "QueueParams":
            self._offer(("event", event))

    def push_call(self, call: FinishedCall) -> None:
        self._offer(("call", (call, self.service_level(call.queue))))

    def push_operator(self, operator_id: int, *, name: str | None, state: str, since: float,
                      reason: str | None = None, seat: str | None = None) -> None:
        """An operator's state after a change (the operator desk, owner only). State "offline"
        removes the operator from P:operators."""
        try:
            record = operator_record(operator_id, name, state, since, reason, seat)
        except (TypeError, ValueError) as exc:
            self._refused(exc)
            return
        key = str(record["operator_id"])
        self._operators[key] = record
        self._offer_operators(("operator", key))

    def push_operators(self, records: Iterable[Mapping[str, Any]], at: float) -> None:
        """Every operator this node's desk knows (after a reload or reconcile), as mappings with
        the keys of ``push_operator``: P:operators is replaced by the logged-in ones; an operator
        it held that is not among them is published as offline since ``at``."""
        try:
            whole = [operator_record(r["operator_id"], r.get("name"), r["state"], r["since"], r.get("reason"),
                                     r.get("seat")) for r in records]
            at = float(at)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            self._refused(exc)
            return
        given = {str(r["operator_id"]): r for r in whole}
        for key, old in self._operators.items():
            if key not in given and old["state"] != OFFLINE:
                given[key] = operator_record(old["operator_id"], old["name"], OFFLINE, at)
        self._operators.update(given)
        self._offer_operators(("operators", at))

    def _offer_operators(self, item) -> None:
        dropped = self.dropped
        self._offer(item)
        if self.dropped != dropped:
            self._operators_synced = False   # the backlog is full: the retry writes what is in memory

    def _refused(self, exc: Exception) -> None:
        self.dropped += 1
        log.error("live: operator update refused (%s: %s)", type(exc).__name__, exc)

    def _offer(self, item) -> None:
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self.dropped += 1

    async def run(self) -> None:
        while True:
            try:
                if (self._unsent or not self._operators_synced) and self._queue.empty():
                    item = await asyncio.wait_for(self._queue.get(), self.retry_interval)
                else:
                    item = await self._queue.get()
            except asyncio.TimeoutError:
                await self._retry_unsent()
                continue
            try:
                await self._apply(*item)
            finally:
                self._queue.task_done()

    async def _apply(self, kind: str, item) -> None:
        try:
            if kind == "event":
                await self._apply_event(item)
            elif kind == "call":
                await self._apply_call(*item)
            elif kind == "operator":
                await self._apply_operator(item)
            else:
                await self._sync_operators(item)
        except Exception as exc:  # noqa: BLE001 - Redis errors and anything else: live views only
            if kind == "call":
                self._keep_unsent(item)
            elif kind in ("operator", "operators"):
                self._operators_synced = False   # the records are in memory: the retry replaces the hash
            else:
                self.dropped += 1
            self._unhealthy(exc)
            return
        self._back()
        await self._retry_unsent()

    def _keep_unsent(self, item: tuple[FinishedCall, int]) -> None:
        if len(self._unsent) >= self._backlog:
            self._unsent.popleft()
            self.dropped += 1
        self._unsent.append(item)

    async def _retry_unsent(self) -> None:
        while self._unsent:
            try:
                await self._apply_call(*self._unsent[0])
            except Exception as exc:  # noqa: BLE001
                self._unhealthy(exc)
                return
            self._unsent.popleft()
            self._back()
        if not self._operators_synced:
            try:
                await self._sync_operators(time.time())
            except Exception as exc:  # noqa: BLE001
                self._unhealthy(exc)
                return
            self._back()

    def _back(self) -> None:
        if not self.healthy:
            self.healthy = True
            log.info("live: Redis is back; live views updating again")

    def _unhealthy(self, exc: Exception) -> None:
        if self.healthy:
            self.healthy = False
            if isinstance(exc, (RedisError, OSError)):
                log.warning("live: Redis unavailable (%s); live views degrade, calls go on", exc)
            else:
                log.error("live: update failed (%s: %s); live views degrade, calls go on", type(exc).__name__, exc)

    async def drain(self, timeout: float = 5.0) -> bool:
        """Wait until every pushed update was applied (or dropped); True unless ``timeout`` passed."""
        try:
            await asyncio.wait_for(self._queue.join(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    def _day(self, at: float) -> str:
        return datetime.fromtimestamp(at, self.tz).strftime("%Y-%m-%d")

    # -- AMI events ---------------------------------------------------------------------------------

    async def _apply_event(self, e: ev.AmiEvent) -> None:
        if isinstance(e, ev.QueueCallerEvent):
            await self._apply_caller(e)
        elif isinstance(e, ev.QueueMemberEvent):
            await self._apply_member(e)
        elif e.name == "QueueParams":
            count, queue = _count(e.frame.get("Calls")), e.frame.get("Queue")
            if count is not None and queue:
                await self._set_waiting(queue, count, None, None)

    async def _apply_caller(self, e: ev.QueueCallerEvent) -> None:
        if not e.queue:
            return
        caller = e.uniqueid or e.channel or e.linkedid
        count = _count(e.frame.get("Count"))   # app_queue's own count after this join/leave
        if isinstance(e, ev.QueueCallerJoin):
            await self._set_waiting(e.queue, count, (caller, e.timestamp), None, step=1)
        elif isinstance(e, ev.QueueCallerLeave):
            await self._set_waiting(e.queue, count, None, caller, step=-1)
        else:  # QueueCallerAbandon: no Count; the Leave that follows sets it
            await self._set_waiting(e.queue, None, None, caller, step=0)

    async def _set_waiting(self, queue: str, count: int | None, joined: tuple[str | None, float] | None,
                           left: str | None, step: int = 0) -> None:
        waiting, callers = f"{self.prefix}:waiting", f"{self.prefix}:callers:{queue}"
        async with self.redis.pipeline(transaction=True) as pipe:
            if joined is not None and joined[0]:
                pipe.zadd(callers, {joined[0]: joined[1]})
            if left:
                pipe.zrem(callers, left)
            if count is not None:
                pipe.hset(waiting, queue, count)
                pipe.zremrangebyrank(callers, 0, -(count + 1))   # keep the ``count`` newest
            elif step:
                pipe.hincrby(waiting, queue, step)
            await pipe.execute()
        if count is None and step < 0 and int(await self.redis.hget(waiting, queue) or 0) < 0:
            await self.redis.hset(waiting, queue, 0)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hget(waiting, queue)
            pipe.zrange(callers, 0, 0, withscores=True)
            n, oldest = await pipe.execute()
        await self._publish({"type": "queue", "queue": queue, "waiting": max(0, int(n or 0)),
                             "oldest": oldest[0][1] if oldest else None})

    async def _apply_member(self, e: ev.QueueMemberEvent) -> None:
        seat, queue = e.member_name, e.queue
        if not seat or not queue:
            return
        members, seats = f"{self.prefix}:members", f"{self.prefix}:seats"
        field = f"{queue}{_SEP}{seat}"
        view = None
        if e.name == "QueueMemberRemoved":
            await self.redis.hdel(members, field)
        else:
            view = {"state": member_state(e.status, e.paused, e.frame.get("InCall") == "1"),
                    "status": e.status, "paused": bool(e.paused),
                    "reason": (e.paused_reason or "")[:_REASON_MAX] or None, "interface": e.interface}
            await self.redis.hset(members, field, _dumps(view))
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(members)
            pipe.hget(seats, seat)
            all_members, before = await pipe.execute()
        mine = {q: json.loads(v) for q, v in _memberships(all_members).get(seat, {}).items()}
        before = json.loads(before) if before else None
        if mine:
            state, reason = seat_state(mine.values())
            same = before is not None and before.get("state") == state and before.get("reason") == reason
            record = {"state": state, "since": before["since"] if same else e.timestamp, "reason": reason,
                      "interface": e.interface or (before or {}).get("interface"), "queues": sorted(mine)}
            await self.redis.hset(seats, seat, _dumps(record))
        else:
            record = {"state": "offline", "since": e.timestamp, "reason": None}
            await self.redis.hdel(seats, seat)
        await self._publish({"type": "seat", "seat": seat, "queue": queue,
                             "member": view["state"] if view else None, "state": record["state"],
                             "since": record["since"], "reason": record["reason"]})

    async def _publish(self, message: dict) -> None:
        await self.redis.publish(self.channel, _dumps(message))

    # -- operators ------------------------------------------------------------------------------------

    async def _apply_operator(self, key: str) -> None:
        """Write and publish the operator's latest state (not necessarily the one that was pushed
        with this item: a later push already replaced it)."""
        if not self._operators_synced:
            await self._sync_operators(time.time())
            return
        record = self._operators[key]
        if self._written_operators.get(key) == record:
            return                                       # the same state again: nothing changed
        operators = f"{self.prefix}:operators"
        async with self.redis.pipeline(transaction=True) as pipe:
            if record["state"] == OFFLINE:
                pipe.hdel(operators, key)
            else:
                pipe.hset(operators, key, _dumps(record))
            pipe.publish(self.channel, _dumps({"type": "operator", **record}))
            await pipe.execute()
        self._written_operators[key] = record

    async def _sync_operators(self, at: float) -> None:
        """Make P:operators hold exactly the logged-in operators in memory, in one transaction;
        publish each record Redis did not hold, and an operator Redis held that this process does
        not know (left by an earlier process) as offline since ``at``."""
        operators = f"{self.prefix}:operators"
        held = await self.redis.hgetall(operators)
        for key, raw in held.items():
            if key not in self._operators:
                old = _loads(raw)
                try:
                    self._operators[key] = operator_record(old.get("operator_id", key), old.get("name"), OFFLINE, at)
                except (TypeError, ValueError):
                    pass                                 # not an operator's record: deleted, not published
        records = dict(self._operators)
        want = {key: _dumps(r) for key, r in records.items() if r["state"] != OFFLINE}
        news = [r for key, r in records.items()
                if (key in want and held.get(key) != want[key]) or (key not in want and key in held)]
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(operators)
            if want:
                pipe.hset(operators, mapping=want)
            for record in news:
                pipe.publish(self.channel, _dumps({"type": "operator", **record}))
            await pipe.execute()
        self._written_operators = records
        self._operators_synced = True

    # -- finished calls -----------------------------------------------------------------------------

    async def _apply_call(self, call: FinishedCall, service_level: int) -> None:
        day = self._day(call.started_at)
        sums: dict[str, int] = {}

        def add(figure: str, value: int = 1) -> None:
            sums[figure] = sums.get(figure, 0) + value
            if call.queue:
                key = f"{figure}{_SEP}{call.queue}"
                sums[key] = sums.get(key, 0) + value

        sums["offered"] = 1
        within = False
        if call.outcome in (EMERGENCY_TRANSFER, CALLBACK_REQUESTED):
            # served by the IVR: sent to 110, or asked to be called back; never waited in a queue
            sums[call.outcome] = 1
        elif call.queue:
            sums["queued"] = 1
            sums[f"offered{_SEP}{call.queue}"] = 1
            # a queue the call overflowed from was offered it too, and missed it (its timeout)
            for entry in call.timeline:
                left = entry.detail.get("from_queue") if entry.kind == "queue_overflow" else None
                if left and left != call.queue:
                    sums[f"offered{_SEP}{left}"] = 1
                    sums[f"abandoned{_SEP}{left}"] = sums.get(f"abandoned{_SEP}{left}", 0) + 1
        if call.outcome == ANSWERED:
            add("answered")
            if call.hold_seconds is not None:
                add("hold_sum", call.hold_seconds)
                add("hold_n")
                within = call.hold_seconds <= service_level
                if within:
                    add("answered_within_sl")
            if call.talk_seconds is not None:
                add("talk_sum", call.talk_seconds)
                add("talk_n")
        elif call.outcome in (ABANDONED, QUEUE_TIMEOUT):
            add("abandoned")
        elif call.outcome == DROPPED:
            add("dropped")
        message = _dumps({"type": "call", "day": day, "queue": call.queue, "outcome": call.outcome,
                          "hold": call.hold_seconds, "talk": call.talk_seconds, "within_sl": within})
        args: list = [call.linkedid, DAY_TTL, self.channel, message]
        for figure, value in sums.items():
            args += [figure, value]
        await self._count_call(keys=[f"{self.prefix}:counted:{day}", f"{self.prefix}:today:{day}"], args=args,
                               client=self.redis)

    # -- the snapshot -------------------------------------------------------------------------------

    async def queue_load(self, queue: str, at: float) -> dict:
        """One queue's load now, for the IVR's wait estimate: callers waiting, its members by
        state, today's average handling time (None before any answered call). Reads only what
        it needs (the snapshot reads every queue). Raises when Redis is down."""
        day = self._day(at)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hget(f"{self.prefix}:waiting", queue)
            pipe.hgetall(f"{self.prefix}:members")
            pipe.hmget(f"{self.prefix}:today:{day}", f"talk_sum{_SEP}{queue}", f"talk_n{_SEP}{queue}")
            waiting, members, (talk_sum, talk_n) = await pipe.execute()
        seats = dict.fromkeys(SEAT_STATES, 0)
        for field, raw in members.items():
            if field.partition(_SEP)[0] == queue:
                state = json.loads(raw)["state"]
                seats[state] = seats.get(state, 0) + 1
        aht = int(talk_sum) / int(talk_n) if talk_n and int(talk_n) else None
        return {"waiting": max(0, int(waiting or 0)), "seats": seats, "aht": aht}

    async def waiting_counts(self) -> dict[str, int]:
        """Callers waiting per queue now (app_queue's own counts); raises when Redis is down."""
        raw = await self.redis.hgetall(f"{self.prefix}:waiting")
        return {queue: max(0, int(n)) for queue, n in raw.items()}

    async def snapshot(self, at: float) -> dict:
        """Everything live, from Redis only; ``at`` (epoch seconds) picks the day and ages the waits."""
        day = self._day(at)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(f"{self.prefix}:waiting")
            pipe.hgetall(f"{self.prefix}:members")
            pipe.hgetall(f"{self.prefix}:seats")
            pipe.hgetall(f"{self.prefix}:today:{day}")
            pipe.hgetall(f"{self.prefix}:operators")
            waiting, members, seat_records, sums, operator_records = await pipe.execute()
        sums = {k: int(v) for k, v in sums.items()}
        names = set(self.service_levels) | set(waiting)
        views: dict[str, dict[str, str]] = {}
        for field, raw in members.items():
            queue, _, seat = field.partition(_SEP)
            views.setdefault(queue, {})[seat] = json.loads(raw)["state"]
        names |= set(views)
        names |= {k.split(_SEP, 1)[1] for k in sums if _SEP in k}
        queues = sorted(names)
        async with self.redis.pipeline(transaction=False) as pipe:
            for queue in queues:
                pipe.zrange(f"{self.prefix}:callers:{queue}", 0, 0, withscores=True)
            oldest = dict(zip(queues, await pipe.execute()))

        out_queues = {}
        for queue in queues:
            counts = dict.fromkeys(SEAT_STATES, 0)
            for state in views.get(queue, {}).values():
                counts[state] = counts.get(state, 0) + 1
            first = oldest[queue][0][1] if oldest[queue] else None
            figures = _figures(sums, f"{_SEP}{queue}")
            out_queues[queue] = {
                "waiting": max(0, int(waiting.get(queue, 0))),
                "oldest_join": first,
                "longest_wait": max(0, round(at - first)) if first is not None else 0,
                "seats": counts,
                "service_level_seconds": self.service_level(queue),
                "today": figures,
                "service_level": _ratio(figures["answered_within_sl"], figures["offered"]),
            }
        today = _figures(sums, "")
        today["queued"] = sums.get("queued", 0)
        today["emergency_transfer"] = sums.get("emergency_transfer", 0)   # the IVR's own endings
        today["callback_requested"] = sums.get("callback_requested", 0)
        seats = {seat: json.loads(raw) for seat, raw in seat_records.items()}
        by_state: dict[str, int] = {}
        for record in seats.values():
            by_state[record["state"]] = by_state.get(record["state"], 0) + 1
        operators = {key: _loads(raw) for key, raw in operator_records.items()}
        operators_by_state: dict[str, int] = {}
        for record in operators.values():
            state = record.get("state")
            operators_by_state[state] = operators_by_state.get(state, 0) + 1
        return {
            "day": day,
            "waiting": {q: v["waiting"] for q, v in out_queues.items() if q in waiting},
            "today": today,
            "queues": out_queues,
            "seats": seats,
            "seats_by_state": by_state,
            "operators": operators,
            "operators_by_state": operators_by_state,
            "service_level": {
                "total": _ratio(today["answered_within_sl"], today["queued"]),
                "queues": {q: v["service_level"] for q, v in out_queues.items()},
            },
        }


def operator_record(operator_id: int, name: str | None, state: str, since: float, reason: str | None = None,
                    seat: str | None = None) -> dict:
    """One operator's live record (the JSON of P:operators and of an "operator" message)."""
    if state not in OPERATOR_STATES:
        raise ValueError(f"unknown operator state {state!r}")
    offline = state == OFFLINE
    return {"operator_id": int(operator_id), "name": None if name is None else str(name), "state": state,
            "since": round(float(since), 6), "reason": None if offline or not reason else str(reason)[:_REASON_MAX],
            "seat": None if offline or not seat else str(seat)}


def service_levels(queues: Iterable, default: int = DEFAULT_SERVICE_LEVEL) -> dict[str, int]:
    """Queue name -> service level (seconds) of configured queues: objects or mappings with
    ``name`` and ``service_level`` or ``service_level_seconds`` (None: ``default``); ValueError if
    a name or a level is not valid (1 to 600 s, as the configuration allows)."""
    levels: dict[str, int] = {}
    for q in queues:
        def get(key: str, q=q):
            return q.get(key) if hasattr(q, "get") and not hasattr(q, key) else getattr(q, key, None)

        name = get("name")
        level = get("service_level")
        if level is None:
            level = get("service_level_seconds")
        if not isinstance(name, str) or not name.strip() or _SEP in name:
            raise ValueError(f"queue name {name!r} is not valid")
        if level is None:
            level = default
        if isinstance(level, bool) or not isinstance(level, int) or not 1 <= level <= 600:
            raise ValueError(f"queue {name}: service level {level!r} is not 1 to 600 seconds")
        levels[name] = level
    return levels


def member_state(status: int | None, paused: bool, in_call: bool = False) -> str:
    """One membership's state from app_queue's Status (AST_DEVICE_*), Paused and InCall."""
    if status == _RINGING:
        return "ringing"
    if status in _ON_CALL or in_call:
        return "on_call"
    if paused:
        return "paused"
    return _OFF.get(status or 0, "unknown")


def seat_state(views: Iterable[dict]) -> tuple[str, str | None]:
    """(state, pause reason) of a seat from its memberships: ringing or on call if the device is;
    paused only if paused in every queue (with the first reason given); else the device state."""
    views = list(views)
    states = [v["state"] for v in views]
    for busy in ("on_call", "ringing"):
        if busy in states:
            return busy, None
    free = [s for s in states if s != "paused"]
    if free:
        return free[0], None
    return "paused", next((v.get("reason") for v in views if v.get("reason")), None)


def seat_states(members: dict[str, str]) -> dict[str, str]:
    """One state per seat from a P:members hash (``"<queue>\\n<seat>"`` -> JSON view)."""
    return {seat: seat_state(json.loads(v) for v in mine.values())[0]
            for seat, mine in _memberships(members).items()}


def _memberships(members: dict[str, str]) -> dict[str, dict[str, str]]:
    by_seat: dict[str, dict[str, str]] = {}
    for field, raw in members.items():
        queue, _, seat = field.partition(_SEP)
        by_seat.setdefault(seat, {})[queue] = raw
    return by_seat


def _figures(sums: dict[str, int], suffix: str) -> dict:
    def get(name: str) -> int:
        return sums.get(name + suffix, 0)

    return {
        "offered": get("offered"), "answered": get("answered"), "abandoned": get("abandoned"),
        "dropped": get("dropped"), "answered_within_sl": get("answered_within_sl"),
        "asa": round(get("hold_sum") / get("hold_n"), 1) if get("hold_n") else None,
        "aht": round(get("talk_sum") / get("talk_n"), 1) if get("talk_n") else None,
    }


def _loads(raw: str) -> dict:
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _count(value: str | None) -> int | None:
    try:
        return max(0, int(value)) if value not in (None, "") else None
    except ValueError:
        return None
