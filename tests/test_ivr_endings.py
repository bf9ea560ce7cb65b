"""The IVR's other endings (issue 5): a transfer to 110, a callback request, and the satisfaction
survey after the seat hung up.

The tracker on hand-made events (outcomes, the 110 dial, the survey, kept over export/restore),
SurveyIvr over scripted Asterisk dialogues, the simulator running each path of the generated
dialplan (its events fed to a real CallTracker), and the whole path through the service with real
Postgres and Redis. (The dialplan itself: tests/test_asterisk_config.py.)
"""

from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError

from config.settings import QueueConfig, SeatConfig, Settings
from hotline.service import HotlineService
from ivr.survey import SurveyIvr, SurveyPrompts
from telephony.agi_server import AgiSession, FastAgiServer
from telephony.ami_codec import Frame
from telephony.events import AmiEvent, to_event
from telephony.model import FinishedCall
from telephony.simulator import PbxSimulator, ScriptedCaller, SeatBehaviour, queue_definitions
from telephony.tracker import CallTracker
from tests.agi_peer import Dialogue, load_dialogues, play_asterisk
from tests.conftest import REDIS_URL
from tests.flows import install_flow
from tests.support import free_port, until
from tests.test_simulator import QUEUES, AmiClient, make_client  # noqa: F401

pytestmark = [pytest.mark.ivr, pytest.mark.timeout(60)]

# ---------------------------------------------------------------- the tracker, on events

L = "1795500000.20"
CALLER = {"Channel": "PJSIP/trunk-00000001", "Uniqueid": L, "Linkedid": L, "Context": "hotline-inbound",
          "CallerIDNum": "13800138000", "CallerIDName": "<unknown>"}
POLICE = {"Channel": "PJSIP/hotline-trunk-00000002", "Uniqueid": "1795500010.21", "Linkedid": L,
          "Context": "default", "CallerIDNum": "13800138000", "CallerIDName": "<unknown>"}
SEAT = {"Channel": "PJSIP/1001-00000003", "Uniqueid": "1795500040.22", "Linkedid": L, "Context": "from-internal",
        "CallerIDNum": "1001", "CallerIDName": "<unknown>"}


def ami(name: str, at: float, ch: dict | None = None, **fields) -> AmiEvent:
    headers = [("Event", name), ("Timestamp", f"{1795500000 + at:.6f}")]
    headers += [(k, str(v)) for k, v in {**(ch or {}), **fields}.items()]
    return to_event(Frame(tuple(headers)))


def dest(ch: dict) -> dict:
    return {f"Dest{k}": v for k, v in ch.items()}


def ivr(at: float, **variables: str) -> list[AmiEvent]:
    """The call comes in and the IVR (FastAGI) sets its variables, HOTLINE_QUEUE last."""
    events = [ami("Newchannel", 0.0, CALLER), ami("AGIExecStart", 1.0, CALLER, Command="ANSWER")]
    return events + [ami("VarSet", at, CALLER, Variable=k, Value=v) for k, v in variables.items()]


def recorded(at: float) -> list[AmiEvent]:
    return [ami("VarSet", at, CALLER, Variable="MIXMONITOR_FILENAME", Value=f"/rec/{L}.wav"),
            ami("MixMonitorStart", at, CALLER)]


def dial_110(at: float, status: str, talk: float = 0.0) -> list[AmiEvent]:
    """The dialplan's Dial(PJSIP/110@hotline-trunk,30) from the caller's channel."""
    events = [ami("Newchannel", at, POLICE),
              ami("DialBegin", at, CALLER, DialString="110@hotline-trunk", **dest(POLICE))]
    end = at + (1.0 if status == "ANSWER" else 30.0)
    events.append(ami("DialEnd", end, CALLER, DialStatus=status, **dest(POLICE)))
    events.append(ami("Hangup", end + talk, POLICE, Cause=16 if status == "ANSWER" else 19))
    return events + [ami("VarSet", end + talk, CALLER, Variable="DIALSTATUS", Value=status)]


EMERGENCY_IVR = {"HOTLINE_IVR_CHOICE": "0-transfer", "HOTLINE_TRANSFER": "110", "HOTLINE_CATEGORY": "general",
                 "HOTLINE_QUEUE_TIMEOUT": "120", "HOTLINE_PRIORITY": "0", "HOTLINE_QUEUE": "hotline-general"}


def general(name: str, at: float, ch: dict = CALLER, **fields) -> AmiEvent:
    return ami(name, at, ch, Queue="hotline-general", **fields)


def seat_fields() -> dict:
    return {"MemberName": "Seat 1001", "Interface": "PJSIP/1001", **dest(SEAT)}


def answered_by_seat(at: float, talk: int = 60) -> list[AmiEvent]:
    """Queue() of hotline-general, the seat answers, talks and hangs up (option c: CONTINUE)."""
    return [
        general("QueueCallerJoin", at, Position=1, Count=1),
        ami("Newchannel", at, SEAT),
        general("AgentCalled", at, **seat_fields()),
        general("AgentConnect", at + 2, HoldTime=2, RingTime=2, **seat_fields()),
        general("AgentComplete", at + 2 + talk, HoldTime=2, TalkTime=talk, Reason="agent", **seat_fields()),
        ami("Hangup", at + 2 + talk, SEAT, Cause=16),
        ami("VarSet", at + 2 + talk, CALLER, Variable="QUEUESTATUS", Value="CONTINUE"),
    ]


def survey(at: float, answer: str) -> list[AmiEvent]:
    return [ami("AGIExecStart", at, {**CALLER, "Context": "hotline-survey"}, Command="GET DATA hotline/survey 5000 1"),
            ami("VarSet", at + 3, {**CALLER, "Context": "hotline-survey"}, Variable="HOTLINE_SURVEY", Value=answer)]


def finish(events: list[AmiEvent], tracker: CallTracker | None = None) -> FinishedCall:
    tracker = tracker or CallTracker("n")
    done = [c for c in (tracker.feed(e) for e in events) if c is not None]
    assert len(done) == 1 and len(tracker) == 0, done
    return done[0]


def kinds(call: FinishedCall) -> list[str]:
    return [e.kind for e in call.timeline]


def test_emergency_transfer_answered_by_110_is_no_missed_call():
    call = finish(ivr(5.0, **EMERGENCY_IVR) + recorded(5.1) + dial_110(5.2, "ANSWER", talk=90.0)
                  + [ami("Hangup", 96.3, CALLER, Cause=16)])
    assert (call.outcome, call.queue, call.answered_at, call.hold_seconds) == ("emergency_transfer", None, None, None)
    assert (call.category, call.ivr_choice, call.survey) == ("general", "0-transfer", None)
    assert [r.path for r in call.recordings] == [f"/rec/{L}.wav"]  # recorded like a queue call
    steps = kinds(call)
    assert steps.index("emergency_dial") < steps.index("emergency_answered") < steps.index("hangup")
    dial = next(e for e in call.timeline if e.kind == "emergency_dial")
    assert dial.detail == {"dial": "110@hotline-trunk", "channel": POLICE["Channel"]}
    assert call.timeline[-1].detail["outcome"] == "emergency_transfer"


def test_caller_hanging_up_while_110_rings_is_a_missed_call():
    events = ivr(5.0, **EMERGENCY_IVR) + recorded(5.1) + [
        ami("Newchannel", 5.2, POLICE),
        ami("DialBegin", 5.2, CALLER, DialString="110@hotline-trunk", **dest(POLICE)),
        ami("DialEnd", 9.0, CALLER, DialStatus="CANCEL", **dest(POLICE)),
        ami("Hangup", 9.0, POLICE, Cause=16),
        ami("Hangup", 9.1, CALLER, Cause=16),
    ]
    call = finish(events)
    assert call.outcome == "ivr_hangup"          # 110 never answered: no help reached, called back
    failed = next(e for e in call.timeline if e.kind == "emergency_failed")
    assert failed.detail == {"status": "CANCEL"}


def test_110_not_reached_then_the_queue_gives_the_queues_outcome():
    events = ivr(5.0, **EMERGENCY_IVR) + recorded(5.1) + dial_110(5.2, "NOANSWER")
    # answered in the queue, the seat hangs up, the caller answers the survey
    call = finish(events + answered_by_seat(36.0) + survey(98.5, "satisfied") + [ami("Hangup", 105.0, CALLER)])
    assert (call.outcome, call.queue, call.seat, call.hold_seconds, call.survey) == (
        "answered", "hotline-general", "Seat 1001", 2, "satisfied")
    steps = kinds(call)
    assert steps.index("emergency_failed") < steps.index("queue_join") < steps.index("survey")
    # abandoned in the queue: a missed call like any other
    call = finish(events + [general("QueueCallerJoin", 36.0, Position=1, Count=1),
                            general("QueueCallerAbandon", 50.0, Position=1, OriginalPosition=1, HoldTime=14),
                            general("QueueCallerLeave", 50.0, Position=1, Count=0),
                            ami("Hangup", 50.1, CALLER, Cause=16)])
    assert (call.outcome, call.queue, call.hold_seconds) == ("abandoned", "hotline-general", 14)


def test_only_the_literal_110_from_the_ivrs_channel_counts():
    other = {**EMERGENCY_IVR, "HOTLINE_TRANSFER": "119"}
    # a Dial() after a HOTLINE_TRANSFER other than 110 (not the generated dialplan's) is no 110 call
    call = finish(ivr(5.0, **other) + dial_110(5.2, "ANSWER") + [ami("Hangup", 7.0, CALLER)])
    assert call.outcome == "ivr_hangup" and "emergency_dial" not in kinds(call)
    # nor a Dial() from another channel of the call
    stranger = {**CALLER, "Channel": "Local/x@y-00000009;1", "Uniqueid": "1795500001.30"}
    events = ivr(5.0, **EMERGENCY_IVR) + [
        ami("Newchannel", 5.1, stranger),
        ami("DialBegin", 5.2, stranger, DialString="110@hotline-trunk", **dest(POLICE)),
        ami("Hangup", 6.0, stranger), ami("Hangup", 6.1, CALLER)]
    assert finish(events).outcome == "ivr_hangup"
    # the IVR asked for 110, the caller hung up before the dialplan dialled: an IVR hang-up
    assert finish(ivr(5.0, **EMERGENCY_IVR) + [ami("Hangup", 5.1, CALLER)]).outcome == "ivr_hangup"


def test_callback_request_without_a_queue():
    variables = {"HOTLINE_IVR_CHOICE": "1-callback_yes", "HOTLINE_CALLBACK_REQUESTED": "1",
                 "HOTLINE_CATEGORY": "general", "HOTLINE_QUEUE_TIMEOUT": "120", "HOTLINE_PRIORITY": "0",
                 "HOTLINE_QUEUE": "hotline-general"}
    call = finish(ivr(20.0, **variables) + [ami("Hangup", 20.2, CALLER, Cause=16)])
    assert (call.outcome, call.queue, call.recordings) == ("callback_requested", "hotline-general", ())
    assert "callback_requested" in kinds(call) and call.variables["HOTLINE_CALLBACK_REQUESTED"] == "1"
    # a dialplan that queued the caller anyway: the queue's outcome wins
    call = finish(ivr(20.0, **variables) + [
        general("QueueCallerJoin", 21.0, Position=1, Count=1),
        general("QueueCallerAbandon", 30.0, Position=1, OriginalPosition=1, HoldTime=9),
        ami("Hangup", 30.1, CALLER)])
    assert call.outcome == "abandoned"
    # only "1" is a request
    call = finish(ivr(20.0, **{**variables, "HOTLINE_CALLBACK_REQUESTED": "0"}) + [ami("Hangup", 21.0, CALLER)])
    assert call.outcome == "ivr_hangup"


@pytest.mark.parametrize(("value", "expected"), [
    ("satisfied", "satisfied"), ("basically_satisfied", "basically_satisfied"), ("dissatisfied", "dissatisfied"),
    ("no_answer", "no_answer"), ("", None), ("1", None), ("SATISFIED", None), ("great", None)])
def test_survey_answer_only_the_four_values(value, expected):
    call = finish(ivr(3.0, HOTLINE_QUEUE="hotline-general") + answered_by_seat(4.0)
                  + survey(67.0, value) + [ami("Hangup", 75.0, CALLER)])
    assert (call.outcome, call.survey) == ("answered", expected)
    assert ("survey" in kinds(call)) == (expected is not None)


def test_no_survey_when_the_caller_hangs_up_first():
    events = ivr(3.0, HOTLINE_QUEUE="hotline-general") + [
        general("QueueCallerJoin", 4.0, Position=1, Count=1),
        ami("Newchannel", 4.0, SEAT),
        general("AgentConnect", 6.0, HoldTime=2, RingTime=2, **seat_fields()),
        ami("Hangup", 30.0, CALLER, Cause=16),
        general("AgentComplete", 30.0, HoldTime=2, TalkTime=24, Reason="caller", **seat_fields()),
        ami("VarSet", 30.0, CALLER, Variable="QUEUESTATUS", Value="CONTINUE"),
        ami("Hangup", 30.1, SEAT, Cause=16)]
    call = finish(events)
    assert (call.outcome, call.survey, call.talk_seconds) == ("answered", None, 24)


def test_open_calls_keep_the_110_dial_and_the_survey_over_export_and_restore():
    """Export mid-call (as the node runner saves open calls), restore into a new tracker (another
    instance, or after a SIGKILL), finish there: the same outcome and survey."""
    first = ivr(5.0, **EMERGENCY_IVR) + recorded(5.1) + dial_110(5.2, "ANSWER", talk=10.0)[:3]
    rest = dial_110(5.2, "ANSWER", talk=10.0)[3:] + [ami("Hangup", 17.0, CALLER)]
    old = CallTracker("n")
    for e in first:
        assert old.feed(e) is None
    new = CallTracker("n")
    assert new.restore({L: old.export(L)}) == (1, set())
    call = finish(rest, new)
    assert call.outcome == "emergency_transfer" and "emergency_answered" in kinds(call)

    first = ivr(3.0, HOTLINE_QUEUE="hotline-general") + answered_by_seat(4.0) + survey(67.0, "dissatisfied")
    old = CallTracker("n")
    for e in first:
        assert old.feed(e) is None
    new = CallTracker("n")
    new.restore({L: old.export(L)})
    call = finish([ami("Hangup", 75.0, CALLER)], new)
    assert (call.outcome, call.survey) == ("answered", "dissatisfied")


# ---------------------------------------------------------------- SurveyIvr over FastAGI

QUESTION = "GET DATA hotline/survey 5000 1"
THANKS = 'STREAM FILE hotline/survey-thanks ""'
INVALID = 'STREAM FILE hotline/survey-invalid ""'
DEAD = "511 Command Not Permitted on a dead channel or intercept routine"
OK = ["200 result=1"]
PLAYED = ["200 result=0 endpos=16000"]
TIMEOUT = ["200 result= (timeout)"]


def answer_set(value: str) -> tuple[str, list[str]]:
    return (f'SET VARIABLE HOTLINE_SURVEY "{value}"', OK)


def headers() -> list[str]:
    lines = load_dialogues("answered.agi")[0].headers
    return [("agi_network_script: survey" if h.startswith("agi_network_script:") else h) for h in lines]


async def run_survey(*steps_list: list[tuple[str, list[str]]], prompts: SurveyPrompts | None = None,
                     route=None, on_error=None) -> list[list[str]]:
    """Each dialogue against a FastAgiServer whose ``survey`` route is SurveyIvr; the commands sent."""
    server = FastAgiServer()
    survey_ivr = SurveyIvr(prompts)
    server.add_route("survey", route or survey_ivr, on_error=on_error or survey_ivr.safe_route)
    port = await server.start("127.0.0.1", 0)
    try:
        return [await play_asterisk(port, Dialogue(headers=headers(), steps=steps)) for steps in steps_list]
    finally:
        await server.stop()


@pytest.mark.parametrize(("key", "value"), [("1", "satisfied"), ("2", "basically_satisfied"),
                                            ("3", "dissatisfied")])
async def test_survey_each_key(key, value):
    steps = [(QUESTION, [f"200 result={key}"]), answer_set(value), (THANKS, PLAYED)]
    assert await run_survey(steps) == [[c for c, _ in steps]]


async def test_survey_invalid_key_then_a_valid_one():
    steps = [(QUESTION, ["200 result=9"]), (INVALID, PLAYED), (QUESTION, ["200 result=3"]),
             answer_set("dissatisfied"), (THANKS, PLAYED)]
    assert await run_survey(steps) == [[c for c, _ in steps]]
    # a timeout, then a key: the question again without the invalid prompt
    steps = [(QUESTION, TIMEOUT), (QUESTION, ["200 result=1"]), answer_set("satisfied"), (THANKS, PLAYED)]
    assert await run_survey(steps) == [[c for c, _ in steps]]


async def test_survey_no_valid_key_after_the_retry_is_no_answer():
    timeouts = [(QUESTION, TIMEOUT), (QUESTION, TIMEOUT), answer_set("no_answer"), (THANKS, PLAYED)]
    invalid = [(QUESTION, ["200 result=*"]), (INVALID, PLAYED), (QUESTION, ["200 result=0"]),
               answer_set("no_answer"), (THANKS, PLAYED)]
    # a prompt missing on this Asterisk (result=-1 on a live channel): asked again, then no answer
    missing = [(QUESTION, ["200 result=-1"]), (QUESTION, ["200 result=-1"]), answer_set("no_answer"),
               (THANKS, ["200 result=-1 endpos=0"])]
    sent = await run_survey(timeouts, invalid, missing)
    assert sent == [[c for c, _ in timeouts], [c for c, _ in invalid], [c for c, _ in missing]]


async def test_survey_caller_hangs_up_sets_nothing():
    """A caller who hangs up during the survey declined it: HOTLINE_SURVEY stays unset (as for a
    caller who hung up before the seat); ``no_answer`` means stayed and gave no valid key."""
    at_once = [(QUESTION, ["HANGUP", DEAD])]
    during = [(QUESTION, ["200 result=-1", "HANGUP"]), (QUESTION, [DEAD])]
    after_invalid = [(QUESTION, ["200 result=7"]), (INVALID, ["200 result=-1 endpos=800", "HANGUP"]),
                     (QUESTION, [DEAD])]
    sent = await run_survey(at_once, during, after_invalid)
    assert sent == [[c for c, _ in at_once], [c for c, _ in during], [c for c, _ in after_invalid]]
    # hung up during the thanks: the answer was already set
    thanks = [(QUESTION, ["200 result=2"]), answer_set("basically_satisfied"), (THANKS, ["200 result=-1 endpos=10"])]
    assert await run_survey(thanks) == [[c for c, _ in thanks]]


async def test_survey_prompts_and_retries_are_configurable():
    prompts = SurveyPrompts(question="hotline/pj", thanks="hotline/xx", invalid="hotline/cw", timeout_ms=8000,
                            retries=0)
    steps = [("GET DATA hotline/pj 8000 1", ["200 result=5"]), answer_set("no_answer"),
             ('STREAM FILE hotline/xx ""', PLAYED)]
    assert await run_survey(steps, prompts=prompts) == [[c for c, _ in steps]]
    for bad in ({"question": "a b"}, {"thanks": 'x"y'}, {"invalid": ""}, {"timeout_ms": 100}, {"retries": 4},
                {"retries": True}, {"timeout_ms": "5000"}):
        with pytest.raises(ValueError):
            SurveyPrompts(**bad)


async def test_survey_safe_route_after_a_failure():
    async def broken(session: AgiSession) -> None:
        await session.send_command(QUESTION)
        raise RuntimeError("bug")

    survey_ivr = SurveyIvr()
    steps = [(QUESTION, ["200 result=1"]), answer_set("no_answer")]
    assert await run_survey(steps, route=broken, on_error=survey_ivr.safe_route) == [[c for c, _ in steps]]
    # the caller had hung up: nothing is set

    async def broken_after_hangup(session: AgiSession) -> None:
        await session.send_command(QUESTION)
        await session.send_command("NOOP")  # reads the HANGUP line
        raise RuntimeError("bug")

    steps = [(QUESTION, ["200 result=-1"]), ("NOOP", ["HANGUP", "200 result=0"])]
    assert await run_survey(steps, route=broken_after_hangup, on_error=survey_ivr.safe_route) == [
        [c for c, _ in steps]]


# ---------------------------------------------------------------- the simulator runs each path

SPEED = 25.0


class Agi:
    """A FastAGI server like the service's: the ``ivr`` route sets the given variables (HOTLINE_QUEUE
    last), the ``survey`` route is SurveyIvr; the headers of each survey session are kept."""

    def __init__(self, variables: dict[str, str]) -> None:
        self.variables = variables
        self.survey_headers: list[dict[str, str]] = []
        self.server: FastAgiServer | None = None
        self.port = 0

    async def start(self) -> "Agi":
        self.server = FastAgiServer()
        survey_ivr = SurveyIvr()

        async def ivr_route(session: AgiSession) -> None:
            await session.answer()
            for name, value in self.variables.items():
                await session.set_variable(name, value)

        async def survey_route(session: AgiSession) -> None:
            self.survey_headers.append(dict(session.headers))
            await survey_ivr(session)

        self.server.add_route("ivr", ivr_route)
        self.server.add_route("survey", survey_route, on_error=survey_ivr.safe_route)
        self.port = await self.server.start("127.0.0.1", 0)
        return self


@pytest.fixture
async def path(tmp_path, make_client):  # noqa: F811
    """(sim, client, agi) for the IVR variables given: a simulator running the generated dialplan
    (option c and the survey), seat Seat 8001 in hotline-general answering after 1 s, talking 4 s."""
    made: list = []

    async def make(variables: dict[str, str], **sim_kw):
        agi = await Agi(variables).start()
        made.append(agi)
        sim = PbxSimulator(username="hotline", secret="s3cret", agi_port=agi.port,
                           recordings_dir=tmp_path / "rec", queues=QUEUES, fallback_queue="hotline-general",
                           speed=SPEED, **sim_kw)
        await sim.start()
        made.append(sim)
        client = await make_client(sim.ami_port)
        await client.action("QueueAdd", {"Queue": "hotline-general", "Interface": "PJSIP/8001",
                                         "MemberName": "Seat 8001"})
        sim.set_seat_behaviour("PJSIP/8001", SeatBehaviour(answer_after=1.0, talk=4.0))
        return sim, client, agi

    yield make
    for thing in reversed(made):
        if isinstance(thing, PbxSimulator):
            await thing.stop()
        else:
            await thing.server.stop()


async def place(sim: PbxSimulator, client: AmiClient, caller: ScriptedCaller):
    """Run one call; (its result, its AMI frames, the FinishedCall a CallTracker makes of them)."""
    linkedid = await sim.place_call(caller)
    await sim.wait_idle(timeout=40)
    await client.wait_for(lambda f: f.event == "Hangup" and f.get("Linkedid") == linkedid
                          and f["Channel"].endswith(";2"))
    frames = [f for f in client.frames if f.event and f.get("Linkedid") == linkedid]
    tracker = CallTracker("sim")
    done = [c for c in (tracker.feed(to_event(f)) for f in client.frames if f.event) if c is not None]
    (call,) = [c for c in done if c.linkedid == linkedid]
    return sim.results[linkedid], frames, call


def names_of(frames, event: str, **match) -> list[Frame]:
    return [f for f in frames if f.event == event and all(f.get(k) == v for k, v in match.items())]


EMERGENCY = {"HOTLINE_IVR_CHOICE": "0-transfer", "HOTLINE_TRANSFER": "110", "HOTLINE_CATEGORY": "general",
             "HOTLINE_QUEUE": "hotline-general"}


async def test_sim_emergency_transfer_answered(path):
    sim, client, _agi = await path(EMERGENCY)
    sim.set_seat_behaviour("110", SeatBehaviour(answer_after=2.0, talk=5.0))
    result, frames, call = await place(sim, client, ScriptedCaller(number="13800138000", survey="1"))
    assert (result.outcome, result.emergency, result.queue, result.survey) == ("emergency_transfer", "ANSWER",
                                                                              None, None)
    assert not names_of(frames, "QueueCallerJoin")
    (begin,) = names_of(frames, "DialBegin", DialString="110@hotline-trunk")
    assert begin["DestChannel"].startswith("PJSIP/hotline-trunk-") and begin["Channel"].endswith(";2")
    assert [f["DialStatus"] for f in names_of(frames, "DialEnd", DestChannel=begin["DestChannel"])] == ["ANSWER"]
    assert len(names_of(frames, "BridgeEnter")) == 2 and names_of(frames, "Hangup", Channel=begin["DestChannel"])
    dials = [f["AppData"] for f in names_of(frames, "Newexten", Application="Dial")]
    assert dials == ["PJSIP/110@hotline-trunk,30"]
    # recorded: MixMonitor before the Dial
    events = [f.event for f in frames]
    assert events.index("MixMonitorStart") < events.index("DialBegin")
    assert result.recording_path is not None and result.recording_path.exists()
    # the tracker's reading of the simulator's events
    assert (call.outcome, call.queue, call.answered_at) == ("emergency_transfer", None, None)
    assert len(call.recordings) == 1 and call.recordings[0].path == str(result.recording_path)
    assert [k for k in kinds(call) if k.startswith("emergency")] == ["emergency_dial", "emergency_answered"]
    assert call.survey is None


@pytest.mark.parametrize("how", ["no_answer", "trunk_down"])
async def test_sim_110_not_reached_goes_on_to_the_queue(path, how):
    sim, client, agi = await path(EMERGENCY, emergency_ring=5.0)
    if how == "no_answer":
        sim.set_seat_behaviour("110", SeatBehaviour(answers=False))
    else:
        sim.refuse_emergency(True)
    result, frames, call = await place(sim, client, ScriptedCaller(number="13800138001", survey="2"))
    status = "NOANSWER" if how == "no_answer" else "CHANUNAVAIL"
    assert (result.outcome, result.emergency, result.queue, result.seat_name) == (
        "answered", status, "hotline-general", "Seat 8001")
    statuses = [f["Value"] for f in names_of(frames, "VarSet", Variable="DIALSTATUS")]
    assert statuses == [status]
    assert bool(names_of(frames, "DialBegin", DialString="110@hotline-trunk")) == (how == "no_answer")
    assert len(names_of(frames, "MixMonitorStart")) == 1  # one recording for 110 and the queue
    assert [f["Queue"] for f in names_of(frames, "QueueCallerJoin")] == ["hotline-general"]
    assert (call.outcome, call.queue, call.seat, call.survey) == ("answered", "hotline-general", "Seat 8001",
                                                                  "basically_satisfied")
    if how == "no_answer":
        assert "emergency_failed" in kinds(call)
    assert result.survey == "basically_satisfied" and len(agi.survey_headers) == 1


async def test_sim_caller_hanging_up_while_110_rings(path):
    sim, client, _agi = await path(EMERGENCY)
    sim.set_seat_behaviour("110", SeatBehaviour(answers=False))
    result, frames, call = await place(sim, client, ScriptedCaller(number="13800138009", patience=4.0))
    assert (result.outcome, result.emergency) == ("ivr_hangup", "CANCEL")
    assert [f["DialStatus"] for f in names_of(frames, "DialEnd")] == ["CANCEL"]
    assert not names_of(frames, "QueueCallerJoin")
    assert call.outcome == "ivr_hangup" and "emergency_failed" in kinds(call)


async def test_sim_callback_request_hangs_up_without_queue(path):
    variables = {"HOTLINE_IVR_CHOICE": "1-callback_yes", "HOTLINE_CALLBACK_REQUESTED": "1",
                 "HOTLINE_CATEGORY": "general", "HOTLINE_QUEUE": "hotline-general"}
    sim, client, _agi = await path(variables)
    result, frames, call = await place(sim, client, ScriptedCaller(number="13800138002"))
    assert (result.outcome, result.recording_path, result.emergency) == ("callback_requested", None, None)
    assert not names_of(frames, "QueueCallerJoin") and not names_of(frames, "MixMonitorStart")
    assert [f["AppData"] for f in names_of(frames, "Newexten", Application="NoOp")][-2:] == [
        "Hotline callback requested", "hangup handler 16"]
    assert (call.outcome, call.queue, call.recordings) == ("callback_requested", "hotline-general", ())


@pytest.mark.parametrize(("keys", "answer"), [("1", "satisfied"), ("2", "basically_satisfied"),
                                              ("3", "dissatisfied"), ("91", "satisfied"), ("", "no_answer"),
                                              ("88", "no_answer")])
async def test_sim_survey_after_the_seat_hung_up(path, keys, answer):
    sim, client, agi = await path({"HOTLINE_QUEUE": "hotline-general"})
    result, frames, call = await place(sim, client, ScriptedCaller(number="13800138003", survey=keys))
    assert (result.outcome, result.survey) == ("answered", answer)
    assert (call.outcome, call.survey, call.talk_seconds) == ("answered", answer, 4)
    (complete,) = names_of(frames, "AgentComplete")
    assert complete["Reason"] == "agent"
    assert [f["Value"] for f in names_of(frames, "VarSet", Variable="QUEUESTATUS")] == ["CONTINUE"]
    queue = next(f for f in frames if f.event == "Newexten" and f["Application"] == "Queue")
    assert queue["AppData"] == "hotline-general,ct,,,60"
    # the survey is dialled like the IVR: its own FastAGI session, agi_network_script survey
    (headers,) = agi.survey_headers
    c2 = next(f for f in frames if f.event == "Newchannel" and f["Channel"].endswith(";2"))
    assert headers["agi_network_script"] == "survey" and headers["agi_request"].endswith("/survey")
    assert (headers["agi_context"], headers["agi_uniqueid"]) == ("hotline-survey", c2["Uniqueid"])
    pressed = [f["Digit"] for f in names_of(frames, "DTMFEnd")]
    assert pressed == list(keys)
    assert frames[-1].event == "Hangup" and frames[-1]["Channel"].endswith(";2")


async def test_sim_no_survey_when_the_caller_hangs_up_first_or_with_the_seat(path):
    sim, client, agi = await path({"HOTLINE_QUEUE": "hotline-general"})
    # hangs up during the talk (the seat would talk 4 s)
    result, frames, call = await place(sim, client, ScriptedCaller(number="13800138004", patience=3.0, survey="1"))
    assert (result.outcome, result.survey, call.survey) == ("answered", None, None)
    assert names_of(frames, "AgentComplete")[0]["Reason"] == "caller"
    # the caller puts the phone down as soon as the seat has (survey=None, the default)
    result, frames, call = await place(sim, client, ScriptedCaller(number="13800138005"))
    assert (result.outcome, result.survey, call.outcome, call.survey) == ("answered", None, "answered", None)
    assert names_of(frames, "AgentComplete")[0]["Reason"] == "agent"
    assert not agi.survey_headers  # no survey session was ever dialled
    assert not [f for f in frames if f.event == "Newexten" and f["Context"] == "hotline-survey"]


async def test_sim_survey_service_down_still_ends_the_call(path):
    sim, client, agi = await path({"HOTLINE_QUEUE": "hotline-general"})
    agi.server._route.pop("survey")  # the service has no survey route: the session is dropped at once
    result, frames, call = await place(sim, client, ScriptedCaller(number="13800138006", survey="1"))
    assert (result.outcome, result.survey, call.survey) == ("answered", None, None)
    assert frames[-1].event == "Hangup"


async def test_sim_survey_after_a_blind_transfer(path):
    sim, client, agi = await path({"HOTLINE_QUEUE": "hotline-general"})
    await client.action("QueueAdd", {"Queue": "hotline-leader", "Interface": "PJSIP/8900",
                                     "MemberName": "Leader 8900"})
    sim.set_seat_behaviour("PJSIP/8001", SeatBehaviour(answer_after=1.0, talk=60.0))
    sim.set_seat_behaviour("PJSIP/8900", SeatBehaviour(answer_after=1.0, talk=3.0))
    linkedid = await sim.place_call(ScriptedCaller(number="13800138007", survey="3"))
    connect = await client.wait_for(lambda f: f.event == "AgentConnect" and f["Linkedid"] == linkedid)
    done = await client.action("BlindTransfer", {"Channel": connect["DestChannel"], "Context": "hotline-transfer",
                                                 "Exten": "hotline-leader"})
    assert done[0]["Response"] == "Success"
    await sim.wait_idle(timeout=40)
    result = sim.results[linkedid]
    assert (result.outcome, result.seats, result.survey) == ("answered", ("Seat 8001", "Leader 8900"),
                                                             "dissatisfied")
    frames = [f for f in client.frames if f.event and f.get("Linkedid") == linkedid]
    steps = [(f["Context"], f["Application"], f["AppData"]) for f in frames if f.event == "Newexten"
             and f["Context"] in ("hotline-transfer", "hotline-survey")]
    assert steps[0] == ("hotline-transfer", "Queue", "hotline-leader,ct,,,60")
    assert steps[1] == ("hotline-transfer", "GotoIf", "1?hotline-survey,s,1")
    assert [s[1] for s in steps[2:]] == ["NoOp", "AGI", "Hangup"]


def test_scripted_caller_survey_keys_are_checked():
    ScriptedCaller(number="1", survey="123").validate()
    for bad in ("1\n", "x", "123456789"):
        with pytest.raises(ValueError, match="survey"):
            ScriptedCaller(number="1", survey=bad).validate()
    with pytest.raises(ValueError, match="emergency_dial"):
        PbxSimulator(username="u", secret="s", recordings_dir="/tmp", queues=QUEUES, emergency_dial="PJSIP/1,2")


def test_emergency_dial_setting_is_checked():
    assert Settings().ivr.emergency_dial == "PJSIP/110@hotline-trunk"
    assert Settings(ivr={"emergency_dial": "PJSIP/110@a&PJSIP/110@b"}).ivr.emergency_dial == "PJSIP/110@a&PJSIP/110@b"
    for bad in ("PJSIP/110@t,30", "PJSIP/110@t)", "PJSIP/110\n", "PJSIP/110;x", "PJSIP/${X}", "110", "PJSIP/1 10",
                'PJSIP/"110"'):
        with pytest.raises(ValidationError, match="emergency_dial"):
            Settings(ivr={"emergency_dial": bad})
    with pytest.raises(ValidationError, match="emergency_ring_seconds"):
        Settings(ivr={"emergency_ring_seconds": 1})


# ---------------------------------------------------------------- through the service

FLOW = """
[flow]
name = "endings"
start = "menu"
fallback_queue = "hotline-general"

[prompts.menu]
text = "请按键选择。"
audio = "hotline/menu"

[prompts.advice]
text = "如果您正面临危险，请立即转接幺幺零。"
audio = "hotline/emergency"

[nodes.menu]
type = "menu"
prompt = "menu"
timeout_ms = 1500
retries = 0
on_timeout = "general"
on_invalid = "general"

[nodes.menu.keys]
"1" = "general"
"0" = "emergency"

[nodes.general]
type = "queue"
queue = "hotline-general"

[nodes.emergency]
type = "emergency"
prompt = "advice"
target = "110"
"""


@pytest.mark.e2e
async def test_emergency_and_survey_through_the_service(pg_pool, pg_dsn, redis_client, node_id, tmp_path):
    """The service's IVR flow, the simulator running the generated dialplan, the tracker and the
    writer: a caller keys 0 and is put through to 110; another talks to a seat and answers the
    survey with 2. What the writer is handed (on_written) carries the outcome and the survey."""
    agi_port = free_port()
    settings = Settings(
        node_id=node_id, database_url=pg_dsn, redis_url=REDIS_URL, recordings_dir=tmp_path,
        min_recording_seconds=1.0, agi={"listen_host": "127.0.0.1", "listen_port": agi_port},
        queues=[QueueConfig(name="hotline-general", category="general", max_wait=300)],
        seats=[SeatConfig(interface="PJSIP/8001", name="Seat 8001", queues=["hotline-general"])],
    )
    sim = PbxSimulator(username="hotline", secret="endings-secret", agi_host="127.0.0.1", agi_port=agi_port,
                       recordings_dir=tmp_path, queues=queue_definitions(settings.queues),
                       fallback_queue="hotline-general", speed=50.0, emergency_dial=settings.ivr.emergency_dial,
                       emergency_ring=settings.ivr.emergency_ring_seconds)
    await sim.start()
    sim.set_seat_behaviour("PJSIP/8001", SeatBehaviour(answer_after=1.0, talk=4.0))
    sim.set_seat_behaviour("110", SeatBehaviour(answer_after=1.0, talk=3.0))
    settings = settings.model_copy(update={"ami": settings.ami.model_copy(
        update={"port": sim.ami_port, "secret": SecretStr("endings-secret")})})
    await install_flow(pg_pool, FLOW)
    written: list[FinishedCall] = []
    service = HotlineService(settings, pg_pool, redis_client, on_written=lambda call, *_: written.append(call))
    try:
        await service.start()
        await service.wait_ready(10)
        police = await sim.place_call(ScriptedCaller(number="13800138010", dtmf="0", dtmf_delay=0.3))
        surveyed = await sim.place_call(ScriptedCaller(number="13800138011", dtmf="1", dtmf_delay=0.3, survey="2"))
        await sim.wait_idle(timeout=40)
        await until(lambda: len(written) >= 2, "both calls written")
    finally:
        await service.stop()
        await sim.stop()

    calls = {c.linkedid: c for c in written}
    assert sim.results[police].outcome == "emergency_transfer" and sim.results[police].emergency == "ANSWER"
    call = calls[police]
    assert (call.outcome, call.queue, call.variables.get("HOTLINE_TRANSFER"), call.survey) == (
        "emergency_transfer", None, "110", None)
    assert len(call.recordings) == 1 and "emergency_answered" in kinds(call)
    call = calls[surveyed]
    assert (call.outcome, call.queue, call.seat, call.survey) == ("answered", "hotline-general", "Seat 8001",
                                                                  "basically_satisfied")
    async with pg_pool.acquire() as conn:
        outcomes = dict(await conn.fetch("SELECT linkedid, outcome FROM calls WHERE node = $1", node_id))
        survey = await conn.fetchrow(
            "SELECT c.survey, e.detail FROM calls c JOIN work_order_events e ON e.work_order_id = c.work_order_id"
            " AND e.kind = 'survey' WHERE c.linkedid = $1", surveyed)
        tasks = await conn.fetchval("SELECT count(*) FROM callback_tasks WHERE number = '13800138010'")
    assert outcomes == {police: "emergency_transfer", surveyed: "answered"}
    # the survey answer is on the call and on its work order; a 110 transfer is no missed call
    assert survey["survey"] == "basically_satisfied" and '"basically_satisfied"' in survey["detail"]
    assert tasks == 0
