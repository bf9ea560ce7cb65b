"""Typed AMI events: a frame becomes a frozen dataclass the rest of the service can trust.

``to_event(frame)`` returns the dataclass registered for the frame's ``Event`` name, or a plain
``AmiEvent`` for the many events nobody here reads. Numeric fields are parsed once, here; a value
that is not a number raises AmiProtocolError naming the field (the link goes on).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import ClassVar

from telephony.ami_codec import Frame
from telephony.errors import AmiProtocolError


def _int(frame: Frame, key: str) -> int | None:
    value = frame.get(key)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise AmiProtocolError(f"{frame.event}: {key} is not a number: {value[:40]!r}") from None


def _float(frame: Frame, key: str) -> float | None:
    value = frame.get(key)
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):  # "nan", "inf", "1e999": a time no database or clock can hold
        raise AmiProtocolError(f"{frame.event}: {key} is not a number: {value[:40]!r}")
    return number


@dataclass(frozen=True, slots=True)
class AmiEvent:
    name: str
    frame: Frame
    timestamp: float           # Asterisk's Timestamp header, or the receive time
    channel: str | None
    uniqueid: str | None
    linkedid: str | None

    registry: ClassVar[dict[str, type["AmiEvent"]]] = {}

    @classmethod
    def extra(cls, frame: Frame) -> dict:
        return {}


def _register(name: str):
    def deco(cls):
        AmiEvent.registry[name] = cls
        return cls
    return deco


@_register("Newchannel")
@dataclass(frozen=True, slots=True)
class Newchannel(AmiEvent):
    caller_number: str | None
    caller_name: str | None

    @classmethod
    def extra(cls, frame: Frame) -> dict:
        return {"caller_number": _cid(frame.get("CallerIDNum")), "caller_name": _cid(frame.get("CallerIDName"))}


@_register("NewCallerid")
@dataclass(frozen=True, slots=True)
class NewCallerid(Newchannel):
    pass


@_register("Hangup")
@dataclass(frozen=True, slots=True)
class Hangup(AmiEvent):
    cause: int | None
    cause_text: str | None

    @classmethod
    def extra(cls, frame: Frame) -> dict:
        return {"cause": _int(frame, "Cause"), "cause_text": frame.get("Cause-txt")}


@_register("VarSet")
@dataclass(frozen=True, slots=True)
class VarSet(AmiEvent):
    variable: str
    value: str

    @classmethod
    def extra(cls, frame: Frame) -> dict:
        return {"variable": frame.get("Variable", ""), "value": frame.get("Value", "")}


@dataclass(frozen=True, slots=True)
class QueueCallerEvent(AmiEvent):
    queue: str
    position: int | None
    caller_number: str | None
    caller_name: str | None

    @classmethod
    def extra(cls, frame: Frame) -> dict:
        return {
            "queue": frame.get("Queue", ""),
            "position": _int(frame, "Position"),
            "caller_number": _cid(frame.get("CallerIDNum")),
            "caller_name": _cid(frame.get("CallerIDName")),
        }


@_register("QueueCallerJoin")
@dataclass(frozen=True, slots=True)
class QueueCallerJoin(QueueCallerEvent):
    pass


@_register("QueueCallerLeave")
@dataclass(frozen=True, slots=True)
class QueueCallerLeave(QueueCallerEvent):
    pass


@_register("QueueCallerAbandon")
@dataclass(frozen=True, slots=True)
class QueueCallerAbandon(QueueCallerEvent):
    hold_time: int | None
    original_position: int | None

    @classmethod
    def extra(cls, frame: Frame) -> dict:
        return {**QueueCallerEvent.extra(frame), "hold_time": _int(frame, "HoldTime"),
                "original_position": _int(frame, "OriginalPosition")}


@dataclass(frozen=True, slots=True)
class AgentEvent(AmiEvent):
    queue: str
    member_name: str | None
    interface: str | None
    dest_channel: str | None

    @classmethod
    def extra(cls, frame: Frame) -> dict:
        return {"queue": frame.get("Queue", ""), "member_name": frame.get("MemberName"),
                "interface": frame.get("Interface"), "dest_channel": frame.get("DestChannel")}


@_register("AgentCalled")
@dataclass(frozen=True, slots=True)
class AgentCalled(AgentEvent):
    pass


@_register("AgentRingNoAnswer")
@dataclass(frozen=True, slots=True)
class AgentRingNoAnswer(AgentEvent):
    ring_time_ms: int | None  # milliseconds in this event (app_queue)

    @classmethod
    def extra(cls, frame: Frame) -> dict:
        return {**AgentEvent.extra(frame), "ring_time_ms": _int(frame, "RingTime")}


@_register("AgentConnect")
@dataclass(frozen=True, slots=True)
class AgentConnect(AgentEvent):
    hold_time: int | None
    ring_time: int | None     # seconds in this event (app_queue)

    @classmethod
    def extra(cls, frame: Frame) -> dict:
        return {**AgentEvent.extra(frame), "hold_time": _int(frame, "HoldTime"), "ring_time": _int(frame, "RingTime")}


@_register("AgentComplete")
@dataclass(frozen=True, slots=True)
class AgentComplete(AgentEvent):
    hold_time: int | None
    talk_time: int | None
    reason: str | None

    @classmethod
    def extra(cls, frame: Frame) -> dict:
        return {**AgentEvent.extra(frame), "hold_time": _int(frame, "HoldTime"),
                "talk_time": _int(frame, "TalkTime"), "reason": frame.get("Reason")}


@_register("MixMonitorStart")
@dataclass(frozen=True, slots=True)
class MixMonitorStart(AmiEvent):
    pass


@dataclass(frozen=True, slots=True)
class QueueMemberEvent(AmiEvent):
    queue: str
    member_name: str | None
    interface: str | None
    state_interface: str | None
    paused: bool
    paused_reason: str | None
    status: int | None

    @classmethod
    def extra(cls, frame: Frame) -> dict:
        return {"queue": frame.get("Queue", ""), "member_name": frame.get("MemberName") or frame.get("Name"),
                "interface": frame.get("Interface") or frame.get("Location"),
                "state_interface": frame.get("StateInterface"), "paused": frame.get("Paused") == "1",
                "paused_reason": frame.get("PausedReason") or None, "status": _int(frame, "Status")}


for _name in ("QueueMemberAdded", "QueueMemberRemoved", "QueueMemberPause", "QueueMemberStatus", "QueueMember"):
    AmiEvent.registry[_name] = QueueMemberEvent


def _cid(value: str | None) -> str | None:
    return None if value in (None, "", "<unknown>") else value


def to_event(frame: Frame, received_at: float | None = None) -> AmiEvent:
    name = frame.event
    if name is None:
        raise AmiProtocolError("frame has no Event header")
    cls = AmiEvent.registry.get(name, AmiEvent)
    ts = _float(frame, "Timestamp")
    base = dict(
        name=name,
        frame=frame,
        timestamp=ts if ts is not None else (received_at if received_at is not None else time.time()),
        channel=frame.get("Channel"),
        uniqueid=frame.get("Uniqueid"),
        linkedid=frame.get("Linkedid"),
    )
    return cls(**base, **cls.extra(frame))


__all__ = [c.__name__ for c in {*AmiEvent.registry.values()}] + ["AmiEvent", "to_event"]
