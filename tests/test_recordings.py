"""Recording integrity checks on the real MixMonitor capture and on files made here."""

from __future__ import annotations

import hashlib
import struct
import threading
import wave
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import recordings.check as check_mod
from recordings.check import (STATUSES, RecordingCheck, WavAudio, WavError, WavLayout, check_recording,
                              check_recordings, parse_wav_header, wav_audio)
from telephony.model import RecordingRef

from .conftest import FIXTURES

CAPTURE = FIXTURES / "answered.recording.wav"


def make_wav(path: Path, seconds: float, *, rate: int = 8000, channels: int = 1, width: int = 2) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(b"\x01\x00" * (int(seconds * rate) * channels * width // 2))
    return path


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_real_capture_is_ok():
    result = check_recording(CAPTURE)
    assert result == RecordingCheck(str(CAPTURE), 96044, result.duration_seconds, sha(CAPTURE), "ok")
    assert result.duration_seconds == pytest.approx((96044 - 44) / 16000, abs=0.01)  # ~6 s of 8 kHz 16-bit
    assert 5.9 < result.duration_seconds < 6.1


def test_real_capture_is_short_under_a_higher_minimum():
    assert check_recording(CAPTURE, min_seconds=10).status == "short"


def test_missing_file(tmp_path):
    path = tmp_path / "gone.wav"
    assert check_recording(path) == RecordingCheck(str(path), None, None, None, "missing")


def test_a_directory_is_not_a_recording(tmp_path):
    assert check_recording(tmp_path).status == "missing"


def test_path_with_nul_does_not_raise():
    assert check_recording("/tmp/a\x00b.wav").status == "missing"


@pytest.mark.parametrize("content", [b"", b"not a wav at all" * 100, b"RIFF\x00\x00\x00\x00WAVE", b"RIFF"])
def test_unreadable_wav_is_corrupt(tmp_path, content):
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    result = check_recording(path)
    assert result.status == "corrupt"
    assert result.bytes == len(content)
    assert result.sha256 == hashlib.sha256(content).hexdigest()
    assert result.duration_seconds is None


def test_truncated_capture_is_corrupt(tmp_path):
    data = CAPTURE.read_bytes()
    path = tmp_path / "cut.wav"
    path.write_bytes(data[: len(data) // 2])
    result = check_recording(path)
    assert result.status == "corrupt"
    assert result.bytes == len(data) // 2
    assert result.duration_seconds == pytest.approx(3.0, abs=0.05)  # the audio that is there


def test_short_wav(tmp_path):
    path = make_wav(tmp_path / "short.wav", 0.5)
    result = check_recording(path)
    assert (result.status, result.duration_seconds) == ("short", 0.5)
    assert result.bytes == path.stat().st_size and result.sha256 == sha(path)
    assert check_recording(path, min_seconds=0.5).status == "ok"


def test_empty_wav_is_short(tmp_path):
    result = check_recording(make_wav(tmp_path / "empty.wav", 0))
    assert (result.status, result.duration_seconds) == ("short", 0.0)


def test_stereo_wideband_duration(tmp_path):
    path = make_wav(tmp_path / "st.wav", 2.25, rate=16000, channels=2)
    assert check_recording(path).duration_seconds == 2.25


def test_large_file_is_hashed_in_chunks(tmp_path):
    path = make_wav(tmp_path / "long.wav", 120)  # ~1.9 MB, several reads
    result = check_recording(path)
    assert (result.status, result.duration_seconds, result.sha256) == ("ok", 120.0, sha(path))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(
    st.binary(max_size=200),
    st.binary(max_size=120).map(lambda tail: CAPTURE.read_bytes()[:44] + tail),
    st.tuples(st.integers(0, 200), st.binary(min_size=1, max_size=4)).map(
        lambda t: CAPTURE.read_bytes()[:t[0]] + t[1] + CAPTURE.read_bytes()[t[0] + len(t[1]):400]),
))
def test_any_bytes_give_a_verdict_never_an_exception(tmp_path, data):
    path = tmp_path / "fuzz.wav"
    path.write_bytes(data)
    result = check_recording(path)
    assert result.status in STATUSES and result.status != "missing"
    assert result.bytes == len(data)


async def test_check_recordings_keeps_order_and_runs_off_the_loop(tmp_path, monkeypatch):
    threads = []
    real = check_mod.check_recording

    def spy(path, min_seconds=1.0):
        threads.append(threading.get_ident())
        return real(path, min_seconds)

    monkeypatch.setattr(check_mod, "check_recording", spy)
    short = make_wav(tmp_path / "s.wav", 0.2)
    refs = [RecordingRef(str(CAPTURE), "u1", 1.0), RecordingRef(str(tmp_path / "none.wav"), "u2", 2.0),
            RecordingRef(str(short), "u3", 3.0)]
    results = await check_recordings(refs, 1.0)
    assert [r.path for r in results] == [r.path for r in refs]
    assert [r.status for r in results] == ["ok", "missing", "short"]
    assert threading.get_ident() not in threads and len(threads) == 3
    assert await check_recordings([], 1.0) == []


# --- Asterisk's format_wav: zero sizes until MixMonitor closes the file ----------------------

def unfinalised(data: bytes) -> bytes:
    """The capture as format_wav leaves it while MixMonitor still writes: RIFF and data sizes 0."""
    return data[:4] + b"\x00\x00\x00\x00" + data[8:40] + b"\x00\x00\x00\x00" + data[44:]


def test_unfinalised_header_is_reported_unfinished_with_the_audio_present(tmp_path):
    path = tmp_path / "open.wav"
    path.write_bytes(unfinalised(CAPTURE.read_bytes()))
    result = check_recording(path)
    assert (result.status, result.finished) == ("corrupt", False)
    assert result.duration_seconds == pytest.approx(6.0, abs=0.01)


def test_header_only_file_is_finished_and_short(tmp_path):
    path = tmp_path / "empty.wav"
    path.write_bytes(CAPTURE.read_bytes()[:40] + b"\x00\x00\x00\x00")
    result = check_recording(path)
    assert (result.status, result.finished, result.duration_seconds) == ("short", True, 0.0)


async def test_check_waits_for_mixmonitor_to_finalise_the_file(tmp_path, monkeypatch):
    path = tmp_path / "closing.wav"
    final = CAPTURE.read_bytes()
    path.write_bytes(unfinalised(final))
    looks = []
    real = check_mod.check_recording

    def first_look_then_close(p, min_seconds=1.0):
        result = real(p, min_seconds)
        looks.append(result)
        if len(looks) == 1:
            path.write_bytes(final)  # MixMonitor's thread closes the file right after our first look
        return result

    monkeypatch.setattr(check_mod, "check_recording", first_look_then_close)
    [result] = await check_recordings([RecordingRef(str(path), "u1", 1.0)], settle_attempts=5, settle_delay=0)
    assert [r.finished for r in looks] == [False, True]
    assert result == RecordingCheck(str(path), len(final), result.duration_seconds, sha(CAPTURE), "ok")


async def test_header_never_finalised_ends_corrupt_after_the_settle_attempts(tmp_path, monkeypatch):
    path = tmp_path / "dead.wav"
    path.write_bytes(unfinalised(CAPTURE.read_bytes()))
    calls = []
    real = check_mod.check_recording
    monkeypatch.setattr(check_mod, "check_recording", lambda p, m=1.0: calls.append(p) or real(p, m))
    [result] = await check_recordings([RecordingRef(str(path), "u1", 1.0)], settle_attempts=3, settle_delay=0)
    assert len(calls) == 4 and (result.status, result.finished) == ("corrupt", False)
    assert result.sha256 == sha(path)


def _riff(*chunks: bytes) -> bytes:
    body = b"WAVE" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _chunk(cid: bytes, data: bytes) -> bytes:
    return cid + struct.pack("<I", len(data)) + data + (b"\x00" if len(data) & 1 else b"")


def test_extensible_pcm_and_chunks_before_data_are_read(tmp_path):
    pcm_guid = struct.pack("<H", 1) + b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
    fmt = struct.pack("<HHIIHH", 0xFFFE, 1, 16000, 32000, 2, 16) + struct.pack("<HHI", 22, 16, 4) + pcm_guid
    path = tmp_path / "ext.wav"
    path.write_bytes(_riff(_chunk(b"fmt ", fmt), _chunk(b"LIST", b"INFOISFT\x03\x00\x00\x00ab\x00"),
                           _chunk(b"data", b"\x00\x01" * 32000)))
    result = check_recording(path)
    assert (result.status, result.duration_seconds) == ("ok", 2.0)


@pytest.mark.parametrize("tag", [0x0031, 0x0003, 0x0006])  # GSM (wav49), float, A-law
def test_non_pcm_wav_is_corrupt(tmp_path, tag):
    fmt = struct.pack("<HHIIHH", tag, 1, 8000, 16000, 2, 16)
    path = tmp_path / "gsm.wav"
    path.write_bytes(_riff(_chunk(b"fmt ", fmt), _chunk(b"data", b"\x00" * 32000)))
    assert check_recording(path).status == "corrupt"


def test_header_parser_without_io():
    layout = parse_wav_header(CAPTURE.read_bytes()[:100])
    assert layout == WavLayout(channels=1, rate=8000, frame_bytes=2, data_offset=44, data_declared=96000)
    assert wav_audio(layout, 96044) == WavAudio(6.0, whole=True, finished=True)
    assert wav_audio(layout, 48044) == WavAudio(3.0, whole=False, finished=True)
    with pytest.raises(WavError, match="before fmt"):
        parse_wav_header(_riff(_chunk(b"data", b"\x00\x00")))
    with pytest.raises(WavError, match="no data chunk"):
        parse_wav_header(_riff(_chunk(b"fmt ", struct.pack("<HHIIHH", 1, 1, 8000, 16000, 2, 16))))
