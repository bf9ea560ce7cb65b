"""The AMI link: panoramisk's Manager underneath, with the connection handling the service owns.

How this works: ``run()`` loops connect -> login -> ``on_connected`` (the service re-applies what
it intends, e.g. queue membership) -> wait until the link drops -> back off (capped exponential,
with jitter) -> connect again. Every state change is one log line. Actions are sent with an
ActionID and a timeout; when the link drops, actions in flight fail at once (AmiLinkLost). A
keep-alive Ping checks its answer, so a half-open link is noticed and closed. The secret is
never logged. ``close()`` stops ``run()`` wherever it is (connecting, logged in, backing off).
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
from typing import Awaitable, Callable, Mapping

from panoramisk import Manager

from telephony.ami_protocol import AmiLinkLost, AmiResponse, HotlineAmiProtocol, next_action_id
from telephony.events import AmiEvent

log = logging.getLogger("hotline.ami")

_UNSAFE = re.compile(r"[\r\n\x00]")


class AmiError(Exception):
    """An action answered with an error, or not answered in time."""


class AmiAuthError(AmiError):
    pass


class AmiTimeout(AmiError, TimeoutError):
    pass


class HotlineManager(Manager):
    """panoramisk's Manager whose connect/reconnect/resend the client owns (see DESIGN.md §4)."""

    def __init__(self, client: "AmiClient", **config) -> None:
        super().__init__(protocol_factory=HotlineAmiProtocol, **config)
        self.client = client

    def connection_made(self, f) -> None:  # the client awaits the connection itself
        return None

    async def send_awaiting_actions(self, *_) -> None:  # never re-send after a reconnect
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._connected = False
        self.client._link_lost(exc)

    def on_ami_event(self, event: AmiEvent) -> None:
        self.client.on_event(event)


def backoff_delay(attempt: int, base: float = 0.5, cap: float = 30.0, rng: random.Random | None = None) -> float:
    """Capped exponential backoff with jitter: a delay in [d/2, d], d = min(cap, base * 2**attempt)."""
    d = min(cap, base * (2 ** min(attempt, 30)))
    return d * (0.5 + 0.5 * (rng or random).random())


class AmiClient:
    def __init__(
        self,
        *,
        host: str,
        port: int,
        username: str,
        secret: str,
        on_event: Callable[[AmiEvent], None],
        on_connected: Callable[["AmiClient"], Awaitable[None]] | None = None,
        action_timeout: float = 10.0,
        connect_timeout: float = 5.0,
        ping_interval: float = 10.0,
        name: str = "pbx",
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        rng: random.Random | None = None,
    ) -> None:
        self.host, self.port, self.username = host, port, username
        self._secret = secret
        self.on_event = on_event
        self.on_connected = on_connected
        self.action_timeout = action_timeout
        self.connect_timeout = connect_timeout
        self.ping_interval = ping_interval
        self.name = name
        self.backoff_base, self.backoff_cap, self.rng = backoff_base, backoff_cap, rng
        self.manager: HotlineManager | None = None
        self.protocol: HotlineAmiProtocol | None = None
        self.ready = asyncio.Event()
        self._lost = asyncio.Event()
        self._closing = False
        self._closed = asyncio.Event()   # set by close(): wakes run() out of its backoff
        self.connections = 0

    def __repr__(self) -> str:  # never shows the secret
        return f"<AmiClient {self.name} {self.username}@{self.host}:{self.port}>"

    async def connect(self) -> None:
        """One connection and login; raises OSError, AmiAuthError or AmiTimeout."""
        if _UNSAFE.search(self._secret) or _UNSAFE.search(self.username):
            # checked here, not by the codec, whose error would quote the value (the secret) in the log
            raise AmiAuthError(f"AMI username or secret for {self.name} contains CR, LF or NUL; not sent")
        loop = asyncio.get_running_loop()
        self.manager = HotlineManager(self, host=self.host, port=self.port, loop=loop)
        transport, protocol = await asyncio.wait_for(
            loop.create_connection(HotlineAmiProtocol, self.host, self.port), self.connect_timeout
        )
        protocol.factory = self.manager
        self.manager.protocol = protocol
        self.manager._connected = True
        self.protocol = protocol
        self._lost.clear()
        log.info("AMI %s: connected to %s:%s", self.name, self.host, self.port)
        resp = await self.send_action("Login", {"Username": self.username, "Secret": self._secret, "Events": "on"})
        if not resp.success:
            protocol.close()
            raise AmiAuthError(f"AMI login refused for user {self.username!r}: {resp.message}")
        self.connections += 1
        log.info("AMI %s: logged in as %s", self.name, self.username)

    async def run(self) -> None:
        """Stay connected until close(): reconnect with backoff, run on_connected after each login."""
        attempt = 0
        while not self._closing:
            try:
                await self.connect()
                if self._closing:  # close() came while we were connecting
                    self.protocol.close()
                    return
                if self.on_connected is not None:
                    await self.on_connected(self)
                attempt = 0
                self.ready.set()
                pinger = asyncio.create_task(self._keepalive())
                try:
                    await self._lost.wait()
                finally:
                    pinger.cancel()
                    self.ready.clear()
                if self._closing:
                    return
                log.warning("AMI %s: link lost", self.name)
            except (OSError, AmiError, asyncio.TimeoutError, AmiLinkLost) as exc:
                if self.protocol is not None:
                    self.protocol.close()
                log.warning("AMI %s: cannot use %s:%s: %s", self.name, self.host, self.port, exc or type(exc).__name__)
            except Exception:  # noqa: BLE001 - e.g. a malformed resync answer: reconnect, never stop for good
                if self.protocol is not None:
                    self.protocol.close()
                log.exception("AMI %s: error after login; reconnecting", self.name)
            if self._closing:
                return
            delay = backoff_delay(attempt, self.backoff_base, self.backoff_cap, self.rng)
            attempt += 1
            log.info("AMI %s: retrying in %.1f s", self.name, delay)
            try:
                await asyncio.wait_for(self._closed.wait(), delay)
                return  # close() during the backoff
            except asyncio.TimeoutError:
                pass

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(self.ping_interval)
            try:
                resp = await self.send_action("Ping", timeout=self.action_timeout)
                if not resp.success:
                    raise AmiError(f"Ping answered {resp.frame.response}: {resp.message}")
            except (AmiError, AmiLinkLost) as exc:
                log.warning("AMI %s: keep-alive Ping failed (%s); closing the link", self.name, exc)
                if self.protocol is not None:
                    self.protocol.close()
                    self._link_lost(exc)
                return

    def _link_lost(self, exc: Exception | None) -> None:
        self._lost.set()

    async def send_action(
        self, action: str, fields: Mapping[str, object] | None = None, *, timeout: float | None = None
    ) -> AmiResponse:
        """Send one action and wait for its answer (all items for a list action)."""
        protocol = self.protocol
        if protocol is None or protocol.closed:
            raise AmiLinkLost(f"AMI link is down; {action} not sent")
        action_id = next_action_id()
        future = self.manager.send_action({"Action": action, "ActionID": action_id, **(fields or {})})
        try:
            return await asyncio.wait_for(future, timeout or self.action_timeout)
        except asyncio.TimeoutError:
            protocol.forget(action_id)
            raise AmiTimeout(f"AMI {action} ({action_id}) not answered in {timeout or self.action_timeout} s") from None
        except asyncio.CancelledError:
            protocol.forget(action_id)  # the caller gave up: a late answer must find nobody waiting
            raise

    async def close(self) -> None:
        self._closing = True
        self._closed.set()
        self._lost.set()
        if self.protocol is not None and not self.protocol.closed:
            try:
                await self.send_action("Logoff", timeout=2)
            except (AmiError, AmiLinkLost, OSError):
                pass
            self.protocol.close()
