"""One alias table and one parser for join's commands and text-mode sessions."""

from __future__ import annotations

from dataclasses import replace

import pytest

from chatcli.core.commands import (
    ERROR_MARK,
    HELP,
    TEXT_HELP,
    VERBS,
    Command,
    parse_command,
    parse_input,
)

SHARED = [verb for verb in VERBS if set(verb.modes) == {"join", "text"}]


@pytest.mark.parametrize(
    "spelling", [s for verb in SHARED for s in verb.slashes], ids=lambda s: s.lstrip("/")
)
def test_every_shared_slash_spelling_means_the_same_in_both_modes(spelling: str) -> None:
    for line in (spelling, f"{spelling} bob some text", spelling.upper()):
        joined, text = parse_command(line, "join"), parse_command(line, "text")
        # the same meaning; a text session's error line carries the "!! " of errors
        assert text.error == (ERROR_MARK + joined.error if joined.error else "")
        assert replace(text, error=joined.error) == joined


@pytest.mark.parametrize(
    ("line", "verb"),
    [
        ("/who", "who"),
        ("/users", "who"),
        ("/names", "who"),
        ("/look", "who"),
        ("/rooms", "rooms"),
        ("/list", "rooms"),
        ("/quit", "quit"),
        ("/exit", "quit"),
        ("/bye", "quit"),
        ("/help", "help"),
        ("/?", "help"),
    ],
)
def test_aliases(line: str, verb: str) -> None:
    assert parse_input(line) == Command(verb)
    assert parse_command(line, "text") == Command(verb)


def test_operands() -> None:
    for spelling in ("/msg", "/dm", "/tell"):
        assert parse_input(f"{spelling} bob  hi there ") == Command("msg", "bob", "hi there")
        assert parse_input(f"{spelling} bob") == Command("msg", error="usage: /msg NAME TEXT")
    assert parse_input("/me waves") == Command("me", text="waves")
    assert parse_input("/me") == Command("me", error="usage: /me TEXT")
    assert parse_input("/join #dev") == Command("join", arg="dev")
    assert parse_input("/join") == Command("join", error="usage: /join ROOM")
    assert parse_input("//etc/hosts") == Command("say", text="/etc/hosts")
    assert parse_input("  plain  ") == Command("say", text="  plain  ")


def test_join_only_commands_and_dots() -> None:
    assert parse_input("/time") == Command("time")
    assert parse_input(".t") == Command("time")
    assert parse_input(".r") == Command("record")
    assert parse_input(".q") == Command("quit")
    assert parse_input(".l") == Command("who")
    unknown = parse_command("/time", "text")
    assert unknown.verb == "unknown" and unknown.error == "!! unknown command /time; try /help"
    assert parse_command(".q", "text") == Command("say", text=".q")


def test_bare_words_are_text_mode_only() -> None:
    for line in ("look", "logout", "help", "login bob", "say hi"):
        assert parse_input(line) == Command("say", text=line)
    assert parse_command("look", "text") == Command("who")
    assert parse_command("logout", "text") == Command("quit")
    assert parse_command("login bob", "text") == Command("login", arg="bob")
    assert parse_command("login", "text") == Command(
        "login", error="!! usage: login NAME [PASSWORD]"
    )
    assert parse_command("say  hi ", "text") == Command("say", text="hi")
    # a bare word that takes no argument, followed by more words, is chat
    assert parse_command("look at this", "text") == Command("say", text="look at this")


def test_unknown_commands_are_cleaned_and_cut() -> None:
    assert parse_input("/frob").error == "unknown command /frob; try /help"
    long = parse_input("/" + "x" * 100 + "\x1b[2J")
    assert long.error == f"unknown command /{'x' * 39}...; try /help"


def test_help_texts_come_from_the_table() -> None:
    for verb in VERBS:
        if "join" in verb.modes:
            assert verb.usage in HELP and verb.description in HELP
        if "text" in verb.modes:
            assert verb.usage in TEXT_HELP or verb.word in TEXT_HELP
    assert "login" not in HELP and "/time" not in TEXT_HELP
    assert TEXT_HELP.startswith(
        "commands: login NAME [PASSWORD] | pass PASSWORD | say TEXT | look | logout"
    )
