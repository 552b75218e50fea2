"""What a typed line means: a message, or a command, for ``join`` and for text-mode sessions.

One alias table (:data:`VERBS`) and one parser (:func:`parse_command`) serve both front
ends that read lines from people: ``chatcli join`` (interactive or piped; see
:func:`parse_input`) and the server's text mode for ``nc``/``telnet`` users
(:func:`chatcli.core.protocol.parse_text_line` turns the parsed command into a wire event).
The two modes differ only where the table says so:

- ``join`` also has the client-only commands ``/time`` and ``/record`` and the dot
  shortcuts (``.q``, ``.l``...); a text session answers ``/time`` as an unknown command
  and says ``.q`` to the room, since it has no clock display or recorder to toggle.
- text mode also has bare words: ``login NAME``, ``say TEXT``, ``look``, ``logout``,
  ``help`` (the last three only alone on the line: ``look at this`` is chat).

In both, ``//text`` says ``/text`` and any other line not starting with ``/`` is said.
Pure parsing, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final, Literal

from chatcli.core.sanitize import clean_text

__all__ = [
    "ERROR_MARK",
    "HELP",
    "TEXT_HELP",
    "VERBS",
    "Command",
    "Mode",
    "Verb",
    "parse_command",
    "parse_input",
]

Mode = Literal["join", "text"]
#: how a verb reads the rest of its line: nothing, one word, text, or a name and text
Operands = Literal["none", "arg", "text", "to_text"]
#: what starts an error line in text mode, as in the layout of the ``error`` event
ERROR_MARK: Final = "!! "
#: unknown command words are echoed back at most this long
_SHOWN_WORD: Final = 40


@dataclass(frozen=True, slots=True)
class Command:
    """A parsed input line: ``verb`` is a Verb's name, ``say`` or ``unknown``.

    ``arg`` and ``text`` carry its operands; ``error`` is set instead (a usage line, or
    the unknown-command reply) when the line was a command used wrongly.
    """

    verb: str
    arg: str = ""
    text: str = ""
    error: str = ""


@dataclass(frozen=True, slots=True)
class Verb:
    """One command and every spelling of it.

    ``slashes`` work in both modes (when the verb exists there); ``dot`` only in ``join``,
    ``word`` (a bare word) only in text mode. ``modes`` says where the verb exists.
    """

    name: str
    usage: str
    description: str
    operands: Operands = "none"
    slashes: tuple[str, ...] = ()
    dot: str = ""
    word: str = ""
    modes: tuple[Mode, ...] = ("join", "text")


VERBS: Final[tuple[Verb, ...]] = (
    Verb("help", "/help", "show this help", slashes=("/help", "/?"), dot=".h", word="help"),
    Verb(
        "who",
        "/who",
        "list the users in this room",
        slashes=("/who", "/users", "/names", "/look"),
        dot=".l",
        word="look",
    ),
    Verb(
        "time",
        "/time",
        "toggle timestamps in front of each line",
        slashes=("/time",),
        dot=".t",
        modes=("join",),
    ),
    Verb(
        "record",
        "/record",
        "start or stop recording to recordings/",
        slashes=("/record",),
        dot=".r",
        modes=("join",),
    ),
    Verb(
        "quit",
        "/quit",
        "leave the chat",
        slashes=("/quit", "/exit", "/bye"),
        dot=".q",
        word="logout",
    ),
    Verb(
        "msg",
        "/msg NAME TEXT",
        "send a direct message",
        "to_text",
        slashes=("/msg", "/dm", "/tell"),
    ),
    Verb("me", "/me TEXT", "say an action (* alice waves)", "text", slashes=("/me",)),
    Verb("join", "/join ROOM", "leave this room and enter ROOM", "arg", slashes=("/join",)),
    Verb("rooms", "/rooms", "list the rooms", slashes=("/rooms", "/list")),
    Verb("login", "login NAME", "log in as NAME", "arg", word="login", modes=("text",)),
    Verb("say", "say TEXT", "say TEXT to the room", "text", word="say", modes=("text",)),
)


def _spellings(mode: Mode) -> dict[str, Verb]:
    table: dict[str, Verb] = {}
    for verb in VERBS:
        if mode not in verb.modes:
            continue
        own = verb.slashes + ((verb.dot,) if verb.dot and mode == "join" else ())
        own += (verb.word,) if verb.word and mode == "text" else ()
        table.update(dict.fromkeys(own, verb))
    return table


_SPELLINGS: Final[dict[Mode, dict[str, Verb]]] = {
    "join": _spellings("join"),
    "text": _spellings("text"),
}

#: ``join``'s /help: one row per command
HELP: Final = "\n".join(
    [f"  {v.usage:<16} {v.dot:<3} {v.description}" for v in VERBS if "join" in v.modes]
    + [f"  {'//TEXT':<16} {'':<3} say TEXT starting with '/'"]
)
#: a text session's help: one line, as an ``nc`` window is narrow and scrolls
TEXT_HELP: Final = (
    "commands: "
    + " | ".join(
        [v.usage for v in VERBS if v.word and not v.slashes]
        + [v.word for v in VERBS if v.word and v.slashes and v.name != "help"]
        + [v.usage for v in VERBS if v.slashes and "text" in v.modes]
    )
    + "; any other line is said to the room"
)


def _shown(word: str) -> str:
    word = clean_text(word)
    return word if len(word) <= _SHOWN_WORD else word[:_SHOWN_WORD] + "..."


def parse_command(line: str, mode: Mode) -> Command:
    """Classify one input line for ``mode``. Plain text becomes ``say``; ``//x`` says ``/x``.

    In text mode an ``error`` is the line the session is sent, so it starts with
    :data:`ERROR_MARK` like the server's other errors; ``join`` marks it when shown.
    """
    command = _parse(line, mode)
    if command.error and mode == "text":
        return replace(command, error=ERROR_MARK + command.error)
    return command


def _parse(line: str, mode: Mode) -> Command:
    stripped = line.strip()
    if stripped.startswith("//"):
        return Command("say", text=stripped[1:])
    word, _, rest = stripped.partition(" ")
    rest = rest.strip()
    verb = _SPELLINGS[mode].get(word.lower())
    if verb is not None and rest and verb.operands == "none" and not word.startswith(("/", ".")):
        verb = None  # a bare word that takes no argument: "look at this" is chat
    if verb is None:
        if stripped.startswith("/"):
            return Command("unknown", arg=word, error=f"unknown command {_shown(word)}; try /help")
        return Command("say", text=line)
    usage = Command(verb.name, error=f"usage: {verb.usage}")
    match verb.operands:
        case "to_text":
            to, _, text = rest.partition(" ")
            if not to or not text.strip():
                return usage
            return Command(verb.name, arg=to, text=text.strip())
        case "text" if verb.name == "say":
            return Command("say", text=rest)  # empty text is refused where it is checked
        case "text":
            return Command(verb.name, text=rest) if rest else usage
        case "arg":
            arg = rest.lstrip("#") if verb.name == "join" else rest
            return Command(verb.name, arg=arg) if rest else usage
    return Command(verb.name)


def parse_input(line: str) -> Command:
    """Classify one line typed into ``chatcli join``."""
    return parse_command(line, "join")
