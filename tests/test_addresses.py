"""The one HOST:PORT parser (chatcli.addresses) and the commands that read addresses with it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from processes import chatcli, run_join

from chatcli.addresses import (
    AddressError,
    format_address,
    parse_address,
    parse_host,
    split_address,
)
from chatcli.bench.relay_process import RelayProcess
from chatcli.errors import UsageError

LOBBY = Path(__file__).resolve().parent.parent / "recordings" / "20261121-090000_lobby.jsonl"


@pytest.mark.parametrize(
    ("text", "split"),
    [
        ("127.0.0.1:7777", ("127.0.0.1", 7777)),
        ("chat.example.org:80", ("chat.example.org", 80)),
        ("localhost", ("localhost", None)),
        (" localhost:1 ", ("localhost", 1)),
        ("[::1]:7777", ("::1", 7777)),
        ("[::1]", ("::1", None)),
        ("[fe80::1%eth0]:7777", ("fe80::1%eth0", 7777)),
        ("::1", ("::1", None)),
        ("::", ("::", None)),
        ("2001:db8::7", ("2001:db8::7", None)),
        (":7000", ("", 7000)),
        ("7000", ("", 7000)),
        ("65535", ("", 65535)),
    ],
)
def test_split_address_reads_every_spelling(text: str, split: tuple[str, int | None]) -> None:
    assert split_address(text) == split


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "it is empty"),
        ("   ", "it is empty"),
        ("host:0", "port 0 is outside 1-65535"),
        ("host:70000", "port 70000 is outside 1-65535"),
        ("70000", "port 70000 is outside 1-65535"),
        ("host:x", "port 'x' is not a number"),
        ("host:", "no port"),
        ("[::1", "'[' without its ']'"),
        ("[::1]7777", "'7777' after ']' (expected ':PORT')"),
        ("[::1]:", "no port"),
        ("[localhost]:7777", "'localhost' is not an IPv6 address"),
        ("1:2:3", "'1:2:3' is not an IPv6 address"),
        ("chat example.org:7777", "'chat example.org' is not a host name or address"),
        ("user@host:7777", "'user@host' is not a host name or address"),
        ("bad\x1b[2J:7777", "is not a host name or address"),
    ],
)
def test_split_address_says_what_is_wrong(text: str, reason: str) -> None:
    with pytest.raises(AddressError, match="--to wants HOST:PORT") as caught:
        split_address(text, "--to")
    assert reason in caught.value.reason
    assert isinstance(caught.value, UsageError)  # commands map it to exit code 2


def test_parse_address_fills_in_defaults_and_requires_a_port() -> None:
    assert parse_address(":7000") == ("127.0.0.1", 7000)
    assert parse_address("7000", default_host="::1") == ("::1", 7000)
    assert parse_address("example.org", default_port=7777) == ("example.org", 7777)
    assert parse_address("[::1]", default_port=7777) == ("::1", 7777)
    with pytest.raises(AddressError, match="no port"):
        parse_address("example.org")
    # a bare IPv6 address never carries a port: ::1:7777 is an address of its own
    with pytest.raises(AddressError, match="no port"):
        parse_address("::1:7777")


def test_parse_host_takes_a_host_alone() -> None:
    assert parse_host("::1") == "::1"
    assert parse_host("[::1]") == "::1"
    assert parse_host("0.0.0.0") == "0.0.0.0"
    with pytest.raises(AddressError, match="give the port with --port"):
        parse_host("localhost:7777")
    with pytest.raises(AddressError, match=r"like 127\.0\.0\.1 or ::1"):
        parse_host("[::1]:7777")
    with pytest.raises(AddressError, match="give the port with --port"):
        parse_host(":7777")
    with pytest.raises(AddressError, match="it is empty"):
        parse_host("")


@pytest.mark.parametrize(
    ("host", "port"), [("127.0.0.1", 7777), ("::1", 1), ("fe80::1%eth0", 80), ("a.b", 65535)]
)
def test_format_address_reads_back(host: str, port: int) -> None:
    text = format_address(host, port)
    assert parse_address(text) == (host, port)
    assert text == (f"[{host}]:{port}" if ":" in host else f"{host}:{port}")


# ------------------------------------------------------------------ IPv6 end to end


@pytest.fixture(scope="module")
def relay6() -> Iterator[RelayProcess]:
    """A real ``chatcli serve`` on [::1] (bench's own: found through --ready-fd)."""
    relay = RelayProcess(host="::1")
    try:
        yield relay
    finally:
        relay.stop()


@pytest.mark.e2e
@pytest.mark.parametrize("host", ["::1", "[::1]"])
def test_join_reaches_an_ipv6_server(
    relay6: RelayProcess, config: dict[str, str], host: str
) -> None:
    name = "v6bare" if host == "::1" else "v6brackets"
    done = run_join(name, "--host", host, "--port", str(relay6.port), stdin=b"hi\n", env=config)
    assert done.returncode == 0, done.stderr
    assert f"<{name}> hi" in done.stdout.decode()


@pytest.mark.e2e
def test_join_takes_the_port_in_host(relay6: RelayProcess, config: dict[str, str]) -> None:
    done = run_join("v6port", "--host", f"[::1]:{relay6.port}", stdin=b"hi\n", env=config)
    assert done.returncode == 0, done.stderr
    assert "<v6port> hi" in done.stdout.decode()


@pytest.mark.e2e
def test_join_refuses_a_bad_host_list_with_one_clear_line(config: dict[str, str]) -> None:
    done = run_join("amy", "--host", "[::1]:7777,", env=config)
    assert done.returncode == 2
    assert done.stderr.decode().splitlines() == [
        "chatcli: --host wants HOST:PORT (like 127.0.0.1:7777 or [::1]:7777), not "
        "'[::1]:7777,': an empty entry in the list"
    ]
    done = run_join("amy", "--host", "a:7777", "--host", "[::1]:99999", env=config)
    assert done.returncode == 2
    assert done.stderr.decode().splitlines() == [
        "chatcli: --host wants HOST:PORT (like 127.0.0.1:7777 or [::1]:7777), not "
        "'[::1]:99999': port 99999 is outside 1-65535"
    ]


@pytest.mark.e2e
def test_replay_to_an_ipv6_server(relay6: RelayProcess) -> None:
    proc = chatcli(
        "replay", str(LOBBY), "--to", f"[::1]:{relay6.port}", "--instant", "--prefix", "v6-"
    )
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    report = out.decode().splitlines()
    assert report[0] == f"replayed to [::1]:{relay6.port}", report


@pytest.mark.slow
@pytest.mark.e2e
def test_bench_targets_an_ipv6_server(relay6: RelayProcess) -> None:
    target = f"[::1]:{relay6.port}"
    proc = chatcli(
        "bench", "--target", target, "-c", "2", "--rate", "5", "-d", "1", "--warmup", "0"
    )
    out, err = proc.communicate(timeout=60)
    # 0: a run; 3: a run the busy machine made invalid. Either way it connected and ran.
    assert proc.returncode in (0, 3), err.decode()[-2000:]
    assert "outcome: " in out.decode() and "Traceback" not in err.decode()


def test_bench_target_errors_say_what_is_wrong() -> None:
    proc = chatcli("bench", "--target", "[::1]:99999")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "port 99999 is outside 1-65535: expected HOST:PORT" in err.decode()
