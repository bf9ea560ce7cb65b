"""Leader-hotline transfers, callbacks and supervisor spying in the PBX simulator, over real AMI.

What the service will send (see telephony/simulator/transfer_actions.py, callback.py, spy.py):
BlindTransfer of the seat's channel to ``hotline-transfer,<queue>``, Redirect of the caller's
channel there, Atxfer of the seat's channel to ``hotline-seats,<n>``, Originate of a seat to
``hotline-callback,<number>,1``, and Originate of a supervisor with ``Application: ChanSpy``.
"""

from __future__ import annotations

import pytest

from telephony.simulator import ScriptedCaller, SeatBehaviour
from telephony.simulator import bridges
from telephony.simulator.bus import EventBus
from telephony.simulator.channels import ChannelRegistry
from telephony.simulator.clock import SimClock
from tests.test_simulator import QUEUES, make_agi, make_client, make_sim  # noqa: F401

pytestmark = pytest.mark.timeout(60)  # + pytest.mark.leader once pyproject.toml registers it

LEADER = "PJSIP/8009"
CHANNEL_BLOCK = ["Channel", "ChannelState", "ChannelStateDesc", "CallerIDNum", "CallerIDName", "ConnectedLineNum",
                 "ConnectedLineName", "Language", "AccountCode", "Context", "Exten", "Priority", "Uniqueid",
                 "Linkedid"]
BRIDGE_BLOCK = ["BridgeUniqueid", "BridgeType", "BridgeTechnology", "BridgeCreator", "BridgeName",
                "BridgeNumChannels", "BridgeVideoSourceMode"]


def block(prefix: str, names: list[str]) -> list[str]:
    return [prefix + n for n in names]


async def start(make_sim, make_agi, make_client, seat: str, talk: float = 60.0):
    """A simulator whose IVR sends callers to hotline-general, where ``seat`` answers; the leader
    seat is a member of hotline-leader."""
    agi = await make_agi(["SET VARIABLE HOTLINE_QUEUE hotline-general"])
    sim = await make_sim(agi.port)
    client = await make_client(sim.ami_port)
    for queue, iface, name in (("hotline-general", seat, "Seat 8001"), ("hotline-leader", LEADER, "Leader")):
        ok = await client.action("QueueAdd", {"Queue": queue, "Interface": iface, "MemberName": name})
        assert ok[0]["Response"] == "Success"
    sim.set_seat_behaviour(seat, SeatBehaviour(talk=talk))
    sim.set_seat_behaviour(LEADER, SeatBehaviour(answer_after=1.0, talk=4.0))
    return sim, client


async def connected(sim, client, queue: str = "hotline-general"):
    linkedid = await sim.place_call(ScriptedCaller(number="13800138000", name="Zhang"))
    connect = await client.wait_for(lambda f: f.event == "AgentConnect" and f["Queue"] == queue
                                    and f["Linkedid"] == linkedid)
    return linkedid, connect


def of_call(client, linkedid: str) -> list:
    return [f for f in client.frames if f.event and f.get("Linkedid") == linkedid]


@pytest.mark.parametrize("seat", ["PJSIP/8001", "Local/1001@agents/n"])
async def test_blind_transfer_sends_the_caller_to_the_leader_queue(make_sim, make_agi, make_client, seat):
    sim, client = await start(make_sim, make_agi, make_client, seat)
    linkedid, connect = await connected(sim, client)
    seat_chan, caller_chan = connect["DestChannel"], connect["Channel"]
    bridge = (await client.wait_for(lambda f: f.event == "BridgeEnter" and f["Channel"] == caller_chan))[
        "BridgeUniqueid"]
    done = await client.action("BlindTransfer", {"Channel": seat_chan, "Context": "hotline-transfer",
                                                 "Exten": "hotline-leader"})
    assert (done[0]["Response"], done[0]["Message"]) == ("Success", "Transfer succeeded")
    event = await client.wait_for(lambda f: f.event == "BlindTransfer")
    assert [k for k, _ in event.headers] == ["Event", "Privilege", "Timestamp", "Result",
                                             *block("Transferer", CHANNEL_BLOCK), *block("Transferee", CHANNEL_BLOCK),
                                             *BRIDGE_BLOCK, "IsExternal", "Context", "Extension"]
    assert (event["Result"], event["TransfererChannel"], event["TransfereeChannel"], event["BridgeUniqueid"],
            event["IsExternal"], event["Context"], event["Extension"], event["TransfereeLinkedid"]) == (
        "Success", seat_chan, caller_chan, bridge, "Yes", "hotline-transfer", "hotline-leader", linkedid)
    leader = await client.wait_for(lambda f: f.event == "AgentConnect" and f["Queue"] == "hotline-leader")
    assert (leader["Channel"], leader["Linkedid"], leader["Interface"]) == (caller_chan, linkedid, LEADER)
    await sim.wait_idle(timeout=30)
    frames = of_call(client, linkedid)
    names = [f.event for f in frames]
    complete = [f for f in frames if f.event == "AgentComplete"]
    assert [(f["Queue"], f["MemberName"], f["Reason"]) for f in complete] == [
        ("hotline-general", "Seat 8001", "transfer"), ("hotline-leader", "Leader", "agent")]
    assert any(f.event == "VarSet" and f["Variable"] == "BLINDTRANSFER" and f["Value"] == seat_chan
               and f["Channel"] == caller_chan for f in frames)
    joins = [f["Queue"] for f in frames if f.event == "QueueCallerJoin"]
    assert joins == ["hotline-general", "hotline-leader"]
    # the seat is gone before the caller rejoins; the caller runs hotline-transfer,hotline-leader,1
    rejoin = next(i for i, f in enumerate(frames) if f.event == "QueueCallerJoin" and f["Queue"] == "hotline-leader")
    assert rejoin > max(i for i, f in enumerate(frames) if f.event == "Hangup" and f["Channel"] == seat_chan)
    assert rejoin > names.index("AgentComplete") > names.index("AgentConnect")
    queue_exten = next(f for f in frames if f.event == "Newexten" and f["Context"] == "hotline-transfer")
    assert (queue_exten["Channel"], queue_exten["Exten"], queue_exten["Priority"], queue_exten["AppData"]) == (
        caller_chan, "hotline-leader", "1", "hotline-leader,t,,,60")
    assert frames[-1].event == "Hangup" and frames[-1]["Channel"] == caller_chan
    result = sim.results[linkedid]
    assert (result.outcome, result.seats, result.transfers, result.queue) == (
        "answered", ("Seat 8001", "Leader"), ("blind:hotline-leader",), "hotline-leader")


async def test_blind_transfer_errors(make_sim, make_agi, make_client):
    sim, client = await start(make_sim, make_agi, make_client, "PJSIP/8001", talk=3.0)
    linkedid, connect = await connected(sim, client)
    for fields, message in (({"Exten": "x"}, "No channel specified"),
                            ({"Channel": connect["DestChannel"]}, "No extension specified"),
                            ({"Channel": "PJSIP/7777-00000099", "Exten": "x"}, "Channel specified does not exist"),
                            ({"Channel": connect["Channel"][:-1] + "1", "Exten": "x"}, "Transfer invalid")):
        reply = (await client.action("BlindTransfer", fields))[0]
        assert (reply["Response"], reply["Message"]) == ("Error", message)
    invalid = await client.wait_for(lambda f: f.event == "BlindTransfer")
    assert invalid["Result"] == "Invalid" and "TransfereeChannel" not in invalid and "BridgeUniqueid" not in invalid
    await sim.wait_idle(timeout=30)
    assert sim.results[linkedid].transfers == ()


async def test_redirect_of_the_caller_to_the_leader_queue(make_sim, make_agi, make_client):
    sim, client = await start(make_sim, make_agi, make_client, "PJSIP/8001")
    linkedid, connect = await connected(sim, client)
    caller_chan = connect["Channel"]
    for fields, message in (({"Channel": caller_chan, "Context": "hotline-transfer", "Exten": "hotline-leader"},
                             "Priority not specified"),
                            ({"Channel": "Local/x-1;2", "Context": "c", "Exten": "e", "Priority": "1"},
                             "Channel does not exist: Local/x-1;2")):
        reply = (await client.action("Redirect", fields))[0]
        assert (reply["Response"], reply["Message"]) == ("Error", message)
    done = await client.action("Redirect", {"Channel": caller_chan, "Context": "hotline-transfer",
                                            "Exten": "hotline-leader", "Priority": "1"})
    assert (done[0]["Response"], done[0]["Message"]) == ("Success", "Redirect successful")
    await client.wait_for(lambda f: f.event == "AgentConnect" and f["Queue"] == "hotline-leader")
    await sim.wait_idle(timeout=30)
    frames = of_call(client, linkedid)
    assert not [f for f in client.frames if f.event == "BlindTransfer"]
    # app_queue sees only the member hang up as the bridge dissolves: Reason agent, not transfer
    assert [(f["Queue"], f["Reason"]) for f in frames if f.event == "AgentComplete"] == [
        ("hotline-general", "agent"), ("hotline-leader", "agent")]
    result = sim.results[linkedid]
    assert (result.outcome, result.seats, result.transfers) == (
        "answered", ("Seat 8001", "Leader"), ("redirect:hotline-leader",))


async def test_attended_transfer_to_the_leader_seat(make_sim, make_agi, make_client):
    sim, client = await start(make_sim, make_agi, make_client, "PJSIP/8001")
    linkedid, connect = await connected(sim, client)
    seat_chan, caller_chan = connect["DestChannel"], connect["Channel"]
    bridge = (await client.wait_for(lambda f: f.event == "BridgeEnter" and f["Channel"] == caller_chan))[
        "BridgeUniqueid"]
    queued = await client.action("Atxfer", {"Channel": seat_chan, "Context": "hotline-seats", "Exten": "8009"})
    assert (queued[0]["Response"], queued[0]["Message"]) == ("Success", "Atxfer successfully queued")
    answered = await client.wait_for(lambda f: f.event == "DialEnd" and f["DestChannel"].startswith(LEADER + "-"))
    assert answered["DialStatus"] == "ANSWER"
    assert await client.wait_for(lambda f: f.event == "MusicOnHoldStart" and f["Channel"] == caller_chan)
    # the operator hangs up: that completes the transfer
    assert (await client.action("Hangup", {"Channel": seat_chan}))[0]["Message"] == "Channel Hungup"
    event = await client.wait_for(lambda f: f.event == "AttendedTransfer")
    assert [k for k, _ in event.headers] == [
        "Event", "Privilege", "Timestamp", "Result", *block("OrigTransferer", CHANNEL_BLOCK),
        *block("Orig", BRIDGE_BLOCK), *block("SecondTransferer", CHANNEL_BLOCK), *block("Second", BRIDGE_BLOCK),
        *block("Transferee", CHANNEL_BLOCK), *block("TransferTarget", CHANNEL_BLOCK), "IsExternal", "DestType",
        "DestBridgeUniqueid"]
    target = event["TransferTargetChannel"]
    assert target.startswith("Local/8009@hotline-seats-") and target.endswith(";1")
    assert (event["Result"], event["OrigTransfererChannel"], event["SecondTransfererChannel"],
            event["TransfereeChannel"], event["OrigBridgeUniqueid"], event["DestType"], event["DestBridgeUniqueid"],
            event["IsExternal"]) == ("Success", seat_chan, seat_chan, caller_chan, bridge, "Bridge", bridge, "No")
    assert event["SecondBridgeUniqueid"] != bridge
    await sim.wait_idle(timeout=30)
    frames = of_call(client, linkedid)
    # every channel the transfer made was requested by the seat: same Linkedid, and the target's
    # ;1 joins the caller's bridge (the bridge keeps the oldest Linkedid: still the call's)
    made = {f["Channel"] for f in client.frames if f.event == "Newchannel"}
    assert {f["Linkedid"] for f in client.frames if f.event == "Newchannel" and (
        f["Channel"].startswith(("Local/8009@", LEADER)))} == {linkedid}
    assert any(f.event == "BridgeEnter" and f["Channel"] == target and f["BridgeUniqueid"] == bridge for f in frames)
    assert {f["Channel"] for f in frames if f.event == "Hangup"} == made - {
        f["Channel"] for f in client.frames if f.event == "Newchannel" and f["Linkedid"] != linkedid}
    assert [(f["MemberName"], f["Reason"]) for f in frames if f.event == "AgentComplete"] == [
        ("Seat 8001", "transfer")]
    assert [f["Channel"] for f in frames if f.event == "MusicOnHoldStop"][-1] == caller_chan
    assert frames[-1].event == "Hangup" and frames[-1]["Channel"] == caller_chan
    result = sim.results[linkedid]
    assert (result.outcome, result.seats, result.transfers) == (
        "answered", ("Seat 8001", LEADER), ("attended:8009",))


async def test_attended_transfer_to_a_seat_that_does_not_answer_returns_to_the_caller(make_sim, make_agi,
                                                                                       make_client):
    sim, client = await start(make_sim, make_agi, make_client, "PJSIP/8001", talk=25.0)
    sim.set_seat_behaviour(LEADER, SeatBehaviour(answers=False))
    linkedid, connect = await connected(sim, client)
    seat_chan = connect["DestChannel"]
    await client.action("Atxfer", {"Channel": seat_chan, "Context": "hotline-seats", "Exten": "8009"})
    back = await client.wait_for(lambda f: f.event == "DialEnd" and f["DestChannel"].startswith(LEADER + "-"))
    assert back["DialStatus"] == "NOANSWER"
    await sim.wait_idle(timeout=30)
    frames = of_call(client, linkedid)
    assert not [f for f in client.frames if f.event == "AttendedTransfer"]
    enters = [f["BridgeUniqueid"] for f in frames if f.event == "BridgeEnter" and f["Channel"] == seat_chan]
    assert len(enters) == 3 and enters[0] == enters[2] != enters[1]  # caller's, consultation, caller's again
    assert [f["Reason"] for f in frames if f.event == "AgentComplete"] == ["agent"]
    assert sim.results[linkedid].transfers == ()


async def test_leader_callback_originate(make_sim, make_client):
    sim = await make_sim(1)
    client = await make_client(sim.ami_port)
    sim.set_seat_behaviour(LEADER, SeatBehaviour(answer_after=1.0, talk=30.0))
    sim.set_seat_behaviour("13800138000", SeatBehaviour(answer_after=2.0, talk=4.0))
    sim.set_seat_behaviour("13900139000", SeatBehaviour(answers=False))
    ids = []
    for number, order in (("13800138000", "WO-1"), ("13900139000", "WO-2")):
        reply = await client.action("Originate", {
            "Channel": LEADER, "Context": "hotline-callback", "Exten": number, "Priority": "1",
            "CallerID": '"12345" <12345>', "Timeout": "30000", "Async": "true",
            "Variable": f"HOTLINE_CALLBACK={order}"})
        assert (reply[0]["Response"], reply[0]["Message"]) == ("Success", "Originate successfully queued")
        ids.append(reply[0].action_id)
    responses = [await client.wait_for(lambda f, a=a: f.event == "OriginateResponse" and f.action_id == a)
                 for a in ids]
    assert [(r["Response"], r["Reason"], r["Context"], r["Exten"]) for r in responses] == [
        ("Success", "4", "hotline-callback", "13800138000"), ("Success", "4", "hotline-callback", "13900139000")]
    await sim.wait_idle(timeout=30)
    first = responses[0]
    leader_chan, uid = first["Channel"], first["Uniqueid"]
    assert leader_chan.startswith(LEADER + "-")
    assert any(f.event == "VarSet" and f["Channel"] == leader_chan and (f["Variable"], f["Value"]) == (
        "HOTLINE_CALLBACK", "WO-1") for f in client.frames)
    dial = next(f for f in client.frames if f.event == "DialBegin" and f["Channel"] == leader_chan)
    assert dial["DestChannel"].startswith("PJSIP/hotline-trunk-") and dial["DialString"] == "13800138000@hotline-trunk"
    assert (dial["DestLinkedid"], dial["Linkedid"], dial["DestCallerIDNum"]) == (uid, uid, "13800138000")
    assert any(f.event == "MixMonitorStart" and f["Channel"] == leader_chan for f in client.frames)
    ends = [f["DialStatus"] for f in client.frames if f.event == "DialEnd"]
    assert ends == ["ANSWER", "NOANSWER"]
    records = {r.action_id: r for r in sim.originates}
    ok, missed = records[ids[0]], records[ids[1]]
    assert (ok.channel, ok.linkedid, ok.answered, ok.callee_answered, ok.talk_time, ok.variables) == (
        leader_chan, uid, True, True, 4, (("HOTLINE_CALLBACK", "WO-1"),))
    assert ok.recording_path is not None and ok.recording_path.stat().st_size > 44
    assert (missed.answered, missed.callee_answered, missed.talk_time) == (True, False, 0)
    assert sim.results == {}  # callbacks are not inbound calls


@pytest.mark.parametrize("options", ["qE", "qwE", "qBE"])
async def test_supervisor_chanspy_listen_whisper_barge(make_sim, make_agi, make_client, options):
    sim, client = await start(make_sim, make_agi, make_client, "PJSIP/8001", talk=6.0)
    sim.set_seat_behaviour("PJSIP/8100", SeatBehaviour(talk=600.0))
    linkedid, connect = await connected(sim, client)
    seat_chan = connect["DestChannel"]
    reply = await client.action("Originate", {"Channel": "PJSIP/8100", "Application": "ChanSpy",
                                              "Data": f"PJSIP/8001-,{options}", "Async": "true"})
    assert reply[0]["Message"] == "Originate successfully queued"
    start_ev = await client.wait_for(lambda f: f.event == "ChanSpyStart")
    assert [k for k, _ in start_ev.headers] == ["Event", "Privilege", "Timestamp", *block("Spyer", CHANNEL_BLOCK),
                                                *block("Spyee", CHANNEL_BLOCK)]
    spyer = start_ev["SpyerChannel"]
    assert spyer.startswith("PJSIP/8100-") and (start_ev["SpyeeChannel"], start_ev["SpyeeLinkedid"]) == (
        seat_chan, linkedid)
    await sim.wait_idle(timeout=30)  # the spied call ends, then (option E) the supervisor's channel
    names = [(f.event, f.get("Channel") or f.get("SpyerChannel")) for f in client.frames
             if f.event in ("ChanSpyStop", "Hangup") and spyer in (f.get("Channel"), f.get("SpyerChannel"))
             or (f.event == "Hangup" and f["Channel"] == seat_chan)]
    assert names == [("Hangup", seat_chan), ("ChanSpyStop", spyer), ("Hangup", spyer)]
    record = next(r for r in sim.originates if r.application == "ChanSpy")
    assert record.spied == (seat_chan,) and record.answered


async def test_chanspy_without_e_ends_when_the_supervisor_hangs_up(make_sim, make_agi, make_client):
    sim, client = await start(make_sim, make_agi, make_client, "PJSIP/8001", talk=600.0)
    sim.set_seat_behaviour("PJSIP/8100", SeatBehaviour(talk=600.0))
    linkedid, connect = await connected(sim, client)
    await client.action("Originate", {"Channel": "PJSIP/8100", "Application": "ChanSpy", "Data": "PJSIP/8001-,q",
                                      "Async": "true"})
    spyer = (await client.wait_for(lambda f: f.event == "ChanSpyStart"))["SpyerChannel"]
    assert (await client.action("Hangup", {"Channel": spyer}))[0]["Message"] == "Channel Hungup"
    stop = await client.wait_for(lambda f: f.event == "ChanSpyStop")
    assert (stop["SpyerChannel"], stop["SpyeeChannel"]) == (spyer, connect["DestChannel"])
    await client.wait_for(lambda f: f.event == "Hangup" and f["Channel"] == spyer)
    assert (await client.action("Hangup", {"Channel": connect["DestChannel"]}))[0]["Message"] == "Channel Hungup"
    await sim.wait_idle(timeout=30)
    assert sim.results[linkedid].outcome == "answered"


async def test_a_channel_joining_a_bridge_takes_the_oldest_linkedid():
    clock = SimClock(1.0)
    bus, chans = EventBus(clock), ChannelRegistry(clock)
    old = chans.device("PJSIP/8001", None, "default", "s")
    newer = chans.device("PJSIP/8009", None, "default", "s")
    assert old.linkedid != newer.linkedid
    bridge = bridges.create(bus)
    bridges.enter(bus, bridge, newer)
    assert newer.linkedid == newer.uniqueid
    bridges.enter(bus, bridge, old)
    assert (old.linkedid, newer.linkedid) == (old.uniqueid, old.uniqueid)
