"""What a typed line means: a message, or a command, for ``join`` and for text-mode sessions.

One alias table (:data:`VERBS`) and one parser (:func:`parse_command`) serve both front
ends that read lines from people: ``chatcli join`` (interactive or piped; see
:func:`parse_input`) and the server's text mode for ``nc``/``telnet`` users
(:func:`chatcli.core.protocol.parse_text_line` turns the parsed command into a wire event).
The two modes differ only where the table says so:

- ``join`` also has the client-only commands ``/time`` and ``/record`` and the dot
  shortcuts (``.q``, ``.l``...); a text session answers ``/time`` as an unknown command
  and says ``.q`` to the room, since it has no clock display or recorder to toggle.
- text mode also has bare words: ``login NAME [PASSWORD]``, ``pass PASSWORD``, ``say
  TEXT``, ``look``, ``logout``, ``help`` (the last three only alone on the line: ``look
  at this`` is chat).
- ``/register`` and ``/password`` take the passwords on the line in text mode; ``join``
  asks for them with hidden input instead (and refuses them typed on the line).
- ``join`` alone has ``/ignore`` and ``/unignore`` (hiding is done on the screen).

In both, ``//text`` says ``/text`` and any other line not starting with ``/`` is said.
Pure parsing, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final, Literal

from chatcli.core.sanitize import clean_text

__all__ = [
    "DEFAULT_MUTE_MINUTES",
    "ERROR_MARK",
    "HELP",
    "MAX_MINUTES",
    "TEXT_HELP",
    "VERBS",
    "Command",
    "Mode",
    "Verb",
    "parse_command",
    "parse_input",
]

Mode = Literal["join", "text"]
#: how a verb reads the rest of its line: nothing, one word, text, a name and text, a
#: word and optional text (``/kick NAME [REASON]``), a name and optional minutes then
#: text (``/ban NAME [MINUTES] [REASON]``), or an optional word (``/ignore [NAME]``)
Operands = Literal["none", "arg", "text", "to_text", "arg_rest", "minutes", "opt_arg"]
#: the longest timed ban or mute, in minutes (the wire's limit too)
MAX_MINUTES: Final = 10_000_000
#: ``/mute NAME`` without minutes mutes for this long
DEFAULT_MUTE_MINUTES: Final = 10
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
    #: ``/ban`` and ``/mute``: the minutes given (None: the verb's default)
    minutes: int | None = None


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
    Verb("nick", "/nick NAME", "change your name to NAME", "arg", slashes=("/nick",)),
    # accounts: join asks for passwords with hidden input, a text session types them
    Verb(
        "register",
        "/register",
        "claim your name: asks for a password twice (hidden)",
        slashes=("/register",),
        modes=("join",),
    ),
    Verb(
        "register",
        "/register PASSWORD",
        "claim your name with PASSWORD (8-256 characters)",
        "text",
        slashes=("/register",),
        modes=("text",),
    ),
    Verb(
        "password",
        "/password",
        "change your account's password (asks, hidden)",
        slashes=("/password",),
        modes=("join",),
    ),
    Verb(
        "password",
        "/password OLD NEW",
        "change your account's password",
        "to_text",
        slashes=("/password",),
        modes=("text",),
    ),
    # operators (anyone else is told forbidden)
    Verb("kick", "/kick NAME [REASON]", "operator: remove NAME", "arg_rest", slashes=("/kick",)),
    Verb(
        "ban",
        "/ban NAME [MINUTES] [REASON]",
        "operator: kick NAME, refuse it for MINUTES (none: until /unban)",
        "minutes",
        slashes=("/ban",),
    ),
    Verb("unban", "/unban NAME", "operator: lift NAME's ban", "arg", slashes=("/unban",)),
    Verb(
        "mute",
        "/mute NAME [MINUTES]",
        f"operator: refuse NAME's messages for MINUTES (default {DEFAULT_MUTE_MINUTES})",
        "minutes",
        slashes=("/mute",),
    ),
    Verb("unmute", "/unmute NAME", "operator: end NAME's mute", "arg", slashes=("/unmute",)),
    # join only: hide someone on this screen
    Verb(
        "ignore",
        "/ignore [NAME]",
        "hide NAME's messages here (alone: list who is hidden)",
        "opt_arg",
        slashes=("/ignore",),
        modes=("join",),
    ),
    Verb(
        "unignore",
        "/unignore NAME",
        "show NAME's messages again",
        "arg",
        slashes=("/unignore",),
        modes=("join",),
    ),
    Verb(
        "login",
        "login NAME [PASSWORD]",
        "log in as NAME (PASSWORD: a registered name's)",
        "arg_rest",
        word="login",
        modes=("text",),
    ),
    Verb(
        "pass",
        "pass PASSWORD",
        "give the server's password, before login",
        "text",
        word="pass",
        modes=("text",),
    ),
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
    [f"  {v.usage:<28} {v.dot:<3} {v.description}" for v in VERBS if "join" in v.modes]
    + [f"  {'//TEXT':<28} {'':<3} say TEXT starting with '/'"]
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
    if verb.operands == "none" and rest and verb.name in ("register", "password"):
        # join asks for passwords hidden: one typed on the line would show and be kept
        why = "it asks for the password, hidden; do not type it on the line"
        return Command(verb.name, error=f"usage: {verb.usage} ({why})")
    match verb.operands:
        case "arg_rest":
            first, _, more = rest.partition(" ")
            return Command(verb.name, arg=first, text=more.strip()) if first else usage
        case "minutes":
            return _minutes(verb, rest, usage)
        case "opt_arg":
            return Command(verb.name, arg=rest.split(" ")[0] if rest else "")
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


def _minutes(verb: Verb, rest: str, usage: Command) -> Command:
    """``NAME [MINUTES] [REASON]`` (ban) or ``NAME [MINUTES]`` (mute)."""
    name, _, more = rest.partition(" ")
    if not name:
        return usage
    when, _, reason = more.strip().partition(" ")
    minutes: int | None = None
    if when.isdigit() and when.isascii():
        minutes = int(when)
        if minutes > MAX_MINUTES:
            return replace(usage, error=f"{usage.error} (MINUTES at most {MAX_MINUTES})")
    elif when.lower() in ("none", "forever", "0"):
        minutes = 0
    else:
        reason = more.strip()
    if verb.name == "mute" and reason:
        return usage
    return Command(verb.name, arg=name, text=reason.strip(), minutes=minutes)


def parse_input(line: str) -> Command:
    """Classify one line typed into ``chatcli join``."""
    return parse_command(line, "join")
