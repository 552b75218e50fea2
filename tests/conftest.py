"""Fixtures shared by the end-to-end tests of ``chatcli join``."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from processes import serve_process

# No test may read or write the user's data dir (the server's default store lives there).
os.environ["CHATCLI_DATA_DIR"] = tempfile.mkdtemp(prefix="chatcli-test-data-")


@pytest.fixture(scope="module")
def server() -> Iterator[int]:
    """The port of a ``chatcli serve`` process shared by one test module."""
    with serve_process() as (_proc, port):
        yield port


@pytest.fixture
def config(tmp_path: Path) -> dict[str, str]:
    """An isolated config dir (tests neither read nor write the user's), UTF-8 locale."""
    return {"CHATCLI_CONFIG_DIR": str(tmp_path / "config"), "LC_ALL": "C.UTF-8"}
