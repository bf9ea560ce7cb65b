"""The IVR over HTTP: flows saved as versions, invalid ones refused with what to fix (the live
version untouched), rollback, roles; and the version switch with a call in progress."""

from __future__ import annotations

import asyncio

import pytest

from config.settings import Settings
from hotline.api_ivr import IVR_DESK
from ivr.facts import ServiceFacts
from ivr.runner import FlowIvr
from ivr.store import IvrStore
from queues.catalog import QueueCatalog
from tests.flows import menu_flow
from tests.test_api import call, token_of

pytestmark = pytest.mark.ivr


@pytest.fixture
async def ivr(pg_pool):
    from tests.test_api import api_client

    runner = FlowIvr(IvrStore(pg_pool), QueueCatalog(Settings(), pg_pool), ServiceFacts(IvrStore(pg_pool)))
    async with api_client(pg_pool, ivr=(IVR_DESK, runner)) as client:
        yield client, runner


async def test_flow_versions_over_http(ivr, pg_pool):
    client, runner = ivr
    boss, sup, op = (await token_of(client, "boss"), await token_of(client, "sup"), await token_of(client, "op1"))
    v1 = await call(client, "POST", "/api/ivr/flows/main/versions", boss,
                    {"source": menu_flow({"1": "hotline-general"}), "comment": "first"}, status=201)
    assert (v1["version"], v1["live"]) == (1, True)
    assert (await runner.current())[0] == 1

    # a flow naming a queue nobody configured, with a typo in a node name: every problem, no save
    bad = menu_flow({"1": "hotline-general", "2": "hotline-nosuch"}).replace('on_timeout = "fallback"',
                                                                            'on_timeout = "falback"')
    answer = await call(client, "POST", "/api/ivr/flows/main/versions", boss, {"source": bad}, status=400)
    messages = [f["message"] for f in answer["fields"]]
    assert any("hotline-nosuch" in m for m in messages), messages
    assert any("falback" in m and "line" in m for m in messages), messages
    assert await pg_pool.fetchval("SELECT count(*) FROM ivr_flow_versions") == 1
    assert (await runner.current())[0] == 1                     # the live version is untouched

    # a TOML syntax error names its line
    answer = await call(client, "POST", "/api/ivr/validate", boss, {"source": "[flow\nname = 1"}, status=400)
    assert "line 1" in answer["fields"][0]["message"]

    v2 = await call(client, "POST", "/api/ivr/flows/main/versions", boss,
                    {"source": menu_flow({"2": "hotline-business"}), "activate": False}, status=201)
    assert (v2["version"], v2["live"]) == (2, False)
    assert (await runner.current())[0] == 1                     # saved, not live yet
    await call(client, "POST", "/api/ivr/flows/main/live", boss, {"version": 2})
    assert (await runner.current())[0] == 2
    await call(client, "POST", "/api/ivr/flows/main/live", boss, {"version": 1})   # rollback
    assert (await runner.current())[0] == 1
    await call(client, "POST", "/api/ivr/flows/main/live", boss, {"version": 9}, status=404)

    listed = await call(client, "GET", "/api/ivr/flows/main", sup)
    assert [(v["version"], v["live"]) for v in listed] == [(1, True), (2, False)]
    one = await call(client, "GET", "/api/ivr/flows/main/versions/2", sup)
    assert "hotline-business" in one["source"]
    await call(client, "POST", "/api/ivr/flows/main/versions", sup, {"source": bad}, status=403)
    await call(client, "GET", "/api/ivr/flows", op, status=403)
    audit = await pg_pool.fetch("SELECT action, entity_key FROM config_audit WHERE entity = 'ivr_flow'")
    assert len(audit) == 2 + 1 + 2   # a save and its switch, a save without one, two switches (not the 404)


async def test_topics_calendars_and_caller_lists_over_http(ivr):
    client, _ = ivr
    boss, sup = await token_of(client, "boss"), await token_of(client, "sup")
    await call(client, "PUT", "/api/ivr/topics/typhoon", boss,
               {"title": "台风", "active": True, "starts_at": "2026-09-01T08:00:00+08:00"})
    await call(client, "PUT", "/api/ivr/topics/typhoon", sup, {"active": False}, status=403)
    answer = await call(client, "PUT", "/api/ivr/calendars/business", boss,
                        {"workday": [["09:00", "18:00"]], "closed_dates": ["2026-12-31"]})
    assert answer["workday"] == [["09:00", "18:00"]]
    answer = await call(client, "PUT", "/api/ivr/calendars/business", boss, {"workday": [["9am", "18:00"]]},
                        status=400)
    assert answer["fields"][0]["field"].startswith("workday")
    await call(client, "POST", "/api/ivr/caller-lists/elderly", boss, {"number": "13800000001"}, status=201)
    answer = await call(client, "POST", "/api/ivr/caller-lists/elderly", boss, {"number": "1380\r\n0"}, status=400)
    assert answer["fields"][0]["field"] == "number"
    assert [e["number"] for e in await call(client, "GET", "/api/ivr/caller-lists?list=elderly", sup)] == [
        "13800000001"]
    await call(client, "DELETE", "/api/ivr/caller-lists/elderly/13800000001", boss, status=204)


async def test_a_call_in_progress_finishes_on_the_version_it_started_on(pg_pool):
    """Two calls through a real FastAGI server: the first is in the menu when a new version goes
    live; it still routes by version 1, the next call by version 2."""
    from tests.agi_peer import load_dialogues
    from tests.flows import install_flow
    from tests.test_fastagi import start_server

    await install_flow(pg_pool, menu_flow({"1": "hotline-general"}))
    catalog = QueueCatalog(Settings(), pg_pool)
    runner = FlowIvr(IvrStore(pg_pool), catalog, ServiceFacts(IvrStore(pg_pool)))
    server, port = await start_server(runner, runner.safe_route)
    (capture,) = load_dialogues("answered.agi")
    switched = asyncio.Event()

    def call_steps(version: str, queue: str) -> list:
        return [
            (f'SET VARIABLE HOTLINE_FLOW_VERSION "{version}"', ["200 result=1"]),
            ("ANSWER", ["200 result=0"]),
            ('STREAM FILE hotline/welcome "1"', ["200 result=0 endpos=8000"]),
            ("GET DATA hotline/menu 5000 1", ["200 result=1"]),
            ('SET VARIABLE HOTLINE_IVR_CHOICE "1"', ["200 result=1"]),
            ('SET VARIABLE HOTLINE_CATEGORY "' + ("general" if queue == "hotline-general" else "business_environment")
             + '"', ["200 result=1"]),
            ('SET VARIABLE HOTLINE_QUEUE_TIMEOUT "120"', ["200 result=1"]),
            ('SET VARIABLE HOTLINE_PRIORITY "0"', ["200 result=1"]),
            (f'SET VARIABLE HOTLINE_QUEUE "{queue}"', ["200 result=1"]),
        ]

    async def asterisk(steps, during_menu=None) -> list[str]:
        """Asterisk's side of one call; ``during_menu`` runs while the caller is in the menu."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(("\n".join(capture.headers) + "\n\n").encode())
        seen = []
        for expected, reply in steps:
            line = (await asyncio.wait_for(reader.readline(), 5)).decode().rstrip("\n")
            seen.append(line)
            assert line == expected
            if line.startswith("GET DATA") and during_menu is not None:
                await during_menu()
            writer.write(("\n".join(reply) + "\n").encode())
            await writer.drain()
        writer.close()
        return seen

    try:
        async def switch():   # version 2 goes live while the first call is in the menu
            await install_flow(pg_pool, menu_flow({"1": "hotline-business"}))
            switched.set()

        first = call_steps("1", "hotline-general")
        assert await asterisk(first, during_menu=switch) == [c for c, _ in first]
        assert switched.is_set()
        second = call_steps("2", "hotline-business")
        assert await asterisk(second) == [c for c, _ in second]
    finally:
        await server.stop()


async def test_a_leader_queue_is_reached_only_through_a_leader_node(pg_pool):
    from ivr.flow import FlowError

    await pg_pool.execute("INSERT INTO queues (name, purpose) VALUES ('hotline-leader', 'leader')")
    catalog = QueueCatalog(Settings(), pg_pool)
    await catalog.reload()
    runner = FlowIvr(IvrStore(pg_pool), catalog, ServiceFacts(IvrStore(pg_pool)))
    with pytest.raises(FlowError) as err:   # a plain queue node would open the leader line outside any slot
        runner.validate(menu_flow({"9": "hotline-leader"}))
    assert "nodes.q_0.queue" in err.value.messages[0] and "leader" in err.value.messages[0]
    leader_to_general = menu_flow({"1": "hotline-general"}).replace(
        'type = "queue"\nqueue = "hotline-general"\n\n\n', "", 0) + (
        '\n[nodes.lead]\ntype = "leader"\nqueue = "hotline-general"\nfallback = "fallback"\n')
    with pytest.raises(FlowError) as err:
        runner.validate(leader_to_general)
    assert any("nodes.lead.queue" in m and "not a leader queue" in m for m in err.value.messages)


async def test_a_rollback_to_a_version_naming_a_deleted_queue_is_refused(ivr, pg_pool):
    client, runner = ivr
    boss = await token_of(client, "boss")
    await pg_pool.execute("INSERT INTO queues (name, purpose) VALUES ('hotline-typhoon', 'special')")
    await runner.catalog.reload()
    await call(client, "POST", "/api/ivr/flows/main/versions", boss,
               {"source": menu_flow({"1": "hotline-typhoon"})}, status=201)
    await call(client, "POST", "/api/ivr/flows/main/versions", boss,
               {"source": menu_flow({"1": "hotline-general"})}, status=201)
    await pg_pool.execute("DELETE FROM queues WHERE name = 'hotline-typhoon'")   # the season is over
    await runner.catalog.reload()
    answer = await call(client, "POST", "/api/ivr/flows/main/live", boss, {"version": 1}, status=409)
    assert any("hotline-typhoon" in f["message"] for f in answer["fields"])
    assert (await runner.current())[0] == 2                                    # the live version stays
