"""End-to-end tests of ``chatcli join``: the real executable against a real ``chatcli serve``.

Piped mode is driven through stdin; the interactive mode runs under a real pseudo-terminal.
A watcher (a plain socket client) in the same room checks what actually went over the wire.
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from processes import EXIT_TIMEOUT, Terminal, Watcher, chatcli, run_join, serve_process

from chatcli.transcript import read_transcript

pytestmark = pytest.mark.e2e

HOST = "127.0.0.1"
READ_TIMEOUT = 10.0


def join(*args: str, stdin: bytes = b"", env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    return run_join(*args, stdin=stdin, env=env)


def test_piped_lines_are_sent_and_events_printed_as_plain_lines(
    server: int, config: dict[str, str]
) -> None:
    watcher = Watcher(server)
    try:
        done = join(
            "bot",
            "--port",
            str(server),
            env=config,
            stdin=b"hello [red]world[/]\n/me waves\n/msg watcher psst\n.l\n",
        )
        assert done.returncode == 0, done.stderr
        watcher.expect("join", name="bot")
        watcher.expect("msg", text="hello [red]world[/]", **{"from": "bot"})
        watcher.expect("msg", text="waves", action=True, **{"from": "bot"})
        watcher.expect("dm", text="psst", to="watcher", **{"from": "bot"})
        watcher.expect("leave", name="bot", reason="quit")
    finally:
        watcher.close()
    lines = done.stdout.decode().splitlines()
    assert "<bot> hello [red]world[/]" in lines
    assert "* bot waves" in lines
    assert "[dm] bot -> watcher: psst" in lines
    assert "-- in lobby: bot, watcher" in lines
    assert b"Traceback" not in done.stderr


def test_json_output_is_one_event_per_line(server: int, config: dict[str, str]) -> None:
    done = join("jbot", "--port", str(server), "--json", env=config, stdin=b"hi\n")
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert [e["type"] for e in events[:2]] == ["welcome", "ready"]
    assert {"type": "msg", "from": "jbot", "text": "hi"}.items() <= events[2].items()
    assert events[2]["ref"]  # our own message, matched by its ref


def test_last_host_port_and_name_are_remembered(server: int, config: dict[str, str]) -> None:
    # an interactive join remembers (a piped one does not: see test_join_input.py)
    with Terminal("join", "rememberme", "--port", str(server), env=config) as term:
        term.read_until(b"rememberme>")
        term.type(b"/quit\r")
        assert term.proc.wait(EXIT_TIMEOUT) == 0
    again = join(env=config, stdin=b"/who\n")
    assert again.returncode == 0, again.stderr
    assert "-- in lobby: rememberme" in again.stdout.decode()


def test_no_name_and_nothing_remembered_is_a_usage_error(config: dict[str, str]) -> None:
    done = join(env=config)
    assert done.returncode == 2
    assert b"give a NAME" in done.stderr and b"Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("bad name",), 2, b"not a valid name"),
        (("p\u0430ypal",), 2, b"letters of more than one script"),  # a Cyrillic a
        (("\uff53\uff45\uff52\uff56\uff45\uff52",), 2, b"is reserved"),  # full-width server
        (("server",), 2, b"'server' is reserved"),
        (("SYSTEM",), 2, b"'SYSTEM' is reserved"),
        (("ok", "--room", "Bad Room"), 2, b"not a valid room"),
    ],
)
def test_invalid_input_is_refused_before_connecting(
    args: tuple[str, ...], code: int, message: bytes, config: dict[str, str]
) -> None:
    done = join(*args, "--port", "1", env=config)
    assert done.returncode == code
    assert message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_server_not_running_is_one_line_and_exit_1(config: dict[str, str]) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind((HOST, 0))
        port = probe.getsockname()[1]
    done = join("alice", "--port", str(port), env=config)
    assert done.returncode == 1
    assert done.stderr.decode().strip().splitlines() == [
        f"chatcli: cannot connect to {HOST}:{port}: connection refused "
        "(is `chatcli serve` running?)"
    ]


def test_name_taken_is_one_line_and_exit_1(server: int, config: dict[str, str]) -> None:
    watcher = Watcher(server, name="Taken")
    try:
        done = join("taken", "--port", str(server), env=config)
    finally:
        watcher.close()
    assert done.returncode == 1
    assert b"already in use (name_taken)" in done.stderr
    assert b"Traceback" not in done.stderr


def test_rate_limited_lines_are_retried_in_order(config: dict[str, str]) -> None:
    with serve_process("--rate-limit", "5", "--rate-burst", "2") as (_proc, port):
        watcher = Watcher(port)
        try:
            lines = b"".join(b"line %d\n" % i for i in range(8))
            done = join("flood", "--port", str(port), env=config, stdin=lines)
            assert done.returncode == 0, done.stderr
            said = [watcher.expect("msg", **{"from": "flood"})["text"] for _ in range(8)]
        finally:
            watcher.close()
    assert said == [f"line {i}" for i in range(8)]


def test_shutdown_while_joined_retries_then_gives_up_in_one_line_and_exit_1(
    config: dict[str, str],
) -> None:
    with serve_process() as (proc, port):
        client = chatcli(
            "join",
            "stayer",
            "--port",
            str(port),
            "--retry-for",
            "1",
            env=config,
            stdin=subprocess.PIPE,
        )
        watcher = Watcher(port)
        # wait until the client is in the room, then stop the server
        deadline = time.monotonic() + READ_TIMEOUT
        while time.monotonic() < deadline:
            watcher.send({"type": "who"})
            if "stayer" in watcher.expect("users")["users"]:
                break
            time.sleep(0.1)
        proc.send_signal(2)
        # stdin stays open: the client must end because of the shutdown, not end of input
        client.wait(READ_TIMEOUT)
        assert client.stderr is not None and client.stdin is not None
        err = client.stderr.read()
        client.stdin.close()
        watcher.close()
    assert client.returncode == 1
    lines = err.decode().strip().splitlines()
    assert lines[-1].startswith(f"chatcli: gave up reconnecting to 127.0.0.1:{port} after 1 s")
    assert "connection lost, reconnecting in" in err.decode()


def test_record_writes_a_valid_client_transcript(
    server: int, config: dict[str, str], tmp_path: Path
) -> None:
    record_dir = tmp_path / "rec"
    done = join(
        "recorder",
        "--port",
        str(server),
        "--record-dir",
        str(record_dir),
        env=config,
        stdin=b"/record\nkept\n/record\nnot kept\n",
    )
    assert done.returncode == 0, done.stderr
    (path,) = record_dir.glob("record_chat_*.jsonl")
    with read_transcript(path) as reader:
        entries = list(reader)
        assert reader.header.source == "client"
        assert reader.end is not None
        assert reader.warnings == []
    texts = [getattr(e.event, "text", None) for e in entries]
    assert "kept" in texts and "not kept" not in texts


def _hostile_server(frames: list[bytes]) -> tuple[int, threading.Thread]:
    """A fake server that logs anyone in and sends them ``frames`` (escapes and all)."""
    listener = socket.create_server((HOST, 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        with conn, listener:
            conn.settimeout(READ_TIMEOUT)
            conn.sendall(
                b'{"type":"welcome","server":"evil","proto":1,"users":[],"rooms":[],"hint":""}\n'
            )
            conn.recv(65536)  # the hello
            conn.sendall(
                b'{"type":"ready","name":"me","room":"lobby","users":["me"],'
                b'"history":[]}\n' + b"".join(frames)
            )
            conn.recv(65536)  # the client's ping barrier or bye
            conn.sendall(b'{"type":"pong"}\n')
            time.sleep(0.5)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return port, thread


def test_escape_sequences_from_a_hostile_server_never_reach_the_terminal(
    config: dict[str, str],
) -> None:
    evil = (
        '{"type":"msg","id":1,"room":"lobby","from":"ev\\u001b[2Jil","ts":1.0,'
        '"text":"a\\u001b]0;pwned\\u0007b\\u001b[31mc\\u009b2Jd\\u202eе [bold]x[/]"}\n'
    ).encode()
    port, thread = _hostile_server([evil])
    done = join("me", "--port", str(port), env=config, stdin=b"")
    thread.join(EXIT_TIMEOUT)
    assert done.returncode == 0, done.stderr
    out = done.stdout.decode()
    assert "<evil> abcdе [bold]x[/]" in out
    for bad in ("\x1b", "\x9b", "\u202e", "\x07"):
        assert bad not in out


def test_interactive_session_in_a_real_terminal(server: int, config: dict[str, str]) -> None:
    """Type a line in a pty, see it reach the room, get a message back, quit with /quit."""
    watcher = Watcher(server)
    try:
        with Terminal("join", "tty", "--port", str(server), env=config) as term:
            term.read_until(b"tty>")
            term.type(b"hello from a terminal\r")
            watcher.expect("msg", text="hello from a terminal", **{"from": "tty"})
            watcher.send({"type": "say", "text": "welcome, [u]tty[/u]"})
            term.read_until(b"welcome, [u]tty[/u]")
            term.type(b"/quit\r")
            assert term.proc.wait(READ_TIMEOUT) == 0
            watcher.expect("leave", name="tty", reason="quit")
        assert b"Traceback" not in term.screen
    finally:
        watcher.close()


def test_a_line_refused_before_sending_makes_the_exit_code_1(
    server: int, config: dict[str, str]
) -> None:
    # (a line longer than 4096 characters is no longer refused: it is split)
    done = join("strict", "--port", str(server), env=config, stdin=b"/frob\n/me\nstill sent\n")
    assert done.returncode == 1
    assert b"unknown command /frob" in done.stderr
    assert b"usage: /me TEXT" in done.stderr
    assert "<strict> still sent" in done.stdout.decode()


@pytest.mark.slow
def test_an_interactive_paste_beyond_the_flood_limit_is_paced_not_lost(
    config: dict[str, str],
) -> None:
    with serve_process("--rate-limit", "5", "--rate-burst", "2") as (_proc, port):
        watcher = Watcher(port)
        try:
            with Terminal("join", "paster", "--port", str(port), env=config) as term:
                term.read_until(b"paster>")
                term.type(b"".join(b"pasted %d\r" % i for i in range(8)))
                said = [watcher.expect("msg", **{"from": "paster"})["text"] for _ in range(8)]
                term.type(b"/quit\r")
                assert term.proc.wait(READ_TIMEOUT) == 0
            assert b"rate_limited" not in term.screen
        finally:
            watcher.close()
    assert said == [f"pasted {i}" for i in range(8)]


# ------------------------------------------------------------------ input that is not UTF-8


@pytest.mark.e2e
@pytest.mark.parametrize("stdin_errors", ["strict", "surrogateescape"])
def test_piped_input_that_is_not_utf8_is_sent_with_replacement_characters(
    server: int, config: dict[str, str], stdin_errors: str
) -> None:
    """A byte that is not UTF-8 on stdin used to hang the session (strict decoding
    killed the reader thread) or crash it with a traceback (surrogateescape)."""
    watcher = Watcher(server)
    try:
        env = {**config, "PYTHONIOENCODING": f"utf-8:{stdin_errors}"}
        done = join(
            f"pipe-{stdin_errors[:6]}", "--port", str(server), stdin=b"caf\xe9 ok\nnext\n", env=env
        )
        assert b"Traceback" not in done.stderr, done.stderr.decode()
        assert done.returncode == 0, done.stderr
        watcher.expect("msg", text="caf\ufffd ok")
        watcher.expect("msg", text="next")
    finally:
        watcher.close()


@pytest.mark.e2e
def test_interactive_input_that_is_not_utf8_does_not_crash(
    server: int, config: dict[str, str]
) -> None:
    """A Latin-1 terminal typing 'é' sent a lone surrogate to the encoder: a traceback."""
    watcher = Watcher(server, "watcher2")
    try:
        with Terminal(
            "join", "latin", "--port", str(server), env=config, timeout=READ_TIMEOUT
        ) as term:
            term.read_until(b"latin>")
            term.type(b"caf\xe9 ok\r")
            watcher.expect("msg", text="caf\ufffd ok", **{"from": "latin"})
            term.type(b"/quit\r")
            assert term.proc.wait(READ_TIMEOUT) == 0
    finally:
        watcher.close()
    screen = term.screen
    assert b"Traceback" not in screen, screen.decode(errors="replace")
