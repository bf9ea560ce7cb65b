"""The Asterisk side of the FastAGI benchmark, run as its own process (as Asterisk would be).

Opens ``sessions`` FastAGI connections to the server at once; each sends an agi_* header block
and the blank line, then answers every command line with ``200 result=0`` at once, until the
server closes the connection. Prints one JSON line with what it saw.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

HEADERS = (
    "agi_network: yes\n"
    "agi_network_script: bench?session={n}\n"
    "agi_request: agi://127.0.0.1:{port}/bench?session={n}\n"
    "agi_channel: Local/12345@hotline-inbound-{n:08x};2\n"
    "agi_language: en\n"
    "agi_type: Local\n"
    "agi_uniqueid: 1795314870.{n}\n"
    "agi_version: 22.10.1\n"
    "agi_callerid: 13800138000\n"
    "agi_calleridname: bench\n"
    "agi_callingpres: 0\n"
    "agi_callingani2: 0\n"
    "agi_callington: 0\n"
    "agi_callingtns: 0\n"
    "agi_dnid: unknown\n"
    "agi_rdnis: unknown\n"
    "agi_context: hotline-inbound\n"
    "agi_extension: 12345\n"
    "agi_priority: 4\n"
    "agi_enhanced: 0.0\n"
    "agi_accountcode: \n"
    "agi_threadid: 140000000000000\n"
    "\n"
)


async def one_session(host: str, port: int, n: int, stats: dict) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(HEADERS.format(n=n, port=port).encode())
    commands = 0
    try:
        while True:
            line = await reader.readline()
            if not line:
                break
            commands += 1
            writer.write(b"200 result=0\n")
    finally:
        writer.close()
    stats["commands"] += commands
    stats["sessions"] += 1


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--sessions", type=int, default=200)
    args = ap.parse_args()
    stats = {"commands": 0, "sessions": 0, "errors": 0}
    t0 = time.perf_counter()
    results = await asyncio.gather(*(one_session(args.host, args.port, n, stats) for n in range(args.sessions)),
                                   return_exceptions=True)
    stats["errors"] = sum(isinstance(x, BaseException) for x in results)
    stats["seconds"] = round(time.perf_counter() - t0, 3)
    print(json.dumps(stats), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
