"""Accounts, the server password, operators and per-address limits against a real server.

Every test starts ``chatcli serve`` as a subprocess (tests/processes.py) and talks to it
over real sockets: JSON clients, text-mode (nc-like) clients and ``chatcli join``.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from processes import (
    EXIT_TIMEOUT,
    HOST,
    START_TIMEOUT,
    Terminal,
    chatcli,
    read_line,
    run_join,
    serve_process,
)

PASSWORD = "correct-horse-42"
SERVER_PASSWORD = "let-me-in-2026"
READ_TIMEOUT = 10.0


class Peer:
    """One raw connection: send lines, read lines, every read bounded."""

    def __init__(self, port: int, source: str | None = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.settimeout(READ_TIMEOUT)
        if source is not None:
            self.sock.bind((source, 0))
        self.sock.connect((HOST, port))
        self.buffer = b""
        self.seen: list[str] = []

    def send(self, line: str) -> None:
        self.sock.sendall(line.encode() + b"\n")

    def send_json(self, **frame: Any) -> None:
        self.send(json.dumps(frame))

    def line(self) -> str | None:
        """The next line; None once the server closed the connection."""
        deadline = time.monotonic() + READ_TIMEOUT
        while b"\n" not in self.buffer:
            assert time.monotonic() < deadline, f"no line within {READ_TIMEOUT} s: {self.seen}"
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                return None
            if not chunk:
                return None
            self.buffer += chunk
        raw, _, self.buffer = self.buffer.partition(b"\n")
        text = raw.decode()
        self.seen.append(text)
        return text

    def until(self, needle: str) -> str:
        """Read lines until one contains ``needle``; fail if the connection ends first."""
        while True:
            text = self.line()
            assert text is not None, f"closed before {needle!r}: {self.seen}"
            if needle in text:
                return text

    def frame(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Skip JSON frames until one of type ``kind``; check ``fields``."""
        while True:
            text = self.line()
            assert text is not None, f"closed before {kind!r}: {self.seen}"
            frame = json.loads(text)
            if frame["type"] == kind:
                for key, value in fields.items():
                    assert frame.get(key) == value, frame
                assert isinstance(frame, dict)
                return frame

    def closed(self) -> bool:
        """True when the server closed the connection (after whatever it still sent)."""
        while True:
            if self.line() is None:
                return True

    def close(self) -> None:
        self.sock.close()


def hello(port: int, name: str, **secrets: str) -> Peer:
    """A JSON client that sent its hello (the answer is for the test to read)."""
    peer = Peer(port)
    peer.frame("welcome")
    peer.send_json(type="hello", name=name, history=0, **secrets)
    return peer


def logged_in(port: int, name: str, **secrets: str) -> Peer:
    peer = hello(port, name, **secrets)
    peer.frame("ready", name=name)
    return peer


def text_login(port: int, line: str) -> Peer:
    """A text-mode (nc) client that typed ``line`` and was let in."""
    peer = Peer(port)
    peer.send(line)
    peer.until("you are ")
    return peer


def register(port: int, name: str, password: str = PASSWORD) -> None:
    """Register ``name`` from a text session, then leave."""
    peer = text_login(port, f"login {name}")
    peer.send(f"/register {password}")
    peer.until("is registered to you")
    peer.send("logout")
    assert peer.closed()


def stop(proc: subprocess.Popen[bytes]) -> str:
    """SIGINT the server (transcripts are closed cleanly) and return its stderr."""
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=EXIT_TIMEOUT * 2)
    return err.decode()


# ----------------------------------------------------------------------- operators


def test_an_op_kicks_mutes_and_bans_and_others_are_forbidden() -> None:
    with serve_process("--store", "memory", "--op", "alice") as (proc, port):
        register(port, "alice")
        # registered but logged in without the password earlier: now with it, an op
        alice = text_login(port, f"login alice {PASSWORD}")
        assert "(you are an operator)" in alice.seen[-1]
        bob = logged_in(port, "bob")
        carol = logged_in(port, "carol")
        alice.send("/who")
        alice.until("in lobby: alice, bob, carol; operators: alice")
        bob.send_json(type="kick", name="carol", ref=1)
        bob.frame("error", code="forbidden", ref=1)
        bob.send_json(type="say", text="still here", ref=2)
        bob.frame("msg", text="still here")  # forbidden keeps the connection open

        alice.send("/mute carol 5")
        alice.until("you muted carol for 5 min")
        carol.send_json(type="say", text="hello?", ref=3)
        carol.frame("error", code="muted", ref=3)
        alice.send("/unmute carol")
        alice.until("you unmuted carol")
        carol.send_json(type="say", text="back", ref=4)
        carol.frame("msg", text="back")

        alice.send("/kick bob spamming")
        error = bob.frame("error", code="kicked")
        assert "alice" in error["message"] and "spamming" in error["message"]
        assert bob.closed()
        carol.frame("leave", name="bob", reason="kicked")
        alice.until("bob left lobby (kicked)")

        alice.send("/ban carol 0 trolling")
        carol.frame("error", code="banned")
        assert carol.closed()
        alice.until("you banned carol until /unban")
        again = hello(port, "CAROL")  # a look-alike of a banned name
        again.frame("error", code="banned")
        alice.send("/unban carol")
        alice.until("you lifted the ban of carol")
        logged_in(port, "carol").close()
        alice.close()
        err = stop(proc)
    for line in ("operator alice mute carol for 5 min", "operator alice unmute carol"):
        assert line in err
    assert "operator alice kick bob reason spamming" in err
    assert "operator alice ban carol until unbanned reason trolling" in err
    assert "operator alice unban carol" in err
    assert PASSWORD not in err


def test_an_op_name_not_logged_in_with_its_password_has_no_powers() -> None:
    with serve_process("--store", "memory", "--op", "alice") as (_, port):
        alice = logged_in(port, "alice")  # nobody registered alice: no password, no op
        logged_in(port, "bob")
        alice.send_json(type="kick", name="bob", ref=1)
        alice.frame("error", code="forbidden", ref=1)


def test_a_ban_survives_a_restart(tmp_path: Path) -> None:
    store = str(tmp_path / "team.db")
    with serve_process("--store", store, "--op", "alice") as (_, port):
        register(port, "alice")
        alice = text_login(port, f"login alice {PASSWORD}")
        alice.send("/ban mallory 60 spam")
        alice.until("you banned mallory for 60 min")
    with serve_process("--store", store, "--op", "alice") as (_, port):
        refused = hello(port, "mallory")
        refused.frame("error", code="banned")
        assert refused.closed()
        alice = text_login(port, f"login alice {PASSWORD}")
        alice.send("/unban mallory")
        alice.until("you lifted the ban of mallory")
        logged_in(port, "mallory").close()


def test_an_action_sent_before_ready_is_logged_too(tmp_path: Path) -> None:
    # with a store file the login waits for the store: the kick is an early frame,
    # acted on when the store answers, and logged then (not at the op's next frame)
    with serve_process("--store", str(tmp_path / "s.db"), "--op", "alice") as (proc, port):
        register(port, "alice")
        bob = logged_in(port, "bob")
        alice = Peer(port)
        alice.send(f"login alice {PASSWORD}\n/kick bob now")
        bob.frame("error", code="kicked")
        alice.until("you kicked bob")
        err = stop(proc)
    assert "operator alice kick bob reason now" in err


# ------------------------------------------------------------------- passwords


def test_text_mode_login_with_a_password() -> None:
    with serve_process("--store", "memory") as (_, port):
        register(port, "tanaka")
        wrong = Peer(port)
        wrong.send("login tanaka not-the-password")
        assert "auth_failed" in wrong.until("auth_failed")
        assert wrong.closed()
        missing = Peer(port)
        missing.send("login Tanaka")  # a case variant is the same name
        missing.until("auth_failed")
        right = text_login(port, f"login tanaka {PASSWORD}")
        right.send("/password wrong-old brand-new-pass")
        right.until("forbidden")
        right.send(f"/password {PASSWORD} brand-new-pass")
        right.until("your password is changed")
        right.close()
        text_login(port, "login tanaka brand-new-pass").close()


@pytest.mark.parametrize("how", ["file", "env"])
def test_the_server_password_is_needed_by_json_and_text_clients(how: str, tmp_path: Path) -> None:
    secret = tmp_path / "server.pass"
    secret.write_text(SERVER_PASSWORD + "\n")
    args = ("--store", "memory") + (("--password-file", str(secret)) if how == "file" else ())
    env = {"CHATCLI_SERVER_PASSWORD": SERVER_PASSWORD} if how == "env" else {}
    proc = chatcli("serve", "--port", "0", "-q", "--host", HOST, *args, env=env)
    try:
        line = read_line(proc.stdout, START_TIMEOUT).decode()
        port = int(line.rsplit(":", 1)[1])
        welcome = Peer(port)
        assert "server_password" in json.loads(welcome.line() or "{}")["features"]
        missing = hello(port, "bob")
        missing.frame("error", code="auth_failed")
        assert missing.closed()
        wrong = hello(port, "bob", server_password="guess")
        wrong.frame("error", code="auth_failed")
        logged_in(port, "bob", server_password=SERVER_PASSWORD).close()
        text = Peer(port)
        text.send("login carol")
        text.until("auth_failed")
        text = Peer(port)
        text.send(f"pass {SERVER_PASSWORD}")
        noted = text.until("server password noted")
        assert SERVER_PASSWORD not in noted
        text.send("login carol")
        text.until("you are carol")
    finally:
        err = stop(proc)
    assert SERVER_PASSWORD not in err


@pytest.mark.parametrize(
    ("content", "why"), [(None, "cannot read it"), ("", "no password on its first line")]
)
def test_a_bad_password_file_stops_serve_with_one_line(
    tmp_path: Path, content: str | None, why: str
) -> None:
    path = tmp_path / "server.pass"
    if content is not None:
        path.write_text(content)
    proc = chatcli("serve", "--port", "0", "--password-file", str(path))
    _, err = proc.communicate(timeout=EXIT_TIMEOUT * 3)
    assert proc.returncode == 2
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1 and why in lines[0] and "--password-file" in lines[0], lines


# ------------------------------------------------------------------- per address


def test_the_per_address_limit_from_two_loopback_addresses() -> None:
    args = ("--store", "memory", "--max-per-ip", "1", "--max-per-ip-exempt", "none")
    with serve_process(*args) as (_, port):
        first = Peer(port, source="127.0.0.2")
        assert json.loads(first.line() or "{}")["type"] == "welcome"
        second = Peer(port, source="127.0.0.2")
        error = json.loads(second.line() or "{}")
        assert error["type"] == "error" and error["code"] == "server_full", error
        assert second.closed()
        other = Peer(port, source="127.0.0.3")
        assert json.loads(other.line() or "{}")["type"] == "welcome"
        first.close()
        time.sleep(0.2)  # the server notices the close, and frees the address's slot
        third = Peer(port, source="127.0.0.2")
        assert json.loads(third.line() or "{}")["type"] == "welcome"


def test_loopback_is_exempt_by_default() -> None:
    with serve_process("--store", "memory", "--max-per-ip", "1") as (_, port):
        peers = [Peer(port, source="127.0.0.2") for _ in range(3)]
        for peer in peers:
            assert json.loads(peer.line() or "{}")["type"] == "welcome"


# ------------------------------------------------------------------- join


def test_piped_join_logs_in_to_a_registered_name_with_chatcli_password(
    tmp_path: Path,
) -> None:
    with serve_process("--store", "memory") as (_, port):
        env = {"CHATCLI_CONFIG_DIR": str(tmp_path)}
        made = run_join(
            "josé",
            "--port",
            str(port),
            stdin=b"/register\nhola\n",
            env={**env, "CHATCLI_PASSWORD": PASSWORD},
        )
        assert made.returncode == 0, made.stderr
        assert b"is registered to you" in made.stdout
        refused = run_join("JOSÉ", "--port", str(port), stdin=b"hi\n", env=env)
        assert refused.returncode == 1
        err = refused.stderr.decode()
        assert "auth_failed" in err and "CHATCLI_PASSWORD" in err
        assert len(err.strip().splitlines()) == 1, err
        again = run_join(
            "josé",
            "--port",
            str(port),
            stdin=b"otra vez\n",
            env={**env, "CHATCLI_PASSWORD": PASSWORD},
        )
        assert again.returncode == 0, again.stderr
        assert "<josé> otra vez" in again.stdout.decode()


def test_interactive_join_asks_for_the_password_hidden_and_registers_twice_asked(
    tmp_path: Path,
) -> None:
    env = {"CHATCLI_CONFIG_DIR": str(tmp_path), "LC_ALL": "C.UTF-8"}
    with serve_process("--store", "memory", "--op", "田中さん") as (_, port):
        with Terminal("join", "田中さん", "--port", str(port), env=env) as term:
            term.read_until("田中さん>".encode())
            term.type(b"/register\r")
            term.read_until(b"password for your name:")
            term.type(PASSWORD.encode() + b"\r")
            term.read_until(b"again:")
            term.type(b"not-the-same-one\r")
            term.read_until(b"the two passwords differ; nothing sent")
            seen, term.screen = term.screen, b""  # wait for the new prompts, not the old
            term.type(b"/register\r")
            term.read_until(b"password for your name:")
            term.type(PASSWORD.encode() + b"\r")
            term.read_until(b"again:")
            term.type(PASSWORD.encode() + b"\r")
            term.read_until(b"is registered to you")
            term.type(b"/quit\r")
            assert term.proc.wait(EXIT_TIMEOUT) == 0
        seen += term.screen
        assert PASSWORD.encode() not in seen and b"not-the-same" not in seen
        with Terminal("join", "田中さん", "--port", str(port), env=env) as term:
            term.read_until(b"password for ")
            term.type(PASSWORD.encode() + b"\r")
            term.read_until(b"(you are an operator)")
            term.type(b"/quit\r")
            assert term.proc.wait(EXIT_TIMEOUT) == 0
        assert PASSWORD.encode() not in term.screen
        assert b"*" * len(PASSWORD) in term.screen  # typed, shown as stars


def test_piped_join_nick_is_seen_by_the_room(tmp_path: Path) -> None:
    with serve_process("--store", "memory") as (_, port):
        watcher = logged_in(port, "watcher")
        done = run_join(
            "alice",
            "--port",
            str(port),
            stdin=b"/nick alicia\nhi as alicia\n",
            env={"CHATCLI_CONFIG_DIR": str(tmp_path)},
        )
        assert done.returncode == 0, done.stderr
        watcher.frame("nick", old="alice", name="alicia")
        watcher.frame("msg", text="hi as alicia")
        assert "alice is now known as alicia" in done.stdout.decode()
        refused = run_join(
            "bob",
            "--port",
            str(port),
            stdin=b"/kick watcher\n",
            env={"CHATCLI_CONFIG_DIR": str(tmp_path)},
        )
        assert refused.returncode == 1  # a script's refused request fails it
        assert "forbidden" in refused.stdout.decode()


def test_piped_join_with_the_server_password(tmp_path: Path) -> None:
    secret = tmp_path / "server.pass"
    secret.write_text(SERVER_PASSWORD)
    env = {"CHATCLI_CONFIG_DIR": str(tmp_path)}
    with serve_process("--store", "memory", "--password-file", str(secret)) as (_, port):
        refused = run_join("bob", "--port", str(port), stdin=b"hi\n", env=env)
        assert refused.returncode == 1
        assert "--server-password-file" in refused.stderr.decode()
        wrong = tmp_path / "wrong.pass"
        wrong.write_text("not the password")
        args = ("bob", "--port", str(port), "--server-password-file", str(wrong))
        refused = run_join(*args, stdin=b"hi\n", env=env)
        assert refused.returncode == 1  # a wrong one points at the server password again
        assert "--server-password-file" in refused.stderr.decode()
        assert "CHATCLI_PASSWORD" not in refused.stderr.decode().replace("_SERVER_PASSWORD", "")
        args = ("bob", "--port", str(port), "--server-password-file", str(secret))
        assert run_join(*args, stdin=b"hi\n", env=env).returncode == 0
        with_env = {**env, "CHATCLI_SERVER_PASSWORD": SERVER_PASSWORD}
        assert run_join("carol", "--port", str(port), stdin=b"hi\n", env=with_env).returncode == 0


# ------------------------------------------------------------------- privacy


@pytest.mark.parametrize("dms", [False, True])
def test_passwords_never_reach_the_log_or_a_transcript(tmp_path: Path, dms: bool) -> None:
    record = tmp_path / "rec"
    secret = tmp_path / "server.pass"
    secret.write_text(SERVER_PASSWORD)
    args = ["serve", "--port", "0", "--host", HOST, "--store", "memory", "--op", "alice"]
    args += ["--password-file", str(secret), "--record", str(record)]
    args += ["--record-dms"] if dms else []
    proc = chatcli(*args)
    try:
        line = read_line(proc.stdout, START_TIMEOUT).decode()
        port = int(line.strip().rsplit(":", 1)[1])
        alice = Peer(port)
        alice.send(f"pass {SERVER_PASSWORD}")
        alice.send("login alice")
        alice.until("you are alice")
        alice.send(f"/register {PASSWORD}")
        alice.until("registered")
        alice.send("logout")
        alice.closed()
        alice = Peer(port)
        alice.send(f"pass {SERVER_PASSWORD}")
        alice.send(f"login alice {PASSWORD}")
        alice.until("you are alice")
        bob = logged_in(port, "bob", server_password=SERVER_PASSWORD)
        alice.send("/msg bob a private word")
        bob.frame("dm", text="a private word")
        bob.send_json(type="hello", name="x", password=PASSWORD)  # refused: logged in
        bob.frame("error")
        too_long = Peer(port)  # a password the decoder refuses is not quoted back
        too_long.send_json(type="hello", name="eve", password=PASSWORD * 20)
        refusal = too_long.frame("error", code="bad_request")
        assert PASSWORD not in refusal["message"]
        alice.send(f"/password {PASSWORD} {PASSWORD}-2")
        alice.until("password is changed")
        alice.send("/kick bob bye")
        alice.until("you kicked bob")
    finally:
        err = stop(proc)
    files = list(record.iterdir())
    written = "".join(path.read_text() for path in files)
    for secret_text in (PASSWORD, SERVER_PASSWORD):
        assert secret_text not in err
        assert secret_text not in written
    assert "operator alice kick bob" in err
    dm_files = [path for path in files if path.name.endswith(".dm.jsonl")]
    if dms:
        assert "recording direct messages too" in err
        assert len(dm_files) == 1 and "a private word" in dm_files[0].read_text()
    else:
        assert not dm_files and "a private word" not in written


def test_record_dms_needs_record() -> None:
    proc = chatcli("serve", "--port", "0", "--record-dms")
    _, err = proc.communicate(timeout=EXIT_TIMEOUT * 3)
    assert proc.returncode == 2 and "--record-dms needs --record" in err.decode()
