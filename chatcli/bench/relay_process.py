"""The relay under test when bench starts its own: a ``chatcli serve`` child process.

A separate process, so the load generator never steals the relay's event loop; its CPU
time and peak resident memory are sampled through psutil for the report. The relay says
where it listens through ``--ready-fd``: one JSON line on a pipe of its own (any address
family), never a human line scraped from its output.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import psutil

from chatcli.bench.certificate import self_signed
from chatcli.errors import ChatError
from chatcli.runtime import decode_ready
from chatcli.tls import ClientTls

__all__ = ["RelayProcess"]

#: seconds to wait for the relay to announce its address, and to exit when stopped
START_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0
#: lines of the relay's stderr kept to explain a failure
STDERR_LINES_KEPT = 20


class RelayProcess:
    """A ``chatcli serve`` on a free port of ``host`` (loopback), started and stopped by bench.

    With ``tls`` it speaks TLS with a certificate made for this run; ``client_tls`` says
    how its clients verify it.
    """

    def __init__(
        self, extra_args: list[str] | None = None, host: str = "127.0.0.1", tls: bool = False
    ) -> None:
        extra_args = list(extra_args or [])
        #: with ``tls``: a throwaway certificate for ``host``, and how clients trust it
        self._cert_dir: tempfile.TemporaryDirectory[str] | None = None
        self.client_tls: ClientTls | None = None
        if tls:
            self._cert_dir = tempfile.TemporaryDirectory(prefix="chatcli-bench-tls-")
            cert, key = self_signed(Path(self._cert_dir.name), host)
            extra_args += ["--tls-cert", str(cert), "--tls-key", str(key)]
            self.client_tls = ClientTls(ca=cert)
        #: the relay's throwaway store (unless the caller chose one), removed at stop
        self._store_dir: tempfile.TemporaryDirectory[str] | None = None
        if "--store" not in extra_args:
            self._store_dir = tempfile.TemporaryDirectory(prefix="chatcli-bench-")
            extra_args += ["--store", str(Path(self._store_dir.name) / "bench.db")]
        ready, ready_w = os.pipe()
        command = [
            sys.executable, "-m", "chatcli", "serve", "--host", host, "--port", "0",
            "-q", "--rate-limit", "0", "--history", "0", "--max-buffer", str(64 << 20),
            "--ready-fd", str(ready_w), *extra_args,
        ]  # fmt: skip
        try:
            self.proc = subprocess.Popen(
                command,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                pass_fds=(ready_w,),
            )
        finally:
            os.close(ready_w)  # the relay holds the only write end: its exit means EOF
        # Both pipes are drained for the relay's whole life: a relay blocked on a full
        # pipe would be measured as a slow relay. stderr's last lines explain a failure.
        self.stderr_tail: deque[str] = deque(maxlen=STDERR_LINES_KEPT)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        threading.Thread(target=_drain, args=(self.proc.stdout, _ignore), daemon=True).start()
        self._stderr_reader = threading.Thread(
            target=_drain, args=(self.proc.stderr, self.stderr_tail.append), daemon=True
        )
        self._stderr_reader.start()
        try:
            self.host, self.port = self._wait_ready(ready)
        finally:
            os.close(ready)
        self.ps = psutil.Process(self.proc.pid)
        self.peak_rss = 0
        self.sample()
        self._cpu_mark = self.cpu_seconds()

    def _wait_ready(self, fd: int) -> tuple[str, int]:
        """The first address the relay announces on ``fd``; ChatError if it never does."""
        line = _read_line(fd, time.monotonic() + START_TIMEOUT)
        try:
            return decode_ready(line)[0]
        except ValueError as exc:
            problem = "no address announced" if not line else str(exc)
        self.proc.kill()
        self.proc.wait(STOP_TIMEOUT)
        self._stderr_reader.join(STOP_TIMEOUT)  # the relay's last words explain it
        why = " / ".join(self.stderr_tail).strip() or problem
        raise ChatError(f"the relay under test did not start: {why[:300]}")

    def cpu_seconds(self) -> float:
        """User plus system CPU time the relay has used so far."""
        times = self.ps.cpu_times()
        return float(times.user + times.system)

    def rss(self) -> int:
        """Resident memory now, in bytes."""
        return int(self.ps.memory_info().rss)

    def sample(self) -> None:
        """Remember the highest resident memory seen; call it periodically."""
        with contextlib.suppress(psutil.Error):
            self.peak_rss = max(self.peak_rss, self.rss())

    def mark_cpu(self) -> None:
        """Start counting CPU time from now (after connecting, before the measured window)."""
        self._cpu_mark = self.cpu_seconds()

    def cpu_since_mark(self) -> float:
        return self.cpu_seconds() - self._cpu_mark

    def stop(self) -> None:
        """SIGINT, as Ctrl-C would: a graceful shutdown, then a kill if it hangs."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT)
        for directory in (self._store_dir, self._cert_dir):
            if directory is not None:
                directory.cleanup()
        self._store_dir = self._cert_dir = None


def _read_line(fd: int, deadline: float) -> bytes:
    """Bytes from ``fd`` up to a newline, end of file or ``deadline`` (monotonic)."""
    data = b""
    while not data.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data


def _ignore(line: str) -> None:
    """What the relay prints on stdout: nothing bench needs (the address came on its pipe)."""


def _drain(
    stream: IO[str], keep: Callable[[str], Any], ended: Callable[[], Any] | None = None
) -> None:
    """Read a pipe to its end, handing each line to ``keep``; then call ``ended``."""
    with contextlib.suppress(ValueError, OSError):
        for line in stream:
            keep(line.rstrip("\n"))
    if ended is not None:
        ended()
