"""Shared fixtures: a real Postgres database per test run, real Redis, the captures.

Nothing is mocked at the database line. If Postgres or Redis cannot be reached the fixture
raises, so the run fails loudly; it never skips.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

import asyncpg
import pytest
import redis as redis_sync
import redis.asyncio as aioredis

FIXTURES = Path(__file__).parent / "fixtures" / "asterisk-22"
PG_ADMIN_DSN = os.environ.get("HOTLINE_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("HOTLINE_TEST_REDIS", "redis://127.0.0.1:6379/0")


def capture(name: str) -> bytes:
    """Raw bytes of one capture file, unchanged."""
    return (FIXTURES / name).read_bytes()


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg_dsn() -> str:
    """A fresh database for this test run, migrated, dropped at the end."""
    from workorders.migrate import migrate

    name = f"hotline_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    try:
        asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError) as exc:
        raise RuntimeError(f"Postgres is not reachable at {PG_ADMIN_DSN}: {exc}") from exc
    dsn = PG_ADMIN_DSN.rsplit("/", 1)[0] + "/" + name
    asyncio.run(migrate(dsn))
    yield dsn
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
async def pg_pool(pg_dsn):
    """A pool on the run's database, emptied of every row before the test."""
    pool = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=10)
    async with pool.acquire() as conn:
        tables = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'schema_migrations'"
        )
        if tables:
            names = ", ".join(f'"{t["tablename"]}"' for t in tables)
            await conn.execute(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
    yield pool
    await pool.close()


@pytest.fixture
async def redis_client():
    client = aioredis.from_url(REDIS_URL, decode_responses=True)
    try:
        await client.ping()
    except Exception as exc:  # noqa: BLE001 - any failure here must fail the run loudly
        await client.aclose()
        raise RuntimeError(f"Redis is not reachable at {REDIS_URL}: {exc}") from exc
    yield client
    await client.aclose()


@pytest.fixture
def node_id():
    """A node id of this test's own, so Redis keys never collide between tests or runs; its keys
    are deleted afterwards."""
    node = f"test-{uuid.uuid4().hex[:10]}"
    yield node
    client = redis_sync.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"hotline:{node}:*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
async def private_redis(tmp_path):
    """A redis-server of the test's own, as (client, server): ``server.kill()`` is a real outage."""
    from tests.support import PrivateRedis

    server = PrivateRedis(tmp_path)
    await server.start()
    client = aioredis.from_url(server.url, decode_responses=True)
    try:
        yield client, server
    finally:
        await client.aclose()
        server.kill()
