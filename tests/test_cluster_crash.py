"""The durable-store crash tests, against a cluster: nodes and nats-server killed at random.

Two real ``chatcli serve --cluster`` nodes over one real ``nats-server -js``; clients are
ResumingClients that know both nodes (as ``join --host a,b`` does). What was kept is read
from the JetStream stream itself at the end.
"""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import tempfile
from pathlib import Path

import msgspec
import nats
import pytest
from helpers import HOST, run
from nats_server import NatsServer, free_port
from processes import START_TIMEOUT, chatcli, read_line

from chatcli.client.resume import ResumeState
from chatcli.client.resuming import Resumed, ResumingClient, Status
from chatcli.cluster.layout import MSGS_STREAM
from chatcli.core.protocol import Error, Msg, Say, ServerEvent

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(180)]


class Node:
    """``chatcli serve --cluster URL --node NAME`` on a fixed port: killed, started again."""

    def __init__(self, nats_url: str, name: str, *options: str) -> None:
        self.log = Path(tempfile.mkdtemp(prefix="chatcli-node-")) / f"{name}.log"
        self.url = nats_url
        self.name = name
        self.options = options
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        port = str(self.port)
        self.proc = chatcli(
            "serve", "-q", "--host", HOST, "--port", port, "--cluster", self.url,
            "--node", self.name, *self.options, stderr=self.log.open("ab"),
        )  # fmt: skip
        assert self.proc.stdout is not None
        line = read_line(self.proc.stdout, START_TIMEOUT).decode()
        assert line.startswith(f"chatcli serve listening on {HOST}:{port}"), line
        self.starts += 1

    def kill(self) -> None:
        """SIGKILL: no shutdown, nothing said to NATS or anyone."""
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


class _Said(msgspec.Struct, array_like=True):
    origin: str
    from_: str
    text: str
    ts: float
    action: bool


async def kept(url: str, room: str = "lobby") -> list[tuple[int, str, str]]:
    """(id, sender, text) of every message of ``room`` the stream holds, in id order."""
    nc = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=0)
    try:
        js = nc.jetstream()
        info = await js.stream_info(MSGS_STREAM)
        out = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            raw = await js.get_msg(MSGS_STREAM, seq)
            if raw.subject == f"chatcli.msg.{room}":
                said = msgspec.json.decode(raw.data, type=_Said)
                out.append((seq, said.from_, said.text))
        return out
    finally:
        await nc.close()


class Chatter:
    """A ResumingClient over both nodes that says ``count`` numbered lines."""

    def __init__(self, first: Node, other: Node, name: str, rng: random.Random) -> None:
        self.name = name
        self.rng = rng
        self.link = ResumingClient(
            HOST,
            first.port,
            ResumeState(name, "lobby", retry_for=90),
            sleep=self._sleep,
            fallbacks=[(HOST, other.port)],
        )
        self.shown: list[Msg] = []
        self.acked: list[str] = []
        self.statuses: list[Status] = []
        #: ``unavailable`` answers seen (sent again)
        self.refused = 0

    @staticmethod
    async def _sleep(delay: float) -> None:
        await asyncio.sleep(delay / 4)

    def on_event(self, event: ServerEvent, new: bool) -> None:
        if isinstance(event, Error) and event.code == "unavailable":
            # the cluster cannot store for a moment: say it again, as join does
            self.refused += 1
            again = [e for e in self.link.state.to_resend() if getattr(e, "ref", None) == event.ref]
            loop = asyncio.get_running_loop()
            for resend in again:
                loop.call_later(0.3, lambda e=resend: loop.create_task(self.link.send(e)))
            return
        if isinstance(event, Msg):
            if event.from_ == self.name and event.ref is not None:
                self.acked.append(event.text)
            if new:
                self.shown.append(event)

    def on_status(self, status: Status) -> None:
        self.statuses.append(status)

    async def talk(self, count: int, stop: asyncio.Event) -> None:
        ready = await self.link.start()
        self.shown.extend(ready.history)
        runner = asyncio.create_task(self.link.run(self.on_event, self.on_status))
        for n in range(count):
            ref = self.link.next_ref()
            await self.link.send(self.link.stamp(ref, Say(text=f"{self.name} {n}", ref=ref)))
            await asyncio.sleep(self.rng.uniform(0.01, 0.08))
        async with asyncio.timeout(60):
            while self.link.state.in_flight:
                assert not runner.done(), runner
                await asyncio.sleep(0.05)
        await stop.wait()
        await self.link.close()
        await asyncio.wait_for(runner, 5)


def _check(chatters: list[Chatter], stored: list[tuple[int, str, str]], count: int) -> None:
    ids = [i for i, _, _ in stored]
    assert ids == sorted(set(ids)), "ids must strictly increase, none given twice"
    texts = [t for _, _, t in stored]
    assert len(texts) == len(set(texts)), "a message stored twice"
    for chatter in chatters:
        mine = [t for t in texts if t.split()[0] == chatter.name]
        said = [f"{chatter.name} {n}" for n in range(count)]
        if chatter.refused:  # a line said again after "unavailable" is kept later
            assert sorted(mine) == sorted(said)
        else:
            assert mine == said
        assert sorted(set(chatter.acked)) == sorted(mine)
        # shown every message of the room exactly once, in the one order
        assert [m.id for m in chatter.shown] == ids
        assert [m.text for m in chatter.shown] == texts


def _converse(chatters: list[Chatter], count: int, disaster: object, timeout: float = 120) -> None:
    async def scenario() -> None:
        stop = asyncio.Event()
        talking = [asyncio.create_task(c.talk(count, stop)) for c in chatters]
        await disaster()  # type: ignore[operator]
        total = len(chatters) * count
        async with asyncio.timeout(timeout - 10):
            while any(c.link.state.in_flight or len(c.acked) < count for c in chatters):
                for task in talking:
                    if task.done():
                        task.result()
                await asyncio.sleep(0.05)
            while any(len(c.shown) < total for c in chatters):
                await asyncio.sleep(0.05)
        stop.set()
        await asyncio.gather(*talking)

    run(scenario(), timeout=timeout)


def test_sigkill_of_nodes_at_random_loses_nothing_and_repeats_nothing(
    nats_server: NatsServer,
) -> None:
    rng = random.Random(11)
    nodes = [Node(nats_server.url, f"n{i}", "--rate-limit", "0") for i in (1, 2)]
    for node in nodes:
        node.start()
    names = ["ada", "bo", "cy", "di"]
    count = 40
    chatters = [
        Chatter(nodes[i % 2], nodes[1 - i % 2], name, random.Random(rng.random()))
        for i, name in enumerate(names)
    ]

    async def disaster() -> None:
        for _ in range(3):
            await asyncio.sleep(rng.uniform(0.5, 1.2))
            victim = rng.choice(nodes)
            victim.kill()
            await asyncio.sleep(rng.uniform(0.0, 0.3))
            await asyncio.to_thread(victim.start)

    try:
        _converse(chatters, count, disaster)
        stored = run(kept(nats_server.url))
    finally:
        for node in nodes:
            node.stop()
    _check(chatters, stored, count)
    assert any(any(isinstance(s, Resumed) for s in c.statuses) for c in chatters)


def test_a_nats_server_restart_loses_nothing_acknowledged(nats_server: NatsServer) -> None:
    rng = random.Random(5)
    nodes = [Node(nats_server.url, f"m{i}", "--rate-limit", "0") for i in (1, 2)]
    for node in nodes:
        node.start()
    names = ["eve", "fay"]
    count = 40
    chatters = [
        Chatter(nodes[i], nodes[1 - i], name, random.Random(rng.random()))
        for i, name in enumerate(names)
    ]

    async def disaster() -> None:
        await asyncio.sleep(0.8)
        await asyncio.to_thread(nats_server.stop)
        await asyncio.sleep(1.0)
        await asyncio.to_thread(nats_server.restart)

    try:
        _converse(chatters, count, disaster)
        stored = run(kept(nats_server.url))
    finally:
        for node in nodes:
            node.stop()
    _check(chatters, stored, count)
    assert any(c.refused for c in chatters), "no message met the outage"


def test_the_resume_of_a_node_lost_mid_message_goes_on_with_no_gap(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    """A node killed with its user's messages in flight: on the other node the user's
    ready carries the same epoch and no ``truncated`` (nothing lost between)."""
    nodes = [Node(nats_server.url, f"k{i}", "--rate-limit", "0") for i in (1, 2)]
    for node in nodes:
        node.start()
    chatter = Chatter(nodes[0], nodes[1], "gus", random.Random(3))
    listener = Chatter(nodes[1], nodes[0], "hal", random.Random(4))

    async def disaster() -> None:
        await asyncio.sleep(0.6)
        nodes[0].kill()

    try:
        _converse([chatter, listener], 30, disaster)
        stored = run(kept(nats_server.url))
    finally:
        for node in nodes:
            node.stop()
    _check([chatter, listener], stored, 30)
    resumed = [s for s in chatter.statuses if isinstance(s, Resumed)]
    assert resumed and all(not getattr(s, "truncated", False) for s in resumed)
