"""Every IVR node type end to end (issue 5): one live flow that uses all twelve node types, and a
simulated caller (a number of its own) down each path, through the real HotlineService (FastAGI
IVR, tracker, writer, live views, leader desk), the PBX simulator running the generated
dialplan, real Postgres and real Redis. The assertions are on what Postgres holds afterwards
(calls: outcome, queue, seat, ivr_choice, HOTLINE_* variables; callback_tasks) and on the sounds
each call's FastAGI session played (AGIExecStart as the simulator reports it over AMI).

The business facts are set the way an admin sets them: IvrStore (calendars, caller lists, the
topic switch), a work order of the calling number in work_orders, and a leader slot row. A
caller's keys are all pressed at once, shortly after the main menu starts listening; the ones a
command does not read wait in the simulator's buffer for the next command that listens (the
order number after the menu key, the confirmation after the emergency key), as queued DTMF does.
(The same engine over scripted AGI dialogues: tests/test_flow_engine.py.)
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from zoneinfo import ZoneInfo

import pytest
from pydantic import SecretStr

from config.settings import QueueConfig, SeatConfig, Settings
from hotline.service import HotlineService
from ivr.flow import NODE_TYPES, parse_flow
from ivr.hours import Calendar
from ivr.store import IvrStore
from queues.config_store import Actor
from telephony.simulator import PbxSimulator, ScriptedCaller, SeatBehaviour, queue_definitions
from tests.conftest import REDIS_URL
from tests.flows import install_flow
from tests.support import free_port, until
from tests.test_simulator import AmiClient

pytestmark = [pytest.mark.ivr, pytest.mark.e2e, pytest.mark.timeout(90)]

SPEED = 50.0
SECRET = "every-node-secret"
SHANGHAI = ZoneInfo("Asia/Shanghai")
ADMIN = Actor(None, "tests")
LEADER_SEAT = "PJSIP/8900"
OWN_ORDER = "12345-20250301-000042"       # keyed as its 14 digits after "12345-"
OWN_ORDER_DIGITS = "20250301000042"

FLOW = """
[flow]
name = "every-node"
start = "vip"
fallback_queue = "hotline-general"
description = "Every node type, for the end-to-end test."

[prompts.welcome]
text = "您好，幺二三四五热线。"
audio = "hotline/welcome"

[prompts.menu]
text = "专线按1，方言按2，夜间按3，领导接听按4，专家按5，台风按6，工单查询按7，紧急求助按0。"
audio = "hotline/menu"

[prompts.sorry]
text = "您的按键有误，为您转接人工。"
audio = "hotline/invalid"

[prompts.closed]
text = "专线已下班，为您转接综合服务。"
audio = "hotline/closed"

[prompts.dialect_intro]
text = "方言服务。"
audio = "hotline/dialect-intro"

[prompts.dialect_menu]
text = "粤语请按2，闽南语请按3。"
audio = "hotline/dialect-menu"

[prompts.dialect_hello]
text = "正在为您转接方言坐席。"
audio = "hotline/dialect-hello"

[prompts.offer]
text = "当前等候时间较长，预约回拨请按1。"
audio = "hotline/callback-offer"

[prompts.offer_ok]
text = "已为您预约回拨，再见。"
audio = "hotline/callback-ok"

[prompts.typhoon]
text = "台风期间，请注意防范。"
audio = "hotline/typhoon"

[prompts.order_ask]
text = "请输入工单号幺二三四五之后的十四位数字。"
audio = "hotline/order-ask"

[prompts.order_handling]
text = "您的工单正在办理中。"
audio = "hotline/order-handling"

[prompts.order_replied]
text = "您的工单已答复。"
audio = "hotline/order-replied"

[prompts.order_not_found]
text = "没有查到您的工单。"
audio = "hotline/order-not-found"

[prompts.bye]
text = "感谢来电，再见。"
audio = "hotline/goodbye"

[prompts.advice]
text = "如您正面临危险，确认转接幺幺零请按1。"
audio = "hotline/emergency"

[nodes.vip]
type = "caller_list"
lists = { elderly = 5 }
next = "welcome"

[nodes.welcome]
type = "play"
prompts = ["welcome"]
next = "menu"

[nodes.menu]
type = "menu"
prompt = "menu"
timeout_ms = 15000
retries = 0
on_timeout = "general"
on_invalid = "invalid"

[nodes.menu.keys]
"1" = "day_hours"
"2" = "dialect_intro"
"3" = "night_hours"
"4" = "leader"
"5" = "offer"
"6" = "typhoon"
"7" = "order"
"0" = "emergency"

[nodes.general]
type = "queue"
queue = "hotline-general"

[nodes.invalid]
type = "queue"
queue = "hotline-general"
priority = 1
announce = "sorry"

[nodes.day_hours]
type = "hours"
calendar = "always-open"
open = "business"
closed = "general"
closed_prompt = "closed"

[nodes.night_hours]
type = "hours"
calendar = "never-open"
open = "business"
closed = "general"
closed_prompt = "closed"

[nodes.business]
type = "queue"
queue = "hotline-business"

[nodes.dialect_intro]
type = "play"
prompts = ["dialect_intro"]
barge_in = true
next = "dialect_menu"

[nodes.dialect_menu]
type = "language"
prompt = "dialect_menu"
timeout_ms = 15000
retries = 0
on_timeout = "general"

[nodes.dialect_menu.choices]
"2" = { language = "yue", next = "dialect" }
"3" = { language = "nan", next = "dialect" }

[nodes.dialect]
type = "queue"
queue = "hotline-dialect"
announce = "dialect_hello"

[nodes.leader]
type = "leader"
queue = "hotline-leader"
fallback = "general"

[nodes.offer]
type = "callback_offer"
queue = "hotline-expert"
threshold_seconds = 60
prompt = "offer"
accept_key = "1"
timeout_ms = 15000
accepted_prompt = "offer_ok"
next = "general"

[nodes.typhoon]
type = "topic"
topic = "typhoon"
prompts = ["typhoon"]
active_next = "business"
next = "general"

[nodes.order]
type = "order_status"
prompt = "order_ask"
retries = 0
timeout_ms = 15000
status_prompts = { handling = "order_handling", replied = "order_replied" }
not_found = "order_not_found"
next = "bye"

[nodes.bye]
type = "hangup"
prompt = "bye"

[nodes.emergency]
type = "emergency"
prompt = "advice"
target = "110"
confirm_key = "1"
timeout_ms = 15000
on_decline = "general"
"""


def settings_for(node_id: str, pg_dsn: str, recordings, agi_port: int) -> Settings:
    return Settings(
        node_id=node_id, database_url=pg_dsn, redis_url=REDIS_URL, recordings_dir=recordings,
        min_recording_seconds=1.0, agi={"listen_host": "127.0.0.1", "listen_port": agi_port},
        # every IVR hang-up is a missed call unless the flow itself ended it (HOTLINE_IVR_DONE)
        callbacks={"ivr_hangup_after_seconds": 0},
        queues=[
            QueueConfig(name="hotline-general", category="general", max_wait=300, wrapup=0),
            QueueConfig(name="hotline-business", purpose="business", category="business", max_wait=300, wrapup=0),
            QueueConfig(name="hotline-dialect", purpose="dialect", category="dialect", max_wait=300, wrapup=0),
            # no seat: the estimated wait is one average handling time (180 s before any call)
            QueueConfig(name="hotline-expert", purpose="special", category="expert", max_wait=300, wrapup=0),
            QueueConfig(name="hotline-leader", purpose="leader", category="leader", max_wait=300, wrapup=0),
        ],
        seats=[
            SeatConfig(interface="PJSIP/8001", name="Seat 8001", queues=["hotline-general"]),
            SeatConfig(interface="PJSIP/8002", name="Seat 8002", queues=["hotline-general"]),
            SeatConfig(interface="PJSIP/8003", name="Seat 8003", queues=["hotline-business"]),
            SeatConfig(interface="PJSIP/8004", name="Seat 8004", queues=["hotline-dialect"]),
            # in the leader queue all the time; the IVR routes there only while a slot is live
            SeatConfig(interface=LEADER_SEAT, name="Leader seat", queues=["hotline-leader"]),
        ],
    )



def caller(number: str, keys: str | None = None, *, delay: float = 0.3, patience: float | None = None):
    return ScriptedCaller(number=number, name="市民", dtmf=keys, dtmf_delay=delay, patience=patience)


# Each path: the caller, and what Postgres must say of the call:
#   (outcome, queue, seat (None when answered: one of the general queue's seats), ivr_choice,
#    HOTLINE_PRIORITY, HOTLINE_LANGUAGE, the sounds its IVR played after the welcome and the menu)
PHASE_ONE = {
    # a menu key to a queue through an open calendar (hours: open), answered by its seat
    "day": (caller("13900000001", "1"), ("answered", "hotline-business", "Seat 8003", "1", "0", None, [])),
    # the same key from a number on the elderly list: its boost (caller_list)
    "elderly": (caller("13900000002", "1"), ("answered", "hotline-business", "Seat 8003", "1", "5", None, [])),
    # no key: the menu's on_timeout, the flow's fallback queue
    "no_key": (caller("13900000003"), ("answered", "hotline-general", None, "timeout", "0", None, [])),
    # a key the menu does not have: on_invalid (its own node: priority 1, the apology)
    "invalid": (caller("13900000004", "8"),
                ("answered", "hotline-general", None, "invalid", "1", None, ["hotline/invalid"])),
    # a barge-in play, then the language node: the dialect queue, HOTLINE_LANGUAGE (the second key
    # barged into the intro and answered the language node: its prompt never played)
    "dialect": (caller("13900000005", "22"),
                ("answered", "hotline-dialect", "Seat 8004", "2-2", "0", "yue",
                 ["hotline/dialect-intro", "hotline/dialect-hello"])),
    # a closed calendar: the closed prompt, then the 7x24 queue
    "night": (caller("13900000006", "3"), ("answered", "hotline-general", None, "3", "0", None, ["hotline/closed"])),
    # the leader line with no live slot: the fallback
    "leader_closed": (caller("13900000007", "4"), ("answered", "hotline-general", None, "4", "0", None, [])),
    # a long estimated wait: the offer, accepted
    "callback": (caller("13900000008", "51"),
                 ("callback_requested", "hotline-expert", None, "5-callback_yes", "0", None,
                  ["hotline/callback-offer", "hotline/callback-ok"])),
    # the topic switched on: its announcement, then its own route
    "topic_on": (caller("13900000009", "6"),
                 ("answered", "hotline-business", "Seat 8003", "6", "0", None, ["hotline/typhoon"])),
    # the caller's own order: its status, then the hang-up node
    "own_order": (caller("13900000010", "7" + OWN_ORDER_DIGITS),
                  ("ivr_hangup", None, None, "7-order_found", None, None,
                   ["hotline/order-ask", "hotline/order-handling", "hotline/goodbye"])),
    # someone else's order: not found, then the hang-up node
    "other_order": (caller("13900000011", "7" + OWN_ORDER_DIGITS),
                    ("ivr_hangup", None, None, "7-order_not_found", None, None,
                     ["hotline/order-ask", "hotline/order-not-found", "hotline/goodbye"])),
    # emergency advice confirmed: the dialplan dials 110
    "emergency": (caller("13900000012", "01"),
                  ("emergency_transfer", None, None, "0-transfer_yes", "0", None, ["hotline/emergency"])),
    # emergency advice not confirmed: on_decline
    "declined": (caller("13900000013", "02"),
                 ("answered", "hotline-general", None, "0-transfer_no", "0", None, ["hotline/emergency"])),
    # the caller hangs up in the menu: a missed call (the contrast to the hang-up node's calls); the
    # GET DATA's result=-1 is told from a failed prompt by the HANGUP line, so nothing is routed
    "gave_up": (caller("13900000014", patience=12.0), ("ivr_hangup", None, None, "hangup", None, None, [])),
}
PHASE_TWO = {   # the topic switched off, a leader slot live
    "topic_off": (caller("13900000015", "6"), ("answered", "hotline-general", None, "6", "0", None, [])),
    "leader_live": (caller("13900000016", "4"),
                    ("answered", "hotline-leader", "Leader seat", "4", "0", None, [])),
}
GENERAL_SEATS = {"Seat 8001", "Seat 8002"}


async def set_the_scene(pool) -> dict:
    """What an admin would have set: calendars, the elderly list, the topic switched on, a work
    order of one caller, a leader with a seat and a leader queue (no slot yet)."""
    store = IvrStore(pool)
    await store.put_calendar(Calendar(name="always-open", workday=[("00:00", "24:00")], restday=[("00:00", "24:00")],
                                      official_holidays=False), ADMIN)
    await store.put_calendar(Calendar(name="never-open", workday=[], restday=[], official_holidays=False), ADMIN)
    await store.add_caller("elderly", PHASE_ONE["elderly"][0].number, "独居老人", ADMIN)
    await store.put_topic("typhoon", {"title": "台风", "active": True}, ADMIN)
    await pool.execute(
        "INSERT INTO work_orders (number, caller_number, caller_name, status, created_at)"
        " VALUES ($1, $2, '李', 'handling', '2025-03-01 10:00+08')", OWN_ORDER, PHASE_ONE["own_order"][0].number)
    queue = await pool.fetchval("INSERT INTO queues (name, purpose, category, max_wait_seconds, wrapup_seconds)"
                                " VALUES ('hotline-leader', 'leader', 'leader', 300, 0) RETURNING id")
    seat = await pool.fetchval("INSERT INTO seats (interface, name) VALUES ($1, 'Leader seat') RETURNING id",
                               LEADER_SEAT)
    leader = await pool.fetchval("INSERT INTO leaders (name, title, jurisdiction) VALUES"
                                 " ('李市长', '市长', '全市') RETURNING id")
    return {"queue": queue, "seat": seat, "leader": leader}


async def open_leader_slot(pool, scene: dict) -> None:
    """A slot live all of today and tomorrow (local), so the test may run across midnight."""
    today = dt.datetime.now(SHANGHAI).date()
    for day in (today, today + dt.timedelta(days=1)):
        await pool.execute(
            "INSERT INTO leader_slots (slot_date, start_time, end_time, leader_id, leader_seat_id, queue_id, topic)"
            " VALUES ($1, '00:00', '23:59:59.999999', $2, $3, $4, '供水')",
            day, scene["leader"], scene["seat"], scene["queue"])


async def place(sim: PbxSimulator, paths: dict) -> dict[str, str]:
    """Place every path's call (one after the other, a sim second apart); name -> linkedid."""
    placed = {}
    for name, (scripted, _expected) in paths.items():
        placed[name] = await sim.place_call(scripted)
        await asyncio.sleep(1.0 / SPEED)
    return placed


def ended(observer: AmiClient) -> set[str]:
    """The calls whose last event (the Hangup of the ;2 channel) the observer has read."""
    return {f["Linkedid"] for f in observer.frames if f.event == "Hangup" and f.get("Channel", "").endswith(";2")}


async def test_every_node_type_end_to_end(pg_pool, pg_dsn, redis_client, node_id, tmp_path):
    flow = parse_flow(FLOW)
    assert {node.type for node in flow.nodes.values()} == set(NODE_TYPES)   # every node type, once at least
    assert not [w for w in flow.warnings if "reach" in w]                   # and every node and prompt used
    version = await install_flow(pg_pool, FLOW)
    scene = await set_the_scene(pg_pool)

    agi_port = free_port()
    settings = settings_for(node_id, pg_dsn, tmp_path, agi_port)
    sim = PbxSimulator(username="hotline", secret=SECRET, agi_host="127.0.0.1", agi_port=agi_port,
                       recordings_dir=tmp_path, queues=queue_definitions(settings.queues),
                       fallback_queue="hotline-general", speed=SPEED, emergency_dial=settings.ivr.emergency_dial,
                       emergency_ring=settings.ivr.emergency_ring_seconds)
    await sim.start()
    for seat in settings.seats:
        sim.set_seat_behaviour(seat.interface, SeatBehaviour(answers=True, answer_after=1.0, talk=3.0))
    sim.set_seat_behaviour("110", SeatBehaviour(answers=True, answer_after=1.0, talk=2.0))
    settings = settings.model_copy(update={"ami": settings.ami.model_copy(
        update={"port": sim.ami_port, "secret": SecretStr(SECRET)})})
    observer = await AmiClient.connect(sim.ami_port)
    service = HotlineService(settings, pg_pool, redis_client)
    try:
        assert (await observer.login(SECRET))["Message"] == "Authentication accepted"
        await service.start()
        await service.wait_ready(15)
        service.ivr.validate(FLOW)   # the service would run it: every queue known, the leader queue a leader's

        placed = await place(sim, PHASE_ONE)
        await sim.wait_idle(timeout=40)
        await until(lambda: service.writer.written >= len(PHASE_ONE), "the first calls written")

        await IvrStore(pg_pool).put_topic("typhoon", {"title": "台风", "active": False}, ADMIN)
        await open_leader_slot(pg_pool, scene)
        assert await service.leader.open_leader_queues() == ["hotline-leader"]
        placed |= await place(sim, PHASE_TWO)
        await sim.wait_idle(timeout=40)
        await until(lambda: service.writer.written >= len(placed), "every call written")
        await until(lambda: set(placed.values()) <= ended(observer), "the observer has seen every call end")
    finally:
        await service.stop()
        await sim.stop()
        await observer.close()

    paths = PHASE_ONE | PHASE_TWO
    rows = await pg_pool.fetch("SELECT * FROM calls WHERE node = $1", node_id)
    tasks = await pg_pool.fetch("SELECT t.number, t.reason, c.linkedid FROM callback_tasks t"
                                " JOIN calls c ON c.id = t.call_id ORDER BY t.number")

    # one calls row per placed call, nothing else
    assert sorted(r["linkedid"] for r in rows) == sorted(placed.values())
    by_linkedid = {r["linkedid"]: r for r in rows}

    def sounds(linkedid: str) -> list[str]:
        """The sounds the call's IVR played (STREAM FILE, GET DATA), in order."""
        return [f["Command"].split()[2] for f in observer.frames
                if f.event == "AGIExecStart" and f.get("Linkedid") == linkedid
                and f["Command"].startswith(("STREAM FILE", "GET DATA"))]

    for name, linkedid in placed.items():
        scripted, (outcome, queue, seat, choice, priority, language, heard) = paths[name]
        row = by_linkedid[linkedid]
        variables = json.loads(row["variables"])
        got = (row["outcome"], row["queue"], row["ivr_choice"], variables.get("HOTLINE_PRIORITY"),
               variables.get("HOTLINE_LANGUAGE"))
        assert got == (outcome, queue, choice, priority, language), name
        assert sim.results[linkedid].outcome == outcome, name
        assert row["caller_number"] == scripted.number, name
        assert variables["HOTLINE_FLOW_VERSION"] == str(version), name    # the installed flow, not the shipped one
        if outcome == "answered":
            assert row["seat"] in ({seat} if seat else GENERAL_SEATS), name
        else:
            assert row["seat"] is None, name
        assert sounds(linkedid) == ["hotline/welcome", "hotline/menu", *heard], name

    def var(name: str, key: str) -> str | None:
        return json.loads(by_linkedid[placed[name]]["variables"]).get(key)

    # self-service that found the order, ended by the flow's hang-up node: HOTLINE_IVR_DONE, no
    # missed call; an order not found is not served: called back like any IVR hang-up
    assert var("own_order", "HOTLINE_IVR_DONE") == "1"
    assert var("other_order", "HOTLINE_IVR_DONE") is None and var("gave_up", "HOTLINE_IVR_DONE") is None
    # 110: the transfer variable, the flow's fallback queue only as the dialplan's safety net
    assert (var("emergency", "HOTLINE_TRANSFER"), var("emergency", "HOTLINE_QUEUE")) == ("110", "hotline-general")
    assert sim.results[placed["emergency"]].emergency == "ANSWER"
    assert var("callback", "HOTLINE_CALLBACK_REQUESTED") == "1"
    # callback tasks: the accepted offer (requested), the caller whose order was not found and the
    # caller who gave up in the menu; none for the served self-service call or the 110 transfer
    assert sorted((t["number"], t["reason"], t["linkedid"]) for t in tasks) == sorted([
        (PHASE_ONE["callback"][0].number, "requested", placed["callback"]),
        (PHASE_ONE["other_order"][0].number, "ivr_hangup", placed["other_order"]),
        (PHASE_ONE["gave_up"][0].number, "ivr_hangup", placed["gave_up"]),
    ])
    # the found order is the caller's own, untouched; the writer gave the call an order of its own
    own = by_linkedid[placed["own_order"]]
    assert await pg_pool.fetchval("SELECT status FROM work_orders WHERE number = $1", OWN_ORDER) == "handling"
    assert await pg_pool.fetchval("SELECT number FROM work_orders WHERE id = $1", own["work_order_id"]) != OWN_ORDER
