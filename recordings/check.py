"""Integrity check of a finished MixMonitor file: size, SHA-256, duration, and a verdict.

How this works: ``check_recording`` stats the file ('missing' if there is no regular file),
hashes it streamed in chunks, then reads it with the stdlib ``wave`` module, counting the audio
frames actually present. Verdicts: 'corrupt' if it is not a readable PCM WAV or its data chunk
holds fewer frames than its header promises (a truncated file), 'short' if the audio lasts less
than ``min_seconds``, else 'ok'. It never raises for a bad file: every problem is a verdict.
``check_recordings`` runs the checks of one call in threads, off the event loop.
(Asterisk's ``wav49``/GSM files are not PCM and would be judged 'corrupt'; record as ``wav``.)
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
import wave
from dataclasses import dataclass
from typing import Sequence

from telephony.model import RecordingRef

OK, MISSING, SHORT, CORRUPT = "ok", "missing", "short", "corrupt"
STATUSES = (OK, MISSING, SHORT, CORRUPT)
_FRAMES_PER_READ = 1 << 16


@dataclass(frozen=True, slots=True)
class RecordingCheck:
    path: str
    bytes: int | None             # file size; None when missing
    duration_seconds: float | None  # audio present; None when missing or unreadable
    sha256: str | None            # hex digest of the whole file; None when missing or unreadable
    status: str                   # one of STATUSES


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
            digest = hashlib.file_digest(f, "sha256").hexdigest()
    except OSError:  # exists but cannot be read
        return RecordingCheck(path, info.st_size, None, None, CORRUPT)
    duration, whole = _wav_duration(path)
    if duration is None or not whole:
        return RecordingCheck(path, size, duration, digest, CORRUPT)
    return RecordingCheck(path, size, duration, digest, SHORT if duration < min_seconds else OK)


def _wav_duration(path: str) -> tuple[float | None, bool]:
    """(seconds of audio present, whether the header's frame count is all there)."""
    try:
        with wave.open(path, "rb") as w:
            frame_size = w.getnchannels() * w.getsampwidth()
            rate = w.getframerate()
            if frame_size <= 0 or rate <= 0:
                return None, False
            promised = w.getnframes()
            present = 0
            while chunk := w.readframes(_FRAMES_PER_READ):
                present += len(chunk) // frame_size
    except Exception:  # noqa: BLE001 - wave raises Error, EOFError, struct.error, ...: all mean unreadable
        return None, False
    return round(present / rate, 3), present >= promised


async def check_recordings(refs: Sequence[RecordingRef], min_seconds: float = 1.0) -> list[RecordingCheck]:
    """Check the recordings of one call, each in a worker thread; results in the order of ``refs``."""
    return list(await asyncio.gather(*(asyncio.to_thread(check_recording, ref.path, min_seconds) for ref in refs)))
