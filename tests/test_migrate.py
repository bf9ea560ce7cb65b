"""Migration runner against real Postgres: order, idempotence, rollback of a failing file, races."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import asyncpg
import pytest

from workorders.migrate import MIGRATIONS_DIR, MigrationError, checksum, migrate, migration_files


@pytest.fixture
async def scratch_dsn(pg_dsn):
    """A fresh, empty database of this test's own, dropped afterwards."""
    name = f"hotline_mig_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(pg_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield pg_dsn.rsplit("/", 1)[0] + "/" + name
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def _fetch(dsn: str, sql: str, *args):
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def _tables(dsn: str) -> set[str]:
    rows = await _fetch(dsn, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    return {r["tablename"] for r in rows}


async def _versions(dsn: str) -> list[str]:
    return [r["version"] for r in await _fetch(dsn, "SELECT version FROM schema_migrations ORDER BY version")]


def _write(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(exist_ok=True)
    for name, sql in files.items():
        (directory / name).write_text(sql, encoding="utf-8")
    return directory


async def test_run_database_is_migrated_and_second_run_applies_nothing(pg_dsn):
    assert await migrate(pg_dsn) == []
    assert await _versions(pg_dsn) == [p.stem for p in migration_files()]
    assert {"calls", "call_events", "recordings", "work_orders", "work_order_events",
            "order_day_counters", "schema_migrations"} <= await _tables(pg_dsn)


async def test_fresh_database_gets_every_migration_once(scratch_dsn):
    expected = [p.stem for p in migration_files(MIGRATIONS_DIR)]
    assert expected[0] == "0001_initial"
    assert await migrate(scratch_dsn) == expected
    assert await migrate(scratch_dsn) == []
    rows = await _fetch(scratch_dsn, "SELECT version, applied_at FROM schema_migrations")
    assert sorted(r["version"] for r in rows) == expected
    assert all(r["applied_at"] is not None for r in rows)


async def test_files_apply_in_numeric_order(scratch_dsn, tmp_path):
    d = _write(tmp_path / "m", {
        "10_third.sql": "INSERT INTO trail VALUES (3);",
        "0002_second.sql": "INSERT INTO trail VALUES (2);",
        "0001_first.sql": "CREATE TABLE trail (n int, at timestamptz DEFAULT clock_timestamp()); INSERT INTO trail VALUES (1);",
    })
    assert await migrate(scratch_dsn, migrations_dir=d) == ["0001_first", "0002_second", "10_third"]
    rows = await _fetch(scratch_dsn, "SELECT n FROM trail ORDER BY at")
    assert [r["n"] for r in rows] == [1, 2, 3]


async def test_failing_migration_rolls_back_entirely_and_names_the_file(scratch_dsn, tmp_path):
    d = _write(tmp_path / "m", {
        "0001_ok.sql": "CREATE TABLE kept (id int);",
        "0002_bad.sql": "CREATE TABLE half (id int);\nINSERT INTO kept VALUES (1);\nINSERT INTO no_such_table VALUES (1);",
        "0003_later.sql": "CREATE TABLE later (id int);",
    })
    with pytest.raises(MigrationError, match="0002_bad.sql") as info:
        await migrate(scratch_dsn, migrations_dir=d)
    assert isinstance(info.value.__cause__, asyncpg.UndefinedTableError)
    # the good file stays applied; nothing of the bad one remains; the later one never ran
    assert await _versions(scratch_dsn) == ["0001_ok"]
    tables = await _tables(scratch_dsn)
    assert "kept" in tables and "half" not in tables and "later" not in tables
    assert await _fetch(scratch_dsn, "SELECT * FROM kept") == []

    # fixed, the run resumes at the failed file
    (d / "0002_bad.sql").write_text("CREATE TABLE half (id int);", encoding="utf-8")
    assert await migrate(scratch_dsn, migrations_dir=d) == ["0002_bad", "0003_later"]
    assert await _versions(scratch_dsn) == ["0001_ok", "0002_bad", "0003_later"]


async def test_concurrent_runs_never_race(scratch_dsn, tmp_path):
    d = _write(tmp_path / "m", {
        "0001_slow.sql": "SELECT pg_sleep(0.3); CREATE TABLE once (id int);",
        "0002_count.sql": "CREATE TABLE runs (id int); INSERT INTO runs VALUES (1);",
    })
    results = await asyncio.gather(*(migrate(scratch_dsn, migrations_dir=d) for _ in range(4)))
    assert sorted(results, key=len) == [[], [], [], ["0001_slow", "0002_count"]]
    assert await _versions(scratch_dsn) == ["0001_slow", "0002_count"]
    assert len(await _fetch(scratch_dsn, "SELECT * FROM runs")) == 1
    # the lock is released: a later run goes through at once
    assert await asyncio.wait_for(migrate(scratch_dsn, migrations_dir=d), 5) == []


@pytest.mark.parametrize("files, message", [
    ({"initial.sql": "SELECT 1;"}, "initial.sql"),
    ({"0001_a.sql": "SELECT 1;", "001_b.sql": "SELECT 1;"}, "share number 1"),
])
def test_misnamed_files_are_refused(tmp_path, files, message):
    with pytest.raises(MigrationError, match=message):
        migration_files(_write(tmp_path / "m", files))


def test_missing_directory_is_refused(tmp_path):
    with pytest.raises(MigrationError, match="does not exist"):
        migration_files(tmp_path / "nowhere")


# --- the history is checked before anything runs -------------------------------------------

async def test_every_applied_migration_records_its_checksum(pg_dsn):
    rows = await _fetch(pg_dsn, "SELECT version, checksum FROM schema_migrations ORDER BY version")
    assert [(r["version"], r["checksum"]) for r in rows] == [
        (p.stem, checksum(p.read_text(encoding="utf-8"))) for p in migration_files()]


async def test_edited_migration_is_refused_and_nothing_runs(scratch_dsn, tmp_path):
    d = _write(tmp_path / "m", {"0001_a.sql": "CREATE TABLE a (id int);"})
    assert await migrate(scratch_dsn, migrations_dir=d) == ["0001_a"]
    _write(d, {"0001_a.sql": "CREATE TABLE a (id int, extra text);", "0002_b.sql": "CREATE TABLE b (id int);"})
    with pytest.raises(MigrationError, match=r"0001_a\.sql was edited after it was applied"):
        await migrate(scratch_dsn, migrations_dir=d)
    assert await _versions(scratch_dsn) == ["0001_a"]
    assert "b" not in await _tables(scratch_dsn)


async def test_line_ends_of_a_checkout_do_not_count_as_an_edit(scratch_dsn, tmp_path):
    d = _write(tmp_path / "m", {"0001_a.sql": "CREATE TABLE a (id int);\nCREATE TABLE b (id int);\n"})
    await migrate(scratch_dsn, migrations_dir=d)
    (d / "0001_a.sql").write_bytes(b"CREATE TABLE a (id int);\r\nCREATE TABLE b (id int);\r\n")
    assert await migrate(scratch_dsn, migrations_dir=d) == []


@pytest.mark.parametrize("change", ["removed", "renamed"])
async def test_applied_migration_without_its_file_is_refused(scratch_dsn, tmp_path, change):
    d = _write(tmp_path / "m", {"0001_a.sql": "CREATE TABLE a (id int);", "0002_b.sql": "CREATE TABLE b (id int);"})
    await migrate(scratch_dsn, migrations_dir=d)
    if change == "renamed":
        (d / "0002_b.sql").rename(d / "0002_bee.sql")
    else:
        (d / "0002_b.sql").unlink()
    with pytest.raises(MigrationError, match=r"0002_b is applied in this database but 0002_b\.sql is missing"):
        await migrate(scratch_dsn, migrations_dir=d)
    assert await _versions(scratch_dsn) == ["0001_a", "0002_b"]


async def test_new_migration_numbered_before_applied_ones_is_refused(scratch_dsn, tmp_path):
    d = _write(tmp_path / "m", {"0001_a.sql": "CREATE TABLE a (id int);", "0003_c.sql": "CREATE TABLE c (id int);"})
    await migrate(scratch_dsn, migrations_dir=d)
    _write(d, {"0002_b.sql": "CREATE TABLE b (id int);"})
    with pytest.raises(MigrationError, match=r"0002_b\.sql is numbered before migrations already applied"):
        await migrate(scratch_dsn, migrations_dir=d)
    assert "b" not in await _tables(scratch_dsn)


async def test_history_without_checksums_is_adopted(scratch_dsn, tmp_path):
    """A database migrated before checksums were recorded keeps working and gets them filled in."""
    d = _write(tmp_path / "m", {"0001_a.sql": "CREATE TABLE a (id int);", "0002_b.sql": "CREATE TABLE b (id int);"})
    conn = await asyncpg.connect(scratch_dsn)
    try:
        await conn.execute("CREATE TABLE schema_migrations (version text PRIMARY KEY,"
                           " applied_at timestamptz NOT NULL DEFAULT now());"
                           "CREATE TABLE a (id int); INSERT INTO schema_migrations (version) VALUES ('0001_a')")
    finally:
        await conn.close()
    assert await migrate(scratch_dsn, migrations_dir=d) == ["0002_b"]
    rows = await _fetch(scratch_dsn, "SELECT version, checksum FROM schema_migrations ORDER BY version")
    assert [(r["version"], r["checksum"]) for r in rows] == [
        ("0001_a", checksum("CREATE TABLE a (id int);")), ("0002_b", checksum("CREATE TABLE b (id int);"))]
