"""The node lease: at most one service instance consumes a PBX node's AMI stream at a time.

The lease is the Redis key ``hotline:<node>:lease`` holding the owner id of the instance that
holds it, with a TTL. It is taken with ``SET key owner NX PX ttl`` and renewed or released only
by its owner (compare-and-set in Lua), so an instance that stops renewing (killed, frozen,
cut off from Redis) loses it after at most ``ttl`` and another instance takes over.

Usage (the service)::

    lease = NodeLease(redis, node, default_owner())
    task = asyncio.create_task(lease.hold(on_acquired=start_consuming, on_lost=stop_consuming))
    ...
    task.cancel(); await stop_consuming(); await lease.release()   # graceful shutdown

:meth:`NodeLease.hold` tries to acquire every ``ttl/3`` s while another instance holds the lease,
and renews every ``ttl/3`` s while it holds it, so a takeover happens within ``ttl + ttl/3`` of
the holder's last renewal. It calls ``on_lost`` when a renewal is refused, or when Redis has not
confirmed a renewal for the whole ``ttl`` (counted from when the last successful renewal was
sent): by then the key may have expired and another instance may be consuming. The callbacks
are awaited inside the loop, so they must return promptly (start or stop a task); no renewal
happens while one runs. Cancelling ``hold`` neither calls ``on_lost`` nor releases the lease
(the lease then expires after ``ttl``, as after a SIGKILL); release it yourself on shutdown.

Fail-open (``fail_open=True``, what the service uses): when Redis cannot be reached, the lease
is taken as held: at once by its holder, and by an instance without it once Redis has been
unreachable for a whole ttl (so one slow answer does not make a standby a second owner). Nobody else can take a lease while Redis
is down for everybody, and a double consumer costs only duplicate work (the writer is idempotent
on node + linkedid), whereas no consumer loses calls. Only a definite "no" from Redis (the key
holds another owner) stops consumption. While held, the lease is kept with ``acquire`` (SET NX,
else renew if ours), so a Redis restart that lost the key does not interrupt the holder.

Two consumers can still overlap briefly (a holder that has not yet noticed its loss); the
journal's writer is idempotent on (node, linkedid), so that overlap never doubles a call.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from typing import Awaitable, Callable, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger("hotline.lease")

T = TypeVar("T")
Callback = Callable[[], Awaitable[object]]

# Extend the TTL only if the key still holds our owner id.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
# Delete the key only if it still holds our owner id.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class LeaseUnavailable(Exception):
    """Redis could not be reached, answered with an error, or did not answer in time."""


def default_owner() -> str:
    """An owner id unique to this process: hostname, pid and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class NodeLease:
    """The lease of one node for one owner. ``ttl`` is in seconds."""

    def __init__(self, redis: aioredis.Redis, node: str, owner: str | None = None, ttl: float = 10.0,
                 op_timeout: float = 2.0, fail_open: bool = False) -> None:
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        self.redis = redis
        self.node = node
        self.owner = owner or default_owner()
        self.ttl = ttl
        self.op_timeout = op_timeout
        self.fail_open = fail_open
        self.key = f"hotline:{node}:lease"
        self.held = False          # as far as hold() knows
        self._px = max(1, round(ttl * 1000))
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)

    async def acquire(self, timeout: float | None = None) -> bool:
        """Take the lease if it is free (SET NX PX); True if we hold it now (also when we already
        held it: it is then renewed). Raises :class:`LeaseUnavailable`."""
        got = await self._call(self.redis.set(self.key, self.owner, nx=True, px=self._px), timeout, "SET NX")
        if got:
            return True
        return await self.renew(timeout)

    async def renew(self, timeout: float | None = None) -> bool:
        """Extend the lease to ``ttl`` from now if it is still ours; False if it is not (expired
        or taken). Raises :class:`LeaseUnavailable`."""
        done = await self._call(self._renew(keys=[self.key], args=[self.owner, self._px]), timeout, "renew")
        return bool(done)

    async def release(self, timeout: float | None = None) -> bool:
        """Give the lease up if it is ours (another instance may take it at once); True if it was
        ours. Raises :class:`LeaseUnavailable`."""
        done = await self._call(self._release(keys=[self.key], args=[self.owner]), timeout, "release")
        if self.held:
            self.held = False
            log.info("lease %s: released by %s", self.key, self.owner)
        return bool(done)

    async def holder(self, timeout: float | None = None) -> str | None:
        """The owner id holding the lease now, or None. Raises :class:`LeaseUnavailable`."""
        value = await self._call(self.redis.get(self.key), timeout, "GET")
        return value.decode() if isinstance(value, bytes) else value

    async def hold(self, on_acquired: Callback, on_lost: Callback) -> None:
        """Acquire, keep and re-acquire the lease until cancelled (see the module docstring)."""
        period = self.ttl / 3
        valid_until = 0.0     # monotonic time until which the lease is surely ours
        last_holder: str | None = None
        redis_down = False
        down_since = 0.0
        while True:
            sent = time.monotonic()
            if not self.held:
                try:
                    got = await self.acquire()
                    if redis_down:
                        redis_down = False
                        log.info("lease %s: Redis reachable again", self.key)
                except LeaseUnavailable as exc:
                    if not redis_down:
                        redis_down = True
                        down_since = sent
                        log.warning("lease %s: cannot reach Redis (%s); retrying every %.1f s", self.key, exc, period)
                    # Fail open only once Redis has been gone for a whole ttl: one slow answer must
                    # not make a healthy standby a second owner.
                    got = self.fail_open and sent - down_since >= self.ttl
                    if got:
                        log.warning("lease %s: Redis unreachable for %.1f s; owning the node without a lease "
                                    "(fail-open)", self.key, sent - down_since)
                if got:
                    self.held = True
                    valid_until = sent + self.ttl
                    last_holder = None
                    log.info("lease %s: acquired by %s", self.key, self.owner)
                    if not await self._run(on_acquired, "on_acquired"):
                        await self._run(on_lost, "on_lost")
                        try:
                            await self.release()
                        except LeaseUnavailable:
                            pass
                        self.held = False
                elif not redis_down:
                    try:
                        current = await self.holder()
                    except LeaseUnavailable:
                        current = last_holder
                    if current != last_holder and current is not None:
                        log.info("lease %s: waiting: held by %s", self.key, current)
                    last_holder = current
                await asyncio.sleep(period)
                continue

            # Held: renew, bounded by the time the lease surely remains ours.
            remaining = valid_until - sent
            reason = None
            if self.fail_open:
                try:
                    if await self.acquire():
                        if redis_down:
                            redis_down = False
                            log.info("lease %s: Redis reachable again; lease held by %s", self.key, self.owner)
                    else:
                        reason = "the lease is held by another instance"
                except LeaseUnavailable as exc:
                    if not redis_down:
                        redis_down = True
                        log.warning("lease %s: cannot reach Redis (%s); still consuming (fail-open)", self.key, exc)
            elif remaining <= 0:
                reason = f"Redis unreachable for longer than the lease ttl ({self.ttl:g} s)"
            else:
                try:
                    if await self.renew(timeout=min(self.op_timeout, remaining)):
                        valid_until = sent + self.ttl
                        if redis_down:
                            redis_down = False
                            log.info("lease %s: Redis reachable again; lease renewed", self.key)
                    else:
                        reason = "renewal refused: the lease expired or was taken"
                except LeaseUnavailable as exc:
                    if time.monotonic() >= valid_until:
                        reason = f"Redis unreachable for longer than the lease ttl ({exc})"
                    elif not redis_down:
                        redis_down = True
                        log.warning("lease %s: renewal failed (%s); the lease stays ours for %.1f s more",
                                    self.key, exc, valid_until - time.monotonic())
            if reason is not None:
                self.held = False
                log.warning("lease %s: lost by %s: %s", self.key, self.owner, reason)
                await self._run(on_lost, "on_lost")
                continue  # try to take it back at once (it may simply have expired)
            # Sleep a third of the ttl, but wake before the lease runs out to declare it lost.
            if self.fail_open:
                await asyncio.sleep(period)
            else:
                await asyncio.sleep(max(0.0, min(period, valid_until - time.monotonic())))

    async def _run(self, callback: Callback, name: str) -> bool:
        try:
            await callback()
            return True
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("lease %s: %s failed", self.key, name)
            return False

    async def _call(self, aw: Awaitable[T], timeout: float | None, what: str) -> T:
        try:
            return await asyncio.wait_for(aw, self.op_timeout if timeout is None else timeout)
        except (RedisError, OSError) as exc:  # OSError includes TimeoutError
            raise LeaseUnavailable(f"{what} {self.key}: {type(exc).__name__}: {exc or 'timed out'}") from exc
