"""What a line typed into ``chatcli join`` means: a message, or one of its commands.

Pure parsing, shared by the interactive terminal and the piped (stdin) mode, so both
understand exactly the same slash- and dot-commands.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = ["HELP", "Command", "parse_input"]


@dataclass(frozen=True, slots=True)
class Command:
    """A parsed input line: ``verb`` is one of VERBS; ``arg``/``text`` carry its operands.

    ``error`` is set instead when the line was a command used wrongly.
    """

    verb: str
    arg: str = ""
    text: str = ""
    error: str = ""


#: verb -> (slash spellings, dot spelling, usage, description)
_TABLE: Final = {
    "help": (("/help", "/?"), ".h", "/help", "show this help"),
    "who": (("/who", "/users", "/names"), ".l", "/who", "list the users in this room"),
    "time": (("/time",), ".t", "/time", "toggle timestamps in front of each line"),
    "record": (("/record",), ".r", "/record", "start or stop recording to recordings/"),
    "quit": (("/quit", "/exit", "/bye"), ".q", "/quit", "leave the chat"),
    "msg": (("/msg", "/dm", "/tell"), "", "/msg NAME TEXT", "send a direct message"),
    "me": (("/me",), "", "/me TEXT", "say an action (* alice waves)"),
    "join": (("/join",), "", "/join ROOM", "leave this room and enter ROOM"),
    "rooms": (("/rooms", "/list"), "", "/rooms", "list the rooms"),
}
_BY_SPELLING: Final = {
    spelling: verb
    for verb, (slashes, dot, _usage, _desc) in _TABLE.items()
    for spelling in (*slashes, *((dot,) if dot else ()))
}

HELP: Final = "\n".join(
    [f"  {usage:<16} {dot:<3} {desc}" for _slashes, dot, usage, desc in _TABLE.values()]
    + [f"  {'//TEXT':<16} {'':<3} say TEXT starting with '/'"]
)


def parse_input(line: str) -> Command:
    """Classify one input line. Plain text becomes ``say``; ``//x`` says ``/x``."""
    stripped = line.strip()
    if stripped.startswith("//"):
        return Command("say", text=stripped[1:])
    word, _, rest = stripped.partition(" ")
    verb = _BY_SPELLING.get(word.lower())
    if verb is None:
        if stripped.startswith("/"):
            return Command("unknown", arg=word, error=f"unknown command {word}; try /help")
        return Command("say", text=line)
    rest = rest.strip()
    usage = _TABLE[verb][2]
    if verb == "msg":
        to, _, text = rest.partition(" ")
        if not to or not text.strip():
            return Command(verb, error=f"usage: {usage}")
        return Command(verb, arg=to, text=text.strip())
    if verb == "me":
        return Command(verb, text=rest) if rest else Command(verb, error=f"usage: {usage}")
    if verb == "join":
        return (
            Command(verb, arg=rest.lstrip("#")) if rest else Command(verb, error=f"usage: {usage}")
        )
    return Command(verb)
