"""Supervisor listen / whisper / barge over HTTP (queues/supervision.py does the work).

``POST /api/seats/{id}/spy {"mode": "listen" | "whisper" | "barge", "phone": "PJSIP/8100"}``:
supervisor and admin only (403 otherwise). 202 ``{"id", "seat_id", "seat", "phone", "mode",
"action_id", "result": "queued"}`` once Asterisk queued the Originate of the supervisor's phone
(it rings; the spy starts when it is answered). Bad mode or phone: 400 naming the field, before
anything is sent to Asterisk; unknown seat: 404; the seat has no call: 409; no desk in this
instance, or it does not own the node, or the AMI link is down: 503; Asterisk refused: 502.
Force pause and force logout of an operator are the operator actions of hotline/api_operators.py.
"""

from __future__ import annotations

from aiohttp import web

from hotline.api import ApiError, ConfigApi, READ_PEOPLE, _ID
from hotline.api_operators import OPERATOR_DESK, _object
from hotline.auth import User
from queues.operators import NotOwner
from queues.supervision import SupervisionError, Supervisor, spy

SUPERVISORS = READ_PEOPLE   # admin, supervisor


class SupervisionApi:
    def __init__(self, config: ConfigApi) -> None:
        self.config = config

    async def spy(self, request: web.Request, user: User) -> web.Response:
        seat_id = int(request.match_info["id"])
        body = _object(await request.read())
        desk = request.app.get(OPERATOR_DESK)
        if desk is None:
            raise ApiError(503, "no PBX node runs in this instance")
        try:
            desk.check_owner()
        except NotOwner as exc:
            raise ApiError(exc.status, str(exc)) from None
        try:
            result = await spy(self.config.pool(request), desk.actions, desk.node_id,
                               Supervisor(user.id, user.login), seat_id=seat_id,
                               mode=body.get("mode"), phone=body.get("phone"))
        except SupervisionError as exc:
            fields = [{"field": exc.field, "message": exc.message}] if exc.field else []
            raise ApiError(exc.status, exc.message, fields) from None
        return web.json_response(result, status=202)

    def routes(self) -> list[web.RouteDef]:
        return [web.post(f"/api/seats/{_ID}/spy", self.config.endpoint(SUPERVISORS)(self.spy))]
