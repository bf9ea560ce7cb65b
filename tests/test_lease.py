"""The node lease, against a real Redis: one holder at a time, takeover after a silent holder,
release, a stolen key, and a Redis that really goes away (a private redis-server, killed)."""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest
import redis.asyncio as aioredis

from hotline.lease import LeaseUnavailable, NodeLease, default_owner
from tests.support import wait_until

TTL = 1.0



class Recorder:
    """on_acquired / on_lost callbacks that count their calls."""

    def __init__(self) -> None:
        self.acquired = 0
        self.lost = 0

    async def on_acquired(self) -> None:
        self.acquired += 1

    async def on_lost(self) -> None:
        self.lost += 1


async def stop(task: asyncio.Task) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task






def test_owner_ids_are_unique_per_lease():
    assert default_owner() != default_owner()
    assert socket.gethostname() in default_owner()


async def test_only_one_acquires(redis_client, node_id):
    key = f"hotline:{node_id}:lease"
    a = NodeLease(redis_client, node_id, "a", ttl=30)
    b = NodeLease(redis_client, node_id, "b", ttl=30)
    results = await asyncio.gather(a.acquire(), b.acquire())
    assert sorted(results) == [False, True]
    first, second = (a, b) if results[0] else (b, a)
    assert await redis_client.get(key) == first.owner
    assert 0 < await redis_client.pttl(key) <= 30000
    assert await first.acquire() is True      # already ours: renewed
    assert await second.acquire() is False
    assert await second.renew() is False
    assert await second.release() is False    # not ours: left alone
    assert await first.holder() == first.owner
    assert await first.release() is True
    assert await redis_client.exists(key) == 0
    assert await second.acquire() is True
    assert await first.release() is False


async def test_takeover_after_the_holder_stops_renewing(redis_client, node_id, caplog):
    caplog.set_level(logging.INFO, logger="hotline.lease")
    key = f"hotline:{node_id}:lease"
    a, b = NodeLease(redis_client, node_id, "owner-a", ttl=TTL), NodeLease(redis_client, node_id, "owner-b", ttl=TTL)
    ra, rb = Recorder(), Recorder()
    task_a = asyncio.create_task(a.hold(ra.on_acquired, ra.on_lost))
    await wait_until(lambda: ra.acquired == 1)
    task_b = asyncio.create_task(b.hold(rb.on_acquired, rb.on_lost))
    try:
        # a keeps renewing: over several ttls b never gets the lease
        await asyncio.sleep(3 * TTL)
        assert (ra.acquired, ra.lost, rb.acquired) == (1, 0, 0)
        assert await redis_client.get(key) == "owner-a"
        assert "waiting: held by owner-a" in caplog.text

        # a stops renewing without releasing, as if SIGKILLed: b takes over once the key expires
        await stop(task_a)
        assert await redis_client.get(key) == "owner-a"
        await wait_until(lambda: rb.acquired == 1, timeout=TTL + TTL / 3 + 5)
        assert await redis_client.get(key) == "owner-b"
        assert ra.lost == 0 and rb.lost == 0
        assert "acquired by owner-b" in caplog.text
    finally:
        for t in (task_a, task_b):
            if not t.done():
                await stop(t)


async def test_release_lets_the_other_take_it_at_once(redis_client, node_id):
    a = NodeLease(redis_client, node_id, "owner-a", ttl=60)   # would only expire after a minute
    b = NodeLease(redis_client, node_id, "owner-b", ttl=TTL)
    rb = Recorder()
    assert await a.acquire()
    task_b = asyncio.create_task(b.hold(rb.on_acquired, rb.on_lost))
    try:
        await asyncio.sleep(TTL)
        assert rb.acquired == 0
        assert await a.release() is True
        await wait_until(lambda: rb.acquired == 1, timeout=10)  # well before a's 60 s ttl
        assert await redis_client.get(f"hotline:{node_id}:lease") == "owner-b"
    finally:
        await stop(task_b)


async def test_stolen_lease_renew_false_and_on_lost(redis_client, node_id, caplog):
    caplog.set_level(logging.INFO, logger="hotline.lease")
    key = f"hotline:{node_id}:lease"
    a = NodeLease(redis_client, node_id, "owner-a", ttl=TTL)
    ra = Recorder()
    task = asyncio.create_task(a.hold(ra.on_acquired, ra.on_lost))
    try:
        await wait_until(lambda: ra.acquired == 1)
        await redis_client.set(key, "thief", px=60000)
        assert await a.renew() is False
        await wait_until(lambda: ra.lost == 1)
        assert a.held is False
        assert "lost by owner-a: renewal refused" in caplog.text
        await wait_until(lambda: "waiting: held by thief" in caplog.text)
        assert await redis_client.get(key) == "thief"   # never overwritten by the loser
        assert ra.acquired == 1
        # once the thief is gone, the lease is taken back
        await redis_client.delete(key)
        await wait_until(lambda: ra.acquired == 2)
        assert await redis_client.get(key) == "owner-a"
    finally:
        await stop(task)


async def test_redis_gone_means_lease_lost(private_redis, node_id):
    client, proc = private_redis
    a = NodeLease(client, node_id, "owner-a", ttl=TTL, op_timeout=0.5)
    ra = Recorder()
    task = asyncio.create_task(a.hold(ra.on_acquired, ra.on_lost))
    try:
        await wait_until(lambda: ra.acquired == 1)
        proc.kill()
        await wait_until(lambda: ra.lost == 1)   # must assume another instance may take over
        assert a.held is False
        with pytest.raises(LeaseUnavailable):
            await a.renew()
        with pytest.raises(LeaseUnavailable):
            await a.acquire()
        await asyncio.sleep(TTL)
        assert (ra.acquired, ra.lost) == (1, 1)   # no flapping while Redis stays down
    finally:
        await stop(task)


async def test_failing_on_acquired_gives_the_lease_up(redis_client, node_id):
    a = NodeLease(redis_client, node_id, "owner-a", ttl=TTL)
    calls = []

    async def on_acquired():
        calls.append("acquired")
        if len(calls) == 1:
            raise RuntimeError("AMI connect failed")

    async def on_lost():
        calls.append("lost")

    task = asyncio.create_task(a.hold(on_acquired, on_lost))
    try:
        await wait_until(lambda: len(calls) >= 3)
        assert calls[:3] == ["acquired", "lost", "acquired"]
        assert a.held is True
    finally:
        await stop(task)


async def test_fail_open_keeps_consuming_while_redis_is_down(private_redis, node_id):
    """The service's mode: Redis gone never stops the holder; a Redis restart that lost the key
    does not either (the key is taken again), and a start with Redis down consumes at once."""
    client, proc = private_redis
    a = NodeLease(client, node_id, "owner-a", ttl=TTL, op_timeout=0.5, fail_open=True)
    ra = Recorder()
    task = asyncio.create_task(a.hold(ra.on_acquired, ra.on_lost))
    try:
        await wait_until(lambda: ra.acquired == 1)
        proc.kill()
        await asyncio.sleep(TTL * 3)
        assert (ra.acquired, ra.lost, a.held) == (1, 0, True)
    finally:
        await stop(task)

    down = NodeLease(client, node_id, "owner-b", ttl=TTL, op_timeout=0.5, fail_open=True)
    rb = Recorder()
    task = asyncio.create_task(down.hold(rb.on_acquired, rb.on_lost))
    try:
        await wait_until(lambda: rb.acquired == 1)   # Redis is still dead: consume anyway
        assert down.held is True
    finally:
        await stop(task)


async def test_fail_open_gives_way_to_a_real_holder(redis_client, node_id):
    a = NodeLease(redis_client, node_id, "owner-a", ttl=TTL, fail_open=True)
    ra = Recorder()
    task = asyncio.create_task(a.hold(ra.on_acquired, ra.on_lost))
    try:
        await wait_until(lambda: ra.acquired == 1)
        await redis_client.set(a.key, "owner-b", px=60_000)   # another instance owns it now
        await wait_until(lambda: ra.lost == 1)
        assert a.held is False
        await redis_client.delete(a.key)                     # expired: take it again
        await wait_until(lambda: ra.acquired == 2)
        assert await redis_client.get(a.key) == "owner-a"
    finally:
        await stop(task)
