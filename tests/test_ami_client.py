"""AmiClient (and PbxActions on top of it) over real TCP: the PBX simulator where it can play the
situation, and a tiny AMI server of the test's own where it cannot (an action never answered, a
Ping swallowed by a half-open link, a list cut half-way).

What is checked: login and a wrong secret (the secret never in a log, a repr or an error); run()
reconnecting after a cut link and after a refusing server, one log line per state change, growing
delays; actions in flight failing at once with AmiLinkLost when the link drops, never re-sent
after the reconnect (panoramisk re-sends its "awaiting actions"); an unanswered action timing out
and its late answer ignored; list actions collecting their items until the Complete event; the
keep-alive closing a link whose Ping gets no (or a bad) answer; close() stopping run() wherever it
is; CR/LF/NUL in a value refused before one byte is written.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re

import pytest

from telephony.actions import PbxActions
from telephony.ami_client import AmiAuthError, AmiClient, AmiTimeout, backoff_delay
from telephony.ami_protocol import AmiLinkLost
from telephony.errors import UnsafeValue
from telephony.simulator import PbxSimulator, ScriptedCaller, SeatBehaviour
from tests.support import free_port, wait_until

pytestmark = pytest.mark.timeout(60)

USER = "hotline"
SECRET = "s3cr3t-Zq9-never-in-a-log"
BANNER = b"Asterisk Call Manager/11.0.0\r\n"
QUEUES = {"hotline-general": {"strategy": "rrmemory", "timeout": 15, "retry": 1},
          "hotline-business": {"strategy": "rrmemory", "timeout": 15, "retry": 1}}


# ---------------------------------------------------------------- helpers


class MaxJitter(random.Random):
    """random() always 1.0: backoff_delay gives exactly min(cap, base * 2**attempt)."""

    def random(self) -> float:
        return 1.0


def frame(*headers: tuple[str, str]) -> bytes:
    return "".join(f"{k}: {v}\r\n" for k, v in headers).encode() + b"\r\n"


def parse(block: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in block.decode().split("\r\n"):
        key, _, value = line.partition(":")
        out.setdefault(key.strip().lower(), value.strip())
    return out


class TinyAmi:
    """Just enough of an Asterisk AMI: the banner, Login (accepts SECRET, then FullyBooted), Ping (answered,
    swallowed or refused as ``ping`` says), Logoff; any other action goes to ``handler`` (None:
    never answered). Every frame received is kept, and every byte."""

    def __init__(self) -> None:
        self.received: list[dict[str, str]] = []
        self.raw = bytearray()
        self.writers: list[asyncio.StreamWriter] = []
        self.connections = 0
        self.ping = "answer"      # answer | swallow | error
        self.handler = None       # (frame, writer) -> None
        self.server: asyncio.base_events.Server | None = None
        self.port = 0

    async def start(self) -> TinyAmi:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    def actions(self, name: str) -> list[dict[str, str]]:
        return [f for f in self.received if f.get("action", "").lower() == name.lower()]

    def cut(self) -> None:
        """Drop every link abruptly (RST, no Goodbye)."""
        for writer in self.writers:
            writer.transport.abort()
        self.writers.clear()

    async def stop(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        writer.write(BANNER)
        buffer = b""
        try:
            while data := await reader.read(65536):
                self.raw += data
                buffer += data
                while b"\r\n\r\n" in buffer:
                    block, buffer = buffer.split(b"\r\n\r\n", 1)
                    f = parse(block)
                    self.received.append(f)
                    self._answer(f, writer)
        except ConnectionError:
            pass
        finally:
            writer.close()

    def _answer(self, f: dict[str, str], writer: asyncio.StreamWriter) -> None:
        action, aid = f.get("action", "").lower(), ("ActionID", f.get("actionid", ""))
        if action == "login":
            if f.get("secret") == SECRET:
                writer.write(frame(("Response", "Success"), aid, ("Message", "Authentication accepted")))
                writer.write(frame(("Event", "FullyBooted"), ("Privilege", "system,all"), ("Uptime", "5"),
                                   ("LastReload", "5"), ("Status", "Fully Booted")))
            else:
                writer.write(frame(("Response", "Error"), aid, ("Message", "Authentication failed")))
        elif action == "ping":
            if self.ping == "answer":
                writer.write(frame(("Response", "Success"), aid, ("Ping", "Pong"), ("Timestamp", "1.0")))
            elif self.ping == "error":
                writer.write(frame(("Response", "Error"), aid, ("Message", "Permission denied")))
        elif action == "logoff":
            writer.write(frame(("Response", "Goodbye"), aid, ("Message", "Thanks for all the fish.")))
        elif self.handler is not None:
            self.handler(f, writer)


@pytest.fixture
async def tiny():
    server = await TinyAmi().start()
    yield server
    await server.stop()


@pytest.fixture
async def sim(tmp_path):
    s = PbxSimulator(username=USER, secret=SECRET, agi_port=free_port(), recordings_dir=tmp_path,
                     queues=QUEUES, speed=25.0)
    await s.start()
    yield s
    await s.stop()


@pytest.fixture
async def clients():
    """Every client made by a test, closed at the end, with its run() task awaited."""
    made: list[tuple[AmiClient, list[asyncio.Task]]] = []

    def make(port: int, secret: str = SECRET, **kw) -> AmiClient:
        events: list = []
        kw.setdefault("backoff_base", 0.05)
        kw.setdefault("backoff_cap", 0.2)
        client = AmiClient(host="127.0.0.1", port=port, username=USER, secret=secret,
                           on_event=events.append, name="t", **kw)
        client.events = events
        tasks: list[asyncio.Task] = []
        client.start = lambda: tasks.append(asyncio.create_task(client.run())) or tasks[-1]
        made.append((client, tasks))
        return client

    yield make
    for client, tasks in made:
        await client.close()
        if tasks:
            await asyncio.wait_for(asyncio.gather(*tasks), 10)


def lines(caplog, pattern: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if re.search(pattern, r.getMessage())]


def delays(caplog) -> list[float]:
    return [float(m) for line in lines(caplog, r"retrying in") for m in re.findall(r"retrying in ([\d.]+) s", line)]


def assert_secret_nowhere(caplog, *more: object) -> None:
    for record in caplog.records:
        text = record.getMessage() + (str(record.exc_info[1]) if record.exc_info else "") + str(record.args)
        assert SECRET not in text, record
    for thing in more:
        assert SECRET not in repr(thing) and SECRET not in str(thing)


# ---------------------------------------------------------------- login


async def test_backoff_is_capped_exponential_with_jitter():
    rng = random.Random(7)
    for attempt in range(12):
        d = min(30.0, 0.5 * 2 ** attempt)
        for _ in range(20):
            assert d / 2 <= backoff_delay(attempt, 0.5, 30.0, rng) <= d
    assert [backoff_delay(a, 0.1, 0.8, MaxJitter()) for a in range(6)] == [0.1, 0.2, 0.4, 0.8, 0.8, 0.8]
    assert backoff_delay(10_000, 0.5, 30.0, MaxJitter()) == 30.0  # no overflow for a long outage


async def test_login_against_the_simulator(sim, clients, caplog):
    caplog.set_level(logging.DEBUG)
    client = clients(sim.ami_port)
    await client.connect()
    assert client.connections == 1
    assert lines(caplog, r"AMI t: connected to 127\.0\.0\.1") and lines(caplog, r"AMI t: logged in as hotline")
    pong = await client.send_action("Ping")
    assert pong.success and pong.get("Ping") == "Pong"
    # the simulator's FullyBooted after login reaches on_event; the Login answer does not
    await wait_until(lambda: any(e.name == "FullyBooted" for e in client.events), 10, "FullyBooted")
    assert_secret_nowhere(caplog, client)


async def test_wrong_secret_raises_auth_error_and_never_shows_the_secret(sim, clients, caplog):
    caplog.set_level(logging.DEBUG)
    client = clients(sim.ami_port, secret=SECRET + "-wrong")
    with pytest.raises(AmiAuthError) as err:
        await client.connect()
    assert "Authentication failed" in str(err.value) and client.connections == 0
    assert client.protocol.closed
    assert_secret_nowhere(caplog, client, err.value)
    assert SECRET + "-wrong" not in repr(client)

    # run() with a wrong secret keeps trying (an operator may fix the secret), and logs no secret
    client.start()
    await wait_until(lambda: len(lines(caplog, r"cannot use .*Authentication failed")) >= 2, 15, "two refused logins")
    assert not client.ready.is_set() and client.connections == 0
    assert_secret_nowhere(caplog, client)


async def test_a_secret_with_a_line_break_is_never_sent_nor_logged(tiny, clients, caplog):
    caplog.set_level(logging.DEBUG)
    bad = SECRET + "\r\nAction: Originate"
    client = clients(tiny.port, secret=bad)
    with pytest.raises(AmiAuthError) as err:
        await client.connect()
    assert_secret_nowhere(caplog, client, err.value)
    assert tiny.connections == 0 and not tiny.raw


# ---------------------------------------------------------------- reconnect


async def test_run_reconnects_after_the_link_is_cut(sim, clients, caplog):
    caplog.set_level(logging.INFO, logger="hotline.ami")
    resyncs: list[int] = []

    async def on_connected(c: AmiClient) -> None:
        resyncs.append(c.connections)
        assert (await c.send_action("CoreStatus")).success  # the client is usable inside on_connected

    client = clients(sim.ami_port, on_connected=on_connected)
    client.start()
    await wait_until(client.ready.is_set, 10, "first login")
    assert resyncs == [1]

    sim.drop_ami_links()
    await wait_until(lambda: client.connections == 2 and client.ready.is_set(), 15, "relogin after the cut")
    assert resyncs == [1, 2]
    assert len(lines(caplog, r"AMI t: link lost")) == 1
    assert len(lines(caplog, r"AMI t: connected to")) == 2
    assert len(lines(caplog, r"AMI t: logged in as")) == 2
    assert len(lines(caplog, r"AMI t: retrying in")) == 1
    assert (await client.send_action("Ping")).success


async def test_run_keeps_retrying_while_refused_with_growing_delays(sim, clients, caplog):
    caplog.set_level(logging.INFO, logger="hotline.ami")
    client = clients(sim.ami_port, backoff_base=0.1, backoff_cap=0.8, rng=MaxJitter())
    client.start()
    await wait_until(client.ready.is_set, 10, "first login")

    sim.refuse_ami(True)
    await wait_until(lambda: len(delays(caplog)) >= 5, 20, "five retries while refused")
    assert not client.ready.is_set()
    sim.refuse_ami(False)
    await wait_until(lambda: client.connections == 2 and client.ready.is_set(), 15, "relogin once accepted")

    seen = delays(caplog)
    assert seen[:5] == [0.1, 0.2, 0.4, 0.8, 0.8]   # doubling, then capped
    assert len(lines(caplog, r"AMI t: link lost")) == 1
    assert len(lines(caplog, r"AMI t: cannot use")) == len(seen) - 1   # each refused attempt: one line
    assert len(lines(caplog, r"AMI t: logged in as")) == 2


async def test_run_after_an_asterisk_restart_logs_in_again(sim, clients):
    client = clients(sim.ami_port)
    client.start()
    await wait_until(client.ready.is_set, 10, "first login")
    before = await PbxActions(client).core_status()
    await sim.restart()
    await wait_until(lambda: client.connections == 2 and client.ready.is_set(), 15, "relogin after restart")
    after = await PbxActions(client).core_status()
    assert after.get("CoreStartupTime") is not None and after.frame != before.frame


# ---------------------------------------------------------------- actions and the link


async def test_an_action_in_flight_fails_at_once_when_the_link_drops_and_is_never_resent(tiny, clients):
    client = clients(tiny.port, action_timeout=60.0)
    client.start()
    await wait_until(client.ready.is_set, 10, "login")
    pending = asyncio.ensure_future(client.send_action("Originate", {"Channel": "Local/1@x"}))
    adding = asyncio.ensure_future(PbxActions(client).queue_add("hotline-general", "PJSIP/8001", "Seat 8001"))
    await wait_until(lambda: tiny.actions("Originate") and tiny.actions("QueueAdd"), 10, "both actions on the wire")

    tiny.cut()
    # far sooner than their 60 s timeout: wait_for would raise TimeoutError instead of AmiLinkLost
    with pytest.raises(AmiLinkLost):
        await asyncio.wait_for(pending, 10)
    with pytest.raises(AmiLinkLost):
        await asyncio.wait_for(adding, 10)

    await wait_until(lambda: client.connections == 2 and client.ready.is_set(), 15, "relogin")
    assert (await client.send_action("Ping")).success   # a round trip after the relogin and its FullyBooted
    # panoramisk would re-send its awaiting actions after the reconnect: an Originate must never run twice
    assert len(tiny.actions("Originate")) == 1 and len(tiny.actions("QueueAdd")) == 1
    assert len(tiny.actions("Login")) == 2
    assert client.protocol.pending == {}


async def test_an_action_sent_while_the_link_is_down_fails_at_once(tiny, clients):
    client = clients(tiny.port, action_timeout=60.0)
    await client.connect()
    client.protocol.close()
    with pytest.raises(AmiLinkLost):
        await asyncio.wait_for(client.send_action("QueueStatus"), 10)
    assert not tiny.actions("QueueStatus")


async def test_an_unanswered_action_times_out_and_its_late_answer_is_ignored(tiny, clients):
    held: list[tuple[dict, asyncio.StreamWriter]] = []
    tiny.handler = lambda f, w: held.append((f, w))
    client = clients(tiny.port)
    await client.connect()

    with pytest.raises(AmiTimeout) as err:
        await client.send_action("GetVar", {"Channel": "Local/1@x", "Variable": "X"}, timeout=0.3)
    assert isinstance(err.value, TimeoutError) and "GetVar" in str(err.value)
    assert client.protocol.pending == {}

    f, writer = held[0]
    writer.write(frame(("Response", "Success"), ("ActionID", f["actionid"]), ("Variable", "X"), ("Value", "late")))
    # the link goes on: the next action is answered, the late answer went nowhere
    pong = await client.send_action("Ping")
    assert pong.success and pong.get("Value") is None
    assert [e.name for e in client.events] == ["FullyBooted"] and not client.protocol.closed
    assert len(tiny.actions("GetVar")) == 1


async def test_late_items_of_a_timed_out_list_action_are_not_taken_for_events(tiny, clients):
    held: list[tuple[dict, asyncio.StreamWriter]] = []
    tiny.handler = lambda f, w: held.append((f, w))
    client = clients(tiny.port)
    await client.connect()
    with pytest.raises(AmiTimeout):
        await client.send_action("CoreShowChannels", timeout=0.3)
    f, writer = held[0]
    aid = ("ActionID", f["actionid"])
    writer.write(frame(("Response", "Success"), aid, ("EventList", "start"), ("Message", "Channels will follow")))
    writer.write(frame(("Event", "CoreShowChannel"), aid, ("Channel", "Local/1@x-1;1"), ("Uniqueid", "1.1"),
                       ("Linkedid", "1.1")))
    writer.write(frame(("Event", "CoreShowChannelsComplete"), aid, ("EventList", "Complete"), ("ListItems", "1")))
    pong = await client.send_action("Ping")   # after the late list on the same stream
    assert pong.success
    assert [e.name for e in client.events] == ["FullyBooted"]   # no CoreShowChannel leaked out as an event
    assert client.protocol.abandoned == {}


async def test_a_cancelled_action_leaves_nothing_pending(tiny, clients):
    tiny.handler = lambda f, w: None
    client = clients(tiny.port)
    await client.connect()
    task = asyncio.ensure_future(client.send_action("GetVar", {"Variable": "X"}, timeout=60))
    await wait_until(lambda: tiny.actions("GetVar"), 10, "GetVar on the wire")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert client.protocol.pending == {}


async def test_list_actions_collect_every_item_until_complete(sim, clients):
    sim.refuse_agi(True)   # the call goes straight to the default queue and waits there
    sim.set_seat_behaviour("PJSIP/8001", SeatBehaviour(answers=False))
    client = clients(sim.ami_port)
    client.start()
    await wait_until(client.ready.is_set, 10, "login")
    actions = PbxActions(client)
    assert await actions.queue_add("hotline-general", "PJSIP/8001", "Seat 8001")
    assert await actions.queue_add("hotline-general", "PJSIP/8002", "Seat 8002", paused=True, reason="lunch")
    assert await actions.queue_add("hotline-business", "PJSIP/8003", "Seat 8003")
    assert not await actions.queue_add("hotline-general", "PJSIP/8001", "Seat 8001")   # already there

    status = await actions.queue_status()
    assert status.success and status.get("EventList") == "start"
    names = [i.event for i in status.items]
    assert names.count("QueueParams") == 2 and names.count("QueueMember") == 3
    assert {i["Name"] for i in status.items if i.event == "QueueMember"} == {"Seat 8001", "Seat 8002", "Seat 8003"}
    assert all(i.action_id == status.frame.action_id for i in status.items)
    assert "QueueStatusComplete" not in names    # the Complete ends the list, it is not an item

    one = await actions.queue_status("hotline-business")
    assert [i.event for i in one.items] == ["QueueParams", "QueueMember"]

    await sim.place_call(ScriptedCaller(number="13800138000"))
    await wait_until(lambda: any(q.entries for q in sim.core.queues.values()), 15, "a caller waiting")
    channels = await actions.core_show_channels()
    assert [i.event for i in channels.items] == ["CoreShowChannel"] * len(sim.core.channels.live)
    assert {i["Channel"] for i in channels.items} == set(sim.core.channels.live)
    assert len(channels.items) >= 2

    # no list item nor Complete leaked to the event handler
    listed = {"QueueParams", "QueueMember", "QueueEntry", "CoreShowChannel", "QueueStatusComplete",
              "CoreShowChannelsComplete"}
    assert not [e for e in client.events if e.name in listed]
    assert client.protocol.pending == {}


async def test_a_list_cut_half_way_fails_with_link_lost(tiny, clients):
    def half_a_list(f: dict, writer: asyncio.StreamWriter) -> None:
        aid = ("ActionID", f["actionid"])
        writer.write(frame(("Response", "Success"), aid, ("EventList", "start"),
                           ("Message", "Queue status will follow")))
        writer.write(frame(("Event", "QueueParams"), ("Queue", "hotline-general"), aid))
        writer.write(frame(("Event", "QueueMember"), ("Queue", "hotline-general"), ("Name", "Seat 8001"), aid))
        asyncio.get_running_loop().call_later(0.1, writer.transport.abort)

    tiny.handler = half_a_list
    client = clients(tiny.port, action_timeout=60.0)
    await client.connect()
    with pytest.raises(AmiLinkLost):
        await asyncio.wait_for(PbxActions(client).queue_status(), 10)
    assert [e.name for e in client.events] == ["FullyBooted"]   # the unfinished list's items are not events


# ---------------------------------------------------------------- keep-alive


@pytest.mark.parametrize("mode", ["swallow", "error"])
async def test_keepalive_closes_a_link_whose_ping_is_not_answered_well(tiny, clients, caplog, mode):
    caplog.set_level(logging.INFO, logger="hotline.ami")
    client = clients(tiny.port, ping_interval=0.1, action_timeout=0.5)
    client.start()
    await wait_until(lambda: client.ready.is_set() and len(tiny.actions("Ping")) >= 2, 10, "pings answered")
    assert client.connections == 1

    tiny.ping = mode   # a half-open link (nothing comes back) or a session the server no longer knows
    await wait_until(lambda: lines(caplog, r"keep-alive Ping failed"), 10, "the keep-alive to notice")
    tiny.ping = "answer"
    await wait_until(lambda: client.connections == 2 and client.ready.is_set(), 10, "relogin")
    assert len(tiny.actions("Login")) == 2
    assert len(lines(caplog, r"AMI t: link lost")) == 1


# ---------------------------------------------------------------- close


async def test_close_stops_run_and_it_does_not_reconnect(tiny, clients, caplog):
    caplog.set_level(logging.INFO, logger="hotline.ami")
    client = clients(tiny.port)
    task = client.start()
    await wait_until(client.ready.is_set, 10, "login")
    await client.close()
    await asyncio.wait_for(task, 10)
    assert tiny.actions("Logoff") and client.protocol.closed and not client.ready.is_set()
    await asyncio.sleep(0.3)   # longer than the backoff cap: a reconnect would have happened by now
    assert tiny.connections == 1 and client.connections == 1
    assert not lines(caplog, r"retrying in|link lost")
    with pytest.raises(AmiLinkLost):
        await client.send_action("Ping")


async def test_close_during_the_backoff_stops_run_at_once(clients, caplog):
    caplog.set_level(logging.INFO, logger="hotline.ami")
    client = clients(free_port(), backoff_base=60.0, backoff_cap=60.0)   # nobody listens there
    task = client.start()
    await wait_until(lambda: lines(caplog, r"retrying in"), 10, "a first refusal")
    await client.close()
    await asyncio.wait_for(task, 10)   # not after the 30-60 s backoff


async def test_close_while_logging_in_does_not_leave_run_connected(tiny, clients):
    logged_in = asyncio.Event()
    real = tiny._answer

    def slow_login(f, writer):
        if f.get("action", "").lower() == "login":
            logged_in.set()
            asyncio.get_running_loop().call_later(0.2, real, f, writer)
        else:
            real(f, writer)

    tiny._answer = slow_login
    client = clients(tiny.port)
    task = client.start()
    await asyncio.wait_for(logged_in.wait(), 10)
    await client.close()
    await asyncio.wait_for(task, 10)
    assert not client.ready.is_set() and tiny.connections == 1


async def test_close_while_the_tcp_connect_is_under_way_stops_run(tiny, clients, monkeypatch):
    # close() lands while the connection is being opened (no protocol yet to close): run() must
    # notice once the login is through, not stay logged in for good
    loop = asyncio.get_running_loop()
    real, started, gate = loop.create_connection, asyncio.Event(), asyncio.Event()

    async def slow_connect(*args, **kw):
        started.set()
        await gate.wait()
        return await real(*args, **kw)

    monkeypatch.setattr(loop, "create_connection", slow_connect)
    client = clients(tiny.port)
    task = client.start()
    await asyncio.wait_for(started.wait(), 10)
    closing = asyncio.ensure_future(client.close())
    await asyncio.sleep(0)
    gate.set()
    await asyncio.wait_for(asyncio.gather(closing, task), 10)
    assert not client.ready.is_set() and client.protocol.closed


# ---------------------------------------------------------------- injection


@pytest.mark.parametrize("bad", ["x\r\nAction: Originate", "x\nAction: Originate", "x\rAction: Originate",
                                 "x\x00y"])
async def test_cr_lf_nul_in_a_value_are_refused_before_anything_is_sent(tiny, clients, bad):
    client = clients(tiny.port)
    await client.connect()
    before = bytes(tiny.raw)
    actions = PbxActions(client)
    with pytest.raises(UnsafeValue):
        await actions.queue_add("hotline-general", "PJSIP/8001", bad)
    with pytest.raises(UnsafeValue):
        await actions.queue_pause("PJSIP/8001", True, reason=bad)
    with pytest.raises(UnsafeValue):
        await actions.queue_remove(bad, "PJSIP/8001")
    with pytest.raises(UnsafeValue):
        await client.send_action("Setvar", {"Variable": "X", "Value": bad})
    with pytest.raises(UnsafeValue):
        await client.send_action("Setvar", {"Variable" + bad: "X"})
    with pytest.raises(UnsafeValue):
        await client.send_action(bad)
    assert client.protocol.pending == {}
    pong = await client.send_action("Ping")   # the link is fine, and the Ping is the only thing written
    assert pong.success
    sent = bytes(tiny.raw[len(before):])
    assert sent.count(b"\r\n\r\n") == 1 and sent.startswith(b"Action: Ping\r\n")
    assert [f["action"] for f in tiny.received] == ["Login", "Ping"]
