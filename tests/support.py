"""Helpers shared by the tests: free ports, waiting on a condition, a private redis-server."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import socket
import subprocess
from pathlib import Path

import redis.asyncio as aioredis


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def wait_until(predicate, timeout: float = 10.0, what: str = "a condition") -> None:
    """Poll ``predicate`` (plain or async) until it is true; AssertionError after ``timeout`` s,
    also when the predicate itself hangs (an await on a dead service)."""
    async def poll() -> None:
        while True:
            value = predicate()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return
            await asyncio.sleep(0.02)

    try:
        await asyncio.wait_for(poll(), timeout)
    except asyncio.TimeoutError:
        raise AssertionError(f"timed out after {timeout} s waiting for {what}") from None


async def until(predicate, what: str, timeout: float = 30.0) -> None:
    """``wait_until`` with the description first: the limit only turns a hang into a clear failure."""
    await wait_until(predicate, timeout, what)


@contextlib.asynccontextmanager
async def running(worker):
    """Run ``worker.run()`` as a task for the block's duration (a writer, live views, ...)."""
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


class PrivateRedis:
    """A redis-server of the test's own (no persistence) that the test may kill and start again
    on the same port: a real Redis outage that touches no other test."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.directory = directory
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    async def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        probe = aioredis.from_url(self.url)
        try:
            for _ in range(400):
                try:
                    await probe.ping()
                    return
                except Exception:  # noqa: BLE001 - not up yet
                    if self.proc.poll() is not None:
                        break
                    await asyncio.sleep(0.025)
            raise RuntimeError(f"private redis-server on port {self.port} did not start")
        finally:
            await probe.aclose()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
