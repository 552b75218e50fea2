"""Fixtures shared by the end-to-end tests of ``chatcli join``."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from nats_server import NatsServer
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


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A real ``nats-server -js`` on a free loopback port, its store under ``tmp_path``."""
    with NatsServer(tmp_path / "nats") as server:
        yield server


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """A failing test that used ``nats_server`` shows the server's log in its report."""
    report = yield
    server = getattr(item, "funcargs", {}).get("nats_server")
    if report.failed and isinstance(server, NatsServer):
        report.sections.append(("nats-server log", server.log_text()[-20_000:]))
    return report
