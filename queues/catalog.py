"""The queues the running service routes to: the settings' queues, overlaid by Postgres's.

How this works: the settings (TOML, environment) give a site's baseline queues; the ``queues``
table, edited through the HTTP API, adds queues and overrides a baseline queue of the same name
(app_queue compares names without case, and so does this overlay). ``QueueCatalog`` holds the
merged list in memory, so the IVR and the live views read it without a query; ``reload`` reads
Postgres again and ``run`` does so every ``refresh_interval`` seconds, calling the listeners when
something changed (the live views take the new service levels). A Postgres outage keeps the last
list that was read (at start: the settings' queues alone), logged once per outage: routing never
waits for the configuration database.

``overflow_queue_id`` becomes the overflow queue's name. A Postgres queue whose overflow names a
queue this node does not know is kept without its overflow, and a Postgres row that breaks a
settings rule (it cannot: the schema has the same CHECKs) is skipped with a warning rather than
taking every other queue down with it.

``load_centre`` reads the same overlay once for ``hotline asterisk-config``: Asterisk must know
every queue the service may route to (the generated dialplan whitelists them) and every seat a
transfer may reach, so the snippets are rendered from the merged view.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable, Iterable

import asyncpg
from pydantic import ValidationError

from config.settings import QueueConfig, SeatConfig, Settings

log = logging.getLogger("hotline.catalog")

_QUEUES_SQL = """
SELECT q.name, q.purpose, q.strategy, q.service_level_seconds, q.max_wait_seconds,
       q.ring_timeout_seconds, q.wrapup_seconds, q.category, o.name AS overflow
FROM queues q LEFT JOIN queues o ON o.id = q.overflow_queue_id
ORDER BY q.id
"""
_SEATS_SQL = "SELECT interface, name, state_interface FROM seats ORDER BY id"


def queue_from_row(row) -> QueueConfig:
    return QueueConfig(
        name=row["name"], purpose=row["purpose"], strategy=row["strategy"],
        service_level=row["service_level_seconds"], max_wait=row["max_wait_seconds"],
        ring_timeout=row["ring_timeout_seconds"], wrapup=row["wrapup_seconds"], category=row["category"],
        overflow=row["overflow"],
    )


def merge_queues(base: Iterable[QueueConfig], overlay: Iterable[QueueConfig]) -> list[QueueConfig]:
    """``base`` in its order, each replaced by the overlay's queue of the same name (without case),
    then the overlay's other queues; an overflow naming no queue of the result is dropped."""
    overlay = list(overlay)
    by_name = {q.name.lower(): q for q in overlay}
    merged = [by_name.pop(q.name.lower(), q) for q in base]
    merged += [q for q in overlay if q.name.lower() in by_name]
    names = {q.name.lower() for q in merged}
    out = []
    for q in merged:
        if q.overflow is not None and q.overflow.lower() not in names:
            log.warning("queue %s: overflow queue %r is unknown here; kept without overflow", q.name, q.overflow)
            q = q.model_copy(update={"overflow": None})
        out.append(q)
    return out


async def read_queues(conn) -> list[QueueConfig]:
    queues = []
    for row in await conn.fetch(_QUEUES_SQL):
        try:
            queues.append(queue_from_row(row))
        except ValidationError as exc:
            log.warning("queue %r in Postgres skipped: %s", row["name"], exc.errors()[0]["msg"])
    return queues


async def read_seats(conn) -> list[SeatConfig]:
    seats = []
    for row in await conn.fetch(_SEATS_SQL):
        try:
            seats.append(SeatConfig(interface=row["interface"], name=row["name"],
                                    state_interface=row["state_interface"], queues=[]))
        except ValidationError as exc:
            log.warning("seat %r in Postgres skipped: %s", row["interface"], exc.errors()[0]["msg"])
    return seats


def merge_seats(base: Iterable[SeatConfig], extra: Iterable[SeatConfig]) -> list[SeatConfig]:
    """The settings' (static) seats, then the Postgres seats no static seat already names."""
    base = list(base)
    known = {s.interface for s in base}
    return base + [s for s in extra if s.interface not in known]


async def load_centre(settings: Settings, dsn: str) -> Settings:
    """The settings with the Postgres queues and seats merged in (for rendering Asterisk's side)."""
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        queues = await read_queues(conn)
        seats = await read_seats(conn)
    finally:
        await conn.close()
    return settings.model_copy(update={
        "queues": merge_queues(settings.queues, queues),
        "seats": merge_seats(settings.seats, seats),
    })


class QueueCatalog:
    def __init__(self, settings: Settings, pool: asyncpg.Pool | None = None, *, refresh_interval: float = 2.0) -> None:
        self.settings = settings
        self.pool = pool
        self.refresh_interval = refresh_interval
        self._queues: list[QueueConfig] = list(settings.queues)
        self._by_name = {q.name.lower(): q for q in self._queues}
        self._listeners: list[Callable[[list[QueueConfig]], None]] = []
        self._failing = False
        self.loaded = False   # True once Postgres was read

    @property
    def queues(self) -> list[QueueConfig]:
        return list(self._queues)

    def queue(self, name: str | None) -> QueueConfig | None:
        """The queue of this name (app_queue's rule: letter case does not count), or None."""
        return self._by_name.get(name.lower()) if name else None

    def on_change(self, listener: Callable[[list[QueueConfig]], None]) -> None:
        self._listeners.append(listener)

    async def reload(self) -> bool:
        """Read Postgres; True when the merged list changed. Raises what Postgres raises."""
        if self.pool is None:
            return False
        async with self.pool.acquire(timeout=5) as conn:
            rows = await read_queues(conn)
        merged = merge_queues(self.settings.queues, rows)
        self.loaded = True
        if merged == self._queues:
            return False
        self._queues = merged
        self._by_name = {q.name.lower(): q for q in merged}
        log.info("queues: %s", ", ".join(q.name for q in merged))
        for listener in self._listeners:
            try:
                listener(self.queues)
            except Exception:  # noqa: BLE001 - a listener never stops the catalog
                log.exception("queue catalog listener failed")
        return True

    async def refresh(self) -> None:
        """``reload``, logging a Postgres outage once instead of raising."""
        try:
            await self.reload()
        except (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            if not self._failing:
                log.warning("queues: Postgres unreachable (%s); routing on the last queues read", type(exc).__name__)
            self._failing = True
            return
        if self._failing:
            log.info("queues: Postgres reachable again")
        self._failing = False

    async def run(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(self.refresh_interval)
