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

__all__ = ["MAX_TEXT", "checked_text", "clean_text", "is_blank", "json_kind", "preview"]

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
# Characters that show nothing and are removed: the format characters (Unicode Cf) but
# the zero-width joiners (ZWNJ U+200C, ZWJ U+200D: Persian, Indic and emoji sequences)
# and the tag characters (subdivision flags), plus the line and paragraph separators
# (U+2028/2029, which some terminals take as line breaks) and the Hangul fillers, which
# are letters (Lo) that render as nothing. Without this, U+200B or U+3164 alone made a
# "blank" message that the whitespace test let through.
_INVISIBLE_RE: Final = re.compile(
    "[\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u115f\u1160\u180e"
    "\u200b\u200e\u200f\u2028\u2029\u2060-\u2064\u206a-\u206f\u3164\ufeff\uffa0"
    "\ufff9-\ufffb\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3"
    "\U0001d173-\U0001d17a\U000e0001]"
)
# invisible characters that are printable to Python, so the fast path must look for them
_PRINTABLE_INVISIBLE_RE: Final = re.compile("[\u115f\u1160\u3164\uffa0]")
# what may be left that still shows nothing: whitespace, the joiners kept above, variation
# selectors, tag characters and the blank Braille pattern
_BLANK_RE: Final = re.compile("[\\s\u200c\u200d\u2800\ufe00-\ufe0f\U000e0020-\U000e007f]*")


def clean_text(text: str) -> str:
    """Remove ANSI escape sequences, control and bidi-override characters from ``text``.

    Used on everything a peer or a transcript supplies before it is relayed or shown, so
    that nothing can move the cursor, retitle a terminal or reorder what a reader sees;
    invisible characters (see ``_INVISIBLE_RE``) go too. Returns ``text`` itself when
    there is nothing to remove (the common case, checked fast).
    """
    if text.isascii():
        if text.isprintable():
            return text
        return _CONTROL_RE.sub("", _ANSI_RE.sub("", text))
    if text.isprintable() and _PRINTABLE_INVISIBLE_RE.search(text) is None:
        return text
    return _INVISIBLE_RE.sub("", _CONTROL_RE.sub("", _ANSI_RE.sub("", text)))


def is_blank(text: str) -> bool:
    """True when cleaned ``text`` would show nothing: whitespace, joiners, selectors."""
    return _BLANK_RE.fullmatch(text) is not None


def checked_text(text: str, ref: str | int | None = None) -> str:
    """Clean message text and enforce 1-4096 code points of visible text."""
    text = clean_text(text)
    if is_blank(text):
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
