"""The ``draw`` mix of ``chatcli bench``: browsers drawing on the board while others chat.

``--draw-clients N`` opens N WebSocket clients on the relay's web port (``serve --web``)
in the chat's first room; each draws a pencil stroke of ``points`` points every
``1/rate`` seconds, open loop (it never waits for its echo), for the whole run; at the
end it waits for the answers to the draws in flight, then clears its own drawings. Its
figures (draws sent, acknowledged by their own echo, refused) go beside the chat's: what
the chat clients measure is whether board traffic slows the conversation. The clients
run on a thread of their own with their own event loop, so the load generator's chat
workers are not slowed by them.

The drawing clients also receive every chat message of the room (thousands a second),
and the generator shares the machine with the relay it measures. So they are lean
WebSocket clients (``DrawClient``): the opening handshake and a frame reader
(``FrameReader``) of their own, only the few frames that matter parsed, and no reader
waiting on their sockets: one task reads every client's socket every ``POLL_INTERVAL``
(a reader woken by each arrival is woken by each write of the relay and preempts it on
a shared core; measured in docs/benchmarks.md). What they send (a few frames a second)
is framed and masked by the ``websockets`` library.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import random
import socket
import threading
from dataclasses import dataclass

from websockets.frames import Close, CloseCode, Frame, Opcode

from chatcli.runtime import run

__all__ = ["DrawClient", "DrawLoad", "DrawResult", "DrawSpec", "FrameReader", "HandshakeError"]

#: RFC 6455 section 1.3: what the server's Sec-WebSocket-Accept hashes with the key
_ACCEPT_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#: the most a response's head may take before the handshake is given up
_MAX_HEAD = 16 * 1024
#: how often the clients read what arrived (and write what is pending): at most this
#: late, an ack or a ping is seen; no wake-up per message of the relay, which writes a
#: busy browser at most every 10 ms anyway (``serve --web-flush-interval``)
POLL_INTERVAL = 0.01
#: how long the clients wait, when the run stops, for the answers to draws in flight
SETTLE_TIMEOUT = 2.0
#: what one ``recv`` asks for; a shorter answer means the socket is empty for now
_RECV_SIZE = 1 << 18
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


class DrawClient:
    """One drawing browser, as cheap to run, and as quiet towards the relay, as can be.

    ``open`` connects and performs the opening handshake. After that nothing waits on
    the socket: ``poll`` (called every ``POLL_INTERVAL`` for all clients by one task)
    reads whatever arrived and writes whatever is pending, without blocking. A reader
    woken by every arrival would be woken by every write of the relay (thousands a
    second), and on a machine whose cores the relay shares it would preempt the relay in
    the middle of its fan-out (see docs/benchmarks.md); a browser is on another machine.

    ``ready`` resolves once the login is answered (True for ``ready``, False for an
    ``error`` or a lost connection). After login an incoming text message is only looked
    at by its start (the server writes ``type`` first): its own draw echoed (an ack), an
    ``error``, or a protocol ``ping`` (answered with ``pong``); chat is skipped unread.
    """

    def __init__(self, result: DrawResult) -> None:
        self.result = result
        self.ready: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        #: the connection is gone (or was never made)
        self.closed = True
        self._sock: socket.socket | None = None
        self._reader = FrameReader()
        self._out = b""
        self._close_sent = False

    async def open(self, host: str, port: int) -> None:
        """Connect and upgrade to a WebSocket; raises ``OSError`` or ``HandshakeError``."""
        loop = asyncio.get_running_loop()
        family, kind, proto, _, address = (
            await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        )[0]
        sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, address)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            key = base64.b64encode(os.urandom(16))
            shown = f"[{host}]" if ":" in host else host
            await loop.sock_sendall(
                sock,
                b"GET /ws HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                b"Sec-WebSocket-Version: 13\r\n\r\n" % (shown.encode(), port, key),
            )
            head = b""
            while (end := head.find(b"\r\n\r\n")) < 0:
                if len(head) > _MAX_HEAD:
                    raise HandshakeError("the response's head is too long")
                data = await loop.sock_recv(sock, 65536)
                if not data:
                    raise HandshakeError("the server closed the connection")
                head += data
            _accept(head[:end], key)
        except BaseException:
            sock.close()
            raise
        self._sock, self.closed = sock, False
        self._feed(head[end + 4 :])

    def poll(self) -> None:
        """Read everything that arrived and write what is pending; never blocks."""
        sock = self._sock
        if sock is None or self.closed:
            return
        try:
            while True:
                try:
                    data = sock.recv(_RECV_SIZE)
                except BlockingIOError:
                    break
                if not data:
                    self._lost()
                    return
                self._feed(data)
                if self.closed:  # the server broke the framing: dropped
                    return
                if len(data) < _RECV_SIZE:
                    break  # all there was: no second system call (and exception) to learn it
            self._write()
        except OSError:
            self._lost()

    def send_text(self, text: str) -> None:
        """Send one text message (masked, as a client must)."""
        if self.closed or self._close_sent:
            raise ConnectionError("the connection is closed")
        self._send(Frame(Opcode.TEXT, text.encode()).serialize(mask=True))

    async def close(self, timeout: float) -> None:
        """The closing handshake: send a close frame, wait (bounded) for the server to
        answer and drop the connection, then drop it ourselves."""
        if self.closed:
            return
        if not self._close_sent:
            self._send_close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while not self.closed:
                    await asyncio.sleep(POLL_INTERVAL)
                    self.poll()
        self._lost()

    # -- what comes in -----------------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        try:
            for opcode, payload in self._reader.feed(data):
                self._message(opcode, payload)
        except HandshakeError:
            self.result.errors += 1
            self._lost()

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
            self._send(Frame(Opcode.PONG, payload).serialize(mask=True))
        elif opcode == _CLOSE and not self._close_sent:
            self._send_close()  # the echo the server waits for; it then ends TCP

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

    # -- what goes out -----------------------------------------------------------------------

    def _send(self, frame: bytes) -> None:
        self._out += frame
        try:
            self._write()
        except OSError:
            self._lost()

    def _write(self) -> None:
        while self._out and self._sock is not None:
            try:
                sent = self._sock.send(self._out)
            except BlockingIOError:
                return  # the rest goes at the next poll
            self._out = self._out[sent:]

    def _send_close(self) -> None:
        self._close_sent = True
        close = Close(CloseCode.NORMAL_CLOSURE, "").serialize()
        self._send(Frame(Opcode.CLOSE, close).serialize(mask=True))

    def _lost(self) -> None:
        self.closed = True
        if not self.ready.done():
            self.ready.set_result(False)
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _accept(head: bytes, key: bytes) -> None:
    """Check the server's answer to the upgrade (RFC 6455 section 4.2.2)."""
    status, *lines = head.split(b"\r\n")
    parts = status.split(b" ", 2)
    if len(parts) < 2 or parts[1] != b"101":
        raise HandshakeError(f"the server answered {status.decode(errors='replace')!r}")
    headers = {}
    for line in lines:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    expected = base64.b64encode(hashlib.sha1(key + _ACCEPT_GUID).digest())
    if headers.get(b"sec-websocket-accept") != expected:
        raise HandshakeError("the server's Sec-WebSocket-Accept does not match")


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
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        spec = self.spec
        clients: list[DrawClient] = []
        poller = asyncio.create_task(self._poll(clients))
        for index in range(spec.clients):
            client = await self._connect()
            if client is None:
                continue
            name = f"{spec.name_prefix}{index}"
            clients.append(client)
            client.send_text(json.dumps({"type": "hello", "name": name, "room": spec.room}))
        logged_in = await asyncio.gather(*(self._ready_of(client) for client in clients))
        live = [client for client, ok in zip(clients, logged_in, strict=True) if ok]
        self.result.connected = len(live)
        self._ready.set()
        tasks = [asyncio.create_task(self._draw(client, i)) for i, client in enumerate(live)]
        await self._stop.wait()
        for task in tasks:
            task.cancel()
        await self._settle()
        poller.cancel()
        for client in live:
            with contextlib.suppress(ConnectionError):
                client.send_text(json.dumps({"type": "clear"}))
        await asyncio.gather(*(client.close(2.0) for client in clients))

    async def _settle(self, timeout: float = SETTLE_TIMEOUT) -> None:
        """Wait (at most ``timeout``) for the answers to the draws still in flight.

        The run stops at any moment, a draw sent just before it is answered a poll later:
        without this wait it would be counted as sent and never acknowledged. A client
        that could not connect counts as an error, so a run with such errors may stop
        waiting early; it is not a clean run anyway.
        """
        result = self.result
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while result.acked + result.errors < result.sent:
                    await asyncio.sleep(POLL_INTERVAL)

    @staticmethod
    async def _poll(clients: list[DrawClient]) -> None:
        """Every ``POLL_INTERVAL``, let every client read and write what it can."""
        while True:
            await asyncio.sleep(POLL_INTERVAL)
            for client in clients:
                client.poll()

    async def _connect(self) -> DrawClient | None:
        """One client through the opening handshake, or None (counted as an error)."""
        client = DrawClient(self.result)
        try:
            async with asyncio.timeout(10.0):
                await client.open(self.spec.host, self.spec.port)
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
