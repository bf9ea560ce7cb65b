"""The tracker's resync, export and restore, on the real captures cut at a point: what a service
that lost the AMI link, was killed, or took a node over knows about a call, and what it writes."""

from __future__ import annotations

import json

import pytest

from telephony.events import to_event
from telephony.resync import LiveChannel, boot_id, live_channels
from telephony.tracker import CallTracker
from tests.conftest import capture
from tests.test_ami_captures import frames_of

ANSWERED_CALLER = "13800138000"


def events(name: str):
    return [to_event(f) for f in frames_of(capture(name)) if f.event]


def feed(tracker: CallTracker, evs) -> list:
    return [c for c in (tracker.feed(e) for e in evs) if c is not None]


def cut_at(evs, name: str, nth: int = 1) -> int:
    """The index of the ``nth`` event called ``name``."""
    seen = 0
    for i, e in enumerate(evs):
        if e.name == name:
            seen += 1
            if seen == nth:
                return i
    raise AssertionError(f"no {name} #{nth}")


def channels_of(tracker: CallTracker, linkedid: str, application: str = "Queue") -> list[LiveChannel]:
    """The live channels of a call as CoreShowChannels would list them."""
    call = tracker.calls[linkedid]
    return [LiveChannel(channel=f"Local/x-{uid}", uniqueid=uid, linkedid=linkedid, caller_number=ANSWERED_CALLER,
                        caller_name=None, application=application, duration_seconds=5, bridge_id=None)
            for uid in sorted(call.live)]


def test_whole_capture_gives_the_reference_call():
    (call,) = feed(CallTracker("n"), events("answered.ami"))
    assert (call.outcome, call.seat, call.talk_seconds, call.closed_by) == ("answered", "Seat 1001", 6, None)


def test_export_and_restore_carry_a_call_over_a_restart():
    """A service killed mid-call: the next one restores the saved call and finishes it alike."""
    evs = events("answered.ami")
    i = cut_at(evs, "AgentConnect")
    before = CallTracker("n")
    assert feed(before, evs[:i + 1]) == []
    (linkedid,) = before.calls
    saved = {linkedid: before.export(linkedid)}
    json.loads(saved[linkedid])                       # plain JSON text

    after = CallTracker("n")
    restored, obsolete = after.restore(saved)
    assert (restored, obsolete) == (1, set())
    (call,) = feed(after, evs[i + 1:])
    (reference,) = feed(CallTracker("n"), evs)
    assert call == reference


def test_restore_merges_into_a_call_adopted_first():
    """The restarted service adopts the live call (CoreShowChannels) before it may read Redis:
    the saved state (IVR choice, queue, recording) must still end up in the written call."""
    evs = events("answered.ami")
    i = cut_at(evs, "AgentConnect")
    before = CallTracker("n")
    feed(before, evs[:i + 1])
    (linkedid,) = before.calls
    saved = {linkedid: before.export(linkedid)}
    live = channels_of(before, linkedid)

    after = CallTracker("n")
    closed, adopted = after.resync(live, after.mark())
    assert (closed, adopted) == ([], 1)
    assert after.calls[linkedid].partial
    restored, _ = after.restore(saved)
    assert restored == 1
    (call,) = feed(after, evs[i + 1:])
    (reference,) = feed(CallTracker("n"), evs)
    for field in ("outcome", "caller_number", "ivr_choice", "queue", "category", "seat", "hold_seconds",
                  "talk_seconds", "answered_at", "recordings", "started_at"):
        assert getattr(call, field) == getattr(reference, field), field


def test_restore_keeps_a_call_followed_from_its_start():
    evs = events("answered.ami")
    i = cut_at(evs, "AgentConnect")
    follower = CallTracker("n")
    feed(follower, evs[:i + 1])
    (linkedid,) = follower.calls
    stale = {linkedid: json.dumps({**json.loads(follower.export(linkedid)), "seat": "Seat 9999"})}
    assert follower.restore(stale) == (0, set())
    assert follower.calls[linkedid].seat == "Seat 1001"


def test_restore_skips_journaled_and_unreadable_entries_and_reports_them():
    tracker = CallTracker("n")
    restored, obsolete = tracker.restore({"1.1": "{not json", "2.2": "{}"}, skip={"3.3"})
    assert restored == 0 and obsolete == {"1.1", "2.2"}
    restored, obsolete = tracker.restore({"3.3": "{}"})
    assert restored == 0 and obsolete == {"3.3"}   # finished already: never reopened


def test_resync_closes_a_call_whose_channels_are_gone_with_what_was_known():
    """The link dropped while the caller waited; she gave up meanwhile."""
    evs = events("abandon.ami")
    i = cut_at(evs, "QueueCallerJoin")
    tracker = CallTracker("n")
    feed(tracker, evs[:i + 1])
    closed, adopted = tracker.resync([], tracker.mark())
    (call,) = closed
    assert (call.outcome, call.caller_number, call.queue, call.closed_by) == (
        "abandoned", "13900139000", "hotline-general", "resync")
    assert call.timeline[-2].kind == "closed_by_resync"
    assert feed(tracker, evs[i + 1:]) == []          # late events never write it again
    assert len(tracker) == 0


def test_resync_after_an_asterisk_restart_drops_a_waiting_caller_and_keeps_an_answer():
    waiting = events("abandon.ami")
    answered = events("answered.ami")
    tracker = CallTracker("n")
    feed(tracker, waiting[:cut_at(waiting, "QueueCallerJoin") + 1])
    feed(tracker, answered[:cut_at(answered, "AgentConnect") + 1])
    closed, _ = tracker.resync([], tracker.mark(), reason="asterisk_restart")
    outcomes = sorted((c.caller_number, c.outcome, c.closed_by) for c in closed)
    assert outcomes == [(ANSWERED_CALLER, "answered", "asterisk_restart"),
                        ("13900139000", "dropped", "asterisk_restart")]


def test_resync_leaves_calls_with_events_after_the_mark_alone():
    """A call whose first channel appeared after Asterisk made the list is not in it."""
    evs = events("answered.ami")
    tracker = CallTracker("n")
    mark = tracker.mark()
    feed(tracker, evs[:cut_at(evs, "QueueCallerJoin") + 1])
    closed, adopted = tracker.resync([], mark)
    assert (closed, adopted, len(tracker)) == ([], 0, 1)


def test_resync_adopts_a_queued_call_from_core_show_channels():
    tracker = CallTracker("n")
    tracker.last_at = 1_000_000.0
    chans = [
        LiveChannel("Local/12345@hotline-inbound-0001;1", "1.1", "1.1", "13700137000", "王芳", "Queue", 42, None,
                    context="hotline-inbound", application_data="hotline-business,t,,,120"),
        LiveChannel("Local/12345@hotline-inbound-0001;2", "1.2", "1.1", "13700137000", "王芳", "Wait", 42, None),
    ]
    closed, adopted = tracker.resync(chans, tracker.mark())
    assert (closed, adopted) == ([], 1)
    call = tracker.calls["1.1"]
    assert (call.caller_number, call.queue, call.joined, call.started_at) == (
        "13700137000", "hotline-business", True, 1_000_000.0 - 42)
    assert call.answered_at is None
    seat = LiveChannel("Local/1001@agents-0002;1", "1.3", "1.1", "1001", "", "AppQueue", 10, "bridge-1")
    tracker2 = CallTracker("n")
    tracker2.last_at = 1_000_000.0
    tracker2.resync([*chans, seat], tracker2.mark())
    assert tracker2.calls["1.1"].answered_at == 1_000_000.0 - 10   # bridged to a seat: answered


def test_dirty_calls_are_only_collected_while_saving():
    evs = events("answered.ami")
    tracker = CallTracker("n")
    tracker.track_dirty = False
    feed(tracker, evs[:50])
    assert tracker.take_dirty() == set()
    tracker.track_dirty = True
    feed(tracker, evs[50:60])
    assert tracker.take_dirty() == set(tracker.calls)


def test_core_status_and_show_channels_are_read_from_the_captures():
    frames = frames_of(capture("actions.ami"))
    status = next(f for f in frames if f.get("CoreStartupDate"))
    assert boot_id(status) == "2026-11-22 02:34:28"
    assert live_channels(f for f in frames if f.event == "CoreShowChannel") == []


@pytest.mark.ivr
def test_110_dial_and_survey_survive_a_takeover_and_an_asterisk_restart():
    """A service killed while its caller talks to 110, or after the caller answered the survey: the
    next one adopts the live call, merges the saved one, and when Asterisk restarts under it the
    resync closes the call with what was known: still a transfer to 110 (not a dropped call), and
    the survey answer kept."""
    from tests.test_ivr_endings import (CALLER, EMERGENCY_IVR, L, POLICE, answered_by_seat, dial_110, ivr,
                                        recorded, survey)

    def live(*chans: tuple[dict, str]) -> list[LiveChannel]:
        return [LiveChannel(channel=ch["Channel"], uniqueid=ch["Uniqueid"], linkedid=L, caller_number="13800138000",
                            caller_name=None, application=app, duration_seconds=20, bridge_id="b-1")
                for ch, app in chans]

    cases = [
        (ivr(5.0, **EMERGENCY_IVR) + recorded(5.1) + dial_110(5.2, "ANSWER", talk=60.0)[:3],
         live((CALLER, "Dial"), (POLICE, "AppDial")), ("emergency_transfer", None)),
        (ivr(3.0, HOTLINE_QUEUE="hotline-general") + answered_by_seat(4.0) + survey(67.0, "satisfied"),
         live((CALLER, "AGI")), ("answered", "satisfied")),
    ]
    for before_events, channels, (outcome, answer) in cases:
        before = CallTracker("n")
        assert feed(before, before_events) == []
        saved = {L: before.export(L)}
        after = CallTracker("n")
        assert after.resync(channels, after.mark()) == ([], 1)   # adopted first, then the saved state
        assert after.restore(saved) == (1, set())
        (call,) = after.resync([], after.mark(), reason="asterisk_restart")[0]
        assert (call.outcome, call.survey, call.closed_by) == (outcome, answer, "asterisk_restart")
        assert call.variables.get("HOTLINE_QUEUE") == "hotline-general"
