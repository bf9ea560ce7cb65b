"""The operator desk of one node: operators' states, kept in Postgres and carried into app_queue.

How this works
- One ``OperatorMachine`` (queues.operator_state) per operator who has logged in on this node. The
  operators, their seats (table ``seats``) and skills (``operator_skills``: queue + penalty) are read
  from Postgres at every login and at every reconcile.
- Every change (operator action, AMI event, wrap-up end) runs under one lock, is written to Postgres
  in one transaction (``operator_sessions``: the intended state, one row per operator; and its
  ``operator_state_history`` rows), then its effects are carried out through ``PbxActions``:
  JoinQueues -> QueueAdd to each skill's queue (penalty, MemberName = the operator's name,
  StateInterface = the seat's), LeaveQueues -> QueueRemove, PauseSeat / UnpauseSeat -> QueuePause
  (with Reason), NotifySupervisor -> a log line and a JSON PUBLISH on ``hotline:<node>:supervisor``.
- An action whose Postgres write fails changes nothing (the machine is put back) and raises. An AMI
  failure leaves the intended state in Postgres: ``reconcile`` after the next AMI login fixes
  Asterisk.
- Only the node's owner changes Asterisk: actions on an instance that does not own the node raise
  ``NotOwner``; AMI events are fed by the NodeRunner only while it owns the node.
- ``reconcile(restarted)`` runs after every AMI login of the owner (NodeRunner._resync, after the
  settings' static seats): reload the intended state from Postgres, end rings and calls that an
  Asterisk restart took away, then per logged-in operator add the missing memberships, fix a
  drifted penalty, and send the pause (with its reason) or unpause again; dynamic members that are
  seats of the ``seats`` table but not intended are removed.
- Live view: as the node's owner, after each change it keeps (written, or kept in memory when a
  call event's write failed) the desk pushes the operator's state to the node's ``LiveStats``
  (``hotline:<node>:operators`` and an "operator" message on the live channel); after every reload
  from Postgres and every reconcile it pushes all its operators, which replaces that view (an
  operator no longer logged in here drops out). Pushing never waits or raises: Redis down never
  touches an operator action.
- Times are wall-clock seconds (``time.time``): they are stored as timestamptz.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import time
from dataclasses import dataclass, replace
from typing import Callable, Collection

import asyncpg

from queues.errors import Refused
from queues.live import LiveStats
from queues.operator_state import (
    Effect, JoinQueues, LeaveQueues, NotifySupervisor, OperatorActionError, OperatorConfig, OperatorMachine,
    OperatorState, PauseSeat, Status, UnpauseSeat, desired_pause,
)
from telephony.actions import PbxActions
from telephony.ami_client import AmiError, AmiTimeout
from telephony.events import AmiEvent

log = logging.getLogger("hotline.operators")

DB_TIMEOUT = 5.0          # seconds a Postgres read or write of the desk may take
EVENT_ACTOR = "asterisk"
SERVICE_ACTOR = "service"


class DeskError(Refused):
    """A request the desk refuses; ``status`` is the HTTP answer, ``field`` the input it is about."""
    status = 409


class UnknownOperator(DeskError):
    status = 404


class BadSeat(DeskError):
    status = 400


class NotOwner(DeskError):
    status = 503


@dataclass(frozen=True)
class OperatorInfo:
    name: str
    seat_state_interface: str | None
    skills: tuple[tuple[str, int], ...]     # (queue name, penalty)


def _ts(value: float | None) -> dt.datetime | None:
    return None if value is None else dt.datetime.fromtimestamp(value, dt.timezone.utc)


def _persisted(s: OperatorState) -> tuple:
    return s.status, s.seat, s.reason, s.pending_pause, s.wrap_up_until


def state_json(operator_id: int, s: OperatorState) -> dict:
    return {"operator_id": operator_id, "status": s.status.value, "seat": s.seat, "reason": s.reason,
            "pending_pause": s.pending_pause, "since": _ts(s.since).isoformat(),
            "wrap_up_until": s.wrap_up_until and _ts(s.wrap_up_until).isoformat()}


class OperatorDesk:
    def __init__(self, node_id: str, pool: asyncpg.Pool, redis, actions: PbxActions, *,
                 owning: Callable[[], bool], static_seats: Collection[str] = (), no_answer_limit: int = 3,
                 tick_interval: float = 0.2, clock: Callable[[], float] = time.time,
                 live: LiveStats | None = None) -> None:
        self.node_id = node_id
        self.pool = pool
        self.redis = redis
        self.actions = actions
        self.owning = owning
        self.static_seats = {s.casefold() for s in static_seats}
        self.no_answer_limit = no_answer_limit
        self.tick_interval = tick_interval
        self.clock = clock
        self.live = live                         # the node's live views (None: not shown live)
        # (queue, interface) -> True: a membership another desk keeps (the leader seat of a live
        # slot in its leader queue, queues.leader): not a stray for ``reconcile``
        self.keep_member: Callable[[str, str], bool] | None = None
        self.machines: dict[int, OperatorMachine] = {}
        self.info: dict[int, OperatorInfo] = {}
        self.db_seats: set[str] = set()          # interfaces (casefolded) of the seats table
        self.notified: list[dict] = []           # supervisor messages sent (the last 100)
        self._lock = asyncio.Lock()
        self._events: asyncio.Queue[tuple[AmiEvent, float]] = asyncio.Queue()

    # ---- queries ------------------------------------------------------------------------------

    def manages(self, interface: str) -> bool:
        """A dynamic member this desk owns (a seat of the seats table): static seats leave it alone."""
        key = interface.casefold()
        return key not in self.static_seats and (key in self.db_seats or self._operator_at(interface) is not None)

    def _operator_at(self, interface: str | None) -> int | None:
        if not interface:
            return None
        key = interface.casefold()
        for oid, m in self.machines.items():
            if m.state.seat is not None and m.state.seat.casefold() == key:
                return oid
        return None

    async def state(self, operator_id: int) -> dict:
        m = self.machines.get(operator_id)
        if m is not None:
            return state_json(operator_id, m.state)
        async with self.pool.acquire() as conn:
            if await conn.fetchval("SELECT name FROM operators WHERE id = $1", operator_id) is None:
                raise UnknownOperator(f"no operator {operator_id}")
            row = await conn.fetchrow("SELECT * FROM operator_sessions WHERE operator_id = $1", operator_id)
        if row is None or row["status"] == "offline" or row["node"] != self.node_id:
            since = row["since"].timestamp() if row is not None and row["status"] == "offline" else 0.0
            return state_json(operator_id, OperatorState(str(operator_id), since=since))
        return state_json(operator_id, _state_of(row))

    # ---- operator actions ---------------------------------------------------------------------

    async def login(self, operator_id: int, seat: str, actor: str) -> dict:
        async with self._lock:
            self.check_owner()
            if not isinstance(seat, str) or not seat.strip():
                raise BadSeat("login needs a seat interface such as PJSIP/8001", "seat")
            seat = seat.strip()
            if seat.casefold() in self.static_seats:
                raise BadSeat(f"{seat} is a static seat of the settings, always in its queues", "seat")
            loaded, seat_iface = await self._load_operator(operator_id, seat)
            info = loaded.info
            holder = self._operator_at(seat_iface)
            if holder is not None and holder != operator_id:
                raise DeskError(f"seat {seat_iface} is taken by operator {holder}", "seat")
            if not info.skills:
                raise DeskError(f"operator {operator_id} has no skills: no queue to join")
            machine = self._machine(operator_id, loaded.wrap_up)
            step = await self._change(operator_id, machine, lambda now: machine.login(seat_iface, now), actor,
                                      on_commit=lambda: self.info.__setitem__(operator_id, info))
            await self._execute(operator_id, step.effects)
            return state_json(operator_id, machine.state)

    async def logout(self, operator_id: int, actor: str, *, force: bool = False) -> dict:
        return await self._act(operator_id, actor, lambda m, now: m.logout(now, force=force))

    async def pause(self, operator_id: int, reason: str, actor: str) -> dict:
        return await self._act(operator_id, actor, lambda m, now: m.pause(reason, now))

    async def unpause(self, operator_id: int, actor: str) -> dict:
        return await self._act(operator_id, actor, lambda m, now: m.unpause(now))

    async def _act(self, operator_id: int, actor: str, action) -> dict:
        async with self._lock:
            self.check_owner()
            machine = self.machines.get(operator_id)
            if machine is None:
                await self.state(operator_id)   # 404 for an unknown operator
                machine = OperatorMachine(str(operator_id), self._config(0))
            step = await self._change(operator_id, machine, lambda now: action(machine, now), actor)
            await self._execute(operator_id, step.effects)
            return state_json(operator_id, machine.state)

    def check_owner(self) -> None:
        if not self.owning():
            raise NotOwner(f"this instance does not own node {self.node_id} now; try again shortly")

    # ---- AMI events and time ----------------------------------------------------------------------

    def on_event(self, event: AmiEvent) -> None:
        """From the NodeRunner (owner only); non-blocking: applied in order by ``run``."""
        if self._operator_at(getattr(event, "interface", None)) is not None:
            self._events.put_nowait((event, self.clock()))

    async def run(self) -> None:
        while True:
            try:
                event, at = await asyncio.wait_for(self._events.get(), self.tick_interval)
            except asyncio.TimeoutError:
                event = None
            try:
                async with self._lock:
                    if event is not None:
                        await self._apply_event(event, at)
                    await self._tick()
            except Exception:  # noqa: BLE001 - never stop the desk; reconcile repairs Asterisk
                log.exception("operators: node %s: event or tick failed", self.node_id)

    async def _apply_event(self, event: AmiEvent, at: float) -> None:
        oid = self._operator_at(getattr(event, "interface", None))
        if oid is None:
            return
        machine = self.machines[oid]
        step = await self._change(oid, machine, lambda now: machine.apply(event, at), EVENT_ACTOR, strict=False)
        await self._execute(oid, step.effects)

    async def _tick(self) -> None:
        now = self.clock()
        for oid, machine in list(self.machines.items()):
            s = machine.state
            if s.status is Status.WRAP_UP and s.wrap_up_until is not None and now >= s.wrap_up_until:
                step = await self._change(oid, machine, machine.tick, SERVICE_ACTOR, strict=False)
                await self._execute(oid, step.effects)

    # ---- reconcile ------------------------------------------------------------------------------------

    async def refresh(self) -> None:
        """Reload the intended state and the seats from Postgres (kept as it is if Postgres is down)."""
        try:
            await asyncio.wait_for(self._reload(), DB_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - Postgres down or slow: Asterisk is still reconciled
            log.warning("operators: node %s: intended state not reloaded (%s); using what is in memory",
                        self.node_id, exc)

    async def reconcile(self, restarted: bool = False, *, reload: bool = True) -> None:
        """After an AMI login of the owner: bring app_queue in line with the intended state
        (reloaded from Postgres first unless ``reload`` is False: the caller just did)."""
        async with self._lock:
            if reload:
                await self.refresh()
            now = self.clock()
            if restarted:
                for oid, machine in self.machines.items():
                    await self._change(oid, machine, machine.calls_gone, SERVICE_ACTOR, strict=False)
            status = await self.actions.queue_status()
            have: dict[tuple[str, str], dict] = {}
            for item in status.items:
                if item.event == "QueueMember":
                    have[(item.get("Queue") or "", (item.get("Location") or "").casefold())] = item
            want: set[tuple[str, str]] = set()
            added = fixed = paused = removed = 0
            for oid, machine in self.machines.items():
                step = machine.reconcile(now)
                info = self.info.get(oid)
                if not step.effects or info is None:
                    continue
                seat = machine.state.seat
                view = desired_pause(machine.state)
                for queue, penalty in info.skills:
                    want.add((queue, seat.casefold()))
                    member = have.get((queue, seat.casefold()))
                    try:
                        if member is None:
                            await self.actions.queue_add(queue, seat, info.name, info.seat_state_interface, penalty,
                                                         paused=view[0], reason=view[1])
                            added += 1
                        elif (member.get("Penalty") or "0") != str(penalty):
                            await self.actions.queue_penalty(seat, penalty, queue)
                            fixed += 1
                    except AmiTimeout:
                        raise
                    except AmiError as exc:
                        log.error("operators: %s (%s) not reconciled in queue %s: %s", info.name, seat, queue, exc)
                await self._execute(oid, [e for e in step.effects if not isinstance(e, JoinQueues)])
                paused += view[0]
            for (queue, iface), member in have.items():
                if (queue, iface) in want or member.get("Membership") != "dynamic":
                    continue
                if self.keep_member is not None and self.keep_member(queue, iface):
                    continue
                if iface in self.db_seats and iface not in self.static_seats:
                    try:
                        removed += await self.actions.queue_remove(queue, member.get("Location") or "")
                    except AmiTimeout:
                        raise
                    except AmiError as exc:
                        log.error("operators: stray member %s not removed from %s: %s", iface, queue, exc)
            self._show_all()
            logged_in = sum(m.state.status is not Status.OFFLINE for m in self.machines.values())
            log.info("operators: node %s reconciled: %d logged in (%d paused), %d memberships added, "
                     "%d penalties fixed, %d stray removed", self.node_id, logged_in, paused, added, fixed, removed)

    async def _reload(self) -> None:
        async with self.pool.acquire() as conn:
            seats = await conn.fetch("SELECT interface FROM seats")
            rows = await conn.fetch("SELECT * FROM operator_sessions WHERE node = $1", self.node_id)
            infos = {}
            for row in rows:
                infos[row["operator_id"]] = (await self._read_operator(conn, row["operator_id"], row["seat"]))[0]
        self.db_seats = {r["interface"].casefold() for r in seats}
        machines: dict[int, OperatorMachine] = {}
        for row in rows:
            oid = row["operator_id"]
            info = infos[oid]
            machines[oid] = OperatorMachine(str(oid), self._config(info.wrap_up), _state_of(row))
            self.info[oid] = info.info
        # operators no longer logged in here (logged out through another owner) are dropped
        self.machines = machines
        self._show_all()

    # ---- Postgres -------------------------------------------------------------------------------------

    async def _load_operator(self, operator_id: int, seat: str) -> tuple["_Loaded", str]:
        async with self.pool.acquire() as conn:
            loaded, seat_row = await self._read_operator(conn, operator_id, seat)
        if seat_row is None:
            raise BadSeat(f"no seat {seat} (seats are configured under /api/seats)", "seat")
        return loaded, seat_row["interface"]

    async def _read_operator(self, conn: asyncpg.Connection, operator_id: int, seat: str | None):
        op = await conn.fetchrow("SELECT id, name FROM operators WHERE id = $1", operator_id)
        if op is None:
            raise UnknownOperator(f"no operator {operator_id}")
        skills = await conn.fetch(
            "SELECT q.name, s.penalty, q.wrapup_seconds FROM operator_skills s JOIN queues q ON q.id = s.queue_id"
            " WHERE s.operator_id = $1 ORDER BY q.name", operator_id)
        seat_row = None if seat is None else await conn.fetchrow(
            "SELECT interface, state_interface FROM seats WHERE lower(interface) = lower($1)", seat)
        info = OperatorInfo(op["name"], seat_row and seat_row["state_interface"],
                            tuple((r["name"], r["penalty"]) for r in skills))
        return _Loaded(info, max((r["wrapup_seconds"] for r in skills), default=0)), seat_row

    def _config(self, wrap_up: float) -> OperatorConfig:
        return OperatorConfig(wrap_up_seconds=wrap_up, no_answer_limit=self.no_answer_limit)

    def _machine(self, operator_id: int, wrap_up: float) -> OperatorMachine:
        """The operator's machine, with the wrap-up length of its skills' queues as of this login."""
        old = self.machines.get(operator_id)
        return OperatorMachine(str(operator_id), self._config(wrap_up), old.state if old is not None else None)

    async def _change(self, operator_id: int, machine: OperatorMachine, change, actor: str, *,
                      strict: bool = True, on_commit: Callable[[], None] | None = None):
        """Run ``change(now)`` on the machine and write the result; ``strict``: a failed write undoes it."""
        before = machine.state
        step = change(self.clock())
        history = machine.drain_history()
        if _persisted(before) == _persisted(step.state) and not history:
            self.machines.setdefault(operator_id, machine)
            return step
        try:
            await asyncio.wait_for(self._write(operator_id, step.state, history, actor), DB_TIMEOUT)
        except Exception as exc:
            if strict:
                machine.state = before
                if isinstance(exc, (OSError, asyncpg.PostgresError, asyncio.TimeoutError)):
                    raise DeskError(f"the operator state could not be saved ({type(exc).__name__})") from exc
                raise
            log.error("operators: state of operator %s not saved (%s): %s -> %s", operator_id, exc,
                      before.status.value, step.state.status.value)
        self.machines[operator_id] = machine
        if on_commit is not None:
            on_commit()
        self._show(operator_id, step.state)
        for h in history:
            log.info("operator %s at %s: %s -> %s (%s, by %s)", operator_id, h.seat, h.from_status.value,
                     h.to_status.value, h.reason, actor)
        return step

    async def _write(self, operator_id: int, s: OperatorState, history, actor: str) -> None:
        offline = s.status is Status.OFFLINE
        async with self.pool.acquire() as conn, conn.transaction():
            try:
                await conn.execute(
                    """
                    INSERT INTO operator_sessions (operator_id, node, seat, status, reason, pending_pause,
                                                   wrap_up_until, since, updated_at)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now())
                    ON CONFLICT (operator_id) DO UPDATE SET node = $2, seat = $3, status = $4, reason = $5,
                        pending_pause = $6, wrap_up_until = $7, since = $8, updated_at = now()
                    """,
                    operator_id, None if offline else self.node_id, s.seat, s.status.value, s.reason,
                    s.pending_pause, _ts(s.wrap_up_until), _ts(s.since))
            except asyncpg.UniqueViolationError:
                raise DeskError(f"seat {s.seat} is taken by another operator", "seat") from None
            await conn.executemany(
                "INSERT INTO operator_state_history (operator_id, node, seat, from_status, to_status, reason, actor, at)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                [(operator_id, self.node_id, h.seat, h.from_status.value, h.to_status.value, h.reason, actor, _ts(h.at))
                 for h in history])

    # ---- live view ----------------------------------------------------------------------------------

    def _live_record(self, operator_id: int, s: OperatorState) -> dict:
        info = self.info.get(operator_id)
        return {"operator_id": operator_id, "name": info.name if info is not None else None,
                "state": s.status.value, "since": s.since, "reason": s.reason, "seat": s.seat}

    def _show(self, operator_id: int, s: OperatorState) -> None:
        """Push one operator's state to the live view (owner only; never waits or raises)."""
        if self.live is not None and self.owning():
            self.live.push_operator(**self._live_record(operator_id, s))

    def _show_all(self) -> None:
        """Push every operator this desk holds: the live view is replaced by them."""
        if self.live is not None and self.owning():
            self.live.push_operators([self._live_record(oid, m.state) for oid, m in self.machines.items()],
                                     self.clock())

    # ---- effects ------------------------------------------------------------------------------------

    async def _execute(self, operator_id: int, effects) -> None:
        for effect in effects:
            if isinstance(effect, NotifySupervisor):
                await self._notify(operator_id, effect)
                continue
            if not self.owning():
                continue
            try:
                await self._carry_out(operator_id, effect)
            except (AmiError, AmiTimeout, ConnectionError) as exc:
                log.warning("operators: %s for operator %s not done (%s); the next reconcile repairs it",
                            type(effect).__name__, operator_id, exc)

    async def _carry_out(self, operator_id: int, effect: Effect) -> None:
        info = self.info.get(operator_id)
        if isinstance(effect, JoinQueues) and info is not None:
            view = desired_pause(self.machines[operator_id].state)
            for queue, penalty in info.skills:
                await self.actions.queue_add(queue, effect.interface, info.name, info.seat_state_interface, penalty,
                                             paused=view[0], reason=view[1])
        elif isinstance(effect, LeaveQueues) and info is not None:
            for queue, _ in info.skills:
                await self.actions.queue_remove(queue, effect.interface)
        elif isinstance(effect, PauseSeat):
            await self.actions.queue_pause(effect.interface, True, effect.reason)
        elif isinstance(effect, UnpauseSeat):
            await self.actions.queue_pause(effect.interface, False)

    async def _notify(self, operator_id: int, effect: NotifySupervisor) -> None:
        info = self.info.get(operator_id)
        message = {"type": "operator_alert", "node": self.node_id, "operator_id": operator_id,
                   "operator": info.name if info else None, "seat": effect.interface, "reason": effect.reason,
                   "detail": effect.detail, "at": _ts(self.clock()).isoformat()}
        log.warning("operators: supervisor told: operator %s (%s) at %s: %s (%s)", operator_id,
                    message["operator"], effect.interface, effect.reason, effect.detail)
        self.notified = [*self.notified[-99:], message]
        try:
            await self.redis.publish(f"hotline:{self.node_id}:supervisor", json.dumps(message, ensure_ascii=False))
        except Exception as exc:  # noqa: BLE001 - Redis down: the log line stays
            log.warning("operators: supervisor message not published (%s)", exc)


@dataclass(frozen=True)
class _Loaded:
    info: OperatorInfo
    wrap_up: float


def _state_of(row) -> OperatorState:
    """An operator's intended state from its operator_sessions row."""
    status = Status(row["status"])
    if status is Status.OFFLINE:
        return OperatorState(str(row["operator_id"]), since=row["since"].timestamp())
    return OperatorState(
        str(row["operator_id"]), status, row["since"].timestamp(), row["seat"], reason=row["reason"],
        pending_pause=row["pending_pause"],
        wrap_up_until=row["wrap_up_until"].timestamp() if row["wrap_up_until"] is not None else None)


__all__ = ["OperatorDesk", "DeskError", "UnknownOperator", "BadSeat", "NotOwner", "OperatorActionError", "state_json"]
