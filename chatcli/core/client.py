"""The client side of a chatcli connection, without any I/O (the websockets way).

:class:`ClientConnection` turns bytes from a server into typed events and the client's
events into bytes, and runs the client's half of the protocol on the way: the handshake
(``welcome``, then ``hello`` answered by ``ready`` or a refusal), answering the server's
pings, ignoring frame types it does not know (a newer server may send them) and turning
an error that ends the session into :class:`~chatcli.errors.ServerRefused`. An adapter
(chatcli.client for asyncio, bench's lean protocol, a test) only moves bytes:

    conn = ClientConnection()
    conn.send(Hello(name="alice"))
    transport.write(conn.data_to_send())
    ...
    conn.receive_data(chunk)          # or receive_eof() when the server closed
    for event in conn.events_received():
        ...
    transport.write(conn.data_to_send())  # pongs
    if conn.failure: raise conn.failure   # after the events that came before it

Framing is pluggable: the default splits the byte stream into lines with the shared
:class:`~chatcli.core.protocol.LineFramer`; a transport that delivers whole messages
(WebSocket) passes ``framing=None`` and calls :meth:`ClientConnection.receive_frame`.
"""

from __future__ import annotations

import enum
from typing import Final, Protocol

from chatcli.core.protocol import (
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
from chatcli.errors import ChatError, FrameTooLarge, ProtocolError, ServerRefused

try:  # FATAL_CODES is a protocol fact, moving from the relay to the protocol module
    from chatcli.core.protocol import FATAL_CODES  # type: ignore[attr-defined,unused-ignore]
except ImportError:  # before that move: the relay still holds it
    from chatcli.core.relay import FATAL_CODES

__all__ = ["MAX_SERVER_FRAME", "ClientConnection", "ClientState", "Framing"]

#: longest line accepted from a server: a ``ready`` carries a room's whole history
#: (e.g. 50 messages of 4096 characters, each escaped up to 6 bytes), so be generous
MAX_SERVER_FRAME: Final = 64 * 1024 * 1024


class Framing(Protocol):
    """Turns a byte stream into frames; LineFramer is the one the protocol defines."""

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the complete frames they finish (may raise ChatError)."""
        ...


class ClientState(enum.Enum):
    """Where a connection is; it only ever moves down this list."""

    CONNECTED = "connected"  #: nothing sent yet (the server's welcome may arrive)
    LOGGING_IN = "logging in"  #: hello sent, waiting for ready or a refusal
    READY = "ready"  #: logged in: events flow both ways
    CLOSED = "closed"  #: ended; ``failure`` says why, unless the client closed it


class ClientConnection:
    """The protocol state of one client connection; see the module docstring.

    ``welcome`` and ``ready`` hold the handshake's frames once they arrived; they are
    not returned by :meth:`events_received` (a later ``ready``, after ``join``, is).
    """

    def __init__(self, framing: Framing | None = None, *, max_frame: int = MAX_SERVER_FRAME):
        self.framing: Framing | None = framing if framing is not None else LineFramer(max_frame)
        self.state = ClientState.CONNECTED
        self.welcome: Welcome | None = None
        self.ready: Ready | None = None
        #: why the connection ended (None while open, or when the client closed it)
        self.failure: ChatError | None = None
        #: the server closed the connection (receive_eof was called)
        self.eof = False
        self._events: list[ServerEvent] = []
        self._outgoing: list[bytes] = []

    # -- sending ---------------------------------------------------------------------

    def send(self, event: ClientEvent) -> None:
        """Queue ``event`` for :meth:`data_to_send`; a ``hello`` starts the login."""
        if self.state is ClientState.CLOSED:
            return  # nothing can be sent any more; the failure says why
        if isinstance(event, Hello) and self.state is ClientState.CONNECTED:
            self.state = ClientState.LOGGING_IN
        self._outgoing.append(encode(event))

    def data_to_send(self) -> bytes:
        """Everything queued for the server since the last call (b"" for nothing)."""
        if not self._outgoing:
            return b""
        data = b"".join(self._outgoing)
        self._outgoing.clear()
        return data

    def close(self) -> None:
        """The client ends the session: nothing more is sent or received."""
        self.state = ClientState.CLOSED

    # -- receiving -------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Bytes from the server: frame them and act on every complete frame."""
        if self.state is ClientState.CLOSED:
            return
        assert self.framing is not None, "a message transport calls receive_frame"
        try:
            frames = self.framing.feed(data)
        except FrameTooLarge as exc:
            self.receive_frames(exc.frames)
            self._fail(exc)
            return
        except ChatError as exc:
            self._fail(exc)
            return
        self.receive_frames(frames)

    def receive_frames(self, frames: list[bytes]) -> None:
        """Act on several complete frames, in order."""
        for frame in frames:
            if self.state is ClientState.CLOSED:
                return
            self.receive_frame(frame)

    def receive_frame(self, frame: bytes) -> None:
        """Act on one complete frame (a line without its newline, or one message)."""
        if self.state is ClientState.CLOSED:
            return
        try:
            event = decode_server_frame(frame)
        except ProtocolError:
            return  # unknown types and fields from a newer server are ignored
        self.receive_event(event)

    def receive_event(self, event: ServerEvent) -> None:
        """Act on one decoded event: the handshake, pings, refusals, or pass it on."""
        if isinstance(event, Ping):
            self.send(Pong())
            return
        if self.state is ClientState.LOGGING_IN or self.state is ClientState.CONNECTED:
            if isinstance(event, Welcome):
                self.welcome = event
                return
            if isinstance(event, Ready) and self.state is ClientState.LOGGING_IN:
                self.ready = event
                self.state = ClientState.READY
                return
            if isinstance(event, Error) and self.state is ClientState.LOGGING_IN:
                # any error before ready refuses the login (the server closes after it)
                self._fail(ServerRefused(event.code, event.message))
                return
        if isinstance(event, Error) and event.code in FATAL_CODES:
            self._fail(ServerRefused(event.code, event.message))
            return
        self._events.append(event)

    def receive_eof(self) -> None:
        """The server closed its side; ``failure`` stays None (the adapter words it)."""
        self.eof = True
        self.state = ClientState.CLOSED

    def events_received(self) -> list[ServerEvent]:
        """The events decoded since the last call, oldest first."""
        events = self._events
        self._events = []
        return events

    def _fail(self, exc: ChatError) -> None:
        self.failure = exc
        self.state = ClientState.CLOSED
