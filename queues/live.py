"""Live state in Redis: queue waiting counts, today's counters, seats by state.

How this works: AMI events and finished calls are pushed (without waiting) onto a bounded
in-memory queue; one task applies them to Redis. Redis being down never blocks or fails a call:
``push_*`` never wait and never raise, and ``run`` survives any error, with one warning per
outage. Every update is idempotent, so a replayed event or call never counts twice:
- waiting callers per queue are set from app_queue's own ``Count`` (QueueCallerJoin/Leave) or
  ``Calls`` (QueueParams), never incremented;
- today's counters are sets of Linkedids per day (in the centre's time zone);
- a seat's state is kept per (queue, seat) membership, so leaving one queue does not hide a seat
  that is still in another.
Call updates that failed while Redis was down are kept (bounded) and re-applied when it is back,
so today's counters recover; state updates (waiting, seats) are simply superseded by later events.
Keys: hotline:<node>:waiting (hash queue -> callers), hotline:<node>:members (hash
"<queue>\n<seat>" -> state; AMI values never hold LF), hotline:<node>:<kind>:<YYYY-MM-DD> (sets of Linkedids: offered,
answered, abandoned).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from datetime import datetime
from zoneinfo import ZoneInfo

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from telephony import events as ev
from telephony.model import ABANDONED, ANSWERED, QUEUE_TIMEOUT, FinishedCall

log = logging.getLogger("hotline.live")

# AMI device states (QueueMember Status) as the desk shows them.
_STATES = {0: "unknown", 1: "available", 2: "on_call", 3: "busy", 4: "invalid", 5: "unavailable",
           6: "ringing", 7: "on_call", 8: "on_hold"}
DAY_TTL = 3 * 24 * 3600
COUNTER_KINDS = ("offered", "answered", "abandoned")
_SEP = "\n"  # between queue and seat in a membership field: an AMI value never holds LF


class LiveStats:
    def __init__(self, redis: aioredis.Redis, node: str, timezone: str = "Asia/Shanghai", backlog: int = 10000,
                 retry_interval: float = 5.0) -> None:
        self.redis = redis
        self.prefix = f"hotline:{node}"
        self.tz = ZoneInfo(timezone)
        self.retry_interval = retry_interval
        self._queue: asyncio.Queue = asyncio.Queue(maxsize=backlog)
        self._unsent: deque[FinishedCall] = deque(maxlen=backlog)  # call updates Redis refused
        self.healthy = True
        self.dropped = 0

    def push_event(self, event: ev.AmiEvent) -> None:
        if isinstance(event, (ev.QueueCallerJoin, ev.QueueCallerLeave, ev.QueueMemberEvent)) \
                or event.name == "QueueParams":
            self._offer(("event", event))

    def push_call(self, call: FinishedCall) -> None:
        self._offer(("call", call))

    def _offer(self, item) -> None:
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self.dropped += 1

    async def run(self) -> None:
        while True:
            try:
                if self._unsent and self._queue.empty():
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
            else:
                await self._apply_call(item)
        except Exception as exc:  # noqa: BLE001 - Redis errors and anything else: live views only
            if kind == "call":
                self._unsent.append(item)
            else:
                self.dropped += 1
            self._unhealthy(exc)
            return
        if not self.healthy:
            self.healthy = True
            log.info("live: Redis is back; live views updating again")
        await self._retry_unsent()

    async def _retry_unsent(self) -> None:
        while self._unsent:
            try:
                await self._apply_call(self._unsent[0])
            except Exception as exc:  # noqa: BLE001
                self._unhealthy(exc)
                return
            self._unsent.popleft()
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

    async def _apply_event(self, e: ev.AmiEvent) -> None:
        waiting = f"{self.prefix}:waiting"
        if isinstance(e, (ev.QueueCallerJoin, ev.QueueCallerLeave)):
            count = _count(e.frame.get("Count"))
            if count is not None:  # app_queue's own count after this join/leave: idempotent
                await self.redis.hset(waiting, e.queue, count)
            elif isinstance(e, ev.QueueCallerJoin):
                await self.redis.hincrby(waiting, e.queue, 1)
            elif await self.redis.hincrby(waiting, e.queue, -1) < 0:
                await self.redis.hset(waiting, e.queue, 0)
        elif isinstance(e, ev.QueueMemberEvent):
            if not e.member_name:
                return
            key, field = f"{self.prefix}:members", f"{e.queue}{_SEP}{e.member_name}"
            if e.name == "QueueMemberRemoved":
                await self.redis.hdel(key, field)
            else:
                state = "paused" if e.paused else _STATES.get(e.status or 0, "unknown")
                await self.redis.hset(key, field, state)
        elif e.name == "QueueParams":
            count = _count(e.frame.get("Calls"))
            queue = e.frame.get("Queue")
            if count is not None and queue:
                await self.redis.hset(waiting, queue, count)

    async def _apply_call(self, call: FinishedCall) -> None:
        day = self._day(call.started_at)
        kinds = ["offered"]
        if call.outcome == ANSWERED:
            kinds.append("answered")
        elif call.outcome in (ABANDONED, QUEUE_TIMEOUT):
            kinds.append("abandoned")
        async with self.redis.pipeline(transaction=False) as pipe:
            for kind in kinds:
                key = f"{self.prefix}:{kind}:{day}"
                pipe.sadd(key, call.linkedid)
                pipe.expire(key, DAY_TTL)
            await pipe.execute()

    async def snapshot(self, at: float) -> dict:
        day = self._day(at)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(f"{self.prefix}:waiting")
            pipe.hgetall(f"{self.prefix}:members")
            for kind in COUNTER_KINDS:
                pipe.scard(f"{self.prefix}:{kind}:{day}")
            waiting, members, offered, answered, abandoned = await pipe.execute()
        seats = seat_states(members)
        by_state: dict[str, int] = {}
        for state in seats.values():
            by_state[state] = by_state.get(state, 0) + 1
        return {
            "day": day,
            "waiting": {q: max(0, int(n)) for q, n in waiting.items()},
            "today": {"offered": offered, "answered": answered, "abandoned": abandoned},
            "seats": seats,
            "seats_by_state": by_state,
        }


def seat_states(members: dict[str, str]) -> dict[str, str]:
    """One state per seat from its per-queue memberships: paused only if paused in every queue."""
    seats: dict[str, str] = {}
    for field, state in members.items():
        seat = field.split(_SEP, 1)[-1]
        if seats.get(seat) in (None, "paused"):
            seats[seat] = state
    return seats


def _count(value: str | None) -> int | None:
    try:
        return max(0, int(value)) if value not in (None, "") else None
    except ValueError:
        return None
