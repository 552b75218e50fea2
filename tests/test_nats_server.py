"""The test helper that runs a real nats-server: it starts, JetStream works, data survives.

These tests pin down what the cluster tests stand on: if JetStream's data did not survive
a restart or a kill of the server here, the cluster's "nothing acknowledged is lost"
tests would prove nothing.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import nats
import pytest
from helpers import run
from nats.js.api import StreamConfig
from nats_server import STOP_TIMEOUT, NatsServer, NatsServerError

STREAM = "TESTS"
SUBJECT = "tests.one"


async def _publish(url: str, *texts: str) -> list[int]:
    """Publish ``texts`` to the test stream (created if missing); the sequences acked."""
    nc = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=0)
    try:
        js = nc.jetstream()
        await js.add_stream(StreamConfig(name=STREAM, subjects=["tests.>"]))
        return [(await js.publish(SUBJECT, text.encode())).seq for text in texts]
    finally:
        await nc.close()


async def _read_all(url: str) -> list[str]:
    """Every message of the test stream, in order, by sequence."""
    nc = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=0)
    try:
        js = nc.jetstream()
        info = await js.stream_info(STREAM)
        first, last = info.state.first_seq, info.state.last_seq
        return [
            (await js.get_msg(STREAM, seq)).data.decode()  # type: ignore[union-attr]
            for seq in range(first, last + 1)
        ]
    finally:
        await nc.close()


def _refused(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) != 0


def test_starts_on_loopback_with_jetstream(nats_server: NatsServer) -> None:
    assert nats_server.url == f"nats://127.0.0.1:{nats_server.port}"
    assert nats_server.pid is not None
    assert run(_publish(nats_server.url, "a", "b")) == [1, 2]
    assert run(_read_all(nats_server.url)) == ["a", "b"]
    assert "Starting nats-server" in nats_server.log_text()


def test_restart_keeps_port_and_stream(nats_server: NatsServer) -> None:
    port, pid = nats_server.port, nats_server.pid
    run(_publish(nats_server.url, "before"))
    nats_server.stop()
    assert nats_server.pid is None
    assert _refused(port)  # type: ignore[arg-type]
    nats_server.start()
    assert (nats_server.port, nats_server.pid != pid) == (port, True)
    run(_publish(nats_server.url, "after"))
    assert run(_read_all(nats_server.url)) == ["before", "after"]


def test_kill_then_restart_keeps_acknowledged_messages(nats_server: NatsServer) -> None:
    run(_publish(nats_server.url, *(f"m{i}" for i in range(50))))
    nats_server.kill()
    assert _refused(nats_server.port)  # type: ignore[arg-type]
    nats_server.restart()
    assert run(_read_all(nats_server.url)) == [f"m{i}" for i in range(50)]


def test_pause_hangs_and_resume_recovers(nats_server: NatsServer) -> None:
    """A paused server accepts no new client in time (nothing answers), then carries on."""
    run(_publish(nats_server.url, "one"))
    nats_server.pause()
    try:
        with pytest.raises((TimeoutError, nats.errors.Error)):
            run(_read_all(nats_server.url), timeout=3)
    finally:
        nats_server.resume()
    assert run(_read_all(nats_server.url)) == ["one"]
    nats_server.pause()
    started = time.monotonic()
    nats_server.stop()  # a paused server still stops at once
    assert time.monotonic() - started < STOP_TIMEOUT


def test_two_servers_side_by_side(tmp_path: Path, nats_server: NatsServer) -> None:
    with NatsServer(tmp_path / "other") as other:
        assert other.port != nats_server.port
        run(_publish(other.url, "elsewhere"))
        assert run(_read_all(other.url)) == ["elsewhere"]
    assert other.pid is None


def test_a_server_that_cannot_start_fails_with_its_log(tmp_path: Path) -> None:
    server = NatsServer(tmp_path / "bad", args=("--no-such-option",))
    with pytest.raises(NatsServerError, match="exited with code"):
        server.start()
    assert server.pid is None
