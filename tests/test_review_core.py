"""Adversarial review of the core: hostile peers against a real server, and the client.

Each test here reproduces a defect found in review (it failed before the fix that came
with it) or pins down a behaviour of the spec that a hostile peer probes.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest
from helpers import async_test, serving
from processes import Terminal, Watcher, run_join

from chatcli.client.connection import MAX_SERVER_FRAME
from chatcli.core.protocol import LineFramer
from chatcli.errors import FrameTooLarge

#: bound on every wait of the end-to-end tests
E2E_TIMEOUT = 15.0


@async_test(timeout=90)
async def test_a_room_full_of_slow_consumers_is_cut_off_without_recursion() -> None:
    """Many recipients passing the output bound in the same fan-out are all cut off.

    Each cut-off recipient's ``leave`` was delivered from inside the fan-out that cut it,
    so the recursion grew one level per slow client and a few hundred of them raised
    RecursionError half-way: connections were left half-closed and never closed.
    """
    clients = 250
    async with serving(rate_limit=0, max_buffer=16384) as srv:
        room = [await srv.login(f"u{i}", history=0) for i in range(clients)]
        # one write, one loop turn: every member's queued output passes the bound at once
        say = json.dumps({"type": "say", "text": "x" * 2000}).encode() + b"\n"
        await room[0].send(say * 12)
        for client in room:
            tail = await client.eof(timeout=10)
            assert tail.rstrip(b"\n").rsplit(b"\n", 1)[-1] == (
                b'{"type":"error","code":"slow_consumer","message":"you are not reading"}'
            )
        late = await srv.login("late", history=0)
        assert late.ready["users"] == ["late"]
        await late.send({"type": "say", "text": "still here"})
        await late.expect("msg", text="still here")


@async_test
async def test_every_error_echoes_the_ref_of_the_frame_that_caused_it() -> None:
    """hello, join, who and rooms dropped their ref (msgspec ignored it as unknown)."""
    async with serving() as srv:
        anon = await srv.connect()
        await anon.expect("welcome")
        for kind in ("who", "rooms"):
            await anon.send({"type": kind, "ref": f"{kind}-1"})
            await anon.expect("error", code="not_logged_in", ref=f"{kind}-1")
        await anon.send({"type": "join", "room": "dev", "ref": 7})
        await anon.expect("error", code="not_logged_in", ref=7)
        await anon.send({"type": "hello", "name": "amy", "room": "NOT OK", "ref": "h1"})
        await anon.expect("error", code="bad_request", ref="h1")
        await anon.send({"type": "hello", "name": "amy", "ref": "h2"})
        await anon.expect("ready", name="amy")
        await anon.send({"type": "join", "room": "Bad Room", "ref": "j1"})
        await anon.expect("error", code="bad_request", ref="j1")
        await anon.send({"type": "hello", "name": "again", "ref": "h3"})
        await anon.expect("error", code="bad_request", ref="h3")
        other = await srv.connect()
        await other.expect("welcome")
        await other.send({"type": "hello", "name": "AMY", "ref": "h4"})
        await other.expect("error", code="name_taken", ref="h4")
        third = await srv.connect()
        await third.expect("welcome")
        await third.send({"type": "hello", "name": "bad name", "ref": "h5"})
        await third.expect("error", code="name_invalid", ref="h5")


def test_a_long_line_arriving_in_many_chunks_is_framed_in_linear_time() -> None:
    """The framer copied its whole unfinished tail on every chunk: quadratic time.

    A hostile server sending a line of tens of MiB (the client allows 64 MiB) froze
    ``chatcli join`` for many seconds of CPU before any limit applied; a relay paid the
    same for every client trickling a 64 KiB line. 32 MiB in 64 KiB reads took ~5 s.
    """
    framer = LineFramer(MAX_SERVER_FRAME)
    chunk = b"x" * 65536
    started = time.perf_counter()
    for _ in range(512):
        assert framer.feed(chunk) == []
    assert framer.pending == 512 * 65536
    frames = framer.feed(b"y\nz")
    elapsed = time.perf_counter() - started
    assert [len(frame) for frame in frames] == [512 * 65536 + 1]
    assert framer.pending == 1
    assert elapsed < 1.0, f"{elapsed:.2f} s to frame 32 MiB"


@async_test
async def test_lines_before_a_too_long_line_in_the_same_read_are_acted_on() -> None:
    """A message pipelined just before an oversized line was dropped without a word."""
    async with serving(max_frame=1000) as srv:
        alice = await srv.login("alice")
        bob = await srv.login("bob")
        await alice.expect("join", name="bob")
        say = json.dumps({"type": "say", "text": "before", "ref": "b1"}).encode() + b"\n"
        await alice.send(say + b"x" * 2000 + b"\n")
        await bob.expect("msg", text="before", **{"from": "alice"})
        await bob.expect("leave", name="alice", reason="lost")
        tail = [json.loads(line) for line in (await alice.eof()).splitlines()]
        assert [(f["type"], f.get("ref"), f.get("code")) for f in tail] == [
            ("msg", "b1", None),
            ("error", None, "frame_too_large"),
        ]


def test_frame_too_large_carries_the_frames_before_it() -> None:
    for data in (b"a\nbb\n" + b"x" * 11 + b"\nc\n", b"a\nbb\n" + b"x" * 12):
        framer = LineFramer(10)
        with pytest.raises(FrameTooLarge) as caught:
            framer.feed(data)
        assert caught.value.frames == [b"a", b"bb"]


# ------------------------------------------------------------------ chatcli join (e2e)


def _join(
    port: int, name: str, stdin: bytes, env: dict[str, str]
) -> subprocess.CompletedProcess[bytes]:
    return run_join(name, "--port", str(port), stdin=stdin, env=env, timeout=E2E_TIMEOUT)


@pytest.mark.e2e
@pytest.mark.parametrize("stdin_errors", ["strict", "surrogateescape"])
def test_piped_input_that_is_not_utf8_is_sent_with_replacement_characters(
    server: int, config: dict[str, str], stdin_errors: str
) -> None:
    """A byte that is not UTF-8 on stdin used to hang the session (strict decoding
    killed the reader thread) or crash it with a traceback (surrogateescape)."""
    watcher = Watcher(server)
    try:
        env = {**config, "PYTHONIOENCODING": f"utf-8:{stdin_errors}"}
        done = _join(server, f"pipe-{stdin_errors[:6]}", b"caf\xe9 ok\nnext\n", env)
        assert b"Traceback" not in done.stderr, done.stderr.decode()
        assert done.returncode == 0, done.stderr
        watcher.expect("msg", text="caf\ufffd ok")
        watcher.expect("msg", text="next")
    finally:
        watcher.close()


@pytest.mark.e2e
def test_interactive_input_that_is_not_utf8_does_not_crash(
    server: int, config: dict[str, str]
) -> None:
    """A Latin-1 terminal typing 'é' sent a lone surrogate to the encoder: a traceback."""
    watcher = Watcher(server, "watcher2")
    try:
        with Terminal(
            "join", "latin", "--port", str(server), env=config, timeout=E2E_TIMEOUT
        ) as term:
            term.read_until(b"latin>")
            term.type(b"caf\xe9 ok\r")
            watcher.expect("msg", text="caf\ufffd ok", **{"from": "latin"})
            term.type(b"/quit\r")
            assert term.proc.wait(E2E_TIMEOUT) == 0
    finally:
        watcher.close()
    screen = term.screen
    assert b"Traceback" not in screen, screen.decode(errors="replace")
