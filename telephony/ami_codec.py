"""Sans-IO AMI codec: bytes in, frames out; actions in, bytes out.

How this works: Asterisk first sends one banner line (``Asterisk Call Manager/11.0.0``), then
frames of ``Key: Value`` lines ending with an empty line (CRLF CRLF). The decoder keeps the raw
bytes until a whole frame is there, so a UTF-8 character split across TCP reads is never cut, and
frames come out in the order they arrived. A frame that is not ``Key: Value`` lines raises
AmiProtocolError after it has been consumed, so the next call goes on with the next frame; a
frame over ``max_frame`` bytes raises once and is skipped; a stream without the banner raises
once and is then read as frames. How the bytes were cut into reads never changes the result.
No I/O here: the asyncio protocol only feeds bytes in (``receive_data``) and takes frames out.

Speed (AMI carries hundreds of events per call, most of them read by nobody): all the whole
frames of a read are split off with one ``bytes.split`` and checked in one pass (every line a
``Key: Value`` with a plain key), so malformed frames still fail at decode time; a checked frame
keeps its bytes and looks a header up only when it is read (``WireFrame``). Only the Event name is
read at once. Anything unusual (a key with spaces or non-ASCII, a stray blank line)
goes through ``parse_frame``, the reference parser, so both give the same headers and errors.
"""

from __future__ import annotations

import re
from collections import deque
from operator import attrgetter
from typing import Iterable, Iterator, Mapping

from telephony.errors import AmiProtocolError
from telephony.sanitize import check_key, check_value

BANNER_PREFIX = b"Asterisk Call Manager/"
_SEP = b"\r\n\r\n"
_CRLF = b"\r\n"
MAX_FRAME = 1 << 20  # 1 MiB: no real AMI frame comes near it
MAX_BANNER = 256

# The fast check: delete every byte that may sit inside a plain key (printable ASCII but ':' and
# space, other control bytes), keep ':', CR, LF, whitespace and non-ASCII. In what is left (the
# shape), each line of a well-formed frame starts with its ':' (so its key had only plain bytes:
# no edge space, no colon), every other CR is the start of a line end, and frames are joined by
# one blank line. (A lone CR or LF in a value may look like a line end in the shape; it is in a
# value either way, after a checked line start, and lookups end values at CRLF only.) A line with no kept byte at all (no colon) would look like a blank line in the
# shape: so the blank lines are counted against the number of frames (known from the split).
# Empty keys (a line starting with ':') are looked for in the bytes themselves. All of it is a
# few C-level passes.
_KEEP = set(b":\r\n \t\x0b\x0c\x1c\x1d\x1e\x1f") | set(range(0x80, 0x100))
_DELETE = bytes(b for b in range(256) if b not in _KEEP)
_EMPTY_KEY = re.compile(b"\n:")  # a literal pattern: the fastest scan for it


def _plain(raw: bytes, frames: int = 1) -> bool:
    """True if ``raw`` is ``frames`` frames (joined by blank lines) of lines with plain keys."""
    shape = raw.translate(None, _DELETE)
    # Once every line start (CRLF then ':') is taken out, the only CRs left must be the first
    # halves of the blank lines between frames: any other (a lone CR, a line with no colon, a
    # line end not followed by a key) leaves one more.
    return (shape[:1] == b":" and shape.replace(b"\r\n:", b"").count(b"\r") == frames - 1
            and raw[:1] != b":" and _EMPTY_KEY.search(raw) is None)


class Frame:
    """One AMI message: an ordered tuple of (header, value) pairs, duplicates kept.

    ``get``/``[]``/``in`` are case-insensitive and give the first header of that name. Immutable:
    ``headers``, ``event``, ``response`` and ``action_id`` are read-only.
    """

    __slots__ = ("_headers", "_index", "_event")

    def __init__(self, headers: Iterable[tuple[str, str]]) -> None:
        self._headers = headers = tuple(headers)
        index: dict[str, str] = {}
        for key, value in headers:
            index.setdefault(key.lower(), value)
        self._index = index
        self._event = index.get("event")

    @property
    def headers(self) -> tuple[tuple[str, str], ...]:
        return self._headers

    def get(self, key: str, default: str | None = None) -> str | None:
        return self._index.get(key.lower(), default)

    def lookup(self, key: str) -> str | None:
        """The value of ``key`` or None; for a value read once (a wire frame does not cache it)."""
        return self._index.get(key.lower())

    def __getitem__(self, key: str) -> str:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    def get_all(self, key: str) -> list[str]:
        low = key.lower()
        return [v for k, v in self.headers if k.lower() == low]

    event = property(attrgetter("_event"), doc="The Event header, None for a response.")

    @property
    def response(self) -> str | None:
        return self.get("Response")

    @property
    def action_id(self) -> str | None:
        return self.get("ActionID")

    def as_dict(self) -> dict[str, str]:
        return {k: v for k, v in reversed(self.headers)}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Frame):
            return NotImplemented
        return self.headers == other.headers

    def __hash__(self) -> int:
        return hash(self.headers)

    def __repr__(self) -> str:
        return f"Frame(headers={self.headers!r})"


_MISSING = object()
_finders: dict[str, tuple | None] = {}


def _finder(key: str) -> tuple | None:
    """Two searches for the first line of ``key`` (ASCII case ignored), its value as group 1: one
    for the first line, one for any other (a literal CRLF leads it, so the regex engine skips to
    each line start). None for a key that is not plain ASCII: it could only match a key the fast
    check let through by way of Unicode case folding (KELVIN SIGN -> k): the full parse answers."""
    found = _finders.get(key, _MISSING)
    if found is _MISSING:
        found = None
        if key.isascii() and key.isprintable() and ":" not in key:
            line = b"(?i:" + re.escape(key.encode("ascii")) + b"): ?([^\r]*(?:\r(?!\n)[^\r]*)*)"  # to CRLF
            found = (re.compile(line).match, re.compile(b"\r\n" + line).search)
        if len(_finders) < 1024:
            _finders[key] = found
    return found


class WireFrame(Frame):
    """A frame as it came off the wire, already checked; headers are read from its bytes on demand.

    Same answers as ``parse_frame`` of the same bytes: a header is the value after the first ':'
    of the first line whose key matches (ignoring ASCII case), less one leading space, up to CRLF.
    """

    __slots__ = ("_raw",)

    def __init__(self, raw: bytes) -> None:
        self._raw = raw
        self._headers = self._index = None
        self._event = self.lookup("Event")

    @property
    def headers(self) -> tuple[tuple[str, str], ...]:
        headers = self._headers
        if headers is None:
            headers = self._headers = _parse_headers(self._raw.decode("utf-8", "replace"))
        return headers

    def get(self, key: str, default: str | None = None) -> str | None:
        index = self._index
        if index is None:
            index = self._index = {}
        value = index.get(key, _MISSING)
        if value is _MISSING:
            value = index[key] = self.lookup(key)
        return default if value is None else value

    def lookup(self, key: str) -> str | None:
        """The value of ``key`` read from the bytes, not cached (for a value read once)."""
        finder = _finders.get(key) or _finder(key)
        if finder is None:
            low = key.lower()
            return next((v for k, v in self.headers if k.lower() == low), None)
        found = finder[0](self._raw) or finder[1](self._raw)
        return None if found is None else found[1].decode("utf-8", "replace")


def _parse_headers(text: str) -> tuple[tuple[str, str], ...]:
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
    return tuple(headers)


def parse_frame(raw: bytes) -> Frame:
    """Parse the bytes of one frame (without its terminating blank line). The reference parser."""
    return Frame(_parse_headers(raw.decode("utf-8", "replace")))


_new = object.__new__
_names: dict[bytes, str] = {}


def _wire(raw: bytes) -> WireFrame:
    """A checked frame: its Event name read now (the first line, as Asterisk sends it), the rest later."""
    frame = _new(WireFrame)
    frame._raw = raw
    frame._headers = frame._index = None
    if raw.startswith(b"Event: "):
        end = raw.find(_CRLF, 7)
        name = raw[7:end] if end >= 0 else raw[7:]
        event = _names.get(name)
        if event is None:
            event = name.decode("utf-8", "replace")
            if len(_names) < 4096:
                _names[name] = event
        frame._event = event
    else:
        frame._event = frame.lookup("Event")
    return frame


def _frame_or_error(raw: bytes) -> Frame | AmiProtocolError:
    if _plain(raw):
        return _wire(raw)
    try:
        return parse_frame(raw)
    except AmiProtocolError as exc:
        return exc


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
        self._ready: deque = deque()  # whole frames split off but not yet taken (or their errors), in order
        self.banner: str | None = None if expect_banner else ""

    def receive_data(self, data: bytes) -> None:
        self._buf += data

    def next_frame(self) -> Frame | None:
        """The next whole frame, None if more bytes are needed; AmiProtocolError if malformed.

        After an error the decoder has moved on (the bad frame consumed, an oversized one skipped up
        to its blank line, a missing banner noted), so the next call goes on with what follows.
        """
        ready = self._ready
        while not ready:
            if self.banner is None and not self._read_banner():
                return None
            if self._skipping or not self._split_whole_frames():
                return self._next_one()
        item = ready.popleft()
        if item.__class__ is AmiProtocolError:
            raise item
        return item

    def drain(self) -> list:
        """Every whole frame now in the buffer, in order, with the error of each bad one in its place.

        The same outcomes as calling ``next_frame`` until None (an error is returned here as an
        AmiProtocolError instance instead of raised), taken in one go.
        """
        out: list = []
        ready = self._ready
        while True:
            if ready:
                out.extend(ready)
                ready.clear()
            try:
                frame = self.next_frame()
            except AmiProtocolError as exc:
                out.append(exc)
                continue
            if frame is None:
                return out
            out.append(frame)

    def _split_whole_frames(self) -> bool:
        """Move every whole frame now in the buffer to the ready queue; False if there is none."""
        buf, start = self._buf, self._pos
        last = buf.rfind(_SEP, max(start, self._scan))
        if last < start:
            return False
        while last - 2 >= start and buf[last - 2:last] == _CRLF:
            last -= 2  # in a run of blank lines the first one ends the frame, as a search from the left finds
        span = bytes(buf[start:last])
        self._pos = self._scan = last + 4
        parts = span.split(_SEP)
        if len(span) <= self._max and _plain(span, len(parts)):
            self._ready.extend(map(_wire, parts))  # no blank, oversized or unusual frame among them
            return True
        for raw in parts:
            if not raw:
                continue  # a stray blank line between frames
            if len(raw) > self._max:
                self._ready.append(AmiProtocolError(f"AMI frame longer than {self._max} bytes"))
            else:
                self._ready.append(_frame_or_error(raw))
        return True

    def _next_one(self) -> Frame | None:
        """One frame at a time: skipping an oversized frame, or no whole frame yet."""
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
            frame = _frame_or_error(bytes(buf[start:end]))
            if frame.__class__ is AmiProtocolError:
                raise frame
            return frame

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
