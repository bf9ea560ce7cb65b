"""Sans-IO AMI codec: bytes in, frames out; actions in, bytes out.

How this works: Asterisk first sends one banner line (``Asterisk Call Manager/11.0.0``), then
frames of ``Key: Value`` lines ending with an empty line (CRLF CRLF). The decoder keeps the raw
bytes until a whole frame is there, so a UTF-8 character split across TCP reads is never cut, and
frames come out in the order they arrived. A frame that is not ``Key: Value`` lines raises
AmiProtocolError after it has been consumed, so the next call goes on with the next frame.
No I/O here: the asyncio protocol only feeds bytes in (``receive_data``) and takes frames out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Iterator, Mapping

from telephony.errors import AmiProtocolError
from telephony.sanitize import check_key, check_value

BANNER_PREFIX = b"Asterisk Call Manager/"
_SEP = b"\r\n\r\n"
MAX_FRAME = 1 << 20  # 1 MiB: no real AMI frame comes near it


@dataclass(frozen=True, slots=True)
class Frame:
    """One AMI message: an ordered tuple of (header, value) pairs, duplicates kept."""

    headers: tuple[tuple[str, str], ...]
    _index: dict = field(default_factory=dict, compare=False, repr=False, hash=False)

    def __post_init__(self) -> None:
        index = self._index
        for key, value in self.headers:
            index.setdefault(key.lower(), value)

    def get(self, key: str, default: str | None = None) -> str | None:
        return self._index.get(key.lower(), default)

    def __getitem__(self, key: str) -> str:
        value = self._index.get(key.lower())
        if value is None:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._index

    def get_all(self, key: str) -> list[str]:
        low = key.lower()
        return [v for k, v in self.headers if k.lower() == low]

    @property
    def event(self) -> str | None:
        return self._index.get("event")

    @property
    def response(self) -> str | None:
        return self._index.get("response")

    @property
    def action_id(self) -> str | None:
        return self._index.get("actionid")

    def as_dict(self) -> dict[str, str]:
        return {k: v for k, v in reversed(self.headers)} if self.headers else {}


def parse_frame(raw: bytes) -> Frame:
    """Parse the bytes of one frame (without its terminating blank line)."""
    text = raw.decode("utf-8", "replace")
    headers = []
    for line in text.split("\r\n"):
        if not line:
            continue
        key, sep, value = line.partition(":")
        if not sep or not key or key != key.strip():
            raise AmiProtocolError(f"AMI line is not 'Key: Value': {line[:80]!r}")
        if value.startswith(" "):
            value = value[1:]
        headers.append((key, value))
    if not headers:
        raise AmiProtocolError("empty AMI frame")
    return Frame(tuple(headers))


class AmiDecoder:
    """Feed bytes with ``receive_data``; take frames with ``next_frame`` or iteration."""

    def __init__(self, max_frame: int = MAX_FRAME, expect_banner: bool = True) -> None:
        self._buf = bytearray()
        self._pos = 0
        self._max = max_frame
        self.banner: str | None = None if expect_banner else ""

    def receive_data(self, data: bytes) -> None:
        self._buf += data

    def next_frame(self) -> Frame | None:
        """The next whole frame, None if more bytes are needed; AmiProtocolError if malformed."""
        buf = self._buf
        if self.banner is None:
            end = buf.find(b"\r\n", self._pos)
            if end < 0:
                if len(buf) - self._pos > 256:
                    raise self._reset("no AMI banner in the first 256 bytes")
                return None
            line = bytes(buf[self._pos:end])
            self._pos = end + 2
            if not line.startswith(BANNER_PREFIX):
                self.banner = ""
                raise AmiProtocolError(f"not an AMI banner: {line[:80]!r}")
            self.banner = line.decode("ascii", "replace")
            return self.next_frame()
        while True:
            end = buf.find(_SEP, self._pos)
            if end < 0:
                if len(buf) - self._pos > self._max:
                    raise self._reset(f"AMI frame longer than {self._max} bytes")
                self._compact()
                return None
            start = self._pos
            self._pos = end + 4
            if end == start:
                continue  # a stray blank line between frames
            return parse_frame(bytes(buf[start:end]))

    def __iter__(self) -> Iterator[Frame]:
        while True:
            frame = self.next_frame()
            if frame is None:
                return
            yield frame

    def _compact(self) -> None:
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0

    def _reset(self, why: str) -> AmiProtocolError:
        self._buf.clear()
        self._pos = 0
        return AmiProtocolError(why)


def encode_action(
    action: str, fields: Mapping[str, object] | Iterable[tuple[str, object]] = (), action_id: str | None = None
) -> bytes:
    """Serialise one action. Every key and value is checked for CR, LF and NUL here."""
    lines = [f"Action: {check_value(action, 'Action')}"]
    if action_id is not None:
        lines.append(f"ActionID: {check_value(action_id, 'ActionID')}")
    items = fields.items() if isinstance(fields, Mapping) else fields
    for key, value in items:
        if value is None:
            continue
        check_key(key)
        values = value if isinstance(value, (list, tuple)) else (value,)
        for v in values:
            lines.append(f"{key}: {check_value(v, key)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")


def encode_frame(headers: Iterable[tuple[str, object]]) -> bytes:
    """Serialise a response or event (used by the PBX simulator, the Asterisk side)."""
    out = []
    for key, value in headers:
        check_key(key)
        out.append(f"{key}: {check_value(value, key)}")
    return ("\r\n".join(out) + "\r\n\r\n").encode("utf-8")
