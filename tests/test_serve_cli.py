"""End to end: ``chatcli serve`` as a real process, driven over real sockets and signals."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from processes import START_TIMEOUT, chatcli, serve_process

pytestmark = pytest.mark.e2e

HOST = "127.0.0.1"
READ_TIMEOUT = 5.0
#: The shutdown promise is "gone within shutdown_grace (1.5 s)"; the bound leaves a busy
#: machine room. A server that waited for a client that never closes would never exit,
#: so the stubborn-client test still fails without the grace period.
EXIT_TIMEOUT = 10.0
SHUTDOWN = {"type": "error", "code": "server_shutdown", "message": "the server is shutting down"}


def spawn(*args: str) -> subprocess.Popen[bytes]:
    return chatcli("serve", *args)


class Peer:
    """A blocking socket client with a timeout on every operation."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=READ_TIMEOUT)
        self.file = self.sock.makefile("rb")

    def send(self, data: dict[str, Any] | str) -> None:
        line = json.dumps(data) if isinstance(data, dict) else data
        self.sock.sendall(line.encode() + b"\n")

    def line(self) -> bytes:
        raw = self.file.readline()
        assert raw.endswith(b"\n"), f"connection closed instead of a line ({raw!r})"
        return raw[:-1]

    def recv(self) -> dict[str, Any]:
        return json.loads(self.line())

    def expect(self, kind: str, **fields: Any) -> dict[str, Any]:
        frame = self.recv()
        assert frame["type"] == kind, frame
        for key, value in fields.items():
            assert frame.get(key) == value, frame
        return frame

    def eof(self) -> bytes:
        rest = self.file.read()
        return rest

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@pytest.fixture
def served() -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """A ``chatcli serve --port 0 -q`` process and the port it printed."""
    with serve_process() as served:
        yield served


def chat_then_stop(proc: subprocess.Popen[bytes], port: int, sig: signal.Signals) -> None:
    """Chat through the process (JSON and text), stop it with ``sig``, check the goodbye."""
    alice = Peer(port)
    alice.expect("welcome", users=[])
    alice.send({"type": "hello", "name": "alice"})
    alice.expect("ready", name="alice", users=["alice"])

    nc = Peer(port)
    nc.expect("welcome", users=["alice"])
    nc.send("login bob")
    assert nc.line() == b"-- you are bob in lobby; here: alice, bob"
    alice.expect("join", name="bob")

    alice.send({"type": "say", "text": "hi bob", "ref": "a1"})
    alice.expect("msg", id=1, text="hi bob", ref="a1", **{"from": "alice"})
    assert re.fullmatch(rb"\d\d:\d\d:\d\d \[lobby\] <alice> hi bob", nc.line())
    nc.send("hi alice")
    alice.expect("msg", id=2, text="hi alice", **{"from": "bob"})
    assert nc.line().endswith(b"<bob> hi alice")

    started = time.monotonic()
    proc.send_signal(sig)
    assert alice.recv() == SHUTDOWN
    assert alice.eof() == b""
    assert nc.line() == b"!! server_shutdown: the server is shutting down"
    assert nc.eof() == b""
    alice.close()
    nc.close()
    code = proc.wait(EXIT_TIMEOUT)
    assert time.monotonic() - started < EXIT_TIMEOUT
    assert code == 0
    assert proc.stderr is not None and proc.stdout is not None
    err = proc.stderr.read().decode()
    assert "Traceback" not in err, err
    assert proc.stdout.read() == b""


def test_serve_sigint_tells_every_client_and_exits_0(
    served: tuple[subprocess.Popen[bytes], int],
) -> None:
    chat_then_stop(*served, signal.SIGINT)


def test_serve_sigterm_tells_every_client_and_exits_0(
    served: tuple[subprocess.Popen[bytes], int],
) -> None:
    chat_then_stop(*served, signal.SIGTERM)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_serve_signal_right_after_the_address_line_is_a_clean_stop(
    served: tuple[subprocess.Popen[bytes], int], sig: signal.Signals
) -> None:
    """Whoever reads the address may signal at once: the handlers must be in place."""
    proc, _ = served
    proc.send_signal(sig)
    assert proc.wait(EXIT_TIMEOUT) == 0
    assert proc.stderr is not None
    assert "Traceback" not in proc.stderr.read().decode()


def test_serve_stops_promptly_even_if_a_client_never_closes(
    served: tuple[subprocess.Popen[bytes], int],
) -> None:
    proc, port = served
    stubborn = Peer(port)  # reads nothing and never closes
    try:
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(EXIT_TIMEOUT) == 0
        assert time.monotonic() - started < EXIT_TIMEOUT
        assert proc.stderr is not None
        assert "Traceback" not in proc.stderr.read().decode()
        # it was told, then cut off: its connection ends, it is not left hanging
        frames = [json.loads(line) for line in stubborn.eof().splitlines()]
        assert [f["type"] for f in frames] == ["welcome", "error"] and frames[1] == SHUTDOWN
    finally:
        stubborn.close()


def test_serve_port_in_use_is_one_clear_line() -> None:
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = spawn("--port", str(port), "-q", "--host", HOST)
        try:
            out, err = proc.communicate(timeout=START_TIMEOUT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(EXIT_TIMEOUT)
    assert proc.returncode != 0
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"chatcli: cannot listen on {HOST}:{port}: ")
    assert "in use" in lines[0]
    assert "Traceback" not in err.decode()
    assert out == b""
