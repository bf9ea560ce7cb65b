"""FastAGI server: panoramisk's Application for routing, with a robust dialogue underneath.

How this works: for each connection from Asterisk we read the agi_* header block (with a size
limit and a timeout; a client that closes early is logged and dropped, the loop never spins),
route on agi_network_script without its ``?query``, and hand the route an AgiSession. The
session sends one command at a time and reads its reply with AgiReplyReader, so an
asynchronous HANGUP line or a multi-line 520 never shifts later replies. Each command has a
timeout, each session a timeout, and at most ``max_sessions`` run at once: beyond that a new
session is refused with a log line (Asterisk then continues its dialplan: the safe route).
A route's exception is logged, then the route's ``on_error(session)`` (if any) runs, so the
caller still gets the safe route.

Replies stay in step with commands even when a command times out: Asterisk answers every
command it read, late or not, so the session counts the replies it still owes and skips them
before reading the next command's own reply. A reply stream that cannot be trusted any more
(an unparseable or overlong line) makes the session refuse further commands; the dialplan's
own fallback then routes the caller.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Awaitable, Callable

from panoramisk.fast_agi import Application, Request

from telephony.agi_protocol import MAX_HEADER_BYTES, AgiReply, AgiReplyReader, parse_headers, quote_arg, script_of
from telephony.errors import AgiProtocolError
from telephony.sanitize import check_value

log = logging.getLogger("hotline.agi")


class AgiHangup(Exception):
    """The channel is gone: the caller hung up (HANGUP line or 511)."""


class AgiCommandFailed(Exception):
    """A media command answered ``result=-1``: the caller hung up, or it failed (e.g. a missing
    sound file) on a live channel. Asterisk cannot tell which at that point; the next reply
    is preceded by a HANGUP line if it was a hang-up."""


class AgiSession(Request):
    """One FastAGI dialogue. ``headers`` as panoramisk's Request; commands via ``send_command``."""

    def __init__(self, app, headers, reader, writer, *, command_timeout: float) -> None:
        super().__init__(app, headers, reader, writer)
        self.command_timeout = command_timeout
        self.replies = AgiReplyReader()
        self.commands = 0
        self.owed = 0            # replies Asterisk still owes (commands sent, reply not read yet)
        self.closed = False      # Asterisk closed the connection
        self.broken: str | None = None  # why the reply stream cannot be trusted any more

    @property
    def hungup(self) -> bool:
        return self.replies.hangup_seen

    async def send_command(self, command: str) -> AgiReply:
        """Send one command line and return its reply (never the HANGUP line itself)."""
        check_value(command, "AGI command")
        if self.broken is not None:
            raise AgiProtocolError(f"FastAGI session unusable: {self.broken}")
        if self.closed:
            raise ConnectionResetError("Asterisk closed the FastAGI connection")
        self.writer.write(command.encode("utf-8") + b"\n")
        self.owed += 1
        self.commands += 1
        return await asyncio.wait_for(self._own_reply(), self.command_timeout)

    async def _own_reply(self) -> AgiReply:
        await self.writer.drain()
        while True:
            reply = await self._read_reply()
            self.owed -= 1
            if self.owed == 0:
                return reply
            log.info("FastAGI %s: skipped the late reply of a timed-out command: %r",
                     self.headers.get("agi_uniqueid"), reply.text[:80])

    async def _read_reply(self) -> AgiReply:
        while True:
            try:
                line = await self.reader.readline()
            except ValueError as exc:  # a line over the stream limit: the stream is out of step
                self.broken = "reply line too long"
                raise AgiProtocolError(self.broken) from exc
            if not line:
                self.closed = True
                raise ConnectionResetError("Asterisk closed the FastAGI connection")
            try:
                reply = self.replies.feed(line.decode("utf-8", "replace"))
            except AgiProtocolError as exc:
                self.broken = str(exc)
                raise
            if reply is not None:
                if reply.dead:
                    self.replies.hangup_seen = True
                return reply

    # The commands the IVR uses. Media commands raise AgiHangup on 511 (dead channel) and
    # AgiCommandFailed on result=-1 (hang-up or failure, see there).
    async def _media(self, command: str) -> AgiReply:
        reply = await self.send_command(command)
        if reply.dead:
            raise AgiHangup(command.split(" ", 1)[0])
        if not reply.ok:
            raise AgiCommandFailed(f"{command.split(' ', 1)[0]}: {reply.text[:80]}")
        if reply.result == "-1":
            raise AgiCommandFailed(f"{command.split(' ', 1)[0]}: result=-1")
        return reply

    async def answer(self) -> AgiReply:
        return await self._media("ANSWER")

    async def stream_file(self, name: str, escape_digits: str = "") -> str | None:
        """Play a prompt; return the key that interrupted it (result = its ASCII code), or None."""
        reply = await self._media(f"STREAM FILE {_word(name)} {quote_arg(escape_digits)}")
        code = reply.result_int
        return chr(code) if code and 0 < code < 128 else None

    async def get_data(self, prompt: str, timeout_ms: int, max_digits: int) -> str:
        """Play a prompt and collect keys (result = the keys themselves); '' when none came in time."""
        reply = await self._media(f"GET DATA {_word(prompt)} {int(timeout_ms)} {int(max_digits)}")
        return reply.result or ""

    async def set_variable(self, name: str, value: str) -> AgiReply:
        return await self.send_command(f"SET VARIABLE {_word(name)} {quote_arg(check_value(value, name))}")

    async def get_variable(self, name: str) -> str | None:
        reply = await self.send_command(f"GET VARIABLE {_word(name)}")
        return reply.data if reply.ok and reply.result == "1" else None

    async def verbose(self, message: str, level: int = 1) -> AgiReply:
        return await self.send_command(f"VERBOSE {quote_arg(check_value(message, 'message'))} {int(level)}")


def _word(value: str) -> str:
    """A single AGI argument that must not hold spaces, quotes or line breaks."""
    check_value(value, "AGI argument")
    if not value or any(c in value for c in " \"\\"):
        raise ValueError(f"AGI argument must be one word: {value[:40]!r}")
    return value


Route = Callable[[AgiSession], Awaitable[None]]


class FastAgiServer(Application):
    def __init__(
        self,
        *,
        max_sessions: int = 500,
        session_timeout: float = 120.0,
        command_timeout: float = 30.0,
        header_timeout: float = 5.0,
    ) -> None:
        super().__init__(loop=asyncio.get_running_loop())
        self.max_sessions = max_sessions
        self.session_timeout = session_timeout
        self.command_timeout = command_timeout
        self.header_timeout = header_timeout
        self.active = 0
        self.refused = 0
        self.sessions_total = 0
        self._errors: dict[str, Callable[[AgiSession], Awaitable[None]]] = {}
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task] = set()

    def add_route(self, path: str, endpoint, on_error=None) -> None:
        """Route ``path`` to ``endpoint`` (async or plain function); ``on_error`` runs if it fails."""
        if not callable(endpoint):
            raise TypeError(f"route {path!r}: endpoint is not callable")
        if path in self._route:
            raise ValueError(f"a route for {path!r} exists already")
        if not inspect.iscoroutinefunction(endpoint):
            given = endpoint

            async def endpoint(request, _given=given):
                result = _given(request)
                if inspect.isawaitable(result):
                    result = await result
                return result

        self._route[path] = endpoint
        if on_error is not None:
            self._errors[path] = on_error

    async def start(self, host: str, port: int) -> int:
        self._server = await asyncio.start_server(self.handler, host, port, limit=MAX_HEADER_BYTES)
        bound = self._server.sockets[0].getsockname()[1]
        log.info("FastAGI listening on %s:%s", host, bound)
        return bound

    async def stop(self) -> None:
        """Stop listening and end the running sessions (newer Pythons' wait_closed waits for them)."""
        if self._server is not None:
            self._server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def handler(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        peer = writer.get_extra_info("peername")
        try:
            if self.active >= self.max_sessions:
                self.refused += 1
                log.warning("FastAGI: refused a session from %s: %d sessions already running", peer, self.active)
                return
            self.active += 1
            try:
                await self._serve(reader, writer, peer)
            finally:
                self.active -= 1
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _read_headers(self, reader: asyncio.StreamReader) -> bytes:
        block = bytearray()
        while True:
            line = await reader.readline()
            if not line:
                raise AgiProtocolError("connection closed before the end of the FastAGI headers")
            if line in (b"\n", b"\r\n"):
                return bytes(block)
            block += line
            if len(block) > MAX_HEADER_BYTES:
                raise AgiProtocolError("FastAGI header block too long")

    async def _serve(self, reader, writer, peer) -> None:
        try:
            block = await asyncio.wait_for(self._read_headers(reader), self.header_timeout)
            headers = parse_headers(block)
        except (AgiProtocolError, ValueError) as exc:
            log.warning("FastAGI: closing %s: %s", peer, exc)
            return
        except asyncio.TimeoutError:  # before OSError: TimeoutError is one
            log.warning("FastAGI: closing %s: no complete header block in %.0f s", peer, self.header_timeout)
            return
        except OSError as exc:
            log.warning("FastAGI: connection from %s lost during the headers: %r", peer, exc)
            return
        script = script_of(headers)
        route = self._route.get(script)
        if route is None:
            log.error("FastAGI: no route for %r (channel %r)", script, headers.get("agi_channel"))
            return
        self.sessions_total += 1
        session = AgiSession(self, headers, reader, writer, command_timeout=self.command_timeout)
        try:
            await asyncio.wait_for(route(session), self.session_timeout)
            return
        except AgiHangup:
            log.info("FastAGI %s: caller hung up during %s", headers.get("agi_uniqueid"), script)
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure still gets the safe route below
            log.error("FastAGI %s: route %r failed: %r", headers.get("agi_uniqueid"), script, exc)
        on_error = self._errors.get(script)
        if on_error is None:
            return
        if session.closed or session.broken is not None:
            log.error("FastAGI %s: no safe route possible (%s); the dialplan's fallback applies",
                      headers.get("agi_uniqueid"), "connection closed" if session.closed else session.broken)
            return
        try:
            await asyncio.wait_for(on_error(session), self.command_timeout)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001
            log.error("FastAGI %s: safe route could not be set: %r", headers.get("agi_uniqueid"), exc)
