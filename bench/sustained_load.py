"""Sustained load: HotlineService with the PBX simulator, real Postgres and real Redis.

Setup: a scratch Postgres database (created, migrated with workorders.migrate.migrate, dropped
after), the local Redis (this run's keys, ``hotline:<node>:*``, deleted after), a temporary
recordings directory. The simulator (the project's PbxSimulator) runs in its own process
(bench/sim_driver.py), as Asterisk would; the service runs in this one, wired as in
hotline/demo.py and tests/test_e2e.py (AMI to the simulator, the simulator's FastAGI to the
service's IVR, every finished call written to Postgres with its work order and recording check).

Load: new calls offered at RATE calls/s for DURATION s (sim speed x SPEED, so a call lasts a few
tenths of a second of wall time). Mix: 80% key 1 and are answered by one of SEATS seats, 10% hang
up in the IVR, 10% key 2 and abandon the seatless business queue.

Measured:
- latency per call = (service's on_written callback, i.e. after the call's transaction committed)
  minus (wall time the simulator emitted the call's LAST Hangup event on its AMI bus); both are
  time.time() on this one machine. p50/p99/max.
- written calls/s = calls written / (last write - first write); with a service that keeps up it
  equals the offered rate.
- backlog: the writer's backlog and the tracker's open calls, sampled every 0.25 s; bounded if
  the last third of the offering holds no more than the first third (plus a small slack).
- correctness: every placed call has exactly one call row, with the simulator's outcome.
- store_replay: after the run (service stopped), REPLAY_CALLS of the run's calls are written again
  through a CallStore on the same pool, 4 and then 16 writers at once, nothing else running: the
  write path's own ceiling, to tell a slow store from a starved event loop.
Set BENCH_PROFILE=/path/to/file to cProfile the service process during the run (CPU time; stats to stderr).
"""

from __future__ import annotations

import asyncio
import dataclasses
import cProfile
import io
import json
import logging
import os
import pstats
import secrets
import shutil
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
import redis.asyncio as aioredis
from pydantic import SecretStr

from bench.common import ROOT, emit, free_port, percentile, progress, r
from config.settings import QueueConfig, SeatConfig, Settings
from hotline.service import HotlineService
from workorders.migrate import migrate
from workorders.store import CallStore

PG_ADMIN_DSN = os.environ.get("HOTLINE_BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("HOTLINE_BENCH_REDIS", "redis://127.0.0.1:6379/0")
RATE = float(os.environ.get("BENCH_LOAD_RATE", 50))
DURATION = float(os.environ.get("BENCH_LOAD_SECONDS", 20))
SPEED = float(os.environ.get("BENCH_LOAD_SPEED", 10))
SEATS = 40
DRAIN_TIMEOUT = 30.0
TARGET_P99_MS = 500.0
TARGET_RATE = 50.0
REPLAY_CALLS = 300


def instrument(service: HotlineService) -> dict[str, dict[str, float]]:
    """Stamp each call where it passes the service's public seams (instance attributes only):
    submitted to the writer (the tracker finished it and it was journaled), and the store's
    record_call start and end."""
    stages: dict = {"submit": {}, "db_start": {}, "db_end": {}, "args": {}}
    writer, store = service.writer, service.store
    submit, record_call = writer.submit, store.record_call

    def timed_submit(call, *args, **kwargs):
        stages["submit"][call.linkedid] = time.time()
        return submit(call, *args, **kwargs)

    async def timed_record_call(call, *args, **kwargs):
        stages["db_start"].setdefault(call.linkedid, time.time())
        stages["args"].setdefault(call.linkedid, (call, args, kwargs))
        result = await record_call(call, *args, **kwargs)
        stages["db_end"][call.linkedid] = time.time()
        return result

    writer.submit = timed_submit
    store.record_call = timed_record_call
    return stages


def stage_ms(placed: dict, a: dict | None, b: dict, hangup: bool = False) -> dict:
    """p50/p99 in ms from stamp a (or the simulator's last hang-up) to stamp b, over all calls."""
    xs = []
    for lid, (_, hung_up, _) in placed.items():
        start = hung_up if hangup else (a or {}).get(lid)
        if start is not None and lid in b:
            xs.append((b[lid] - start) * 1000)
    return {"p50": r(percentile(xs, 50), 1), "p99": r(percentile(xs, 99), 1)} if xs else {}


async def replay(store, captured: list, workers: int, node: str, prefix: str) -> dict:
    """Write the run's calls again through the same CallStore, with ``workers`` concurrent writers
    (CallWriter's default is 4) and nothing else running: the store's own ceiling. Each call gets a
    new node and its caller number a new prefix, so the same share of calls opens new orders."""
    todo = [(dataclasses.replace(call, node=node, caller_number=(prefix + call.caller_number[3:])
                                 if call.caller_number else call.caller_number), args, kwargs)
            for call, args, kwargs in captured]
    it = iter(todo)
    durations: list[float] = []

    async def worker() -> None:
        for call, args, kwargs in it:
            t = time.perf_counter()
            await store.record_call(call, *args, **kwargs)
            durations.append((time.perf_counter() - t) * 1000)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    dt = time.perf_counter() - t0
    return {"workers": workers, "calls": len(todo), "calls_per_s": r(len(todo) / dt, 1),
            "transaction_p50_ms": r(percentile(durations, 50), 1), "transaction_p99_ms": r(percentile(durations, 99), 1)}


class Counter(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0
        self.first: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        if len(self.first) < 5:
            self.first.append(f"{record.name}: {record.getMessage()[:200]}")


def cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + parts[4]
    return sum(parts) - idle, sum(parts)


async def admin(sql: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def settings_for(node: str, dsn: str, recordings: Path, agi_port: int) -> Settings:
    return Settings(
        node_id=node, database_url=dsn, redis_url=REDIS_URL, recordings_dir=recordings, min_recording_seconds=1.0,
        agi={"listen_host": "127.0.0.1", "listen_port": agi_port},
        queues=[QueueConfig(name="hotline-general", category="general", max_wait=300),
                QueueConfig(name="hotline-business", purpose="business", category="business_environment",
                            max_wait=300)],
        seats=[SeatConfig(interface=f"PJSIP/8{i:03d}", name=f"Seat 8{i:03d}", queues=["hotline-general"])
               for i in range(1, SEATS + 1)],
    )


async def send(proc: asyncio.subprocess.Process, obj: dict) -> None:
    proc.stdin.write((json.dumps(obj) + "\n").encode())
    await proc.stdin.drain()


async def receive(proc: asyncio.subprocess.Process, timeout: float) -> dict:
    line = await asyncio.wait_for(proc.stdout.readline(), timeout)
    if not line:
        raise RuntimeError("the simulator process ended early")
    return json.loads(line)


async def run() -> dict:
    node = f"bench-{uuid.uuid4().hex[:10]}"
    db = f"hotline_bench_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    work = Path(tempfile.mkdtemp(prefix="hotline-bench-"))
    recordings = work / "recordings"
    recordings.mkdir()
    counter = Counter()
    root = logging.getLogger()
    file_handler = logging.FileHandler(work / "service.log")
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root.addHandler(file_handler)
    root.addHandler(counter)
    root.setLevel(logging.INFO)

    await admin(f'CREATE DATABASE "{db}"')
    dsn = PG_ADMIN_DSN.rsplit("/", 1)[0] + "/" + db
    pool = redis = sim = service = None
    try:
        await migrate(dsn)
        pool = await asyncpg.create_pool(dsn, min_size=2, max_size=10)
        redis = aioredis.from_url(REDIS_URL, decode_responses=True, socket_timeout=2, socket_connect_timeout=2)
        await redis.ping()
        agi_port = free_port()
        secret = secrets.token_urlsafe(16)
        s = settings_for(node, dsn, recordings, agi_port)
        sim_queues = {q.name: {"strategy": "rrmemory", "timeout": 15, "retry": 1, "wrapuptime": 1} for q in s.queues}
        sim = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.sim_driver", "--agi-port", str(agi_port),
            "--recordings", str(recordings), "--queues", json.dumps(sim_queues),
            "--seats", json.dumps([seat.interface for seat in s.seats]), "--speed", str(SPEED),
            "--rate", str(RATE), "--duration", str(DURATION),
            env={**os.environ, "BENCH_SIM_SECRET": secret},  # not on the command line (ps shows that)
            cwd=str(ROOT), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=64 * 1024 * 1024)
        ami_port = (await receive(sim, 30))["ami_port"]
        s = s.model_copy(update={"ami": s.ami.model_copy(update={"port": ami_port, "secret": SecretStr(secret)})})

        written_at: dict[str, float] = {}
        duplicates = 0

        def on_written(call, result, checks) -> None:
            nonlocal duplicates
            if call.linkedid in written_at:
                duplicates += 1
            written_at[call.linkedid] = time.time()

        service = HotlineService(s, pool, redis, on_written=on_written)
        stages = instrument(service)
        await service.start()
        await service.wait_ready(30)
        progress(f"sustained_load: service up (node {node}); offering {RATE:g} calls/s for {DURATION:g} s "
                 f"at sim speed x{SPEED:g}, {SEATS} seats")

        samples: list[tuple[float, int, int]] = []
        lags: list[float] = []

        async def sampler() -> None:
            while True:
                samples.append((time.monotonic(), service.writer.backlog, len(service.tracker)))
                await asyncio.sleep(0.25)

        async def loop_lag() -> None:
            while True:
                t = time.monotonic()
                await asyncio.sleep(0.01)
                lags.append(time.monotonic() - t - 0.01)

        bg = [asyncio.create_task(sampler()), asyncio.create_task(loop_lag())]
        profiler = cProfile.Profile(time.process_time) if os.environ.get("BENCH_PROFILE") else None
        cpu0, (busy0, total0) = time.process_time(), cpu_ticks()
        t0 = time.monotonic()
        if profiler:
            profiler.enable()
        await send(sim, {"go": True})
        done = await receive(sim, DURATION + 150)
        t_sim_done = time.monotonic()
        placed = done["calls"]
        end = time.monotonic() + DRAIN_TIMEOUT
        while len(set(placed) & set(written_at)) < len(placed) and time.monotonic() < end:
            await asyncio.sleep(0.05)
        t_end = time.monotonic()
        if profiler:
            profiler.disable()
        cpu1, (busy1, total1) = time.process_time(), cpu_ticks()
        for task in bg:
            task.cancel()
        await service.live.drain()
        writer_failed = len(service.writer.failed)
        live_dropped = getattr(service.live, "dropped", None)

        async with pool.acquire() as conn:
            rows = await conn.fetch("SELECT linkedid, outcome, count(*) OVER (PARTITION BY linkedid) AS n "
                                    "FROM calls WHERE node = $1", node)
        by_lid = {row["linkedid"]: row for row in rows}
        missing = [lid for lid in placed if lid not in by_lid]
        doubled = sum(1 for row in rows if row["n"] > 1)
        wrong_outcome = [lid for lid, (_, _, outcome) in placed.items()
                         if lid in by_lid and by_lid[lid]["outcome"] != outcome]
        extra_rows = [lid for lid in by_lid if lid not in placed]

        lat_ms, no_hangup = [], 0
        for lid, (_, hung_up, _) in placed.items():
            if hung_up is None:
                no_hangup += 1
            elif lid in written_at:
                lat_ms.append((written_at[lid] - hung_up) * 1000)
        writes = sorted(written_at.values())
        span = writes[-1] - writes[0] if len(writes) > 1 else float("nan")
        offer_end = t0 + done["offer_seconds"]
        first = [b for (t, b, _) in samples if t0 <= t < t0 + done["offer_seconds"] / 3]
        last = [b for (t, b, _) in samples if offer_end - done["offer_seconds"] / 3 <= t <= offer_end]
        first_open = [o for (t, _, o) in samples if t0 <= t < t0 + done["offer_seconds"] / 3]
        last_open = [o for (t, _, o) in samples if offer_end - done["offer_seconds"] / 3 <= t <= offer_end]
        bounded = bool(first and last) and max(last) <= max(first) + max(5, RATE * 0.2) \
            and max(last_open) <= max(first_open) + max(10, RATE * 0.5)
        result = {
            "placed": len(placed), "written": len(set(placed) & set(written_at)), "duplicates_on_written": duplicates,
            "missing_rows": len(missing), "doubled_rows": doubled, "wrong_outcome": len(wrong_outcome),
            "extra_rows": len(extra_rows), "no_hangup_seen": no_hangup,
            "offered_rate": len(placed) / done["offer_seconds"], "placement_lag_max_s": done["lag_max"],
            "written_rate": (len(writes) - 1) / span if span == span and span > 0 else float("nan"),
            "lat": lat_ms, "backlog_max": max((b for _, b, _ in samples), default=0),
            "backlog_first_third_max": max(first, default=0), "backlog_last_third_max": max(last, default=0),
            "open_calls_max": max((o for _, _, o in samples), default=0), "bounded": bounded,
            "drain_after_sim_s": t_end - t_sim_done, "calls_in_progress_max": done["active_max"],
            "sim_events": done["events"], "sim_cpu_percent": done["cpu_percent"],
            "service_cpu_percent": 100.0 * (cpu1 - cpu0) / (t_end - t0),
            "machine_cpu_busy_percent": 100.0 * (busy1 - busy0) / max(1, total1 - total0),
            "loop_lag_p99_ms": percentile(lags, 99) * 1000 if lags else float("nan"),
            "loop_lag_max_ms": max(lags, default=float("nan")) * 1000,
            "writer_failed": writer_failed, "live_dropped": live_dropped, "warnings": counter.count,
            "first_warnings": counter.first,
            "stages_ms": {
                "hangup_to_journaled_and_submitted": stage_ms(placed, None, stages["submit"], hangup=True),
                "submitted_to_db_start": stage_ms(placed, stages["submit"], stages["db_start"]),
                "db_transaction": stage_ms(placed, stages["db_start"], stages["db_end"]),
                "db_end_to_on_written": stage_ms(placed, stages["db_end"], written_at),
            },
            "outcomes": {o: sum(1 for v in placed.values() if v[2] == o) for o in {v[2] for v in placed.values()}},
        }
        # the store alone, same calls, no AMI/FastAGI load: is the writer path the limit?
        await service.stop()
        service = None
        captured = [stages["args"][lid] for lid in placed if lid in stages["args"]][:REPLAY_CALLS]
        store = CallStore(pool, timezone=s.timezone, repeat_window_days=s.repeat_window_days)
        try:
            result["store_replay"] = [await replay(store, captured, 4, node + "-r4", "134"),
                                      await replay(store, captured, 16, node + "-r16", "135")]
        except Exception as exc:  # noqa: BLE001 - an extra number; the run's own result still stands
            result["store_replay"] = f"failed: {type(exc).__name__}: {exc}"[:200]
        if profiler:
            path = os.environ["BENCH_PROFILE"]
            profiler.dump_stats(path)
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(30)
            print(out.getvalue(), file=sys.stderr)
        return result
    finally:
        if service is not None:
            await service.stop()
        if sim is not None:
            if sim.returncode is None:
                try:
                    await send(sim, {"stop": True})
                    await asyncio.wait_for(sim.wait(), 15)
                except (OSError, asyncio.TimeoutError, ConnectionError):
                    sim.kill()
                    await sim.wait()
        if redis is not None:
            keys = [k async for k in redis.scan_iter(match=f"hotline:{node}:*", count=1000)]
            if keys:
                await redis.delete(*keys)
            await redis.aclose()
        if pool is not None:
            await pool.close()
        await admin(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        root.removeHandler(file_handler)
        root.removeHandler(counter)
        file_handler.close()
        if os.environ.get("BENCH_KEEP"):
            progress(f"sustained_load: kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


async def main() -> None:
    task = asyncio.ensure_future(run())
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):  # bench/run's timeout: still drop the scratch database
        loop.add_signal_handler(sig, task.cancel)
    res = await task
    lat = res.pop("lat")
    p50, p99 = percentile(lat, 50), percentile(lat, 99)
    correct = not (res["missing_rows"] or res["doubled_rows"] or res["wrong_outcome"] or res["extra_rows"]
                   or res["duplicates_on_written"])
    kept_up = res["written"] == res["placed"] and res["bounded"] and res["written_rate"] >= 0.95 * RATE
    progress(f"sustained_load: {res['written']}/{res['placed']} written, {res['written_rate']:.1f} calls/s, "
             f"p50 {p50:.0f} ms, p99 {p99:.0f} ms, backlog max {res['backlog_max']}")
    out = {
        "name": "sustained_load",
        "value": r(res["written_rate"], 1),
        "unit": "calls/s written",
        "offered_calls_per_s": r(res["offered_rate"], 1),
        "kept_up": kept_up,
        "hangup_to_row_p50_ms": r(p50, 1),
        "hangup_to_row_p99_ms": r(p99, 1),
        "hangup_to_row_max_ms": r(max(lat, default=float("nan")), 1),
        "target": f"{TARGET_RATE:g} calls/s with p99 < {TARGET_P99_MS:g} ms",
        "met": kept_up and RATE >= TARGET_RATE and p99 < TARGET_P99_MS and correct,
        "every_call_one_row_right_outcome": correct,
        "duration_s": DURATION,
        "sim_speed": SPEED,
        "seats": SEATS,
    }
    for key in ("placed", "written", "missing_rows", "doubled_rows", "wrong_outcome", "extra_rows",
                "duplicates_on_written", "no_hangup_seen", "bounded", "backlog_max", "backlog_first_third_max",
                "backlog_last_third_max", "open_calls_max", "calls_in_progress_max", "drain_after_sim_s",
                "placement_lag_max_s", "service_cpu_percent", "sim_cpu_percent", "machine_cpu_busy_percent",
                "loop_lag_p99_ms", "loop_lag_max_ms", "stages_ms", "sim_events", "writer_failed", "live_dropped", "warnings",
                "outcomes", "store_replay"):
        v = res[key]
        out[key] = r(v, 2) if isinstance(v, float) else v
    if res["first_warnings"]:
        progress("sustained_load: first warnings: " + " | ".join(res["first_warnings"]))
    emit(out)


if __name__ == "__main__":
    asyncio.run(main())
