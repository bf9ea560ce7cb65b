"""Seats from configuration into app_queue: QueueAdd with MemberName and StateInterface.

``reconcile_seats`` runs on every AMI login: it asks app_queue who is a member (QueueStatus),
adds the configured seats that are missing (after an Asterisk restart: all of them), fixes a
penalty that drifted, and removes dynamic members of the service's queues that no seat names
(left by an earlier configuration). Static members (queues.conf) are reported, never touched.
One membership Asterisk refuses (a queue missing from queues.conf, a bad interface) is logged and
skipped: it must not keep the other seats out of their queues, nor fail the login and send the
AMI link into a reconnect loop. A link that drops or an action that
times out does propagate: the AMI client reconnects and this runs again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

from config.settings import SeatConfig
from telephony.actions import PbxActions
from telephony.ami_client import AmiError, AmiTimeout

log = logging.getLogger("hotline.seats")


@dataclass(frozen=True, slots=True)
class ReconcileReport:
    present: int      # memberships app_queue already had as intended
    added: int
    removed: int
    repenalised: int
    refused: int


async def reconcile_seats(actions: PbxActions, seats: Sequence[SeatConfig], queues: Iterable[str],
                          keep: Callable[[str], bool] | None = None) -> ReconcileReport:
    """Bring app_queue's members of the service's ``queues`` in line with the configured seats.

    ``keep(interface)``: a dynamic member managed elsewhere (an operator's login, queues.operators)
    that is left alone here."""
    managed = set(queues)
    want = {(q, seat.interface): seat for seat in seats for q in seat.queues}
    status = await actions.queue_status()
    have: dict[tuple[str, str], dict[str, str]] = {}
    for item in status.items:
        if item.event == "QueueMember" and item.get("Queue") in managed:
            have[(item.get("Queue") or "", item.get("Location") or "")] = item
    present = added = removed = repenalised = refused = 0
    for (queue, interface), seat in want.items():
        member = have.get((queue, interface))
        try:
            if member is None:
                await actions.queue_add(queue, interface, seat.name, seat.state_interface, seat.penalty)
                added += 1
            elif str(seat.penalty) != (member.get("Penalty") or "0"):
                await actions.queue_penalty(interface, seat.penalty, queue)
                repenalised += 1
            else:
                present += 1
        except AmiTimeout:
            raise
        except AmiError as exc:
            refused += 1
            log.error("seats: %s (%s) in queue %s not reconciled: %s", seat.name, interface, queue, exc)
    for (queue, interface), member in have.items():
        if (queue, interface) in want or (keep is not None and keep(interface)):
            continue
        if member.get("Membership") != "dynamic":
            log.warning("seats: static member %s of %s is not a configured seat (left as it is)", interface, queue)
            continue
        try:
            if await actions.queue_remove(queue, interface):
                removed += 1
        except AmiTimeout:
            raise
        except AmiError as exc:
            refused += 1
            log.error("seats: stray member %s not removed from %s: %s", interface, queue, exc)
    report = ReconcileReport(present, added, removed, repenalised, refused)
    log.info("seats reconciled: %d in place, %d added, %d removed, %d penalties fixed, %d refused",
             present, added, removed, repenalised, refused)
    return report
