"""Counts read back from Postgres (never from memory): the demo's summary of one node's calls."""

from __future__ import annotations

import asyncpg

_SUMMARY = """
SELECT count(*)                                                   AS calls,
       count(*) FILTER (WHERE outcome = 'answered')               AS answered,
       count(*) FILTER (WHERE outcome IN ('abandoned', 'queue_timeout')) AS abandoned,
       count(*) FILTER (WHERE outcome = 'ivr_hangup')             AS ivr_hangup,
       count(DISTINCT work_order_id)                              AS work_orders,
       count(*) FILTER (WHERE work_order_id IS NULL)              AS calls_without_order
FROM calls WHERE node = $1
"""
_RECORDINGS = """
SELECT count(*) FILTER (WHERE r.status = 'ok') AS recordings,
       count(*) FILTER (WHERE r.status <> 'ok') AS recordings_not_ok
FROM recordings r JOIN calls c ON c.id = r.call_id WHERE c.node = $1
"""


async def run_summary(pool: asyncpg.Pool, node: str) -> dict:
    """Calls of one node by outcome, their work orders and their good recordings."""
    async with pool.acquire() as conn:
        row = await conn.fetchrow(_SUMMARY, node)
        rec = await conn.fetchrow(_RECORDINGS, node)
    return {**dict(row), **dict(rec)}
