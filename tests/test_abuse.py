"""Issue 13: one test per row of the abuse table, at small scale, on real sockets.

Each test asserts the bound holds AND that a normal client keeps its service: a newcomer
logs in and a message round-trips within ROUND_TRIP seconds. Rows about the server
process (open files, recording, shutdown) run a real ``chatcli serve``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import resource
import signal
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from chatcli.transcript import check_transcript
from tests.helpers import LineClient, TestServer, async_test, serving
from tests.processes import EXIT_TIMEOUT, START_TIMEOUT, chatcli, read_line

#: what "keeps its service" means in these tests: a login and a message round trip
ROUND_TRIP = 2.0


async def still_serving(srv: TestServer | int, name: str = "newcomer") -> float:
    """Log a newcomer in and round-trip one message; return the seconds it took."""
    started = time.monotonic()
    port = srv if isinstance(srv, int) else srv.port
    client = await LineClient.open(port)
    try:
        welcome = await client.expect("welcome")
        assert len(json.dumps(welcome)) < 8192  # constant size, whatever happened
        await client.send({"type": "hello", "name": name, "history": 0})
        await client.recv_until("ready")
        await client.send({"type": "say", "text": "round trip", "ref": "rt"})
        await client.recv_until("msg", ref="rt")
    finally:
        client.abort()
    took = time.monotonic() - started
    assert took < ROUND_TRIP, f"a newcomer's round trip took {took:.2f} s"
    return took


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class Served:
    """A ``chatcli serve`` subprocess and its port (stopped by its own pid at exit)."""

    def __init__(self, *args: str, preexec: Any = None) -> None:
        self.proc = chatcli(
            "serve", "--port", "0", "-q", "--host", "127.0.0.1", *args, preexec_fn=preexec
        )
        line = read_line(self.proc.stdout, START_TIMEOUT).decode()
        assert "listening on" in line, line
        self.port = int(line.rsplit(":", 1)[1])

    def stop(self) -> tuple[int, float, str]:
        """SIGTERM; the exit code, the seconds it took and what it wrote on stderr."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(EXIT_TIMEOUT + 10)
        took = time.monotonic() - started
        assert self.proc.stderr is not None
        return code, took, self.proc.stderr.read().decode()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(EXIT_TIMEOUT)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


# ----------------------------------------------------------- row 1: recording + hopping


@pytest.mark.slow
@async_test(timeout=60)
async def test_row1_room_hopping_while_recording_holds_fds_and_shutdown_is_fast(
    tmp_path: Path,
) -> None:
    # the hopper is not throttled here, to test the recorder's own bound
    served = Served(
        "--record", str(tmp_path), "--rate-limit", "0", "--room-creations", "0",
        "--store", "memory",
    )  # fmt: skip
    try:
        before = open_fds(served.proc.pid)
        hopper = await LineClient.open(served.port)
        await hopper.expect("welcome")
        await hopper.send({"type": "hello", "name": "hopper", "history": 0})
        await hopper.recv_until("ready")
        batch = b"".join(
            json.dumps({"type": "join", "room": f"r{i}"}).encode()
            + b"\n"
            + json.dumps({"type": "say", "text": f"in r{i}"}).encode()
            + b"\n"
            for i in range(400)
        )
        await hopper.send(batch)
        await hopper.recv_until("msg", text="in r399", timeout=30)
        during = open_fds(served.proc.pid)
        assert during - before <= 32 + 8, (before, during)  # RECORD_OPEN_FILES + slack
        await still_serving(served.port)
        hopper.abort()
        code, took, err = served.stop()
        assert code == 0 and took < 5.0, (code, took, err)
    finally:
        served.kill()
    files = list(tmp_path.glob("*.jsonl"))
    assert len(files) >= 401  # every room hopped through, and the lobby
    for path in files[:50]:
        assert check_transcript(path).ok


@async_test(timeout=30)
async def test_row1_by_default_a_hopper_is_throttled_by_room_creations() -> None:
    async with serving(rate_limit=100, rate_burst=100) as srv:
        hopper = await srv.login("hopper", history=0)
        for i in range(30):
            await hopper.send({"type": "join", "room": f"r{i}", "ref": i})
        answers = await hopper.barrier()
        refused = [a for a in answers if a["type"] == "error"]
        assert len(refused) >= 19 and {a["code"] for a in refused} == {"rate_limited"}
        assert len([a for a in answers if a["type"] == "ready"]) <= 11
        assert len(srv.server.relay._rooms) <= 12  # lobby + 10 created + slack
        await still_serving(srv)


# ------------------------------------------------------------------- row 2: room state


@async_test(timeout=30)
async def test_row2_empty_rooms_are_released_and_rooms_per_server_capped() -> None:
    async with serving(rate_limit=0, max_rooms=50, room_creations=0, store="memory") as srv:
        big = "x" * 4000
        clients = [await srv.login(f"u{i}", history=0) for i in range(10)]
        for round_ in range(10):  # each client hops through new rooms leaving 4 KB each
            for i, client in enumerate(clients):
                room = f"r{round_}-{i}"
                await client.send({"type": "join", "room": room})
                await client.recv_until("ready")
                await client.send({"type": "say", "text": big, "ref": room})
                await client.recv_until("msg", ref=room)
        relay = srv.server.relay
        assert len(relay._rooms) <= 11  # only the rooms someone is in, and the lobby
        # past --max-rooms a new room is refused, an existing one is not
        for i in range(60):
            hopper = clients[i % 10]
            await hopper.send({"type": "join", "room": f"last{i}", "ref": f"l{i}"})
            answer = await hopper.recv_until(lambda f: f["type"] in ("ready", "error"))
            if answer["type"] == "error":
                assert answer["code"] == "rate_limited" and answer["ref"] == f"l{i}"
        assert len(relay._rooms) <= 50
        await still_serving(srv)


# -------------------------------------------------------- row 3: welcome and rooms size


@pytest.mark.slow
@async_test(timeout=60)
async def test_row3_welcome_stays_small_with_many_rooms_and_silent_connects() -> None:
    async with serving(rate_limit=0) as srv:
        gate = asyncio.Semaphore(50)

        async def one(i: int) -> LineClient:
            async with gate:
                return await srv.login(f"u{i}", room=f"room{i}", history=0)

        started = time.monotonic()
        await asyncio.gather(*(one(i) for i in range(300)))
        logins = time.monotonic() - started
        silent = [await srv.connect() for _ in range(200)]  # bare connects, never a word
        took = await still_serving(srv)
        newcomer = await srv.login("reader", history=0)
        assert newcomer.welcome["room_count"] == 301 and len(newcomer.welcome["rooms"]) == 20
        await newcomer.send({"type": "rooms"})
        rooms = await newcomer.recv_until("rooms")
        assert rooms["total"] == 301 and len(rooms["rooms"]) <= 200
        for client in silent:
            client.abort()
        assert logins < 30 and took < ROUND_TRIP


# ------------------------------------------------------------- row 4: join/part flood


@async_test(timeout=30)
async def test_row4_a_join_part_flood_reaches_the_lobby_at_the_rate_limit() -> None:
    async with serving(rate_limit=5, rate_burst=10) as srv:
        watcher = await srv.login("watcher", history=0)
        flooder = await srv.login("flooder", history=0)
        await watcher.expect("join", name="flooder")
        toggles = b"".join(
            json.dumps({"type": "join", "room": "away" if i % 2 == 0 else "lobby"}).encode() + b"\n"
            for i in range(2000)
        )
        started = time.monotonic()
        await flooder.send(toggles)
        await flooder.barrier(timeout=10)
        elapsed = time.monotonic() - started
        frames = await watcher.barrier()
        moves = [f for f in frames if f["type"] in ("join", "leave")]
        # a burst of 10 and 5 a second: the lobby sees that many moves, not 2000
        assert len(moves) <= 10 + 5 * (elapsed + 1), (len(moves), elapsed)
        await still_serving(srv)


# ----------------------------------------------------- row 5: input bound, text idle


def test_row5_input_held_in_pieces_costs_its_bytes() -> None:
    import tracemalloc

    from chatcli.core.protocol import LineFramer

    tracemalloc.start()
    try:
        framers = [LineFramer(65536) for _ in range(5)]
        base = tracemalloc.get_traced_memory()[0]
        for framer in framers:
            for _ in range(30_000):  # 60 KB each in 2-byte segments
                framer.feed(b"ab")
        held = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert held < 5 * 60_000 * 1.5, held  # ~bytes, not ~20x bytes


@async_test(timeout=20)
async def test_row5_text_sessions_expire_after_text_idle() -> None:
    async with serving(text_idle=1.0) as srv:
        json_client = await srv.login("alice", history=0)
        nc, _ = await srv.text_login("tom")
        started = time.monotonic()
        rest = await nc.eof(timeout=5)
        assert b"idle for 1 seconds: closing" in rest
        assert 0.9 <= time.monotonic() - started < 4
        await json_client.recv_until("leave", name="tom", reason="timeout")
        await still_serving(srv)


# -------------------------------------------------- row 6: output across all clients


@pytest.mark.slow
@async_test(timeout=60)
async def test_row6_total_output_is_bounded_and_the_largest_consumers_are_cut() -> None:
    cuts: list[str] = []

    class Cuts(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "all clients' output passed the limit" in record.getMessage():
                cuts.append(record.getMessage())

    handler = Cuts()
    logging.getLogger("chatcli.server").addHandler(handler)
    try:
        limit = 1024 * 1024
        async with serving(rate_limit=0, max_output_total=limit, history=0) as srv:
            sleepers = [await srv.login(f"s{i}", rcvbuf=4096, history=0) for i in range(20)]
            reader = await srv.login("reader", history=0)
            talker = await srv.login("talker", history=0)
            text = "y" * 4000
            peak = 0
            for i in range(1500):
                await talker.send({"type": "say", "text": f"{i} {text}", "ref": i})
                await talker.recv_until("msg", ref=i)
                await reader.recv_until("msg", ref=None, **{"from": "talker"})
                peak = max(peak, srv.server.hub.meter.total)
            assert peak <= limit + 21 * 4100  # one fan-out's worth over, at most
            assert cuts, "no consumer was cut for the total"
            for sleeper in sleepers:
                sleeper.abort()
            await still_serving(srv)
    finally:
        logging.getLogger("chatcli.server").removeHandler(handler)


# ------------------------------------------------------------ row 7: ready that fits


@async_test(timeout=30)
async def test_row7_a_room_with_huge_history_stays_joinable() -> None:
    async with serving(rate_limit=0, history=50, max_buffer=64 * 1024, store="memory") as srv:
        alice = await srv.login("alice", room="big", history=0)
        for i in range(50):
            await alice.send({"type": "say", "text": f"{i} " + "h" * 4000, "ref": i})
            await alice.recv_until("msg", ref=i)
        for name in ("bob", "carol", "dave"):
            joiner = await srv.login(name, room="big")  # a default hello: all history
            assert joiner.ready["truncated"] is True
            assert len(json.dumps(joiner.ready)) <= 32 * 1024
            if name == "bob":
                assert joiner.ready["history"][-1]["text"].startswith("49 ")
            await joiner.send({"type": "say", "text": "hello big", "ref": "hb"})
            await joiner.recv_until("msg", ref="hb")  # not cut as a slow consumer
        await still_serving(srv)


# --------------------------------------- row 11: fd limit, telnet, CR NUL, BOM, blanks


def _low_fd_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (150, 150))


@pytest.mark.slow
@async_test(timeout=60)
async def test_row11_past_the_fd_limit_every_refused_client_hears_server_full() -> None:
    served = Served("--max-connections", "150", "--store", "memory", preexec=_low_fd_limit)
    try:
        clients = []
        for _ in range(160):  # more than the 150 descriptors the server may open
            sock = socket.create_connection(("127.0.0.1", served.port), timeout=5)
            clients.append(sock)
        full, welcomed, silent = 0, 0, 0
        for sock in clients:
            data = b""
            sock.settimeout(3)
            try:
                while b"\n" not in data:
                    chunk = sock.recv(4096)
                    if not chunk:
                        break
                    data += chunk
            except OSError:
                pass  # counted as silent below
            if b'"server_full"' in data:
                full += 1
            elif b'"welcome"' in data:
                welcomed += 1
            else:
                silent += 1
        assert silent == 0 and full > 0 and welcomed >= 50, (full, welcomed, silent)
        for sock in clients:
            sock.close()
        await asyncio.sleep(1.0)  # let the server see them go
        await still_serving(served.port)
        code, _, err = served.stop()
        assert code == 0 and "--max-connections lowered from 150" in err, err
    finally:
        served.kill()


@async_test(timeout=20)
async def test_row11_telnet_cr_nul_bom_and_invisible_text_on_real_sockets() -> None:
    async with serving() as srv:
        alice = await srv.login("alice", history=0)
        putty = await srv.connect()
        await putty.expect("welcome")
        await putty.send(b"\xff\xfb\x1f\xff\xfb\x18\xff\xfd\x03login tom\r\x00")
        assert (await putty.text()).startswith("-- you are tom")
        await alice.expect("join", name="tom")
        await putty.send("\u200b\u3164\u2028".encode() + b"\r\x00")
        assert await putty.text() == "!! bad_request: text is empty"
        await putty.send(b"hi from putty\r\x00")
        await alice.expect("msg", text="hi from putty")
        bom = await srv.connect()
        await bom.expect("welcome")
        await bom.send(b'\xef\xbb\xbf{"type":"hello","name":"bob","history":0}\n')
        ready = await bom.recv_until("ready")
        assert ready["name"] == "bob"  # a JSON session, not a text one
        await still_serving(srv)
