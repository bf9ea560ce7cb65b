"""The real Asterisk 22 captures through the AMI codec and the call tracker, whole and byte by byte."""

from __future__ import annotations

import pytest

from telephony.ami_codec import AmiDecoder, Frame
from telephony.errors import AmiProtocolError
from telephony.events import AgentComplete, AgentConnect, AmiEvent, QueueCallerAbandon, to_event
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


def test_utf8_character_split_across_reads():
    raw = "Asterisk Call Manager/11.0.0\r\nEvent: NewCallerid\r\nCallerIDName: 张三 市民\r\n\r\n".encode()
    cut = raw.index("张".encode()) + 1  # inside the first character
    decoder = AmiDecoder()
    decoder.receive_data(raw[:cut])
    assert decoder.next_frame() is None
    decoder.receive_data(raw[cut:])
    assert decoder.next_frame()["CallerIDName"] == "张三 市民"


def test_bare_lf_is_part_of_a_value_and_crlf_ends_lines():
    # A VarSet of a SHELL() or CURL() result carries raw LFs; Asterisk still ends lines with CRLF.
    decoder = AmiDecoder(expect_banner=False)
    decoder.receive_data(b"Event: VarSet\r\nVariable: OUT\r\nValue: line1\nline2\n\nend\r\nEmpty:\r\n\r\n")
    frame = decoder.next_frame()
    assert frame["Value"] == "line1\nline2\n\nend" and frame["Empty"] == ""
    assert decoder.next_frame() is None


def test_missing_banner_is_reported_and_the_frames_still_read():
    decoder = AmiDecoder()
    decoder.receive_data(b"Response: Success\r\nActionID: a-1\r\n\r\n")
    with pytest.raises(AmiProtocolError):
        decoder.next_frame()
    assert decoder.next_frame().action_id == "a-1"


@pytest.mark.parametrize("chunk", [None, 1, 10])
def test_oversized_frame_costs_one_error_then_the_stream_goes_on(chunk):
    data = b"Asterisk Call Manager/11.0.0\r\n" + b"Event: Big\r\nData: " + b"x" * 200 + b"\r\n\r\n" + \
        b"Event: Small\r\n\r\n"
    decoder = AmiDecoder(max_frame=100)
    out = []
    step = chunk or len(data)
    for i in range(0, len(data), step):
        decoder.receive_data(data[i:i + step])
        while True:
            try:
                frame = decoder.next_frame()
            except AmiProtocolError:
                out.append("error")
                continue
            if frame is None:
                break
            out.append(frame.event)
    assert out == ["error", "Small"]


def test_non_numbers_in_numeric_fields_raise_our_error():
    for field, value in (("Timestamp", "nan"), ("Timestamp", "1e999"), ("Cause", "x"), ("Cause", "9" * 5000)):
        with pytest.raises(AmiProtocolError):
            to_event(Frame((("Event", "Hangup"), ("Linkedid", "1"), ("Uniqueid", "1"), (field, value))))


@pytest.mark.parametrize("name", ["answered.ami", "abandon.ami", "ivr_hangup.ami", "agi_errors.ami"])
def test_tracker_result_does_not_depend_on_reads(name):
    data = capture(name)
    whole, _ = finished_calls(data)
    assert whole
    for chunk in (1, 2, 5, 1000):
        assert finished_calls(data, chunk)[0] == whole


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
    assert call.seat is None and call.answered_at is None and call.talk_seconds is None
    assert call.queue == "hotline-general" and call.linkedid == "1795314900.4"
    abandon = next(e for e in call.timeline if e.kind == "abandoned")
    assert abandon.detail == {"queue": "hotline-general", "position": 1, "hold": 10}
    assert [e.kind for e in call.timeline] == ["call_start", "ivr_entered", "recording_started", "queue_join",
                                               "abandoned", "hangup"]


def test_ivr_hangup_capture_holds_two_calls():
    calls, tracker = finished_calls(capture("ivr_hangup.ami"))
    assert [c.linkedid for c in calls] == ["1795314958.14", "1795314921.6"]
    ivr, tail = calls
    assert (ivr.outcome, ivr.caller_number, ivr.queue, ivr.seat, ivr.answered_at) == (
        "ivr_hangup", "13600136000", None, None, None)
    assert ivr.hold_seconds is None and ivr.talk_seconds is None and ivr.recordings == ()
    assert [e.kind for e in ivr.timeline] == ["call_start", "ivr_entered", "hangup"]
    assert ivr.ended_at - ivr.started_at == pytest.approx(5.04, abs=0.01)
    # the tail of an earlier call that waited in the leader queue with nobody there: the tracker saw
    # neither its start nor its QueueCallerJoin, only the abandon
    assert (tail.outcome, tail.caller_number, tail.queue, tail.queue_position, tail.hold_seconds) == (
        "abandoned", "13700137000", "hotline-leader", 1, 41)
    assert len(tracker) == 0


def test_agi_errors_call_is_answered_by_seat_1003():
    calls, tracker = finished_calls(capture("agi_errors.ami"))
    (call,) = calls
    assert (call.outcome, call.seat, call.talk_seconds, call.caller_number) == ("answered", "Seat 1003", 6, "13500135000")
    assert (call.hold_seconds, call.queue, call.seat_interface) == (0, "hotline-general", "Local/1003@agents/n")
    assert [r.uniqueid for r in call.recordings] == ["1795314969.17"]
    assert len(tracker) == 0


def test_originate_callback_is_not_a_citizen_call():
    # The service's callback (HOTLINE_CALLBACK=1, a seat connected to caller-bot) and an Originate into a
    # missing context never ran the hotline flow: no call row, no work order, nothing left open.
    calls, tracker = finished_calls(capture("originate_callback.ami"))
    assert calls == []
    assert len(tracker) == 0 and tracker.not_hotline == 2


def test_actions_capture_makes_no_call():
    calls, tracker = finished_calls(capture("actions.ami"))
    assert calls == [] and len(tracker) == 0


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


# --------------------------------------------------------------------------------------------------
# Asterisk 22 behaviour the given captures do not show, as app_queue and the bridging core emit it.

L = "1795400000.10"      # the citizen's trunk channel: with a real trunk its Uniqueid IS the Linkedid


def chan(name: str, uid: str, linkedid: str = L, context: str = "hotline-inbound", num: str = "13800138000",
         cid_name: str = "<unknown>") -> dict:
    return {"Channel": name, "Uniqueid": uid, "Linkedid": linkedid, "Context": context,
            "CallerIDNum": num, "CallerIDName": cid_name}


TRUNK = chan("PJSIP/trunk-00000001", L, context="from-trunk")
SEAT1 = chan("PJSIP/1001-00000002", "1795400003.11", num="1001", context="from-internal")
SEAT2 = chan("PJSIP/1002-00000003", "1795400003.12", num="1002", context="from-internal")


def ami(name: str, at: float, ch: dict | None = None, **fields) -> AmiEvent:
    headers = [("Event", name), ("Timestamp", f"{1795400000 + at:.6f}")]
    headers += [(k, str(v)) for k, v in {**(ch or {}), **fields}.items()]
    return to_event(Frame(tuple(headers)))


def queued(seat_chan: dict, seat: str) -> dict:
    return {"Queue": "hotline-general", "MemberName": seat, "Interface": f"PJSIP/{seat[-4:]}",
            "DestChannel": seat_chan["Channel"], "DestUniqueid": seat_chan["Uniqueid"], "DestLinkedid": L}


def inbound_start() -> list[AmiEvent]:
    ivr = {**TRUNK, "Context": "hotline-inbound"}
    return [
        ami("Newchannel", 0.0, TRUNK, Exten="95512345"),
        ami("Newexten", 0.1, ivr, Application="NoOp", AppData="Hotline inbound node a"),
        ami("AGIExecStart", 0.5, ivr, Command="ANSWER"),
        ami("VarSet", 3.0, ivr, Variable="HOTLINE_IVR_CHOICE", Value="1"),
        ami("VarSet", 3.0, ivr, Variable="HOTLINE_QUEUE", Value="hotline-general"),
        ami("QueueCallerJoin", 3.1, ivr, Queue="hotline-general", Position=2, Count=2),
    ]


def run(events: list[AmiEvent]) -> tuple[list, CallTracker, list]:
    tracker = CallTracker("node-a")
    results = [tracker.feed(e) for e in events]
    return [r for r in results if r is not None], tracker, results


def test_real_trunk_call_rung_twice_then_answered():
    ivr = {**TRUNK, "Context": "hotline-inbound"}
    events = inbound_start() + [
        ami("Newchannel", 3.2, SEAT1),
        ami("AgentCalled", 3.2, ivr, **queued(SEAT1, "Seat 1001")),
        ami("AgentRingNoAnswer", 18.2, ivr, RingTime=15000, **queued(SEAT1, "Seat 1001")),   # milliseconds
        ami("Hangup", 18.2, SEAT1, Cause=19, **{"Cause-txt": "No answer"}),
        ami("Newchannel", 23.1, SEAT2),
        ami("NewCallerid", 23.1, {**SEAT2, "CallerIDNum": "13800138000"}),
        ami("AgentCalled", 23.1, ivr, **queued(SEAT2, "Seat 1002")),
        ami("AgentConnect", 26.1, ivr, HoldTime=23, RingTime=3, **queued(SEAT2, "Seat 1002")),  # seconds
        ami("BridgeEnter", 26.1, SEAT2), ami("BridgeEnter", 26.1, ivr),
        ami("AgentComplete", 86.1, ivr, HoldTime=23, TalkTime=60, Reason="caller", **queued(SEAT2, "Seat 1002")),
        ami("Hangup", 86.1, ivr, Cause=16, **{"Cause-txt": "Normal Clearing"}),
        ami("Hangup", 86.2, SEAT2, Cause=16, **{"Cause-txt": "Normal Clearing"}),
    ]
    calls, tracker, results = run(events)
    assert results[-2] is None  # the caller hung up, the seat's channel is still there
    (call,) = calls
    assert (call.linkedid, call.outcome, call.caller_number) == (L, "answered", "13800138000")
    assert (call.seat, call.seat_interface, call.hold_seconds, call.talk_seconds) == ("Seat 1002", "PJSIP/1002", 23, 60)
    assert (call.queue, call.queue_position, call.ivr_choice, call.hangup_cause) == ("hotline-general", 2, "1", 16)
    assert call.answered_at == pytest.approx(1795400026.1) and call.ended_at == pytest.approx(1795400086.2)
    no_answer = next(e for e in call.timeline if e.kind == "seat_no_answer")
    answered = next(e for e in call.timeline if e.kind == "answered")
    assert no_answer.detail["ring_ms"] == 15000 and answered.detail["ring"] == 3
    assert len(tracker) == 0


@pytest.mark.parametrize("status", ["TIMEOUT", "LEAVEEMPTY"])
def test_queue_timeout_is_not_an_abandon(status):
    ivr = {**TRUNK, "Context": "hotline-inbound"}
    events = inbound_start() + [
        # app_queue emits QueueCallerAbandon for its own timeout too; only QUEUESTATUS tells them apart
        ami("QueueCallerAbandon", 63.1, ivr, Queue="hotline-general", Position=1, OriginalPosition=2, HoldTime=60),
        ami("QueueCallerLeave", 63.1, ivr, Queue="hotline-general", Position=1, Count=0),
        ami("VarSet", 63.1, ivr, Variable="QUEUESTATUS", Value=status),
        ami("Hangup", 63.2, ivr, Cause=16),
    ]
    (call,), tracker, _ = run(events)
    assert (call.outcome, call.hold_seconds, call.queue, call.seat) == ("queue_timeout", 60, "hotline-general", None)
    kinds = [e.kind for e in call.timeline]
    assert "abandoned" not in kinds and kinds[-2:] == ["queue_timeout", "hangup"]
    assert call.timeline[-2].detail["status"] == status


def test_queue_that_refused_the_caller_is_a_missed_call_not_an_ivr_hangup():
    ivr = {**TRUNK, "Context": "hotline-inbound"}
    events = inbound_start()[:-1] + [  # joinempty: Queue() returns at once, no QueueCallerJoin
        ami("VarSet", 3.1, ivr, Variable="QUEUESTATUS", Value="JOINEMPTY"),
        ami("Hangup", 3.2, ivr, Cause=16),
    ]
    (call,), _, _ = run(events)
    assert (call.outcome, call.queue) == ("queue_timeout", "hotline-general")


def test_caller_hangs_up_in_a_second_queue_after_a_timeout_in_the_first():
    ivr = {**TRUNK, "Context": "hotline-inbound"}
    events = inbound_start() + [
        ami("QueueCallerAbandon", 63.1, ivr, Queue="hotline-general", Position=1, OriginalPosition=2, HoldTime=60),
        ami("VarSet", 63.1, ivr, Variable="QUEUESTATUS", Value="TIMEOUT"),
        ami("QueueCallerJoin", 63.2, ivr, Queue="hotline-overflow", Position=1, Count=1),
        ami("QueueCallerAbandon", 70.2, ivr, Queue="hotline-overflow", Position=1, OriginalPosition=1, HoldTime=7),
        ami("Hangup", 70.3, ivr, Cause=16),
    ]
    (call,), _, _ = run(events)
    # the citizen's whole wait, both queues (60 + 7): an overflow must not hide a long wait
    assert (call.outcome, call.queue, call.hold_seconds) == ("abandoned", "hotline-overflow", 67)


@pytest.mark.parametrize("consult_leg_first", [True, False])
def test_attended_transfer_moves_the_leader_channel_to_the_citizens_call(consult_leg_first):
    # The seat puts the citizen on hold and calls leader seat 8002 from its phone: a new call with its own
    # Linkedid M. On transfer, Asterisk copies the OLDER Linkedid (the citizen's) onto every channel that
    # joins the bridge, so the leader's channel goes on under L. M must end, unreported; L ends when the
    # leader hangs up, not when the citizen's first seat does.
    ivr = {**TRUNK, "Context": "hotline-inbound"}
    m = "1795400040.20"
    consult = chan("PJSIP/1001-00000004", m, m, context="from-internal", num="1001")
    leader_m = chan("PJSIP/8002-00000005", "1795400040.21", m, context="from-internal", num="1001")
    leader_l = {**leader_m, "Linkedid": L}
    events = inbound_start() + [
        ami("Newchannel", 3.2, SEAT1),
        ami("AgentConnect", 5.0, ivr, HoldTime=2, RingTime=1, **queued(SEAT1, "Seat 1001")),
        ami("Newchannel", 40.0, consult), ami("Newchannel", 40.0, leader_m),
        ami("BridgeEnter", 42.0, consult), ami("BridgeEnter", 42.0, leader_m),
        ami("AgentComplete", 60.0, ivr, HoldTime=2, TalkTime=55, Reason="transfer", **queued(SEAT1, "Seat 1001")),
        ami("Hangup", 60.0, SEAT1, Cause=16),
    ]
    moved = ami("BridgeEnter", 60.1, leader_l)
    consult_gone = ami("Hangup", 60.1, consult, Cause=16)
    events += [consult_gone, moved] if consult_leg_first else [moved, consult_gone]
    events += [
        ami("Hangup", 200.0, ivr, Cause=16),
        ami("Hangup", 200.1, leader_l, Cause=16),
    ]
    calls, tracker, results = run(events)
    assert all(r is None for r in results[:-1])
    (call,) = calls
    assert (call.linkedid, call.outcome, call.seat, call.hold_seconds, call.talk_seconds) == (
        L, "answered", "Seat 1001", 2, 55)
    assert call.ended_at == pytest.approx(1795400200.1)
    assert len(tracker) == 0 and tracker.not_hotline == 1


def test_transfer_back_into_a_queue_keeps_the_first_answer_and_adds_talk_times():
    ivr = {**TRUNK, "Context": "hotline-inbound"}
    events = inbound_start() + [
        ami("AgentConnect", 5.0, ivr, HoldTime=2, RingTime=1, **queued(SEAT1, "Seat 1001")),
        ami("AgentComplete", 35.0, ivr, HoldTime=2, TalkTime=30, Reason="transfer", **queued(SEAT1, "Seat 1001")),
        ami("QueueCallerJoin", 35.1, ivr, Queue="hotline-business", Position=1, Count=1),
        ami("AgentConnect", 47.1, ivr, HoldTime=12, RingTime=2,
            **{**queued(SEAT2, "Seat 1002"), "Queue": "hotline-business"}),
        ami("AgentComplete", 87.1, ivr, HoldTime=12, TalkTime=40, Reason="agent",
            **{**queued(SEAT2, "Seat 1002"), "Queue": "hotline-business"}),
        ami("Hangup", 87.2, ivr, Cause=16),
    ]
    (call,), _, _ = run(events)
    assert (call.seat, call.hold_seconds, call.talk_seconds, call.queue) == ("Seat 1001", 2, 70, "hotline-general")
    assert call.answered_at == pytest.approx(1795400005.0)
    assert [e.detail["seat"] for e in call.timeline if e.kind == "answered"] == ["Seat 1001", "Seat 1002"]


def test_cel_and_cdr_are_ignored_and_late_events_do_not_reopen_a_call():
    ivr = {**TRUNK, "Context": "hotline-inbound"}
    cel = {"EventName": "CHAN_START", "UniqueID": "1795400009.99", "LinkedID": L, "Channel": "Local/x;1"}
    events = [
        ami("CEL", 0.0, None, **{**cel, "LinkedID": "1795300000.1"}),   # a call only CEL knows: nothing opens
        *inbound_start(),
        ami("CEL", 3.2, None, **cel),                                   # a channel only CEL names: not waited for
        ami("Hangup", 10.0, {**ivr, "Uniqueid": ""}, Cause=16),         # no Uniqueid: ends nothing
        ami("Hangup", 10.1, ivr, Cause=16),
        ami("Cdr", 10.2, None, UniqueID=L, LinkedID=L, Disposition="ANSWERED"),
        ami("VarSet", 10.3, ivr, Variable="HOTLINE_QUEUE", Value="late"),
        ami("Hangup", 10.4, ivr, Cause=16),
    ]
    calls, tracker, results = run(events)
    assert [i for i, r in enumerate(results) if r is not None] == [len(inbound_start()) + 3]
    assert calls[0].queue == "hotline-general" and len(tracker) == 0


def test_a_call_that_never_ran_the_hotline_flow_is_not_reported():
    seat = chan("PJSIP/1001-00000009", "1795400100.1", "1795400100.1", context="from-internal", num="1001")
    events = [ami("Newchannel", 0.0, seat), ami("VarSet", 0.1, seat, Variable="HOTLINE_CALLBACK", Value="1"),
              ami("Hangup", 9.0, seat, Cause=16)]
    calls, tracker, _ = run(events)
    assert calls == [] and len(tracker) == 0 and tracker.not_hotline == 1


@pytest.mark.ivr
def test_capture_calls_have_no_survey_and_queue_dials_are_no_110_transfer():
    """The captures' calls ran no survey. In answered.ami the caller's channel dials the seat from
    Queue() (DialBegin/DialEnd with the caller's Uniqueid): even had the IVR asked for 110 there, a
    Dial() after joining a queue is a seat, not the emergency transfer."""
    for name in ("answered.ami", "abandon.ami", "agi_errors.ami", "ivr_hangup.ami"):
        calls, _ = finished_calls(capture(name))
        assert calls and all(c.survey is None for c in calls), name
        assert all(c.outcome not in ("emergency_transfer", "callback_requested") for c in calls), name
    frames = [f for f in frames_of(capture("answered.ami")) if f.event]
    at = next(i for i, f in enumerate(frames) if f.event == "VarSet" and f["Variable"] == "HOTLINE_QUEUE")
    asked = Frame(tuple((k, "HOTLINE_TRANSFER" if k == "Variable" else "110" if k == "Value" else v)
                        for k, v in frames[at].headers))
    assert any(f.event == "DialBegin" and f.get("Uniqueid") == asked["Uniqueid"] for f in frames[at:])
    tracker = CallTracker("node-a")
    done = [c for c in (tracker.feed(to_event(f)) for f in [*frames[:at + 1], asked, *frames[at + 1:]]) if c]
    (call,) = done
    assert (call.outcome, call.seat, call.variables["HOTLINE_TRANSFER"]) == ("answered", "Seat 1001", "110")
    assert not [e for e in call.timeline if e.kind.startswith("emergency")]
