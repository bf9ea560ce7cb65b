"""Queue() for one caller: join, ring members, connect or give up, as app_queue reports it.

How this works: the caller joins (QueueCallerJoin, music on hold) and the loop runs until the
caller hangs up (QueueCallerAbandon + QueueCallerLeave), the max wait passes (the same two,
then QUEUESTATUS=TIMEOUT) or a member answers. When it is the caller's turn (autofill: as many
callers ring at once as there are members free), the queue's strategy picks the member(s);
each is dialled (its channel(s), AgentCalled, DialBegin) and rung for the queue's ``timeout``
(cut at the max wait). No answer: AgentRingNoAnswer (RingTime in ms), DialEnd NOANSWER, the
channels hang up, then ``retry`` seconds before the next try. Answer: DialEnd ANSWER, MOH stop,
QueueCallerLeave, AgentConnect (HoldTime and RingTime in s), a basic bridge with both channels;
then whoever hangs up first (the seat after its talk time, or the citizen) ends it with
AgentComplete (TalkTime, Reason agent|caller), BridgeLeave x2 and BridgeDestroy (and, with the
generated dialplan's option c, QUEUESTATUS=CONTINUE). While they
talk, an AMI transfer (transfer.py) may end it instead: Queue() then returns "transferred"
(blind transfer, Redirect) or the caller stays in this bridge with the new party (attended).
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from telephony.simulator import chanevents as ev
from telephony.simulator import seat_legs, transfer
from telephony.simulator.bus import AGENT
from telephony.simulator.channels import Channel
from telephony.simulator.queue import INUSE, Entry, Member
from telephony.simulator.seat_legs import RingLeg

if TYPE_CHECKING:
    from telephony.simulator.calls import InboundCall

MAX_QUEUE_WAIT = 86_400.0   # sim seconds; a max wait of 0 (none) is bounded by this
MAX_ROUNDS = 100_000
MAX_TALK = 4 * 3600.0


def _secs(duration: float) -> int:
    """Whole seconds as app_queue reports them; rounded, so the sim's own latency (sped up) never
    turns 6.0 s of talk into 7."""
    return max(0, round(duration))


def _number(text: str | None, default: float) -> float:
    try:
        return float(text) if text not in (None, "") else default
    except ValueError:
        return default


class QueueApp:
    def __init__(self, call: InboundCall, name: str, max_wait: float | None = None) -> None:
        self.call = call
        self.max_wait = max_wait  # the Queue() timeout argument; None: HOTLINE_QUEUE_TIMEOUT, else 60 s
        self.core = call.core
        self.bus = call.bus
        self.clock = call.core.clock
        self.q = call.core.queues.get(name)
        self.name = name
        self.seat_name: str | None = None
        self.legs: list[RingLeg] = []
        self.entry: Entry | None = None
        self.winner: RingLeg | None = None
        self.joined = 0.0
        self.talked = 0.0

    def _vars(self, chan: Channel, pairs: list[tuple[str, str]]) -> None:
        for name, value in pairs:
            ev.varset(self.bus, chan, name, value)

    def _agent(self, name: str, member: Member, out: Channel, extra: list[tuple[str, str]]) -> None:
        seat_legs.agent_event(self.bus, self.call.c2, self.name, name, member, out, extra)

    def _queue_event(self, name: str, fields: list[tuple[str, str]]) -> None:
        self.bus.emit(name, AGENT, [*self.call.c2.fields(), ("Queue", self.name), *fields])

    def _durations(self, answered: float = 0.0) -> list[tuple[str, str]]:
        """QUEUEWAIT, DIALEDTIME, ANSWEREDTIME (and their _MS), as Queue() leaves them."""
        now, c2 = self.clock.now(), self.call.c2
        wait, dialed = now - self.joined, now - c2.created
        return [("QUEUEWAIT", str(_secs(wait))), ("QUEUEWAIT_MS", str(int(wait * 1000))),
                ("DIALEDTIME", str(_secs(dialed))), ("DIALEDTIME_MS", str(int(dialed * 1000))),
                ("ANSWEREDTIME", str(_secs(answered))), ("ANSWEREDTIME_MS", str(int(answered * 1000)))]

    async def run(self) -> str:
        c2, q = self.call.c2, self.q
        self._vars(c2, [(v, "") for v in ("ANSWEREDTIME", "ANSWEREDTIME_MS", "DIALEDTIME", "DIALEDTIME_MS",
                                          "QUEUEWAIT", "QUEUEWAIT_MS")])
        if q is None:
            ev.varset(self.bus, c2, "QUEUESTATUS", "UNKNOWN")
            return "no_queue"
        prio = int(_number(self.call.get_var("QUEUE_PRIO") or self.call.get_var("HOTLINE_PRIORITY"), 0))
        max_wait = self.max_wait
        if max_wait is None:
            max_wait = _number(c2.variables.get("HOTLINE_QUEUE_TIMEOUT"), 60.0)
        self.joined = self.clock.now()
        self.entry = Entry(self.call, prio, self.joined)
        position = q.join(self.entry)
        self.core.publish_callers(q)
        self._queue_event("QueueCallerJoin", [("Position", str(position)), ("Count", str(len(q.entries)))])
        ev.moh(self.bus, c2, start=True)
        expire = self.joined + (min(max_wait, MAX_QUEUE_WAIT) if max_wait > 0 else MAX_QUEUE_WAIT)
        try:
            return await self._distribute(expire)
        finally:
            for leg in list(self.legs):
                self._drop(leg, "CANCEL")
            if self.entry in q.entries:
                q.entries.remove(self.entry)
                self.core.publish_callers(q)

    async def _distribute(self, expire: float) -> str:
        q, gone = self.q, self.call.gone
        for _ in range(MAX_ROUNDS):
            if gone.is_set():
                return self._abandon()
            if self.clock.now() >= expire:
                return self._timeout()
            members = self._pick()
            if members:
                outcome = await self._ring(members, expire)
                if outcome == "answered":
                    return await self._connected()
                if outcome == "gone":
                    return self._abandon()
            await self.clock.wait(gone, min(max(q.retry, 0.25), expire - self.clock.now()))
        return self._timeout()

    def _pick(self) -> list[Member]:
        q, entry = self.q, self.entry
        available = [m for m in q.members.values() if self.core.available(q, m)]
        if not available:
            return []
        ahead = 0
        for e in q.entries:
            if e is entry:
                break
            ahead += 0 if e.pending else 1
        if ahead >= (len(available) if q.autofill else 1):
            return []
        return q.choose(entry, available)

    # ringing

    async def _ring(self, members: list[Member], expire: float) -> str:
        now = self.clock.now()
        ring_to = expire - now
        if self.q.timeout > 0:
            ring_to = min(ring_to, self.q.timeout)
        for member in members:
            leg = seat_legs.dial(self.core, self.call, member, self.name)
            self.legs.append(leg)
            self.call.dials.append(leg.cdr)
            self.q.rang(self.entry, member)
        answering = [leg for leg in self.legs if leg.answer_at is not None and leg.answer_at - now <= ring_to]
        first = min(answering, key=lambda leg: leg.answer_at or 0.0) if answering else None
        self.entry.pending = True
        try:
            gone = await self.clock.wait(self.call.gone, (first.answer_at - now) if first else ring_to)
        finally:
            self.entry.pending = False
        if gone:
            return "gone"
        if first is None:
            for leg in list(self.legs):
                self._no_answer(leg, ring_to)
            return "noanswer"
        self.legs.remove(first)
        for leg in list(self.legs):
            self._drop(leg, "CANCEL", cause=26)
        self.winner = first
        return "answered"

    def _drop(self, leg: RingLeg, status: str, cause: int = 0) -> None:
        """A leg that rang and is abandoned: DialEnd, its channels hang up, the seat is free."""
        if leg in self.legs:
            self.legs.remove(leg)
        leg.cdr.end = self.clock.now()
        self.call.c2.dial_status = status
        ev.dial_end(self.bus, self.call.c2, leg.out, status)
        seat_legs.hang_up(self.core, leg, cause)
        self.core.release(leg.member.interface)

    def _no_answer(self, leg: RingLeg, rang: float) -> None:
        ring_ms = int(rang * 1000)  # the ring timeout that ran out (sim s), not the loop's latency
        self._agent("AgentRingNoAnswer", leg.member, leg.out, [("RingTime", str(ring_ms))])
        self._drop(leg, "NOANSWER")

    # connected

    async def _connected(self) -> str:
        leg = self.winner
        assert leg is not None
        call, bus, c2, q, member = self.call, self.bus, self.call.c2, self.q, leg.member
        out, far = leg.out, leg.far
        # the seat answered when its script said so: durations follow the script, not the event
        # loop's latency multiplied by the speed factor
        answered_at = leg.answer_at if leg.answer_at is not None else self.clock.now()
        hold, ring = _secs(answered_at - self.joined), _secs(answered_at - leg.started)
        seat_legs.answer(self.core, c2, leg)
        leg.cdr.answered, leg.connected_at, c2.dial_status = True, answered_at, "ANSWER"
        call.connected, call.seat_name = True, member.name  # kept even if a PBX restart kills the call
        ev.moh(bus, c2, start=False)
        member_vars = [("MEMBERINTERFACE", member.interface), ("MEMBERNAME", member.name),
                       ("MEMBERCALLS", str(member.calls_taken)), ("MEMBERLASTCALL", str(member.last_call)),
                       ("MEMBERPENALTY", str(member.penalty)), ("MEMBERDYNAMIC", "1"), ("MEMBERREALTIME", "0")]
        entry_vars = [("QEHOLDTIME", str(hold)), ("QEORIGINALPOS", str(self.entry.original_position))]
        for pairs in (member_vars if q.setinterfacevar else [], entry_vars if q.setqueueentryvar else [],
                      q.variables()):
            self._vars(c2, pairs)
            self._vars(out, pairs)
        q.record_hold(hold)
        self.core.set_device_state(member.interface, INUSE)
        position, count = q.leave(self.entry)
        self.core.publish_callers(q)
        self._queue_event("QueueCallerLeave", [("Position", str(position)), ("Count", str(count))])
        self._vars(c2, [("QUEUEPOSITION", str(position)), *self._durations()[:2]])
        member.in_call = True
        self._agent("AgentConnect", member, out, [("HoldTime", str(hold)), ("RingTime", str(ring))])
        bridge = str(uuid.uuid4())
        ev.bridge_event(bus, "BridgeCreate", bridge, 0)
        out.bridge_id = c2.bridge_id = bridge
        ev.bridge_event(bus, "BridgeEnter", bridge, 1, out)
        ev.bridge_event(bus, "BridgeEnter", bridge, 2, c2)
        ev.varset(bus, out, "BRIDGEPEER", c2.name)
        ev.varset(bus, c2, "BRIDGEPEER", out.name)
        if far is not None:  # the [agents] dialplan of the captures runs on the seat's ;2
            ev.newexten(bus, far, "PlayTones", "440/1500,0/500", priority=2)
            ev.newexten(bus, far, "Wait", f"{leg.behaviour.talk:g}", priority=3)
        self.seat_name = member.name
        call.seats.append(member.name)
        call.seat_hangup.clear()
        call.hung.clear()
        started = self.clock.now()
        scripted = min(max(leg.behaviour.talk, 0.0), MAX_TALK)
        deadline = started + scripted
        call.in_bridge = (bridge, out)  # what BlindTransfer / Redirect / Atxfer may act on
        try:
            end = await self._talk(deadline)
            while end == "attended":
                end = await transfer.consult(self, leg, bridge, hold, started, deadline)
        finally:
            call.in_bridge = None
        if end in ("blind", "redirect"):
            transfer.leave_for_dialplan(self, leg, bridge, hold, _secs(self.clock.now() - started), end)
            return "transferred"
        if end == "completed":
            self._continue()
            return "answered"
        # a seat that hangs up on schedule talked exactly its scripted time: the event loop's own
        # latency (multiplied by the speed factor) must not turn 6 s of talk into 7
        self.talked = scripted if end == "schedule" else self.clock.now() - started
        talk = _secs(self.talked)
        if end == "caller":
            self._caller_ends(leg, bridge, hold, talk)
        else:
            self._seat_ends(leg, bridge, hold, talk)
        self._vars(c2, q.variables())
        self._continue()
        return "answered"

    def _continue(self) -> None:
        """Queue() option c (the generated dialplan): app_queue ends a call a member answered with
        QUEUESTATUS=CONTINUE, whoever hung up; only a caller still there goes on in the dialplan."""
        if self.core.config.survey:
            ev.varset(self.bus, self.call.c2, "QUEUESTATUS", "CONTINUE")

    async def _talk(self, deadline: float) -> str:
        """Wait out the talk: "caller" (the citizen hung up), "seat" (the Hangup action hit the
        seat), "schedule" (its talk time is over), or the kind of transfer an AMI action asked for
        ("blind", "redirect", "attended")."""
        call = self.call
        for _ in range(MAX_ROUNDS):
            if call.gone.is_set():
                return "caller"
            if call.transfer is not None:
                return call.transfer.kind
            if call.seat_hangup.is_set():
                return "seat"
            left = deadline - self.clock.now()
            if left <= 0:
                return "schedule"
            call.wake.clear()
            await self.clock.wait(call.wake, left)
        return "schedule"

    def _seat_done(self, leg: RingLeg, hold: int, talk: int, reason: str) -> None:
        member = leg.member
        self._agent("AgentComplete", member, leg.out,
                    [("HoldTime", str(hold)), ("TalkTime", str(talk)), ("Reason", reason)])
        member.calls_taken += 1
        self.core.seat_call_done(member.interface)
        self.q.record_complete(hold, talk)
        self.core.release(member.interface)

    def _seat_ends(self, leg: RingLeg, bridge: str, hold: int, talk: int) -> None:
        bus, chans, c2, out, far = self.bus, self.core.channels, self.call.c2, leg.out, leg.far
        if far is not None:
            ev.newexten(bus, far, "StopPlayTones", "", priority=4)
            ev.newexten(bus, far, "Hangup", "", priority=5)
            ev.hangup_request(bus, far, soft=True)
            ev.hangup_request(bus, out)
            far.hangup_source = "dialplan/builtin"
            seat_legs.far_cdr(self.core, leg, "Hangup", "")
            ev.hangup(bus, chans, far, device_state=False)
        else:
            ev.bridge_event(bus, "BridgeLeave", bridge, 1, out)
            ev.hangup(bus, chans, out)
        self._seat_done(leg, hold, talk, "agent")
        if far is not None:
            ev.local_released(bus, chans, far)
        if far is not None:
            ev.varset(bus, out, "BRIDGEPEER", "")
        ev.varset(bus, c2, "BRIDGEPEER", "")
        if far is not None:
            ev.bridge_event(bus, "BridgeLeave", bridge, 1, out)
            ev.hangup(bus, chans, out, device_state=False)
        ev.bridge_event(bus, "BridgeLeave", bridge, 0, c2)
        self._vars(c2, [*self.q.variables(), *self._durations(self.talked)[4:], *self._durations()[2:4]])
        ev.bridge_event(bus, "BridgeDestroy", bridge, 0)
        if far is not None:
            ev.local_released(bus, chans, out)

    def _caller_ends(self, leg: RingLeg, bridge: str, hold: int, talk: int) -> None:
        bus, c2, out = self.bus, self.call.c2, leg.out
        self.call.flush_citizen_hangup()
        self._seat_done(leg, hold, talk, "caller")
        ev.varset(bus, c2, "BRIDGEPEER", "")
        ev.varset(bus, out, "BRIDGEPEER", "")
        ev.bridge_event(bus, "BridgeLeave", bridge, 1, c2)
        ev.bridge_event(bus, "BridgeLeave", bridge, 0, out)
        ev.bridge_event(bus, "BridgeDestroy", bridge, 0)
        if leg.far is not None:
            ev.hangup_request(bus, out)
        seat_legs.hang_up(self.core, leg, 16)
        self._vars(c2, [*self.q.variables(), *self._durations(self.talked)[4:], *self._durations()[2:4]])

    # giving up

    # app_queue's queue_exec after the caller gave up (hang-up) or the max wait passed (timeout):
    # both run record_abandoned (durations, ABANDONED=TRUE, QUEUE* variables, QueueCallerAbandon),
    # then QUEUE* variables again and leave_queue (QueueCallerLeave, QUEUEPOSITION); only a
    # timeout stops the music itself and ends with QUEUESTATUS=TIMEOUT (a hang-up leaves none).

    def _abandon(self) -> str:
        c2 = self.call.c2
        for leg in list(self.legs):
            self._drop(leg, "CANCEL")
        ev.moh(self.bus, c2, start=False)  # the hang-up stops the music on hold first
        hold = _secs(self.clock.now() - self.joined)
        self._durations_abandoned()
        self.call.flush_citizen_hangup()
        self._record_abandon(hold)
        self._vars(c2, self.q.variables())
        self._leave()
        return "abandoned"

    def _timeout(self) -> str:
        bus, c2 = self.bus, self.call.c2
        for leg in list(self.legs):
            self._drop(leg, "NOANSWER")
        hold = _secs(self.clock.now() - self.joined)
        self._durations_abandoned()
        self._record_abandon(hold)
        ev.moh(bus, c2, start=False)
        self._vars(c2, self.q.variables())
        self._leave()
        ev.varset(bus, c2, "QUEUESTATUS", "TIMEOUT")
        return "queue_timeout"

    def _durations_abandoned(self) -> None:
        self._vars(self.call.c2, [*self._durations(), ("ABANDONED", "TRUE")])

    def _record_abandon(self, hold: int) -> None:
        """app_queue's record_abandoned: QUEUE* variables, then QueueCallerAbandon."""
        q, c2 = self.q, self.call.c2
        self._vars(c2, q.variables())
        q.record_abandon(hold)
        self._queue_event("QueueCallerAbandon", [("Position", str(q.position(self.entry))),
                                                 ("OriginalPosition", str(self.entry.original_position)),
                                                 ("HoldTime", str(hold))])

    def _leave(self) -> None:
        position, count = self.q.leave(self.entry)
        self.core.publish_callers(self.q)
        self._queue_event("QueueCallerLeave", [("Position", str(position)), ("Count", str(count))])
        ev.varset(self.bus, self.call.c2, "QUEUEPOSITION", str(position))
