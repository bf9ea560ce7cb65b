"""What the call tracker hands on: one finished call, with its timeline and recordings.

This is the contract between the Asterisk edge (telephony.tracker) and the writer
(workorders.store). Times are epoch seconds as Asterisk stamps events (``Timestamp:``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

# Outcomes of a call, as stored in calls.outcome.
ANSWERED = "answered"            # a seat took the call (AgentConnect)
ABANDONED = "abandoned"          # the caller hung up while waiting in a queue
QUEUE_TIMEOUT = "queue_timeout"  # app_queue gave up (QUEUESTATUS=TIMEOUT); also a missed call
IVR_HANGUP = "ivr_hangup"        # the caller hung up before reaching a queue
DROPPED = "dropped"              # Asterisk restarted under the call before a seat answered it
OUTCOMES = (ANSWERED, ABANDONED, QUEUE_TIMEOUT, IVR_HANGUP, DROPPED)


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    """One step of a call: ``kind`` is one of call_start, ivr_entered, ivr_choice, queue_join,
    seat_rung, seat_no_answer, answered, completed, abandoned, queue_timeout, recording_started,
    channel_moved (a channel left for an older Linkedid on a transfer), hangup; ``detail`` holds the
    step's own fields (queue, position, seat, key, ring_ms for a ring without answer, ring in
    seconds for an answer, ...)."""

    at: float
    kind: str
    detail: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RecordingRef:
    """A MixMonitor file the call started; finished when its channel hung up."""

    path: str
    uniqueid: str
    started_at: float


@dataclass(frozen=True, slots=True)
class FinishedCall:
    node: str
    linkedid: str
    caller_number: str | None
    caller_name: str | None
    started_at: float
    answered_at: float | None
    ended_at: float
    outcome: str
    ivr_choice: str | None = None       # key pressed in the menu, "timeout", or None (never reached)
    queue: str | None = None
    category: str | None = None         # HOTLINE_CATEGORY set by the IVR
    queue_position: int | None = None   # position on joining the queue (the first answered or last one)
    seat: str | None = None             # app_queue MemberName of the seat that answered
    seat_interface: str | None = None
    hold_seconds: int | None = None     # wait in queue before the first answer, or before the abandon
    talk_seconds: int | None = None     # summed over the seats the call was transferred through
    hangup_cause: int | None = None
    hangup_cause_text: str | None = None
    recordings: tuple[RecordingRef, ...] = ()
    timeline: tuple[TimelineEntry, ...] = ()
    variables: Mapping[str, str] = field(default_factory=dict)  # HOTLINE_* channel variables
    # None: followed to its last Hangup. "resync": its channels were found gone after the AMI link
    # or the service was away; "asterisk_restart": Asterisk restarted under it. Written with what
    # was known by then.
    closed_by: str | None = None
