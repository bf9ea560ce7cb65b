"""Event fan-out: every event goes, encoded once, to every logged-in AMI session that wants it.

An event is ``Event``, ``Privilege``, ``Timestamp`` (sim clock) then its fields, encoded by the
project codec (which refuses CR, LF and NUL). While an action is being answered the bus holds
events back and lets them out after the response, as Asterisk does (the response to QueueAdd
comes before QueueMemberAdded). An event that cannot be encoded is logged and dropped: one bad
value never stops a call.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Iterable, Iterator, Protocol

from telephony.ami_codec import encode_frame
from telephony.errors import UnsafeValue
from telephony.simulator.clock import SimClock

log = logging.getLogger("hotline.simulator.bus")

CALL, DIALPLAN, AGENT, AGI, DTMF, SYSTEM, SECURITY, CDR = (
    "call,all", "dialplan,all", "agent,all", "agi,all", "dtmf,all", "system,all", "security,all", "cdr,all")


class Sink(Protocol):
    def wants(self, category: str) -> bool: ...

    def send(self, data: bytes) -> None: ...


class EventBus:
    def __init__(self, clock: SimClock) -> None:
        self.clock = clock
        self.sinks: set[Sink] = set()
        self._held: list[tuple[str, bytes]] | None = None
        self.bridges: dict[str, list] = {}  # bridge id -> channels in it (for the CEL Peer field)
        self.silent = False  # a crashed Asterisk says nothing more

    def silence(self) -> None:
        """From now on every event is dropped (the simulated Asterisk is going down)."""
        self.silent = True
        self.sinks.clear()
        self._held = None

    def emit(self, name: str, privilege: str, fields: Iterable[tuple[str, object]] = ()) -> None:
        if self.silent:
            return
        headers = [("Event", name), ("Privilege", privilege), ("Timestamp", self.clock.stamp()), *fields]
        try:
            data = encode_frame(headers)
        except UnsafeValue as exc:
            log.warning("simulator: %s event dropped: %s", name, exc)
            return
        category = privilege.split(",", 1)[0]
        if self._held is not None:
            self._held.append((category, data))
        else:
            self._fan_out(category, data)

    def _fan_out(self, category: str, data: bytes) -> None:
        for sink in list(self.sinks):
            if sink.wants(category):
                sink.send(data)

    @contextmanager
    def held(self) -> Iterator[None]:
        """Hold events emitted inside the block; release them when it ends (not nested)."""
        if self._held is not None:
            yield
            return
        self._held = []
        try:
            yield
        finally:
            held, self._held = self._held, None
            for category, data in held:
                self._fan_out(category, data)
