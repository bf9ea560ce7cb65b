"""From a finished call to its rows: check recordings, write the call and its order, then tell.

How this works: the tracker submits finished calls without waiting; ``workers`` tasks take them
in turn, check the recording files (in a thread), and write through CallStore, which is
idempotent on (node, linkedid). A Postgres that is down or restarting is retried with capped
backoff until the call is written: the call is never dropped. After the write, the live views
and the ``on_written`` callback (the per-call log line) are told.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

import asyncpg

from recordings.check import check_recordings
from telephony.ami_client import backoff_delay
from telephony.model import FinishedCall
from workorders.store import CallStore

log = logging.getLogger("hotline.writer")

_TRANSIENT = (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
              asyncpg.CannotConnectNowError, asyncpg.TooManyConnectionsError, asyncio.TimeoutError)
MAX_DATA_FAILURES = 5


class CallWriter:
    def __init__(
        self,
        store: CallStore,
        *,
        min_recording_seconds: float = 1.0,
        on_written: Callable | None = None,
        workers: int = 4,
    ) -> None:
        self.store = store
        self.min_recording_seconds = min_recording_seconds
        self.on_written = on_written
        self.workers = workers
        self._queue: asyncio.Queue[FinishedCall] = asyncio.Queue()
        self.written = 0
        self.failed: list[FinishedCall] = []
        self.in_flight = 0

    def submit(self, call: FinishedCall) -> None:
        self._queue.put_nowait(call)

    @property
    def backlog(self) -> int:
        return self._queue.qsize() + self.in_flight

    async def run(self) -> None:
        await asyncio.gather(*(self._worker() for _ in range(self.workers)))

    async def _worker(self) -> None:
        while True:
            call = await self._queue.get()
            self.in_flight += 1
            try:
                await self._write(call)
            finally:
                self.in_flight -= 1

    async def _write(self, call: FinishedCall) -> None:
        checks = await check_recordings(call.recordings, self.min_recording_seconds)
        attempt = failures = 0
        while True:
            try:
                result = await self.store.record_call(call, checks)
                break
            except _TRANSIENT as exc:
                reason = f"Postgres unavailable ({exc})"
            except Exception as exc:  # noqa: BLE001 - a data error must not kill the worker
                failures += 1
                log.exception("writer: call %s could not be written", call.linkedid)
                if failures >= MAX_DATA_FAILURES:
                    self.failed.append(call)
                    log.error("writer: call %s kept failing; held in memory for an operator: %r", call.linkedid, call)
                    return
                reason = f"{type(exc).__name__}: {exc}"
            delay = backoff_delay(attempt, base=0.2, cap=10.0)
            attempt += 1
            log.warning("writer: call %s retried in %.1f s: %s", call.linkedid, delay, reason)
            await asyncio.sleep(delay)
        self.written += 1
        if self.on_written is not None:
            try:
                self.on_written(call, result, checks)
            except Exception:  # noqa: BLE001 - a reporting failure must not stop the writer
                log.exception("writer: on_written failed for %s", call.linkedid)
