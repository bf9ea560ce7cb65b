"""Live state in Redis: queue waiting counts, today's counters, seats by state.

How this works: AMI events and finished calls are pushed (without waiting) onto a bounded
in-memory queue; one task applies them to Redis. Redis being down never blocks or fails a call:
updates are dropped with one warning per outage, and the views recover by themselves when Redis
is back (counters of calls are sets of Linkedids, so a replayed call never counts twice).
Keys: hotline:<node>:waiting (hash queue -> callers), hotline:<node>:seats (hash seat -> state),
hotline:<node>:<kind>:<YYYY-MM-DD> (sets of Linkedids: offered, answered, abandoned).
"""

from __future__ import annotations

import asyncio
import logging
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


class LiveStats:
    def __init__(self, redis: aioredis.Redis, node: str, timezone: str = "Asia/Shanghai", backlog: int = 10000) -> None:
        self.redis = redis
        self.prefix = f"hotline:{node}"
        self.tz = ZoneInfo(timezone)
        self._queue: asyncio.Queue = asyncio.Queue(maxsize=backlog)
        self.healthy = True
        self.dropped = 0

    def push_event(self, event: ev.AmiEvent) -> None:
        if isinstance(event, (ev.QueueCallerJoin, ev.QueueCallerLeave, ev.QueueMemberEvent)):
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
            kind, item = await self._queue.get()
            try:
                if kind == "event":
                    await self._apply_event(item)
                else:
                    await self._apply_call(item)
                if not self.healthy:
                    self.healthy = True
                    log.info("live: Redis is back; live views updating again")
            except (RedisError, OSError) as exc:
                self.dropped += 1
                if self.healthy:
                    self.healthy = False
                    log.warning("live: Redis unavailable (%s); live views degrade, calls go on", exc)

    async def drain(self, timeout: float = 5.0) -> None:
        """Wait until every pushed update was applied (or dropped)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while not self._queue.empty() and loop.time() < end:
            await asyncio.sleep(0.01)

    def _day(self, at: float) -> str:
        return datetime.fromtimestamp(at, self.tz).strftime("%Y-%m-%d")

    async def _apply_event(self, e: ev.AmiEvent) -> None:
        if isinstance(e, ev.QueueCallerJoin):
            await self.redis.hincrby(f"{self.prefix}:waiting", e.queue, 1)
        elif isinstance(e, ev.QueueCallerLeave):
            left = await self.redis.hincrby(f"{self.prefix}:waiting", e.queue, -1)
            if left < 0:
                await self.redis.hset(f"{self.prefix}:waiting", e.queue, 0)
        elif isinstance(e, ev.QueueMemberEvent) and e.member_name and e.frame.action_id is None:
            key = f"{self.prefix}:seats"
            if e.name == "QueueMemberRemoved":
                await self.redis.hdel(key, e.member_name)
            else:
                state = "paused" if e.paused else _STATES.get(e.status or 0, "unknown")
                await self.redis.hset(key, e.member_name, state)

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
            pipe.hgetall(f"{self.prefix}:seats")
            for kind in ("offered", "answered", "abandoned"):
                pipe.scard(f"{self.prefix}:{kind}:{day}")
            waiting, seats, offered, answered, abandoned = await pipe.execute()
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
