"""Schema migrations: numbered SQL files applied in order, each exactly once.

How this works: files are named ``NNNN_name.sql`` (``0001_initial.sql``) and applied in the
order of their number. ``migrate`` connects, takes a session-level advisory lock (so two
processes starting at once never race: the second waits, then finds nothing to do), creates
``schema_migrations(version, applied_at)`` if needed, and runs each pending file in its own
transaction together with the row that records it. A file that fails rolls back entirely (its
statements and its record) and raises MigrationError naming the file; the files before it stay
applied. A file must therefore not hold statements that cannot run in a transaction
(CREATE INDEX CONCURRENTLY, ALTER TYPE ... ADD VALUE before Postgres 12).
"""

from __future__ import annotations

import re
from pathlib import Path

import asyncpg

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# pg_advisory_lock key of the migration runner (any fixed bigint unique to this purpose)
LOCK_KEY = 0x4853_4D49_4752  # "HSMIGR"
_NAME = re.compile(r"^(\d+)_[A-Za-z0-9_]+\.sql$")


class MigrationError(RuntimeError):
    """A migration file is misnamed or failed to apply."""


def migration_files(migrations_dir: Path | str = MIGRATIONS_DIR) -> list[Path]:
    """The ``.sql`` files of ``migrations_dir`` in the order they apply."""
    directory = Path(migrations_dir)
    if not directory.is_dir():
        raise MigrationError(f"migrations directory {directory} does not exist")
    numbered: dict[int, Path] = {}
    for path in directory.glob("*.sql"):
        match = _NAME.match(path.name)
        if match is None:
            raise MigrationError(f"migration file {path.name} is not named NNNN_name.sql")
        number = int(match.group(1))
        if number in numbered:
            raise MigrationError(f"migration files {numbered[number].name} and {path.name} share number {number}")
        numbered[number] = path
    return [numbered[n] for n in sorted(numbered)]


async def migrate(dsn: str, migrations_dir: Path | str | None = None) -> list[str]:
    """Apply the pending migrations; return their versions (file names without ``.sql``)."""
    files = migration_files(MIGRATIONS_DIR if migrations_dir is None else migrations_dir)
    conn = await asyncpg.connect(dsn, timeout=30)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", LOCK_KEY)
        try:
            return await _apply_pending(conn, files)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)
    finally:
        await conn.close()


async def _apply_pending(conn: asyncpg.Connection, files: list[Path]) -> list[str]:
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version text PRIMARY KEY,"
        " applied_at timestamptz NOT NULL DEFAULT now())"
    )
    done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
    applied: list[str] = []
    for path in files:
        version = path.stem
        if version in done:
            continue
        sql = path.read_text(encoding="utf-8")
        try:
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
        except asyncpg.PostgresError as exc:
            raise MigrationError(f"migration {path.name} failed and was rolled back: "
                                 f"{type(exc).__name__}: {exc}") from exc
        applied.append(version)
    return applied
