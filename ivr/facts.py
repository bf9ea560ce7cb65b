"""The business facts an IVR flow asks about, from the service's own state.

How this works: one object answers the engine's questions (``ivr.engine.FlowServices``): whether
a leader queue's slot is live (queues.leader), whether a special topic is switched on now, the
status of the caller's own order, the estimated wait of a queue (the live views in Redis), whether
a calendar's seats are open now (ivr.hours on the calendar in Postgres) and which caller lists a
number is on. Each answer is one small query; the engine bounds each call in time and takes the
node's safe branch on any error, so an outage here costs a caller a branch, never the call.

Estimated wait: with a seat available and nobody waiting, 0; otherwise the callers ahead plus
this one, times the queue's average handling time today (180 s before any call), shared over the
seats that are taking calls (available, ringing or on a call; at least one).
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Awaitable, Callable
from zoneinfo import ZoneInfo

from ivr.hours import is_open
from ivr.store import IvrStore

DEFAULT_AHT = 180.0


class ServiceFacts:
    def __init__(self, store: IvrStore, *, timezone: str = "Asia/Shanghai",
                 leader_open: Callable[[], Awaitable[str | list[str] | None]] | None = None, live=None) -> None:
        """``leader_open``: the leader queue(s) open now (queues.leader.LeaderDesk.open_leader_queues)."""
        self.store = store
        self.tz = ZoneInfo(timezone)
        self._leader_open = leader_open
        self.live = live

    async def leader_open(self, queue: str) -> bool:
        if self._leader_open is None:
            return False
        opened = await self._leader_open()
        names = [opened] if isinstance(opened, str) else list(opened or ())
        return any(name.lower() == queue.lower() for name in names)

    async def topic_active(self, topic: str, now: dt.datetime) -> bool:
        return await self.store.topic_active(topic, now)

    async def order_status(self, order_no: str, caller_number: str | None) -> str | None:
        return await self.store.order_status(order_no, caller_number)

    async def estimated_wait(self, queue: str) -> float | None:
        if self.live is None:
            return None
        load = await self.live.queue_load(queue, time.time())
        seats, waiting = load["seats"], load["waiting"]
        if waiting == 0 and seats.get("available", 0) > 0:
            return 0.0
        working = max(1, seats.get("available", 0) + seats.get("ringing", 0) + seats.get("on_call", 0))
        aht = load["aht"] or DEFAULT_AHT
        return (waiting + 1) * float(aht) / working

    async def in_hours(self, calendar: str, now: dt.datetime) -> bool:
        cal = await self.store.calendar(calendar)
        if cal is None:
            raise LookupError(f"no calendar {calendar!r}")   # the engine takes the node's safe branch
        local = now.astimezone(self.tz).replace(tzinfo=None) if now.tzinfo else now
        return is_open(cal, local)

    async def caller_lists(self, number: str | None) -> set[str]:
        return await self.store.lists_of(number)
