"""The real Asterisk 22 captures through the AMI codec and the call tracker, whole and byte by byte."""

from __future__ import annotations

import pytest

from telephony.ami_codec import AmiDecoder, Frame
from telephony.events import AgentComplete, AgentConnect, QueueCallerAbandon, to_event
from telephony.tracker import CallTracker
from tests.conftest import capture

CAPTURES = ["answered.ami", "abandon.ami", "actions.ami", "agi_errors.ami", "ivr_hangup.ami",
            "originate_callback.ami", "bad_login.ami"]


def frames_of(data: bytes, chunk: int | None = None) -> list[Frame]:
    decoder = AmiDecoder()
    out: list[Frame] = []
    step = chunk or len(data)
    for i in range(0, len(data), step):
        decoder.receive_data(data[i:i + step])
        out.extend(decoder)
    return out


def finished_calls(data: bytes, chunk: int | None = None):
    tracker = CallTracker("node-a")
    calls = []
    for frame in frames_of(data, chunk):
        if frame.event:
            call = tracker.feed(to_event(frame))
            if call is not None:
                calls.append(call)
    return calls, tracker


@pytest.mark.parametrize("name", CAPTURES)
def test_whole_and_one_byte_at_a_time_give_the_same_frames(name):
    data = capture(name)
    whole = frames_of(data)
    bytewise = frames_of(data, 1)
    assert whole == bytewise
    # every frame boundary of the capture is found: frames == blank-line separated blocks
    assert len(whole) == data.split(b"\r\n", 1)[1].count(b"\r\n\r\n")


def test_banner_and_login_response():
    decoder = AmiDecoder()
    decoder.receive_data(capture("answered.ami")[:200])
    first = decoder.next_frame()
    assert decoder.banner == "Asterisk Call Manager/11.0.0"
    assert first.response == "Success" and first.action_id == "cap-1"
    assert first["Message"] == "Authentication accepted"


def test_bad_login_is_an_error_response():
    (frame,) = frames_of(capture("bad_login.ami"))
    assert frame.response == "Error"
    assert frame["Message"] == "Authentication failed"


def test_trailing_empty_values_are_kept():
    frames = frames_of(capture("actions.ami"))
    command = next(f for f in frames if f.action_id == "cap-14")
    outputs = command.get_all("Output")
    assert outputs[-2:] == ["", ""]
    assert outputs[1] == "   Members: "  # leading spaces inside the value are the value's own


@pytest.mark.parametrize("chunk", [None, 1, 7, 4096])
def test_answered_call(chunk):
    calls, tracker = finished_calls(capture("answered.ami"), chunk)
    assert len(calls) == 1 and len(tracker) == 0
    call = calls[0]
    assert call.outcome == "answered"
    assert call.seat == "Seat 1001"
    assert call.seat_interface == "Local/1001@agents/n"
    assert call.hold_seconds == 0
    assert call.talk_seconds == 6
    assert call.caller_number == "13800138000"
    assert call.caller_name == "Zhang San"
    assert call.linkedid == "1795314872.0"
    assert call.queue == "hotline-general" and call.queue_position == 1
    assert call.variables["HOTLINE_QUEUE"] == "hotline-general"
    assert [r.path for r in call.recordings] == ["/var/spool/asterisk/monitor/1795314872.1.wav"]
    assert call.hangup_cause == 16
    kinds = [e.kind for e in call.timeline]
    assert kinds == ["call_start", "ivr_entered", "recording_started", "queue_join", "seat_rung", "answered",
                     "completed", "hangup"]
    assert call.answered_at == pytest.approx(1795314875.6889, abs=1e-3)


@pytest.mark.parametrize("chunk", [None, 1, 13])
def test_abandoned_call(chunk):
    calls, tracker = finished_calls(capture("abandon.ami"), chunk)
    assert len(calls) == 1 and len(tracker) == 0
    call = calls[0]
    assert call.outcome == "abandoned"
    assert call.caller_number == "13900139000"
    assert call.hold_seconds == 10
    assert call.queue_position == 1
    assert call.seat is None and call.answered_at is None
    abandon = next(e for e in call.timeline if e.kind == "abandoned")
    assert abandon.detail == {"queue": "hotline-general", "position": 1, "hold": 10}


def test_ivr_hangup_capture_holds_two_calls():
    calls, tracker = finished_calls(capture("ivr_hangup.ami"))
    by_id = {c.linkedid: c for c in calls}
    assert by_id["1795314958.14"].outcome == "ivr_hangup"
    assert by_id["1795314958.14"].caller_number == "13600136000"
    # the tail of an earlier call that waited in the leader queue with nobody there
    assert by_id["1795314921.6"].queue == "hotline-leader"
    assert by_id["1795314921.6"].hold_seconds == 41
    assert len(tracker) == 0


def test_agi_errors_call_is_answered_by_seat_1003():
    calls, _ = finished_calls(capture("agi_errors.ami"))
    (call,) = calls
    assert (call.outcome, call.seat, call.talk_seconds, call.caller_number) == ("answered", "Seat 1003", 6, "13500135000")


def test_typed_queue_events_from_capture():
    frames = frames_of(capture("answered.ami"))
    events = [to_event(f) for f in frames if f.event]
    connect = next(e for e in events if isinstance(e, AgentConnect))
    complete = next(e for e in events if isinstance(e, AgentComplete))
    assert (connect.hold_time, connect.ring_time, connect.member_name) == (0, 0, "Seat 1001")
    assert (complete.talk_time, complete.reason) == (6, "agent")
    frames = frames_of(capture("abandon.ami"))
    abandon = next(to_event(f) for f in frames if f.event == "QueueCallerAbandon")
    assert isinstance(abandon, QueueCallerAbandon)
    assert (abandon.hold_time, abandon.position, abandon.original_position) == (10, 1, 1)


def test_events_after_the_end_do_not_reopen_the_call():
    data = capture("answered.ami")
    calls, tracker = finished_calls(data + data[data.index(b"Event: Hangup"):])
    assert len(calls) == 1
    assert len(tracker) == 0
