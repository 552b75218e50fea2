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
import ssl
from collections.abc import AsyncIterator, Callable
from typing import Any

from chatcli.addresses import format_address
from chatcli.core.client import MAX_SERVER_FRAME, ClientConnection, ClientState
from chatcli.core.protocol import Bye, ClientEvent, Hello, LineFramer, Ready, ServerEvent, Welcome
from chatcli.errors import ConnectionFailed
from chatcli.tls import client_failure

__all__ = ["DEFAULT_CONNECT_TIMEOUT", "MAX_SERVER_FRAME", "ChatClient", "connect"]

DEFAULT_CONNECT_TIMEOUT = 10.0
#: seconds a TLS close waits for the server's close_notify before dropping the connection
TLS_SHUTDOWN_TIMEOUT = 5.0
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
        tls: bool = False,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self.connection = ClientConnection(LineFramer(max_frame))
        self._pending: list[ServerEvent] = []
        self._closing = False
        self._refs = itertools.count(1)
        self.address = address
        #: whether the connection speaks TLS (a plaintext one closed at once hints at TLS)
        self.tls = tls

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
            raise ConnectionFailed(
                f"the server at {self.address} closed the connection{self._tls_hint()}"
            )
        try:
            data = await self._reader.read(_READ_CHUNK)
        except (ConnectionError, OSError) as exc:
            hint = self._tls_hint()
            raise ConnectionFailed(f"connection to {self.address} lost: {exc}{hint}") from exc
        if data:
            conn.receive_data(data)
        else:
            conn.receive_eof()
        self._pending[:0] = reversed(conn.events_received())
        await self._flush()  # pongs

    def _tls_hint(self) -> str:
        """What a plaintext client cut off before any welcome is told: a TLS-only server
        drops it so, having failed to find a TLS handshake in its first bytes."""
        if self.connection.welcome is None and not self.tls:
            return " before its welcome (if it speaks TLS only, add --tls)"
        return ""

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
    tls: ssl.SSLContext | None = None,
) -> ChatClient:
    """Connect, log in as ``name`` and return the client once ``ready`` arrived.

    ``hello`` replaces the login frame made of the other arguments (a resume sends
    ``epoch`` and ``resume`` too). ``on_welcome`` gets the server's welcome when one
    came, even when the login is refused: its ``features`` tell a front end whether the
    server wants its password (``server_password``). With ``tls`` the connection speaks
    TLS, checking the server's certificate for ``host`` as the context says.

    Raises ConnectionFailed when the server cannot be reached (or its TLS cannot be
    trusted), ServerRefused when it refuses the login (``name_taken``, ...).
    """
    address = format_address(host, port)
    options: dict[str, Any] = {}
    if tls is not None:
        options = {"ssl": tls, "ssl_shutdown_timeout": TLS_SHUTDOWN_TIMEOUT}
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, **options), timeout
        )
    except ssl.SSLError as exc:  # before OSError, which it is
        raise ConnectionFailed(client_failure(exc, address)) from exc
    except TimeoutError as exc:
        raise ConnectionFailed(f"cannot connect to {address}: timed out") from exc
    except ConnectionRefusedError as exc:
        raise ConnectionFailed(
            f"cannot connect to {address}: connection refused (is `chatcli serve` running?)"
        ) from exc
    except OSError as exc:
        if tls is not None and isinstance(exc, ConnectionError):  # reset in the handshake
            raise ConnectionFailed(client_failure(exc, address)) from exc
        raise ConnectionFailed(f"cannot connect to {address}: {exc.strerror or exc}") from exc
    client = ChatClient(reader, writer, address, tls=tls is not None)
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
