"""Any input either parses or raises the project's own protocol error; injection never reaches the wire."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telephony.agi_protocol import AgiReplyReader, parse_headers
from telephony.ami_codec import AmiDecoder, encode_action, parse_frame
from telephony.errors import AgiProtocolError, AmiProtocolError, UnsafeValue
from telephony.events import to_event
from tests.conftest import capture

ANSWERED = capture("answered.ami")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000), st.integers(min_value=1, max_value=64))
def test_ami_decoder_random_bytes(data, chunk):
    decoder = AmiDecoder()
    for i in range(0, len(data), chunk):
        decoder.receive_data(data[i:i + chunk])
        for _ in range(1000):
            try:
                frame = decoder.next_frame()
            except AmiProtocolError:
                continue
            if frame is None:
                break
            if frame.event:
                try:
                    to_event(frame)
                except AmiProtocolError:
                    pass


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=len(ANSWERED) - 1), st.binary(min_size=1, max_size=20))
def test_ami_decoder_corrupted_capture_recovers(pos, junk):
    data = ANSWERED[:pos] + junk + ANSWERED[pos:]
    decoder = AmiDecoder()
    decoder.receive_data(data)
    good = 0
    for _ in range(10000):
        try:
            frame = decoder.next_frame()
        except AmiProtocolError:
            continue
        if frame is None:
            break
        good += 1
    # one corrupted spot costs at most the frames around it, never the rest of the stream
    assert good >= 230


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
