"""One inbound call, scripted like the captures' hotline dialplan.

How this works (the dialplan the service generates, priorities as in the captures):
  1 NoOp, 2 Answer, 3 Set(CHANNEL(hangup_handler_push)=hotline-hangup,s,1), 4 AGI(agi://.../ivr),
  5 GotoIf, 6 MixMonitor(<;2 uniqueid>.wav), 7 Queue(<HOTLINE_QUEUE or fallback>,t,,,<max wait>),
  8 NoOp(after queue ${QUEUESTATUS}), 9 Hangup.
The two Local channels are created first (``;1`` the citizen, ``;2`` the hotline side that runs
the dialplan). The citizen may hang up at any moment after the answer (``patience``): that
emits SoftHangupRequest ``;1`` / HangupRequest ``;2`` at once and wakes whatever the call is
doing (AGI command, queue wait, talk), which then ends its own way. Every ending goes through
one of two tails that run the hang-up handler and end with the Hangup of ``;2`` (the last event
of the call); the recording is written and closed before that event.

Overflow: a Queue() that timed out (QUEUESTATUS=TIMEOUT) on a queue whose definition names an
``overflow`` queue goes on, as the generated dialplan does, with VarSet HOTLINE_QUEUE (then
HOTLINE_QUEUE_TIMEOUT, HOTLINE_CATEGORY, HOTLINE_OVERFLOWS) and a new Queue() on that queue with
its own max wait; at most one hop per queue that has an overflow (the dialplan's bound), counted
afresh after a transfer. The recording and the call go on; only the queue changes.

The IVR's other endings (the generated dialplan, config/asterisk.py): HOTLINE_CALLBACK_REQUESTED=1
ends the call after the IVR (GotoIf to ``callback``, NoOp, Hangup; outcome ``callback_requested``).
MixMonitor runs before the emergency check, so a 110 call is recorded too. HOTLINE_TRANSFER=110
runs ``Dial(<emergency_dial>,<ring>)`` from the ``;2``: a new channel of the call (Newchannel,
DialBegin, Ringing), which answers and talks as the SeatBehaviour of "110" says, in a basic bridge
with the caller (DialEnd ANSWER ... BridgeLeave, Hangup, DIALSTATUS=ANSWER, Hangup of the caller:
outcome ``emergency_transfer``), or does not answer within the ring time (DialEnd NOANSWER) or
cannot be reached (``refuse_emergency``: no channel, DIALSTATUS=CHANUNAVAIL): then ``Goto(route)``
and the caller goes on to the queue as if the IVR had only named one. A caller who hangs up while
110 rings (DialEnd CANCEL) never reached help: an ``ivr_hangup``, called back like one.

Survey (with the generated dialplan's option c, ``SimConfig.survey``): Queue() that ends after a
seat answered sets QUEUESTATUS=CONTINUE; if the caller is still there (the seat hung up) the
dialplan goes on to ``hotline-survey,s,1``: NoOp, ``AGI(agi://.../survey)`` (a FastAGI session
like the IVR's, ``agi_network_script: survey``, the caller pressing ``ScriptedCaller.survey``,
one key per prompt that listens), Hangup. A caller whose ``survey`` is None hangs up as soon as
the seat has (before the AGI). After a transfer into ``hotline-transfer`` the same happens.

Transfers (transfer.py): a blind transfer (BlindTransfer of the seat's channel) or a Redirect of
the caller's channel ends Queue() with the caller sent to ``hotline-transfer,<queue>,1``, which
runs ``Queue(<queue>,t,,,<max wait>)`` again (then ``NoOp``/``Hangup`` as after the first queue);
an attended transfer (Atxfer) keeps the caller in the first Queue()'s bridge with the new party.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from telephony.simulator import bridges, cel
from telephony.simulator import chanevents as ev
from telephony.simulator.agi_client import AgiDialogue
from telephony.simulator.bus import CALL
from telephony.simulator.caller import Keypad, ScriptedCaller, SimCallResult
from telephony.simulator.channels import RINGING, UP, Channel
from telephony.simulator.queue import DEVICE_STATES
from telephony.simulator.queue_app import MAX_TALK, QueueApp
from telephony.simulator.seat_legs import DialAttempt
from telephony.simulator.transfer import TRANSFER_CONTEXT, TransferRequest
from telephony.simulator.wav import finish_file, start_file

if TYPE_CHECKING:
    from telephony.simulator.core import PbxCore

log = logging.getLogger("hotline.simulator.calls")

INBOUND_CONTEXT, INBOUND_EXTEN = "hotline-inbound", "12345"
SURVEY_CONTEXT = "hotline-survey"   # config/asterisk.py SURVEY_CONTEXT
EMERGENCY_NUMBER = "110"            # the one HOTLINE_TRANSFER the dialplan honours
MAX_TRANSFERS = 20  # queue hops of one call (a transfer loop cannot run for ever)


class InboundCall:
    def __init__(self, core: PbxCore, caller: ScriptedCaller, on_done: Callable[[SimCallResult], None]) -> None:
        self.core = core
        self.bus = core.bus
        self.caller = caller
        self.on_done = on_done
        self.c1, self.c2 = core.channels.local_pair(INBOUND_EXTEN, INBOUND_CONTEXT)
        self.c1.owner = self.c2.owner = self
        self.linkedid = self.c1.uniqueid
        self.gone = asyncio.Event()   # the citizen hung up
        self.dead = asyncio.Event()   # the ;2 channel is hung up (citizen gone, or AGI HANGUP)
        self.wake = asyncio.Event()   # pokes whoever listens for keys or a hang-up
        self.seat_hangup = asyncio.Event()  # the Hangup action hit a seat channel
        self.keys = Keypad(caller.dtmf, caller.dtmf_delay, core.clock.real, self._key_pressed, self.wake)
        self._citizen_hangup_pending = False
        self._ending = False
        self._patience: asyncio.TimerHandle | None = None
        self.outcome = "error"
        self.seat_name: str | None = None
        self.connected = False  # a seat answered
        self.queue: str | None = None
        self.recording: Path | None = None
        self._rec_start = 0.0
        self.answered_at = self.c2.created
        self.dials: list[DialAttempt] = []  # the ;2's CDR records: one per seat dialled
        self.abort_outcome = "cancelled"      # the outcome recorded if the task is cancelled
        self.transfer: TransferRequest | None = None  # asked for by an AMI action, not yet done
        self.in_bridge: tuple[str, Channel] | None = None  # (bridge, seat channel) while a seat talks
        self.hung: set[Channel] = set()       # channels the Hangup action hit
        self.seats: list[str] = []            # every party that talked with the caller
        self.transfers: list[str] = []        # transfers that took effect
        self.emergency: str | None = None     # DIALSTATUS of the Dial() of 110, if the dialplan ran it

    # the citizen

    def _key_pressed(self, key: str) -> None:
        if not self.dead.is_set():
            ev.dtmf(self.bus, self.c2, key)

    def citizen_hangs_up(self) -> None:
        if self._ending or self.gone.is_set() or self.c1.gone:
            return
        ev.newexten(self.bus, self.c1, "Hangup", "", priority=self.c1.priority + 1)
        ev.hangup_request(self.bus, self.c1, soft=True)
        ev.hangup_request(self.bus, self.c2)
        self._citizen_hangup_pending = True
        self.gone.set()
        self.dead.set()
        self.wake.set()

    def flush_citizen_hangup(self) -> None:
        """The Hangup of ;1 after a citizen hang-up, where the captures show it."""
        if self._citizen_hangup_pending:
            self._citizen_hangup_pending = False
            self.c1.hangup_source = "dialplan/builtin"  # the citizen's dialplan ran Hangup()
            self._c1_cdr("Hangup", "")
            ev.hangup(self.bus, self.core.channels, self.c1)

    def _c1_cdr(self, app: str, data: str) -> None:
        c1 = self.c1
        cel.cdr(self.bus, c1, dest=c1.exten, dest_context=c1.context, last_app=app, last_data=data,
                start=c1.created, answer=self.answered_at, end=self.core.clock.now())

    def _c2_cdrs(self, app: str, data: str) -> None:
        """The ;2's CDR records: one per seat dialled (NO ANSWER, or ANSWERED for the one that
        connected, which runs to the hang-up), or one ANSWERED record if no seat was dialled."""
        c2, now = self.c2, self.core.clock.now()
        if not self.dials:
            cel.cdr(self.bus, c2, dest=c2.exten, dest_context=c2.context, last_app=app, last_data=data,
                    start=c2.created, answer=self.answered_at, end=now)
            return
        for n, dial in enumerate(self.dials):
            start = c2.created if n == 0 else dial.start
            end = dial.end if dial.end is not None else now
            cel.cdr(self.bus, c2, dest=c2.exten, dest_context=c2.context, dest_channel=dial.out.name,
                    last_app=app, last_data=data, start=start, answer=max(start, self.answered_at), end=end,
                    disposition="ANSWERED" if dial.answered else "NO ANSWER")

    def hangup_by_pbx(self) -> None:
        """AGI HANGUP (or EXEC Hangup): the ;2 side is hung up; the dialplan ends."""
        if not self.dead.is_set():
            self.dead.set()
            self.wake.set()

    def hangup_action(self, chan: Channel) -> None:
        """The AMI Hangup action on one of this call's channels."""
        if chan in (self.c1, self.c2):
            self.citizen_hangs_up()
        else:
            self.hung.add(chan)
            self.seat_hangup.set()
            self.wake.set()

    def request_transfer(self, request: TransferRequest) -> None:
        """An AMI action moved the caller (or is moving it) elsewhere: the call's script acts on it."""
        self.transfer = request
        self.wake.set()

    # variables (AGI and the Getvar / Setvar actions)

    def get_var(self, name: str) -> str | None:
        c2, up = self.c2, name.upper()
        builtin = {"CALLERID(NUM)": c2.cid_num, "CALLERID(NAME)": c2.cid_name, "UNIQUEID": c2.uniqueid,
                   "CHANNEL": c2.name, "CHANNEL(NAME)": c2.name, "CHANNEL(UNIQUEID)": c2.uniqueid,
                   "CHANNEL(LINKEDID)": c2.linkedid, "CONTEXT": c2.context, "EXTEN": c2.exten,
                   "PRIORITY": str(c2.priority), "LANGUAGE": c2.language, "CHANNEL(LANGUAGE)": c2.language,
                   "EPOCH": str(int(self.core.clock.now())),
                   "CALLERID(ALL)": f'"{c2.cid_name}" <{c2.cid_num}>' if c2.cid_name else c2.cid_num}
        if up in builtin:
            return builtin[up]
        value = c2.variables.get(name.lstrip("_"))
        return value if value is not None else self.core.globals.get(name)

    def set_var(self, name: str, value: str) -> None:
        up = name.upper()
        if up in ("CALLERID(NUM)", "CALLERID(NAME)"):
            num, nm = (value, self.c2.cid_name) if up.endswith("(NUM)") else (self.c2.cid_num, value)
            self.set_callerid(num, nm)
        elif up.startswith("DEVICE_STATE(") and up.endswith(")"):
            self.core.set_device_state(name[13:-1], DEVICE_STATES.get(value.upper(), 0))
        else:
            ev.varset(self.bus, self.c2, name, value)

    def set_callerid(self, num: str, name: str) -> None:
        ev.newcallerid(self.bus, self.c2, num, name)

    # the script

    async def run(self) -> None:
        try:
            await self._script()
        except asyncio.CancelledError:
            self.outcome = self.abort_outcome
            raise
        except Exception:  # noqa: BLE001 - one call's bug must not kill the others
            log.exception("simulator: call %s failed", self.linkedid)
            self.outcome = "error"
            self._emergency_hangup()
        finally:
            self._ending = True
            if self._patience is not None:
                self._patience.cancel()
            self.keys.cancel()
            self.on_done(SimCallResult(self.linkedid, self.caller.number, self.outcome, self.seat_name,
                                       self.recording, self.queue, self.connected, tuple(self.seats),
                                       tuple(self.transfers), self.emergency,
                                       self.c2.variables.get("HOTLINE_SURVEY") or None))

    async def _script(self) -> None:
        self._ring_in()
        c2 = self.c2
        ev.newexten(self.bus, c2, "Set", "CHANNEL(hangup_handler_push)=hotline-hangup,s,1", priority=3)
        ev.hangup_handler(self.bus, c2, run=False)
        if not self.dead.is_set():
            agi = AgiDialogue(self)
            ev.newexten(self.bus, c2, "AGI", agi.url, priority=4)
            status = await agi.run()
            self.flush_citizen_hangup()
            ev.varset(self.bus, c2, "AGISTATUS", status)
        if self.dead.is_set():
            self.outcome = "ivr_hangup"
            await self._end()
            return
        if c2.variables.get("HOTLINE_CALLBACK_REQUESTED") == "1":  # the dialplan's REGEX("^1$")
            ev.newexten(self.bus, c2, "GotoIf", "1?callback", priority=5)
            ev.newexten(self.bus, c2, "NoOp", "Hotline callback requested", priority=c2.priority + 1)
            ev.newexten(self.bus, c2, "Hangup", "", priority=c2.priority + 1)
            self.outcome = "callback_requested"
            await self._end()
            return
        ev.newexten(self.bus, c2, "GotoIf", "0?done", priority=5)
        await self._mixmonitor()
        if self.dead.is_set():
            self.outcome = "ivr_hangup"
            await self._end()
            return
        if c2.variables.get("HOTLINE_TRANSFER") == EMERGENCY_NUMBER and await self._emergency():
            # reached 110; a caller who hung up while 110 rang never got help: a missed call
            self.outcome = "emergency_transfer" if self.emergency == "ANSWER" else "ivr_hangup"
            await self._end()
            return
        queue = self._route()
        route = self.core.routes.get(queue)
        if not c2.variables.get("HOTLINE_QUEUE_TIMEOUT") and route is not None and route.max_wait:
            self._set("HOTLINE_QUEUE_TIMEOUT", str(route.max_wait))  # the dialplan: the queue's max wait
        max_wait = c2.variables.get("HOTLINE_QUEUE_TIMEOUT") or "60"
        if self.core.overflow_bound:
            self._set("HOTLINE_OVERFLOWS", "0")
        ev.newexten(self.bus, c2, "Queue", f"{queue},{self._queue_options},,,{max_wait}", priority=7)
        self.queue = queue
        app: QueueApp | None = QueueApp(self, queue)
        self.outcome = await app.run()
        seat_name = app.seat_name
        transfers = overflows = 0
        while True:
            if self.outcome == "transferred" and transfers < MAX_TRANSFERS:
                transfers, overflows = transfers + 1, 0  # a transfer counts overflow hops afresh
                app = await self._transferred()
            elif self.outcome == "queue_timeout" and overflows < self.core.overflow_bound:
                overflows += 1
                app = self._overflow(overflows)
            else:
                break
            if app is None:
                break
            self.outcome = await app.run()
            seat_name = app.seat_name or seat_name
        if self.outcome in ("queue_timeout", "no_queue"):
            ev.newexten(self.bus, c2, "NoOp", f"after queue {c2.variables.get('QUEUESTATUS', '')}",
                        priority=c2.priority + 1)
            ev.newexten(self.bus, c2, "Hangup", "", priority=c2.priority + 1)
        if self.outcome == "no_queue":
            self.queue = None
        self.seat_name = seat_name
        if self.outcome == "answered" and self.core.config.survey and not self.dead.is_set():
            await self._survey()
        await self._end()

    @property
    def _queue_options(self) -> str:
        """Queue()'s options: t, and c when the dialplan goes on to the survey."""
        return "ct" if self.core.config.survey else "t"

    async def _survey(self) -> None:
        """Queue() returned with QUEUESTATUS=CONTINUE and the caller still there: the seat hung up.
        The dialplan's GotoIf to hotline-survey,s,1: NoOp, AGI(.../survey), Hangup."""
        c2 = self.c2
        if c2.context == INBOUND_CONTEXT:
            ev.newexten(self.bus, c2, "NoOp", f"Hotline queue exit {c2.variables.get('QUEUESTATUS', '')}",
                        priority=c2.priority + 1)
        ev.newexten(self.bus, c2, "GotoIf", f"1?{SURVEY_CONTEXT},s,1", priority=c2.priority + 1)
        if self.caller.survey is None:  # puts the phone down with the seat, before the survey
            self.citizen_hangs_up()
            return
        ev.newexten(self.bus, c2, "NoOp", "Hotline satisfaction survey", context=SURVEY_CONTEXT, exten="s",
                    priority=1)
        self.keys.cancel()
        self.keys = Keypad(self.caller.survey, self.caller.dtmf_delay, self.core.clock.real, self._key_pressed,
                           self.wake, one_per_command=True)
        agi = AgiDialogue(self, "survey")
        ev.newexten(self.bus, c2, "AGI", agi.url, priority=2)
        status = await agi.run()
        self.flush_citizen_hangup()
        ev.varset(self.bus, c2, "AGISTATUS", status)
        if not self.dead.is_set():
            ev.newexten(self.bus, c2, "Hangup", "", priority=3)

    async def _emergency(self) -> bool:
        """HOTLINE_TRANSFER=110: the dialplan's Dial() of the emergency trunk. True when the call is
        over (110 answered, or the caller hung up meanwhile); False when 110 was not reached and
        the dialplan goes on to the queue (Goto(route))."""
        core, bus, c2 = self.core, self.bus, self.c2
        cfg = core.config
        ev.newexten(bus, c2, "GotoIf", "1?emergency", priority=c2.priority + 1)
        ev.newexten(bus, c2, "NoOp", f"Hotline emergency transfer to {EMERGENCY_NUMBER}", priority=c2.priority + 1)
        ev.newexten(bus, c2, "Dial", f"{cfg.emergency_dial},{cfg.emergency_ring:g}", priority=c2.priority + 1)
        tech, _, resource = cfg.emergency_dial.partition("/")
        number, _, endpoint = resource.partition("@")
        if core.emergency_refused:  # the trunk is down: no channel, Dial() gives up at once
            status = "CHANUNAVAIL"
        else:
            status = await self._dial_emergency(f"{tech}/{endpoint or number.split('/')[0]}", number, resource)
        self.emergency = status
        ev.varset(bus, c2, "DIALSTATUS", status)
        if self.dead.is_set():
            return True
        answered = status == "ANSWER"
        ev.newexten(bus, c2, "GotoIf", f"{int(answered)}?emergency_done", priority=c2.priority + 1)
        if answered:
            ev.newexten(bus, c2, "Hangup", "", priority=c2.priority + 1)
            return True
        ev.newexten(bus, c2, "NoOp", f"Hotline {EMERGENCY_NUMBER} not reached {status}", priority=c2.priority + 1)
        ev.newexten(bus, c2, "Goto", "route", priority=c2.priority + 1)
        return False

    async def _until_either_hangs_up(self, callee, until: float) -> None:
        """Sim time passes until ``until``, the caller hanging up or ``callee`` hanging up."""
        clock = self.core.clock
        for _ in range(100_000):
            if self.gone.is_set() or callee in self.hung or clock.now() >= until:
                return
            self.wake.clear()
            await clock.wait(self.wake, until - clock.now())

    async def _dial_emergency(self, device: str, number: str, dialstring: str) -> str:
        """The 110 channel rings, then answers and talks (its SeatBehaviour) or does not: the status."""
        core, bus, c2, clock = self.core, self.bus, self.c2, self.core.clock
        ring = core.config.emergency_ring
        callee = core.channels.device(device, c2.linkedid, "default", number)
        callee.owner = self
        core.channels.processed += 1
        callee.cid_num, callee.cid_name = c2.cid_num, c2.cid_name
        callee.conn_num, callee.conn_name = c2.cid_num, c2.cid_name
        dial = DialAttempt(callee, clock.now())
        self.dials.append(dial)
        ev.newchannel(bus, callee)
        ev.dial_begin(bus, c2, callee, dialstring)
        ev.newstate(bus, callee, RINGING)
        behaviour = core.behaviour(number)
        answers = behaviour.answers and behaviour.answer_after <= ring
        # ringing: until the answer, the ring time, or a hang-up either side
        await self._until_either_hangs_up(callee, clock.now() + (behaviour.answer_after if answers else ring))
        gone = self.gone.is_set()
        if gone or not answers or callee in self.hung:
            status = "CANCEL" if gone else "NOANSWER"
            dial.end = clock.now()
            ev.dial_end(bus, c2, callee, status)
            self.flush_citizen_hangup()
            ev.hangup(bus, core.channels, callee, 16 if gone else 19)
            return status
        dial.answered = True
        ev.newstate(bus, callee, UP)
        ev.newconnectedline(bus, c2, number, "")
        ev.dial_end(bus, c2, callee, "ANSWER")
        bridge = bridges.create(bus)
        bridges.enter(bus, bridge, c2)
        bridges.enter(bus, bridge, callee)
        ev.varset(bus, c2, "BRIDGEPEER", callee.name)
        ev.varset(bus, callee, "BRIDGEPEER", c2.name)
        # the 110 call: until either side hangs up
        await self._until_either_hangs_up(callee, clock.now() + min(max(behaviour.talk, 0.0), MAX_TALK))
        by_caller = self.gone.is_set()
        if by_caller:
            self.flush_citizen_hangup()
        first, second = (c2, callee) if by_caller else (callee, c2)
        ev.varset(bus, c2, "BRIDGEPEER", "")
        bridges.leave(bus, bridge, first)
        bridges.leave(bus, bridge, second)
        bridges.destroy(bus, bridge)
        ev.hangup(bus, core.channels, callee)
        return "ANSWER"

    async def _transferred(self) -> QueueApp | None:
        """The caller left Queue() for ``context,exten,1`` (a blind transfer or Redirect). In the
        ``hotline-transfer`` context an extension named after a queue runs Queue(<queue>); any other
        place has no dialplan in the simulator, so the channel hangs up there."""
        request, self.transfer = self.transfer, None
        c2 = self.c2
        if request is None or request.context != TRANSFER_CONTEXT or request.exten not in self.core.queues:
            self.outcome = "transfer_failed"
            ev.newexten(self.bus, c2, "Hangup", "", context=request.context if request else c2.context,
                        exten=request.exten if request else c2.exten, priority=1)
            return None
        route = self.core.routes.get(request.exten)
        wait = route.max_wait if route is not None else None
        max_wait = str(wait) if wait else c2.variables.get("HOTLINE_QUEUE_TIMEOUT") or "60"
        priority = 1
        if self.core.overflow_bound:  # exten => <queue>,1,Set(HOTLINE_OVERFLOWS=0), n(in_queue),Queue(...)
            ev.newexten(self.bus, c2, "Set", "HOTLINE_OVERFLOWS=0", context=request.context, exten=request.exten,
                        priority=1)
            ev.varset(self.bus, c2, "HOTLINE_OVERFLOWS", "0")
            priority = 2
        ev.newexten(self.bus, c2, "Queue", f"{request.exten},{self._queue_options},,,{max_wait}",
                    context=request.context, exten=request.exten, priority=priority)
        self.queue = request.exten
        return QueueApp(self, request.exten, float(max_wait) if wait else None)

    def _overflow(self, hop: int) -> QueueApp | None:
        """Queue() timed out: the generated dialplan's overflow. If the queue has an overflow
        queue, NoOp, the checks, then Set HOTLINE_QUEUE, HOTLINE_QUEUE_TIMEOUT, HOTLINE_CATEGORY
        (each a VarSet) and the hop count, and Queue() again on the overflow queue (its own max
        wait); None if it has none (the caller is hung up as after any timeout)."""
        c2, source = self.c2, self.queue
        route = self.core.routes.get(source or "")
        target = route.overflow if route is not None else None
        if target is None or target not in self.core.queues:
            return None
        in_transfer = c2.context == TRANSFER_CONTEXT
        if not in_transfer:
            ev.newexten(self.bus, c2, "NoOp", f"after queue {c2.variables.get('QUEUESTATUS', '')}",
                        priority=c2.priority + 1)
        ev.newexten(self.bus, c2, "GotoIf", "0?queue_done", priority=c2.priority + 1)
        ev.newexten(self.bus, c2, "GotoIf", "0?queue_done", priority=c2.priority + 1)
        if not in_transfer:
            ev.newexten(self.bus, c2, "GotoIf", f"1?overflow_{hop}", priority=c2.priority + 1)
            ev.newexten(self.bus, c2, "NoOp", f"Hotline overflow {source} to {target}", priority=c2.priority + 1)
        wait = self.core.routes[target].max_wait or 60
        self._set("HOTLINE_QUEUE", target)
        self._set("HOTLINE_QUEUE_TIMEOUT", str(wait))
        category = self.core.routes[target].category
        if category:
            self._set("HOTLINE_CATEGORY", category)
        self._set("HOTLINE_OVERFLOWS", str(hop))
        ev.newexten(self.bus, c2, "Goto", f"{target},in_queue" if in_transfer else "in_queue",
                    priority=c2.priority + 1)
        options = self._queue_options
        if in_transfer:
            ev.newexten(self.bus, c2, "Queue", f"{target},{options},,,{wait}", exten=target, priority=2)
        else:
            ev.newexten(self.bus, c2, "Queue", f"{target},{options},,,{wait}", priority=7)
        self.queue = target
        return QueueApp(self, target, float(wait))

    def _set(self, name: str, value: str) -> None:
        """Set(name=value) in the dialplan: its Newexten, then the VarSet."""
        ev.newexten(self.bus, self.c2, "Set", f"{name}={value}", priority=self.c2.priority + 1)
        ev.varset(self.bus, self.c2, name, value)

    def _route(self) -> str:
        """The queue, as the generated dialplan picks it: HOTLINE_QUEUE if it names a configured
        queue, else (empty, failed or refused IVR, unknown name) the default queue and category."""
        c2, cfg = self.c2, self.core.config
        queue = c2.variables.get("HOTLINE_QUEUE") or ""
        if queue in self.core.queues:
            return queue
        ev.newexten(self.bus, c2, "Set", f"HOTLINE_QUEUE={cfg.fallback_queue}")
        ev.varset(self.bus, c2, "HOTLINE_QUEUE", cfg.fallback_queue)
        if cfg.fallback_category:
            ev.newexten(self.bus, c2, "Set", f"HOTLINE_CATEGORY={cfg.fallback_category}")
            ev.varset(self.bus, c2, "HOTLINE_CATEGORY", cfg.fallback_category)
        return cfg.fallback_queue

    def _ring_in(self) -> None:
        """The call arrives and is answered (the Originate-like start of every capture)."""
        bus, c1, c2, num, name = self.bus, self.c1, self.c2, self.caller.number, self.caller.name
        self.core.channels.processed += 2
        ev.newchannel(bus, c1)
        ev.newchannel(bus, c2)
        ev.newexten(bus, c1, "AppDial2", "(Outgoing Line)")
        c1.dial_app, c1.ani = ("AppDial2", "(Outgoing Line)"), num
        ev.newcallerid(bus, c1, num, name)
        ev.newconnectedline(bus, c1, num, name)
        c2.conn_num, c2.conn_name = num, name
        ev.newcallerid(bus, c2, num, name)
        ev.newconnectedline(bus, c2, num, name)
        ev.local_bridge(bus, c1, c2, optimize=True)
        ev.dial_begin(bus, None, c1, f"{INBOUND_EXTEN}@{INBOUND_CONTEXT}")
        ev.newexten(bus, c2, "NoOp", "hotline inbound", priority=1)
        ev.newexten(bus, c2, "Answer", "", priority=2)
        ev.newstate(bus, c2, UP)
        ev.newstate(bus, c1, UP)
        ev.dial_end(bus, None, c1, "ANSWER")
        ev.newexten(bus, c1, "Answer", "", context="caller-bot", exten="s", priority=1)
        self.answered_at = self.core.clock.now()
        if self.caller.patience is not None:
            loop = asyncio.get_running_loop()
            self._patience = loop.call_later(self.core.clock.real(self.caller.patience), self.citizen_hangs_up)

    async def _mixmonitor(self) -> None:
        c2 = self.c2
        ev.newexten(self.bus, c2, "MixMonitor", f"{c2.uniqueid}.wav", priority=6)
        path = self.core.config.recordings_dir / f"{c2.uniqueid}.wav"
        ev.varset(self.bus, c2, "MIXMONITOR_FILENAME", str(path))
        self.recording = path
        try:
            await asyncio.to_thread(start_file, path)
        except OSError as exc:
            log.warning("simulator: cannot create recording %s: %s", path, exc)
        self._rec_start = self.core.clock.now()  # the audio starts with MixMonitorStart, not before
        self.bus.emit("MixMonitorStart", CALL, c2.fields())

    async def _end(self) -> None:
        """The hang-up handler on ;2, the Hangup of ;1 if it is still up, the recording, Hangup ;2."""
        self._ending = True
        bus, c1, c2 = self.bus, self.c1, self.c2
        self.flush_citizen_hangup()
        saved = (c2.context, c2.exten, c2.priority)
        last_app = (c2.app, c2.appdata)
        ev.hangup_request(bus, c2, soft=True)
        ev.hangup_handler(bus, c2, run=True)
        ev.varset(bus, c2, "LOCAL(ARGC)", "0")
        ev.newexten(bus, c2, "NoOp", "hangup handler 16", context="hotline-hangup", exten="s", priority=1)
        ev.newexten(bus, c2, "Return", "", priority=2)
        ev.varset(bus, c2, "ARGC", "")
        ev.varset(bus, c2, "GOSUB_RETVAL", "")
        c2.context, c2.exten, c2.priority = saved
        c1_at_end = not c1.gone
        if c1_at_end:
            ev.hangup_request(bus, c1)
            ev.hangup_request(bus, c1, soft=True)
            self._c1_cdr("Wait", f"{self.caller.patience:g}" if self.caller.patience is not None else "")
            ev.hangup(bus, self.core.channels, c1, device_state=False)
        if self.recording is not None:
            seconds = self.core.clock.now() - self._rec_start
            try:
                await asyncio.to_thread(finish_file, self.recording, seconds)
            except OSError as exc:
                log.warning("simulator: cannot write recording %s: %s", self.recording, exc)
        self._c2_cdrs(*last_app)
        ev.hangup(bus, self.core.channels, c2)
        if c1_at_end:  # both halves' device states come out once the ;2 is gone (as answered.ami)
            ev.local_released(bus, self.core.channels, c1)

    def _emergency_hangup(self) -> None:
        """After a bug: hang up what is left so the service does not wait for ever."""
        for chan in list(self.core.channels.live.values()):
            if chan.owner is self and chan not in (self.c1, self.c2):
                ev.hangup(self.bus, self.core.channels, chan)
        ev.hangup(self.bus, self.core.channels, self.c1)
        ev.hangup(self.bus, self.core.channels, self.c2)
