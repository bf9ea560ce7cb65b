"""Faults with calls in flight, each really injected, each ending in the same assertion: every call
the simulator placed has exactly one call row, with the outcome the simulator played.

The scene (``Scene``): four seats that answer after 1 s and talk 40 s; four callers for the general
queue (answered), three for the business queue, which has no seat (they give up 30 s after the
answer), then the fault while the answered calls talk and the others wait, then three more calls
placed while the fault lasts. All times are simulated seconds at SPEED times real time.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr

from config.settings import QueueConfig, SeatConfig, Settings
from hotline.service import HotlineService
from telephony.simulator import PbxSimulator, ScriptedCaller, SeatBehaviour
from tests.conftest import PG_ADMIN_DSN, REDIS_URL
from tests.support import PrivateRedis, free_port, wait_until

pytestmark = pytest.mark.fault

SPEED = 10.0
SECRET = "fault-secret"
TALK = 40.0       # sim seconds a seat talks
PATIENCE = 30.0   # sim seconds after the answer a business caller gives up


def scene_settings(node_id: str, pg_dsn: str, recordings: Path, agi_port: int, ami_port: int,
                   redis_url: str = REDIS_URL) -> Settings:
    return Settings(
        node_id=node_id, database_url=pg_dsn, redis_url=redis_url, recordings_dir=recordings,
        agi={"listen_host": "127.0.0.1", "listen_port": agi_port},
        ami={"host": "127.0.0.1", "port": ami_port, "secret": SECRET, "connect_timeout": 2, "action_timeout": 3},
        queues=[QueueConfig(name="hotline-general", max_wait=600),
                QueueConfig(name="hotline-business", purpose="business", category="business_environment", max_wait=600)],
        seats=[SeatConfig(interface=f"PJSIP/80{i:02d}", name=f"Seat 80{i:02d}") for i in range(1, 5)],
        lease_ttl=3.0,
    )


def simulator(settings: Settings, recordings: Path, agi_port: int, ami_port: int = 0) -> PbxSimulator:
    sim = PbxSimulator(
        username="hotline", secret=SECRET, agi_host="127.0.0.1", agi_port=agi_port, recordings_dir=recordings,
        queues={q.name: {"strategy": "rrmemory", "timeout": 15, "retry": 1, "wrapuptime": 0} for q in settings.queues},
        fallback_queue="hotline-general", speed=SPEED, ami_port=ami_port,
    )
    for seat in settings.seats:
        sim.set_seat_behaviour(seat.interface, SeatBehaviour(answers=True, answer_after=1.0, talk=TALK))
    return sim


def answered_caller(i: int) -> ScriptedCaller:
    return ScriptedCaller(number=f"1380000{i:04d}", name=f"市民{i}", dtmf="1", dtmf_delay=0.5)


def abandoning_caller(i: int) -> ScriptedCaller:
    return ScriptedCaller(number=f"1390000{i:04d}", name=f"市民{i}", dtmf="2", dtmf_delay=0.5, patience=PATIENCE)


@dataclass
class Scene:
    sim: PbxSimulator
    placed: list[str] = field(default_factory=list)

    async def place(self, callers) -> None:
        for caller in callers:
            self.placed.append(await self.sim.place_call(caller))
            await asyncio.sleep(0.2 / SPEED)

    async def first_wave(self) -> None:
        await self.place([answered_caller(i) for i in range(4)] + [abandoning_caller(i) for i in range(3)])

    async def second_wave(self, abandoning: bool = True) -> None:
        await self.place([answered_caller(10 + i) for i in range(3 - abandoning)]
                         + ([abandoning_caller(10)] if abandoning else []))


def talking_and_waiting(service: HotlineService) -> bool:
    """All four answered calls are talking and the three business callers wait in the queue."""
    calls = service.tracker.calls.values()
    return (sum(c.answered_at is not None for c in calls) >= 4
            and sum(c.joined and c.queue == "hotline-business" for c in calls) >= 3)


async def rows_of(pg_dsn: str, node_id: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(pg_dsn)
    try:
        return await conn.fetch("SELECT * FROM calls WHERE node = $1", node_id)
    finally:
        await conn.close()


async def assert_each_call_once(pg_dsn: str, node_id: str, sim: PbxSimulator, placed: list[str]) -> list:
    """The one assertion of every fault test; returns the rows."""
    await sim.wait_idle(timeout=60)
    try:
        await wait_until(lambda: _count(pg_dsn, node_id, len(placed)), 30, f"{len(placed)} call rows")
    except AssertionError:
        written = {r["linkedid"] for r in await rows_of(pg_dsn, node_id)}
        missing = [sim.results.get(lid) for lid in placed if lid not in written]
        raise AssertionError(f"calls without a row: {missing}") from None
    rows = await rows_of(pg_dsn, node_id)
    assert sorted(r["linkedid"] for r in rows) == sorted(placed)   # one row each, none extra
    by_id = {r["linkedid"]: r for r in rows}
    for linkedid in placed:
        played = sim.results[linkedid].outcome
        if played == "pbx_restart":   # Asterisk restarted under the call: answered or dropped
            played = "answered" if sim.results[linkedid].answered else "dropped"
            assert by_id[linkedid]["closed_by"] == "asterisk_restart"
        row = by_id[linkedid]
        assert row["outcome"] == played, (linkedid, played, dict(row))
        assert row["work_order_id"] is not None
        if row["outcome"] == "answered":   # also when closed by resync: what was known is kept
            assert row["seat"] and row["queue"] == "hotline-general" and row["answered_at"], dict(row)
        if row["outcome"] == "abandoned":
            assert row["queue"] and row["caller_number"], dict(row)
    return rows


async def _count(pg_dsn: str, node_id: str, want: int) -> bool:
    return len(await rows_of(pg_dsn, node_id)) >= want


@pytest.fixture
async def rig(pg_dsn, pg_pool, node_id, tmp_path):
    """Start a simulator and the service on the shared Redis; stop both at the end."""
    started: list = []

    async def start(redis_url: str = REDIS_URL):
        agi_port = free_port()
        settings = scene_settings(node_id, pg_dsn, tmp_path, agi_port, 5038, redis_url)
        sim = simulator(settings, tmp_path, agi_port)
        started.append(sim)
        await sim.start()
        settings = settings.model_copy(update={"ami": settings.ami.model_copy(
            update={"port": sim.ami_port, "secret": SecretStr(SECRET)})})
        redis = aioredis.from_url(redis_url, decode_responses=True, socket_timeout=1, socket_connect_timeout=1)
        started.append(redis)
        service = HotlineService(settings, pg_pool, redis)
        started.append(service)
        await service.start()
        await service.wait_ready(15)
        return sim, service

    yield start
    for thing in reversed(started):   # service, then its Redis client, then the simulator
        await (thing.aclose() if isinstance(thing, aioredis.Redis) else thing.stop())


async def test_ami_link_cut_mid_call(rig, pg_dsn, node_id):
    sim, service = await rig()
    scene = Scene(sim)
    await scene.first_wave()
    await wait_until(lambda: talking_and_waiting(service), 30, "calls talking and waiting")
    logins = service.ami.connections
    sim.refuse_ami(True)                           # the link is down: no event reaches the service
    # These start while nobody listens and outlast the outage: AMI never replays, so a call that
    # starts and ends inside an outage cannot be seen (see docs/architecture.md).
    await scene.second_wave(abandoning=False)
    await wait_until(lambda: sum(r.outcome in ("answered", "abandoned") for r in sim.results.values()) >= 4,
                     30, "calls of the first wave ending while the link is down")
    sim.refuse_ami(False)
    await wait_until(lambda: service.ami.connections > logins and service.ami.ready.is_set(), 30, "AMI relogin")
    rows = await assert_each_call_once(pg_dsn, node_id, sim, scene.placed)
    closed = [r for r in rows if r["closed_by"] == "resync"]
    assert len(closed) >= 4                        # ended unseen, closed by the resync with what was known
    adopted = [r for r in rows if r["linkedid"] in {lid for lid in scene.placed[-3:]}]
    assert all(r["caller_number"] for r in adopted)   # started unseen, adopted from CoreShowChannels


async def test_asterisk_restart_mid_call(rig, pg_dsn, node_id):
    sim, service = await rig()
    scene = Scene(sim)
    await scene.first_wave()
    await wait_until(lambda: talking_and_waiting(service), 30, "calls talking and waiting")
    boot = service.node.boot
    await sim.restart()                            # every channel gone, no Hangup, new CoreStartupTime
    await wait_until(lambda: service.node.restarts_seen == 1 and service.ami.ready.is_set(), 15,
                     "the restart noticed at relogin")
    assert service.node.boot != boot
    await scene.second_wave()                      # calls on the new boot go on as usual
    rows = await assert_each_call_once(pg_dsn, node_id, sim, scene.placed)
    assert sum(r["closed_by"] == "asterisk_restart" for r in rows) == 7
    assert {r["outcome"] for r in rows if r["closed_by"] == "asterisk_restart"} == {"answered", "dropped"}
    seats = await service.node.actions.queue_status("hotline-general")   # membership restored on the new boot
    assert sorted(i.get("Name") for i in seats.items if i.event == "QueueMember") == [
        f"Seat 80{i:02d}" for i in range(1, 5)]


async def test_postgres_unavailable_mid_call(rig, pg_dsn, node_id):
    sim, service = await rig()
    scene = Scene(sim)
    await scene.first_wave()
    await wait_until(lambda: talking_and_waiting(service), 30, "calls talking and waiting")
    dbname = pg_dsn.rsplit("/", 1)[1]
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        # A real outage of this database: no new connection is accepted, every open one is cut.
        await admin.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS false')
        await admin.fetch("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", dbname)
        await scene.second_wave()
        # The answered calls end (20 s of talk) while Postgres refuses: they wait, retried.
        # Long enough for more retries per call than a data error is allowed (MAX_DATA_FAILURES).
        await wait_until(lambda: service.writer.retries >= 30 and service.writer.backlog >= 4, 60,
                         "finished calls waiting for Postgres")
        assert len(await service.node.journal.pending()) >= 4   # durable in the journal meanwhile
        # An AMI relogin while Postgres is down still resyncs and goes on (operators cannot be
        # reloaded from Postgres, which must not cut the link again and again).
        logins = service.ami.connections
        sim.drop_ami_links()
        await wait_until(lambda: service.ami.connections > logins and service.ami.ready.is_set(), 30,
                         "AMI relogin during the Postgres outage")
    finally:
        await admin.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS true')
        await admin.close()
    await assert_each_call_once(pg_dsn, node_id, sim, scene.placed)
    assert service.writer.failed == []
    await wait_until(lambda: _journal_empty(service), 10, "journal acknowledged")


async def _offered(service: HotlineService, at) -> int:
    return (await service.live.snapshot(at.timestamp()))["today"]["offered"]


async def _journal_empty(service: HotlineService) -> bool:
    return not await service.node.journal.pending()


async def test_redis_stopped_mid_call(rig, pg_dsn, node_id, tmp_path):
    redis = PrivateRedis(tmp_path)
    await redis.start()
    try:
        sim, service = await rig(redis.url)
        scene = Scene(sim)
        await scene.first_wave()
        await wait_until(lambda: talking_and_waiting(service), 30, "calls talking and waiting")
        redis.kill()
        await scene.second_wave()
        await wait_until(lambda: not service.live.healthy, 15, "live views to notice Redis is down")
        rows = await assert_each_call_once(pg_dsn, node_id, sim, scene.placed)
        assert service.node.active.is_set()        # fail-open: the node was never given up
        await redis.start()                        # Redis back: live views recover by themselves
        await wait_until(lambda: service.live.healthy, 30, "live views to recover")
        latest = max(r["started_at"] for r in rows)
        day = service.live._day(latest.timestamp())
        snapshot = await service.live.snapshot(latest.timestamp())
        same_day = sum(service.live._day(r["started_at"].timestamp()) == day for r in rows)

        async def caught_up() -> bool:   # every call, all finished while Redis was down, counted
            return await _offered(service, latest) == same_day

        await wait_until(caught_up, 30, "live counters to catch up")
        assert snapshot["day"] == day
    finally:
        redis.kill()

