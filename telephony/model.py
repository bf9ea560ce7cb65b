"""What the call tracker hands on: one finished call, with its timeline and recordings.

This is the contract between the Asterisk edge (telephony.tracker) and the writer
(workorders.store). Times are epoch seconds as Asterisk stamps events (``Timestamp:``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Mapping

# A citizen's telephone number as the service keeps and compares it (caller lists, pre-screen,
# own-order look-up, the IVR's caller), and those of them the callback dialplan dials (digits only:
# [hotline-callback] checks the same, callback_tasks.number too). Use with fullmatch.
PHONE_NUMBER = re.compile(r"\+?[0-9]{3,20}")
DIALLABLE_NUMBER = re.compile(r"[0-9]{3,20}")
# The one HOTLINE_TRANSFER the generated dialplan dials (一键转接 to the police): the IVR's only
# transfer target, and what the tracker takes for an emergency transfer.
EMERGENCY_NUMBER = "110"

# Outcomes of a call, as stored in calls.outcome.
ANSWERED = "answered"            # a seat took the call (AgentConnect)
ABANDONED = "abandoned"          # the caller hung up while waiting in a queue
QUEUE_TIMEOUT = "queue_timeout"  # app_queue gave up (QUEUESTATUS=TIMEOUT); also a missed call
IVR_HANGUP = "ivr_hangup"        # the caller hung up before reaching a queue
DROPPED = "dropped"              # Asterisk restarted under the call before a seat answered it
# The IVR's own endings (neither missed calls nor IVR hang-ups):
EMERGENCY_TRANSFER = "emergency_transfer"  # the dialplan dialled 110 for the IVR (HOTLINE_TRANSFER=110)
#                                            and the caller never reached a queue
CALLBACK_REQUESTED = "callback_requested"  # the caller accepted a callback (HOTLINE_CALLBACK_REQUESTED=1)
#                                            and was hung up without a queue
OUTCOMES = (ANSWERED, ABANDONED, QUEUE_TIMEOUT, IVR_HANGUP, DROPPED, EMERGENCY_TRANSFER, CALLBACK_REQUESTED)

# The satisfaction survey after the seat hung up (ivr/survey.py sets HOTLINE_SURVEY), as stored in
# calls.survey; a call without one (the caller hung up first, or during the survey) has None.
SURVEY_SATISFIED = "satisfied"                      # key 1
SURVEY_BASICALLY_SATISFIED = "basically_satisfied"  # key 2
SURVEY_DISSATISFIED = "dissatisfied"                # key 3
SURVEY_NO_ANSWER = "no_answer"                      # asked, no valid key after the retry
SURVEY_VALUES = (SURVEY_SATISFIED, SURVEY_BASICALLY_SATISFIED, SURVEY_DISSATISFIED, SURVEY_NO_ANSWER)


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    """One step of a call: ``kind`` is one of call_start, ivr_entered, ivr_choice, queue_join,
    seat_rung, seat_no_answer, answered, completed, abandoned, queue_timeout, queue_overflow,
    recording_started, channel_moved (a channel left for an older Linkedid on a transfer),
    emergency_dial (the dialplan dialled 110), emergency_answered / emergency_failed (its DialEnd,
    with the status), callback_requested, survey (the answer), hangup; ``detail`` holds the step's
    own fields (queue, position, seat, key, ring_ms for a ring without answer, ring in seconds for
    an answer, ...)."""

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
    survey: str | None = None           # one of SURVEY_VALUES (HOTLINE_SURVEY), None: not surveyed
