"""The queue catalog: Postgres's queues overlay the settings' and drive routing, live service
levels and the generated Asterisk configuration."""

from __future__ import annotations

import os
import subprocess
import sys

from config.settings import QueueConfig, Settings
from queues.catalog import QueueCatalog, merge_queues
from tests.agi_peer import Dialogue, load_dialogues
from tests.flows import flow_ivr, install_flow, menu_flow
from tests.test_fastagi import play_asterisk, start_server


async def _add_queue(pool, name, purpose="special", **extra):
    cols = {"name": name, "purpose": purpose, **extra}
    keys = ", ".join(cols)
    marks = ", ".join(f"${i}" for i in range(1, len(cols) + 1))
    return await pool.fetchval(f"INSERT INTO queues ({keys}) VALUES ({marks}) RETURNING id", *cols.values())


def test_merge_overrides_by_name_without_case_and_keeps_order():
    base = [QueueConfig(name="hotline-general"), QueueConfig(name="hotline-business", purpose="business")]
    overlay = [QueueConfig(name="typhoon", purpose="special", max_wait=60),
               QueueConfig(name="HOTLINE-business", purpose="business", max_wait=300, category="biz")]
    merged = merge_queues(base, overlay)
    assert [q.name for q in merged] == ["hotline-general", "HOTLINE-business", "typhoon"]
    assert merged[1].max_wait == 300 and merged[1].category == "biz"


async def test_catalog_reads_postgres_and_tells_listeners(pg_pool):
    catalog = QueueCatalog(Settings(), pg_pool)
    seen = []
    catalog.on_change(seen.append)
    assert catalog.queue("typhoon") is None
    assert await catalog.reload() is False            # nothing in Postgres: the settings' queues
    await _add_queue(pg_pool, "typhoon", service_level_seconds=20, max_wait_seconds=45, category="disaster")
    assert await catalog.reload() is True
    q = catalog.queue("Typhoon")                       # app_queue's rule: case does not count
    assert (q.name, q.max_wait, q.service_level, q.category) == ("typhoon", 45, 20, "disaster")
    assert [x.name for x in seen[-1]] == ["hotline-general", "hotline-business", "hotline-dialect", "typhoon"]
    assert await catalog.reload() is False            # unchanged: no listener call
    assert len(seen) == 1
    await pg_pool.execute("UPDATE queues SET max_wait_seconds = 90 WHERE name = 'typhoon'")
    assert await catalog.reload() is True and catalog.queue("typhoon").max_wait == 90
    await pg_pool.execute("DELETE FROM queues WHERE name = 'typhoon'")
    assert await catalog.reload() is True and catalog.queue("typhoon") is None


async def test_catalog_maps_overflow_to_the_queue_name(pg_pool):
    catalog = QueueCatalog(Settings(), pg_pool)
    general = await _add_queue(pg_pool, "hotline-general", purpose="general", max_wait_seconds=100)
    await _add_queue(pg_pool, "typhoon", overflow_queue_id=general)
    await catalog.reload()
    assert catalog.queue("hotline-general").max_wait == 100     # Postgres overrides the settings' queue
    assert catalog.queue("typhoon").overflow == "hotline-general"


async def test_catalog_keeps_the_last_queues_while_postgres_is_unreachable(pg_dsn, caplog):
    import asyncpg

    pool = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=2)
    catalog = QueueCatalog(Settings(), pool)
    try:
        await pool.execute("DELETE FROM queues WHERE name = 'dialect-yue'")
        await _add_queue(pool, "dialect-yue", purpose="dialect")
        await catalog.refresh()
        assert catalog.queue("dialect-yue") is not None
        await pool.execute("DELETE FROM queues WHERE name = 'dialect-yue'")
    finally:
        pool.terminate()          # the fault: every connection gone, the pool closed
    caplog.set_level("WARNING", logger="hotline.catalog")
    await catalog.refresh()       # must not raise
    await catalog.refresh()
    assert catalog.queue("dialect-yue") is not None      # the last list read still routes
    warnings = [r for r in caplog.records if "Postgres unreachable" in r.getMessage()]
    assert len(warnings) == 1                             # once per outage


def _routed(choice: str, category: str, wait: int, queue: str) -> list[tuple[str, list[str]]]:
    return [(f'SET VARIABLE HOTLINE_IVR_CHOICE "{choice}"', ["200 result=1"]),
            (f'SET VARIABLE HOTLINE_CATEGORY "{category}"', ["200 result=1"]),
            (f'SET VARIABLE HOTLINE_QUEUE_TIMEOUT "{wait}"', ["200 result=1"]),
            ('SET VARIABLE HOTLINE_PRIORITY "0"', ["200 result=1"]),
            (f'SET VARIABLE HOTLINE_QUEUE "{queue}"', ["200 result=1"])]


async def test_ivr_routes_with_the_catalog_max_wait_and_category(pg_pool):
    # Postgres overrides a settings queue (hotline-general) and adds one the settings lack (typhoon)
    await _add_queue(pg_pool, "hotline-general", purpose="general", max_wait_seconds=240, category="intake")
    await _add_queue(pg_pool, "typhoon", purpose="special", max_wait_seconds=45, category="disaster")
    ivr = await flow_ivr(pg_pool)          # the queue catalog of Settings() with Postgres's queues
    (capture,) = load_dialogues("answered.agi")
    # no flow saved: the shipped flow; no key -> hotline-general with Postgres's max wait and category
    shipped = Dialogue(headers=capture.headers, steps=[
        ('SET VARIABLE HOTLINE_FLOW_VERSION "0"', ["200 result=1"]),
        ("ANSWER", ["200 result=0"]),
        ('STREAM FILE hotline/welcome "01239"', ["200 result=0 endpos=8000"]),
        ("GET DATA hotline/menu 1500 1", ["200 result= (timeout)"]),
        *_routed("timeout", "intake", 240, "hotline-general"),
    ])
    # a flow routing key 3 to the Postgres-only queue (it validates against the catalog's queues)
    typhoon = Dialogue(headers=capture.headers, steps=[
        ('SET VARIABLE HOTLINE_FLOW_VERSION "1"', ["200 result=1"]),
        ("ANSWER", ["200 result=0"]),
        ('STREAM FILE hotline/welcome "13"', ["200 result=0 endpos=8000"]),
        ("GET DATA hotline/menu 5000 1", ["200 result=3"]),
        *_routed("3", "disaster", 45, "typhoon"),
    ])
    server, port = await start_server(ivr, ivr.safe_route)
    try:
        assert await play_asterisk(port, shipped) == [c for c, _ in shipped.steps]
        await install_flow(pg_pool, menu_flow({"1": "hotline-general", "3": "typhoon"}))
        assert await play_asterisk(port, typhoon) == [c for c, _ in typhoon.steps]
    finally:
        await server.stop()


async def test_asterisk_config_includes_the_postgres_queues_and_seats(pg_pool, pg_dsn):
    await _add_queue(pg_pool, "typhoon", purpose="special", max_wait_seconds=45, category="disaster")
    await pg_pool.execute("INSERT INTO seats (interface, name) VALUES ('PJSIP/9001', 'Leader seat')")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTLINE_")}
    env["HOTLINE_DATABASE_URL"] = pg_dsn
    out = subprocess.run([sys.executable, "-m", "hotline.cli", "asterisk-config"], capture_output=True,
                         text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "[typhoon]" in out.stdout                               # queues.conf section
    assert "hotline-general|hotline-business|hotline-dialect|typhoon" in out.stdout  # the dialplan's whitelist
    assert "exten => typhoon,1,Set(HOTLINE_OVERFLOWS=0)" in out.stdout        # a transfer target
    assert " same => n(in_queue),Queue(${EXTEN},ct,,,45)" in out.stdout     # its max wait (c: survey after)
    assert "exten => 9001,1,Dial(PJSIP/${EXTEN}" in out.stdout        # the leader seat reachable by Atxfer
    offline = subprocess.run([sys.executable, "-m", "hotline.cli", "asterisk-config", "--no-database"],
                             capture_output=True, text=True, env=env, timeout=60)
    assert offline.returncode == 0 and "[typhoon]" not in offline.stdout


def test_asterisk_config_names_an_unreachable_database_without_its_password():
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTLINE_")}
    env["HOTLINE_DATABASE_URL"] = "postgresql://hotline:pa55-secret@127.0.0.1:1/hotline"
    out = subprocess.run([sys.executable, "-m", "hotline.cli", "asterisk-config"], capture_output=True,
                         text=True, env=env, timeout=60)
    assert out.returncode == 1 and out.stdout == ""
    assert "asterisk-config" in out.stderr and "pa55-secret" not in out.stderr and "Traceback" not in out.stderr
