"""The relay's switchboard, without I/O: connections in, relay in the middle, fan-out out.

``Hub`` owns the ``Relay`` and every ``ServerConnection``. An adapter hands it what its
transports report (``open``, ``receive_data``, ``receive_eof``, ``handle_timer``,
``connection_lost``); the hub turns the connections' events into relay calls and routes
everything the relay returns through one method, ``_apply``, which encodes each event
once per wire and queues the same bytes to every target. The adapter then writes the
connections listed in ``dirty`` (when ``flush_delay`` says) and, at once, those in
``urgent`` (their close sequence started), and arms each connection's timer.

The relay's store intents go through a ``StorePipeline`` (``chatcli.store.pipeline``) in
``_apply``: with the memory store they are answered at once; with one that answers later
(SQLite's writer thread) the adapter calls ``store_answered`` when the store's wake-up
fires, and every delivery waits in line behind the intents produced before it. A
connection's own replies (refusals) and the close after its peer's EOF go through the
same line, so a client hears everything in the order it caused it.

Write coalescing is decided here, as data: a relay that flushed less than
``flush_interval`` ago is busy and gathers output until ``flush_batch`` events are
queued or one more interval has passed; an idle one writes at the end of the current
loop turn. Under load every recipient then gets
fewer, larger writes (the cost of a delivery is mostly the ``write`` system call), and a
quiet relay adds no delay.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from chatcli.core.connection import Framing, ServerConnection, State, Wire
from chatcli.core.protocol import ClientEvent, Error, Ready, ServerEvent
from chatcli.core.relay import Close, Delivery, Effect, Raw, Relay
from chatcli.errors import ProtocolError
from chatcli.settings import ServerSettings
from chatcli.store.base import Store
from chatcli.store.memory import MemoryStore
from chatcli.store.pipeline import StorePipeline

__all__ = ["Hub"]

log = logging.getLogger("chatcli.server")


class Hub:
    """Every connection of one relay and the fan-out between them; see the module doc."""

    def __init__(
        self,
        settings: ServerSettings,
        relay: Relay | None = None,
        *,
        clock: Callable[[], float],
        store: Store | None = None,
    ) -> None:
        self.settings = settings
        self.relay = relay or Relay(
            history=settings.history,
            rate_limit=settings.rate_limit,
            rate_burst=settings.rate_burst,
        )
        self.clock = clock
        self.store: Store = store if store is not None else MemoryStore(settings.history)
        # the boards the store kept: read once, before any connection (spec 1.1, 4); a
        # store written before boards existed starts every board empty
        boards = getattr(self.store, "boards", None)
        if boards is not None:
            self.relay.load_boards(boards())
        #: carries the relay's store intents out and keeps every delivery in order
        self.pipeline = StorePipeline(self.relay, self.store)
        self.connections: set[ServerConnection] = set()
        #: called with every event delivered (transcript recorders)
        self.observers: list[Callable[[ServerEvent], None]] = []
        #: connections with output queued, to be written at the next flush
        self.dirty: list[ServerConnection] = []
        #: connections to write and shut down now (their close sequence started)
        self.urgent: list[ServerConnection] = []
        self.shutting_down = False
        self._last_flush = float("-inf")
        #: events fanned out since the last flush
        self._gathered = 0
        #: deliveries caused while a fan-out runs (a recipient cut off as slow leaves)
        self._backlog: list[Delivery | Close | Raw] = []
        self._applying = False

    # -- what the adapter reports ---------------------------------------------------------

    def open(
        self, framing: Framing, peer: str, link: Any = None, address: str | None = None
    ) -> ServerConnection:
        """A new transport connection: welcome it, or refuse it when the relay is full.

        ``address`` is the peer's IP address (bans and per-address limits use it).
        """
        relay = self.relay
        conn = ServerConnection(
            lambda conn: relay.open(conn, address),
            self.settings,
            framing=framing,
            clock=self.clock,
            peer=peer,
            owner=self,
            link=link,
        )
        self.connections.add(conn)
        if len(self.connections) > self.settings.max_connections:
            log.warning("refusing %s: %d connections open", peer, len(self.connections))
            conn.close(Error(code="server_full", message="too many connections"), "lost")
            return conn
        log.info("connect %s", peer)
        conn.send(relay.welcome())
        self._apply(relay.connect(conn.session))
        return conn

    def store_answered(self) -> None:
        """The store's wake-up fired (an asynchronous store answered): deliver what waited."""
        self._apply(())

    def receive_data(self, conn: ServerConnection, data: bytes) -> None:
        """Bytes from ``conn``'s peer: act on the frames they complete."""
        conn.receive_data(data)
        self._pump(conn)

    def receive_eof(self, conn: ServerConnection) -> None:
        """``conn``'s peer sent its last byte: act on a last unfinished line, then close."""
        conn.receive_eof()
        self._pump(conn)

    def handle_timer(self, conn: ServerConnection, now: float) -> None:
        """``conn``'s deadline came: login timeout, heartbeat or linger."""
        conn.handle_timer(now)

    def connection_lost(self, conn: ServerConnection) -> None:
        """``conn``'s transport is gone."""
        conn.connection_lost()
        self.connections.discard(conn)

    def shutdown(self) -> None:
        """Tell every client ``server_shutdown`` and start closing them all."""
        self.shutting_down = True
        error = Error(code="server_shutdown", message="the server is shutting down")
        for conn in list(self.connections):
            conn.close(error, "quit")

    # -- write coalescing -----------------------------------------------------------------

    def flush_delay(self, now: float) -> float:
        """Seconds to wait before writing ``dirty``: none when idle, up to an interval when busy.

        Busy means the last flush was less than ``flush_interval`` ago. Output then
        gathers until ``flush_batch`` events have been fanned out or a whole interval has
        passed (not just what is left of it, which an event loop with millisecond timers
        rounds to nothing), whichever comes first: at moderate load each recipient gets
        one write per few messages instead of one per message, and no message waits
        longer than the interval. The adapter asks again after every call into the hub,
        so a batch that fills up while the timer runs is written at once.
        """
        if self._gathered >= self.settings.flush_batch:
            return 0.0
        interval = self.settings.flush_interval
        return interval if now - self._last_flush < interval else 0.0

    def take_dirty(self, now: float) -> list[ServerConnection]:
        """The connections to write now; ``now`` is remembered as the last flush."""
        self._last_flush = now
        self._gathered = 0
        dirty, self.dirty = self.dirty, []
        return dirty

    def take_urgent(self) -> list[ServerConnection]:
        """The connections to write and shut down at once."""
        urgent, self.urgent = self.urgent, []
        return urgent

    # -- ConnectionOwner ------------------------------------------------------------------

    def output_ready(self, conn: ServerConnection) -> None:
        self.dirty.append(conn)

    def must_flush(self, conn: ServerConnection) -> None:
        self.urgent.append(conn)

    def closed(self, conn: ServerConnection, reason: str) -> None:
        session = conn.session
        if session.logged_in:
            log.info("leave %s (%s)", conn.who, reason)
        # also for a session not logged in: it frees what a login under way holds
        deliveries = self.relay.leave(session, reason)
        if not self.shutting_down:
            self._apply(deliveries)

    def reply(self, conn: ServerConnection, event: ServerEvent) -> None:
        self._apply([Delivery((conn.session,), event)])

    def peer_done(self, conn: ServerConnection, reason: str) -> None:
        self._apply([Close(conn.session, reason)])

    def reply_bytes(self, conn: ServerConnection, data: bytes) -> None:
        self._apply([Raw(conn.session, data)])

    # -- events -----------------------------------------------------------------------------

    def _pump(self, conn: ServerConnection) -> None:
        try:
            for event in conn.events_received():
                self._act(conn, event)
        except Exception:
            # A bug must cost this one connection, never the relay or anyone else.
            log.exception("internal error handling %s; closing it", conn.who)
            conn.close(None, "lost")

    def _act(self, conn: ServerConnection, event: ClientEvent) -> None:
        """Hand one client event (from either mode) to the relay; deliver what it causes."""
        relay = self.relay
        try:
            effects = relay.handle(conn.session, event)
        except ProtocolError as exc:  # it carries the ref of the frame that caused it
            conn.refuse(exc)
            return
        self._apply(effects)
        if relay.audit:
            for record in relay.take_audit():
                log.info(
                    "%s by %s: %s%s%s",
                    record.action,
                    record.by,
                    record.name,
                    f" for {record.minutes} min" if record.minutes else "",
                    f" ({record.reason})" if record.reason else "",
                )

    def _apply(self, effects: Iterable[Effect]) -> None:
        """The one place relay output goes: intents to the store, deliveries to targets.

        Every ``Relay`` result (``handle``, ``leave``, ``connect``) comes through here. The
        pipeline submits the store intents and returns the deliveries (and closes) that
        may go now, in order; each is queued to its targets.

        A fan-out can cut recipients off as slow consumers, and each one's ``leave`` is a
        new delivery: those are queued behind the current one and sent by the outermost
        call, so a room full of slow clients is cut off in a loop, not in a recursion as
        deep as the room is large.
        """
        ready = self.pipeline.run(effects)
        if self._applying:
            self._backlog.extend(ready)
            return
        self._applying = True
        try:
            self._fan_out(ready)
            while self._backlog:
                backlog, self._backlog = self._backlog, []
                self._fan_out(backlog)
        finally:
            self._applying = False

    def _fan_out(self, deliveries: Iterable[Delivery | Close | Raw]) -> None:
        """Encode each event once per wire and queue the same bytes to every target."""
        observers = self.observers
        for delivery in deliveries:
            if type(delivery) is Close:
                closing: ServerConnection = delivery.session.link
                closing.close(delivery.error, delivery.reason)
                continue
            if type(delivery) is Raw:
                delivery.session.link.queue(delivery.data)
                continue
            assert type(delivery) is Delivery
            self._gathered += 1
            event = delivery.event
            if type(event) is Ready:  # a login completes when its ready goes out
                for session in delivery.targets:
                    if session.link.state is State.HANDSHAKE:
                        session.link.logged_in()
            for observer in observers:
                observer(event)
            sender, echo = delivery.sender, delivery.echo
            # the bytes for the wire seen last; other wires (text sessions) in a dict
            last: Wire | None = None
            data: bytes | None = None
            others: dict[Wire, bytes | None] | None = None
            for session in delivery.targets:
                conn: ServerConnection = session.link
                if session is sender and echo is not None:
                    conn.send(echo)
                    continue
                wire = conn.wire
                if wire is not last:
                    if last is not None:
                        if others is None:
                            others = {}
                        others[last] = data
                    if others is not None and wire in others:
                        data = others[wire]
                    else:
                        data = wire.encode(event)
                    last = wire
                if data is not None:
                    conn.queue(data)
