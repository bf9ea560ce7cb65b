"""Supervisor listen / whisper / barge (ChanSpy through Originate) and forced pause / logout, with the
PBX simulator, real Postgres and Redis, over the HTTP API (rig: tests/test_operators.py)."""

from __future__ import annotations

import functools
import json

import pytest

from hotline import auth
from queues.supervision import chanspy_data, spy_prefix
from telephony.simulator import ScriptedCaller, SeatBehaviour
from tests.test_faults import SECRET
from tests.test_operators import ANN, BOB, act, desk_rig, history, members, token_of  # noqa: F401
from tests.test_simulator import AmiClient

PHONES = {"listen": "PJSIP/8100", "whisper": "PJSIP/8103", "barge": "PJSIP/8104"}
OPTIONS = {"listen": "qE", "whisper": "qwE", "barge": "qBE"}
ADMIN_PASSWORD = "admin-pass-0001"


@functools.cache
def _hash(password: str) -> str:
    return auth.hash_password(password)


async def spy(client, who: dict, seat_id: int, body, status: int) -> dict:
    resp = await client.post(f"/api/seats/{seat_id}/spy", headers=who, json=body)
    text = await resp.text()
    assert resp.status == status, (body, resp.status, text)
    return json.loads(text)


async def seat_id(pool, interface: str) -> int:
    return await pool.fetchval("SELECT id FROM seats WHERE interface = $1", interface)


@pytest.fixture
async def observer(desk_rig):
    """An AMI connection of the test's own to the simulator: it sees every event."""
    sim = desk_rig[0]
    client = await AmiClient.connect(sim.ami_port)
    assert (await client.login(SECRET))["Message"] == "Authentication accepted"
    yield client
    await client.close()


@pytest.fixture
def originates(desk_rig, monkeypatch) -> list[dict]:
    """Every Originate the service sends (recorded on its way to the real AMI link)."""
    service = desk_rig[1]
    ami = service.desk.actions.client
    sent: list[dict] = []
    real = ami.send_action

    async def send_action(action, fields=None, **kw):
        if action == "Originate":
            sent.append(dict(fields or {}))
        return await real(action, fields, **kw)

    monkeypatch.setattr(ami, "send_action", send_action)
    return sent


def test_chanspy_data_is_a_prefix_of_the_seats_channels_with_e():
    assert chanspy_data("PJSIP/8001", "qBE") == "PJSIP/8001-,qBE"
    assert spy_prefix("PJSIP/800") == "PJSIP/800-"          # never matches PJSIP/8001-0000002a
    assert spy_prefix("Local/1001@agents/n") == "Local/1001@agents-"


async def test_supervisor_listens_whispers_and_barges_then_forces_a_logout(
        desk_rig, observer, originates, pg_pool):
    sim, service, client, world = desk_rig
    op1, sup = await token_of(client, "op1"), await token_of(client, "sup")
    ann_seat = await seat_id(pg_pool, ANN)
    sim.set_seat_behaviour(ANN, SeatBehaviour(answers=True, answer_after=1.0, talk=600.0))
    for phone in PHONES.values():
        sim.set_seat_behaviour(phone, SeatBehaviour(answers=True, answer_after=1.0, talk=600.0))
    await act(client, op1, world["ann"], "login", {"seat": ANN})

    refused = await spy(client, sup, ann_seat, {"mode": "listen", "phone": PHONES["listen"]}, 409)
    assert "no call" in refused["error"] and originates == []

    linkedid = await sim.place_call(ScriptedCaller(number="13800000001", dtmf="1", dtmf_delay=0.5))
    connect = await observer.wait_for(lambda f: f.event == "AgentConnect" and f["Interface"] == ANN, timeout=30)
    seat_chan = connect["DestChannel"]
    assert seat_chan.startswith(ANN + "-")

    queued = {}
    for mode, phone in PHONES.items():
        answer = await spy(client, sup, ann_seat, {"mode": mode, "phone": phone}, 202)
        assert (answer["seat"], answer["phone"], answer["mode"], answer["result"]) == (ANN, phone, mode, "queued")
        queued[mode] = answer["action_id"]
        start = await observer.wait_for(
            lambda f, p=phone: f.event == "ChanSpyStart" and f["SpyerChannel"].startswith(p + "-"), timeout=30)
        assert (start["SpyeeChannel"], start["SpyeeLinkedid"]) == (seat_chan, linkedid)
    assert [(o["Channel"], o["Application"], o["Data"]) for o in originates] == [
        (PHONES[m], "ChanSpy", f"{ANN}-,{OPTIONS[m]}") for m in PHONES]
    channels = await observer.action("CoreShowChannels")
    spying = {f["Channel"].rsplit("-", 1)[0]: (f["Application"], f["ApplicationData"])
              for f in channels if f.event == "CoreShowChannel" and f["Application"] == "ChanSpy"}
    assert spying == {PHONES[m]: ("ChanSpy", f"{ANN}-,{OPTIONS[m]}") for m in PHONES}

    # an operator cannot leave a call; a supervisor's logout is forced, the pause waits for the call's end
    refused = await act(client, op1, world["ann"], "logout", status=409)
    assert "on call" in refused["error"]
    state = await act(client, sup, world["ann"], "pause", {"reason": "coaching"})
    assert (state["status"], state["pending_pause"]) == ("on_call", "coaching")
    state = await act(client, sup, world["ann"], "logout")
    assert (state["status"], state["seat"]) == ("offline", None)
    assert not any(iface == ANN for _, iface in await members(service))
    last = (await history(pg_pool, world["ann"]))[-1]
    assert (last["from_status"], last["to_status"], last["reason"], last["actor"]) == (
        "on_call", "offline", "forced logout", "sup")

    # the seat hangs up: with E every spy ends and the supervisors' phones hang up
    assert (await observer.action("Hangup", {"Channel": seat_chan}))[0]["Message"] == "Channel Hungup"
    await sim.wait_idle(timeout=60)
    stops = [f["SpyerChannel"].rsplit("-", 1)[0] for f in observer.frames if f.event == "ChanSpyStop"]
    assert sorted(stops) == sorted(PHONES.values())
    records = {r.action_id: r for r in sim.originates}
    for mode in PHONES:
        record = records[queued[mode]]
        assert (record.application, record.spied, record.answered) == ("ChanSpy", (seat_chan,), True)
    rows = await pg_pool.fetch("SELECT * FROM supervision_log ORDER BY id")
    assert [(r["supervisor"], r["seat_id"], r["seat"], r["phone"], r["mode"], r["result"], r["action_id"])
            for r in rows] == [("sup", ann_seat, ANN, PHONES["listen"], "listen", "no_call", None)] + [
        ("sup", ann_seat, ANN, PHONES[m], m, "queued", queued[m]) for m in PHONES]
    assert {r["node"] for r in rows} == {service.desk.node_id}


@pytest.mark.parametrize("body, field", [
    ({"phone": "PJSIP/8100"}, "mode"),
    ({"mode": "spy", "phone": "PJSIP/8100"}, "mode"),
    ({"mode": "listen,qB", "phone": "PJSIP/8100"}, "mode"),
    ({"mode": ["listen"], "phone": "PJSIP/8100"}, "mode"),
    ({"mode": "listen\r\nAction: Hangup", "phone": "PJSIP/8100"}, "mode"),
    ({"mode": "listen"}, "phone"),
    ({"mode": "listen", "phone": ""}, "phone"),
    ({"mode": "listen", "phone": 8100}, "phone"),
    ({"mode": "barge", "phone": "PJSIP/8100\r\nAction: Originate"}, "phone"),
    ({"mode": "barge", "phone": "PJSIP/8100,qB"}, "phone"),
    ({"mode": "barge", "phone": "PJSIP/13800138000@hotline-trunk"}, "phone"),
    ({"mode": "barge", "phone": "PJSIP/hotline-trunk/sip:13800138000@10.0.0.1"}, "phone"),
    ({"mode": "barge", "phone": "Local/13800138000@default"}, "phone"),
    ({"mode": "barge", "phone": "PJSIP/8100&PJSIP/8105"}, "phone"),
    ({"mode": "listen", "phone": ANN}, "phone"),     # the seat spied on
    ({"mode": "listen", "phone": "pjsip/8101"}, "phone"),
])
async def test_bad_mode_or_phone_is_a_400_before_any_ami(desk_rig, originates, pg_pool, body, field):
    sim, service, client, world = desk_rig
    sup = await token_of(client, "sup")
    bad = await spy(client, sup, await seat_id(pg_pool, ANN), body, 400)
    assert [f["field"] for f in bad["fields"]] == [field]
    assert originates == []
    assert await pg_pool.fetchval("SELECT count(*) FROM supervision_log") == 0


async def test_only_supervisors_and_admins_may_spy(desk_rig, originates, pg_pool):
    sim, service, client, world = desk_rig
    await pg_pool.execute("INSERT INTO users (login, display_name, role, password_hash) "
                          "VALUES ('adm', 'adm', 'admin', $1)", _hash(ADMIN_PASSWORD))
    resp = await client.post("/api/login", json={"login": "adm", "password": ADMIN_PASSWORD})
    admin = {"Authorization": f"Bearer {(await resp.json())['token']}"}
    ann_seat, body = await seat_id(pg_pool, ANN), {"mode": "listen", "phone": "PJSIP/8100"}
    for login in ("op1", "lead"):
        refused = await spy(client, await token_of(client, login), ann_seat, body, 403)
        assert "may not" in refused["error"]
    resp = await client.post(f"/api/seats/{ann_seat}/spy", json=body)
    assert resp.status == 401
    await spy(client, admin, 987654, body, 404)
    assert originates == [] and await pg_pool.fetchval("SELECT count(*) FROM supervision_log") == 0
    # an admin may: the seat has no call (409) after the role and input checks passed
    await spy(client, admin, ann_seat, body, 409)
    # a configured seat may be the supervisor's phone
    answer = await spy(client, admin, await seat_id(pg_pool, ANN), {"mode": "whisper", "phone": BOB.lower()}, 409)
    assert answer["fields"] == []
    rows = await pg_pool.fetch("SELECT supervisor, phone, mode, result FROM supervision_log ORDER BY id")
    assert [tuple(r) for r in rows] == [("adm", "PJSIP/8100", "listen", "no_call"),
                                        ("adm", BOB, "whisper", "no_call")]
    assert originates == []


async def test_no_owner_is_a_503(desk_rig, originates, pg_pool, monkeypatch):
    sim, service, client, world = desk_rig
    monkeypatch.setattr(service.desk, "owning", lambda: False)
    refused = await spy(client, await token_of(client, "sup"), await seat_id(pg_pool, ANN),
                        {"mode": "listen", "phone": "PJSIP/8100"}, 503)
    assert "does not own" in refused["error"]
    assert originates == [] and await pg_pool.fetchval("SELECT count(*) FROM supervision_log") == 0
