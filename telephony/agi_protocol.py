"""Sans-IO FastAGI: the header block Asterisk sends, and the reply lines to each command.

How this works: Asterisk opens the connection and sends ``agi_name: value`` lines ending with an
empty line; ``parse_headers`` turns them into a dict (bytes decoded leniently: a caller name in
GBK must not kill the call). Then each command gets one reply. ``AgiReplyReader`` takes reply
lines one at a time and says when a reply is complete:
- ``200 result=1 (value) endpos=123``: success, with optional data in parentheses and key=value extras.
  The result is a number for most commands, but GET DATA answers the keys themselves
  (``200 result=*12``, ``200 result=1 (timeout)``); ``result=-1`` is a hang-up *or* a failure
  (a missing sound file gives ``200 result=-1 endpos=0`` on a live channel);
- ``510 ...`` unknown command, ``511 ...`` dead channel: one line;
- ``520-...`` usage: lines until ``520 End of proper usage.``;
- ``100 result=0 Trying...``: not final, the real reply follows;
- a lone ``HANGUP``: the caller hung up; it is remembered, not taken as the command's reply.
Anything else raises AgiProtocolError.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from telephony.errors import AgiProtocolError

MAX_HEADER_BYTES = 16 * 1024
_REPLY = re.compile(r"^(\d{3})([ -])(.*)$")
# result= runs to the first blank; the data in parentheses runs to the last ')' (a variable's
# value may hold ')' itself); key=value extras follow.
_RESULT = re.compile(r"^result=(\S*)(?: \((.*)\))?(.*)$")


def parse_headers(block: bytes) -> dict[str, str]:
    """Parse the agi_* header block (without the terminating empty line)."""
    text = block.decode("utf-8", "replace")
    headers: dict[str, str] = {}
    for raw in text.split("\n"):
        line = raw.rstrip("\r")
        if not line:
            continue
        key, sep, value = line.partition(":")
        if not sep or not key.startswith("agi_") or " " in key:
            raise AgiProtocolError(f"FastAGI header is not 'agi_name: value': {line[:80]!r}")
        headers[key] = value[1:] if value.startswith(" ") else value
    if "agi_network_script" not in headers and "agi_request" not in headers:
        raise AgiProtocolError("FastAGI headers carry neither agi_network_script nor agi_request")
    return headers


def script_of(headers: dict[str, str]) -> str:
    """The route: agi_network_script without the ``?query`` Asterisk keeps on it, no leading '/'."""
    script = headers.get("agi_network_script")
    if script is None:
        request = headers.get("agi_request", "")
        script = request.split("://", 1)[-1].partition("/")[2]
    return script.partition("?")[0].strip("/")


@dataclass(frozen=True, slots=True)
class AgiReply:
    code: int
    result: str | None = None     # the text after result= ('' for "result= (timeout)")
    data: str | None = None       # the text in parentheses
    extras: dict[str, str] = field(default_factory=dict)
    text: str = ""                # the whole reply, usage lines joined

    @property
    def ok(self) -> bool:
        return self.code == 200

    @property
    def dead(self) -> bool:
        return self.code == 511

    @property
    def result_int(self) -> int | None:
        try:
            return int(self.result) if self.result else None
        except ValueError:
            return None


class AgiReplyReader:
    """Feed reply lines (without the newline); ``feed`` returns the reply once it is complete."""

    def __init__(self) -> None:
        self.hangup_seen = False
        self._usage: list[str] | None = None

    def feed(self, line: str) -> AgiReply | None:
        line = line.rstrip("\r\n")
        if self._usage is not None:
            self._usage.append(line)
            if line.startswith("520 "):
                text, self._usage = "\n".join(self._usage), None
                return AgiReply(520, text=text)
            if len(self._usage) > 200:
                raise AgiProtocolError("520 usage reply longer than 200 lines")
            return None
        if line == "HANGUP":
            self.hangup_seen = True
            return None
        m = _REPLY.match(line)
        if m is None:
            raise AgiProtocolError(f"not an AGI reply line: {line[:80]!r}")
        code, sep, rest = int(m.group(1)), m.group(2), m.group(3)
        if code == 520 and sep == "-":
            self._usage = [line]
            return None
        if code == 100:
            return None
        if code == 200:
            r = _RESULT.match(rest)
            if r is None:
                raise AgiProtocolError(f"200 reply without result=: {line[:80]!r}")
            extras = {}
            for part in r.group(3).split():
                k, eq, v = part.partition("=")
                if eq:
                    extras[k] = v
            return AgiReply(200, result=r.group(1), data=r.group(2), extras=extras, text=line)
        return AgiReply(code, text=line)


def quote_arg(value: str) -> str:
    """Quote one AGI command argument (Asterisk splits arguments on spaces, honours "..." and \\)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
