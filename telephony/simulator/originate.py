"""The Originate action: ring a seat, connect it to a dialplan target, report OriginateResponse.

How this works (originate_callback.ami): the channel named by ``Channel`` is created and rung;
``Local/<exten>@<context>[/n]`` gives a ;1/;2 pair (an unknown context fails at once, Reason 0,
as the capture's ``no-such-context``), ``<Tech>/<resource>`` one device channel (only for
seats the simulator knows: queue members or interfaces with a seat behaviour; others fail as
an unknown endpoint would). The seat answers after its ``answer_after`` (Reason 4) unless the
Originate Timeout comes first (Reason 3). An answered seat runs ``Context,Exten,Priority`` (or
``Application``) and hangs up after its talk time, or earlier on a Hangup action. With
``Async: true`` the action answers at once and OriginateResponse (same ActionID) reports the
outcome; otherwise the response waits for it.

Two targets do more (each its own module): ``Context: hotline-callback`` dials the citizen
whose number is the Exten (callback.py: the leader or operator callback; a number whose
behaviour is a ``BusyLine`` is busy: DialEnd BUSY, VarSet DIALSTATUS BUSY, cause 17), and
``Application: ChanSpy`` spies on a seat's channel (spy.py: supervisor listen / whisper /
barge). Every Originate leaves a SimOriginateResult (``core.on_originate``, kept by
PbxSimulator.originates).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

from telephony.simulator import chanevents as ev
from telephony.simulator import spy
from telephony.simulator.callback import CALLBACK_CONTEXT, _recording, dial_citizen, dial_trunk
from telephony.simulator.caller import SimOriginateResult
from telephony.simulator.bus import CALL
from telephony.simulator.channels import RINGING, UNKNOWN, UP, Channel
from telephony.simulator.core import SeatBehaviour
from telephony.simulator.queue import INUSE, RINGING as DEV_RINGING
from telephony.simulator.wav import finish_file

if TYPE_CHECKING:
    from telephony.simulator.core import PbxCore

KNOWN_CONTEXTS = frozenset({"agents", "agents-noanswer", "default", "caller-bot", CALLBACK_CONTEXT})
MAX_TALK = 4 * 3600.0


@dataclass(frozen=True)
class BusyLine(SeatBehaviour):
    """A citizen's line that is busy when a callback dials it (``set_seat_behaviour(number, BusyLine())``)."""

    answers: bool = False


async def dial_busy_citizen(oc: "OriginateCall", out: Channel) -> tuple[bool, int, object]:
    """The callback dialplan against a busy line: Dial ends at once with BUSY (cause 17)."""
    core, bus = oc.core, oc.bus
    out.runs_pbx = True
    path = await _recording(oc, out)
    callee = dial_trunk(oc, out)
    ev.dial_end(bus, out, callee, "BUSY")
    ev.varset(bus, out, "DIALSTATUS", "BUSY")
    ev.hangup(bus, core.channels, callee, 17)
    try:
        await asyncio.to_thread(finish_file, path, 0.0)
    except OSError:
        pass
    ev.newexten(bus, out, "Hangup", "", priority=3)
    return False, 0, path


@dataclass(frozen=True)
class OriginateRequest:
    channel: str
    context: str
    exten: str
    priority: str
    application: str
    data: str
    timeout: float          # sim seconds the seat may ring
    cid_num: str
    cid_name: str
    variables: tuple[tuple[str, str], ...]
    action_id: str | None
    is_async: bool  # only an asynchronous Originate reports OriginateResponse


class OriginateCall:
    def __init__(self, core: PbxCore, req: OriginateRequest) -> None:
        self.core = core
        self.bus = core.bus
        self.req = req
        self.hangup = asyncio.Event()
        self.hung: set[Channel] = set()  # channels the Hangup action hit
        self.channels: list[Channel] = []
        self.answered = False
        self.callee_answered, self.talk_time, self.recording, self.spied = False, 0, None, ()

    def hangup_action(self, chan: Channel) -> None:
        self.hung.add(chan)
        self.hangup.set()

    def _result(self) -> SimOriginateResult:
        r, first = self.req, (self.channels[0] if self.channels else None)
        return SimOriginateResult(r.action_id, first.name if first else "", first.linkedid if first else "",
                                  self.answered, r.application, r.context, r.exten, r.variables,
                                  self.callee_answered, self.talk_time, self.recording, tuple(self.spied))

    def _response(self, ok: bool, reason: int, chan: Channel | None) -> None:
        r = self.req
        if not r.is_async:
            return
        fields = [("ActionID", r.action_id)] if r.action_id else []
        fields += [("Response", "Success" if ok else "Failure"), ("Channel", chan.name if chan else r.channel)]
        fields += ([("Application", r.application), ("Data", r.data)] if r.application
                   else [("Context", r.context), ("Exten", r.exten)])
        fields += [("Reason", str(reason)), ("Uniqueid", chan.uniqueid if chan else UNKNOWN),
                   ("CallerIDNum", (chan.cid_num or UNKNOWN) if chan else UNKNOWN),
                   ("CallerIDName", (chan.cid_name or UNKNOWN) if chan else UNKNOWN)]
        self.bus.emit("OriginateResponse", CALL, fields)

    async def run(self) -> bool:
        """True if the seat answered."""
        try:
            return await self._run()
        finally:
            for chan in self.channels:
                ev.hangup(self.bus, self.core.channels, chan)
            if self.core.on_originate is not None:
                self.core.on_originate(self._result())

    async def _run(self) -> bool:
        r, bus, chans = self.req, self.bus, self.core.channels
        tech, _, resource = r.channel.partition("/")
        far: Channel | None = None
        if tech.lower() == "local":
            dest, _, opts = resource.partition("/")
            exten, _, context = dest.partition("@")
            out, far = chans.local_pair(exten, context or "default")
            self.channels = [out, far]
            ev.newchannel(bus, out)
            ev.newchannel(bus, far)
            ev.newexten(bus, out, "AppDial2", "(Outgoing Line)")
            if context not in KNOWN_CONTEXTS and context not in self._seat_contexts():
                ev.hangup(bus, chans, far, 0)
                self._response(False, 0, None)
                ev.hangup(bus, chans, out, 0)
                return False
            chans.processed += 2
            self._caller_id(out)
            for name, value in r.variables:
                ev.varset(bus, far, name, value)
            far.conn_num, far.conn_name = r.cid_num, r.cid_name
            ev.newcallerid(bus, far, r.cid_num, r.cid_name)
            ev.newconnectedline(bus, far, r.cid_num, r.cid_name)
            ev.local_bridge(bus, out, far, optimize="n" not in opts)
            ev.dial_begin(bus, None, out, resource)
        else:
            if not self.core.is_known_seat(r.channel):
                self._response(False, 0, None)
                return False
            out = chans.device(r.channel, None, r.context or "default", r.exten or "s")
            self.channels = [out]
            chans.processed += 1
            ev.newchannel(bus, out)
            self._caller_id(out)
        for chan in self.channels:
            chan.owner = self
        return await self._ring(out, far)

    def _seat_contexts(self) -> set[str]:
        found = set()
        for iface in [*self.core.seats, *(m for q in self.core.queues.values() for m in q.members)]:
            if iface.lower().startswith("local/") and "@" in iface:
                found.add(iface.split("@", 1)[1].split("/", 1)[0])
        return found

    def _caller_id(self, out: Channel) -> None:
        r, bus = self.req, self.bus
        for name, value in r.variables:
            ev.varset(bus, out, name, value)
        ev.newcallerid(bus, out, r.cid_num, r.cid_name)
        ev.newconnectedline(bus, out, r.cid_num, r.cid_name)

    async def _ring(self, out: Channel, far: Channel | None) -> bool:
        r, bus, core = self.req, self.bus, self.core
        seat = r.channel
        behaviour = core.behaviour(seat)
        core.engage(seat)
        try:
            answers = behaviour.answers and behaviour.answer_after <= r.timeout
            if not answers or behaviour.answer_after > 0:
                ev.newstate(bus, out, RINGING)
                core.set_device_state(seat, DEV_RINGING)
            hung = await core.clock.wait(self.hangup, behaviour.answer_after if answers else r.timeout)
            if hung or not answers:
                if far is not None:
                    ev.dial_end(bus, None, out, "CANCEL" if hung else "NOANSWER")
                self._response(False, 1 if hung else 3, None)
                return False
            if far is not None:
                ev.newexten(bus, far, "Answer", "", priority=1)
                ev.newstate(bus, far, UP)
            ev.newstate(bus, out, UP)
            if far is not None:
                ev.dial_end(bus, None, out, "ANSWER")
            if r.application:
                out.app, out.appdata = r.application, r.data
            else:
                out.context, out.exten = r.context, r.exten
                out.priority = int(r.priority) if r.priority.isdigit() else 1
            core.set_device_state(seat, INUSE)
            self.answered = True
            self._response(True, 4, out)
            until = core.clock.now() + min(max(behaviour.talk, 0.0), MAX_TALK)
            if r.application.lower() == "chanspy":
                self.spied = await spy.chanspy(core, out, r.data, self.hangup, until)
            elif not r.application and r.context == CALLBACK_CONTEXT and far is None:
                dial = dial_busy_citizen(self, out) if isinstance(core.behaviour(out.exten), BusyLine) \
                    else dial_citizen(self, out, until)
                self.callee_answered, self.talk_time, self.recording = await dial
            else:
                await core.clock.wait(self.hangup, until - core.clock.now())
            talk_end = far if far is not None else out
            ev.hangup_request(bus, talk_end, soft=True)
            if far is not None:
                ev.hangup_request(bus, out)
                ev.hangup(bus, core.channels, far)
            ev.hangup(bus, core.channels, out)
            return True
        finally:
            core.release(seat)
