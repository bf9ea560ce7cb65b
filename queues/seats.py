"""Seats from configuration into app_queue: QueueAdd with MemberName and StateInterface.

Runs on every AMI login. One membership Asterisk refuses (a queue missing from queues.conf, a
bad interface) is logged and skipped: it must not keep the other seats out of their queues, nor
fail the login and send the AMI link into a reconnect loop. A link that drops or an action that
times out does propagate: the AMI client reconnects and this runs again.
"""

from __future__ import annotations

import logging
from typing import Sequence

from config.settings import SeatConfig
from telephony.actions import PbxActions
from telephony.ami_client import AmiError, AmiTimeout

log = logging.getLogger("hotline.seats")


async def apply_seats(actions: PbxActions, seats: Sequence[SeatConfig]) -> int:
    """Make every configured seat a member of its queues; return how many were newly added."""
    added = refused = 0
    for seat in seats:
        for queue in seat.queues:
            try:
                if await actions.queue_add(queue, seat.interface, seat.name, seat.state_interface, seat.penalty):
                    added += 1
            except AmiTimeout:
                raise
            except AmiError as exc:
                refused += 1
                log.error("seats: %s (%s) not added to queue %s: %s", seat.name, seat.interface, queue, exc)
    log.info("seats: %d configured, %d memberships added, %d refused", len(seats), added, refused)
    return added
