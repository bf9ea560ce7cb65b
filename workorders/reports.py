"""Counts read back from Postgres (never from memory): the demo's summary of one node's calls.

``abandoned`` counts every missed call that reached a queue (the caller hung up, or app_queue
timed out); ``ivr_hangup`` those that never reached one. ``work_orders`` is the number of orders
this node's calls are linked to (a repeat call may link to an order an earlier run opened);
``calls_without_order`` is measured by a join, not assumed from the schema. ``recordings``
counts the files checked 'ok', ``recordings_not_ok`` the missing, short and corrupt ones.
"""

from __future__ import annotations

import asyncpg

_SUMMARY = """
SELECT count(*)                                                     AS calls,
       count(*) FILTER (WHERE c.outcome = 'answered')               AS answered,
       count(*) FILTER (WHERE c.outcome IN ('abandoned', 'queue_timeout')) AS abandoned,
       count(*) FILTER (WHERE c.outcome = 'ivr_hangup')             AS ivr_hangup,
       count(*) FILTER (WHERE c.outcome = 'dropped')                AS dropped,
       count(DISTINCT w.id)                                         AS work_orders,
       count(*) FILTER (WHERE w.id IS NULL)                         AS calls_without_order
FROM calls c LEFT JOIN work_orders w ON w.id = c.work_order_id
WHERE c.node = $1
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
