"""Missed-call callbacks over HTTP (queues.callbacks.CallbackDesk, found under ``CALLBACK_DESK``).

* ``GET /api/callbacks?status=pending|dialing|connected|failed|cancelled&limit=N`` (supervisor,
  admin): the tasks, newest first (up to ``limit``, default 500, at most 5000), each with its
  order number, reason, status, attempts and the last attempt's outcome;
* ``GET /api/callbacks/{id}/attempts`` (supervisor, admin): one task's attempts;
* ``POST /api/callbacks/{id}/cancel`` (supervisor, admin): ``{"reason": "..."}`` optional; an
  open (pending or dialing) task is cancelled (a callback ringing goes on, its outcome is still
  recorded but no longer moves the task).

Bad input is a 400 naming the field, another role a 403, an unknown task a 404, a task that is no
longer open a 409, no callback desk in this instance a 503.
"""

from __future__ import annotations

from aiohttp import web

from hotline.api import ApiError, ConfigApi, READ_PEOPLE, _ID
from hotline.api_operators import _object
from hotline.auth import User
from queues.callbacks import CallbackDesk, CallbackError

CALLBACK_DESK = web.AppKey("callback_desk", CallbackDesk)
SUPERVISORS = READ_PEOPLE   # admin, supervisor
MAX_LIMIT = 5000


class CallbacksApi:
    def __init__(self, config: ConfigApi) -> None:
        self.config = config

    def desk(self, request: web.Request) -> CallbackDesk:
        desk = request.app.get(CALLBACK_DESK)
        if desk is None:
            raise ApiError(503, "no callback desk runs in this instance")
        return desk

    async def _run(self, coro) -> web.Response:
        return web.json_response(await coro)   # a CallbackError is answered by the endpoint wrapper

    async def list(self, request: web.Request, user: User) -> web.Response:
        status = request.query.get("status") or None
        raw = request.query.get("limit", "500")
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
            raise ApiError(400, "invalid input", [{"field": "limit", "message": f"must be 1 to {MAX_LIMIT}"}])

        async def tasks() -> dict:
            return {"tasks": await self.desk(request).list_tasks(status, int(raw))}
        return await self._run(tasks())

    async def attempts(self, request: web.Request, user: User) -> web.Response:
        async def attempts() -> dict:
            task_id = int(request.match_info["id"])
            desk = self.desk(request)
            if not await self.config.pool(request).fetchval("SELECT true FROM callback_tasks WHERE id = $1", task_id):
                raise CallbackError(404, f"no callback task {task_id}")
            return {"task_id": task_id, "attempts": await desk.attempts(task_id)}
        return await self._run(attempts())

    async def cancel(self, request: web.Request, user: User) -> web.Response:
        body = _object(await request.read())
        reason = body.get("reason")
        if reason is not None and not isinstance(reason, str):
            raise ApiError(400, "invalid input", [{"field": "reason", "message": "must be a string"}])
        return await self._run(self.desk(request).cancel(int(request.match_info["id"]), user.login, reason))

    def routes(self) -> list[web.RouteDef]:
        e = self.config.endpoint
        return [
            web.get("/api/callbacks", e(SUPERVISORS)(self.list)),
            web.get(f"/api/callbacks/{_ID}/attempts", e(SUPERVISORS)(self.attempts)),
            web.post(f"/api/callbacks/{_ID}/cancel", e(SUPERVISORS)(self.cancel)),
        ]


def setup_routes(app: web.Application, config: ConfigApi) -> None:
    """Register the callback routes on ``app`` (the configuration API's ``config`` authenticates)."""
    app.router.add_routes(CallbacksApi(config).routes())
