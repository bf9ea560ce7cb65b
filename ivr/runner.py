"""The IVR as the FastAGI ``ivr`` route: the live version of a flow, run for each call.

How this works: at the start of each call the runner asks Postgres which version of its flow is
live (one small query) and runs that version for the whole call, so a flow saved or rolled back
while calls are in the IVR applies to the next call and never to one in progress (the version
run is set on the channel as HOTLINE_FLOW_VERSION, and logged). Parsed versions are cached by
number. While Postgres cannot answer, the last version loaded is run; before any was loaded (or
when none was ever saved), the flow shipped with the project (``ivr/flows/default.toml``) is run
as version 0. A live version that no longer validates (a queue it names was deleted since) is
not run: the runner logs it and keeps the previous one (or the shipped flow), never dead air.

``validate`` is what the HTTP API saves with: the flow's TOML checked against the queues the
service routes to now (``queues.catalog``).
"""

from __future__ import annotations

import asyncio
import logging
from importlib import resources

import asyncpg

from ivr.agi_port import run_agi_flow, safe_route
from ivr.engine import FlowServices
from ivr.flow import Flow, FlowError, parse_flow
from ivr.store import IvrStore
from queues.catalog import QueueCatalog
from telephony.agi_server import AgiSession

log = logging.getLogger("hotline.ivr")

MAIN_FLOW = "main"
LOOKUP_TIMEOUT = 1.0


def shipped_flow_source() -> str:
    return resources.files("ivr").joinpath("flows/default.toml").read_text(encoding="utf-8")


class FlowIvr:
    def __init__(self, store: IvrStore, catalog: QueueCatalog, services: FlowServices, *,
                 flow_name: str = MAIN_FLOW) -> None:
        self.store = store
        self.catalog = catalog
        self.services = services
        self.flow_name = flow_name
        self.shipped = parse_flow(shipped_flow_source())   # a broken shipped flow stops the start
        self._cache: dict[int, Flow] = {}
        self._invalid: set[int] = set()   # live versions that failed validation when loaded
        catalog.on_change(lambda _queues: self._invalid.clear())   # a queue back: worth another try
        self._current: tuple[int, Flow] = (0, self.shipped)
        self._failing = False

    def validate(self, source: str) -> Flow:
        """The flow checked against the queues routed to now: every queue it names exists, a
        leader queue is reached only through a ``leader`` node (open only while its slot is live),
        and a ``leader`` node names a leader queue."""
        flow = parse_flow(source, known_queues={q.name for q in self.catalog.queues})
        problems = []
        for node_id, node in flow.nodes.items():
            queue = self.catalog.queue(getattr(node, "queue", None))
            if queue is None:
                continue
            if node.type == "leader" and queue.purpose != "leader":
                problems.append(f"nodes.{node_id}.queue: {queue.name!r} is not a leader queue (purpose "
                                f"{queue.purpose}); a leader node routes to a queue of purpose 'leader'")
            elif node.type != "leader" and queue.purpose == "leader":
                problems.append(f"nodes.{node_id}.queue: {queue.name!r} is a leader queue; route to it with "
                                f"a node of type 'leader', which reaches it only while a leader slot is live")
        if problems:
            raise FlowError(problems)
        return flow

    async def current(self) -> tuple[int, Flow]:
        """(version, flow) for a call starting now."""
        try:
            version = await asyncio.wait_for(self.store.live_version_number(self.flow_name), LOOKUP_TIMEOUT)
            if version is None:
                self._current = (0, self.shipped)
            elif version != self._current[0] and version not in self._invalid:
                flow = self._cache.get(version)
                if flow is None:
                    saved = await asyncio.wait_for(self.store.flow_version(self.flow_name, version), LOOKUP_TIMEOUT)
                    flow = self._cache[version] = self.validate(saved.source)
                self._current = (version, flow)
                log.info("IVR: flow %s version %d is live for new calls", self.flow_name, version)
            if self._failing:
                log.info("IVR: flow versions readable again")
            self._failing = False
        except FlowError as exc:
            self._invalid.add(version)   # not fetched again for every call (a save makes a new version)
            log.error("IVR: flow %s version %d no longer validates (%s); running version %d",
                      self.flow_name, version, "; ".join(exc.messages[:3]), self._current[0])
        except (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            if not self._failing:
                log.warning("IVR: Postgres unreachable (%s); new calls run flow version %d",
                            type(exc).__name__, self._current[0])
            self._failing = True
        return self._current

    async def __call__(self, session: AgiSession) -> None:
        version, flow = await self.current()
        session.flow_fallback = flow.fallback_queue   # the safe route of this call's own version
        await session.set_variable("HOTLINE_FLOW_VERSION", str(version))
        await run_agi_flow(session, flow, self.services, self.catalog.queue)

    async def safe_route(self, session: AgiSession) -> None:
        fallback = getattr(session, "flow_fallback", None) or self._current[1].fallback_queue
        await safe_route(session, fallback, self.catalog.queue)
