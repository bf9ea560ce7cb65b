"""MixMonitor's file: 8 kHz, 16-bit, mono PCM WAV holding a quiet 440 Hz tone.

``start_file`` leaves a header-only WAV where MixMonitor would have opened its file;
``finish_file`` writes the whole recording to a temporary name in the same directory and
renames it over, so a reader never sees a half-written file. Both are blocking (run them in a
thread); the duration is capped so a stuck call cannot fill the disk.
"""

from __future__ import annotations

import math
import os
import struct
import wave
from pathlib import Path

RATE = 8000
MAX_SECONDS = 4 * 3600
_AMPLITUDE = 1200  # quiet: about -29 dBFS
_PERIOD = [int(_AMPLITUDE * math.sin(2 * math.pi * 440 * i / RATE)) for i in range(RATE // 40)]  # 440 Hz: 40 cycles/s
_CHUNK = struct.pack(f"<{len(_PERIOD)}h", *_PERIOD)  # 1/40 s of tone, a whole number of cycles


def _write(path: Path, seconds: float) -> None:
    frames = int(RATE * min(max(seconds, 0.0), MAX_SECONDS))
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        per_chunk = len(_PERIOD)
        whole, rest = divmod(frames, per_chunk)
        block = _CHUNK * 40  # one second
        for _ in range(whole // 40):
            w.writeframesraw(block)
        for _ in range(whole % 40):
            w.writeframesraw(_CHUNK)
        if rest:
            w.writeframesraw(_CHUNK[: rest * 2])


def start_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        _write(path, 0.0)


def finish_file(path: Path, seconds: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    try:
        _write(tmp, seconds)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
