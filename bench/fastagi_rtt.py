"""FastAGI: command round-trip with 200 concurrent sessions against the project's FastAgiServer.

The server is ``telephony.agi_server.FastAgiServer`` on loopback with one route; the Asterisk side
is ``bench/fastagi_client.py`` in its own process (200 connections, headers + blank line, every
command answered ``200 result=0`` at once). The route first waits until all 200 sessions are
open, so every command is measured with 200 sessions live.

Round trip = measured in the route (the server-side handler), with ``time.perf_counter``: from
just before ``AgiSession.send_command`` (write + drain) to the parsed reply returned - i.e. what
an IVR step waits for. Two loads:
- ``fastagi_rtt``: paced - each session sends a command, then waits a random 0-100 ms (as an IVR
  waits on its prompts) before the next: about 4,000 commands/s offered by 200 sessions, already
  far above real IVR traffic (about 1 command/s per session).
- ``fastagi_rtt_saturated``: closed loop - every session sends its next command as soon as the
  reply is in; the latency is then mostly queueing behind the other 199 sessions, and the
  commands/s is the server's ceiling (client and server share this 2-core machine).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import sys
import time

from bench.common import ROOT, emit, percentile, progress, r
from telephony.agi_server import FastAgiServer

SESSIONS = 200
COMMANDS = {"paced": 30, "saturated": 60}
THINK_MAX = 0.100  # paced: uniform 0..THINK_MAX seconds between commands
COMMAND_LINES = ("GET VARIABLE HOTLINE_QUEUE", 'SET VARIABLE HOTLINE_IVR_CHOICE "1"', "ANSWER",
                 'VERBOSE "bench" 1')


async def run(mode: str) -> dict:
    server = FastAgiServer(max_sessions=SESSIONS + 50, session_timeout=120, command_timeout=30)
    rtts: list[float] = []
    all_in = asyncio.Event()
    state = {"open": 0, "done": 0, "failed": 0}
    rng = random.Random(7)
    n_commands = COMMANDS[mode]

    async def route(session) -> None:
        state["open"] += 1
        if state["open"] >= SESSIONS:
            all_in.set()
        await asyncio.wait_for(all_in.wait(), 30)
        if mode == "paced":
            await asyncio.sleep(rng.uniform(0, THINK_MAX))
        for i in range(n_commands):
            line = COMMAND_LINES[i % len(COMMAND_LINES)]
            t0 = time.perf_counter()
            reply = await session.send_command(line)
            rtts.append(time.perf_counter() - t0)
            if not reply.ok:
                state["failed"] += 1
            if mode == "paced":
                await asyncio.sleep(rng.uniform(0, THINK_MAX))
        state["done"] += 1

    server.add_route("bench", route)
    port = await server.start("127.0.0.1", 0)
    client = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.fastagi_client", "--port", str(port), "--sessions", str(SESSIONS),
        cwd=str(ROOT), stdout=asyncio.subprocess.PIPE)
    try:
        t0 = time.perf_counter()
        await asyncio.wait_for(all_in.wait(), 30)
        t_all = time.perf_counter()
        out, _ = await asyncio.wait_for(client.communicate(), 120)
        t_end = time.perf_counter()
    finally:
        if client.returncode is None:
            client.kill()
            await client.wait()
        await server.stop()
    seen = json.loads(out.decode().strip().splitlines()[-1])
    expected = SESSIONS * n_commands
    if len(rtts) != expected or seen["commands"] != expected or state["done"] != SESSIONS or state["failed"]:
        raise RuntimeError(f"FastAGI {mode}: expected {expected} commands in {SESSIONS} sessions; "
                           f"measured {len(rtts)}, client saw {seen}, server state {state}")
    ms = [x * 1000 for x in rtts]
    return {
        "p50": percentile(ms, 50), "p90": percentile(ms, 90), "p99": percentile(ms, 99), "max": max(ms),
        "commands": expected, "commands_per_s": expected / (t_end - t_all), "connect_s": t_all - t0,
        "peak_sessions": state["open"], "refused": server.refused,
    }


def report(name: str, mode: str, res: dict) -> None:
    emit({
        "name": name,
        "value": r(res["p99"]),
        "unit": "ms (p99 round trip)",
        "p50_ms": r(res["p50"]),
        "p90_ms": r(res["p90"]),
        "p99_ms": r(res["p99"]),
        "max_ms": r(res["max"]),
        "target": "p99 < 5 ms",
        "met": res["p99"] < 5.0,
        "sessions": SESSIONS,
        "commands": res["commands"],
        "commands_per_s": round(res["commands_per_s"]),
        "load": (f"each session: command, then 0-{int(THINK_MAX * 1000)} ms pause" if mode == "paced"
                 else "closed loop: next command as soon as the reply is in"),
        "measured": "server handler: send_command() call to parsed reply",
    })


async def main() -> None:
    logging.getLogger("hotline").setLevel(logging.WARNING)
    for name, mode in (("fastagi_rtt", "paced"), ("fastagi_rtt_saturated", "saturated")):
        progress(f"{name}: {SESSIONS} sessions x {COMMANDS[mode]} commands ({mode})")
        res = await run(mode)
        progress(f"{name}: p50 {res['p50']:.3f} ms, p99 {res['p99']:.3f} ms, {res['commands_per_s']:,.0f} commands/s")
        report(name, mode, res)


if __name__ == "__main__":
    asyncio.run(main())
