"""Schema migrations: numbered SQL files applied in order, each exactly once, never edited after.

How this works: files are named ``NNNN_name.sql`` (``0001_initial.sql``) and applied in the
order of their number. ``migrate`` connects, takes a session-level advisory lock (so two
processes starting at once never race: the second waits, then finds nothing to do), creates
``schema_migrations(version, applied_at, checksum)`` if needed, and checks the history before
changing anything: every applied version must still have its file, with the same SHA-256 (line
ends normalised), else MigrationError names the file (an applied migration is never edited,
renamed or removed: add a new one instead). Then each pending file runs in its own transaction
together with the row that records it. A file that fails rolls back entirely (its statements
and its record) and raises MigrationError naming the file; the files before it stay applied. A
file must therefore not hold statements that cannot run in a transaction (CREATE INDEX
CONCURRENTLY, ALTER TYPE ... ADD VALUE before Postgres 12).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import asyncpg

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# pg_advisory_lock key of the migration runner (any fixed bigint unique to this purpose)
LOCK_KEY = 0x4853_4D49_4752  # "HSMIGR"
_NAME = re.compile(r"^(\d+)_[A-Za-z0-9_]+\.sql$")


class MigrationError(RuntimeError):
    """A migration file is misnamed, edited after it was applied, missing, or failed to apply."""


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


def checksum(sql: str) -> str:
    """SHA-256 of a migration's text, with CRLF/CR read as LF (a checkout's line ends do not count)."""
    return hashlib.sha256(sql.replace("\r\n", "\n").replace("\r", "\n").encode("utf-8")).hexdigest()


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
        " applied_at timestamptz NOT NULL DEFAULT now(),"
        " checksum text)"
    )
    # databases migrated before checksums were recorded: add the column, trust what is there
    await conn.execute("ALTER TABLE schema_migrations ADD COLUMN IF NOT EXISTS checksum text")
    texts = {path.stem: path.read_text(encoding="utf-8") for path in files}
    done = {r["version"]: r["checksum"] for r in await conn.fetch("SELECT version, checksum FROM schema_migrations")}
    _check_history(done, texts)
    for version, recorded in done.items():
        if recorded is None:
            await conn.execute("UPDATE schema_migrations SET checksum = $2 WHERE version = $1",
                               version, checksum(texts[version]))
    applied: list[str] = []
    for path in files:
        version = path.stem
        if version in done:
            continue
        sql = texts[version]
        try:
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations (version, checksum) VALUES ($1, $2)",
                                   version, checksum(sql))
        except asyncpg.PostgresError as exc:
            raise MigrationError(f"migration {path.name} failed and was rolled back: "
                                 f"{type(exc).__name__}: {exc}") from exc
        applied.append(version)
    return applied


def _check_history(done: dict[str, str | None], texts: dict[str, str]) -> None:
    """Refuse to go on when an applied migration's file is gone, renamed or edited."""
    for version in sorted(done):
        if version not in texts:
            raise MigrationError(
                f"migration {version} is applied in this database but {version}.sql is missing "
                "(renamed or removed?); restore it, or this code is older than the database")
        recorded = done[version]
        if recorded is not None and recorded != checksum(texts[version]):
            raise MigrationError(
                f"migration {version}.sql was edited after it was applied (checksum differs); "
                "restore it and put the change in a new migration")
    applied = [v for v in texts if v in done]
    pending = [v for v in texts if v not in done]
    if applied and pending and min(pending, key=_number) < max(applied, key=_number):
        late = min(pending, key=_number)
        raise MigrationError(
            f"migration {late}.sql is numbered before migrations already applied; renumber it after "
            f"{max(applied, key=_number)}.sql")


def _number(version: str) -> int:
    return int(version.split("_", 1)[0])
