"""The leader hotline: a full slot with the PBX simulator, real Postgres and Redis (the slot opens,
a pre-screened call is transferred to the leader, instructions are saved, a hard case is called
back, the slot closes, the report counts what happened), slot-live computation, and the API's
validation and role checks."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import time
from zoneinfo import ZoneInfo

import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from config.settings import QueueConfig, SeatConfig, Settings
from hotline.api import add_api_routes
from hotline.api_leader import LEADER_DESK
from hotline.api_operators import OPERATOR_DESK
from hotline.app import PG_POOL
from hotline.service import HotlineService
from queues.leader import LeaderDesk, LeaderError, check_prescreen, is_live, slot_window
from telephony.events import to_event
from telephony.simulator import PbxSimulator, ScriptedCaller, SeatBehaviour
from tests.agi_peer import Dialogue, load_dialogues, play_asterisk
from tests.conftest import REDIS_URL
from tests.flows import flow_ivr, install_flow
from tests.support import free_port, wait_until
from tests.test_fastagi import start_server
from tests.test_faults import SECRET, scene_settings
from tests.test_operators import _hash
from tests.test_simulator import make_client  # noqa: F401 - a fixture

pytestmark = [pytest.mark.leader, pytest.mark.timeout(120)]

SHANGHAI = ZoneInfo("Asia/Shanghai")
ANN, LEADER_SEAT = "PJSIP/8101", "PJSIP/8009"
CITIZEN, HARD_CASE_CITIZEN, SECOND_CITIZEN = "13800138000", "13900139000", "13600136000"
PASSWORDS = {"sup": "super-pass-0002", "op1": "oper-pass-0003", "lead": "leader-pass-05", "rec": "record-pass-06",
             "lead2": "leader-pass-07"}
ROLES = {"sup": "supervisor", "op1": "operator", "lead": "leader", "rec": "recorder", "lead2": "leader"}
SPEED = 10.0


# ---- slot-live computation ---------------------------------------------------------------------

def _slot(day: dt.date, start: str, end: str) -> dict:
    return {"slot_date": day, "start_time": dt.time.fromisoformat(start), "end_time": dt.time.fromisoformat(end)}


def _at(text: str, tz: ZoneInfo = SHANGHAI) -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=tz).timestamp()


def test_a_slot_is_live_from_its_start_to_just_before_its_end_in_the_centres_time_zone():
    slot = _slot(dt.date(2026, 3, 10), "09:00", "10:30")
    assert not is_live(slot, _at("2026-03-10T08:59:59.999"), SHANGHAI)
    assert is_live(slot, _at("2026-03-10T09:00:00"), SHANGHAI)
    assert is_live(slot, _at("2026-03-10T10:29:59.999"), SHANGHAI)
    assert not is_live(slot, _at("2026-03-10T10:30:00"), SHANGHAI)
    assert not is_live(slot, _at("2026-03-11T09:30:00"), SHANGHAI)           # another day
    # 09:30 in Shanghai is 01:30 UTC: the same instant, so the slot is live
    assert is_live(slot, dt.datetime(2026, 3, 10, 1, 30, tzinfo=dt.timezone.utc).timestamp(), SHANGHAI)
    # 09:30 UTC is 17:30 in Shanghai: not live there, live for a centre on UTC
    utc_0930 = dt.datetime(2026, 3, 10, 9, 30, tzinfo=dt.timezone.utc).timestamp()
    assert not is_live(slot, utc_0930, SHANGHAI) and is_live(slot, utc_0930, ZoneInfo("UTC"))
    start, end = slot_window(slot["slot_date"], slot["start_time"], slot["end_time"], SHANGHAI)
    assert (start.isoformat(), end.isoformat()) == ("2026-03-10T09:00:00+08:00", "2026-03-10T10:30:00+08:00")


def test_slot_windows_follow_daylight_saving_time():
    berlin = ZoneInfo("Europe/Berlin")   # 2026-03-29: clocks jump from 02:00 to 03:00
    slot = _slot(dt.date(2026, 3, 29), "01:00", "04:00")
    start, end = slot_window(slot["slot_date"], slot["start_time"], slot["end_time"], berlin)
    assert end.timestamp() - start.timestamp() == 2 * 3600      # two real hours, not three
    assert is_live(slot, _at("2026-03-29T03:30:00", berlin), berlin)


@pytest.mark.parametrize(("body", "field"), [
    ({"number": CITIZEN, "matter": "water"}, "name"),
    ({"name": "", "number": CITIZEN, "matter": "water"}, "name"),
    ({"name": "Zhang", "matter": "water"}, "number"),
    ({"name": "Zhang", "number": "138-00", "matter": "water"}, "number"),
    ({"name": "Zhang", "number": CITIZEN}, "matter"),
    ({"name": "Zhang", "number": CITIZEN, "matter": "x" * 2001}, "matter"),
    ({"name": "Zhang\r\nX", "number": CITIZEN, "matter": "water"}, "name"),
    ({"name": "Zhang", "number": CITIZEN, "matter": "water", "notes": 5}, "notes"),
])
def test_prescreen_validation_names_the_field(body, field):
    with pytest.raises(LeaderError) as caught:
        check_prescreen(body)
    assert (caught.value.status, caught.value.field) == (400, field)


# ---- IVR routing -------------------------------------------------------------------------------

def ivr_settings() -> Settings:
    """The default queues and a leader queue."""
    return Settings(queues=[*Settings().queues,
                            QueueConfig(name="hotline-leader", purpose="leader", category="leader", max_wait=300)])


# Key 9 asks for the leader line: a leader node, open only while a slot is live on its queue.
LEADER_FLOW = """
[flow]
name = "leader-line"
start = "welcome"
fallback_queue = "hotline-general"

[prompts.welcome]
text = "您好，幺二三四五热线。"
audio = "hotline/welcome"

[prompts.menu]
text = "综合服务按1，领导接听按9。"
audio = "hotline/menu"

[nodes.welcome]
type = "play"
prompts = ["welcome"]
barge_in = true
next = "menu"

[nodes.menu]
type = "menu"
prompt = "menu"
timeout_ms = 5000
retries = 0
on_timeout = "general"
on_invalid = "general"

[nodes.menu.keys]
"1" = "general"
"9" = "leader"

[nodes.leader]
type = "leader"
queue = "hotline-leader"
fallback = "general"

[nodes.general]
type = "queue"
queue = "hotline-general"
"""


def key_9_dialogue(queue: str) -> Dialogue:
    (capture_dialogue,) = load_dialogues("answered.agi")
    category, wait = ("leader", "300") if queue == "hotline-leader" else ("general", "120")
    return Dialogue(headers=capture_dialogue.headers, steps=[
        ('SET VARIABLE HOTLINE_FLOW_VERSION "1"', ["200 result=1"]),
        ("ANSWER", ["200 result=0"]),
        ('STREAM FILE hotline/welcome "19"', ["200 result=57 endpos=3000"]),   # '9' is ASCII 57
        ('SET VARIABLE HOTLINE_IVR_CHOICE "9"', ["200 result=1"]),
        (f'SET VARIABLE HOTLINE_CATEGORY "{category}"', ["200 result=1"]),
        (f'SET VARIABLE HOTLINE_QUEUE_TIMEOUT "{wait}"', ["200 result=1"]),
        ('SET VARIABLE HOTLINE_PRIORITY "0"', ["200 result=1"]),
        (f'SET VARIABLE HOTLINE_QUEUE "{queue}"', ["200 result=1"]),
    ])


async def _open() -> str | None:
    return "hotline-leader"


async def _open_other_case() -> str | None:
    return "HOTLINE-Leader"          # app_queue's rule: letter case does not count


async def _closed() -> str | None:
    return None


async def _other() -> str | None:
    return "hotline-leader-2"


async def _broken() -> str | None:
    raise OSError("Postgres is down")


async def _slow() -> str | None:
    await asyncio.sleep(30)          # over the engine's SERVICE_TIMEOUT (2 s): the safe branch
    return "hotline-leader"


# Without a leader check (ServiceFacts(leader_open=None)) the leader node counts as closed: a
# leader line nobody can confirm is staffed is not offered, the caller reaches the general queue.
# (The retired menu IVR sent key 9 to the leader queue unchecked then; hotline.service always gives the check.)
@pytest.mark.parametrize(("leader_open", "queue"), [
    (_open, "hotline-leader"), (_open_other_case, "hotline-leader"), (_closed, "hotline-general"),
    (_other, "hotline-general"), (_broken, "hotline-general"), (_slow, "hotline-general"),
    (None, "hotline-general")])
async def test_the_ivr_reaches_the_leader_queue_only_while_a_slot_is_live(pg_pool, leader_open, queue):
    await install_flow(pg_pool, LEADER_FLOW)
    ivr = await flow_ivr(pg_pool, ivr_settings(), leader_open=leader_open)
    dialogue = key_9_dialogue(queue)
    server, port = await start_server(ivr, ivr.safe_route)
    try:
        assert await play_asterisk(port, dialogue) == [c for c, _ in dialogue.steps]
    finally:
        await server.stop()


# ---- the rig -------------------------------------------------------------------------------------

class Clock:
    """The leader desks' clock: it starts at local noon of today in Shanghai and runs at wall-clock
    speed, so a slot around its "now" lies inside one local day whenever the test runs (on wall
    time, a run in the last minutes before midnight would outlive a slot of the day). The test
    moves it to open and close the slot. Calls keep the PBX's own times: the slot report counts
    the transferred calls by their leader_transfer records, not by time."""

    def __init__(self, tz: ZoneInfo = SHANGHAI, wall=time.time) -> None:
        self.wall = wall
        now = wall()
        noon = dt.datetime.fromtimestamp(now, tz).replace(hour=12, minute=0, second=0, microsecond=0)
        self.base = noon.timestamp() - now
        self.shift = 0.0

    def __call__(self) -> float:
        return self.wall() + self.base + self.shift

    def go_to(self, at: float) -> None:
        """From now on the clock reads ``at`` (and runs on from there)."""
        self.shift = at - self.wall() - self.base

    def back(self) -> None:
        """Back to the clock's own time, inside the slot."""
        self.shift = 0.0


def slot_times(now: float) -> tuple[dt.date, dt.time, dt.time]:
    """A slot from 10 minutes before ``now`` (local) to 40 minutes after, inside the local day."""
    local = dt.datetime.fromtimestamp(now, SHANGHAI)
    start, end = local - dt.timedelta(minutes=10), local + dt.timedelta(minutes=40)
    assert start.date() == local.date() == end.date(), f"a slot around {local} would wrap past midnight"
    return local.date(), start.time(), end.time()


def test_the_test_clock_keeps_a_slot_inside_the_day_whenever_the_test_runs():
    for wall in ("2026-03-10T23:59:30", "2026-03-10T00:00:10", "2026-03-10T09:30:00"):
        clock = Clock(wall=lambda wall=wall: _at(wall))
        assert clock() == pytest.approx(_at("2026-03-10T12:00:00"), abs=1e-6)
        day, start, end = slot_times(round(clock(), 3))
        assert (day, start, end) == (dt.date(2026, 3, 10), dt.time(11, 50), dt.time(12, 40))
        clock.go_to(_at("2026-03-10T12:40:01"))
        assert clock() == pytest.approx(_at("2026-03-10T12:40:01"), abs=1e-6)
        clock.back()
        assert clock() == pytest.approx(_at("2026-03-10T12:00:00"), abs=1e-6)


async def make_world(pool, clock: Clock) -> dict:
    ids = {}
    for login, role in ROLES.items():
        ids[login] = await pool.fetchval(
            "INSERT INTO users (login, display_name, role, password_hash) VALUES ($1, $1, $2, $3) RETURNING id",
            login, role, _hash(PASSWORDS[login]))
    general = await pool.fetchval("INSERT INTO queues (name, purpose, wrapup_seconds) VALUES "
                                  "('hotline-general', 'general', 1) RETURNING id")
    leader_q = await pool.fetchval("INSERT INTO queues (name, purpose, category) VALUES "
                                   "('hotline-leader', 'leader', 'leader') RETURNING id")
    await pool.execute("INSERT INTO seats (interface, name) VALUES ($1, 'Seat 8101'), ($2, 'Leader seat')",
                       ANN, LEADER_SEAT)
    seat = await pool.fetchval("SELECT id FROM seats WHERE interface = $1", LEADER_SEAT)
    ann = await pool.fetchval("INSERT INTO operators (name, employee_no, user_id) VALUES ('Ann', 'E1', $1)"
                              " RETURNING id", ids["op1"])
    await pool.execute("INSERT INTO operator_skills (operator_id, queue_id, penalty) VALUES ($1, $2, 0)", ann, general)
    mayor = await pool.fetchval("INSERT INTO leaders (name, title, jurisdiction, user_id) VALUES"
                                " ('Mayor Li', 'Mayor', 'City', $1) RETURNING id", ids["lead"])
    deputy = await pool.fetchval("INSERT INTO leaders (name, title, jurisdiction, user_id) VALUES"
                                 " ('Deputy Wu', 'Deputy', 'City', $1) RETURNING id", ids["lead2"])
    # the citizen's open order (an earlier call): today's call links to it; and a prepared hard case
    citizen_order = await pool.fetchval(
        "INSERT INTO work_orders (number, caller_number, caller_name, status, created_at) VALUES"
        " ('12345-20260101-000001', $1, 'Zhang', 'intake', now() - interval '1 day') RETURNING id", CITIZEN)
    hard = await pool.fetchval(
        "INSERT INTO work_orders (number, caller_number, caller_name, status, created_at) VALUES"
        " ('12345-20260101-000002', $1, 'Wang', 'handling', now() - interval '30 days') RETURNING id",
        HARD_CASE_CITIZEN)
    second = await pool.fetchval(
        "INSERT INTO work_orders (number, caller_number, caller_name, status, created_at) VALUES"
        " ('12345-20260101-000004', $1, 'Zhao', 'intake', now() - interval '2 days') RETURNING id", SECOND_CITIZEN)
    other = await pool.fetchval(
        "INSERT INTO work_orders (number, caller_number, status) VALUES"
        " ('12345-20260101-000003', '13700137000', 'handling') RETURNING id")
    day, start, end = slot_times(clock())
    slot = await pool.fetchval(
        "INSERT INTO leader_slots (slot_date, start_time, end_time, leader_id, leader_seat_id, queue_id, topic)"
        " VALUES ($1, $2, $3, $4, $5, $6, 'Water supply') RETURNING id", day, start, end, mayor, seat, leader_q)
    await pool.execute("INSERT INTO leader_slot_prescreeners (slot_id, operator_id) VALUES ($1, $2)", slot, ann)
    await pool.execute("INSERT INTO leader_slot_cases (slot_id, work_order_id, position) VALUES ($1, $2, 0)", slot, hard)
    return {"ann": ann, "second": second, "mayor": mayor, "deputy": deputy, "slot": slot, "citizen_order": citizen_order,
            "hard": hard, "other": other, "start": dt.datetime.combine(day, start, SHANGHAI).timestamp(),
            "end": dt.datetime.combine(day, end, SHANGHAI).timestamp()}


@pytest.fixture
async def leader_rig(pg_dsn, pg_pool, node_id, tmp_path):
    """The simulator (Ann's seat answers, the leader seat is a static member of hotline-leader),
    the service, a LeaderDesk on a shiftable clock and the API; yields (sim, service, desk, client, world, clock)."""
    async with rig(pg_dsn, pg_pool, node_id, tmp_path, static_leader_seat=True) as parts:
        yield parts


@pytest.fixture
async def leader_seat_rig(pg_dsn, pg_pool, node_id, tmp_path):
    """As ``leader_rig``, but no static seat: the leader seat is in hotline-leader only by its slot,
    and the service's own leader desk (which keeps that membership) runs on the shiftable clock."""
    async with rig(pg_dsn, pg_pool, node_id, tmp_path, static_leader_seat=False) as parts:
        yield parts


@contextlib.asynccontextmanager
async def rig(pg_dsn, pg_pool, node_id, tmp_path, *, static_leader_seat: bool):
    started: list = []
    clock = Clock()
    world = await make_world(pg_pool, clock)
    agi_port = free_port()
    settings = scene_settings(node_id, pg_dsn, tmp_path, agi_port, 5038)
    settings = settings.model_copy(update={
        "queues": [*settings.queues, QueueConfig(name="hotline-leader", purpose="leader", category="leader")],
        "seats": [SeatConfig(interface=LEADER_SEAT, name="Leader seat", queues=["hotline-leader"])]
        if static_leader_seat else []})
    sim = PbxSimulator(username="hotline", secret=SECRET, agi_host="127.0.0.1", agi_port=agi_port,
                       recordings_dir=tmp_path, fallback_queue="hotline-general", speed=SPEED,
                       queues={q.name: {"strategy": "rrmemory", "timeout": 15, "retry": 1, "wrapuptime": 0}
                               for q in settings.queues})
    sim.set_seat_behaviour(ANN, SeatBehaviour(answers=True, answer_after=1.0, talk=900.0))
    sim.set_seat_behaviour(LEADER_SEAT, SeatBehaviour(answers=True, answer_after=1.0, talk=5.0))
    sim.set_seat_behaviour(HARD_CASE_CITIZEN, SeatBehaviour(answers=True, answer_after=2.0, talk=4.0))
    await sim.start()
    started.append(sim)
    settings = settings.model_copy(update={"ami": settings.ami.model_copy(
        update={"port": sim.ami_port, "secret": SecretStr(SECRET)})})
    redis = aioredis.from_url(REDIS_URL, decode_responses=True, socket_timeout=1, socket_connect_timeout=1)
    started.append(redis)
    service = HotlineService(settings, pg_pool, redis)
    started.append(service)
    if not static_leader_seat:
        service.leader.clock = clock
    await service.start()
    await service.wait_ready(15)
    desk = LeaderDesk(pg_pool, service.node.actions, timezone=settings.timezone, clock=clock)
    app = web.Application()
    app[PG_POOL] = pg_pool
    app[OPERATOR_DESK] = service.desk
    app[LEADER_DESK] = desk
    add_api_routes(app, PG_POOL)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        yield sim, service, desk, client, world, clock
    finally:
        await client.close()
        for thing in reversed(started):
            await (thing.aclose() if isinstance(thing, aioredis.Redis) else thing.stop())


async def token_of(client: TestClient, login: str) -> dict:
    resp = await client.post("/api/login", json={"login": login, "password": PASSWORDS[login]})
    assert resp.status == 200, await resp.text()
    return {"Authorization": f"Bearer {(await resp.json())['token']}"}


async def call(client: TestClient, method: str, path: str, who: dict, body=None, status: int = 200) -> dict:
    resp = await client.request(method, path, headers=who, json=body)
    text = await resp.text()
    assert resp.status == status, (path, resp.status, text)
    return json.loads(text)


async def events(pool, order_id: int, kind: str) -> list[dict]:
    rows = await pool.fetch("SELECT actor, detail FROM work_order_events WHERE work_order_id = $1 AND kind = $2"
                            " ORDER BY id", order_id, kind)
    return [{"actor": r["actor"], **json.loads(r["detail"])} for r in rows]


# ---- the full slot -------------------------------------------------------------------------------

async def test_a_full_leader_slot(leader_rig, pg_pool, make_client):  # noqa: F811 - the fixture
    sim, service, desk, client, world, clock = leader_rig
    watch = await make_client(sim.ami_port, login=False)   # sees what the service's actions cause
    assert (await watch.login(SECRET))["Message"] == "Authentication accepted"
    op1, lead, rec, sup = [await token_of(client, u) for u in ("op1", "lead", "rec", "sup")]
    slot, citizen_no, hard_no = world["slot"], "12345-20260101-000001", "12345-20260101-000002"

    # before the slot: the leader queue is closed
    clock.go_to(world["start"] - 60)
    assert await desk.open_leader_queues() == []
    # the slot opens
    clock.back()
    assert await desk.open_leader_queues() == ["hotline-leader"]

    await call(client, "POST", f"/api/operators/{world['ann']}/login", op1, {"seat": ANN})
    linkedid = await sim.place_call(ScriptedCaller(number=CITIZEN, name="Zhang", dtmf="1", dtmf_delay=0.5))
    connect = await watch.wait_for(lambda f: f.event == "AgentConnect" and f["Linkedid"] == linkedid)
    seat_channel = connect["DestChannel"]
    assert connect["Queue"] == "hotline-general" and seat_channel.startswith(ANN + "-")

    # transfer before the pre-screen record: refused; then pre-screen
    refused = await call(client, "POST", f"/api/leader-slots/{slot}/transfer", op1,
                         {"order_number": citizen_no, "seat_channel": seat_channel, "mode": "blind"}, status=409)
    assert "pre-screen" in refused["error"]
    record = {"name": "Zhang San", "number": CITIZEN, "matter": "no water for 3 days", "notes": "building 7"}
    await call(client, "POST", f"/api/orders/{citizen_no}/prescreen", op1, record)
    # a channel that is not on Ann's seat: refused
    await call(client, "POST", f"/api/leader-slots/{slot}/transfer", op1,
               {"order_number": citizen_no, "seat_channel": "PJSIP/8102-00000001", "mode": "blind"}, status=403)
    done = await call(client, "POST", f"/api/leader-slots/{slot}/transfer", op1,
                      {"order_number": citizen_no, "seat_channel": seat_channel, "mode": "blind"})
    assert (done["mode"], done["target"]) == ("blind", "hotline-transfer,hotline-leader")
    leader = await watch.wait_for(lambda f: f.event == "AgentConnect" and f["Queue"] == "hotline-leader")
    assert (leader["Linkedid"], leader["Interface"]) == (linkedid, LEADER_SEAT)   # the same call

    async def written() -> bool:
        return await pg_pool.fetchval("SELECT count(*) FROM calls WHERE linkedid = $1", linkedid) == 1

    await wait_until(written, 60, "the transferred call written")
    row = await pg_pool.fetchrow("SELECT * FROM calls WHERE linkedid = $1", linkedid)
    assert (row["work_order_id"], row["outcome"], row["seat_interface"]) == (world["citizen_order"], "answered", ANN)

    # a second pre-screened call, transferred attended: the leader seat answers the consultation,
    # the operator hangs up, the caller stays with the leader (same call, same order)
    second_id = await sim.place_call(ScriptedCaller(number=SECOND_CITIZEN, name="Zhao", dtmf="1", dtmf_delay=0.5))
    connect = await watch.wait_for(lambda f: f.event == "AgentConnect" and f["Linkedid"] == second_id)
    second_channel = connect["DestChannel"]
    await call(client, "POST", "/api/orders/12345-20260101-000004/prescreen", op1,
               {"name": "Zhao Si", "number": SECOND_CITIZEN, "matter": "road repair"})
    done = await call(client, "POST", f"/api/leader-slots/{slot}/transfer", op1,
                      {"order_number": "12345-20260101-000004", "seat_channel": second_channel, "mode": "attended"})
    assert done["target"] == "hotline-seats,8009"
    await watch.wait_for(lambda f: f.event == "DialEnd" and f["DestChannel"].startswith(LEADER_SEAT + "-")
                         and f["DialStatus"] == "ANSWER")
    assert (await watch.action("Hangup", {"Channel": second_channel}))[0]["Message"] == "Channel Hungup"
    await watch.wait_for(lambda f: f.event == "AttendedTransfer" and f["TransfereeLinkedid"] == second_id)

    async def both_written() -> bool:
        return await pg_pool.fetchval("SELECT count(*) FROM calls") == 2

    await wait_until(both_written, 60, "the attended-transfer call written")
    row = await pg_pool.fetchrow("SELECT * FROM calls WHERE linkedid = $1", second_id)
    assert (row["work_order_id"], row["outcome"], row["seat_interface"]) == (world["second"], "answered", ANN)

    # instructions: the recorder for the mayor (solved on the spot), the mayor on the hard case
    await call(client, "POST", f"/api/orders/{citizen_no}/instruction", rec,
               {"text": "Water bureau: restore supply today", "leader_id": world["mayor"], "solved_on_spot": True})
    await call(client, "POST", f"/api/orders/{hard_no}/instruction", lead,
               {"text": "Housing bureau to report in 3 days", "supervised": True})
    saved = await events(pg_pool, world["citizen_order"], "leader_instruction")
    assert [(e["leader_id"], e["entered_by"], e["entered_by_role"], e["slot_id"], e["assigned"], e["solved_on_spot"])
            for e in saved] == [(world["mayor"], "rec", "recorder", slot, True, True)]
    assert [e["supervised"] for e in await events(pg_pool, world["hard"], "leader_instruction")] == [True]
    screened = await events(pg_pool, world["citizen_order"], "prescreen")
    assert [(e["name"], e["number"], e["matter"], e["operator_id"], e["actor"], e["slot_id"]) for e in screened] == [
        ("Zhang San", CITIZEN, "no water for 3 days", world["ann"], "op1", slot)]

    # a hard-case callback: the leader seat first, then the citizen
    await call(client, "POST", f"/api/leader-slots/{slot}/callbacks", lead, {"order_number": "12345-20260101-000003"},
               status=400)
    made = await call(client, "POST", f"/api/leader-slots/{slot}/callbacks", lead, {"order_number": hard_no})
    assert (made["number"], made["leader_seat"], made["outcome"]) == (HARD_CASE_CITIZEN, LEADER_SEAT, "queued")
    response = await watch.wait_for(lambda f: f.event == "OriginateResponse" and f.action_id == made["action_id"])
    await desk.on_event(to_event(response))
    await sim.wait_idle(timeout=60)
    originate = next(o for o in sim.originates if o.action_id == made["action_id"])
    assert (originate.answered, originate.callee_answered, originate.variables) == (
        True, True, (("HOTLINE_CALLBACK", hard_no),))
    assert originate.channel.startswith(LEADER_SEAT + "-")
    result = await events(pg_pool, world["hard"], "leader_callback_result")
    assert [(r["leader_answered"], r["slot_id"]) for r in result] == [(True, slot)]

    # the slot closes: the leader queue is closed, transfers and callbacks are refused
    clock.go_to(world["end"] + 1)
    assert await desk.open_leader_queues() == []
    closed = await call(client, "POST", f"/api/leader-slots/{slot}/transfer", op1,
                        {"order_number": citizen_no, "seat_channel": seat_channel, "mode": "attended"}, status=409)
    assert "not live" in closed["error"]
    await call(client, "POST", f"/api/leader-slots/{slot}/callbacks", lead, {"order_number": hard_no}, status=409)

    # the report matches what happened; the callback is no citizen's call
    assert await pg_pool.fetchval("SELECT count(*) FROM calls") == 2
    report = await call(client, "GET", f"/api/leader-slots/{slot}/report", sup)
    assert {k: report[k] for k in ("calls_offered", "answered_by_operators", "answered_by_leader", "orders_assigned",
                                   "solved_on_spot", "callbacks_made", "callbacks_answered")} == {
        "calls_offered": 2, "answered_by_operators": 2, "answered_by_leader": 2, "orders_assigned": 2,
        "solved_on_spot": 1, "callbacks_made": 1, "callbacks_answered": 1}
    assert (await call(client, "GET", f"/api/leader-slots/{slot}/report", lead))["calls_offered"] == 2
    await call(client, "GET", f"/api/leader-slots/{slot}/report", op1, status=403)


async def test_leader_api_validation_roles_and_closed_slot(leader_rig, pg_pool):
    sim, service, desk, client, world, clock = leader_rig
    op1, lead, lead2, rec, sup = [await token_of(client, u) for u in ("op1", "lead", "lead2", "rec", "sup")]
    slot, citizen_no, hard_no = world["slot"], "12345-20260101-000001", "12345-20260101-000002"
    prescreen = f"/api/orders/{citizen_no}/prescreen"
    bad = await call(client, "POST", prescreen, op1, {"number": CITIZEN, "matter": "m"}, status=400)
    assert bad["fields"][0]["field"] == "name"
    bad = await call(client, "POST", prescreen, op1, [1], status=400)
    assert bad["fields"][0]["field"] == "body"
    for who in (lead, rec, sup):
        await call(client, "POST", prescreen, who, {"name": "x", "number": CITIZEN, "matter": "m"}, status=403)
    await call(client, "POST", "/api/orders/12345-20260101-000099/prescreen", op1,
               {"name": "x", "number": CITIZEN, "matter": "m"}, status=404)
    assert await events(pg_pool, world["citizen_order"], "prescreen") == []     # nothing half-written

    transfer = f"/api/leader-slots/{slot}/transfer"
    await call(client, "POST", transfer, op1, {"order_number": citizen_no, "seat_channel": "x", "mode": "blind"},
               status=409)   # not logged into a seat
    await call(client, "POST", f"/api/operators/{world['ann']}/login", op1, {"seat": ANN})
    for body, field in (({"order_number": citizen_no, "seat_channel": ANN + "-00000001", "mode": "sideways"}, "mode"),
                        ({"order_number": citizen_no, "seat_channel": "PJSIP/8101\r\nAction: Hangup", "mode": "blind"},
                         "seat_channel"),
                        ({"order_number": "WO-1", "seat_channel": ANN + "-00000001", "mode": "blind"},
                         "order_number")):
        bad = await call(client, "POST", transfer, op1, body, status=400)
        assert bad["fields"][0]["field"] == field
    await call(client, "POST", transfer, lead, {"order_number": citizen_no}, status=403)
    await call(client, "POST", "/api/leader-slots/9999/transfer", op1,
               {"order_number": citizen_no, "seat_channel": ANN + "-00000001", "mode": "blind"}, status=404)

    instruction = f"/api/orders/{hard_no}/instruction"
    bad = await call(client, "POST", instruction, rec, {"text": "do it"}, status=400)
    assert bad["fields"][0]["field"] == "leader_id"
    bad = await call(client, "POST", instruction, lead, {"text": ""}, status=400)
    assert bad["fields"][0]["field"] == "text"
    bad = await call(client, "POST", instruction, lead, {"text": "t", "solved_on_spot": "yes"}, status=400)
    assert bad["fields"][0]["field"] == "solved_on_spot"
    bad = await call(client, "POST", instruction, rec, {"text": "t", "leader_id": 9999}, status=400)
    assert bad["fields"][0]["field"] == "leader_id"
    bad = await call(client, "POST", instruction, lead2, {"text": "t", "slot_id": slot}, status=400)
    assert bad["fields"][0]["field"] == "slot_id"                    # the mayor's slot, not the deputy's
    await call(client, "POST", instruction, lead, {"text": "t", "leader_id": world["deputy"]}, status=403)
    for who in (op1, sup):
        await call(client, "POST", instruction, who, {"text": "t"}, status=403)
    assert await events(pg_pool, world["hard"], "leader_instruction") == []

    callbacks = f"/api/leader-slots/{slot}/callbacks"
    for who in (op1, rec, sup):
        await call(client, "POST", callbacks, who, {"order_number": hard_no}, status=403)
    await call(client, "POST", callbacks, lead2, {"order_number": hard_no}, status=403)   # not the slot's leader
    await call(client, "GET", "/api/leader-slots/9999/report", sup, status=404)
    clock.go_to(world["end"] + 1)                                       # after the slot
    await call(client, "POST", callbacks, lead, {"order_number": hard_no}, status=409)
    assert await events(pg_pool, world["hard"], "leader_callback") == []
    report = await call(client, "GET", f"/api/leader-slots/{slot}/report", sup)
    assert (report["calls_offered"], report["orders_assigned"], report["callbacks_made"]) == (0, 0, 0)


async def test_a_first_time_caller_is_prescreened_during_the_call_and_transferred(
        leader_rig, pg_pool, node_id, make_client):  # noqa: F811 - the fixture
    """No order exists until the call ends: the pre-screen and the transfer name the call in
    progress by (node, linkedid); the writer moves both onto the order it creates."""
    sim, service, desk, client, world, clock = leader_rig
    watch = await make_client(sim.ami_port, login=False)
    assert (await watch.login(SECRET))["Message"] == "Authentication accepted"
    op1, sup = await token_of(client, "op1"), await token_of(client, "sup")
    slot, newcomer = world["slot"], "13500135000"
    assert await pg_pool.fetchval("SELECT count(*) FROM work_orders WHERE caller_number = $1", newcomer) == 0
    await call(client, "POST", f"/api/operators/{world['ann']}/login", op1, {"seat": ANN})
    linkedid = await sim.place_call(ScriptedCaller(number=newcomer, name="Sun", dtmf="1", dtmf_delay=0.5))
    connect = await watch.wait_for(lambda f: f.event == "AgentConnect" and f["Linkedid"] == linkedid)
    seat_channel = connect["DestChannel"]
    transfer = f"/api/leader-slots/{slot}/transfer"
    by_call = {"node": node_id, "linkedid": linkedid, "seat_channel": seat_channel, "mode": "blind"}

    # validation: 400 naming the field; both names of the caller at once: refused
    bad = await call(client, "POST", f"/api/calls/{node_id}/1.2%0D%0AAction:x/prescreen", op1,
                     {"name": "x", "number": newcomer, "matter": "m"}, status=400)
    assert bad["fields"][0]["field"] == "linkedid"
    bad = await call(client, "POST", f"/api/calls/pbx%201/{linkedid}/prescreen", op1,
                     {"name": "x", "number": newcomer, "matter": "m"}, status=400)
    assert bad["fields"][0]["field"] == "node"
    bad = await call(client, "POST", transfer, op1, {**by_call, "linkedid": 5}, status=400)
    assert bad["fields"][0]["field"] == "linkedid"
    bad = await call(client, "POST", transfer, op1, {**by_call, "order_number": "12345-20260101-000001"}, status=400)
    assert bad["fields"][0]["field"] == "order_number"
    await call(client, "POST", f"/api/calls/{node_id}/{linkedid}/prescreen", sup,
               {"name": "x", "number": newcomer, "matter": "m"}, status=403)

    # not pre-screened yet: refused; then pre-screened during the call and transferred
    refused = await call(client, "POST", transfer, op1, by_call, status=409)
    assert "pre-screen" in refused["error"]
    record = {"name": "Sun Wu", "number": newcomer, "matter": "street lights out", "notes": "first call"}
    noted = await call(client, "POST", f"/api/calls/{node_id}/{linkedid}/prescreen", op1, record)
    assert noted["order_number"] is None and noted["note_id"] and noted["slot_id"] == slot
    done = await call(client, "POST", transfer, op1, by_call)
    assert (done["mode"], done["target"], done["order_number"]) == ("blind", "hotline-transfer,hotline-leader", None)
    leader = await watch.wait_for(lambda f: f.event == "AgentConnect" and f["Queue"] == "hotline-leader")
    assert (leader["Linkedid"], leader["Interface"]) == (linkedid, LEADER_SEAT)   # the same call
    assert [r["kind"] for r in await pg_pool.fetch(
        "SELECT kind FROM call_notes WHERE node = $1 AND linkedid = $2 ORDER BY id", node_id, linkedid)] == [
        "prescreen", "leader_transfer"]

    async def written() -> bool:
        return await pg_pool.fetchval("SELECT count(*) FROM calls WHERE linkedid = $1", linkedid) == 1

    await wait_until(written, 60, "the transferred call written")
    row = await pg_pool.fetchrow("SELECT * FROM calls WHERE linkedid = $1", linkedid)
    assert row["node"] == node_id and row["caller_number"] == newcomer
    order = row["work_order_id"]
    assert order not in (world["citizen_order"], world["second"], world["hard"], world["other"])   # a new order
    kinds = await pg_pool.fetch("SELECT kind, actor, detail FROM work_order_events WHERE work_order_id = $1"
                                " ORDER BY id", order)
    assert [(k["kind"], k["actor"]) for k in kinds] == [("created", "system"), ("prescreen", "op1"),
                                                       ("leader_transfer", "op1")]
    screened, moved = json.loads(kinds[1]["detail"]), json.loads(kinds[2]["detail"])
    assert (screened["name"], screened["matter"], screened["operator_id"], screened["slot_id"], screened["call_id"]) == (
        "Sun Wu", "street lights out", world["ann"], slot, row["id"])
    assert (moved["mode"], moved["seat_channel"], moved["slot_id"], moved["call_id"]) == (
        "blind", seat_channel, slot, row["id"])
    assert await pg_pool.fetchval("SELECT count(*) FROM call_notes") == 0
    # the slot report counts the transferred first-time caller
    report = await call(client, "GET", f"/api/leader-slots/{slot}/report", sup)
    assert (report["calls_offered"], report["answered_by_operators"]) == (1, 1)


# ---- the leader seat follows its slot ------------------------------------------------------------

async def queue_members(make_client, port: int) -> dict[tuple[str, str], dict]:  # noqa: F811 - the fixture
    """QueueStatus from a fresh AMI link (the service's links may just have been cut)."""
    client = await make_client(port, login=False)
    assert (await client.login(SECRET))["Message"] == "Authentication accepted"
    frames = await client.action("QueueStatus")
    await client.close()
    await asyncio.sleep(0.1)   # a poll, not a flood of AMI links
    return {(f["Queue"], f["Location"]): f for f in frames if f.event == "QueueMember"}


async def test_the_leader_seat_is_in_the_leader_queue_only_while_its_slot_is_live(
        leader_seat_rig, pg_pool, make_client):  # noqa: F811 - the fixture
    sim, service, _desk, client, world, clock = leader_seat_rig
    pair = ("hotline-leader", LEADER_SEAT)
    removals: list[tuple[str, str]] = []
    actions = service.node.actions
    real_remove = actions.queue_remove

    async def recorded_remove(queue: str, interface: str) -> bool:
        removals.append((queue, interface))
        return await real_remove(queue, interface)

    actions.queue_remove = recorded_remove

    async def member() -> dict | None:
        return (await queue_members(make_client, sim.ami_port)).get(pair)

    # the slot is live: the leader seat joined with its name and state interface
    await wait_until(member, 30, "the leader seat in the leader queue")
    joined = await member()
    assert (joined["Name"], joined["StateInterface"], joined["Membership"]) == ("Leader seat", LEADER_SEAT, "dynamic")
    assert await service.leader.open_leader_queues() == ["hotline-leader"]
    # idempotent: another run changes nothing
    assert (await service.leader.sync_leader_seats())["added"] == 0

    # the slot ends: the member is removed (by the periodic run)
    clock.go_to(world["end"] + 1)
    assert await service.leader.open_leader_queues() == []

    async def gone() -> bool:
        return await member() is None

    await wait_until(gone, 30, "the leader seat out of the leader queue")
    assert removals == [pair]
    assert (await service.leader.sync_leader_seats())["removed"] == 0
    # before the slot: still out; the slot opens again: back
    clock.go_to(world["start"] - 60)
    assert (await service.leader.sync_leader_seats())["added"] == 0 and await member() is None
    clock.back()
    await wait_until(member, 30, "the leader seat back in the leader queue")

    # an operator logs in at the leader seat (a general skill): both memberships, nobody fights
    op1 = await token_of(client, "op1")
    await call(client, "POST", f"/api/operators/{world['ann']}/login", op1, {"seat": LEADER_SEAT})

    async def both() -> bool:
        have = await queue_members(make_client, sim.ami_port)
        return pair in have and ("hotline-general", LEADER_SEAT) in have

    await wait_until(both, 30, "the operator's and the leader's memberships")
    # the AMI links drop during the slot: the login's reconciles keep the leader membership
    removals.clear()
    resyncs = service.node.resyncs
    sim.drop_ami_links()

    async def resynced() -> bool:
        return (service.node.resyncs > resyncs and service.node.ami.ready.is_set()
                and not service.node._resync_lock.locked() and await both())

    await wait_until(resynced, 30, "the resync after the dropped links")
    assert removals == []
    # Asterisk restarts during the slot: every member is gone; the login's resync puts both back
    resyncs = service.node.resyncs
    await sim.restart()
    await wait_until(resynced, 30, "the resync after the Asterisk restart")
    assert removals == []
    # the slot ends: the leader membership goes, the operator's stays
    clock.go_to(world["end"] + 1)

    async def operator_only() -> bool:
        have = await queue_members(make_client, sim.ami_port)
        return pair not in have and ("hotline-general", LEADER_SEAT) in have

    await wait_until(operator_only, 30, "only the operator's membership")
    assert removals == [pair]
