"""Typed AMI events: a frame becomes an immutable event object the rest of the service can trust.

``to_event(frame)`` returns the class registered for the frame's ``Event`` name, or a plain
``AmiEvent`` for the many events nobody here reads. Numeric fields (and the Timestamp) are parsed
and checked here, at once: a value that is not a number raises AmiProtocolError naming the field,
so the protocol drops that event and the link goes on, and a consumer never meets the error. Text
fields are read from the frame when first used (``frame.get``, cached by the frame): most events
are never looked at beyond their name, and cost nothing more.
"""

from __future__ import annotations

import math
import time
from operator import attrgetter
from typing import Callable, ClassVar

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


def known_value(value: str | None) -> str | None:
    """An AMI value, or None where Asterisk says there is none ("" or "<unknown>")."""
    return None if value in (None, "", "<unknown>") else value



def _text(key: str, default: str | None = None, *, alt: str | None = None,
          conv: Callable[[str | None], object] | None = None) -> property:
    """A field read from the frame on first use: ``key`` (or ``alt`` if that is empty), converted."""
    if alt is not None:
        def fget(self):
            return self._frame.get(key) or self._frame.get(alt)
    elif conv is not None:
        def fget(self):
            return conv(self._frame.get(key))
    else:
        def fget(self):
            return self._frame.get(key, default)
    return property(fget, doc=f"The {key} header.")


class AmiEvent:
    """Any AMI event: its name, its frame, and the fields every call event carries. Immutable."""

    __slots__ = ("_name", "_frame", "_timestamp")
    registry: ClassVar[dict[str, type["AmiEvent"]]] = {}
    _numbers: ClassVar[tuple[tuple[str, str], ...]] = ()   # (slot, header) parsed and checked by to_event

    name = property(attrgetter("_name"), doc="The Event header.")
    frame = property(attrgetter("_frame"), doc="The frame this event was read from.")
    timestamp = property(attrgetter("_timestamp"), doc="Asterisk's Timestamp header, or the receive time.")
    channel = _text("Channel")
    uniqueid = _text("Uniqueid")
    linkedid = _text("Linkedid")

    def __init__(self, *args, **kwargs) -> None:
        raise TypeError("AMI events are made by to_event(frame)")

    def _fields(self) -> tuple:
        return (self._name, self._timestamp, self._frame, *(getattr(self, a) for a, _ in self._numbers))

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self._name!r}, timestamp={self._timestamp!r}, frame={self._frame!r})"


def _register(*names: str):
    def deco(cls):
        for name in names:
            AmiEvent.registry[name] = cls
        return cls
    return deco


def _numbers(*fields: tuple[str, str]):
    """Declare the numeric fields of an event class (attribute, header): read-only attributes
    whose value to_event parses and checks at once, so that a bad number drops the event there."""
    def deco(cls):
        for attr, key in fields:
            setattr(cls, attr, property(attrgetter("_" + attr), doc=f"The {key} header, a number."))
        cls._numbers = (*cls._numbers, *(("_" + attr, key) for attr, key in fields))
        return cls
    return deco


@_register("Newchannel")
class Newchannel(AmiEvent):
    __slots__ = ()
    caller_number = _text("CallerIDNum", conv=known_value)
    caller_name = _text("CallerIDName", conv=known_value)


@_register("NewCallerid")
class NewCallerid(Newchannel):
    __slots__ = ()


@_register("Hangup")
@_numbers(("cause", "Cause"))
class Hangup(AmiEvent):
    __slots__ = ("_cause",)
    cause_text = _text("Cause-txt")


@_register("DialBegin")
class DialBegin(AmiEvent):
    """A Dial() from a channel (``Uniqueid``) to a new one (``DestUniqueid``)."""
    __slots__ = ()
    dest_uniqueid = _text("DestUniqueid")
    dest_channel = _text("DestChannel", "")
    dial_string = _text("DialString", "")


@_register("DialEnd")
class DialEnd(DialBegin):
    """The end of a Dial(): ``DialStatus`` ANSWER, NOANSWER, BUSY, CANCEL, CHANUNAVAIL, ..."""
    __slots__ = ()
    dial_status = _text("DialStatus", "")


@_register("VarSet")
class VarSet(AmiEvent):
    __slots__ = ()
    variable = _text("Variable", "")
    value = _text("Value", "")


@_numbers(("position", "Position"))
class QueueCallerEvent(AmiEvent):
    __slots__ = ("_position",)
    queue = _text("Queue", "")
    caller_number = _text("CallerIDNum", conv=known_value)
    caller_name = _text("CallerIDName", conv=known_value)


@_register("QueueCallerJoin")
class QueueCallerJoin(QueueCallerEvent):
    __slots__ = ()


@_register("QueueCallerLeave")
class QueueCallerLeave(QueueCallerEvent):
    __slots__ = ()


@_register("QueueCallerAbandon")
@_numbers(("hold_time", "HoldTime"), ("original_position", "OriginalPosition"))
class QueueCallerAbandon(QueueCallerEvent):
    __slots__ = ("_hold_time", "_original_position")


class AgentEvent(AmiEvent):
    __slots__ = ()
    queue = _text("Queue", "")
    member_name = _text("MemberName")
    interface = _text("Interface")
    dest_channel = _text("DestChannel")


@_register("AgentCalled")
class AgentCalled(AgentEvent):
    __slots__ = ()


@_register("AgentRingNoAnswer")
@_numbers(("ring_time_ms", "RingTime"))   # milliseconds in this event (app_queue)
class AgentRingNoAnswer(AgentEvent):
    __slots__ = ("_ring_time_ms",)


@_register("AgentConnect")
@_numbers(("hold_time", "HoldTime"), ("ring_time", "RingTime"))   # RingTime: seconds in this event (app_queue)
class AgentConnect(AgentEvent):
    __slots__ = ("_hold_time", "_ring_time")


@_register("AgentComplete")
@_numbers(("hold_time", "HoldTime"), ("talk_time", "TalkTime"))
class AgentComplete(AgentEvent):
    __slots__ = ("_hold_time", "_talk_time")
    reason = _text("Reason")


@_register("MixMonitorStart")
class MixMonitorStart(AmiEvent):
    __slots__ = ()


@_register("QueueMemberAdded", "QueueMemberRemoved", "QueueMemberPause", "QueueMemberStatus", "QueueMember")
@_numbers(("status", "Status"))
class QueueMemberEvent(AmiEvent):
    __slots__ = ("_status",)
    queue = _text("Queue", "")
    member_name = _text("MemberName", alt="Name")
    interface = _text("Interface", alt="Location")
    state_interface = _text("StateInterface")
    paused = _text("Paused", conv=lambda v: v == "1")
    paused_reason = _text("PausedReason", conv=lambda v: v or None)


_new = object.__new__
_classes = AmiEvent.registry


def _timestamp(frame: Frame) -> str | bytes | None:
    """The Timestamp value: from a wire frame's bytes with C-level finds (every event has one, so
    this is the hot path), else through the frame. First match ignoring case, as ``Frame.get``."""
    raw = getattr(frame, "_raw", None)
    if raw is None:
        return frame.lookup("Timestamp")
    low = raw.lower()
    if low.startswith(b"timestamp:"):
        return frame.lookup("Timestamp")
    i = low.find(b"\r\ntimestamp:")
    if i < 0:
        return None
    start = i + 12
    if raw[start:start + 1] == b" ":
        start += 1
    end = raw.find(b"\r\n", start)
    return raw[start:end] if end >= 0 else raw[start:]


def to_event(frame: Frame, received_at: float | None = None) -> AmiEvent:
    name = frame.event
    if name is None:
        raise AmiProtocolError("frame has no Event header")
    cls = _classes.get(name, AmiEvent)
    value = _timestamp(frame)
    if value:
        try:
            ts = float(value)
        except ValueError:
            ts = math.nan
        if ts - ts != 0.0:  # "nan", "inf", "1e999": a time no database or clock can hold
            text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
            raise AmiProtocolError(f"{name}: Timestamp is not a number: {text[:40]!r}")
    else:
        ts = received_at if received_at is not None else time.time()
    event = _new(cls)
    event._name = name
    event._frame = frame
    event._timestamp = ts
    if cls._numbers:
        for slot, key in cls._numbers:
            setattr(event, slot, _int(frame, key))
    return event


__all__ = [c.__name__ for c in {*AmiEvent.registry.values()}] + ["AmiEvent", "to_event"]
