"""Asterisk 22 configuration snippets for this service: dialplan, queues.conf, manager.conf.

Pure functions, no I/O: ``hotline asterisk-config`` prints :func:`render_all`. A site adds the
three snippets to a real Asterisk 22 and 12345 calls run through this service:

* ``extensions.conf``: ``[hotline-inbound]`` answers 12345, clears the variables the service sets,
  runs the IVR over FastAGI, then routes *whatever happened*: an IVR that failed, timed out, is
  down or set an unknown queue still ends in the default queue, with that queue's work-order
  category (never dead air, never a hang-up because the service is away). The queue name is
  whitelisted against the configured queues before it is used, the timeout and priority are
  checked to be small whole numbers, and no caller-controlled value (caller ID, DTMF) is ever
  placed inside an application argument. When ``Queue()`` gives up (``QUEUESTATUS=TIMEOUT``) on a
  queue that has an ``overflow`` queue, the caller goes on to it with its max wait and category
  (``HOTLINE_QUEUE`` names it, so the service sees the hop), counted in ``HOTLINE_OVERFLOWS``:
  at most one hop per queue that has an overflow, so even a loop the settings missed ends.
  The IVR may end in two more ways, each honoured only for its one literal value: with
  ``HOTLINE_CALLBACK_REQUESTED=1`` (a callback offer accepted, goodbye said) the call is hung up
  without a queue; with ``HOTLINE_TRANSFER=110`` (a caller in danger, advice played) it dials
  ``ivr.emergency_dial`` (recorded like a queue call), and if 110 does not answer the caller
  goes on to the queue as if the IVR had only named one (never dead air). ``Queue()`` runs with
  option ``c``: when the seat hangs up the caller goes on in the dialplan with
  ``QUEUESTATUS=CONTINUE`` (a caller who hangs up ends the dialplan there) to
  ``[hotline-survey]``, the satisfaction survey over FastAGI (``agi://.../survey``, which sets
  ``HOTLINE_SURVEY``), then is hung up. A caller transferred into ``[hotline-transfer]`` gets the
  survey the same way.
* ``queues.conf``: one section per configured queue, no static members: the service adds the
  seats at start through AMI ``QueueAdd`` (MemberName, StateInterface) and owns pause state.
* ``manager.conf``: the AMI user of the service with the least read/write classes it needs.
  The secret is never printed: the user section carries a placeholder to replace with the value
  of ``HOTLINE_AMI__SECRET``.

Asterisk facts this relies on (checked against the Asterisk 22 documentation and source):
``Queue(queuename,options,URL,announceoverride,timeout,AGI,gosub,rule,position)`` (timeout is
the 5th argument; ``timeoutpriority = app`` lets it bound the last ring); app_queue reads
``QUEUE_PRIO`` as an integer, higher first; ``joinempty = yes`` / ``leavewhenempty = no`` mean
"no restriction" (a caller always joins and stays); ``AGI()`` that cannot reach its FastAGI
server (2 s connect limit) sets ``AGISTATUS=FAILURE`` and the dialplan continues; MixMonitor
option ``b`` saves audio only while bridged and sets ``MIXMONITOR_FILENAME``; ``Queue()``
option ``c`` ("continue in the dialplan if the callee hangs up") makes app_queue's queue_exec
return 0 with ``QUEUESTATUS=CONTINUE`` for a call a member answered (qe.handled) once the bridge
ends, where without it the caller is hung up; ``Dial()`` sets ``DIALSTATUS`` (ANSWER, NOANSWER,
BUSY, CONGESTION, CHANUNAVAIL, ...) and goes on in the dialplan when the callee hangs up; AMI write
permission is "any of the action's classes" (QueueAdd/Remove/Pause/Penalty: agent; Originate:
originate; Getvar/Setvar/Hangup/Redirect: call; CoreShowChannels/CoreStatus: system or reporting;
QueueStatus/Ping: none); ``FullyBooted`` is a ``system`` event; VarSet/Newexten are ``dialplan``;
Queue*/Agent* events are ``agent``; Newchannel/Hangup/Bridge*/MixMonitorStart/CEL are ``call``;
Cdr is ``cdr``. An IPv4 ``deny`` rule does not match IPv6 clients, hence ``deny = ::/0`` too.

Everything produced is plain ``[section]`` / ``key = value`` / ``exten =>`` text without
templates, ``#include`` or ``;`` inside values, so pyst2's ``asterisk.config.Config`` reads it.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import PurePosixPath
from typing import Iterable, Sequence

from config.settings import DIAL_TARGET, QueueConfig, Settings, overflow_chain
from telephony.model import EMERGENCY_NUMBER

HOTLINE_NUMBER = "12345"
INBOUND_CONTEXT = "hotline-inbound"
HANGUP_CONTEXT = "hotline-hangup"
SURVEY_CONTEXT = "hotline-survey"
AMI_SECRET_PLACEHOLDER = "CHANGE-ME"

# queues.conf [general] and manager.conf [general] are not queues / users.
_RESERVED_SECTIONS = frozenset({"general"})

_NAME = re.compile(r"^[A-Za-z0-9_\-]+$")
_AMI_USER = re.compile(r"^[A-Za-z0-9_.@\-]+$")
_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?)*$")
_INTERFACE = re.compile(r"^[A-Za-z0-9_\-]+/[A-Za-z0-9_\-@./]+$")
# A state interface may also be a custom device state or a hint: Custom:seat8001, hint:8001@seats.
_STATE_INTERFACE = re.compile(r"^[A-Za-z0-9_\-]+[/:][A-Za-z0-9_\-@./:]+$")
_PATH = re.compile(r"^/[A-Za-z0-9_./\-]*$")
_CATEGORY = re.compile(r"^[A-Za-z0-9_.\-]+$")
# app_queue's strategies (queues.conf ``strategy``) in Asterisk 22.
_STRATEGIES = frozenset({"ringall", "leastrecent", "fewestcalls", "random", "rrmemory", "rrordered", "linear", "wrandom"})
_DID = re.compile(r"^(?:[0-9*#+]+|_[0-9XZNxzn.!*#+]+)$")
# A Dial() destination, several joined by '&' (as config.settings checks emergency_dial).

# Characters that would end a line, start a comment or a section in a .conf file.
_BREAKING = {"\r": "CR", "\n": "LF", "\x00": "NUL", ";": "';'", "[": "'['"}

# Retry pause (seconds) after every member was tried, as in the captures the service was
# validated against; app_queue's default is 5 s of extra hold for the caller on every round.
QUEUE_RETRY = 1
# A Python client that is briefly busy (GC, a slow database write) must not be dropped by
# Asterisk during an event burst; the default write timeout is 100 ms.
AMI_WRITE_TIMEOUT_MS = 1000

AMI_READ_CLASSES = ("system", "call", "agent", "dialplan", "cdr")
AMI_WRITE_CLASSES = ("call", "agent", "originate", "reporting")


# --------------------------------------------------------------------------- validation


def _safe(setting: str, value: object) -> str:
    """The value as text, or ValueError naming the setting if it would break a .conf file."""
    text = str(value)
    for ch, label in _BREAKING.items():
        if ch in text:
            raise ValueError(f"{setting}: {label} in {text!r} would break the generated Asterisk configuration")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise ValueError(f"{setting}: control character in {text!r} would break the generated Asterisk configuration")
    return text


def _name(setting: str, value: str) -> str:
    _safe(setting, value)
    if not _NAME.match(value):
        raise ValueError(f"{setting}: {value!r} may hold only letters, digits, '_' and '-'")
    return value


def _queue_name(index: int, queue: QueueConfig) -> str:
    setting = f"queues[{index}].name"
    name = _name(setting, queue.name)
    if name.lower() in _RESERVED_SECTIONS:
        raise ValueError(f"{setting}: {name!r} is reserved in queues.conf; pick another queue name")
    return name


def _queue_names(settings: Settings) -> list[str]:
    if not settings.queues:
        raise ValueError("queues: at least one queue is needed")
    names = [_queue_name(i, q) for i, q in enumerate(settings.queues)]
    if len({n.lower() for n in names}) != len(names):
        # app_queue looks queues up case-insensitively.
        raise ValueError("queues: two queue names differ only in letter case")
    return names


def _default_queue(settings: Settings) -> QueueConfig:
    name = _name("ivr.default_queue", settings.ivr.default_queue)
    queue = settings.queue(name)
    if queue is None:
        raise ValueError(f"ivr.default_queue: {name!r} is not one of the configured queues")
    return queue


def _category(setting: str, value: str) -> str:
    _safe(setting, value)
    if not _CATEGORY.match(value):
        raise ValueError(f"{setting}: {value!r} may hold only letters, digits, '_', '.' and '-'")
    return value


def _strategy(setting: str, value: str) -> str:
    _safe(setting, value)
    if value not in _STRATEGIES:
        raise ValueError(f"{setting}: {value!r} is not an app_queue strategy ({', '.join(sorted(_STRATEGIES))})")
    return value


def _whole(setting: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{setting}: {value!r} must be a whole number from {low} to {high}")
    return value


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _host(setting: str, value: str) -> str:
    _safe(setting, value)
    if _ip(value) is None and not _HOSTNAME.match(value):
        raise ValueError(f"{setting}: {value!r} is neither an IP address nor a host name")
    return value


def _advertise_host(settings: Settings) -> str:
    host = _host("agi.advertise_host", settings.agi.advertise_host)
    ip = _ip(host)
    if ip is not None and ip.is_unspecified:
        raise ValueError(
            f"agi.advertise_host: {host!r} is a wildcard; give the address Asterisk connects to for FastAGI"
        )
    return host


def _agi_url(settings: Settings, script: str = "ivr") -> str:
    host = _advertise_host(settings)
    port = _whole("agi.listen_port", settings.agi.listen_port, 1, 65535)
    ip = _ip(host)
    netloc = f"[{host}]" if ip is not None and ip.version == 6 else host
    return f"agi://{netloc}:{port}/{script}"


def _emergency_dial(settings: Settings) -> tuple[str, int]:
    """The 110 Dial() destination and its ring time, checked again (settings may come unvalidated):
    nothing that ends the Dial() argument or the line (',', ')', ';', CR, LF), and no '$'."""
    target = _safe("ivr.emergency_dial", settings.ivr.emergency_dial)
    if len(target) > 200 or not DIAL_TARGET.fullmatch(target):
        raise ValueError(f"ivr.emergency_dial: {target!r} must be a Dial() destination like "
                         "PJSIP/110@hotline-trunk (letters, digits and _ - @ . + # * : / only)")
    return target, _whole("ivr.emergency_ring_seconds", settings.ivr.emergency_ring_seconds, 5, 120)


def _survey_step() -> str:
    """After Queue(): a seat answered and hung up (option c) -> the survey."""
    return (f' same => n,GotoIf($["${{REGEX("^CONTINUE$" ${{QUEUESTATUS}})}}" = "1"]'
            f"?{SURVEY_CONTEXT},s,1)")


def _recordings_dir(settings: Settings) -> str:
    text = _safe("recordings_dir", settings.recordings_dir)
    if not _PATH.match(text):
        raise ValueError(
            f"recordings_dir: {text!r} must be an absolute path of letters, digits, '_', '-', '.' and '/' "
            "(it goes into a MixMonitor() argument)"
        )
    path = PurePosixPath(text)
    if ".." in path.parts:
        raise ValueError(f"recordings_dir: {text!r} must not contain '..'")
    return str(path)


def _check_seats(settings: Settings) -> None:
    for i, seat in enumerate(settings.seats):
        for field in ("interface", "state_interface"):
            value = getattr(seat, field)
            if value is None:
                continue
            _safe(f"seats[{i}].{field}", value)
            if not (_INTERFACE if field == "interface" else _STATE_INTERFACE).match(value):
                raise ValueError(f"seats[{i}].{field}: {value!r} must look like TECH/resource, e.g. PJSIP/8001")
        _safe(f"seats[{i}].name", seat.name)
        for j, q in enumerate(seat.queues):
            _name(f"seats[{i}].queues[{j}]", q)


def _overflows(settings: Settings, names: Sequence[str]) -> list[tuple[str, str, int, str]]:
    """(queue, its overflow queue, that queue's max wait, its category) for each queue that has one.

    Checked again here (the generator also takes settings built without validation): the target is
    a configured queue, not the queue itself, and no chain of overflows comes back to its start.
    """
    by_name = {q.name: (i, q) for i, q in enumerate(settings.queues)}
    out = []
    for i, q in enumerate(settings.queues):
        if q.overflow is None:
            continue
        target = _name(f"queues[{i}].overflow", q.overflow)
        if target not in names:
            raise ValueError(f"queues[{i}].overflow: {target!r} is not one of the configured queues")
        seen, back = overflow_chain(settings.queues, q.name)
        if back is not None:
            raise ValueError(f"queues[{i}].overflow: {' -> '.join([*seen, back])} is a loop")
        j, dst = by_name[q.overflow]
        out.append((q.name, dst.name, _whole(f"queues[{j}].max_wait", dst.max_wait, 1, 9999),
                    _category(f"queues[{j}].category", dst.category)))
    return out


def _overflow_checks(bound: int) -> list[str]:
    """After Queue(): on to the overflow only after a timeout, and only ``bound`` hops in all
    (without loops at most one per queue that has an overflow)."""
    return [' same => n,GotoIf($["${QUEUESTATUS}" != "TIMEOUT"]?queue_done)',
            f" same => n,GotoIf($[${{HOTLINE_OVERFLOWS}} >= {bound}]?queue_done)"]


def _overflow_hop(dst: str, wait: int, category: str) -> list[str]:
    """The caller becomes the overflow queue's: its name for the service, its max wait, its
    category, one hop more (then a Goto into that queue)."""
    return [f" same => n,Set(HOTLINE_QUEUE={dst})",
            f" same => n,Set(HOTLINE_QUEUE_TIMEOUT={wait})",
            f" same => n,Set(HOTLINE_CATEGORY={category})",
            " same => n,Set(HOTLINE_OVERFLOWS=$[${HOTLINE_OVERFLOWS} + 1])"]


def _hops(n: int) -> str:
    return f"{n} hop" if n == 1 else f"{n} hops"


def _lines(*parts: Iterable[str] | str) -> str:
    out: list[str] = []
    for part in parts:
        if isinstance(part, str):
            out.append(part)
        else:
            out.extend(part)
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- extensions.conf


def render_dialplan(settings: Settings, *, number: str = HOTLINE_NUMBER, dids: Sequence[str] = ()) -> str:
    """The ``[hotline-inbound]``, ``[hotline-survey]`` and ``[hotline-hangup]`` contexts for extensions.conf.

    ``number`` is the extension the flow runs under (12345); each of ``dids`` (an extension or an
    ``_X.`` pattern) is sent to it, so a trunk context can ``Goto(hotline-inbound,${EXTEN},1)``.
    """
    node = _name("node_id", settings.node_id)
    names = _queue_names(settings)
    default = _default_queue(settings)
    agi_url = _agi_url(settings)
    survey_url = _agi_url(settings, "survey")
    emergency, emergency_ring = _emergency_dial(settings)
    recordings = _recordings_dir(settings)
    _safe("number", number)
    if not re.fullmatch(r"[0-9*#+]+", number):
        raise ValueError(f"number: {number!r} must be digits (and * # +)")
    for i, did in enumerate(dids):
        _safe(f"dids[{i}]", did)
        if not _DID.match(did) or did == number:
            raise ValueError(f"dids[{i}]: {did!r} must be another number or an extension pattern like _X.")

    whitelist = "|".join(names)
    default_index = names.index(default.name)
    default_category = _category(f"queues[{default_index}].category", default.category)
    default_wait = _whole(f"queues[{default_index}].max_wait", default.max_wait, 1, 9999)
    other_waits = []
    for i, q in enumerate(settings.queues):
        if q.name == default.name:
            continue
        wait = _whole(f"queues[{i}].max_wait", q.max_wait, 1, 9999)
        other_waits.append(
            f' same => n,ExecIf($["${{HOTLINE_QUEUE}}" = "{q.name}"]?Set(HOTLINE_QUEUE_TIMEOUT={wait}))'
        )
    recording = f"{recordings.rstrip('/')}/${{UNIQUEID}}.wav"
    overflows = _overflows(settings, names)
    overflow_steps: list[str] = []
    if overflows:
        overflow_steps = [
            " ; Overflow: a caller whose max wait ran out (QUEUESTATUS=TIMEOUT, not a hang-up) goes on to",
            " ; the queue's overflow queue, with that queue's max wait and category; HOTLINE_QUEUE names it",
            f" ; for the service. At most {_hops(len(overflows))}: the settings forbid loops, this bounds them.",
            _overflow_checks(len(overflows)),
            [f' same => n,GotoIf($["${{HOTLINE_QUEUE}}" = "{src}"]?overflow_{n})'
             for n, (src, _dst, _wait, _cat) in enumerate(overflows, 1)],
        ]
    overflow_targets = [
        [f" same => n(overflow_{n}),NoOp(Hotline overflow {src} to {dst})",
         *_overflow_hop(dst, wait, category),
         " same => n,Goto(in_queue)"]
        for n, (src, dst, wait, category) in enumerate(overflows, 1)
    ]

    return _lines(
        f"; Hotline {number} inbound, node {node}. Send the hotline DID here from the trunk context,",
        f"; e.g. Goto({INBOUND_CONTEXT},{number},1). The service reads back, from the AMI VarSet events,",
        "; HOTLINE_IVR_CHOICE, HOTLINE_CATEGORY, HOTLINE_QUEUE, HOTLINE_TRANSFER, HOTLINE_CALLBACK_REQUESTED,",
        "; HOTLINE_SURVEY, MIXMONITOR_FILENAME and QUEUESTATUS (set by Queue(): TIMEOUT tells a queue",
        "; timeout from a caller who hung up, CONTINUE a seat that hung up), and the Dial() of 110.",
        f"[{INBOUND_CONTEXT}]",
        f"exten => {number},1,NoOp(Hotline inbound node {node})",
        " same => n,Answer()",
        f" same => n,Set(CHANNEL(hangup_handler_push)={HANGUP_CONTEXT},s,1)",
        " ; Safe defaults first: nothing inherited from the trunk or a transfer survives.",
        " same => n,Set(HOTLINE_QUEUE=)",
        " same => n,Set(HOTLINE_QUEUE_TIMEOUT=)",
        " same => n,Set(HOTLINE_PRIORITY=)",
        " same => n,Set(HOTLINE_TRANSFER=)",
        " same => n,Set(HOTLINE_CALLBACK_REQUESTED=)",
        " same => n,Set(HOTLINE_IVR_DONE=)",
        " same => n,Set(HOTLINE_SURVEY=)",
        " ; The IVR (FastAGI) sets HOTLINE_QUEUE, HOTLINE_QUEUE_TIMEOUT, HOTLINE_PRIORITY and more.",
        " ; If the service is down AGI() fails within 2 s (AGISTATUS=FAILURE) and the call goes on.",
        f" same => n,AGI({agi_url})",
        " ; The caller accepted a callback offer and the IVR said goodbye: hang up, no queue (only \"1\").",
        ' same => n,GotoIf($["${REGEX("^1$" ${HOTLINE_CALLBACK_REQUESTED})}" = "1"]?callback)',
        " ; Record the conversation with the seat, or with 110 (b: only while bridged); sets MIXMONITOR_FILENAME.",
        f" same => n,MixMonitor({recording},b)",
        f" ; A caller in danger (the IVR played the advice): {EMERGENCY_NUMBER} through the emergency trunk. Only the",
        f" ; literal {EMERGENCY_NUMBER} is honoured; any other HOTLINE_TRANSFER is ignored.",
        f' same => n,GotoIf($["${{REGEX("^{EMERGENCY_NUMBER}$" ${{HOTLINE_TRANSFER}})}}" = "1"]?emergency)',
        " ; Only a configured queue is used: empty, failed IVR or unknown name -> the default queue and",
        " ; its work-order category. REGEX() yields only 0 or 1: no value the IVR set reaches an",
        " ; expression or an application argument before it passed this check.",
        f' same => n(route),GotoIf($["${{REGEX("^({whitelist})$" ${{HOTLINE_QUEUE}})}}" = "1"]?queue_ok)',
        f" same => n,Set(HOTLINE_QUEUE={default.name})",
        f" same => n,Set(HOTLINE_CATEGORY={default_category})",
        " ; Queue timeout: the service's value if it is a whole number of seconds, else the queue's max wait.",
        ' same => n(queue_ok),GotoIf($["${REGEX("^[1-9][0-9]{0,3}$" ${HOTLINE_QUEUE_TIMEOUT})}" = "1"]?timeout_ok)',
        f" same => n,Set(HOTLINE_QUEUE_TIMEOUT={default_wait})",
        other_waits,
        " ; Caller priority in the queue (QUEUE_PRIO, higher is served first), only if a small number.",
        ' same => n(timeout_ok),GotoIf($["${REGEX("^[0-9]{1,3}$" ${HOTLINE_PRIORITY})}" != "1"]?queue)',
        " same => n,Set(QUEUE_PRIO=${HOTLINE_PRIORITY})",
        [" same => n(queue),Set(HOTLINE_OVERFLOWS=0)"] if overflows else [],
        " ; Queue(queuename,options,URL,announceoverride,timeout): t lets the seat transfer the caller,",
        " ; c goes on here when the seat hangs up.",
        f" same => n{'(in_queue)' if overflows else '(queue)'},Queue(${{HOTLINE_QUEUE}},ct,,,${{HOTLINE_QUEUE_TIMEOUT}})",
        " same => n,NoOp(Hotline queue exit ${QUEUESTATUS})",
        " ; A seat answered and hung up (CONTINUE; a caller who hangs up never gets here): the survey.",
        _survey_step(),
        *overflow_steps,
        f" same => n{'(queue_done)' if overflows else ''},Hangup()",
        *overflow_targets,
        " same => n(callback),NoOp(Hotline callback requested)",
        " same => n,Hangup()",
        f" same => n(emergency),NoOp(Hotline emergency transfer to {EMERGENCY_NUMBER})",
        f" same => n,Dial({emergency},{emergency_ring})",
        ' same => n,GotoIf($["${REGEX("^ANSWER$" ${DIALSTATUS})}" = "1"]?emergency_done)',
        f" ; {EMERGENCY_NUMBER} not reached (no answer, busy, trunk down): the queue, never dead air; the",
        " ; recording already runs.",
        f" same => n,NoOp(Hotline {EMERGENCY_NUMBER} not reached ${{DIALSTATUS}})",
        " same => n,Goto(route)",
        " same => n(emergency_done),Hangup()",
        [f"exten => {did},1,Goto({INBOUND_CONTEXT},{number},1)" for did in dids],
        "",
        "; The satisfaction survey after a seat hung up (from here and from hotline-transfer): the service",
        "; asks once, sets HOTLINE_SURVEY and thanks the caller; then the call ends.",
        f"[{SURVEY_CONTEXT}]",
        "exten => s,1,NoOp(Hotline satisfaction survey)",
        f" same => n,AGI({survey_url})",
        " same => n,Hangup()",
        "",
        "; Runs when the caller channel hangs up (Newexten shows the cause in the event stream).",
        f"[{HANGUP_CONTEXT}]",
        "exten => s,1,NoOp(Hotline hangup cause ${HANGUPCAUSE})",
        " same => n,Return()",
    )


# --------------------------------------------------------------------------- leader hotline

TRANSFER_CONTEXT = "hotline-transfer"
SEATS_CONTEXT = "hotline-seats"
CALLBACK_CONTEXT = "hotline-callback"
CALLBACK_TRUNK = "hotline-trunk"
SEAT_RING_SECONDS = 30
CALLBACK_RING_SECONDS = 60
_SEAT_EXTEN = re.compile(r"^PJSIP/([A-Za-z0-9_-]+)$")


def render_leader_dialplan(settings: Settings, *, trunk: str = CALLBACK_TRUNK) -> str:
    """The contexts the leader hotline's AMI actions use (queues/leader.py), for extensions.conf.

    ``[hotline-transfer]``: a BlindTransfer target, one extension per configured queue (nothing
    else is reachable), the caller re-queued with the queue's max wait and, when that runs out,
    sent on to the queue's overflow queue as ``[hotline-inbound]`` does; when the seat hangs up,
    the caller goes to ``[hotline-survey]`` (rendered with ``[hotline-inbound]``). ``[hotline-seats]``: an
    Atxfer target, one extension per configured PJSIP seat. ``[hotline-callback]``: a leader
    callback (Originate of the leader seat first), recorded, then the citizen's number (digits
    only, checked) dialled through the PJSIP endpoint ``trunk``.
    """
    names = _queue_names(settings)
    _check_seats(settings)
    trunk = _name("trunk", trunk)
    recordings = _recordings_dir(settings)
    overflows = {src: (dst, wait, category) for src, dst, wait, category in _overflows(settings, names)}
    transfer = []
    for i, name in enumerate(names):
        wait = _whole(f"queues[{i}].max_wait", settings.queues[i].max_wait, 1, 9999)
        if not overflows:
            transfer += [f"exten => {name},1,Queue(${{EXTEN}},ct,,,{wait})", _survey_step(), " same => n,Hangup()"]
            continue
        # A transferred caller starts counting overflow hops afresh; an overflow comes in at in_queue.
        transfer += [f"exten => {name},1,Set(HOTLINE_OVERFLOWS=0)",
                     f" same => n(in_queue),Queue(${{EXTEN}},ct,,,{wait})", _survey_step()]
        if name in overflows:
            dst, dst_wait, category = overflows[name]
            transfer += [*_overflow_checks(len(overflows)), *_overflow_hop(dst, dst_wait, category),
                         f" same => n,Goto({dst},in_queue)"]
        transfer.append(f" same => n{'(queue_done)' if name in overflows else ''},Hangup()")
    seats = []
    for seat in settings.seats:
        m = _SEAT_EXTEN.match(seat.interface)
        if m:
            seats.append(f"exten => {m.group(1)},1,Dial(PJSIP/${{EXTEN}},{SEAT_RING_SECONDS})")
            seats.append(" same => n,Hangup()")
    return _lines(
        "; Leader hotline: a seat's blind transfer of its caller into a configured queue (AMI BlindTransfer).",
        [f"; A timeout there goes on to the queue's overflow queue as in {INBOUND_CONTEXT}, at most "
         f"{_hops(len(overflows))}."] if overflows else [],
        f"[{TRANSFER_CONTEXT}]",
        transfer,
        "",
        "; Leader hotline: a seat's attended transfer to another configured seat (AMI Atxfer; features.conf atxfer).",
        f"[{SEATS_CONTEXT}]",
        seats,
        "",
        "; Leader callback: the leader seat answered an Originate (HOTLINE_CALLBACK = the work order);",
        "; record it, then dial the citizen through the trunk. Only a plain number is dialled.",
        f"[{CALLBACK_CONTEXT}]",
        "exten => _X.,1,NoOp(Hotline leader callback)",
        ' same => n,GotoIf($["${REGEX("^[0-9]{3,20}$" ${EXTEN})}" != "1"]?refuse)',
        f" same => n,MixMonitor({recordings.rstrip('/')}/${{UNIQUEID}}.wav,b)",
        f" same => n,Dial(PJSIP/${{EXTEN}}@{trunk},{CALLBACK_RING_SECONDS})",
        " same => n,Hangup()",
        " same => n(refuse),Hangup()",
    )


def render_features() -> str:
    """features.conf: the DTMF code of an attended transfer (Atxfer needs one configured)."""
    return _lines("[featuremap]", "atxfer => *2")


# --------------------------------------------------------------------------- queues.conf


def render_queues(settings: Settings) -> str:
    """queues.conf: ``[general]`` and one section per configured queue, no static members."""
    node = _name("node_id", settings.node_id)
    names = _queue_names(settings)
    _default_queue(settings)
    _check_seats(settings)

    sections: list[str] = [
        f"; Hotline queues, node {node}. Members are not listed here: the Hotline service adds the",
        "; seats at start with AMI QueueAdd (MemberName, StateInterface) and owns their pause state.",
        "[general]",
        "; the service owns membership: nothing comes back from astdb after an Asterisk restart",
        "persistentmembers = no",
        "; a seat in several queues keeps one wrap-up time and one last-call time",
        "shared_lastcall = yes",
        "; queue_log names the seat by MemberName",
        "log_membername_as_agent = yes",
        "autofill = yes",
    ]
    for i, (name, q) in enumerate(zip(names, settings.queues)):
        seats = [s for s in settings.seats if name in s.queues]
        sections += [
            "",
            f"; {name}: purpose {_name(f'queues[{i}].purpose', q.purpose)}, "
            f"work-order category {_category(f'queues[{i}].category', q.category)}",
            f"[{name}]",
            f"strategy = {_strategy(f'queues[{i}].strategy', q.strategy)}",
            "; seconds a seat rings before the next one is tried",
            f"timeout = {_whole(f'queues[{i}].ring_timeout', q.ring_timeout, 1, 300)}",
            f"retry = {QUEUE_RETRY}",
            "; the Queue() timeout argument (max wait) bounds the last ring too",
            "timeoutpriority = app",
            f"wrapuptime = {_whole(f'queues[{i}].wrapup', q.wrapup, 0, 600)}",
            f"servicelevel = {_whole(f'queues[{i}].service_level', q.service_level, 1, 600)}",
            "; a seat already on a call is not rung",
            "ringinuse = no",
            "; a citizen can always join and stays until answered or the max wait: no seat logged in",
            "; means music on hold until the timeout, never a refusal",
            "joinempty = yes",
            "leavewhenempty = no",
            "maxlen = 0",
            "; pause state belongs to the service and the desk, not to missed rings",
            "autopause = no",
            "announce-frequency = 0",
            "periodic-announce-frequency = 0",
            "; MEMBERINTERFACE/MEMBERNAME, QUEUENAME/QUEUESRVLEVEL..., QEHOLDTIME/QEORIGINALPOS as VarSet",
            "setinterfacevar = yes",
            "setqueuevar = yes",
            "setqueueentryvar = yes",
            "autofill = yes",
        ]
        for seat in seats:
            sections.append(
                f"; seat (QueueAdd at start): {seat.interface} name {seat.name!r} "
                f"state {seat.state_interface or seat.interface} penalty {seat.penalty}"
            )
        if not seats:
            sections.append("; no seat configured for this queue yet")
    return _lines(sections)


# --------------------------------------------------------------------------- manager.conf


def _as_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    return ipaddress.ip_address("127.0.0.1") if text.lower() == "localhost" else _ip(text)


def _permits(settings: Settings) -> tuple[list[str], list[str]]:
    """(permit lines, comment lines) for the addresses the service logs in to AMI from."""
    advertise_text = _advertise_host(settings)
    advertise = _as_ip(advertise_text)
    ami = _as_ip(_host("ami.host", settings.ami.host))
    sources: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    notes: list[str] = []
    if advertise is None:
        notes.append(
            f"; agi.advertise_host {advertise_text} is a host name: add permit = <its address>/255.255.255.255"
        )
    elif advertise.is_loopback:
        # The service runs on the PBX host: it connects from loopback, or from the PBX's own
        # address when ami.host names that address.
        sources.append(ipaddress.ip_address("127.0.0.1" if advertise.version == 4 else "::1"))
        if ami is not None and not ami.is_loopback:
            sources.append(ami)
    else:
        sources.append(advertise)
    if ami is not None and ami.is_loopback:
        loopback = ipaddress.ip_address("127.0.0.1" if ami.version == 4 else "::1")
        if loopback not in sources:
            sources.append(loopback)
    lines = [f"permit = {ip}/255.255.255.255" if ip.version == 4 else f"permit = {ip}/128" for ip in sources]
    return lines, notes


def render_manager(settings: Settings) -> str:
    """manager.conf: ``[general]`` and the service's AMI user. The secret is never printed."""
    node = _name("node_id", settings.node_id)
    user = _safe("ami.username", settings.ami.username)
    if not _AMI_USER.match(user):
        raise ValueError(f"ami.username: {user!r} may hold only letters, digits, '_', '.', '@' and '-'")
    if user.lower() in _RESERVED_SECTIONS:
        raise ValueError(f"ami.username: {user!r} is reserved in manager.conf; pick another user name")
    port = _whole("ami.port", settings.ami.port, 1024, 65535)  # manager.c accepts 1024..65535
    host = _host("ami.host", settings.ami.host)
    ip = _as_ip(host)
    bind_notes: list[str] = []
    if ip is None:
        bind = "0.0.0.0"
        bind_notes.append(f"; ami.host {host} is a host name: bind to its address instead of 0.0.0.0")
    else:
        bind = str(ip)
    permits, notes = _permits(settings)

    return _lines(
        f"; AMI for the Hotline service, node {node}.",
        "[general]",
        "enabled = yes",
        f"port = {port}",
        bind_notes,
        f"bindaddr = {bind}",
        "; the service orders and times events by their Timestamp header",
        "timestampevents = yes",
        "",
        f"; Replace {AMI_SECRET_PLACEHOLDER} with the value of HOTLINE_AMI__SECRET (or the file in",
        "; HOTLINE_AMI__SECRET_FILE) on the service host. The generator never prints the secret.",
        f"[{user}]",
        f"secret = {AMI_SECRET_PLACEHOLDER}",
        "; only the service host may log in (IPv4 and IPv6 denied first, rules apply in order)",
        "deny = 0.0.0.0/0.0.0.0",
        "deny = ::/0",
        permits,
        notes,
        "; events: system (FullyBooted, Reload, Shutdown), call (channels, bridges, MixMonitorStart, CEL),",
        "; agent (Queue*, Agent*, QueueMember*), dialplan (VarSet, Newexten), cdr (Cdr)",
        f"read = {','.join(AMI_READ_CLASSES)}",
        "; actions: agent (QueueAdd/Remove/Pause/Penalty), call (Getvar, Setvar, Hangup, Redirect),",
        "; originate (Originate), reporting (CoreStatus, CoreShowChannels); QueueStatus and Ping need none.",
        "; No system/command/config: this user cannot reload, load modules or run CLI commands.",
        f"write = {','.join(AMI_WRITE_CLASSES)}",
        "; a reconnect must not be refused while a half-open old session lingers",
        "allowmultiplelogin = yes",
        f"writetimeout = {AMI_WRITE_TIMEOUT_MS}",
    )


# --------------------------------------------------------------------------- all


def render_all(settings: Settings) -> str:
    """The three snippets, each under a header naming the file it belongs in."""
    node = _name("node_id", settings.node_id)
    parts = [
        ("extensions.conf", "add the three contexts; route the 12345 DID to hotline-inbound", render_dialplan(settings)),
        ("extensions.conf", "add the leader hotline contexts", render_leader_dialplan(settings)),
        ("features.conf", "merge [featuremap]", render_features()),
        ("queues.conf", "replace or merge [general]; one section per Hotline queue", render_queues(settings)),
        ("manager.conf", "merge [general]; add the service's AMI user", render_manager(settings)),
    ]
    out = [
        f"; Asterisk 22 configuration for the Hotline service, node {node}.",
        "; Generated by `hotline asterisk-config`: review, then add each part to the file it names.",
        "",
    ]
    for filename, how, text in parts:
        out += [
            f"; ==================== /etc/asterisk/{filename} ({how}) ====================",
            text,
        ]
    return "\n".join(out)
