"""The FastAGI server driven with the real dialogues of answered.agi, ivr_hangup.agi, agi_errors.agi."""

from __future__ import annotations

import asyncio

import pytest

from config.settings import Settings
from ivr.menu import MenuIvr
from telephony.agi_protocol import AgiReplyReader, parse_headers, script_of
from telephony.agi_server import AgiSession, FastAgiServer
from tests.agi_peer import Dialogue, load_dialogues, play_asterisk


async def start_server(route, on_error=None, **kw) -> tuple[FastAgiServer, int]:
    server = FastAgiServer(**kw)
    server.add_route("ivr", route, on_error=on_error)
    port = await server.start("127.0.0.1", 0)
    return server, port


def replay_route(dialogue: Dialogue, replies: list, sessions: list):
    """A route that sends exactly the capture's commands and keeps the parsed replies."""

    async def route(session: AgiSession) -> None:
        sessions.append(session)
        for command, _ in dialogue.steps:
            replies.append(await session.send_command(command))

    return route


@pytest.mark.parametrize("bytewise", [False, True])
async def test_answered_dialogue_replies(bytewise):
    (dialogue,) = load_dialogues("answered.agi")
    replies, sessions = [], []
    server, port = await start_server(replay_route(dialogue, replies, sessions))
    try:
        await play_asterisk(port, dialogue, bytewise=bytewise)
    finally:
        await server.stop()
    session = sessions[0]
    assert session.headers["agi_uniqueid"] == "1795314872.1"
    assert session.headers["agi_calleridname"] == "Zhang San"
    assert session.headers["agi_accountcode"] == ""
    assert [r.code for r in replies] == [200] * 8
    assert replies[1].extras == {"endpos": "11234"}
    assert replies[2].result == "1"                  # GET DATA: the key 1
    assert replies[3].data == "13800138000"          # GET VARIABLE CALLERID(num)
    assert replies[4].data == "Zhang San"
    assert not session.hungup


@pytest.mark.parametrize("bytewise", [False, True])
async def test_ivr_hangup_dialogue_hangup_line_and_511(bytewise):
    (dialogue,) = load_dialogues("ivr_hangup.agi")
    replies, sessions = [], []
    server, port = await start_server(replay_route(dialogue, replies, sessions))
    try:
        await play_asterisk(port, dialogue, bytewise=bytewise)
    finally:
        await server.stop()
    codes = [(r.code, r.result) for r in replies]
    assert codes[0] == (200, "0")
    assert codes[1] == (200, "")        # result= (timeout)
    assert replies[1].data == "timeout"
    assert codes[2] == (200, "-1")
    # the HANGUP line is not taken as a reply: the 511 after it is, and nothing shifts
    assert [c for c, _ in codes[3:7]] == [511, 511, 511, 511]
    assert codes[7] == (200, "1") and replies[7].data == "13600136000"
    assert sessions[0].hungup


@pytest.mark.parametrize("bytewise", [False, True])
async def test_agi_errors_dialogue_510_and_multiline_520(bytewise):
    (dialogue,) = load_dialogues("agi_errors.agi")
    replies, sessions = [], []
    server, port = await start_server(replay_route(dialogue, replies, sessions))
    try:
        await play_asterisk(port, dialogue, bytewise=bytewise)
    finally:
        await server.stop()
    assert [r.code for r in replies] == [200, 510, 520, 200, 200, 200, 200]
    assert replies[1].text == "510 Invalid or unknown command"
    assert replies[2].text.splitlines()[0] == "520-Invalid command syntax.  Proper usage follows:"
    assert replies[2].text.splitlines()[-1] == "520 End of proper usage."
    assert replies[6].result == "1"      # the SET VARIABLE after the usage reply is its own


async def test_menu_ivr_routes_key_1_to_general_and_sets_variables():
    (capture_dialogue,) = load_dialogues("answered.agi")
    ivr = MenuIvr(Settings())
    # Asterisk's side: the caller keys 1 during the menu prompt.
    dialogue = Dialogue(headers=capture_dialogue.headers, steps=[
        ("ANSWER", ["200 result=0"]),
        ('STREAM FILE hotline/welcome "12"', ["200 result=0 endpos=8000"]),
        ("GET DATA hotline/menu 5000 1", ["200 result=1"]),
        ('SET VARIABLE HOTLINE_IVR_CHOICE "1"', ["200 result=1"]),
        ('SET VARIABLE HOTLINE_CATEGORY "general"', ["200 result=1"]),
        ('SET VARIABLE HOTLINE_QUEUE_TIMEOUT "120"', ["200 result=1"]),
        ('SET VARIABLE HOTLINE_QUEUE "hotline-general"', ["200 result=1"]),
    ])
    server, port = await start_server(ivr, ivr.safe_route)
    try:
        sent = await play_asterisk(port, dialogue)
    finally:
        await server.stop()
    assert sent == [c for c, _ in dialogue.steps]


async def test_menu_ivr_key_during_greeting_and_no_key_timeout():
    (capture_dialogue,) = load_dialogues("answered.agi")
    ivr = MenuIvr(Settings())
    barge = Dialogue(headers=capture_dialogue.headers, steps=[
        ("ANSWER", ["200 result=0"]),
        ('STREAM FILE hotline/welcome "12"', ["200 result=50 endpos=3000"]),   # '2' is ASCII 50
        ('SET VARIABLE HOTLINE_IVR_CHOICE "2"', ["200 result=1"]),
        ('SET VARIABLE HOTLINE_CATEGORY "business_environment"', ["200 result=1"]),
        ('SET VARIABLE HOTLINE_QUEUE_TIMEOUT "120"', ["200 result=1"]),
        ('SET VARIABLE HOTLINE_QUEUE "hotline-business"', ["200 result=1"]),
    ])
    timeout = Dialogue(headers=capture_dialogue.headers, steps=[
        ("ANSWER", ["200 result=0"]),
        ('STREAM FILE hotline/welcome "12"', ["200 result=0 endpos=8000"]),
        ("GET DATA hotline/menu 5000 1", ["200 result= (timeout)"]),
        ('SET VARIABLE HOTLINE_IVR_CHOICE "timeout"', ["200 result=1"]),
        ('SET VARIABLE HOTLINE_CATEGORY "general"', ["200 result=1"]),
        ('SET VARIABLE HOTLINE_QUEUE_TIMEOUT "120"', ["200 result=1"]),
        ('SET VARIABLE HOTLINE_QUEUE "hotline-general"', ["200 result=1"]),
    ])
    server, port = await start_server(ivr, ivr.safe_route)
    try:
        assert await play_asterisk(port, barge) == [c for c, _ in barge.steps]
        assert await play_asterisk(port, timeout) == [c for c, _ in timeout.steps]
    finally:
        await server.stop()


async def test_caller_hangup_in_ivr_ends_the_flow_cleanly():
    (capture_dialogue,) = load_dialogues("ivr_hangup.agi")
    ivr = MenuIvr(Settings())
    dialogue = Dialogue(headers=capture_dialogue.headers, steps=[
        ("ANSWER", ["200 result=0"]),
        ('STREAM FILE hotline/welcome "12"', ["HANGUP", "511 Command Not Permitted on a dead channel or intercept routine"]),
    ])
    server, port = await start_server(ivr, ivr.safe_route)
    try:
        sent = await play_asterisk(port, dialogue)
    finally:
        await server.stop()
    assert sent == ["ANSWER", 'STREAM FILE hotline/welcome "12"']  # nothing after the dead channel
    assert server.active == 0


async def test_handler_error_still_sets_the_safe_route():
    (capture_dialogue,) = load_dialogues("answered.agi")
    ivr = MenuIvr(Settings())

    async def broken(session):
        await session.answer()
        raise RuntimeError("flow bug")

    dialogue = Dialogue(headers=capture_dialogue.headers, steps=[
        ("ANSWER", ["200 result=0"]),
        ('SET VARIABLE HOTLINE_IVR_CHOICE "error"', ["200 result=1"]),
        ('SET VARIABLE HOTLINE_CATEGORY "general"', ["200 result=1"]),
        ('SET VARIABLE HOTLINE_QUEUE_TIMEOUT "120"', ["200 result=1"]),
        ('SET VARIABLE HOTLINE_QUEUE "hotline-general"', ["200 result=1"]),
    ])
    server, port = await start_server(broken, ivr.safe_route)
    try:
        assert await play_asterisk(port, dialogue) == [c for c, _ in dialogue.steps]
    finally:
        await server.stop()


async def test_client_closing_before_blank_line_does_not_freeze_the_loop():
    server, port = await start_server(lambda s: None)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"agi_network: yes\nagi_network_script: ivr\n")
        await writer.drain()
        writer.close()
        # the loop still runs: a timer fires and the server has no session left
        await asyncio.sleep(0.05)
        for _ in range(100):
            if server.active == 0:
                break
            await asyncio.sleep(0.01)
        assert server.active == 0 and server.sessions_total == 0
    finally:
        await server.stop()


async def test_route_with_query_and_plain_function_route():
    seen = []
    server = FastAgiServer()
    server.add_route("ivr", lambda session: seen.append(session.headers["agi_network_script"]))
    port = await server.start("127.0.0.1", 0)
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"agi_network: yes\nagi_network_script: ivr?lang=zh\nagi_request: agi://h/ivr?lang=zh\n\n")
        await writer.drain()
        for _ in range(200):
            if seen:
                break
            await asyncio.sleep(0.01)
        writer.close()
    finally:
        await server.stop()
    assert seen == ["ivr?lang=zh"]


async def test_sessions_beyond_the_limit_are_refused():
    gate = asyncio.Event()

    async def slow(session):
        await gate.wait()

    server, port = await start_server(slow, max_sessions=2)
    writers = []
    try:
        for _ in range(3):
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(b"agi_network: yes\nagi_network_script: ivr\n\n")
            await w.drain()
            writers.append(w)
        for _ in range(200):
            if server.refused:
                break
            await asyncio.sleep(0.01)
        assert server.refused == 1 and server.active == 2
    finally:
        gate.set()
        for w in writers:
            w.close()
        await server.stop()


def test_headers_and_script_parsing():
    headers = parse_headers(b"agi_network: yes\nagi_network_script: ivr?x=1\nagi_callerid: 1\nagi_accountcode: \n")
    assert script_of(headers) == "ivr" and headers["agi_accountcode"] == ""
    assert script_of({"agi_request": "agi://10.0.0.1:4573/survey?y"}) == "survey"


def test_reply_reader_skips_100_trying():
    reader = AgiReplyReader()
    assert reader.feed("100 result=0 Trying...") is None
    reply = reader.feed("200 result=0")
    assert reply.code == 200 and reply.result == "0"
