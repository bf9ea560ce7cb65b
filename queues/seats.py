"""Seats from configuration into app_queue: QueueAdd with MemberName and StateInterface."""

from __future__ import annotations

import logging
from typing import Sequence

from config.settings import SeatConfig
from telephony.actions import PbxActions

log = logging.getLogger("hotline.seats")


async def apply_seats(actions: PbxActions, seats: Sequence[SeatConfig]) -> int:
    """Make every configured seat a member of its queues; return how many were newly added."""
    added = 0
    for seat in seats:
        for queue in seat.queues:
            if await actions.queue_add(queue, seat.interface, seat.name, seat.state_interface, seat.penalty):
                added += 1
    log.info("seats: %d configured, %d memberships added", len(seats), added)
    return added
