"""``join`` with several servers: the first that answers, then the next one on each loss.

Two kinds of servers:

- a tiny in-process "cluster" of nodes that share one room log (ids, one epoch, the
  txns stored), the way spec 1.1 section 6 says nodes behave: it shows that what makes
  a resume exact (since, epoch, token, unacknowledged messages with their txn) carries
  over from one node to the next, so nothing is lost or shown twice;
- real ``chatcli serve`` processes (standalone, so another server means another epoch
  and a ``truncated`` ready): the first one down, SIGKILL of the one in use, the list
  remembered by ``config.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import select
import signal
import socket
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers import HOST, async_test
from processes import (
    EXIT_TIMEOUT,
    START_TIMEOUT,
    Terminal,
    Watcher,
    chatcli,
    pipe_lines_across_a_kill,
    read_line,
    run_join,
)

from chatcli.addresses import AddressError, parse_address, parse_address_list
from chatcli.client.resume import ResumeState
from chatcli.client.resuming import Lost, Resumed, ResumingClient, Status
from chatcli.config import LastJoin, load_last_join, save_last_join
from chatcli.core.protocol import (
    Error,
    Hello,
    LineFramer,
    Msg,
    Ready,
    Say,
    ServerEvent,
    Welcome,
    decode_client_frame,
    encode,
)
from chatcli.errors import ConnectionFailed

WAIT = 10.0  # seconds any single wait of these tests may take


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


# ---------------------------------------------------------------- the address list


def test_a_host_list_reads_commas_and_repeats_in_order_once_each() -> None:
    assert parse_address_list(["a:1,b:2", "[::1]:3", "a:1"], option="--host") == [
        ("a", 1),
        ("b", 2),
        ("::1", 3),
    ]
    assert parse_address_list("a,b:2", default_port=7777) == [("a", 7777), ("b", 2)]
    with pytest.raises(AddressError, match="an empty entry"):
        parse_address_list("a:1,,b:2")
    with pytest.raises(AddressError, match="no port"):
        parse_address_list("a:1,b")
    # where one server is wanted (replay --to, serve --host), a list is said to be one
    with pytest.raises(AddressError, match="one address is wanted here, not a list"):
        parse_address("a:1,b:2", option="--to")


def test_the_remembered_list_reads_back(
    config: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHATCLI_CONFIG_DIR", config["CHATCLI_CONFIG_DIR"])
    save_last_join(LastJoin("a", 1, "alice", hosts=("a:1", "[::1]:2")))
    last = load_last_join()
    assert last is not None and last.addresses() == [("a", 1), ("::1", 2)]
    save_last_join(LastJoin("a", 1, "alice"))  # one server: no list
    last = load_last_join()
    assert last is not None and last.hosts == () and last.addresses() == [("a", 1)]


# ----------------------------------------------------- an in-process sharing "cluster"


@dataclass
class SharedRoom:
    """What every node of the stub cluster shares: one room's log, epoch and txns."""

    epoch: str = field(default_factory=lambda: uuid.uuid4().hex)
    log: list[Msg] = field(default_factory=list)
    txns: dict[tuple[str, str], Msg] = field(default_factory=dict)
    #: every live session on any node: name -> writer
    members: dict[str, asyncio.StreamWriter] = field(default_factory=dict)
    hellos: list[tuple[int, Hello]] = field(default_factory=list)


class StubNode:
    """One node: welcome, hello -> ready (history after ``since`` in the same epoch),
    say -> stored once per txn and sent to every member on every node."""

    def __init__(self, shared: SharedRoom) -> None:
        self.shared = shared
        self.server: asyncio.Server | None = None
        self.port = 0
        self.writers: list[asyncio.StreamWriter] = []
        #: die right after storing the next message, before anyone gets it (its ack lost)
        self.die_after_store = False
        #: refuse this many messages with ``unavailable`` (as a node cut off from NATS)
        self.unavailable = 0

    async def start(self) -> StubNode:
        self.server = await asyncio.start_server(self._session, HOST, 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def kill(self) -> None:
        """The node dies: its listener and every connection go at once."""
        assert self.server is not None
        self._die()
        await self.server.wait_closed()

    def _die(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.transport.abort()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        shared = self.shared
        framer = LineFramer(1 << 20)
        welcome = Welcome(server="stub", proto=1, users=[], rooms=[], hint="", features=["resume"])
        writer.write(encode(welcome))
        name = None
        try:
            while data := await reader.read(65536):
                for line in framer.feed(data):
                    event = decode_client_frame(line)
                    if isinstance(event, Hello):
                        name = event.name
                        shared.hellos.append((self.port, event))
                        same = event.epoch == shared.epoch
                        since = event.since if same and event.since is not None else 0
                        history = [m for m in shared.log if m.id > since]
                        ready = Ready(
                            name=name,
                            room="lobby",
                            users=sorted(shared.members),
                            history=history,
                            truncated=event.epoch is not None and not same,
                            epoch=shared.epoch,
                            resume=uuid.uuid4().hex,
                        )
                        shared.members[name] = writer
                        writer.write(encode(ready))
                    elif isinstance(event, Say) and name is not None:
                        self._say(name, event, writer)
        except (ConnectionError, OSError):
            pass  # killed: the session just ends
        finally:
            if name is not None and shared.members.get(name) is writer:
                del shared.members[name]

    def _say(self, name: str, say: Say, writer: asyncio.StreamWriter) -> None:
        shared = self.shared
        if self.unavailable:
            self.unavailable -= 1
            writer.write(encode(Error(code="unavailable", message="try again", ref=say.ref)))
            return
        if say.txn is not None and (name, say.txn) in shared.txns:  # a resend: ack only
            kept = shared.txns[(name, say.txn)]
            writer.write(encode(Msg(**{**_fields(kept), "ref": say.ref})))
            return
        msg = Msg(id=len(shared.log) + 1, room="lobby", from_=name, text=say.text, ts=0.0)
        shared.log.append(msg)
        if say.txn is not None:
            shared.txns[(name, say.txn)] = msg
        if self.die_after_store:
            self._die()
            return
        for member, other in shared.members.items():
            copy = Msg(**{**_fields(msg), "ref": say.ref}) if member == name else msg
            other.write(encode(copy))


def _fields(msg: Msg) -> dict[str, object]:
    return {f: getattr(msg, f) for f in msg.__struct_fields__}


@async_test
async def test_a_session_moves_to_the_next_node_and_misses_nothing_nor_sees_twice() -> None:
    shared = SharedRoom()
    nodes = [await StubNode(shared).start() for _ in range(3)]
    dead = free_port()  # first in the list, nobody there: skipped at start
    seen: list[ServerEvent] = []
    statuses: list[Status] = []

    async def no_pause(delay: float) -> None:
        await asyncio.sleep(0)

    link = ResumingClient(
        HOST,
        dead,
        ResumeState("alice", "lobby"),
        fallbacks=[(HOST, n.port) for n in nodes],
        sleep=no_pause,
        connect_timeout=WAIT,
    )
    await link.start()
    assert link.port == nodes[0].port
    receiver = asyncio.create_task(link.run(lambda e, new: new and seen.append(e), statuses.append))

    async def say(text: str) -> None:
        ref = link.next_ref()
        await link.send(link.stamp(ref, Say(text=text, ref=ref)))

    async def until(check: Callable[[], bool]) -> None:
        async with asyncio.timeout(WAIT):
            while not check():
                await asyncio.sleep(0.01)

    texts = lambda: [e.text for e in seen if isinstance(e, Msg)]  # noqa: E731
    await say("one")
    await until(lambda: texts() == ["one"])
    # node 0 dies; while alice is away bob says something on node 1's shared log
    await nodes[0].kill()
    shared.log.append(Msg(id=len(shared.log) + 1, room="lobby", from_="bob", text="away", ts=0))
    await say("typed while down")  # kept, sent after the reconnect with its txn
    await until(lambda: any(isinstance(s, Resumed) for s in statuses))
    resumed = next(s for s in statuses if isinstance(s, Resumed))
    assert resumed.address == f"{HOST}:{nodes[1].port}"  # the NEXT server, not the dead one
    assert not resumed.truncated and resumed.missed == 1
    await until(lambda: "typed while down" in texts())
    # the hello node 1 got carried node 0's epoch, the last id seen and the token
    port, hello = shared.hellos[-1]
    assert port == nodes[1].port
    assert hello.epoch == shared.epoch and hello.since == 1 and hello.resume is not None
    # node 1 stores "three" and dies before anyone gets it: the ack is lost. Round-robin
    # goes on to node 2, whose ready brings "three" (missed) and whose answer to the
    # resend (same txn) is the stored copy: shown once, stored once
    nodes[1].die_after_store = True
    await say("three")
    await until(lambda: "three" in texts() and link.connected and not link.state.in_flight)
    assert link.port == nodes[2].port
    await link.close()
    await asyncio.wait_for(receiver, WAIT)
    assert texts() == ["one", "away", "typed while down", "three"]
    assert [m.text for m in shared.log] == texts()  # each stored once, in that order
    assert [type(s) for s in statuses] == [Lost, Resumed, Lost, Resumed]
    # each pause said which server comes next
    assert [s.address for s in statuses if isinstance(s, Lost)] == [
        f"{HOST}:{nodes[1].port}",
        f"{HOST}:{nodes[2].port}",
    ]
    assert statuses[-1] == Resumed(1, False, 1, f"{HOST}:{nodes[2].port}")
    for node in nodes:
        await node.kill()


class Screen:
    """An Output that keeps what join would show, as text."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def show(self, event: object, raw: bytes = b"") -> None:
        if isinstance(event, Msg):
            self.lines.append(f"<{event.from_}> {event.text}")

    def notice(self, text: str, error: bool = False) -> None:
        self.lines.append(f"** {text}")

    def flush(self) -> None:
        pass


@async_test
async def test_join_says_a_message_refused_as_unavailable_once_and_gets_it_through() -> None:
    from chatcli.ui.join import JoinOptions, JoinSession
    from chatcli.ui.render import Renderer

    node = await StubNode(SharedRoom()).start()
    node.unavailable = 2
    link = ResumingClient(HOST, node.port, ResumeState("alice", "lobby"), connect_timeout=WAIT)
    await link.start()
    screen = Screen()
    session = JoinSession(link, JoinOptions(HOST, node.port, "alice"), screen, Renderer(me="alice"))
    receiver = asyncio.create_task(session.receive_forever())
    await session.submit("hello")
    async with asyncio.timeout(WAIT):
        await session.acked.wait()
    await link.close()
    await asyncio.wait_for(receiver, WAIT)
    await node.kill()
    assert screen.lines == [
        "** the server cannot store messages right now; retrying",
        "<alice> hello",
    ]
    assert session.refused == 0 and link.state.in_flight == 0
    assert [m.text for m in node.shared.log] == ["hello"]


@async_test
async def test_start_says_why_each_server_failed_when_none_answers() -> None:
    ports = [free_port(), free_port()]
    link = ResumingClient(
        HOST, ports[0], ResumeState("alice"), fallbacks=[(HOST, ports[1])], connect_timeout=WAIT
    )
    with pytest.raises(ConnectionFailed) as failed:
        await link.start()
    message = str(failed.value)
    assert message.startswith("cannot connect to any of the 2 servers: ")
    assert f"{HOST}:{ports[0]}: connection refused" in message
    assert f"{HOST}:{ports[1]}: connection refused" in message


# ------------------------------------------------------------ real `chatcli serve`


class Server:
    """A ``chatcli serve`` on a port chosen here, that a test can SIGKILL."""

    def __init__(self, tmp: Path, name: str) -> None:
        self.port = free_port()
        self.store = tmp / f"{name}.db"
        self.proc = chatcli(
            "serve", "-q", "--host", HOST, "--port", str(self.port), "--store", str(self.store)
        )
        assert self.proc.stdout is not None
        line = read_line(self.proc.stdout, START_TIMEOUT).decode()
        assert line == f"chatcli serve listening on {HOST}:{self.port}\n", line

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(EXIT_TIMEOUT)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@contextmanager
def servers(tmp: Path, count: int) -> Iterator[list[Server]]:
    started: list[Server] = []
    try:
        for n in range(count):
            started.append(Server(tmp, f"s{n}"))
        yield started
    finally:
        for server in started:
            server.kill()


@pytest.mark.e2e
def test_join_with_the_first_host_down_uses_the_second(
    tmp_path: Path, config: dict[str, str]
) -> None:
    with servers(tmp_path, 1) as (up,):
        down = f"{HOST}:{free_port()}"
        done = run_join("alice", "--host", f"{down},{up.address}", stdin=b"hi\n", env=config)
        assert done.returncode == 0, done.stderr
        assert "<alice> hi" in done.stdout.decode()
        assert f"connected to {up.address}" in done.stderr.decode().splitlines()
        # the same with two --host options; IPv4 and a name for the same port both work
        done = run_join(
            "bob", "--host", down, "--host", f"localhost:{up.port}", stdin=b"yo\n", env=config
        )
        assert done.returncode == 0, done.stderr
        assert "<bob> yo" in done.stdout.decode()


@pytest.mark.e2e
def test_join_says_each_server_that_failed_in_one_line(config: dict[str, str]) -> None:
    a, b = free_port(), free_port()
    done = run_join("alice", "--host", f"{HOST}:{a},{HOST}:{b}", env=config)
    assert done.returncode == 1
    (line,) = done.stderr.decode().splitlines()
    assert line.startswith("chatcli: cannot connect to any of the 2 servers: ")
    assert f"{HOST}:{a}" in line and f"{HOST}:{b}" in line and "Traceback" not in line


_ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")


def _see(term: Terminal, text: str, timeout: float = 30.0) -> None:
    """Read the terminal until ``text`` shows up once colours and cursor moves are removed."""
    deadline = time.monotonic() + timeout
    while text.encode() not in _ANSI.sub(b"", term.screen):
        left = deadline - time.monotonic()
        assert left > 0, f"{text!r} not on screen: {_ANSI.sub(b'', term.screen)[-500:]!r}"
        if select.select([term.leader], [], [], left)[0]:
            term.screen += os.read(term.leader, 65536)


@pytest.mark.e2e
def test_kill_the_server_in_use_and_the_session_goes_on_on_the_other(
    tmp_path: Path, config: dict[str, str]
) -> None:
    with servers(tmp_path, 2) as (first, second):
        hosts = f"{first.address},{second.address}"
        with Terminal("join", "tty", "--host", hosts, env=config, timeout=30) as term:
            _see(term, f"connected to {first.address}")
            _see(term, "tty>")
            term.type(b"before\r")
            _see(term, "<tty> before")
            watcher = Watcher(second.port, name="watcher")
            try:
                first.kill()
                _see(term, f"connection lost, reconnecting to {second.address} in")
                # another server, another epoch: said as possibly truncated
                _see(term, f"reconnected to {second.address}; some messages may have been lost")
                term.type(b"after\r")
                _see(term, "<tty> after")
                assert watcher.expect("msg", text="after")["from"] == "tty"
            finally:
                watcher.close()
            term.type(b"/quit\r")
            assert term.proc.wait(EXIT_TIMEOUT) == 0
        assert b"Traceback" not in term.screen
        remembered = json.loads((Path(config["CHATCLI_CONFIG_DIR"]) / "last-join.json").read_text())
        assert remembered["hosts"] == [first.address, second.address]
        # no --host: the remembered list; its first server is dead, the second answers
        done = run_join("again", stdin=b"back\n", env=config)
        assert done.returncode == 0, done.stderr
        assert "<again> back" in done.stdout.decode()
        assert f"connected to {second.address}" in done.stderr.decode().splitlines()


@pytest.mark.e2e
def test_a_piped_session_loses_no_line_when_its_server_is_killed(
    tmp_path: Path, config: dict[str, str]
) -> None:
    with servers(tmp_path, 2) as (first, second):
        join = chatcli(
            "join", "sender", "--host", f"{first.address},{second.address}",
            "--retry-for", "30", env=config, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        code, err = pipe_lines_across_a_kill(join, first.kill)
    assert code == 0, err  # every line acknowledged by one server or the other
    assert f"reconnected to {second.address}" in err

    def said(server: Server) -> list[str]:
        with sqlite3.connect(server.store) as db:
            rows = db.execute("SELECT text FROM messages ORDER BY id").fetchall()
        return [str(text) for (text,) in rows]

    on_first, on_second = said(first), said(second)
    # every line is kept somewhere, and each server kept each at most once; a line whose
    # ack the kill swallowed may be on both (two standalone servers share nothing)
    assert set(on_first) | set(on_second) == {f"line {n}" for n in range(20)}
    assert len(on_first) == len(set(on_first)) and len(on_second) == len(set(on_second))
    assert on_second and on_second[-1] == "line 19"


@pytest.mark.e2e
def test_a_remembered_list_is_named_when_none_of_it_answers(config: dict[str, str]) -> None:
    a, b = f"{HOST}:{free_port()}", f"{HOST}:{free_port()}"
    remembered = Path(config["CHATCLI_CONFIG_DIR"]) / "last-join.json"
    remembered.parent.mkdir(parents=True)
    first_port = int(a.rsplit(":", 1)[1])
    remembered.write_text(
        json.dumps({"host": HOST, "port": first_port, "name": "alice", "hosts": [a, b]})
    )
    done = run_join(env=config)  # no name, no host: all of it remembered
    assert done.returncode == 1
    (line,) = done.stderr.decode().splitlines()
    assert line.startswith("chatcli: cannot connect to any of the 2 servers: ")
    assert line.endswith(
        f"; host {a},{b} remembered from your last join; give --host to change it"
    ), line


def test_two_joins_saving_the_last_join_at_once_do_not_trip_over_each_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Each save writes a temporary file of its own (two terminals started together)."""
    import threading

    from chatcli import config

    monkeypatch.setenv("CHATCLI_CONFIG_DIR", str(tmp_path))

    def save(name: str) -> None:
        for _ in range(200):
            config.save_last_join(config.LastJoin(name=name, host="127.0.0.1", port=7777))

    threads = [threading.Thread(target=save, args=(n,)) for n in ("alice", "bob")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert "could not remember" not in caplog.text
    assert [p.name for p in tmp_path.iterdir()] == ["last-join.json"]
