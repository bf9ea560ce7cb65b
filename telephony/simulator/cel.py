"""CEL, Cdr and DeviceStateChange events, with the fields and field order of the captures.

The captures were made with ``cel_manager`` and ``cdr_manager`` on: every channel gets CEL
``CHAN_START`` (before its Newchannel), ``ANSWER`` (before its Newstate Up), ``HANGUP`` (Extra:
hangupcause, hangupsource, dialstatus) and ``CHAN_END`` just before its Hangup, and the last
channel of a Linkedid ``LINKEDID_END``; ``BRIDGE_ENTER``/``BRIDGE_EXIT`` (Extra: bridge_id) come
before BridgeEnter/BridgeLeave, ``STREAM_BEGIN``/``STREAM_END`` around sounds and music on hold,
``DTMF`` after DTMFEnd. CEL events are ``call,all``; Cdr events ``cdr,all`` (one per CDR record,
emitted by the caller of ``hangup`` just before the CEL HANGUP). In Asterisk these come from
other threads, so their exact place among the channel events varies from run to run; the
simulator puts them at the places above, every time.

``local_device`` / DeviceStateChange: a ``Local/<exten>@<context>`` device is INUSE while a ``;1``
of that name is up (local_devicestate), and it is published (not cached) at every Newstate and
hang-up of such a channel. Other devices are published on change only (core.set_device_state).
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

from telephony.simulator.bus import CALL, CDR

if TYPE_CHECKING:
    from telephony.simulator.bus import EventBus
    from telephony.simulator.channels import Channel

STATE_NAMES = ("UNKNOWN", "NOT_INUSE", "INUSE", "BUSY", "INVALID", "UNAVAILABLE", "RINGING", "RINGINUSE",
               "ONHOLD")


def event_time(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def extra_json(**values: object) -> str:
    return json.dumps(values, separators=(",", ":"), ensure_ascii=False)


def cel(bus: EventBus, ch: Channel, name: str, extra: str = "", peer: str = "") -> None:
    """One CEL event, showing the channel as CEL's snapshot does at that moment."""
    if ch.dial_app is not None:  # the outgoing half keeps its dial application in CEL snapshots
        app, data = ch.dial_app
    elif ch.gone and ch.runs_pbx:  # the dialplan has ended
        app, data = "", ""
    else:
        app, data = ch.app, ch.appdata
    bus.emit("CEL", CALL, [
        ("EventName", name), ("AccountCode", ch.accountcode), ("CallerIDnum", ch.cid_num),
        ("CallerIDname", ch.cid_name), ("CallerIDani", ch.ani), ("CallerIDrdnis", ""), ("CallerIDdnid", ""),
        ("Exten", ch.exten), ("Context", ch.context), ("Channel", ch.name), ("Application", app),
        ("AppData", data), ("EventTime", event_time(bus.clock.now())), ("AMAFlags", "DOCUMENTATION"),
        ("UniqueID", ch.uniqueid), ("LinkedID", ch.linkedid), ("Userfield", ""), ("Peer", peer),
        ("PeerAccount", ""), ("Extra", extra)])


def hangup_cels(bus: EventBus, ch: Channel, cause: int, linkedid_ends: bool) -> None:
    cel(bus, ch, "HANGUP", extra_json(hangupcause=cause, hangupsource=ch.hangup_source,
                                      dialstatus=ch.dial_status))
    cel(bus, ch, "CHAN_END")
    if linkedid_ends:
        cel(bus, ch, "LINKEDID_END")


def stream(bus: EventBus, ch: Channel, begin: bool, sound: str | None = None, moh_class: str | None = None) -> None:
    if not begin:
        cel(bus, ch, "STREAM_END")
    elif moh_class is not None:
        cel(bus, ch, "STREAM_BEGIN", extra_json(**{"class": moh_class}))
    else:
        cel(bus, ch, "STREAM_BEGIN", extra_json(sound=sound, format="slin", language=ch.language))


def cdr(bus: EventBus, ch: Channel, *, dest: str, dest_context: str, dest_channel: str = "",
        last_app: str = "", last_data: str = "", start: float, answer: float | None, end: float,
        disposition: str | None = None) -> None:
    """One CDR record of ``ch`` (cdr_manager's Cdr event)."""
    duration = max(0, int(end - start))
    billable = max(0, int(end - answer)) if answer is not None else 0
    bus.emit("Cdr", CDR, [
        ("AccountCode", ch.accountcode), ("Source", ch.cid_num), ("Destination", dest),
        ("DestinationContext", dest_context), ("CallerID", f'"{ch.cid_name}" <{ch.cid_num}>'),
        ("Channel", ch.name), ("DestinationChannel", dest_channel), ("LastApplication", last_app),
        ("LastData", last_data), ("StartTime", event_time(start)),
        ("AnswerTime", event_time(answer) if answer is not None else ""), ("EndTime", event_time(end)),
        ("Duration", str(duration)), ("BillableSeconds", str(billable)),
        ("Disposition", disposition or ("ANSWERED" if answer is not None else "NO ANSWER")),
        ("AMAFlags", "DOCUMENTATION"), ("UniqueID", ch.uniqueid), ("UserField", "")])


def device_state(bus: EventBus, device: str, state: int | str) -> None:
    name = state if isinstance(state, str) else (STATE_NAMES[state] if 0 <= state < len(STATE_NAMES) else "UNKNOWN")
    bus.emit("DeviceStateChange", CALL, [("Device", device), ("State", name)])


def local_device(ch: Channel) -> str | None:
    """``Local/1001@agents`` for ``Local/1001@agents-00000001;2``; None for other channels."""
    if not ch.name.startswith("Local/") or ";" not in ch.name:
        return None
    return ch.name.rsplit("-", 1)[0]
