"""What ``join`` does with typed and pasted input before it is sent: no I/O, no terminal.

- :func:`paste_lines`: a pasted block becomes one line per message, in order.
- :func:`expand_line`: a line too long for one message becomes several, cut at word
  boundaries (inside a word only when the word alone is longer than the limit), each
  keeping its command (``/me``, ``/msg NAME``), as irssi and WeeChat do.
- :class:`Roster`: the names in the room, kept from ``ready``, ``users``, ``join`` and
  ``leave`` events, for completion.
- :func:`completions`: what Tab offers for the word being typed: names, or commands from
  the one command table (:data:`chatcli.core.commands.VERBS`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from chatcli.core.commands import VERBS, parse_input
from chatcli.core.protocol import MAX_TEXT, Joined, Left, Ready, Users, clean_text, name_key

__all__ = ["PASTE_CONFIRM", "Roster", "completions", "expand_line", "paste_lines", "split_text"]

#: a paste of more lines than this is confirmed once before it is sent
PASTE_CONFIRM: Final = 10


def paste_lines(block: str) -> list[str]:
    """The lines of a pasted ``block`` (any line ending), blank ones dropped."""
    text = block.replace("\r\n", "\n").replace("\r", "\n")
    return [line for line in text.split("\n") if line.strip()]


def split_text(text: str, limit: int = MAX_TEXT) -> list[str]:
    """``text`` cut into pieces of at most ``limit`` code points that concatenate to it.

    Each cut is just after a run of spaces, so words stay whole; a word longer than
    ``limit`` on its own is cut where the limit falls.
    """
    pieces: list[str] = []
    while len(text) > limit:
        window = text[: limit + 1]
        cut = window.rstrip(" ").rfind(" ") + 1  # just after the last space that fits
        if cut <= 0 or cut > limit:
            cut = limit
        pieces.append(text[:cut])
        text = text[cut:]
    if text:
        pieces.append(text)
    return pieces


def expand_line(line: str, limit: int = MAX_TEXT) -> list[str]:
    """``line`` as one or more input lines whose messages each fit in ``limit``.

    Only messages are split (text, ``/me``, ``/msg``); the text is measured once cleaned,
    as the server measures it. Every other line is returned as it is.
    """
    command = parse_input(line)
    if command.error or command.verb not in ("say", "me", "msg"):
        return [line]
    text = clean_text(command.text)
    if len(text) <= limit:
        return [line]
    pieces = split_text(text, limit)
    if command.verb == "me":
        return [f"/me {piece}" for piece in pieces]
    if command.verb == "msg":
        return [f"/msg {command.arg} {piece}" for piece in pieces]
    # a piece that looks like a command is said as typed: "//x" says "/x"
    return ["/" + piece if piece.startswith("/") else piece for piece in pieces]


class Roster:
    """The names present in the current room, as the server last described it."""

    def __init__(self) -> None:
        self._names: dict[str, str] = {}

    def update(self, event: object) -> None:
        """Follow ``event`` if it says who is in the room (ready, users, join, leave)."""
        if isinstance(event, (Ready, Users)):
            self._names = {name_key(n): clean_text(n) for n in event.users}
        elif isinstance(event, Joined):
            self._names[name_key(event.name)] = clean_text(event.name)
        elif isinstance(event, Left):
            self._names.pop(name_key(event.name), None)

    @property
    def names(self) -> list[str]:
        """The names present, sorted case-insensitively."""
        return sorted(self._names.values(), key=str.casefold)


def _commands() -> list[str]:
    return sorted({spelling for verb in VERBS if "join" in verb.modes for spelling in verb.slashes})


COMMANDS: Final = tuple(_commands())


def completions(before_cursor: str, names: Iterable[str]) -> tuple[str, list[str]]:
    """The word being completed and what may replace it, for the text before the cursor.

    A first word starting with ``/`` completes to a command; any other word to a name in
    the room (case-insensitive prefix). A name completed at the start of the line gets
    ``": "`` after it, the way people address someone.
    """
    word = before_cursor.rsplit(" ", 1)[-1]
    first = " " not in before_cursor
    if first and word.startswith("/"):
        return word, [c for c in COMMANDS if c.startswith(word.lower())]
    if not word:
        return word, []
    folded = word.casefold()
    matches = [n for n in names if n.casefold().startswith(folded)]
    return word, [f"{n}: " if first else n for n in matches]
