"""The relay under test when bench starts its own: a ``chatcli serve`` child process.

A separate process, so the load generator never steals the relay's event loop; its CPU
time and peak resident memory are sampled through psutil for the report.
"""

from __future__ import annotations

import contextlib
import queue
import re
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

from chatcli.errors import ChatError

__all__ = ["RelayProcess"]

_LISTENING = re.compile(r"listening on ([\d.]+):(\d+)")
#: seconds to wait for the relay to print its address, and to exit when stopped
START_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0
#: lines of the relay's stderr kept to explain a failure
STDERR_LINES_KEPT = 20


class RelayProcess:
    """A ``chatcli serve`` on a free loopback port, started and stopped by bench."""

    def __init__(self, extra_args: list[str] | None = None) -> None:
        extra_args = list(extra_args or [])
        #: the relay's throwaway store (unless the caller chose one), removed at stop
        self._store_dir: tempfile.TemporaryDirectory[str] | None = None
        if "--store" not in extra_args:
            self._store_dir = tempfile.TemporaryDirectory(prefix="chatcli-bench-")
            extra_args += ["--store", str(Path(self._store_dir.name) / "bench.db")]
        command = [
            sys.executable, "-m", "chatcli", "serve", "--host", "127.0.0.1", "--port", "0",
            "-q", "--rate-limit", "0", "--history", "0", "--max-buffer", str(64 << 20),
            *extra_args,
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        # Both pipes are drained for the relay's whole life: a relay blocked on a full
        # pipe would be measured as a slow relay. stderr's last lines explain a failure.
        self.stderr_tail: deque[str] = deque(maxlen=STDERR_LINES_KEPT)
        self._stdout: queue.Queue[str | None] = queue.Queue()
        assert self.proc.stdout is not None and self.proc.stderr is not None
        threading.Thread(
            target=_drain,
            args=(self.proc.stdout, self._stdout.put, lambda: self._stdout.put(None)),
            daemon=True,
        ).start()
        threading.Thread(
            target=_drain, args=(self.proc.stderr, self.stderr_tail.append), daemon=True
        ).start()
        self.host, self.port = self._wait_listening()
        self.ps = psutil.Process(self.proc.pid)
        self.peak_rss = 0
        self.sample()
        self._cpu_mark = self.cpu_seconds()

    def _wait_listening(self) -> tuple[str, int]:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                line = self._stdout.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:  # end of output, or no address in time
                break
            found = _LISTENING.search(line)
            if found:
                return found.group(1), int(found.group(2))
        self.proc.kill()
        self.proc.wait(STOP_TIMEOUT)
        why = " / ".join(self.stderr_tail).strip() or "no address printed"
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
        if self._store_dir is not None:
            self._store_dir.cleanup()
            self._store_dir = None


def _drain(
    stream: IO[str], keep: Callable[[str], Any], ended: Callable[[], Any] | None = None
) -> None:
    """Read a pipe to its end, handing each line to ``keep``; then call ``ended``."""
    with contextlib.suppress(ValueError, OSError):
        for line in stream:
            keep(line.rstrip("\n"))
    if ended is not None:
        ended()
