"""From a finished call to its rows: check recordings, write the call and its order, then tell.

How this works: the tracker submits finished calls without waiting; ``workers`` tasks take them
in turn, check the recording files (in threads, off the event loop), and write through
CallStore, which is idempotent on (node, linkedid) and writes each call in one transaction.
Every attempt has a time limit (``write_timeout``): a hung connection or a lock that is never
released cannot block a worker forever. Errors that a Postgres outage, restart, fail-over or
overload causes (connection lost, shutdown, starting up, too many connections, deadlock or
serialization failure, a timed-out attempt) are retried with capped backoff for as long as they
last: the call is never dropped. Any other error is a data error: retried a few times, then the
call is held in ``failed`` for an operator and the worker goes on with the next call. After the
write, the ``on_written`` callback (live views, the per-call log line) is told.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

import asyncpg
from asyncpg import exceptions as pgerr

from recordings.check import check_recordings
from telephony.ami_client import backoff_delay
from telephony.model import FinishedCall
from workorders.store import CallStore

log = logging.getLogger("hotline.writer")

# Errors that say "Postgres is not usable right now", not "this call cannot be written".
TRANSIENT = (
    OSError, asyncio.TimeoutError,
    asyncpg.InterfaceError,                  # connection closed under us, pool closing, ...
    asyncpg.PostgresConnectionError,         # class 08: connection failure / does not exist
    pgerr.OperatorInterventionError,         # class 57: admin/crash shutdown, starting up, cancelled
    pgerr.InsufficientResourcesError,        # class 53: too many connections, disk full, out of memory
    pgerr.TransactionRollbackError,          # class 40: serialization failure, deadlock detected
    pgerr.LockNotAvailableError,             # 55P03
    pgerr.ReadOnlySQLTransactionError,       # 25006: a fail-over still pointing at a standby
    pgerr.ObjectNotInPrerequisiteStateError,  # 55000: "database is not currently accepting connections"
)
MAX_DATA_FAILURES = 5


class CallWriter:
    def __init__(
        self,
        store: CallStore,
        *,
        min_recording_seconds: float = 1.0,
        on_written: Callable | None = None,
        workers: int = 4,
        write_timeout: float = 30.0,
        retry_cap: float = 10.0,
    ) -> None:
        self.store = store
        self.min_recording_seconds = min_recording_seconds
        self.on_written = on_written
        self.workers = workers
        self.write_timeout = write_timeout
        self.retry_cap = retry_cap
        self._queue: asyncio.Queue[tuple[FinishedCall, Callable[[], Awaitable[None]] | None]] = asyncio.Queue()
        self.written = 0
        self.failed: list[FinishedCall] = []
        self.in_flight = 0
        self.retries = 0

    def submit(self, call: FinishedCall, committed: Callable[[], Awaitable[None]] | None = None) -> None:
        """Queue a call for writing; ``committed`` is awaited once it is in Postgres (e.g. the
        journal's ack). A call held as failed never calls it, so its journal entry stays."""
        self._queue.put_nowait((call, committed))

    @property
    def backlog(self) -> int:
        return self._queue.qsize() + self.in_flight

    async def run(self) -> None:
        await asyncio.gather(*(self._worker() for _ in range(self.workers)))

    async def drain(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` s) until every submitted call was written or held; True if so."""
        try:
            await asyncio.wait_for(self._queue.join(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    async def _worker(self) -> None:
        while True:
            call, committed = await self._queue.get()
            self.in_flight += 1
            try:
                if await self._write(call) and committed is not None:
                    await committed()
            except Exception:  # noqa: BLE001 - nothing may kill a worker; the call is held, not lost
                log.exception("writer: call %s could not be handled; held in memory for an operator", call.linkedid)
                self.failed.append(call)
            finally:
                self.in_flight -= 1
                self._queue.task_done()

    async def _write(self, call: FinishedCall) -> bool:
        """Write one call; True once it is committed (or was already), False if held as failed."""
        checks = await check_recordings(call.recordings, self.min_recording_seconds)
        attempt = failures = 0
        while True:
            try:
                result = await asyncio.wait_for(self.store.record_call(call, checks), self.write_timeout)
                break
            except TRANSIENT as exc:
                reason = f"Postgres unavailable ({type(exc).__name__}: {exc})"
            except Exception as exc:  # noqa: BLE001 - a data error must not kill the worker
                failures += 1
                log.exception("writer: call %s could not be written", call.linkedid)
                if failures >= MAX_DATA_FAILURES:
                    self.failed.append(call)
                    log.error("writer: call %s kept failing; held in memory for an operator: %r", call.linkedid, call)
                    return False
                reason = f"{type(exc).__name__}: {exc}"
            delay = backoff_delay(attempt, base=0.2, cap=self.retry_cap)
            attempt += 1
            self.retries += 1
            log.warning("writer: call %s retried in %.1f s: %s", call.linkedid, delay, reason)
            await asyncio.sleep(delay)
        self.written += 1
        if self.on_written is not None:
            try:
                self.on_written(call, result, checks)
            except Exception:  # noqa: BLE001 - a reporting failure must not stop the writer
                log.exception("writer: on_written failed for %s", call.linkedid)
        return True
