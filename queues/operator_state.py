"""Operator state machine: who is where, and what Asterisk should be told. Pure: no I/O, no clock.

How this works
- One ``OperatorMachine`` per operator. Its ``state`` (an immutable ``OperatorState``) is one of six
  statuses: offline, available, paused (always with a reason), ringing, on_call, wrap_up (always
  with an end time). A logged-in operator sits at one seat, named by its app_queue Interface
  (``PJSIP/8001``, ``Local/1001@agents/n``); offline means no seat. ``OperatorState`` checks these
  rules when it is built, so an invalid state cannot exist.
- Every change goes through a method that takes the time (``now``, seconds) from the caller:
  operator actions ``login``, ``logout``, ``pause``, ``unpause``; ``apply(event)`` for AMI events;
  ``tick`` to end wrap-up; ``reconcile`` after an AMI (re)connect. Each returns a ``Step``
  (new state, effects) and appends a ``HistoryEntry`` (from, to, reason, at) when the status or
  the pause reason changed; the caller persists ``drain_history()`` (Postgres operator history).
- Effects are commands for the caller to carry out, never done here: ``JoinQueues`` /
  ``LeaveQueues`` (the seat's configured memberships, on login and logout), ``PauseSeat`` /
  ``UnpauseSeat`` (QueuePause), ``NotifySupervisor``.
- An invalid action (pause while offline, login twice, an empty reason...) raises
  ``OperatorActionError`` with a clear message and changes nothing.
- Calls: Asterisk is the truth about the phone. AgentCalled -> ringing, AgentConnect -> on_call
  (the no-answer counter goes back to 0), AgentComplete -> wrap_up until now + ``wrap_up_seconds``
  (0: straight back), then ``tick`` ends it by itself. AgentRingNoAnswer -> back; after
  ``no_answer_limit`` unanswered rings in a row the seat is paused with reason "no answer" and the
  supervisor is told. A call event may arrive in a state that does not expect it (an event missed
  during an AMI outage, a ring racing a pause): the machine follows the phone, and keeps the
  operator's pause as ``pending_pause``. A pause asked during ringing, a call or wrap-up is kept
  the same way and applied when that ends. Events for another seat, or while offline, are ignored.
- Asterisk holds a copy of the pause: ``desired_pause(state)`` is what it should have. The seat is
  paused in Asterisk whenever it must not get a call: paused, a pending pause, and wrap-up (reason
  "wrap-up", so wrap-up holds whatever the queue's own wrapuptime). Whenever the desired pause
  changes, a PauseSeat / UnpauseSeat effect is returned. QueueMemberStatus / QueueMemberPause /
  QueueMemberAdded / QueueMember carry Asterisk's view (Paused, PausedReason; Status, the device
  state): a view that differs from the desired one is settled thus: Asterisk may take a seat out of
  service (a pause made at the phone or the CLI is adopted: the seat gets no calls either way), it
  may not put one back or change the reason (after an Asterisk restart the re-added member is
  unpaused: the pause is sent again). Until Asterisk confirms the last pause or unpause sent
  (``confirm_timeout`` seconds at most), differing views are old events and are ignored.
  QueueMemberRemoved of a logged-in seat asks to join the queues again.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from typing import NamedTuple, Union

from telephony.events import AgentCalled, AgentComplete, AgentConnect, AgentRingNoAnswer, AmiEvent, QueueMemberEvent

NO_ANSWER_REASON = "no answer"
WRAP_UP_REASON = "wrap-up"
ASTERISK_REASON = "paused in Asterisk"  # an Asterisk pause that came without a reason
MAX_REASON_BYTES = 79                   # app_queue keeps reason_paused in char[80]

# Device states in QueueMemberStatus ``Status`` (AST_DEVICE_* of include/asterisk/devicestate.h).
DEVICE_STATES = {0: "unknown", 1: "not in use", 2: "in use", 3: "busy", 4: "invalid",
                 5: "unavailable", 6: "ringing", 7: "ringing in use", 8: "on hold"}

_VIEW_EVENTS = frozenset({"QueueMemberStatus", "QueueMemberPause", "QueueMemberAdded", "QueueMember"})


class Status(str, enum.Enum):
    OFFLINE = "offline"
    AVAILABLE = "available"
    PAUSED = "paused"
    RINGING = "ringing"
    ON_CALL = "on_call"
    WRAP_UP = "wrap_up"


_BUSY = frozenset({Status.RINGING, Status.ON_CALL, Status.WRAP_UP})


class OperatorActionError(Exception):
    """An operator action that is not allowed in the current state; the state is unchanged."""


class InvalidOperatorState(ValueError):
    """An OperatorState that breaks the rules: a bug, never a user error."""


@dataclass(frozen=True)
class OperatorConfig:
    wrap_up_seconds: float = 0.0
    no_answer_limit: int = 3
    confirm_timeout: float = 10.0

    def __post_init__(self) -> None:
        if not self.wrap_up_seconds >= 0:
            raise ValueError("wrap_up_seconds must be >= 0")
        if self.no_answer_limit < 1:
            raise ValueError("no_answer_limit must be >= 1")
        if not self.confirm_timeout >= 0:
            raise ValueError("confirm_timeout must be >= 0")


PauseView = tuple[bool, "str | None"]   # (paused, reason)


@dataclass(frozen=True)
class OperatorState:
    operator: str
    status: Status = Status.OFFLINE
    since: float = 0.0
    seat: str | None = None
    reason: str | None = None             # why paused (paused only)
    pending_pause: str | None = None      # pause asked while ringing / on a call / in wrap-up
    wrap_up_until: float | None = None    # wrap_up only
    call: str | None = None               # Linkedid of the call ringing or connected
    no_answer: int = 0                    # unanswered rings in a row
    device: int | None = None             # last QueueMember* Status (AST_DEVICE_*)
    awaiting: PauseView | None = None     # pause setting sent to Asterisk, not yet confirmed
    awaiting_at: float | None = None

    def __post_init__(self) -> None:
        problems = list(_problems(self))
        if problems:
            raise InvalidOperatorState(f"operator {self.operator!r}: " + "; ".join(problems))


def _problems(s: OperatorState):
    if not isinstance(s.status, Status):
        yield f"unknown status {s.status!r}"
        return
    if s.status is Status.OFFLINE:
        if any(v is not None for v in (s.seat, s.reason, s.pending_pause, s.wrap_up_until, s.call, s.awaiting)):
            yield "offline with a seat, reason, call or wrap-up"
        if s.no_answer:
            yield "offline with a no-answer count"
    elif not s.seat:
        yield f"{s.status.value} without a seat"
    if (s.status is Status.PAUSED) != bool(s.reason):
        yield "paused needs a reason, and only paused has one"
    if s.pending_pause is not None and (s.status not in _BUSY or not s.pending_pause):
        yield "a pending pause outside ringing, on_call or wrap_up"
    if s.status is Status.WRAP_UP:
        if s.wrap_up_until is None or not s.wrap_up_until >= s.since:
            yield "wrap_up needs an end time not before its start"
    elif s.wrap_up_until is not None:
        yield "an end time outside wrap_up"
    if s.call is not None and s.status not in (Status.RINGING, Status.ON_CALL):
        yield "a call outside ringing or on_call"
    if s.no_answer < 0:
        yield "a negative no-answer count"
    if (s.awaiting is None) != (s.awaiting_at is None):
        yield "awaiting without its time"


def desired_pause(state: OperatorState) -> PauseView:
    """What Asterisk should hold for this operator's seat: (paused, reason or None)."""
    if state.status is Status.PAUSED:
        return True, state.reason
    if state.pending_pause:
        return True, state.pending_pause
    if state.status is Status.WRAP_UP:
        return True, WRAP_UP_REASON
    return False, None


# Effects: commands for the caller.
@dataclass(frozen=True)
class JoinQueues:
    """Make the seat a member of its configured queues (QueueAdd, MemberName, StateInterface)."""
    interface: str


@dataclass(frozen=True)
class LeaveQueues:
    interface: str


@dataclass(frozen=True)
class PauseSeat:
    interface: str
    reason: str


@dataclass(frozen=True)
class UnpauseSeat:
    interface: str


@dataclass(frozen=True)
class NotifySupervisor:
    operator: str
    interface: str
    reason: str
    detail: str = ""


Effect = Union[JoinQueues, LeaveQueues, PauseSeat, UnpauseSeat, NotifySupervisor]


@dataclass(frozen=True)
class HistoryEntry:
    operator: str
    seat: str | None
    from_status: Status
    to_status: Status
    reason: str        # what caused it: "login", "pause: lunch", "AgentCalled", "no answer"...
    at: float


class Step(NamedTuple):
    state: OperatorState
    effects: tuple[Effect, ...]


def _seat_command(seat: str, view: PauseView) -> Effect:
    return PauseSeat(seat, view[1]) if view[0] else UnpauseSeat(seat)


def check_reason(reason: object) -> str:
    if not isinstance(reason, str) or not reason.strip():
        raise OperatorActionError("a pause needs a reason")
    reason = reason.strip()
    if any(ord(c) < 32 or ord(c) == 127 for c in reason):
        raise OperatorActionError("a pause reason must not contain control characters")
    if len(reason.encode()) > MAX_REASON_BYTES:
        raise OperatorActionError(f"a pause reason is at most {MAX_REASON_BYTES} bytes (UTF-8)")
    return reason


def _same_seat(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and a.casefold() == b.casefold()  # app_queue: strcasecmp


class OperatorMachine:
    """The state of one operator, changed only through the methods below (see module doc)."""

    def __init__(self, operator: str, config: OperatorConfig | None = None,
                 state: OperatorState | None = None) -> None:
        self.config = config or OperatorConfig()
        self.state = state or OperatorState(operator)
        if self.state.operator != operator:
            raise ValueError("state belongs to another operator")
        self.history: list[HistoryEntry] = []

    def drain_history(self) -> list[HistoryEntry]:
        out, self.history = self.history, []
        return out

    # ---- operator actions -------------------------------------------------------------
    def login(self, seat: str, now: float) -> Step:
        s = self.state
        if s.status is not Status.OFFLINE:
            raise OperatorActionError(f"operator {s.operator} is already logged in at {s.seat}")
        if not isinstance(seat, str) or not seat.strip() or any(ord(c) < 33 for c in seat.strip()):
            raise OperatorActionError("login needs a seat interface such as PJSIP/8001")
        seat = seat.strip()
        new = OperatorState(s.operator, Status.AVAILABLE, now, seat, awaiting=(False, None), awaiting_at=now)
        return self._commit(new, [JoinQueues(seat), UnpauseSeat(seat)], "login", now, sync=False)

    def logout(self, now: float, *, force: bool = False) -> Step:
        """Leave the seat. During a ring or a call only with ``force`` (a supervisor's logout)."""
        s = self.state
        if s.status is Status.OFFLINE:
            raise OperatorActionError(f"operator {s.operator} is not logged in")
        if s.status in (Status.RINGING, Status.ON_CALL) and not force:
            raise OperatorActionError(f"operator {s.operator} is {s.status.value.replace('_', ' ')}: "
                                      "log out after the call")
        new = OperatorState(s.operator, Status.OFFLINE, now)
        return self._commit(new, [LeaveQueues(s.seat)], "forced logout" if force else "logout", now, sync=False)

    def pause(self, reason: str, now: float) -> Step:
        s = self.state
        if s.status is Status.OFFLINE:
            raise OperatorActionError(f"operator {s.operator} is not logged in: cannot pause")
        reason = check_reason(reason)
        if s.status in _BUSY:
            new = replace(s, pending_pause=reason)          # applied when the ring, call or wrap-up ends
        else:
            new = replace(s, status=Status.PAUSED, reason=reason, since=now if s.status is not Status.PAUSED else s.since)
        return self._commit(new, [], f"pause: {reason}", now)

    def unpause(self, now: float) -> Step:
        """End a pause; cancel a pending one; in wrap-up without one: ready now, wrap-up ends."""
        s = self.state
        if s.status is Status.PAUSED:
            return self._commit(replace(s, status=Status.AVAILABLE, reason=None, since=now), [], "unpause", now)
        if s.status in _BUSY and s.pending_pause:
            return self._commit(replace(s, pending_pause=None), [], "pause cancelled", now)
        if s.status is Status.WRAP_UP:
            return self._commit(self._end_busy(s, now), [], "ready", now)
        if s.status is Status.OFFLINE:
            raise OperatorActionError(f"operator {s.operator} is not logged in: cannot unpause")
        raise OperatorActionError(f"operator {s.operator} is not paused ({s.status.value.replace('_', ' ')})")

    # ---- time and reconnects ----------------------------------------------------------
    def tick(self, now: float) -> Step:
        s = self.state
        if s.status is Status.WRAP_UP and now >= s.wrap_up_until:
            return self._commit(self._end_busy(s, now), [], "wrap-up over", now)
        return Step(s, ())

    def reconcile(self, now: float) -> Step:
        """After an AMI (re)connect or an Asterisk restart: what to send so Asterisk matches."""
        s = self.state
        if s.status is Status.OFFLINE:
            return Step(s, ())
        want = desired_pause(s)
        self.state = replace(s, awaiting=want, awaiting_at=now)
        return Step(self.state, (JoinQueues(s.seat), _seat_command(s.seat, want)))

    def calls_gone(self, now: float) -> Step:
        """Asterisk restarted: no ring or call survived it; end them (a pending pause applies)."""
        s = self.state
        if s.status not in (Status.RINGING, Status.ON_CALL):
            return Step(s, ())
        return self._commit(self._end_busy(s, now), [], "asterisk restart", now)

    # ---- AMI events -------------------------------------------------------------------
    def apply(self, event: AmiEvent, now: float) -> Step:
        """Apply one AMI event if it is about this operator's seat; never raises for odd events."""
        s = self.state
        if s.status is Status.OFFLINE or not _same_seat(getattr(event, "interface", None), s.seat):
            return Step(s, ())
        if isinstance(event, QueueMemberEvent):
            if event.name == "QueueMemberRemoved":
                return Step(s, (JoinQueues(s.seat),))
            if event.name in _VIEW_EVENTS:
                return self._asterisk_view(event, now)
            return Step(s, ())
        if isinstance(event, AgentCalled):
            return self._agent_called(event, now)
        if isinstance(event, AgentRingNoAnswer):
            return self._ring_no_answer(event, now)
        if isinstance(event, AgentConnect):
            return self._agent_connect(event, now)
        if isinstance(event, AgentComplete):
            return self._agent_complete(event, now)
        return Step(s, ())

    def _agent_called(self, event: AgentCalled, now: float) -> Step:
        s = self.state
        if s.status in (Status.RINGING, Status.ON_CALL):   # a second ring: the phone is taken already
            return Step(s, ())
        pending = s.reason if s.status is Status.PAUSED else s.pending_pause
        new = replace(s, status=Status.RINGING, since=now, reason=None, pending_pause=pending,
                      wrap_up_until=None, call=event.linkedid or event.uniqueid)
        return self._commit(new, [], "AgentCalled", now)

    def _ring_no_answer(self, event: AgentRingNoAnswer, now: float) -> Step:
        s = self.state
        if s.status is Status.RINGING and s.call and event.linkedid and event.linkedid != s.call:
            return Step(s, ())                             # the end of another, parallel ring
        if s.status not in (Status.RINGING, Status.AVAILABLE):
            return Step(s, ())
        count = s.no_answer + 1
        if count < self.config.no_answer_limit:
            return self._commit(replace(self._end_busy(s, now), no_answer=count), [], "AgentRingNoAnswer", now)
        reason = s.pending_pause or NO_ANSWER_REASON
        new = replace(s, status=Status.PAUSED, since=now, reason=reason, pending_pause=None, call=None, no_answer=0)
        notify = NotifySupervisor(s.operator, s.seat, NO_ANSWER_REASON, f"{count} rings unanswered in a row")
        return self._commit(new, [notify], NO_ANSWER_REASON, now)

    def _agent_connect(self, event: AgentConnect, now: float) -> Step:
        s = self.state
        if s.status is Status.ON_CALL:
            return Step(s, ())
        pending = s.reason if s.status is Status.PAUSED else s.pending_pause
        new = replace(s, status=Status.ON_CALL, since=now, reason=None, pending_pause=pending, wrap_up_until=None,
                      call=event.linkedid or event.uniqueid or s.call, no_answer=0)
        return self._commit(new, [], "AgentConnect", now)

    def _agent_complete(self, event: AgentComplete, now: float) -> Step:
        s = self.state
        if s.status is Status.ON_CALL and s.call and event.linkedid and event.linkedid != s.call:
            return Step(s, ())                             # not the call this seat is on
        if s.status not in (Status.ON_CALL, Status.RINGING, Status.AVAILABLE):
            return Step(s, ())
        wrap = self.config.wrap_up_seconds
        if wrap > 0:
            new = replace(s, status=Status.WRAP_UP, since=now, wrap_up_until=now + wrap, call=None, no_answer=0)
        else:
            new = replace(self._end_busy(s, now), no_answer=0)
        return self._commit(new, [], "AgentComplete", now)

    def _asterisk_view(self, event: QueueMemberEvent, now: float) -> Step:
        s = replace(self.state, device=event.status if event.status is not None else self.state.device)
        view: PauseView = (True, event.paused_reason) if event.paused else (False, None)
        if s.awaiting is not None and now - s.awaiting_at <= self.config.confirm_timeout:
            if view == s.awaiting:
                s = replace(s, awaiting=None, awaiting_at=None)
            self.state = s                                 # otherwise: an event older than what we sent
            return Step(s, ())
        s = replace(s, awaiting=None, awaiting_at=None)
        want = desired_pause(s)
        if view == want:
            self.state = s
            return Step(s, ())
        if view[0] and not want[0]:                        # paused at the phone or the CLI: adopt it
            reason = view[1] or ASTERISK_REASON
            if s.status is Status.AVAILABLE:
                new = replace(s, status=Status.PAUSED, since=now, reason=reason)
            else:
                new = replace(s, pending_pause=reason)
            self.state = s
            return self._commit(new, [], f"paused in Asterisk: {reason}", now, asterisk_has=view)
        # Asterisk unpaused a seat that must stay paused, or holds another reason: send ours again.
        self.state = replace(s, awaiting=want, awaiting_at=now)
        return Step(self.state, (_seat_command(s.seat, want),))

    # ---- helpers ----------------------------------------------------------------------
    @staticmethod
    def _end_busy(s: OperatorState, now: float) -> OperatorState:
        """The ring, call or wrap-up is over: paused if a pause is pending, else available."""
        if s.pending_pause:
            return replace(s, status=Status.PAUSED, since=now, reason=s.pending_pause, pending_pause=None,
                           wrap_up_until=None, call=None)
        return replace(s, status=Status.AVAILABLE, since=now, reason=None, wrap_up_until=None, call=None)

    def _commit(self, new: OperatorState, effects: list, cause: str, now: float, *, sync: bool = True,
                asterisk_has: PauseView | None = None) -> Step:
        old = self.state
        if sync and new.seat is not None:
            want = desired_pause(new)
            if want != desired_pause(old) and want != asterisk_has:
                effects.insert(0, _seat_command(new.seat, want))
                new = replace(new, awaiting=want, awaiting_at=now)
        if (old.status, old.reason) != (new.status, new.reason):
            self.history.append(HistoryEntry(new.operator, new.seat or old.seat, old.status, new.status, cause, now))
        self.state = new
        return Step(new, tuple(effects))


__all__ = ["Status", "OperatorState", "OperatorConfig", "OperatorMachine", "OperatorActionError",
           "InvalidOperatorState", "desired_pause", "check_reason", "JoinQueues", "LeaveQueues", "PauseSeat",
           "UnpauseSeat", "NotifySupervisor", "HistoryEntry", "Step", "NO_ANSWER_REASON", "WRAP_UP_REASON",
           "ASTERISK_REASON", "DEVICE_STATES"]
