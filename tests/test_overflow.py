"""Queue overflow (issue 4): a caller whose max wait ran out goes on to the queue's overflow queue.

The tracker on hand-made events (one call, the outcome of its last queue, the whole wait as hold),
the simulator's transfer context overflowing like the generated one, and the whole path through
the service: the simulator, the IVR over FastAGI, the tracker and the writer into real Postgres.
"""

from __future__ import annotations

import json

import pytest
from pydantic import SecretStr

from config.settings import QueueConfig, SeatConfig, Settings
from hotline.service import HotlineService
from telephony.ami_codec import Frame
from telephony.events import AmiEvent, to_event
from telephony.simulator import PbxSimulator, ScriptedCaller, SeatBehaviour, queue_definitions
from telephony.tracker import CallTracker
from tests.conftest import REDIS_URL
from tests.flows import install_flow, menu_flow
from tests.support import free_port, until
from tests.test_simulator import QUEUES, make_agi, make_client, make_sim  # noqa: F401

pytestmark = pytest.mark.timeout(60)

# ---------------------------------------------------------------- the tracker, on events

L = "1795400000.10"
CALLER = {"Channel": "PJSIP/trunk-00000001", "Uniqueid": L, "Linkedid": L, "Context": "hotline-inbound",
          "CallerIDNum": "13800138000", "CallerIDName": "<unknown>"}
SEAT = {"Channel": "PJSIP/1001-00000002", "Uniqueid": "1795400003.11", "Linkedid": L, "Context": "from-internal",
        "CallerIDNum": "1001", "CallerIDName": "<unknown>"}


def ami(name: str, at: float, ch: dict | None = None, **fields) -> AmiEvent:
    headers = [("Event", name), ("Timestamp", f"{1795400000 + at:.6f}")]
    headers += [(k, str(v)) for k, v in {**(ch or {}), **fields}.items()]
    return to_event(Frame(tuple(headers)))


def timed_out_of_business(abandon_seen: bool = True) -> list[AmiEvent]:
    """IVR to hotline-business, whose 30 s max wait runs out; the dialplan sends the caller on to
    hotline-general (the generated dialplan's VarSets, then the join)."""
    events = [
        ami("Newchannel", 0.0, CALLER, Exten="12345"),
        ami("AGIExecStart", 0.5, CALLER, Command="ANSWER"),
        ami("VarSet", 3.0, CALLER, Variable="HOTLINE_CATEGORY", Value="business_environment"),
        ami("VarSet", 3.0, CALLER, Variable="HOTLINE_QUEUE", Value="hotline-business"),
        ami("VarSet", 3.0, CALLER, Variable="HOTLINE_OVERFLOWS", Value="0"),
        ami("QueueCallerJoin", 3.1, CALLER, Queue="hotline-business", Position=1, Count=1),
    ]
    if abandon_seen:
        events += [
            ami("QueueCallerAbandon", 33.1, CALLER, Queue="hotline-business", Position=1, OriginalPosition=1,
                HoldTime=30),
            ami("QueueCallerLeave", 33.1, CALLER, Queue="hotline-business", Position=1, Count=0),
        ]
    return events + [
        ami("VarSet", 33.1, CALLER, Variable="QUEUESTATUS", Value="TIMEOUT"),
        ami("VarSet", 33.1, CALLER, Variable="HOTLINE_QUEUE", Value="hotline-general"),
        ami("VarSet", 33.1, CALLER, Variable="HOTLINE_QUEUE_TIMEOUT", Value="120"),
        ami("VarSet", 33.1, CALLER, Variable="HOTLINE_CATEGORY", Value="general"),
        ami("VarSet", 33.1, CALLER, Variable="HOTLINE_OVERFLOWS", Value="1"),
        ami("QueueCallerJoin", 33.2, CALLER, Queue="hotline-general", Position=2, Count=2),
    ]


def finish(events: list[AmiEvent]):
    tracker = CallTracker("n")
    done = [c for c in (tracker.feed(e) for e in events) if c is not None]
    assert len(done) == 1 and len(tracker) == 0, done
    return done[0]


def general(name: str, at: float, ch: dict = CALLER, **fields) -> AmiEvent:
    return ami(name, at, ch, Queue="hotline-general", **fields)


def seat_fields() -> dict:
    return {"MemberName": "Seat 1001", "Interface": "PJSIP/1001", "DestChannel": SEAT["Channel"],
            "DestUniqueid": SEAT["Uniqueid"], "DestLinkedid": L}


def test_answered_in_the_overflow_queue_is_one_answered_call_holding_both_waits():
    call = finish(timed_out_of_business() + [
        ami("Newchannel", 40.0, SEAT),
        general("AgentCalled", 40.0, **seat_fields()),
        general("AgentConnect", 41.2, HoldTime=8, RingTime=1, **seat_fields()),
        general("AgentComplete", 101.2, HoldTime=8, TalkTime=60, Reason="agent", **seat_fields()),
        ami("Hangup", 101.2, SEAT, Cause=16),
        ami("Hangup", 101.3, CALLER, Cause=16),
    ])
    assert (call.outcome, call.queue, call.seat, call.category) == ("answered", "hotline-general", "Seat 1001",
                                                                    "general")
    assert call.hold_seconds == 38  # 30 s in hotline-business + 8 s in hotline-general
    assert (call.talk_seconds, call.queue_position) == (60, 2)
    kinds = [e.kind for e in call.timeline]
    assert kinds == ["call_start", "ivr_entered", "queue_join", "queue_timeout", "queue_overflow", "queue_join",
                     "seat_rung", "answered", "completed", "hangup"]
    timeout = call.timeline[3]
    assert timeout.detail == {"queue": "hotline-business", "position": 1, "hold": 30, "status": "TIMEOUT"}
    assert call.timeline[4].detail == {"from_queue": "hotline-business", "to_queue": "hotline-general",
                                       "waited": 30}
    assert call.variables["HOTLINE_OVERFLOWS"] == "1"


def test_abandoned_in_the_overflow_queue_is_an_abandon_there():
    call = finish(timed_out_of_business() + [
        general("QueueCallerAbandon", 50.2, Position=2, OriginalPosition=2, HoldTime=17),
        general("QueueCallerLeave", 50.2, Position=2, Count=1),
        ami("Hangup", 50.3, CALLER, Cause=16),
    ])
    assert (call.outcome, call.queue, call.hold_seconds, call.seat) == ("abandoned", "hotline-general", 47, None)
    kinds = [e.kind for e in call.timeline]
    assert kinds.count("queue_timeout") == 1 and kinds.count("abandoned") == 1  # business timed out, general not
    assert kinds.index("queue_timeout") < kinds.index("queue_overflow") < kinds.index("abandoned")


def test_timed_out_of_the_overflow_queue_too():
    call = finish(timed_out_of_business() + [
        general("QueueCallerAbandon", 153.2, Position=1, OriginalPosition=2, HoldTime=120),
        general("QueueCallerLeave", 153.2, Position=1, Count=0),
        ami("VarSet", 153.2, CALLER, Variable="QUEUESTATUS", Value="TIMEOUT"),
        ami("Hangup", 153.3, CALLER, Cause=16),
    ])
    assert (call.outcome, call.queue, call.hold_seconds) == ("queue_timeout", "hotline-general", 150)
    kinds = [e.kind for e in call.timeline]
    assert "abandoned" not in kinds and kinds.count("queue_timeout") == 2


def test_a_first_queue_left_unseen_counts_by_the_timestamps():
    """The QueueCallerAbandon of the first queue was lost (AMI link cut): its wait comes from the
    Timestamps of the two joins."""
    call = finish(timed_out_of_business(abandon_seen=False) + [
        ami("Newchannel", 40.0, SEAT),
        general("AgentConnect", 41.2, HoldTime=8, RingTime=1, **seat_fields()),
        ami("Hangup", 101.2, SEAT, Cause=16),
        ami("Hangup", 101.3, CALLER, Cause=16),
    ])
    assert (call.outcome, call.queue, call.hold_seconds) == ("answered", "hotline-general", 38)


def test_a_transfer_after_the_answer_keeps_the_first_answer_and_its_hold():
    """Overflow, answer in hotline-general, blind transfer to hotline-leader: the first answer counts."""
    call = finish(timed_out_of_business() + [
        ami("Newchannel", 40.0, SEAT),
        general("AgentConnect", 41.2, HoldTime=8, RingTime=1, **seat_fields()),
        general("AgentComplete", 51.2, HoldTime=8, TalkTime=10, Reason="transfer", **seat_fields()),
        ami("Hangup", 51.2, SEAT, Cause=16),
        ami("QueueCallerJoin", 51.3, {**CALLER, "Context": "hotline-transfer"}, Queue="hotline-leader", Position=1,
            Count=1),
        ami("QueueCallerAbandon", 61.3, CALLER, Queue="hotline-leader", Position=1, OriginalPosition=1, HoldTime=10),
        ami("Hangup", 61.4, CALLER, Cause=16),
    ])
    assert (call.outcome, call.queue, call.seat, call.hold_seconds) == ("answered", "hotline-general",
                                                                        "Seat 1001", 38)


# ---------------------------------------------------------------- the simulator's transfer context


async def test_blind_transfer_into_a_queue_that_overflows(make_sim, make_agi, make_client):
    """[hotline-transfer] as generated: Set(HOTLINE_OVERFLOWS=0), Queue(<queue>,t,,,<its max wait>),
    and on its timeout the overflow queue, like [hotline-inbound]."""
    queues = {
        "hotline-general": {**QUEUES["hotline-general"], "max_wait": 300, "category": "general"},
        "hotline-leader": {**QUEUES["hotline-leader"], "max_wait": 4, "category": "leader",
                           "overflow": "hotline-dialect"},
        "hotline-dialect": {"strategy": "ringall", "timeout": 5, "retry": 1, "max_wait": 60, "category": "dialect"},
    }
    agi = await make_agi(["SET VARIABLE HOTLINE_QUEUE hotline-general"])
    sim = await make_sim(agi.port, queues)
    client = await make_client(sim.ami_port)
    for queue, iface in (("hotline-general", "PJSIP/8001"), ("hotline-dialect", "PJSIP/8003")):
        await client.action("QueueAdd", {"Queue": queue, "Interface": iface, "MemberName": f"Seat {iface[-4:]}"})
    sim.set_seat_behaviour("PJSIP/8001", SeatBehaviour(talk=60.0))
    sim.set_seat_behaviour("PJSIP/8003", SeatBehaviour(answer_after=1.0, talk=2.0))
    linkedid = await sim.place_call(ScriptedCaller(number="13800138000"))
    connect = await client.wait_for(lambda f: f.event == "AgentConnect" and f["Linkedid"] == linkedid)
    done = await client.action("BlindTransfer", {"Channel": connect["DestChannel"], "Context": "hotline-transfer",
                                                 "Exten": "hotline-leader"})
    assert done[0]["Response"] == "Success"
    await sim.wait_idle(timeout=30)
    frames = [f for f in client.frames if f.event and f.get("Linkedid") == linkedid]
    assert [f["Queue"] for f in frames if f.event == "QueueCallerJoin"] == [
        "hotline-general", "hotline-leader", "hotline-dialect"]
    steps = [(f["Exten"], f["Priority"], f["Application"], f["AppData"]) for f in frames
             if f.event == "Newexten" and f["Context"] == "hotline-transfer" and f["Application"] in ("Set", "Queue")]
    assert steps[:2] == [("hotline-leader", "1", "Set", "HOTLINE_OVERFLOWS=0"),
                         ("hotline-leader", "2", "Queue", "hotline-leader,t,,,4")]  # the leader queue's max wait
    assert [s[3] for s in steps[2:6]] == ["HOTLINE_QUEUE=hotline-dialect", "HOTLINE_QUEUE_TIMEOUT=60",
                                          "HOTLINE_CATEGORY=dialect", "HOTLINE_OVERFLOWS=1"]
    assert steps[6] == ("hotline-dialect", "2", "Queue", "hotline-dialect,t,,,60")
    result = sim.results[linkedid]
    assert (result.outcome, result.queue, result.seats) == ("answered", "hotline-dialect", ("Seat 8001",
                                                                                             "Seat 8003"))


# ---------------------------------------------------------------- through the service into Postgres

SPEED = 50.0


@pytest.mark.e2e
async def test_overflow_call_is_one_answered_row_in_the_overflow_queue(pg_pool, pg_dsn, redis_client, node_id,
                                                                       tmp_path):
    """hotline-business's only seat does not answer; after its 6 s max wait the caller overflows to
    hotline-general, where a seat answers: one call row, queue hotline-general, answered."""
    agi_port = free_port()
    settings = Settings(
        node_id=node_id, database_url=pg_dsn, redis_url=REDIS_URL, recordings_dir=tmp_path,
        min_recording_seconds=1.0, agi={"listen_host": "127.0.0.1", "listen_port": agi_port},
        queues=[
            QueueConfig(name="hotline-general", category="general", max_wait=300),
            QueueConfig(name="hotline-business", purpose="business", category="business_environment", max_wait=6,
                        ring_timeout=2, overflow="hotline-general"),
        ],
        seats=[SeatConfig(interface="PJSIP/8001", name="Seat 8001", queues=["hotline-general"]),
               SeatConfig(interface="PJSIP/8005", name="Seat 8005", queues=["hotline-business"])],
    )
    sim = PbxSimulator(username="hotline", secret="overflow-secret", agi_host="127.0.0.1", agi_port=agi_port,
                       recordings_dir=tmp_path, queues=queue_definitions(settings.queues),
                       fallback_queue="hotline-general", speed=SPEED)
    await sim.start()
    sim.set_seat_behaviour("PJSIP/8005", SeatBehaviour(answers=False))  # rings, nobody picks up
    sim.set_seat_behaviour("PJSIP/8001", SeatBehaviour(answer_after=1.0, talk=4.0))
    settings = settings.model_copy(update={"ami": settings.ami.model_copy(
        update={"port": sim.ami_port, "secret": SecretStr("overflow-secret")})})
    await install_flow(pg_pool, menu_flow({"1": "hotline-general", "2": "hotline-business"}))   # key 2: business
    service = HotlineService(settings, pg_pool, redis_client)
    try:
        await service.start()
        await service.wait_ready(10)
        linkedid = await sim.place_call(ScriptedCaller(number="13800138000", name="市民", dtmf="2",
                                                       dtmf_delay=0.5, patience=None))
        await sim.wait_idle(timeout=30)
        await until(lambda: service.writer.written >= 1, "the call written")
    finally:
        await service.stop()
        await sim.stop()

    result = sim.results[linkedid]
    assert (result.outcome, result.queue, result.seat_name) == ("answered", "hotline-general", "Seat 8001")
    async with pg_pool.acquire() as conn:
        rows = await conn.fetch("SELECT * FROM calls WHERE node = $1", node_id)
        assert len(rows) == 1
        row = rows[0]
        events = await conn.fetch("SELECT kind, detail FROM call_events WHERE call_id = $1 ORDER BY seq", row["id"])
        orders = await conn.fetch("SELECT * FROM work_orders")
    assert (row["linkedid"], row["outcome"], row["queue"], row["seat"], row["category"], row["ivr_choice"]) == (
        linkedid, "answered", "hotline-general", "Seat 8001", "general", "2")
    assert row["hold_seconds"] >= 7  # 6 s in hotline-business, then the seat's 1 s in hotline-general
    kinds = [e["kind"] for e in events]
    assert kinds.count("queue_join") == 2 and "abandoned" not in kinds
    assert {json.loads(e["detail"])["seat"] for e in events if e["kind"] == "seat_no_answer"} == {"Seat 8005"}
    assert kinds.index("queue_timeout") < kinds.index("queue_overflow") < kinds.index("answered")
    assert len(orders) == 1 and row["work_order_id"] == orders[0]["id"]
