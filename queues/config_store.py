"""The centre's configuration in Postgres: read, create, update, delete, each change audited.

Every change runs in one transaction together with its ``config_audit`` row (who, when, which
entity, the action, the row before and after): a change that fails leaves nothing, its audit row
included. Writes of one kind are serialised by a transaction advisory lock, so the checks that
span rows (no overflow cycle between queues, no two slots of one leader or one seat at once) hold
under concurrent requests. The schema's constraints are the last word; their violations come back
as ``BadValue`` (400, naming the field), ``Conflict`` (409) or ``NotFound`` (404).

Values come in already validated (``queues.config_models``); this module only talks to Postgres.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Mapping

import asyncpg

from queues.errors import Refused

# pg_advisory_xact_lock(CONFIG_LOCK, kind number): one writer per kind at a time
CONFIG_LOCK = 0x4843_4647  # "HCFG"


class ConfigChangeError(Refused):
    status = 500


class NotFound(ConfigChangeError):
    status = 404


class Conflict(ConfigChangeError):
    status = 409


class BadValue(ConfigChangeError):
    status = 400


@dataclass(frozen=True)
class Actor:
    """Who makes a change: a user of the API, or a command line (user_id None)."""

    user_id: int | None
    login: str


@dataclass(frozen=True)
class Child:
    """A list field kept in a child table: ``field`` of the entity is the list of ``column``."""

    field: str
    table: str
    column: str
    ordered: bool = False  # keep the given order in a ``position`` column


@dataclass(frozen=True)
class Kind:
    entity: str                   # config_audit.entity
    table: str
    columns: tuple[str, ...]      # the columns the API writes
    lock: int
    what: str                     # for messages: "queue", "seat", ...
    # constraint name -> (field, message) for the schema's own refusals
    constraints: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    children: tuple[Child, ...] = ()

    @property
    def fields(self) -> tuple[str, ...]:
        return self.columns + tuple(c.field for c in self.children)


QUEUES = Kind("queue", "queues", (
    "name", "purpose", "strategy", "service_level_seconds", "max_wait_seconds", "ring_timeout_seconds",
    "wrapup_seconds", "category", "overflow_queue_id"), 1, "queue", {
    "queues_name_key": ("name", "a queue of this name exists (names are compared without case)"),
    "queues_overflow_queue_id_fkey": ("overflow_queue_id", "no such queue"),
    "queues_overflow_not_self_check": ("overflow_queue_id", "a queue cannot overflow into itself"),
    "queues_name_check": ("name", "not a valid app_queue name"),
})
SEATS = Kind("seat", "seats", ("interface", "name", "state_interface", "location"), 2, "seat", {
    "seats_interface_key": ("interface", "a seat with this interface exists"),
})
OPERATORS = Kind("operator", "operators", ("name", "employee_no", "user_id"), 3, "operator", {
    "operators_employee_no_key": ("employee_no", "an operator with this employee number exists"),
    "operators_user_id_key": ("user_id", "this user is linked to another operator"),
    "operators_user_id_fkey": ("user_id", "no such user"),
})
LEADERS = Kind("leader", "leaders", ("name", "title", "jurisdiction", "user_id"), 4, "leader", {
    "leaders_user_id_key": ("user_id", "this user is linked to another leader"),
    "leaders_user_id_fkey": ("user_id", "no such user"),
})
LEADER_SLOTS = Kind("leader_slot", "leader_slots", (
    "slot_date", "start_time", "end_time", "leader_id", "leader_seat_id", "queue_id", "topic"), 5, "leader slot", {
    "leader_slots_leader_id_fkey": ("leader_id", "no such leader"),
    "leader_slots_leader_seat_id_fkey": ("leader_seat_id", "no such seat"),
    "leader_slots_queue_id_fkey": ("queue_id", "no such queue of purpose 'leader'"),
    "leader_slots_time_check": ("end_time", "must be after start_time"),
    "leader_slot_prescreeners_operator_id_fkey": ("prescreen_operator_ids", "no such operator"),
    "leader_slot_cases_work_order_id_fkey": ("hard_case_order_ids", "no such work order"),
}, children=(
    Child("prescreen_operator_ids", "leader_slot_prescreeners", "operator_id"),
    Child("hard_case_order_ids", "leader_slot_cases", "work_order_id", ordered=True),
))
SKILLS_LOCK = 6
SKILL_CONSTRAINTS = {"operator_skills_queue_id_fkey": ("skills", "no such queue")}
# which kind owns the table a foreign key refusal names, for "still used by" messages
_USED_BY = {
    "queues": "a queue's overflow", "operator_skills": "an operator's skills", "leader_slots": "a leader slot",
    "leader_slot_prescreeners": "a leader slot's pre-screeners", "leader_slot_cases": "a leader slot's hard cases",
    "operators": "an operator", "leaders": "a leader",
}


def to_json(value: Any) -> Any:
    """A row's values as JSON gives them: dates and times in ISO 8601."""
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    return value


async def write_audit(conn: asyncpg.Connection, actor: Actor, entity: str, entity_id: int, action: str,
                      before: dict | None, after: dict | None) -> None:
    await conn.execute(
        "INSERT INTO config_audit (actor_user_id, actor, entity, entity_id, action, before, after)"
        " VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7::jsonb)",
        actor.user_id, actor.login, entity, entity_id, action,
        None if before is None else json.dumps(to_json(before)),
        None if after is None else json.dumps(to_json(after)))


def _select(kind: Kind) -> str:
    parts = ["t.*"]
    for c in kind.children:
        order = "position" if c.ordered else c.column
        parts.append(f"ARRAY(SELECT x.{c.column} FROM {c.table} x WHERE x.slot_id = t.id ORDER BY x.{order})"
                     f" AS {c.field}")
    return f"SELECT {', '.join(parts)} FROM {kind.table} t"


def _row(record: asyncpg.Record | None) -> dict | None:
    return None if record is None else {k: (list(v) if isinstance(v, list) else v) for k, v in record.items()}


class ConfigStore:
    def __init__(self, pool: asyncpg.Pool):
        self._pool = pool

    # ---- reads -------------------------------------------------------------------------------

    async def list(self, kind: Kind, where: str = "", *args: Any) -> list[dict]:
        sql = f"{_select(kind)} {where} ORDER BY t.id"
        async with self._pool.acquire() as conn:
            return [_row(r) for r in await conn.fetch(sql, *args)]

    async def get(self, kind: Kind, entity_id: int) -> dict:
        async with self._pool.acquire() as conn:
            row = await self._fetch(conn, kind, entity_id)
        if row is None:
            raise NotFound(f"no {kind.what} {entity_id}")
        return row

    async def operator_of_user(self, user_id: int) -> int | None:
        """The id of the operator this user signs in as, or None."""
        async with self._pool.acquire() as conn:
            return await conn.fetchval("SELECT id FROM operators WHERE user_id = $1", user_id)

    async def skills(self, operator_id: int) -> list[dict]:
        async with self._pool.acquire() as conn:
            if not await conn.fetchval("SELECT true FROM operators WHERE id = $1", operator_id):
                raise NotFound(f"no operator {operator_id}")
            return await self._skills(conn, operator_id)

    # ---- changes -----------------------------------------------------------------------------

    async def create(self, kind: Kind, values: Mapping[str, Any], actor: Actor) -> dict:
        async def change(conn: asyncpg.Connection) -> dict:
            cols = kind.columns
            placeholders = ", ".join(f"${i}" for i in range(1, len(cols) + 1))
            new_id = await conn.fetchval(
                f"INSERT INTO {kind.table} ({', '.join(cols)}) VALUES ({placeholders}) RETURNING id",
                *(values[c] for c in cols))
            await self._write_children(conn, kind, new_id, values)
            await self._check(conn, kind, new_id)
            after = await self._fetch(conn, kind, new_id)
            await write_audit(conn, actor, kind.entity, new_id, "create", None, after)
            return after

        return await self._in_transaction(kind.lock, kind.constraints, change, kind.table)

    async def update(self, kind: Kind, entity_id: int, merge: Callable[[dict], Mapping[str, Any]],
                     actor: Actor) -> dict:
        """``merge(before)`` gives the validated new values (it may raise InvalidInput)."""
        async def change(conn: asyncpg.Connection) -> dict:
            before = await self._fetch(conn, kind, entity_id, lock=True)
            if before is None:
                raise NotFound(f"no {kind.what} {entity_id}")
            values = merge({f: before[f] for f in kind.fields})
            if all(values[f] == before[f] for f in kind.fields):
                return before  # nothing changes: nothing to audit
            sets = ", ".join(f"{c} = ${i}" for i, c in enumerate(kind.columns, start=2))
            await conn.execute(f"UPDATE {kind.table} SET {sets}, updated_at = now() WHERE id = $1",
                               entity_id, *(values[c] for c in kind.columns))
            await self._write_children(conn, kind, entity_id, values, replace=True)
            await self._check(conn, kind, entity_id)
            after = await self._fetch(conn, kind, entity_id)
            await write_audit(conn, actor, kind.entity, entity_id, "update", before, after)
            return after

        return await self._in_transaction(kind.lock, kind.constraints, change, kind.table)

    async def delete(self, kind: Kind, entity_id: int, actor: Actor) -> None:
        async def change(conn: asyncpg.Connection) -> None:
            before = await self._fetch(conn, kind, entity_id, lock=True)
            if before is None:
                raise NotFound(f"no {kind.what} {entity_id}")
            if kind is OPERATORS:
                before["skills"] = await self._skills(conn, entity_id)  # they go with the operator
            await conn.execute(f"DELETE FROM {kind.table} WHERE id = $1", entity_id)
            await write_audit(conn, actor, kind.entity, entity_id, "delete", before, None)

        await self._in_transaction(kind.lock, kind.constraints, change, kind.table, deleting=True)

    async def set_skills(self, operator_id: int, skills: list[dict], actor: Actor) -> list[dict]:
        """Replace the operator's skills with ``skills`` ([{queue_id, penalty}])."""
        async def change(conn: asyncpg.Connection) -> list[dict]:
            if not await conn.fetchval("SELECT true FROM operators WHERE id = $1 FOR UPDATE", operator_id):
                raise NotFound(f"no operator {operator_id}")
            before = await self._skills(conn, operator_id)
            wanted = sorted(({"queue_id": s["queue_id"], "penalty": s["penalty"]} for s in skills),
                            key=lambda s: s["queue_id"])
            if wanted == before:
                return before
            await conn.execute("DELETE FROM operator_skills WHERE operator_id = $1", operator_id)
            await conn.executemany(
                "INSERT INTO operator_skills (operator_id, queue_id, penalty) VALUES ($1, $2, $3)",
                [(operator_id, s["queue_id"], s["penalty"]) for s in wanted])
            after = await self._skills(conn, operator_id)
            await write_audit(conn, actor, "operator_skills", operator_id, "update",
                              {"skills": before}, {"skills": after})
            return after

        return await self._in_transaction(SKILLS_LOCK, SKILL_CONSTRAINTS, change, "operator_skills")

    # ---- helpers -----------------------------------------------------------------------------

    async def _in_transaction(self, lock: int, constraints: Mapping[str, tuple[str, str]],
                              change: Callable[[asyncpg.Connection], Awaitable[Any]], table: str,
                              deleting: bool = False) -> Any:
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", CONFIG_LOCK, lock)
                return await change(conn)
        except asyncpg.UniqueViolationError as exc:
            name, message = constraints.get(exc.constraint_name or "", (None, "already exists"))
            raise Conflict(message, name) from None
        except asyncpg.ForeignKeyViolationError as exc:
            mapped = constraints.get(exc.constraint_name or "")
            if mapped is not None and not deleting:
                raise BadValue(mapped[1], mapped[0]) from None
            # a row still refers to this one (a delete, or a change of what it is referred by)
            users = _USED_BY.get(exc.table_name or "", exc.table_name or "another row")
            raise Conflict(f"still used by {users}") from None
        except (asyncpg.CheckViolationError, asyncpg.NotNullViolationError) as exc:
            name, message = constraints.get(exc.constraint_name or "",
                                            (getattr(exc, "column_name", None), "refused by the schema"))
            raise BadValue(message, name) from None

    async def _fetch(self, conn: asyncpg.Connection, kind: Kind, entity_id: int, lock: bool = False) -> dict | None:
        sql = f"{_select(kind)} WHERE t.id = $1" + (" FOR UPDATE OF t" if lock else "")
        return _row(await conn.fetchrow(sql, entity_id))

    async def _skills(self, conn: asyncpg.Connection, operator_id: int) -> list[dict]:
        rows = await conn.fetch("SELECT queue_id, penalty FROM operator_skills WHERE operator_id = $1"
                                " ORDER BY queue_id", operator_id)
        return [dict(r) for r in rows]

    async def _write_children(self, conn: asyncpg.Connection, kind: Kind, entity_id: int,
                              values: Mapping[str, Any], replace: bool = False) -> None:
        for c in kind.children:
            if replace:
                await conn.execute(f"DELETE FROM {c.table} WHERE slot_id = $1", entity_id)
            ids = list(values.get(c.field) or [])
            if c.ordered:
                await conn.executemany(f"INSERT INTO {c.table} (slot_id, {c.column}, position) VALUES ($1, $2, $3)",
                                       [(entity_id, v, i) for i, v in enumerate(ids)])
            else:
                await conn.executemany(f"INSERT INTO {c.table} (slot_id, {c.column}) VALUES ($1, $2)",
                                       [(entity_id, v) for v in ids])

    async def _check(self, conn: asyncpg.Connection, kind: Kind, entity_id: int) -> None:
        """Rules across rows, checked under the kind's lock after the write."""
        if kind is QUEUES:
            looped = await conn.fetchval(
                """
                WITH RECURSIVE chain (id, depth) AS (
                    SELECT overflow_queue_id, 1 FROM queues WHERE id = $1
                    UNION ALL
                    SELECT q.overflow_queue_id, c.depth + 1 FROM chain c JOIN queues q ON q.id = c.id
                    WHERE c.id <> $1 AND c.depth < 1000
                )
                SELECT EXISTS (SELECT 1 FROM chain WHERE id = $1)
                """, entity_id)
            if looped:
                raise BadValue("overflow would loop back to this queue", "overflow_queue_id")
        elif kind is LEADER_SLOTS:
            clash = await conn.fetchrow(
                """
                SELECT o.id, o.leader_id = s.leader_id AS same_leader FROM leader_slots s
                JOIN leader_slots o ON o.slot_date = s.slot_date AND o.id <> s.id
                     AND o.start_time < s.end_time AND s.start_time < o.end_time
                     AND (o.leader_id = s.leader_id OR o.leader_seat_id = s.leader_seat_id)
                WHERE s.id = $1 ORDER BY o.id LIMIT 1
                """, entity_id)
            if clash is not None:
                name = "leader_id" if clash["same_leader"] else "leader_seat_id"
                raise Conflict(f"overlaps leader slot {clash['id']} of the same "
                               f"{'leader' if clash['same_leader'] else 'seat'}", name)
