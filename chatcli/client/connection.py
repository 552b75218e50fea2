"""The asyncio client connection shared by ``join``, ``replay --to`` and ``bench``.

It performs the handshake, answers the server's pings, decodes frames with the protocol
core and turns every way a session can end into a ChatError with one clear message.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator

from chatcli.core.protocol import (
    FATAL_CODES,
    Bye,
    ClientEvent,
    Error,
    Hello,
    LineFramer,
    Ping,
    Pong,
    Ready,
    ServerEvent,
    Welcome,
    decode_server_frame,
    encode,
)
from chatcli.errors import ConnectionFailed, ProtocolError, ServerRefused

__all__ = ["DEFAULT_CONNECT_TIMEOUT", "MAX_SERVER_FRAME", "ChatClient", "connect"]

DEFAULT_CONNECT_TIMEOUT = 10.0
#: longest line accepted from a server: a ``ready`` carries a room's whole history
#: (e.g. 50 messages of 4096 characters, each escaped up to 6 bytes), so be generous
MAX_SERVER_FRAME = 64 * 1024 * 1024
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
        self._framer = LineFramer(max_frame)
        self._pending: list[bytes] = []
        self._closing = False
        self._refs = itertools.count(1)
        self.address = address
        self.welcome: Welcome | None = None
        self.ready: Ready | None = None

    @property
    def name(self) -> str:
        assert self.ready is not None
        return self.ready.name

    def next_ref(self) -> str:
        """A fresh ``ref`` for matching a sent message with its acknowledgement."""
        return f"c-{next(self._refs)}"

    async def send(self, event: ClientEvent) -> None:
        """Send one frame; raise ConnectionFailed if the connection is gone."""
        try:
            self._writer.write(encode(event))
            await self._writer.drain()
        except (ConnectionError, OSError) as exc:
            raise ConnectionFailed(f"connection to {self.address} lost: {exc}") from exc

    async def receive(self) -> ServerEvent:
        """The next event from the server (pings are answered, not returned).

        ``pong`` is returned: a ping sent with :meth:`send` works as a barrier, since the
        server answers in order.
        """
        while True:
            while not self._pending:
                try:
                    data = await self._reader.read(_READ_CHUNK)
                except (ConnectionError, OSError) as exc:
                    raise ConnectionFailed(f"connection to {self.address} lost: {exc}") from exc
                if not data:
                    raise ConnectionFailed(f"the server at {self.address} closed the connection")
                self._pending.extend(reversed(self._framer.feed(data)))
            frame = self._pending.pop()
            try:
                event = decode_server_frame(frame)
            except ProtocolError:
                continue  # unknown types and fields from a newer server are ignored
            if isinstance(event, Ping):
                await self.send(Pong())
                continue
            if isinstance(event, Error) and event.code in FATAL_CODES:
                raise ServerRefused(event.code, event.message)
            return event

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
        self, name: str, room: str | None, history: int | None, since: int | None
    ) -> Ready:
        """Send ``hello`` and wait for ``ready``; a refusal raises ServerRefused."""
        await self.send(Hello(name=name, room=room or None, since=since, history=history))
        while True:
            event = await self.receive()
            if isinstance(event, Welcome):
                self.welcome = event
            elif isinstance(event, Ready):
                self.ready = event
                return event
            elif isinstance(event, Error):
                raise ServerRefused(event.code, event.message)

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
) -> ChatClient:
    """Connect, log in as ``name`` and return the client once ``ready`` arrived.

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
        await asyncio.wait_for(client.login(name, room, history, since), timeout)
    except TimeoutError as exc:
        await client.close(bye=False)
        raise ConnectionFailed(f"no answer from {address} within {timeout:g} s") from exc
    except BaseException:
        await client.close(bye=False)
        raise
    return client
