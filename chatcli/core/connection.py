"""One client connection of the relay as a sans-I/O state machine.

``ServerConnection`` turns the bytes a client sent into client events and queues the bytes
it must be sent, with the login timeout, the heartbeat, JSON/text detection, the output
bound (slow consumer) and the close sequence as explicit states driven by an injected
clock. It does no I/O: an adapter (TCP today; TLS or WebSocket beside it) feeds it with
``receive_data``/``receive_eof``/``handle_timer``, writes what ``data_to_send`` returns,
performs the ``Shutdown`` that ``shutdown_to_perform`` asks for and arms one timer at
``next_deadline``. What the events mean is the relay's business; the hub
(``chatcli.core.hub``) passes them on and fans the answers out.

How bytes become frames is a ``Framing`` strategy. TCP uses ``LineFraming`` (NDJSON, one
frame per ``\\n``-terminated line, ``Wire`` output ending in ``\\n``). A WebSocket adapter
will plug in a framing whose ``feed`` receives one whole text message per call (the
WebSocket library has already reassembled it) and returns it as the single frame, whose
``end`` returns nothing, and whose ``Wire`` objects have an empty terminator, so that each
queued chunk is one WebSocket message (``data_to_send`` returns the chunks separately for
exactly that reason). Text mode over WebSocket is a choice of that framing: give it no
``text_wire`` and every session is JSON. The WebSocket adapter maps the peer's close frame
to ``receive_eof``, ``Shutdown.HALF_CLOSE`` to sending its own close frame (then waiting
for the peer's, as a TCP half-close waits for FIN), ``CLOSE`` to closing the socket and
``ABORT`` to dropping it; timers and the hub need no change.

The lifecycle is the table ``TRANSITIONS`` (state, input) -> state, and every change of
state goes through it, so an impossible transition raises instead of going unnoticed.
"""

from __future__ import annotations

import enum
import logging
import re
from collections.abc import Callable, Iterator
from typing import Any, Final, Protocol

from chatcli.core.protocol import (
    PASS_TAKEN,
    ClientEvent,
    Error,
    LineFramer,
    Ping,
    ServerEvent,
    ServerPasswordLine,
    decode_client_frame,
    encode,
    format_text_event,
    parse_text_line,
)
from chatcli.core.relay import FATAL_CODES, Session, error_event
from chatcli.errors import FrameTooLarge, ProtocolError
from chatcli.settings import ServerSettings

__all__ = [
    "TRANSITIONS",
    "ConnectionOwner",
    "Framing",
    "Input",
    "LineFraming",
    "OutputMeter",
    "ServerConnection",
    "Shutdown",
    "State",
    "Wire",
]

log = logging.getLogger("chatcli.server")

#: how many refusals per connection are logged before the rest are only counted
LOGGED_REFUSALS: Final = 3
#: flood-control tokens a text-mode line answered here costs (help, usage, unknown
#: command): the relay's ACTION_COSTS cover everything it handles itself
LOCAL_REPLY_COST: Final = 1.0
#: leave reason when a peer closes without saying bye, by session mode (text or not)
_EOF_REASON: Final = {True: "quit", False: "lost"}
#: a UTF-8 byte order mark some editors and Windows tools put before the first line
_BOM: Final = b"\xef\xbb\xbf"
#: telnet commands (RFC 854): IAC with an option verb and its option, a subnegotiation up
#: to IAC SE, any other two-byte command; PuTTY and telnet send them before anything typed
_TELNET_RE: Final = re.compile(rb"\xff(?:[\xfb-\xfe].?|\xfa.*?(?:\xff\xf0|$)|.?)", re.DOTALL)


def strip_telnet(frame: bytes) -> bytes:
    """``frame`` without telnet negotiation bytes (a text session never needs them)."""
    return _TELNET_RE.sub(b"", frame) if b"\xff" in frame else frame


class OutputMeter:
    """Unsent output across every connection of one relay, against ``--max-output-total``.

    Each open connection adds what it has queued or left in its transport's buffer, as
    that changes; a closing one stops counting (its linger bounds how long its bytes
    live). Past ``limit`` (0: none) the owner cuts the largest consumers first.
    """

    __slots__ = ("limit", "total")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.total = 0

    @property
    def over(self) -> bool:
        """True when the unsent output of all connections passed the limit."""
        return 0 < self.limit < self.total


class State(enum.Enum):
    """Where a connection is in its life."""

    #: welcomed, not logged in yet: the login timeout runs
    HANDSHAKE = "handshake"
    #: logged in: JSON sessions are pinged when idle and dropped when silent
    OPEN = "open"
    #: our side is done: last frames queued, write side shut, input discarded, linger runs
    CLOSING = "closing"
    #: the transport is gone (or must be reset); nothing more happens
    CLOSED = "closed"


class Input(enum.Enum):
    """What can move a connection from one state to another."""

    LOGIN = "login"
    #: our side ends the session (bye, error, timeout, slow consumer, peer EOF, shutdown)
    CLOSE = "close"
    #: the peer's EOF while we are already closing: close the transport now (the linger
    #: still bounds how long a peer that does not read can keep it)
    PEER_EOF = "peer_eof"
    #: the linger period is over and the peer still has not gone: reset
    LINGER_EXPIRED = "linger_expired"
    #: the adapter reports the transport lost
    LOST = "lost"


#: the connection lifecycle as data: (state, input) -> next state; anything else is a bug
TRANSITIONS: Final[dict[tuple[State, Input], State]] = {
    (State.HANDSHAKE, Input.LOGIN): State.OPEN,
    (State.HANDSHAKE, Input.CLOSE): State.CLOSING,
    (State.OPEN, Input.CLOSE): State.CLOSING,
    (State.CLOSING, Input.PEER_EOF): State.CLOSING,
    (State.CLOSING, Input.LINGER_EXPIRED): State.CLOSED,
    (State.HANDSHAKE, Input.LOST): State.CLOSED,
    (State.OPEN, Input.LOST): State.CLOSED,
    (State.CLOSING, Input.LOST): State.CLOSED,
    (State.CLOSED, Input.LOST): State.CLOSED,
}


class Shutdown(enum.Enum):
    """What the adapter must do to its transport once it has written ``data_to_send``."""

    #: shut the write side (TCP FIN) and keep reading until the peer goes; ``CLOSE`` when
    #: the transport cannot half-close
    HALF_CLOSE = "half_close"
    #: close gracefully once the written data has gone out
    CLOSE = "close"
    #: reset now, whatever is still buffered
    ABORT = "abort"


class Wire:
    """How events are put on one transport in one session mode, as bytes shared by many.

    ``terminator`` ends every frame (``\\n`` for line framing, nothing for a transport
    that keeps message boundaries itself); ``text`` selects the human-readable lines of an
    nc/telnet session instead of JSON.
    """

    __slots__ = ("terminator", "text")

    def __init__(self, *, text: bool, terminator: bytes) -> None:
        self.text = text
        self.terminator = terminator

    def encode(self, event: ServerEvent) -> bytes | None:
        """The frame for ``event``, or None when this mode shows nothing for it."""
        if self.text:
            line = format_text_event(event)
            return None if line is None else self.line(line)
        data = encode(event)  # ends in b"\n" already
        return data if self.terminator == b"\n" else data[:-1] + self.terminator

    def line(self, text: str) -> bytes:
        """A locally produced line (help, usage hint) for a text session."""
        return text.encode() + self.terminator

    def __repr__(self) -> str:
        return f"Wire(text={self.text}, terminator={self.terminator!r})"


class Framing(Protocol):
    """How one transport turns received bytes into frames and which wires it writes."""

    #: the wire of JSON sessions (and of sessions whose mode is not known yet)
    json_wire: Wire
    #: the wire of text sessions, or None when this transport has no text mode
    text_wire: Wire | None

    def feed(self, data: bytes) -> list[bytes]:
        """Frames completed by ``data``; raise FrameTooLarge (carrying the frames before)."""

    def end(self) -> list[bytes]:
        """At the peer's end of input: what is left that still counts as a frame."""


JSON_LINES: Final = Wire(text=False, terminator=b"\n")
TEXT_LINES: Final = Wire(text=True, terminator=b"\n")


class LineFraming(LineFramer):
    """NDJSON over a byte stream (TCP, TLS): frames are lines, at most ``max_frame`` long.

    ``feed`` is the protocol's ``LineFramer.feed`` itself, with no extra call on the hot
    path.
    """

    __slots__ = ()

    json_wire: Wire = JSON_LINES
    text_wire: Wire | None = TEXT_LINES

    def end(self) -> list[bytes]:
        # `printf 'login x\nhi' | nc`: a last line cut short by the end of input still counts
        return self.feed(b"\n") if self.pending else []


class ConnectionOwner(Protocol):
    """Who hears about a connection's output and end (the hub); called on changes only."""

    def output_ready(self, conn: ServerConnection) -> None:
        """``conn`` went from nothing to send to something: flush it (coalesced)."""

    def must_flush(self, conn: ServerConnection) -> None:
        """``conn`` must be written and shut down now (its close sequence started)."""

    def closed(self, conn: ServerConnection, reason: str) -> None:
        """``conn``'s session ended with leave ``reason``: the relay must be told."""

    def reply(self, conn: ServerConnection, event: ServerEvent) -> None:
        """Send ``event`` to ``conn`` alone, in line behind what the relay still owes it.

        A refusal must not overtake the acknowledgement of a message sent before it,
        which may be waiting for the store.
        """

    def peer_done(self, conn: ServerConnection, reason: str) -> None:
        """The peer's input ended: close ``conn`` (leave ``reason``) once what it is still
        owed (acknowledgements the store has not given yet) is out."""

    def reply_bytes(self, conn: ServerConnection, data: bytes) -> None:
        """Queue ``data`` (already in ``conn``'s format) in line, as ``reply`` does."""

    def output_over_total(self, conn: ServerConnection) -> None:
        """The relay's unsent output across all connections passed ``--max-output-total``
        (``conn`` queued last): cut the largest consumers until it fits again."""


class _NoOwner:
    """The owner of a connection nobody watches (tests drive ``data_to_send`` directly)."""

    def output_ready(self, conn: ServerConnection) -> None:
        pass

    def must_flush(self, conn: ServerConnection) -> None:
        pass

    def closed(self, conn: ServerConnection, reason: str) -> None:
        pass

    def reply(self, conn: ServerConnection, event: ServerEvent) -> None:
        conn.send(event)

    def peer_done(self, conn: ServerConnection, reason: str) -> None:
        conn.close(None, reason)

    def reply_bytes(self, conn: ServerConnection, data: bytes) -> None:
        conn.queue(data)

    def output_over_total(self, conn: ServerConnection) -> None:
        pass


class ServerConnection:
    """The relay's side of one client connection, without I/O.

    ``open_session`` creates the relay session for it (``Relay.open``); ``clock`` is the
    monotonic clock every deadline is measured on; ``link`` is the adapter's own handle.
    """

    __slots__ = (
        "_deadline_linger",
        "_deadline_login",
        "_dirty",
        "_eof_handed",
        "_feed",
        "_frames",
        "_framing",
        "_input_error",
        "_max_buffer",
        "_meter",
        "_out",
        "_peer_eof_pending",
        "_server_password",
        "_shutdown",
        "_unsent",
        "clock",
        "closing",
        "last_ping",
        "last_seen",
        "link",
        "owner",
        "peer",
        "peer_eof",
        "refusals",
        "session",
        "settings",
        "state",
        "text",
        "wire",
    )

    def __init__(
        self,
        open_session: Callable[[ServerConnection], Session],
        settings: ServerSettings,
        *,
        framing: Framing,
        clock: Callable[[], float],
        peer: str = "?",
        owner: ConnectionOwner | None = None,
        link: Any = None,
        meter: OutputMeter | None = None,
    ) -> None:
        self.settings = settings
        #: where this connection's unsent bytes are added up with everyone's (None: nowhere)
        self._meter = meter
        self.clock = clock
        self.peer = peer
        self.owner: ConnectionOwner = owner if owner is not None else _NoOwner()
        self.link = link
        self.state = State.HANDSHAKE
        #: True once our side has ended the session (CLOSING or CLOSED): output is dropped
        self.closing = False
        self._max_buffer = settings.max_buffer
        #: None until the first non-blank frame decides: True for an nc/telnet text session
        self.text: bool | None = None
        self.wire: Wire = framing.json_wire
        self.refusals = 0
        self.peer_eof = False
        stamp = clock()
        self.last_seen = stamp
        self.last_ping = stamp
        self._framing = framing
        self._feed = framing.feed
        self._out: list[bytes] = []
        #: bytes queued or buffered by the transport but not yet taken by the peer
        self._unsent = 0
        self._dirty = False
        #: frames received and not yet turned into events
        self._frames: list[bytes] | None = None
        self._input_error: FrameTooLarge | None = None
        self._peer_eof_pending = False
        #: the peer's EOF was handed to the owner (which closes once the store caught up)
        self._eof_handed = False
        self._shutdown: Shutdown | None = None
        #: a text session's ``pass`` line, carried by the hello its ``login`` line makes
        self._server_password: str | None = None
        self._deadline_login = stamp + settings.login_timeout
        self._deadline_linger = 0.0
        self.session: Session = open_session(self)

    # -- state --------------------------------------------------------------------------

    def _move(self, event: Input) -> None:
        try:
            state = self.state = TRANSITIONS[self.state, event]
        except KeyError:
            raise RuntimeError(f"{self.state.name} connection cannot take {event.name}") from None
        self.closing = state is State.CLOSING or state is State.CLOSED

    @property
    def who(self) -> str:
        """How logs name this connection: ``name@peer`` once logged in."""
        name = self.session.name
        return f"{name}@{self.peer}" if name else self.peer

    # -- input --------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Take bytes from the peer; their frames come out of ``events_received``."""
        if self.closing:
            return  # a closing connection discards what still arrives
        try:
            frames = self._feed(data)
        except FrameTooLarge as exc:
            # the lines before the long one arrived intact: act on them, then close
            self._input_error, frames = exc, exc.frames
        if frames:
            # a sign of life is a frame (spec), not bytes trickled without ever ending one
            self.last_seen = self.clock()
            self._take(frames)

    def _take(self, frames: list[bytes]) -> None:
        if self._frames:
            self._frames.extend(frames)
        else:
            self._frames = frames

    def receive_eof(self) -> None:
        """The peer will send nothing more (TCP FIN)."""
        if self.closing:
            # the peer went while we were closing: close the transport now (the linger
            # still resets one that keeps it open by not reading)
            if self.state is State.CLOSING and not self.peer_eof:
                self.peer_eof = True
                self._move(Input.PEER_EOF)
                self._set_shutdown(Shutdown.CLOSE)
            return
        try:
            frames = self._framing.end()
        except FrameTooLarge as exc:
            self._input_error, frames = exc, exc.frames
        if frames:
            self.last_seen = self.clock()
            self._take(frames)
        self._peer_eof_pending = True

    def events_received(self) -> Iterator[ClientEvent]:
        """The client events in what was received, in order, for the hub to act on.

        Frames the connection answers itself (refusals, text-mode help) are answered as the
        iteration reaches them, so replies keep the order of the frames; the iteration
        stops once the connection closes. What ends the input (a frame too large, the
        peer's EOF) takes effect after the last event was handled.
        """
        frames = self._frames
        if frames is not None:
            self._frames = None
            for frame in frames:
                if self.closing:
                    break
                text = self.text
                if text is None:
                    if frame.startswith(_BOM):  # a BOM before a JSON hello keeps it JSON
                        frame = frame[3:]
                    frame = strip_telnet(frame)
                    if not frame or frame.isspace():
                        continue
                    text = self._choose_mode(frame)
                if text:
                    event = self._text_event(strip_telnet(frame))
                else:
                    try:
                        event = decode_client_frame(frame)
                    except ProtocolError as exc:
                        self.refuse(exc)
                        continue
                if event is not None:
                    yield event
        if self._input_error is not None:
            error, self._input_error = self._input_error, None
            self.close(error_event(error), "lost")
        if self._peer_eof_pending and not self._eof_handed:
            self._eof_handed = True
            self.owner.peer_done(self, _EOF_REASON[bool(self.text)])

    def _choose_mode(self, frame: bytes) -> bool:
        """The first non-blank frame decides: ``{`` starts JSON, anything else text."""
        text = self._framing.text_wire is not None and not frame.lstrip().startswith(b"{")
        self.text = text
        if text:
            assert self._framing.text_wire is not None
            self.wire = self._framing.text_wire
        return text

    def _text_event(self, frame: bytes) -> ClientEvent | None:
        try:
            # a login the store is still checking counts: the relay holds what follows it
            session = self.session
            logged_in = session.logged_in or session.claim is not None
            line = frame.decode("utf-8", "replace")
            parsed = parse_text_line(line, logged_in, self._server_password)
        except ProtocolError as exc:
            self.refuse(exc)
            return None
        if isinstance(parsed, ServerPasswordLine):  # kept for login, never echoed
            self._server_password = parsed.password
            parsed = PASS_TAKEN
        if isinstance(parsed, str):  # help or a usage hint, answered here, in line
            # a repeatable request like any other (spec 1.1, section 7): it costs a token
            if not self.session.bucket.take(LOCAL_REPLY_COST):
                self.refuse(ProtocolError("rate_limited", "slow down: request not taken"))
                return None
            self.owner.reply_bytes(self, self.wire.line(parsed))
            return None
        return parsed

    def logged_in(self) -> None:
        """The relay accepted this connection's login: heartbeats replace the login timer."""
        self._move(Input.LOGIN)
        log.info(
            "login %s as %s in %s%s",
            self.peer,
            self.session.name,
            self.session.room,
            " (text)" if self.text else "",
        )

    def refuse(self, exc: ProtocolError) -> None:
        """Answer a refused frame with its error; a fatal one ends the connection."""
        if exc.code in FATAL_CODES:
            self.close(error_event(exc), "lost")
            return
        self.refusals += 1
        if self.refusals <= LOGGED_REFUSALS:
            log.info("refused %s (%s): %s", self.who, exc.code, exc.message)
        elif self.refusals == LOGGED_REFUSALS + 1:
            log.info("refused %s again; further refusals are not logged", self.who)
        self.owner.reply(self, error_event(exc))

    # -- timers -------------------------------------------------------------------------

    def _ping_due(self) -> float:
        return max(self.last_seen, self.last_ping) + self.settings.ping_interval

    def _silent_after(self) -> float:
        return self.last_seen + 3 * self.settings.ping_interval

    def next_deadline(self) -> float | None:
        """When ``handle_timer`` must next be called (clock time), or None for never.

        Activity only moves a deadline later, so an adapter may keep a timer armed for an
        earlier deadline and call ``handle_timer`` then: it does nothing early.
        """
        state = self.state
        if state is State.HANDSHAKE:
            return self._deadline_login
        if state is State.OPEN:
            if self.text:
                idle = self.settings.text_idle
                return self.last_seen + idle if idle > 0 else None
            if self.settings.ping_interval <= 0:
                return None
            return min(self._ping_due(), self._silent_after())
        if state is State.CLOSING:
            return self._deadline_linger
        return None

    def handle_timer(self, now: float) -> None:
        """Act on every deadline that ``now`` has reached: login, heartbeat, linger."""
        state = self.state
        if state is State.HANDSHAKE:
            if now >= self._deadline_login:
                message = f"no login within {self.settings.login_timeout:g} seconds"
                self.close(Error(code="login_timeout", message=message), "lost")
        elif state is State.OPEN:
            if self.text:
                self._check_idle(now)
                return
            if self.settings.ping_interval <= 0:
                return
            if now >= self._silent_after():
                log.info("timeout %s: silent for %.0f s", self.who, now - self.last_seen)
                self.close(None, "timeout")
            elif now >= self._ping_due():
                self.last_ping = now
                self.send(Ping())
        elif state is State.CLOSING and now >= self._deadline_linger:
            self._move(Input.LINGER_EXPIRED)
            self._set_shutdown(Shutdown.ABORT)

    def _check_idle(self, now: float) -> None:
        """Close a text session silent for ``--text-idle`` seconds (it has no heartbeat)."""
        idle = self.settings.text_idle
        if idle > 0 and now >= self.last_seen + idle:
            log.info("timeout %s: idle for %.0f s", self.who, now - self.last_seen)
            self.queue(self.wire.line(f"-- idle for {idle:g} seconds: closing"))
            self.close(None, "timeout")

    # -- output -------------------------------------------------------------------------

    def _set_unsent(self, nbytes: int) -> None:
        """Change what this connection has unsent, keeping the relay-wide total right."""
        meter = self._meter
        if meter is not None:
            meter.total += nbytes - self._unsent
        self._unsent = nbytes

    def send(self, event: ServerEvent) -> None:
        """Queue one event for this connection alone, in its session's format."""
        data = self.wire.encode(event)
        if data is not None:
            self.queue(data)

    def queue(self, data: bytes) -> None:
        """Queue pre-encoded bytes (shared by every recipient of a fan-out).

        The bytes not yet taken by the peer (queued here plus the transport's buffer as of
        the last write) are counted as they grow, so a client that stopped reading is cut
        off the moment it passes ``max_buffer``, even in the middle of a big fan-out.
        """
        if self.closing:
            return
        self._out.append(data)
        size = len(data)
        self._unsent += size
        meter = self._meter
        if meter is not None:
            meter.total += size
        if self._unsent > self._max_buffer:
            self._too_slow()
        else:
            if not self._dirty:
                self._dirty = True
                self.owner.output_ready(self)
            if meter is not None and meter.over:
                self.owner.output_over_total(self)

    def data_to_send(self) -> list[bytes]:
        """Everything queued, as chunks (one frame each), and forget it: write it now.

        A byte stream writes ``b"".join(chunks)``; a message transport sends each chunk
        as one message.
        """
        self._dirty = False
        self._set_unsent(0)  # the adapter reports what its transport still holds (buffered)
        out = self._out
        if out:
            self._out = []
        return out

    def bytes_to_send(self) -> bytes:
        """``data_to_send`` for a byte stream: everything queued as one string of bytes.

        The write path of a stream transport (one write per flush and recipient), so it
        avoids building a list to hand out.
        """
        self._dirty = False
        self._set_unsent(0)
        out = self._out
        if not out:
            return b""
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        return data

    def buffered(self, nbytes: int) -> None:
        """The transport still holds ``nbytes`` unsent after a write: check the bound."""
        self._set_unsent(nbytes)
        if nbytes > self.settings.max_buffer and not self.closing:
            self._too_slow()

    def shutdown_to_perform(self) -> Shutdown | None:
        """What the adapter must do to its transport after writing; asked once."""
        action, self._shutdown = self._shutdown, None
        return action

    def _set_shutdown(self, action: Shutdown) -> None:
        self._shutdown = action
        self.owner.must_flush(self)

    def _too_slow(self, why: str | None = None) -> None:
        """Cut off a client whose unsent output passed the bound; nobody waits for it."""
        why = why or f"over {self.settings.max_buffer} bytes unsent"
        log.warning("slow consumer %s: %s", self.who, why)
        self._out.clear()  # what it did not take is dropped with it; the error goes out last
        self.close(Error(code="slow_consumer", message="you are not reading"), "slow")

    # -- closing ------------------------------------------------------------------------

    def close(self, error: Error | None, reason: str) -> None:
        """End the session: tell the owner (its room), send ``error`` last, shut down.

        The write side is shut first and later input discarded, so the final frame is not
        thrown away by a TCP reset; a peer that never closes is reset once ``close_linger``
        is over (``handle_timer``). ``reason`` is the leave reason the room is told.
        """
        if self.closing:
            return
        self._move(Input.CLOSE)
        self._set_unsent(0)  # a closing connection leaves the total: its linger bounds it
        self._meter = None
        if self._peer_eof_pending:  # the peer's EOF came with the input just acted on
            self._peer_eof_pending = False
            self.peer_eof = True
        if error is not None:
            log.info("closing %s with %s: %s", self.who, error.code, error.message)
        self.owner.closed(self, reason)
        if error is not None:
            final = self.wire.encode(error)
            if final:
                self._out.append(final)
        self._frames = None
        self._input_error = None
        self._deadline_linger = self.clock() + self.settings.close_linger
        self._set_shutdown(Shutdown.CLOSE if self.peer_eof else Shutdown.HALF_CLOSE)

    def turn_away(self, error: Error) -> None:
        """Refuse a connection the relay cannot take (``server_full``): send ``error`` and
        close once it is written, without the half-close linger, so a crowd of refused
        clients does not hold the descriptors the refusal was about."""
        self.close(error, "lost")
        if self.state is State.CLOSING:
            self._set_shutdown(Shutdown.CLOSE)

    def connection_lost(self) -> None:
        """The transport is gone; a session still open ends with leave ``lost``."""
        was_closing = self.closing
        self._move(Input.LOST)
        self._set_unsent(0)
        self._meter = None
        self._out.clear()
        self._shutdown = None
        if not was_closing:
            self.owner.closed(self, "lost")

    def cut_for_total(self) -> int:
        """Cut this connection off as a slow consumer because the relay's unsent output
        passed ``--max-output-total``; returns the unsent bytes that no longer count."""
        unsent = self._unsent
        self._too_slow(f"{unsent} bytes unsent when all clients' output passed the limit")
        return unsent

    @property
    def unsent(self) -> int:
        """Bytes queued or left in the transport's buffer that the peer has not taken."""
        return self._unsent

    def __repr__(self) -> str:
        return f"ServerConnection({self.who}, {self.state.name})"
