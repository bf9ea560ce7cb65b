"""A callback Originate's dialplan: the seat answered, now ``hotline-callback,<number>,1`` runs.

How this works (the dialplan the simulator assumes, for the service's config to generate):
  [hotline-callback]
  exten => _X.,1,MixMonitor(${UNIQUEID}.wav,b)
   same => n,Dial(PJSIP/${EXTEN}@hotline-trunk,30)
   same => n,Hangup()
The citizen's channel (``PJSIP/hotline-trunk-<n>``, requested by the seat's channel, so with its
Linkedid) rings; the number's SeatBehaviour (``set_seat_behaviour("<number>", ...)``; default:
answers at once, talks 6 s) decides whether and when it answers and how long it talks. Answered:
both channels in a basic bridge until the citizen's talk time, the seat's, or a Hangup action
ends it. The recording is the seat channel's MixMonitor file.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from telephony.simulator import bridges
from telephony.simulator import chanevents as ev
from telephony.simulator.bus import CALL
from telephony.simulator.channels import RINGING, UP, Channel
from telephony.simulator.wav import finish_file, start_file

if TYPE_CHECKING:
    from telephony.simulator.originate import OriginateCall

log = logging.getLogger("hotline.simulator.callback")

CALLBACK_CONTEXT = "hotline-callback"
TRUNK = "hotline-trunk"
DIAL_TIMEOUT = 30.0
MAX_TALK = 4 * 3600.0


async def _recording(oc: OriginateCall, out: Channel) -> Path:
    bus = oc.bus
    ev.newexten(bus, out, "MixMonitor", f"{out.uniqueid}.wav,b", priority=1)
    path = oc.core.config.recordings_dir / f"{out.uniqueid}.wav"
    ev.varset(bus, out, "MIXMONITOR_FILENAME", str(path))
    try:
        await asyncio.to_thread(start_file, path)
    except OSError as exc:
        log.warning("simulator: cannot create recording %s: %s", path, exc)
    bus.emit("MixMonitorStart", CALL, out.fields())
    return path


def dial_trunk(oc: OriginateCall, out: Channel):
    """The callback dialplan's Dial of the citizen through the trunk: the Newexten, the trunk
    channel and its DialBegin; the channel, ringing from here."""
    core, bus, number = oc.core, oc.bus, out.exten
    ev.newexten(bus, out, "Dial", f"PJSIP/{number}@{TRUNK},{DIAL_TIMEOUT:g}", priority=2)
    callee = core.channels.device(f"PJSIP/{TRUNK}", out.linkedid, "default", number)
    callee.owner = oc
    oc.channels.append(callee)
    core.channels.processed += 1
    callee.cid_num, callee.conn_num, callee.conn_name = number, out.cid_num, out.cid_name
    ev.newchannel(bus, callee)
    ev.dial_begin(bus, out, callee, f"{number}@{TRUNK}")
    return callee


async def dial_citizen(oc: OriginateCall, out: Channel, seat_until: float) -> tuple[bool, int, Path]:
    """Run the callback dialplan on the answered seat channel: (citizen answered, talk s, file)."""
    core, bus, clock, number = oc.core, oc.bus, oc.core.clock, out.exten
    out.runs_pbx = True
    path = await _recording(oc, out)
    rec_start = clock.now()
    callee = dial_trunk(oc, out)
    behaviour = core.behaviour(number)
    answers = behaviour.answers and behaviour.answer_after <= DIAL_TIMEOUT
    ev.newstate(bus, callee, RINGING)
    hung = await clock.wait(oc.hangup, behaviour.answer_after if answers else DIAL_TIMEOUT)
    answered, talk = False, 0
    if hung or not answers:
        ev.dial_end(bus, out, callee, "CANCEL" if hung else "NOANSWER")
        ev.varset(bus, out, "DIALSTATUS", "CANCEL" if hung else "NOANSWER")
        ev.hangup(bus, core.channels, callee, 16 if hung else 19)
    else:
        answered = True
        ev.newstate(bus, callee, UP)
        ev.newconnectedline(bus, out, number, "")
        ev.dial_end(bus, out, callee, "ANSWER")
        bridge = bridges.create(bus)
        bridges.enter(bus, bridge, out)
        bridges.enter(bus, bridge, callee)
        started = clock.now()
        callee_until = started + min(max(behaviour.talk, 0.0), MAX_TALK)
        await clock.wait(oc.hangup, min(callee_until, seat_until) - started)
        talk = max(0, round(clock.now() - started))
        by_callee = callee in oc.hung or (not oc.hung and callee_until <= seat_until)
        first, second = (callee, out) if by_callee else (out, callee)
        bridges.leave(bus, bridge, first)
        bridges.leave(bus, bridge, second)
        bridges.destroy(bus, bridge)
        ev.hangup(bus, core.channels, callee)
        ev.varset(bus, out, "DIALSTATUS", "ANSWER")
    try:
        await asyncio.to_thread(finish_file, path, clock.now() - rec_start)
    except OSError as exc:
        log.warning("simulator: cannot write recording %s: %s", path, exc)
    ev.newexten(bus, out, "Hangup", "", priority=3)
    return answered, talk, path
