"""The centre's configuration as the HTTP API takes it: one pydantic model per entity, no I/O.

The rules match the CHECKs of ``workorders/migrations/0004_centre_config.sql`` (the schema is the
last word; these name the field first). Models are strict (a number is not a string) and refuse
unknown fields. ``validate_entity`` turns a JSON object into the column values of one entity, or
raises ``InvalidInput`` with one (field, message) pair per problem.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

# ids are Postgres bigint
Id = Annotated[int, Field(ge=1, le=2**63 - 1)]
# one line of text: no control characters (CR, LF, NUL, TAB, ...), which would reach AMI and logs
_LINE = r"^[^\x00-\x1f\x7f]+$"
Line200 = Annotated[str, Field(min_length=1, max_length=200, pattern=_LINE)]
Strategy = Literal["ringall", "leastrecent", "fewestcalls", "random", "rrmemory", "linear", "wrandom", "rrordered"]
Purpose = Literal["general", "business", "dialect", "special", "leader"]
Role = Literal["admin", "supervisor", "operator", "leader", "recorder"]
ROLES: tuple[str, ...] = ("admin", "supervisor", "operator", "leader", "recorder")


class InvalidInput(ValueError):
    """Input that breaks a rule; ``errors`` is a list of {"field", "message"}."""

    def __init__(self, errors: list[dict[str, str]]):
        super().__init__("; ".join(f"{e['field']}: {e['message']}" for e in errors))
        self.errors = errors


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class QueueIn(_Model):
    # app_queue looks queues up without case; [general] is queues.conf's settings section
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
    purpose: Purpose
    strategy: Strategy = "rrmemory"
    service_level_seconds: Annotated[int, Field(ge=1, le=600)] = 15
    max_wait_seconds: Annotated[int, Field(ge=5, le=3600)] = 120
    ring_timeout_seconds: Annotated[int, Field(ge=1, le=300)] = 15
    wrapup_seconds: Annotated[int, Field(ge=0, le=600)] = 5
    category: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")] = "general"
    overflow_queue_id: Id | None = None

    @field_validator("name")
    @classmethod
    def _not_general(cls, v: str) -> str:
        if v.lower() == "general":
            raise ValueError("'general' is reserved in queues.conf")
        return v


class SeatIn(_Model):
    interface: Annotated[str, Field(max_length=80, pattern=r"^[A-Za-z0-9_-]+/[A-Za-z0-9_@./-]+$")]
    # app_queue MemberName: ',' and '|' separate arguments of queue applications
    name: Annotated[str, Field(min_length=1, max_length=80, pattern=r"^[^\x00-\x1f\x7f,|]+$")]
    state_interface: Annotated[str, Field(max_length=80, pattern=r"^[A-Za-z0-9_-]+[/:][A-Za-z0-9_@./:-]+$")] | None = None
    location: Annotated[str, Field(max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$")] = ""


class OperatorIn(_Model):
    name: Line200
    employee_no: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,32}$")]
    user_id: Id | None = None


class SkillIn(_Model):
    queue_id: Id
    penalty: Annotated[int, Field(ge=0, le=100)] = 0


class SkillsIn(_Model):
    skills: Annotated[list[SkillIn], Field(max_length=200)]

    @field_validator("skills")
    @classmethod
    def _one_per_queue(cls, v: list[SkillIn]) -> list[SkillIn]:
        ids = [s.queue_id for s in v]
        if len(set(ids)) != len(ids):
            raise ValueError("a queue may appear only once")
        return v


class LeaderIn(_Model):
    name: Line200
    title: Line200
    jurisdiction: Line200
    user_id: Id | None = None


class LeaderSlotIn(_Model):
    slot_date: dt.date
    start_time: dt.time
    end_time: dt.time
    leader_id: Id
    leader_seat_id: Id
    queue_id: Id
    topic: Annotated[str, Field(min_length=1, max_length=500, pattern=_LINE)]
    prescreen_operator_ids: Annotated[list[Id], Field(max_length=50)] = []
    hard_case_order_ids: Annotated[list[Id], Field(max_length=200)] = []

    @field_validator("start_time", "end_time")
    @classmethod
    def _local(cls, v: dt.time) -> dt.time:
        if v.tzinfo is not None:
            raise ValueError("a local time of day without an offset")
        return v

    @field_validator("end_time")
    @classmethod
    def _after_start(cls, v: dt.time, info: Any) -> dt.time:
        start = info.data.get("start_time")
        if start is not None and v <= start:
            raise ValueError("must be after start_time")
        return v

    @field_validator("prescreen_operator_ids", "hard_case_order_ids")
    @classmethod
    def _unique(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError("an id may appear only once")
        return v

    @field_validator("prescreen_operator_ids")
    @classmethod
    def _a_set(cls, v: list[int]) -> list[int]:
        return sorted(v)  # a set: kept and returned in id order (hard cases keep the order given)


class LoginIn(_Model):
    login: Annotated[str, Field(min_length=1, max_length=64)]
    password: Annotated[str, Field(min_length=1, max_length=1024)]


def field_errors(exc: ValidationError) -> list[dict[str, str]]:
    """pydantic errors as {"field": "a.0.b", "message": ...}, without the input values (secrets)."""
    out = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "body"
        out.append({"field": loc, "message": err["msg"]})
    return out


def validate_model(model: type[BaseModel], data: Any) -> Any:
    """``model`` from a decoded JSON value (dates as ISO strings), or InvalidInput."""
    if not isinstance(data, dict):
        raise InvalidInput([{"field": "body", "message": "must be a JSON object"}])
    try:
        # through JSON mode: ISO dates and times are accepted as JSON gives them, strictly otherwise
        return model.model_validate_json(json.dumps(data, default=_json_default))
    except ValidationError as exc:
        raise InvalidInput(field_errors(exc)) from None


def _json_default(value: Any) -> Any:
    if isinstance(value, (dt.date, dt.time, dt.datetime)):
        return value.isoformat()
    raise TypeError(f"not JSON: {type(value).__name__}")


def parse_json_body(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise InvalidInput([{"field": "body", "message": "not valid JSON"}]) from None
