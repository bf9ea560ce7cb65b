"""The IVR's configuration over HTTP: flows (versioned), special topics, calendars, caller lists.

Admins change, supervisors read:
* ``GET /api/ivr/flows``: each flow's latest and live version;
* ``GET /api/ivr/flows/{name}``: its versions; ``GET /api/ivr/flows/{name}/versions/{v}``: one,
  with its source;
* ``POST /api/ivr/flows/{name}/versions`` ``{source, comment, activate}``: validate the TOML
  source and save it as the next version, live at once unless ``activate`` is false (new calls
  run it; calls in progress finish on theirs). An invalid flow is a 400 whose ``fields`` hold one
  message per problem, naming the key (and line); nothing is saved and the live version stays;
* ``POST /api/ivr/flows/{name}/live`` ``{version}``: make a saved version live (a rollback);
* ``POST /api/ivr/validate`` ``{source}``: the same checks, nothing saved;
* ``GET /api/ivr/topics``, ``PUT /api/ivr/topics/{key}`` ``{title, active, starts_at, ends_at}``;
* ``GET /api/ivr/calendars``, ``PUT /api/ivr/calendars/{name}`` (see ivr/hours.py);
* ``GET /api/ivr/caller-lists?list=``, ``POST /api/ivr/caller-lists/{list}`` ``{number, note}``,
  ``DELETE /api/ivr/caller-lists/{list}/{number}``.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from aiohttp import web
from pydantic import ValidationError

from hotline.api import ApiError, ConfigApi
from hotline.api_operators import _object
from hotline.auth import User
from ivr.hours import Calendar
from ivr.store import IvrDataError, IvrStore
from queues.config_store import Actor

ADMIN = ("admin",)
READERS = ("admin", "supervisor")


class FlowDesk(Protocol):
    store: IvrStore

    def validate(self, source: str) -> Any: ...


IVR_DESK = web.AppKey("ivr_desk", object)


class IvrApi:
    def __init__(self, config: ConfigApi) -> None:
        self.config = config

    def desk(self, request: web.Request) -> FlowDesk:
        desk = request.app.get(IVR_DESK)
        if desk is None:
            raise ApiError(503, "no IVR runs in this instance")
        return desk

    async def _run(self, coro, status: int = 200) -> web.Response:
        return web.json_response(await coro, status=status)   # an IvrDataError: the endpoint wrapper answers

    # ---- flows -------------------------------------------------------------------------------

    async def flows(self, request: web.Request, user: User) -> web.Response:
        return await self._run(self.desk(request).store.flows())

    async def versions(self, request: web.Request, user: User) -> web.Response:
        name = request.match_info["name"]

        async def run():
            versions = await self.desk(request).store.flow_versions(name)
            if not versions:
                raise IvrDataError(404, f"no flow {name}")
            return versions
        return await self._run(run())

    async def version(self, request: web.Request, user: User) -> web.Response:
        store = self.desk(request).store

        async def run():
            v = await store.flow_version(request.match_info["name"], int(request.match_info["version"]))
            return {**v.summary(), "source": v.source}
        return await self._run(run())

    async def save(self, request: web.Request, user: User) -> web.Response:
        body = _object(await request.read())
        activate = body.get("activate", True)
        if not isinstance(activate, bool):
            raise ApiError(400, "invalid input", [{"field": "activate", "message": "true or false"}])
        desk = self.desk(request)

        async def run():
            saved = await desk.store.save_flow(request.match_info["name"], body.get("source"), _actor(user),
                                               validate=desk.validate, comment=body.get("comment", ""),
                                               activate=activate)
            return saved.summary()
        return await self._run(run(), status=201)

    async def live(self, request: web.Request, user: User) -> web.Response:
        body = _object(await request.read())

        async def run():
            desk = self.desk(request)
            v = await desk.store.activate(request.match_info["name"], body.get("version"), _actor(user),
                                          validate=desk.validate)
            return v.summary()
        return await self._run(run())

    async def validate(self, request: web.Request, user: User) -> web.Response:
        from ivr.flow import FlowError

        body = _object(await request.read())
        source = body.get("source")
        if not isinstance(source, str) or not source.strip():
            raise ApiError(400, "invalid input", [{"field": "source", "message": "the flow's text (TOML) is required"}])
        try:
            flow = self.desk(request).validate(source)
        except FlowError as exc:
            raise ApiError(400, "the flow is not valid",
                           [{"field": "source", "message": m} for m in exc.messages]) from None
        return web.json_response({"valid": True, "nodes": len(flow.nodes), "prompts": len(flow.prompts)})

    # ---- topics, calendars, caller lists -----------------------------------------------------

    async def topics(self, request: web.Request, user: User) -> web.Response:
        return await self._run(self.desk(request).store.topics())

    async def put_topic(self, request: web.Request, user: User) -> web.Response:
        body = _object(await request.read())
        return await self._run(self.desk(request).store.put_topic(request.match_info["key"], body, _actor(user)))

    async def calendars(self, request: web.Request, user: User) -> web.Response:
        return await self._run(self.desk(request).store.calendars())

    async def put_calendar(self, request: web.Request, user: User) -> web.Response:
        body = _object(await request.read())
        body["name"] = request.match_info["name"]
        try:
            calendar = Calendar.model_validate_json(json.dumps(body))
        except ValidationError as exc:
            raise ApiError(400, "invalid input", [
                {"field": ".".join(str(p) for p in e["loc"]) or "body", "message": e["msg"]}
                for e in exc.errors()]) from None
        return await self._run(self.desk(request).store.put_calendar(calendar, _actor(user)))

    async def callers(self, request: web.Request, user: User) -> web.Response:
        return await self._run(self.desk(request).store.callers(request.query.get("list")))

    async def add_caller(self, request: web.Request, user: User) -> web.Response:
        body = _object(await request.read())
        return await self._run(self.desk(request).store.add_caller(
            request.match_info["list"], body.get("number"), body.get("note", ""), _actor(user)), status=201)

    async def remove_caller(self, request: web.Request, user: User) -> web.Response:
        await self._run(self.desk(request).store.remove_caller(
            request.match_info["list"], request.match_info["number"], _actor(user)))
        return web.Response(status=204)

    def routes(self) -> list[web.RouteDef]:
        e = self.config.endpoint
        flow = "/api/ivr/flows/{name}"
        return [
            web.get("/api/ivr/flows", e(READERS)(self.flows)),
            web.get(flow, e(READERS)(self.versions)),
            web.get(flow + "/versions/{version:[0-9]{1,9}}", e(READERS)(self.version)),
            web.post(flow + "/versions", e(ADMIN)(self.save)),
            web.post(flow + "/live", e(ADMIN)(self.live)),
            web.post("/api/ivr/validate", e(ADMIN)(self.validate)),
            web.get("/api/ivr/topics", e(READERS)(self.topics)),
            web.put("/api/ivr/topics/{key}", e(ADMIN)(self.put_topic)),
            web.get("/api/ivr/calendars", e(READERS)(self.calendars)),
            web.put("/api/ivr/calendars/{name}", e(ADMIN)(self.put_calendar)),
            web.get("/api/ivr/caller-lists", e(READERS)(self.callers)),
            web.post("/api/ivr/caller-lists/{list}", e(ADMIN)(self.add_caller)),
            web.delete("/api/ivr/caller-lists/{list}/{number}", e(ADMIN)(self.remove_caller)),
        ]


def _actor(user: User) -> Actor:
    return Actor(user.id, user.login)
