"""The default 12345 IVR: greeting, one optional menu level, then a queue.

How this works: answer, play the greeting (a key pressed during it counts as the menu choice),
then ask once for one key. A known key routes to its queue, anything else (no key within the
timeout, an unknown key) to the general queue: the national standard discourages deep menus,
so a caller who does nothing reaches a person within seconds. The flow ends by setting the
channel variables the dialplan and the call tracker read back:
HOTLINE_IVR_CHOICE (the key, "timeout", "invalid" or "error"), HOTLINE_QUEUE, HOTLINE_CATEGORY
and HOTLINE_QUEUE_TIMEOUT. Any failure sets the general queue (``safe_route``): never dead air.

Leader hotline: a key may route to a queue of purpose ``leader``. With ``leader_open`` given (an
async callable answering the leader queue of the slot live now, or None), such a key reaches that
queue only while its slot is live; otherwise (closed, another leader queue open, or the check
failing or taking over ``LEADER_CHECK_TIMEOUT`` s) the caller goes to the general queue.

``result=-1`` from a media command is a hang-up or a failure on a live channel (a sound file
missing on this Asterisk): a failed greeting goes on to the menu, a failed menu routes to the
general queue with choice "error". If it was a hang-up, the next media command gets 511
(AgiHangup, the flow just ends) and SET VARIABLE still works on the dead channel.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

from config.settings import QueueConfig, Settings
from telephony.agi_server import AgiCommandFailed, AgiHangup, AgiSession

log = logging.getLogger("hotline.ivr")

LEADER_CHECK_TIMEOUT = 2.0
LeaderOpen = Callable[[], Awaitable[str | None]]
QueueLookup = Callable[[str], QueueConfig | None]


class MenuIvr:
    def __init__(self, settings: Settings, leader_open: LeaderOpen | None = None,
                 queues: QueueLookup | None = None) -> None:
        """``queues``: the queue of a name (``queues.catalog.QueueCatalog.queue``: the settings'
        queues overlaid by Postgres's); default the settings' own."""
        self.settings = settings
        self.leader_open = leader_open
        self.queue = queues or settings.queue
        self.menu = settings.ivr
        self.keys = "".join(sorted(self.menu.routes))

    async def __call__(self, session: AgiSession) -> None:
        uniqueid = session.headers.get("agi_uniqueid", "?")
        await session.answer()
        try:
            key = await session.stream_file(self.menu.greeting, self.keys)
        except AgiCommandFailed as exc:
            log.warning("IVR %s: greeting %r failed (%s); going on to the menu", uniqueid, self.menu.greeting, exc)
            key = None
        failed = False
        if key is None:
            try:
                key = await session.get_data(self.menu.menu_prompt, self.menu.digit_timeout_ms, 1)
            except AgiCommandFailed as exc:
                log.warning("IVR %s: menu %r failed (%s); general queue", uniqueid, self.menu.menu_prompt, exc)
                failed, key = True, ""
        if key in self.menu.routes:
            choice, queue = key, self.menu.routes[key]
        else:
            choice = "error" if failed else ("invalid" if key else "timeout")
            queue = self.menu.default_queue
        queue = await self._leader_gate(uniqueid, queue)
        await self._route(session, choice, queue)
        log.info("IVR %s: caller %r chose %s -> %s", uniqueid, session.headers.get("agi_callerid"), choice, queue)

    async def _leader_gate(self, uniqueid: str, queue_name: str) -> str:
        """A leader queue while its slot is live; the general queue instead while it is closed."""
        queue = self.queue(queue_name)
        if self.leader_open is None or queue is None or queue.purpose != "leader":
            return queue_name
        try:
            open_queue = await asyncio.wait_for(self.leader_open(), LEADER_CHECK_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - any failure: the caller still reaches a person
            log.warning("IVR %s: leader slot check failed (%s); general queue", uniqueid, type(exc).__name__)
            return self.menu.default_queue
        if open_queue is not None and open_queue.lower() == queue_name.lower():
            return queue_name
        return self.menu.default_queue

    async def _route(self, session: AgiSession, choice: str, queue_name: str) -> None:
        queue = self.queue(queue_name)
        await session.set_variable("HOTLINE_IVR_CHOICE", choice)
        await session.set_variable("HOTLINE_CATEGORY", queue.category if queue else "general")
        await session.set_variable("HOTLINE_QUEUE_TIMEOUT", str(queue.max_wait if queue else 120))
        # HOTLINE_QUEUE last: the dialplan treats it as "the IVR finished".
        await session.set_variable("HOTLINE_QUEUE", queue_name)

    async def safe_route(self, session: AgiSession) -> None:
        """After any failure: the general queue. SET VARIABLE works even on a dead channel."""
        try:
            await self._route(session, "error", self.menu.default_queue)
        except AgiHangup:
            pass
