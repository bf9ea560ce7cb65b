"""Sans-IO AMI codec: bytes in, frames out; actions in, bytes out.

How this works: Asterisk first sends one banner line (``Asterisk Call Manager/11.0.0``), then
frames of ``Key: Value`` lines ending with an empty line (CRLF CRLF). The decoder keeps the raw
bytes until a whole frame is there, so a UTF-8 character split across TCP reads is never cut, and
frames come out in the order they arrived. A frame that is not ``Key: Value`` lines raises
AmiProtocolError after it has been consumed, so the next call goes on with the next frame; a
frame over ``max_frame`` bytes raises once and is skipped; a stream without the banner raises
once and is then read as frames. How the bytes were cut into reads never changes the result.
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
MAX_BANNER = 256


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
    """Feed bytes with ``receive_data``; take frames with ``next_frame`` or iteration.

    The result never depends on how the bytes were cut into reads: every limit is checked so that
    the same input gives the same frames and the same errors, whole or one byte at a time. Lines
    end with CRLF, as Asterisk sends them; a bare LF is part of a value (VarSet of a SHELL() or
    CURL() result carries raw LFs), never a line end.
    """

    def __init__(self, max_frame: int = MAX_FRAME, expect_banner: bool = True) -> None:
        self._buf = bytearray()
        self._pos = 0
        self._scan = 0            # where the next search for a blank line starts (bytes before it were searched)
        self._skipping = False    # dropping the rest of an oversized frame up to its blank line
        self._max = max_frame
        self.banner: str | None = None if expect_banner else ""

    def receive_data(self, data: bytes) -> None:
        self._buf += data

    def next_frame(self) -> Frame | None:
        """The next whole frame, None if more bytes are needed; AmiProtocolError if malformed.

        After an error the decoder has moved on (the bad frame consumed, an oversized one skipped up
        to its blank line, a missing banner noted), so the next call goes on with what follows.
        """
        if self.banner is None:
            if not self._read_banner():
                return None
        buf = self._buf
        while True:
            start = self._pos
            end = buf.find(_SEP, max(start, self._scan))
            if end < 0:
                self._scan = max(start, len(buf) - 3)
                if self._skipping:
                    self._pos = self._scan
                elif self._scan - start > self._max:
                    # at least max+1 bytes of this frame are here and its blank line is not
                    self._skipping = True
                    self._pos = self._scan
                    self._compact()
                    raise AmiProtocolError(f"AMI frame longer than {self._max} bytes")
                self._compact()
                return None
            self._pos = self._scan = end + 4
            if self._skipping:
                self._skipping = False
                continue
            if end == start:
                continue  # a stray blank line between frames
            if end - start > self._max:
                raise AmiProtocolError(f"AMI frame longer than {self._max} bytes")
            return parse_frame(bytes(buf[start:end]))

    def _read_banner(self) -> bool:
        """Consume the banner line; False if more bytes are needed. Raises if there is none."""
        buf, pos = self._buf, self._pos
        have = bytes(buf[pos:pos + len(BANNER_PREFIX)])
        if not BANNER_PREFIX.startswith(have):
            self.banner = ""  # not Asterisk's banner: read what came as frames
            raise AmiProtocolError(f"not an AMI banner: {have!r}")
        end = buf.find(b"\r\n", pos)
        if end < 0:
            if len(buf) - pos > MAX_BANNER + 1:
                end = len(buf)
            else:
                return False
        if end - pos > MAX_BANNER:
            self.banner = ""
            self._skipping = True  # drop the rest of the line and whatever follows it up to a blank line
            self._pos = self._scan = pos
            raise AmiProtocolError(f"AMI banner longer than {MAX_BANNER} bytes")
        self.banner = bytes(buf[pos:end]).decode("ascii", "replace")
        self._pos = self._scan = end + 2
        return True

    def __iter__(self) -> Iterator[Frame]:
        while True:
            frame = self.next_frame()
            if frame is None:
                return
            yield frame

    def _compact(self) -> None:
        if self._pos:
            del self._buf[: self._pos]
            self._scan -= self._pos
            self._pos = 0


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
