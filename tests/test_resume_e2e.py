"""Resume against a real ``chatcli serve --store FILE`` killed with SIGKILL and restarted.

The server restarts on the same port and store file; clients are a piped ``chatcli join``
process, or ResumingClients in this process. What was kept is read from the SQLite file
itself at the end.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import select
import signal
import socket
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from helpers import HOST, run
from processes import EXIT_TIMEOUT, START_TIMEOUT, Terminal, chatcli, read_line

from chatcli.client.resume import ResumeState
from chatcli.client.resuming import Resumed, ResumingClient, Status
from chatcli.core.protocol import Msg, Say, ServerEvent

pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


class Server:
    """``chatcli serve --store FILE`` on a fixed port, that can be killed and started again."""

    def __init__(self, store: Path, *options: str) -> None:
        self.store = store
        self.options = options
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        port = str(self.port)
        store = str(self.store)
        self.proc = chatcli(
            "serve", "-q", "--host", HOST, "--port", port, "--store", store, *self.options
        )
        assert self.proc.stdout is not None
        line = read_line(self.proc.stdout, START_TIMEOUT).decode()
        assert line == f"chatcli serve listening on {HOST}:{port}\n", line
        self.starts += 1

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush, nothing said to anyone."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.kill()

    def messages(self, room: str = "lobby") -> list[tuple[int, str, str]]:
        """(id, sender, text) of every message the store file holds, in id order."""
        with sqlite3.connect(self.store) as db:
            rows = db.execute(
                "SELECT id, sender, text FROM messages WHERE room = ? ORDER BY id", (room,)
            ).fetchall()
        return [(int(i), str(s), str(t)) for i, s, t in rows]

    def epoch(self, room: str = "lobby") -> str:
        with sqlite3.connect(self.store) as db:
            (epoch,) = db.execute("SELECT epoch FROM rooms WHERE name = ?", (room,)).fetchone()
        return str(epoch)


def test_piped_join_sends_every_line_exactly_once_across_server_kills(
    tmp_path: Path, config: dict[str, str]
) -> None:
    server = Server(tmp_path / "chat.db")
    server.start()
    join = chatcli(
        "join", "sender", "--port", str(server.port), "--retry-for", "60",
        env=config, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    assert join.stdin is not None and join.stderr is not None
    try:
        for n in range(30):
            join.stdin.write(f"line {n}\n".encode())
            join.stdin.flush()
            time.sleep(0.05)
            if n in (9, 19):  # twice, in the middle of the stream
                server.kill()
                time.sleep(0.3)
                server.start()
        join.stdin.close()
        join.wait(60)
        err = join.stderr.read().decode()
    finally:
        if join.poll() is None:
            join.kill()
            join.wait(5)
        join.stderr.close()
        server.stop()
    assert join.returncode == 0, err
    assert "connection lost, reconnecting in" in err and "reconnected" in err
    said = [text for _, sender, text in server.messages() if sender == "sender"]
    assert said == [f"line {n}" for n in range(30)]


_ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")


def see(term: Terminal, text: str, timeout: float = 30.0) -> None:
    """Read the terminal until ``text`` shows up once colours and cursor moves are removed."""
    deadline = time.monotonic() + timeout
    while text.encode() not in _ANSI.sub(b"", term.screen):
        left = deadline - time.monotonic()
        assert left > 0, f"{text!r} not on screen: {_ANSI.sub(b'', term.screen)[-500:]!r}"
        if select.select([term.leader], [], [], left)[0]:
            term.screen += os.read(term.leader, 65536)


def test_interactive_join_shows_the_reconnect_and_sends_the_pending_line_once(
    tmp_path: Path, config: dict[str, str]
) -> None:
    server = Server(tmp_path / "chat.db")
    server.start()
    try:
        with Terminal("join", "tty", "--port", str(server.port), env=config, timeout=30) as term:
            see(term, "tty>")
            term.type(b"before\r")
            see(term, "<tty> before")
            server.kill()
            see(term, "connection lost, reconnecting in")
            term.type(b"typed while down\r")
            see(term, "pending, sent once reconnected: typed while down")
            server.start()
            see(term, "reconnected")
            see(term, "<tty> typed while down")
            term.type(b"/quit\r")
            assert term.proc.wait(EXIT_TIMEOUT) == 0
    finally:
        server.stop()
    assert "Traceback" not in term.screen.decode(errors="replace")
    assert [t for _, _, t in server.messages()] == ["before", "typed while down"]


# --------------------------------------------------------------------------- the crash test


class Chatter:
    """A ResumingClient that says ``count`` numbered lines and records what it was shown."""

    def __init__(self, port: int, name: str, rng: random.Random) -> None:
        self.name = name
        self.rng = rng
        self.link = ResumingClient(
            HOST, port, ResumeState(name, "lobby", retry_for=60), sleep=self._sleep
        )
        self.shown: list[Msg] = []
        self.acked: list[str] = []
        self.statuses: list[Status] = []
        self.epochs: set[str] = set()

    @staticmethod
    async def _sleep(delay: float) -> None:
        await asyncio.sleep(delay / 4)  # the real schedule, 4 times faster

    def on_event(self, event: ServerEvent, new: bool) -> None:
        if isinstance(event, Msg):
            if event.from_ == self.name and event.ref is not None:
                self.acked.append(event.text)
            if new:
                self.shown.append(event)

    def on_status(self, status: Status) -> None:
        self.statuses.append(status)
        epoch = self.link.state.epoch("lobby")
        if epoch is not None:
            self.epochs.add(epoch)

    async def talk(self, count: int, stop: asyncio.Event) -> None:
        ready = await self.link.start()
        assert ready.epoch is not None
        self.epochs.add(ready.epoch)
        self.shown.extend(ready.history)
        runner = asyncio.create_task(self.link.run(self.on_event, self.on_status))
        for n in range(count):
            ref = self.link.next_ref()
            await self.link.send(self.link.stamp(ref, Say(text=f"{self.name} {n}", ref=ref)))
            await asyncio.sleep(self.rng.uniform(0.01, 0.08))
        async with asyncio.timeout(40):
            while self.link.state.in_flight:
                assert not runner.done(), runner
                await asyncio.sleep(0.05)
        await stop.wait()
        await self.link.close()
        await asyncio.wait_for(runner, 5)


@pytest.mark.slow
def test_crash_test_sigkill_at_random_moments_loses_nothing_and_repeats_nothing(
    tmp_path: Path,
) -> None:
    rng = random.Random(8)
    server = Server(tmp_path / "crash.db", "--rate-limit", "0")
    server.start()
    names = ["ada", "bo", "cy", "di"]
    count = 60

    async def scenario() -> list[Chatter]:
        chatters = [Chatter(server.port, name, random.Random(rng.random())) for name in names]
        stop = asyncio.Event()
        talking = [asyncio.create_task(c.talk(count, stop)) for c in chatters]
        for _ in range(4):
            await asyncio.sleep(rng.uniform(0.3, 1.2))
            server.kill()
            await asyncio.sleep(rng.uniform(0.0, 0.3))
            await asyncio.to_thread(server.start)
        # every chatter's messages all acknowledged; then let the last ones reach everyone
        async with asyncio.timeout(45):
            while any(c.link.state.in_flight or len(c.acked) < count for c in chatters):
                for task in talking:
                    if task.done():
                        task.result()
                await asyncio.sleep(0.05)
            total = len(names) * count
            while any(len(c.shown) < total for c in chatters):
                await asyncio.sleep(0.05)
        stop.set()
        await asyncio.gather(*talking)
        return chatters

    try:
        chatters = run(scenario(), timeout=60)
        epoch = server.epoch()
    finally:
        server.stop()
    assert server.starts == 5
    stored = server.messages()
    ids = [i for i, _, _ in stored]
    assert ids == sorted(set(ids)), "ids must strictly increase, none given twice"
    texts = [t for _, _, t in stored]
    assert len(texts) == len(set(texts)), "a message stored twice"
    for chatter in chatters:
        # everything it saw acknowledged is kept, exactly once, in the order it was said
        mine = [t for t in texts if t.split()[0] == chatter.name]
        assert mine == [f"{chatter.name} {n}" for n in range(count)]
        assert sorted(set(chatter.acked)) == sorted(mine)
        assert chatter.epochs == {epoch}, "the epoch changed"
        assert any(isinstance(s, Resumed) for s in chatter.statuses)
        # and it was shown every message of the room exactly once, in id order
        assert [m.id for m in chatter.shown] == ids
        assert [m.text for m in chatter.shown] == texts
