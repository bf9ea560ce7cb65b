"""The durable journal of finished calls, and the store of calls in progress, in Redis.

Journal: one Redis Stream per PBX node, key ``hotline:<node>:journal``. The call path is::

    entry_id = await journal.append(call)   # XADD: the call is durable from here on
    ... write the call to Postgres (idempotent on node + linkedid) ...
    await journal.ack(entry_id)              # XDEL: done

and on start (or after Postgres comes back) ``pending()`` returns every entry not yet acked,
oldest first, to be written and acked the same way. If ``append`` raises
:class:`JournalUnavailable` (Redis down), the caller writes the call straight to Postgres.

Why no consumer group: exactly one service instance consumes a node at a time (the node lease,
``hotline.lease.NodeLease``), so there is nothing to share out between consumers and no
per-consumer pending list to claim. An entry stays in the stream until it is deleted, so a
crash anywhere before ``ack`` replays it; a crash between the Postgres commit and the XDEL
replays a call that is already written, and the writer, idempotent on (node, linkedid), writes
nothing twice. An ``append`` that times out on our side may still have been stored: the call is
then written directly and replayed later, harmlessly, for the same reason. The stream is
never trimmed (trimming could drop a call not yet written).

Entries that cannot be decoded (not JSON, wrong types, a required field missing) are moved,
with the reason and their original id, to ``hotline:<node>:journal:bad`` in one MULTI, and
logged: kept for a human, never retried forever, never blocking the entries behind them.

Format: each entry has the fields ``call`` (the JSON of :func:`serialize_call`) and
``linkedid`` (for people reading the stream; the reader ignores it). The JSON is built from
the dataclass fields of ``FinishedCall`` (and of ``RecordingRef``/``TimelineEntry`` inside it),
guided by their type hints, so a field added to ``FinishedCall`` later round-trips without a
change here. Compatibility across versions:

* a field the entry lacks takes the dataclass default; if it has no default the entry is bad;
* a field of the entry unknown to the current code (written by a newer, or an older, version
  of ``FinishedCall``) is IGNORED with a warning: during a node takeover between two versions a
  call row with fewer details is better than a call missing from Postgres.

Values in free-form positions (``TimelineEntry.detail``, typed ``object``) must be JSON values;
a tuple there comes back as a list.

Open calls: :class:`OpenCallStore` keeps the calls in progress of a node in the hash
``hotline:<node>:open`` (linkedid -> JSON text chosen by the caller), so they survive a
SIGKILL of the service and can be adopted or closed by the resync after a restart.

Every Redis operation is bounded by ``op_timeout`` (redis-py retries a refused connection with
backoff on its own, and a half-open link would otherwise hang); any Redis error or timeout is
raised as :class:`JournalUnavailable`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import logging
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, Awaitable, TypeVar

import redis.asyncio as aioredis
from redis.client import NEVER_DECODE
from redis.exceptions import RedisError

from telephony.model import FinishedCall

log = logging.getLogger("hotline.journal")

T = TypeVar("T")
_BATCH = 500


class JournalUnavailable(Exception):
    """Redis could not be reached, answered with an error, or did not answer in time."""


class JournalDecodeError(ValueError):
    """A journal text is not a valid FinishedCall; the message names the field at fault."""


# --- serialising ----------------------------------------------------------------------------


def serialize_call(call: FinishedCall) -> str:
    """JSON text of ``call``, field by field; :func:`deserialize_call` gives back an equal call.

    Raises TypeError if a free-form value (``TimelineEntry.detail``) is not a JSON value.
    """
    if not isinstance(call, FinishedCall):
        raise TypeError(f"expected FinishedCall, got {type(call).__name__}")
    return json.dumps(_encode(call), ensure_ascii=False, separators=(",", ":"))


def deserialize_call(text: str | bytes) -> FinishedCall:
    """The FinishedCall of a :func:`serialize_call` text. Raises :class:`JournalDecodeError`."""
    try:
        data = json.loads(text)
    except (ValueError, TypeError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise JournalDecodeError(f"not JSON: {exc}") from None
    return _decode(FinishedCall, data, "call")


def _encode(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [_encode(v) for v in value]
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"mapping key {k!r} is not a str")
            out[k] = _encode(v)
        return out
    return value  # json.dumps rejects what JSON cannot hold


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _decode(tp: Any, value: Any, where: str) -> Any:
    if tp is Any or tp is object:
        return value
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise JournalDecodeError(f"{where}: null is not allowed")
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _decode(arg, value, where)
            except JournalDecodeError as exc:
                errors.append(str(exc))
        raise JournalDecodeError("; ".join(errors))
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, list):
            raise JournalDecodeError(f"{where}: expected a list, got {type(value).__name__}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_decode(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise JournalDecodeError(f"{where}: expected {len(args)} items, got {len(value)}")
        return tuple(_decode(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin is list:
        (arg,) = typing.get_args(tp) or (Any,)
        if not isinstance(value, list):
            raise JournalDecodeError(f"{where}: expected a list, got {type(value).__name__}")
        return [_decode(arg, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin in (Mapping, dict) or tp in (Mapping, dict):
        _, vt = typing.get_args(tp) or (str, Any)
        if not isinstance(value, dict):
            raise JournalDecodeError(f"{where}: expected an object, got {type(value).__name__}")
        return {k: _decode(vt, v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _decode_dataclass(tp, value, where)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp in (str, bool):
        if isinstance(value, tp):
            return value
    else:
        raise TypeError(f"{where}: type {tp!r} is not supported by the journal codec")
    raise JournalDecodeError(f"{where}: expected {tp.__name__}, got {type(value).__name__}")


def _decode_dataclass(cls: type[T], value: Any, where: str) -> T:
    if not isinstance(value, dict):
        raise JournalDecodeError(f"{where}: expected an object, got {type(value).__name__}")
    hints = _hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(value) - set(known))
    if unknown:
        log.warning("journal: %s: ignoring fields unknown to this version of %s: %s",
                    where, cls.__name__, ", ".join(unknown))
    kwargs = {}
    for name, f in known.items():
        if name in value:
            kwargs[name] = _decode(hints[name], value[name], f"{where}.{name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise JournalDecodeError(f"{where}: required field {name!r} is missing")
    return cls(**kwargs)


# --- Redis ----------------------------------------------------------------------------------


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def _call(aw: Awaitable[T], timeout: float | None, what: str) -> T:
    try:
        return await asyncio.wait_for(aw, timeout)
    except (RedisError, OSError) as exc:  # OSError includes TimeoutError
        raise JournalUnavailable(f"{what}: {type(exc).__name__}: {exc or 'timed out'}") from exc


class CallJournal:
    """The journal stream of one node. See the module docstring for the protocol."""

    def __init__(self, redis: aioredis.Redis, node: str, op_timeout: float | None = 2.0) -> None:
        self.redis = redis
        self.node = node
        self.key = f"hotline:{node}:journal"
        self.bad_key = f"{self.key}:bad"
        self.op_timeout = op_timeout

    async def append(self, call: FinishedCall) -> str:
        """Journal ``call`` (XADD); returns its entry id. Raises :class:`JournalUnavailable`."""
        fields = {"call": serialize_call(call), "linkedid": call.linkedid}
        entry_id = await _call(self.redis.xadd(self.key, fields), self.op_timeout, f"XADD {self.key}")
        return _text(entry_id)

    async def pending(self, limit: int | None = None) -> list[tuple[str, FinishedCall]]:
        """Every entry not yet acked (at most ``limit``), oldest first, as (entry id, call).

        Entries that cannot be decoded are moved to the bad stream on the way and left out.
        Raises :class:`JournalUnavailable`.
        """
        out: list[tuple[str, FinishedCall]] = []
        start = "-"
        while limit is None or len(out) < limit:
            # Raw bytes, whatever the client's decode_responses: a stray non-UTF-8 entry must
            # not make the whole batch unreadable.
            batch = await _call(
                self.redis.execute_command("XRANGE", self.key, start, "+", "COUNT", _BATCH, **{NEVER_DECODE: True}),
                self.op_timeout, f"XRANGE {self.key}")
            for raw_id, raw_fields in batch:
                entry_id = _text(raw_id)
                try:
                    text = _field(raw_fields, b"call")
                    call = deserialize_call(text)
                except JournalDecodeError as exc:
                    await self._set_aside(entry_id, raw_fields, str(exc))
                    continue
                out.append((entry_id, call))
                if limit is not None and len(out) >= limit:
                    break
            if len(batch) < _BATCH:
                break
            start = "(" + _text(batch[-1][0])
        return out

    async def ack(self, entry_id: str) -> None:
        """Delete the entry once its call is committed to Postgres (XDEL; twice is harmless).

        Raises :class:`JournalUnavailable`.
        """
        await _call(self.redis.xdel(self.key, entry_id), self.op_timeout, f"XDEL {self.key}")

    async def _set_aside(self, entry_id: str, raw_fields: Any, reason: str) -> None:
        fields = dict(_pairs(raw_fields))
        fields.pop(b"error", None)
        fields.pop(b"journal_id", None)
        fields[b"error"] = reason.encode()
        fields[b"journal_id"] = entry_id.encode()
        pipe = self.redis.pipeline(transaction=True)
        pipe.xadd(self.bad_key, fields)
        pipe.xdel(self.key, entry_id)
        await _call(pipe.execute(), self.op_timeout, f"move {entry_id} to {self.bad_key}")
        log.error("journal: entry %s of node %s cannot be decoded (%s); moved to %s",
                  entry_id, self.node, reason, self.bad_key)


def _pairs(raw_fields: Any) -> Iterable[tuple[bytes, bytes]]:
    if isinstance(raw_fields, dict):
        return raw_fields.items()
    return zip(raw_fields[0::2], raw_fields[1::2])


def _field(raw_fields: Any, name: bytes) -> bytes:
    for k, v in _pairs(raw_fields):
        if k == name:
            return v
    raise JournalDecodeError(f"entry has no {name.decode()!r} field")


class OpenCallStore:
    """Calls in progress of one node, in the hash ``hotline:<node>:open`` (linkedid -> text)."""

    def __init__(self, redis: aioredis.Redis, node: str, op_timeout: float | None = 2.0) -> None:
        self.redis = redis
        self.node = node
        self.key = f"hotline:{node}:open"
        self.boot_key = f"hotline:{node}:boot"
        self.op_timeout = op_timeout

    async def save(self, changed: Mapping[str, str], removed: Iterable[str] = ()) -> None:
        """Set ``changed`` and delete ``removed`` in one MULTI (deletion applied last, so a call
        both changed and removed ends up removed). Raises :class:`JournalUnavailable`."""
        removed = list(removed)
        if not changed and not removed:
            return
        pipe = self.redis.pipeline(transaction=True)
        if changed:
            pipe.hset(self.key, mapping=dict(changed))
        if removed:
            pipe.hdel(self.key, *removed)
        await _call(pipe.execute(), self.op_timeout, f"save {self.key}")

    async def get_boot(self) -> str | None:
        """The Asterisk boot (CoreStartupDate/Time) the node's owner last saw."""
        value = await _call(self.redis.get(self.boot_key), self.op_timeout, f"GET {self.boot_key}")
        return _text(value) if value is not None else None

    async def set_boot(self, boot: str) -> None:
        await _call(self.redis.set(self.boot_key, boot), self.op_timeout, f"SET {self.boot_key}")

    async def load(self) -> dict[str, str]:
        """All saved calls in progress, linkedid -> text. Raises :class:`JournalUnavailable`."""
        raw = await _call(self.redis.hgetall(self.key), self.op_timeout, f"HGETALL {self.key}")
        return {_text(k): _text(v) for k, v in raw.items()}
