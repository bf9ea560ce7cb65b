"""The simulator's clock: sim time runs ``speed`` times faster than the event loop's clock.

sim time = start epoch + (loop.time() - t0) * speed. Every duration the simulator deals in
(DTMF delays, patience, talk time, ring timeouts, GET DATA timeouts, queue waits) is in sim
seconds; ``sleep`` and ``wait`` turn them into real seconds. ``stamp`` gives the AMI
``Timestamp`` value (6 decimals) and never repeats or goes back, so events keep their order.
"""

from __future__ import annotations

import asyncio
import time


class SimClock:
    def __init__(self, speed: float, start_epoch: float | None = None) -> None:
        if not speed > 0:
            raise ValueError(f"speed must be > 0, not {speed!r}")
        self.speed = float(speed)
        self._loop = asyncio.get_running_loop()
        self._t0 = self._loop.time()
        self.epoch0 = time.time() if start_epoch is None else start_epoch
        self._last_stamp = 0.0

    def now(self) -> float:
        """Sim time, seconds since the Unix epoch."""
        return self.epoch0 + (self._loop.time() - self._t0) * self.speed

    def stamp(self) -> str:
        """An event Timestamp: sim time with 6 decimals, strictly increasing."""
        t = max(self.now(), self._last_stamp + 1e-6)
        self._last_stamp = t
        return f"{t:.6f}"

    def real(self, sim_seconds: float) -> float:
        """Real seconds for a sim duration (never negative)."""
        return max(0.0, sim_seconds) / self.speed

    async def sleep(self, sim_seconds: float) -> None:
        await asyncio.sleep(self.real(sim_seconds))

    async def wait(self, event: asyncio.Event, sim_seconds: float | None) -> bool:
        """Wait for ``event`` at most ``sim_seconds`` (None: no limit); True if it is set."""
        if event.is_set():
            return True
        if sim_seconds is not None and sim_seconds <= 0:
            return False
        try:
            await asyncio.wait_for(event.wait(), None if sim_seconds is None else self.real(sim_seconds))
        except asyncio.TimeoutError:
            return event.is_set()
        return True
