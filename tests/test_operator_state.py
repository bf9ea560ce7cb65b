"""The operator state machine: each transition on the real Asterisk 22 events, and a Hypothesis
stateful test over any sequence of actions, events and ticks (never an invalid state, wrap-up
always ends, invalid actions raise and change nothing)."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from queues.operator_state import (ASTERISK_REASON, NO_ANSWER_REASON, WRAP_UP_REASON, HistoryEntry,
                                   InvalidOperatorState, JoinQueues, LeaveQueues, NotifySupervisor,
                                   OperatorActionError, OperatorConfig, OperatorMachine, OperatorState,
                                   PauseSeat, Status, UnpauseSeat, desired_pause)
from telephony.ami_codec import Frame
from telephony.events import AmiEvent, QueueMemberEvent, to_event
from tests.conftest import capture
from tests.test_ami_captures import frames_of

SEAT1 = "Local/1001@agents/n"   # answered.ami
SEAT2 = "Local/1002@agents/n"   # abandon.ami
SEAT3 = "Local/1003@agents/n"   # agi_errors.ami
SEAT4 = "Local/1004@agents/n"   # actions.ami


def events(name: str) -> list[AmiEvent]:
    return [to_event(f, received_at=0.0) for f in frames_of(capture(name)) if f.event]


def first(name: str, event: str, nth: int = 1) -> AmiEvent:
    found = [e for e in events(name) if e.name == event]
    return found[nth - 1]


def ts(event: AmiEvent) -> float:
    return float(event.frame["Timestamp"])


def renamed(event: AmiEvent, name: str, **fields: str) -> AmiEvent:
    """The same frame under another Event name, fields replaced or added (AgentRingNoAnswer is in
    no capture: app_queue sends it with the AgentCalled fields plus RingTime in milliseconds)."""
    headers = [(k, fields.pop(k, v)) if k != "Event" else (k, name) for k, v in event.frame.headers]
    return to_event(Frame((*headers, *fields.items())))


def member_view(event: AmiEvent, **fields: str) -> AmiEvent:
    return renamed(event, event.name, **fields)


def replay(machine: OperatorMachine, evs, start: float):
    """Apply captured events in order; the clock is each event's Timestamp (list items have none)."""
    now, steps = start, []
    for e in evs:
        if e.frame.get("Timestamp"):
            now = max(now, ts(e))
        steps.append((e.name, machine.apply(e, now)))
    return steps, now


def statuses(machine: OperatorMachine) -> list[tuple[str, str, str]]:
    return [(h.from_status.value, h.to_status.value, h.reason) for h in machine.history]


# ---- the real captures ------------------------------------------------------------------------

def test_member_events_of_the_captures_carry_what_the_machine_reads():
    status = first("agi_errors.ami", "QueueMemberStatus")
    assert isinstance(status, QueueMemberEvent)
    assert (status.interface, status.status, status.paused, status.paused_reason) == (SEAT3, 2, False, None)
    pause = first("actions.ami", "QueueMemberPause")
    assert (pause.interface, pause.paused, pause.paused_reason, pause.status) == (SEAT4, True, "lunch", 1)
    listed = first("abandon.ami", "QueueMember")          # QueueStatus list item: Name / Location
    assert (listed.interface, listed.member_name, listed.paused, listed.paused_reason) == (SEAT2, "Seat 1002", True, "break")
    called = first("answered.ami", "AgentCalled")
    assert (called.interface, called.linkedid) == (SEAT1, "1795314872.0")


def test_answered_call_ringing_on_call_wrap_up_then_available_by_itself():
    evs = events("answered.ami")
    t0 = ts(first("answered.ami", "QueueMemberAdded")) - 1
    m = OperatorMachine("op1", OperatorConfig(wrap_up_seconds=15))
    state, effects = m.login(SEAT1, t0)
    assert state.status is Status.AVAILABLE and state.seat == SEAT1
    assert effects == (JoinQueues(SEAT1), UnpauseSeat(SEAT1))
    steps, now = replay(m, evs, t0)
    by_name = dict(steps)
    assert by_name["QueueMemberAdded"].effects == ()         # Paused: 0 confirms the unpause sent at login
    assert by_name["AgentCalled"].state.status is Status.RINGING
    assert by_name["AgentCalled"].state.call == "1795314872.0"
    assert by_name["AgentConnect"].state.status is Status.ON_CALL
    complete = by_name["AgentComplete"]
    end = ts(first("answered.ami", "AgentComplete")) + 15
    assert complete.state.status is Status.WRAP_UP and complete.state.wrap_up_until == end
    assert complete.effects == (PauseSeat(SEAT1, WRAP_UP_REASON),)   # no call offered during wrap-up
    # QueueRemove while logged in: the seat asks to be a member again
    assert by_name["QueueMemberRemoved"].effects == (JoinQueues(SEAT1),)
    assert m.state.status is Status.WRAP_UP                  # the removal came 15 s after the call
    assert m.tick(end - 0.001) == (m.state, ())
    state, effects = m.tick(end)
    assert state.status is Status.AVAILABLE and effects == (UnpauseSeat(SEAT1),)
    assert statuses(m) == [("offline", "available", "login"), ("available", "ringing", "AgentCalled"),
                           ("ringing", "on_call", "AgentConnect"), ("on_call", "wrap_up", "AgentComplete"),
                           ("wrap_up", "available", "wrap-up over")]
    assert [h.at for h in m.history][-1] == end
    assert all(h.seat == SEAT1 and h.operator == "op1" for h in m.history)


def test_call_without_wrap_up_is_available_at_once_and_device_state_is_kept():
    m = OperatorMachine("op3")                              # wrap_up_seconds defaults to 0
    evs = events("agi_errors.ami")
    t0 = ts(first("agi_errors.ami", "QueueMemberAdded")) - 1
    m.login(SEAT3, t0)
    steps, _ = replay(m, evs, t0)
    by_name = {}
    for name, step in steps:
        by_name.setdefault(name, []).append(step)
    assert by_name["QueueMemberStatus"][0].state.status is Status.RINGING
    assert by_name["QueueMemberStatus"][0].state.device == 2     # AST_DEVICE_INUSE while the Local seat rings
    complete = by_name["AgentComplete"][0]
    assert complete.state.status is Status.AVAILABLE and complete.effects == ()
    assert by_name["QueueMemberStatus"][1].state.device == 1     # AST_DEVICE_NOT_INUSE after the call
    assert [s for _, s, _ in statuses(m)] == ["available", "ringing", "on_call", "available"]


def test_pause_from_asterisk_is_adopted_without_sending_it_back():
    added, pause = first("actions.ami", "QueueMemberAdded"), first("actions.ami", "QueueMemberPause")
    m = OperatorMachine("op4")
    m.login(SEAT4, ts(added) - 1)
    assert m.apply(added, ts(added)).effects == ()
    state, effects = m.apply(pause, ts(pause))
    assert state.status is Status.PAUSED and state.reason == "lunch" and effects == ()
    assert m.history[-1].reason == "paused in Asterisk: lunch"
    assert desired_pause(state) == (True, "lunch")


def test_asterisk_unpausing_a_paused_operator_is_undone():
    evs = events("abandon.ami")
    added = first("abandon.ami", "QueueMemberAdded")
    m = OperatorMachine("op2")
    m.login(SEAT2, ts(added) - 2)
    m.apply(to_event(Frame((("Event", "QueueMemberAdded"), ("Interface", SEAT2), ("Paused", "0")))), ts(added) - 2)
    state, effects = m.pause("break", ts(added) - 1)
    assert effects == (PauseSeat(SEAT2, "break"),) and state.awaiting == (True, "break")
    steps, _ = replay(m, evs, ts(added) - 1)
    by_name = dict(steps)
    assert by_name["QueueMemberAdded"].state.awaiting is None          # confirmed: Paused 1, break
    unpaused = by_name["QueueMemberPause"]                             # Paused: 0 done in Asterisk
    assert unpaused.state.status is Status.PAUSED and unpaused.state.reason == "break"
    assert unpaused.effects == (PauseSeat(SEAT2, "break"),)
    assert unpaused.state.awaiting == (True, "break")


def test_asterisk_restart_re_added_member_is_paused_again_and_reconcile_says_it_all():
    m = OperatorMachine("op4")
    m.login(SEAT4, 100.0)
    m.pause("lunch", 101.0)
    m.apply(member_view(first("actions.ami", "QueueMemberPause")), 101.5)   # confirmed
    # Asterisk restarted: the seats module re-adds the member, unpaused
    state, effects = m.apply(first("actions.ami", "QueueMemberAdded"), 200.0)
    assert effects == (PauseSeat(SEAT4, "lunch"),) and state.status is Status.PAUSED
    state, effects = m.reconcile(300.0)
    assert effects == (JoinQueues(SEAT4), PauseSeat(SEAT4, "lunch")) and state.awaiting == (True, "lunch")
    assert OperatorMachine("x").reconcile(1.0).effects == ()


def test_old_pause_events_do_not_undo_a_newer_unpause():
    pause = first("actions.ami", "QueueMemberPause")              # Paused 1, lunch
    unpause = member_view(pause, Paused="0", PausedReason="")
    m = OperatorMachine("op4")
    m.login(SEAT4, 10.0)
    m.pause("lunch", 11.0)
    state, effects = m.unpause(11.2)
    assert effects == (UnpauseSeat(SEAT4),)
    state, effects = m.apply(pause, 11.3)                         # sent for the pause, read after the unpause
    assert state.status is Status.AVAILABLE and effects == () and state.awaiting == (False, None)
    state, effects = m.apply(unpause, 11.4)
    assert state.awaiting is None and effects == ()
    # once confirmed, a pause made in Asterisk is adopted
    assert m.apply(pause, 12.0).state.status is Status.PAUSED


def test_an_unconfirmed_command_expires():
    pause = first("actions.ami", "QueueMemberPause")
    m = OperatorMachine("op4", OperatorConfig(confirm_timeout=5))
    m.login(SEAT4, 10.0)                                          # awaiting (False, None) from login
    assert m.apply(pause, 14.0).state.status is Status.AVAILABLE  # read as older than the login
    assert m.apply(pause, 16.0).state.status is Status.PAUSED     # the unpause was lost: Asterisk's pause stands


def test_pause_reason_less_pause_in_asterisk_gets_a_reason():
    m = OperatorMachine("op4")
    m.login(SEAT4, 1.0)
    m.apply(first("actions.ami", "QueueMemberAdded"), 1.1)
    state, effects = m.apply(member_view(first("actions.ami", "QueueMemberPause"), PausedReason=""), 2.0)
    assert state.reason == ASTERISK_REASON and effects == (PauseSeat(SEAT4, ASTERISK_REASON),)


# ---- no answer ----------------------------------------------------------------------------------

def _called_and_rna(name="answered.ami"):
    called = first(name, "AgentCalled")
    return called, renamed(called, "AgentRingNoAnswer", RingTime="8000")


def test_rings_unanswered_n_times_pause_the_seat_and_tell_the_supervisor():
    called, rna = _called_and_rna()
    assert rna.ring_time_ms == 8000 and rna.interface == SEAT1
    m = OperatorMachine("op1", OperatorConfig(no_answer_limit=3))
    m.login(SEAT1, 0.0)
    for i in (1, 2):
        assert m.apply(called, 10.0 * i).state.status is Status.RINGING
        state, effects = m.apply(rna, 10.0 * i + 8)
        assert state.status is Status.AVAILABLE and state.no_answer == i and effects == ()
    m.apply(called, 30.0)
    state, effects = m.apply(rna, 38.0)
    assert state.status is Status.PAUSED and state.reason == NO_ANSWER_REASON and state.no_answer == 0
    assert effects == (PauseSeat(SEAT1, NO_ANSWER_REASON),
                       NotifySupervisor("op1", SEAT1, NO_ANSWER_REASON, "3 rings unanswered in a row"))
    assert m.history[-1] == HistoryEntry("op1", SEAT1, Status.RINGING, Status.PAUSED, NO_ANSWER_REASON, 38.0)
    state, effects = m.unpause(60.0)
    assert state.status is Status.AVAILABLE and effects == (UnpauseSeat(SEAT1),)


def test_an_answer_resets_the_no_answer_count():
    called, rna = _called_and_rna()
    connect, complete = first("answered.ami", "AgentConnect"), first("answered.ami", "AgentComplete")
    m = OperatorMachine("op1", OperatorConfig(no_answer_limit=2))
    m.login(SEAT1, 0.0)
    m.apply(called, 1.0)
    assert m.apply(rna, 2.0).state.no_answer == 1
    m.apply(called, 3.0)
    assert m.apply(connect, 4.0).state.no_answer == 0
    m.apply(complete, 5.0)
    m.apply(called, 6.0)
    assert m.apply(rna, 7.0).state.status is Status.AVAILABLE     # one miss only, not two in a row


def test_ring_no_answer_of_another_call_or_during_a_call_changes_nothing():
    called, rna = _called_and_rna()
    other = renamed(rna, "AgentRingNoAnswer", Linkedid="1795319999.0")
    m = OperatorMachine("op1")
    m.login(SEAT1, 0.0)
    m.apply(called, 1.0)
    assert m.apply(other, 2.0).state.status is Status.RINGING
    m.apply(first("answered.ami", "AgentConnect"), 3.0)
    assert m.apply(rna, 4.0).state.status is Status.ON_CALL


def test_auto_pause_keeps_a_pending_operator_pause():
    called, rna = _called_and_rna()
    m = OperatorMachine("op1", OperatorConfig(no_answer_limit=1))
    m.login(SEAT1, 0.0)
    m.apply(called, 1.0)
    m.pause("lunch", 2.0)
    state, effects = m.apply(rna, 3.0)
    assert state.reason == "lunch" and effects[0] == NotifySupervisor("op1", SEAT1, NO_ANSWER_REASON,
                                                                       "1 rings unanswered in a row")


# ---- pause during a call, wrap-up, logout ---------------------------------------------------------

def test_pause_during_a_call_is_applied_when_the_call_and_its_wrap_up_end():
    called, connect, complete = (first("answered.ami", n) for n in ("AgentCalled", "AgentConnect", "AgentComplete"))
    m = OperatorMachine("op1", OperatorConfig(wrap_up_seconds=30))
    m.login(SEAT1, 0.0)
    m.apply(called, 1.0)
    m.apply(connect, 2.0)
    state, effects = m.pause("lunch", 3.0)
    assert state.status is Status.ON_CALL and state.pending_pause == "lunch"
    assert effects == (PauseSeat(SEAT1, "lunch"),)       # no next call offered; this one goes on
    state, effects = m.apply(complete, 10.0)
    assert state.status is Status.WRAP_UP and state.wrap_up_until == 40.0 and effects == ()
    assert desired_pause(state) == (True, "lunch")
    state, effects = m.tick(40.0)
    assert state.status is Status.PAUSED and state.reason == "lunch" and effects == ()


def test_unpause_in_wrap_up_cancels_a_pending_pause_then_ends_wrap_up():
    m = OperatorMachine("op1", OperatorConfig(wrap_up_seconds=30))
    m.login(SEAT1, 0.0)
    m.apply(first("answered.ami", "AgentConnect"), 1.0)     # AgentCalled missed: follow the phone
    m.apply(first("answered.ami", "AgentComplete"), 2.0)
    assert m.pause("meeting", 3.0).effects == (PauseSeat(SEAT1, "meeting"),)
    state, effects = m.unpause(4.0)
    assert state.status is Status.WRAP_UP and state.pending_pause is None
    assert effects == (PauseSeat(SEAT1, WRAP_UP_REASON),)
    state, effects = m.unpause(5.0)                          # "ready": wrap-up ends early
    assert state.status is Status.AVAILABLE and effects == (UnpauseSeat(SEAT1),)


def test_a_ring_while_paused_is_followed_and_the_pause_comes_back():
    called, rna = _called_and_rna()
    m = OperatorMachine("op1")
    m.login(SEAT1, 0.0)
    m.pause("break", 1.0)
    state, effects = m.apply(called, 1.1)                    # app_queue rang before the pause landed
    assert state.status is Status.RINGING and state.pending_pause == "break" and effects == ()
    state, effects = m.apply(rna, 9.0)
    assert state.status is Status.PAUSED and state.reason == "break" and effects == ()


def test_logout_during_a_call_needs_force():
    m = OperatorMachine("op1")
    m.login(SEAT1, 0.0)
    m.apply(first("answered.ami", "AgentCalled"), 1.0)
    with pytest.raises(OperatorActionError, match="ringing"):
        m.logout(2.0)
    state, effects = m.logout(2.0, force=True)
    assert state == OperatorState("op1", Status.OFFLINE, 2.0) and effects == (LeaveQueues(SEAT1),)
    assert m.history[-1].reason == "forced logout" and m.history[-1].seat == SEAT1
    assert len(m.drain_history()) == 3 and m.history == []


def test_events_for_another_seat_or_an_offline_operator_are_ignored():
    evs = events("answered.ami")
    m = OperatorMachine("op9")
    for e in evs:
        assert m.apply(e, 1.0) == (OperatorState("op9"), ())
    m.login(SEAT2, 2.0)
    before = m.state
    for e in evs:
        assert m.apply(e, 3.0) == (before, ())
    assert len(m.history) == 1


def test_interfaces_compare_like_app_queue_does():
    m = OperatorMachine("op1")
    m.login("local/1001@AGENTS/n", 0.0)
    assert m.apply(first("answered.ami", "AgentCalled"), 1.0).state.status is Status.RINGING


@pytest.mark.parametrize("action, message", [
    (lambda m: m.pause("lunch", 1.0), "not logged in"),
    (lambda m: m.unpause(1.0), "not logged in"),
    (lambda m: m.logout(1.0), "not logged in"),
    (lambda m: m.login("", 1.0), "seat"),
    (lambda m: m.login("PJSIP/80\r\n01", 1.0), "seat"),
])
def test_invalid_actions_while_offline_raise_and_change_nothing(action, message):
    m = OperatorMachine("op1")
    with pytest.raises(OperatorActionError, match=message):
        action(m)
    assert m.state == OperatorState("op1") and m.history == []


@pytest.mark.parametrize("action, message", [
    (lambda m: m.login(SEAT2, 5.0), "already logged in"),
    (lambda m: m.unpause(5.0), "not paused"),
    (lambda m: m.pause("", 5.0), "needs a reason"),
    (lambda m: m.pause("   ", 5.0), "needs a reason"),
    (lambda m: m.pause("lunch\r\nAction: Originate", 5.0), "control characters"),
    (lambda m: m.pause("午休" * 14, 5.0), "at most 79 bytes"),       # 84 bytes: app_queue would cut a character
])
def test_invalid_actions_while_logged_in_raise_and_change_nothing(action, message):
    m = OperatorMachine("op1")
    m.login(SEAT1, 0.0)
    before, history = m.state, list(m.history)
    with pytest.raises(OperatorActionError, match=message):
        action(m)
    assert m.state is before and m.history == history


def test_pause_reasons_in_chinese_fit_app_queue():
    m = OperatorMachine("op1")
    m.login(SEAT1, 0.0)
    assert m.pause(" 午休 ", 1.0).effects == (PauseSeat(SEAT1, "午休"),)
    assert m.pause("午休", 2.0) == (m.state, ())                   # the same pause again: nothing to do
    state, effects = m.pause("培训", 3.0)
    assert state.reason == "培训" and state.since == 1.0 and effects == (PauseSeat(SEAT1, "培训"),)


def test_desired_pause_of_each_state():
    base = OperatorState("o", Status.AVAILABLE, 1.0, SEAT1)
    assert desired_pause(OperatorState("o")) == (False, None)
    assert desired_pause(base) == (False, None)
    assert desired_pause(dataclasses.replace(base, status=Status.PAUSED, reason="r")) == (True, "r")
    assert desired_pause(dataclasses.replace(base, status=Status.RINGING, call="1.1")) == (False, None)
    assert desired_pause(dataclasses.replace(base, status=Status.ON_CALL, pending_pause="p")) == (True, "p")
    assert desired_pause(dataclasses.replace(base, status=Status.WRAP_UP, wrap_up_until=2.0)) == (True, WRAP_UP_REASON)


@pytest.mark.parametrize("fields", [
    dict(status=Status.OFFLINE, seat=SEAT1),
    dict(status=Status.AVAILABLE),
    dict(status=Status.PAUSED, seat=SEAT1),
    dict(status=Status.AVAILABLE, seat=SEAT1, reason="r"),
    dict(status=Status.WRAP_UP, seat=SEAT1, since=5.0),
    dict(status=Status.WRAP_UP, seat=SEAT1, since=5.0, wrap_up_until=4.0),
    dict(status=Status.AVAILABLE, seat=SEAT1, pending_pause="p"),
    dict(status=Status.AVAILABLE, seat=SEAT1, call="1.1"),
    dict(status="lunch", seat=SEAT1),
])
def test_invalid_states_cannot_be_built(fields):
    with pytest.raises(InvalidOperatorState):
        OperatorState("o", **fields)


def test_config_is_checked():
    for bad in (dict(wrap_up_seconds=-1), dict(no_answer_limit=0), dict(wrap_up_seconds=float("nan"))):
        with pytest.raises(ValueError):
            OperatorConfig(**bad)


# ---- any sequence ---------------------------------------------------------------------------------

SEATS = ["PJSIP/8001", "PJSIP/8002"]
CALLS = ["1795314872.0", "1795314969.16"]
REASONS = ["lunch", "break", "培训", "", " ", "a\r\nb", "x" * 80]
AGENT_EVENTS = ["AgentCalled", "AgentRingNoAnswer", "AgentConnect", "AgentComplete"]
VIEW_EVENTS = ["QueueMemberStatus", "QueueMemberPause", "QueueMemberAdded", "QueueMember"]


def agent_event(name: str, seat: str, call: str) -> AmiEvent:
    headers = [("Event", name), ("Queue", "hotline-general"), ("Interface", seat), ("MemberName", "Seat"),
               ("Uniqueid", call + "1"), ("Linkedid", call)]
    headers += {"AgentRingNoAnswer": [("RingTime", "8000")], "AgentConnect": [("HoldTime", "3"), ("RingTime", "2")],
                "AgentComplete": [("HoldTime", "3"), ("TalkTime", "60"), ("Reason", "agent")]}.get(name, [])
    return to_event(Frame(headers), received_at=0.0)


def view_event(name: str, seat: str, paused: bool, reason: str, device: int) -> AmiEvent:
    where = [("Name", "Seat"), ("Location", seat)] if name == "QueueMember" else [("MemberName", "Seat"), ("Interface", seat)]
    return to_event(Frame((("Event", name), ("Queue", "hotline-general"), *where, ("StateInterface", seat),
                           ("InCall", "0"), ("Status", str(device)), ("Paused", "1" if paused else "0"),
                           ("PausedReason", reason if paused else ""), ("Wrapuptime", "0"))), received_at=0.0)


def valid_reason(reason: str) -> bool:
    return bool(reason.strip()) and "\r" not in reason and len(reason.encode()) <= 79


class OperatorSequences(RuleBasedStateMachine):
    @initialize(wrap=st.sampled_from([0, 5, 30]), limit=st.integers(1, 4), confirm=st.sampled_from([0, 10]))
    def start(self, wrap, limit, confirm):
        self.config = OperatorConfig(wrap_up_seconds=wrap, no_answer_limit=limit, confirm_timeout=confirm)
        self.m = OperatorMachine("op", self.config)
        self.now = 0.0
        self.seen = 0          # history entries checked so far

    def later(self, dt: float) -> float:
        self.now += dt
        return self.now

    def expect_refused(self, action) -> None:
        before, history = self.m.state, list(self.m.history)
        with pytest.raises(OperatorActionError):
            action()
        assert self.m.state is before and self.m.history == history

    def check_effects(self, before: OperatorState, step, reported: tuple | None = None) -> None:
        state, effects = step
        assert state is self.m.state
        seats = {before.seat, state.seat} - {None}
        for effect in effects:
            assert effect.interface in seats
        # whenever what Asterisk should hold changes, the command is in the effects, unless Asterisk
        # itself reported that pause (adopted): ``reported`` is the view of a member event
        if before.seat is not None and before.seat == state.seat and desired_pause(before) != desired_pause(state):
            want = desired_pause(state)
            command = PauseSeat(state.seat, want[1]) if want[0] else UnpauseSeat(state.seat)
            adopted = reported is not None and reported[0] and want == (True, reported[1] or ASTERISK_REASON)
            assert command in effects or adopted

    @rule(seat=st.sampled_from(SEATS), dt=st.floats(0, 20))
    def login(self, seat, dt):
        now = self.later(dt)
        if self.m.state.status is not Status.OFFLINE:
            return self.expect_refused(lambda: self.m.login(seat, now))
        state, effects = self.m.login(seat, now)
        assert state.status is Status.AVAILABLE and state.seat == seat and JoinQueues(seat) in effects

    @rule(force=st.booleans(), dt=st.floats(0, 20))
    def logout(self, force, dt):
        now, s = self.later(dt), self.m.state
        if s.status is Status.OFFLINE or (s.status in (Status.RINGING, Status.ON_CALL) and not force):
            return self.expect_refused(lambda: self.m.logout(now, force=force))
        state, effects = self.m.logout(now, force=force)
        assert state.status is Status.OFFLINE and effects == (LeaveQueues(s.seat),)

    @rule(reason=st.sampled_from(REASONS), dt=st.floats(0, 20))
    def pause(self, reason, dt):
        now, before = self.later(dt), self.m.state
        if before.status is Status.OFFLINE or not valid_reason(reason):
            return self.expect_refused(lambda: self.m.pause(reason, now))
        step = self.m.pause(reason, now)
        self.check_effects(before, step)
        assert desired_pause(step.state) == (True, reason.strip())

    @rule(dt=st.floats(0, 20))
    def unpause(self, dt):
        now, before = self.later(dt), self.m.state
        if not (before.status in (Status.PAUSED, Status.WRAP_UP) or before.pending_pause):
            return self.expect_refused(lambda: self.m.unpause(now))
        step = self.m.unpause(now)
        self.check_effects(before, step)
        assert step.state.status is not Status.PAUSED and step.state.pending_pause is None

    @rule(name=st.sampled_from(AGENT_EVENTS), seat=st.sampled_from(SEATS), call=st.sampled_from(CALLS),
          dt=st.floats(0, 20))
    def agent(self, name, seat, call, dt):
        now, before = self.later(dt), self.m.state
        step = self.m.apply(agent_event(name, seat, call), now)
        self.check_effects(before, step)
        if before.seat != seat:
            assert step == (before, ())
        elif name == "AgentConnect":
            assert step.state.status is Status.ON_CALL and step.state.no_answer == 0
        elif name == "AgentCalled" and before.status in (Status.AVAILABLE, Status.PAUSED, Status.WRAP_UP):
            assert step.state.status is Status.RINGING
            assert step.state.pending_pause == (before.reason or before.pending_pause)

    @rule(name=st.sampled_from(VIEW_EVENTS), seat=st.sampled_from(SEATS), paused=st.booleans(),
          reason=st.sampled_from(["lunch", "break", "", NO_ANSWER_REASON, WRAP_UP_REASON]),
          device=st.integers(0, 8), dt=st.floats(0, 20))
    def member(self, name, seat, paused, reason, device, dt):
        now, before = self.later(dt), self.m.state
        step = self.m.apply(view_event(name, seat, paused, reason, device), now)
        self.check_effects(before, step, (paused, reason))
        if before.seat == seat:
            assert step.state.device == device
            assert step.state.status is before.status or (before.status is Status.AVAILABLE and paused)

    @rule(seat=st.sampled_from(SEATS))
    def removed(self, seat):
        before = self.m.state
        step = self.m.apply(view_event("QueueMemberRemoved", seat, False, "", 1), self.now)
        assert step.state == before
        assert step.effects == ((JoinQueues(seat),) if before.seat == seat else ())

    @rule(dt=st.floats(0, 40))
    def tick(self, dt):
        now, before = self.later(dt), self.m.state
        step = self.m.tick(now)
        self.check_effects(before, step)
        if before.status is Status.WRAP_UP and now >= before.wrap_up_until:
            assert step.state.status in (Status.AVAILABLE, Status.PAUSED)
        else:
            assert step == (before, ())

    @rule(dt=st.floats(0, 20))
    def reconcile(self, dt):
        now, before = self.later(dt), self.m.state
        state, effects = self.m.reconcile(now)
        assert state.status is before.status
        if before.seat is not None:
            want = desired_pause(before)
            assert effects == (JoinQueues(before.seat),
                               PauseSeat(before.seat, want[1]) if want[0] else UnpauseSeat(before.seat))

    @precondition(lambda self: self.m.state.status is Status.WRAP_UP)
    @rule()
    def wrap_up_ends_by_itself(self):
        end = self.m.state.wrap_up_until
        assert end == self.m.state.since + self.config.wrap_up_seconds and self.config.wrap_up_seconds > 0
        self.now = max(self.now, end)
        assert self.m.tick(self.now).state.status in (Status.AVAILABLE, Status.PAUSED)

    @invariant()
    def never_an_invalid_state(self):
        s = self.m.state
        assert s.status in set(Status)
        if s.status is Status.OFFLINE:
            assert s.seat is None and s.reason is None and s.call is None and s.pending_pause is None
            assert s.no_answer == 0
        else:
            assert s.seat in SEATS
        assert (s.status is Status.PAUSED) == bool(s.reason)
        if s.status is Status.WRAP_UP:
            assert s.wrap_up_until is not None and s.wrap_up_until >= s.since
        else:
            assert s.wrap_up_until is None
        assert 0 <= s.no_answer < self.config.no_answer_limit
        if s.pending_pause is not None:
            assert s.status in (Status.RINGING, Status.ON_CALL, Status.WRAP_UP)
        assert s.since <= self.now

    @invariant()
    def history_is_a_chain(self):
        history = self.m.history
        for prev, entry in zip(history, history[1:]):
            assert entry.from_status is prev.to_status and entry.at >= prev.at
        if history:
            assert history[-1].to_status is self.m.state.status
            assert history[0].from_status is Status.OFFLINE


OperatorSequences.TestCase.settings = settings(max_examples=300, stateful_step_count=40, deadline=None,
                                               suppress_health_check=[HealthCheck.too_slow])
test_operator_sequences = OperatorSequences.TestCase
