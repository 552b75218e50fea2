"""The ``draw`` mix of ``chatcli bench``: browsers drawing on the board while others chat.

``--draw-clients N`` opens N WebSocket clients on the relay's web port (``serve --web``)
in the chat's first room; each draws a pencil stroke of ``points`` points every
``1/rate`` seconds, open loop (it never waits for its echo), for the whole run, and
clears its own drawings at the end. Its figures (draws sent, acknowledged by their own
echo, refused) go beside the chat's: what the chat clients measure is whether board
traffic slows the conversation. The clients run on a thread of their own with their own
event loop, so the load generator's chat workers are not slowed by them.

The drawing clients also receive every chat message of the room (thousands a second),
and the generator shares the machine with the relay it measures. So they are lean
``asyncio.Protocol`` WebSocket clients (``DrawClient``) on uvloop when it is installed:
the opening handshake and a frame reader (``FrameReader``) of their own, every message
looked at where it lands in ``data_received`` (no task, queue or decoding per message),
only the few frames that matter parsed. What they send (a few frames a second) is framed
and masked by the ``websockets`` library.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import random
import threading
from dataclasses import dataclass
from typing import cast

from websockets.frames import Close, CloseCode, Frame, Opcode

from chatcli.runtime import run

__all__ = ["DrawClient", "DrawLoad", "DrawResult", "DrawSpec", "FrameReader", "HandshakeError"]

#: RFC 6455 section 1.3: what the server's Sec-WebSocket-Accept hashes with the key
_ACCEPT_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#: the most a response's head may take before the handshake is given up
_MAX_HEAD = 16 * 1024
#: RFC 6455 section 5.2 opcodes, as plain ints for the per-message path
_TEXT, _CLOSE, _PING = int(Opcode.TEXT), int(Opcode.CLOSE), int(Opcode.PING)


class HandshakeError(Exception):
    """The server did not accept the WebSocket upgrade, or broke RFC 6455 framing."""


@dataclass(frozen=True)
class DrawSpec:
    """Where and how hard to draw."""

    host: str
    port: int
    clients: int
    rate: float
    room: str = "r0"
    points: int = 20
    seed: int = 1
    name_prefix: str = "drawbench"


@dataclass
class DrawResult:
    """What the drawing clients did."""

    connected: int = 0
    sent: int = 0
    acked: int = 0
    errors: int = 0


class FrameReader:
    """A server's byte stream cut into WebSocket messages (RFC 6455 section 5).

    ``feed`` returns the ``(opcode, payload)`` of every message and control frame
    completed by the bytes given; fragments of a message are joined. A server's frames
    are never masked and use no extension bits; anything else, an unknown opcode or a
    message over ``max_size`` raises ``HandshakeError`` (the caller drops the socket).
    """

    __slots__ = ("_buffer", "_fragments", "_opcode", "max_size")

    def __init__(self, max_size: int = 1 << 24) -> None:
        self.max_size = max_size
        self._buffer = b""
        #: the data frames of a fragmented message so far, and its opcode
        self._fragments: list[bytes] = []
        self._opcode = 0

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buffer = self._buffer + data if self._buffer else data
        size = len(buffer)
        out: list[tuple[int, bytes]] = []
        at = 0
        while size - at >= 2:
            first, second = buffer[at], buffer[at + 1]
            if first & 0x70 or second & 0x80:
                raise HandshakeError("the server used extension bits or masked a frame")
            length, start = second, at + 2
            if length == 126:
                start += 2
                length = int.from_bytes(buffer[at + 2 : start], "big")
            elif length == 127:
                start += 8
                length = int.from_bytes(buffer[at + 2 : start], "big")
            if length > self.max_size:
                raise HandshakeError(f"a frame of {length} bytes is over the limit")
            end = start + length
            if end > size:
                break
            at = end
            self._frame(first & 0x80, first & 0x0F, buffer[start:end], out)
        self._buffer = buffer[at:] if at < size else b""
        return out

    def _frame(self, fin: int, opcode: int, payload: bytes, out: list[tuple[int, bytes]]) -> None:
        if opcode >= 8:  # control frames are whole and may come between fragments
            if not fin or len(payload) > 125 or opcode > 10:
                raise HandshakeError(f"bad control frame (opcode {opcode})")
            out.append((opcode, payload))
            return
        if opcode not in (0, 1, 2) or (opcode == 0) != bool(self._fragments):
            raise HandshakeError(f"unexpected frame (opcode {opcode})")
        if fin and not self._fragments:
            out.append((opcode, payload))
            return
        if opcode:
            self._opcode = opcode
        self._fragments.append(payload)
        if sum(len(part) for part in self._fragments) > self.max_size:
            raise HandshakeError("a message is over the limit")
        if fin:
            out.append((self._opcode, b"".join(self._fragments)))
            self._fragments = []


class DrawClient(asyncio.Protocol):
    """One drawing browser, as cheap to run as a WebSocket client can be.

    ``opened`` resolves once the server accepted the upgrade (to None) or refused it
    (to the ``HandshakeError``); ``ready`` once the login is answered (True for
    ``ready``, False for an ``error``); ``closed`` when the connection is gone. After
    login, an incoming text message is only looked at by its start (the server writes
    ``type`` first): its own draw echoed (an ack), an ``error``, or a protocol ``ping``
    (answered with ``pong``); chat is skipped unread.
    """

    def __init__(self, host: str, port: int, result: DrawResult) -> None:
        self.result = result
        self._key = base64.b64encode(os.urandom(16))
        self._request = (
            b"GET /ws HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n" % (host.encode(), port, self._key)
        )
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[HandshakeError | None] = loop.create_future()
        self.ready: asyncio.Future[bool] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self._head: bytes | None = b""  # None once the handshake is done
        self._reader = FrameReader()
        self._close_sent = False

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        try:
            if self._head is not None:
                head = self._head + data
                end = head.find(b"\r\n\r\n")
                if end < 0:
                    if len(head) > _MAX_HEAD:
                        raise HandshakeError("the response's head is too long")
                    self._head = head
                    return
                self._accept(head[:end])
                self._head = None
                self.opened.set_result(None)
                data = head[end + 4 :]
            for opcode, payload in self._reader.feed(data):
                self._message(opcode, payload)
        except HandshakeError as exc:
            self._fail(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_result(HandshakeError("the server closed the connection"))
        if not self.ready.done():
            self.ready.set_result(False)
        if not self.closed.done():
            self.closed.set_result(None)

    # -- the client's side -----------------------------------------------------------------

    def send_text(self, text: str) -> None:
        """Send one text message (masked, as a client must)."""
        transport = self.transport
        if transport is None or transport.is_closing() or self._close_sent:
            raise ConnectionError("the connection is closed")
        transport.write(Frame(Opcode.TEXT, text.encode()).serialize(mask=True))

    async def close(self, timeout: float) -> None:
        """The closing handshake: send a close frame, wait (bounded) for the server to
        answer and drop the connection, then make sure it is dropped."""
        transport = self.transport
        if transport is None:
            return
        if not self._close_sent and not transport.is_closing():
            self._send_close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.closed), timeout)
        if not self.closed.done():
            transport.abort()

    # -- what comes in -----------------------------------------------------------------------

    def _accept(self, head: bytes) -> None:
        """Check the server's answer to the upgrade (RFC 6455 section 4.2.2)."""
        status, *lines = head.split(b"\r\n")
        parts = status.split(b" ", 2)
        if len(parts) < 2 or parts[1] != b"101":
            raise HandshakeError(f"the server answered {status.decode(errors='replace')!r}")
        headers = {}
        for line in lines:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        expected = base64.b64encode(hashlib.sha1(self._key + _ACCEPT_GUID).digest())
        if headers.get(b"sec-websocket-accept") != expected:
            raise HandshakeError("the server's Sec-WebSocket-Accept does not match")

    def _message(self, opcode: int, payload: bytes) -> None:
        if opcode == _TEXT:
            if not self.ready.done():
                self._login_answer(payload)
            elif payload.startswith(b'{"type":"draw"'):
                if payload.endswith(b"}") and b'"ref":' in payload[-40:]:
                    self.result.acked += 1
            elif payload.startswith(b'{"type":"error"'):
                self.result.errors += 1
            elif payload.startswith(b'{"type":"ping"') and not self._close_sent:
                self.send_text('{"type":"pong"}')
        elif opcode == _PING and not self._close_sent:
            assert self.transport is not None
            self.transport.write(Frame(Opcode.PONG, payload).serialize(mask=True))
        elif opcode == _CLOSE:
            assert self.transport is not None
            if not self._close_sent:
                self._send_close()  # the echo the server waits for
            self.transport.close()  # the server ends TCP; closing our side is harmless

    def _login_answer(self, payload: bytes) -> None:
        try:
            frame = json.loads(payload)
        except ValueError:
            frame = None
        kind = frame.get("type") if isinstance(frame, dict) else "error"
        if kind == "ready":
            self.ready.set_result(True)
        elif kind == "error":
            self.result.errors += 1
            self.ready.set_result(False)

    def _send_close(self) -> None:
        assert self.transport is not None
        self._close_sent = True
        close = Close(CloseCode.NORMAL_CLOSURE, "").serialize()
        self.transport.write(Frame(Opcode.CLOSE, close).serialize(mask=True))

    def _fail(self, exc: HandshakeError) -> None:
        if not self.opened.done():
            self.opened.set_result(exc)
        else:
            self.result.errors += 1
        if self.transport is not None:
            self.transport.abort()


class DrawLoad:
    """N drawing WebSocket clients on a thread: :meth:`start`, then :meth:`stop`."""

    def __init__(self, spec: DrawSpec) -> None:
        self.spec = spec
        self.result = DrawResult()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-draw", daemon=True)

    def start(self, timeout: float = 10.0) -> None:
        """Start drawing; returns once every client has logged in (or ``timeout``)."""
        self._thread.start()
        self._ready.wait(timeout)

    def stop(self, timeout: float = 10.0) -> DrawResult:
        """Stop drawing, clear the drawings, close; the figures."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            loop.call_soon_threadsafe(stop.set)
        self._thread.join(timeout)
        return self.result

    # -- the drawing thread --------------------------------------------------------------

    def _run(self) -> None:
        try:
            run(self._main())  # uvloop when installed, as the chat workers
        finally:
            self._ready.set()

    async def _main(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._stop = asyncio.Event()
        spec = self.spec
        clients: list[DrawClient] = []
        for index in range(spec.clients):
            client = await self._connect(loop)
            if client is None:
                continue
            name = f"{spec.name_prefix}{index}"
            client.send_text(json.dumps({"type": "hello", "name": name, "room": spec.room}))
            clients.append(client)
        logged_in = await asyncio.gather(*(self._ready_of(client) for client in clients))
        live = [client for client, ok in zip(clients, logged_in, strict=True) if ok]
        self.result.connected = len(live)
        self._ready.set()
        tasks = [asyncio.create_task(self._draw(client, i)) for i, client in enumerate(live)]
        await self._stop.wait()
        for task in tasks:
            task.cancel()
        for client in live:
            with contextlib.suppress(ConnectionError):
                client.send_text(json.dumps({"type": "clear"}))
        await asyncio.gather(*(client.close(2.0) for client in clients))

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> DrawClient | None:
        """One client through the opening handshake, or None (counted as an error)."""
        spec = self.spec
        try:
            async with asyncio.timeout(10.0):
                _, client = await loop.create_connection(
                    lambda: DrawClient(spec.host, spec.port, self.result), spec.host, spec.port
                )
                refused = await client.opened
                if refused is not None:
                    raise refused
        except (TimeoutError, OSError, HandshakeError):
            self.result.errors += 1  # a client that cannot connect is counted, never fatal
            return None
        return client

    async def _ready_of(self, client: DrawClient) -> bool:
        try:
            async with asyncio.timeout(10.0):
                return await client.ready
        except TimeoutError:  # a client that could not log in is counted
            self.result.errors += 1
            return False

    async def _draw(self, client: DrawClient, index: int) -> None:
        spec = self.spec
        rng = random.Random(spec.seed * 1000 + index)
        interval = 1.0 / spec.rate
        loop = asyncio.get_running_loop()
        due = loop.time() + rng.random() * interval
        ref = 0
        with contextlib.suppress(ConnectionError):
            while True:
                await asyncio.sleep(max(0.0, due - loop.time()))
                due += interval
                x, y = rng.uniform(0, 900), rng.uniform(0, 900)
                points = [
                    [round(x + 100 * k / spec.points, 1), round(y + rng.uniform(0, 100), 1)]
                    for k in range(spec.points)
                ]
                ref += 1
                shape = {"kind": "pencil", "points": points, "color": "#1f77b4", "width": 3}
                client.send_text(json.dumps({"type": "draw", "shape": shape, "ref": ref}))
                self.result.sent += 1
