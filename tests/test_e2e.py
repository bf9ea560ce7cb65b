"""End to end: the service with the PBX simulator, real Postgres and real Redis, 30 mixed calls."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import time
from pathlib import Path

import pytest
from pydantic import SecretStr

from config.settings import QueueConfig, SeatConfig, Settings
from hotline.service import HotlineService
from telephony.simulator import PbxSimulator, ScriptedCaller, SeatBehaviour
from tests.conftest import REDIS_URL

from tests.flows import install_flow, menu_flow

pytestmark = pytest.mark.e2e

SPEED = 50.0


def e2e_settings(node_id: str, pg_dsn: str, recordings: Path, agi_port: int) -> Settings:
    return Settings(
        node_id=node_id,
        database_url=pg_dsn,
        redis_url=REDIS_URL,
        recordings_dir=recordings,
        min_recording_seconds=1.0,
        agi={"listen_host": "127.0.0.1", "listen_port": agi_port},
        queues=[
            QueueConfig(name="hotline-general", category="general", max_wait=300),
            QueueConfig(name="hotline-business", purpose="business", category="business_environment", max_wait=300),
            QueueConfig(name="hotline-typhoon", purpose="special", category="typhoon", max_wait=8),
        ],
        seats=[SeatConfig(interface=f"PJSIP/80{i:02d}", name=f"Seat 80{i:02d}", queues=["hotline-general"])
               for i in range(1, 5)],
    )


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def scripted_callers(rng: random.Random) -> list[tuple[ScriptedCaller, str]]:
    """30 callers and the outcome each is scripted for; 10 numbers, so many are repeat callers."""
    numbers = [f"1380013{n:04d}" for n in range(10)]
    plan = (["answered"] * 16) + (["abandoned"] * 6) + (["ivr_hangup"] * 5) + (["queue_timeout"] * 3)
    rng.shuffle(plan)
    callers = []
    for i, outcome in enumerate(plan):
        number = numbers[i % len(numbers)]
        if outcome == "answered":        # general queue, 4 seats, waits as long as it takes
            caller = ScriptedCaller(number=number, name=f"市民{i}", dtmf=rng.choice(["1", None]), dtmf_delay=0.5,
                                    patience=None)
        elif outcome == "abandoned":     # business queue has no seat: waits 25 s, hangs up
            caller = ScriptedCaller(number=number, name=f"市民{i}", dtmf="2", dtmf_delay=0.5, patience=25)
        elif outcome == "queue_timeout":  # typhoon line has no seat and an 8 s max wait
            caller = ScriptedCaller(number=number, name=f"市民{i}", dtmf="3", dtmf_delay=0.5, patience=None)
        else:                             # hangs up during the greeting
            caller = ScriptedCaller(number=number, name=f"市民{i}", dtmf=None, dtmf_delay=0.5, patience=0.5)
        callers.append((caller, outcome))
    return callers


async def wait_until(predicate, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_thirty_mixed_calls_end_to_end(pg_dsn, pg_pool, redis_client, node_id, tmp_path):
    agi_port = free_port()
    settings = e2e_settings(node_id, pg_dsn, tmp_path, agi_port)
    sim = PbxSimulator(
        username="hotline", secret="e2e-secret", agi_host="127.0.0.1", agi_port=agi_port, recordings_dir=tmp_path,
        queues={q.name: {"strategy": "rrmemory", "timeout": 15, "retry": 1, "wrapuptime": 1} for q in settings.queues},
        fallback_queue="hotline-general", speed=SPEED,
    )
    await sim.start()
    for seat in settings.seats:
        sim.set_seat_behaviour(seat.interface, SeatBehaviour(answers=True, answer_after=1.0, talk=8.0))
    settings = settings.model_copy(update={"ami": settings.ami.model_copy(
        update={"port": sim.ami_port, "secret": SecretStr("e2e-secret")})})
    await install_flow(pg_pool, menu_flow({"1": "hotline-general", "2": "hotline-business", "3": "hotline-typhoon"}))
    service = HotlineService(settings, pg_pool, redis_client)
    try:
        await service.start()
        await service.wait_ready(10)
        scripted = {}
        for caller, outcome in scripted_callers(random.Random(12345)):
            linkedid = await sim.place_call(caller)
            scripted[linkedid] = (caller, outcome)
            await asyncio.sleep(1.0 / SPEED)
        await sim.wait_idle(timeout=60)
        await wait_until(lambda: service.writer.written >= 30, 30, "30 calls written")
        await service.live.drain()
    finally:
        await service.stop()
        await sim.stop()

    async with pg_pool.acquire() as conn:
        rows = await conn.fetch("SELECT * FROM calls WHERE node = $1", node_id)
        orders = await conn.fetch("SELECT * FROM work_orders")
        recs = await conn.fetch(
            "SELECT r.*, c.linkedid FROM recordings r JOIN calls c ON c.id = r.call_id WHERE c.node = $1", node_id)

    # exactly 30 call rows, one per placed call, each with the outcome the simulator played
    assert len(rows) == 30
    by_linkedid = {r["linkedid"]: r for r in rows}
    assert set(by_linkedid) == set(scripted)
    for linkedid, (caller, outcome) in scripted.items():
        row = by_linkedid[linkedid]
        assert sim.results[linkedid].outcome == outcome, linkedid
        assert row["outcome"] == outcome, linkedid
        assert row["caller_number"] == caller.number
    answered = [r for r in rows if r["outcome"] == "answered"]
    assert all(r["seat"] and r["seat"].startswith("Seat 80") for r in answered)
    assert all(r["talk_seconds"] is not None and 6 <= r["talk_seconds"] <= 10 for r in answered)
    assert {r["ivr_choice"] for r in rows if r["outcome"] == "abandoned"} == {"2"}

    # a recording file and an ok row for every answered call, matching the file on disk
    recs_by_call = {r["linkedid"]: r for r in recs}
    for row in answered:
        rec = recs_by_call[row["linkedid"]]
        path = Path(rec["path"])
        assert path.exists() and rec["status"] == "ok"
        data = path.read_bytes()
        assert rec["bytes"] == len(data)
        assert rec["sha256"] == hashlib.sha256(data).hexdigest()

    # every call linked to a work order; one open order per caller number (repeat calls link)
    assert all(r["work_order_id"] is not None for r in rows)
    numbers = {r["caller_number"] for r in rows}
    assert len(orders) == len(numbers)
    for number in numbers:
        assert len({r["work_order_id"] for r in rows if r["caller_number"] == number}) == 1
    assert len({o["number"] for o in orders}) == len(orders)

    # live counters in Redis agree with Postgres
    first = min(r["started_at"] for r in rows)
    snapshot = await service.live.snapshot(first.timestamp())
    same_day = [r for r in rows if service.live._day(r["started_at"].timestamp()) == snapshot["day"]]
    assert snapshot["today"]["offered"] == len(same_day)
    assert snapshot["today"]["answered"] == sum(r["outcome"] == "answered" for r in same_day)
    assert os.listdir(tmp_path)
