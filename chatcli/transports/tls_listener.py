"""Accepting TLS connections so that each failed handshake costs one log line and nothing else.

``loop.create_server(ssl=...)`` would do the handshakes, but both asyncio and uvloop
drop a failed one silently (the reason is shown only in the loop's debug mode), and a
server must be able to say "a plaintext client tried the TLS port". ``loop.start_tls``
on an accepted plain transport is racy on uvloop (it reads the ClientHello before the
TLS layer is in place). So this listener accepts on its own listening sockets and hands
each accepted socket to ``loop.connect_accepted_socket(ssl=...)``: the loop's own TLS
transport (uvloop's is compiled) after a handshake that either succeeds, and the
protocol sees ``connection_made`` as usual, or fails, and the listener logs one line
(:func:`chatcli.tls.server_failure`) and closes the socket. Nobody else notices.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Callable

from chatcli.tls import server_failure

__all__ = ["TlsListener"]

log = logging.getLogger("chatcli.server")

#: connections taken per wake-up of a listening socket (asyncio's own server takes its backlog)
ACCEPT_BATCH = 128
#: seconds accepting pauses after the system refused one (out of descriptors): as asyncio does
ACCEPT_PAUSE = 1.0


class TlsListener:
    """Listening sockets whose connections speak TLS; the subset of ``asyncio.Server`` used.

    Create it with :meth:`open`. ``factory`` makes the protocol of each connection (called
    before its handshake, told ``connection_made`` after it); a handshake gets
    ``handshake_timeout`` seconds; at most ``max_pending`` handshakes run at once, further
    connections are closed at once (and logged, once each).
    """

    def __init__(
        self,
        sockets: list[socket.socket],
        factory: Callable[[], asyncio.Protocol],
        context: ssl.SSLContext,
        *,
        handshake_timeout: float,
        shutdown_timeout: float,
        max_pending: int,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.sockets = sockets
        self.factory = factory
        self.context = context
        self.handshake_timeout = handshake_timeout
        self.shutdown_timeout = shutdown_timeout
        self.max_pending = max_pending
        self._pending: set[asyncio.Task[None]] = set()
        self._closed = False
        for sock in sockets:
            self.loop.add_reader(sock.fileno(), self._accept, sock)

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        factory: Callable[[], asyncio.Protocol],
        context: ssl.SSLContext,
        *,
        handshake_timeout: float,
        shutdown_timeout: float,
        max_pending: int,
        backlog: int = 1024,
    ) -> TlsListener:
        """Listen on every address ``host`` resolves to (as ``create_server`` does)."""
        sockets = await _listening_sockets(host, port, backlog)
        return cls(
            sockets,
            factory,
            context,
            handshake_timeout=handshake_timeout,
            shutdown_timeout=shutdown_timeout,
            max_pending=max_pending,
        )

    def _accept(self, listener: socket.socket) -> None:
        """The listening socket is readable: accept what is waiting, start each handshake."""
        for _ in range(ACCEPT_BATCH):
            try:
                conn, address = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:  # gone before it was accepted
                continue
            except OSError as exc:  # out of descriptors, most likely: pause, as asyncio does
                log.error("cannot accept connections for %g s: %s", ACCEPT_PAUSE, exc)
                self.loop.remove_reader(listener.fileno())
                self.loop.call_later(ACCEPT_PAUSE, self._resume, listener)
                return
            peer = _peer_name(address)
            if len(self._pending) >= self.max_pending:
                log.warning("refusing %s: %d TLS handshakes under way", peer, len(self._pending))
                conn.close()
                continue
            conn.setblocking(False)
            task = self.loop.create_task(self._handshake(conn, peer))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    def _resume(self, listener: socket.socket) -> None:
        if not self._closed:
            self.loop.add_reader(listener.fileno(), self._accept, listener)

    async def _handshake(self, conn: socket.socket, peer: str) -> None:
        """Hand ``conn`` to the loop's TLS transport; one log line if the handshake fails.

        The socket is the loop's from here on: on a failure (or a cancellation) its
        transport closes it (uvloop detaches ``conn`` then), so closing ``conn`` here as
        well could close a descriptor number already given to another connection.
        """
        try:
            await self.loop.connect_accepted_socket(
                self.factory,
                conn,
                ssl=self.context,
                ssl_handshake_timeout=self.handshake_timeout,
                ssl_shutdown_timeout=self.shutdown_timeout,
            )
        except (OSError, EOFError, TimeoutError) as exc:  # ssl.SSLError is an OSError
            why = server_failure(exc, self.handshake_timeout)
            log.info("TLS handshake failed from %s: %s", peer, why)

    def close(self) -> None:
        """Stop listening and abandon the handshakes under way (as ``Server.close``)."""
        if self._closed:
            return
        self._closed = True
        for sock in self.sockets:
            with contextlib.suppress(ValueError, OSError):  # ValueError: closed already
                self.loop.remove_reader(sock.fileno())
            sock.close()
        for task in self._pending:
            task.cancel()

    async def wait_closed(self) -> None:
        """Wait for the abandoned handshakes to be wound up."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)


async def _listening_sockets(host: str, port: int, backlog: int) -> list[socket.socket]:
    """Bound, listening, non-blocking sockets for every address of ``host`` (no duplicates)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    sockets: list[socket.socket] = []
    seen = set()
    try:
        for family, kind, proto, _, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                # as create_server: "::" does not also take the IPv4 addresses
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(backlog)
            sock.setblocking(False)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _peer_name(address: object) -> str:
    """``host:port`` of a peer, as the rest of the server logs it (``Connection``)."""
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return str(address)
