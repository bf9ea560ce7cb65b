"""The PBX side of the sustained-load benchmark: the project's PbxSimulator in its own process.

Asterisk is a process of its own beside the service, so the simulator runs here, not in the
service's event loop. The AMI secret comes in $BENCH_SIM_SECRET. Talks to the parent over stdin/stdout, one JSON object a line:
  out {"ami_port": N}                 the simulator listens
  in  {"go": true}                    start offering calls
  out {"done": ..., "calls": {...}}   every call ended: per Linkedid, the wall time it was placed,
                                      the wall time of its LAST Hangup event as the simulator
                                      emitted it on the AMI bus, and the outcome
  in  {"stop": true}                  stop the simulator and exit
Calls are placed on a fixed schedule (t0 + k / rate), so a slow loop shows up as lag, not as a
silently lower rate.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import sys
import time

from telephony.simulator import PbxSimulator, ScriptedCaller, SeatBehaviour


class HangupClock:
    """A bus sink: the wall time of each Hangup event as it is emitted, per Linkedid (last wins)."""

    def __init__(self) -> None:
        self.last_hangup: dict[str, float] = {}
        self.events = 0

    def wants(self, category: str) -> bool:
        return True

    def send(self, data: bytes) -> None:
        self.events += 1
        if data.startswith(b"Event: Hangup\r\n"):
            i = data.find(b"\r\nLinkedid: ")
            if i >= 0:
                j = data.find(b"\r\n", i + 12)
                self.last_hangup[data[i + 12:j].decode()] = time.time()


def caller_for(rng: random.Random, population: list[str], i: int) -> ScriptedCaller:
    """80% answered (key 1), 10% hang up in the IVR, 10% abandon the seatless business queue."""
    kind = rng.random()
    number = rng.choice(population)
    if kind < 0.80:
        return ScriptedCaller(number=number, name=f"市民{i}", dtmf="1", dtmf_delay=0.3)
    if kind < 0.90:
        return ScriptedCaller(number=number, name=f"市民{i}", dtmf=None, patience=0.5)
    return ScriptedCaller(number=number, name=f"市民{i}", dtmf="2", dtmf_delay=0.3, patience=4.0)


async def read_line(reader: asyncio.StreamReader) -> dict:
    line = await reader.readline()
    if not line:
        raise SystemExit("parent went away")
    return json.loads(line)


def say(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--agi-port", type=int, required=True)
    ap.add_argument("--recordings", required=True)
    ap.add_argument("--queues", required=True, help="JSON: queue name -> simulator queue config")
    ap.add_argument("--seats", required=True, help="JSON: list of seat interfaces")
    ap.add_argument("--speed", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=50.0)
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--answer-after", type=float, default=0.5)
    ap.add_argument("--talk", type=float, default=3.0)
    ap.add_argument("--seed", type=int, default=12345)
    args = ap.parse_args()

    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)

    sim = PbxSimulator(username="hotline", secret=os.environ["BENCH_SIM_SECRET"], agi_host="127.0.0.1", agi_port=args.agi_port,
                       recordings_dir=args.recordings, queues=json.loads(args.queues),
                       fallback_queue="hotline-general", speed=args.speed)
    await sim.start()
    for iface in json.loads(args.seats):
        sim.set_seat_behaviour(iface, SeatBehaviour(answers=True, answer_after=args.answer_after, talk=args.talk))
    clock = HangupClock()
    sim.core.bus.sinks.add(clock)
    say({"ami_port": sim.ami_port})

    await read_line(stdin)  # go
    rng = random.Random(args.seed)
    population = [f"139{rng.randrange(10**7, 10**8)}" for _ in range(max(10, int(args.rate * args.duration) // 2))]
    placed: dict[str, float] = {}
    lag_max = 0.0
    active_max = 0
    n_total = int(args.rate * args.duration)
    cpu0 = time.process_time()
    t0 = time.monotonic()
    for k in range(n_total):
        due = t0 + k / args.rate
        now = time.monotonic()
        if due > now:
            await asyncio.sleep(due - now)
        else:
            lag_max = max(lag_max, now - due)
        linkedid = await sim.place_call(caller_for(rng, population, k))
        placed[linkedid] = time.time()
        active_max = max(active_max, len(placed) - len(sim.results))
    offer_seconds = time.monotonic() - t0
    await sim.wait_idle(timeout=120)
    cpu = time.process_time() - cpu0
    wall = time.monotonic() - t0
    calls = {lid: [placed[lid], clock.last_hangup.get(lid), sim.results[lid].outcome if lid in sim.results else None]
             for lid in placed}
    say({"done": True, "placed": len(placed), "offer_seconds": offer_seconds, "lag_max": lag_max,
         "active_max": active_max, "events": clock.events, "cpu_percent": 100.0 * cpu / wall,
         "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "calls": calls})

    await read_line(stdin)  # stop
    await sim.stop()


if __name__ == "__main__":
    asyncio.run(main())
