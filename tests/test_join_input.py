"""What ``join`` does with typed and pasted input: paste, long lines, completion, escapes.

Pure tests of :mod:`chatcli.ui.input_lines`, then the real ``chatcli join`` under a
pseudo-terminal against a real server, watched over the wire.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from processes import Terminal, Watcher, run_join

from chatcli.core.protocol import MAX_TEXT, Joined, Left, Ready, Users
from chatcli.ui.input_lines import Roster, completions, expand_line, paste_lines, split_text

# ---------------------------------------------------------------------------- pure


def test_split_text_cuts_after_spaces_and_concatenates_back() -> None:
    text = " ".join(f"word{i:04d}" for i in range(1200))  # 10,799 characters
    pieces = split_text(text, 4096)
    assert "".join(pieces) == text
    assert len(pieces) == 3 and all(len(p) <= 4096 for p in pieces)
    assert all(p.endswith(" ") for p in pieces[:-1])  # no word was cut


def test_split_text_cuts_inside_a_word_only_when_it_is_longer_than_the_limit() -> None:
    assert split_text("ab " + "x" * 10, 4) == ["ab ", "xxxx", "xxxx", "xx"]
    assert split_text("short", 10) == ["short"]
    assert split_text("a" * 8, 4) == ["aaaa", "aaaa"]


def test_expand_line_keeps_the_command_of_each_piece() -> None:
    long = "y " * 3000  # 6000 characters
    assert expand_line("hello") == ["hello"]
    assert [p[:4] for p in expand_line("/me " + long)] == ["/me "] * 2
    assert all(p.startswith("/msg bob ") for p in expand_line("/msg bob " + long))
    assert expand_line("/who") == ["/who"]
    pieces = expand_line("x" * 5000 + " /slash")
    assert pieces[0] == "x" * MAX_TEXT


def test_paste_lines_are_one_per_line_without_blanks() -> None:
    assert paste_lines("one\r\ntwo\rthree\n\n  \nfour\n") == ["one", "two", "three", "four"]


def test_completions_of_names_and_commands() -> None:
    names = ["alice", "Carol", "carl"]
    assert completions("ca", names) == ("ca", ["Carol: ", "carl: "])
    assert completions("hi CARO", names) == ("CARO", ["Carol"])
    assert completions("/wh", names) == ("/wh", ["/who"])
    assert completions("/", names)[1][:2] == ["/?", "/ban"]
    assert completions("hi ", names) == ("", [])


def test_roster_follows_ready_users_join_and_leave() -> None:
    roster = Roster()
    roster.update(Ready(name="a", room="lobby", users=["alice", "bob"], history=[]))
    roster.update(Joined(room="lobby", name="Carol", ts=1.0))
    roster.update(Left(room="lobby", name="BOB", reason="quit", ts=2.0))
    assert roster.names == ["alice", "Carol"]
    roster.update(Users(room="dev", users=["zed"]))
    assert roster.names == ["zed"]


# ---------------------------------------------------------------------- terminal

PASTE_START, PASTE_END = b"\x1b[200~", b"\x1b[201~"


def test_a_bracketed_paste_of_30_lines_is_30_messages_in_order(
    server: int, config: dict[str, str]
) -> None:
    watcher = Watcher(server, name="w-paste")
    try:
        with Terminal("join", "paster30", "--port", str(server), env=config) as term:
            term.read_until(b"paster30>")
            lines = [b"paste line %02d" % i for i in range(1, 31)]
            term.type(PASTE_START + b"\r".join(lines) + b"\r" + PASTE_END)
            term.read_until(b"send 30 lines? [y/N]")
            term.type(b"y\r")
            said = [watcher.expect("msg", **{"from": "paster30"})["text"] for _ in lines]
            assert said == [line.decode() for line in lines]
    finally:
        watcher.close()


def test_a_large_paste_refused_at_the_question_sends_nothing(
    server: int, config: dict[str, str]
) -> None:
    watcher = Watcher(server, name="w-refuse")
    try:
        with Terminal("join", "refuser", "--port", str(server), env=config) as term:
            term.read_until(b"refuser>")
            term.type(PASTE_START + b"\n".join(b"no %d" % i for i in range(12)) + PASTE_END)
            term.read_until(b"send 12 lines? [y/N]")
            term.type(b"n\r")
            term.read_until(b"not sent")
            term.type(b"after\r")
            assert watcher.expect("msg", **{"from": "refuser"})["text"] == "after"
    finally:
        watcher.close()


def test_tab_completes_a_name_in_the_room(server: int, config: dict[str, str]) -> None:
    watcher = Watcher(server, name="tabby-cat")
    try:
        with Terminal("join", "typist", "--port", str(server), env=config) as term:
            term.read_until(b"typist>")
            term.screen = b""  # the entry line already names tabby-cat
            term.type(b"hello tabby\t")
            term.read_until(b"-cat")  # completion runs in the background: wait for it
            term.type(b"\r")
            assert watcher.expect("msg", **{"from": "typist"})["text"] == "hello tabby-cat"
    finally:
        watcher.close()


def test_a_typed_escape_sequence_makes_no_traceback(server: int, config: dict[str, str]) -> None:
    watcher = Watcher(server, name="w-escape")
    try:
        with Terminal("join", "escaper", "--port", str(server), env=config) as term:
            term.read_until(b"escaper>")
            term.type(b"\x1b[31m")
            term.type(b"still here\r")
            assert watcher.expect("msg", **{"from": "escaper"})["text"].endswith("still here")
            assert b"Traceback" not in term.screen and b"Press ENTER" not in term.screen
    finally:
        watcher.close()


def test_a_10000_character_line_arrives_as_messages_that_concatenate_to_it(
    server: int, config: dict[str, str]
) -> None:
    line = " ".join(f"w{i:05d}" for i in range(1429))[:10_000]
    watcher = Watcher(server, name="w-long")
    try:
        done = run_join("longline", "--port", str(server), stdin=line.encode() + b"\n", env=config)
        assert done.returncode == 0, done.stderr
        parts: list[str] = []
        while len("".join(parts)) < len(line):
            parts.append(watcher.expect("msg", **{"from": "longline"})["text"])
        assert "".join(parts) == line
        assert len(parts) == 3 and all(len(p) <= MAX_TEXT for p in parts)
    finally:
        watcher.close()


def test_a_piped_join_does_not_overwrite_what_was_remembered(
    server: int, config: dict[str, str]
) -> None:
    remembered = Path(config["CHATCLI_CONFIG_DIR"]) / "last-join.json"
    remembered.parent.mkdir(parents=True)
    remembered.write_text(json.dumps({"host": "127.0.0.1", "port": server, "name": "human"}))
    done = run_join("script", "--port", str(server), stdin=b"hi\n", env=config)
    assert done.returncode == 0, done.stderr
    assert json.loads(remembered.read_text())["name"] == "human"


def test_a_remembered_port_is_named_when_connecting_fails(
    config: dict[str, str], free_port: int
) -> None:
    remembered = Path(config["CHATCLI_CONFIG_DIR"]) / "last-join.json"
    remembered.parent.mkdir(parents=True)
    remembered.write_text(json.dumps({"host": "127.0.0.1", "port": free_port, "name": "alice"}))
    done = run_join("alice", env=config)
    assert done.returncode == 1
    assert done.stderr.decode().splitlines() == [
        f"chatcli: cannot connect to 127.0.0.1:{free_port}: connection refused (is `chatcli "
        f"serve` running?); port {free_port} remembered from your last join; give --port to "
        "change it"
    ]


@pytest.fixture
def free_port() -> int:
    import socket

    with socket.socket() as probe:  # a port nobody listens on once closed
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port
