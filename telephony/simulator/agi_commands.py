"""The AGI commands the simulator answers, with Asterisk's result lines.

How this works: ``parse_args`` splits a command line as res_agi does (blanks separate, double
quotes group and are removed, a backslash takes the next character as is). ``find`` matches
the longest command whose words start the line (case-insensitive); none: ``510``. On a dead
channel (the caller hung up) only the commands Asterisk allows there run (variables, VERBOSE,
NOOP, EXEC, DATABASE); the others get ``511``. A handler returns its reply line, or ``USAGE``
for the multi-line ``520``. Media commands wait in sim time and end early on a hang-up
(``200 result=-1``) or on a key they listen for.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Awaitable, Callable

from telephony.simulator import cel

if TYPE_CHECKING:
    from telephony.simulator.calls import InboundCall

USAGE = object()
HANGUP = object()
MAX_ARGS = 128
MAX_WAIT = 3600.0  # sim seconds: "wait forever" is bounded
RATE = 8000
SOUNDS = {"hello-world": 11234, "beep": 3384, "vm-goodbye": 7600}


def sound_samples(name: str) -> int:
    if name in SOUNDS:
        return SOUNDS[name]
    m = re.fullmatch(r"silence/(\d{1,4})", name)
    if m:
        return int(m.group(1)) * RATE
    return RATE // 2 if name.startswith("digits/") else RATE


def parse_args(line: str) -> list[str]:
    """res_agi's parse_args."""
    args: list[str] = []
    cur: list[str] | None = None
    quoted = escaped = False
    for ch in line:
        if ch == '"' and not escaped:
            quoted = not quoted
            if quoted and cur is None:
                cur = []
                args.append("")
            continue
        if ch in " \t" and not quoted and not escaped:
            if cur is not None:
                args[-1] = "".join(cur)
            cur = None
            continue
        if ch == "\\" and not escaped:
            escaped = True
            continue
        if cur is None:
            if len(args) >= MAX_ARGS - 1:
                break
            cur = []
            args.append("")
        cur.append(ch)
        escaped = False
    if cur is not None:
        args[-1] = "".join(cur)
    return args


def _atoi(text: str) -> int:
    m = re.match(r"\s*([+-]?\d+)", text)
    return int(m.group(1)) if m else 0


Handler = Callable[["InboundCall", list[str]], Awaitable[object]]


@dataclass(frozen=True)
class Command:
    words: tuple[str, ...]
    handler: Handler
    dead_ok: bool
    usage: str


async def wait_key(call: InboundCall, seconds: float, accept: str | None) -> object:
    """A key from ``accept`` (None: any), None on timeout, HANGUP if the channel dies."""
    clock = call.core.clock
    deadline = clock.now() + max(0.0, min(seconds, MAX_WAIT))
    for _ in range(100_000):
        if call.dead.is_set():
            return HANGUP
        key = call.keys.take()
        while key is not None:
            if accept is None or key in accept:
                return key
            key = call.keys.take()
        left = deadline - clock.now()
        if left <= 0:
            return None
        call.wake.clear()
        await clock.wait(call.wake, left)
    return None


async def _play(call: InboundCall, files: str, escape: str, offset: int = 0,
                begins: bool = True) -> tuple[object, int]:
    """Play ``files`` (``&``-separated) one after the other; (key / None / HANGUP, sample position).

    Each file gets CEL STREAM_BEGIN (when played through ast_streamfile: ``begins``; STREAM FILE
    and GET OPTION open the stream themselves and show only STREAM_END, as answered.ami) and
    STREAM_END when it stops, whether it ended, a key stopped it or the caller hung up."""
    names = [f for f in files.split("&") if f]
    total = sum(sound_samples(f) for f in names)
    start = call.core.clock.now()
    if escape:
        call.keys.arm()
    key: object = None
    skip = max(0, offset)
    for name in names:
        length = sound_samples(name)
        if skip >= length:
            skip -= length
            continue
        if begins:
            cel.stream(call.bus, call.c2, True, sound=name)
        key = await wait_key(call, (length - skip) / RATE, escape or "")
        skip = 0
        cel.stream(call.bus, call.c2, False)
        if key is not None:
            break
    pos = total if key is None else min(total, offset + int((call.core.clock.now() - start) * RATE))
    return key, pos


async def answer(call: InboundCall, argv: list[str]) -> object:
    return "200 result=0"


async def stream_file(call: InboundCall, argv: list[str]) -> object:
    if not 4 <= len(argv) <= 5:
        return USAGE
    key, pos = await _play(call, argv[2], argv[3], _atoi(argv[4]) if len(argv) == 5 else 0, begins=False)
    if key is HANGUP:
        return f"200 result=-1 endpos={pos}"
    call.set_var("PLAYBACKSTATUS", "SUCCESS")
    return f"200 result={ord(key) if isinstance(key, str) else 0} endpos={pos}"


async def get_option(call: InboundCall, argv: list[str]) -> object:
    if not 4 <= len(argv) <= 5:
        return USAGE
    key, pos = await _play(call, argv[2], argv[3], begins=False)
    if key is None and argv[3]:
        key = await wait_key(call, (_atoi(argv[4]) / 1000 if len(argv) == 5 else 5.0), argv[3])
    if key is HANGUP:
        return f"200 result=-1 endpos={pos}"
    return f"200 result={ord(key) if isinstance(key, str) else 0} endpos={pos}"


async def get_data(call: InboundCall, argv: list[str]) -> object:
    if len(argv) < 3:
        return USAGE
    timeout = _atoi(argv[3]) if len(argv) >= 4 else 0
    maxdigits = _atoi(argv[4]) if len(argv) >= 5 else 1024
    first, between = (timeout / 1000, timeout / 1000) if timeout > 0 else ((MAX_WAIT, MAX_WAIT) if timeout < 0
                                                                          else (10.0, 5.0))
    call.keys.arm()
    key, _ = await _play(call, argv[2], "0123456789*#ABCD")
    if key is None:
        key = await wait_key(call, first, None)
    digits = ""
    while True:
        if key is HANGUP:
            return "200 result=-1"
        if key is None:
            return f"200 result={digits} (timeout)"
        if key == "#":
            return f"200 result={digits}"
        digits += str(key)
        if len(digits) >= maxdigits:
            return f"200 result={digits}"
        key = await wait_key(call, between, None)


async def wait_for_digit(call: InboundCall, argv: list[str]) -> object:
    if len(argv) != 4:
        return USAGE
    ms = _atoi(argv[3])
    call.keys.arm()
    key = await wait_key(call, MAX_WAIT if ms < 0 else ms / 1000, None)
    if key is HANGUP:
        return "200 result=-1"
    return f"200 result={ord(key) if isinstance(key, str) else 0}"


async def say_digits(call: InboundCall, argv: list[str]) -> object:
    number = argv[1].lower() == "number"
    if len(argv) not in ((4, 5) if number else (4,)) or (number and not re.fullmatch(r"-?\d+", argv[2])):
        return USAGE
    files = "&".join("digits/minus" if c == "-" else f"digits/{c}" for c in argv[2])
    key, _ = await _play(call, files, argv[3])
    if key is HANGUP:
        return "200 result=-1"
    return f"200 result={ord(key) if isinstance(key, str) else 0}"


APPS_INSTANT = {"noop", "verbose", "log", "answer", "progress", "ringing", "userevent", "set", "stopplaytones",
                "playtones", "musiconhold"}


async def exec_app(call: InboundCall, argv: list[str]) -> object:
    if len(argv) < 2:
        return USAGE
    app, data = argv[1].lower(), (argv[2] if len(argv) >= 3 else "")
    if app in ("playback", "background"):
        files = data.split(",")[0]
        c2 = call.c2
        saved, (c2.app, c2.appdata) = (c2.app, c2.appdata), (argv[1], data)  # the app runs on the channel
        try:
            key, _ = await _play(call, files, "")
        finally:
            c2.app, c2.appdata = saved
        return "200 result=-1" if key is HANGUP else "200 result=0"
    if app == "wait":
        try:
            seconds = float(data or 0)
        except ValueError:
            seconds = 0.0
        return "200 result=-1" if await wait_key(call, seconds, "") is HANGUP else "200 result=0"
    if app == "hangup":
        call.hangup_by_pbx()
        return "200 result=-1"
    if app == "set" and "=" in data:
        name, _, value = data.partition("=")
        call.set_var(name.strip(), value)
    if app in APPS_INSTANT:
        return "200 result=0"
    return "200 result=-2"


async def set_variable(call: InboundCall, argv: list[str]) -> object:
    if len(argv) != 4:
        return USAGE
    call.set_var(argv[2], argv[3])
    return "200 result=1"


async def get_variable(call: InboundCall, argv: list[str]) -> object:
    if len(argv) != 3:
        return USAGE
    value = call.get_var(argv[2])
    return "200 result=0" if value is None else f"200 result=1 ({value})"


_SUBST = re.compile(r"\$\{([^${}]{1,200})\}")


async def get_full_variable(call: InboundCall, argv: list[str]) -> object:
    if len(argv) not in (4, 5):
        return USAGE
    if len(argv) == 5 and argv[4] != call.c2.name:
        return "200 result=0"
    value = _SUBST.sub(lambda m: call.get_var(m.group(1)) or "", argv[3])
    return f"200 result=1 ({value})"


async def verbose(call: InboundCall, argv: list[str]) -> object:
    return USAGE if len(argv) < 2 else "200 result=1"


async def noop(call: InboundCall, argv: list[str]) -> object:
    return "200 result=0"


async def hangup(call: InboundCall, argv: list[str]) -> object:
    if len(argv) >= 2 and argv[1] != call.c2.name:
        return "200 result=-1"
    call.hangup_by_pbx()
    return "200 result=1"


async def channel_status(call: InboundCall, argv: list[str]) -> object:
    return f"200 result={call.c2.state}"


async def set_callerid(call: InboundCall, argv: list[str]) -> object:
    if len(argv) != 3:
        return USAGE
    m = re.fullmatch(r'\s*"?([^"<]*)"?\s*<([^>]*)>\s*', argv[2])
    name, num = (m.group(1).strip(), m.group(2)) if m else (call.c2.cid_name, argv[2])
    call.set_callerid(num, name)
    return "200 result=1"


async def result_zero(call: InboundCall, argv: list[str]) -> object:
    return "200 result=0" if len(argv) >= 3 else USAGE


async def database(call: InboundCall, argv: list[str]) -> object:
    op, db = argv[1].lower(), call.core.astdb
    if op == "get" and len(argv) == 4:
        value = db.get(f"/{argv[2]}/{argv[3]}")
        return "200 result=0" if value is None else f"200 result=1 ({value})"
    if op == "put" and len(argv) == 5:
        if len(db) < 10_000:
            db[f"/{argv[2]}/{argv[3]}"] = argv[4]
            return "200 result=1"
        return "200 result=0"
    if op == "del" and len(argv) == 4:
        return "200 result=1" if db.pop(f"/{argv[2]}/{argv[3]}", None) is not None else "200 result=0"
    if op == "deltree" and len(argv) in (3, 4):
        prefix = f"/{argv[2]}/" + (f"{argv[3]}/" if len(argv) == 4 else "")
        for key in [k for k in db if k.startswith(prefix)]:
            del db[key]
        return "200 result=1"
    return USAGE


COMMANDS = [
    Command(("answer",), answer, False, "Answers channel if not already in answer state."),
    Command(("channel", "status"), channel_status, False, "Returns status of the connected channel."),
    Command(("database", "del"), database, True, "Removes database key/value"),
    Command(("database", "deltree"), database, True, "Removes database keytree/value"),
    Command(("database", "get"), database, True, "Gets database value"),
    Command(("database", "put"), database, True, "Adds/updates database value"),
    Command(("exec",), exec_app, True, "Executes a given Application"),
    Command(("get", "data"), get_data, False, "Stream the given <replaceable>file</replaceable>, and receive DTMF "
            "data.\nReturns the digits received from the channel at the other end."),
    Command(("get", "full", "variable"), get_full_variable, True, "Evaluates a channel expression"),
    Command(("get", "option"), get_option, False, "Stream file, prompt for DTMF, with timeout."),
    Command(("get", "variable"), get_variable, True, "Gets a channel variable."),
    Command(("hangup",), hangup, True, "Hangup a channel."),
    Command(("noop",), noop, True, "Does nothing."),
    Command(("say", "digits"), say_digits, False, "Says a given digit string."),
    Command(("say", "number"), say_digits, False, "Says a given number."),
    Command(("set", "autohangup"), result_zero, False, "Autohangup channel in some time."),
    Command(("set", "callerid"), set_callerid, False, "Sets callerid for the current channel."),
    Command(("set", "context"), result_zero, False, "Sets channel context."),
    Command(("set", "extension"), result_zero, False, "Changes channel extension."),
    Command(("set", "music"), result_zero, False, "Enable/Disable Music on hold generator"),
    Command(("set", "priority"), result_zero, False, "Set channel dialplan priority."),
    Command(("set", "variable"), set_variable, True, "Sets a channel variable."),
    Command(("stream", "file"), stream_file, False, "Sends audio file on channel."),
    Command(("verbose",), verbose, True, "Logs a message to the asterisk verbose log."),
    Command(("wait", "for", "digit"), wait_for_digit, False, "Waits for a digit to be pressed."),
]


def find(argv: list[str]) -> Command | None:
    words = [a.lower() for a in argv[:3]]
    best = None
    for cmd in COMMANDS:
        n = len(cmd.words)
        if tuple(words[:n]) == cmd.words and (best is None or n > len(best.words)):
            best = cmd
    return best
