"""Work-order numbers: ``12345-YYYYMMDD-NNNNNN``, a sequence per day from 000001.

How this works: the day is the intake day in the centre's time zone (Asia/Shanghai by
default). ``next_order_number`` bumps that day's row of ``order_day_counters`` with
``INSERT ... ON CONFLICT DO UPDATE ... RETURNING``, inside the caller's transaction, the one
that also inserts the order. The row stays locked until that transaction ends, so concurrent
writers of the same day queue up on it (no duplicates), and a transaction that rolls back
also rolls back its increment (no gaps). Keep such transactions short: same-day orders are
serialised from the number to the commit.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from zoneinfo import ZoneInfo

import asyncpg

PREFIX = "12345"
ORDER_NUMBER = re.compile(r"^12345-(\d{8})-(\d{6,})$")

_BUMP = """
INSERT INTO order_day_counters AS c (day, last) VALUES ($1, 1)
ON CONFLICT (day) DO UPDATE SET last = c.last + 1
RETURNING last
"""


def order_day(epoch: float, tz: ZoneInfo) -> date:
    """The calendar day of an epoch time in the centre's time zone."""
    return datetime.fromtimestamp(epoch, tz).date()


def format_order_number(day: date, seq: int) -> str:
    return f"{PREFIX}-{day:%Y%m%d}-{seq:06d}"


async def next_order_number(conn: asyncpg.Connection, day: date) -> str:
    """Allocate the next number of ``day``; must run in the transaction that inserts the order."""
    if not conn.is_in_transaction():
        raise RuntimeError("next_order_number must run inside the transaction that inserts the order")
    seq = await conn.fetchval(_BUMP, day)
    return format_order_number(day, seq)
