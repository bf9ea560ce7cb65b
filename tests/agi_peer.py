"""A scripted Asterisk for FastAGI tests: sends the capture's headers and replies, byte by byte if asked."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from tests.conftest import FIXTURES


@dataclass
class Dialogue:
    """Reply lines are sent as given, so a lone ``HANGUP`` may come before a reply (as captured)
    or right after one (Asterisk sends it as soon as it sees the hang-up, between commands)."""

    headers: list[str]
    steps: list[tuple[str, list[str]]] = field(default_factory=list)  # (command sent, reply lines)


def load_dialogues(name: str) -> list[Dialogue]:
    """Split a .agi capture into sessions: header lines, then (command, reply lines) steps."""
    dialogues: list[Dialogue] = []
    current: Dialogue | None = None
    in_headers = False
    for raw in (FIXTURES / name).read_text().split("\n"):
        if raw.startswith("-- "):
            current = None
            continue
        if raw.startswith(">> agi_network:"):
            current = Dialogue(headers=[])
            dialogues.append(current)
            in_headers = True
        if current is None or len(raw) < 2:
            continue
        tag, text = raw[:2], raw[3:]
        if tag == ">>" and in_headers:
            if text == "" and raw == ">> ":
                in_headers = False
            else:
                current.headers.append(text)
        elif tag == "<<":
            current.steps.append((text, []))
        elif tag == ">>":
            current.steps[-1][1].append(text)
    return dialogues


async def play_asterisk(port: int, dialogue: Dialogue, *, bytewise: bool = False, strict: bool = True) -> list[str]:
    """Connect like Asterisk, send headers, answer each command with the capture's reply lines.

    Returns the commands the server sent. With ``strict`` a command that differs from the
    capture fails the test; otherwise replies are taken by position.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def send(data: bytes) -> None:
        if bytewise:
            for i in range(len(data)):
                writer.write(data[i:i + 1])
                await writer.drain()
        else:
            writer.write(data)
            await writer.drain()

    await send(("\n".join(dialogue.headers) + "\n\n").encode())
    seen = []
    try:
        for expected, reply in dialogue.steps:
            line = await asyncio.wait_for(reader.readline(), 5)
            if not line:
                break
            command = line.decode().rstrip("\n")
            seen.append(command)
            if strict:
                assert command == expected
            await send(("\n".join(reply) + "\n").encode())
        # the server closes the session when its route returns
        rest = await asyncio.wait_for(reader.read(), 5)
        seen.extend(rest.decode().splitlines())
    finally:
        writer.close()
    return seen
