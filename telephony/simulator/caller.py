"""The citizen side of a simulated call: the script, the keys pressed, the result.

How the keys work: the caller's ``dtmf`` is pressed ``dtmf_delay`` sim seconds after the first
command that listens for digits starts (GET DATA, WAIT FOR DIGIT, or STREAM FILE / SAY with
escape digits). Pressed keys raise DTMFBegin/DTMFEnd on the ``;2`` channel and wait in a
buffer until a command reads them, as queued DTMF frames would.

The satisfaction survey (after the seat hung up, when the simulator runs the generated
dialplan's survey): ``survey`` holds the keys the caller presses there, one per command that
listens for digits, ``dtmf_delay`` after it starts ("1": satisfied at once; "91": an invalid key,
then 1 when asked again; "": stays on the line and presses nothing). ``None`` (the default): the
caller puts the phone down as soon as the seat has hung up, before the survey.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from telephony.sanitize import check_value

DTMF_KEYS = frozenset("0123456789*#ABCD")


@dataclass(frozen=True)
class ScriptedCaller:
    number: str
    name: str = ""
    dtmf: str | None = None
    dtmf_delay: float = 1.0
    patience: float | None = None
    survey: str | None = None

    def validate(self) -> None:
        check_value(self.number, "caller number")
        check_value(self.name, "caller name")
        if not self.number or len(self.number) > 80 or len(self.name) > 80:
            raise ValueError("caller number must be 1-80 characters, name at most 80")
        if self.dtmf is not None and (len(self.dtmf) > 32 or not set(self.dtmf) <= DTMF_KEYS):
            raise ValueError(f"dtmf must be up to 32 of {''.join(sorted(DTMF_KEYS))}")
        if self.survey is not None and (len(self.survey) > 8 or not set(self.survey) <= DTMF_KEYS):
            raise ValueError(f"survey must be up to 8 of {''.join(sorted(DTMF_KEYS))}")
        if self.dtmf_delay < 0 or (self.patience is not None and self.patience < 0):
            raise ValueError("dtmf_delay and patience must not be negative")


@dataclass(frozen=True)
class SimCallResult:
    linkedid: str
    caller_number: str
    outcome: str  # answered | abandoned | queue_timeout | ivr_hangup | emergency_transfer | callback_requested
    #               (| no_queue | error | pbx_restart)
    seat_name: str | None
    recording_path: Path | None
    queue: str | None
    answered: bool = False  # a seat answered (also kept when a PBX restart killed the call)
    seats: tuple[str, ...] = ()      # every party that talked with the caller, in order (member
    #                                  names; an attended-transfer target by its interface)
    transfers: tuple[str, ...] = ()  # "blind:<exten>", "redirect:<exten>", "attended:<exten>" that took effect
    emergency: str | None = None     # the DIALSTATUS of the dialplan's Dial() of 110, if it dialled
    survey: str | None = None        # HOTLINE_SURVEY as the survey's FastAGI session left it


@dataclass(frozen=True)
class SimOriginateResult:
    """What one Originate did (PbxSimulator.originates): the seat rung first, then its target."""

    action_id: str | None
    channel: str              # the originated channel's name ("" if it was never created)
    linkedid: str             # its Linkedid (= its Uniqueid: an Originate starts a new call)
    answered: bool            # the originated seat answered
    application: str
    context: str
    exten: str
    variables: tuple[tuple[str, str], ...]
    callee_answered: bool = False      # a callback (hotline-callback): the citizen answered
    talk_time: int = 0                 # a callback: whole seconds the citizen and the seat talked
    recording_path: Path | None = None  # a callback: its MixMonitor file
    spied: tuple[str, ...] = ()        # ChanSpy: the channels spied on, in order


class Keypad:
    """The keys a caller presses: all of them ``delay`` after a command first listens, or with
    ``one_per_command`` the next one each time a command listens (one key per listening command)."""

    def __init__(self, keys: str | None, delay: float, real: Callable[[float], float],
                 on_press: Callable[[str], None], wake: asyncio.Event, one_per_command: bool = False) -> None:
        self._pending = keys or ""
        self._delay = delay
        self._real = real
        self._on_press = on_press
        self._wake = wake
        self._one = one_per_command
        self._timer: asyncio.TimerHandle | None = None
        self.buffer: deque[str] = deque()

    def arm(self) -> None:
        """A command listens for digits: the caller presses (the next of) them after the delay."""
        if self._pending and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._real(self._delay), self._press)

    def _press(self) -> None:
        self._timer = None
        cut = 1 if self._one else len(self._pending)
        keys, self._pending = self._pending[:cut], self._pending[cut:]
        for key in keys:
            self._on_press(key)
            self.buffer.append(key)
        self._wake.set()

    def take(self) -> str | None:
        return self.buffer.popleft() if self.buffer else None

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
