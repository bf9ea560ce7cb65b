"""Missed-call callbacks (漏接电话回拨): the call writer opens, refreshes and cancels callback tasks
in the call's own transaction (real Postgres), and the callback desk dials them through the PBX
simulator (seat first, then the citizen), with retries, spacing, bounded attempts, seats that do
not answer, lost outcomes, and the HTTP API."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from hotline.api import ConfigApi, add_api_routes
from hotline.api_callbacks import CALLBACK_DESK, setup_routes
from hotline.api_operators import OPERATOR_DESK
from hotline.app import PG_POOL
from hotline.service import HotlineService
from queues.callbacks import CallbackDesk, CallbackPolicy
from telephony.simulator import ScriptedCaller, SeatBehaviour
from telephony.simulator.originate import BusyLine
from workorders.store import CallStore
from tests.conftest import REDIS_URL
from tests.support import free_port, running, until
from tests.test_faults import SECRET, scene_settings, simulator
from tests.test_operators import ANN, make_world, token_of
from tests.test_workorders import make_call

pytestmark = [pytest.mark.ivr, pytest.mark.timeout(120)]

CITIZEN = "13800138000"
OTHER = "13900139000"
CALLBACK_SEAT = "PJSIP/8100"     # a phone the simulator knows, in no queue
DEAD_SEAT = "PJSIP/8099"         # a phone that never answers
SPACING = 0.5                    # seconds between attempts in the retry tests


async def tasks(pool, number: str | None = None) -> list[dict]:
    rows = await pool.fetch("SELECT * FROM callback_tasks WHERE $1::text IS NULL OR number = $1 ORDER BY id", number)
    return [dict(r) for r in rows]


async def attempts(pool, task_id: int) -> list[dict]:
    rows = await pool.fetch("SELECT * FROM callback_attempts WHERE task_id = $1 ORDER BY attempt_no", task_id)
    return [{**dict(r), "detail": json.loads(r["detail"])} for r in rows]


async def order_events(pool, order_id: int, kinds: tuple[str, ...] | None = None) -> list[dict]:
    rows = await pool.fetch("SELECT kind, actor, detail FROM work_order_events WHERE work_order_id = $1 ORDER BY id",
                            order_id)
    return [{"kind": r["kind"], "actor": r["actor"], **json.loads(r["detail"])} for r in rows
            if kinds is None or r["kind"] in kinds]


# ---- the call writer: tasks in the call's transaction -------------------------------------------

@pytest.fixture
def store(pg_pool) -> CallStore:
    return CallStore(pg_pool)


@pytest.mark.parametrize("outcome", ["abandoned", "queue_timeout", "dropped"])
async def test_a_missed_call_opens_a_callback_task_on_its_order(store, pg_pool, outcome):
    result = await store.record_call(make_call(CITIZEN, outcome), [])
    [task] = await tasks(pg_pool)
    order_id = await pg_pool.fetchval("SELECT id FROM work_orders WHERE number = $1", result.order_number)
    assert (task["number"], task["reason"], task["status"], task["attempts"], task["max_attempts"]) == (
        CITIZEN, outcome, "pending", 0, 3)
    assert (task["work_order_id"], task["call_id"], task["last_call_id"], task["missed_calls"]) == (
        order_id, result.call_id, result.call_id, 1)
    assert task["next_attempt_at"] <= await pg_pool.fetchval("SELECT now()")   # due at once
    [event] = await order_events(pg_pool, order_id, ("callback_task",))
    assert (event["action"], event["task_id"], event["reason"], event["call_id"]) == (
        "created", task["id"], outcome, result.call_id)
    # a replay of the same call writes nothing more
    again = await store.record_call(make_call(CITIZEN, outcome, linkedid=await pg_pool.fetchval(
        "SELECT linkedid FROM calls WHERE id = $1", result.call_id), at=time.time()), [])
    assert again.duplicate and len(await tasks(pg_pool)) == 1
    assert len(await order_events(pg_pool, order_id, ("callback_task",))) == 1


async def test_an_ivr_hang_up_is_called_back_only_after_the_configured_time(store, pg_pool):
    start = time.time()
    await store.record_call(make_call(CITIZEN, "ivr_hangup", at=start, ended_at=start + 4), [])   # in the greeting
    assert await tasks(pg_pool) == []
    await store.record_call(make_call(OTHER, "ivr_hangup", at=start, ended_at=start + 10), [])    # 10 s: called back
    assert [(t["number"], t["reason"]) for t in await tasks(pg_pool)] == [(OTHER, "ivr_hangup")]
    # the threshold is the writer's setting
    quick = CallStore(pg_pool, callback_ivr_seconds=3)
    await quick.record_call(make_call("13700137000", "ivr_hangup", at=start, ended_at=start + 4), [])
    assert len(await tasks(pg_pool, "13700137000")) == 1


async def test_an_accepted_callback_offer_is_a_requested_task_whatever_the_time(store, pg_pool):
    start = time.time()
    await store.record_call(make_call(CITIZEN, "ivr_hangup", at=start, ended_at=start + 2,
                                      variables={"HOTLINE_CALLBACK_REQUESTED": "1"}), [])
    assert [(t["reason"], t["status"]) for t in await tasks(pg_pool)] == [("requested", "pending")]


@pytest.mark.parametrize("number", [None, "", "anonymous", "Restricted", "<unknown>", "sip:alice", "12"])
async def test_no_task_for_a_number_that_cannot_be_called_back(store, pg_pool, number):
    result = await store.record_call(make_call(number, "abandoned"), [])
    assert await tasks(pg_pool) == []
    assert (await pg_pool.fetchrow("SELECT status FROM work_orders WHERE number = $1",
                                   result.order_number))["status"] == "callback_pending"   # the order is still there


async def test_missed_calls_of_one_number_share_one_open_task(store, pg_pool):
    start = time.time()
    first = await store.record_call(make_call(CITIZEN, "abandoned", at=start), [])
    second = await store.record_call(make_call(CITIZEN, "queue_timeout", at=start + 60), [])
    [task] = await tasks(pg_pool)
    assert (task["reason"], task["missed_calls"], task["call_id"], task["last_call_id"]) == (
        "abandoned", 2, first.call_id, second.call_id)
    assert task["last_missed_at"].timestamp() == pytest.approx(start + 80)
    events = await order_events(pg_pool, task["work_order_id"], ("callback_task",))
    assert [(e["action"], e["call_id"], e["missed_calls"]) for e in events] == [
        ("created", first.call_id, 1), ("refreshed", second.call_id, 2)]
    # ten at once: still one open task (per-number lock, partial unique index)
    await asyncio.gather(*(store.record_call(make_call(OTHER, "abandoned", at=start + i), []) for i in range(10)))
    [other] = await tasks(pg_pool, OTHER)
    assert other["missed_calls"] == 10
    # a closed task does not stop a new one
    await pg_pool.execute("UPDATE callback_tasks SET status = 'failed', status_reason = 'test' WHERE id = $1",
                          task["id"])
    await store.record_call(make_call(CITIZEN, "abandoned", at=start + 120), [])
    assert [t["status"] for t in await tasks(pg_pool, CITIZEN)] == ["failed", "pending"]


async def test_an_answered_call_cancels_the_numbers_pending_task(store, pg_pool):
    start = time.time()
    await store.record_call(make_call(CITIZEN, "abandoned", at=start), [])
    # an answered call that ended before the missed one (written late) cancels nothing
    await store.record_call(make_call(CITIZEN, "answered", at=start - 3600), [])
    assert [t["status"] for t in await tasks(pg_pool)] == ["pending"]
    await store.record_call(make_call(CITIZEN, "answered", at=start + 300), [])
    [task] = await tasks(pg_pool)
    assert (task["status"], task["status_reason"]) == ("cancelled", "caller got through")
    events = await order_events(pg_pool, task["work_order_id"], ("callback_task",))
    assert [(e["action"], e.get("status_reason")) for e in events] == [
        ("created", None), ("cancelled", "caller got through")]
    # a missed call that an answered call already followed (written late) opens none
    await store.record_call(make_call(CITIZEN, "abandoned", at=start + 100), [])
    assert [t["status"] for t in await tasks(pg_pool)] == ["cancelled"]


# ---- the desk with the PBX simulator ----------------------------------------------------------------

@contextlib.asynccontextmanager
async def service_rig(pg_dsn, pg_pool, node_id, tmp_path):
    """The simulator (callback seat 8100 answers after 1 s; 8099 never answers; no static seats),
    the service (its node routes AMI events to ``service.node.callbacks``) and the API."""
    started: list = []
    world = await make_world(pg_pool)
    agi_port = free_port()
    settings = scene_settings(node_id, pg_dsn, tmp_path, agi_port, 5038).model_copy(update={"seats": []})
    sim = simulator(settings, tmp_path, agi_port)
    sim.set_seat_behaviour(CALLBACK_SEAT, SeatBehaviour(answers=True, answer_after=1.0, talk=60.0))
    sim.set_seat_behaviour(DEAD_SEAT, SeatBehaviour(answers=False))
    sim.set_seat_behaviour(ANN, SeatBehaviour(answers=True, answer_after=1.0, talk=60.0))
    await sim.start()
    started.append(sim)
    settings = settings.model_copy(update={"ami": settings.ami.model_copy(
        update={"port": sim.ami_port, "secret": SecretStr(SECRET)})})
    redis = aioredis.from_url(REDIS_URL, decode_responses=True, socket_timeout=1, socket_connect_timeout=1)
    started.append(redis)
    service = HotlineService(settings, pg_pool, redis)
    service.callbacks.owning = lambda: False   # the tests' own desks dial (make_desk), not the service's
    started.append(service)
    await service.start()
    await service.wait_ready(15)
    try:
        yield sim, service, world
    finally:
        service.node.callbacks = None
        for thing in reversed(started):
            await (thing.aclose() if isinstance(thing, aioredis.Redis) else thing.stop())


@pytest.fixture
async def rig(pg_dsn, pg_pool, node_id, tmp_path):
    async with service_rig(pg_dsn, pg_pool, node_id, tmp_path) as parts:
        yield parts


def make_desk(service, pg_pool, node_id, *, route: bool = True, **policy) -> CallbackDesk:
    options = dict(poll_seconds=0.05, retry_spacing_seconds=SPACING, seat_retry_seconds=0.2)
    options.update(policy)
    free_seat = options.pop("free_seat", None)
    desk = CallbackDesk(pg_pool, service.node.actions, owning=lambda: service.node.owning, free_seat=free_seat,
                        operators=service.desk, node_id=node_id, policy=CallbackPolicy(**options))
    if route:
        service.node.callbacks = desk
    return desk


async def task_is(pool, task_id: int, status: str) -> bool:
    return await pool.fetchval("SELECT status FROM callback_tasks WHERE id = $1", task_id) == status


async def test_a_callback_is_retried_until_the_citizen_answers(rig, pg_pool, node_id):
    sim, service, _ = rig
    result = await CallStore(pg_pool).record_call(make_call(CITIZEN, "abandoned", node=node_id), [])
    [task] = await tasks(pg_pool)
    sim.set_seat_behaviour(CITIZEN, SeatBehaviour(answers=False))   # rings out (NOANSWER)

    async def free_seat() -> str:
        # the citizen picks up from the third dial on (two outcomes known: the next dial is the third)
        if await pg_pool.fetchval("SELECT count(outcome) FROM callback_attempts") >= 2:
            sim.set_seat_behaviour(CITIZEN, SeatBehaviour(answers=True, answer_after=2.0, talk=3.0))
        return CALLBACK_SEAT

    desk = make_desk(service, pg_pool, node_id, free_seat=free_seat)
    async with running(desk):
        await until(lambda: task_is(pg_pool, task["id"], "connected"), "the third attempt connected", 90)

        async def call_ended() -> bool:
            return await pg_pool.fetchval("SELECT ended_at IS NOT NULL FROM callback_attempts WHERE attempt_no = 3")
        await until(call_ended, "the connected callback's hang-up")

    made = await attempts(pg_pool, task["id"])
    assert [(a["attempt_no"], a["outcome"], a["seat"]) for a in made] == [
        (1, "no_answer", CALLBACK_SEAT), (2, "no_answer", CALLBACK_SEAT), (3, "connected", CALLBACK_SEAT)]
    assert all(a["action_id"] for a in made)
    done = (await tasks(pg_pool))[0]
    assert (done["status"], done["attempts"], done["seat_failures"], done["status_reason"]) == (
        "connected", 3, 0, None)
    events = await order_events(pg_pool, task["work_order_id"], ("callback_attempt",))
    assert [(e["attempt_no"], e["outcome"], e["counted"], e["task_status"], e["attempts"]) for e in events] == [
        (1, "no_answer", True, "pending", 1), (2, "no_answer", True, "pending", 2),
        (3, "connected", True, "connected", 3)]
    # spacing: no attempt started before the time the previous outcome set
    for before, after, event in zip(made, made[1:], events):
        assert after["started_at"].timestamp() >= before["ended_at"].timestamp() + SPACING - 0.001
        assert after["started_at"].isoformat() >= event["next_attempt_at"]
    assert made[2]["ended_at"] >= made[2]["started_at"]
    # the order: taken up (callback_pending -> intake), its events in order
    order = await pg_pool.fetchrow("SELECT * FROM work_orders WHERE number = $1", result.order_number)
    assert order["status"] == "intake"
    assert [e["kind"] for e in await order_events(pg_pool, order["id"])] == [
        "created", "callback_task", "callback_attempt", "callback_attempt", "callback_attempt", "status_changed"]
    # Asterisk saw the seat first, then the citizen, with the order and task on the channel
    await sim.wait_idle(timeout=60)
    dialled = [o for o in sim.originates if o.exten == CITIZEN]
    assert len(dialled) == 3 and all(o.channel.startswith(CALLBACK_SEAT + "-") for o in dialled)
    assert [o.callee_answered for o in dialled] == [False, False, True]
    assert dict(dialled[0].variables) == {"HOTLINE_CALLBACK": result.order_number,
                                          "HOTLINE_CALLBACK_TASK": str(task["id"]),
                                          "HOTLINE_CALLBACK_ATTEMPT": str(made[0]["id"])}
    # the callbacks are the service's own calls, never written as citizens' calls
    assert await pg_pool.fetchval("SELECT count(*) FROM calls") == 1


async def test_a_task_fails_when_its_attempts_are_used(rig, pg_pool, node_id):
    sim, service, _ = rig
    await CallStore(pg_pool, callback_max_attempts=2).record_call(make_call(CITIZEN, "queue_timeout", node=node_id),
                                                                  [])
    [task] = await tasks(pg_pool)
    sim.set_seat_behaviour(CITIZEN, BusyLine())

    async def free_seat() -> str:
        return CALLBACK_SEAT

    desk = make_desk(service, pg_pool, node_id, free_seat=free_seat)
    async with running(desk):
        await until(lambda: task_is(pg_pool, task["id"], "failed"), "the task failed")
    done = (await tasks(pg_pool))[0]
    assert (done["attempts"], done["max_attempts"], done["status_reason"]) == (2, 2, "no contact after 2 attempts")
    made = await attempts(pg_pool, task["id"])
    assert [(a["outcome"], a["detail"]["dialstatus"]) for a in made] == [("busy", "BUSY"), ("busy", "BUSY")]
    events = await order_events(pg_pool, task["work_order_id"], ("callback_attempt",))
    assert [e["task_status"] for e in events] == ["pending", "failed"]
    assert (await pg_pool.fetchval("SELECT status FROM work_orders WHERE id = $1", task["work_order_id"])
            == "callback_pending")


async def test_a_seat_that_does_not_answer_does_not_count_against_the_citizen(rig, pg_pool, node_id):
    sim, service, _ = rig
    await CallStore(pg_pool).record_call(make_call(CITIZEN, "abandoned", node=node_id), [])
    [task] = await tasks(pg_pool)

    async def free_seat() -> str:
        first = not await pg_pool.fetchval("SELECT count(outcome) FROM callback_attempts")
        return DEAD_SEAT if first else CALLBACK_SEAT

    desk = make_desk(service, pg_pool, node_id, free_seat=free_seat, ring_seconds=3.0)
    async with running(desk):
        await until(lambda: task_is(pg_pool, task["id"], "connected"), "the second seat connected the citizen")
    made = await attempts(pg_pool, task["id"])
    assert [(a["seat"], a["outcome"]) for a in made] == [(DEAD_SEAT, "seat_failed"), (CALLBACK_SEAT, "connected")]
    assert made[0]["detail"]["originate"] == "Failure"
    done = (await tasks(pg_pool))[0]
    assert (done["attempts"], done["seat_failures"]) == (1, 1)
    events = await order_events(pg_pool, task["work_order_id"], ("callback_attempt",))
    assert [(e["outcome"], e["counted"]) for e in events] == [("seat_failed", False), ("connected", True)]


async def test_a_lost_outcome_times_out_back_to_pending(rig, pg_pool, node_id):
    """The desk never sees its channel's events (as after an AMI cut or a service restart)."""
    sim, service, _ = rig
    await CallStore(pg_pool).record_call(make_call(CITIZEN, "abandoned", node=node_id), [])
    [task] = await tasks(pg_pool)

    async def free_seat() -> str:
        return CALLBACK_SEAT

    desk = make_desk(service, pg_pool, node_id, route=False, free_seat=free_seat, ring_seconds=0.5,
                     outcome_timeout_seconds=1.0, retry_spacing_seconds=3600)
    async with running(desk):
        async def lost() -> bool:
            return await pg_pool.fetchval("SELECT outcome FROM callback_attempts WHERE task_id = $1",
                                          task["id"]) == "lost"
        await until(lost, "the attempt timed out")
        await until(lambda: task_is(pg_pool, task["id"], "pending"), "the task pending again")
    done = (await tasks(pg_pool))[0]
    assert (done["attempts"], done["status"]) == (1, "pending")
    assert done["next_attempt_at"].timestamp() > time.time() + 3000   # retried after the spacing, not at once
    made = await attempts(pg_pool, task["id"])
    assert [(a["outcome"], a["ended_at"] is not None) for a in made] == [("lost", True)]
    events = await order_events(pg_pool, task["work_order_id"], ("callback_attempt",))
    assert [(e["outcome"], e["counted"], e["task_status"]) for e in events] == [("lost", True, "pending")]
    # an outcome arriving after that changes nothing
    assert await desk.resolve(made[0]["id"], "connected") is None
    assert await task_is(pg_pool, task["id"], "pending")


async def test_an_abandoned_caller_is_called_back_on_an_available_operators_seat(rig, pg_pool, node_id):
    """End to end: the caller gives up in the queue (nobody logged in), the writer opens the task,
    the desk waits for a free seat, and dials on Ann's seat once she is available."""
    sim, service, world = rig
    desk = make_desk(service, pg_pool, node_id)   # the default seat finder: the operator desk
    async with running(desk):
        linkedid = await sim.place_call(ScriptedCaller(number=CITIZEN, name="Zhang", dtmf="1", dtmf_delay=0.5,
                                                       patience=30.0))

        async def task_open() -> bool:
            return len(await tasks(pg_pool)) == 1
        await until(task_open, "the missed call's task")
        call = await pg_pool.fetchrow("SELECT id, outcome FROM calls WHERE linkedid = $1", linkedid)
        [task] = await tasks(pg_pool)
        assert (task["reason"], task["call_id"], task["node"]) == (call["outcome"], call["id"], node_id)
        assert call["outcome"] in ("abandoned", "queue_timeout")
        assert await desk.operator_seat() is None      # nobody is logged in: nothing is dialled
        await service.desk.login(world["ann"], ANN, "op1")
        await service.desk.pause(world["ann"], "lunch", "op1")
        assert await desk.operator_seat() is None      # paused: not free
        assert await task_is(pg_pool, task["id"], "pending")
        await service.desk.unpause(world["ann"], "op1")
        await until(lambda: task_is(pg_pool, task["id"], "connected"), "the callback on Ann's seat connected")
    [made] = await attempts(pg_pool, task["id"])
    assert (made["seat"], made["outcome"]) == (ANN, "connected")


# ---- the HTTP API -----------------------------------------------------------------------------------

async def test_callbacks_api_lists_and_cancels_for_supervisors_only(pg_pool, node_id):
    from tests.test_operators import PASSWORDS, ROLES, _hash
    for login, role in ROLES.items():
        await pg_pool.execute("INSERT INTO users (login, display_name, role, password_hash) VALUES ($1, $1, $2, $3)",
                              login, role, _hash(PASSWORDS[login]))
    store = CallStore(pg_pool)
    await store.record_call(make_call(CITIZEN, "abandoned", node=node_id), [])
    await store.record_call(make_call(OTHER, "queue_timeout", node=node_id), [])
    first, second = await tasks(pg_pool)
    desk = CallbackDesk(pg_pool, None, node_id=node_id)
    app = web.Application()
    app[PG_POOL] = pg_pool
    app[CALLBACK_DESK] = desk
    add_api_routes(app, PG_POOL)
    setup_routes(app, ConfigApi(PG_POOL))
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        sup, op = await token_of(client, "sup"), await token_of(client, "op1")

        async def call(method: str, path: str, who: dict, body=None, status: int = 200) -> dict:
            resp = await client.request(method, path, headers=who, json=body)
            text = await resp.text()
            assert resp.status == status, (path, resp.status, text)
            return json.loads(text)

        listed = await call("GET", "/api/callbacks", sup)
        assert [(t["id"], t["number"], t["status"], t["order_number"][:6]) for t in listed["tasks"]] == [
            (second["id"], OTHER, "pending", "12345-"), (first["id"], CITIZEN, "pending", "12345-")]
        await call("GET", "/api/callbacks", op, status=403)
        await call("POST", f"/api/callbacks/{first['id']}/cancel", op, status=403)
        bad = await call("GET", "/api/callbacks?status=maybe", sup, status=400)
        assert bad["fields"][0]["field"] == "status"
        await call("GET", "/api/callbacks?limit=0", sup, status=400)
        done = await call("POST", f"/api/callbacks/{first['id']}/cancel", sup, {"reason": "number is a fax"})
        assert (done["status"], done["status_reason"], done["was"]) == ("cancelled", "number is a fax", "pending")
        await call("POST", f"/api/callbacks/{first['id']}/cancel", sup, status=409)
        await call("POST", "/api/callbacks/999999/cancel", sup, status=404)
        await call("POST", f"/api/callbacks/{second['id']}/cancel", sup, {"reason": 5}, status=400)
        assert [t["id"] for t in (await call("GET", "/api/callbacks?status=cancelled", sup))["tasks"]] == [first["id"]]
        assert (await call("GET", f"/api/callbacks/{first['id']}/attempts", sup))["attempts"] == []
        await call("GET", "/api/callbacks/999999/attempts", sup, status=404)
        events = await order_events(pg_pool, first["work_order_id"], ("callback_task",))
        assert [(e["action"], e["actor"], e["status_reason"] if "status_reason" in e else None) for e in events] == [
            ("created", "system", None), ("cancelled", "sup", "number is a fax")]
    finally:
        await client.close()


# ---- outcomes against the task's state (review mends) -----------------------------------------------

async def _dialing(pool, task_id: int, seat: str = "PJSIP/8001") -> int:
    """The task as the desk leaves it after sending the Originate: dialing, one attempt open."""
    attempt = await pool.fetchval("INSERT INTO callback_attempts (task_id, attempt_no, started_at, seat)"
                                  " VALUES ($1, 1, now(), $2) RETURNING id", task_id, seat)
    await pool.execute("UPDATE callback_tasks SET status = 'dialing', current_attempt_id = $2 WHERE id = $1",
                       task_id, attempt)
    return attempt


async def test_a_citizen_answered_while_the_callback_rang_is_not_dialled_again(pg_pool, node_id):
    store = CallStore(pg_pool)
    await store.record_call(make_call(CITIZEN, "abandoned", node=node_id, at=time.time() - 60), [])
    [task] = await tasks(pg_pool)
    attempt = await _dialing(pg_pool, task["id"])
    await store.record_call(make_call(CITIZEN, "answered", node=node_id), [])   # the citizen got through
    assert [t["status"] for t in await tasks(pg_pool)] == ["dialing"]          # the writer leaves it to the desk
    desk = CallbackDesk(pg_pool, None, node_id=node_id)
    await desk.resolve(attempt, "busy")                  # the callback's own attempt: busy (on the other call)
    [task] = await tasks(pg_pool)
    assert (task["status"], task["status_reason"]) == ("cancelled", "caller got through")


async def test_the_seat_hanging_up_while_the_citizen_rings_does_not_count(pg_pool, node_id):
    from queues.callbacks import DIAL_OUTCOMES

    assert DIAL_OUTCOMES["CANCEL"] == "seat_failed"
    await CallStore(pg_pool).record_call(make_call(CITIZEN, "abandoned", node=node_id), [])
    [task] = await tasks(pg_pool)
    attempt = await _dialing(pg_pool, task["id"])
    await CallbackDesk(pg_pool, None, node_id=node_id).resolve(attempt, DIAL_OUTCOMES["CANCEL"])
    [task] = await tasks(pg_pool)
    assert (task["status"], task["attempts"], task["seat_failures"]) == ("pending", 0, 1)


async def test_an_outcome_waits_out_a_postgres_outage_and_is_not_expired_meanwhile(pg_dsn, pg_pool, node_id):
    """The fault: the desk's pool is terminated (every connection gone) while a connected outcome
    is being written; the outcome is kept and written by a new pool once Postgres answers."""
    import asyncpg

    await CallStore(pg_pool).record_call(make_call(CITIZEN, "abandoned", node=node_id), [])
    [task] = await tasks(pg_pool)
    attempt = await _dialing(pg_pool, task["id"])
    broken = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=1)
    broken.terminate()
    desk = CallbackDesk(broken, None, node_id=node_id, clock=lambda: time.time() + 3600)   # long timed out
    writing = asyncio.create_task(desk._write(("outcome", attempt, "connected", {"source": "test"})))
    await asyncio.sleep(0.5)                  # a few failed tries: still pending, not dropped
    assert not writing.done() and attempt in desk._unwritten
    desk.pool = pg_pool                       # Postgres is back
    assert await desk.expire() == 0           # the timed-out attempt is not taken for lost: its outcome is coming
    await asyncio.wait_for(writing, 10)
    [task] = await tasks(pg_pool)
    assert task["status"] == "connected"


async def test_no_callback_takes_a_seat_while_its_queue_has_callers_waiting(pg_pool, redis_client, node_id):
    """The seat finder over a desk's states and the live view's waiting counts in real Redis."""
    from types import SimpleNamespace

    from queues.live import LiveStats
    from queues.operator_state import OperatorState, Status
    from queues.operators import OperatorInfo

    def operator(seat: str, since: float, queue: str):
        state = OperatorState(operator=seat, status=Status.AVAILABLE, since=since, seat=seat, device=1)
        return SimpleNamespace(state=state), OperatorInfo(seat, None, ((queue, 0),))

    (m1, i1), (m2, i2) = operator("PJSIP/8001", 1.0, "hotline-general"), operator("PJSIP/8002", 2.0, "hotline-business")
    desk_states = SimpleNamespace(machines={1: m1, 2: m2}, info={1: i1, 2: i2})
    live = LiveStats(redis_client, node_id)
    desk = CallbackDesk(pg_pool, None, operators=desk_states, waiting=live.waiting_counts)
    assert await desk.operator_seat() == "PJSIP/8001"                  # nobody waits: the longest available
    await redis_client.hset(f"hotline:{node_id}:waiting", mapping={"hotline-general": 2})
    assert await desk.operator_seat() == "PJSIP/8002"                  # general has callers: not its seat
    await redis_client.hset(f"hotline:{node_id}:waiting", mapping={"hotline-business": 1})
    assert await desk.operator_seat() is None                          # both queues busy: callbacks wait

    async def redis_down() -> dict:
        raise ConnectionError("Redis is down")
    desk.waiting = redis_down
    await redis_client.delete(f"hotline:{node_id}:waiting")
    assert await desk.operator_seat() is None                          # unknown: inbound callers first
