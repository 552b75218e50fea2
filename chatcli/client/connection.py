"""The asyncio client connection shared by ``join``, ``replay --to`` and the tests.

A thin adapter over the sans-I/O :class:`chatcli.core.client.ClientConnection`, which
does the handshake, answers pings and decodes frames: this module only moves bytes
between it and an asyncio stream, and turns every way a session can end into a
ChatError with one clear message.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Callable

from chatcli.core.client import MAX_SERVER_FRAME, ClientConnection, ClientState
from chatcli.core.protocol import Bye, ClientEvent, Hello, LineFramer, Ready, ServerEvent, Welcome
from chatcli.errors import ConnectionFailed

__all__ = ["DEFAULT_CONNECT_TIMEOUT", "MAX_SERVER_FRAME", "ChatClient", "connect"]

DEFAULT_CONNECT_TIMEOUT = 10.0
_READ_CHUNK = 65536


class ChatClient:
    """A logged-in session with a chatcli server.

    Create it with :func:`connect`. ``events()`` yields what the server sends (pings are
    answered and not yielded); it ends quietly after ``close()`` and raises ChatError when
    the server ends the session or the connection is lost.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        address: str,
        max_frame: int = MAX_SERVER_FRAME,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self.connection = ClientConnection(LineFramer(max_frame))
        self._pending: list[ServerEvent] = []
        self._closing = False
        self._refs = itertools.count(1)
        self.address = address

    @property
    def welcome(self) -> Welcome | None:
        """The server's welcome, once it arrived."""
        return self.connection.welcome

    @property
    def ready(self) -> Ready | None:
        """The ``ready`` that ended the login, once it arrived."""
        return self.connection.ready

    @property
    def name(self) -> str:
        assert self.ready is not None
        return self.ready.name

    def next_ref(self) -> str:
        """A fresh ``ref`` for matching a sent message with its acknowledgement."""
        return f"c-{next(self._refs)}"

    async def send(self, event: ClientEvent) -> None:
        """Send one frame; raise ConnectionFailed if the connection is gone."""
        self.connection.send(event)
        await self._flush()

    async def _flush(self) -> None:
        data = self.connection.data_to_send()
        if not data:
            return
        try:
            self._writer.write(data)
            await self._writer.drain()
        except (ConnectionError, OSError) as exc:
            raise ConnectionFailed(f"connection to {self.address} lost: {exc}") from exc

    async def receive(self) -> ServerEvent:
        """The next event from the server (pings are answered, not returned).

        ``pong`` is returned: a ping sent with :meth:`send` works as a barrier, since the
        server answers in order.
        """
        while not self._pending:
            await self._read()
        return self._pending.pop()

    async def _read(self) -> None:
        """Feed one chunk from the server to the connection core and answer its pings.

        Raises the ChatError that ended the session once the events before it are taken.
        """
        conn = self.connection
        if conn.failure is not None:
            raise conn.failure
        if conn.state is ClientState.CLOSED:
            raise ConnectionFailed(f"the server at {self.address} closed the connection")
        try:
            data = await self._reader.read(_READ_CHUNK)
        except (ConnectionError, OSError) as exc:
            raise ConnectionFailed(f"connection to {self.address} lost: {exc}") from exc
        if data:
            conn.receive_data(data)
        else:
            conn.receive_eof()
        self._pending[:0] = reversed(conn.events_received())
        await self._flush()  # pongs

    async def events(self) -> AsyncIterator[ServerEvent]:
        """Yield server events until the session ends."""
        while True:
            try:
                yield await self.receive()
            except ConnectionFailed:
                if self._closing:
                    return
                raise

    async def close(self, bye: bool = True) -> None:
        """Say bye (optionally) and close the connection."""
        self._closing = True
        if bye and not self._writer.is_closing():
            with contextlib.suppress(ConnectionFailed):
                await self.send(Bye())
        self._writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self._writer.wait_closed()

    async def login(
        self,
        name: str,
        room: str | None,
        history: int | None,
        since: int | None,
        hello: Hello | None = None,
    ) -> Ready:
        """Send ``hello`` (the one given, or one made of the other arguments) and wait
        for ``ready``; a refusal raises ServerRefused."""
        if hello is None:
            hello = Hello(name=name, room=room or None, since=since, history=history)
        await self.send(hello)
        while self.connection.ready is None:
            await self._read()
        return self.connection.ready

    async def __aenter__(self) -> ChatClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def connect(
    host: str,
    port: int,
    name: str,
    room: str | None = None,
    *,
    history: int | None = None,
    since: int | None = None,
    timeout: float = DEFAULT_CONNECT_TIMEOUT,
    hello: Hello | None = None,
    on_welcome: Callable[[Welcome], None] | None = None,
) -> ChatClient:
    """Connect, log in as ``name`` and return the client once ``ready`` arrived.

    ``hello`` replaces the login frame made of the other arguments (a resume sends
    ``epoch`` and ``resume`` too). ``on_welcome`` gets the server's welcome when one
    came, even when the login is refused: its ``features`` tell a front end whether the
    server wants its password (``server_password``).

    Raises ConnectionFailed when the server cannot be reached, ServerRefused when it
    refuses the login (``name_taken``, ``name_invalid``, ...).
    """
    address = f"{host}:{port}"
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except TimeoutError as exc:
        raise ConnectionFailed(f"cannot connect to {address}: timed out") from exc
    except ConnectionRefusedError as exc:
        raise ConnectionFailed(
            f"cannot connect to {address}: connection refused (is `chatcli serve` running?)"
        ) from exc
    except OSError as exc:
        raise ConnectionFailed(f"cannot connect to {address}: {exc.strerror or exc}") from exc
    client = ChatClient(reader, writer, address)
    try:
        await asyncio.wait_for(client.login(name, room, history, since, hello), timeout)
    except TimeoutError as exc:
        await client.close(bye=False)
        raise ConnectionFailed(f"no answer from {address} within {timeout:g} s") from exc
    except BaseException:
        await client.close(bye=False)
        if on_welcome is not None and client.welcome is not None:
            on_welcome(client.welcome)
        raise
    if on_welcome is not None and client.welcome is not None:
        on_welcome(client.welcome)
    return client
