"""ChanSpy() on an originated supervisor channel: listen (q), whisper (w), barge (B).

How this works (app_chanspy): ChanSpy(<prefix>,<options>) spies on a live channel whose name
starts with the prefix (case-insensitive; not the spyer itself; with ``b`` only bridged ones).
Pass ``PJSIP/8001-`` rather than ``PJSIP/8001``, which would also match ``PJSIP/80010-...``.
Spying starts with ChanSpyStart (Spyer*/Spyee* channel blocks) and ends with ChanSpyStop when
the spied channel hangs up or the spyer goes. After the spied channel hangs up ChanSpy looks for
another matching channel, unless option ``E`` makes it exit (then the spyer's channel hangs up).
No matching channel yet: it keeps looking. Whisper and barge change only the audio, no event.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from telephony.simulator.bus import CALL
from telephony.simulator.channels import Channel

if TYPE_CHECKING:
    from telephony.simulator.clock import SimClock
    from telephony.simulator.core import PbxCore

MAX_ROUNDS = 100_000


def _find(core: PbxCore, spyer: Channel, prefix: str, bridged_only: bool) -> Channel | None:
    want = prefix.lower()
    for chan in list(core.channels.live.values()):
        if chan is spyer or not chan.name.lower().startswith(want):
            continue
        if bridged_only and not chan.bridge_id:
            continue
        return chan
    return None


async def _wait(clock: SimClock, events: list[asyncio.Event], sim_seconds: float) -> None:
    if sim_seconds <= 0 or any(e.is_set() for e in events):
        return
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=clock.real(sim_seconds), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


def _event(core: PbxCore, name: str, spyer: Channel, spyee: Channel) -> None:
    core.bus.emit(name, CALL, [*spyer.fields("Spyer"), *spyee.fields("Spyee")])


async def chanspy(core: PbxCore, spyer: Channel, data: str, stop: asyncio.Event, until: float) -> list[str]:
    """Run ChanSpy until the spyer hangs up (``stop``, or sim time ``until``) or, with ``E``, the
    spied channel does; the names of the channels spied on."""
    prefix, _, options = data.partition(",")
    prefix = prefix.strip()
    clock, spied = core.clock, []
    watch = asyncio.Event()
    core.channels.watchers.add(watch)
    try:
        for _ in range(MAX_ROUNDS):
            if stop.is_set() or clock.now() >= until:
                break
            spyee = _find(core, spyer, prefix, "b" in options) if prefix else None
            if spyee is None:
                watch.clear()
                await _wait(clock, [stop, watch], until - clock.now())
                continue
            _event(core, "ChanSpyStart", spyer, spyee)
            spied.append(spyee.name)
            while not spyee.gone and not stop.is_set() and clock.now() < until:
                watch.clear()
                await _wait(clock, [stop, watch], until - clock.now())
            _event(core, "ChanSpyStop", spyer, spyee)
            if not spyee.gone or "E" in options:
                break
    finally:
        core.channels.watchers.discard(watch)
    return spied
