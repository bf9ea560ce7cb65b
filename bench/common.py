"""Helpers shared by the benchmarks: one JSON line per result on stdout, progress on stderr."""

from __future__ import annotations

import json
import math
import os
import socket
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CAPTURES = ROOT / "tests" / "fixtures" / "asterisk-22"


def progress(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def emit(result: dict) -> None:
    """One benchmark result: a single JSON object on one line of stdout.

    ``loadavg_1m`` is added: this 2-core machine may be shared, and a busy machine slows every number."""
    result.setdefault("loadavg_1m", round(os.getloadavg()[0], 2))
    print(json.dumps(result, ensure_ascii=False, sort_keys=False), flush=True)


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def r(x: float, digits: int = 3) -> float:
    return round(float(x), digits)
