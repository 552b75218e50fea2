"""Review findings on ``chatcli replay`` and ``chatcli bench``: each test proves one defect.

Every wait is bounded; processes started here are killed on the way out.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = (sys.executable, "-m", "chatcli", "bench", "--warmup", "0")
ENV = {**os.environ, "NO_COLOR": "1", "PYTHONUNBUFFERED": "1", "COLUMNS": "120"}


def _readme_commands(section: str) -> list[str]:
    """The ``chatcli ...`` lines of the sh blocks in README section ``section``."""
    text = (ROOT / "README.md").read_text("utf-8")
    body = text.split(f"## `{section}`", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", body, re.S)
    return [line for block in blocks for line in block.splitlines() if "chatcli" in line]


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
