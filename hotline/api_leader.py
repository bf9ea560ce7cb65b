"""The leader hotline over HTTP (queues.leader.LeaderDesk, found under ``LEADER_DESK``).

* ``POST /api/orders/{number}/prescreen`` (operator): ``{name, number, matter, notes}``;
* ``POST /api/calls/{node}/{linkedid}/prescreen`` (operator): the same, for a call in progress
  (a first-time caller has no order until the call ends; see queues/leader.py);
* ``POST /api/leader-slots/{id}/transfer`` (operator): ``{order_number, seat_channel, mode}`` or
  ``{node, linkedid, seat_channel, mode}`` (a call in progress), mode ``blind`` or ``attended``;
  the channel must be on the seat the operator is logged into;
* ``POST /api/orders/{number}/instruction`` (leader, or a recorder for a leader):
  ``{text, leader_id (recorder only), solved_on_spot, supervised, slot_id}``;
* ``POST /api/leader-slots/{id}/callbacks`` (the slot's leader): ``{order_number}``;
* ``GET /api/leader-slots/{id}/report`` (supervisor, admin, leader).

Bad input is a 400 naming the field, a role that may not is a 403, an unknown slot or order a 404,
a slot that is not live (or an order not pre-screened) a 409.
"""

from __future__ import annotations

import logging

from aiohttp import web

from hotline.api import ApiError, ConfigApi, _ID
from hotline.api_operators import _object
from hotline.auth import User
from queues.leader import CallRef, LeaderDesk

log = logging.getLogger("hotline.api")

LEADER_DESK = web.AppKey("leader_desk", LeaderDesk)
_ORDER = r"{number:12345-[0-9]{8}-[0-9]{6,12}}"


class LeaderApi:
    def __init__(self, config: ConfigApi) -> None:
        self.config = config

    def desk(self, request: web.Request) -> LeaderDesk:
        desk = request.app.get(LEADER_DESK)
        if desk is None:
            raise ApiError(503, "no leader desk runs in this instance")
        return desk

    async def _run(self, coro) -> web.Response:
        return web.json_response(await coro)   # a LeaderError is answered by the endpoint wrapper

    async def _operator(self, request: web.Request, user: User) -> int:
        operator_id = await self.config.store(request).operator_of_user(user.id)
        if operator_id is None:
            raise ApiError(403, "this user is not an operator")
        return operator_id

    async def prescreen(self, request: web.Request, user: User) -> web.Response:
        operator_id = await self._operator(request, user)
        body = _object(await request.read())
        return await self._run(self.desk(request).prescreen(request.match_info["number"], body, operator_id,
                                                            user.login))

    async def prescreen_call(self, request: web.Request, user: User) -> web.Response:
        operator_id = await self._operator(request, user)
        body = _object(await request.read())
        call = CallRef(request.match_info["node"], request.match_info["linkedid"])
        return await self._run(self.desk(request).prescreen_call(call, body, operator_id, user.login))

    async def transfer(self, request: web.Request, user: User) -> web.Response:
        operator_id = await self._operator(request, user)
        body = _object(await request.read())
        call = None
        if "node" in body or "linkedid" in body:
            call = CallRef(body.get("node"), body.get("linkedid"))
        seat = await self.config.pool(request).fetchval(
            "SELECT seat FROM operator_sessions WHERE operator_id = $1", operator_id)
        if seat is None:
            raise ApiError(409, "the operator is not logged into a seat")
        desk = self.desk(request)
        return await self._run(desk.transfer(int(request.match_info["id"]), body.get("order_number"),
                                             body.get("seat_channel"), body.get("mode"), user.login, own_seat=seat,
                                             call=call))

    async def instruction(self, request: web.Request, user: User) -> web.Response:
        body = _object(await request.read())
        pool = self.config.pool(request)
        if user.role == "leader":
            leader_id = await pool.fetchval("SELECT id FROM leaders WHERE user_id = $1", user.id)
            if leader_id is None:
                raise ApiError(403, "this user is not linked to a leader")
            if body.get("leader_id") not in (None, leader_id):
                raise ApiError(403, "a leader enters only its own instructions")
        else:
            leader_id = body.get("leader_id")
            if not isinstance(leader_id, int) or isinstance(leader_id, bool) or leader_id < 1:
                raise ApiError(400, "invalid input", [{"field": "leader_id",
                                                       "message": "the leader the instruction is for is needed"}])
        return await self._run(self.desk(request).instruction(request.match_info["number"], body, leader_id,
                                                              user.login, user.role))

    async def callback(self, request: web.Request, user: User) -> web.Response:
        body = _object(await request.read())
        return await self._run(self.desk(request).callback(int(request.match_info["id"]), body.get("order_number"),
                                                           user.login, leader_user_id=user.id))

    async def report(self, request: web.Request, user: User) -> web.Response:
        return await self._run(self.desk(request).report(int(request.match_info["id"])))

    def routes(self) -> list[web.RouteDef]:
        e = self.config.endpoint
        slot = f"/api/leader-slots/{_ID}"
        return [
            web.post(f"/api/orders/{_ORDER}/prescreen", e(("operator",))(self.prescreen)),
            web.post("/api/calls/{node}/{linkedid}/prescreen", e(("operator",))(self.prescreen_call)),
            web.post(f"{slot}/transfer", e(("operator",))(self.transfer)),
            web.post(f"/api/orders/{_ORDER}/instruction", e(("leader", "recorder"))(self.instruction)),
            web.post(f"{slot}/callbacks", e(("leader",))(self.callback)),
            web.get(f"{slot}/report", e(("supervisor", "admin", "leader"))(self.report)),
        ]
