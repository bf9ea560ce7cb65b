"""Asterisk's side of a FastAGI session: dial the service, send agi_* headers, answer commands.

How this works: connect to ``agi://host:port/ivr`` (2 s limit, as res_agi; failure:
AGISTATUS=FAILURE and the dialplan goes on), send the ``agi_*`` headers and a blank line,
then read one command line at a time and answer it (AGIExecStart / AGIExecEnd around each).
When the caller hangs up, the command running ends with ``200 result=-1`` and the ``HANGUP``
line goes out just before the next reply (as in ivr_hangup.agi); if no command was running it
goes out at once. The session ends when the service closes the socket (AGISTATUS=SUCCESS, or
HANGUP if the caller has gone). Everything is bounded: line length, command count, idle time.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import TYPE_CHECKING

from telephony.simulator import agi_commands as cmds
from telephony.simulator.bus import AGI

if TYPE_CHECKING:
    from telephony.simulator.calls import InboundCall

log = logging.getLogger("hotline.simulator.agi")

CONNECT_TIMEOUT = 2.0   # real seconds
IDLE_TIMEOUT = 300.0    # real seconds without a command: the session is dropped
MAX_LINE = 8192
MAX_COMMANDS = 10_000
RESULT_TEXT = {510: "Invalid or unknown command", 511: "Command Not Permitted on a dead channel or intercept routine",
               520: "Usage"}


class AgiDialogue:
    def __init__(self, call: InboundCall, script: str = "ivr") -> None:
        self.call = call
        cfg = call.core.config
        self.host, self.port = cfg.agi_host, cfg.agi_port
        self.script = script
        self.url = f"agi://{self.host}:{self.port}/{script}"
        self.hangup_sent = False
        self.hangup_due = False  # the caller hung up during a command: HANGUP before the next reply

    def headers(self) -> bytes:
        c2 = self.call.c2
        lines = [
            ("agi_network", "yes"), ("agi_network_script", self.script), ("agi_request", self.url),
            ("agi_channel", c2.name), ("agi_language", c2.language), ("agi_type", c2.tech),
            ("agi_uniqueid", c2.uniqueid), ("agi_version", "22.10.1"), ("agi_callerid", c2.cid_num or "unknown"),
            ("agi_calleridname", c2.cid_name or "unknown"), ("agi_callingpres", "0"), ("agi_callingani2", "0"),
            ("agi_callington", "0"), ("agi_callingtns", "0"), ("agi_dnid", "unknown"), ("agi_rdnis", "unknown"),
            ("agi_context", c2.context), ("agi_extension", c2.exten), ("agi_priority", str(c2.priority)),
            ("agi_enhanced", "0.0"), ("agi_accountcode", c2.accountcode),
            ("agi_threadid", str(random.randrange(139_000_000_000_000, 140_999_999_999_999))),
        ]
        return ("".join(f"{k}: {v}\n" for k, v in lines) + "\n").encode("utf-8", "replace")

    async def run(self) -> str:
        """Run the session; the AGISTATUS it leaves."""
        if self.call.core.agi_refused:  # as a refused connect: AGI() fails at once, the dialplan goes on
            log.warning("simulator: FastAGI %s refused for %s (fault knob)", self.url, self.call.c2.name)
            return "FAILURE"
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port, limit=MAX_LINE), CONNECT_TIMEOUT)
        except (OSError, asyncio.TimeoutError) as exc:
            log.warning("simulator: FastAGI %s unreachable for %s: %s", self.url, self.call.c2.name, exc)
            return "FAILURE"
        try:
            writer.write(self.headers())
            await writer.drain()
            await self._serve(reader, writer)
        except (ConnectionError, OSError, ValueError, asyncio.LimitOverrunError, asyncio.IncompleteReadError) as exc:
            log.info("simulator: FastAGI session of %s ended: %r", self.call.c2.name, exc)
        finally:
            writer.close()
            try:
                await asyncio.wait_for(writer.wait_closed(), 1.0)
            except (OSError, asyncio.TimeoutError):
                pass
        return "HANGUP" if self.call.dead.is_set() else "SUCCESS"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(MAX_COMMANDS):
            line = await self._next_line(reader, writer)
            if line is None:
                return
            await self._command(line, writer)
        log.warning("simulator: FastAGI session of %s sent too many commands; closing", self.call.c2.name)

    async def _next_line(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> str | None:
        read = asyncio.ensure_future(reader.readline())
        try:
            if not self.call.dead.is_set():
                dead = asyncio.ensure_future(self.call.dead.wait())
                await asyncio.wait({read, dead}, timeout=IDLE_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
                dead.cancel()
            if not read.done() and self.call.dead.is_set() and not self.hangup_due:
                self._send_hangup(writer)  # hung up while no command ran: HANGUP at once
                await writer.drain()
            if not read.done():
                await asyncio.wait({read}, timeout=IDLE_TIMEOUT)
            if not read.done():
                log.warning("simulator: FastAGI session of %s idle too long; closing", self.call.c2.name)
                return None
            raw = read.result()
        finally:
            if not read.done():
                read.cancel()
        if not raw or not raw.endswith(b"\n"):
            return None
        return raw.decode("utf-8", "replace").rstrip("\r\n")

    def _send_hangup(self, writer: asyncio.StreamWriter) -> None:
        if not self.hangup_sent:
            self.hangup_sent = True
            writer.write(b"HANGUP\n")

    async def _command(self, line: str, writer: asyncio.StreamWriter) -> None:
        call, bus = self.call, self.call.core.bus
        command_id = str(random.randrange(1, 2**31))
        bus.emit("AGIExecStart", AGI, [*call.c2.fields(), ("CommandId", command_id), ("Command", line)])
        started_dead = call.dead.is_set()
        code, reply = await self._execute(line, started_dead)
        if call.dead.is_set() and not started_dead:
            self.hangup_due = True
        if started_dead:
            self._send_hangup(writer)
        writer.write(("\n".join(reply) + "\n").encode("utf-8", "replace"))
        await writer.drain()
        result = "Success" if code == 200 else RESULT_TEXT.get(code, "Failure")
        bus.emit("AGIExecEnd", AGI, [*call.c2.fields(), ("CommandId", command_id), ("Command", line),
                                     ("ResultCode", str(code)), ("Result", result)])
        if started_dead:
            call.flush_citizen_hangup()

    async def _execute(self, line: str, dead: bool) -> tuple[int, list[str]]:
        if "\x00" in line or "\r" in line:
            return 510, ["510 Invalid or unknown command"]
        argv = cmds.parse_args(line)
        command = cmds.find(argv)
        if command is None:
            return 510, ["510 Invalid or unknown command"]
        if dead and not command.dead_ok:
            return 511, ["511 Command Not Permitted on a dead channel or intercept routine"]
        answer = await command.handler(self.call, argv)
        if answer is cmds.USAGE:
            return 520, ["520-Invalid command syntax.  Proper usage follows:", *command.usage.split("\n"),
                         "520 End of proper usage."]
        return 200, [str(answer)]
