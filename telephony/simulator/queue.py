"""app_queue's state: queues, dynamic members, waiting callers, statistics and member choice.

How this works: a queue keeps its members in the order they were added (their position) and
its callers in the order of their priority, then arrival. ``choose`` is app_queue's metric:
the lowest penalty wins outright, so a member with a higher penalty is only rung when every
lower-penalty member is unavailable (paused, busy, ringing, in wrap-up), never because one of
them did not answer; within a penalty, ``rrmemory`` starts after the member rung last in this
queue, ``linear`` after the one rung last for this caller, ``ringall`` rings them all. Hold and
talk times are app_queue's running averages (3/4 old + 1/4 new, the first sample taken as is).
No I/O and no events here: the call script and the AMI actions read and change this state.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Mapping

UNKNOWN, NOT_INUSE, INUSE, BUSY, INVALID, UNAVAILABLE, RINGING, RINGINUSE, ONHOLD = range(9)
DEVICE_STATES = {"UNKNOWN": UNKNOWN, "NOT_INUSE": NOT_INUSE, "INUSE": INUSE, "BUSY": BUSY, "INVALID": INVALID,
                 "UNAVAILABLE": UNAVAILABLE, "RINGING": RINGING, "RINGINUSE": RINGINUSE, "ONHOLD": ONHOLD}
STRATEGIES = ("ringall", "leastrecent", "fewestcalls", "random", "rrmemory", "rrordered", "linear", "wrandom")
MAX_MEMBERS = 1000
MAX_CALLERS = 5000


def device_name(interface: str) -> str:
    """The device whose state a member follows: options (``/n``) dropped from Local channels."""
    if interface.lower().startswith("local/"):
        return "/".join(interface.split("/")[:2])
    return interface


def _bool(value: object, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("yes", "true", "y", "t", "1", "on")


@dataclass(eq=False)
class Member:
    queue: str
    interface: str
    name: str
    state_interface: str
    penalty: int
    paused: bool
    paused_reason: str
    login_time: int
    last_pause: int = 0
    calls_taken: int = 0
    last_call: int = 0
    in_call: bool = False
    wrapuptime: int = 0

    def event_fields(self, status: int, ringinuse: bool) -> list[tuple[str, str]]:
        """QueueMemberAdded / Removed / Pause / Status / Penalty."""
        return [("Queue", self.queue), ("MemberName", self.name), ("Interface", self.interface),
                ("StateInterface", self.state_interface), ("Membership", "dynamic"), ("Penalty", str(self.penalty)),
                ("CallsTaken", str(self.calls_taken)), ("LastCall", str(self.last_call)),
                ("LastPause", str(self.last_pause)), ("LoginTime", str(self.login_time)),
                ("InCall", "1" if self.in_call else "0"), ("Status", str(status)),
                ("Paused", "1" if self.paused else "0"), ("PausedReason", self.paused_reason),
                ("Ringinuse", "1" if ringinuse else "0"), ("Wrapuptime", str(self.wrapuptime))]

    def status_item(self, status: int) -> list[tuple[str, str]]:
        """The QueueMember item of QueueStatus."""
        return [("Queue", self.queue), ("Name", self.name), ("Location", self.interface),
                ("StateInterface", self.state_interface), ("Membership", "dynamic"), ("Penalty", str(self.penalty)),
                ("CallsTaken", str(self.calls_taken)), ("LastCall", str(self.last_call)),
                ("LastPause", str(self.last_pause)), ("LoginTime", str(self.login_time)),
                ("InCall", "1" if self.in_call else "0"), ("Status", str(status)),
                ("Paused", "1" if self.paused else "0"), ("PausedReason", self.paused_reason),
                ("Wrapuptime", str(self.wrapuptime))]


@dataclass(eq=False)
class Entry:
    """A caller waiting in a queue."""

    call: object
    prio: int
    joined: float
    original_position: int = 0
    linpos: int = 0
    pending: bool = False  # ringing members right now (autofill lets the next caller ring others)


@dataclass
class Stats:
    completed: int = 0
    abandoned: int = 0
    completed_in_sl: int = 0
    abandoned_in_sl: int = 0
    holdtime: int = 0
    talktime: int = 0
    hold_samples: int = 0


class CallQueue:
    def __init__(self, name: str, conf: Mapping[str, object]) -> None:
        self.name = name
        self.strategy = str(conf.get("strategy", "ringall")).lower()
        if self.strategy not in STRATEGIES:
            raise ValueError(f"queue {name}: unknown strategy {self.strategy!r}")
        self.timeout = float(conf.get("timeout", 15))
        self.retry = float(conf.get("retry", 5))
        self.wrapuptime = float(conf.get("wrapuptime", 0))
        self.servicelevel = int(conf.get("servicelevel", 0))
        self.weight = int(conf.get("weight", 0))
        self.maxlen = int(conf.get("maxlen", 0))
        self.ringinuse = _bool(conf.get("ringinuse"), False)
        self.autofill = _bool(conf.get("autofill"), True)
        # app_queue sets QUEUE*, MEMBER* and QE* channel variables only when asked to (default no)
        self.setqueuevar = _bool(conf.get("setqueuevar"), False)
        self.setinterfacevar = _bool(conf.get("setinterfacevar"), False)
        self.setqueueentryvar = _bool(conf.get("setqueueentryvar"), False)
        self.members: dict[str, Member] = {}
        self.entries: list[Entry] = []
        self.rrpos = 0
        self.stats = Stats()

    # callers

    def join(self, entry: Entry) -> int:
        if len(self.entries) >= MAX_CALLERS:
            raise RuntimeError(f"queue {self.name} is full")
        at = next((i for i, e in enumerate(self.entries) if e.prio < entry.prio), len(self.entries))
        self.entries.insert(at, entry)
        entry.original_position = at + 1
        return at + 1

    def position(self, entry: Entry) -> int:
        return self.entries.index(entry) + 1 if entry in self.entries else 0

    def leave(self, entry: Entry) -> tuple[int, int]:
        """(position it had, callers left)."""
        pos = self.position(entry)
        if pos:
            self.entries.remove(entry)
        return pos, len(self.entries)

    # statistics

    def record_hold(self, holdtime: int) -> None:
        s = self.stats
        s.holdtime = holdtime if s.hold_samples == 0 else (s.holdtime * 3 + holdtime) // 4
        s.hold_samples += 1

    def record_complete(self, holdtime: int, talktime: int) -> None:
        s = self.stats
        s.talktime = talktime if s.completed == 0 else (s.talktime * 3 + talktime) // 4
        s.completed += 1
        if holdtime <= self.servicelevel:
            s.completed_in_sl += 1

    def record_abandon(self, holdtime: int) -> None:
        self.stats.abandoned += 1
        if holdtime <= self.servicelevel:
            self.stats.abandoned_in_sl += 1

    def sl_perf(self) -> tuple[str, str]:
        s = self.stats
        perf = 100.0 * s.completed_in_sl / s.completed if s.completed else 0.0
        both = s.completed + s.abandoned
        perf2 = 100.0 * (s.completed_in_sl + s.abandoned_in_sl) / both if both else 0.0
        return f"{perf:.1f}", f"{perf2:.1f}"

    def variables(self) -> list[tuple[str, str]]:
        """QUEUENAME ... QUEUESRVLEVELPERF, as set_queue_variables sets them (none without setqueuevar)."""
        if not self.setqueuevar:
            return []
        perf, _ = self.sl_perf()
        s = self.stats
        return [("QUEUENAME", self.name), ("QUEUEMAX", str(self.maxlen)), ("QUEUESTRATEGY", self.strategy),
                ("QUEUECALLS", str(len(self.entries))), ("QUEUEHOLDTIME", str(s.holdtime)),
                ("QUEUETALKTIME", str(s.talktime)), ("QUEUECOMPLETED", str(s.completed)),
                ("QUEUEABANDONED", str(s.abandoned)), ("QUEUESRVLEVEL", str(self.servicelevel)),
                ("QUEUESRVLEVELPERF", perf)]

    def params_item(self) -> list[tuple[str, str]]:
        perf, perf2 = self.sl_perf()
        s = self.stats
        return [("Queue", self.name), ("Max", str(self.maxlen)), ("Strategy", self.strategy),
                ("Calls", str(len(self.entries))), ("Holdtime", str(s.holdtime)), ("TalkTime", str(s.talktime)),
                ("Completed", str(s.completed)), ("Abandoned", str(s.abandoned)),
                ("ServiceLevel", str(self.servicelevel)), ("ServicelevelPerf", perf), ("ServicelevelPerf2", perf2),
                ("Weight", str(self.weight))]

    # members

    def positions(self) -> dict[str, int]:
        return {iface: i for i, iface in enumerate(self.members)}

    def choose(self, entry: Entry, available: list[Member]) -> list[Member]:
        """The member(s) to ring now, from those available, by app_queue's metric."""
        if not available:
            return []
        best = min(m.penalty for m in available)
        group = [m for m in available if m.penalty == best]
        if self.strategy == "ringall":
            return group
        pos = self.positions()
        if self.strategy in ("rrmemory", "rrordered", "linear"):
            start = entry.linpos if self.strategy == "linear" else self.rrpos
            return [min(group, key=lambda m: pos[m.interface] + (0 if pos[m.interface] >= start else 1000))]
        if self.strategy == "leastrecent":
            return [min(group, key=lambda m: (m.last_call, pos[m.interface]))]
        if self.strategy == "fewestcalls":
            return [min(group, key=lambda m: (m.calls_taken, pos[m.interface]))]
        return [random.choice(group)]

    def rang(self, entry: Entry, member: Member) -> None:
        """Remember the member just rung (rrmemory: for the queue, linear: for this caller)."""
        nxt = self.positions().get(member.interface, -1) + 1
        if self.strategy == "linear":
            entry.linpos = nxt
        elif self.strategy in ("rrmemory", "rrordered"):
            self.rrpos = nxt


@dataclass
class DeviceTable:
    """Device states by device name; Custom: devices stay UNKNOWN until set (as in the captures)."""

    states: dict[str, int] = field(default_factory=dict)

    def status(self, state_interface: str) -> int:
        dev = device_name(state_interface)
        default = UNKNOWN if dev.lower().startswith("custom:") else NOT_INUSE
        return self.states.get(dev, default)
