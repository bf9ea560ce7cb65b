"""The aiohttp application: typed state keys and one cleanup context per resource."""

from __future__ import annotations

import logging
import time
from typing import AsyncIterator

import asyncpg
import redis.asyncio as aioredis
from aiohttp import web

from config.settings import Settings
from hotline.api import add_api_routes
from hotline.api_callbacks import CALLBACK_DESK
from hotline.api_ivr import IVR_DESK
from hotline.api_leader import LEADER_DESK
from hotline.api_operators import OPERATOR_DESK
from hotline.service import HotlineService

log = logging.getLogger("hotline.app")

SETTINGS = web.AppKey("settings", Settings)
PG_POOL = web.AppKey("pg_pool", asyncpg.Pool)
REDIS = web.AppKey("redis", aioredis.Redis)
SERVICE = web.AppKey("service", HotlineService)


async def pg_pool_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    app[PG_POOL] = await asyncpg.create_pool(settings.database_url.get_secret_value(), min_size=2, max_size=10)
    yield
    await app[PG_POOL].close()


async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
    app[REDIS] = aioredis.from_url(
        app[SETTINGS].redis_url.get_secret_value(), decode_responses=True, socket_timeout=2, socket_connect_timeout=2
    )
    yield
    await app[REDIS].aclose()


async def service_ctx(app: web.Application) -> AsyncIterator[None]:
    service = HotlineService(app[SETTINGS], app[PG_POOL], app[REDIS])
    app[SERVICE] = service
    app[OPERATOR_DESK] = service.desk   # the operator actions of the API (first node)
    app[LEADER_DESK] = service.leader   # the leader hotline of the API (first node's Asterisk)
    app[CALLBACK_DESK] = service.callbacks   # missed-call callbacks (first node's seats)
    app[IVR_DESK] = service.ivr         # flows are validated against the queues routed to now
    await service.start()
    yield
    await service.stop()


async def health(request: web.Request) -> web.Response:
    return web.json_response(request.app[SERVICE].health())


async def live(request: web.Request) -> web.Response:
    try:
        snapshot = await request.app[SERVICE].live.snapshot(time.time())
    except Exception as exc:  # noqa: BLE001 - Redis down: say so, the service goes on
        return web.json_response({"error": f"live views unavailable: {type(exc).__name__}"}, status=503)
    return web.json_response(snapshot)


@web.middleware
async def json_errors(request: web.Request, handler):
    """aiohttp's own answers (no such route, method not allowed, body too large) as JSON under
    /api/, like the API's own errors: clients of the API always get {"error": ...}."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if not request.path.startswith("/api/") or exc.status < 400 or exc.content_type == "application/json":
            raise
        return web.json_response({"error": exc.reason}, status=exc.status, headers={
            k: v for k, v in exc.headers.items() if k.lower() == "allow"})


def make_app(settings: Settings) -> web.Application:
    app = web.Application(middlewares=[json_errors])
    app[SETTINGS] = settings
    app.cleanup_ctx.extend([pg_pool_ctx, redis_ctx, service_ctx])
    app.router.add_get("/health", health)
    app.router.add_get("/api/live", live)
    add_api_routes(app, PG_POOL)  # the configuration API (bearer token, roles): hotline/api.py
    return app
