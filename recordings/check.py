"""Integrity check of a finished MixMonitor file: size, SHA-256, duration, and a verdict.

How this works: ``check_recording`` stats the file ('missing' if there is no regular file),
reads its head and hashes it streamed, and ``parse_wav_header`` (no I/O) walks the RIFF chunks
to the PCM ``fmt `` and ``data`` chunks. The audio present is what the file holds after the
data chunk's start, never more than the header promises. Verdicts: 'corrupt' if it is not a
PCM WAV, if it holds less audio than its header promises (a truncated file), or if its header
was never finalised; 'short' if the audio lasts less than ``min_seconds``; else 'ok'. It never
raises for a bad file: every problem is a verdict.

Asterisk's format_wav writes the header with zero sizes when MixMonitor opens the file and the
real sizes only when it closes it, which happens in MixMonitor's own thread shortly after the
channel hangs up, possibly after the Hangup event reached us. Such a file is reported with
``finished=False``; ``check_recordings`` (which runs the checks in threads, off the event loop)
checks it again a few times before taking the verdict, so a recording is neither judged nor
hashed while MixMonitor is still closing it. (Asterisk's ``wav49``/GSM files are not PCM and
are judged 'corrupt'; record as ``wav``.)
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
import struct
from dataclasses import dataclass
from typing import Sequence

from telephony.model import RecordingRef

OK, MISSING, SHORT, CORRUPT = "ok", "missing", "short", "corrupt"
STATUSES = (OK, MISSING, SHORT, CORRUPT)
HEAD_BYTES = 64 * 1024  # the data chunk must start within this many bytes
_PCM, _EXTENSIBLE = 0x0001, 0xFFFE
_PLACEHOLDER = 0xFFFFFFFF  # "size unknown", written by some streaming writers


@dataclass(frozen=True, slots=True)
class RecordingCheck:
    path: str
    bytes: int | None             # file size; None when missing
    duration_seconds: float | None  # audio present; None when missing or unreadable
    sha256: str | None            # hex digest of the whole file; None when missing or unreadable
    status: str                   # one of STATUSES
    finished: bool = True         # False: the WAV header was not finalised (still being written?)


class WavError(ValueError):
    """Not a PCM WAV file."""


@dataclass(frozen=True, slots=True)
class WavLayout:
    channels: int
    rate: int
    frame_bytes: int      # bytes per frame (all channels of one sample)
    data_offset: int      # where the audio starts
    data_declared: int    # the data chunk's size as the header states it


@dataclass(frozen=True, slots=True)
class WavAudio:
    seconds: float        # audio present
    whole: bool           # the header's promise is all there
    finished: bool        # the header carries real sizes


def parse_wav_header(head: bytes) -> WavLayout:
    """The layout of a PCM WAV from its first bytes (up to the data chunk's header)."""
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        raise WavError("no RIFF/WAVE header")
    pos, fmt = 12, None
    while pos + 8 <= len(head):
        chunk_id, size = head[pos:pos + 4], struct.unpack_from("<I", head, pos + 4)[0]
        body = pos + 8
        if chunk_id == b"fmt ":
            fmt = _parse_fmt(head[body:body + size], size)
        elif chunk_id == b"data":
            if fmt is None:
                raise WavError("data chunk before fmt chunk")
            channels, rate, frame_bytes = fmt
            return WavLayout(channels, rate, frame_bytes, body, size)
        pos = body + size + (size & 1)
    raise WavError("no data chunk in the file's head")


def _parse_fmt(body: bytes, size: int) -> tuple[int, int, int]:
    if size < 16 or len(body) < 16:
        raise WavError("fmt chunk too short")
    tag, channels, rate, _byte_rate, _align, bits = struct.unpack_from("<HHIIHH", body)
    if tag == _EXTENSIBLE:
        if len(body) < 26:
            raise WavError("extensible fmt chunk too short")
        tag = struct.unpack_from("<H", body, 24)[0]  # first two bytes of the SubFormat GUID
    if tag != _PCM:
        raise WavError(f"not PCM (format tag {tag:#06x})")
    if channels < 1 or rate < 1 or bits not in (8, 16, 24, 32):
        raise WavError(f"bad PCM parameters: {channels} channels, {rate} Hz, {bits} bits")
    return channels, rate, channels * bits // 8


def wav_audio(layout: WavLayout, file_size: int) -> WavAudio:
    """How much audio a file of ``file_size`` bytes with this header holds."""
    present = max(0, file_size - layout.data_offset)
    declared = layout.data_declared
    unfinalised = declared == _PLACEHOLDER or (declared == 0 and present > 0)
    usable = present if unfinalised else min(present, declared)
    seconds = round(usable // layout.frame_bytes / layout.rate, 3)
    return WavAudio(seconds, whole=unfinalised or present >= declared, finished=not unfinalised)


def check_recording(path: str | os.PathLike[str], min_seconds: float = 1.0) -> RecordingCheck:
    path = os.fspath(path)
    try:
        info = os.stat(path)
    except (OSError, ValueError):  # no such file, bad path, embedded NUL
        return RecordingCheck(path, None, None, None, MISSING)
    if not stat.S_ISREG(info.st_mode):
        return RecordingCheck(path, None, None, None, MISSING)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(HEAD_BYTES)
            f.seek(0)
            digest = hashlib.file_digest(f, "sha256").hexdigest()
    except OSError:  # exists but cannot be read
        return RecordingCheck(path, info.st_size, None, None, CORRUPT)
    try:
        audio = wav_audio(parse_wav_header(head), size)
    except (WavError, struct.error):
        return RecordingCheck(path, size, None, digest, CORRUPT)
    if not (audio.whole and audio.finished):
        return RecordingCheck(path, size, audio.seconds, digest, CORRUPT, audio.finished)
    return RecordingCheck(path, size, audio.seconds, digest, SHORT if audio.seconds < min_seconds else OK)


async def check_recordings(refs: Sequence[RecordingRef], min_seconds: float = 1.0, *,
                           settle_attempts: int = 10, settle_delay: float = 0.3) -> list[RecordingCheck]:
    """Check the recordings of one call, each in a worker thread; results in the order of ``refs``.

    A file whose header is not finalised yet is checked again, up to ``settle_attempts`` more
    times ``settle_delay`` s apart (MixMonitor may still be closing it); then its verdict stands.
    """
    async def one(path: str) -> RecordingCheck:
        return await asyncio.to_thread(check_recording, path, min_seconds)

    results = list(await asyncio.gather(*(one(ref.path) for ref in refs)))
    for _ in range(settle_attempts):
        pending = [i for i, r in enumerate(results) if not r.finished]
        if not pending:
            break
        await asyncio.sleep(settle_delay)
        for i, result in zip(pending, await asyncio.gather(*(one(results[i].path) for i in pending))):
            results[i] = result
    return results
