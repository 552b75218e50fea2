"""Abuse benchmark (issue 13): the big hostile shapes against a real ``chatcli serve``.

Starts ``chatcli serve`` (memory store, default limits unless given after ``--``), then runs,
one after the other:

1. rooms: ``--rooms`` clients log in, each into a room of its own, and stay; then
   ``--bare`` connections connect and never say a word;
2. sleepers: ``--sleepers`` clients log into the lobby and never read, while
   ``--talkers`` clients each say 4 KB messages there at the rate limit;
3. flood: one client toggles between two rooms as fast as it can for ``--seconds``;
   a lobby member counts the join/leave lines it is sent.

Before, during and after each shape it prints the server's RSS and open descriptors and
a normal client's latency: connect, welcome, login and one message round trip (median of
three). Everything is on 127.0.0.1; the server is stopped by its own pid at the end.

    python docs/abuse_bench.py --rooms 3000 --sleepers 1000 --seconds 8 \\
        -- --max-output-total 67108864
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import time
from typing import Any

HOST = "127.0.0.1"


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def open_client(port: int, rcvbuf: int | None = None) -> tuple[Any, Any]:
    if rcvbuf is None:
        return await asyncio.open_connection(HOST, port, limit=1 << 22)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (HOST, port))
    return await asyncio.open_connection(sock=sock, limit=1 << 22)


async def read_until(reader: Any, kind: str, **fields: Any) -> dict[str, Any]:
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError(f"closed while waiting for {kind}")
        frame = json.loads(line)
        if frame.get("type") == kind and all(frame.get(k) == v for k, v in fields.items()):
            return frame
        if frame.get("type") == "error" and frame.get("code") != "rate_limited":
            raise ConnectionError(f"refused: {frame}")


async def login(port: int, name: str, room: str | None = None, rcvbuf: int | None = None):
    reader, writer = await open_client(port, rcvbuf)
    await read_until(reader, "welcome")
    hello: dict[str, Any] = {"type": "hello", "name": name, "history": 0}
    if room:
        hello["room"] = room
    writer.write(json.dumps(hello).encode() + b"\n")
    await read_until(reader, "ready")
    return reader, writer


_probe = 0


async def latency_ms(port: int) -> float:
    """A newcomer's connect + welcome + login + one round trip, median of three, in ms."""
    global _probe
    times = []
    for _ in range(3):
        _probe += 1
        started = time.perf_counter()
        reader, writer = await asyncio.wait_for(login(port, f"probe{_probe}"), 30)
        writer.write(b'{"type":"say","text":"ping","ref":"p"}\n')
        await asyncio.wait_for(read_until(reader, "msg", ref="p"), 30)
        times.append((time.perf_counter() - started) * 1000)
        writer.close()
    return statistics.median(times)


async def measure(port: int, pid: int, label: str) -> None:
    try:
        lat = f"{await latency_ms(port):8.1f} ms"
    except (TimeoutError, ConnectionError, OSError) as exc:
        lat = f"FAILED ({exc!r})"
    print(f"{label:<34} RSS {rss_mb(pid):7.1f} MB  fds {fds(pid):6d}  newcomer {lat}", flush=True)


async def gather_limited(coros: list[Any], limit: int = 100) -> list[Any]:
    gate = asyncio.Semaphore(limit)

    async def one(coro: Any) -> Any:
        async with gate:
            return await coro

    return await asyncio.gather(*(one(c) for c in coros), return_exceptions=True)


async def run(args: argparse.Namespace, port: int, pid: int) -> None:
    await measure(port, pid, "baseline")
    if "rooms" in args.stages:
        await rooms_stage(args, port, pid)
    if "sleepers" in args.stages:
        await sleepers_stage(args, port, pid)
    if "flood" in args.stages:
        await flood_stage(args, port, pid)


async def rooms_stage(args: argparse.Namespace, port: int, pid: int) -> None:
    """1. thousands of rooms, and bare connects."""
    started = time.monotonic()
    roomers = await gather_limited(
        [login(port, f"room{i}", room=f"r{i}") for i in range(args.rooms)]
    )
    ok = [c for c in roomers if not isinstance(c, BaseException)]
    took = time.monotonic() - started
    print(f"  {len(ok)} of {args.rooms} logged in, each in its own room, in {took:.1f} s")
    bare = await gather_limited([open_client(port) for _ in range(args.bare)])
    await measure(port, pid, f"rooms: {args.rooms} rooms, {args.bare} bare")
    for conn in [*ok, *bare]:
        if not isinstance(conn, BaseException):
            conn[1].close()
    await asyncio.sleep(1)
    await measure(port, pid, "rooms: after they left")


async def sleepers_stage(args: argparse.Namespace, port: int, pid: int) -> None:
    """2. a thousand clients that never read."""
    sleepers = await gather_limited(
        [login(port, f"sleep{i}", rcvbuf=4096) for i in range(args.sleepers)]
    )
    talkers = [await login(port, f"talk{i}") for i in range(args.talkers)]
    text = "z" * 4000
    stop = time.monotonic() + args.seconds

    async def talk(writer: Any, reader: Any) -> None:
        async def drain() -> None:
            while await reader.read(1 << 20):
                pass

        drainer = asyncio.create_task(drain())
        i = 0
        while time.monotonic() < stop:
            i += 1
            writer.write(json.dumps({"type": "say", "text": f"{i} {text}"}).encode() + b"\n")
            await writer.drain()
            await asyncio.sleep(0.2)  # the default rate limit: 5 a second
        drainer.cancel()

    talking = [asyncio.create_task(talk(w, r)) for r, w in talkers]
    peak = 0.0
    for _ in range(4):
        await asyncio.sleep(args.seconds / 4)
        peak = max(peak, rss_mb(pid))
        await measure(port, pid, f"sleepers: {args.sleepers} not reading")
    await asyncio.gather(*talking)
    peak = max(peak, rss_mb(pid))
    for conn in [*sleepers, *talkers]:
        if not isinstance(conn, BaseException):
            conn[1].close()
    await asyncio.sleep(1)
    await measure(port, pid, f"sleepers: after (peak RSS {peak:.0f} MB)")


async def flood_stage(args: argparse.Namespace, port: int, pid: int) -> None:
    """3. join/part flood seen from the lobby."""
    watcher_r, watcher_w = await login(port, "watcher")
    flood_r, flood_w = await login(port, "flooder")
    moves = 0

    async def watch() -> None:
        nonlocal moves
        while line := await watcher_r.readline():
            if json.loads(line).get("type") in ("join", "leave"):
                moves += 1

    async def drain_flooder() -> None:
        while await flood_r.read(1 << 20):
            pass

    watching = asyncio.create_task(watch())
    draining = asyncio.create_task(drain_flooder())
    toggles = b"".join(
        json.dumps({"type": "join", "room": "away" if i % 2 == 0 else "lobby"}).encode() + b"\n"
        for i in range(200)
    )
    sent = 0
    stop = time.monotonic() + args.seconds
    mid = asyncio.create_task(asyncio.sleep(args.seconds / 2))
    measured = False
    while time.monotonic() < stop:
        flood_w.write(toggles)
        sent += 200
        await flood_w.drain()
        await asyncio.sleep(0.01)
        if mid.done() and not measured:
            measured = True
            await measure(port, pid, "flood: join/part toggling")
    await asyncio.sleep(0.5)
    print(
        f"  flood: {sent} joins sent in {args.seconds:g} s; the lobby saw {moves} "
        f"join/leave lines ({moves / args.seconds:.1f}/s)"
    )
    watching.cancel()
    draining.cancel()
    flood_w.close()
    watcher_w.close()
    await asyncio.sleep(0.5)
    await measure(port, pid, "after everything")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rooms", type=int, default=3000)
    parser.add_argument("--bare", type=int, default=1000)
    parser.add_argument("--sleepers", type=int, default=1000)
    parser.add_argument("--talkers", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--stages", default="rooms,sleepers,flood", help="which shapes to run, comma-separated"
    )
    parser.add_argument("serve_args", nargs="*", help="after --: more chatcli serve options")
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    command = [
        sys.executable, "-m", "chatcli", "serve", "--port", "0", "-q", "--store", "memory",
        *args.serve_args,
    ]  # fmt: skip
    print("server:", " ".join(command[2:]), flush=True)
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        port = int(line.rsplit(":", 1)[1])
        asyncio.run(run(args, port, proc.pid))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    main()
