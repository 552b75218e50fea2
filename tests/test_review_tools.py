"""Review findings on ``chatcli replay`` and ``chatcli bench``: each test proves one defect.

Every wait is bounded; processes started here are killed on the way out.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from rich.console import Console

from chatcli.bench.report_schema import BenchReport
from chatcli.bench.view import render_summary

ROOT = Path(__file__).resolve().parent.parent
BENCH = (sys.executable, "-m", "chatcli", "bench", "--warmup", "0")
ENV = {**os.environ, "NO_COLOR": "1", "PYTHONUNBUFFERED": "1", "COLUMNS": "120"}


def _readme_commands(section: str) -> list[str]:
    """The ``chatcli ...`` lines of the sh blocks in README section ``section``."""
    text = (ROOT / "README.md").read_text("utf-8")
    body = text.split(f"## `{section}`", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", body, re.S)
    return [line for block in blocks for line in block.splitlines() if "chatcli" in line]


def test_readme_replay_examples_name_files_that_exist() -> None:
    # a new user copies these lines: every shipped file they name must be there
    missing = []
    for line in _readme_commands("chatcli replay"):
        for word in shlex.split(line, comments=True):
            shipped = word.startswith("recordings/") and not set("*$") & set(word)
            if shipped and not (ROOT / word).is_file():
                missing.append(word)
    assert not missing, missing


def test_bench_summary_shows_the_baseline_warnings() -> None:
    # a comparison against another machine or other parameters must say so on screen,
    # not only inside the --json file
    report = BenchReport(params={}, metrics={})
    report.baseline = {
        "tolerance": 0.1,
        "failed": False,
        "warnings": ["parameters differ from the baseline: clients 50 -> 5"],
        "rows": [],
    }
    console = Console(file=io.StringIO(), width=200, color_system=None)
    console.print(render_summary(report))
    shown = console.file.getvalue()  # type: ignore[attr-defined]
    assert "parameters differ from the baseline: clients 50 -> 5" in shown


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc")
def test_bench_unwritable_json_is_a_usage_error_before_the_run() -> None:
    # /proc takes no new files, even for root: learn it before the run, not after it
    proc = subprocess.run(
        [*BENCH, "-c", "2", "--rate", "2", "-d", "5", "--json", "/proc/chatcli-review.json"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        env=ENV,
    )
    assert proc.returncode == 2, proc.stderr[-1000:]
    assert "/proc/chatcli-review.json" in proc.stderr
    assert "starting relay" not in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.e2e
def test_bench_sigterm_stops_the_relay_and_the_workers() -> None:
    # CI timeouts, `timeout` and `kill` send SIGTERM to bench alone: its relay and its
    # worker processes must not outlive it
    proc = subprocess.Popen(
        [*BENCH, "-c", "2", "--rate", "2", "-d", "30"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
        start_new_session=True,
    )
    children: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            children = psutil.Process(proc.pid).children(recursive=True)
            commands = [" ".join(c.cmdline()) for c in children if c.is_running()]
            if any("serve" in c for c in commands) and any("spawn_main" in c for c in commands):
                break
            time.sleep(0.2)
        else:
            pytest.fail("bench did not start its relay and a worker within 30 s")
        time.sleep(1.0)  # the run is going
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        _, alive = psutil.wait_procs(children, timeout=15)
        assert not alive, [" ".join(p.cmdline()) for p in alive]
        assert proc.returncode == 128 + signal.SIGTERM, err[-1000:]
        assert "Traceback" not in err, err[-2000:]
    finally:
        for child in children:
            with contextlib.suppress(psutil.Error):
                child.kill()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
