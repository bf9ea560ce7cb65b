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
from queues.supervision import Supervisor, spy

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
        desk.check_owner()   # NotOwner (503) is answered by the endpoint wrapper, like every refusal
        result = await spy(self.config.pool(request), desk.actions, desk.node_id,   # a SupervisionError: the
                           Supervisor(user.id, user.login), seat_id=seat_id,          # endpoint wrapper answers
                           mode=body.get("mode"), phone=body.get("phone"))
        return web.json_response(result, status=202)

    def routes(self) -> list[web.RouteDef]:
        return [web.post(f"/api/seats/{_ID}/spy", self.config.endpoint(SUPERVISORS)(self.spy))]
