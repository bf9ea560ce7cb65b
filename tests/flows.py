"""IVR flows for tests: a one-menu flow from a key -> queue map, saved as the live ``main`` flow,
and the FastAGI ``ivr`` route built as the service builds it."""

from __future__ import annotations

from typing import Awaitable, Callable

from config.settings import Settings
from ivr.facts import ServiceFacts
from ivr.flow import parse_flow
from ivr.runner import MAIN_FLOW, FlowIvr
from ivr.store import IvrStore
from queues.catalog import QueueCatalog
from queues.config_store import Actor


def menu_flow(routes: dict[str, str], fallback: str = "hotline-general", timeout_ms: int = 5000) -> str:
    """Greeting (keys barge in), one menu of ``routes`` (key -> queue), no key or another key:
    ``fallback`` -- what the settings' ``[ivr] routes`` used to say."""
    keys = "\n".join(f'"{k}" = "q_{i}"' for i, k in enumerate(routes))
    queues = "\n".join(f'[nodes.q_{i}]\ntype = "queue"\nqueue = "{q}"\n' for i, q in enumerate(routes.values()))
    return f"""
[flow]
name = "test"
start = "welcome"
fallback_queue = "{fallback}"

[prompts.welcome]
text = "您好，幺二三四五热线。"
audio = "hotline/welcome"

[prompts.menu]
text = "请按键选择。"
audio = "hotline/menu"

[nodes.welcome]
type = "play"
prompts = ["welcome"]
barge_in = true
next = "menu"

[nodes.menu]
type = "menu"
prompt = "menu"
timeout_ms = {timeout_ms}
retries = 0
on_timeout = "fallback"
on_invalid = "fallback"

[nodes.menu.keys]
{keys}

[nodes.fallback]
type = "queue"
queue = "{fallback}"

{queues}
"""


async def install_flow(pool, source: str) -> int:
    """Save ``source`` as the next live version of the main flow; its version number."""
    saved = await IvrStore(pool).save_flow(MAIN_FLOW, source, Actor(None, "tests"), validate=parse_flow)
    return saved.version


async def flow_ivr(pool, settings: Settings | None = None, *,
                   leader_open: Callable[[], Awaitable[str | None]] | None = None) -> FlowIvr:
    """The ``ivr`` route as hotline.service builds it, on ``pool``: a real IvrStore, the queue
    catalog of ``settings`` (default ``Settings()``) with Postgres's queues read once, and
    ServiceFacts answering the leader check with ``leader_open``. It runs the live ``main``
    flow (``install_flow``), or the shipped one as version 0 when none was saved."""
    settings = settings or Settings()
    store = IvrStore(pool)
    catalog = QueueCatalog(settings, pool)
    await catalog.reload()
    return FlowIvr(store, catalog, ServiceFacts(store, timezone=settings.timezone, leader_open=leader_open))
