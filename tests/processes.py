"""Helpers for end-to-end tests that run the real ``chatcli`` executable in subprocesses.

Every read is bounded: a test that waits on a process fails with what it saw instead of
hanging the suite.
"""

from __future__ import annotations

import os
import re
import selectors
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["EXIT_TIMEOUT", "START_TIMEOUT", "chatcli", "read_line", "serve_process"]

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
    popen.setdefault("stdout", subprocess.PIPE)
    popen.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen(
        [sys.executable, "-m", "chatcli", *args],
        env={**os.environ, "NO_COLOR": "1", "PYTHONUNBUFFERED": "1", **(env or {})},
        **popen,
    )


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
