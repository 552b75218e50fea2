"""The asyncio TCP adapter around the sans-I/O hub: accept, read, write, timers, shutdown.

Everything a connection means lives in ``chatcli.core.connection`` (framing, modes,
timeouts, the close sequence) and ``chatcli.core.hub`` (the relay and the fan-out). This
module only moves bytes: each connection is an ``asyncio.Protocol`` (no stream objects on
the hot path) that feeds what it reads to the hub, writes what its core has to send,
performs the shutdown the core asks for and keeps one timer armed at the core's next
deadline. Output is written per the hub's coalescing policy (at the end of the loop turn
when idle, within ``flush_interval`` when busy), so under load every recipient gets fewer,
larger writes. The transport's write buffer feeds the core's slow-consumer bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import math
import signal
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

from chatcli.core.connection import LineFraming, ServerConnection, Shutdown
from chatcli.core.hub import Hub
from chatcli.core.protocol import ServerEvent
from chatcli.core.relay import Relay
from chatcli.errors import TranscriptError
from chatcli.runtime import favour_writer_thread, raise_open_files_limit
from chatcli.settings import ServerSettings
from chatcli.store import open_store
from chatcli.store.base import Store
from chatcli.store.sqlite import SQLiteStore
from chatcli.tls import server_context
from chatcli.transcript import ServerRecorder
from chatcli.transports.tls_listener import TlsListener

if TYPE_CHECKING:
    from chatcli.transports.web import WebListener

__all__ = ["ChatServer", "Connection", "keep_alive", "raise_open_files_limit", "run_server"]

log = logging.getLogger("chatcli.server")

#: TCP keepalive: probe after this many idle seconds, then every interval, this many times,
#: so a vanished peer (above all a text session, which is never pinged) is noticed in ~2 min
KEEPALIVE_IDLE = 60
KEEPALIVE_INTERVAL = 15
KEEPALIVE_COUNT = 4


class Connection(asyncio.Protocol):
    """One TCP connection: moves bytes between its transport and its ``ServerConnection``."""

    __slots__ = ("core", "deadline", "server", "transport")

    def __init__(self, server: ChatServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.core: ServerConnection | None = None
        #: the deadline this connection's live entry in the server's timer heap is for
        self.deadline: float | None = None

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        peer_name = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        address = peer[0] if isinstance(peer, tuple) else None
        keep_alive(transport.get_extra_info("socket"))
        server = self.server
        self.core = core = server.hub.open(
            LineFraming(server.settings.max_frame), peer_name, link=self, address=address
        )
        self.write_out(core)  # the welcome goes at once
        server.settle(self)

    def data_received(self, data: bytes) -> None:
        core = self.core
        assert core is not None
        self.server.hub.receive_data(core, data)
        self.server.settle(self)

    def eof_received(self) -> bool:
        core = self.core
        assert core is not None
        self.server.hub.receive_eof(core)
        self.server.settle(self)
        # the core decides when the transport closes; a TLS transport closes after the
        # peer's close_notify whatever is returned (and warns about True)
        return self.server.tls is None

    def connection_lost(self, exc: Exception | None) -> None:
        self.deadline = None  # its entry in the timer heap is stale now
        server = self.server
        if self.core is not None:
            server.hub.connection_lost(self.core)
        server.settle(None)
        server.closed.set()

    # -- output and timers ----------------------------------------------------------------

    def write_out(self, core: ServerConnection) -> None:
        """Write everything the core has queued in one call; report the transport's backlog."""
        data = core.bytes_to_send()
        transport = self.transport
        if data and transport is not None:
            transport.write(data)
            backlog = transport.get_write_buffer_size()
            if backlog:  # the core counts nothing unsent once it handed its bytes over
                core.buffered(backlog)

    def shut(self, core: ServerConnection) -> None:
        """Write what is left and perform the shutdown the core asks for."""
        self.write_out(core)
        action = core.shutdown_to_perform()
        transport = self.transport
        if action is None or transport is None:
            return
        if action is Shutdown.ABORT:
            transport.abort()
        elif action is Shutdown.CLOSE or not transport.can_write_eof():
            transport.close()
        else:
            try:
                transport.write_eof()
            except OSError:  # the peer is already gone (asyncio raises, uvloop does not)
                transport.abort()

    def arm(self, core: ServerConnection) -> None:
        """Keep a timer armed at (or before) the core's next deadline."""
        deadline = core.next_deadline()
        if deadline is None:
            return
        if self.deadline is not None and self.deadline <= deadline:
            return  # fires early; the core does nothing then and is asked again
        self.deadline = deadline
        self.server.timers.add(deadline, self)

    def fire(self, now: float) -> None:
        """The deadline this connection was armed for has come."""
        self.deadline = None
        core = self.core
        if core is not None:
            self.server.hub.handle_timer(core, now)
            self.server.settle(self)


class TimerHeap:
    """One loop timer for every connection: a heap of (deadline, sequence, connection).

    A loop timer per connection cost about half a kilobyte each; a heap entry is a tuple.
    Re-arming earlier leaves the later entry behind, skipped when it comes up (the
    connection's ``deadline`` no longer matches); activity never re-arms, because the
    core's deadlines only move later with it.
    """

    #: how early a deadline may be acted on: uvloop's timers and clock move in whole ms
    RESOLUTION = 0.001

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._heap: list[tuple[float, int, Connection]] = []
        self._sequence = itertools.count()
        self._handle: asyncio.TimerHandle | None = None
        self._when = math.inf

    def add(self, deadline: float, conn: Connection) -> None:
        heapq.heappush(self._heap, (deadline, next(self._sequence), conn))
        if deadline < self._when:
            self._schedule(deadline)

    def _schedule(self, when: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._when = when
        self._handle = self.loop.call_at(when, self._run)

    def _run(self) -> None:
        self._handle, self._when = None, math.inf
        heap = self._heap
        now = self.loop.time()
        while heap and heap[0][0] <= now + self.RESOLUTION:
            deadline, _, conn = heapq.heappop(heap)
            if conn.deadline == deadline:  # the connection's live entry, not a stale one
                conn.fire(max(now, deadline))
        if heap:
            self._schedule(heap[0][0])

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._heap.clear()


class ChatServer:
    """A running relay: the listening socket, its connections and the write scheduling."""

    def __init__(
        self, settings: ServerSettings, relay: Relay | None = None, store: Store | None = None
    ) -> None:
        self.settings = settings
        self.loop = asyncio.get_running_loop()
        self.hub = Hub(settings, relay, clock=self.loop.time, store=store)
        self.relay = self.hub.relay
        self.store = self.hub.store
        self.store.set_wakeup(self._store_wakeup)
        self.observers: list[Callable[[ServerEvent], None]] = self.hub.observers
        self.closed = asyncio.Event()
        self.timers = TimerHeap(self.loop)
        self._flush_handle: asyncio.Handle | None = None
        #: whether the pending flush runs at the end of this loop turn (not on a timer)
        self._flush_soon = False
        self._server: asyncio.base_events.Server | TlsListener | None = None
        #: the port speaks TLS only when the settings name a certificate
        self.tls = _tls_context(settings)
        if self.tls is not None:
            self.relay.features = (*self.relay.features, "tls")

    @property
    def connections(self) -> set[ServerConnection]:
        """The connections open now (their cores)."""
        return self.hub.connections

    @property
    def shutting_down(self) -> bool:
        return self.hub.shutting_down

    async def start(self) -> tuple[str, int]:
        """Listen and return the address actually bound (``port=0`` picks a free one)."""
        if self.tls is not None:
            self._server = await _listen_tls(self, self.tls)
            host, port = self._server.sockets[0].getsockname()[:2]
            return host, port
        self._server = await self.loop.create_server(
            lambda: Connection(self),
            self.settings.host,
            self.settings.port,
            reuse_address=True,
            backlog=1024,
        )
        host, port = self._server.sockets[0].getsockname()[:2]
        return host, port

    @property
    def addresses(self) -> list[tuple[str, int]]:
        assert self._server is not None
        return [s.getsockname()[:2] for s in self._server.sockets]

    # -- after every hub call ----------------------------------------------------------------

    def settle(self, conn: Connection | None) -> None:
        """Carry out what the hub's last call asked for: closes now, a flush soon, a timer."""
        hub = self.hub
        if hub.urgent:
            self._shut_urgent()
        if hub.dirty:
            handle = self._flush_handle
            if handle is None:
                wait = hub.flush_delay(time.monotonic())
                self._flush_soon = wait <= 0
                if self._flush_soon:
                    self._flush_handle = self.loop.call_soon(self._flush)
                else:
                    self._flush_handle = self.loop.call_later(wait, self._flush)
            elif not self._flush_soon and hub.flush_delay(time.monotonic()) <= 0:
                handle.cancel()  # the batch filled up before the interval was over
                self._flush_soon = True
                self._flush_handle = self.loop.call_soon(self._flush)
        if conn is not None and conn.core is not None:
            conn.arm(conn.core)

    def _store_wakeup(self) -> None:
        """The store answered, maybe on its own thread: deliver in the loop."""
        self.loop.call_soon_threadsafe(self._store_answered)

    def _store_answered(self) -> None:
        self.hub.store_answered()
        self.settle(None)

    def _shut_urgent(self) -> None:
        hub = self.hub
        while hub.urgent:  # a shutdown can cause more (nobody else is cut off, but be sure)
            for core in hub.take_urgent():
                link: Connection = core.link
                link.shut(core)
                link.arm(core)

    def _flush(self) -> None:
        """Write every connection with queued output, one write each."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()  # harmless when it is the handle running this
            self._flush_handle = None
        # time.monotonic, not loop.time: uvloop's clock moves in whole milliseconds
        for core in self.hub.take_dirty(time.monotonic()):
            # Connection.write_out inlined: this loop runs once per recipient and flush
            data = core.bytes_to_send()
            transport = core.link.transport
            if data and transport is not None:
                transport.write(data)
                backlog = transport.get_write_buffer_size()
                if backlog:
                    core.buffered(backlog)
        self.settle(None)

    # -- shutdown ---------------------------------------------------------------------------

    async def shutdown(self) -> None:
        """Tell every client ``server_shutdown``, close them all, stop listening."""
        if self._server is not None:
            self._server.close()
        self._flush()
        self.hub.shutdown()
        self.settle(None)
        deadline = self.loop.time() + self.settings.shutdown_grace
        while self.hub.connections and self.loop.time() < deadline:
            self.closed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.closed.wait(), deadline - self.loop.time())
        for core in list(self.hub.connections):
            link: Connection = core.link
            if link.transport is not None:
                link.transport.abort()
        self.timers.cancel()
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
    if settings.cluster is not None:
        await _serve_cluster(settings, on_listening, setup, on_store)
        return
    store = open_store(settings.store, history=settings.history, retain=settings.retain)
    if isinstance(store, SQLiteStore):
        favour_writer_thread()
    try:
        if on_store is not None:
            on_store(store)
        await _serve(settings, store, on_listening, setup)
    finally:
        store.close()


async def _serve_cluster(
    settings: ServerSettings,
    on_listening: Callable[[list[tuple[str, int]]], None] | None,
    setup: Callable[[ChatServer], Any] | None,
    on_store: Callable[[Store], None] | None,
) -> None:
    """``serve --cluster``: a node sharing its rooms through NATS (chatcli.cluster)."""
    from chatcli.cluster.node import ClusterNode

    assert settings.node is not None
    node = ClusterNode(
        settings.cluster, settings.node, wait=settings.nats_wait, replicas=settings.nats_replicas
    )
    await node.connect()
    try:
        store = await node.open_store(retain=settings.retain)
        if on_store is not None:
            on_store(store)

        async def joined(server: ChatServer) -> None:
            await node.start(server)

        await _serve(settings, store, on_listening, setup, joined)
    finally:
        await node.stop()


async def _serve(
    settings: ServerSettings,
    store: Store,
    on_listening: Callable[[list[tuple[str, int]]], None] | None,
    setup: Callable[[ChatServer], Any] | None,
    before_listening: Callable[[ChatServer], Awaitable[None]] | None = None,
) -> None:
    server = ChatServer(settings, store=store)
    if setup is not None:
        setup(server)
    if before_listening is not None:
        await before_listening(server)
    recorder = _start_recording(server) if settings.record_dir is not None else None
    await server.start()
    web = await _start_web(server) if settings.web is not None else None
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
        if web is not None:
            web.close()
        await server.shutdown()
        if web is not None:
            await web.wait_closed(settings.shutdown_grace)
        if recorder is not None:
            recorder.close()
            for path in recorder.paths:
                log.info("recorded %s", path)


async def _start_web(server: ChatServer) -> WebListener:
    """Open the web port (``serve --web``) over the same hub: the page and ``/ws``.

    With the server's TLS certificate (``--tls-cert``) it serves HTTPS and WSS too
    (spec 1.1, section 5).
    """
    from chatcli.transports.web import start_web

    settings = server.settings
    assert settings.web is not None
    host, port = settings.web
    return await start_web(server, host, port, origins=settings.web_origins, ssl_context=server.tls)


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


def _tls_context(settings: ServerSettings) -> ssl.SSLContext | None:
    """The server's TLS context when ``--tls-cert``/``--tls-key`` are set (TlsError if bad)."""
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    return server_context(settings.tls_cert, settings.tls_key)


async def _listen_tls(server: ChatServer, context: ssl.SSLContext) -> TlsListener:
    """Listen for TLS connections: the handshake has the login timeout, a failed one is
    logged once (see :mod:`chatcli.transports.tls_listener`)."""
    settings = server.settings
    return await TlsListener.open(
        settings.host,
        settings.port,
        lambda: Connection(server),
        context,
        handshake_timeout=settings.login_timeout,
        # the core resets a closing peer after close_linger; TLS's close_notify wait, too
        shutdown_timeout=max(settings.close_linger, 0.1),
        max_pending=settings.max_connections,
    )


def _start_recording(server: ChatServer) -> ServerRecorder:
    """Record every room's events to transcripts; a write failure stops recording, loudly."""
    settings = server.settings
    assert settings.record_dir is not None
    recorder = ServerRecorder(
        settings.record_dir,
        host=f"{settings.host}:{settings.port}",
        record_dms=settings.record_dms,
    )

    def record(event: ServerEvent) -> None:
        try:
            recorder.write(event)
        except TranscriptError as exc:
            log.error("recording stopped: %s", exc)
            server.observers.remove(record)

    server.observers.append(record)
    return recorder
