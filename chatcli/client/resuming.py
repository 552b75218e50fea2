"""A client session that survives dropped connections and server restarts (asyncio).

:class:`ResumingClient` is the thin asyncio adapter over :class:`~chatcli.client.resume.
ResumeState`: it keeps one :class:`~chatcli.client.connection.ChatClient` at a time,
notices a dead connection (an error, the server closing, or silence: it pings after
``idle`` quiet seconds and gives the server ``ping_timeout`` more to answer), then
reconnects with the state's backoff, logs in with ``since``/``epoch``/``resume``, resends
what was not acknowledged, and tells its front end through two callbacks:

    link = ResumingClient(host, port, ResumeState("alice", "lobby"))
    await link.start()                       # the first login: errors raised as connect's
    await link.run(on_event, on_status)      # until close(), or a ChatError when it gives up

``on_event(event, new)`` gets every server event; ``new`` is False for a message seen
before (an ack of a resend, history already shown), which a front end does not show
again. ``on_status`` gets :class:`Lost` before each pause and :class:`Resumed` after each
reconnect.

Several servers (the nodes of a cluster, which share their state) are given as
``fallbacks`` after the first: the first login tries them in order, each within
``connect_timeout``, and settles on the first that answers; every reconnect after a
loss tries the NEXT one, round-robin, with the same backoff. What makes a resume exact
(the seen ids per room and their epoch, the token, the unacknowledged messages with
their ``txn``) lives in the ResumeState, not in a connection, so it carries over to
whichever server the session lands on. ``address`` is the server of the current (or
last) connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import ssl
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final

import msgspec

from chatcli.addresses import format_address
from chatcli.client.acks import TRY_AGAIN_CODES
from chatcli.client.connection import DEFAULT_CONNECT_TIMEOUT, ChatClient, connect
from chatcli.client.resume import FINAL_CODES, ResumeState
from chatcli.core.protocol import (
    ClientEvent,
    Error,
    JoinRoom,
    Me,
    Msg,
    Ping,
    Pong,
    Ready,
    Say,
    ServerEvent,
    Welcome,
)
from chatcli.errors import ChatError, ConnectionFailed, ServerRefused

__all__ = [
    "KEEPALIVE_IDLE",
    "KEEPALIVE_TIMEOUT",
    "Lost",
    "NotConnected",
    "Resumed",
    "ResumingClient",
    "Status",
]

#: seconds of silence from the server after which the client pings it
KEEPALIVE_IDLE: Final = 10.0
#: seconds the server then has to send anything before the connection counts as dead
KEEPALIVE_TIMEOUT: Final = 10.0


class NotConnected(ConnectionFailed):
    """A request that cannot wait for the reconnect (``/who``) was made while disconnected."""


@dataclass(frozen=True)
class Lost:
    """The connection is down; the next attempt comes after ``delay`` seconds."""

    delay: float
    attempt: int
    reason: str
    #: the server (HOST:PORT) of the next attempt when there are several ("" when one)
    address: str = ""


@dataclass(frozen=True)
class Resumed:
    """Logged in again: ``missed`` messages were passed to on_event just before this."""

    missed: int
    truncated: bool
    resent: int
    #: the server (HOST:PORT) this session is now connected to ("" when not said)
    address: str = ""


Status = Lost | Resumed
EventHandler = Callable[[ServerEvent, bool], None]
StatusHandler = Callable[[Status], None]


class ResumingClient:
    """One user's session over successive connections; see the module docstring."""

    def __init__(
        self,
        host: str,
        port: int,
        state: ResumeState,
        *,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        idle: float = KEEPALIVE_IDLE,
        ping_timeout: float = KEEPALIVE_TIMEOUT,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        tls: ssl.SSLContext | None = None,
        fallbacks: Sequence[tuple[str, int]] = (),
    ) -> None:
        #: every server this session may use, in order: (host, port) first, then fallbacks
        self.servers: list[tuple[str, int]] = [(host, port)]
        self.servers += [server for server in fallbacks if server not in self.servers]
        #: the server of the current (or last) connection, and its place in ``servers``
        self.host, self.port = host, port
        self._current = 0
        #: every connection, the reconnects too, speaks TLS with this context when set
        self.tls = tls
        self.state = state
        self.connect_timeout = connect_timeout
        self.idle = idle
        self.ping_timeout = ping_timeout
        self._sleep = sleep
        self.client: ChatClient | None = None
        #: the first connection's welcome and the latest ready
        self.welcome: Welcome | None = None
        self.ready: Ready | None = None
        #: how many logins succeeded (a waiter that sees it change knows a reconnect happened)
        self.generation = 0
        self._refs = itertools.count(1)
        #: who sent each ping still unanswered, oldest first: True for our keepalive pings
        self._pings: deque[bool] = deque()
        self._closing = False

    @property
    def address(self) -> str:
        """The server of the current (or last) connection, as HOST:PORT."""
        return format_address(self.host, self.port)

    @property
    def every_address(self) -> str:
        """Every server of the session, as ``a:7777, b:7777``."""
        return ", ".join(format_address(host, port) for host, port in self.servers)

    def _use(self, index: int) -> None:
        """Make ``servers[index]`` the server of the next connection."""
        self._current = index % len(self.servers)
        self.host, self.port = self.servers[self._current]

    @property
    def connected(self) -> bool:
        """A session is up (False while reconnecting)."""
        return self.client is not None

    @property
    def name(self) -> str:
        return self.ready.name if self.ready is not None else self.state.name

    def renamed(self, name: str) -> None:
        """The server renamed this session (``nick``): log in as ``name`` from now on."""
        self.state.name = name
        if self.ready is not None:
            self.ready = msgspec.structs.replace(self.ready, name=name)

    def next_ref(self) -> str:
        """A fresh ``ref``, unique across connections, for matching a message with its ack."""
        return f"c-{next(self._refs)}"

    # -- logging in ------------------------------------------------------------------

    async def start(self) -> Ready:
        """The first login; raises ConnectionFailed or ServerRefused as :func:`connect`.

        With several servers, each is tried in turn, from the current one, until one
        answers; a refusal (it answered) is raised at once and leaves that server
        current, so that a login tried again (with a password) goes back to it.
        ConnectionFailed, when none answered, says why for each.
        """
        failures: list[ConnectionFailed] = []
        first = self._current
        for step in range(len(self.servers)):
            self._use(first + step)
            try:
                client = await self._connect()
            except ConnectionFailed as exc:
                failures.append(exc)
                continue
            break
        else:
            self._use(first)
            if len(failures) == 1:
                raise failures[0]
            raise ConnectionFailed(
                f"cannot connect to any of the {len(failures)} servers: "
                + "; ".join(str(exc) for exc in failures)
            )
        assert client.ready is not None
        self.state.ready(client.ready)
        self._up(client)
        return client.ready

    async def _connect(self) -> ChatClient:
        return await connect(
            self.host,
            self.port,
            self.state.name,
            self.state.room,
            timeout=self.connect_timeout,
            hello=self.state.hello(),
            on_welcome=self._welcomed,
            tls=self.tls,
        )

    def _welcomed(self, welcome: Welcome) -> None:
        """Keep the latest welcome (a refused login's too: it says what the server wants)."""
        self.welcome = welcome

    def _up(self, client: ChatClient) -> None:
        self.client = client
        self.ready = client.ready
        self.generation += 1
        self._pings.clear()

    # -- sending ---------------------------------------------------------------------

    def stamp(self, ref: str, event: ClientEvent) -> ClientEvent:
        """``event`` with its ``txn`` (a say or me), kept until acknowledged."""
        return self.state.outgoing(ref, event)

    async def send(self, event: ClientEvent) -> None:
        """Send ``event`` now, or, while disconnected, as the reconnect allows.

        A stamped say/me is resent after the reconnect anyway, so it just waits; a room
        change becomes the room of the next login; anything else raises NotConnected.
        """
        client = self.client
        if client is None:
            if isinstance(event, (Say, Me)):
                return
            if isinstance(event, JoinRoom):
                self.state.room = event.room
                return
            raise NotConnected("not connected: try again once reconnected")
        if isinstance(event, Ping):
            self._pings.append(False)
        with contextlib.suppress(ConnectionFailed):  # the receiving side notices and resumes
            await client.send(event)

    def settled(self, ref: str) -> None:
        """The message sent with ``ref`` was refused for good: do not resend it."""
        self.state.settled(ref)

    # -- receiving -------------------------------------------------------------------

    async def run(self, on_event: EventHandler, on_status: StatusHandler) -> None:
        """Receive until :meth:`close`; reconnect whenever the connection is lost.

        Raises ServerRefused for a refusal that ends the session (kicked, banned,
        replaced, ...) and ConnectionFailed when reconnecting was given up.
        """
        while not self._closing:
            client = self.client
            if client is None:
                await self._reconnect(on_event, on_status, "connection lost")
                continue
            try:
                while True:
                    self._dispatch(await self._receive(client), on_event)
            except ServerRefused as exc:
                if self._closing:
                    return
                if exc.code in FINAL_CODES:
                    self.client = None
                    raise
                await self._drop(client)
                await self._reconnect(on_event, on_status, str(exc))
            except ConnectionFailed as exc:
                if self._closing:
                    return
                await self._drop(client)
                await self._reconnect(on_event, on_status, str(exc))

    async def _receive(self, client: ChatClient) -> ServerEvent:
        """The next event; a ping after ``idle`` quiet seconds, dead after no answer."""
        try:
            async with asyncio.timeout(self.idle):
                return await client.receive()
        except TimeoutError:
            pass
        self._pings.append(True)
        await client.send(Ping())
        try:
            async with asyncio.timeout(self.ping_timeout):
                return await client.receive()
        except TimeoutError:
            raise ConnectionFailed(
                f"no answer from {self.address} for {self.idle + self.ping_timeout:g} s"
            ) from None

    def _dispatch(self, event: ServerEvent, on_event: EventHandler) -> None:
        new = True
        if isinstance(event, Pong) and self._pings:
            if self._pings.popleft():
                return  # our keepalive: nobody else asked
        elif isinstance(event, Msg):
            new = self.state.first_sight(event)
            self.state.acknowledged(event)
        elif isinstance(event, Ready):
            self.state.ready(event)
            self.ready = event
        elif (
            isinstance(event, Error)
            and event.ref is not None
            and event.code not in TRY_AGAIN_CODES  # the front end may send those again
        ):
            self.state.settled(event.ref)
        on_event(event, new)

    async def _drop(self, client: ChatClient) -> None:
        self.client = None
        with contextlib.suppress(ChatError, OSError):
            await asyncio.wait_for(client.close(bye=False), 1.0)

    async def _reconnect(
        self, on_event: EventHandler, on_status: StatusHandler, reason: str
    ) -> None:
        """Pause, log in again, catch up and resend; raise when the state gives up."""
        delay = self.state.lost()
        while True:
            if delay is None:
                raise ConnectionFailed(
                    f"gave up reconnecting to {self.every_address} after "
                    f"{self.state.retry_for:g} s ({reason})"
                )
            self._use(self._current + 1)  # the next server (the same one when alone)
            upcoming = self.address if len(self.servers) > 1 else ""
            on_status(Lost(delay, self.state.attempt, reason, upcoming))
            await self._sleep(delay)
            if self._closing:
                return
            offered = self.state.token is not None
            try:
                client = await self._connect()
            except ServerRefused as exc:
                delay = self.state.refused(exc.code, offered)
                if delay is None:
                    raise
                reason = str(exc)
                continue
            except ConnectionFailed as exc:
                delay = self.state.lost()
                reason = str(exc)
                continue
            break
        if self._closing:  # closed while this login was under way
            await client.close()
            return
        assert client.ready is not None
        caught = self.state.ready(client.ready)
        self._up(client)
        for msg in caught.missed:
            on_event(msg, True)
        resend = self.state.to_resend()
        for event in resend:
            with contextlib.suppress(ConnectionFailed):  # the receive loop notices
                await client.send(event)
        on_status(Resumed(len(caught.missed), caught.truncated, len(resend), self.address))

    async def close(self) -> None:
        """End the session (bye to the server); a reconnect under way stops."""
        self._closing = True
        client, self.client = self.client, None
        if client is not None:
            await client.close()
