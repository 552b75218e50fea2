"""ResumingClient over real sockets: connections cut, cut at random, or stalled silently.

Each test runs a real ChatServer on 127.0.0.1 (helpers.serving); the faults are made on
the server's side of the connection, or by a small TCP proxy between client and server.
Pauses of the reconnect schedule are shortened 20 times (an injected sleep), so the
schedule itself is the real one.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from typing import Any

from helpers import HOST, READ_TIMEOUT, TestServer, async_test, serving

from chatcli.client.resume import ResumeState
from chatcli.client.resuming import Lost, Resumed, ResumingClient, Status
from chatcli.core.protocol import Msg, Say, ServerEvent
from chatcli.errors import ConnectionFailed, ServerRefused


async def fast_sleep(delay: float) -> None:
    await asyncio.sleep(delay / 20)


class User:
    """A ResumingClient and everything it showed (new messages) and said about itself."""

    def __init__(self, port: int, name: str, **options: Any) -> None:
        self.link = ResumingClient(
            HOST, port, ResumeState(name, "lobby"), sleep=fast_sleep, **options
        )
        self.shown: list[Msg] = []
        self.statuses: list[Status] = []
        self.task: asyncio.Task[None] | None = None

    def on_event(self, event: ServerEvent, new: bool) -> None:
        if new and isinstance(event, Msg):
            self.shown.append(event)

    async def start(self) -> User:
        ready = await self.link.start()
        self.shown.extend(ready.history)
        self.task = asyncio.create_task(self.link.run(self.on_event, self.statuses.append))
        return self

    async def say(self, text: str) -> None:
        ref = self.link.next_ref()
        await self.link.send(self.link.stamp(ref, Say(text=text, ref=ref)))

    async def settled(self, timeout: float = 15.0) -> None:
        """Wait until every message said was acknowledged (bounded)."""
        async with asyncio.timeout(timeout):
            while self.link.state.in_flight:
                assert self.task is not None and not self.task.done(), self.task
                await asyncio.sleep(0.02)

    async def sees(self, count: int, timeout: float = 15.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.shown) < count:
                await asyncio.sleep(0.02)

    async def stop(self) -> None:
        await self.link.close()
        if self.task is not None:
            await asyncio.wait_for(self.task, READ_TIMEOUT)

    @property
    def ids(self) -> list[int]:
        return [m.id for m in self.shown]


def server_side(srv: TestServer, name: str) -> Any:
    """The TCP adapter's connection (it holds the transport) of the user ``name``."""
    (conn,) = [c for c in srv.server.connections if c.session.name == name]
    return conn.link


async def stored(srv: TestServer) -> list[dict[str, Any]]:
    """Every message the room kept, read by a fresh login from the start."""
    reader = await srv.login("reader", since=0)
    history: list[dict[str, Any]] = reader.ready["history"]
    await reader.close()
    return history


def assert_exactly_once(user: User, room: list[dict[str, Any]]) -> None:
    assert user.ids == sorted(set(user.ids)), "shown twice or out of order"
    assert user.ids == [m["id"] for m in room]


@async_test
async def test_a_connection_cut_by_the_server_side_resumes_with_no_loss_and_no_duplicate() -> None:
    async with serving(rate_limit=0) as srv:
        alice = await User(srv.port, "alice").start()
        bob = await srv.login("bob")
        for n in range(5):
            await alice.say(f"before {n}")
        await alice.settled()
        token = alice.link.state.token
        server_side(srv, "alice").transport.abort()
        for n in range(5):  # typed while the connection is (being found) down
            await alice.say(f"after {n}")
        await bob.send({"type": "say", "text": "from bob"})
        await alice.settled()
        await alice.sees(11)
        assert any(isinstance(s, Lost) for s in alice.statuses)
        assert any(isinstance(s, Resumed) for s in alice.statuses)
        assert alice.link.state.token != token and alice.link.generation == 2
        room = await stored(srv)
        texts = [m["text"] for m in room]
        assert texts.count("from bob") == 1
        assert [t for t in texts if t != "from bob"] == [f"before {n}" for n in range(5)] + [
            f"after {n}" for n in range(5)
        ]
        assert_exactly_once(alice, room)
        await alice.stop()


@async_test
async def test_messages_said_by_others_while_cut_off_are_shown_once_after_the_reconnect() -> None:
    async with serving(rate_limit=0) as srv:
        alice = await User(srv.port, "alice").start()
        bob = await srv.login("bob")
        await bob.send({"type": "say", "text": "seen live"})
        await alice.sees(1)
        server_side(srv, "alice").transport.abort()
        for n in range(12):
            await bob.send({"type": "say", "text": f"missed {n}"})
        await alice.sees(13)
        resumed = [s for s in alice.statuses if isinstance(s, Resumed)]
        assert sum(r.missed for r in resumed) + 1 >= 12 and not any(r.truncated for r in resumed)
        assert_exactly_once(alice, await stored(srv))
        await alice.stop()


@async_test
async def test_kicked_replaced_or_refused_sessions_are_not_resumed() -> None:
    async with serving(rate_limit=0) as srv:
        alice = await User(srv.port, "alice").start()
        token = alice.link.state.token
        await srv.login("alice", resume=token)  # someone with the token takes it over
        assert alice.task is not None
        try:
            await asyncio.wait_for(alice.task, READ_TIMEOUT)
        except ServerRefused as exc:
            assert exc.code == "replaced"
        else:
            raise AssertionError("a replaced session went on")
        assert not any(isinstance(s, Lost) for s in alice.statuses)


@async_test
async def test_the_client_gives_up_after_retry_for() -> None:
    async with serving(rate_limit=0) as srv:
        user = User(srv.port, "alice")
        user.link.state.retry_for = 0.5
        await user.start()
    # the server is gone for good: the attempts fail, then the session gives up
    assert user.task is not None
    try:
        await asyncio.wait_for(user.task, READ_TIMEOUT)
    except ConnectionFailed as exc:
        assert "gave up reconnecting" in str(exc)
    else:
        raise AssertionError("never gave up")
    assert len([s for s in user.statuses if isinstance(s, Lost)]) >= 2


# --------------------------------------------------------------------------- a proxy


class Proxy:
    """A TCP proxy on 127.0.0.1 that can cut its connections, or stall them silently."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = 0
        self.pairs: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = []
        #: writers whose traffic is swallowed (in both directions) without closing them
        self.stalled: set[asyncio.StreamWriter] = set()
        self.held: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = []
        self.cuts = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> Proxy:
        self._server = await asyncio.start_server(self._accept, HOST, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(HOST, self.target)
        except OSError:
            writer.transport.abort()
            return
        self.pairs.append((writer, up_writer))
        for src, dst, key in ((reader, up_writer, writer), (up_reader, writer, writer)):
            task = asyncio.create_task(self._pump(src, dst, key))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, key: asyncio.StreamWriter
    ) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await src.read(65536):
                if key not in self.stalled:
                    dst.write(data)
        if key not in self.stalled:
            dst.transport.abort()

    def cut_all(self) -> None:
        """Abort every connection, both sides (a reset, as a dying link would give)."""
        for down, up in self.pairs:
            down.transport.abort()
            up.transport.abort()
        self.cuts += len(self.pairs)
        self.pairs.clear()

    def stall_all(self) -> None:
        """Stop forwarding on every connection, closing nothing: nobody is told."""
        for down, _ in self.pairs:
            self.stalled.add(down)
        self.held.extend(self.pairs)  # kept referenced: a writer collected would close
        self.pairs.clear()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        self.cut_all()
        for down, up in self.held:
            down.transport.abort()
            up.transport.abort()


@async_test(timeout=60)
async def test_connections_cut_at_random_moments_lose_nothing_and_duplicate_nothing() -> None:
    rng = random.Random(20261203)
    async with serving(rate_limit=0, history=500) as srv:  # the memory store keeps them all
        proxy = await Proxy(srv.port).start()
        users = [await User(proxy.port, name).start() for name in ("alice", "bob", "chloe")]
        stop = asyncio.Event()

        async def cutter() -> None:
            while not stop.is_set():
                await asyncio.sleep(rng.uniform(0.05, 0.3))
                proxy.cut_all()

        async def talk(user: User, count: int) -> None:
            for n in range(count):
                await user.say(f"{user.link.state.name} {n}")
                await asyncio.sleep(rng.uniform(0, 0.03))

        cutting = asyncio.create_task(cutter())
        await asyncio.gather(*(talk(user, 40) for user in users))
        for user in users:
            await user.settled(timeout=30)
        stop.set()
        await cutting
        assert proxy.cuts >= 5
        room = await stored(srv)
        texts = [m["text"] for m in room]
        for user in users:
            name = user.link.state.name
            assert [t for t in texts if t.startswith(name)] == [f"{name} {n}" for n in range(40)]
        for user in users:
            await user.sees(len(room))
            assert_exactly_once(user, room)
            await user.stop()
        await proxy.close()


@async_test
async def test_a_silently_stalled_connection_is_noticed_by_ping_and_taken_over_by_token() -> None:
    # the server pings rarely here: it does not notice the stall within the test
    async with serving(rate_limit=0, ping_interval=60) as srv:
        proxy = await Proxy(srv.port).start()
        alice = await User(proxy.port, "alice", idle=0.3, ping_timeout=0.5).start()
        bob = await srv.login("bob")
        await alice.say("before")
        await alice.settled()
        proxy.stall_all()
        await alice.say("into the void")  # swallowed by the stalled proxy
        await bob.send({"type": "say", "text": "while stalled"})
        await alice.settled()
        await alice.sees(3)
        assert any("no answer" in s.reason for s in alice.statuses if isinstance(s, Lost))
        await bob.nothing_pending("join", "leave")  # taken over: the room saw nothing
        room = await stored(srv)
        assert [m["text"] for m in room] == ["before", "while stalled", "into the void"]
        assert_exactly_once(alice, room)
        await alice.stop()
        await proxy.close()


# --------------------------------------------------------------------------- join's session


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
async def test_join_session_says_what_happened_and_sends_what_was_typed_in_order() -> None:
    from chatcli.ui.join import JoinOptions, JoinSession
    from chatcli.ui.render import Renderer

    async with serving(rate_limit=0) as srv:
        state = ResumeState("alice", "lobby", random=lambda: 0.0)
        gate = asyncio.Event()  # the reconnect waits for the test, not for the clock

        async def sleep(delay: float) -> None:
            await gate.wait()

        link = ResumingClient(HOST, srv.port, state, sleep=sleep)
        await link.start()
        screen = Screen()
        options = JoinOptions(host=HOST, port=srv.port, name="alice")
        session = JoinSession(link, options, screen, Renderer(me="alice"))
        receiver = asyncio.create_task(session.receive_forever())
        bob = await srv.login("bob")
        await session.submit("one")
        async with asyncio.timeout(READ_TIMEOUT):
            await session.acked.wait()
        await bob.expect("msg", text="one")
        # cut; what bob says meanwhile is missed, what alice types is queued
        server_side(srv, "alice").transport.abort()
        async with asyncio.timeout(READ_TIMEOUT):
            while link.connected:
                await asyncio.sleep(0.01)
        await session.submit("two")
        await session.submit("/msg bob psst")  # a dm cannot wait: refused, said so
        await bob.send({"type": "say", "text": "missed"})
        await bob.expect("leave", name="alice")
        await bob.expect("msg", text="missed")
        gate.set()
        async with asyncio.timeout(READ_TIMEOUT):
            while not session.reconnected.is_set() or session.pending:
                await asyncio.sleep(0.01)
        await bob.expect("join", name="alice")
        await bob.expect("msg", text="two")
        await link.close()
        await asyncio.wait_for(receiver, READ_TIMEOUT)
    lost = "** connection lost, reconnecting in 0.5 s (attempt 1)"
    assert screen.lines[:2] == ["<alice> one", lost]
    assert "** not connected: try again once reconnected (direct message not sent)" in screen.lines
    tail = screen.lines[screen.lines.index("<bob> missed") :]
    assert tail == [
        "<bob> missed",
        f"** reconnected to {HOST}:{srv.port}; 1 message you missed is shown above",
        "<alice> two",
    ]
    assert session.refused == 1


def test_join_words_each_status_through_the_one_output() -> None:
    from chatcli.ui.join import JoinOptions, JoinSession
    from chatcli.ui.render import Renderer

    link = ResumingClient(HOST, 1, ResumeState("alice", "lobby"))
    screen = Screen()
    session = JoinSession(link, JoinOptions(HOST, 1, "alice"), screen, Renderer(me="alice"))
    session.status(Lost(4.2, 3, "connection refused"))
    session.status(Lost(0.26, 1, "connection refused"))
    session.status(Resumed(12, False, 0))
    session.status(Resumed(3, True, 1))
    session.status(Resumed(0, False, 0))
    session.status(Lost(0.4, 1, "connection refused", "[::1]:7778"))
    session.status(Resumed(0, False, 0, "[::1]:7778"))
    assert screen.lines == [
        "** connection lost, reconnecting in 4 s (attempt 3)",
        "** connection lost, reconnecting in 0.3 s (attempt 1)",
        "** reconnected; 12 messages you missed are shown above",
        "** reconnected; some messages may have been lost while you were away",
        "** reconnected",
        "** connection lost, reconnecting to [::1]:7778 in 0.4 s (attempt 1)",
        "** reconnected to [::1]:7778",
    ]


@async_test
async def test_name_taken_after_a_stall_is_retried_until_the_server_drops_the_old_session() -> None:
    # the token went stale (as when the last ready was lost in the cut): the server holds
    # the stalled session and refuses the name until its own pings find that session dead
    async with serving(rate_limit=0, ping_interval=0.4) as srv:
        proxy = await Proxy(srv.port).start()
        alice = await User(proxy.port, "alice", idle=0.3, ping_timeout=0.3).start()
        await alice.say("before")
        await alice.settled()
        alice.link.state.token = "stale"
        proxy.stall_all()
        await alice.say("after")
        await alice.settled()
        refusals = [s.reason for s in alice.statuses if isinstance(s, Lost)]
        assert any("name_taken" in reason for reason in refusals), refusals
        assert [m["text"] for m in await stored(srv)] == ["before", "after"]
        await alice.stop()
        await proxy.close()
