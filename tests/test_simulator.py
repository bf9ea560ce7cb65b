"""The PBX simulator against the real Asterisk 22 captures: same events, fields, order, AGI lines.

Each test starts a simulator (sped up), talks to it with a raw asyncio TCP client and the
project's AMI codec, runs a tiny FastAGI server that plays the server side of a ``.agi``
capture, and compares what the simulator did with what the real Asterisk did.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from collections import Counter
import wave
from dataclasses import dataclass, field
from typing import Callable

import pytest

from telephony.ami_codec import AmiDecoder, Frame, encode_action
from telephony.simulator import PbxSimulator, ScriptedCaller, SeatBehaviour, SimCallResult
from tests.conftest import FIXTURES, capture

pytestmark = pytest.mark.timeout(60)

SPEED = 25.0
# Events left out of the channel-event order: CEL, Cdr and DeviceStateChange come from other
# Asterisk threads, so their place among the channel events varies between real runs (they are
# compared by assert_reporting); Newexten (the captures' caller-bot dialplan runs on ;1), VarSet
# (tested apart), and OriginateResponse: the captures' calls were made by Originate, ours are not.
IGNORED = {"CEL", "Cdr", "Newexten", "DeviceStateChange", "VarSet", "OriginateResponse"}
# the queues of the captures' pbx-config/queues.conf
QUEUES = {
    "hotline-leader": {"strategy": "linear", "timeout": 10, "retry": 1, "ringinuse": "no"},
    "hotline-general": {"strategy": "rrmemory", "timeout": 8, "retry": 1, "wrapuptime": 2, "ringinuse": "no",
                        "autofill": "yes", "setinterfacevar": "yes", "setqueuevar": "yes",
                        "setqueueentryvar": "yes"},
}


# ---------------------------------------------------------------- captures


def capture_frames(name: str) -> list[Frame]:
    decoder = AmiDecoder()
    decoder.receive_data(capture(name))
    return list(decoder)


def call_events(frames: list[Frame], linkedid: str) -> list[Frame]:
    """The events of one call: every frame tied to its Linkedid, and its bridges."""
    bridges = {f["BridgeUniqueid"] for f in frames if f.event == "BridgeEnter" and f.get("Linkedid") == linkedid}
    out = []
    for f in frames:
        if f.event is None or "Privilege" not in f:
            continue
        if linkedid in (f.get("Linkedid"), f.get("DestLinkedid"), f.get("LocalOneLinkedid")) or \
                f.get("BridgeUniqueid") in bridges:
            out.append(f)
    return out


def role(channel: str) -> str:
    """``12345;2`` for ``Local/12345@hotline-inbound-00000000;2``: a channel by its part in the call."""
    head = channel.split("@")[0].replace("Local/", "")
    return head + (channel[-2:] if channel.endswith((";1", ";2")) else "")


def reporting(frames: list[Frame], linkedid: str) -> tuple[list[Frame], list[Frame], list[Frame]]:
    """The CEL, Cdr and call DeviceStateChange events of one call (Local devices and Queue:<q>,
    published between its first and last event)."""
    uids = {f.get("Uniqueid") for f in frames if f.get("Linkedid") == linkedid}
    at = [i for i, f in enumerate(frames) if linkedid in (f.get("Linkedid"), f.get("LinkedID"))]
    cels = [f for f in frames if f.event == "CEL" and f["LinkedID"] == linkedid]
    cdrs = [f for f in frames if f.event == "Cdr" and f["UniqueID"] in uids]
    dscs = [f for f in frames[at[0]:at[-1] + 4] if f.event == "DeviceStateChange" and (
        f["Device"].startswith("Local/") or ("_" not in f["Device"] and f["Device"].startswith("Queue:")))]
    return cels, cdrs, dscs


def assert_reporting(ours_all: list[Frame], linkedid: str, capture_name: str, number: str,
                     device_states: bool = True) -> list[Frame]:
    """CEL, Cdr and DeviceStateChange of our call against the capture's call: per channel the same
    CEL events in the same order with the same HANGUP Extra, the same Cdr records, the same device
    states, the capture's field names and order; and placed where the simulator promises (cel.py)."""
    theirs_all = capture_frames(capture_name)
    their_id = next(f for f in theirs_all if f.event == "NewCallerid" and f.get("CallerIDNum") == number)["Linkedid"]
    ours, theirs = reporting(ours_all, linkedid), reporting(theirs_all, their_id)
    for mine, real in zip(ours, theirs):
        assert mine and real
        assert_same_fields(mine, real)
        assert_same_fields(real, mine)

    def per_channel(cels: list[Frame]) -> dict[str, list[tuple[str, str]]]:
        out: dict[str, list[tuple[str, str]]] = {}
        for f in cels:
            extra = f["Extra"] if f["EventName"] in ("HANGUP", "DTMF", "STREAM_BEGIN") else bool(f["Extra"])
            out.setdefault(role(f["Channel"]), []).append((f["EventName"], extra))
        return out
    assert per_channel(ours[0]) == per_channel(theirs[0])
    peers = [(f["EventName"], role(f["Channel"]), role(f["Peer"]) if f["Peer"] else "") for f in ours[0] if f["Peer"]
             or f["EventName"].startswith("BRIDGE")]
    assert peers == [(f["EventName"], role(f["Channel"]), role(f["Peer"]) if f["Peer"] else "") for f in theirs[0]
                     if f["Peer"] or f["EventName"].startswith("BRIDGE")]
    answer = {role(f["Channel"]): (f["CallerIDnum"], f["CallerIDani"], f["Exten"], f["Context"], f["Application"])
              for f in ours[0] if f["EventName"] in ("ANSWER", "HANGUP")}
    assert answer == {role(f["Channel"]): (f["CallerIDnum"], f["CallerIDani"], f["Exten"], f["Context"],
                                            f["Application"]) for f in theirs[0] if f["EventName"] in ("ANSWER", "HANGUP")}

    def cdr_shape(cdrs: list[Frame]) -> Counter:
        return Counter((role(f["Channel"]), role(f["DestinationChannel"]) if f["DestinationChannel"] else "",
                        f["Source"], f["Destination"], f["DestinationContext"], f["CallerID"], f["LastApplication"],
                        f["Disposition"], bool(f["AnswerTime"])) for f in cdrs)
    assert cdr_shape(ours[1]) == cdr_shape(theirs[1])
    if device_states:
        assert Counter((f["Device"], f["State"]) for f in ours[2]) == Counter((f["Device"], f["State"]) for f in theirs[2])
    # the simulator's placement: CHAN_START just before Newchannel, Cdr/HANGUP/CHAN_END just before
    # Hangup, LINKEDID_END before the last Hangup of the call, BRIDGE_* just before BridgeEnter/Leave
    mine = [f for f in ours_all if linkedid in (f.get("Linkedid"), f.get("LinkedID")) or f in ours[1]]
    for i, f in enumerate(mine):
        if f.event == "Newchannel":
            assert (mine[i - 1].event, mine[i - 1].get("EventName"), mine[i - 1]["Channel"]) == (
                "CEL", "CHAN_START", f["Channel"])
        if f.event == "Hangup":
            tail = [(g.event, g.get("EventName"), g["Channel"]) for g in mine[i - 3:i]]
            assert tail[-2:] == [("CEL", "HANGUP", f["Channel"]), ("CEL", "CHAN_END", f["Channel"])] or tail == [
                ("CEL", "HANGUP", f["Channel"]), ("CEL", "CHAN_END", f["Channel"]),
                ("CEL", "LINKEDID_END", f["Channel"])]
        if f.event in ("BridgeEnter", "BridgeLeave"):
            assert mine[i - 1].get("EventName") == ("BRIDGE_ENTER" if f.event == "BridgeEnter" else "BRIDGE_EXIT")
            assert json.loads(mine[i - 1]["Extra"])["bridge_id"] == f["BridgeUniqueid"]
    assert [f.get("EventName") for f in mine[-4:]] == ["HANGUP", "CHAN_END", "LINKEDID_END", None]
    return ours[0]


def names(frames: list[Frame]) -> list[str]:
    return [f.event for f in frames if f.event not in IGNORED]


def variables(frames: list[Frame]) -> list[str]:
    """The VarSet variables in order, without the captures' caller-bot ones (BOT_*)."""
    return [f["Variable"] for f in frames if f.event == "VarSet" and not f["Variable"].startswith("BOT_")]


def capture_call(name: str, caller_number: str) -> list[Frame]:
    frames = capture_frames(name)
    first = next(f for f in frames if f.event == "NewCallerid" and f.get("CallerIDNum") == caller_number)
    return call_events(frames, first["Linkedid"])


@dataclass
class Dialogue:
    headers: list[str]
    steps: list[tuple[str, list[str]]]


def agi_dialogue(name: str) -> Dialogue:
    """The first session of a .agi capture: Asterisk's header lines, then (command, reply lines)."""
    headers: list[str] = []
    steps: list[tuple[str, list[str]]] = []
    in_headers = True
    for raw in (FIXTURES / name).read_text().split("\n"):
        if raw.startswith("-- "):
            break
        tag, text = raw[:2], raw[3:]
        if tag == ">>" and in_headers:
            if raw == ">> ":
                in_headers = False
            else:
                headers.append(text)
        elif tag == "<<":
            steps.append((text, []))
        elif tag == ">>":
            steps[-1][1].append(text)
    return Dialogue(headers, steps)


# ---------------------------------------------------------------- a raw AMI client


class AmiClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.decoder = AmiDecoder()
        self.frames: list[Frame] = []
        self.changed = asyncio.Event()
        self.closed = False
        self.ids = itertools.count(1)
        self.on_frame: Callable[[Frame], None] | None = None
        self.task = asyncio.ensure_future(self._read())

    @classmethod
    async def connect(cls, port: int) -> AmiClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def _read(self) -> None:
        try:
            while data := await self.reader.read(65536):
                self.decoder.receive_data(data)
                for frame in self.decoder:
                    if self.on_frame is not None:
                        self.on_frame(frame)
                    self.frames.append(frame)
                self.changed.set()
        except ConnectionError:
            pass
        finally:
            self.closed = True
            self.changed.set()

    async def wait_for(self, predicate: Callable[[Frame], bool], timeout: float = 10.0) -> Frame:
        async def scan() -> Frame:
            seen = 0
            while True:
                for frame in self.frames[seen:]:
                    if predicate(frame):
                        return frame
                seen = len(self.frames)
                if self.closed:
                    raise ConnectionError("AMI connection closed")
                self.changed.clear()
                await self.changed.wait()
        return await asyncio.wait_for(scan(), timeout)

    def send(self, action: str, fields: dict | None = None) -> str:
        action_id = f"cap-{next(self.ids)}"
        self.writer.write(encode_action(action, fields or {}, action_id))
        return action_id

    async def action(self, action: str, fields: dict | None = None) -> list[Frame]:
        """Send one action; its response, and for a list action its items up to ...Complete."""
        action_id = self.send(action, fields)
        first = await self.wait_for(lambda f: f.response is not None and f.action_id == action_id)
        if first.get("EventList") != "start":
            return [first]
        await self.wait_for(lambda f: f.action_id == action_id and f.get("EventList") == "Complete")
        return [f for f in self.frames if f.action_id == action_id]

    async def login(self, secret: str = "s3cret") -> Frame:
        return (await self.action("Login", {"Username": "hotline", "Secret": secret, "Events": "on"}))[0]

    async def close(self) -> None:
        self.writer.close()
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


# ---------------------------------------------------------------- a tiny FastAGI server


@dataclass
class AgiServer:
    """Plays the server side of a dialogue for every session; records what Asterisk sent.

    ``commands`` is the script of every session, or with ``per_session`` one script per session."""

    commands: list[str]
    per_session: list[list[str]] | None = None
    sessions: list[dict] = field(default_factory=list)
    server: asyncio.base_events.Server | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.sockets[0].getsockname()[1]

    async def start(self) -> AgiServer:
        self.server = await asyncio.start_server(self._session, "127.0.0.1", 0)
        return self

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        record: dict = {"headers": [], "replies": []}
        self.sessions.append(record)
        try:
            while (line := (await reader.readline()).decode()) not in ("\n", ""):
                record["headers"].append(line.rstrip("\n"))
            n = len(self.sessions) - 1
            script = self.per_session[n] if self.per_session and n < len(self.per_session) else self.commands
            for command in script:
                writer.write((command + "\n").encode("utf-8", "surrogateescape"))
                await writer.drain()
                lines = []
                while True:
                    line = (await asyncio.wait_for(reader.readline(), 10)).decode().rstrip("\n")
                    lines.append(line)
                    if re.match(r"^\d{3} ", line) or not line:
                        break
                record["replies"].append(lines)
        finally:
            writer.close()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


# ---------------------------------------------------------------- fixtures


@pytest.fixture
async def make_sim(tmp_path):
    sims: list[PbxSimulator] = []

    async def make(agi_port: int, queues: dict | None = None, speed: float = SPEED, survey: bool = False,
                   **kw) -> PbxSimulator:
        """A simulator; by default running the captures' dialplan (Queue() without option c, no
        survey), as these tests compare with the captures; ``survey=True``: the generated one's."""
        sim = PbxSimulator(username="hotline", secret="s3cret", agi_host="127.0.0.1", agi_port=agi_port,
                           recordings_dir=tmp_path / "recordings", queues=queues or QUEUES,
                           fallback_queue="hotline-general", speed=speed, survey=survey, **kw)
        await sim.start()
        sims.append(sim)
        return sim

    yield make
    for sim in sims:
        await sim.stop()


@pytest.fixture
async def make_agi():
    servers: list[AgiServer] = []

    async def make(commands: list[str]) -> AgiServer:
        server = await AgiServer(commands).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        await server.stop()


@pytest.fixture
async def make_client():
    clients: list[AmiClient] = []

    async def make(port: int, login: bool = True) -> AmiClient:
        client = await AmiClient.connect(port)
        clients.append(client)
        if login:
            assert (await client.login())["Message"] == "Authentication accepted"
        return client

    yield make
    for client in clients:
        await client.close()


async def run_call(sim: PbxSimulator, client: AmiClient, caller: ScriptedCaller) -> tuple[SimCallResult, list[Frame]]:
    linkedid = await sim.place_call(caller)
    await sim.wait_idle(timeout=40)
    await client.wait_for(lambda f: f.event == "Hangup" and f.get("Uniqueid") == _two(linkedid))
    return sim.results[linkedid], call_events(client.frames, linkedid)


def _two(linkedid: str) -> str:
    epoch, n = linkedid.split(".")
    return f"{epoch}.{int(n) + 1}"


def assert_same_fields(ours: list[Frame], theirs: list[Frame]) -> None:
    """Each of our events has the header names, in the order, of a capture event of that name."""
    reference: dict[str, list[list[str]]] = {}
    for f in theirs:
        reference.setdefault(f.event, []).append([k for k, _ in f.headers])
    for f in ours:
        if f.event in reference:
            assert [k for k, _ in f.headers] in reference[f.event], (f.event, [k for k, _ in f.headers])


# ---------------------------------------------------------------- the calls


async def test_answered_call_matches_capture(make_sim, make_agi, make_client):
    dialogue = agi_dialogue("answered.agi")
    agi = await make_agi([cmd for cmd, _ in dialogue.steps])
    sim = await make_sim(agi.port)
    client = await make_client(sim.ami_port)
    add = await client.action("QueueAdd", {"Queue": "hotline-general", "Interface": "Local/1001@agents/n",
                                           "MemberName": "Seat 1001", "StateInterface": "Custom:seat1001",
                                           "Penalty": 0, "Paused": "false"})
    assert add[0]["Message"] == "Added interface to queue"
    sim.set_seat_behaviour("Local/1001@agents/n", SeatBehaviour(answers=True, answer_after=0.0, talk=6.0))
    wav_at_hangup: dict[str, int] = {}

    def on_frame(frame: Frame) -> None:  # the WAV must be complete when the last Hangup arrives
        if frame.event == "Hangup" and frame["Channel"].endswith(";2") and "hotline-inbound" in frame["Channel"]:
            with wave.open(str(sim.config.recordings_dir / f"{frame['Uniqueid']}.wav")) as w:
                wav_at_hangup[frame["Uniqueid"]] = w.getnframes()
    client.on_frame = on_frame

    result, ours = await run_call(sim, client, ScriptedCaller(
        number="13800138000", name="Zhang San", dtmf="1", dtmf_delay=1.0, patience=None))

    theirs = capture_call("answered.ami", "13800138000")
    assert names(ours) == names(theirs)
    assert variables(ours) == variables(theirs)
    assert_same_fields(ours, theirs)
    assert_reporting(client.frames, result.linkedid, "answered.ami", "13800138000")
    # the AGI dialogue, line for line
    session = agi.sessions[0]
    assert session["replies"] == [reply for _, reply in dialogue.steps]
    assert [h.split(":")[0] for h in session["headers"]] == [h.split(":")[0] for h in dialogue.headers]
    headers = dict(h.split(": ", 1) if ": " in h else (h[:-1], "") for h in session["headers"])
    c2 = next(f for f in ours if f.event == "Newchannel" and f["Channel"].endswith(";2"))
    assert headers["agi_channel"] == c2["Channel"] and headers["agi_uniqueid"] == c2["Uniqueid"]
    assert headers["agi_request"] == f"agi://127.0.0.1:{agi.port}/ivr"
    assert headers["agi_network_script"] == "ivr" and headers["agi_calleridname"] == "Zhang San"
    # ids and the order of the end
    c1 = next(f for f in ours if f.event == "Newchannel")
    assert c1["Channel"].endswith(";1") and c1["Uniqueid"] == result.linkedid
    assert all(f.get("Linkedid", result.linkedid) == result.linkedid for f in ours)
    assert ours[-1].event == "Hangup" and ours[-1]["Uniqueid"] == c2["Uniqueid"]
    assert ours[-1]["Cause"] == "16" and ours[-1]["Cause-txt"] == "Normal Clearing"
    join = next(f for f in ours if f.event == "QueueCallerJoin")
    assert (join["Queue"], join["Position"], join["Count"]) == ("hotline-general", "1", "1")
    connect = next(f for f in ours if f.event == "AgentConnect")
    assert (connect["MemberName"], connect["HoldTime"], connect["RingTime"]) == ("Seat 1001", "0", "0")
    complete = next(f for f in ours if f.event == "AgentComplete")
    assert (complete["TalkTime"], complete["Reason"]) == ("6", "agent")
    # VarSet shapes the tracker reads
    varsets = {f["Variable"]: f["Value"] for f in ours if f.event == "VarSet" and f["Uniqueid"] == c2["Uniqueid"]}
    assert varsets["HOTLINE_QUEUE"] == "hotline-general" and varsets["AGISTATUS"] == "SUCCESS"
    assert varsets["MIXMONITOR_FILENAME"] == str(result.recording_path)
    # the result and the recording: 8 kHz 16-bit mono, MixMonitorStart to hang-up, complete at Hangup
    assert (result.outcome, result.seat_name, result.queue) == ("answered", "Seat 1001", "hotline-general")
    # (bounds, not a tolerance: the file is written between the ;2 hang-up request and its Hangup)
    start = float(next(f for f in ours if f.event == "MixMonitorStart")["Timestamp"])
    ending = float([f for f in ours if f.event == "SoftHangupRequest" and f["Uniqueid"] == c2["Uniqueid"]][-1][
        "Timestamp"])
    with wave.open(str(result.recording_path)) as w:
        assert (w.getframerate(), w.getsampwidth(), w.getnchannels()) == (8000, 2, 1)
        length = w.getnframes() / 8000
        assert 6.0 <= ending - start - 0.01 <= length <= float(ours[-1]["Timestamp"]) - start + 0.01
        assert wav_at_hangup[c2["Uniqueid"]] == w.getnframes()


async def test_abandon_matches_capture(make_sim, make_agi, make_client):
    dialogue = agi_dialogue("abandon.agi")
    agi = await make_agi([cmd for cmd, _ in dialogue.steps])
    sim = await make_sim(agi.port)
    client = await make_client(sim.ami_port)
    await client.action("QueueAdd", {"Queue": "hotline-general", "Interface": "Local/1002@agents/n",
                                     "MemberName": "Seat 1002", "Paused": "true", "Reason": "break"})
    theirs_all = capture_frames("abandon.ami")
    added = await client.wait_for(lambda f: f.event == "QueueMemberAdded")
    assert_same_fields([added], theirs_all)
    assert (added["Paused"], added["PausedReason"], added["Status"]) == ("1", "break", "1")

    linkedid = await sim.place_call(ScriptedCaller(number="13900139000", name="Li Si", dtmf="1", dtmf_delay=0.5,
                                                   patience=12.0))
    await client.wait_for(lambda f: f.event == "QueueCallerJoin" and f["Linkedid"] == linkedid)
    # QueueStatus and QueueSummary while the caller waits: the capture's items and fields
    status = await client.action("QueueStatus", {"Queue": "hotline-general"})
    summary = await client.action("QueueSummary", {"Queue": "hotline-general"})
    cap_status = [f for f in theirs_all if f.action_id == "cap-4"]
    cap_summary = [f for f in theirs_all if f.action_id == "cap-5"]
    assert [[k for k, _ in f.headers] for f in status] == [[k for k, _ in f.headers] for f in cap_status]
    assert [[k for k, _ in f.headers] for f in summary] == [[k for k, _ in f.headers] for f in cap_summary]
    entry = next(f for f in status if f.event == "QueueEntry")
    assert (entry["Position"], entry["CallerIDName"], entry["Priority"]) == ("1", "Li Si", "0")

    await sim.wait_idle(timeout=40)
    await client.wait_for(lambda f: f.event == "Hangup" and f.get("Uniqueid") == _two(linkedid))
    ours = call_events(client.frames, linkedid)
    theirs = capture_call("abandon.ami", "13900139000")
    assert names(ours) == names(theirs)
    assert variables(ours) == variables(theirs)
    assert_same_fields(ours, theirs)
    assert_reporting(client.frames, linkedid, "abandon.ami", "13900139000")
    abandon = next(f for f in ours if f.event == "QueueCallerAbandon")
    join = next(f for f in ours if f.event == "QueueCallerJoin")
    held = float(abandon["Timestamp"]) - float(join["Timestamp"])
    # 12 s of patience minus the IVR's time (10 s in the capture; the IVR's round trips cost sim time)
    assert 5 <= int(abandon["HoldTime"]) <= 11 and abs(int(abandon["HoldTime"]) - held) <= 1
    assert (abandon["Position"], abandon["OriginalPosition"]) == ("1", "1")
    assert not any(f.event == "VarSet" and f["Variable"] == "QUEUESTATUS" for f in ours)
    assert ours[-1].event == "Hangup" and ours[-1]["Channel"].endswith(";2")
    result = sim.results[linkedid]
    assert (result.outcome, result.seat_name, result.queue) == ("abandoned", None, "hotline-general")
    assert agi.sessions[0]["replies"] == [reply for _, reply in dialogue.steps]
    # unpause, remove: the member events of the capture
    assert (await client.action("QueuePause", {"Interface": "Local/1002@agents/n", "Paused": "false"}))[0][
        "Message"] == "Interface unpaused successfully"
    assert (await client.action("QueueRemove", {"Queue": "hotline-general", "Interface": "Local/1002@agents/n"}))[0][
        "Message"] == "Removed interface from queue"
    pause = await client.wait_for(lambda f: f.event == "QueueMemberPause")
    removed = await client.wait_for(lambda f: f.event == "QueueMemberRemoved")
    assert_same_fields([pause, removed], theirs_all)
    assert (pause["Paused"], pause["PausedReason"]) == ("0", "")


async def test_ivr_hangup_dialogue_matches_capture(make_sim, make_agi, make_client):
    dialogue = agi_dialogue("ivr_hangup.agi")
    agi = await make_agi([cmd for cmd, _ in dialogue.steps])
    sim = await make_sim(agi.port)
    client = await make_client(sim.ami_port)
    result, ours = await run_call(sim, client, ScriptedCaller(number="13600136000", dtmf=None, patience=5.0))
    session = agi.sessions[0]
    assert session["replies"] == [reply for _, reply in dialogue.steps]
    assert session["replies"][3] == ["HANGUP", "511 Command Not Permitted on a dead channel or intercept routine"]
    assert session["replies"][-1] == ["200 result=1 (13600136000)"]
    assert "agi_calleridname: unknown" in session["headers"]
    theirs = capture_call("ivr_hangup.ami", "13600136000")
    assert names(ours) == names(theirs)
    assert variables(ours) == variables(theirs)
    assert_same_fields(ours, theirs)
    # (a second call ran during this capture: its Local device states are mixed in, not compared)
    assert_reporting(client.frames, result.linkedid, "ivr_hangup.ami", "13600136000", device_states=False)
    agistatus = next(f for f in ours if f.event == "VarSet" and f["Variable"] == "AGISTATUS")
    assert agistatus["Value"] == "HANGUP"
    assert (result.outcome, result.queue, result.recording_path) == ("ivr_hangup", None, None)


async def test_agi_errors_dialogue(make_sim, make_agi, make_client):
    dialogue = agi_dialogue("agi_errors.agi")
    agi = await make_agi([cmd for cmd, _ in dialogue.steps])
    sim = await make_sim(agi.port)
    client = await make_client(sim.ami_port)
    await client.action("QueueAdd", {"Queue": "hotline-general", "Interface": "Local/1003@agents/n",
                                     "MemberName": "Seat 1003"})
    result, ours = await run_call(sim, client, ScriptedCaller(number="13500135000", name="Zhao Liu"))
    assert agi.sessions[0]["replies"] == [reply for _, reply in dialogue.steps]
    ends = {f["Command"]: (f["ResultCode"], f["Result"]) for f in ours if f.event == "AGIExecEnd"}
    assert ends["FOO BAR"] == ("510", "Invalid or unknown command") and ends["GET DATA"] == ("520", "Usage")
    # a Local state interface: QueueMemberStatus INUSE then NOT_INUSE with the call counted, as in the capture
    theirs = capture_call("agi_errors.ami", "13500135000")
    statuses = [f for f in client.frames if f.event == "QueueMemberStatus"]
    assert [f["Status"] for f in statuses] == ["2", "1"] and statuses[-1]["CallsTaken"] == "1"
    assert_same_fields(statuses, capture_frames("agi_errors.ami"))
    # Asterisk's threads race at the end of a bridged call: this capture ends in another order than
    # answered.ami (whose order the answered test checks); the same events, and ;2 hangs up last.
    assert sorted(names(ours)) == sorted(names(theirs))
    assert ours[-1].event == "Hangup" and ours[-1]["Channel"].endswith(";2")
    assert_same_fields(ours, theirs)
    cels = assert_reporting(client.frames, result.linkedid, "agi_errors.ami", "13500135000")
    sounds = [json.loads(f["Extra"]).get("sound") for f in cels if f["EventName"] == "STREAM_BEGIN"]
    assert sounds[:6] == ["digits/1", "digits/2", "digits/3", "digits/4", "digits/5", "silence/1"]
    playback = next(f for f in cels if f["EventName"] == "STREAM_BEGIN" and "silence/1" in f["Extra"])
    assert (playback["Application"], playback["AppData"]) == ("Playback", "silence/1")
    # the seat follows its Local device: the queue has nobody available while it talks, and this
    # queue's wrap-up keeps it so after the call (no NOT_INUSE), as in the capture
    avail = [f["State"] for f in client.frames if f.event == "DeviceStateChange" and f["Device"].endswith("_avail")]
    assert avail == [f["State"] for f in capture_frames("agi_errors.ami") if f.event == "DeviceStateChange"
                     and f["Device"].endswith("_avail")] == ["NOT_INUSE", "INUSE"]
    assert result.outcome == "answered"


# ---------------------------------------------------------------- queue rules


async def test_queue_timeout_emits_abandon_leave_and_status(make_sim, make_agi, make_client):
    agi = await make_agi(["ANSWER", "SET VARIABLE HOTLINE_QUEUE_TIMEOUT 3",
                          "SET VARIABLE HOTLINE_QUEUE hotline-leader"])
    sim = await make_sim(agi.port)
    client = await make_client(sim.ami_port)
    result, ours = await run_call(sim, client, ScriptedCaller(number="13700137000", name="Wang Wu"))
    # app_queue's timeout runs record_abandoned too (durations, ABANDONED, QueueCallerAbandon), then
    # stops the music, leaves the queue and sets QUEUESTATUS; hotline-leader has no setqueuevar, so no
    # QUEUE* variables (as the leader call in ivr_hangup.ami shows)
    join = next(i for i, f in enumerate(ours) if f.event == "QueueCallerJoin")
    tail = [f.event if f.event != "VarSet" else f["Variable"] for f in ours[join:]
            if f.event not in ("Newexten", "CEL", "Cdr", "DeviceStateChange")]
    assert tail[:14] == ["QueueCallerJoin", "MusicOnHoldStart", "QUEUEWAIT", "QUEUEWAIT_MS", "DIALEDTIME",
                         "DIALEDTIME_MS", "ANSWEREDTIME", "ANSWEREDTIME_MS", "ABANDONED", "QueueCallerAbandon",
                         "MusicOnHoldStop", "QueueCallerLeave", "QUEUEPOSITION", "QUEUESTATUS"]
    assert not [f for f in ours if f.event == "VarSet" and f["Variable"].startswith(("QUEUENAME", "QUEUESRV"))]
    assert next(f for f in ours if f.event == "VarSet" and f["Variable"] == "QUEUESTATUS")["Value"] == "TIMEOUT"
    assert next(f for f in ours if f.event == "Newexten" and f["Application"] == "NoOp" and
                f["Priority"] == "8")["AppData"] == "after queue TIMEOUT"
    abandon = next(f for f in ours if f.event == "QueueCallerAbandon")
    assert 2 <= int(abandon["HoldTime"]) <= 4
    hangups = [f["Channel"] for f in ours if f.event == "Hangup"]
    assert hangups[-1].endswith(";2") and hangups[-2].endswith(";1") and ours[-1].event == "Hangup"
    assert (result.outcome, result.queue) == ("queue_timeout", "hotline-leader")
    assert result.recording_path is not None and result.recording_path.exists()


async def test_leader_queue_abandon_matches_capture(make_sim, make_agi, make_client):
    """ivr_hangup.ami holds the end of a caller who gave up in hotline-leader (no setqueuevar)."""
    agi = await make_agi(["SET VARIABLE HOTLINE_QUEUE hotline-leader"])
    sim = await make_sim(agi.port)
    client = await make_client(sim.ami_port)
    result, ours = await run_call(sim, client, ScriptedCaller(number="13700137000", patience=6.0))
    frames = capture_frames("ivr_hangup.ami")
    linkedid = next(f["Linkedid"] for f in frames if f.get("CallerIDNum") == "13700137000" and "Linkedid" in f)
    theirs = call_events(frames, linkedid)  # the capture starts while the caller waits
    ours = ours[next(i for i, f in enumerate(ours) if f.event == "MusicOnHoldStart") + 1:]

    def shape(frames: list[Frame]) -> list[str]:  # the ;1 Hangup races with app_queue in Asterisk
        return [f.event for f in frames if f.event not in IGNORED and not (
            f.event == "Hangup" and f["Channel"].endswith(";1"))]
    assert shape(ours) == shape(theirs)
    assert variables(ours) == variables(theirs)
    assert_same_fields(ours, theirs)
    assert (result.outcome, result.queue) == ("abandoned", "hotline-leader")


async def test_penalty_and_no_answer(make_sim, make_agi, make_client):
    """A higher penalty is rung only when the lower ones are unavailable, not when they do not answer."""
    agi = await make_agi(["SET VARIABLE HOTLINE_QUEUE_TIMEOUT 7", "SET VARIABLE HOTLINE_QUEUE q"])
    sim = await make_sim(agi.port, {"q": {"strategy": "rrmemory", "timeout": 2, "retry": 1}}, speed=40)
    client = await make_client(sim.ami_port)
    sim.set_seat_behaviour("PJSIP/8001", SeatBehaviour(answers=False))
    sim.set_seat_behaviour("PJSIP/8002", SeatBehaviour(answers=True, answer_after=1.0, talk=2.0))
    await client.action("QueueAdd", {"Queue": "q", "Interface": "PJSIP/8001", "MemberName": "Seat 8001"})
    await client.action("QueueAdd", {"Queue": "q", "Interface": "PJSIP/8002", "MemberName": "Seat 8002",
                                     "Penalty": 1})
    result, ours = await run_call(sim, client, ScriptedCaller(number="1"))
    called = [f["MemberName"] for f in ours if f.event == "AgentCalled"]
    assert called and set(called) == {"Seat 8001"}
    rna = [f for f in ours if f.event == "AgentRingNoAnswer"]
    # (the last ring may be cut short by the max wait)
    assert len(rna) == len(called) >= 2 and all(0 < int(f["RingTime"]) <= 2000 for f in rna)
    assert int(rna[0]["RingTime"]) == 2000  # the queue's ring timeout, in milliseconds
    assert result.outcome == "queue_timeout"
    # pause the first seat: the penalty-1 seat is rung and answers
    await client.action("QueuePause", {"Interface": "PJSIP/8001", "Paused": "true", "Reason": "break"})
    result, ours = await run_call(sim, client, ScriptedCaller(number="2"))
    assert [f["MemberName"] for f in ours if f.event == "AgentCalled"] == ["Seat 8002"]
    assert result.outcome == "answered" and result.seat_name == "Seat 8002"
    statuses = [f["Status"] for f in client.frames if f.event == "QueueMemberStatus"
                and f["Interface"] == "PJSIP/8002"]
    assert statuses == ["6", "2", "1"]  # ringing, in use, free again


async def test_rrmemory_takes_turns(make_sim, make_agi, make_client):
    agi = await make_agi(["ANSWER"])
    sim = await make_sim(agi.port, {"hotline-general": {"strategy": "rrmemory", "timeout": 8, "retry": 1}}, speed=40)
    client = await make_client(sim.ami_port)
    for seat in ("Local/1001@agents/n", "Local/1002@agents/n"):
        await client.action("QueueAdd", {"Queue": "hotline-general", "Interface": seat, "MemberName": seat[6:10]})
        sim.set_seat_behaviour(seat, SeatBehaviour(talk=1.0))
    seats = []
    for number in ("1", "2", "3"):
        result, _ = await run_call(sim, client, ScriptedCaller(number=number))
        seats.append(result.seat_name)
    assert seats == ["1001", "1002", "1001"]


async def test_priority_caller_goes_first_and_ringall_rings_everyone(make_sim, make_agi, make_client):
    agi = await make_agi([])
    agi.per_session = [["SET VARIABLE HOTLINE_QUEUE q"],
                       ["SET VARIABLE HOTLINE_PRIORITY 5", "SET VARIABLE HOTLINE_QUEUE q"]]
    sim = await make_sim(agi.port, {"q": {"strategy": "ringall", "timeout": 5, "retry": 1, "autofill": "no"}},
                         speed=40)
    client = await make_client(sim.ami_port)
    first = await sim.place_call(ScriptedCaller(number="100"))
    await client.wait_for(lambda f: f.event == "QueueCallerJoin" and f["Linkedid"] == first)
    urgent = await sim.place_call(ScriptedCaller(number="200"))
    join = await client.wait_for(lambda f: f.event == "QueueCallerJoin" and f["Linkedid"] == urgent)
    assert (join["Position"], join["Count"]) == ("1", "2")
    entries = [f for f in await client.action("QueueStatus", {"Queue": "q"}) if f.event == "QueueEntry"]
    assert [(f["CallerIDNum"], f["Priority"]) for f in entries] == [("200", "5"), ("100", "0")]
    for seat in ("PJSIP/8001", "PJSIP/8002"):
        sim.set_seat_behaviour(seat, SeatBehaviour(answer_after=0.5 if seat.endswith("1") else 1.5, talk=1.0))
        await client.action("QueueAdd", {"Queue": "q", "Interface": seat, "MemberName": seat[6:]})
    await sim.wait_idle(timeout=30)
    connects = [f for f in client.frames if f.event == "AgentConnect"]
    assert [f["Linkedid"] for f in connects] == [urgent, first]
    assert connects[0]["MemberName"] == "8001"
    urgent_events = call_events(client.frames, urgent)
    assert sorted(f["MemberName"] for f in urgent_events if f.event == "AgentCalled") == ["8001", "8002"]
    assert [f["DialStatus"] for f in urgent_events if f.event == "DialEnd" and "DestChannel" in f
            and f["DestChannel"].startswith("PJSIP/8002")] == ["CANCEL"]
    assert sim.results[urgent].outcome == sim.results[first].outcome == "answered"


async def test_unreachable_fastagi_falls_back(make_sim, make_client, unused_tcp_port):
    sim = await make_sim(unused_tcp_port)
    client = await make_client(sim.ami_port)
    result, ours = await run_call(sim, client, ScriptedCaller(number="13800000000", name="No IVR"))
    status = next(f for f in ours if f.event == "VarSet" and f["Variable"] == "AGISTATUS")
    assert status["Value"] == "FAILURE"
    assert result.queue == "hotline-general" and result.outcome == "queue_timeout"  # nobody in the queue, 60 s


async def test_fastagi_garbage_ends_the_session_not_the_call(make_sim, make_agi, make_client):
    agi = await make_agi(["\udcff\udcfe not a command", "NOOP " + "x" * 20_000, "NOOP"])
    sim = await make_sim(agi.port, speed=100)
    client = await make_client(sim.ami_port)
    result, ours = await run_call(sim, client, ScriptedCaller(number="13800000001"))
    replies = agi.sessions[0]["replies"]
    assert replies[0] == ["510 Invalid or unknown command"] and replies[1] == [""]  # closed on the long line
    assert next(f for f in ours if f.event == "VarSet" and f["Variable"] == "AGISTATUS")["Value"] == "SUCCESS"
    assert result.queue == "hotline-general" and ours[-1]["Channel"].endswith(";2")


# ---------------------------------------------------------------- AMI actions


async def test_bad_login_is_the_capture_byte_for_byte(make_sim):
    sim = await make_sim(1)
    reader, writer = await asyncio.open_connection("127.0.0.1", sim.ami_port)
    writer.write(encode_action("Login", {"Username": "hotline", "Secret": "wrong"}, "cap-1"))
    received = await asyncio.wait_for(reader.read(), 10)  # until the server closes
    writer.close()
    assert received == capture("bad_login.ami")


async def test_actions_match_capture(make_sim, make_client):
    sim = await make_sim(1)
    client = await make_client(sim.ami_port, login=False)
    theirs = capture_frames("actions.ami")

    def cap(action_id: str) -> list[Frame]:
        return [f for f in theirs if f.action_id == action_id]

    def shape(frames: list[Frame]) -> list[list[str]]:
        return [[k for k, _ in f.headers] for f in frames]

    assert (await client.login())["Message"] == "Authentication accepted"
    booted = await client.wait_for(lambda f: f.event == "FullyBooted")
    assert shape([booted]) == shape([f for f in theirs if f.event == "FullyBooted"])
    seat = {"Queue": "hotline-general", "Interface": "Local/1004@agents/n", "MemberName": "Seat 1004",
            "StateInterface": "Local/1004@agents/n", "Penalty": 0, "Paused": "false"}
    steps = [
        ("QueueAdd", seat, True),
        ("QueueAdd", seat, True),
        ("QueueAdd", {**seat, "Queue": "no-such-queue"}, True),
        ("QueuePause", {"Interface": "Local/1004@agents/n", "Paused": "true", "Reason": "lunch"}, True),
        ("QueueStatus", {}, False),
        ("QueueSummary", {}, False),
        ("CoreShowChannels", {}, True),
        ("CoreStatus", {}, False),
        ("CoreSettings", {}, True),
        ("Ping", {}, False),
        ("NoSuchAction", {}, True),
        ("Getvar", {"Variable": "GLOBALVAR"}, True),
        ("Command", {"Command": "queue show hotline-general"}, False),
        ("QueueRemove", {"Queue": "hotline-general", "Interface": "Local/1004@agents/n"}, True),
        ("QueueRemove", {"Queue": "hotline-general", "Interface": "Local/1004@agents/n"}, True),
    ]
    for n, (action, fields, exact) in enumerate(steps, start=2):
        ours = await client.action(action, fields)
        expected = cap(f"cap-{n}")
        assert shape(ours) == shape(expected), action
        if exact:
            assert [f.headers for f in ours] == [f.headers for f in expected], action
    member_events = [await client.wait_for(lambda f, e=e: f.event == e) for e in
                     ("QueueMemberAdded", "QueueMemberPause", "QueueMemberRemoved")]
    assert_same_fields(member_events, theirs)
    assert (member_events[1]["Paused"], member_events[1]["PausedReason"]) == ("1", "lunch")
    bad = await client.wait_for(lambda f: f.event == "RequestBadFormat")
    assert shape([bad]) == shape([f for f in theirs if f.event == "RequestBadFormat"])
    goodbye = await client.action("Logoff")
    assert [f.headers for f in goodbye] == [f.headers for f in cap("cap-17")]
    await asyncio.wait_for(client.task, 5)  # the server closes after Goodbye


async def test_core_status_changes_only_on_restart(make_sim, make_client):
    sim = await make_sim(1, speed=2000)
    client = await make_client(sim.ami_port)
    first = (await client.action("CoreStatus"))[0]
    await asyncio.sleep(0.1)  # three sim minutes
    again = (await client.action("CoreStatus"))[0]
    assert (first["CoreStartupDate"], first["CoreStartupTime"]) == (again["CoreStartupDate"], again["CoreStartupTime"])
    port = sim.ami_port
    await sim.stop()
    await asyncio.sleep(0.1)
    await sim.start()
    assert sim.ami_port == port
    client2 = await make_client(port)
    after = (await client2.action("CoreStatus"))[0]
    assert after["CoreStartupTime"] != first["CoreStartupTime"]


async def test_garbage_closes_only_that_connection(make_sim, make_client):
    sim = await make_sim(1)
    good = await make_client(sim.ami_port)
    bad = await make_client(sim.ami_port, login=False)
    bad.writer.write(b"this is not AMI at all\r\n\r\n")
    await asyncio.wait_for(bad.task, 5)
    assert bad.closed
    nul = await make_client(sim.ami_port)
    nul.writer.write(b"Action: Ping\r\nActionID: a\x00b\r\n\r\n")
    await asyncio.wait_for(nul.task, 5)
    assert (await good.action("Ping"))[0]["Ping"] == "Pong"
    denied = await make_client(sim.ami_port, login=False)
    assert (await denied.action("Ping"))[0]["Message"] == "Permission denied"


async def test_originate_matches_capture(make_sim, make_client):
    sim = await make_sim(1, speed=40)
    client = await make_client(sim.ami_port)
    sim.set_seat_behaviour("Local/1006@agents/n", SeatBehaviour(talk=2.0))
    theirs = capture_frames("originate_callback.ami")
    ok = await client.action("Originate", {"Channel": "Local/1006@agents/n", "Context": "caller-bot", "Exten": "s",
                                           "Priority": 1, "CallerID": '"12345 callback" <12345>', "Async": "true",
                                           "Variable": "HOTLINE_CALLBACK=1"})
    failed = await client.action("Originate", {"Channel": "Local/9999@no-such-context", "Context": "caller-bot",
                                               "Exten": "s", "Priority": 1, "Async": "true"})
    assert [f.headers for f in ok + failed] == [f.headers for f in theirs if f.action_id in ("cap-2", "cap-3")
                                                and f.event is None]
    responses = [await client.wait_for(lambda f, a=a: f.event == "OriginateResponse" and f.action_id == a)
                 for a in ("cap-2", "cap-3")]
    cap_responses = [f for f in theirs if f.event == "OriginateResponse"]
    assert_same_fields(responses, cap_responses)
    assert (responses[0]["Response"], responses[0]["Reason"], responses[0]["CallerIDName"]) == (
        "Success", "4", "12345 callback")
    assert [(f["Response"], f["Channel"], f["Reason"], f["Uniqueid"]) for f in responses[1:]] == [
        ("Failure", "Local/9999@no-such-context", "0", "<unknown>")]
    await sim.wait_idle(timeout=20)
    hangups = [f for f in client.frames if f.event == "Hangup"]
    assert len(hangups) == 4
    # synchronous: the response waits for the seat; no OriginateResponse
    sim.set_seat_behaviour("PJSIP/8001", SeatBehaviour(answer_after=1.0, talk=1.0))
    sync = await client.action("Originate", {"Channel": "PJSIP/8001", "Context": "hotline-callback",
                                             "Exten": "13800138000", "Priority": 1, "Timeout": 5000})
    assert sync[0]["Message"] == "Originate successfully queued"
    unknown = await client.action("Originate", {"Channel": "PJSIP/9999", "Application": "Playback",
                                                "Data": "hello-world"})
    assert (unknown[0]["Response"], unknown[0]["Message"]) == ("Error", "Originate failed")
    assert (await client.action("Originate", {"Channel": "PJSIP/8001", "Exten": "1"}))[0]["Message"] == (
        "Originate with 'Exten' requires 'Context' and 'Priority'")
    await sim.wait_idle(timeout=20)
    assert len([f for f in client.frames if f.event == "OriginateResponse"]) == 2
    device = [f for f in client.frames if f.get("Channel", "").startswith("PJSIP/8001-")]
    assert [f.event for f in device if f.event in ("Newchannel", "Newstate", "Hangup")] == [
        "Newchannel", "Newstate", "Newstate", "Hangup"]


async def test_drop_ami_links_keeps_calls_going(make_sim, make_agi, make_client):
    agi = await make_agi(["ANSWER", "SET VARIABLE HOTLINE_QUEUE hotline-general"])
    sim = await make_sim(agi.port)
    client = await make_client(sim.ami_port)
    await client.action("QueueAdd", {"Queue": "hotline-general", "Interface": "Local/1001@agents/n",
                                     "MemberName": "Seat 1001"})
    sim.set_seat_behaviour("Local/1001@agents/n", SeatBehaviour(talk=20.0))
    linkedid = await sim.place_call(ScriptedCaller(number="13800138000"))
    await client.wait_for(lambda f: f.event == "AgentConnect")
    sim.drop_ami_links()
    await asyncio.wait_for(client.task, 5)
    again = await make_client(sim.ami_port)
    channels = await again.action("CoreShowChannels")
    assert {f["Channel"] for f in channels if f.event == "CoreShowChannel"} >= {
        f["Channel"] for f in client.frames if f.event == "Newchannel" and f["Linkedid"] == linkedid}
    assert all(f.headers[1] == ("ActionID", f.action_id) for f in channels if f.event == "CoreShowChannel")
    await sim.wait_idle(timeout=30)
    assert sim.results[linkedid].outcome == "answered"
    await again.wait_for(lambda f: f.event == "Hangup" and f["Uniqueid"] == _two(linkedid))


async def test_channel_actions_on_a_waiting_call(make_sim, make_agi, make_client):
    agi = await make_agi(["SET VARIABLE HOTLINE_QUEUE hotline-leader"])
    sim = await make_sim(agi.port)
    client = await make_client(sim.ami_port)
    quiet = await make_client(sim.ami_port, login=False)
    assert (await quiet.action("Login", {"Username": "hotline", "Secret": "s3cret", "Events": "off"}))[0][
        "Message"] == "Authentication accepted"
    linkedid = await sim.place_call(ScriptedCaller(number="13811112222"))
    join = await client.wait_for(lambda f: f.event == "QueueCallerJoin" and f["Linkedid"] == linkedid)
    two = join["Channel"]
    assert (await client.action("Setvar", {"Channel": two, "Variable": "HOTLINE_NOTE", "Value": "vip"}))[0][
        "Message"] == "Variable Set"
    got = (await client.action("Getvar", {"Channel": two, "Variable": "HOTLINE_NOTE"}))[0]
    assert (got["Variable"], got["Value"]) == ("HOTLINE_NOTE", "vip")
    await client.wait_for(lambda f: f.event == "VarSet" and f["Variable"] == "HOTLINE_NOTE" and f["Channel"] == two)
    assert (await client.action("Getvar", {"Channel": "Local/nope-1;2", "Variable": "X"}))[0][
        "Message"] == "No such channel"
    one = two[:-1] + "1"
    assert (await client.action("Hangup", {"Channel": one}))[0]["Message"] == "Channel Hungup"
    await sim.wait_idle(timeout=20)
    assert sim.results[linkedid].outcome == "abandoned"
    assert (await client.action("Hangup", {"Channel": one}))[0]["Message"] == "No such channel"
    assert (await quiet.action("Ping"))[0]["Ping"] == "Pong"
    assert not [f for f in quiet.frames if f.event]  # Events: off - not even FullyBooted


def test_scripted_caller_values_are_checked():
    with pytest.raises(ValueError):
        ScriptedCaller(number="1380013\r\nAction: Originate").validate()
    with pytest.raises(ValueError):
        ScriptedCaller(number="1", dtmf="1x").validate()
    ScriptedCaller(number="13800138000", name="张三", dtmf="12#").validate()


# ---------------------------------------------------------------- overflow

OVERFLOW_QUEUES = {
    "hotline-leader": {**QUEUES["hotline-leader"], "max_wait": 600, "category": "leader",
                       "overflow": "hotline-general"},
    "hotline-general": {**QUEUES["hotline-general"], "max_wait": 30, "category": "general"},
}


async def test_queue_timeout_overflows_into_the_next_queue(make_sim, make_agi, make_client):
    """As the generated dialplan: Queue() of hotline-leader times out (nobody there), the caller goes
    on to its overflow queue with that queue's max wait and category, and a seat answers there."""
    from telephony.events import to_event
    from telephony.tracker import CallTracker

    agi = await make_agi(["SET VARIABLE HOTLINE_QUEUE_TIMEOUT 3", "SET VARIABLE HOTLINE_QUEUE hotline-leader"])
    sim = await make_sim(agi.port, OVERFLOW_QUEUES)
    client = await make_client(sim.ami_port)
    await client.action("QueueAdd", {"Queue": "hotline-general", "Interface": "PJSIP/8001", "MemberName": "Seat 8001"})
    sim.set_seat_behaviour("PJSIP/8001", SeatBehaviour(answer_after=1.0, talk=2.0))
    result, ours = await run_call(sim, client, ScriptedCaller(number="13700137000", name="Wang Wu"))
    assert (result.outcome, result.queue, result.seat_name) == ("answered", "hotline-general", "Seat 8001")

    abandon = next(i for i, f in enumerate(ours) if f.event == "QueueCallerAbandon")
    tail = [f.event if f.event != "VarSet" else f"{f['Variable']}={f['Value']}" for f in ours[abandon:]
            if f.event not in ("Newexten", "CEL", "Cdr", "DeviceStateChange")
            and not (f.event == "VarSet" and f["Variable"].endswith(("TIME", "TIME_MS", "WAIT", "WAIT_MS")))]
    join = tail.index("QueueCallerJoin")
    assert tail[:join + 1] == [
        "QueueCallerAbandon", "MusicOnHoldStop", "QueueCallerLeave", "QUEUEPOSITION=1", "QUEUESTATUS=TIMEOUT",
        "HOTLINE_QUEUE=hotline-general", "HOTLINE_QUEUE_TIMEOUT=30", "HOTLINE_CATEGORY=general",
        "HOTLINE_OVERFLOWS=1", "QueueCallerJoin"]
    assert [f["Queue"] for f in ours if f.event == "QueueCallerJoin"] == ["hotline-leader", "hotline-general"]
    assert next(f for f in ours if f.event == "QueueCallerAbandon")["Queue"] == "hotline-leader"
    assert next(f for f in ours if f.event == "AgentConnect")["Queue"] == "hotline-general"
    queues = [f["AppData"] for f in ours if f.event == "Newexten" and f["Application"] == "Queue"]
    assert queues == ["hotline-leader,t,,,3", "hotline-general,t,,,30"]  # the IVR's 3 s, then general's own
    assert [f["Value"] for f in ours if f.event == "VarSet" and f["Variable"] == "HOTLINE_OVERFLOWS"] == ["0", "1"]
    assert ours[-1].event == "Hangup" and ours[-1]["Channel"].endswith(";2")
    assert sum(f.event == "MixMonitorStart" for f in ours) == 1  # one recording over both queues

    # the tracker makes one answered call of it, in the overflow queue, holding over both waits
    tracker = CallTracker("n")
    finished = [c for c in (tracker.feed(to_event(f)) for f in ours) if c is not None]
    assert len(finished) == 1
    call = finished[0]
    leader_hold = int(next(f for f in ours if f.event == "QueueCallerAbandon")["HoldTime"])
    general_hold = int(next(f for f in ours if f.event == "AgentConnect")["HoldTime"])
    assert (call.outcome, call.queue, call.seat, call.category) == ("answered", "hotline-general", "Seat 8001",
                                                                    "general")
    assert leader_hold >= 3 and call.hold_seconds == leader_hold + general_hold
    kinds = [e.kind for e in call.timeline]
    assert "abandoned" not in kinds
    assert kinds.index("queue_timeout") < kinds.index("queue_overflow") < kinds.index("answered")
    hop = next(e for e in call.timeline if e.kind == "queue_overflow")
    assert hop.detail == {"from_queue": "hotline-leader", "to_queue": "hotline-general", "waited": leader_hold}


async def test_overflow_ends_at_the_end_of_the_chain(make_sim, make_agi, make_client):
    """Nobody anywhere: the caller times out of the first queue, then of the overflow queue, which
    has no overflow: one hop, then the hang-up as after any timeout."""
    queues = {**OVERFLOW_QUEUES, "hotline-general": {**OVERFLOW_QUEUES["hotline-general"], "max_wait": 2}}
    agi = await make_agi(["SET VARIABLE HOTLINE_QUEUE_TIMEOUT 2", "SET VARIABLE HOTLINE_QUEUE hotline-leader"])
    sim = await make_sim(agi.port, queues)
    client = await make_client(sim.ami_port)
    result, ours = await run_call(sim, client, ScriptedCaller(number="13700137000"))
    assert (result.outcome, result.queue) == ("queue_timeout", "hotline-general")
    assert [f["Queue"] for f in ours if f.event == "QueueCallerJoin"] == ["hotline-leader", "hotline-general"]
    assert [f["Value"] for f in ours if f.event == "VarSet" and f["Variable"] == "QUEUESTATUS"] == ["TIMEOUT"] * 2


def test_overflow_to_an_unknown_queue_is_refused():
    with pytest.raises(ValueError, match="overflow names unknown queue 'nope'"):
        PbxSimulator(username="hotline", secret="s3cret", recordings_dir="/tmp",
                     queues={"a": {"strategy": "ringall", "overflow": "nope"}})
    with pytest.raises(ValueError, match="max_wait"):
        PbxSimulator(username="hotline", secret="s3cret", recordings_dir="/tmp",
                     queues={"a": {"strategy": "ringall", "max_wait": "60"}})


@pytest.mark.ivr
async def test_generated_dialplan_paths_keep_the_captures_event_shapes(make_sim, make_agi, make_client):
    """The paths of the generated dialplan the captures do not cover (the Dial() of 110, the survey
    after the seat hung up) emit only event shapes the captures show: for every event name a
    capture has, the same header names in the same order; the survey's FastAGI session sends the
    headers of answered.agi, with its own script."""
    agi = await make_agi([])
    agi.per_session = [
        ["SET VARIABLE HOTLINE_TRANSFER 110", "SET VARIABLE HOTLINE_QUEUE hotline-general"],  # 1st call's IVR
        ["SET VARIABLE HOTLINE_QUEUE hotline-general"],                                        # 2nd call's IVR
        ["GET DATA hotline/survey 5000 1", "SET VARIABLE HOTLINE_SURVEY satisfied"],           # its survey
    ]
    sim = await make_sim(agi.port, survey=True)
    client = await make_client(sim.ami_port)
    await client.action("QueueAdd", {"Queue": "hotline-general", "Interface": "Local/1001@agents/n",
                                     "MemberName": "Seat 1001", "StateInterface": "Custom:seat1001"})
    sim.set_seat_behaviour("110", SeatBehaviour(answer_after=1.0, talk=2.0))
    police, ours_110 = await run_call(sim, client, ScriptedCaller(number="13800138000"))
    surveyed, ours_survey = await run_call(sim, client, ScriptedCaller(number="13800138001", survey="1"))
    assert (police.outcome, police.emergency) == ("emergency_transfer", "ANSWER")
    assert (surveyed.outcome, surveyed.survey) == ("answered", "satisfied")
    assert {"DialBegin", "DialEnd", "BridgeEnter", "BridgeLeave"} <= {f.event for f in ours_110}
    theirs = [f for name in ("answered.ami", "abandon.ami", "originate_callback.ami") for f in capture_frames(name)
              if f.event]
    assert_same_fields(ours_110, theirs)
    assert_same_fields(ours_survey, theirs)
    # the survey session: answered.agi's header names, its own script and place in the dialplan
    ivr, survey = agi.sessions[1], agi.sessions[2]
    assert [h.split(":")[0] for h in survey["headers"]] == [h.split(":")[0] for h in ivr["headers"]]
    headers = dict(h.split(": ", 1) for h in survey["headers"] if ": " in h)
    assert (headers["agi_network_script"], headers["agi_context"], headers["agi_extension"]) == (
        "survey", "hotline-survey", "s")
    assert survey["replies"] == [["200 result=1"], ["200 result=1"]]
