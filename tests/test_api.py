"""The configuration HTTP API against real Postgres: login, tokens, roles, validation, audit, atomicity."""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import logging
import os
import subprocess
import sys

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from hotline import auth
from hotline.api import add_api_routes
from hotline.app import PG_POOL
from queues.config_store import Actor, Conflict

PASSWORDS = {
    "boss": "admin-pass-0001",
    "sup": "super-pass-0002",
    "op1": "oper-pass-0003",
    "op2": "oper-pass-0004",
    "lead": "leader-pass-05",
}
ROLES = {"boss": "admin", "sup": "supervisor", "op1": "operator", "op2": "operator", "lead": "leader"}

QUEUE = {"name": "hotline-dialect", "purpose": "dialect"}
SEAT = {"interface": "PJSIP/8001", "name": "Seat 8001", "location": "room 2, row 1"}


@functools.cache
def _hash(password: str) -> str:
    return auth.hash_password(password)  # argon2 takes a while: once per run and password


@contextlib.asynccontextmanager
async def api_client(pg_pool, **state):
    """A test client of the API on ``pg_pool`` with one user per role; ``state``: more application
    state (AppKey name -> value, e.g. the IVR desk)."""
    app = web.Application()
    app[PG_POOL] = pg_pool
    for key, value in state.values():
        app[key] = value
    add_api_routes(app, PG_POOL)
    # the users, as auth.create_user writes them (test_..._secrets_never_logged runs create_user itself)
    for login, role in ROLES.items():
        await pg_pool.execute("INSERT INTO users (login, display_name, role, password_hash) VALUES ($1, $1, $2, $3)",
                              login, role, _hash(PASSWORDS[login]))
    async with TestClient(TestServer(app)) as client:
        yield client


@pytest.fixture
async def api(pg_pool):
    async with api_client(pg_pool) as client:
        yield client


async def token_of(client: TestClient, login: str) -> dict:
    resp = await client.post("/api/login", json={"login": login, "password": PASSWORDS[login]})
    assert resp.status == 200, await resp.text()
    return {"Authorization": f"Bearer {(await resp.json())['token']}"}


async def call(client: TestClient, method: str, path: str, who: dict, body=None, status: int = 200):
    resp = await client.request(method, path, headers=who, json=body)
    assert resp.status == status, (method, path, resp.status, await resp.text())
    return None if resp.status == 204 else await resp.json()


async def audit(pg_pool, entity: str) -> list[dict]:
    rows = await pg_pool.fetch("SELECT * FROM config_audit WHERE entity = $1 ORDER BY id", entity)
    return [{**dict(r), "before": r["before"] and json.loads(r["before"]),
             "after": r["after"] and json.loads(r["after"])} for r in rows]


async def count(pg_pool, table: str) -> int:
    return await pg_pool.fetchval(f"SELECT count(*) FROM {table}")


# ---- login and tokens -------------------------------------------------------------------------


async def test_login_gives_a_token_and_a_wrong_password_is_401(api, pg_pool):
    resp = await api.post("/api/login", json={"login": "BOSS", "password": PASSWORDS["boss"]})
    assert resp.status == 200
    body = await resp.json()
    assert body["user"] == {"id": body["user"]["id"], "login": "boss", "display_name": "boss", "role": "admin"}
    assert dt.datetime.fromisoformat(body["expires_at"]) > dt.datetime.now(dt.timezone.utc)
    # the token is stored hashed, never as given
    stored = await pg_pool.fetch("SELECT token_hash FROM api_tokens")
    assert [r["token_hash"] for r in stored] == [auth.token_hash(body["token"])]
    assert body["token"].encode() not in stored[0]["token_hash"]
    me = await call(api, "GET", "/api/me", {"Authorization": f"Bearer {body['token']}"})
    assert me["login"] == "boss" and me["role"] == "admin"

    for creds in ({"login": "boss", "password": "wrong-password"}, {"login": "nobody", "password": "whatever-123"}):
        resp = await api.post("/api/login", json=creds)
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"] == "Bearer"
        assert "token" not in await resp.json()


async def test_inactive_user_cannot_log_in_and_its_tokens_stop_working(api, pg_pool):
    who = await token_of(api, "sup")
    await pg_pool.execute("UPDATE users SET active = false WHERE login = 'sup'")
    await call(api, "GET", "/api/queues", who, status=401)
    resp = await api.post("/api/login", json={"login": "sup", "password": PASSWORDS["sup"]})
    assert resp.status == 401


async def test_every_endpoint_needs_a_valid_token(api, pg_pool):
    endpoints = [("GET", "/api/me"), ("POST", "/api/logout"), ("GET", "/api/queues"), ("POST", "/api/queues"),
                 ("GET", "/api/queues/1"), ("PATCH", "/api/queues/1"), ("DELETE", "/api/queues/1"),
                 ("GET", "/api/seats"), ("POST", "/api/seats"), ("GET", "/api/operators"),
                 ("GET", "/api/operators/1/skills"), ("PUT", "/api/operators/1/skills"), ("GET", "/api/leaders"),
                 ("POST", "/api/leaders"), ("GET", "/api/leader-slots"), ("DELETE", "/api/leader-slots/1")]
    expired = await token_of(api, "boss")
    await pg_pool.execute("UPDATE api_tokens SET created_at = now() - interval '2 days',"
                          " expires_at = now() - interval '1 second'")
    for headers in ({}, {"Authorization": "Bearer not-a-token-at-all-xxxx"}, {"Authorization": "Basic Ym9zczp4"},
                    {"Authorization": "Bearer"}, expired):
        for method, path in endpoints:
            resp = await api.request(method, path, headers=headers, json=QUEUE)
            assert resp.status == 401, (method, path, headers)
    assert await count(pg_pool, "queues") == 0


async def test_logout_revokes_the_token(api):
    who = await token_of(api, "boss")
    await call(api, "POST", "/api/logout", who, status=204)
    await call(api, "GET", "/api/me", who, status=401)


# ---- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/api/queues", {"name": "bad name", "purpose": "general"}, "name"),
    ("/api/queues", {"name": "General", "purpose": "general"}, "name"),
    ("/api/queues", {"name": "q1", "purpose": "sales"}, "purpose"),
    ("/api/queues", {"name": "q1", "purpose": "general", "strategy": "roundrobin"}, "strategy"),
    ("/api/queues", {"name": "q1", "purpose": "general", "service_level_seconds": "15"}, "service_level_seconds"),
    ("/api/queues", {"name": "q1", "purpose": "general", "max_wait_seconds": 0}, "max_wait_seconds"),
    ("/api/queues", {"name": "q1", "purpose": "general", "colour": "red"}, "colour"),
    ("/api/queues", {"purpose": "general"}, "name"),
    ("/api/queues", {"name": "q1", "purpose": "general", "overflow_queue_id": 2**63}, "overflow_queue_id"),
    ("/api/seats", {"interface": "8001", "name": "Seat"}, "interface"),
    ("/api/seats", {"interface": "PJSIP/8001\r\nAction: Originate", "name": "Seat"}, "interface"),
    ("/api/seats", {"interface": "PJSIP/8001", "name": "Seat,1"}, "name"),
    ("/api/seats", {"interface": "PJSIP/8001", "name": "Seat", "state_interface": "x"}, "state_interface"),
    ("/api/operators", {"name": "Li Wei\n", "employee_no": "E1"}, "name"),
    ("/api/operators", {"name": "Li Wei", "employee_no": "E 1"}, "employee_no"),
    ("/api/leaders", {"name": "Wang", "title": "", "jurisdiction": "Xicheng"}, "title"),
    ("/api/leader-slots", {"slot_date": "2025-07-01", "start_time": "10:00", "end_time": "09:00", "leader_id": 1,
                           "leader_seat_id": 1, "queue_id": 1, "topic": "roads"}, "end_time"),
    ("/api/leader-slots", {"slot_date": "2025-02-30", "start_time": "09:00", "end_time": "10:00", "leader_id": 1,
                           "leader_seat_id": 1, "queue_id": 1, "topic": "roads"}, "slot_date"),
    ("/api/leader-slots", {"slot_date": "2025-07-01", "start_time": "09:00", "end_time": "10:00", "leader_id": 1,
                           "leader_seat_id": 1, "queue_id": 1, "topic": "roads",
                           "prescreen_operator_ids": [3, 3]}, "prescreen_operator_ids"),
    ("/api/operators/1/skills", {"skills": [{"queue_id": 1, "penalty": 101}]}, "skills.0.penalty"),
    ("/api/operators/1/skills", {"skills": [{"queue_id": 1}, {"queue_id": 1}]}, "skills"),
    ("/api/queues", ["not", "an", "object"], "body"),
])
async def test_bad_input_is_a_400_naming_the_field(api, pg_pool, path, body, field):
    who = await token_of(api, "boss")
    method = "PUT" if path.endswith("/skills") else "POST"
    answer = await call(api, method, path, who, body, status=400)
    assert field in [f["field"] for f in answer["fields"]], answer
    assert await count(pg_pool, "config_audit WHERE entity <> 'user'") == 0


async def test_a_body_that_is_not_json_is_a_400(api):
    who = await token_of(api, "boss")
    resp = await api.post("/api/queues", headers=who, data=b"{name: ")
    assert resp.status == 400
    assert (await resp.json())["fields"][0]["field"] == "body"
    resp = await api.post("/api/login", data=b"\xff")
    assert resp.status == 400


async def test_a_bad_patch_names_the_field_and_changes_nothing(api, pg_pool):
    who = await token_of(api, "boss")
    queue = await call(api, "POST", "/api/queues", who, QUEUE, status=201)
    for changes, field in (({"max_wait_seconds": 4}, "max_wait_seconds"), ({"id": 7}, "id"),
                           ({"name": None}, "name"), ({"overflow_queue_id": queue["id"]}, "overflow_queue_id")):
        answer = await call(api, "PATCH", f"/api/queues/{queue['id']}", who, changes, status=400)
        assert [f["field"] for f in answer["fields"]] == [field], answer
    assert await call(api, "GET", f"/api/queues/{queue['id']}", who) == queue
    assert [a["action"] for a in await audit(pg_pool, "queue")] == ["create"]


# ---- roles ------------------------------------------------------------------------------------


async def test_only_an_admin_edits_the_configuration(api, pg_pool):
    admin, sup, op, leader = [await token_of(api, n) for n in ("boss", "sup", "op1", "lead")]
    queue = await call(api, "POST", "/api/queues", admin, QUEUE, status=201)
    for who in (sup, op, leader):
        await call(api, "POST", "/api/queues", who, {"name": "q2", "purpose": "general"}, status=403)
        await call(api, "PATCH", f"/api/queues/{queue['id']}", who, {"max_wait_seconds": 60}, status=403)
        await call(api, "DELETE", f"/api/queues/{queue['id']}", who, status=403)
        await call(api, "POST", "/api/seats", who, SEAT, status=403)
        await call(api, "PUT", "/api/operators/1/skills", who, {"skills": []}, status=403)
        # everyone reads the queues
        assert await call(api, "GET", "/api/queues", who) == [queue]
    assert await count(pg_pool, "queues") == 1
    assert len(await audit(pg_pool, "queue")) == 1


async def test_an_operator_reads_only_itself_a_supervisor_reads_all(api, pg_pool):
    admin, sup, op1, leader = [await token_of(api, n) for n in ("boss", "sup", "op1", "lead")]
    users = {r["login"]: r["id"] for r in await pg_pool.fetch("SELECT id, login FROM users")}
    me = await call(api, "POST", "/api/operators", admin,
                    {"name": "Li Wei", "employee_no": "E001", "user_id": users["op1"]}, status=201)
    other = await call(api, "POST", "/api/operators", admin,
                       {"name": "Zhang Min", "employee_no": "E002", "user_id": users["op2"]}, status=201)
    assert (await call(api, "GET", "/api/me", op1))["operator_id"] == me["id"]

    assert await call(api, "GET", "/api/operators", sup) == [me, other]
    assert await call(api, "GET", f"/api/operators/{other['id']}", sup) == other
    assert await call(api, "GET", "/api/operators", op1) == [me]
    assert await call(api, "GET", f"/api/operators/{me['id']}", op1) == me
    assert await call(api, "GET", f"/api/operators/{me['id']}/skills", op1) == {"skills": []}
    await call(api, "GET", f"/api/operators/{other['id']}", op1, status=403)
    await call(api, "GET", f"/api/operators/{other['id']}/skills", op1, status=403)
    await call(api, "PATCH", f"/api/operators/{me['id']}", op1, {"name": "Li"}, status=403)
    await call(api, "GET", "/api/operators", leader, status=403)


# ---- changes and their audit ------------------------------------------------------------------


async def test_queue_create_update_delete_with_audit_rows(api, pg_pool):
    who = await token_of(api, "boss")
    boss_id = await pg_pool.fetchval("SELECT id FROM users WHERE login = 'boss'")
    created = await call(api, "POST", "/api/queues", who, QUEUE, status=201)
    assert created["service_level_seconds"] == 15 and created["strategy"] == "rrmemory"
    assert created["overflow_queue_id"] is None
    general = await call(api, "POST", "/api/queues", who, {"name": "hotline-general", "purpose": "general"},
                         status=201)
    updated = await call(api, "PATCH", f"/api/queues/{created['id']}", who,
                         {"max_wait_seconds": 90, "overflow_queue_id": general["id"]})
    assert updated["max_wait_seconds"] == 90 and updated["overflow_queue_id"] == general["id"]
    assert updated["name"] == QUEUE["name"]
    # the same values again: no change, no audit row
    assert (await call(api, "PATCH", f"/api/queues/{created['id']}", who, {"max_wait_seconds": 90}))["id"] == created["id"]
    # a queue another overflows into is in use
    answer = await call(api, "DELETE", f"/api/queues/{general['id']}", who, status=409)
    assert "overflow" in answer["error"]
    # an overflow loop is refused
    answer = await call(api, "PATCH", f"/api/queues/{general['id']}", who, {"overflow_queue_id": created["id"]},
                        status=400)
    assert answer["fields"][0]["field"] == "overflow_queue_id"
    await call(api, "DELETE", f"/api/queues/{created['id']}", who, status=204)
    await call(api, "GET", f"/api/queues/{created['id']}", who, status=404)

    rows = [a for a in await audit(pg_pool, "queue") if a["entity_id"] == created["id"]]
    assert [r["action"] for r in rows] == ["create", "update", "delete"]
    assert all(r["actor"] == "boss" and r["actor_user_id"] == boss_id for r in rows)
    assert rows[0]["before"] is None and rows[0]["after"]["name"] == QUEUE["name"]
    assert rows[1]["before"]["max_wait_seconds"] == 120 and rows[1]["after"]["max_wait_seconds"] == 90
    assert rows[2]["before"]["max_wait_seconds"] == 90 and rows[2]["after"] is None


async def test_unknown_ids_are_404(api, pg_pool):
    who = await token_of(api, "boss")
    for path in ("/api/queues/99", "/api/seats/99", "/api/operators/99", "/api/leaders/99", "/api/leader-slots/99"):
        await call(api, "GET", path, who, status=404)
        await call(api, "DELETE", path, who, status=404)
    await call(api, "PATCH", "/api/seats/99", who, {"location": "x"}, status=404)
    await call(api, "GET", "/api/operators/99/skills", who, status=404)
    await call(api, "PUT", "/api/operators/99/skills", who, {"skills": []}, status=404)
    # an id beyond bigint matches no route at all
    assert (await api.get("/api/queues/999999999999999999999", headers=who)).status == 404
    assert await count(pg_pool, "config_audit WHERE entity <> 'user'") == 0


async def test_duplicates_are_409_naming_the_field(api, pg_pool):
    who = await token_of(api, "boss")
    await call(api, "POST", "/api/queues", who, QUEUE, status=201)
    answer = await call(api, "POST", "/api/queues", who, {**QUEUE, "name": QUEUE["name"].upper()}, status=409)
    assert answer["fields"][0]["field"] == "name"
    await call(api, "POST", "/api/seats", who, SEAT, status=201)
    answer = await call(api, "POST", "/api/seats", who, {**SEAT, "name": "Other"}, status=409)
    assert answer["fields"][0]["field"] == "interface"
    await call(api, "POST", "/api/operators", who, {"name": "Li Wei", "employee_no": "E001"}, status=201)
    answer = await call(api, "POST", "/api/operators", who, {"name": "Li Wu", "employee_no": "E001"}, status=409)
    assert answer["fields"][0]["field"] == "employee_no"
    assert await count(pg_pool, "queues") == 1 and await count(pg_pool, "seats") == 1
    assert await count(pg_pool, "operators") == 1
    assert await count(pg_pool, "config_audit WHERE entity <> 'user'") == 3


async def _slot_world(api, who) -> dict:
    leader_queue = await call(api, "POST", "/api/queues", who, {"name": "hotline-leader", "purpose": "leader"},
                              status=201)
    general = await call(api, "POST", "/api/queues", who, {"name": "hotline-general", "purpose": "general"},
                         status=201)
    seat = await call(api, "POST", "/api/seats", who, {"interface": "PJSIP/9001", "name": "Leader seat"}, status=201)
    leader = await call(api, "POST", "/api/leaders", who,
                        {"name": "Wang Fang", "title": "Deputy Mayor", "jurisdiction": "Xicheng"}, status=201)
    ops = [await call(api, "POST", "/api/operators", who, {"name": f"Op {n}", "employee_no": f"E{n}"}, status=201)
           for n in (1, 2)]
    return {"queue": leader_queue, "general": general, "seat": seat, "leader": leader, "ops": ops}


def _slot(world: dict, **changes) -> dict:
    return {"slot_date": "2025-07-01", "start_time": "09:00:00", "end_time": "10:30:00",
            "leader_id": world["leader"]["id"], "leader_seat_id": world["seat"]["id"],
            "queue_id": world["queue"]["id"], "topic": "Old housing renovation",
            "prescreen_operator_ids": [o["id"] for o in world["ops"]], "hard_case_order_ids": [], **changes}


async def test_leader_slot_with_prescreeners_and_hard_cases(api, pg_pool):
    who = await token_of(api, "boss")
    world = await _slot_world(api, who)
    orders = [await pg_pool.fetchval("INSERT INTO work_orders (number, status) VALUES ($1, 'intake') RETURNING id",
                                     f"12345-20250630-00000{n}") for n in (1, 2)]
    slot = await call(api, "POST", "/api/leader-slots", who,
                      _slot(world, prescreen_operator_ids=[world["ops"][1]["id"], world["ops"][0]["id"]],
                            hard_case_order_ids=[orders[1], orders[0]]), status=201)
    assert slot["start_time"] == "09:00:00" and slot["slot_date"] == "2025-07-01"
    assert slot["prescreen_operator_ids"] == sorted(o["id"] for o in world["ops"])
    assert slot["hard_case_order_ids"] == [orders[1], orders[0]]  # the order given
    updated = await call(api, "PATCH", f"/api/leader-slots/{slot['id']}", who, {"hard_case_order_ids": [orders[0]]})
    assert updated["hard_case_order_ids"] == [orders[0]]
    rows = await audit(pg_pool, "leader_slot")
    assert [r["action"] for r in rows] == ["create", "update"]
    assert rows[1]["before"]["hard_case_order_ids"] == [orders[1], orders[0]]
    assert rows[1]["after"]["hard_case_order_ids"] == [orders[0]]

    # the same leader or seat at an overlapping time: 409; right after: fine
    answer = await call(api, "POST", "/api/leader-slots", who, _slot(world, start_time="10:00", end_time="11:00"),
                        status=409)
    assert answer["fields"][0]["field"] == "leader_id"
    await call(api, "POST", "/api/leader-slots", who, _slot(world, start_time="10:30", end_time="11:00"), status=201)
    # a slot's queue must be a leader queue, and stays one while a slot uses it
    answer = await call(api, "POST", "/api/leader-slots", who,
                        _slot(world, queue_id=world["general"]["id"], slot_date="2025-07-02"), status=400)
    assert answer["fields"][0]["field"] == "queue_id"
    await call(api, "PATCH", f"/api/queues/{world['queue']['id']}", who, {"purpose": "special"}, status=409)
    # a seat, a leader, an operator in a slot cannot be deleted
    await call(api, "DELETE", f"/api/seats/{world['seat']['id']}", who, status=409)
    await call(api, "DELETE", f"/api/leaders/{world['leader']['id']}", who, status=409)
    await call(api, "DELETE", f"/api/operators/{world['ops'][0]['id']}", who, status=409)
    await call(api, "DELETE", f"/api/leader-slots/{slot['id']}", who, status=204)
    assert await count(pg_pool, f"leader_slot_cases WHERE slot_id = {slot['id']}") == 0


async def test_a_failing_change_leaves_nothing_half_written(api, pg_pool):
    who = await token_of(api, "boss")
    world = await _slot_world(api, who)
    audit_before = await count(pg_pool, "config_audit")

    # the slot row is inserted, then its pre-screener's foreign key fails: all of it rolls back
    answer = await call(api, "POST", "/api/leader-slots", who, _slot(world, prescreen_operator_ids=[424242]),
                        status=400)
    assert answer["fields"][0]["field"] == "prescreen_operator_ids"
    answer = await call(api, "POST", "/api/leader-slots", who, _slot(world, hard_case_order_ids=[777]), status=400)
    assert answer["fields"][0]["field"] == "hard_case_order_ids"
    for bad in ({"leader_seat_id": 31337}, {"leader_id": 31337}):
        answer = await call(api, "POST", "/api/leader-slots", who, _slot(world, **bad), status=400)
        assert answer["fields"][0]["field"] == next(iter(bad))
    assert await count(pg_pool, "leader_slots") == 0
    assert await count(pg_pool, "leader_slot_prescreeners") == 0

    # an update whose children fail keeps the slot and its children as they were
    slot = await call(api, "POST", "/api/leader-slots", who, _slot(world), status=201)
    await call(api, "PATCH", f"/api/leader-slots/{slot['id']}", who,
               {"topic": "changed", "prescreen_operator_ids": [world["ops"][0]["id"], 99999]}, status=400)
    assert await call(api, "GET", f"/api/leader-slots/{slot['id']}", who) == slot

    # skills: the old set is deleted first, then an unknown queue fails: the old set stays
    op = world["ops"][0]["id"]
    skills = [{"queue_id": world["general"]["id"], "penalty": 5}]
    assert await call(api, "PUT", f"/api/operators/{op}/skills", who, {"skills": skills}) == {"skills": skills}
    answer = await call(api, "PUT", f"/api/operators/{op}/skills", who,
                        {"skills": [{"queue_id": world["queue"]["id"], "penalty": 0}, {"queue_id": 5555}]},
                        status=400)
    assert answer["fields"][0]["field"] == "skills"
    assert await call(api, "GET", f"/api/operators/{op}/skills", who) == {"skills": skills}
    # an operator linked to a user that does not exist
    answer = await call(api, "POST", "/api/operators", who, {"name": "X", "employee_no": "E9", "user_id": 4444},
                        status=400)
    assert answer["fields"][0]["field"] == "user_id"

    # exactly the successful changes were audited: the slot create and the skills update
    rows = await pg_pool.fetch("SELECT entity, action FROM config_audit ORDER BY id OFFSET $1", audit_before)
    assert [(r["entity"], r["action"]) for r in rows] == [("leader_slot", "create"), ("operator_skills", "update")]


async def test_operator_delete_takes_its_skills_into_the_audit(api, pg_pool):
    who = await token_of(api, "boss")
    queue = await call(api, "POST", "/api/queues", who, QUEUE, status=201)
    op = await call(api, "POST", "/api/operators", who, {"name": "Li Wei", "employee_no": "E001"}, status=201)
    await call(api, "PUT", f"/api/operators/{op['id']}/skills", who, {"skills": [{"queue_id": queue["id"], "penalty": 3}]})
    # a queue some operator answers is in use
    await call(api, "DELETE", f"/api/queues/{queue['id']}", who, status=409)
    await call(api, "DELETE", f"/api/operators/{op['id']}", who, status=204)
    assert await count(pg_pool, "operator_skills") == 0
    deleted = (await audit(pg_pool, "operator"))[-1]
    assert deleted["action"] == "delete" and deleted["before"]["skills"] == [{"queue_id": queue["id"], "penalty": 3}]


# ---- secrets ----------------------------------------------------------------------------------


async def test_password_hashes_are_argon2_never_returned_and_secrets_never_logged(api, pg_pool, caplog):
    caplog.set_level(logging.DEBUG)
    created = await auth.create_user(pg_pool, "rec", "recorder", "recorder-pass-77", Actor(None, "test"),
                                     display_name="Chen Jing")
    assert created.role == "recorder" and created.display_name == "Chen Jing"
    with pytest.raises(Conflict):
        await auth.create_user(pg_pool, "REC", "recorder", "recorder-pass-78", Actor(None, "test"))
    for bad in ({"login": "a b"}, {"role": "king"}, {"password": "short"}, {"display_name": "x\ny"}):
        args = {"login": "rec2", "role": "recorder", "password": "recorder-pass-79", **bad}
        with pytest.raises(ValueError):
            await auth.create_user(pg_pool, args["login"], args["role"], args["password"], Actor(None, "test"),
                                   display_name=args.get("display_name"))
    resp = await api.post("/api/login", json={"login": "op1", "password": PASSWORDS["op1"]})
    token = (await resp.json())["token"]
    login_text = await resp.text()
    await api.post("/api/login", json={"login": "op1", "password": "a-wrong-password-99"})
    await api.post("/api/login", json={"login": "hunter2-typed-as-login", "password": "whatever-123"})
    me_text = await (await api.get("/api/me", headers={"Authorization": f"Bearer {token}"})).text()

    hashes = {r["login"]: r["password_hash"] for r in await pg_pool.fetch("SELECT login, password_hash FROM users")}
    assert len(hashes) == len(ROLES) + 1 and all(h.startswith("$argon2id$") for h in hashes.values())
    assert all(PASSWORDS[n] not in hashes[n] for n in ROLES) and "recorder-pass-77" not in hashes["rec"]
    assert await auth.login(pg_pool, "rec", "recorder-pass-77") is not None
    for text in (login_text, me_text):
        assert "argon2" not in text and "password" not in text
    user_audit = await audit(pg_pool, "user")
    assert [(a["action"], a["actor"], a["entity_id"]) for a in user_audit] == [("create", "test", created.id)]
    assert set(user_audit[0]["after"]) == {"id", "login", "display_name", "role", "active", "created_at"}
    logged = caplog.text
    for secret in (PASSWORDS["op1"], "a-wrong-password-99", "hunter2-typed-as-login", token, "$argon2",
                   "recorder-pass-7"):
        assert secret not in logged
    assert "op1 (operator) logged in" in logged


def test_user_add_command_reads_the_password_from_stdin_or_the_environment(pg_dsn, tmp_path):
    import asyncio

    import asyncpg

    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTLINE_")}
    env["HOTLINE_DATABASE_URL"] = pg_dsn
    password = "Bootstrap-Secret-123"

    def run(*args: str, stdin: str = "", extra: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "hotline.cli", "user", "add", *args], input=stdin,
                              capture_output=True, text=True, env={**env, **(extra or {})}, timeout=60)

    login = f"root{os.getpid()}"
    out = run("--role", "admin", login, stdin=password + "\n")
    assert out.returncode == 0, out.stderr
    assert f"user {login} (admin) added" in out.stdout
    again = run("--role", "admin", login.upper(), extra={"HOTLINE_BOOTSTRAP_PASSWORD": password})
    assert again.returncode == 1 and "exists" in again.stderr
    short = run("--role", "admin", f"x{login}", extra={"HOTLINE_BOOTSTRAP_PASSWORD": "short"})
    assert short.returncode == 1 and "10 to 1024 characters" in short.stderr
    bad_role = run("--role", "king", f"y{login}", stdin=password + "\n")
    assert bad_role.returncode == 2 and "invalid choice" in bad_role.stderr
    for o in (out, again, short, bad_role):
        assert password not in o.stdout + o.stderr and "Traceback" not in o.stderr

    async def check() -> None:
        pool = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=2)
        try:
            result = await auth.login(pool, login, password)
            assert result is not None and result[2].role == "admin"
            assert await pool.fetchval("SELECT actor FROM config_audit WHERE entity = 'user' AND entity_id = $1",
                                       result[2].id) == "cli"
            await pool.execute("DELETE FROM users WHERE login = $1", login)
        finally:
            await pool.close()

    asyncio.run(check())


async def test_concurrent_changes_cannot_together_break_a_rule_across_rows(api, pg_pool):
    import asyncio

    who = await token_of(api, "boss")
    world = await _slot_world(api, who)
    # two overlapping slots of one seat sent at once: exactly one is taken
    first = api.post("/api/leader-slots", headers=who, json=_slot(world, leader_id=world["leader"]["id"]))
    other = await call(api, "POST", "/api/leaders", who, {"name": "Zhao", "title": "Director", "jurisdiction": "City"},
                       status=201)
    second = api.post("/api/leader-slots", headers=who, json=_slot(world, leader_id=other["id"], start_time="10:00",
                                                                      end_time="12:00"))
    statuses = sorted(r.status for r in await asyncio.gather(first, second))
    assert statuses == [201, 409] and await count(pg_pool, "leader_slots") == 1
    # A -> B and B -> A at once: one overflow is set, the other would loop
    a, b = world["queue"]["id"], world["general"]["id"]
    results = await asyncio.gather(api.patch(f"/api/queues/{a}", headers=who, json={"overflow_queue_id": b}),
                                   api.patch(f"/api/queues/{b}", headers=who, json={"overflow_queue_id": a}))
    assert sorted(r.status for r in results) == [200, 400]
    assert await count(pg_pool, "queues WHERE overflow_queue_id IS NOT NULL") == 1


def test_make_app_serves_the_api_beside_health_and_live():
    from config.settings import Settings
    from hotline.app import make_app

    app = make_app(Settings())
    paths = {(r.method, r.resource.canonical) for r in app.router.routes()}
    assert {("GET", "/health"), ("GET", "/api/live"), ("POST", "/api/login"), ("GET", "/api/queues"),
            ("PUT", "/api/operators/{id}/skills"), ("DELETE", "/api/leader-slots/{id}")} <= paths


async def test_unknown_api_paths_and_methods_answer_json():
    """aiohttp's own 404/405 under /api/ are JSON like the API's errors; other paths are left alone."""
    from hotline.app import json_errors

    async def thing(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application(middlewares=[json_errors])
    app.router.add_get("/api/thing", thing)
    async with TestClient(TestServer(app)) as client:
        missing = await client.get("/api/nothing-here")
        assert missing.status == 404 and (await missing.json()) == {"error": "Not Found"}
        wrong = await client.post("/api/thing")
        assert wrong.status == 405 and (await wrong.json()) == {"error": "Method Not Allowed"}
        assert wrong.headers["Allow"] == "GET,HEAD"
        outside = await client.get("/nowhere")
        assert outside.status == 404 and outside.content_type == "text/plain"
        assert (await (await client.get("/api/thing")).json()) == {"ok": True}
