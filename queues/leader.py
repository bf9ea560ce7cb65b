"""The leader hotline: slots that open a leader queue, pre-screening, transfers to the leader,
the leader's instruction (批示), leader callbacks of a slot's hard cases, and the slot report.

How this works: a slot (``leader_slots``, migration 0004) is live while the centre's local time
(settings.timezone) is inside its date + start..end (start included, end excluded). Everything the
leader hotline does to an order is a typed ``work_order_events`` row, written in one statement
after the input is validated (nothing half-written):

* ``prescreen``: name, number, matter, first notes, by which operator (and the live slot, if any);
* ``leader_transfer``: a pre-screened call sent to the leader (blind: BlindTransfer of the seat's
  channel to ``hotline-transfer,<leader queue>``; attended: Atxfer to ``hotline-seats,<leader seat
  number>``), written only once Asterisk accepted it; refused while no slot is live;
* ``leader_instruction``: the text, the leader, who entered it (the leader or a recorder), the
  slot, ``assigned`` (an instruction assigns the order), ``supervised`` and ``solved_on_spot``;
* ``leader_callback``: an Originate of the leader seat first, then the order's caller through
  ``hotline-callback`` with ``HOTLINE_CALLBACK=<order number>``; ``leader_callback_result`` when
  its OriginateResponse arrives (``on_event``).

A first-time caller has no order until the call ends (workorders/store.py creates it when it
writes the call). So a pre-screen or a transfer may name the call in progress by (node, linkedid)
instead of an order number: if the call is already stored, the event goes on its order as above;
otherwise it is a ``call_notes`` row (migration 0007) that the call writer moves onto the call's
order in the transaction that stores the call. Both sides hold the call's advisory lock
(``workorders.store.lock_call_notes``), so a note is never written after the writer looked.

The slot report is computed from Postgres only (calls, call_events, work_order_events); see
``report``. AMI goes only through ``telephony.actions.PbxActions``.

The leader seat's membership (``sync_leader_seats``): while a slot is live, its leader seat
(``leader_slots.leader_seat_id``) is a dynamic member of its leader queue (QueueAdd with the seat's
name as MemberName and its StateInterface); outside every live slot it is not (QueueRemove). The
intended memberships are computed from Postgres at each run and only the difference is applied,
so a run is idempotent. It runs only while this instance owns the node: every few seconds and at
the next slot boundary (``run_seat_sync``), and after every AMI login of the owner
(``hotline.node.NodeRunner._resync``: the static seats' and the operators' reconcile keep these
memberships, then a sync puts them back after an Asterisk restart). Who wins, per (queue, seat):
a membership of the settings' static seats is the settings' (never added nor removed here); a
membership an operator logged in at that seat intends (a skill on that queue) is the operator
desk's (never removed here; if the slot also wants it, app_queue says "Already there" and it
stays as the operator desk added it); everything else of a (leader queue, leader seat) pair of
any slot is this desk's. A leader membership still in a call when its slot ends is removed at the
first run after that call (the call is not disturbed).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import re
import time
from dataclasses import dataclass
from typing import Any, Callable, Collection, Mapping
from zoneinfo import ZoneInfo

import asyncpg

from queues.errors import Refused
from telephony.actions import PbxActions
from telephony.ami_client import AmiError
from telephony.events import AmiEvent
from telephony.model import PHONE_NUMBER
from workorders.store import lock_call_notes

log = logging.getLogger("hotline.leader")

TRANSFER_CONTEXT = "hotline-transfer"
SEATS_CONTEXT = "hotline-seats"
CALLBACK_CONTEXT = "hotline-callback"
MODES = ("blind", "attended")
# a seat's channel: <tech>/<resource>-<sequence> (Local channels end in ;1 or ;2)
_CHANNEL = re.compile(r"^[A-Za-z0-9_-]+/[A-Za-z0-9_@./-]+-[0-9a-fA-F]+(;[12])?$")
_NODE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")              # config.settings node ids
_LINKEDID = re.compile(r"^[A-Za-z0-9_.-]{1,150}$")          # an Asterisk uniqueid (1763800000.42)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_BUT_LINES = re.compile(r"[\x00-\x09\x0b\x0c\x0e-\x1f\x7f]")


class LeaderError(Refused):
    """A request the leader hotline refuses: ``status`` is the HTTP answer, ``field`` the input."""

    def __init__(self, status: int, message: str, field: str | None = None):
        super().__init__(message, field, status=status)


def bad(field: str, message: str) -> LeaderError:
    return LeaderError(400, message, field)


def slot_window(slot_date: dt.date, start: dt.time, end: dt.time, tz: ZoneInfo) -> tuple[dt.datetime, dt.datetime]:
    """The slot's [start, end) as aware datetimes in the centre's time zone."""
    return (dt.datetime.combine(slot_date, start, tzinfo=tz), dt.datetime.combine(slot_date, end, tzinfo=tz))


def is_live(slot: Mapping[str, Any], now: float, tz: ZoneInfo) -> bool:
    start, end = slot_window(slot["slot_date"], slot["start_time"], slot["end_time"], tz)
    at = dt.datetime.fromtimestamp(now, tz)
    return start <= at < end


def _text(field: str, value: Any, low: int, high: int, lines: bool = False) -> str:
    if not isinstance(value, str):
        raise bad(field, "must be a string")
    value = value.strip()
    if not low <= len(value) <= high:
        raise bad(field, f"must have {low} to {high} characters")
    if (_CONTROL_BUT_LINES if lines else _CONTROL).search(value):
        raise bad(field, "must not hold control characters")
    return value


def _flag(field: str, value: Any) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise bad(field, "must be true or false")
    return value


def check_prescreen(body: Mapping[str, Any]) -> dict:
    """The pre-screen record from a request body, or a 400 naming the first bad field."""
    number = body.get("number")
    if not isinstance(number, str) or not PHONE_NUMBER.fullmatch(number.strip()):
        raise bad("number", "a phone number of 3 to 20 digits is needed")
    return {"name": _text("name", body.get("name"), 1, 100),
            "number": number.strip(),
            "matter": _text("matter", body.get("matter"), 1, 2000, lines=True),
            "notes": _text("notes", body.get("notes", ""), 0, 4000, lines=True)}


@dataclass(frozen=True)
class CallRef:
    """A call in progress: the Asterisk node and the call's Linkedid."""
    node: str
    linkedid: str


def check_call(node: Any, linkedid: Any) -> CallRef:
    """A call in progress from request input, or a 400 naming the bad field."""
    if not isinstance(node, str) or not _NODE.match(node):
        raise bad("node", "a node id (letters, digits, '_' and '-', up to 64) is needed")
    if not isinstance(linkedid, str) or not _LINKEDID.match(linkedid):
        raise bad("linkedid", "a call's Linkedid such as 1763800000.42 is needed")
    return CallRef(node, linkedid)


@dataclass(frozen=True)
class Slot:
    id: int
    slot_date: dt.date
    start_time: dt.time
    end_time: dt.time
    leader_id: int
    leader_name: str
    leader_user_id: int | None
    seat_interface: str
    seat_name: str
    queue: str
    topic: str
    prescreeners: tuple[int, ...]
    cases: tuple[int, ...]

    @property
    def seat_number(self) -> str:
        """The leader seat's number in hotline-seats (PJSIP/8009 -> 8009)."""
        return self.seat_interface.split("/", 1)[1].split("/", 1)[0].split("@", 1)[0]


_SLOT = """
SELECT s.id, s.slot_date, s.start_time, s.end_time, s.leader_id, l.name AS leader_name,
       l.user_id AS leader_user_id, se.interface AS seat_interface, se.name AS seat_name,
       q.name AS queue, s.topic,
       ARRAY(SELECT p.operator_id FROM leader_slot_prescreeners p WHERE p.slot_id = s.id ORDER BY 1) AS prescreeners,
       ARRAY(SELECT c.work_order_id FROM leader_slot_cases c WHERE c.slot_id = s.id ORDER BY c.position) AS cases
FROM leader_slots s JOIN leaders l ON l.id = s.leader_id JOIN seats se ON se.id = s.leader_seat_id
JOIN queues q ON q.id = s.queue_id
"""
_EVENT = ("INSERT INTO work_order_events (work_order_id, at, kind, actor, detail)"
          " VALUES ($1, $2, $3, $4, $5::jsonb) RETURNING id")
_NOTE = ("INSERT INTO call_notes (node, linkedid, at, kind, actor, detail)"
         " VALUES ($1, $2, $3, $4, $5, $6::jsonb) RETURNING id")
_CALL_ORDER = ("SELECT w.id, w.number FROM calls c JOIN work_orders w ON w.id = c.work_order_id"
               " WHERE c.node = $1 AND c.linkedid = $2")
# one statement, one snapshot: the notes, or the events the writer moved them into (atomically)
_CALL_SCREENED = """
SELECT EXISTS (SELECT 1 FROM call_notes WHERE node = $1 AND linkedid = $2 AND kind = 'prescreen')
    OR EXISTS (SELECT 1 FROM calls c JOIN work_order_events e ON e.work_order_id = c.work_order_id
               WHERE c.node = $1 AND c.linkedid = $2 AND e.kind = 'prescreen')
"""


# every (leader queue, leader seat) pair a slot names: the memberships this desk manages
_LEADER_PAIRS = """
SELECT DISTINCT q.name AS queue, se.interface FROM leader_slots s
JOIN seats se ON se.id = s.leader_seat_id JOIN queues q ON q.id = s.queue_id
"""
# the slots of one local day, with what a QueueAdd of their leader seat needs
_DAY_SEATS = """
SELECT s.slot_date, s.start_time, s.end_time, q.name AS queue, se.interface, se.name, se.state_interface
FROM leader_slots s JOIN seats se ON se.id = s.leader_seat_id JOIN queues q ON q.id = s.queue_id
WHERE s.slot_date = $1 ORDER BY s.start_time, s.id
"""
# memberships logged-in operators intend (their seat in each skill's queue): the operator desk's
_OPERATOR_PAIRS = """
SELECT q.name AS queue, o.seat AS interface FROM operator_sessions o
JOIN operator_skills k ON k.operator_id = o.operator_id JOIN queues q ON q.id = k.queue_id
WHERE o.status <> 'offline' AND o.seat IS NOT NULL AND ($1::text IS NULL OR o.node = $1)
"""


@dataclass(frozen=True)
class SeatPlan:
    """The leader memberships at one instant: keys are (queue, interface), casefolded."""
    want: dict[tuple[str, str], tuple[str, str, str, str | None]]   # -> (queue, interface, name, state_interface)
    managed: frozenset[tuple[str, str]]
    operators: frozenset[tuple[str, str]]
    next_boundary: float | None                                     # the next slot start or end today


def _pair(queue: str, interface: str) -> tuple[str, str]:
    return queue.casefold(), interface.casefold()


def _slot(row: asyncpg.Record) -> Slot:
    values = dict(row)
    values["prescreeners"], values["cases"] = tuple(values["prescreeners"]), tuple(values["cases"])
    return Slot(**values)


class LeaderDesk:
    """The leader hotline's manager layer: Postgres for what happened, PbxActions for Asterisk."""

    def __init__(self, pool: asyncpg.Pool, actions: PbxActions | None, *, timezone: str = "Asia/Shanghai",
                 clock: Callable[[], float] = time.time, owning: Callable[[], bool] = lambda: True,
                 node_id: str | None = None, static_members: Collection[tuple[str, str]] = (),
                 seat_sync_interval: float = 3.0) -> None:
        self.pool = pool
        self.actions = actions
        self.tz = ZoneInfo(timezone)
        self.clock = clock
        self.owning = owning                      # changes app_queue only while this is true
        self.node_id = node_id                    # the node of ``actions`` (its operators' sessions)
        self.static_members = frozenset(_pair(q, i) for q, i in static_members)   # the settings' seats
        self.seat_sync_interval = seat_sync_interval
        self.seat_plan: SeatPlan | None = None    # the last plan read from Postgres
        self._seat_lock = asyncio.Lock()
        self._callbacks: dict[str, tuple[int, int]] = {}   # Originate ActionID -> (order id, slot id)

    # ---- slots -------------------------------------------------------------------------------

    async def slot(self, slot_id: int) -> Slot:
        row = await self.pool.fetchrow(_SLOT + " WHERE s.id = $1", slot_id)
        if row is None:
            raise LeaderError(404, f"no leader slot {slot_id}")
        return _slot(row)

    async def live_slots(self, now: float | None = None) -> list[Slot]:
        now = self.clock() if now is None else now
        day = dt.datetime.fromtimestamp(now, self.tz).date()
        rows = await self.pool.fetch(_SLOT + " WHERE s.slot_date = $1 ORDER BY s.start_time, s.id", day)
        return [s for s in map(_slot, rows) if is_live(s.__dict__, now, self.tz)]

    async def open_leader_queues(self, now: float | None = None) -> list[str]:
        """The leader queues of every slot live at ``now`` (two leaders may hold slots at once)."""
        return [slot.queue for slot in await self.live_slots(now)]

    # ---- the leader seat in the leader queue --------------------------------------------------

    async def refresh_seats(self, now: float | None = None) -> SeatPlan:
        """Read the intended leader memberships at ``now`` from Postgres (kept for ``keeps``)."""
        now = self.clock() if now is None else now
        day = dt.datetime.fromtimestamp(now, self.tz).date()
        async with self.pool.acquire() as conn:
            pairs = await conn.fetch(_LEADER_PAIRS)
            rows = await conn.fetch(_DAY_SEATS, day)
            operators = await conn.fetch(_OPERATOR_PAIRS, self.node_id)
        want: dict[tuple[str, str], tuple[str, str, str, str | None]] = {}
        boundaries = []
        for r in rows:
            start, end = slot_window(r["slot_date"], r["start_time"], r["end_time"], self.tz)
            boundaries += [t for t in (start.timestamp(), end.timestamp()) if t > now]
            key = _pair(r["queue"], r["interface"])
            if is_live(r, now, self.tz) and key not in self.static_members:
                want.setdefault(key, (r["queue"], r["interface"], r["name"], r["state_interface"]))
        plan = SeatPlan(want, frozenset(_pair(r["queue"], r["interface"]) for r in pairs),
                        frozenset(_pair(r["queue"], r["interface"]) for r in operators),
                        min(boundaries, default=None))
        self.seat_plan = plan
        return plan

    def keeps(self, interface: str) -> bool:
        """For the static seats' reconcile: a leader seat now in a leader queue by a live slot."""
        plan = self.seat_plan
        return plan is not None and any(i == interface.casefold() for _, i in plan.want)

    def keeps_member(self, queue: str, interface: str) -> bool:
        """For the operator desk's reconcile: (queue, interface) is a live slot's leader membership."""
        plan = self.seat_plan
        return plan is not None and _pair(queue, interface) in plan.want

    async def sync_leader_seats(self, now: float | None = None, *, reload: bool = True) -> dict:
        """Make app_queue's leader memberships what the slots live at ``now`` want (owner only;
        idempotent). ``reload`` False: use the plan ``refresh_seats`` just read."""
        async with self._seat_lock:
            if self.actions is None or not self.owning():
                return {"added": 0, "removed": 0}
            plan = await self.refresh_seats(now) if reload or self.seat_plan is None else self.seat_plan
            if not plan.want and not plan.managed:
                return {"added": 0, "removed": 0}   # no leader slot at all: no QueueStatus every 3 s
            status = await self.actions.queue_status()
            have: dict[tuple[str, str], Any] = {}
            for item in status.items:
                if item.event == "QueueMember":
                    have[_pair(item.get("Queue") or "", item.get("Location") or "")] = item
            added = removed = 0
            for key, (queue, interface, name, state_interface) in plan.want.items():
                if key in have:
                    continue
                try:
                    added += await self.actions.queue_add(queue, interface, name, state_interface)
                    log.info("leader: seat %s joined leader queue %s (slot live)", interface, queue)
                except AmiError as exc:
                    log.error("leader: seat %s not added to leader queue %s: %s", interface, queue, exc)
            for key, member in have.items():
                if (key not in plan.managed or key in plan.want or key in self.static_members
                        or key in plan.operators or member.get("Membership") != "dynamic"):
                    continue
                if member.get("InCall") == "1":
                    continue   # the slot ended during the leader's call: removed at the first run after it
                queue, interface = member.get("Queue") or "", member.get("Location") or ""
                try:
                    removed += await self.actions.queue_remove(queue, interface)
                    log.info("leader: seat %s left leader queue %s (no live slot)", interface, queue)
                except AmiError as exc:
                    log.error("leader: seat %s not removed from leader queue %s: %s", interface, queue, exc)
            return {"added": added, "removed": removed, "next_boundary": plan.next_boundary}

    async def run_seat_sync(self) -> None:
        """Every ``seat_sync_interval`` seconds, and at the next slot boundary, while this instance
        owns the node and its AMI link is up (a login's resync covers the time it was down)."""
        while True:
            wait = self.seat_sync_interval
            try:
                client = getattr(self.actions, "client", None)
                ready = getattr(client, "ready", None)
                if self.owning() and (ready is None or ready.is_set()):
                    done = await self.sync_leader_seats()
                    boundary = done.get("next_boundary")
                    if boundary is not None:
                        wait = min(wait, max(0.05, boundary - self.clock() + 0.01))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Postgres or AMI down: the next run (or login) repairs
                log.warning("leader: leader seats not synced (%s); retrying", exc)
            await asyncio.sleep(wait)

    def _require_live(self, slot: Slot) -> None:
        if not is_live(slot.__dict__, self.clock(), self.tz):
            raise LeaderError(409, f"leader slot {slot.id} is not live (the leader queue is closed)")

    # ---- orders ------------------------------------------------------------------------------

    async def _order(self, conn: asyncpg.Connection, number: str) -> asyncpg.Record:
        if not isinstance(number, str) or not re.fullmatch(r"12345-[0-9]{8}-[0-9]{6,}", number):
            raise bad("order_number", "not a work-order number (12345-YYYYMMDD-NNNNNN)")
        row = await conn.fetchrow("SELECT id, number, caller_number FROM work_orders WHERE number = $1", number)
        if row is None:
            raise LeaderError(404, f"no work order {number}")
        return row

    async def _write(self, order_id: int, kind: str, actor: str, detail: dict) -> int:
        at = dt.datetime.fromtimestamp(self.clock(), dt.timezone.utc)
        return await self.pool.fetchval(_EVENT, order_id, at, kind, actor, json.dumps(detail, ensure_ascii=False))

    async def _write_call(self, call: CallRef, kind: str, actor: str, detail: dict) -> dict:
        """An event of a call in progress: on its order if the call is stored, else a call note
        the call writer moves onto the order. Returns the ids (event_id or note_id, order_number)."""
        at = dt.datetime.fromtimestamp(self.clock(), dt.timezone.utc)
        text = json.dumps(detail, ensure_ascii=False)
        async with self.pool.acquire() as conn, conn.transaction():
            await lock_call_notes(conn, call.node, call.linkedid)
            order = await conn.fetchrow(_CALL_ORDER, call.node, call.linkedid)
            if order is not None:
                event_id = await conn.fetchval(_EVENT, order["id"], at, kind, actor, text)
                return {"event_id": event_id, "note_id": None, "order_number": order["number"]}
            note_id = await conn.fetchval(_NOTE, call.node, call.linkedid, at, kind, actor, text)
            return {"event_id": None, "note_id": note_id, "order_number": None}

    async def prescreen_call(self, call: CallRef, body: Mapping[str, Any], operator_id: int | None,
                             actor: str) -> dict:
        """Pre-screen a call in progress (a first-time caller has no order yet)."""
        call = check_call(call.node, call.linkedid)
        record = check_prescreen(body)
        live = await self.live_slots()
        detail = {**record, "operator_id": operator_id, "slot_id": live[0].id if live else None}
        ids = await self._write_call(call, "prescreen", actor, detail)
        log.info("leader: %s pre-screened call %s/%s", actor, call.node, call.linkedid)
        return {**ids, "node": call.node, "linkedid": call.linkedid, **detail}

    async def prescreen(self, order_number: str, body: Mapping[str, Any], operator_id: int | None, actor: str) -> dict:
        record = check_prescreen(body)
        async with self.pool.acquire() as conn:
            order = await self._order(conn, order_number)
        live = await self.live_slots()
        detail = {**record, "operator_id": operator_id, "slot_id": live[0].id if live else None}
        event_id = await self._write(order["id"], "prescreen", actor, detail)
        log.info("leader: %s pre-screened order %s", actor, order_number)
        return {"event_id": event_id, "order_number": order_number, **detail}

    async def transfer(self, slot_id: int, order_number: str | None, seat_channel: Any, mode: Any, actor: str,
                       own_seat: str | None = None, call: CallRef | None = None) -> dict:
        """Send the pre-screened caller bridged with ``seat_channel`` to the slot's leader.
        ``own_seat``: the interface the acting operator is logged into; the channel must be on it.
        The caller is named by ``order_number`` or, for a call in progress, by ``call``."""
        if call is not None:
            if order_number is not None:
                raise bad("order_number", "give either order_number or node and linkedid, not both")
            call = check_call(call.node, call.linkedid)
        if mode not in MODES:
            raise bad("mode", "must be 'blind' or 'attended'")
        if not isinstance(seat_channel, str) or not _CHANNEL.match(seat_channel):
            raise bad("seat_channel", "a seat's channel such as PJSIP/8001-00000012 is needed")
        if own_seat is not None and not _on_seat(seat_channel, own_seat):
            raise LeaderError(403, "an operator may transfer only a call on its own seat", "seat_channel")
        slot = await self.slot(slot_id)
        async with self.pool.acquire() as conn:
            if call is None:
                order = await self._order(conn, order_number)
                screened = await conn.fetchval(
                    "SELECT true FROM work_order_events WHERE work_order_id = $1 AND kind = 'prescreen' LIMIT 1",
                    order["id"])
                what = f"order {order_number}"
            else:
                screened = await conn.fetchval(_CALL_SCREENED, call.node, call.linkedid)
                what = f"call {call.node}/{call.linkedid}"
        self._require_live(slot)
        if not screened:
            raise LeaderError(409, f"{what} has no pre-screen record")
        if self.actions is None:
            raise LeaderError(503, "no Asterisk link in this instance")
        try:
            if mode == "blind":
                await self.actions.blind_transfer(seat_channel, TRANSFER_CONTEXT, slot.queue)
                target = f"{TRANSFER_CONTEXT},{slot.queue}"
            else:
                await self.actions.atxfer(seat_channel, SEATS_CONTEXT, slot.seat_number)
                target = f"{SEATS_CONTEXT},{slot.seat_number}"
        except AmiError as exc:
            raise LeaderError(502, f"Asterisk refused the transfer: {exc}") from None
        detail = {"slot_id": slot.id, "mode": mode, "seat_channel": seat_channel, "target": target,
                  "leader_id": slot.leader_id}
        if call is not None:
            ids = await self._write_call(call, "leader_transfer", actor, detail)
            log.info("leader: %s transferred %s to the leader (%s)", actor, what, mode)
            return {**ids, "node": call.node, "linkedid": call.linkedid, **detail}
        event_id = await self._write(order["id"], "leader_transfer", actor, detail)
        log.info("leader: %s transferred order %s to the leader (%s)", actor, order_number, mode)
        return {"event_id": event_id, "order_number": order_number, **detail}

    async def instruction(self, order_number: str, body: Mapping[str, Any], leader_id: int, entered_by: str,
                          role: str) -> dict:
        text = _text("text", body.get("text"), 1, 4000, lines=True)
        solved = _flag("solved_on_spot", body.get("solved_on_spot"))
        supervised = _flag("supervised", body.get("supervised"))
        slot_id = body.get("slot_id")
        if slot_id is not None and (not isinstance(slot_id, int) or isinstance(slot_id, bool) or slot_id < 1):
            raise bad("slot_id", "must be a slot id")
        async with self.pool.acquire() as conn:
            order = await self._order(conn, order_number)
            if not await conn.fetchval("SELECT true FROM leaders WHERE id = $1", leader_id):
                raise bad("leader_id", "no such leader")
        if slot_id is not None:
            slot = await self.slot(slot_id)
            if slot.leader_id != leader_id:
                raise bad("slot_id", "the slot is another leader's")
        else:
            live = [s for s in await self.live_slots() if s.leader_id == leader_id]
            slot_id = live[0].id if live else None
        detail = {"text": text, "leader_id": leader_id, "entered_by": entered_by, "entered_by_role": role,
                  "slot_id": slot_id, "assigned": True, "supervised": supervised, "solved_on_spot": solved}
        event_id = await self._write(order["id"], "leader_instruction", entered_by, detail)
        log.info("leader: instruction of leader %s on order %s entered by %s", leader_id, order_number, entered_by)
        return {"event_id": event_id, "order_number": order_number, **detail}

    async def callback(self, slot_id: int, order_number: str, actor: str, leader_user_id: int | None = None,
                       caller_id: str | None = '"12345" <12345>') -> dict:
        """The leader seat calls a hard case's citizen back: Originate the leader seat first, then
        the order's caller number through hotline-callback."""
        slot = await self.slot(slot_id)
        if leader_user_id is not None and slot.leader_user_id != leader_user_id:
            raise LeaderError(403, "only the slot's leader calls its hard cases back")
        async with self.pool.acquire() as conn:
            order = await self._order(conn, order_number)
        if order["id"] not in slot.cases:
            raise bad("order_number", "not one of the slot's hard cases")
        number = (order["caller_number"] or "").strip()
        if not PHONE_NUMBER.fullmatch(number):
            raise LeaderError(409, f"order {order_number} has no caller number to call back")
        self._require_live(slot)
        if self.actions is None:
            raise LeaderError(503, "no Asterisk link in this instance")
        try:
            resp = await self.actions.originate(
                slot.seat_interface, context=CALLBACK_CONTEXT, exten=number, caller_id=caller_id,
                variables={"HOTLINE_CALLBACK": order_number})
        except AmiError as exc:
            raise LeaderError(502, f"Asterisk refused the callback: {exc}") from None
        action_id = resp.frame.action_id
        if action_id:
            self._callbacks[action_id] = (order["id"], slot.id)
        detail = {"slot_id": slot.id, "leader_id": slot.leader_id, "leader_seat": slot.seat_interface,
                  "number": number, "action_id": action_id, "outcome": "queued"}
        event_id = await self._write(order["id"], "leader_callback", actor, detail)
        log.info("leader: callback of order %s from %s queued", order_number, slot.seat_interface)
        return {"event_id": event_id, "order_number": order_number, **detail}

    def expects(self, event: AmiEvent) -> bool:
        return event.name == "OriginateResponse" and event.frame.action_id in self._callbacks

    async def on_event(self, event: AmiEvent) -> None:
        """Record the outcome of a leader callback from its OriginateResponse (other events: ignored)."""
        if not self.expects(event):
            return
        action_id = event.frame.action_id
        order_id, slot_id = self._callbacks.pop(action_id)
        response = event.frame.get("Response", "") or ""
        detail = {"slot_id": slot_id, "action_id": action_id, "response": response,
                  "reason": event.frame.get("Reason"), "channel": event.frame.get("Channel"),
                  "leader_answered": response == "Success"}
        await self._write(order_id, "leader_callback_result", "asterisk", detail)

    # ---- report ------------------------------------------------------------------------------

    async def report(self, slot_id: int) -> dict:
        """What happened in the slot, from Postgres.

        offered: calls that joined the leader queue inside the slot, or were transferred to the
        leader in this slot (an order with this slot's leader_transfer whose call's seat left it
        by transfer); answered_by_operators: of those, the ones first answered by a seat that is
        not the leader's (the pre-screen); answered_by_leader: the ones the leader seat answered
        (first answer, an answer of the leader seat in the leader queue, or an attended transfer
        that completed); orders_assigned / solved_on_spot: orders with this slot's instructions;
        callbacks_made / callbacks_answered: this slot's leader callbacks and their results."""
        slot = await self.slot(slot_id)
        start, end = slot_window(slot.slot_date, slot.start_time, slot.end_time, self.tz)
        async with self.pool.acquire() as conn:
            calls = await conn.fetchrow(_REPORT_CALLS, start, end, slot.queue, slot.id, slot.seat_interface,
                                        [slot.seat_name, slot.leader_name])
            orders = await conn.fetchrow(_REPORT_ORDERS, slot.id)
        return {"slot_id": slot.id, "leader_id": slot.leader_id, "queue": slot.queue,
                "start": start.isoformat(), "end": end.isoformat(), **dict(calls), **dict(orders)}


def _on_seat(channel: str, seat: str) -> bool:
    """Is ``channel`` (PJSIP/8001-0000001a, Local/1001@agents-0000001b;1) a channel of ``seat``
    (PJSIP/8001, Local/1001@agents/n)?"""
    device = channel.split(";", 1)[0].rsplit("-", 1)[0].lower()
    seat = seat.lower()
    if seat.startswith("local/") and seat.endswith("/n"):
        seat = seat[:-2]
    return device == seat


_REPORT_CALLS = """
WITH transferred AS (
    SELECT DISTINCT c.id, e.detail->>'mode' AS mode FROM work_order_events e
    JOIN calls c ON c.work_order_id = e.work_order_id
    WHERE e.kind = 'leader_transfer' AND (e.detail->>'slot_id')::bigint = $4
      AND EXISTS (SELECT 1 FROM call_events ce WHERE ce.call_id = c.id AND ce.kind = 'completed'
                  AND ce.detail->>'reason' = 'transfer')
), queued AS (
    SELECT DISTINCT ce.call_id AS id FROM call_events ce
    WHERE ce.kind = 'queue_join' AND lower(ce.detail->>'queue') = lower($3) AND ce.at >= $1 AND ce.at < $2
), offered AS (
    SELECT id FROM transferred UNION SELECT id FROM queued
)
SELECT
    count(*) AS calls_offered,
    count(*) FILTER (WHERE c.answered_at IS NOT NULL AND lower(coalesce(c.seat_interface, '')) <> lower($5))
        AS answered_by_operators,
    count(*) FILTER (WHERE lower(coalesce(c.seat_interface, '')) = lower($5)
        OR EXISTS (SELECT 1 FROM call_events a WHERE a.call_id = c.id AND a.kind = 'answered'
                   AND (a.detail->>'seat' = ANY($6::text[]) OR lower(a.detail->>'interface') = lower($5)))
        OR EXISTS (SELECT 1 FROM transferred t WHERE t.id = c.id AND t.mode = 'attended'))
        AS answered_by_leader
FROM offered o JOIN calls c ON c.id = o.id
"""
_REPORT_ORDERS = """
SELECT
    count(DISTINCT work_order_id) FILTER (WHERE kind = 'leader_instruction') AS orders_assigned,
    count(DISTINCT work_order_id) FILTER (WHERE kind = 'leader_instruction'
                                          AND (detail->>'solved_on_spot')::boolean) AS solved_on_spot,
    count(*) FILTER (WHERE kind = 'leader_callback') AS callbacks_made,
    count(*) FILTER (WHERE kind = 'leader_callback_result' AND (detail->>'leader_answered')::boolean)
        AS callbacks_answered
FROM work_order_events
WHERE kind IN ('leader_instruction', 'leader_callback', 'leader_callback_result')
  AND (detail->>'slot_id')::bigint = $1
"""
