"""The simulator's fault knobs, each really injected with calls in flight, and the event masks
and list actions a resyncing client relies on (CoreShowChannels, CoreStatus)."""

from __future__ import annotations

import asyncio

import pytest

from telephony.simulator import ScriptedCaller, SeatBehaviour
from tests.test_simulator import (_two, capture_frames, make_agi, make_client, make_sim,  # noqa: F401
                                  run_call)

pytestmark = pytest.mark.timeout(60)

SEAT = "Local/1001@agents/n"


async def _seat(client, sim, talk: float = 30.0, answer_after: float = 0.0) -> None:
    await client.action("QueueAdd", {"Queue": "hotline-general", "Interface": SEAT, "MemberName": "Seat 1001"})
    sim.set_seat_behaviour(SEAT, SeatBehaviour(answer_after=answer_after, talk=talk))


async def test_drop_ami_links_cuts_abruptly_and_calls_go_on(make_sim, make_agi, make_client):
    agi = await make_agi(["SET VARIABLE HOTLINE_QUEUE hotline-general"])
    sim = await make_sim(agi.port)
    client = await make_client(sim.ami_port)
    other = await make_client(sim.ami_port)
    await _seat(client, sim, talk=10.0)
    linkedid = await sim.place_call(ScriptedCaller(number="13800138000"))
    await client.wait_for(lambda f: f.event == "AgentConnect")
    sim.drop_ami_links()
    await asyncio.wait_for(asyncio.gather(client.task, other.task), 5)
    # no Goodbye, no Hangup: the connection was simply cut while the call talks on
    assert not [f for f in client.frames if f.response == "Goodbye" or (
        f.event == "Hangup" and f.get("Linkedid") == linkedid)]
    again = await make_client(sim.ami_port)
    hangup = await again.wait_for(lambda f: f.event == "Hangup" and f["Uniqueid"] == _two(linkedid), timeout=20)
    assert hangup["Cause"] == "16"
    await sim.wait_idle(timeout=20)
    assert sim.results[linkedid].outcome == "answered" and sim.results[linkedid].answered


async def test_restart_kills_calls_silently_and_boots_anew(make_sim, make_agi, make_client):
    agi = await make_agi(["SET VARIABLE HOTLINE_QUEUE hotline-general"])
    sim = await make_sim(agi.port)
    client = await make_client(sim.ami_port)
    before = (await client.action("CoreStatus"))[0]
    await _seat(client, sim, talk=60.0)
    talking = await sim.place_call(ScriptedCaller(number="13800138000"))
    await client.wait_for(lambda f: f.event == "AgentConnect" and f["Linkedid"] == talking)
    waiting = await sim.place_call(ScriptedCaller(number="13900139000"))
    await client.wait_for(lambda f: f.event == "QueueCallerJoin" and f["Linkedid"] == waiting)
    port = sim.ami_port
    seen = len(client.frames)

    await sim.restart()

    await asyncio.wait_for(client.task, 5)
    # a crash: the old connection hears nothing of the calls that vanished
    assert not [f for f in client.frames[seen:] if f.event]
    talked, queued = sim.results[talking], sim.results[waiting]
    assert (talked.outcome, talked.answered, talked.seat_name, talked.queue) == (
        "pbx_restart", True, "Seat 1001", "hotline-general")
    assert (queued.outcome, queued.answered, queued.seat_name, queued.queue) == (
        "pbx_restart", False, None, "hotline-general")
    assert sim.ami_port == port
    fresh = await make_client(port)
    after = (await fresh.action("CoreStatus"))[0]
    assert (after["CoreStartupDate"], after["CoreStartupTime"]) != (before["CoreStartupDate"],
                                                                     before["CoreStartupTime"])
    assert after["CoreCurrentCalls"] == "0"
    channels = await fresh.action("CoreShowChannels")
    assert channels[-1]["ListItems"] == "0" and not [f for f in channels if f.event == "CoreShowChannel"]
    status = await fresh.action("QueueStatus", {"Queue": "hotline-general"})
    assert not [f for f in status if f.event in ("QueueMember", "QueueEntry")]
    # and the new boot takes calls
    result, _ = await run_call(sim, fresh, ScriptedCaller(number="13700137000", patience=2.0))
    assert result.outcome == "abandoned"


async def test_slow_answer(make_sim, make_agi, make_client):
    agi = await make_agi(["SET VARIABLE HOTLINE_QUEUE hotline-general"])
    sim = await make_sim(agi.port)
    client = await make_client(sim.ami_port)
    await _seat(client, sim, talk=1.0, answer_after=3.0)
    result, ours = await run_call(sim, client, ScriptedCaller(number="13800138000"))
    connect = next(f for f in ours if f.event == "AgentConnect")
    assert (connect["RingTime"], connect["HoldTime"]) == ("3", "3")
    seat = [f for f in ours if f.get("Channel", "").startswith("Local/1001@agents") and f.event in (
        "Newstate", "DialEnd")]
    assert [f["ChannelStateDesc"] for f in seat if f.event == "Newstate"][:2] == ["Ringing", "Ringing"]
    dial_end = next(f for f in ours if f.event == "DialEnd" and f.get("DestChannel", "").startswith("Local/1001"))
    ringing = next(f for f in ours if f.event == "Newstate" and f["ChannelStateDesc"] == "Ringing")
    assert dial_end["DialStatus"] == "ANSWER" and float(dial_end["Timestamp"]) - float(ringing["Timestamp"]) >= 2.9
    assert result.outcome == "answered" and result.answered


async def test_refuse_agi_falls_back_to_the_default_queue(make_sim, make_agi, make_client, tmp_path):
    from telephony.simulator import PbxSimulator
    from tests.test_simulator import QUEUES
    agi = await make_agi(["SET VARIABLE HOTLINE_QUEUE hotline-leader"])
    sim = PbxSimulator(username="hotline", secret="s3cret", agi_port=agi.port, recordings_dir=tmp_path,
                       queues=QUEUES, fallback_queue="hotline-general", fallback_category="general", speed=25)
    await sim.start()
    try:
        client = await make_client(sim.ami_port)
        sim.refuse_agi(True)
        result, ours = await run_call(sim, client, ScriptedCaller(number="13800000000", patience=3.0))
        assert not agi.sessions and not [f for f in ours if f.event in ("AGIExecStart", "AGIExecEnd")]
        sets = [(f["Variable"], f["Value"]) for f in ours if f.event == "VarSet"]
        assert ("AGISTATUS", "FAILURE") in sets
        assert sets.index(("AGISTATUS", "FAILURE")) < sets.index(("HOTLINE_QUEUE", "hotline-general")) < \
            sets.index(("HOTLINE_CATEGORY", "general"))
        assert next(f for f in ours if f.event == "QueueCallerJoin")["Queue"] == "hotline-general"
        assert (result.outcome, result.queue) == ("abandoned", "hotline-general")
        sim.refuse_agi(False)
        result, ours = await run_call(sim, client, ScriptedCaller(number="13800000001", patience=3.0))
        assert len(agi.sessions) == 1 and result.queue == "hotline-leader"
        assert next(f for f in ours if f.event == "VarSet" and f["Variable"] == "AGISTATUS")["Value"] == "SUCCESS"
    finally:
        await sim.stop()


async def test_core_show_channels_lists_live_channels_in_asterisk_22_format(make_sim, make_agi, make_client):
    agi = await make_agi(["SET VARIABLE HOTLINE_QUEUE hotline-general"])
    sim = await make_sim(agi.port)
    client = await make_client(sim.ami_port)
    await _seat(client, sim, talk=30.0)
    linkedid = await sim.place_call(ScriptedCaller(number="13800138000", name="Zhang San"))
    enter = await client.wait_for(lambda f: f.event == "BridgeEnter" and f["Channel"].endswith(";2")
                                  and f["Linkedid"] == linkedid)
    frames = await client.action("CoreShowChannels")
    theirs = [f for f in capture_frames("actions.ami") if f.action_id == "cap-8"]
    items = [f for f in frames if f.event == "CoreShowChannel"]
    assert [k for k, _ in frames[0].headers] == [k for k, _ in theirs[0].headers]
    assert [k for k, _ in frames[-1].headers] == [k for k, _ in theirs[-1].headers]
    assert frames[-1]["ListItems"] == str(len(items)) == "4"
    assert [k for k, _ in items[0].headers] == [
        "Event", "ActionID", "Channel", "ChannelState", "ChannelStateDesc", "CallerIDNum", "CallerIDName",
        "ConnectedLineNum", "ConnectedLineName", "Language", "AccountCode", "Context", "Exten", "Priority",
        "Uniqueid", "Linkedid", "Application", "ApplicationData", "Duration", "BridgeId"]
    by_name = {f["Channel"]: f for f in items}
    caller = by_name[enter["Channel"]]
    assert (caller["Linkedid"], caller["Application"], caller["BridgeId"]) == (
        linkedid, "Queue", enter["BridgeUniqueid"])
    assert caller["Duration"].count(":") == 2 and caller["CallerIDName"] == "Zhang San"


async def test_event_masks_route_cel_and_cdr(make_sim, make_agi, make_client):
    agi = await make_agi(["SET VARIABLE HOTLINE_QUEUE hotline-general"])
    sim = await make_sim(agi.port)
    everything = await make_client(sim.ami_port)
    masked = {}
    for mask in ("cdr", "call"):
        client = await make_client(sim.ami_port, login=False)
        await client.action("Login", {"Username": "hotline", "Secret": "s3cret", "Events": mask})
        masked[mask] = client
    result, ours = await run_call(sim, everything, ScriptedCaller(number="13800138000", patience=2.0))
    await masked["cdr"].wait_for(lambda f: f.event == "Cdr" and f["Channel"].endswith(";2"))
    await masked["call"].wait_for(lambda f: f.event == "Hangup" and f["Uniqueid"] == _two(result.linkedid))
    assert {f.event for f in masked["cdr"].frames if f.event} == {"Cdr"}
    call_events = {f.event for f in masked["call"].frames if f.event}
    assert {"CEL", "DeviceStateChange", "Hangup"} <= call_events and "Cdr" not in call_events
    assert "VarSet" not in call_events
    assert {f["Privilege"] for f in everything.frames if f.event == "Cdr"} == {"cdr,all"}
    assert {f["Privilege"] for f in everything.frames if f.event in ("CEL", "DeviceStateChange")} == {"call,all"}
