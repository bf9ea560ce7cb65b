"""The AMI side of the simulator: a TCP server speaking Asterisk Call Manager/11.0.0.

How this works: each connection gets the banner, then frames are decoded by the project's
sans-IO codec (``AmiDecoder(expect_banner=False)``). Before login only Login, Logoff and
Challenge are allowed ("Permission denied" otherwise). A good Login gets "Authentication
accepted", then FullyBooted (if its event mask includes ``system``) and SuccessfulAuth; a bad
one "Authentication failed" and the connection is closed (bad_login.ami). Responses carry the
client's ActionID; events raised while an action runs are let out after its response. A
connection that sends garbage (not ``Key: Value`` lines, CR/LF/NUL inside a value, an oversized
frame), stays unauthenticated too long or reads too slowly is closed; the simulator goes on.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import time
from typing import TYPE_CHECKING

from telephony.ami_codec import AmiDecoder, Frame, encode_frame
from telephony.errors import AmiProtocolError, UnsafeValue
from telephony.simulator import transfer_actions
from telephony.simulator.ami_actions import AmiActions, Headers, error, response
from telephony.simulator.bus import SECURITY

if TYPE_CHECKING:
    from telephony.simulator.core import PbxCore

log = logging.getLogger("hotline.simulator.ami")

BANNER = b"Asterisk Call Manager/11.0.0\r\n"
AUTH_TIMEOUT = 30.0          # real seconds to log in (Asterisk's authtimeout)
MAX_SESSIONS = 64
MAX_FRAME = 64 * 1024
MAX_HEADERS = 128            # AST_MAX_MANHEADERS
MAX_OUTPUT = 16 * 1024 * 1024  # a client this far behind is dropped
ALL = None


def _event_mask(value: str | None) -> frozenset[str] | None:
    if value is None:
        return ALL
    text = value.strip().lower()
    if text in ("on", "yes", "true", "all", "1", ""):
        return ALL
    if text in ("off", "no", "false", "0"):
        return frozenset()
    return frozenset(p.strip() for p in text.split(","))


def _tv(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{int(epoch % 1 * 1000):03d}+0000"


class AmiSession:
    def __init__(self, server: AmiServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.core = server.core
        self.reader, self.writer = reader, writer
        self.authed = False
        self.mask: frozenset[str] | None = ALL
        self.closed = False
        self.session_id = f"0x{secrets.randbits(44):x}"
        self.opened = server.core.clock.now()
        self.challenge: str | None = None

    # output

    def wants(self, category: str) -> bool:
        return self.authed and not self.closed and (self.mask is ALL or category in self.mask)

    def send(self, data: bytes) -> None:
        if self.closed:
            return
        transport = self.writer.transport
        if transport.is_closing():
            self.closed = True
            return
        if transport.get_write_buffer_size() > MAX_OUTPUT:
            log.warning("simulator: AMI client %s is not reading; dropping it", self._peer())
            self.abort()
            return
        self.writer.write(data)

    def write(self, frames: list[Headers]) -> None:
        for headers in frames:
            self.send(encode_frame(headers))

    def abort(self) -> None:
        self.closed = True
        self.writer.transport.abort()

    def _peer(self) -> str:
        peer = self.writer.get_extra_info("peername")
        return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else "?"

    def _addr(self, which: str) -> str:
        info = self.writer.get_extra_info(which)
        if isinstance(info, tuple) and len(info) >= 2:
            return f"IPV{6 if ':' in str(info[0]) else 4}/TCP/{info[0]}/{info[1]}"
        return "IPV4/TCP/0.0.0.0/0"

    # input

    async def run(self) -> None:
        self.send(BANNER)
        decoder = AmiDecoder(max_frame=MAX_FRAME, expect_banner=False)
        try:
            while not self.closed:
                data = await asyncio.wait_for(self.reader.read(65536), None if self.authed else AUTH_TIMEOUT)
                if not data:
                    break
                decoder.receive_data(data)
                while not self.closed:
                    frame = decoder.next_frame()
                    if frame is None:
                        break
                    await self.handle(frame)
        except (AmiProtocolError, UnsafeValue) as exc:
            log.warning("simulator: AMI client %s sent garbage (%s); closing it", self._peer(), exc)
        except asyncio.TimeoutError:
            log.info("simulator: AMI client %s did not log in; closing it", self._peer())
        except (ConnectionError, OSError):
            pass
        finally:
            self.closed = True
            self.server.sessions.discard(self)
            self.core.bus.sinks.discard(self)
            self.writer.close()

    async def handle(self, frame: Frame) -> None:
        if len(frame.headers) > MAX_HEADERS:
            self.write([response(frame, "Error", "Too many lines in message or allocation failure")])
            return
        for key, value in frame.headers:
            if "\r" in value or "\n" in value or "\x00" in value or len(value) > 4096:
                raise AmiProtocolError(f"bad value in header {key[:40]!r}")
        action = (frame.get("Action") or "").strip()
        name = action.lower()
        if not action:
            self.write(error(frame, "Missing action in request"))
        elif name == "login":
            await self.login(frame)
        elif name == "logoff":
            self.write([response(frame, "Goodbye", "Thanks for all the fish.")])
            self.closed = True
        elif name == "challenge":
            self.write(self.make_challenge(frame))
        elif not self.authed:
            self.write(error(frame, "Permission denied"))
        else:
            await self.run_action(frame, action)

    async def run_action(self, frame: Frame, action: str) -> None:
        handler = self.server.actions.handlers.get(action.lower())
        with self.core.bus.held():
            if handler is None:
                self.write(error(frame, f"Invalid/unknown command: {action[:400]}. "
                                        "Use Action: ListCommands to show available commands."))
                self._security_event("RequestBadFormat", "Error", [("RequestType", f"Action: {action[:400]}")])
                return
            try:
                result = handler(frame)
            except Exception:  # noqa: BLE001 - a bug in one action must not end the session
                log.exception("simulator: AMI action %s failed", action)
                self.write(error(frame, "Internal error"))
                return
            if isinstance(result, list):
                self.write(result)
                return
        self.write(await result)

    def make_challenge(self, frame: Frame) -> list[Headers]:
        if (frame.get("AuthType") or "").lower() != "md5":
            return error(frame, "Must specify AuthType")
        self.challenge = f"{secrets.randbelow(10**9):09d}"
        return [response(frame, extra=[("Challenge", self.challenge)])]

    async def login(self, frame: Frame) -> None:
        cfg = self.core.config
        user = frame.get("Username") or ""
        if (frame.get("AuthType") or "").lower() == "md5" and self.challenge:
            expected = hashlib.md5((self.challenge + cfg.secret).encode()).hexdigest()
            good = hmac.compare_digest((frame.get("Key") or "").lower(), expected)
        else:
            good = hmac.compare_digest((frame.get("Secret") or "").encode(), cfg.secret.encode())
        good = good and hmac.compare_digest(user.encode(), cfg.username.encode())
        if not good:
            await self.core.clock.sleep(1.0)  # Asterisk waits a second before refusing
            self.write(error(frame, "Authentication failed"))
            self.closed = True
            return
        self.authed = True
        self.mask = _event_mask(frame.get("Events"))
        self.core.bus.sinks.add(self)
        self.write([response(frame, message="Authentication accepted")])
        if self.wants("system"):
            up = str(int(self.core.clock.now() - self.core.started))
            self.write([[("Event", "FullyBooted"), ("Privilege", "system,all"), ("Uptime", up), ("LastReload", up),
                         ("Status", "Fully Booted")]])
        self._security_event("SuccessfulAuth", "Informational", [("UsingPassword", "0")])

    def _security_event(self, name: str, severity: str, extra: Headers) -> None:
        now = self.core.clock.now()
        fields = [("EventTV", _tv(now)), ("Severity", severity), ("Service", "AMI"), ("EventVersion", "1")]
        if name == "SuccessfulAuth":
            fields.append(("AccountID", self.core.config.username))
        fields += [("SessionID", self.session_id), ("LocalAddress", self._addr("sockname")),
                   ("RemoteAddress", self._addr("peername"))]
        if name == "SuccessfulAuth":
            fields += [*extra, ("SessionTV", _tv(self.opened))]
        else:
            fields += [*extra, ("SessionTV", _tv(self.opened)), ("AccountID", self.core.config.username)]
        self.core.bus.emit(name, SECURITY, fields)


class AmiServer:
    def __init__(self, core: PbxCore, tasks: set[asyncio.Task], host: str, port: int) -> None:
        self.core = core
        self.actions = AmiActions(core, tasks)
        self.actions.handlers.update(transfer_actions.handlers(core))
        self.host, self.port = host, port
        self.sessions: set[AmiSession] = set()
        self._session_tasks: set[asyncio.Task] = set()
        self.refusing = False   # fault knob: accept TCP connections and reset them at once
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, self.host, self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing or len(self.sessions) >= MAX_SESSIONS:
            writer.transport.abort()
            return
        session = AmiSession(self, reader, writer)
        self.sessions.add(session)
        task = asyncio.current_task()
        if task is not None:
            self._session_tasks.add(task)
        try:
            await session.run()
        finally:
            if task is not None:
                self._session_tasks.discard(task)

    def drop_links(self) -> None:
        for session in list(self.sessions):
            session.abort()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        self.drop_links()
        if self._session_tasks:
            await asyncio.wait(set(self._session_tasks), timeout=5)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
