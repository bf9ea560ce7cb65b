"""Faults that need real service processes: SIGKILL and restart, and a node taken over by a second
instance. The simulator runs in the test; each service is ``python -m hotline.cli serve`` with a
TOML file and its secrets in the environment, as a site runs it. The assertion is the one of
tests/test_faults.py: every call the simulator placed has exactly one row with the right outcome.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis

from telephony.simulator import PbxSimulator, ScriptedCaller
from tests.conftest import REDIS_URL
from tests.support import free_port, wait_until
from tests.test_faults import SECRET, Scene, assert_each_call_once, scene_settings, simulator

pytestmark = pytest.mark.fault

ROOT = Path(__file__).resolve().parent.parent
LEASE_TTL = 2.0


class ServiceProcess:
    """One ``hotline serve`` process of the test's own."""

    def __init__(self, name: str, tmp: Path, node_id: str, pg_dsn: str, ami_port: int, agi_port: int,
                 lease_ttl: float | None = LEASE_TTL) -> None:
        self.name = name
        self.http_port = free_port()
        self.log_path = tmp / f"{name}.log"
        self.config = tmp / f"{name}.toml"
        settings = scene_settings(node_id, pg_dsn, tmp, agi_port, ami_port)
        queues = "\n".join(
            f'[[queues]]\nname = "{q.name}"\npurpose = "{q.purpose}"\ncategory = "{q.category}"\nmax_wait = {q.max_wait}\n'
            for q in settings.queues)
        seats = "\n".join(f'[[seats]]\ninterface = "{s.interface}"\nname = "{s.name}"\n' for s in settings.seats)
        self.config.write_text(
            f'node_id = "{node_id}"\nrecordings_dir = "{tmp}"\nlog_level = "INFO"\n'
            + (f"lease_ttl = {lease_ttl}\n" if lease_ttl is not None else "")
            + f'[ami]\nhost = "127.0.0.1"\nport = {ami_port}\nconnect_timeout = 2\naction_timeout = 3\n'
            f'[agi]\nlisten_host = "127.0.0.1"\nlisten_port = {agi_port}\n'
            f'[http]\nhost = "127.0.0.1"\nport = {self.http_port}\n{queues}\n{seats}')
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("HOTLINE_")}
        self.env.update(HOTLINE_AMI__SECRET=SECRET, HOTLINE_DATABASE_URL=pg_dsn, HOTLINE_REDIS_URL=REDIS_URL,
                        PYTHONPATH=str(ROOT))
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "hotline.cli", "--config", str(self.config), "serve"],
                                     cwd=ROOT, env=self.env, stdout=log, stderr=log)
        log.close()

    async def health(self) -> dict | None:
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as http:
                async with http.get(f"http://127.0.0.1:{self.http_port}/health") as resp:
                    return await resp.json()
        except (aiohttp.ClientError, asyncio.TimeoutError):
            return None

    async def consuming(self, node_id: str) -> bool:
        health = await self.health()
        node = (health or {}).get("nodes", {}).get(node_id, {})
        return bool(node.get("active") and node.get("ami_connected"))

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


async def open_calls(node_id: str) -> list[dict]:
    """The calls in progress as the consuming instance last saved them in Redis."""
    client = aioredis.from_url(REDIS_URL, decode_responses=True)
    try:
        return [json.loads(v) for v in (await client.hgetall(f"hotline:{node_id}:open")).values()]
    finally:
        await client.aclose()


async def saved_talking_and_waiting(node_id: str) -> bool:
    calls = await open_calls(node_id)
    return (sum(c["answered_at"] is not None for c in calls) >= 4
            and sum(bool(c["joined"]) and c["queue"] == "hotline-business" for c in calls) >= 3)


@pytest.fixture
async def scene(pg_dsn, node_id, tmp_path, pg_pool):
    """A simulator on fixed ports and a factory of service processes; everything stopped at the end."""
    agi_port, ami_port = free_port(), free_port()
    settings = scene_settings(node_id, pg_dsn, tmp_path, agi_port, ami_port)
    sim: PbxSimulator = simulator(settings, tmp_path, agi_port, ami_port)
    await sim.start()
    services: list[ServiceProcess] = []

    def service(name: str, agi: int = agi_port, lease_ttl: float | None = LEASE_TTL) -> ServiceProcess:
        proc = ServiceProcess(name, tmp_path, node_id, pg_dsn, ami_port, agi, lease_ttl)
        services.append(proc)
        proc.start()
        return proc

    try:
        yield sim, service
    except BaseException:
        for proc in services:
            print(f"--- {proc.name} log ---\n{proc.log()[-6000:]}")
        raise
    finally:
        for proc in services:
            proc.stop()
        await sim.stop()


async def test_service_sigkill_and_restart_mid_call(scene, pg_dsn, node_id):
    sim, service = scene
    first = service("first")
    await wait_until(lambda: first.consuming(node_id), 30, "the first service consuming the node")
    calls = Scene(sim)
    await calls.first_wave()
    await wait_until(lambda: saved_talking_and_waiting(node_id), 30, "calls talking and waiting, saved in Redis")
    first.kill()                                  # SIGKILL: no goodbye, the lease is left to expire
    await wait_until(lambda: sum(r.outcome in ("answered", "abandoned") for r in sim.results.values()) >= 4,
                     30, "calls ending while no service runs")
    await calls.second_wave()                     # IVR unreachable: the dialplan's fallback queue
    second = service("second")
    await wait_until(lambda: second.consuming(node_id), 30, "the restarted service consuming the node")
    rows = await assert_each_call_once(pg_dsn, node_id, sim, calls.placed)
    assert any(r["closed_by"] == "resync" for r in rows)   # calls that ended while no one listened
    assert "recovered" in second.log()


async def test_node_takeover_between_two_processes(scene, pg_dsn, node_id):
    sim, service = scene
    active = service("active", lease_ttl=None)            # the default lease: the takeover time a site gets
    await wait_until(lambda: active.consuming(node_id), 30, "the first instance consuming the node")
    standby = service("standby", agi=free_port(), lease_ttl=None)
    await wait_until(lambda: standby.health(), 30, "the standby instance up")
    assert not await standby.consuming(node_id)   # one consumer per node
    calls = Scene(sim)
    await calls.first_wave()
    await wait_until(lambda: saved_talking_and_waiting(node_id), 30, "calls talking and waiting, saved in Redis")
    active.kill()
    killed = time.monotonic()
    await calls.second_wave()
    # Calls that start and end inside the lease gap: only the standby's own view has them.
    await calls.place([ScriptedCaller(number=f"1370000{i:04d}", dtmf="1", patience=5.0) for i in range(3)])
    await wait_until(lambda: standby.consuming(node_id), 10, "the standby taking the node over within 10 s")
    took = time.monotonic() - killed
    await assert_each_call_once(pg_dsn, node_id, sim, calls.placed)
    print(f"takeover after {took:.2f} s")
    handed = re.search(r"recovered \d+ calls in progress, \d+ finished calls not yet written and (\d+) calls "
                       r"seen finishing while following", standby.log())
    assert handed and int(handed.group(1)) >= 1   # the standby's own view filled the lease gap
