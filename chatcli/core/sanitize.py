"""Untrusted text made safe to relay, to show and to quote in error messages.

A peer (or a transcript) may send escape sequences that move the cursor, retitle a
terminal or reorder what a reader sees. Everything a peer supplies passes through
:func:`clean_text` before it is relayed or shown; :func:`checked_text` adds the spec's
length rules for message text; :func:`preview` and :func:`json_kind` describe a bad value
in an error message (the protocol's and the transcript reader's alike). Pure functions,
no I/O: the protocol, the event table and the command parser all import them without
importing each other.
"""

from __future__ import annotations

import re
from typing import Any, Final

from chatcli.errors import ProtocolError

__all__ = ["MAX_TEXT", "checked_text", "clean_text", "json_kind", "preview"]

MAX_TEXT: Final = 4096

# Escape sequences, payload included: CSI (ESC [ or 0x9B), OSC/DCS/SOS/PM/APC strings
# (ESC ] P X ^ _ or their C1 forms) up to their terminator or the end of the text, and
# two-character escapes. Then every remaining C0, C1, DEL and bidi control character.
_ANSI_RE: Final = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?"
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|\x1b[ -~]?"
)
_CONTROL_RE: Final = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def clean_text(text: str) -> str:
    """Remove ANSI escape sequences, control and bidi-override characters from ``text``.

    Used on everything a peer or a transcript supplies before it is relayed or shown, so
    that nothing can move the cursor, retitle a terminal or reorder what a reader sees.
    Returns ``text`` itself when there is nothing to remove (the common case, checked fast).
    """
    if text.isprintable():
        return text
    return _CONTROL_RE.sub("", _ANSI_RE.sub("", text))


def checked_text(text: str, ref: str | int | None = None) -> str:
    """Clean message text and enforce 1-4096 code points of visible text."""
    text = clean_text(text)
    if not text or text.isspace():
        raise ProtocolError("bad_request", "text is empty", ref)
    if len(text) > MAX_TEXT:
        raise ProtocolError("bad_request", f"text is longer than {MAX_TEXT} characters", ref)
    return text


def preview(text: str, limit: int = 40) -> str:
    """Untrusted ``text`` quoted for an error message: cleaned, cut at ``limit``, repr'd."""
    shown = clean_text(text)
    return repr(shown if len(shown) <= limit else shown[:limit] + "...")


def json_kind(value: Any) -> str:
    """What a decoded JSON value is, for messages like "expected an object, got an array"."""
    if isinstance(value, dict):
        return "an object"
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )
