"""The service: the FastAGI server, one NodeRunner per Asterisk node, the writer and live views.

How one call goes through it: Asterisk runs the IVR over FastAGI (ivr.runner.FlowIvr); the node's
AMI events go to its tracker (telephony.tracker) and live views (queues.live) through its
NodeRunner (hotline.node), which also holds the node's lease, resyncs after every login and
journals each finished call; the writer (workorders.pipeline) checks the call's recordings and
writes it with its work order (workorders.store); then the per-call log line.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

import asyncpg
import redis.asyncio as aioredis

from config.settings import Settings
from ivr.facts import ServiceFacts
from ivr.runner import FlowIvr
from ivr.store import IvrStore
from ivr.survey import SurveyIvr
from hotline.lease import default_owner
from hotline.node import NodeRunner
from queues.callbacks import CallbackDesk, CallbackPolicy
from queues.catalog import QueueCatalog
from queues.leader import LeaderDesk
from queues.live import LiveStats
from queues.operators import OperatorDesk
from telephony.agi_server import FastAgiServer
from telephony.ami_client import AmiClient
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
    if call.survey:
        parts.append(f"survey {call.survey}")
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
        owner: str | None = None,
        no_answer_limit: int = 3,
    ) -> None:
        self.settings = settings
        self.owner = owner or default_owner()
        cb = CallbackPolicy(**settings.callbacks.model_dump())   # the [callbacks] settings, one object
        self.store = CallStore(pool, timezone=settings.timezone, repeat_window_days=settings.repeat_window_days,
                               callback_ivr_seconds=cb.ivr_hangup_after_seconds, callback_max_attempts=cb.max_attempts)
        self._on_written_extra = on_written
        self.writer = CallWriter(
            self.store, min_recording_seconds=settings.min_recording_seconds, on_written=self._written
        )
        # The queues routed to: the settings' overlaid by Postgres's, re-read every 2 s.
        self.catalog = QueueCatalog(settings, pool)
        self.lives = {node.id: LiveStats(redis, node.id, settings.timezone, queues=settings.queues) for node in settings.pbx_nodes()}
        for live in self.lives.values():
            self.catalog.on_change(live.set_queues)
        self.nodes = [
            NodeRunner(node, settings, redis=redis, writer=self.writer, live=self.lives[node.id], owner=self.owner)
            for node in settings.pbx_nodes()
        ]
        static = [seat.interface for seat in settings.seats]
        self.desks: dict[str, OperatorDesk] = {}
        for n in self.nodes:   # one operator desk per node; it changes Asterisk only as the node's owner
            n.desk = self.desks[n.node.id] = OperatorDesk(
                n.node.id, pool, redis, n.actions, owning=lambda n=n: n.owning, static_seats=static,
                no_answer_limit=no_answer_limit, live=self.lives[n.node.id])
        # The leader hotline (first node's Asterisk): an IVR key to a leader queue reaches it only
        # while its slot is live; callbacks' OriginateResponse events come back through the node.
        # While a slot is live its leader seat is a member of its leader queue (kept by the first
        # node's owner); a static seat of the settings is left to the settings.
        self.leader = LeaderDesk(pool, self.node.actions, timezone=settings.timezone,
                                 owning=lambda: self.node.owning, node_id=self.node.node.id,
                                 static_members=[(q, seat.interface) for seat in settings.seats for q in seat.queues])
        self.node.leader = self.leader
        self.desk.keep_member = self.leader.keeps_member
        # The IVR: the live version of the flow in Postgres (or the shipped one), run per call.
        self.ivr_store = IvrStore(pool)
        self.facts = ServiceFacts(self.ivr_store, timezone=settings.timezone,
                                  leader_open=self.leader.open_leader_queues, live=self.node.live)
        self.ivr = FlowIvr(self.ivr_store, self.catalog, self.facts)
        self.survey = SurveyIvr()   # after the seat hung up: 1 satisfied, 2 basically, 3 dissatisfied
        # Missed-call callbacks: every node's tasks are dialled on a free operator seat of the first
        # node (the seats' PBX; see docs/architecture.md), seat first, through its trunk.
        self.callbacks = CallbackDesk(pool, self.node.actions, owning=lambda: self.node.owning,
                                      operators=self.desk, node_id=None, waiting=self.node.live.waiting_counts,
                                      policy=cb)
        self.node.callbacks = self.callbacks
        self.agi: FastAgiServer | None = None
        self.agi_port: int | None = None
        self._tasks: list[asyncio.Task] = []

    # The first (usually the only) node, for callers that follow one PBX.
    @property
    def node(self) -> NodeRunner:
        return self.nodes[0]

    @property
    def desk(self) -> OperatorDesk:
        return self.desks[self.node.node.id]

    @property
    def live(self) -> LiveStats:
        return self.node.live

    @property
    def tracker(self) -> CallTracker:
        return self.node.tracker

    @property
    def ami(self) -> AmiClient | None:
        return self.node.ami

    async def start(self) -> None:
        s = self.settings
        self.agi = FastAgiServer(
            max_sessions=s.agi.max_sessions, session_timeout=s.agi.session_timeout, command_timeout=s.agi.command_timeout
        )
        self.agi.add_route("ivr", self.ivr, on_error=self.ivr.safe_route)
        self.agi.add_route("survey", self.survey, on_error=self.survey.safe_route)
        await self.catalog.refresh()   # before the first call: Postgres's queues (or the settings' alone)
        self.agi_port = await self.agi.start(s.agi.listen_host, s.agi.listen_port)
        coros = [self.writer.run(), self.catalog.run(), *(live.run() for live in self.lives.values()),
                 *(desk.run() for desk in self.desks.values()), self.leader.run_seat_sync(), self.callbacks.run(),
                 *(n.run() for n in self.nodes)]   # nodes last: see stop
        self._tasks = [asyncio.create_task(coro) for coro in coros]

    async def wait_ready(self, timeout: float) -> None:
        """Until every node is consumed here and logged in and resynced (TimeoutError otherwise)."""
        async def ready() -> None:
            for node in self.nodes:
                await node.active.wait()
                await node.ami.ready.wait()
        await asyncio.wait_for(ready(), timeout)

    def _written(self, call, result, checks) -> None:
        live = self.lives.get(call.node)
        if live is not None:
            live.push_call(call)
        log.info(describe(call, result, checks))
        if self._on_written_extra is not None:
            self._on_written_extra(call, result, checks)

    async def stop(self, drain_timeout: float = 10.0) -> None:
        """Stop taking events and AGI sessions, journal and write what is finished, then stop."""
        node_tasks = self._tasks[-len(self.nodes):] if self._tasks else []
        for task in node_tasks:          # the lease loops: no new lease taken while stopping
            task.cancel()
        await asyncio.gather(*node_tasks, return_exceptions=True)
        for node in self.nodes:
            await node.stop()
        if self.agi is not None:
            await self.agi.stop()
        if not await self.writer.drain(drain_timeout):
            log.warning("stop: %d calls not yet written; those journaled are written at the next start, "
                        "the others (Redis was down) are lost", self.writer.backlog)
        for live in self.lives.values():
            await live.drain()
        try:   # callback outcomes already known: written, not left to time out as lost
            await asyncio.wait_for(self.callbacks.drain(), drain_timeout)
        except asyncio.TimeoutError:
            log.warning("stop: callback outcomes not yet written; their attempts will time out as lost")
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    def health(self) -> dict:
        return {
            "nodes": {
                n.node.id: {
                    "active": n.active.is_set(),
                    "ami_connected": bool(n.ami and n.ami.ready.is_set()),
                    "open_calls": len(n.tracker),
                    "resyncs": n.resyncs,
                    "asterisk_restarts_seen": n.restarts_seen,
                    "redis_healthy": n.live.healthy,
                } for n in self.nodes
            },
            "owner": self.owner,
            "writer_backlog": self.writer.backlog,
            "calls_written": self.writer.written,
            "calls_failed": len(self.writer.failed),
            "agi_sessions": self.agi.active if self.agi else 0,
        }
