"""The IVR's data: business hours on the official calendar, topics, calendars, caller lists and
the self-service order look-up, against real Postgres."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from pydantic import ValidationError

from ivr.hours import Calendar, is_open
from ivr.store import IvrDataError, IvrStore, order_number_from_digits
from queues.config_store import Actor

pytestmark = pytest.mark.ivr
ADMIN = Actor(1, "admin")
TZ = dt.timezone(dt.timedelta(hours=8))


def _at(y, m, d, hh, mm=0):
    return dt.datetime(y, m, d, hh, mm)


def test_official_calendar_holidays_and_make_up_working_days():
    cal = Calendar(name="business", workday=[("08:30", "12:00"), ("13:30", "17:30")])
    assert is_open(cal, _at(2026, 12, 7, 9))               # a Monday
    assert not is_open(cal, _at(2026, 12, 7, 12, 30))       # lunch break
    assert not is_open(cal, _at(2026, 12, 7, 17, 30))       # ranges end exclusive
    assert not is_open(cal, _at(2026, 12, 6, 9))            # a Sunday
    assert not is_open(cal, _at(2026, 10, 1, 9))            # National Day, a Thursday
    # a make-up working day (调休) that falls on a weekend is a working day by the official calendar
    import chinese_calendar

    makeups = [d for d in (dt.date(2026, 1, 1) + dt.timedelta(n) for n in range(365))
               if d.weekday() >= 5 and chinese_calendar.is_workday(d)]
    assert makeups, "the 2026 calendar has make-up working days"
    assert is_open(cal, dt.datetime.combine(makeups[0], dt.time(10)))
    plain = cal.model_copy(update={"official_holidays": False})
    assert not is_open(plain, dt.datetime.combine(makeups[0], dt.time(10)))
    assert is_open(plain, _at(2026, 10, 1, 9))              # Monday to Friday only


def test_dates_listed_by_the_admin_win_and_years_without_data_fall_back(caplog):
    cal = Calendar(name="biz", closed_dates=[dt.date(2026, 12, 8)], open_dates=[dt.date(2026, 12, 6)])
    assert not is_open(cal, _at(2026, 12, 8, 10))
    assert is_open(cal, _at(2026, 12, 6, 10))               # a Sunday opened by hand
    caplog.set_level("WARNING", logger="hotline.ivr.hours")
    assert is_open(cal, _at(2030, 7, 1, 10))                 # no official data for 2030: Monday to Friday
    assert not is_open(cal, _at(2030, 7, 6, 10))
    assert any("2030" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("field, value, needle", [
    ("workday", [("9:00", "17:00")], "HH:MM"),
    ("workday", [("18:00", "08:00")], "ends before it starts"),
    ("name", "Business Hours", "pattern"),
])
def test_bad_calendars_name_the_problem(field, value, needle):
    with pytest.raises(ValidationError) as err:
        Calendar(**{"name": "biz", field: value})
    assert needle in str(err.value) and field in str(err.value)


def test_order_number_from_digits():
    assert order_number_from_digits("20261206000042") == "12345-20261206-000042"
    assert order_number_from_digits("1234520261206000042") == "12345-20261206-000042"
    assert order_number_from_digits("2026") is None
    assert order_number_from_digits("") is None


async def test_topic_switch_and_window(pg_pool):
    store = IvrStore(pg_pool)
    now = dt.datetime(2026, 9, 1, 10, tzinfo=TZ)
    assert await store.topic_active("typhoon", now) is False             # unknown topic: off
    await store.put_topic("typhoon", {"title": "台风", "active": True,
                                      "starts_at": "2026-09-01T08:00:00+08:00",
                                      "ends_at": "2026-09-03T08:00:00+08:00"}, ADMIN)
    assert await store.topic_active("typhoon", now)
    assert not await store.topic_active("typhoon", dt.datetime(2026, 9, 3, 8, tzinfo=TZ))
    await store.put_topic("typhoon", {"title": "台风", "active": False}, ADMIN)
    assert not await store.topic_active("typhoon", now)
    audit = await pg_pool.fetch("SELECT action FROM config_audit WHERE entity = 'ivr_topic' ORDER BY id")
    assert [r["action"] for r in audit] == ["create", "update"]
    with pytest.raises(IvrDataError) as err:
        await store.put_topic("typhoon", {"active": True, "starts_at": "2026-09-01 08:00"}, ADMIN)
    assert err.value.field == "starts_at"
    assert not await store.topic_active("typhoon", now)                  # the refused change wrote nothing


async def test_calendar_round_trip(pg_pool):
    store = IvrStore(pg_pool)
    cal = Calendar(name="business", workday=[("09:00", "17:00")], closed_dates=[dt.date(2026, 12, 24)])
    await store.put_calendar(cal, ADMIN)
    assert await store.calendar("business") == cal
    assert (await store.calendars())[0]["closed_dates"] == ["2026-12-24"]
    assert await store.calendar("nosuch") is None


async def test_caller_lists(pg_pool):
    store = IvrStore(pg_pool)
    await store.add_caller("elderly", "13800000001", "独居老人", ADMIN)
    await store.add_caller("vip", "13800000001", None, ADMIN)
    assert await store.lists_of("13800000001") == {"elderly", "vip"}
    assert await store.lists_of("anonymous") == set()
    with pytest.raises(IvrDataError) as err:
        await store.add_caller("elderly", "13800000001", "", ADMIN)
    assert err.value.status == 409
    with pytest.raises(IvrDataError) as err:
        await store.add_caller("elderly", "138\r\nAction: Originate", "", ADMIN)
    assert err.value.field == "number"
    await store.remove_caller("vip", "13800000001", ADMIN)
    assert await store.lists_of("13800000001") == {"elderly"}


async def test_order_status_only_for_the_calling_number(pg_pool):
    await pg_pool.execute(
        "INSERT INTO work_orders (number, caller_number, status) VALUES ('12345-20261206-000042', '13800000001', 'handling')")
    store = IvrStore(pg_pool)
    assert await store.order_status("20261206000042", "13800000001") == "handling"
    assert await store.order_status("20261206000042", "13900000002") is None     # another citizen's order
    assert await store.order_status("20261206000042", None) is None
    assert await store.order_status("20261206000043", "13800000001") is None


# ---- what the IVR leaves on the call: the survey answer, a flow that ended the call itself -------

@pytest.mark.parametrize("answers, first, latest", [
    (["satisfied"], "satisfied", "satisfied"),
    (["dissatisfied", "basically_satisfied"], "dissatisfied", "basically_satisfied"),   # a repeat call, again
    (["no_answer"], None, None),                                                      # asked, no answer
])
async def test_survey_answers_land_on_the_call_and_its_order(pg_pool, answers, first, latest):
    from tests.test_workorders import make_call
    from workorders.store import CallStore

    store = CallStore(pg_pool)
    results = [await store.record_call(make_call("13800000055", survey=a, at=1796000000 + 60 * i), [])
               for i, a in enumerate(answers)]
    assert len({r.order_number for r in results}) == 1                   # the repeat call links to the order
    assert [await pg_pool.fetchval("SELECT survey FROM calls WHERE id = $1", r.call_id) for r in results] == answers
    order = await pg_pool.fetchrow("SELECT first_satisfaction, satisfaction FROM work_orders WHERE number = $1",
                                   results[0].order_number)
    assert (order["first_satisfaction"], order["satisfaction"]) == (first, latest)
    events = await pg_pool.fetch(
        "SELECT detail FROM work_order_events e JOIN work_orders o ON o.id = e.work_order_id"
        " WHERE o.number = $1 AND e.kind = 'survey' ORDER BY e.id", results[0].order_number)
    assert [json.loads(e["detail"])["result"] for e in events] == answers


async def test_a_flow_that_ended_the_call_itself_opens_no_callback(pg_pool):
    from tests.test_workorders import make_call
    from workorders.store import CallStore

    store = CallStore(pg_pool)
    served = make_call("13800000077", "ivr_hangup", variables={"HOTLINE_IVR_CHOICE": "9-order_found",
                                                               "HOTLINE_IVR_DONE": "1"})
    await store.record_call(served, [])
    assert await pg_pool.fetchval("SELECT count(*) FROM callback_tasks") == 0
    gave_up = make_call("13800000077", "ivr_hangup", variables={"HOTLINE_IVR_CHOICE": "hangup"})
    await store.record_call(gave_up, [])   # 20 s in the IVR and hung up: called back
    assert await pg_pool.fetchval("SELECT count(*) FROM callback_tasks") == 1


async def test_every_live_leader_slot_opens_its_queue(pg_pool):
    from ivr.facts import ServiceFacts

    async def two_slots():
        return ["hotline-leader-a", "hotline-leader-b"]   # two leaders on two seats at once

    facts = ServiceFacts(IvrStore(pg_pool), leader_open=two_slots)
    assert await facts.leader_open("hotline-leader-b") and await facts.leader_open("HOTLINE-LEADER-A")
    assert not await facts.leader_open("hotline-leader-c")


async def test_estimated_wait_from_the_queue_s_live_load(pg_pool, redis_client, node_id):
    import time as _time

    from ivr.facts import ServiceFacts
    from queues.live import LiveStats

    live = LiveStats(redis_client, node_id)
    facts = ServiceFacts(IvrStore(pg_pool), live=live)
    p, day = f"hotline:{node_id}", live._day(_time.time())
    assert await facts.estimated_wait("hotline-general") == 180.0       # nobody, no seat: one default AHT
    await redis_client.hset(f"{p}:members", mapping={
        "hotline-general\nSeat 1": json.dumps({"state": "on_call"}),
        "hotline-general\nSeat 2": json.dumps({"state": "on_call"}),
        "hotline-business\nSeat 3": json.dumps({"state": "available"})})
    await redis_client.hset(f"{p}:waiting", mapping={"hotline-general": 3})
    await redis_client.hset(f"{p}:today:{day}", mapping={"talk_sum\nhotline-general": 600,
                                                         "talk_n\nhotline-general": 5})
    # 3 ahead + this caller, 120 s each on average, shared by the 2 seats on calls
    assert await facts.estimated_wait("hotline-general") == 4 * 120 / 2
    assert await facts.estimated_wait("hotline-business") == 0.0        # a seat free, nobody waiting
