"""The browser transport: HTTP for the page and a WebSocket at ``/ws``, on one port.

Built on the ``websockets`` library's asyncio server (its new implementation): it does
the HTTP/1.1 upgrade, RFC 6455 framing, the size limit and the close handshake, and its
``process_request`` hook answers the plain HTTP requests (the static page) and refuses
upgrades from foreign origins with 403 before any WebSocket exists. Everything a frame
*means* stays in the same ``Hub``/``Relay`` as the TCP port: a WebSocket client is one
more ``ServerConnection`` of the ``ChatServer``, whose timers, write coalescing,
slow-consumer bound and shutdown apply to it unchanged.

Framing: each text message is exactly one JSON frame (``MessageFraming``), never text
mode. Output uses the TCP JSON wire itself (frames end in ``\\n``), so an event fanned
out to a room of TCP and browser users is encoded once; ``MessageTransport`` turns each
newline-ended frame into one WebSocket message (the encoder escapes newlines inside
strings, so ``\\n`` only ever ends a frame), framed by ``text_frames`` once per flush
for all the browsers that get the same bytes (``FrameCache``) and written in one go.
A busy port writes its browsers at most once per ``--web-flush-interval``, all together
(``Pacer``): a page paints every ~16 ms, and the relay saves a system call per browser
per message. Behind backpressure, messages wait in a queue drained by one writer task per
connection; what is held, the queue and the socket's own buffer are what the core counts against
``max_buffer``, so a browser that stops reading is cut off like any slow consumer.
Heartbeats are the protocol's ``ping``/``pong`` (WebSocket-level pings are off: one
heartbeat, the one the core already runs for every JSON session).

An ``ssl.SSLContext`` given to ``start_web`` makes the port serve HTTPS and WSS.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import email.utils
import logging
import math
import ssl
import time
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING, Final

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from chatcli.core.connection import JSON_LINES, Wire
from chatcli.errors import FrameTooLarge, ProtocolError
from chatcli.transports.tcp import Connection, keep_alive

if TYPE_CHECKING:
    from chatcli.transports.tcp import ChatServer

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "STATIC_DIR",
    "FrameCache",
    "MessageFraming",
    "MessageTransport",
    "Pacer",
    "WebListener",
    "start_web",
    "text_frame_header",
    "text_frames",
    "web_url",
]

log = logging.getLogger("chatcli.server")

#: the page's files, shipped inside the package (package data in pyproject.toml)
STATIC_DIR: Final = Path(__file__).resolve().parent.parent / "web" / "static"
#: the path that upgrades to the chat WebSocket
WS_PATH: Final = "/ws"
#: what the page may load and connect to: its own files, and WebSockets to this server
#: ('self' covers ws:/wss: to the same host in current browsers; the explicit schemes keep
#: older ones working). No inline script or style, no plugins, no framing by others.
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self' ws: wss:; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'none'"
)
#: content types by file suffix; files of other types are not served
CONTENT_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
}
#: a message larger than this many frame limits is refused by the library itself (close
#: 1009) instead of being received; between one and this many, the relay answers
#: ``frame_too_large`` like on TCP
RECEIVE_SLACK: Final = 4


class MessageFraming:
    """A WebSocket's framing for ``ServerConnection``: one text message is one frame.

    The library has already reassembled the message, so ``feed`` only checks the frame
    limit. There is no text mode (``text_wire`` None): a browser speaks JSON.
    """

    __slots__ = ("max_frame",)

    json_wire: Wire = JSON_LINES
    text_wire: Wire | None = None

    def __init__(self, max_frame: int) -> None:
        self.max_frame = max_frame

    def feed(self, data: bytes) -> list[bytes]:
        if len(data) > self.max_frame:
            raise FrameTooLarge(self.max_frame)
        return [data]

    def end(self) -> list[bytes]:
        return []


#: RFC 6455 section 5.2: FIN set, opcode 1 (text), no extension bits
_TEXT_FIN: Final = 0x81
#: the two-byte headers of unmasked text frames with payloads of 0-125 bytes
_SHORT_HEADERS: Final = tuple(bytes((_TEXT_FIN, length)) for length in range(126))


def text_frame_header(length: int) -> bytes:
    """The header of one whole, unmasked text frame whose payload is ``length`` bytes.

    RFC 6455 section 5.2: a server's frames are never masked, so the header depends on
    the payload's length alone (7 bits, or 126 and 16 bits, or 127 and 64 bits).
    """
    if length < 126:
        return _SHORT_HEADERS[length]
    if length < 0x10000:
        return bytes((_TEXT_FIN, 126)) + length.to_bytes(2, "big")
    return bytes((_TEXT_FIN, 127)) + length.to_bytes(8, "big")


def text_frames(data: bytes) -> bytes:
    """Newline-ended JSON frames as the bytes of WebSocket text messages, one each.

    What ``websockets``' ``send_text`` would write for each frame (no compression is
    negotiated, see ``start_web``), built without its per-message ``Frame`` object,
    checks and buffer: the relay sends thousands of these a second to every browser.
    The payloads are the JSON encoder's UTF-8, so they are valid text.
    """
    frames = data.split(b"\n")
    frames.pop()  # what follows the last newline: nothing
    if len(frames) == 1:
        frame = frames[0]
        return text_frame_header(len(frame)) + frame
    parts: list[bytes] = []
    append = parts.append
    for frame in frames:
        append(text_frame_header(len(frame)))
        append(frame)
    return b"".join(parts)


class FrameCache:
    """The WebSocket bytes last built, shared by every browser of one web port.

    A fan-out queues the same encoded frames to every browser in the room, so the
    flush that follows hands each browser's transport equal bytes (often the very same
    object): they are framed once, not once per browser.
    """

    __slots__ = ("_data", "_framed")

    def __init__(self) -> None:
        self._data = b""
        self._framed = b""

    def framed(self, data: bytes) -> bytes:
        """``text_frames(data)``, from the cache when ``data`` is what was framed last."""
        if data == self._data:  # the same object is found without comparing bytes
            return self._framed
        framed = text_frames(data)
        self._data, self._framed = data, framed
        return framed


class Pacer:
    """When the browsers of one web port are written: at once when the port is quiet, at
    most once per ``interval`` when it is busy, all of them together.

    A relay flush writes every recipient once per loop turn; at a few hundred messages a
    second that is a ``write`` system call per browser per message, for output a page
    paints at most every ~16 ms anyway. So a port that wrote less than ``interval`` ago
    holds what follows (``MessageTransport`` keeps it framed) and writes it out on one
    timer for every browser that has some, each with one ``write``. The first output
    after a quiet interval goes out at once: a quiet chat gets no delay at all, a busy
    one at most ``interval``. ``interval`` 0 turns it off (every flush is written).
    The framing cache lives here too: the browsers of a port share both.
    """

    __slots__ = ("_handle", "_last", "_loop", "_open", "_waiting", "cache", "interval")

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.cache = FrameCache()
        self._loop: asyncio.AbstractEventLoop | None = None
        #: transports with output held for the next write-out, in the order they got it
        self._waiting: list[MessageTransport] = []
        self._handle: asyncio.TimerHandle | None = None
        #: the port was quiet at this loop turn's first write: the turn writes at once
        self._open = False
        #: when the port last wrote (time.monotonic: uvloop's clock moves in whole ms)
        self._last = -math.inf

    def hold(self, transport: MessageTransport) -> bool:
        """Whether ``transport``'s output must wait for the next write-out (then it is
        on the list for it); False: write now (the port is quiet, so every browser a
        fan-out reaches in this loop turn is written at once)."""
        if self._handle is not None:
            self._waiting.append(transport)
            return True
        if self._open:
            return False
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        wait = self._last + self.interval - time.monotonic()
        if wait <= 0:
            self._open = True
            self._loop.call_soon(self._close_turn)
            return False
        self._waiting.append(transport)
        self._handle = self._loop.call_later(wait, self._write_out)
        return True

    def _close_turn(self) -> None:
        self._open = False
        self._last = time.monotonic()

    def _write_out(self) -> None:
        self._handle = None
        self._last = time.monotonic()
        waiting, self._waiting = self._waiting, []
        for transport in waiting:
            transport.release()


class MessageTransport:
    """The few ``asyncio.Transport`` verbs ``tcp.Connection`` uses, over one WebSocket.

    ``write`` takes newline-ended frames and makes each one text message: framed
    (``text_frames``, through the port's ``FrameCache``) and written with one
    ``transport.write``, as a TCP flush is (no task switch, no await per message): at
    once when the port is quiet, else held until the port's ``Pacer`` writes out every
    browser together. Once the socket's buffer is over its high-water mark (the peer
    reads slowly), frames queue up for the writer task (``run``) instead, which waits
    for the socket to drain, so messages keep their order. Data frames are only ever
    written while the library's protocol is ``OPEN``; its close handshake, its answers
    to pings and its size limit are its own, untouched. ``close`` writes what is held
    and sends the close frame once the queue is out; ``abort`` drops the socket.
    ``get_write_buffer_size`` counts what is held, the queue and the socket's buffer:
    the bytes the peer has not taken yet, which the core holds against the
    slow-consumer bound.
    """

    def __init__(self, ws: ServerConnection, pacer: Pacer | None = None) -> None:
        self.ws = ws
        self._pacer = pacer if pacer is not None else Pacer(0.0)
        self._cache = self._pacer.cache
        #: framed output waiting for the pacer's next write-out
        self._held: list[bytes] = []
        self._held_bytes = 0
        self._queue: collections.deque[bytes] = collections.deque()
        self._queued = 0
        self._wake = asyncio.Event()
        self._closing = False
        #: the writer task is in the middle of a batch: later frames queue behind it
        self._sending = False

    def write(self, data: bytes) -> None:
        ws = self.ws
        if (
            self._queue
            or self._sending
            or ws.protocol.state is not State.OPEN
            or ws.transport.is_closing()
        ):
            self._enqueue(data)
        elif self._held:  # behind what already waits for the write-out
            self._hold(data)
        elif ws.paused:
            self._enqueue(data)
        elif self._pacer.interval and self._pacer.hold(self):
            self._hold(data)
        else:
            ws.transport.write(self._cache.framed(data))

    def _hold(self, data: bytes) -> None:
        framed = self._cache.framed(data)
        self._held.append(framed)
        self._held_bytes += len(framed)

    def _enqueue(self, data: bytes) -> None:
        self._queue.append(data)
        self._queued += len(data)
        self._wake.set()

    def release(self) -> None:
        """Write what is held (the pacer's write-out, or a close): one ``write``."""
        held = self._held
        if not held:
            return
        data = held[0] if len(held) == 1 else b"".join(held)
        self._held = []
        self._held_bytes = 0
        ws = self.ws
        if ws.protocol.state is State.OPEN and not ws.transport.is_closing():
            ws.transport.write(data)
        # else the connection is going (the peer closed or it is being reset): what it
        # held goes with it, as what is in a closing TCP transport's buffer does

    def get_write_buffer_size(self) -> int:
        return self._held_bytes + self._queued + self.ws.transport.get_write_buffer_size()

    def can_write_eof(self) -> bool:
        return False  # a WebSocket has no half-close: the close frame is the end

    def write_eof(self) -> None:  # pragma: no cover - can_write_eof says never
        self.close()

    def close(self) -> None:
        self.release()  # the last frames (an error, say) go before the close frame
        self._closing = True
        self._wake.set()

    def abort(self) -> None:
        self._held = []
        self._held_bytes = 0
        self.ws.transport.abort()

    async def run(self) -> None:
        """Send what queued while the socket was full, in order, waiting for it to drain
        (``send_context``, the library's own way of writing from a connection's owner:
        it lets the body run only while the connection is open, and drains on the way
        out); once closed, send the close frame."""
        ws, queue = self.ws, self._queue
        with contextlib.suppress(ConnectionClosed):
            while True:
                await self._wake.wait()
                self._wake.clear()
                while queue:
                    data = b"".join(queue)
                    queue.clear()
                    self._queued -= len(data)
                    self._sending = True
                    try:
                        async with ws.send_context():
                            ws.transport.write(text_frames(data))
                    finally:
                        self._sending = False
                if self._closing:
                    await ws.close()
                    return


class WebConnection(Connection):
    """One browser connection: ``tcp.Connection``'s output, timers and shutdown over a
    ``MessageTransport``, fed by the WebSocket handler instead of ``asyncio.Protocol``."""

    __slots__ = ()

    def __init__(self, server: ChatServer, ws: ServerConnection, pacer: Pacer) -> None:
        super().__init__(server)
        transport = MessageTransport(ws, pacer)
        self.transport = transport  # type: ignore[assignment]
        remote = ws.remote_address
        peer = f"{remote[0]}:{remote[1]}" if isinstance(remote, tuple) else str(remote)
        address = remote[0] if isinstance(remote, tuple) else None
        keep_alive(ws.transport.get_extra_info("socket"))
        self.core = core = server.hub.open(
            MessageFraming(server.settings.max_frame), f"ws:{peer}", link=self, address=address
        )
        self.write_out(core)  # the welcome
        server.settle(self)

    def message(self, message: str | bytes) -> None:
        """One WebSocket message from the peer: a text one is a frame, a binary one is
        refused with ``bad_request`` (the connection stays open)."""
        core = self.core
        assert core is not None
        server = self.server
        if isinstance(message, bytes):
            if not core.closing:
                core.refuse(ProtocolError("bad_request", "send JSON frames as text messages"))
        else:
            server.hub.receive_data(core, message.encode())
        server.settle(self)


@dataclass
class WebListener:
    """A running web port: its address, its page URL, and how to stop it."""

    server: Server
    url: str

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [sock.getsockname()[:2] for sock in self.server.sockets]

    def close(self) -> None:
        """Stop listening; the chat connections are closed by the ``ChatServer``'s
        shutdown, which tells each of them ``server_shutdown`` first."""
        self.server.close(close_connections=False)

    async def wait_closed(self, timeout: float) -> None:
        """Wait (at most ``timeout`` seconds) for every connection handler to return."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.server.wait_closed(), timeout)


def web_url(host: str, port: int, *, tls: bool = False) -> str:
    """The page's URL for a server bound to ``host``:``port`` (IPv6 in brackets)."""
    shown = f"[{host}]" if ":" in host else host
    return f"{'https' if tls else 'http'}://{shown}:{port}/"


def _same_origin(origin: str, host: str | None, tls: bool) -> bool:
    if host is None:
        return False
    return origin.lower() == f"{'https' if tls else 'http'}://{host}".lower()


def _file_response(path: Path, content_type: str) -> Response:
    body = path.read_bytes()
    headers = Headers()
    headers["Date"] = email.utils.formatdate(usegmt=True)
    headers["Content-Type"] = content_type
    headers["Content-Length"] = str(len(body))
    headers["Cache-Control"] = "no-cache"
    _security_headers(headers)
    return Response(HTTPStatus.OK.value, HTTPStatus.OK.phrase, headers, body)


def _plain(status: HTTPStatus, text: str) -> Response:
    body = f"{text}\n".encode()
    headers = Headers()
    headers["Date"] = email.utils.formatdate(usegmt=True)
    headers["Content-Type"] = "text/plain; charset=utf-8"
    headers["Content-Length"] = str(len(body))
    headers["Connection"] = "close"
    _security_headers(headers)
    return Response(status.value, status.phrase, headers, body)


def _security_headers(headers: Headers) -> None:
    headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    headers["X-Content-Type-Options"] = "nosniff"
    headers["Referrer-Policy"] = "no-referrer"
    headers["X-Frame-Options"] = "DENY"


def static_file(static_dir: Path, request_path: str) -> Path | None:
    """The file under ``static_dir`` that ``request_path`` names, or None.

    ``/`` is ``index.html``. The query string is ignored. Only plain names made of
    letters, digits, ``-``, ``_`` and ``.`` in at most one level of folders are served
    (no ``..``, no hidden files, no encoded separators), the resolved path must stay
    inside ``static_dir``, and its type must be one of ``CONTENT_TYPES``.
    """
    path = request_path.split("?", 1)[0].split("#", 1)[0]
    if path == "/":
        path = "/index.html"
    parts = path[1:].split("/")
    if not path.startswith("/") or len(parts) > 2:
        return None
    for part in parts:
        if not part or part.startswith(".") or not all(c.isalnum() or c in "-_." for c in part):
            return None
        if not part.isascii():
            return None
    candidate = (static_dir / Path(*parts)).resolve()
    root = static_dir.resolve()
    if root not in candidate.parents or candidate.suffix not in CONTENT_TYPES:
        return None
    return candidate if candidate.is_file() else None


async def start_web(
    server: ChatServer,
    host: str,
    port: int,
    *,
    origins: tuple[str, ...] = (),
    ssl_context: ssl.SSLContext | None = None,
    static_dir: Path = STATIC_DIR,
) -> WebListener:
    """Serve the page and the chat WebSocket on ``host``:``port`` for ``server``'s hub.

    ``origins`` are the extra page origins (``https://chat.example.org``) whose pages may
    open the WebSocket besides the page's own; a request without ``Origin`` (a program,
    not a browser) is let through. Sets the relay's ``web_url`` so ``welcome`` offers it.
    """
    tls = ssl_context is not None
    allowed = frozenset(origin.rstrip("/").lower() for origin in origins)
    settings = server.settings
    pacer = Pacer(settings.web_flush_interval)

    def process_request(connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path == WS_PATH:
            origin = request.headers.get("Origin")
            if origin is None or origin.lower() in allowed:
                return None
            if _same_origin(origin, request.headers.get("Host"), tls):
                return None
            log.info("refused WebSocket from origin %r", origin)
            return _plain(HTTPStatus.FORBIDDEN, "this origin may not open the chat")
        if server.shutting_down:
            return _plain(HTTPStatus.SERVICE_UNAVAILABLE, "the server is shutting down")
        found = static_file(static_dir, request.path)
        if found is None:
            return _plain(HTTPStatus.NOT_FOUND, "not found")
        try:
            return _file_response(found, CONTENT_TYPES[found.suffix])
        except OSError as exc:
            log.warning("cannot read %s: %s", found, exc)
            return _plain(HTTPStatus.NOT_FOUND, "not found")

    async def handler(ws: ServerConnection) -> None:
        if server.shutting_down:
            return
        link = WebConnection(server, ws, pacer)
        transport: MessageTransport = link.transport  # type: ignore[assignment]
        writer = asyncio.create_task(transport.run())
        try:
            async for message in ws:
                link.message(message)
        except ConnectionClosed:
            pass  # the peer went without a close frame: lost, like a TCP reset
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            link.connection_lost(None)

    ws_server = await serve(
        handler,
        host,
        port,
        process_request=process_request,
        max_size=settings.max_frame * RECEIVE_SLACK,
        ping_interval=None,  # the protocol's ping/pong is the heartbeat
        compression=None,  # deflate costs CPU per message for frames this small
        ssl=ssl_context,
        server_header=None,
    )
    bound_host, bound_port = ws_server.sockets[0].getsockname()[:2]
    url = web_url(bound_host, bound_port, tls=tls)
    server.relay.web_url = url
    return WebListener(ws_server, url)
