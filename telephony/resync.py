"""What a (re)connect learns from Asterisk, read from action answers without I/O.

How this works: after every AMI login the node runner asks CoreStatus and CoreShowChannels
(through telephony.actions). ``boot_id`` turns CoreStatus into the identity of the running
Asterisk (CoreStartupDate + CoreStartupTime): a different value than at the last login means
Asterisk restarted and every channel the service knew is gone. ``live_channels`` turns the
CoreShowChannel items into LiveChannel records, which the call tracker uses to adopt calls in
progress and to close the calls it holds that no longer exist (CallTracker.resync).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from telephony.ami_codec import Frame
from telephony.errors import AmiProtocolError
from telephony.events import known_value


@dataclass(frozen=True, slots=True)
class LiveChannel:
    """One channel alive in Asterisk, as CoreShowChannel reports it."""

    channel: str
    uniqueid: str
    linkedid: str
    caller_number: str | None
    caller_name: str | None
    application: str | None
    duration_seconds: int | None   # how long the channel has existed
    bridge_id: str | None
    context: str | None = None
    application_data: str | None = None


def boot_id(core_status: Frame) -> str:
    """The identity of the running Asterisk: its startup date and time."""
    date, time_ = core_status.get("CoreStartupDate"), core_status.get("CoreStartupTime")
    if not date or not time_:
        raise AmiProtocolError("CoreStatus without CoreStartupDate/CoreStartupTime")
    return f"{date} {time_}"


def _duration(text: str | None) -> int | None:
    """CoreShowChannel's Duration is HH:MM:SS."""
    if not text:
        return None
    parts = text.split(":")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise AmiProtocolError(f"CoreShowChannel: Duration is not HH:MM:SS: {text[:20]!r}")
    h, m, s = (int(p) for p in parts)
    return h * 3600 + m * 60 + s



def live_channels(items: Iterable[Frame]) -> list[LiveChannel]:
    """The CoreShowChannel items of a CoreShowChannels answer as LiveChannel records."""
    channels = []
    for item in items:
        if item.event != "CoreShowChannel":
            continue
        uniqueid, linkedid = item.get("Uniqueid"), item.get("Linkedid")
        if not uniqueid or not linkedid:
            raise AmiProtocolError("CoreShowChannel without Uniqueid or Linkedid")
        channels.append(LiveChannel(
            channel=item.get("Channel") or "",
            uniqueid=uniqueid,
            linkedid=linkedid,
            caller_number=known_value(item.get("CallerIDNum")),
            caller_name=known_value(item.get("CallerIDName")),
            application=known_value(item.get("Application")),
            duration_seconds=_duration(item.get("Duration")),
            bridge_id=known_value(item.get("BridgeId")),
            context=known_value(item.get("Context")),
            application_data=known_value(item.get("ApplicationData")),
        ))
    return channels
