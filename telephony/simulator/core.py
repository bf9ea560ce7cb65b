"""The state one simulated Asterisk shares between its calls and its AMI actions.

Queues and their dynamic members, device states, which seats are busy (ringing or talking),
seat behaviours, global variables and AstDB. Member changes emit the member events of the
captures (QueueMemberAdded / Removed / Pause / Penalty / Status). A restart of the simulator
builds a new core: members, statistics and channels are gone, as after an Asterisk restart.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping

from telephony.simulator import cel
from telephony.simulator.bus import AGENT, EventBus
from telephony.simulator.channels import ChannelRegistry
from telephony.simulator.clock import SimClock
if TYPE_CHECKING:
    from telephony.simulator.caller import SimOriginateResult
from telephony.simulator.queue import (BUSY, INUSE, INVALID, MAX_MEMBERS, NOT_INUSE, ONHOLD, RINGING, RINGINUSE,
                                       UNAVAILABLE, UNKNOWN, CallQueue, DeviceTable, Member, device_name)


@dataclass(frozen=True)
class SeatBehaviour:
    """How a seat's phone behaves when the simulator rings it (sim seconds)."""

    answers: bool = True
    answer_after: float = 0.0
    talk: float = 6.0


DEFAULT_SEAT = SeatBehaviour()


@dataclass(frozen=True)
class SimConfig:
    username: str
    secret: str
    agi_host: str
    agi_port: int
    recordings_dir: Path
    queues: Mapping[str, Mapping[str, object]]
    fallback_queue: str
    fallback_category: str | None = None
    # the generated dialplan's Dial() of 110 (ivr.emergency_dial, ivr.emergency_ring_seconds)
    emergency_dial: str = "PJSIP/110@hotline-trunk"
    emergency_ring: float = 30.0
    # the generated dialplan's Queue() option c and [hotline-survey]; False: the captures' dialplan
    # (the caller is hung up with the seat)
    survey: bool = True


@dataclass(frozen=True)
class QueueRoute:
    """What the generated dialplan (config/asterisk.py), not queues.conf, knows of a queue: its
    max wait (the Queue() timeout of a transfer or an overflow into it), its work-order category
    and its overflow queue (where a caller goes when the max wait runs out)."""

    max_wait: int | None = None
    category: str | None = None
    overflow: str | None = None


def queue_routes(queues: Mapping[str, Mapping[str, object]]) -> dict[str, QueueRoute]:
    """The ``max_wait``, ``category`` and ``overflow`` keys of each queue definition, checked:
    ValueError for an overflow that names no queue here or a max wait that is no whole number > 0."""
    routes = {}
    for name, conf in queues.items():
        overflow, wait, category = conf.get("overflow"), conf.get("max_wait"), conf.get("category")
        if overflow is not None and overflow not in queues:
            raise ValueError(f"queue {name}: overflow names unknown queue {overflow!r}")
        if wait is not None and (isinstance(wait, bool) or not isinstance(wait, int) or wait < 1):
            raise ValueError(f"queue {name}: max_wait must be a whole number of seconds > 0")
        routes[name] = QueueRoute(wait, None if category is None else str(category),
                                  None if overflow is None else str(overflow))
    return routes


class PbxCore:
    def __init__(self, clock: SimClock, config: SimConfig, seats: Mapping[str, SeatBehaviour]) -> None:
        self.clock = clock
        self.config = config
        self.seats = seats
        self.bus = EventBus(clock)
        self.channels = ChannelRegistry(clock)
        self.queues = {name: CallQueue(name, conf) for name, conf in config.queues.items()}
        self.routes = queue_routes(config.queues)
        # overflow hops of one caller, as the generated dialplan bounds them: one per queue that has one
        self.overflow_bound = sum(1 for r in self.routes.values() if r.overflow is not None)
        self.devices = DeviceTable()
        self.engaged: dict[str, int] = {}      # device -> legs ringing or talking
        self.last_call: dict[str, float] = {}  # device -> end of its last queue call (shared_lastcall)
        self.globals: dict[str, str] = {}
        self.astdb: dict[str, str] = {}
        self.started = clock.now()
        self.started_wall = time.time()
        self.agi_refused = False  # fault knob: FastAGI connections fail (PbxSimulator.refuse_agi)
        self.emergency_refused = False  # fault knob: the emergency trunk is down (PbxSimulator.refuse_emergency)
        self.published: dict[str, int] = {}  # cached device states of app_queue (Queue:...) last published
        self.on_originate: Callable[[SimOriginateResult], None] | None = None  # each Originate's record

    # seats

    def behaviour(self, interface: str) -> SeatBehaviour:
        return self.seats.get(interface) or self.seats.get(device_name(interface)) or DEFAULT_SEAT

    def engage(self, interface: str) -> None:
        dev = device_name(interface)
        self.engaged[dev] = self.engaged.get(dev, 0) + 1

    def release(self, interface: str) -> None:
        dev = device_name(interface)
        left = self.engaged.get(dev, 0) - 1
        if left > 0:
            self.engaged[dev] = left
        else:
            self.engaged.pop(dev, None)
            self.set_device_state(dev, NOT_INUSE)

    def member_status(self, member: Member) -> int:
        return self.devices.status(member.state_interface)

    def available(self, queue: CallQueue, member: Member) -> bool:
        if member.paused:
            return False
        status = self.member_status(member)
        if status in (INVALID, UNAVAILABLE):
            return False
        dev = device_name(member.interface)
        if not queue.ringinuse and (status not in (NOT_INUSE, UNKNOWN) or self.engaged.get(dev)):
            return False
        wrap = member.wrapuptime or queue.wrapuptime
        last = self.last_call.get(dev)
        return not (wrap and last is not None and self.clock.now() - last < wrap)

    def set_device_state(self, device: str, status: int) -> None:
        """Change a device's state; members that follow it get QueueMemberStatus.

        DeviceStateChange is published on change for devices other than Local ones (whose
        channels publish it themselves, see cel.py); queues of the members that follow the
        device then republish ``Queue:<q>_avail`` if it changed."""
        dev = device_name(device)
        following = self.members_following(dev)
        before = {id(m): self.member_status(m) for _, m in following}
        old = self.devices.status(dev)
        self.devices.states[dev] = status
        if old != status and not dev.lower().startswith("local/"):
            cel.device_state(self.bus, dev, status)
        for queue, member in following:
            if before[id(member)] != status:
                self.bus.emit("QueueMemberStatus", AGENT, member.event_fields(status, queue.ringinuse))
        for queue in {id(q): q for q, _ in following}.values():
            self.publish_avail(queue)

    # app_queue's own device states (cached: published on change only)

    def _publish(self, device: str, state: int) -> None:
        if self.published.get(device) != state:
            self.published[device] = state
            cel.device_state(self.bus, device, state)

    def asterisk_available(self, queue: CallQueue, member: Member) -> bool:
        """app_queue's is_member_available: device state, pause, wrap-up (not our own ring count)."""
        status = self.member_status(member)
        busy = status in (INUSE, BUSY, RINGING, RINGINUSE, ONHOLD)
        ok = status in (NOT_INUSE, UNKNOWN) or (busy and queue.ringinuse)
        available = ok and not member.paused
        wrap = member.wrapuptime or queue.wrapuptime
        if member.last_call and wrap and self.clock.now() - wrap < member.last_call:
            available = False
        return available

    def publish_avail(self, queue: CallQueue) -> None:
        free = any(self.asterisk_available(queue, m) for m in queue.members.values())
        self._publish(f"Queue:{queue.name}_avail", NOT_INUSE if free else INUSE)

    def publish_pause(self, queue: CallQueue, member: Member, paused: bool) -> None:
        self._publish(f"Queue:{queue.name}_pause_{member.interface}", INUSE if paused else NOT_INUSE)

    def publish_callers(self, queue: CallQueue) -> None:
        """``Queue:<q>`` rings while callers wait (join_queue / leave_queue)."""
        self._publish(f"Queue:{queue.name}", RINGING if queue.entries else NOT_INUSE)

    def members_following(self, dev: str) -> list[tuple[CallQueue, Member]]:
        return [(q, m) for q in self.queues.values() for m in q.members.values()
                if device_name(m.state_interface) == dev]

    def seat_call_done(self, interface: str) -> None:
        """A queue call of this seat ended: LastCall for every membership (shared_lastcall)."""
        now = self.clock.now()
        dev = device_name(interface)
        self.last_call[dev] = now
        for q in self.queues.values():
            for m in q.members.values():
                if device_name(m.interface) == dev:
                    m.last_call = int(now)
                    m.in_call = False

    # membership (the QueueAdd / QueueRemove / QueuePause / QueuePenalty actions)

    def _member_event(self, name: str, queue: CallQueue, member: Member) -> None:
        self.bus.emit(name, AGENT, member.event_fields(self.member_status(member), queue.ringinuse))

    def add_member(self, queue_name: str, interface: str, name: str, state_interface: str, penalty: int,
                   paused: bool, reason: str, wrapuptime: int = 0) -> str | None:
        """None when added, else the error Asterisk answers."""
        queue = self.queues.get(queue_name)
        if queue is None:
            return "Unable to add interface to queue: No such queue"
        if interface in queue.members:
            return "Unable to add interface: Already there"
        if len(queue.members) >= MAX_MEMBERS:
            return "Out of memory"
        now = int(self.clock.now())
        member = Member(queue_name, interface, name or interface, state_interface or interface, penalty, paused,
                        reason if paused else "", now, last_pause=now if paused else 0, wrapuptime=wrapuptime)
        queue.members[interface] = member
        self.publish_pause(queue, member, paused)
        self._member_event("QueueMemberAdded", queue, member)
        self.publish_avail(queue)
        return None

    def remove_member(self, queue_name: str, interface: str) -> str | None:
        queue = self.queues.get(queue_name)
        if queue is None:
            return "Unable to remove interface from queue: No such queue"
        member = queue.members.pop(interface, None)
        if member is None:
            return "Unable to remove interface: Not there"
        self._member_event("QueueMemberRemoved", queue, member)
        self.publish_pause(queue, member, False)
        self.published.pop(f"Queue:{queue.name}_pause_{member.interface}", None)
        self.publish_avail(queue)
        return None

    def pause_member(self, interface: str, paused: bool, reason: str, queue_name: str | None) -> bool:
        """False when the interface is a member of no (such) queue."""
        found = False
        for queue in self.queues.values():
            if queue_name and queue.name != queue_name:
                continue
            member = queue.members.get(interface)
            if member is None:
                continue
            found = True
            member.paused = paused
            member.paused_reason = reason if paused else ""
            if paused:
                member.last_pause = int(self.clock.now())
            self.publish_pause(queue, member, paused)
            self.publish_avail(queue)
            self._member_event("QueueMemberPause", queue, member)
        return found

    def set_penalty(self, interface: str, penalty: int, queue_name: str | None) -> bool:
        found = False
        for queue in self.queues.values():
            member = queue.members.get(interface)
            if member is None or (queue_name and queue.name != queue_name):
                continue
            found = True
            member.penalty = penalty
            self._member_event("QueueMemberPenalty", queue, member)
        return found

    def is_known_seat(self, interface: str) -> bool:
        if interface in self.seats or device_name(interface) in self.seats:
            return True
        return any(interface in q.members for q in self.queues.values())
