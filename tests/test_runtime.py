"""Process plumbing (chatcli.runtime): the loop runner, the descriptor limit, --ready-fd."""

from __future__ import annotations

import asyncio
import os
import resource
import subprocess
import sys

import pytest

from chatcli.runtime import decode_ready, encode_ready, raise_open_files_limit, run


def test_run_returns_the_coroutine_result_on_uvloop_when_installed() -> None:
    async def loop_name() -> str:
        return type(asyncio.get_running_loop()).__module__

    name = run(loop_name())
    try:
        import uvloop  # noqa: F401
    except ImportError:
        assert name.startswith("asyncio")
    else:
        assert name.startswith("uvloop")


def test_raise_open_files_limit_raises_the_soft_limit_within_the_hard_one() -> None:
    code = (
        "import resource\n"
        "from chatcli.runtime import raise_open_files_limit\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))\n"
        "print(raise_open_files_limit(300), resource.getrlimit(resource.RLIMIT_NOFILE)[0])\n"
        "print(raise_open_files_limit(), resource.getrlimit(resource.RLIMIT_NOFILE)[0], hard)\n"
    )
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < 364:
        pytest.skip(f"the hard limit here is {hard}")
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout.split()
    assert out[:2] == ["364", "364"]  # 300 connections and the spare descriptors
    soft_after, hard_now = int(out[3]), int(out[4])
    assert int(out[2]) == soft_after
    if hard_now != resource.RLIM_INFINITY:
        assert soft_after == hard_now  # None asks for the hard limit itself
    # it never lowers a limit that is already high enough
    assert raise_open_files_limit(10) >= 10


def test_freeze_heap_collects_the_garbage_then_leaves_the_rest_out_of_later_collections() -> None:
    """What a server holds once set up is frozen (never walked by a full collection
    again); garbage made while setting up is collected first, not frozen forever."""
    code = (
        "import gc, weakref\n"
        "from chatcli.runtime import freeze_heap\n"
        "class Node: pass\n"
        "held = [[i] for i in range(100_000)]\n"
        "cycle = Node(); cycle.me = cycle\n"
        "gone = weakref.ref(cycle); del cycle\n"
        "freeze_heap()\n"
        "print(gone() is None, gc.get_freeze_count() >= 100_000, len(gc.get_objects()) < 10_000)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.split() == ["True", "True", "True"]


def test_ready_line_round_trips_ipv4_and_ipv6() -> None:
    addresses = [("127.0.0.1", 7777), ("::1", 40000)]
    line = encode_ready(addresses)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert decode_ready(line) == addresses


@pytest.mark.parametrize(
    "line",
    [b"", b"chatcli serve listening on 127.0.0.1:7777\n", b"{}", b'{"addresses": []}',
     b'{"addresses": [["::1", 0]]}', b'{"addresses": [["::1"]]}', b"[1]"],
)  # fmt: skip
def test_decode_ready_refuses_anything_else(line: bytes) -> None:
    with pytest.raises(ValueError):
        decode_ready(line)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_serve_announces_its_address_on_the_ready_fd(host: str) -> None:
    read, write = os.pipe()
    proc = subprocess.Popen(
        [sys.executable, "-m", "chatcli", "serve", "--host", host, "--port", "0", "-q",
         "--ready-fd", str(write)],
        pass_fds=(write,), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    os.close(write)
    try:
        with os.fdopen(read, "rb") as ready:
            line = ready.readline()  # bounded: the relay exits (EOF) if it cannot listen
            assert ready.read() == b""  # the relay closes the descriptor after one line
        [(announced, port)] = decode_ready(line)
        assert announced == host and 0 < port < 65536
        assert proc.stdout is not None
        shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        assert proc.stdout.readline() == f"chatcli serve listening on {shown}\n"
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
    assert proc.returncode == 0


def test_serve_refuses_a_ready_fd_that_is_not_open() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "chatcli", "serve", "--port", "0", "--ready-fd", "999"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "--ready-fd 999" in result.stderr
