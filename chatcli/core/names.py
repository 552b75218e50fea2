"""User names in every script: validation and identity (protocol v1.1, section 2).

A name is NFKC-normalised, then must be 1-24 characters: letters and digits of any script
(categories L and N) and ``_ - .``, with no control, format, default-ignorable or bidi
character. Combining marks are allowed only right after a letter or digit (at most
:data:`MAX_MARKS` in a row), because Devanagari, Thai or Arabic names cannot be written
without them; a mark that combines with nothing is refused. Apart from digits and
``_ - .`` the name is in one script, or is a mix Unicode TS #39 calls *highly
restrictive* (Han with Hiragana and Katakana, Han with Bopomofo, Han with Hangul, each
also with Latin, as TS #39 says); its decimal digits come from one digit set.

Identity is the confusable skeleton (TS #39) of the case-folded form: :func:`name_key`.
Because case-folding first turns ``I`` into ``i``, TS #39's own look-alikes that differ
in case only before folding (``paypaI`` and ``paypal``, ``I`` and ``l``) would escape;
:func:`alike_key`, the skeleton of the name *before* folding, then folded (the order ergo
uses), catches those. Two names clash when either key is equal: :func:`name_keys` gives
both. ``server`` and ``system`` and everything that clashes with them are reserved.

The confusables and script data are ICU's (through PyICU's API, from the prebuilt
pyicu-wheels package: the Unicode Consortium's reference
implementation of TS #39, whose data follows each Unicode release). Pure functions: no I/O.
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache
from typing import Final

import icu  # type: ignore[import-not-found, import-untyped, unused-ignore]

__all__ = [
    "MAX_MARKS",
    "MAX_NAME",
    "NAME_RULE",
    "RESERVED_NAMES",
    "alike_key",
    "name_error",
    "name_key",
    "name_keys",
    "normalize",
    "valid_name",
]

MAX_NAME: Final = 24
#: combining marks allowed after one letter (more is "zalgo" text)
MAX_MARKS: Final = 3
_PUNCT: Final = frozenset("_-.")
RESERVED_NAMES: Final = frozenset({"server", "system"})

#: what name_invalid tells the person refused
NAME_RULE: Final = (
    "names are 1-24 letters or digits of one script (José, 田中さん and Алиса are fine), "
    "'_', '-' or '.'; 'server', 'system' and names that look like them are reserved"
)

_checker = icu.SpoofChecker()
_checker.setRestrictionLevel(icu.URestrictionLevel.HIGHLY_RESTRICTIVE)
_checker.setChecks(icu.USpoofChecks.RESTRICTION_LEVEL)
_IGNORABLE: Final = icu.UProperty.DEFAULT_IGNORABLE_CODE_POINT
_BIDI_CONTROL: Final = icu.UProperty.BIDI_CONTROL


def normalize(name: str) -> str:
    """The form a name is shown and kept in: NFKC (full-width ``ａ`` becomes ``a``)."""
    return unicodedata.normalize("NFKC", name)


def _skeleton(text: str) -> str:
    """TS #39 skeleton, recomposed (ICU returns NFD) so that keys are short and stable."""
    return unicodedata.normalize("NFC", str(_checker.getSkeleton(0, text)))


@lru_cache(maxsize=4096)
def name_key(name: str) -> str:
    """A name's identity: the confusable skeleton of its case-folded NFKC form."""
    return _skeleton(normalize(name).casefold())


@lru_cache(maxsize=4096)
def alike_key(name: str) -> str:
    """The skeleton before case-folding, folded: catches ``paypaI``/``paypal``, ``I``/``l``."""
    return _skeleton(normalize(name)).casefold()


def name_keys(name: str) -> tuple[str, str]:
    """Both keys of a name; two names clash when either of them is equal."""
    return name_key(name), alike_key(name)


_RESERVED_KEYS: Final = frozenset(k for n in RESERVED_NAMES for k in name_keys(n))


def _char_error(name: str) -> str | None:
    marks = 0
    digit_zero: int | None = None
    for index, char in enumerate(name):
        category = unicodedata.category(char)
        code = ord(char)
        if icu.Char.hasBinaryProperty(code, _IGNORABLE) or icu.Char.hasBinaryProperty(
            code, _BIDI_CONTROL
        ):
            return f"invisible character U+{code:04X}"
        if category[0] == "M":
            marks += 1
            previous = unicodedata.category(name[index - 1])[0] if index else ""
            if marks > MAX_MARKS or (marks == 1 and previous not in ("L", "N")):
                return f"a combining mark (U+{code:04X}) must follow a letter"
            continue
        marks = 0
        if category == "Nd":
            zero = code - unicodedata.decimal(char)
            if digit_zero is not None and zero != digit_zero:
                return "digits of two different kinds"
            digit_zero = zero
        elif category[0] not in ("L", "N") and char not in _PUNCT:
            return f"{char!r} is not a letter, a digit, '_', '-' or '.'"
    return None


def name_error(name: str) -> str | None:
    """Why ``name`` (as given) is not a valid name, or None when it is one."""
    shown = normalize(name)
    if not 1 <= len(shown) <= MAX_NAME:
        return "names are 1-24 characters"
    problem = _char_error(shown)
    if problem is not None:
        return problem
    # digits and _-. belong to no script for this rule: check the rest
    letters = "".join(c for c in shown if unicodedata.category(c) != "Nd" and c not in _PUNCT)
    if letters and _checker.check(letters):
        return "letters of more than one script"
    if not _RESERVED_KEYS.isdisjoint(name_keys(shown)):
        return "that name is reserved"
    return None


def valid_name(name: str) -> bool:
    """True when ``name`` may be used (see the module docstring for the rules)."""
    return name_error(name) is None
