"""The configuration HTTP API: login, then queues, seats, operators (+ skills), leaders, leader slots.

Every endpoint but ``POST /api/login`` needs ``Authorization: Bearer <token>`` (401 without a
valid one). Roles: ``admin`` edits the configuration; every role reads queues, seats, leaders and
leader slots; operators' records are read by admin and supervisor, and by an operator for itself
only (``require_self_or``: the check every "operator acts on itself" endpoint uses).

Answers are JSON. Bad input is a 400 ``{"error": ..., "fields": [{"field", "message"}]}`` naming
each field; an unknown id is a 404; a duplicate or a row still in use is a 409; a role that may not
do it is a 403. Each change is written with its audit row in one transaction
(``queues.config_store``).
"""

from __future__ import annotations

import functools
import logging
from typing import Awaitable, Callable, Iterable

import asyncpg
from aiohttp import web
from pydantic import BaseModel

from hotline import auth
from hotline.auth import User
from queues.config_models import (
    ROLES, InvalidInput, LeaderIn, LeaderSlotIn, LoginIn, OperatorIn, QueueIn, SeatIn, SkillsIn,
    parse_json_body, validate_model,
)
from queues.config_store import (
    LEADER_SLOTS, LEADERS, OPERATORS, QUEUES, SEATS, ConfigStore, Kind, to_json,
)
from queues.errors import Refused

log = logging.getLogger("hotline.api")

EDITORS = ("admin",)
READ_ALL = ROLES
READ_PEOPLE = ("admin", "supervisor")
_ID = r"{id:[1-9][0-9]{0,17}}"  # a bigint, never one asyncpg cannot send

Handler = Callable[[web.Request, User], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    def __init__(self, status: int, message: str, fields: list[dict[str, str]] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.fields = fields or []


def _answer(status: int, message: str, fields: list[dict[str, str]] | None = None) -> web.Response:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return web.json_response({"error": message, "fields": fields or []}, status=status, headers=headers)


def require_role(user: User, roles: Iterable[str]) -> None:
    """403 unless the user has one of ``roles``."""
    if user.role not in roles:
        raise ApiError(403, f"role {user.role} may not do this")


async def require_self_or(store: ConfigStore, user: User, operator_id: int, roles: Iterable[str]) -> None:
    """403 unless the user has one of ``roles`` or is the operator ``operator_id`` acting on itself."""
    if user.role in roles:
        return
    if user.role == "operator" and await store.operator_of_user(user.id) == operator_id:
        return
    raise ApiError(403, "an operator may act only on itself")


class ConfigApi:
    """The handlers; the Postgres pool is looked up per request under the application's key."""

    def __init__(self, pool_key: web.AppKey[asyncpg.Pool]):
        self._pool_key = pool_key

    def pool(self, request: web.Request) -> asyncpg.Pool:
        return request.app[self._pool_key]

    def store(self, request: web.Request) -> ConfigStore:
        return ConfigStore(self.pool(request))

    def endpoint(self, roles: Iterable[str]) -> Callable[[Handler], Callable[[web.Request], Awaitable[web.StreamResponse]]]:
        """Authenticate the bearer token, check the role, turn errors into JSON answers."""
        allowed = tuple(roles)

        def wrap(handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
            @functools.wraps(handler)
            async def run(request: web.Request) -> web.StreamResponse:
                token = _bearer(request)
                user = None if token is None else await auth.authenticate(self.pool(request), token)
                if user is None:
                    return _answer(401, "a valid bearer token is needed")
                try:
                    require_role(user, allowed)
                    return await handler(request, user)
                except ApiError as exc:
                    return _answer(exc.status, exc.message, exc.fields)
                except InvalidInput as exc:
                    return _answer(400, "invalid input", exc.errors)
                except Refused as exc:   # any desk's or store's refusal (queues/errors.py)
                    return _answer(exc.status, exc.message, exc.fields())

            return run

        return wrap

    # ---- session -----------------------------------------------------------------------------

    async def login(self, request: web.Request) -> web.Response:
        try:
            body = validate_model(LoginIn, parse_json_body(await request.read()))
        except InvalidInput as exc:
            return _answer(400, "invalid input", exc.errors)
        result = await auth.login(self.pool(request), body.login, body.password)
        if result is None:
            # the login is not logged: people type their password into it by mistake
            log.info("api: a login was refused (from %s)", request.remote)
            return _answer(401, "wrong login or password")
        token, expires_at, user = result
        return web.json_response({"token": token, "expires_at": expires_at.isoformat(), "user": user.public()})

    async def logout(self, request: web.Request, user: User) -> web.Response:
        token = _bearer(request)
        if token is not None:
            await auth.revoke(self.pool(request), token)
        return web.Response(status=204)

    async def me(self, request: web.Request, user: User) -> web.Response:
        operator_id = await self.store(request).operator_of_user(user.id)
        return web.json_response({**user.public(), "operator_id": operator_id})

    # ---- generic configuration entities --------------------------------------------------------

    def routes_for(self, path: str, kind: Kind, model: type[BaseModel], readers: Iterable[str]) -> list[web.RouteDef]:
        readers = tuple(readers)

        async def list_all(request: web.Request, user: User) -> web.Response:
            store = self.store(request)
            if kind is OPERATORS and user.role not in READ_PEOPLE:
                rows = await store.list(kind, "WHERE t.user_id = $1", user.id)  # an operator sees itself
            else:
                rows = await store.list(kind)
            return web.json_response(to_json(rows))

        async def get_one(request: web.Request, user: User) -> web.Response:
            store, entity_id = self.store(request), int(request.match_info["id"])
            if kind is OPERATORS:
                await require_self_or(store, user, entity_id, READ_PEOPLE)
            return web.json_response(to_json(await store.get(kind, entity_id)))

        async def create(request: web.Request, user: User) -> web.Response:
            values = validate_model(model, parse_json_body(await request.read())).model_dump()
            row = await self.store(request).create(kind, values, user.actor)
            log.info("api: %s created %s %s", user.login, kind.what, row["id"])
            return web.json_response(to_json(row), status=201, headers={"Location": f"/api/{path}/{row['id']}"})

        async def update(request: web.Request, user: User) -> web.Response:
            changes = parse_json_body(await request.read())
            if not isinstance(changes, dict):
                raise InvalidInput([{"field": "body", "message": "must be a JSON object"}])

            def merge(before: dict) -> dict:
                return validate_model(model, {**to_json(before), **changes}).model_dump()

            entity_id = int(request.match_info["id"])
            row = await self.store(request).update(kind, entity_id, merge, user.actor)
            log.info("api: %s updated %s %s", user.login, kind.what, entity_id)
            return web.json_response(to_json(row))

        async def delete(request: web.Request, user: User) -> web.Response:
            entity_id = int(request.match_info["id"])
            await self.store(request).delete(kind, entity_id, user.actor)
            log.info("api: %s deleted %s %s", user.login, kind.what, entity_id)
            return web.Response(status=204)

        base, one = f"/api/{path}", f"/api/{path}/{_ID}"
        people = ("operator",) if kind is OPERATORS else ()
        return [
            web.get(base, self.endpoint(readers + people)(list_all)),
            web.post(base, self.endpoint(EDITORS)(create)),
            web.get(one, self.endpoint(readers + people)(get_one)),
            web.patch(one, self.endpoint(EDITORS)(update)),
            web.delete(one, self.endpoint(EDITORS)(delete)),
        ]

    # ---- operator skills -----------------------------------------------------------------------

    async def get_skills(self, request: web.Request, user: User) -> web.Response:
        store, operator_id = self.store(request), int(request.match_info["id"])
        await require_self_or(store, user, operator_id, READ_PEOPLE)
        return web.json_response({"skills": await store.skills(operator_id)})

    async def put_skills(self, request: web.Request, user: User) -> web.Response:
        body = validate_model(SkillsIn, parse_json_body(await request.read()))
        operator_id = int(request.match_info["id"])
        skills = await self.store(request).set_skills(operator_id, [s.model_dump() for s in body.skills], user.actor)
        log.info("api: %s set the skills of operator %s", user.login, operator_id)
        return web.json_response({"skills": skills})

    def routes(self) -> list[web.RouteDef]:
        routes = [
            web.post("/api/login", self.login),
            web.post("/api/logout", self.endpoint(ROLES)(self.logout)),
            web.get("/api/me", self.endpoint(ROLES)(self.me)),
            web.get(f"/api/operators/{_ID}/skills", self.endpoint(READ_PEOPLE + ("operator",))(self.get_skills)),
            web.put(f"/api/operators/{_ID}/skills", self.endpoint(EDITORS)(self.put_skills)),
        ]
        routes += self.routes_for("queues", QUEUES, QueueIn, READ_ALL)
        routes += self.routes_for("seats", SEATS, SeatIn, READ_ALL)
        routes += self.routes_for("operators", OPERATORS, OperatorIn, READ_PEOPLE)
        routes += self.routes_for("leaders", LEADERS, LeaderIn, READ_ALL)
        routes += self.routes_for("leader-slots", LEADER_SLOTS, LeaderSlotIn, READ_ALL)
        return routes


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def add_api_routes(app: web.Application, pool_key: web.AppKey[asyncpg.Pool]) -> None:
    """Register the configuration API on ``app``; it uses the pool stored under ``pool_key``. The
    operator actions (hotline/api_operators.py) use the desk stored under its ``OPERATOR_DESK``, the
    leader hotline (hotline/api_leader.py) the one under its ``LEADER_DESK``."""
    from hotline.api_leader import LeaderApi  # it builds on this module (the leader hotline)
    from hotline.api_operators import OperatorApi  # it builds on this module
    from hotline.api_supervision import SupervisionApi  # so does this (POST /api/seats/{id}/spy)
    from hotline.api_ivr import IvrApi  # and the IVR's flows, topics, calendars and caller lists
    from hotline.api_callbacks import setup_routes as callback_routes  # and missed-call callbacks

    config = ConfigApi(pool_key)
    app.router.add_routes(config.routes())
    app.router.add_routes(OperatorApi(config).routes())
    app.router.add_routes(LeaderApi(config).routes())
    app.router.add_routes(SupervisionApi(config).routes())
    app.router.add_routes(IvrApi(config).routes())
    callback_routes(app, config)
