"""The one place where values bound for AMI actions and AGI commands are checked.

CR and LF end a header (AMI) or a command (AGI); NUL truncates strings inside Asterisk. A caller
ID name, a DTMF string or a field typed into the web desk must never carry them onto the wire.
Identifiers (action names, channels, queue names, variable names) are rejected outright; free
text (caller names, notes) may be cleaned with ``clean_text`` before it gets here.
"""

from __future__ import annotations

import re

from telephony.errors import UnsafeValue

_FORBIDDEN = re.compile(r"[\r\n\x00]")
_KEY = re.compile(r"^[A-Za-z0-9_\-()]+$")


def check_value(value: object, what: str = "value") -> str:
    """Return ``value`` as text, or raise UnsafeValue naming ``what`` if it could inject."""
    text = value if isinstance(value, str) else str(value)
    if _FORBIDDEN.search(text):
        # The value itself is not quoted: it may be a caller's name, a secret or other personal data.
        char = {"\r": "CR", "\n": "LF", "\x00": "NUL"}[_FORBIDDEN.search(text).group()]
        raise UnsafeValue(f"{what} contains {char} at position {_FORBIDDEN.search(text).start()} "
                          f"(length {len(text)})")
    return text


def check_key(key: str) -> str:
    """An AMI header name: letters, digits, '_', '-', parentheses (``CALLERID(num)``)."""
    if not _KEY.match(key):
        raise UnsafeValue(f"AMI header name not allowed: {key[:40]!r}")
    return key


def clean_text(value: object, limit: int = 200) -> str:
    """Free text from a person: control characters become spaces, length is capped."""
    text = value if isinstance(value, str) else str(value)
    text = re.sub(r"[\x00-\x1f\x7f]", " ", text)
    return text[:limit]
