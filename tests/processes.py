"""Helpers for end-to-end tests that run the real ``chatcli`` executable in subprocesses.

Every read is bounded: a test that waits on a process fails with what it saw instead of
hanging the suite.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import selectors
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import msgspec

from chatcli.core.client import ClientConnection
from chatcli.core.protocol import ClientEvent, Hello, ServerEvent, encode

__all__ = [
    "EXIT_TIMEOUT",
    "START_TIMEOUT",
    "Terminal",
    "Watcher",
    "chatcli",
    "read_line",
    "run_join",
    "serve_process",
]

HOST = "127.0.0.1"
START_TIMEOUT = 15.0  # a cold interpreter importing click and rich on a busy machine
EXIT_TIMEOUT = 5.0
_LISTENING = re.compile(r"chatcli serve listening on (127\.0\.0\.1):(\d+)\n")


def read_line(stream: Any, timeout: float) -> bytes:
    """One line from a subprocess pipe, waiting at most ``timeout`` seconds."""
    fd = stream.fileno()
    buf = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while not buf.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                raise AssertionError(f"no complete line within {timeout} s (got {buf!r})")
            chunk = os.read(fd, 1)  # byte by byte: leave the rest in the pipe
            if not chunk:
                raise AssertionError(f"pipe closed (got {buf!r})")
            buf += chunk
    return buf


def chatcli(*args: str, env: dict[str, str] | None = None, **popen: Any) -> subprocess.Popen[bytes]:
    """Start ``python -m chatcli ARGS`` with colour off and unbuffered output."""
    popen.setdefault("stdin", subprocess.DEVNULL)
    env = dict(env or {})
    if args[:1] == ("serve",) and "--store" not in args and "CHATCLI_DATA_DIR" not in env:
        # every server gets a default store of its own: two at once must not share one
        env["CHATCLI_DATA_DIR"] = tempfile.mkdtemp(prefix="chatcli-test-data-")
    popen.setdefault("stdout", subprocess.PIPE)
    popen.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen(
        [sys.executable, "-m", "chatcli", *args],
        env={**os.environ, "NO_COLOR": "1", "PYTHONUNBUFFERED": "1", **env},
        **popen,
    )


def pipe_lines_across_a_kill(
    join: subprocess.Popen[bytes], kill: Any, lines: int = 20, kill_after: int = 9
) -> tuple[int | None, str]:
    """Write ``lines`` numbered lines into a piped ``chatcli join`` (one every 50 ms),
    call ``kill()`` (its server going away) after line ``kill_after``, close its input
    and wait (bounded) for it to end: its exit code and stderr. It is killed if it hangs."""
    assert join.stdin is not None and join.stderr is not None
    try:
        for n in range(lines):
            join.stdin.write(f"line {n}\n".encode())
            join.stdin.flush()
            time.sleep(0.05)
            if n == kill_after:
                kill()
        join.stdin.close()
        code = join.wait(40)
        return code, join.stderr.read().decode()
    finally:
        if join.poll() is None:
            join.kill()
            join.wait(EXIT_TIMEOUT)
        join.stderr.close()


@contextmanager
def serve_process(*args: str) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """A ``chatcli serve --port 0 -q`` process on 127.0.0.1 and the port it printed."""
    proc = chatcli("serve", "--port", "0", "-q", "--host", HOST, *args)
    try:
        line = read_line(proc.stdout, START_TIMEOUT).decode()
        match = _LISTENING.fullmatch(line)
        assert match, line
        yield proc, int(match.group(2))
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(EXIT_TIMEOUT)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


class Watcher:
    """A JSON client on a blocking socket, with a timeout on every read, that checks
    what actually went over the wire while a real ``chatcli`` process runs.

    It speaks through the shared client core (handshake, pongs), and hands frames to
    the test as dicts, the way they look on the wire.
    """

    def __init__(
        self, port: int, name: str = "watcher", room: str = "lobby", timeout: float = 10.0
    ) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.core = ClientConnection()
        self.received: deque[ServerEvent] = deque()
        self.core.send(Hello(name=name, room=room, history=0))
        self._flush()
        while self.core.ready is None:
            self._read()

    def send(self, frame: dict[str, Any]) -> None:
        self.core.send(msgspec.convert(frame, ClientEvent))
        self._flush()

    def recv(self) -> dict[str, Any]:
        while not self.received:
            self._read()
        frame = json.loads(encode(self.received.popleft()))
        assert isinstance(frame, dict)
        return frame

    def _flush(self) -> None:
        data = self.core.data_to_send()
        if data:
            self.sock.sendall(data)

    def _read(self) -> None:
        if self.core.failure is not None:
            raise self.core.failure
        assert not self.core.eof, "connection closed"
        data = self.sock.recv(65536)
        if data:
            self.core.receive_data(data)
        else:
            self.core.receive_eof()
        self.received.extend(self.core.events_received())
        self._flush()  # pongs

    def expect(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Skip other frames until one of ``kind`` arrives; check its fields."""
        while True:
            frame = self.recv()
            if frame["type"] == kind:
                for key, value in fields.items():
                    assert frame.get(key) == value, frame
                return frame

    def close(self) -> None:
        self.sock.close()


def run_join(
    *args: str, stdin: bytes = b"", env: dict[str, str], timeout: float = 20.0
) -> subprocess.CompletedProcess[bytes]:
    """``chatcli join ARGS`` fed ``stdin``; killed (and failed) if it outlives ``timeout``."""
    proc = chatcli("join", *args, env=env, stdin=subprocess.PIPE)
    try:
        out, err = proc.communicate(stdin, timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=EXIT_TIMEOUT)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


class Terminal:
    """``chatcli ARGS`` under a real pseudo-terminal: type into it, read its screen."""

    def __init__(self, *args: str, env: dict[str, str], timeout: float = 10.0) -> None:
        self.timeout = timeout
        self.leader, follower = pty.openpty()
        # PROMPT_TOOLKIT_NO_CPR: a bare pty never answers cursor-position requests
        self.proc = chatcli(
            *args,
            env={**env, "TERM": "xterm", "PROMPT_TOOLKIT_NO_CPR": "1"},
            stdin=follower,
            stdout=follower,
            stderr=follower,
        )
        os.close(follower)
        self.screen = b""

    def read_until(self, needle: bytes) -> None:
        """Read the screen until ``needle`` shows up; fail after the timeout."""
        deadline = time.monotonic() + self.timeout
        while needle not in self.screen:
            left = deadline - time.monotonic()
            assert left > 0, f"{needle!r} not on screen: {self.screen[-500:]!r}"
            if select.select([self.leader], [], [], left)[0]:
                try:
                    self.screen += os.read(self.leader, 65536)
                except OSError:  # the terminal closed
                    break

    def type(self, keys: bytes) -> None:
        os.write(self.leader, keys)

    def __enter__(self) -> Terminal:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(EXIT_TIMEOUT)
        os.close(self.leader)
