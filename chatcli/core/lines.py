"""What a line shows, without deciding how it looks: spans of text tagged with a role.

Every front end that prints events as lines (``join``, ``replay``, text-mode sessions of
``nc`` users, ``replay --to --dry-run``) gets them from the one layout per event type in
:mod:`chatcli.core.events`. A layout returns :class:`Line` objects: the words in order,
each :class:`Span` tagged with a :class:`Role` (a time, a user's name, message text...).
:meth:`Line.plain` joins them into the plain-text line; ``chatcli.ui.render`` maps the
roles to terminal styles. So the words are decided once, here, and the look once, there.
Untrusted strings are cleaned (:func:`chatcli.core.sanitize.clean_text`) as spans are made.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Final, NamedTuple

from chatcli.core.sanitize import clean_text

__all__ = [
    "TEXT_MODE",
    "Line",
    "LineOptions",
    "Role",
    "Span",
    "name",
    "names",
    "notice",
    "plain_text",
    "stamp",
]


class Role(enum.Enum):
    """What a span of a line is; a renderer styles each role its own way."""

    PLAIN = "plain"  #: words of the line itself, unstyled
    TIME = "time"  #: the ``HH:MM:SS`` stamp in front of a line
    ROOM = "room"  #: the ``[room]`` in front of a message
    NAME = "name"  #: a user's name (``who``), possibly decorated: ``<alice>``
    TEXT = "text"  #: what ``who`` said in a room (own lines and mentions stand out)
    DM_MARK = "dm_mark"  #: the ``[dm]`` in front of a direct message
    DM_TEXT = "dm_text"  #: what ``who`` said in a direct message
    DIM = "dim"  #: punctuation set back from the words: `` -> ``
    ERROR = "error"  #: an error's words
    ERROR_CODE = "error_code"  #: an error's code


class Span(NamedTuple):
    """A piece of a line: its (clean) text, its role and, for names and text, whose."""

    text: str
    role: Role = Role.PLAIN
    who: str | None = None


@dataclass(frozen=True, slots=True)
class Line:
    """One line: its spans in order. A ``notice`` (``-- ...``) is set back as a whole."""

    spans: tuple[Span, ...]
    notice: bool = False

    @property
    def plain(self) -> str:
        """The line as plain text."""
        return "".join(span.text for span in self.spans)


@dataclass(frozen=True, slots=True)
class LineOptions:
    """How lines are laid out.

    ``timestamps`` starts each line with ``HH:MM:SS`` in ``tz`` (local time when None);
    events that carry no time are stamped with ``clock()``, or left unstamped when
    ``clock`` is None. ``show_room`` starts each message with ``[room]``.
    """

    timestamps: bool = False
    show_room: bool = False
    tz: tzinfo | None = None
    clock: Callable[[], float] | None = None


#: text-mode sessions (``nc``, ``telnet``): local times, rooms shown, no invented times
TEXT_MODE: Final = LineOptions(timestamps=True, show_room=True)


def stamp(ts: float | None, options: LineOptions) -> list[Span]:
    """The time span a line starts with, or none (timestamps off, or no time known)."""
    if not options.timestamps:
        return []
    if ts is None:
        if options.clock is None:
            return []
        ts = options.clock()
    return [Span(datetime.fromtimestamp(ts, options.tz).strftime("%H:%M:%S "), Role.TIME)]


def name(who: str, before: str = "", after: str = "") -> Span:
    """A user's name, cleaned, with decorations around it (``<``, ``>``, ``* ``)."""
    return Span(before + clean_text(who) + after, Role.NAME, who)


def names(people: Iterable[str]) -> list[Span]:
    """Names separated by ``, ``."""
    spans: list[Span] = []
    for who in people:
        if spans:
            spans.append(Span(", "))
        spans.append(name(who))
    return spans


def notice(ts: float | None, options: LineOptions, *parts: str | Span) -> Line:
    """A ``-- ...`` line about the chat; plain strings in ``parts`` are untrusted: cleaned."""
    spans = stamp(ts, options)
    spans.append(Span("-- "))
    spans.extend(part if isinstance(part, Span) else Span(clean_text(part)) for part in parts)
    return Line(tuple(spans), notice=True)


def plain_text(lines: Sequence[Line]) -> str | None:
    """Lines as plain text, one per row; None when there are none (nothing to show)."""
    if not lines:
        return None
    return "\n".join(line.plain for line in lines)
