"""Shared helpers for loopback tests: a real server on 127.0.0.1 port 0 and a line client.

pytest-asyncio is not a dependency: ``async_test`` turns a coroutine function into a plain
test that runs on a fresh event loop under a hard timeout, and every read here has its
own bound, so a misbehaving server fails a test instead of hanging the suite.

    @async_test
    async def test_something() -> None:
        async with serving(rate_limit=0) as srv:
            alice = await srv.login("alice")
            await alice.send({"type": "say", "text": "hi"})
            await alice.expect("msg", text="hi", **{"from": "alice"})
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager, suppress
from typing import Any, TypeVar

from chatcli.core.client import ClientConnection
from chatcli.core.protocol import Hello
from chatcli.settings import ServerSettings
from chatcli.transports.tcp import ChatServer

__all__ = [
    "HOST",
    "READ_TIMEOUT",
    "LineClient",
    "TestServer",
    "async_test",
    "run",
    "serving",
]

HOST = "127.0.0.1"
#: bound on any single read in these tests; generous, since a passing read is fast
READ_TIMEOUT = 5.0
#: bound on a whole async test
TEST_TIMEOUT = 30.0
#: StreamReader limit of test clients: a max frame plus room
LINE_LIMIT = 1 << 20

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T], timeout: float = TEST_TIMEOUT) -> T:
    """Run ``coro`` on a fresh event loop; fail (not hang) after ``timeout`` seconds.

    The loop is asyncio's own, or uvloop's (what ``chatcli serve`` uses) when the
    environment has ``CHATCLI_TEST_LOOP=uvloop``.
    """

    async def bounded() -> T:
        async with asyncio.timeout(timeout):
            return await coro

    factory = None
    if os.environ.get("CHATCLI_TEST_LOOP") == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(bounded())


def async_test(
    fn: Callable[..., Awaitable[None]] | None = None, *, timeout: float = TEST_TIMEOUT
) -> Any:
    """Decorate an ``async def`` test (fixtures and parametrize work) to run via ``run``."""

    def wrap(func: Callable[..., Awaitable[None]]) -> Callable[..., None]:
        @functools.wraps(func)
        def test(*args: Any, **kwargs: Any) -> None:
            run(func(*args, **kwargs), timeout)  # type: ignore[arg-type]

        return test

    return wrap(fn) if fn is not None else wrap


class LineClient:
    """A raw connection to a server that reads and writes whole lines, every read bounded."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        #: the welcome and ready frames, once ``TestServer.login`` has read them
        self.welcome: dict[str, Any] = {}
        self.ready: dict[str, Any] = {}

    @classmethod
    async def open(
        cls, port: int, *, rcvbuf: int | None = None, limit: int = LINE_LIMIT
    ) -> LineClient:
        """Connect to 127.0.0.1:``port``; ``rcvbuf`` shrinks the kernel receive buffer."""
        if rcvbuf is None:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(HOST, port, limit=limit), READ_TIMEOUT
            )
        else:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.setblocking(False)
            loop = asyncio.get_running_loop()
            await asyncio.wait_for(loop.sock_connect(sock, (HOST, port)), READ_TIMEOUT)
            reader, writer = await asyncio.open_connection(sock=sock, limit=limit)
        return cls(reader, writer)

    # -- writing ----------------------------------------------------------------------

    async def send(self, data: dict[str, Any] | str | bytes) -> None:
        """Send a JSON object, a text line (newline added) or raw bytes (as they are)."""
        if isinstance(data, dict):
            raw = json.dumps(data).encode() + b"\n"
        elif isinstance(data, str):
            raw = data.encode() + b"\n"
        else:
            raw = data
        self.writer.write(raw)
        await asyncio.wait_for(self.writer.drain(), READ_TIMEOUT)

    # -- reading ----------------------------------------------------------------------

    async def line(self, timeout: float = READ_TIMEOUT) -> bytes:
        """The next line without its newline; fails on EOF or after ``timeout``."""
        try:
            raw = await asyncio.wait_for(self.reader.readline(), timeout)
        except TimeoutError:
            raise AssertionError(f"no line from the server within {timeout} s") from None
        if not raw.endswith(b"\n"):
            raise AssertionError(f"connection closed instead of a line (got {raw[:200]!r})")
        return raw[:-1]

    async def text(self, timeout: float = READ_TIMEOUT) -> str:
        """The next line as text (text-mode sessions); it must not be JSON."""
        line = (await self.line(timeout)).decode()
        assert not line.startswith("{"), f"a text session got JSON: {line}"
        return line

    async def recv(self, timeout: float = READ_TIMEOUT) -> dict[str, Any]:
        """The next frame, decoded."""
        line = await self.line(timeout)
        frame = json.loads(line)
        assert isinstance(frame, dict), line
        return frame

    async def expect(self, kind: str, timeout: float = READ_TIMEOUT, **fields: Any) -> dict:
        """The next frame, which must be of type ``kind`` with the given field values."""
        frame = await self.recv(timeout)
        assert frame.get("type") == kind, f"expected {kind}, got {frame}"
        for key, value in fields.items():
            key = "from" if key == "from_" else key
            assert frame.get(key) == value, f"{key}: expected {value!r} in {frame}"
        return frame

    async def recv_until(
        self,
        match: str | Callable[[dict[str, Any]], bool] | None = None,
        timeout: float = READ_TIMEOUT,
        **fields: Any,
    ) -> dict[str, Any]:
        """Skip frames until one matches: a type name or a predicate, and field values."""

        def check(frame: dict[str, Any]) -> bool:
            if isinstance(match, str) and frame.get("type") != match:
                return False
            if callable(match) and not match(frame):
                return False
            return all(frame.get(k) == v for k, v in fields.items())

        async with asyncio.timeout(timeout):
            while True:
                frame = await self.recv(timeout)
                if check(frame):
                    return frame

    async def eof(self, timeout: float = READ_TIMEOUT) -> bytes:
        """Read until the server closes; return whatever arrived before the close."""
        chunks = []
        try:
            async with asyncio.timeout(timeout):
                while chunk := await self.reader.read(65536):
                    chunks.append(chunk)
        except TimeoutError:
            raise AssertionError(f"the server did not close within {timeout} s") from None
        except ConnectionResetError as exc:
            raise AssertionError(f"reset instead of a clean close ({chunks!r})") from exc
        return b"".join(chunks)

    async def barrier(self, timeout: float = READ_TIMEOUT) -> list[dict[str, Any]]:
        """Ping, and return every frame that arrived before the pong.

        The server answers one connection's frames in order, so the pong comes after
        everything it had queued for this client when the ping was read: what a test
        caused before calling this has either arrived by now or never will.
        """
        await self.send({"type": "ping"})
        before: list[dict[str, Any]] = []
        async with asyncio.timeout(timeout):
            while (frame := await self.recv(timeout)) != {"type": "pong"}:
                before.append(frame)
        return before

    async def nothing_pending(self, *kinds: str) -> None:
        """Assert the server queued nothing (or no frame of ``kinds``) for this client.

        Unlike waiting a while for silence, this cannot pass because a misrouted frame
        was merely slow: it asks the server, through the ping/pong barrier.
        """
        before = await self.barrier()
        unwanted = [frame for frame in before if not kinds or frame.get("type") in kinds]
        assert not unwanted, (
            f"expected nothing{' of ' + str(kinds) if kinds else ''}, got {unwanted}"
        )

    # -- closing ----------------------------------------------------------------------

    def abort(self) -> None:
        """Drop the connection without a word."""
        self.writer.transport.abort()

    def reset(self) -> None:
        """Drop the connection with a TCP reset (SO_LINGER 0)."""
        sock = self.writer.transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        self.writer.transport.abort()

    async def close(self) -> None:
        if not self.writer.is_closing():
            self.writer.close()
        with suppress(TimeoutError, ConnectionError, OSError):
            await asyncio.wait_for(self.writer.wait_closed(), 1.0)


class _ErrorLog(logging.Handler):
    """Collects the server's ERROR records: any of them means a bug was hit."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class TestServer:
    """A running ChatServer and the clients a test opened against it."""

    __test__ = False  # not a test class, whatever its name says

    def __init__(self, server: ChatServer, port: int) -> None:
        self.server = server
        self.port = port
        self.clients: list[LineClient] = []

    async def connect(self, **kwargs: Any) -> LineClient:
        """A raw connection, its welcome not read yet."""
        client = await LineClient.open(self.port, **kwargs)
        self.clients.append(client)
        return client

    async def login(self, name: str, room: str | None = None, **hello: Any) -> LineClient:
        """A JSON session logged in as ``name``; its ``welcome`` and ``ready`` are read.

        The handshake runs through the shared client core (ClientConnection), so every
        login of these tests also checks it against the real server; the frames are kept
        as dicts too, for tests that compare them field by field.
        """
        client = await self.connect(**{k: hello.pop(k) for k in ("rcvbuf", "limit") if k in hello})
        core = ClientConnection(framing=None)
        client.welcome = await client.expect("welcome")
        core.receive_frame(json.dumps(client.welcome).encode())
        core.send(Hello(name=name, room=room, **hello))
        await client.send(core.data_to_send())
        while core.ready is None:
            line = await client.line()
            core.receive_frame(line)
            assert core.failure is None, f"login refused: {core.failure}"
            assert core.data_to_send() == b"", "a ping during login"
            assert core.events_received() == [], f"{line!r} before ready"
        client.ready = json.loads(line)
        assert core.ready.name == name, client.ready
        return client

    async def text_login(self, name: str) -> tuple[LineClient, str]:
        """A text (nc) session logged in as ``name``, and the ready line it got."""
        client = await self.connect()
        await client.expect("welcome")
        await client.send(f"login {name}")
        line = await client.text()
        while not line.startswith("-- you are "):
            line = await client.text()
        return client, line


@asynccontextmanager
async def serving(**overrides: Any) -> AsyncIterator[TestServer]:
    """Run a ChatServer on 127.0.0.1 port 0 for the block; shut it down after.

    Fails the test if the server logged an ERROR (an internal error it survived).
    """
    settings = ServerSettings(host=HOST, port=0, **overrides)
    errors = _ErrorLog()
    logger = logging.getLogger("chatcli.server")
    logger.addHandler(errors)
    try:
        server = ChatServer(settings)
        _, port = await server.start()
        srv = TestServer(server, port)
        try:
            yield srv
        finally:
            for client in srv.clients:
                client.abort()
            await asyncio.wait_for(server.shutdown(), 5.0)
    finally:
        logger.removeHandler(errors)
    assert not errors.records, [r.getMessage() for r in errors.records]
