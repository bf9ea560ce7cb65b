"""A queue member being rung: its channel(s), as app_queue dials them, and their end.

``Local/<exten>@<context>[/n]`` members get a Local ;1/;2 pair (app_queue holds the ;1), other
interfaces one device channel (``PJSIP/8001-0000000a``). The seat's SeatBehaviour decides
when (or whether) it answers; until then the channels show Ringing and the member's device
state (QueueMemberStatus for members that follow it) is RINGING.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from telephony.simulator import cel
from telephony.simulator import chanevents as ev
from telephony.simulator.bus import AGENT, EventBus
from telephony.simulator.channels import RINGING, UP, Channel
from telephony.simulator.core import SeatBehaviour
from telephony.simulator.queue import RINGING as DEVICE_RINGING, Member

if TYPE_CHECKING:
    from telephony.simulator.calls import InboundCall
    from telephony.simulator.core import PbxCore


class DialAttempt:
    """One seat dialled by Queue(): a CDR record of the ;2 (NO ANSWER unless it connected)."""

    def __init__(self, out: Channel, start: float) -> None:
        self.out, self.start = out, start
        self.end: float | None = None
        self.answered = False


@dataclass(eq=False)
class RingLeg:
    member: Member
    out: Channel          # the channel app_queue dials: Local ;1, or the device channel
    far: Channel | None   # the Local ;2 (None for a device)
    behaviour: SeatBehaviour
    started: float
    answer_at: float | None  # sim time the seat answers; None: it does not
    cdr: DialAttempt         # the caller's CDR record of this leg
    connected_at: float | None = None


def agent_event(bus: EventBus, caller: Channel, queue: str, name: str, member: Member, out: Channel,
                extra: list[tuple[str, str]]) -> None:
    """AgentCalled / AgentRingNoAnswer / AgentConnect / AgentComplete, fields as in the captures."""
    bus.emit(name, AGENT, [*caller.fields(), *out.fields("Dest"), ("Queue", queue),
                           ("Interface", member.interface), ("MemberName", member.name), *extra])


def dial(core: PbxCore, call: InboundCall, member: Member, queue: str) -> RingLeg:
    bus, chans, c2, iface = core.bus, core.channels, call.c2, member.interface
    behaviour = core.behaviour(iface)
    far: Channel | None = None
    if iface.lower().startswith("local/"):
        spec = iface[6:]
        dest, _, opts = spec.partition("/")
        exten, _, context = dest.partition("@")
        out, far = chans.local_pair(exten, context or "default", call.linkedid)
        chans.processed += 1
        ev.newchannel(bus, out)
        ev.newchannel(bus, far)
        out.cid_num, out.cid_name = c2.cid_num, c2.cid_name
        ev.newexten(bus, out, "AppQueue", "(Outgoing Line)")
        out.ani = c2.cid_num
        ev.newcallerid(bus, out, c2.cid_num, c2.cid_name)
        ev.varset(bus, out, "DIALEDPEERNUMBER", spec)
        ev.varset(bus, far, "DIALEDPEERNUMBER", spec)
        far.conn_num, far.conn_name = c2.cid_num, c2.cid_name
        ev.newcallerid(bus, far, c2.cid_num, c2.cid_name)
        ev.newconnectedline(bus, far, c2.cid_num, c2.cid_name)
        ev.local_bridge(bus, out, far, optimize="n" not in opts)
        far.owner = call
    else:
        out = chans.device(iface, call.linkedid, "default", "s")
        ev.newchannel(bus, out)
        out.ani = c2.cid_num
        ev.newcallerid(bus, out, c2.cid_num, c2.cid_name)
        ev.varset(bus, out, "DIALEDPEERNUMBER", iface.split("/", 1)[-1])
    out.owner = call
    before = (out.exten, out.conn_num, out.conn_name)
    after = (c2.exten, c2.cid_num, c2.cid_name)
    # app_queue gives the seat the caller's exten and connected line: AgentCalled shows them, while
    # DialBegin still carries the snapshot taken before (as answered.ami shows)
    out.exten, out.conn_num, out.conn_name = after
    agent_event(bus, c2, queue, "AgentCalled", member, out, [])
    out.exten, out.conn_num, out.conn_name = before
    ev.dial_begin(bus, c2, out, iface)
    out.exten, out.conn_num, out.conn_name = after
    core.engage(iface)
    now = core.clock.now()
    answer_at = now + max(0.0, behaviour.answer_after) if behaviour.answers else None
    if answer_at is None or answer_at > now:
        if far is not None:
            ev.newstate(bus, far, RINGING)
        ev.newstate(bus, out, RINGING)
        core.set_device_state(iface, DEVICE_RINGING)
    return RingLeg(member, out, far, behaviour, now, answer_at, DialAttempt(out, now))


def answer(core: PbxCore, caller: Channel, leg: RingLeg) -> None:
    """The seat picks up: its channel(s) go Up, DialEnd ANSWER."""
    bus, out, far = core.bus, leg.out, leg.far
    if far is not None:
        ev.newexten(bus, far, "Answer", "", priority=1)
        ev.newstate(bus, far, UP)
    ev.newstate(bus, out, UP)
    if far is not None:
        ev.newexten(bus, out, "AppQueue", "(Outgoing Line)")
    ev.newconnectedline(bus, out, caller.cid_num, caller.cid_name)
    ev.dial_end(bus, caller, out, "ANSWER")


def far_cdr(core: PbxCore, leg: RingLeg, app: str, data: str) -> None:
    """The CDR record of a Local seat's ;2 that answered (unanswered seat legs leave none)."""
    far = leg.far
    if far is not None and leg.connected_at is not None:
        cel.cdr(core.bus, far, dest=far.exten, dest_context=far.context, last_app=app, last_data=data,
                start=far.created, answer=leg.connected_at, end=core.clock.now())


def hang_up(core: PbxCore, leg: RingLeg, cause: int) -> None:
    ev.hangup(core.bus, core.channels, leg.out, cause)
    if leg.far is not None and not leg.far.gone:
        ev.hangup_request(core.bus, leg.far, cause)
        far_cdr(core, leg, "Wait", f"{leg.behaviour.talk:g}")
        ev.hangup(core.bus, core.channels, leg.far, cause)
