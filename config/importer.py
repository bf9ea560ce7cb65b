"""Import the queues (and static members) of an existing queues.conf.

Uses pyst2's ``asterisk.config.Config``, which reads plain ``[section]`` / ``key = value`` files.
It cannot read templates (``[x](!)``, ``[y](x)``), additions (``[x](+)``), ``#include`` /
``#exec``, block comments (``;-- ... --;``, whose lines it would read as settings) or escaped
semicolons (``\\;``, which it takes for a comment); those are refused up front with an error
naming the file and the line, rather than pyst2's bare "Missing '[' or ']'" or "Item must be in
name = value pairs", or a silently wrong import.
"""

from __future__ import annotations

import os
import re
from typing import Any

import asterisk.config

# app_queue defaults for keys a queue section leaves out.
ASTERISK_DEFAULTS: dict[str, Any] = {"strategy": "ringall", "timeout": 15, "retry": 5, "wrapuptime": 0}

_DIRECTIVE = re.compile(r"^\s*#\s*(include|tryinclude|exec)\b", re.IGNORECASE)
_HEADER_WITH_OPTIONS = re.compile(r"^\s*\[[^\]]*\]\s*\(")
# Asterisk's block comment starts at ";--" not followed by a third '-' (";-----" is a plain comment).
_BLOCK_COMMENT = re.compile(r"(?<!\\);--(?!-)")


class _Config(asterisk.config.Config):
    """pyst2's parser, reading the file as UTF-8 and closing it (pyst2's own load() leaves the file
    open, a ResourceWarning, and decodes with the locale's encoding)."""

    def load(self) -> None:
        with open(self.filename, encoding="utf-8") as fh:
            self.raw_lines = fh.readlines()


class QueuesImportError(ValueError):
    """A queues.conf that cannot be imported; the message names the file (and line)."""


def _split_member(value: str) -> list[str]:
    """Split a ``member =>`` value on commas as app_queue does: double quotes group, backslash escapes."""
    fields: list[str] = []
    current: list[str] = []
    quoted = False
    chars = iter(value)
    for ch in chars:
        if ch == "\\":
            current.append(next(chars, ""))
        elif ch == '"':
            quoted = not quoted
        elif ch == "," and not quoted:
            fields.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
    fields.append("".join(current).strip())
    return fields


def _int(path: str, line: int, key: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise QueuesImportError(f"{path}:{line}: {key} = {value!r} is not a whole number") from None


def _bool(value: str) -> bool:
    return value.strip().lower() in ("yes", "true", "y", "t", "1", "on")


def _member(path: str, line: int, value: str) -> dict[str, Any]:
    fields = _split_member(value)
    interface = fields[0]
    if not interface:
        raise QueuesImportError(f"{path}:{line}: member without an interface")

    def field(i: int) -> str | None:
        return fields[i] if len(fields) > i and fields[i] != "" else None

    penalty = field(1)
    wrapuptime = field(5)
    ringinuse = field(4)
    paused = field(6)
    return {
        "interface": interface,
        "penalty": _int(path, line, "member penalty", penalty) if penalty is not None else 0,
        "membername": field(2),
        "state_interface": field(3),
        "ringinuse": _bool(ringinuse) if ringinuse is not None else None,
        "wrapuptime": _int(path, line, "member wrapuptime", wrapuptime) if wrapuptime is not None else None,
        "paused": _bool(paused) if paused is not None else False,
    }


def _precheck(path: str) -> None:
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.readlines()
    except UnicodeDecodeError as exc:
        raise QueuesImportError(f"{path}: not UTF-8 text ({exc.reason})") from None
    for number, raw in enumerate(lines, start=1):
        if _BLOCK_COMMENT.search(raw):
            raise QueuesImportError(
                f"{path}:{number}: block comments (;-- ... --;) are not supported by the importer; "
                "comment each line with ';' or delete the block"
            )
        if "\\;" in raw:
            raise QueuesImportError(
                f"{path}:{number}: an escaped ';' (\\;) is not supported by the importer; remove it from the value"
            )
        text = raw.split(";", 1)[0]
        if _DIRECTIVE.match(text):
            raise QueuesImportError(
                f"{path}:{number}: {text.strip()!r}: #include/#exec is not supported by the importer; "
                "give the included file itself or a flattened copy"
            )
        if _HEADER_WITH_OPTIONS.match(text):
            raise QueuesImportError(
                f"{path}:{number}: {text.strip()!r}: templates and section options ([x](!), [y](x), [x](+)) "
                "are not supported by the importer; flatten them into plain sections"
            )


def import_queues(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The queues of a queues.conf, in file order.

    Each queue is ``{"name", "strategy", "timeout", "retry", "wrapuptime", "members", "options"}``:
    the four settings as app_queue would use them (its defaults where the section leaves them
    out), ``members`` the static ``member =>`` lines as dicts (``interface``, ``penalty``,
    ``membername``, ``state_interface``, ``ringinuse``, ``wrapuptime``, ``paused``), and
    ``options`` every other key as text (the last value of a repeated key wins, as in app_queue).
    ``[general]`` is not a queue and is skipped. Raises :class:`QueuesImportError` naming the file.
    """
    path = os.fspath(path)
    try:
        _precheck(path)
        cfg = _Config(path)
    except OSError as exc:
        raise QueuesImportError(f"{path}: cannot be read: {exc.strerror or exc}") from None
    except asterisk.config.ParseError as exc:
        line, message = (exc.args + (None, None))[:2]
        raise QueuesImportError(f"{path}:{line}: {message}") from None

    for line in cfg.lines:
        if isinstance(line, asterisk.config.Category):
            break
        if isinstance(line, asterisk.config.Item):
            # Asterisk refuses a setting outside any [section]; pyst2 would drop it silently.
            raise QueuesImportError(f"{path}:{line.number}: {line.line!r} comes before the first [section]")

    queues: list[dict[str, Any]] = []
    seen: set[str] = set()
    for category in cfg.categories:
        name = category.name.strip()
        if name.lower() == "general":
            continue
        if not name:
            raise QueuesImportError(f"{path}:{category.number}: empty section name")
        if name.lower() in seen:
            raise QueuesImportError(f"{path}:{category.number}: queue [{name}] appears twice")
        seen.add(name.lower())
        queue: dict[str, Any] = {"name": name, **ASTERISK_DEFAULTS, "members": [], "options": {}}
        for item in category.items:
            key = item.name.strip().lower()
            value = item.value.strip()
            if key == "member":
                queue["members"].append(_member(path, item.number, value))
            elif key == "strategy":
                queue["strategy"] = value.lower()
            elif key in ("timeout", "retry", "wrapuptime"):
                queue[key] = _int(path, item.number, key, value)
            else:
                queue["options"][key] = value
        queues.append(queue)
    return queues
