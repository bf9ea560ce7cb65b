"""PbxSimulator: a small Asterisk 22 for tests and the demo (AMI server + FastAGI client).

How this works: ``start`` builds the core (queues, channels, event bus) on a sim clock and
opens the AMI server. ``place_call`` creates the two Local channels of a citizen's call and
runs its script (calls.py) as a task; each task records a SimCallResult when it ends. Every
task is independent: an exception in one is logged and ends that call only.

Fault knobs (all public): ``drop_ami_links`` cuts every AMI connection abruptly, calls go on;
``restart`` (or ``stop`` then ``start``) is an Asterisk crash and restart: the event bus goes
silent first, so the old connections get no Hangup for the calls that vanish, whose results are
recorded with outcome ``pbx_restart`` (keeping the seat, queue and ``answered`` they reached);
the new boot has the same port, a new CoreStartupDate/Time, no members and no channels, sim
time going on from where it was (plus the second a restart takes). ``refuse_agi(True)`` makes
FastAGI unreachable: AGI() fails at once (AGISTATUS=FAILURE) and the call goes to the default
queue, as the generated dialplan routes it. A queue definition may carry the dialplan's
``max_wait``, ``category`` and ``overflow`` (another queue): a caller whose max wait runs out
goes on to the overflow queue as the generated dialplan sends it (``queue_definitions`` builds
the definitions from the settings). Slow seats: ``set_seat_behaviour`` with
``SeatBehaviour(answer_after=...)``.

The IVR's other endings, as the generated dialplan carries them out: HOTLINE_CALLBACK_REQUESTED=1
hangs the caller up; HOTLINE_TRANSFER=110 dials ``emergency_dial`` (a new channel of the call,
``PJSIP/hotline-trunk-<n>``), which answers, talks and hangs up as the SeatBehaviour of "110"
says (``set_seat_behaviour("110", SeatBehaviour(answers=False))``: no answer within
``emergency_ring`` s); ``refuse_emergency(True)`` is a trunk that is down (CHANUNAVAIL at once).
If 110 is not reached the caller goes on to the queue. With ``survey`` (the default) Queue() runs
with option ``c``: a caller whose seat hung up goes to the satisfaction survey over FastAGI
(``agi_network_script`` ``survey``) with the keys of ``ScriptedCaller.survey``; ``survey=False``
runs the captures' dialplan instead (the caller is hung up with the seat).
"""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

from telephony.simulator.ami_server import AmiServer
from telephony.simulator.caller import ScriptedCaller, SimCallResult, SimOriginateResult
from telephony.simulator.calls import InboundCall
from telephony.simulator.clock import SimClock
from telephony.simulator.core import PbxCore, SeatBehaviour, SimConfig, queue_routes
from telephony.simulator.queue import CallQueue

log = logging.getLogger("hotline.simulator")

_DIAL_TARGET = re.compile(r"[A-Za-z0-9_\-]+/[A-Za-z0-9_\-@.+#*:/]+")

MAX_CALLS = 1000  # calls and originates running at once
MAX_RECORDS = 100_000  # Originate records kept


def queue_definitions(queues: Iterable[Any], *, retry: int = 1) -> dict[str, dict[str, object]]:
    """The simulator's ``queues`` from configured queues (config.settings.QueueConfig or alike):
    queues.conf's strategy, ring timeout, retry and wrap-up as config/asterisk.py writes them,
    and the dialplan's max wait, category and overflow."""
    return {q.name: {"strategy": q.strategy, "timeout": q.ring_timeout, "retry": retry, "wrapuptime": q.wrapup,
                     "max_wait": q.max_wait, "category": q.category, "overflow": q.overflow} for q in queues}


class PbxSimulator:
    def __init__(self, *, username: str, secret: str, agi_host: str = "127.0.0.1", agi_port: int = 4573,
                 recordings_dir: Path | str, queues: Mapping[str, Mapping[str, object]],
                 fallback_queue: str = "hotline-general", speed: float = 1.0,
                 ami_host: str = "127.0.0.1", ami_port: int = 0, fallback_category: str | None = None,
                 emergency_dial: str = "PJSIP/110@hotline-trunk", emergency_ring: float = 30.0,
                 survey: bool = True) -> None:
        if not speed > 0:
            raise ValueError("speed must be > 0")
        if not _DIAL_TARGET.fullmatch(emergency_dial):
            raise ValueError("emergency_dial must be one Dial() destination like PJSIP/110@hotline-trunk")
        if not 0 < emergency_ring <= 3600:
            raise ValueError("emergency_ring must be > 0 and at most 3600 s")
        for name, conf in queues.items():
            CallQueue(name, conf)  # fail early on a bad queue definition
        queue_routes(queues)
        self.config = SimConfig(username, secret, agi_host, int(agi_port), Path(recordings_dir),
                                {name: dict(conf) for name, conf in queues.items()}, fallback_queue,
                                fallback_category, emergency_dial, float(emergency_ring), bool(survey))
        self.speed = float(speed)
        self.ami_host = ami_host
        self._port = int(ami_port)
        self.seats: dict[str, SeatBehaviour] = {}
        self.results: dict[str, SimCallResult] = {}
        self.originates: list[SimOriginateResult] = []  # every Originate that ran, in the order they ended
        self.core: PbxCore | None = None
        self._server: AmiServer | None = None
        self._tasks: set[asyncio.Task] = set()
        self._sim_time: float | None = None
        self._agi_refused = False
        self._emergency_refused = False
        self._calls: set[InboundCall] = set()

    @property
    def ami_port(self) -> int:
        return self._port

    @property
    def running(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("simulator already started")
        # a restart takes at least a second: the new boot's CoreStartupTime differs from the old one
        clock = SimClock(self.speed, None if self._sim_time is None else self._sim_time + 1.0)
        self.core = PbxCore(clock, self.config, self.seats)
        self.core.agi_refused = self._agi_refused
        self.core.emergency_refused = self._emergency_refused
        self.core.on_originate = self._record_originate
        server = AmiServer(self.core, self._tasks, self.ami_host, self._port)
        self._port = await server.start()
        self._server = server
        log.info("simulator: AMI on %s:%s, FastAGI to %s:%s, speed x%g", self.ami_host, self._port,
                 self.config.agi_host, self.config.agi_port, self.speed)

    def set_seat_behaviour(self, interface: str, behaviour: SeatBehaviour) -> None:
        self.seats[interface] = behaviour

    async def place_call(self, caller: ScriptedCaller) -> str:
        """Start a citizen's call; returns its Linkedid at once (the call runs on)."""
        if self.core is None:
            raise RuntimeError("simulator not started")
        caller.validate()
        if len(self._tasks) >= MAX_CALLS:
            raise RuntimeError("too many simulated calls at once")
        call = InboundCall(self.core, caller, self._record)
        task = asyncio.ensure_future(call.run())
        self._tasks.add(task)
        self._calls.add(call)
        task.add_done_callback(self._task_done)
        task.add_done_callback(lambda _t: self._calls.discard(call))
        return call.linkedid

    def _record(self, result: SimCallResult) -> None:
        self.results[result.linkedid] = result

    def _record_originate(self, result: SimOriginateResult) -> None:
        if len(self.originates) < MAX_RECORDS:
            self.originates.append(result)

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("simulator: task ended with %r", task.exception())

    async def wait_idle(self, timeout: float | None = None) -> None:
        """Until every call (and Originate) has fully hung up; TimeoutError after ``timeout`` s."""
        async def idle() -> None:
            while self._tasks:
                await asyncio.wait(set(self._tasks))
        await asyncio.wait_for(idle(), timeout)

    def refuse_agi(self, refused: bool = True) -> None:
        """Fault knob: FastAGI unreachable (True) or reachable again (False), for calls from now on."""
        self._agi_refused = bool(refused)
        if self.core is not None:
            self.core.agi_refused = self._agi_refused

    def refuse_emergency(self, refused: bool = True) -> None:
        """Fault knob: the emergency trunk is down (True: the Dial() of 110 fails at once with
        CHANUNAVAIL) or back (False), for dials from now on."""
        self._emergency_refused = bool(refused)
        if self.core is not None:
            self.core.emergency_refused = self._emergency_refused

    async def restart(self) -> None:
        """Fault knob: an Asterisk crash and restart (see the module docstring)."""
        await self.stop()
        await self.start()

    def refuse_ami(self, refused: bool = True) -> None:
        """Fault knob: the AMI link is down (True: links cut, new ones reset at once) or back
        (False); calls go on meanwhile, and their events reach nobody."""
        if self._server is not None:
            self._server.refusing = bool(refused)
            if refused:
                self._server.drop_links()

    def drop_ami_links(self) -> None:
        """Fault knob: cut every AMI TCP connection abruptly; calls go on."""
        if self._server is not None:
            self._server.drop_links()

    async def stop(self) -> None:
        """Asterisk goes down: not one more event, links cut, every call ends (``pbx_restart``)."""
        if self.core is not None:
            self.core.bus.silence()
        if self._server is not None:
            self._server.drop_links()
        for call in self._calls:
            call.abort_outcome = "pbx_restart"
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        if self._server is not None:
            await self._server.stop()
            self._server = None
        if self.core is not None:
            self._sim_time = self.core.clock.now()
