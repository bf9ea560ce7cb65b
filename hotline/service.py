"""The service: the AMI link, the FastAGI server, the call tracker, the writer and live views.

How one call goes through it: Asterisk runs the IVR over FastAGI (ivr.menu.MenuIvr); AMI events
go to the tracker (telephony.tracker) and the live views (queues.live); when the tracker finishes
a call, the writer (workorders.pipeline) checks its recordings and writes it with its work order
(workorders.store); then the per-call log line. On every AMI (re)connect the configured seats
are added to their queues (queues.seats).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

import asyncpg
import redis.asyncio as aioredis

from config.settings import Settings
from ivr.menu import MenuIvr
from queues.live import LiveStats
from queues.seats import apply_seats
from telephony.actions import PbxActions
from telephony.agi_server import FastAgiServer
from telephony.ami_client import AmiClient
from telephony.events import AmiEvent
from telephony.tracker import CallTracker
from workorders.pipeline import CallWriter
from workorders.store import CallStore

log = logging.getLogger("hotline.service")


def describe(call, result, checks) -> str:
    """The one log line of a finished call."""
    parts = [f"call {call.linkedid} from {call.caller_number or 'anonymous'}: {call.outcome}"]
    if call.seat:
        parts.append(f"by {call.seat}")
    if call.queue:
        parts.append(f"queue {call.queue}")
    if call.hold_seconds is not None:
        parts.append(f"hold {call.hold_seconds}s")
    if call.talk_seconds is not None:
        parts.append(f"talk {call.talk_seconds}s")
    if checks:
        parts.append("recording " + ",".join(c.status for c in checks))
    parts.append(f"order {result.order_number} ({'new' if result.order_created else 'linked'})")
    if result.duplicate:
        parts.append("(already recorded)")
    return " ".join(parts)


class HotlineService:
    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        redis: aioredis.Redis,
        *,
        on_written: Callable | None = None,
    ) -> None:
        self.settings = settings
        self.tracker = CallTracker(settings.node_id)
        self.live = LiveStats(redis, settings.node_id, settings.timezone)
        self.store = CallStore(pool, timezone=settings.timezone, repeat_window_days=settings.repeat_window_days)
        self._on_written_extra = on_written
        self.writer = CallWriter(
            self.store, min_recording_seconds=settings.min_recording_seconds, on_written=self._written
        )
        self.ivr = MenuIvr(settings)
        self.agi: FastAgiServer | None = None
        self.agi_port: int | None = None
        self.ami: AmiClient | None = None
        self.actions: PbxActions | None = None
        self._tasks: list[asyncio.Task] = []

    async def start(self) -> None:
        s = self.settings
        self.agi = FastAgiServer(
            max_sessions=s.agi.max_sessions, session_timeout=s.agi.session_timeout, command_timeout=s.agi.command_timeout
        )
        self.agi.add_route("ivr", self.ivr, on_error=self.ivr.safe_route)
        self.agi_port = await self.agi.start(s.agi.listen_host, s.agi.listen_port)
        secret = s.ami.secret.get_secret_value() if s.ami.secret else ""
        self.ami = AmiClient(
            host=s.ami.host, port=s.ami.port, username=s.ami.username, secret=secret,
            on_event=self.on_event, on_connected=self._on_connected,
            action_timeout=s.ami.action_timeout, connect_timeout=s.ami.connect_timeout, name=s.node_id,
        )
        self.actions = PbxActions(self.ami)
        for coro in (self.writer.run(), self.live.run(), self.ami.run()):
            self._tasks.append(asyncio.create_task(coro))

    def on_event(self, event: AmiEvent) -> None:
        self.live.push_event(event)
        call = self.tracker.feed(event)
        if call is not None:
            self.writer.submit(call)

    async def _on_connected(self, client: AmiClient) -> None:
        await apply_seats(self.actions, self.settings.seats)

    def _written(self, call, result, checks) -> None:
        self.live.push_call(call)
        log.info(describe(call, result, checks))
        if self._on_written_extra is not None:
            self._on_written_extra(call, result, checks)

    async def stop(self) -> None:
        if self.ami is not None:
            await self.ami.close()
        if self.agi is not None:
            await self.agi.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    def health(self) -> dict:
        return {
            "node": self.settings.node_id,
            "ami_connected": bool(self.ami and self.ami.ready.is_set()),
            "open_calls": len(self.tracker),
            "writer_backlog": self.writer.backlog,
            "calls_written": self.writer.written,
            "calls_failed": len(self.writer.failed),
            "agi_sessions": self.agi.active if self.agi else 0,
            "redis_healthy": self.live.healthy,
        }
