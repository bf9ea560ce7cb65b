"""Transfers of a caller talking to a seat: blind (BlindTransfer), Redirect, attended (Atxfer).

How this works. The AMI actions (transfer_actions.py) only validate and record a
``TransferRequest`` on the call; the call's own task (queue_app.QueueApp._talk) notices it:
- blind / redirect: ``leave_for_dialplan`` takes the caller out of the seat's bridge, the seat
  hangs up, app_queue reports AgentComplete (Reason ``transfer`` for a BlindTransfer, as its
  handle_blind_transfer does; ``agent`` for a Redirect, which app_queue only sees as the member's
  hang-up) and Queue() returns; calls.py then runs the caller at ``<context>,<exten>,1``.
- attended: ``consult`` runs bridge_basic's DTMF attended transfer. The seat leaves the caller's
  bridge for a consultation bridge (the caller hears music on hold), a ``Local/<exten>@<context>``
  pair requested by the seat (so with the seat's Linkedid) dials the target seat
  (``hotline-seats,<n>,1`` = ``Dial(PJSIP/<n>,30)``). When the transferer hangs up (its talk time
  ends, or the Hangup action hits its channel) while the target talks, the bridges merge into the
  caller's (BridgeMerge, AttendedTransfer DestType Bridge, AgentComplete Reason ``transfer``) and
  the caller talks with the target until one of them hangs up. If the target does not answer in
  ``ATXFER_NOANSWER`` s, hangs up, or cannot be dialled, the seat goes back to the caller.
Simplifications: no Local channel optimisation, no CDR records for the transfer's channels; a
transferer that hangs up while the target still rings waits for the answer (no blond transfer);
a caller who hangs up during the consultation ends the target leg too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from telephony.simulator import bridges
from telephony.simulator import chanevents as ev
from telephony.simulator import seat_legs
from telephony.simulator.bus import CALL
from telephony.simulator.channels import RINGING, UP, Channel
from telephony.simulator.queue import INUSE, RINGING as DEV_RINGING

if TYPE_CHECKING:
    from telephony.simulator.queue_app import QueueApp
    from telephony.simulator.seat_legs import RingLeg

TRANSFER_CONTEXT = "hotline-transfer"  # exten <queue>, priority 1: Queue(<queue>,t,,,<max wait>)
SEATS_CONTEXT = "hotline-seats"        # exten <n>, priority 1: Dial(PJSIP/<n>,30)
ATXFER_CODE = "*2"                     # features.conf atxfer (default)
ATXFER_NOANSWER = 15.0                 # features.conf atxfernoanswertimeout (default)
DIAL_TIMEOUT = 30
MAX_ROUNDS = 100_000


@dataclass(frozen=True)
class TransferRequest:
    kind: str        # "blind" | "redirect" | "attended"
    context: str
    exten: str
    transferer: Channel | None = None


def target_interface(core, context: str, exten: str) -> str | None:
    """The seat ``hotline-seats,<exten>`` dials, if the simulator knows it."""
    if context != SEATS_CONTEXT or not exten:
        return None
    iface = f"PJSIP/{exten}"
    return iface if core.is_known_seat(iface) else None


# ------------------------------------------------------------------ blind transfer and Redirect


def leave_for_dialplan(app: QueueApp, leg: RingLeg, bridge: str, hold: int, talk: int, kind: str) -> None:
    bus, c2, out = app.bus, app.call.c2, leg.out
    if kind == "blind":  # app_queue's handle_blind_transfer, on the BlindTransfer message
        app._seat_done(leg, hold, talk, "transfer")
    ev.varset(bus, c2, "BRIDGEPEER", "")
    bridges.leave(bus, bridge, c2)
    bridges.leave(bus, bridge, out)
    if leg.far is not None:
        ev.hangup_request(bus, out)
    seat_legs.hang_up(app.core, leg, 16)
    if kind != "blind":  # app_queue's handle_hangup: the member hung up
        app._seat_done(leg, hold, talk, "agent")
    bridges.destroy(bus, bridge)
    app._vars(c2, app.q.variables())
    request = app.call.transfer
    if request is not None:
        app.call.transfers.append(f"{kind}:{request.exten}")


# ------------------------------------------------------------------ attended transfer


class Target:
    """The consultation call: Local/<exten>@<context> ;1 (in the consultation bridge) and ;2,
    which dials the target seat's device channel; both halves bridged in a Dial bridge."""

    def __init__(self, app: QueueApp, transferer: Channel, context: str, exten: str) -> None:
        self.app, self.core, self.bus = app, app.core, app.bus
        self.one, self.two = self.core.channels.local_pair(exten, context, transferer.linkedid)
        self.one.owner = self.two.owner = app.call
        self.context, self.exten = context, exten
        self.iface = target_interface(self.core, context, exten)
        self.dev: Channel | None = None
        self.dial_bridge: str | None = None
        self.answered_at: float | None = None
        self.engaged = False

    def channels(self) -> list[Channel]:
        return [c for c in (self.one, self.two, self.dev) if c is not None]

    def start(self, transferer: Channel, consultation: str) -> None:
        bus, one, two = self.bus, self.one, self.two
        self.core.channels.processed += 1
        ev.newchannel(bus, one)
        ev.newchannel(bus, two)
        ev.varset(bus, one, "TRANSFERERNAME", transferer.name)
        ev.varset(bus, one, "ATTENDEDTRANSFER", transferer.name)
        ev.newcallerid(bus, one, transferer.cid_num, transferer.cid_name)
        two.conn_num, two.conn_name = transferer.cid_num, transferer.cid_name
        ev.newcallerid(bus, two, transferer.cid_num, transferer.cid_name)
        ev.local_bridge(bus, one, two, optimize=False)
        bridges.enter(bus, consultation, one)
        if self.iface is None:
            return
        ev.newexten(bus, two, "Dial", f"{self.iface},{DIAL_TIMEOUT}", priority=1)
        dev = self.core.channels.device(self.iface, two.linkedid, "default", "s")
        dev.owner = self.app.call
        self.dev = dev
        self.core.channels.processed += 1
        ev.newchannel(bus, dev)
        ev.newcallerid(bus, dev, two.cid_num, two.cid_name)
        ev.dial_begin(bus, two, dev, self.iface.split("/", 1)[1])
        self.core.engage(self.iface)
        self.engaged = True
        ev.newstate(bus, dev, RINGING)
        ev.newstate(bus, two, RINGING)
        ev.newstate(bus, one, RINGING)
        self.core.set_device_state(self.iface, DEV_RINGING)

    def answer(self) -> None:
        bus, one, two, dev = self.bus, self.one, self.two, self.dev
        assert dev is not None and self.iface is not None
        self.answered_at = self.core.clock.now()
        ev.newstate(bus, dev, UP)
        ev.dial_end(bus, two, dev, "ANSWER")
        ev.newstate(bus, two, UP)
        ev.newstate(bus, one, UP)
        self.core.set_device_state(self.iface, INUSE)
        self.dial_bridge = bridges.create(bus)
        bridges.enter(bus, self.dial_bridge, two)
        bridges.enter(bus, self.dial_bridge, dev)
        ev.varset(bus, two, "BRIDGEPEER", dev.name)
        ev.varset(bus, dev, "BRIDGEPEER", two.name)

    def hang_up(self, by_target: bool) -> None:
        """The whole target side goes: device, Dial bridge, ;2, then ;1 out of whichever bridge."""
        bus, chans = self.bus, self.core.channels
        dev, two, one = self.dev, self.two, self.one
        if dev is not None and not dev.gone and self.answered_at is None:
            ev.dial_end(bus, two, dev, "NOANSWER" if by_target else "CANCEL")
        if self.dial_bridge is not None:
            first, second = (dev, two) if by_target else (two, dev)
            for ch in (first, second):
                if ch is not None and not ch.gone:
                    bridges.leave(bus, self.dial_bridge, ch)
            bridges.destroy(bus, self.dial_bridge)
            self.dial_bridge = None
        for ch in ((dev, two) if by_target else (two, dev)):
            if ch is not None and not ch.gone:
                ev.hangup(bus, chans, ch)
        if one.bridge_id:
            bridges.leave(bus, one.bridge_id, one)
        ev.hangup(bus, chans, one)
        if self.engaged and self.iface is not None:
            self.engaged = False
            self.core.release(self.iface)


def _hung(app: QueueApp, channels: list[Channel | None]) -> bool:
    return any(c is not None and c in app.call.hung for c in channels)


async def _ring(app: QueueApp, target: Target) -> str:
    """Until the target answers ("answered"), fails ("fail") or the caller hangs up ("caller")."""
    call, clock = app.call, app.clock
    if target.dev is None:
        return "fail"
    behaviour = app.core.behaviour(target.iface or "")
    now = clock.now()
    timeout = min(ATXFER_NOANSWER, DIAL_TIMEOUT)
    answer_at = now + max(0.0, behaviour.answer_after) if behaviour.answers else None
    if answer_at is not None and answer_at - now > timeout:
        answer_at = None
    give_up = now + timeout
    for _ in range(MAX_ROUNDS):
        if call.gone.is_set():
            return "caller"
        if _hung(app, target.channels()):
            return "fail"
        now = clock.now()
        if answer_at is not None and now >= answer_at:
            return "answered"
        if answer_at is None and now >= give_up:
            return "fail"
        call.wake.clear()
        await clock.wait(call.wake, (answer_at if answer_at is not None else give_up) - now)
    return "fail"


async def _consult_talk(app: QueueApp, leg: RingLeg, target: Target, deadline: float) -> str:
    """The seat talks with the target: "complete" when the seat hangs up, "fail" when the target
    does, "caller" when the caller does."""
    call, clock = app.call, app.clock
    target_end = (target.answered_at or clock.now()) + max(0.0, app.core.behaviour(target.iface or "").talk)
    for _ in range(MAX_ROUNDS):
        if call.gone.is_set():
            return "caller"
        if _hung(app, target.channels()):
            return "fail"
        if _hung(app, [leg.out, leg.far]):
            return "complete"
        now = clock.now()
        if now >= deadline:
            return "complete"
        if now >= target_end:
            return "fail"
        call.wake.clear()
        await clock.wait(call.wake, min(deadline, target_end) - now)
    return "complete"


def _rebridge(app: QueueApp, leg: RingLeg, bridge: str, consultation: str) -> None:
    """The transfer did not happen: the seat goes back to the caller, the music stops."""
    bus, call, out = app.bus, app.call, leg.out
    bridges.leave(bus, consultation, out)
    bridges.destroy(bus, consultation)
    ev.moh(bus, call.c2, start=False)
    bridges.enter(bus, bridge, out)
    call.transfer = None
    if not _hung(app, [leg.out, leg.far]):
        call.seat_hangup.clear()
    call.hung.clear()


def _attended_event(app: QueueApp, leg: RingLeg, bridge: str, consultation: str, target: Target) -> None:
    bus, out = app.bus, leg.out
    bus.emit("AttendedTransfer", CALL, [
        ("Result", "Success"), *out.fields("OrigTransferer"), *bridges.snapshot(bus, bridge, "Orig"),
        *out.fields("SecondTransferer"), *bridges.snapshot(bus, consultation, "Second"),
        *app.call.c2.fields("Transferee"), *target.one.fields("TransferTarget"), ("IsExternal", "No"),
        ("DestType", "Bridge"), ("DestBridgeUniqueid", bridge)])


def _complete(app: QueueApp, leg: RingLeg, bridge: str, consultation: str, target: Target, hold: int,
              talk: int) -> None:
    """bridge_basic's complete_enter: merge the consultation bridge into the caller's, kicking the
    transferer; AttendedTransfer; app_queue's AgentComplete (transfer); the transferer hangs up."""
    bus, call, c2, out = app.bus, app.call, app.call.c2, leg.out
    bus.emit("BridgeMerge", CALL, [*bridges.snapshot(bus, bridge, "To"), *bridges.snapshot(bus, consultation, "From")])
    bridges.leave(bus, consultation, out)
    bridges.leave(bus, consultation, target.one)
    bridges.enter(bus, bridge, target.one)
    bridges.destroy(bus, consultation)
    ev.moh(bus, c2, start=False)
    ev.varset(bus, c2, "BRIDGEPEER", target.one.name)
    ev.varset(bus, target.one, "BRIDGEPEER", c2.name)
    _attended_event(app, leg, bridge, consultation, target)
    app._seat_done(leg, hold, talk, "transfer")
    if leg.far is not None:
        ev.hangup_request(bus, out)
    seat_legs.hang_up(app.core, leg, 16)
    call.transfers.append(f"attended:{target.exten}")
    call.seats.append(target.iface or target.exten)
    call.transfer = None
    call.seat_hangup.clear()
    call.hung.clear()


async def _after_transfer(app: QueueApp, bridge: str, target: Target) -> None:
    """The caller talks with the target until one hangs up; then both bridges dissolve."""
    call, clock, bus, c2 = app.call, app.clock, app.bus, app.call.c2
    target_end = (target.answered_at or clock.now()) + max(0.0, app.core.behaviour(target.iface or "").talk)
    by_caller = False
    for _ in range(MAX_ROUNDS):
        if call.gone.is_set():
            by_caller = True
            break
        now = clock.now()
        if _hung(app, target.channels()) or now >= target_end:
            break
        call.wake.clear()
        await clock.wait(call.wake, target_end - now)
    if by_caller:
        call.flush_citizen_hangup()
        ev.varset(bus, c2, "BRIDGEPEER", "")
        bridges.leave(bus, bridge, c2)
        target.hang_up(by_target=False)
    else:
        target.hang_up(by_target=True)
        ev.varset(bus, c2, "BRIDGEPEER", "")
        bridges.leave(bus, bridge, c2)
    bridges.destroy(bus, bridge)
    app._vars(c2, app.q.variables())


async def consult(app: QueueApp, leg: RingLeg, bridge: str, hold: int, started: float, deadline: float) -> str:
    """Run one attended transfer; "completed" when it happened and the call is over, else what
    ended the talk after the seat came back (QueueApp._talk's values)."""
    call, bus, out = app.call, app.bus, leg.out
    request = call.transfer
    assert request is not None
    for digit in ATXFER_CODE + request.exten:  # the queued DTMF the seat's channel reads
        ev.dtmf(bus, out, digit)
    bridges.leave(bus, bridge, out)
    ev.moh(bus, call.c2, start=True)
    consultation = bridges.create(bus)
    bridges.enter(bus, consultation, out)
    target = Target(app, out, request.context, request.exten)
    target.start(out, consultation)
    outcome = await _ring(app, target)
    if outcome == "answered":
        target.answer()
        outcome = await _consult_talk(app, leg, target, deadline)
    if outcome == "complete":
        _complete(app, leg, bridge, consultation, target, hold, round(app.clock.now() - started))
        await _after_transfer(app, bridge, target)
        return "completed"
    target.hang_up(by_target=outcome == "fail")
    _rebridge(app, leg, bridge, consultation)
    return await app._talk(deadline)
