"""The FastAGI server driven with the real dialogues of answered.agi, ivr_hangup.agi, agi_errors.agi,
and the ``ivr`` route (ivr.runner.FlowIvr, built as the service builds it on the test database)
over scripted Asterisk dialogues: the shipped flow, and a one-menu flow saved as the live one."""

from __future__ import annotations

import asyncio

import pytest

from telephony.agi_protocol import AgiReplyReader, parse_headers, script_of
from telephony.agi_server import AgiSession, FastAgiServer
from telephony.errors import AgiProtocolError, UnsafeValue
from tests.agi_peer import Dialogue, load_dialogues, play_asterisk
from tests.flows import flow_ivr, install_flow, menu_flow


async def start_server(route, on_error=None, **kw) -> tuple[FastAgiServer, int]:
    server = FastAgiServer(**kw)
    server.add_route("ivr", route, on_error=on_error)
    port = await server.start("127.0.0.1", 0)
    return server, port


async def closed_by_server(reader: asyncio.StreamReader) -> bool:
    """Read to the end: True once the server closed (a close with unread data arrives as a reset)."""
    try:
        await reader.read()
    except ConnectionResetError:
        pass
    return True


def replay_route(dialogue: Dialogue, replies: list, sessions: list, hungup: list | None = None):
    """A route that sends exactly the capture's commands and keeps the parsed replies
    (and, in ``hungup``, whether the session knew of a hang-up after each reply)."""

    async def route(session: AgiSession) -> None:
        sessions.append(session)
        for command, _ in dialogue.steps:
            replies.append(await session.send_command(command))
            if hungup is not None:
                hungup.append(session.hungup)

    return route


@pytest.mark.parametrize("bytewise", [False, True])
async def test_answered_dialogue_replies(bytewise):
    (dialogue,) = load_dialogues("answered.agi")
    replies, sessions = [], []
    server, port = await start_server(replay_route(dialogue, replies, sessions))
    try:
        sent = await play_asterisk(port, dialogue, bytewise=bytewise)
    finally:
        await server.stop()
    assert sent == [c for c, _ in dialogue.steps]
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
    replies, sessions, hungup = [], [], []
    server, port = await start_server(replay_route(dialogue, replies, sessions, hungup))
    try:
        sent = await play_asterisk(port, dialogue, bytewise=bytewise)
    finally:
        await server.stop()
    assert sent == [c for c, _ in dialogue.steps]
    codes = [(r.code, r.result) for r in replies]
    assert codes[0] == (200, "0")
    assert codes[1] == (200, "")        # result= (timeout)
    assert replies[1].data == "timeout"
    assert codes[2] == (200, "-1")
    # the HANGUP line is not taken as a reply: the 511 after it is, and nothing shifts
    assert [c for c, _ in codes[3:7]] == [511, 511, 511, 511]
    assert codes[7] == (200, "1") and replies[7].data == "13600136000"   # GET VARIABLE works when dead
    # result=-1 alone is not a hang-up; the HANGUP line (read before the 511) is
    assert hungup == [False, False, False, True, True, True, True, True]
    assert all(r.text != "HANGUP" for r in replies)


@pytest.mark.parametrize("bytewise", [False, True])
async def test_agi_errors_dialogue_510_and_multiline_520(bytewise):
    (dialogue,) = load_dialogues("agi_errors.agi")
    replies, sessions = [], []
    server, port = await start_server(replay_route(dialogue, replies, sessions))
    try:
        sent = await play_asterisk(port, dialogue, bytewise=bytewise)
    finally:
        await server.stop()
    assert sent == [c for c, _ in dialogue.steps]
    assert [r.code for r in replies] == [200, 510, 520, 200, 200, 200, 200]
    assert replies[1].text == "510 Invalid or unknown command"
    assert replies[2].text.splitlines()[0] == "520-Invalid command syntax.  Proper usage follows:"
    assert replies[2].text.splitlines()[-1] == "520 End of proper usage."
    assert len(replies[2].text.splitlines()) == 4               # the whole usage block is one reply
    assert replies[3].result == "0" and replies[4].result == "0"  # SAY DIGITS, WAIT FOR DIGIT: no key
    assert replies[6].result == "1"      # the SET VARIABLE after the usage reply is its own


# ---- the ivr route: FlowIvr ---------------------------------------------------------------------
#
# What FlowIvr sends, and what Asterisk 22 answers (res_agi): SET VARIABLE HOTLINE_FLOW_VERSION first
# (allowed before ANSWER and on a dead channel: "200 result=1"), ANSWER, STREAM FILE <sound>
# "<escape keys>" (result = the ASCII code of the key that interrupted it, 0 for none, -1 for a
# failure or a hang-up; "endpos=" follows), GET DATA <sound> <timeout ms> <max keys> (result = the
# keys themselves, "result= (timeout)" for none), then the result's variables, HOTLINE_QUEUE last.

OK = ["200 result=1"]
DEAD = "511 Command Not Permitted on a dead channel or intercept routine"
ROUTES = {"1": "hotline-general", "2": "hotline-business"}   # what the settings' [ivr] routes said
# menu_flow(ROUTES): the greeting (keys 1 and 2 barge in), then one menu of 5 s
GREETING = 'STREAM FILE hotline/welcome "12"'
MENU = "GET DATA hotline/menu 5000 1"
# the shipped flow (ivr/flows/default.toml): keys 0 1 2 3 9, a menu of 1.5 s
SHIPPED_GREETING = 'STREAM FILE hotline/welcome "01239"'
SHIPPED_MENU = "GET DATA hotline/menu 1500 1"


def flow_version(version: int) -> tuple[str, list[str]]:
    return (f'SET VARIABLE HOTLINE_FLOW_VERSION "{version}"', OK)


def route_steps(choice, category="general", queue="hotline-general", wait=120):
    """The result's variables as apply_result sets them, HOTLINE_QUEUE last."""
    return [
        (f'SET VARIABLE HOTLINE_IVR_CHOICE "{choice}"', OK),
        (f'SET VARIABLE HOTLINE_CATEGORY "{category}"', OK),
        (f'SET VARIABLE HOTLINE_QUEUE_TIMEOUT "{wait}"', OK),
        ('SET VARIABLE HOTLINE_PRIORITY "0"', OK),
        (f'SET VARIABLE HOTLINE_QUEUE "{queue}"', OK),
    ]


def menu_steps(*middle, choice, category="general", queue="hotline-general", version=1):
    """FlowIvr's commands: the flow version, ANSWER, the middle steps given, then the variables."""
    return [flow_version(version), ("ANSWER", ["200 result=0"]), *middle, *route_steps(choice, category, queue)]


def headers_of(name: str) -> list[str]:
    return load_dialogues(name)[0].headers


async def run_ivr(pool, *dialogues: Dialogue, source: str | None = menu_flow(ROUTES)) -> list[list[str]]:
    """Save ``source`` as the live flow (None: run the shipped one), then play each dialogue
    against FlowIvr as the ``ivr`` route with its safe route; the commands each one got."""
    if source is not None:
        await install_flow(pool, source)
    ivr = await flow_ivr(pool)
    server, port = await start_server(ivr, ivr.safe_route)
    try:
        return [await play_asterisk(port, d) for d in dialogues]
    finally:
        await server.stop()


async def test_flow_ivr_routes_key_1_to_general_and_sets_variables(pg_pool):
    # no flow saved: the shipped flow runs, as version 0; the caller keys 1 during the menu prompt
    steps = menu_steps((SHIPPED_GREETING, ["200 result=0 endpos=8000"]), (SHIPPED_MENU, ["200 result=1"]),
                       choice="1", version=0)
    dialogue = Dialogue(headers=headers_of("answered.agi"), steps=steps)
    assert await run_ivr(pg_pool, dialogue, source=None) == [[c for c, _ in steps]]


async def test_flow_ivr_key_during_greeting_and_no_key_timeout(pg_pool):
    barge = Dialogue(headers=headers_of("answered.agi"), steps=menu_steps(
        (GREETING, ["200 result=50 endpos=3000"]),                      # '2' is ASCII 50: no menu prompt
        choice="2", category="business_environment", queue="hotline-business"))
    timeout = Dialogue(headers=headers_of("answered.agi"), steps=menu_steps(
        (GREETING, ["200 result=0 endpos=8000"]), (MENU, ["200 result= (timeout)"]), choice="timeout"))
    sent = await run_ivr(pg_pool, barge, timeout)
    assert sent == [[c for c, _ in barge.steps], [c for c, _ in timeout.steps]]


async def test_caller_hangup_in_ivr_ends_the_flow_cleanly(pg_pool):
    # the channel is dead when the greeting starts: only the choice is set (SET VARIABLE works on a
    # dead channel), so the call's record says the caller hung up in the IVR; no queue, no media
    steps = [
        flow_version(1),
        ("ANSWER", ["200 result=0"]),
        (GREETING, ["HANGUP", DEAD]),
        ('SET VARIABLE HOTLINE_IVR_CHOICE "hangup"', OK),
    ]
    await install_flow(pg_pool, menu_flow(ROUTES))
    ivr = await flow_ivr(pg_pool)
    server, port = await start_server(ivr, ivr.safe_route)
    try:
        sent = await play_asterisk(port, Dialogue(headers=headers_of("ivr_hangup.agi"), steps=steps))
    finally:
        await server.stop()
    assert sent == [c for c, _ in steps]          # nothing after the choice
    assert server.active == 0


async def test_handler_error_still_sets_the_safe_route(pg_pool):
    ivr = await flow_ivr(pg_pool)

    async def broken(session):
        await session.answer()
        raise RuntimeError("flow bug")

    steps = [("ANSWER", ["200 result=0"]), *route_steps("error")]
    dialogue = Dialogue(headers=headers_of("answered.agi"), steps=steps)
    server, port = await start_server(broken, ivr.safe_route)
    try:
        assert await play_asterisk(port, dialogue) == [c for c, _ in steps]
    finally:
        await server.stop()


async def test_client_closing_before_blank_line_does_not_freeze_the_loop():
    server, port = await start_server(lambda s: None)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"agi_network: yes\nagi_network_script: ivr\n")
        await writer.drain()
        writer.write_eof()
        # the server sees end-of-file, drops the connection and closes its side: no busy loop
        assert await reader.read() == b""
        writer.close()
        assert server.active == 0 and server.sessions_total == 0
    finally:
        await server.stop()


async def test_header_block_timeout_size_limit_and_lenient_decoding(caplog):
    seen = []
    server, port = await start_server(lambda s: seen.append(s.headers), header_timeout=0.5)
    try:
        # a client that never finishes its headers is dropped after header_timeout
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"agi_network: yes\n")
        await writer.drain()
        assert await reader.read() == b""
        writer.close()
        # an endless header block is cut at the size limit
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"agi_network_script: ivr\n" + b"agi_x: " + b"y" * 200 + b"\n" * 1)
        writer.write((b"agi_pad: " + b"z" * 1000 + b"\n") * 20)
        await writer.drain()
        assert await closed_by_server(reader)
        writer.close()
        # a caller name in GBK (not UTF-8) does not kill the call
        (dialogue,) = load_dialogues("answered.agi")
        headers = "\n".join(dialogue.headers).encode().replace(b"Zhang San", "张三".encode("gbk"))
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(headers + b"\n\n")
        await writer.drain()
        assert await reader.read() == b""
        writer.close()
    finally:
        await server.stop()
    assert server.sessions_total == 1 and len(seen) == 1
    warnings = [r.getMessage() for r in caplog.records if r.name == "hotline.agi"]
    assert any("no complete header block" in m for m in warnings)
    assert any("too long" in m for m in warnings)
    assert seen[0]["agi_uniqueid"] == "1795314872.1" and "\ufffd" in seen[0]["agi_calleridname"]


async def test_route_with_query_and_plain_function_route():
    seen = []
    server = FastAgiServer()
    server.add_route("ivr", lambda session: seen.append(session.headers["agi_network_script"]))
    port = await server.start("127.0.0.1", 0)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"agi_network: yes\nagi_network_script: ivr?lang=zh\nagi_request: agi://h/ivr?lang=zh\n\n")
        await writer.drain()
        assert await reader.read() == b""   # the route ran and returned: the session is closed
        writer.close()
    finally:
        await server.stop()
    assert seen == ["ivr?lang=zh"]


async def test_sessions_beyond_the_limit_are_refused():
    gate, inside = asyncio.Event(), []
    both_inside = asyncio.Event()

    async def slow(session):
        inside.append(session)
        if len(inside) == 2:
            both_inside.set()
        await gate.wait()

    server, port = await start_server(slow, max_sessions=2)
    writers = []
    try:
        for _ in range(2):
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(b"agi_network: yes\nagi_network_script: ivr\n\n")
            await w.drain()
            writers.append(w)
        await both_inside.wait()
        r3, w3 = await asyncio.open_connection("127.0.0.1", port)
        writers.append(w3)
        w3.write(b"agi_network: yes\nagi_network_script: ivr\n\n")
        assert await closed_by_server(r3)      # refused: closed at once, Asterisk goes on in the dialplan
        assert server.refused == 1 and server.active == 2 and len(inside) == 2
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


def test_reply_reader_result_shapes_real_asterisk_sends():
    reader = AgiReplyReader()
    star = reader.feed("200 result=*")                      # GET DATA answers the keys themselves
    assert star.result == "*" and star.result_int is None
    partial = reader.feed("200 result=12 (timeout)")
    assert partial.result == "12" and partial.data == "timeout"
    value = reader.feed("200 result=1 (a (b) c)")           # GET VARIABLE: data runs to the last ')'
    assert value.data == "a (b) c" and value.extras == {}
    dtmf = reader.feed("200 result=49 (dtmf) endpos=1600")
    assert dtmf.result_int == 49 and dtmf.data == "dtmf" and dtmf.extras == {"endpos": "1600"}
    missing = reader.feed("200 result=-1 endpos=0")         # STREAM FILE of a missing file
    assert missing.result_int == -1 and missing.ok and not missing.dead
    assert reader.feed("520 Invalid command syntax.  Proper usage not available.").code == 520
    # HANGUP is remembered, never a reply; the 520 usage block is one reply
    assert reader.feed("HANGUP") is None and reader.hangup_seen
    assert reader.feed("520-Invalid command syntax.  Proper usage follows:") is None
    assert reader.feed(" Usage: GET DATA <file to be streamed> [timeout] [max digits]") is None
    usage = reader.feed("520 End of proper usage.")
    assert usage.code == 520 and len(usage.text.splitlines()) == 3
    with pytest.raises(AgiProtocolError):
        reader.feed("garbage")


async def test_flow_ivr_missing_greeting_file_still_offers_the_menu(pg_pool):
    # STREAM FILE of a missing file answers "200 result=-1 endpos=0" on a live channel
    steps = menu_steps(
        (GREETING, ["200 result=-1 endpos=0"]),
        ("NOOP", ["200 result=0"]),       # no HANGUP line came: the channel lives, the prompt failed
        (MENU, ["200 result=2"]),
        choice="2", category="business_environment", queue="hotline-business",
    )
    d = Dialogue(headers=headers_of("answered.agi"), steps=steps)
    assert await run_ivr(pg_pool, d) == [[c for c, _ in steps]]


async def test_flow_ivr_caller_hangs_up_during_greeting(pg_pool):
    # as in ivr_hangup.agi: result=-1, then the lone HANGUP line, then 511 for media commands;
    # the choice "hangup" is the only thing set after the 511
    steps = [
        flow_version(1),
        ("ANSWER", ["200 result=0"]),
        (GREETING, ["200 result=-1 endpos=2400", "HANGUP"]),
        ("NOOP", ["200 result=0"]),       # fetches the HANGUP line: a hang-up, not a failed prompt
        ('SET VARIABLE HOTLINE_IVR_CHOICE "hangup"', OK),
    ]
    d = Dialogue(headers=headers_of("ivr_hangup.agi"), steps=steps)
    assert await run_ivr(pg_pool, d) == [[c for c, _ in steps]]   # no media, no queue after the hang-up


async def test_flow_ivr_failed_menu_prompt_sets_the_general_queue_and_a_hangup_in_the_menu_is_one(pg_pool):
    # result=-1 from GET DATA: a missing prompt on a live channel -> general queue, choice "error"
    alive = Dialogue(headers=headers_of("answered.agi"), steps=menu_steps(
        (GREETING, ["200 result=0 endpos=8000"]), (MENU, ["200 result=-1"]), ("NOOP", ["200 result=0"]),
        choice="error"))
    # the same reply because the caller hung up: the HANGUP line follows; the call is a hang-up, not
    # routed (SET VARIABLE still answers 200 on the dead channel)
    dead = Dialogue(headers=headers_of("ivr_hangup.agi"), steps=[
        flow_version(1), ("ANSWER", ["200 result=0"]), (GREETING, ["200 result=0 endpos=8000"]),
        (MENU, ["200 result=-1", "HANGUP"]), ("NOOP", ["200 result=0"]),
        ('SET VARIABLE HOTLINE_IVR_CHOICE "hangup"', OK)])
    sent = await run_ivr(pg_pool, alive, dead)
    assert sent == [[c for c, _ in alive.steps], [c for c, _ in dead.steps]]


async def test_flow_ivr_unknown_key_and_star_go_to_general_as_invalid(pg_pool):
    dialogues = [Dialogue(headers=headers_of("answered.agi"), steps=menu_steps(
        (GREETING, ["200 result=0 endpos=8000"]), (MENU, [reply]), choice="invalid"))
        for reply in ("200 result=9", "200 result=*")]
    assert await run_ivr(pg_pool, *dialogues) == [[c for c, _ in d.steps] for d in dialogues]


async def test_late_reply_of_a_timed_out_command_is_not_taken_for_the_next_one():
    replies = []

    async def route(session: AgiSession) -> None:
        with pytest.raises(TimeoutError):
            await session.send_command(MENU)
        replies.append(await session.send_command("GET VARIABLE CALLERID(num)"))

    server, port = await start_server(route, command_timeout=0.2)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(("\n".join(headers_of("answered.agi")) + "\n\n").encode())
        assert await reader.readline() == (MENU + "\n").encode()
        # Asterisk is busy with GET DATA; the service gives up and sends its next command
        assert await reader.readline() == b"GET VARIABLE CALLERID(num)\n"
        writer.write(b"200 result=2\n200 result=1 (13800138000)\n")
        assert await closed_by_server(reader)
        writer.close()
    finally:
        await server.stop()
    assert [(r.code, r.result, r.data) for r in replies] == [(200, "1", "13800138000")]


async def test_session_timeout_still_sets_the_safe_route(pg_pool):
    ivr = await flow_ivr(pg_pool)
    never = asyncio.Event()

    async def stuck(session):
        await never.wait()

    steps = route_steps("error")
    d = Dialogue(headers=headers_of("answered.agi"), steps=steps)
    server, port = await start_server(stuck, ivr.safe_route, session_timeout=0.2)
    try:
        assert await play_asterisk(port, d) == [c for c, _ in steps]
    finally:
        await server.stop()


async def test_caller_controlled_values_never_reach_the_wire_unsanitised(pg_pool):
    ivr = await flow_ivr(pg_pool)
    errors = []

    async def route(session):
        name = session.headers["agi_calleridname"] + "\r\nEXEC Dial PJSIP/999"
        for call in (lambda: session.set_variable("HOTLINE_NAME", name),
                     lambda: session.verbose(name),
                     lambda: session.send_command("SET VARIABLE X \x00")):
            try:
                await call()
            except UnsafeValue as exc:
                errors.append(exc)
        raise errors[0]

    steps = route_steps("error")
    d = Dialogue(headers=headers_of("answered.agi"), steps=steps)
    server, port = await start_server(route, ivr.safe_route)
    try:
        sent = await play_asterisk(port, d)
    finally:
        await server.stop()
    assert len(errors) == 3
    assert sent == [c for c, _ in steps]              # only the safe route went out, no EXEC line


async def test_unparseable_reply_stops_the_session_instead_of_desynchronising(pg_pool, caplog):
    ivr = await flow_ivr(pg_pool)
    d = Dialogue(headers=headers_of("answered.agi"), steps=[flow_version(0), ("ANSWER", ["ZZZ not agi"])])
    server, port = await start_server(ivr, ivr.safe_route)
    try:
        assert await play_asterisk(port, d) == [c for c, _ in d.steps]   # no guessing on a broken stream
    finally:
        await server.stop()
    assert any("dialplan's fallback" in r.getMessage() for r in caplog.records)
