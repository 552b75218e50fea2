"""How an event looks on screen: the one place that decides it, for ``join`` and ``replay``.

A :class:`Renderer` turns server events (and transcript header/end lines) into
``rich.text.Text`` built piece by piece, never from markup strings, so ``[red]`` in a
message prints as typed. Every string a peer or a transcript supplies passes through
:func:`chatcli.protocol.clean_text` here, because ``Text`` lets escape sequences through
to the terminal. ``plain`` is the same line without styles: IRC-style logs for pipes
and ``replay --format text``.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Iterable
from datetime import datetime, tzinfo
from typing import Final

from rich.text import Text

from chatcli.core.protocol import (
    DirectMessage,
    Error,
    Joined,
    Left,
    Msg,
    Ready,
    RoomList,
    Users,
    Welcome,
    clean_text,
    name_key,
)
from chatcli.transcript import End, Header

__all__ = ["LEAVE_REASON_TEXT", "PALETTE", "Renderer", "user_colour"]

# Mid-luminance 256-colour entries, readable on dark and light backgrounds alike; no pure
# red (errors use it) and no yellow/white/black (each vanishes on some background).
PALETTE: Final = (
    "color(33)",  # dodger blue
    "color(35)",  # spring green
    "color(37)",  # dark cyan
    "color(62)",  # slate blue
    "color(97)",  # medium purple
    "color(128)",  # dark violet
    "color(130)",  # dark orange
    "color(133)",  # medium orchid
    "color(166)",  # orange red
    "color(168)",  # hot pink
    "color(172)",  # orange
    "color(71)",  # sea green
)
TIME_STYLE: Final = "dim"
SYSTEM_STYLE: Final = "dim"
ERROR_STYLE: Final = "red"
DM_MARK_STYLE: Final = "bold magenta"
OWN_STYLE: Final = "bold"
MENTION_STYLE: Final = "bold"

LEAVE_REASON_TEXT: Final = {
    "quit": "quit",
    "part": "moved to another room",
    "lost": "connection lost",
    "timeout": "timed out",
    "slow": "too slow to keep up",
    "kicked": "kicked",
}


def clean_text_lines(text: str) -> str:
    """clean_text for multi-line text: each line cleaned, the line breaks kept."""
    return "\n".join(clean_text(line) for line in text.split("\n"))


def user_colour(name: str) -> str:
    """The style of a user's name: the same for a name in any case, in every run."""
    return PALETTE[zlib.crc32(name_key(clean_text(name)).encode("utf-8")) % len(PALETTE)]


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

    def render(self, event: object) -> Text | None:
        """The styled line(s) for ``event``, or None for events that show nothing (ping)."""
        match event:
            case Msg():
                return self._msg(event)
            case DirectMessage():
                return self._dm(event)
            case Joined():
                return self._join(event)
            case Left():
                return self._leave(event)
            case Ready():
                return self._ready(event)
            case Users():
                return self._users(event)
            case RoomList():
                return self._rooms(event)
            case Error():
                return self._error(event)
            case Welcome():
                return self._welcome(event)
            case Header():
                return self._header(event)
            case End():
                return self._end(event)
        return None

    def plain(self, event: object) -> str | None:
        """The same line(s) as :meth:`render`, as plain text (an IRC-style log line)."""
        text = self.render(event)
        return None if text is None else text.plain

    def notice(self, text: str, error: bool = False) -> Text:
        """A line of the client's own (help, toggles, local errors), set apart from chat."""
        line = Text()
        line.append("!! " if error else "** ", ERROR_STYLE if error else SYSTEM_STYLE)
        line.append(clean_text_lines(text), ERROR_STYLE if error else SYSTEM_STYLE)
        return line

    def is_me(self, name: str) -> bool:
        """True when ``name`` is the local user's."""
        return self.me is not None and name_key(name) == name_key(self.me)

    # ---------------------------------------------------------------- pieces

    def _stamp(self, ts: float | None) -> Text:
        """A line started with its timestamp, when timestamps are on."""
        line = Text()
        if self.timestamps:
            when = self._clock() if ts is None else ts
            line.append(datetime.fromtimestamp(when, self.tz).strftime("%H:%M:%S "), TIME_STYLE)
        return line

    def _name(self, name: str, before: str = "", after: str = "") -> Text:
        style = user_colour(name)
        if self.is_me(name):
            style = f"{OWN_STYLE} {style}"
        return Text(before + clean_text(name) + after, style=style)

    def _system(self, ts: float | None, *parts: str | Text) -> Text:
        """A dim ``-- ...`` line; plain strings in ``parts`` are untrusted and cleaned."""
        line = self._stamp(ts)
        body = Text("-- ", style=SYSTEM_STYLE)
        for part in parts:
            body.append(part if isinstance(part, Text) else clean_text(part))
        line.append_text(body)
        return line

    def _names(self, names: Iterable[str]) -> Text:
        return Text(", ").join(self._name(name) for name in names)

    def _mentions_me(self, text: str) -> bool:
        if self.me is None:
            return False
        me = name_key(self.me)
        words = "".join(c if c.isalnum() or c in "_-." else " " for c in text.lower()).split()
        return any(word.strip(".") == me for word in words)

    # ---------------------------------------------------------------- events

    def _msg(self, event: Msg) -> Text:
        line = self._stamp(event.ts)
        if self.show_room:
            line.append(f"[{clean_text(event.room)}] ", SYSTEM_STYLE)
        own = self.is_me(event.from_)
        if event.action:
            line.append_text(self._name(event.from_, "* "))
        else:
            line.append_text(self._name(event.from_, "<", ">"))
        text_style = ""
        if own:
            text_style = OWN_STYLE
        elif self._mentions_me(event.text):
            text_style = MENTION_STYLE
        line.append(" ")
        line.append(clean_text(event.text), text_style)
        return line

    def _dm(self, event: DirectMessage) -> Text:
        line = self._stamp(event.ts)
        line.append("[dm] ", DM_MARK_STYLE)
        line.append_text(self._name(event.from_))
        line.append(" -> ", SYSTEM_STYLE)
        line.append_text(self._name(event.to))
        line.append(": ")
        line.append(clean_text(event.text), OWN_STYLE if self.is_me(event.from_) else "")
        return line

    def _join(self, event: Joined) -> Text:
        return self._system(event.ts, self._name(event.name), " joined ", event.room)

    def _leave(self, event: Left) -> Text:
        reason = LEAVE_REASON_TEXT.get(event.reason, event.reason)
        return self._system(
            event.ts, self._name(event.name), " left ", event.room, " (", reason, ")"
        )

    def _ready(self, event: Ready) -> Text:
        lines = [self._msg(message) for message in event.history]
        here = self._names(event.users)
        more = " (older messages were not kept)" if event.truncated else ""
        lines.append(
            self._system(
                None, "you are ", self._name(event.name), " in ", event.room, "; here: ", here, more
            )
        )
        return Text("\n").join(lines)

    def _users(self, event: Users) -> Text:
        return self._system(None, "in ", event.room, ": ", self._names(event.users) or "nobody")

    def _rooms(self, event: RoomList) -> Text:
        rooms = ", ".join(f"{clean_text(r.name)} ({r.users})" for r in event.rooms)
        return self._system(None, "rooms: ", rooms or "none")

    def _error(self, event: Error) -> Text:
        line = self._stamp(None)
        line.append("!! ", ERROR_STYLE)
        line.append(clean_text(event.code), f"bold {ERROR_STYLE}")
        line.append(": " + clean_text(event.message), ERROR_STYLE)
        return line

    def _welcome(self, event: Welcome) -> Text:
        online = ("; online: ", self._names(event.users)) if event.users else ()
        return self._system(None, "connected to ", event.server, *online)

    def _header(self, event: Header) -> Text:
        started = event.started.timestamp()
        when = datetime.fromtimestamp(started, self.tz).strftime("%Y-%m-%d %H:%M:%S %Z")
        parts = ["recording started ", when.rstrip()]
        if event.room:
            parts += [" in ", event.room]
        if event.name:
            parts += [" by ", event.name]
        parts += [" (", event.source, ", ", event.recorder, ")"]
        return self._system(started, *parts)

    def _end(self, event: End) -> Text:
        return self._system(event.ts, f"recording ended ({event.events} events)")
