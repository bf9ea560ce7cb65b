"""The default 12345 IVR: greeting, one optional menu level, then a queue.

How this works: answer, play the greeting (a key pressed during it counts as the menu choice),
then ask once for one key. A known key routes to its queue, anything else (no key within the
timeout, an unknown key) to the general queue: the national standard discourages deep menus,
so a caller who does nothing reaches a person within seconds. The flow ends by setting the
channel variables the dialplan and the call tracker read back:
HOTLINE_IVR_CHOICE (the key, "timeout", "invalid" or "error"), HOTLINE_QUEUE, HOTLINE_CATEGORY
and HOTLINE_QUEUE_TIMEOUT. Any failure sets the general queue (``safe_route``): never dead air.

``result=-1`` from a media command is a hang-up or a failure on a live channel (a sound file
missing on this Asterisk): a failed greeting goes on to the menu, a failed menu routes to the
general queue with choice "error". If it was a hang-up, the next media command gets 511
(AgiHangup, the flow just ends) and SET VARIABLE still works on the dead channel.
"""

from __future__ import annotations

import logging

from config.settings import Settings
from telephony.agi_server import AgiCommandFailed, AgiHangup, AgiSession

log = logging.getLogger("hotline.ivr")


class MenuIvr:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
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
        await self._route(session, choice, queue)
        log.info("IVR %s: caller %r chose %s -> %s", uniqueid, session.headers.get("agi_callerid"), choice, queue)

    async def _route(self, session: AgiSession, choice: str, queue_name: str) -> None:
        queue = self.settings.queue(queue_name)
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
