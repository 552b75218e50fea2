"""How an event looks on screen: the one place that decides it, for ``join`` and ``replay``.

What a line says is decided once per event type, by its layout in
:mod:`chatcli.core.events` (spans of clean text tagged with roles, see
:mod:`chatcli.core.lines`): text-mode sessions of ``nc`` users get the same words.
A :class:`Renderer` decides how those words look: it maps each role to a style and
builds ``rich.text.Text`` piece by piece, never from markup strings, so ``[red]`` in a
message prints as typed. ``plain`` is the same line without styles: IRC-style logs for
pipes and ``replay --format text``. Transcript header and end lines are laid out here,
as they are not wire events.
"""

from __future__ import annotations

import time
import unicodedata
from collections.abc import Callable, Sequence
from datetime import datetime, tzinfo
from typing import Final

from msgspec.structs import replace
from rich.text import Text

from chatcli.core.events import LEAVE_REASON_TEXT, event_lines
from chatcli.core.lines import Line, LineOptions, Role, Span, name, notice, plain_text
from chatcli.core.protocol import DirectMessage, Msg, Ready, clean_text, name_key
from chatcli.transcript import End, Header
from chatcli.ui.board_activity import BoardSummary, summary_text

__all__ = [
    "LEAVE_REASON_TEXT",
    "PALETTE",
    "PALETTE_RGB",
    "Renderer",
    "colour_index",
    "fnv1a_32",
    "user_colour",
]

#: Name colours: the xterm 256-colour entries and their RGB (the web page uses the RGB),
#: mid-luminance so each reads on dark and light backgrounds; no pure red (errors use
#: it), no yellow, white or black (each vanishes on some background). The order matters:
#: with FNV-1a below it gives alice, bob, carol, dave, eve and mallory six different
#: colours. docs/colours.md writes the algorithm down for other front ends.
PALETTE_RGB: Final = (
    (33, "#0087ff"),  # dodger blue
    (35, "#00af5f"),  # spring green
    (37, "#00afaf"),  # dark cyan
    (62, "#5f5fd7"),  # slate blue
    (97, "#875faf"),  # medium purple
    (128, "#af00d7"),  # dark violet
    (130, "#af5f00"),  # dark orange
    (133, "#af5faf"),  # medium orchid
    (166, "#d75f00"),  # orange red
    (168, "#d75f87"),  # hot pink
    (172, "#d78700"),  # orange
    (71, "#5faf5f"),  # sea green
)
PALETTE: Final = tuple(f"color({index})" for index, _ in PALETTE_RGB)
TIME_STYLE: Final = "dim"
SYSTEM_STYLE: Final = "dim"
ERROR_STYLE: Final = "red"
DM_MARK_STYLE: Final = "bold magenta"
OWN_STYLE: Final = "bold"
MENTION_STYLE: Final = "bold reverse"
HISTORY_STYLE: Final = "dim"
#: the rule between the history shown on entry and what is said live
HISTORY_RULE: Final = "──── history above, live below ────"


def clean_text_lines(text: str) -> str:
    """clean_text for multi-line text: each line cleaned, the line breaks kept."""
    return "\n".join(clean_text(line) for line in text.split("\n"))


def fnv1a_32(data: bytes) -> int:
    """The 32-bit FNV-1a hash of ``data``: tiny, stable, easy to write in any language."""
    value = 0x811C9DC5
    for byte in data:
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return value


def colour_key(name: str) -> str:
    """What a name's colour is computed from: cleaned, NFKC-normalised, case-folded.

    Not the name's identity key (a confusable skeleton): a web page must be able to compute
    the same colour with nothing but ``normalize("NFKC")`` and a case fold.
    """
    return unicodedata.normalize("NFKC", clean_text(name)).casefold()


def colour_index(name: str) -> int:
    """Which PALETTE entry ``name`` gets: FNV-1a 32 of its colour key's UTF-8, modulo 12."""
    return fnv1a_32(colour_key(name).encode("utf-8")) % len(PALETTE_RGB)


def user_colour(name: str) -> str:
    """The style of a user's name: the same for a name in any case, in every run."""
    return PALETTE[colour_index(name)]


class Renderer:
    """Renders events as lines, the same way for ``join`` and ``replay``.

    ``me`` (the local user, case-insensitive) makes your own lines bold and highlights
    messages that mention you; ``timestamps`` prefixes each line with ``HH:MM:SS`` in
    ``tz`` (local time when None); ``show_room`` prefixes messages with ``[room]``.
    Events that carry no time (``users``, ``error``...) are stamped with ``clock()``.
    """

    def __init__(
        self,
        *,
        me: str | None = None,
        timestamps: bool = False,
        show_room: bool = False,
        tz: tzinfo | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.me = me
        self.timestamps = timestamps
        self.show_room = show_room
        self.tz = tz
        self._clock = clock

    # ---------------------------------------------------------------- public API

    def lines(self, event: object) -> Sequence[Line]:
        """What ``event`` shows as, laid out with this renderer's options (styles aside)."""
        options = LineOptions(
            timestamps=self.timestamps, show_room=self.show_room, tz=self.tz, clock=self._clock
        )
        if isinstance(event, Header):
            return [self._header(event, options)]
        if isinstance(event, End):
            return [notice(event.ts, options, f"recording ended ({event.events} events)")]
        if isinstance(event, BoardSummary):  # a burst of board activity (board_activity)
            room = f" in {event.room}" if self.show_room else ""
            return [notice(event.ts, options, name(event.who), f" {summary_text(event)}{room}")]
        return event_lines(event, options)

    def render(self, event: object) -> Text | None:
        """The styled line(s) for ``event``, or None for events that show nothing (ping).

        The history a ``ready`` carries is set apart from live lines: dim, always with
        its times, and followed by a dim rule (``history above, live below``).
        """
        if isinstance(event, Ready) and event.history:
            return self._ready_with_history(event)
        lines = [self._styled(line) for line in self.lines(event)]
        if not lines:
            return None
        return lines[0] if len(lines) == 1 else Text("\n").join(lines)

    def _ready_with_history(self, event: Ready) -> Text:
        past = LineOptions(timestamps=True, show_room=self.show_room, tz=self.tz, clock=None)
        lines = []
        for message in event.history:
            for line in event_lines(message, past):
                styled = self._styled(line)
                styled.stylize(HISTORY_STYLE)
                lines.append(styled)
        lines.append(Text(HISTORY_RULE, style=HISTORY_STYLE))
        now = replace(event, history=[])
        lines.extend(self._styled(line) for line in self.lines(now))
        return Text("\n").join(lines)

    def plain(self, event: object) -> str | None:
        """The same line(s) as :meth:`render`, as plain text (an IRC-style log line)."""
        return plain_text(self.lines(event))

    def notice(self, text: str, error: bool = False) -> Text:
        """A line of the client's own (help, toggles, local errors), set apart from chat."""
        line = Text()
        line.append("!! " if error else "** ", ERROR_STYLE if error else SYSTEM_STYLE)
        line.append(clean_text_lines(text), ERROR_STYLE if error else SYSTEM_STYLE)
        return line

    def is_me(self, name: str) -> bool:
        """True when ``name`` is the local user's."""
        return self.me is not None and name_key(name) == name_key(self.me)

    # ---------------------------------------------------------------- styles

    def _styled(self, line: Line) -> Text:
        """``line`` with each span styled by its role; a notice is dim after its time."""
        text = Text()
        body = Text(style=SYSTEM_STYLE) if line.notice else text
        for span in line.spans:
            target = text if span.role is Role.TIME else body
            target.append(span.text, self._style(span))
        if line.notice:
            text.append_text(body)
        return text

    def _style(self, span: Span) -> str | None:
        role = span.role
        if role is Role.PLAIN:
            return None
        if role is Role.NAME:
            who = span.who or ""
            style = user_colour(who)
            return f"{OWN_STYLE} {style}" if self.is_me(who) else style
        if role is Role.TEXT:
            if self.is_me(span.who or ""):
                return OWN_STYLE
            return MENTION_STYLE if self._mentions_me(span.text) else ""
        if role is Role.DM_TEXT:
            return OWN_STYLE if self.is_me(span.who or "") else ""
        return _ROLE_STYLES[role]

    def mentions_me(self, event: object) -> bool:
        """True for someone else's message that names the local user, or a DM to them."""
        if isinstance(event, DirectMessage):
            return not self.is_me(event.from_) and self.is_me(event.to)
        if isinstance(event, Msg):
            return not self.is_me(event.from_) and self._mentions_me(event.text)
        return False

    def _mentions_me(self, text: str) -> bool:
        if self.me is None:
            return False
        me = name_key(self.me)
        words = "".join(c if c.isalnum() or c in "_-." else " " for c in text.lower()).split()
        return any(word.strip(".") == me for word in words)

    def _header(self, event: Header, options: LineOptions) -> Line:
        started = event.started.timestamp()
        when = datetime.fromtimestamp(started, self.tz).strftime("%Y-%m-%d %H:%M:%S %Z")
        parts = ["recording started ", when.rstrip()]
        if event.room:
            parts += [" in ", event.room]
        if event.name:
            parts += [" by ", event.name]
        parts += [" (", event.source, ", ", event.recorder, ")"]
        return notice(started, options, *parts)


#: the style of each role that does not depend on who is reading
_ROLE_STYLES: Final = {
    Role.TIME: TIME_STYLE,
    Role.ROOM: SYSTEM_STYLE,
    Role.DM_MARK: DM_MARK_STYLE,
    Role.DIM: SYSTEM_STYLE,
    Role.ERROR: ERROR_STYLE,
    Role.ERROR_CODE: f"bold {ERROR_STYLE}",
}
