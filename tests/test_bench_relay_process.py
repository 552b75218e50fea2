"""bench's own relay (chatcli.bench.relay_process): started, found through --ready-fd, stopped."""

from __future__ import annotations

import socket

import pytest

from chatcli.bench.relay_process import RelayProcess
from chatcli.errors import ChatError


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_the_relay_is_found_on_any_address_family(host: str) -> None:
    relay = RelayProcess(host=host)
    try:
        assert relay.host == host
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.create_connection((relay.host, relay.port), timeout=10) as sock:
            assert sock.family == family
            assert sock.makefile("rb").readline().startswith(b'{"type":"welcome"')
        assert relay.cpu_seconds() > 0
    finally:
        relay.stop()
    assert relay.proc.returncode == 0  # SIGINT: a graceful shutdown


def test_a_relay_that_cannot_start_says_why() -> None:
    with pytest.raises(ChatError, match=r"did not start: .*--max-frame"):
        RelayProcess(["--max-frame", "1"])
