"""The call tracker: folds AMI events into calls keyed by Linkedid.

How this works: every event that carries a Linkedid belongs to one call. A channel becomes known
to its call on the first event that names it (normally Newchannel) and leaves it on Hangup. When
the last known channel of a call hangs up the call is final: ``feed`` returns it as a
FinishedCall and forgets it; later events of that Linkedid (CEL, Cdr, a stray VarSet) are dropped.

Asterisk copies the oldest Linkedid onto every channel that joins a bridge (an attended transfer,
a three-way call): the channel then moves to the call of its new Linkedid. A call whose last
channel moved away is final too, at that moment.

Only hotline calls are handed on: a call one of whose channels ran the inbound dialplan context,
the FastAGI IVR, set HOTLINE_* routing variables or waited in a queue. A call that carries
HOTLINE_CALLBACK (the service's own Originate), a seat's consultation call or an Originate that
failed is followed (so its late events stay quiet) but never reported as a citizen's call.

The outcome comes from app_queue's events: AgentConnect means answered; QueueCallerAbandon is an
abandon unless QUEUESTATUS says the queue timed out (app_queue emits QueueCallerAbandon for both);
a QUEUESTATUS like JOINEMPTY without any queue event is a queue failure too; a call that never
reached a queue hung up in the IVR. With a transfer the first answer counts (seat, hold, answer
time) and the talk times add up. Pure state, no I/O: feed it events, read calls out.

Overflow (the dialplan sends a caller whose max wait ran out on to the queue's overflow queue:
QueueCallerAbandon and QueueCallerLeave of queue A, VarSet QUEUESTATUS=TIMEOUT and HOTLINE_QUEUE=B,
QueueCallerJoin of B): still one call, with the outcome of its last queue and queue = B (the one
it was answered in, abandoned or timed out of). A's timeout is a ``queue_timeout`` step of the
timeline at once (not an abandon), followed by a ``queue_overflow`` step (from, to, waited so
far). ``hold_seconds`` is the citizen's whole wait before the first answer (or the end), from
joining the first queue: app_queue's HoldTime restarts in each queue, so the HoldTimes of the
queues left unanswered are added up (a queue left without its QueueCallerAbandon counts by the
events' Timestamps). A 12345 centre's service level (answered within 15 s) is judged on the wait
from entering the queue, and an overflow must not hide a long wait; the milliseconds of dialplan
between two queues are not counted.

The IVR's own endings (the generated dialplan acts on them right after the IVR): with
HOTLINE_TRANSFER=110 the dialplan dials 110 from the channel the IVR ran on; that channel's
DialBegin is the ``emergency_dial`` step and its DialEnd ``emergency_answered`` or
``emergency_failed`` (with the DialStatus). A call that 110 answered and that never reached a
queue is ``emergency_transfer``; one that hung up while 110 rang never reached help and is an
``ivr_hangup`` (a missed call, called back);
one whose 110 dial failed and that went on to the queue has the queue's outcome (the
``queue`` of a transfer is None: the IVR's HOTLINE_QUEUE was only its fallback). With
HOTLINE_CALLBACK_REQUESTED=1 and no queue the call is ``callback_requested``. After a seat hung up
the dialplan runs the satisfaction survey: HOTLINE_SURVEY (one of SURVEY_VALUES, anything else is
ignored) becomes ``survey``.

Resync (after every AMI login): ``mark()`` before asking CoreShowChannels, then ``resync(channels,
mark)``. A listed channel of an unknown Linkedid adopts its call (in progress since before the
link came up); a known call none of whose channels is listed any more, and which had no event
since the mark, is closed with ``closed_by`` set and handed on with what was known. ``export``
and ``restore`` carry open calls over a service restart (the node runner keeps them in Redis);
``take_dirty`` says which calls changed since it was last asked.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Iterable

from telephony import events as ev
from telephony.resync import LiveChannel
from telephony.model import (
    ABANDONED,
    ANSWERED,
    CALLBACK_REQUESTED,
    DROPPED,
    EMERGENCY_NUMBER,
    EMERGENCY_TRANSFER,
    IVR_HANGUP,
    QUEUE_TIMEOUT,
    SURVEY_VALUES,
    FinishedCall,
    RecordingRef,
    TimelineEntry,
)

MAX_TIMELINE = 500
RECENTLY_FINISHED = 20000     # Linkedids remembered after their call ended (late CEL, VarSet, ...)
INBOUND_CONTEXTS = ("hotline-inbound",)  # config/asterisk.py INBOUND_CONTEXT
_IGNORED = {"CEL", "Cdr"}     # duplicates of channel events; the tracker reads the channel events
# QUEUESTATUS values where app_queue, not the caller, ended the wait (set_queue_result in app_queue.c)
_TIMEOUT_STATUSES = {"TIMEOUT", "FULL", "JOINEMPTY", "LEAVEEMPTY", "JOINUNAVAIL", "LEAVEUNAVAIL"}
_NOT_ROUTING = {"HOTLINE_CALLBACK"}  # HOTLINE_* variables that do not mean "this call came in"


@dataclass
class _Call:
    linkedid: str
    started_at: float
    live: set[str] = field(default_factory=set)
    gone: set[str] = field(default_factory=set)
    inbound: bool = False                # ran the hotline flow (see the module comment)
    caller_number: str | None = None
    caller_name: str | None = None
    caller_uniqueid: str | None = None   # the channel that sat in the queue
    answered_at: float | None = None
    ended_at: float | None = None
    queue: str | None = None
    queue_position: int | None = None
    joined: bool = False
    abandoned: bool = False
    seat: str | None = None
    seat_interface: str | None = None
    hold_seconds: int | None = None
    waited_seconds: int = 0              # wait in the queues left before the current one (overflow)
    queue_joined_at: float | None = None  # Timestamp of the current queue's QueueCallerJoin
    queue_left: bool = False             # the current queue's wait ended (its QueueCallerAbandon)
    talk_seconds: int | None = None
    hangup_cause: int | None = None
    hangup_cause_text: str | None = None
    ivr_seen: bool = False
    variables: dict[str, str] = field(default_factory=dict)
    mixmonitor_files: dict[str, str] = field(default_factory=dict)
    recordings: list[RecordingRef] = field(default_factory=list)
    timeline: list[TimelineEntry] = field(default_factory=list)
    last_at: float = 0.0                 # time of the last event seen for this call
    last_seq: int = 0                    # tracker sequence number of that event
    closed_by: str | None = None
    partial: bool = False                # not followed from its first channel (adopted, or joined late)
    transfer_uniqueid: str | None = None  # the channel the IVR set HOTLINE_TRANSFER=110 on
    emergency_at: float | None = None    # its DialBegin: the dialplan dialled 110
    emergency_dest: str | None = None    # the 110 channel's Uniqueid (DestUniqueid)
    emergency_status: str | None = None  # the DialStatus of that dial

    def note(self, at: float, kind: str, **detail: object) -> None:
        if len(self.timeline) < MAX_TIMELINE:
            self.timeline.append(TimelineEntry(at, kind, detail))

    @property
    def is_callback(self) -> bool:
        return bool(self.variables.get("HOTLINE_CALLBACK"))


class CallTracker:
    def __init__(self, node: str, inbound_contexts: tuple[str, ...] = INBOUND_CONTEXTS) -> None:
        self.node = node
        self.inbound_contexts = frozenset(inbound_contexts)
        self.calls: dict[str, _Call] = {}
        self._channel_call: dict[str, str] = {}     # live channel Uniqueid -> Linkedid of its call
        self._finished: OrderedDict[str, None] = OrderedDict()
        self.not_hotline = 0                        # finished calls that were not citizens' calls
        self._seq = 0                               # events applied to calls so far
        self.last_at = 0.0                          # newest event Timestamp seen (Asterisk's clock)
        self._dirty: set[str] = set()               # Linkedids changed since take_dirty()
        self.track_dirty = True                     # a follower does not save open calls: off
        self.closed_quietly: set[str] = set()       # closed, not handed on (not a citizen's call)

    def __len__(self) -> int:
        return len(self.calls)

    def feed(self, event: ev.AmiEvent) -> FinishedCall | None:
        """Apply one event; return the call it finished, if any."""
        if event.name in _IGNORED:
            return None
        if event.timestamp > self.last_at:
            self.last_at = event.timestamp
        linkedid = event.linkedid
        if not linkedid:
            return None
        uid = event.uniqueid
        moved_out: FinishedCall | None = None
        known = self._channel_call.get(uid) if uid else None
        if known is not None and known != linkedid:
            if isinstance(event, ev.Hangup):
                linkedid = known  # no news to carry over: end the channel where it was
            else:
                moved_out = self._move(uid, known, event.timestamp)
        if linkedid in self._finished:
            return moved_out
        call = self.calls.get(linkedid)
        if call is None:
            first = isinstance(event, ev.Newchannel) and uid == linkedid   # the call's own first channel
            call = self.calls[linkedid] = _Call(linkedid=linkedid, started_at=event.timestamp, partial=not first)
            call.note(event.timestamp, "call_start")
        if uid and uid not in call.gone:
            call.live.add(uid)
            self._channel_call[uid] = linkedid
        self._seq += 1
        call.last_seq, call.last_at = self._seq, max(call.last_at, event.timestamp)
        if self.track_dirty:
            self._dirty.add(linkedid)
        if not call.inbound and event.frame.get("Context") in self.inbound_contexts:
            call.inbound = True
        handler = _HANDLERS.get(type(event))
        if handler is not None:
            handler(call, event)
        if event.name == "AGIExecStart" and not call.ivr_seen:
            call.ivr_seen = call.inbound = True
            call.note(event.timestamp, "ivr_entered")
        if isinstance(event, ev.Hangup) and uid:
            self._channel_call.pop(uid, None)
            if not call.live:
                return self._close(call) or moved_out
        return moved_out

    def _move(self, uid: str, linkedid: str, at: float) -> FinishedCall | None:
        """The channel now carries an older Linkedid: it leaves the call of ``linkedid``."""
        self._channel_call.pop(uid, None)
        call = self.calls.get(linkedid)
        if call is None:
            return None
        call.live.discard(uid)
        call.gone.add(uid)
        call.note(at, "channel_moved", uniqueid=uid)
        if call.live:
            return None
        call.ended_at = at
        return self._close(call)

    # -- resync and restart -------------------------------------------------------------------

    def mark(self) -> int:
        """A point in the event stream; take it before asking CoreShowChannels."""
        return self._seq

    def resync(self, channels: Iterable[LiveChannel], mark: int,
               reason: str = "resync") -> tuple[list[FinishedCall], int]:
        """Adopt the calls of listed channels, close the known calls that no longer exist.

        Returns the closed calls (to write, ``closed_by`` = ``reason``) and how many calls were
        adopted. Calls with an event after ``mark`` are left alone: their channels may have been
        created after Asterisk made the list.
        """
        listed: dict[str, list[LiveChannel]] = {}
        for ch in channels:
            listed.setdefault(self._channel_call.get(ch.uniqueid, ch.linkedid), []).append(ch)
        adopted = 0
        for linkedid, chans in listed.items():
            if linkedid in self._finished:
                continue
            call = self.calls.get(linkedid)
            if call is None:
                call = self.calls[linkedid] = self._adopt(linkedid, chans)
                adopted += 1
            for ch in chans:
                if ch.uniqueid not in call.gone:
                    call.live.add(ch.uniqueid)
                    self._channel_call[ch.uniqueid] = linkedid
        closed = []
        for call in list(self.calls.values()):
            if call.last_seq > mark:
                continue
            present = {ch.uniqueid for ch in listed.get(call.linkedid, ())}
            for uid in call.live - present:
                call.live.discard(uid)
                call.gone.add(uid)
                self._channel_call.pop(uid, None)
            if not call.live:
                call.closed_by = reason
                call.ended_at = call.last_at or call.started_at
                call.note(call.ended_at, "closed_by_resync", reason=reason)
                self._note_dirty(call.linkedid)
                done = self._close(call)
                if done is not None:
                    closed.append(done)
        return closed, adopted

    def _adopt(self, linkedid: str, chans: list[LiveChannel]) -> _Call:
        """A call in progress that started while the tracker was not listening."""
        now = self.last_at or time.time()   # no event with a Timestamp yet: the clock we have
        call = _Call(linkedid=linkedid, started_at=now - max((ch.duration_seconds or 0) for ch in chans),
                     last_at=now, last_seq=self._seq, partial=True)
        first = next((ch for ch in chans if ch.uniqueid == linkedid), None) or chans[0]
        call.caller_number, call.caller_name = first.caller_number, first.caller_name
        call.note(call.started_at, "call_start")
        for ch in chans:
            if ch.context in self.inbound_contexts or ch.application in ("Queue", "AGI"):
                call.inbound = True   # in the hotline flow: the IVR, the queue, or the inbound dialplan
            if ch.application == "Queue":
                call.joined = call.inbound = True
                call.queue = (ch.application_data or "").split(",")[0] or None
                call.caller_uniqueid = ch.uniqueid
                call.caller_number = ch.caller_number or call.caller_number
                call.caller_name = ch.caller_name or call.caller_name
            if ch.application == "AppQueue" and ch.bridge_id:   # a seat app_queue dialled, bridged: answered
                call.answered_at = now - (ch.duration_seconds or 0)
        call.note(now, "adopted_by_resync", channels=len(chans),
                  applications=sorted({ch.application or "" for ch in chans}))
        self._note_dirty(linkedid)
        return call

    def _note_dirty(self, linkedid: str) -> None:
        if self.track_dirty:
            self._dirty.add(linkedid)

    def take_dirty(self) -> set[str]:
        dirty, self._dirty = self._dirty, set()
        return dirty

    def mark_dirty(self, linkedids: Iterable[str]) -> None:
        self._dirty.update(linkedids)

    def take_closed_quietly(self) -> set[str]:
        closed, self.closed_quietly = self.closed_quietly, set()
        return closed

    def export(self, linkedid: str) -> str:
        """One open call as JSON text (for the open-call store)."""
        data = asdict(self.calls[linkedid])
        data["live"], data["gone"] = sorted(data["live"]), sorted(data["gone"])
        return json.dumps(data, ensure_ascii=False, separators=(",", ":"))

    def restore(self, snapshot: dict[str, str], skip: Iterable[str] = ()) -> tuple[int, set[str]]:
        """Take over open calls exported earlier (by another instance, or before a SIGKILL).

        ``skip`` names calls already finished (in the journal). A saved call this tracker holds
        only partly (adopted, or first seen mid-call) is merged with it; one it followed from
        the start is kept as it is. Restored calls count as older than any mark, so the next
        resync closes them if their channels are gone. Returns how many were restored and the
        saved entries that are obsolete (finished, skipped or unreadable) and may be deleted.
        """
        skip = set(skip)
        for linkedid in skip:
            self._finished[linkedid] = None
        restored, obsolete = 0, set()
        for linkedid, text in snapshot.items():
            if linkedid in skip or linkedid in self._finished:
                obsolete.add(linkedid)
                continue
            try:
                saved = _call_from_json(text)
            except (ValueError, TypeError, AttributeError, KeyError):
                obsolete.add(linkedid)   # the resync adopts the call again if it is alive
                continue
            current = self.calls.get(linkedid)
            if current is not None and not current.partial:
                continue
            call = saved if current is None else _merge(saved, current)
            call.last_seq = -1
            self.calls[linkedid] = call
            for uid in call.live:
                self._channel_call[uid] = linkedid
            self._note_dirty(linkedid)
            restored += 1
        return restored, obsolete

    def _close(self, call: _Call) -> FinishedCall | None:
        del self.calls[call.linkedid]   # no live channel left, so none maps to it in _channel_call
        self._finished[call.linkedid] = None
        if len(self._finished) > RECENTLY_FINISHED:
            self._finished.popitem(last=False)
        if not call.inbound or call.is_callback:
            self.not_hotline += 1
            self.closed_quietly.add(call.linkedid)
            return None
        return self._finish(call)

    def _finish(self, call: _Call) -> FinishedCall:
        status = call.variables.get("QUEUESTATUS", "")
        queued = call.joined or call.abandoned
        if call.answered_at is not None:
            outcome = ANSWERED
        elif not queued and call.emergency_at is not None and call.emergency_status == "ANSWER":
            outcome = EMERGENCY_TRANSFER
        elif not queued and call.variables.get("HOTLINE_CALLBACK_REQUESTED") == "1":
            outcome = CALLBACK_REQUESTED
        elif call.closed_by == "asterisk_restart":  # the PBX lost the caller, who did not give up
            outcome = DROPPED
        elif status in _TIMEOUT_STATUSES:
            outcome = QUEUE_TIMEOUT
        elif queued:
            outcome = ABANDONED
        else:
            outcome = IVR_HANGUP
        ended = call.ended_at if call.ended_at is not None else call.started_at
        timeline = call.timeline
        if outcome == QUEUE_TIMEOUT:  # app_queue's QueueCallerAbandon of a timeout is no abandon
            timeline = [replace(e, kind="queue_timeout", detail={**e.detail, "status": status})
                        if e.kind == "abandoned" else e for e in timeline]
        timeline = [*timeline, TimelineEntry(ended, "hangup", {"cause": call.hangup_cause, "outcome": outcome})]
        hotline_vars = {k: v for k, v in call.variables.items() if k.startswith("HOTLINE_")}
        return FinishedCall(
            node=self.node,
            linkedid=call.linkedid,
            caller_number=call.caller_number,
            caller_name=call.caller_name,
            started_at=call.started_at,
            answered_at=call.answered_at,
            ended_at=ended,
            outcome=outcome,
            ivr_choice=hotline_vars.get("HOTLINE_IVR_CHOICE"),
            # the queue it waited in; else the IVR's choice (a callback's queue), but not the fallback
            # queue of a transfer to 110 that was never offered to it
            queue=call.queue or (None if outcome == EMERGENCY_TRANSFER else hotline_vars.get("HOTLINE_QUEUE")) or None,
            category=hotline_vars.get("HOTLINE_CATEGORY"),
            queue_position=call.queue_position,
            seat=call.seat,
            seat_interface=call.seat_interface,
            hold_seconds=call.hold_seconds,
            talk_seconds=call.talk_seconds,
            hangup_cause=call.hangup_cause,
            hangup_cause_text=call.hangup_cause_text,
            recordings=tuple(call.recordings),
            timeline=tuple(timeline),
            variables=hotline_vars,
            closed_by=call.closed_by,
            survey=_survey(hotline_vars.get("HOTLINE_SURVEY")),
        )


def _survey(value: str | None) -> str | None:
    """HOTLINE_SURVEY if it is one of the survey's answers; anything else is no survey."""
    return value if value in SURVEY_VALUES else None


def _call_from_json(text: str) -> _Call:
    known = {f.name for f in fields(_Call)}
    data = {k: v for k, v in json.loads(text).items() if k in known}
    data["live"], data["gone"] = set(data.get("live", ())), set(data.get("gone", ()))
    data["recordings"] = [RecordingRef(**r) for r in data.get("recordings", ())]
    data["timeline"] = [TimelineEntry(**t) for t in data.get("timeline", ())]
    return _Call(**data)


_EMPTY = (None, False, "", 0)


def _merge(saved: _Call, current: _Call) -> _Call:
    """A saved call (what its earlier follower knew) completed by what this tracker saw of it."""
    call = replace(saved)
    for f in fields(_Call):
        mine, theirs = getattr(call, f.name), getattr(current, f.name)
        if isinstance(mine, (set, dict, list)):
            continue
        if mine in _EMPTY and theirs not in _EMPTY:
            setattr(call, f.name, theirs)
    if saved.partial:   # neither saw the first channel: the earliest guess is the best
        call.started_at = min(saved.started_at, current.started_at)
    call.last_at = max(saved.last_at, current.last_at)
    call.talk_seconds = max(saved.talk_seconds or 0, current.talk_seconds or 0) or None
    call.inbound = saved.inbound or current.inbound
    call.gone = saved.gone | current.gone
    call.live = (saved.live | current.live) - call.gone
    call.variables = {**saved.variables, **current.variables}
    call.mixmonitor_files = {**saved.mixmonitor_files, **current.mixmonitor_files}
    paths = {r.path for r in saved.recordings}
    call.recordings = [*saved.recordings, *(r for r in current.recordings if r.path not in paths)]
    extra = [e for e in current.timeline if e.kind not in ("call_start", "adopted_by_resync")]
    call.timeline = sorted([*saved.timeline, *extra], key=lambda e: e.at)[:MAX_TIMELINE]
    call.partial = saved.partial
    return call


def _caller_id(call: _Call, e: ev.Newchannel) -> None:
    # The caller's own channel (Uniqueid == Linkedid) names the citizen; others only until then.
    if e.caller_number and (call.caller_number is None or e.uniqueid == call.linkedid):
        call.caller_number = e.caller_number
        call.caller_name = e.caller_name


def _varset(call: _Call, e: ev.VarSet) -> None:
    name = e.variable
    if name.startswith("HOTLINE_") or name == "QUEUESTATUS":
        call.variables[name] = e.value
        if name == "QUEUESTATUS" and e.value in _TIMEOUT_STATUSES:
            _timed_out(call, e.value)
        if e.value and name.startswith("HOTLINE_") and name not in _NOT_ROUTING:
            call.inbound = True
        if name == "HOTLINE_IVR_CHOICE":
            call.note(e.timestamp, "ivr_choice", key=e.value)
        elif name == "HOTLINE_TRANSFER":
            call.transfer_uniqueid = e.uniqueid if e.value == EMERGENCY_NUMBER else None
        elif name == "HOTLINE_CALLBACK_REQUESTED" and e.value == "1":
            call.note(e.timestamp, "callback_requested")
        elif name == "HOTLINE_SURVEY" and e.value in SURVEY_VALUES:
            call.note(e.timestamp, "survey", answer=e.value)
    elif name == "MIXMONITOR_FILENAME" and e.uniqueid:
        call.mixmonitor_files[e.uniqueid] = e.value


def _mixmonitor(call: _Call, e: ev.MixMonitorStart) -> None:
    path = call.mixmonitor_files.get(e.uniqueid or "")
    if path:
        call.recordings.append(RecordingRef(path=path, uniqueid=e.uniqueid or "", started_at=e.timestamp))
        call.note(e.timestamp, "recording_started", path=path)


def _timed_out(call: _Call, status: str) -> None:
    """app_queue gave up on the caller: the QueueCallerAbandon of this Queue() was no abandon."""
    for i in range(len(call.timeline) - 1, -1, -1):
        entry = call.timeline[i]
        if entry.kind == "queue_join":
            return
        if entry.kind == "abandoned":
            call.timeline[i] = replace(entry, kind="queue_timeout", detail={**entry.detail, "status": status})
            return


def _join(call: _Call, e: ev.QueueCallerJoin) -> None:
    status = call.variables.pop("QUEUESTATUS", None)  # an earlier Queue()'s status says nothing of this one
    if call.answered_at is None and call.joined:
        # the caller waited in another queue first (overflow): the wait goes on
        if call.queue_left and call.hold_seconds is not None:
            call.waited_seconds = call.hold_seconds
        elif call.queue_joined_at is not None:  # that queue's end was not seen: its Timestamps
            call.waited_seconds += max(0, round(e.timestamp - call.queue_joined_at))
        call.hold_seconds = call.waited_seconds
        if status in _TIMEOUT_STATUSES:
            call.note(e.timestamp, "queue_overflow", from_queue=call.queue, to_queue=e.queue,
                      waited=call.waited_seconds)
    call.inbound = call.joined = True
    if call.answered_at is None:  # the queue the call waited in until its first answer
        call.queue = e.queue
        call.queue_position = e.position
        call.caller_uniqueid = e.uniqueid
        call.queue_joined_at, call.queue_left = e.timestamp, False
    if e.caller_number:
        call.caller_number, call.caller_name = e.caller_number, e.caller_name
    call.note(e.timestamp, "queue_join", queue=e.queue, position=e.position)


def _abandon(call: _Call, e: ev.QueueCallerAbandon) -> None:
    call.inbound = call.abandoned = True
    if call.answered_at is None:
        call.hold_seconds = _whole_wait(call, e.hold_time)
        call.queue_left = True
        if call.queue is None:  # joined before the tracker saw the call (started before the AMI link)
            call.queue, call.queue_position = e.queue, e.original_position or e.position
        call.caller_uniqueid = call.caller_uniqueid or e.uniqueid
    if call.caller_number is None and e.caller_number:
        call.caller_number, call.caller_name = e.caller_number, e.caller_name
    call.note(e.timestamp, "abandoned", queue=e.queue, position=e.position, hold=e.hold_time)


def _whole_wait(call: _Call, hold_time: int | None) -> int | None:
    """app_queue's HoldTime in the current queue, plus the wait in the queues before it."""
    if hold_time is None:
        return call.waited_seconds or None
    return call.waited_seconds + hold_time


def _called(call: _Call, e: ev.AgentCalled) -> None:
    call.note(e.timestamp, "seat_rung", seat=e.member_name, interface=e.interface)


def _no_answer(call: _Call, e: ev.AgentRingNoAnswer) -> None:
    call.note(e.timestamp, "seat_no_answer", seat=e.member_name, ring_ms=e.ring_time_ms)


def _connect(call: _Call, e: ev.AgentConnect) -> None:
    # HoldTime and RingTime are seconds here (RingTime is milliseconds in AgentRingNoAnswer).
    if call.answered_at is None:  # after a transfer back into a queue the first answer still counts
        call.answered_at = e.timestamp
        call.seat, call.seat_interface = e.member_name, e.interface
        call.hold_seconds = _whole_wait(call, e.hold_time)
        call.queue = e.queue or call.queue
    call.note(e.timestamp, "answered", seat=e.member_name, hold=e.hold_time, ring=e.ring_time)


def _complete(call: _Call, e: ev.AgentComplete) -> None:
    if call.answered_at is None:  # AgentConnect was missed (the AMI link was down): it was answered
        call.answered_at = e.timestamp - (e.talk_time or 0)
        call.seat, call.seat_interface = e.member_name, e.interface
        call.hold_seconds = _whole_wait(call, e.hold_time)
        call.queue = e.queue or call.queue
        call.inbound = True
    if e.talk_time is not None:
        call.talk_seconds = (call.talk_seconds or 0) + e.talk_time
    call.note(e.timestamp, "completed", seat=e.member_name, talk=e.talk_time, reason=e.reason)


def _dial_begin(call: _Call, e: ev.DialBegin) -> None:
    """The dialplan's Dial() of 110: from the channel the IVR asked for it, before any queue."""
    if (call.emergency_at is None and call.transfer_uniqueid and e.uniqueid == call.transfer_uniqueid
            and not call.joined and call.answered_at is None):
        call.emergency_at = e.timestamp
        call.emergency_dest = e.dest_uniqueid or None
        call.note(e.timestamp, "emergency_dial", dial=e.dial_string or "", channel=e.dest_channel or "")


def _dial_end(call: _Call, e: ev.DialEnd) -> None:
    status = e.dial_status or ""
    if call.emergency_at is None or call.emergency_status is not None or not status:
        return
    if e.uniqueid != call.transfer_uniqueid:
        return
    if call.emergency_dest and e.dest_uniqueid != call.emergency_dest:
        return
    call.emergency_status = status
    call.note(e.timestamp, "emergency_answered" if status == "ANSWER" else "emergency_failed", status=status)


def _hangup(call: _Call, e: ev.Hangup) -> None:
    uid = e.uniqueid
    if not uid:
        return
    call.live.discard(uid)
    call.gone.add(uid)
    call.ended_at = e.timestamp
    if uid in (call.linkedid, call.caller_uniqueid) or call.hangup_cause is None:
        call.hangup_cause, call.hangup_cause_text = e.cause, e.cause_text


_HANDLERS = {
    ev.DialBegin: _dial_begin,
    ev.DialEnd: _dial_end,
    ev.Newchannel: _caller_id,
    ev.NewCallerid: _caller_id,
    ev.VarSet: _varset,
    ev.MixMonitorStart: _mixmonitor,
    ev.QueueCallerJoin: _join,
    ev.QueueCallerAbandon: _abandon,
    ev.AgentCalled: _called,
    ev.AgentRingNoAnswer: _no_answer,
    ev.AgentConnect: _connect,
    ev.AgentComplete: _complete,
    ev.Hangup: _hangup,
}
