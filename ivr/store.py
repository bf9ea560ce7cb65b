"""The IVR's data in Postgres: flow versions and the live one, special topics, business-hours
calendars, caller lists, and the self-service order look-up.

How this works: a flow version is saved only after it validated (``ivr.flow.parse_flow`` against
the queues known now), numbered one past the flow's last version under a per-flow advisory lock,
and never changed afterwards. Which version new calls run is the flow's row in ``ivr_flow_live``,
switched in the same transaction as the save (or later, by ``activate``: a rollback is the
activation of an earlier version). A call loads the live version once, at its start, so a switch
applies to the next call and never to a call in progress. Every change writes its
``config_audit`` row in its own transaction. Errors: ``IvrDataError`` with an HTTP status and
the field (400 bad value, 404 unknown, 409 clash).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from typing import Any, Callable

import asyncpg

from ivr.flow import FLOW_NAME_RE, KEYWORD_RE, LIST_RE
from ivr.hours import Calendar
from queues.config_store import Actor, to_json
from queues.errors import Refused
from telephony.model import PHONE_NUMBER

FLOW_LOCK = 0x4849_5652  # "HIVR": pg_advisory_xact_lock(FLOW_LOCK, hashtext(name))
_ORDER_DIGITS = re.compile(r"^([0-9]{8})([0-9]{6,10})$")
MAX_SOURCE = 200_000


class IvrDataError(Refused):
    def __init__(self, status: int, message: str, field: str | None = None, details: list[str] | None = None):
        super().__init__(message, field, status=status, details=details)


def bad(field: str, message: str) -> IvrDataError:
    return IvrDataError(400, message, field)


@dataclass(frozen=True)
class FlowVersion:
    name: str
    version: int
    source: str
    comment: str
    created_by: str
    created_at: dt.datetime
    live: bool = False

    def summary(self) -> dict:
        return {"name": self.name, "version": self.version, "comment": self.comment, "created_by": self.created_by,
                "created_at": self.created_at.isoformat(), "live": self.live}


def check_flow_name(name: Any) -> str:
    if not isinstance(name, str) or not FLOW_NAME_RE.fullmatch(name):
        raise bad("name", "a flow name is 1-64 of a-z, 0-9, '_' and '-'")
    return name


def _text(field: str, value: Any, high: int) -> str:
    if not isinstance(value, str) or len(value) > high or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise bad(field, f"must be text of at most {high} characters on one line")
    return value


async def _audit(conn: asyncpg.Connection, actor: Actor, entity: str, key: str, action: str,
                 before: Any, after: Any, entity_id: int | None = None) -> None:
    await conn.execute(
        "INSERT INTO config_audit (actor_user_id, actor, entity, entity_id, entity_key, action, before, after)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8::jsonb)",
        actor.user_id, actor.login, entity, entity_id, key, action,
        None if before is None else json.dumps(to_json(before)),
        None if after is None else json.dumps(to_json(after)))


def order_number_from_digits(digits: str) -> str | None:
    """The order number a caller keyed as digits (12345-YYYYMMDD-NNNNNN without '12345' and
    the dashes: 14 digits, or with the leading 12345), or None."""
    if digits.startswith("12345") and len(digits) >= 19:
        digits = digits[5:]
    m = _ORDER_DIGITS.match(digits)
    return f"12345-{m.group(1)}-{m.group(2)}" if m else None


class IvrStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    # ---- flows -------------------------------------------------------------------------------

    async def save_flow(self, name: str, source: Any, actor: Actor, *, validate: Callable[[str], Any],
                        comment: Any = "", activate: bool = True) -> FlowVersion:
        """Validate, then save as the flow's next version (and make it live). ``validate`` raises
        ``ivr.flow.FlowError``: nothing is written then, the live version is untouched."""
        from ivr.flow import FlowError

        name = check_flow_name(name)
        if not isinstance(source, str) or not source.strip():
            raise bad("source", "the flow's text (TOML) is required")
        if len(source) > MAX_SOURCE:
            raise bad("source", f"at most {MAX_SOURCE} characters")
        comment = _text("comment", comment, 500)
        try:
            validate(source)
        except FlowError as exc:
            raise IvrDataError(400, "the flow is not valid; nothing was saved", "source", list(exc.messages)) from None
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", FLOW_LOCK, name)
            version = await conn.fetchval(
                "SELECT coalesce(max(version), 0) + 1 FROM ivr_flow_versions WHERE name = $1", name)
            row = await conn.fetchrow(
                "INSERT INTO ivr_flow_versions (name, version, source, comment, created_by) VALUES ($1, $2, $3, $4, $5)"
                " RETURNING *", name, version, source, comment, actor.login)
            await _audit(conn, actor, "ivr_flow", name, "create", None,
                         {"version": version, "comment": comment, "activate": activate}, entity_id=version)
            if activate:
                await self._set_live(conn, name, version, actor)
        return FlowVersion(**dict(row), live=activate)

    async def activate(self, name: str, version: Any, actor: Actor, *,
                       validate: Callable[[str], Any] | None = None) -> FlowVersion:
        """Make a saved version live (a rollback), after ``validate`` accepts it again: a queue it
        names may have been deleted since it was saved."""
        from ivr.flow import FlowError

        name = check_flow_name(name)
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise bad("version", "a version number (1 or more)")
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", FLOW_LOCK, name)
            row = await conn.fetchrow("SELECT * FROM ivr_flow_versions WHERE name = $1 AND version = $2", name, version)
            if row is None:
                raise IvrDataError(404, f"flow {name} has no version {version}", "version")
            if validate is not None:
                try:
                    validate(row["source"])
                except FlowError as exc:
                    raise IvrDataError(409, f"version {version} no longer validates; the live version stays",
                                       "version", list(exc.messages)) from None
            await self._set_live(conn, name, version, actor)
        return FlowVersion(**dict(row), live=True)

    async def _set_live(self, conn: asyncpg.Connection, name: str, version: int, actor: Actor) -> None:
        before = await conn.fetchval("SELECT version FROM ivr_flow_live WHERE name = $1", name)
        await conn.execute(
            "INSERT INTO ivr_flow_live (name, version, activated_by) VALUES ($1, $2, $3)"
            " ON CONFLICT (name) DO UPDATE SET version = $2, activated_by = $3, activated_at = now()",
            name, version, actor.login)
        await _audit(conn, actor, "ivr_flow", name, "update" if before is not None else "create",
                     None if before is None else {"live": before}, {"live": version}, entity_id=version)

    async def live_versions(self) -> list[FlowVersion]:
        """The live version of every flow (``hotline prompts build`` builds their sounds)."""
        rows = await self.pool.fetch("SELECT v.* FROM ivr_flow_live l JOIN ivr_flow_versions v USING (name, version)"
                                     " ORDER BY v.name")
        return [FlowVersion(**dict(r), live=True) for r in rows]

    async def live_version_number(self, name: str) -> int | None:
        return await self.pool.fetchval("SELECT version FROM ivr_flow_live WHERE name = $1", name)

    async def flow_version(self, name: str, version: int) -> FlowVersion:
        row = await self.pool.fetchrow(
            "SELECT v.*, (l.version IS NOT NULL) AS live FROM ivr_flow_versions v"
            " LEFT JOIN ivr_flow_live l USING (name, version) WHERE v.name = $1 AND v.version = $2", name, version)
        if row is None:
            raise IvrDataError(404, f"flow {name} has no version {version}")
        return FlowVersion(**dict(row))

    async def flows(self) -> list[dict]:
        rows = await self.pool.fetch(
            "SELECT v.name, max(v.version) AS latest, l.version AS live, l.activated_at, l.activated_by"
            " FROM ivr_flow_versions v LEFT JOIN ivr_flow_live l USING (name)"
            " GROUP BY v.name, l.version, l.activated_at, l.activated_by ORDER BY v.name")
        return [to_json(dict(r)) for r in rows]

    async def flow_versions(self, name: str) -> list[dict]:
        rows = await self.pool.fetch(
            "SELECT v.name, v.version, v.source, v.comment, v.created_by, v.created_at,"
            " (l.version IS NOT NULL) AS live FROM ivr_flow_versions v"
            " LEFT JOIN ivr_flow_live l USING (name, version) WHERE v.name = $1 ORDER BY v.version", name)
        return [FlowVersion(**dict(r)).summary() for r in rows]

    # ---- special topics ----------------------------------------------------------------------

    async def put_topic(self, key: Any, body: dict, actor: Actor) -> dict:
        if not isinstance(key, str) or not KEYWORD_RE.fullmatch(key):
            raise bad("key", "a topic key is 1-64 of a-z, 0-9, '_' and '-'")
        title = _text("title", body.get("title", key), 200) or key
        active = body.get("active", False)
        if not isinstance(active, bool):
            raise bad("active", "true or false")
        window = []
        for field in ("starts_at", "ends_at"):
            value = body.get(field)
            if value is not None:
                try:
                    value = dt.datetime.fromisoformat(value) if isinstance(value, str) else None
                except ValueError:
                    value = None
                if value is None or value.tzinfo is None:
                    raise bad(field, "an ISO 8601 time with its offset, e.g. 2026-09-01T08:00:00+08:00, or null")
            window.append(value)
        if window[0] and window[1] and window[1] <= window[0]:
            raise bad("ends_at", "must be after starts_at")
        async with self.pool.acquire() as conn, conn.transaction():
            before = await conn.fetchrow("SELECT * FROM ivr_topics WHERE key = $1 FOR UPDATE", key)
            after = await conn.fetchrow(
                "INSERT INTO ivr_topics (key, title, active, starts_at, ends_at, updated_by) VALUES ($1,$2,$3,$4,$5,$6)"
                " ON CONFLICT (key) DO UPDATE SET title=$2, active=$3, starts_at=$4, ends_at=$5, updated_by=$6,"
                " updated_at=now() RETURNING *", key, title, active, window[0], window[1], actor.login)
            await _audit(conn, actor, "ivr_topic", key, "update" if before else "create",
                         dict(before) if before else None, dict(after))
        return to_json(dict(after))

    async def topics(self) -> list[dict]:
        return [to_json(dict(r)) for r in await self.pool.fetch("SELECT * FROM ivr_topics ORDER BY key")]

    async def topic_active(self, key: str, now: dt.datetime) -> bool:
        return bool(await self.pool.fetchval(
            "SELECT active AND (starts_at IS NULL OR starts_at <= $2) AND (ends_at IS NULL OR $2 < ends_at)"
            " FROM ivr_topics WHERE key = $1", key, now))

    # ---- business-hours calendars ------------------------------------------------------------

    async def put_calendar(self, calendar: Calendar, actor: Actor) -> dict:
        async with self.pool.acquire() as conn, conn.transaction():
            before = await conn.fetchrow("SELECT * FROM ivr_calendars WHERE name = $1 FOR UPDATE", calendar.name)
            after = await conn.fetchrow(
                "INSERT INTO ivr_calendars (name, workday, restday, official_holidays, closed_dates, open_dates,"
                " updated_by) VALUES ($1, $2::jsonb, $3::jsonb, $4, $5, $6, $7) ON CONFLICT (name) DO UPDATE SET"
                " workday=$2::jsonb, restday=$3::jsonb, official_holidays=$4, closed_dates=$5, open_dates=$6,"
                " updated_by=$7, updated_at=now() RETURNING *",
                calendar.name, json.dumps(calendar.workday), json.dumps(calendar.restday), calendar.official_holidays,
                calendar.closed_dates, calendar.open_dates, actor.login)
            await _audit(conn, actor, "ivr_calendar", calendar.name, "update" if before else "create",
                         _calendar_json(before) if before else None, _calendar_json(after))
        return _calendar_json(after)

    async def calendar(self, name: str) -> Calendar | None:
        row = await self.pool.fetchrow("SELECT * FROM ivr_calendars WHERE name = $1", name)
        return None if row is None else _calendar(row)

    async def calendars(self) -> list[dict]:
        return [_calendar_json(r) for r in await self.pool.fetch("SELECT * FROM ivr_calendars ORDER BY name")]

    # ---- caller lists ------------------------------------------------------------------------

    async def add_caller(self, list_name: Any, number: Any, note: Any, actor: Actor) -> dict:
        list_name, number = _list_name(list_name), _number(number)
        note = _text("note", note if note is not None else "", 200)
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "INSERT INTO caller_list_entries (list, number, note, created_by) VALUES ($1, $2, $3, $4)"
                " ON CONFLICT DO NOTHING RETURNING *", list_name, number, note, actor.login)
            if row is None:
                raise IvrDataError(409, f"{number} is already on the {list_name} list", "number")
            await _audit(conn, actor, "caller_list", f"{list_name}/{number}", "create", None, dict(row))
        return to_json(dict(row))

    async def remove_caller(self, list_name: Any, number: Any, actor: Actor) -> None:
        list_name, number = _list_name(list_name), _number(number)
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "DELETE FROM caller_list_entries WHERE list = $1 AND number = $2 RETURNING *", list_name, number)
            if row is None:
                raise IvrDataError(404, f"{number} is not on the {list_name} list", "number")
            await _audit(conn, actor, "caller_list", f"{list_name}/{number}", "delete", dict(row), None)

    async def callers(self, list_name: str | None = None) -> list[dict]:
        rows = await self.pool.fetch(
            "SELECT * FROM caller_list_entries WHERE $1::text IS NULL OR list = $1 ORDER BY list, number", list_name)
        return [to_json(dict(r)) for r in rows]

    async def lists_of(self, number: str | None) -> set[str]:
        if not number or not PHONE_NUMBER.fullmatch(number):
            return set()
        rows = await self.pool.fetch("SELECT list FROM caller_list_entries WHERE number = $1", number)
        return {r["list"] for r in rows}

    # ---- self-service ------------------------------------------------------------------------

    async def order_status(self, digits: str, caller_number: str | None) -> str | None:
        """The status of the order the caller keyed, only if it is an order of the calling
        number (never another citizen's); None otherwise."""
        number = order_number_from_digits(digits or "")
        if number is None or not caller_number or not PHONE_NUMBER.fullmatch(caller_number):
            return None
        return await self.pool.fetchval(
            "SELECT status FROM work_orders WHERE number = $1 AND caller_number = $2", number, caller_number)


def _list_name(value: Any) -> str:
    if not isinstance(value, str) or not LIST_RE.fullmatch(value):
        raise bad("list", "a list name is 1-32 of a-z, 0-9, '_' and '-' (e.g. elderly, disabled, vip)")
    return value


def _number(value: Any) -> str:
    if not isinstance(value, str) or not PHONE_NUMBER.fullmatch(value):
        raise bad("number", "a telephone number of 3-20 digits, optionally after '+'")
    return value


def _calendar(row) -> Calendar:
    return Calendar(name=row["name"], workday=[tuple(r) for r in json.loads(row["workday"])],
                    restday=[tuple(r) for r in json.loads(row["restday"])],
                    official_holidays=row["official_holidays"], closed_dates=list(row["closed_dates"]),
                    open_dates=list(row["open_dates"]))


def _calendar_json(row) -> dict:
    return to_json(_calendar(row).model_dump()) | {"updated_by": row["updated_by"],
                                                    "updated_at": row["updated_at"].isoformat()}
