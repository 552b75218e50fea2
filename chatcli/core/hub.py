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

from chatcli.core.connection import Framing, OutputMeter, ServerConnection, State, Wire
from chatcli.core.protocol import ClientEvent, Error, Ready, ServerEvent
from chatcli.core.relay import AddressLimit, AuditRecord, Close, Delivery, Effect, Raw, Relay
from chatcli.errors import ProtocolError
from chatcli.settings import ServerSettings
from chatcli.store.base import Store
from chatcli.store.memory import MemoryStore
from chatcli.store.pipeline import StorePipeline

__all__ = ["Hub", "audit_line", "relay_for"]

log = logging.getLogger("chatcli.server")


def relay_for(settings: ServerSettings) -> Relay:
    """The relay ``settings`` describe: limits, operators, server password, per-address cap."""
    exempt = settings.max_per_ip_exempt
    return Relay(
        history=settings.history,
        rate_limit=settings.rate_limit,
        rate_burst=settings.rate_burst,
        ops=settings.ops,
        server_password=settings.server_password,
        address_limit=AddressLimit(settings.max_per_ip, exempt),
        max_rooms=settings.max_rooms,
        room_creations=settings.room_creations,
        max_ready=settings.max_buffer // 2,
    )


def audit_line(record: AuditRecord) -> str:
    """How an operator action reads in the server's log: who did what to whom, and why.

    Names and the reason come from clients: their control characters are escaped
    (``repr``-style) so a reason cannot forge log lines. Logged as a warning, so that
    ``serve -q`` still keeps it.
    """
    action = "unmute" if record.action == "mute" and not record.minutes else record.action
    parts = [f"operator {_shown(record.by)} {action} {_shown(record.name)}"]
    if record.minutes:
        parts.append(f"for {record.minutes} min")
    elif action == "ban":
        parts.append("until unbanned")
    if record.address:
        parts.append(f"address {record.address}")
    if record.reason:
        parts.append(f"reason {_shown(record.reason)}")
    return " ".join(parts)


def _shown(text: str) -> str:
    """``text`` for a log line: as is when printable, else quoted with escapes."""
    return text if text.isprintable() and " " not in text else repr(text)


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
        self.relay = relay or relay_for(settings)
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
        #: unsent output of every connection added up, against --max-output-total
        self.meter = OutputMeter(settings.max_output_total)
        #: called after every relay call (a cluster publishes the relay's presence notes)
        self.after_apply: Callable[[], None] | None = None

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
            meter=self.meter,
        )
        self.connections.add(conn)
        if len(self.connections) > self.settings.max_connections:
            log.warning("refusing %s: %d connections open", peer, len(self.connections))
            conn.turn_away(Error(code="server_full", message="too many connections"))
            return conn
        log.info("connect %s", peer)
        effects = relay.connect(conn.session)
        # refused at once (too many from its address): the error alone, as for server_full
        # above; otherwise the welcome goes first, a ban found later closes after it
        if not any(type(effect) is Close for effect in effects):
            conn.send(relay.welcome())
        self._apply(effects)
        return conn

    def inject(self, effects: Iterable[Effect]) -> None:
        """Carry out effects the relay produced outside a connection's call (a cluster's
        news of other nodes' users, a delivery forwarded from another node)."""
        self._apply(effects)

    def store_answered(self) -> None:
        """The store's wake-up fired (an asynchronous store answered): deliver what waited
        (and, in a cluster, what other nodes stored)."""
        self._apply((), drain=True)

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

    def output_over_total(self, conn: ServerConnection) -> None:
        """Cut the largest consumers off until the relay's unsent output is back under
        three quarters of ``--max-output-total`` (so one cut buys room for a while).

        Those who read keep little unsent, so the cut falls on those who do not; their
        leaves are delivered behind the current fan-out, as for any slow consumer.
        """
        meter = self.meter
        target = meter.limit * 3 // 4
        for victim in sorted(self.connections, key=lambda c: c.unsent, reverse=True):
            if meter.total <= target or victim.unsent == 0:
                break
            if not victim.closing:
                victim.cut_for_total()

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

    def _apply(self, effects: Iterable[Effect], *, drain: bool = False) -> None:
        """The one place relay output goes: intents to the store, deliveries to targets.

        Every ``Relay`` result (``handle``, ``leave``, ``connect``) comes through here. The
        pipeline submits the store intents and returns the deliveries (and closes) that
        may go now, in order; each is queued to its targets.

        A fan-out can cut recipients off as slow consumers, and each one's ``leave`` is a
        new delivery: those are queued behind the current one and sent by the outermost
        call, so a room full of slow clients is cut off in a loop, not in a recursion as
        deep as the room is large.
        """
        ready = self.pipeline.drain() if drain else self.pipeline.run(effects)
        if self.after_apply is not None:
            self.after_apply()
        if self.relay.audit:  # operator actions, also those acted on after a store answer
            for record in self.relay.take_audit():
                log.warning("%s", audit_line(record))
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
