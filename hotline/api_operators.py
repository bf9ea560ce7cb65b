"""Operator actions over HTTP: login to a seat, logout, pause with a reason, unpause, read the state.

``POST /api/operators/{id}/login {"seat": "PJSIP/8001"}``, ``/logout``, ``/pause {"reason": "..."}``,
``/unpause``; ``GET /api/operators/{id}/state``. An operator acts only on itself; a supervisor or
an admin acts on anyone (a supervisor's logout is forced: it also ends a seat that is on a call).
Bad input is a 400 naming the field; an action the state machine refuses is a 409 with its message;
an instance that does not own the node (or has no desk) answers 503. The desk
(``queues.operators.OperatorDesk``) is found under ``OPERATOR_DESK`` in the application.
"""

from __future__ import annotations

import logging

from aiohttp import web

from hotline.api import ApiError, ConfigApi, READ_PEOPLE, _ID, require_self_or
from hotline.auth import User
from queues.config_models import InvalidInput, parse_json_body
from queues.operator_state import OperatorActionError, check_reason
from queues.operators import OperatorDesk

log = logging.getLogger("hotline.api")

OPERATOR_DESK = web.AppKey("operator_desk", OperatorDesk)
SUPERVISORS = READ_PEOPLE          # admin, supervisor: act on any operator
ACTORS = SUPERVISORS + ("operator",)


class OperatorApi:
    def __init__(self, config: ConfigApi) -> None:
        self.config = config

    def desk(self, request: web.Request) -> OperatorDesk:
        desk = request.app.get(OPERATOR_DESK)
        if desk is None:
            raise ApiError(503, "no operator desk runs in this instance")
        return desk

    async def _target(self, request: web.Request, user: User) -> int:
        operator_id = int(request.match_info["id"])
        await require_self_or(self.config.store(request), user, operator_id, SUPERVISORS)
        return operator_id

    async def _run(self, coro) -> web.Response:
        try:
            return web.json_response(await coro)
        except OperatorActionError as exc:   # a DeskError is answered by the endpoint wrapper
            raise ApiError(409, str(exc)) from None

    async def login(self, request: web.Request, user: User) -> web.Response:
        operator_id = await self._target(request, user)
        body = _object(await request.read())
        seat = body.get("seat")
        if not isinstance(seat, str) or not seat.strip():
            raise InvalidInput([{"field": "seat", "message": "a seat interface such as PJSIP/8001 is needed"}])
        return await self._run(self.desk(request).login(operator_id, seat, user.login))

    async def logout(self, request: web.Request, user: User) -> web.Response:
        operator_id = await self._target(request, user)
        force = user.role in SUPERVISORS
        return await self._run(self.desk(request).logout(operator_id, user.login, force=force))

    async def pause(self, request: web.Request, user: User) -> web.Response:
        operator_id = await self._target(request, user)
        body = _object(await request.read())
        try:
            reason = check_reason(body.get("reason"))
        except OperatorActionError as exc:
            raise InvalidInput([{"field": "reason", "message": str(exc)}]) from None
        return await self._run(self.desk(request).pause(operator_id, reason, user.login))

    async def unpause(self, request: web.Request, user: User) -> web.Response:
        operator_id = await self._target(request, user)
        return await self._run(self.desk(request).unpause(operator_id, user.login))

    async def state(self, request: web.Request, user: User) -> web.Response:
        operator_id = await self._target(request, user)
        return await self._run(self.desk(request).state(operator_id))

    def routes(self) -> list[web.RouteDef]:
        e = self.config.endpoint(ACTORS)
        base = f"/api/operators/{_ID}"
        return [
            web.post(f"{base}/login", e(self.login)),
            web.post(f"{base}/logout", e(self.logout)),
            web.post(f"{base}/pause", e(self.pause)),
            web.post(f"{base}/unpause", e(self.unpause)),
            web.get(f"{base}/state", e(self.state)),
        ]


def _object(raw: bytes) -> dict:
    """The JSON object of a body; an empty body is {}."""
    if not raw.strip():
        return {}
    body = parse_json_body(raw)
    if not isinstance(body, dict):
        raise InvalidInput([{"field": "body", "message": "must be a JSON object"}])
    return body
