"""Any input either parses or raises the project's own protocol error; injection never reaches the wire."""

from __future__ import annotations

import math

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from telephony.agi_protocol import AgiReplyReader, parse_headers
from telephony.ami_codec import AmiDecoder, Frame, encode_action, parse_frame
from telephony.ami_protocol import HotlineAmiProtocol
from telephony.errors import AgiProtocolError, AmiProtocolError, UnsafeValue
from telephony.events import AmiEvent, to_event
from telephony.tracker import CallTracker
from tests.conftest import capture

ANSWERED = capture("answered.ami")
_CAPTURE_FRAMES = [b + b"\r\n\r\n" for name in ("answered.ami", "actions.ami", "abandon.ami")
                   for b in capture(name).split(b"\r\n", 1)[1].split(b"\r\n\r\n") if b]
_BANNERS = [b"Asterisk Call Manager/11.0.0\r\n", b"", b"Asterisk Call", b"Asterisk Call Manager/" + b"9" * 300 + b"\r\n",
            b"HTTP/1.1 400 Bad Request\r\n"]
_ODD = [b"\r\n", b"\r\n\r\n", b"\n", b"\n\n", b"\r", b":", b": x", b"Key: ", b" Key: v\r\n", "值班".encode(),
        "值".encode()[:2], b"\xff\xfe", b"\x00", b"A" * 300, b"Event: Hangup\r\nLinkedid: 1\r\nUniqueid: 1\r\n",
        b"Cause: x\r\n", b"Timestamp: nan\r\n", b"Timestamp: 1e999\r\n", b"Position: " + b"9" * 5000 + b"\r\n",
        b"Event: QueueCallerJoin\r\nLinkedid: 2\r\nUniqueid: 3\r\nPosition: -1\r\n\r\n"]
ami_streams = st.builds(
    lambda banner, parts: banner + b"".join(parts),
    st.sampled_from(_BANNERS),
    st.lists(st.one_of(st.sampled_from(_CAPTURE_FRAMES), st.sampled_from(_ODD), st.binary(max_size=30)), max_size=25),
)


def decode(data: bytes, cuts: list[int], max_frame: int) -> tuple[list, str | None]:
    """Feed ``data`` in reads of the sizes in ``cuts`` (cycled); every outcome in order.

    Anything but a frame, None or AmiProtocolError escapes and fails the test. Every error must
    consume input or change state, so the loop ends: it may not spin more often than there are bytes.
    """
    decoder = AmiDecoder(max_frame=max_frame)
    out: list = []
    pos, i = 0, 0
    while pos < len(data) or i == 0:
        step = cuts[i % len(cuts)] if cuts else len(data)
        decoder.receive_data(data[pos:pos + step])
        pos, i = pos + step, i + 1
        for _ in range(len(data) + 10):
            try:
                frame = decoder.next_frame()
            except AmiProtocolError:
                out.append("error")
                continue
            if frame is None:
                break
            out.append(frame.headers)
        else:
            pytest.fail("the decoder keeps raising without consuming its input")
    return out, decoder.banner


@settings(max_examples=400, deadline=None)
@given(ami_streams, st.lists(st.integers(min_value=1, max_value=40), max_size=8), st.sampled_from([64, 1 << 20]))
def test_ami_decoder_gives_the_same_result_whatever_the_reads(data, cuts, max_frame):
    whole = decode(data, [], max_frame)
    assert decode(data, [1], max_frame) == whole
    assert decode(data, cuts or [3], max_frame) == whole


@settings(max_examples=300, deadline=None)
@given(st.one_of(ami_streams, st.binary(max_size=2000)), st.integers(min_value=1, max_value=64))
def test_ami_stream_parses_or_raises_our_protocol_error(data, chunk):
    """Bytes -> frames -> typed events -> tracker: only AmiProtocolError, and only from the first two."""
    frames, _ = decode(data, [chunk], 1 << 20)
    tracker = CallTracker("fuzz")
    for headers in frames:
        if headers == "error":
            continue
        frame = Frame(headers)
        if not frame.event:
            continue
        try:
            event = to_event(frame)
        except AmiProtocolError:
            continue
        assert math.isfinite(event.timestamp)
        tracker.feed(event)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(AmiEvent.registry)),
       st.dictionaries(st.sampled_from(["Position", "HoldTime", "TalkTime", "RingTime", "Cause", "Status",
                                        "OriginalPosition", "Timestamp", "Paused", "CallerIDNum", "Uniqueid",
                                        "Linkedid", "Variable", "Value", "Context"]),
                       st.text(max_size=12)))
def test_typed_events_take_any_values(name, fields):
    frame = Frame((("Event", name), *fields.items()))
    try:
        event = to_event(frame)
    except AmiProtocolError:
        return
    assert type(event) is AmiEvent.registry[name] and math.isfinite(event.timestamp)
    CallTracker("fuzz").feed(event)


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=0, max_value=len(ANSWERED) - 1), st.binary(min_size=1, max_size=20))
def test_ami_decoder_corrupted_capture_recovers(pos, junk):
    data = ANSWERED[:pos] + junk + ANSWERED[pos:]
    frames, banner = decode(data, [], 1 << 20)
    good = [f for f in frames if f != "error"]
    # one corrupted spot costs at most the frames around it, never the rest of the stream
    assert len(good) >= 230
    if pos <= ANSWERED.rindex(b"Response: Goodbye") - 4:  # junk in the blank line before it joins two frames
        assert good[-1] == (("Response", "Goodbye"), ("ActionID", "cap-6"), ("Message", "Thanks for all the fish."))
    assert decode(data, [97], 1 << 20) == (frames, banner)


class _Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def close(self) -> None:
        pass


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=0, max_value=len(ANSWERED) - 1), st.binary(min_size=1, max_size=20),
       st.integers(min_value=5, max_value=300))
def test_ami_protocol_survives_any_input(pos, junk, chunk):
    """panoramisk's protocol with our codec: malformed input is dropped, the link and the events go on."""
    data = ANSWERED[:pos] + junk + ANSWERED[pos:]
    seen: list = []
    protocol = HotlineAmiProtocol()
    protocol.connection_made(_Transport())
    protocol.factory = type("Factory", (), {"on_ami_event": staticmethod(seen.append)})()
    for i in range(0, len(data), chunk):
        protocol.data_received(data[i:i + chunk])
    expected = []
    for headers in decode(data, [], 1 << 20)[0]:
        if headers != "error" and Frame(headers).event:
            try:
                expected.append(to_event(Frame(headers)).frame.headers)
            except AmiProtocolError:
                pass
    assert [e.frame.headers for e in seen] == expected
    # junk inside the banner line (up to its CRLF) is part of the banner
    assert protocol.version == "11.0.0" or pos < len(b"Asterisk Call Manager/11.0.0\r\n")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=500))
def test_agi_headers_random(data):
    try:
        parse_headers(data)
    except AgiProtocolError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=80), max_size=20))
def test_agi_reply_lines_random(lines):
    reader = AgiReplyReader()
    for line in lines:
        try:
            reader.feed(line)
        except AgiProtocolError:
            reader = AgiReplyReader()


@pytest.mark.parametrize("bad", ["Zhang\r\nAction: Originate", "x\nChannel: PJSIP/1", "a\x00b"])
def test_action_values_cannot_inject_headers(bad):
    with pytest.raises(UnsafeValue):
        encode_action("Setvar", {"Variable": "HOTLINE_NOTE", "Value": bad}, "id-1")
    with pytest.raises(UnsafeValue):
        encode_action("Setvar", {f"X{bad}": "1"}, "id-1")


def test_encode_action_round_trips():
    raw = encode_action("QueueAdd", {"Queue": "hotline-general", "MemberName": "座席 8001", "Penalty": 0}, "a-1")
    frame = parse_frame(raw[:-4])
    assert frame["Action"] == "QueueAdd" and frame["MemberName"] == "座席 8001" and frame["Penalty"] == "0"


# -- the fast decode path (frames checked in one pass, headers read on demand) against the reference parser

_PIECES = [b"Event", b"event", b"EVENT", b"Timestamp", b"Linkedid", b"ActionID", b"actionid", b"Value", b"Key",
           b"k", b"K", b":", b": ", b" ", b"\t", b"\r", b"\n", b"\r\n", b"\r\n\r\n", b"\x1c", b"\x00", b"x",
           b"1.5", "\u00a0".encode(), "\u3000".encode(), "张".encode(), "张".encode()[:2], b"\xff", "\u212a".encode()]
_KEYS = ["Event", "event", "EVENT", "Timestamp", "timestamp", "Linkedid", "ActionID", "Value", "Key", "k", "K",
         "\u212a", "", " Key", "Key ", "x:y", "\u00a0Key", "\x1c", "\x00"]
_plain_lines = st.builds(lambda k, v: k + b": " + v, st.sampled_from([b"Event", b"Linkedid", b"ActionID", b"x"]),
                         st.sampled_from([b"", b"1.5", b"a b", b"a: b", "张三".encode(), b"a\nb"]))
_odd_lines = st.sampled_from([b"x", b"Event", b"1.5", b"", b" x: y", b"x : y", b": y", b"\xc2\xa0x: y"])
frame_bytes = st.lists(st.one_of(_plain_lines, _plain_lines, _plain_lines, _odd_lines, st.lists(st.sampled_from(_PIECES), max_size=8).map(b"".join)),
                       min_size=1, max_size=8).map(b"\r\n".join)


def reference_frames(data: bytes, max_frame: int) -> list:
    """What the decoder must give for ``data`` fed whole (no banner): frames split from the left."""
    out: list = []
    pos = 0
    while (end := data.find(b"\r\n\r\n", pos)) >= 0:
        raw, pos = data[pos:end], end + 4
        if not raw:
            continue
        if len(raw) > max_frame:
            out.append("error")
            continue
        try:
            out.append(parse_frame(raw))
        except AmiProtocolError:
            out.append("error")
    return out


def same_frame(ours: Frame, ref: Frame) -> None:
    assert ours.headers == ref.headers and ours == ref
    assert ours.event == ref.event and ours.response == ref.response and ours.action_id == ref.action_id
    for key in _KEYS:
        assert ours.get(key) == ref.get(key), key
        assert (key in ours) == (key in ref)
        assert ours.get_all(key) == ref.get_all(key)


@settings(max_examples=500, deadline=None)
@given(st.lists(frame_bytes, min_size=1, max_size=6), st.sampled_from([b"\r\n\r\n", b"\r\n\r\n\r\n", b"\r\n"]),
       st.sampled_from([40, 1 << 20]))
@example([b"Event: a\r\nx\r\nLinkedid: 1", b"Event: b"], b"\r\n\r\n", 1 << 20)  # a colon-less line among good frames
@example([b"Event: a", b"", b"Event: b\r\n"], b"\r\n\r\n\r\n", 1 << 20)   # blank lines in a row
@example([b"Event: a\r\nTimestamp: 1.5\r\x00\nX: y\r\nZ: a\rb\nk: v"], b"\r\n\r\n", 1 << 20)  # lone CR, LF in values
def test_fast_decoding_gives_what_the_reference_parser_gives(frames, joint, max_frame):
    data = joint.join(frames) + b"\r\n\r\n"
    expected = reference_frames(data, max_frame)
    for cuts in ([], [1], [7]):
        got = []
        decoder = AmiDecoder(max_frame=max_frame, expect_banner=False)
        step = cuts[0] if cuts else len(data)
        for i in range(0, len(data), step):
            decoder.receive_data(data[i:i + step])
            while True:
                try:
                    frame = decoder.next_frame()
                except AmiProtocolError:
                    got.append("error")
                    continue
                if frame is None:
                    break
                got.append(frame)
        assert len(got) == len(expected)
        for ours, ref in zip(got, expected):
            if ref == "error":
                assert ours == "error"
            else:
                same_frame(ours, ref)


def test_wire_frames_are_read_lazily_and_match_the_reference():
    raw = b"Event: Hangup\r\nPrivilege: call,all\r\nTimestamp: 1795314899.5\r\nLinkedid: 17.1\r\nlinkedid: 2\r\n" \
          b"Cause-txt: Normal Clearing\r\nValue: a\nb: c\r\nCallerIDName: \xe5\xbc\xa0\xe4\xb8\x89\r\nEmpty:\r\n\r\n"
    decoder = AmiDecoder(expect_banner=False)
    decoder.receive_data(raw)
    frame = decoder.next_frame()
    assert type(frame) is not Frame  # the fast path took it
    same_frame(frame, parse_frame(raw[:-4]))
    assert frame["linkedid"] == "17.1" and frame.get_all("LINKEDID") == ["17.1", "2"]
    assert frame["Value"] == "a\nb: c" and frame.get("b") is None and frame["CallerIDName"] == "张三"
    assert frame["Empty"] == "" and frame.get("Missing", "d") == "d"
    with pytest.raises(AttributeError):
        frame.headers = ()  # type: ignore[misc]
    event = to_event(frame)
    assert (event.name, event.timestamp, event.linkedid, event.cause_text) == \
        ("Hangup", 1795314899.5, "17.1", "Normal Clearing")
    with pytest.raises(AttributeError):
        event.linkedid = "x"  # type: ignore[misc]


@pytest.mark.parametrize("raw", [
    b"Event: Hangup\r\nCause: x\r\n",           # a bad number: dropped at to_event, never met by a consumer
    b"Event: Hangup\r\nTimestamp: inf\r\n",
    b"Event: QueueCallerAbandon\r\nHoldTime: 1.5\r\n",
])
def test_bad_numbers_raise_at_to_event_not_later(raw):
    decoder = AmiDecoder(expect_banner=False)
    decoder.receive_data(raw + b"\r\n")
    frame = decoder.next_frame()
    with pytest.raises(AmiProtocolError):
        to_event(frame)


@pytest.mark.parametrize("bad", [b"Event: X\r\nno colon here\r\nA: b", b"Event: X\r\n: empty key", b"Event: X\r\n Key: v",
                                 b"Event: X\r\nKey : v", "Event: X\r\n\u00a0Key: v".encode()])
def test_malformed_lines_fail_at_decode_time_alone_or_among_good_frames(bad):
    good = b"Event: Good\r\nA: 1\r\n\r\n"
    decoder = AmiDecoder(expect_banner=False)
    decoder.receive_data(good + bad + b"\r\n\r\n" + good)
    assert decoder.next_frame().event == "Good"
    with pytest.raises(AmiProtocolError):
        decoder.next_frame()
    assert decoder.next_frame().event == "Good" and decoder.next_frame() is None


_TS_KEYS = st.sampled_from(["Timestamp", "timestamp", "TIMESTAMP", "TimeStamp", "Timestampx", "XTimestamp"])
_TS_VALUES = st.sampled_from(["1795314872.483114", " 1795314872.5", "", "12", "1e3", "nan", "abc", "7 "])


@settings(max_examples=300, deadline=None)
@given(lines=st.lists(st.tuples(_TS_KEYS, _TS_VALUES), max_size=4), first=st.booleans())
def test_event_timestamp_from_the_wire_is_what_the_reference_frame_gives(lines, first):
    """to_event reads Timestamp from a wire frame's bytes with a fast path: same value, or the
    same error, as the reference parser's frame, whatever the case, position and repeats."""
    body = [f"{k}: {v}" for k, v in lines]
    headers = (body + ["Event: Newchannel"]) if first else (["Event: Newchannel"] + body)
    raw = "\r\n".join(headers).encode()
    decoder = AmiDecoder(expect_banner=False)
    decoder.receive_data(raw + b"\r\n\r\n")
    (wire,) = list(decoder)
    reference = parse_frame(raw)

    def outcome(frame):
        try:
            return to_event(frame, received_at=1.0).timestamp
        except AmiProtocolError:
            return "error"

    assert outcome(wire) == outcome(reference)
