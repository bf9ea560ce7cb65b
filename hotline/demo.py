"""``hotline demo``: the whole service against the built-in PBX simulator, real Postgres and Redis.

A stream of synthetic citizens calls 12345: most wait for a seat, some hang up while waiting,
some hang up in the IVR; they key 1 (general), 2 (business environment) or nothing. Seats
answer after a few seconds and talk for a while. Each finished call is logged as one line; with
``--calls N`` the demo stops after N finished calls and prints, as its last line on stdout, a JSON
summary counted from Postgres for this run's calls.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import secrets
import signal
import socket
import sys
from datetime import datetime
from pathlib import Path

import asyncpg
import redis.asyncio as aioredis
from pydantic import SecretStr

from config.settings import SeatConfig, Settings
from hotline.service import HotlineService
from telephony.simulator import PbxSimulator, ScriptedCaller, SeatBehaviour, queue_definitions
from workorders.migrate import migrate
from workorders.reports import run_summary

log = logging.getLogger("hotline.demo")

NAMES = ["张伟", "王芳", "李娜", "刘洋", "陈静", "杨磊", "赵敏", "黄勇", "周杰", "吴霞", "徐明", "孙丽"]
DEMO_SEATS = [
    SeatConfig(interface=f"PJSIP/800{i}", name=f"Seat 800{i}", queues=["hotline-general"]) for i in range(1, 5)
] + [
    SeatConfig(interface="PJSIP/8005", name="Seat 8005", queues=["hotline-business"]),
    SeatConfig(interface="PJSIP/8006", name="Seat 8006", queues=["hotline-business", "hotline-general"], penalty=1),
    SeatConfig(interface="PJSIP/8007", name="Seat 8007", queues=["hotline-dialect"]),
]


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def synthetic_caller(rng: random.Random, population: list[str]) -> ScriptedCaller:
    """A citizen: 65% wait for a seat, 20% give up while waiting, 15% hang up in the IVR. The keys
    of the shipped flow: 1 general, 2 business environment, 3 dialect, 0 then 1 emergency (110), none;
    after the seat hangs up two in three answer the survey (1, 2 or 3, or a silence)."""
    kind = rng.random()
    if kind < 0.65:
        patience = None
    elif kind < 0.85:
        patience = rng.uniform(15, 40)
    else:
        patience = rng.uniform(1, 3)
    dtmf = rng.choices(["1", "2", "3", "01", None], weights=[45, 20, 5, 2, 28])[0]   # 0 then 1: confirmed 110
    survey = rng.choices(["1", "2", "3", "", None], weights=[40, 15, 5, 7, 33])[0]
    return ScriptedCaller(
        number=rng.choice(population), name=rng.choice(NAMES), dtmf=dtmf, dtmf_delay=rng.uniform(0.5, 2.0),
        patience=patience, survey=survey,
    )


def demo_settings(settings: Settings, run_dir: Path) -> Settings:
    """The configured settings, pointed at a simulator of this run."""
    node = f"demo-{datetime.now().strftime('%Y%m%d%H%M%S')}-{secrets.token_hex(2)}"
    ami = settings.ami.model_copy(update={"host": "127.0.0.1", "port": 0, "secret": None})
    agi = settings.agi.model_copy(update={"listen_host": "127.0.0.1", "listen_port": _free_port("127.0.0.1")})
    return settings.model_copy(update={
        "node_id": node, "ami": ami, "agi": agi, "recordings_dir": run_dir,
        "seats": settings.seats or DEMO_SEATS,
    })


async def run_demo(settings: Settings, *, calls: int | None, speed: float, seed: int | None) -> int:
    rng = random.Random(seed)
    run_dir = Path("var/demo").resolve()
    s = demo_settings(settings, run_dir)
    run_dir = run_dir / s.node_id
    run_dir.mkdir(parents=True, exist_ok=True)
    s = s.model_copy(update={"recordings_dir": run_dir})
    dsn = s.database_url.get_secret_value()
    await migrate(dsn)
    pool = await asyncpg.create_pool(dsn, min_size=2, max_size=10)
    redis = aioredis.from_url(s.redis_url.get_secret_value(), decode_responses=True,
                              socket_timeout=2, socket_connect_timeout=2)
    secret = secrets.token_urlsafe(16)
    sim = PbxSimulator(
        username=s.ami.username, secret=secret, agi_host="127.0.0.1", agi_port=s.agi.listen_port,
        recordings_dir=run_dir,
        queues=queue_definitions(s.queues),   # queues.conf and the dialplan's max wait, category, overflow
        fallback_queue=s.ivr.default_queue, speed=speed,
    )
    await sim.start()
    sim.set_seat_behaviour("110", SeatBehaviour(answers=True, answer_after=2.0, talk=rng.uniform(20, 60)))
    for seat in s.seats:
        sim.set_seat_behaviour(seat.interface, SeatBehaviour(answers=True, answer_after=rng.uniform(1, 4),
                                                             talk=rng.uniform(15, 45)))
    s = s.model_copy(update={"ami": s.ami.model_copy(update={"port": sim.ami_port, "secret": SecretStr(secret)})})
    written = asyncio.Event()
    finished = 0

    def on_written(call, result, checks) -> None:
        nonlocal finished
        finished += 1
        if calls is not None and finished >= calls:
            written.set()

    service = HotlineService(s, pool, redis, on_written=on_written)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info("demo %s: simulator AMI on 127.0.0.1:%s, FastAGI on 127.0.0.1:%s, speed x%g, recordings in %s",
             s.node_id, sim.ami_port, s.agi.listen_port, speed, run_dir)
    try:
        await service.start()
        await service.wait_ready(15)
        population = [f"13{rng.randrange(10**8, 10**9)}" for _ in range(max(5, (calls or 40) * 2 // 3))]
        placed = 0
        while not stop.is_set() and (calls is None or placed < calls):
            await sim.place_call(synthetic_caller(rng, population))
            placed += 1
            try:
                await asyncio.wait_for(stop.wait(), rng.expovariate(1 / 4.0) / speed)
            except asyncio.TimeoutError:
                pass
        if calls is not None:
            waiter = asyncio.ensure_future(written.wait())
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait({waiter, stopper}, timeout=600 / speed + 120, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            stopper.cancel()
    finally:
        await service.stop()   # drains the writer: the calls that ended meanwhile are written too
        await sim.stop()
        await redis.aclose()
    try:   # counted from Postgres after the stop, so the summary matches the log lines
        summary = await run_summary(pool, s.node_id)
    finally:
        await pool.close()
    summary["node"] = s.node_id
    print(json.dumps(summary, ensure_ascii=False), flush=True)
    if calls is not None and summary["calls"] < calls:
        log.error("demo: only %d of %d calls were written", summary["calls"], calls)
        return 1
    return 0 if summary["calls_without_order"] == 0 else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(asyncio.run(run_demo(Settings(), calls=5, speed=20, seed=1)))
