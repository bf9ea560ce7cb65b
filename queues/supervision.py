"""Supervisor listen / whisper / barge on a seat's call: ChanSpy through Originate.

How this works
- The supervisor's phone is originated (``PbxActions.originate``) into ``ChanSpy(<prefix>,<options>)``.
  The prefix is built from the seat's interface as configured in Postgres (table ``seats``), never
  from what the request says: ``PJSIP/8001`` -> ``PJSIP/8001-``. The trailing ``-`` makes the match
  end where Asterisk's channel name goes on with its sequence number (``PJSIP/8001-0000002a``), so
  ``PJSIP/800`` never spies on ``PJSIP/8001``.
- Options (app_chanspy): ``q`` quiet (no beep, no name played to the spyer), ``w`` whisper (the
  supervisor talks to the seat only), ``B`` barge (the supervisor talks to both parties), and always
  ``E``: ChanSpy exits, and the supervisor's channel hangs up, when the spied channel hangs up,
  instead of waiting for the seat's next call.
- The supervisor's phone comes from the request (the users table holds no phone): a ``PJSIP/<endpoint>``
  interface, or any configured seat's interface; never the seat spied on.
- Whether the seat has a call is read from ``CoreShowChannels`` (a live channel whose name starts
  with the prefix); without one nothing is originated (``NoCall``).
- Every attempt that passes validation gets a ``supervision_log`` row, written before any AMI action
  ('requested'), then its result: 'queued' with the Originate's ActionID, 'no_call' or 'failed'.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import asyncpg

from queues.errors import Refused
from telephony.actions import PbxActions
from telephony.ami_client import AmiError

log = logging.getLogger("hotline.supervision")

# mode -> ChanSpy options; E is added to every one
MODES: dict[str, str] = {"listen": "q", "whisper": "qw", "barge": "qB"}
# a supervisor phone given as text: one PJSIP endpoint, no dial-string parts ('/', '@', ',')
_PHONE = re.compile(r"^PJSIP/[A-Za-z0-9_.-]{1,64}$")
RING_TIMEOUT_MS = 30000   # how long the supervisor's phone rings


class SupervisionError(Refused):
    """A request refused; ``status`` is the HTTP answer, ``field`` the input it is about."""
    status = 400


class UnknownSeat(SupervisionError):
    status = 404


class NoCall(SupervisionError):
    status = 409


class PbxUnavailable(SupervisionError):
    status = 503


class PbxRefused(SupervisionError):
    status = 502


@dataclass(frozen=True)
class Supervisor:
    user_id: int | None
    login: str


def check_mode(mode: object) -> str:
    """The ChanSpy options of a mode (always with E); SupervisionError on anything else."""
    if not isinstance(mode, str) or mode not in MODES:
        raise SupervisionError(f"mode must be one of {', '.join(MODES)}", "mode")
    return MODES[mode] + "E"


def check_phone_text(phone: object) -> str:
    """The phone as given, if it may be an interface at all (syntax only; see ``spy``)."""
    if not isinstance(phone, str) or not 1 <= len(phone) <= 80 or not phone.isprintable() \
            or any(c in phone for c in ",|;\"'\\ "):
        raise SupervisionError("phone must be the supervisor's interface, such as PJSIP/8100", "phone")
    return phone


def spy_prefix(interface: str) -> str:
    """``tech/resource-`` of a seat interface: ``PJSIP/8001`` -> ``PJSIP/8001-``;
    ``Local/1001@agents/n`` -> ``Local/1001@agents-`` (channel names drop dial options)."""
    tech, _, rest = interface.partition("/")
    return f"{tech}/{rest.split('/', 1)[0]}-"


def chanspy_data(interface: str, options: str) -> str:
    return f"{spy_prefix(interface)},{options}"


async def spy(pool: asyncpg.Pool, actions: PbxActions, node: str, supervisor: Supervisor, *,
              seat_id: int, mode: object, phone: object) -> dict:
    """Originate ``phone`` into ChanSpy on seat ``seat_id``'s call; the log row id and the
    Originate's ActionID (its OriginateResponse event carries the same one)."""
    options = check_mode(mode)
    phone = check_phone_text(phone)
    async with pool.acquire() as conn:
        seat = await conn.fetchrow("SELECT id, interface FROM seats WHERE id = $1", seat_id)
        if seat is None:
            raise UnknownSeat(f"no seat {seat_id}")
        phone_is_seat = await conn.fetchval(
            "SELECT interface FROM seats WHERE lower(interface) = lower($1)", phone)
    if phone_is_seat is None and not _PHONE.match(phone):
        raise SupervisionError("phone must be a PJSIP endpoint such as PJSIP/8100 or a configured seat", "phone")
    phone = phone_is_seat or phone
    interface = seat["interface"]
    if spy_prefix(phone).casefold() == spy_prefix(interface).casefold():
        raise SupervisionError("phone is the seat spied on", "phone")
    mode = str(mode)
    row_id = await pool.fetchval(
        "INSERT INTO supervision_log (supervisor_user_id, supervisor, seat_id, seat, phone, mode, node)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        supervisor.user_id, supervisor.login, seat["id"], interface, phone, mode, node)
    try:
        if not await _has_call(actions, interface):
            await _finish(pool, row_id, "no_call", None, None)
            raise NoCall(f"seat {interface} has no call")
        resp = await actions.originate(phone, application="ChanSpy", data=chanspy_data(interface, options),
                                       caller_id=f'"{mode} {interface}"', timeout_ms=RING_TIMEOUT_MS)
    except (AmiError, ConnectionError) as exc:   # AmiLinkLost is a ConnectionError
        await _finish(pool, row_id, "failed", None, f"{type(exc).__name__}: {exc}"[:500])
        if isinstance(exc, (ConnectionError, TimeoutError)):   # link down, or no answer (AmiTimeout)
            raise PbxUnavailable(f"the PBX did not take the request: {exc}") from None
        raise PbxRefused(f"the PBX refused: {exc}") from None
    action_id = resp.frame.action_id
    try:
        await _finish(pool, row_id, "queued", action_id, None)
    except (OSError, asyncpg.PostgresError):   # the spy runs: say so, the row stays 'requested'
        log.exception("supervision: log row %s not updated (Originate %s was queued)", row_id, action_id)
    log.info("supervision: %s %s seat %s from %s (Originate %s)", supervisor.login, mode, interface, phone, action_id)
    return {"id": row_id, "seat_id": seat["id"], "seat": interface, "phone": phone, "mode": mode,
            "action_id": action_id, "result": "queued"}


async def _has_call(actions: PbxActions, interface: str) -> bool:
    prefix = spy_prefix(interface).casefold()
    channels = await actions.core_show_channels()
    return any(item.event == "CoreShowChannel" and (item.get("Channel") or "").casefold().startswith(prefix)
               for item in channels.items)


async def _finish(pool: asyncpg.Pool, row_id: int, result: str, action_id: str | None, detail: str | None) -> None:
    await pool.execute("UPDATE supervision_log SET result = $2, action_id = $3, detail = $4 WHERE id = $1",
                       row_id, result, action_id, detail)
