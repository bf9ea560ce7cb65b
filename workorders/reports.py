"""Counts read back from Postgres (never from memory): the demo's summary of one node's calls.

``abandoned`` counts every missed call that reached a queue (the caller hung up, or app_queue
timed out); ``ivr_hangup`` those that never reached one; ``emergency_transfer`` and
``callback_requested`` the IVR's own endings (110, a callback instead of waiting); ``surveyed``
the calls with a survey answer (``no_answer`` included), ``satisfied`` those satisfied or basically
satisfied. ``work_orders`` is the number of orders
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
       count(*) FILTER (WHERE c.outcome = 'emergency_transfer')     AS emergency_transfer,
       count(*) FILTER (WHERE c.outcome = 'callback_requested')     AS callback_requested,
       count(c.survey)                                              AS surveyed,
       count(*) FILTER (WHERE c.survey IN ('satisfied', 'basically_satisfied')) AS satisfied,
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


_CALLBACKS = "SELECT count(*) AS callback_tasks FROM callback_tasks WHERE node = $1"


async def run_summary(pool: asyncpg.Pool, node: str) -> dict:
    """Calls of one node by outcome, surveyed and satisfied, their work orders, their good
    recordings, and the missed-call callback tasks they opened."""
    async with pool.acquire() as conn:
        row = await conn.fetchrow(_SUMMARY, node)
        rec = await conn.fetchrow(_RECORDINGS, node)
        tasks = await conn.fetchrow(_CALLBACKS, node)
    return {**dict(row), **dict(rec), **dict(tasks)}
