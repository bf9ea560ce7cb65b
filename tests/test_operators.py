"""The operator desk with the PBX simulator, real Postgres and Redis: login, pause with a reason,
calls only to available seats, no-answer auto-pause, wrap-up, reconcile after an AMI reconnect and
after an Asterisk restart, the operators' live view (Redis, snapshot, published messages), and the
HTTP API's checks (validation, roles, refusals)."""

from __future__ import annotations

import asyncio
import functools
import json
import time

import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from hotline import auth
from hotline.api import add_api_routes
from hotline.api_operators import OPERATOR_DESK
from hotline.app import PG_POOL
from hotline.service import HotlineService
from telephony.simulator import ScriptedCaller, SeatBehaviour
from tests.conftest import REDIS_URL
from tests.support import free_port, wait_until
from tests.test_live import _live_messages, _nothing_more
from tests.test_faults import SECRET, scene_settings, simulator

ANN, BOB = "PJSIP/8101", "PJSIP/8102"
PASSWORDS = {"sup": "super-pass-0002", "op1": "oper-pass-0003", "op2": "oper-pass-0004", "lead": "leader-pass-05"}
ROLES = {"sup": "supervisor", "op1": "operator", "op2": "operator", "lead": "leader"}
WRAP_UP = 1   # seconds (real) of after-call work in the queues of the operators' skills


@functools.cache
def _hash(password: str) -> str:
    return auth.hash_password(password)


async def make_world(pool) -> dict:
    """Users, two operators (Ann: general penalty 2 + business 5; Bob: general 0), two seats."""
    ids = {}
    for login, role in ROLES.items():
        ids[login] = await pool.fetchval(
            "INSERT INTO users (login, display_name, role, password_hash) VALUES ($1, $1, $2, $3) RETURNING id",
            login, role, _hash(PASSWORDS[login]))
    general = await pool.fetchval("INSERT INTO queues (name, purpose, wrapup_seconds) VALUES "
                                  "('hotline-general', 'general', $1) RETURNING id", WRAP_UP)
    business = await pool.fetchval("INSERT INTO queues (name, purpose, wrapup_seconds) VALUES "
                                   "('hotline-business', 'business', $1) RETURNING id", WRAP_UP)
    await pool.execute("INSERT INTO seats (interface, name, state_interface) VALUES ($1, 'Seat 8101', $1), ($2, 'Seat 8102', NULL)",
                       ANN, BOB)
    ann = await pool.fetchval("INSERT INTO operators (name, employee_no, user_id) VALUES ('Ann', 'E1', $1) RETURNING id",
                              ids["op1"])
    bob = await pool.fetchval("INSERT INTO operators (name, employee_no, user_id) VALUES ('Bob', 'E2', $1) RETURNING id",
                              ids["op2"])
    await pool.executemany("INSERT INTO operator_skills (operator_id, queue_id, penalty) VALUES ($1, $2, $3)",
                           [(ann, general, 2), (ann, business, 5), (bob, general, 0)])
    return {"ann": ann, "bob": bob}


@pytest.fixture
async def desk_rig(pg_dsn, pg_pool, node_id, tmp_path):
    """The simulator (seats 8101/8102 answer after 1 s, talk 2 s), the service with no static seats,
    the API on the service's desk; yields (sim, service, client, world)."""
    started: list = []
    world = await make_world(pg_pool)
    agi_port = free_port()
    settings = scene_settings(node_id, pg_dsn, tmp_path, agi_port, 5038).model_copy(update={"seats": []})
    sim = simulator(settings, tmp_path, agi_port)
    for seat in (ANN, BOB):
        sim.set_seat_behaviour(seat, SeatBehaviour(answers=True, answer_after=1.0, talk=2.0))
    await sim.start()
    started.append(sim)
    settings = settings.model_copy(update={"ami": settings.ami.model_copy(
        update={"port": sim.ami_port, "secret": SecretStr(SECRET)})})
    redis = aioredis.from_url(REDIS_URL, decode_responses=True, socket_timeout=1, socket_connect_timeout=1)
    started.append(redis)
    service = HotlineService(settings, pg_pool, redis)
    started.append(service)
    await service.start()
    await service.wait_ready(15)
    app = web.Application()
    app[PG_POOL] = pg_pool
    app[OPERATOR_DESK] = service.desk
    add_api_routes(app, PG_POOL)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        yield sim, service, client, world
    finally:
        await client.close()
        for thing in reversed(started):
            await (thing.aclose() if isinstance(thing, aioredis.Redis) else thing.stop())


async def token_of(client: TestClient, login: str) -> dict:
    resp = await client.post("/api/login", json={"login": login, "password": PASSWORDS[login]})
    assert resp.status == 200, await resp.text()
    return {"Authorization": f"Bearer {(await resp.json())['token']}"}


async def act(client: TestClient, who: dict, operator_id: int, action: str, body=None, status: int = 200) -> dict:
    resp = await client.post(f"/api/operators/{operator_id}/{action}", headers=who, json=body)
    text = await resp.text()
    assert resp.status == status, (action, resp.status, text)
    return json.loads(text)


async def members(service: HotlineService) -> dict[tuple[str, str], dict]:
    status = await service.node.actions.queue_status()
    return {(i.get("Queue"), i.get("Location")): dict(i.headers) for i in status.items if i.event == "QueueMember"}


async def history(pool, operator_id: int) -> list[dict]:
    rows = await pool.fetch("SELECT * FROM operator_state_history WHERE operator_id = $1 ORDER BY id", operator_id)
    return [dict(r) for r in rows]


async def test_login_pause_unpause_logout_carried_into_app_queue_and_postgres(desk_rig, pg_pool):
    sim, service, client, world = desk_rig
    op1 = await token_of(client, "op1")
    state = await act(client, op1, world["ann"], "login", {"seat": ANN})
    assert state["status"] == "available" and state["seat"] == ANN
    have = await members(service)
    general, business = have[("hotline-general", ANN)], have[("hotline-business", ANN)]
    assert (general["Name"], general["Penalty"], general["StateInterface"], general["Paused"]) == ("Ann", "2", ANN, "0")
    assert (business["Name"], business["Penalty"]) == ("Ann", "5")
    assert ("hotline-business", BOB) not in have and ("hotline-general", BOB) not in have

    state = await act(client, op1, world["ann"], "pause", {"reason": "lunch"})
    assert (state["status"], state["reason"]) == ("paused", "lunch")
    have = await members(service)
    for queue in ("hotline-general", "hotline-business"):
        assert (have[(queue, ANN)]["Paused"], have[(queue, ANN)]["PausedReason"]) == ("1", "lunch")
    row = await pg_pool.fetchrow("SELECT * FROM operator_sessions WHERE operator_id = $1", world["ann"])
    assert (row["status"], row["reason"], row["seat"], row["node"]) == ("paused", "lunch", ANN, service.node.node.id)
    resp = await client.get(f"/api/operators/{world['ann']}/state", headers=op1)
    assert (await resp.json())["reason"] == "lunch"

    await act(client, op1, world["ann"], "unpause")
    have = await members(service)
    assert have[("hotline-general", ANN)]["Paused"] == "0"
    await act(client, op1, world["ann"], "logout")
    assert not any(iface == ANN for _, iface in await members(service))
    steps = [(h["from_status"], h["to_status"], h["reason"], h["actor"]) for h in await history(pg_pool, world["ann"])]
    assert steps == [("offline", "available", "login", "op1"), ("available", "paused", "pause: lunch", "op1"),
                     ("paused", "available", "unpause", "op1"), ("available", "offline", "logout", "op1")]
    row = await pg_pool.fetchrow("SELECT * FROM operator_sessions WHERE operator_id = $1", world["ann"])
    assert (row["status"], row["seat"], row["node"]) == ("offline", None, None)


async def test_api_validation_roles_and_refusals(desk_rig, pg_pool):
    sim, service, client, world = desk_rig
    op1, op2, sup, lead = [await token_of(client, u) for u in ("op1", "op2", "sup", "lead")]
    bad = await act(client, op1, world["ann"], "login", {}, status=400)
    assert bad["fields"][0]["field"] == "seat"
    bad = await act(client, op1, world["ann"], "login", {"seat": "PJSIP/9999"}, status=400)
    assert bad["fields"][0]["field"] == "seat" and "no seat" in bad["error"]
    refused = await act(client, op1, world["ann"], "pause", {"reason": "lunch"}, status=409)
    assert "not logged in" in refused["error"]
    await act(client, op1, world["ann"], "login", {"seat": ANN})
    refused = await act(client, op1, world["ann"], "login", {"seat": ANN}, status=409)
    assert "already logged in" in refused["error"]
    taken = await act(client, op2, world["bob"], "login", {"seat": ANN}, status=409)
    assert "taken" in taken["error"]
    for body in ({}, {"reason": ""}, {"reason": "a\r\nAction: Originate"}, {"reason": "x" * 80}):
        bad = await act(client, op1, world["ann"], "pause", body, status=400)
        assert bad["fields"][0]["field"] == "reason"

    await act(client, op2, world["bob"], "login", {"seat": BOB})
    await act(client, op1, world["bob"], "pause", {"reason": "mine now"}, status=403)   # not on another
    await act(client, lead, world["bob"], "pause", {"reason": "lead"}, status=403)
    resp = await client.get(f"/api/operators/{world['bob']}/state", headers=op1)
    assert resp.status == 403
    state = await act(client, sup, world["bob"], "pause", {"reason": "coaching"})      # a supervisor may
    assert (state["status"], state["reason"]) == ("paused", "coaching")
    assert (await members(service))[("hotline-general", BOB)]["PausedReason"] == "coaching"
    await act(client, sup, world["bob"], "logout")                                       # forced logout
    assert [h["actor"] for h in await history(pg_pool, world["bob"])][-2:] == ["sup", "sup"]
    assert (await history(pg_pool, world["bob"]))[-1]["reason"] == "forced logout"
    await act(client, sup, 987654, "pause", {"reason": "x"}, status=404)


async def test_calls_go_only_to_available_seats_and_wrap_up_ends_by_itself(desk_rig, pg_pool, pg_dsn, node_id):
    sim, service, client, world = desk_rig
    op1, op2 = await token_of(client, "op1"), await token_of(client, "op2")
    await act(client, op1, world["ann"], "login", {"seat": ANN})
    await act(client, op1, world["ann"], "pause", {"reason": "training"})
    await act(client, op2, world["bob"], "login", {"seat": BOB})
    placed = []
    for i in range(3):
        placed.append(await sim.place_call(ScriptedCaller(number=f"138000000{i:02d}", dtmf="1", dtmf_delay=0.5)))
        await asyncio.sleep(0.05)
    await sim.wait_idle(timeout=90)
    assert [sim.results[lid].outcome for lid in placed] == ["answered"] * 3
    assert {sim.results[lid].seat_name for lid in placed} == {"Bob"}
    ann = [h["reason"] for h in await history(pg_pool, world["ann"])]
    assert ann == ["login", "pause: training"]           # never rang: no AgentCalled, no call
    have = await members(service)
    assert have[("hotline-general", ANN)]["CallsTaken"] == "0"
    assert have[("hotline-general", BOB)]["CallsTaken"] == "3"

    async def bob_back() -> bool:   # intended first (Postgres), then the unpause in app_queue
        return ((await service.desk.state(world["bob"]))["status"] == "available"
                and (await members(service))[("hotline-general", BOB)]["Paused"] == "0")

    await wait_until(bob_back, 30, "Bob available after the last wrap-up")   # a bound, generous on a loaded machine
    bob = [(h["from_status"], h["to_status"], h["reason"]) for h in await history(pg_pool, world["bob"])]
    assert bob.count(("on_call", "wrap_up", "AgentComplete")) == 3
    assert bob.count(("wrap_up", "available", "wrap-up over")) == 3


async def test_a_seat_that_never_answers_is_paused_and_the_supervisor_told(desk_rig, pg_pool, node_id):
    sim, service, client, world = desk_rig
    sim.set_seat_behaviour(ANN, SeatBehaviour(answers=False))
    pubsub = service.desk.redis.pubsub()
    await pubsub.subscribe(f"hotline:{node_id}:supervisor")
    try:
        op1 = await token_of(client, "op1")
        await act(client, op1, world["ann"], "login", {"seat": ANN})
        await sim.place_call(ScriptedCaller(number="13900000001", dtmf="1", dtmf_delay=0.5, patience=120))

        async def auto_paused() -> bool:   # intended first (Postgres), then carried into app_queue
            have = await members(service)
            return ((await service.desk.state(world["ann"])).get("reason") == "no answer"
                    and all(have[(q, ANN)]["Paused"] == "1" for q in ("hotline-general", "hotline-business")))

        await wait_until(auto_paused, 30, "Ann paused after unanswered rings")
        rings = [h for h in await history(pg_pool, world["ann"]) if h["reason"] == "AgentCalled"]
        assert len(rings) == service.desk.no_answer_limit
        have = await members(service)
        for queue in ("hotline-general", "hotline-business"):
            assert (have[(queue, ANN)]["Paused"], have[(queue, ANN)]["PausedReason"]) == ("1", "no answer")
        message = None
        for _ in range(50):
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
            if message is not None:
                break
        assert message is not None, "no supervisor message published"
        told = json.loads(message["data"])
        assert (told["operator_id"], told["operator"], told["seat"], told["reason"]) == (world["ann"], "Ann", ANN,
                                                                                          "no answer")
    finally:
        await pubsub.aclose()


async def _intended_in_asterisk(service: HotlineService) -> bool:
    have = await members(service)
    ann = [have.get((q, ANN)) for q in ("hotline-general", "hotline-business")]
    bob = have.get(("hotline-general", BOB))
    return (all(m is not None and m["Name"] == "Ann" and (m["Paused"], m["PausedReason"]) == ("1", "lunch")
                for m in ann)
            and ann[0]["Penalty"] == "2" and ann[1]["Penalty"] == "5"
            and bob is not None and bob["Paused"] == "0" and bob["Name"] == "Bob")


async def test_reconcile_after_an_ami_reconnect_restores_membership_pause_and_penalty(desk_rig):
    sim, service, client, world = desk_rig
    op1, op2 = await token_of(client, "op1"), await token_of(client, "op2")
    await act(client, op1, world["ann"], "login", {"seat": ANN})
    await act(client, op1, world["ann"], "pause", {"reason": "lunch"})
    await act(client, op2, world["bob"], "login", {"seat": BOB})
    assert await _intended_in_asterisk(service)
    logins = service.ami.connections
    sim.refuse_ami(True)                          # while nobody listens, Asterisk drifts
    sim.core.remove_member("hotline-general", ANN)
    sim.core.set_penalty(ANN, 9, "hotline-business")
    sim.core.pause_member(ANN, False, "", "hotline-business")
    sim.core.pause_member(BOB, True, "meddled", None)
    assert ANN not in sim.core.queues["hotline-general"].members
    sim.refuse_ami(False)
    await wait_until(lambda: service.ami.connections > logins and service.ami.ready.is_set(), 30, "AMI relogin")
    await wait_until(lambda: _intended_in_asterisk(service), 15, "intended state back in app_queue")
    assert (await service.desk.state(world["bob"]))["status"] == "available"


async def test_reconcile_after_an_asterisk_restart(desk_rig):
    sim, service, client, world = desk_rig
    op1, op2 = await token_of(client, "op1"), await token_of(client, "op2")
    await act(client, op1, world["ann"], "login", {"seat": ANN})
    await act(client, op1, world["ann"], "pause", {"reason": "lunch"})
    await act(client, op2, world["bob"], "login", {"seat": BOB})
    await sim.restart()                           # every member gone
    assert not any(sim.core.queues[q].members for q in sim.core.queues)
    await wait_until(lambda: service.node.restarts_seen == 1 and service.ami.ready.is_set(), 15, "restart noticed")
    await wait_until(lambda: _intended_in_asterisk(service), 15, "members and pauses restored")
    state = await service.desk.state(world["ann"])
    assert (state["status"], state["reason"], state["seat"]) == ("paused", "lunch", ANN)


# ---- the operators' live view --------------------------------------------------------------------

async def live_record(service: HotlineService, node_id: str, operator_id: int) -> tuple[dict | None, dict]:
    """The operator's record in Redis and the live snapshot, once every pushed update is applied."""
    assert await service.live.drain()
    raw = await service.live.redis.hget(f"hotline:{node_id}:operators", str(operator_id))
    return (json.loads(raw) if raw is not None else None), await service.live.snapshot(time.time())


async def test_operator_states_in_the_live_view_with_since_and_reason(desk_rig, pg_pool, node_id):
    sim, service, client, world = desk_rig
    ann = world["ann"]
    pubsub = service.live.redis.pubsub()
    await pubsub.subscribe(f"hotline:{node_id}:live")
    try:
        op1 = await token_of(client, "op1")
        shown = []
        for action, body, state, reason in (("login", {"seat": ANN}, "available", None),
                                            ("pause", {"reason": "lunch"}, "paused", "lunch"),
                                            ("unpause", None, "available", None)):
            await act(client, op1, ann, action, body)
            record, snap = await live_record(service, node_id, ann)
            since = round(service.desk.machines[ann].state.since, 6)   # to the microsecond, as in Postgres
            assert record == {"operator_id": ann, "name": "Ann", "state": state, "since": since, "reason": reason,
                              "seat": ANN}
            assert snap["operators"] == {str(ann): record} and snap["operators_by_state"] == {state: 1}
            row = await pg_pool.fetchrow("SELECT status, since FROM operator_sessions WHERE operator_id = $1", ann)
            assert row["status"] == state and row["since"].timestamp() == since
            assert not shown or since > shown[-1]["since"]
            shown.append(record)
        await act(client, op1, ann, "logout")
        record, snap = await live_record(service, node_id, ann)
        assert record is None and snap["operators"] == {} and snap["operators_by_state"] == {}
        gone = {"operator_id": ann, "name": "Ann", "state": "offline", "since": round(service.desk.machines[ann].state.since, 6),
                "reason": None, "seat": None}
        assert gone["since"] > shown[-1]["since"]
        assert await _live_messages(pubsub, 4) == [{"type": "operator", **r} for r in (*shown, gone)]
        assert [m for m in await _nothing_more(pubsub) if m["type"] == "operator"] == []
    finally:
        await pubsub.aclose()


async def test_calls_show_ringing_on_call_and_wrap_up_in_the_live_view(desk_rig, node_id):
    sim, service, client, world = desk_rig
    bob = world["bob"]
    pubsub = service.live.redis.pubsub()
    await pubsub.subscribe(f"hotline:{node_id}:live")
    try:
        await act(client, await token_of(client, "op2"), bob, "login", {"seat": BOB})
        await sim.place_call(ScriptedCaller(number="13800000001", dtmf="1", dtmf_delay=0.5))
        await sim.wait_idle(timeout=90)

        async def available_again() -> bool:
            return (await service.desk.state(bob))["status"] == "available"

        await wait_until(available_again, 10, "Bob available after the wrap-up")
        messages = await _live_messages(pubsub, 5)
        assert [(m["operator_id"], m["state"], m["seat"]) for m in messages] == [
            (bob, state, BOB) for state in ("available", "ringing", "on_call", "wrap_up", "available")]
        assert [m["since"] for m in messages] == sorted(m["since"] for m in messages)
        record, _ = await live_record(service, node_id, bob)
        assert record == {k: v for k, v in messages[-1].items() if k != "type"}
    finally:
        await pubsub.aclose()


async def test_the_live_view_is_replaced_by_the_desks_after_an_ami_relogin(desk_rig, node_id):
    sim, service, client, world = desk_rig
    ann, key = world["ann"], f"hotline:{node_id}:operators"
    op1 = await token_of(client, "op1")
    await act(client, op1, ann, "login", {"seat": ANN})
    await act(client, op1, ann, "pause", {"reason": "lunch"})
    shown, _ = await live_record(service, node_id, ann)
    # the view drifts: Ann's record lost, an operator who is not logged in here left behind
    stale = {"operator_id": 987654, "name": "Gone", "state": "available", "since": 1.0, "reason": None,
             "seat": "PJSIP/8199"}
    redis = service.live.redis
    await redis.hdel(key, str(ann))
    await redis.hset(key, "987654", json.dumps(stale))
    resyncs = service.node.resyncs
    sim.drop_ami_links()            # the relogin reloads the desk from Postgres and reconciles

    async def replaced() -> bool:
        return (service.node.resyncs > resyncs and not service.node._resync_lock.locked()
                and await service.live.drain()
                and {k: json.loads(v) for k, v in (await redis.hgetall(key)).items()} == {str(ann): shown})

    await wait_until(replaced, 30, "the live view replaced by the desk's operators")
    assert shown["state"] == "paused" and shown["reason"] == "lunch"
