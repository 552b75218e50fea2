"""The asyncio adapter around the relay: accept, read, write, heartbeats, backpressure.

Each connection is an ``asyncio.Protocol`` (no stream objects on the hot path). Frames are
decoded by the protocol core and handed to the pure ``Relay``; its deliveries are encoded
once per event (once more for text sessions, and for the sender's ``ref`` echo) and the
same bytes are queued to every recipient. Queued output is written once per recipient
per event-loop turn. A recipient whose unsent output passes ``max_buffer`` is cut off as a
slow consumer, so nobody else ever waits for it and no buffer grows without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Callable, Iterable
from typing import Any, cast

from chatcli.core.protocol import (
    ClientEvent,
    Error,
    Hello,
    LineFramer,
    Ping,
    ServerEvent,
    decode_client_frame,
    encode,
    format_text_event,
    parse_text_line,
)
from chatcli.core.relay import FATAL_CODES, Close, Delivery, Effect, Relay, Session, error_event
from chatcli.errors import FrameTooLarge, ProtocolError, TranscriptError
from chatcli.runtime import raise_open_files_limit
from chatcli.settings import ServerSettings
from chatcli.store import open_store
from chatcli.store.base import Store
from chatcli.store.memory import MemoryStore
from chatcli.store.pipeline import StorePipeline
from chatcli.transcript import ServerRecorder

__all__ = ["ChatServer", "Connection", "run_server"]

log = logging.getLogger("chatcli.server")

_PING = encode(Ping())
#: how many refusals per connection are logged before the rest are only counted
_LOGGED_REFUSALS = 3
#: leave reason when a peer closes without saying bye
_EOF_REASON = {True: "quit", False: "lost"}


def _text_bytes(event: ServerEvent) -> bytes | None:
    line = format_text_event(event)
    return None if line is None else (line + "\n").encode()


class Connection(asyncio.Protocol):
    """One client connection: framing, mode detection, output queue and close sequence."""

    def __init__(self, server: ChatServer) -> None:
        self.server = server
        self.relay = server.relay
        self.session: Session = server.relay.open(self)
        self.framer = LineFramer(server.settings.max_frame)
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        #: None until the first line decides: True for an nc/telnet text session
        self.text: bool | None = None
        self.out: list[bytes] = []
        #: bytes queued or buffered but not yet taken by the peer
        self.unsent = 0
        self.dirty = False
        self.closing = False
        self.peer_eof = False
        self.refusals = 0
        self.last_seen = 0.0
        self.last_ping = 0.0
        self._timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        server = self.server
        self.last_seen = server.loop.time()
        server.connections.add(self)
        if len(server.connections) > server.settings.max_connections:
            log.warning("refusing %s: %d connections open", self.peer, len(server.connections))
            self.close_with(Error(code="server_full", message="too many connections"), "lost")
            return
        log.info("connect %s", self.peer)
        keep_alive(transport.get_extra_info("socket"))
        transport.write(encode(self.relay.welcome()))
        self._timer = server.loop.call_later(server.settings.login_timeout, self._login_expired)

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return  # a closing connection discards what still arrives
        too_large: FrameTooLarge | None = None
        try:
            frames = self.framer.feed(data)
        except FrameTooLarge as exc:
            # the lines before the long one arrived intact: act on them, then close
            too_large, frames = exc, exc.frames
        if frames:
            # a sign of life is a frame (spec), not bytes trickled without ever ending one
            self.last_seen = self.server.loop.time()
        try:
            for frame in frames:
                if self.text is None:
                    if frame.isspace():
                        continue
                    self.text = not frame.lstrip().startswith(b"{")
                if self.text:
                    self._text_frame(frame)
                else:
                    self._json_frame(frame)
                if self.closing:
                    return
        except Exception:
            # A bug must cost this one connection, never the relay or anyone else.
            log.exception("internal error handling %s; closing it", self.who)
            self.close_with(None, "lost")
        if too_large is not None:
            self.close_with(error_event(too_large), "lost")

    def eof_received(self) -> bool:
        if not self.closing and self.framer.pending:
            # `printf 'login x\nhi' | nc`: a last line cut short by the end of input
            self.data_received(b"\n")
        self.peer_eof = True
        if self.closing:
            assert self.transport is not None
            self.transport.close()
        else:
            # after the acknowledgements of what it sent before (the store may be working)
            self.server.deliver([Close(self.session, _EOF_REASON[bool(self.text)])])
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if not self.closing:
            self.closing = True
            self._leave("lost")
        self.out.clear()
        self.server.connections.discard(self)
        self.server.closed.set()

    # -- input ---------------------------------------------------------------------------

    def _json_frame(self, frame: bytes) -> None:
        try:
            event = decode_client_frame(frame)
        except ProtocolError as exc:
            self._refuse(exc)
            return
        self._act(event)

    def _text_frame(self, frame: bytes) -> None:
        try:
            parsed = parse_text_line(frame.decode("utf-8", "replace"), self.session.logged_in)
        except ProtocolError as exc:
            self._refuse(exc)
            return
        if isinstance(parsed, str):  # help or a usage hint, answered here
            self.queue((parsed + "\n").encode())
            return
        self._act(parsed)

    def _act(self, event: ClientEvent) -> None:
        """Hand one client event (from either mode) to the relay; deliver what it causes."""
        try:
            effects = self.relay.handle(self.session, event)
        except ProtocolError as exc:
            self._refuse(exc)
            return
        if isinstance(event, Hello):
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            log.info(
                "login %s as %s in %s%s",
                self.peer,
                self.session.name,
                self.session.room,
                " (text)" if self.text else "",
            )
        self.server.deliver(effects)

    def _refuse(self, exc: ProtocolError) -> None:
        if exc.code in FATAL_CODES:
            self.close_with(error_event(exc), "lost")
            return
        self.refusals += 1
        if self.refusals <= _LOGGED_REFUSALS:
            log.info("refused %s (%s): %s", self.who, exc.code, exc.message)
        elif self.refusals == _LOGGED_REFUSALS + 1:
            log.info("refused %s again; further refusals are not logged", self.who)
        # in line behind what this client sent before (the store may still be working)
        self.server.deliver([Delivery((self.session,), error_event(exc))])

    def _login_expired(self) -> None:
        self._timer = None
        if not self.session.logged_in and not self.closing:
            message = f"no login within {self.server.settings.login_timeout:g} seconds"
            self.close_with(Error(code="login_timeout", message=message), "lost")

    # -- output --------------------------------------------------------------------------

    @property
    def who(self) -> str:
        return f"{self.session.name}@{self.peer}" if self.session.name else self.peer

    def send(self, event: ServerEvent) -> None:
        """Queue one event for this connection alone, in its session's format."""
        data = _text_bytes(event) if self.text else encode(event)
        if data is not None:
            self.queue(data)

    def queue(self, data: bytes) -> None:
        """Queue bytes to be written at the end of this event-loop turn.

        The bytes not yet taken by the peer (queued here plus the transport's buffer as of
        the last flush) are counted as they grow, so a client that stopped reading is cut
        off the moment it passes ``max_buffer``, even in the middle of a big fan-out.
        """
        if self.closing:
            return
        self.out.append(data)
        self.unsent += len(data)
        if self.unsent > self.server.settings.max_buffer:
            self._too_slow()
        elif not self.dirty:
            self.dirty = True
            self.server.mark_dirty(self)

    def flush(self) -> None:
        """Write everything queued in one call; cut the client off if it is too far behind."""
        self.dirty = False
        out = self.out
        if not out or self.transport is None:
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        transport = self.transport
        transport.write(data)
        self.unsent = transport.get_write_buffer_size()
        if self.unsent > self.server.settings.max_buffer:
            self._too_slow()

    def _too_slow(self) -> None:
        """Cut off a client whose unsent output passed the bound; nobody waits for it."""
        log.warning(
            "slow consumer %s: over %d bytes unsent", self.who, self.server.settings.max_buffer
        )
        self.out.clear()  # what it did not take is dropped with it; the error goes out last
        self.close_with(Error(code="slow_consumer", message="you are not reading"), "slow")

    def close_with(self, error: Error | None, reason: str) -> None:
        """End the session: tell its room, send ``error`` last, half-close, linger, close.

        The write side is closed first and later input discarded, so the final frame is not
        thrown away by a TCP reset; a peer that never closes is reset after a grace period.
        """
        if self.closing or self.transport is None:
            return
        self.closing = True
        if error is not None:
            log.info("closing %s with %s: %s", self.who, error.code, error.message)
        self._leave(reason)
        if self._timer is not None:
            self._timer.cancel()
        if error is not None:
            final = _text_bytes(error) if self.text else encode(error)
            if final:
                self.out.append(final)
        transport = self.transport
        if self.out:
            transport.write(b"".join(self.out))
            self.out.clear()
        if self.peer_eof or not transport.can_write_eof():
            transport.close()
        else:
            try:
                transport.write_eof()
            except OSError:  # the peer is already gone (asyncio raises, uvloop does not)
                transport.abort()
        self._timer = self.server.loop.call_later(
            self.server.settings.close_linger, transport.abort
        )

    def _leave(self, reason: str) -> None:
        if self.session.logged_in:
            log.info("leave %s (%s)", self.who, reason)
            if not self.server.shutting_down:
                self.server.deliver(self.relay.leave(self.session, reason))
            else:
                self.relay.leave(self.session, reason)


class ChatServer:
    """A running relay: the listening socket, its connections and the write batching."""

    def __init__(
        self, settings: ServerSettings, relay: Relay | None = None, store: Store | None = None
    ) -> None:
        self.settings = settings
        self.relay = relay or Relay(
            history=settings.history,
            rate_limit=settings.rate_limit,
            rate_burst=settings.rate_burst,
        )
        self.store: Store = store if store is not None else MemoryStore(settings.history)
        #: carries the relay's store intents out and keeps deliveries in order
        self.pipeline = StorePipeline(self.relay, self.store)
        self.loop = asyncio.get_running_loop()
        self.store.set_wakeup(self._store_wakeup)
        self.connections: set[Connection] = set()
        self.shutting_down = False
        self.closed = asyncio.Event()
        self.observers: list[Callable[[ServerEvent], None]] = []
        self._dirty: list[Connection] = []
        self._flush_pending = False
        #: deliveries caused while a fan-out runs (a recipient cut off as slow leaves)
        self._backlog: list[Delivery | Close] = []
        self._delivering = False
        self._last_flush = 0.0
        self._server: asyncio.base_events.Server | None = None
        self._heartbeat: asyncio.Task[None] | None = None

    async def start(self) -> tuple[str, int]:
        """Listen and return the address actually bound (``port=0`` picks a free one)."""
        self._server = await self.loop.create_server(
            lambda: Connection(self),
            self.settings.host,
            self.settings.port,
            reuse_address=True,
            backlog=1024,
        )
        self._heartbeat = self.loop.create_task(self._heartbeats())
        host, port = self._server.sockets[0].getsockname()[:2]
        return host, port

    @property
    def addresses(self) -> list[tuple[str, int]]:
        assert self._server is not None
        return [s.getsockname()[:2] for s in self._server.sockets]

    # -- fan-out ---------------------------------------------------------------------------

    def deliver(self, effects: Iterable[Effect]) -> None:
        """Carry the relay's effects out: intents to the store, deliveries to their targets.

        Each delivery's event is encoded once per format and queued to its targets.

        A fan-out can cut recipients off as slow consumers, and each one's ``leave`` is a
        new delivery: those are queued behind the current one and sent by the outermost
        call, so a room full of slow clients is cut off in a loop, not in a recursion as
        deep as the room is large (which raised RecursionError half-way).
        """
        deliveries = self.pipeline.run(effects)
        if self._delivering:
            self._backlog.extend(deliveries)
            return
        self._delivering = True
        try:
            self._fan_out(deliveries)
            while self._backlog:
                backlog, self._backlog = self._backlog, []
                self._fan_out(backlog)
        finally:
            self._delivering = False

    def _store_wakeup(self) -> None:
        """The store has answered (maybe on another thread): deliver in the loop."""
        self.loop.call_soon_threadsafe(self._store_answered)

    def _store_answered(self) -> None:
        self.deliver(())  # runs the pipeline, which takes the store's completions first

    def _fan_out(self, deliveries: Iterable[Delivery | Close]) -> None:
        for delivery in deliveries:
            if type(delivery) is Close:
                closing: Connection = delivery.session.link
                closing.close_with(delivery.error, delivery.reason)
                continue
            assert type(delivery) is Delivery
            event = delivery.event
            for observer in self.observers:
                observer(event)
            sender, echo = delivery.sender, delivery.echo
            json_bytes: bytes | None = None
            text_bytes: bytes | None = None
            for session in delivery.targets:
                conn: Connection = session.link
                if session is sender and echo is not None:
                    conn.send(echo)
                elif conn.text:
                    if text_bytes is None:
                        text_bytes = _text_bytes(event) or b""
                    if text_bytes:
                        conn.queue(text_bytes)
                else:
                    if json_bytes is None:
                        json_bytes = encode(event)
                    conn.queue(json_bytes)

    def mark_dirty(self, conn: Connection) -> None:
        """Remember ``conn`` has output and schedule one flush of every such connection.

        The flush runs at the end of this loop turn, or, when the last flush was less than
        ``flush_interval`` ago (the relay is busy), once that interval is over: under load
        each recipient then gets fewer, larger writes, and a quiet relay writes at once.
        """
        self._dirty.append(conn)
        if not self._flush_pending:
            self._flush_pending = True
            wait = self._last_flush + self.settings.flush_interval - self.loop.time()
            if wait > 0:
                self.loop.call_later(wait, self._flush)
            else:
                self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_pending = False
        self._last_flush = self.loop.time()
        dirty, self._dirty = self._dirty, []
        for conn in dirty:
            conn.flush()

    # -- heartbeats -------------------------------------------------------------------------

    async def _heartbeats(self) -> None:
        interval = self.settings.ping_interval
        if interval <= 0:
            return
        while True:
            await asyncio.sleep(interval / 3)
            self.check_heartbeats()

    def check_heartbeats(self) -> None:
        """Ping JSON clients idle for an interval; drop those silent for three."""
        interval = self.settings.ping_interval
        stamp = self.loop.time()
        for conn in list(self.connections):
            if conn.closing or conn.text or not conn.session.logged_in:
                continue
            idle = stamp - conn.last_seen
            if idle >= 3 * interval:
                log.info("timeout %s: silent for %.0f s", conn.who, idle)
                conn.close_with(None, "timeout")
            elif idle >= interval and stamp - conn.last_ping >= interval:
                conn.last_ping = stamp
                conn.queue(_PING)

    # -- shutdown ---------------------------------------------------------------------------

    async def shutdown(self) -> None:
        """Tell every client ``server_shutdown``, close them all, stop listening."""
        self.shutting_down = True
        if self._server is not None:
            self._server.close()
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        self._flush()
        error = Error(code="server_shutdown", message="the server is shutting down")
        for conn in list(self.connections):
            conn.close_with(error, "quit")
        deadline = self.loop.time() + self.settings.shutdown_grace
        while self.connections and self.loop.time() < deadline:
            self.closed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.closed.wait(), deadline - self.loop.time())
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()
        if self._server is not None:
            await self._server.wait_closed()


async def run_server(
    settings: ServerSettings,
    on_listening: Callable[[list[tuple[str, int]]], None] | None = None,
    setup: Callable[[ChatServer], Any] | None = None,
    on_store: Callable[[Store], None] | None = None,
) -> None:
    """Open the store, serve until SIGINT or SIGTERM, then shut down gracefully.

    Raises StoreError before listening when the store cannot be used.
    """
    raise_open_files_limit(settings.max_connections)
    store = open_store(settings.store, history=settings.history, retain=settings.retain)
    try:
        if on_store is not None:
            on_store(store)
        await _serve(settings, store, on_listening, setup)
    finally:
        store.close()


async def _serve(
    settings: ServerSettings,
    store: Store,
    on_listening: Callable[[list[tuple[str, int]]], None] | None,
    setup: Callable[[ChatServer], Any] | None,
) -> None:
    server = ChatServer(settings, store=store)
    if setup is not None:
        setup(server)
    recorder = _start_recording(server) if settings.record_dir is not None else None
    await server.start()
    # handle signals before announcing the address: whoever reads it may signal at once
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    if on_listening is not None:
        on_listening(server.addresses)
    try:
        await stop.wait()
    finally:
        log.info("shutting down: %d connections", len(server.connections))
        await server.shutdown()
        if recorder is not None:
            recorder.close()
            for path in recorder.paths:
                log.info("recorded %s", path)


#: TCP keepalive: probe after this many idle seconds, then every interval, this many times,
#: so a vanished peer (above all a text session, which is never pinged) is noticed in ~2 min
KEEPALIVE_IDLE = 60
KEEPALIVE_INTERVAL = 15
KEEPALIVE_COUNT = 4


def keep_alive(sock: socket.socket | None) -> None:
    """Turn TCP keepalive on for ``sock`` with the timings above, where the OS allows."""
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in (
            ("TCP_KEEPIDLE", KEEPALIVE_IDLE),
            ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL),
            ("TCP_KEEPCNT", KEEPALIVE_COUNT),
        ):
            option = getattr(socket, name, None)
            if option is not None:
                sock.setsockopt(socket.IPPROTO_TCP, option, value)
    except OSError as exc:  # e.g. a socket already reset by the peer
        log.debug("no keepalive on %s: %s", sock, exc)


def _start_recording(server: ChatServer) -> ServerRecorder:
    """Record every room's events to transcripts; a write failure stops recording, loudly."""
    settings = server.settings
    assert settings.record_dir is not None
    recorder = ServerRecorder(settings.record_dir, host=f"{settings.host}:{settings.port}")

    def record(event: ServerEvent) -> None:
        try:
            recorder.write(event)
        except TranscriptError as exc:
            log.error("recording stopped: %s", exc)
            server.observers.remove(record)

    server.observers.append(record)
    return recorder
