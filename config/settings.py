"""Typed settings: environment over a TOML file over defaults.

Environment variables use the prefix ``HOTLINE_`` and ``__`` for nesting, e.g.
``HOTLINE_AMI__HOST``, ``HOTLINE_AMI__SECRET``, ``HOTLINE_DATABASE_URL``. The TOML file is named by
``--config`` or ``HOTLINE_CONFIG``. Secrets (AMI secret, database URL with its password) are
``SecretStr``: they print as ``**********`` and never reach a log line. A secret may also come from
a file (``HOTLINE_AMI__SECRET_FILE``), as container secrets do.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any, Iterable, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError

ENV_PREFIX = "HOTLINE_"
_NAME = re.compile(r"^[A-Za-z0-9_\-]+$")
# A work-order category code; it is also set by the generated dialplan (Set(HOTLINE_CATEGORY=...)).
_CATEGORY = re.compile(r"^[A-Za-z0-9_.\-]+$")
# An AMI user name: a manager.conf section and the Username header of the Login action.
_AMI_USER = re.compile(r"^[A-Za-z0-9_.@\-]+$")
_INTERFACE = re.compile(r"^[A-Za-z0-9_\-]+/[A-Za-z0-9_\-@./]+$")
_STATE_INTERFACE = re.compile(r"^[A-Za-z0-9_\-]+[/:][A-Za-z0-9_\-@./:]+$")  # PJSIP/8001, Custom:seat1001
# A Dial() destination (TECH/resource, several joined by '&'), e.g. PJSIP/110@hotline-trunk: it goes
# into the generated dialplan's Dial(), so nothing that ends the argument or the line, and no '$'.
DIAL_TARGET = re.compile(r"^[A-Za-z0-9_\-]+/[A-Za-z0-9_\-@.+#*:/]+(?:&[A-Za-z0-9_\-]+/[A-Za-z0-9_\-@.+#*:/]+)*$")


class ConfigError(Exception):
    """A configuration file or variable that cannot be used; the message names the key."""


class AmiSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(5038, ge=1, le=65535)
    username: str = "hotline"
    secret: SecretStr | None = None
    secret_file: Path | None = None
    action_timeout: float = Field(10.0, gt=0)
    connect_timeout: float = Field(5.0, gt=0)

    @field_validator("username")
    @classmethod
    def _username(cls, v: str) -> str:
        if not _AMI_USER.match(v) or v.lower() == "general":
            raise ValueError("ami.username may hold only letters, digits, '_', '.', '@' and '-' and is not 'general'")
        return v

    @model_validator(mode="after")
    def _secret_from_file(self) -> "AmiSettings":
        if self.secret is not None and not self.secret.get_secret_value():
            self.secret = None  # an empty HOTLINE_AMI__SECRET is no secret
        if self.secret is None and self.secret_file is not None:
            try:
                text = self.secret_file.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                reason = getattr(exc, "strerror", None) or "not UTF-8 text"
                raise ValueError(f"ami.secret_file cannot be read: {reason}") from None
            if not text:
                raise ValueError("ami.secret_file is empty")
            self.secret = SecretStr(text)
        return self


class AgiSettings(BaseModel):
    listen_host: str = "127.0.0.1"
    listen_port: int = Field(4573, ge=0, le=65535)
    # The address Asterisk uses to reach this service (goes into the generated dialplan).
    advertise_host: str = "127.0.0.1"
    max_sessions: int = Field(500, ge=1)
    session_timeout: float = Field(120.0, gt=0)
    command_timeout: float = Field(30.0, gt=0)


class QueueConfig(BaseModel):
    name: str
    purpose: Literal["general", "business", "dialect", "special", "leader"] = "general"
    strategy: Literal["ringall", "leastrecent", "fewestcalls", "random", "rrmemory", "linear", "wrandom", "rrordered"] = "rrmemory"
    ring_timeout: int = Field(15, ge=1, le=300)   # seconds a seat rings before the next one is tried
    max_wait: int = Field(120, ge=5, le=3600)     # seconds a caller waits before Queue() gives up
    wrapup: int = Field(5, ge=0, le=600)
    service_level: int = Field(15, ge=1, le=600)
    category: str = "general"                     # work-order category of calls routed here
    # Another configured queue: a caller still waiting when max_wait runs out goes on to it (with
    # its max wait and category). No loops; the generated dialplan bounds the hops anyway.
    overflow: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError("queue name may hold only letters, digits, '_' and '-'")
        if v.lower() == "general":
            raise ValueError("queue name 'general' is reserved in queues.conf")
        return v

    @field_validator("category")
    @classmethod
    def _category(cls, v: str) -> str:
        if not _CATEGORY.match(v):
            raise ValueError("category may hold only letters, digits, '_', '.' and '-'")
        return v

    @field_validator("overflow")
    @classmethod
    def _overflow(cls, v: str | None) -> str | None:
        if v is not None and not _NAME.match(v):
            raise ValueError("overflow names a queue: letters, digits, '_' and '-'")
        return v


class SeatConfig(BaseModel):
    interface: str                          # e.g. PJSIP/8001
    name: str                               # app_queue MemberName, e.g. "Seat 8001"
    state_interface: str | None = None      # device state to follow; defaults to the interface
    queues: list[str] = Field(default_factory=lambda: ["hotline-general"])
    penalty: int = Field(0, ge=0, le=100)

    @field_validator("interface")
    @classmethod
    def _iface(cls, v: str) -> str:
        if not _INTERFACE.match(v):
            raise ValueError("interface must look like TECH/resource, e.g. PJSIP/8001")
        return v

    @field_validator("state_interface")
    @classmethod
    def _state_iface(cls, v: str | None) -> str | None:
        if v is not None and not _STATE_INTERFACE.match(v):
            raise ValueError("state_interface must look like PJSIP/8001 or Custom:seat8001")
        return v

    @field_validator("name")
    @classmethod
    def _seat_name(cls, v: str) -> str:
        if not v or any(c in v for c in "\r\n\x00,|"):
            raise ValueError("seat name must be non-empty and hold no CR, LF, NUL, ',' or '|'")
        return v


# Keys of the fixed menu the IVR had before flows (issue 5): a file that still sets them is told
# where that configuration lives now rather than having it silently ignored.
_RETIRED_IVR_KEYS = ("greeting", "menu_prompt", "digit_timeout_ms", "routes")


class IvrMenuSettings(BaseModel):
    """The dialplan's side of the IVR. The IVR itself is a flow kept in Postgres (ivr/flow.py;
    ``POST /api/ivr/flows/main/versions``), the shipped ``ivr/flows/default.toml`` until one is saved."""

    model_config = ConfigDict(extra="forbid")

    # the queue the dialplan routes to when the IVR failed or named no configured queue
    default_queue: str = "hotline-general"
    # The emergency trunk: the generated dialplan dials 110 here (recorded) when the IVR sets
    # HOTLINE_TRANSFER=110, and puts the caller in the queue if 110 does not answer within
    # emergency_ring_seconds.
    emergency_dial: str = "PJSIP/110@hotline-trunk"
    emergency_ring_seconds: int = Field(30, ge=5, le=120)

    @model_validator(mode="before")
    @classmethod
    def _retired(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in _RETIRED_IVR_KEYS:
                if key in data:
                    raise ValueError(f"ivr.{key} is no longer read: the IVR is a flow, edited with "
                                     "POST /api/ivr/flows/main/versions (see ivr/flows/default.toml)")
        return data

    @field_validator("emergency_dial")
    @classmethod
    def _emergency_dial(cls, v: str) -> str:
        if len(v) > 200 or not DIAL_TARGET.fullmatch(v):
            raise ValueError("emergency_dial is a Dial() destination like PJSIP/110@hotline-trunk "
                             "(letters, digits and _ - @ . + # * : / only; several joined by '&')")
        return v


class CallbackSettings(BaseModel):
    """Missed-call callbacks (queues/callbacks.py)."""

    model_config = ConfigDict(extra="forbid")

    # a caller who hung up in the IVR is called back only after this long in it
    ivr_hangup_after_seconds: float = Field(10.0, ge=0, le=600)
    max_attempts: int = Field(3, ge=1, le=20)
    retry_spacing_seconds: float = Field(600.0, ge=10, le=86400)


class HttpSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)


class NodeSettings(BaseModel):
    """One Asterisk node: its id (calls are unique on node + linkedid) and its AMI account."""

    model_config = ConfigDict(extra="forbid")

    id: str
    ami: AmiSettings = Field(default_factory=AmiSettings)

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError("node id may hold only letters, digits, '_' and '-'")
        return v


def overflow_chain(queues: Iterable[QueueConfig], start: str) -> tuple[list[str], str | None]:
    """Follow the overflows from queue ``start``: the queues passed, and the queue where the walk
    came back on itself (None: the chain ended)."""
    overflow = {q.name: q.overflow for q in queues}
    chain, nxt = [start], overflow.get(start)
    while nxt is not None and nxt not in chain:
        chain.append(nxt)
        nxt = overflow.get(nxt)
    return chain, nxt


def _default_queues() -> list[QueueConfig]:
    return [
        QueueConfig(name="hotline-general", purpose="general", category="general"),
        QueueConfig(name="hotline-business", purpose="business", category="business_environment"),
        # dialect seats (方言专席); a caller nobody takes within 60 s goes on to the general queue
        QueueConfig(name="hotline-dialect", purpose="dialect", category="general", max_wait=60,
                    overflow="hotline-general"),
    ]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid")

    node_id: str = "pbx1"
    database_url: SecretStr = SecretStr("postgresql://postgres@127.0.0.1:5432/hotline")
    redis_url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    recordings_dir: Path = Path("/var/spool/asterisk/monitor")
    min_recording_seconds: float = Field(1.0, ge=0)
    repeat_window_days: int = Field(7, ge=1, le=90)
    timezone: str = "Asia/Shanghai"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    ami: AmiSettings = Field(default_factory=AmiSettings)
    agi: AgiSettings = Field(default_factory=AgiSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    ivr: IvrMenuSettings = Field(default_factory=IvrMenuSettings)
    callbacks: CallbackSettings = Field(default_factory=CallbackSettings)
    queues: list[QueueConfig] = Field(default_factory=_default_queues)
    seats: list[SeatConfig] = Field(default_factory=list)
    # Several Asterisk nodes: each listed node's AMI stream is consumed by one service instance at
    # a time (a Redis lease of lease_ttl seconds). Empty: the one node ``node_id`` on ``ami``.
    nodes: list[NodeSettings] = Field(default_factory=list)
    lease_ttl: float = Field(6.0, ge=1.0, le=300.0)  # takeover within lease_ttl * 4/3: 8 s

    @field_validator("node_id")
    @classmethod
    def _node(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError("node_id may hold only letters, digits, '_' and '-'")
        return v

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r} (give an IANA name such as Asia/Shanghai)") from None
        return v

    @model_validator(mode="after")
    def _references(self) -> "Settings":
        names = {q.name for q in self.queues}
        seen: dict[str, int] = {}
        for i, q in enumerate(self.queues):
            # app_queue looks queue names up ignoring letter case.
            j = seen.setdefault(q.name.lower(), i)
            if j != i:
                raise ValueError(f"queues[{i}].name {q.name!r} is already used by queues[{j}] (letter case does not count)")
        self._check_overflows(names)
        for i, seat in enumerate(self.seats):
            for q in seat.queues:
                if q not in names:
                    raise ValueError(f"seats[{i}].queues names unknown queue {q!r}")
        if self.ivr.default_queue not in names:
            raise ValueError(f"ivr.default_queue names unknown queue {self.ivr.default_queue!r}")
        ids: dict[str, int] = {}
        for i, node in enumerate(self.nodes):
            j = ids.setdefault(node.id, i)
            if j != i:
                raise ValueError(f"nodes[{i}].id {node.id!r} is already used by nodes[{j}]")
        return self

    def _check_overflows(self, names: set[str]) -> None:
        """Each overflow names another configured queue, and following them never comes back."""
        for i, q in enumerate(self.queues):
            if q.overflow is None:
                continue
            if q.overflow not in names:
                raise ValueError(f"queues[{i}].overflow names unknown queue {q.overflow!r}")
            if q.overflow == q.name:
                raise ValueError(f"queues[{i}].overflow names the queue itself ({q.name!r})")
            chain, back = overflow_chain(self.queues, q.name)
            if back == q.name:
                raise ValueError(f"queues[{i}].overflow makes an overflow loop: {' -> '.join([*chain, back])}")

    def pbx_nodes(self) -> list[NodeSettings]:
        """The Asterisk nodes this service follows: ``nodes``, or the single ``node_id`` on ``ami``."""
        return list(self.nodes) or [NodeSettings(id=self.node_id, ami=self.ami)]

    def queue(self, name: str) -> QueueConfig | None:
        return next((q for q in self.queues if q.name == name), None)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # init holds the TOML file's content; environment wins over it.
        return (env_settings, init_settings)


def _env_name(loc: tuple[Any, ...]) -> str | None:
    """The HOTLINE_* variable set in the environment that gave the value at ``loc``, if any."""
    env = {k.upper() for k in os.environ}
    parts = [str(p) for p in loc]
    while parts:
        name = ENV_PREFIX + "__".join(parts).upper()
        if name in env:
            return name
        parts.pop()
    return None


def _format_errors(exc: ValidationError, source: str) -> str:
    # Only the location and pydantic's message: never the input, which may be a secret.
    lines = [f"invalid configuration ({source}):"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        env = _env_name(err["loc"])
        lines.append(f"  {loc}: {err['msg']}" + (f" (from ${env})" if env else ""))
    return "\n".join(lines)


def load_settings(path: str | os.PathLike | None = None, **overrides: Any) -> Settings:
    """Load settings: environment over the TOML file (``path`` or $HOTLINE_CONFIG) over defaults.

    Raises ConfigError with a message naming the file, line or key at fault.
    """
    path = path or os.environ.get("HOTLINE_CONFIG")
    data: dict[str, Any] = {}
    source = "environment and defaults"
    if path:
        source = str(path)
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"configuration file not found: {path}") from None
        except OSError as exc:
            raise ConfigError(f"configuration file {path} cannot be read: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"configuration file {path} is not UTF-8 text") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"configuration file {path} is not valid TOML: {exc}") from None
        # BaseSettings takes _env_file, _secrets_dir, ... as keyword arguments: a file must not.
        private = sorted(k for k in data if k.startswith("_"))
        if private:
            raise ConfigError(f"invalid configuration ({source}):\n  {private[0]}: Extra inputs are not permitted")
    data.update(overrides)
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, source)) from None
    except SettingsError as exc:
        # e.g. HOTLINE_QUEUES that is not JSON; the message names the field, never the value.
        raise ConfigError(
            f"invalid configuration ({source}): {exc}; a table or list given in the environment must be JSON"
        ) from None
