"""``chatcli replay FILE --to HOST:PORT``: play a transcript into a live server.

Two layers, as everywhere in chatcli:

- :class:`Planner` (no I/O) turns transcript events into what the injected clients do:
  each original sender is one client named ``<prefix><name>`` that connects when the
  user first joins or speaks, follows them from room to room, says their lines (``me``
  for actions, ``dm`` to a recipient that is connected) and logs out when they leave.
  ``--dry-run`` prints its plan without connecting.
- :class:`Injector` carries a plan out against a server at the transcript's pace
  (:class:`chatcli.replay.Timeline`, the same engine as the player), tracks every
  message by its ``ref`` until the server acknowledges it (its echo) or refuses it, and
  measures how far each send lagged behind its schedule. A client's ``bye`` is its
  barrier: the server answers every earlier frame before it closes the connection, so a
  message still unanswered after that (or after ``ack_timeout``) is lost.

To keep the conversation in order, a message waits (at most ``order_timeout``) for the
previous message, sent by another client, to be answered: the server orders what one
connection sends, not what several send at nearly the same moment. The wait counts as lag.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Final

import msgspec

from chatcli.addresses import format_address, parse_address
from chatcli.bench.histogram import Histogram
from chatcli.client.acks import (
    COUNT_RATE_LIMITED,
    DEFAULT_ACK_TIMEOUT,
    AckTracker,
    Outcome,
    Retry,
    Settled,
)
from chatcli.client.connection import DEFAULT_CONNECT_TIMEOUT, ChatClient, connect
from chatcli.client.resume import new_txn
from chatcli.core.events import Clear, Cleared, Draw, Drawn, Erase, Erased, Moved
from chatcli.core.events import Move as MoveShape
from chatcli.core.protocol import (
    DEFAULT_ROOM,
    Bye,
    DirectMessage,
    Joined,
    JoinRoom,
    Left,
    Me,
    Msg,
    Say,
    SendDirect,
    ServerEvent,
    checked_text,
    clean_text,
    name_key,
    valid_name,
    valid_room,
)
from chatcli.errors import ChatError, ProtocolError, ServerRefused, UsageError
from chatcli.replay.player import Playback, PlayOptions, Timeline, format_offset
from chatcli.transcript import End, Entry, Header, Source
from chatcli.ui.render import Renderer

__all__ = [
    "DEFAULT_ACK_TIMEOUT",
    "DEFAULT_ORDER_TIMEOUT",
    "Action",
    "Connect",
    "Disconnect",
    "InjectReport",
    "Injector",
    "Move",
    "Planner",
    "Reread",
    "Send",
    "Skip",
    "Step",
    "dry_run",
    "parse_target",
    "plan",
]

#: longest a message waits for the previous one (another client's) to be answered, so
#: that the server relays them in order; past it, order is no longer guaranteed
DEFAULT_ORDER_TIMEOUT: Final = 1.0
#: longest name the server accepts
MAX_NAME: Final = 24


def parse_target(text: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """``--to``'s address (see :mod:`chatcli.addresses`) -> (host, port); UsageError if bad."""
    return parse_address(text, option="--to", default_host=default_host)


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Connect:
    """Log ``name`` in (the client of original user ``user``) into ``room``."""

    user: str
    name: str
    room: str


@dataclass(frozen=True)
class Move:
    """Move ``user``'s client to ``room``."""

    user: str
    room: str


#: a board frame re-injected (draw, erase, move, clear)
BoardFrame = Draw | Erase | MoveShape | Clear


@dataclass(frozen=True)
class Send:
    """Send ``event`` (say, me, dm or a board frame, without a ref) from ``user``'s
    client, in ``room``. ``shape`` is the shape's id in the transcript for a draw, erase
    or move: the server gives the re-drawn shape a new id, which erase and move use."""

    user: str
    event: Say | Me | SendDirect | BoardFrame
    room: str | None
    shape: int | None = None


@dataclass(frozen=True)
class Disconnect:
    """``user`` left: log their client out."""

    user: str


@dataclass(frozen=True)
class Skip:
    """An event that cannot be re-injected, and why."""

    user: str
    reason: str


Action = Connect | Move | Send | Disconnect | Skip


@dataclass(frozen=True)
class Step:
    """What to do at transcript time ``ts`` (possibly nothing: the time still counts)."""

    ts: float
    actions: tuple[Action, ...]


class Planner:
    """Turns transcript events into client actions, tracking who is connected where.

    Names are ``prefix + name`` cut to 24 characters; a name the server would refuse,
    or two users that would end up with the same name, raise UsageError.
    """

    def __init__(self, prefix: str = "") -> None:
        if prefix and (len(prefix) >= MAX_NAME or not valid_name(prefix + "x")):
            raise UsageError(
                f"--prefix {clean_text(prefix)!r}: use up to {MAX_NAME - 1} letters, digits, "
                "'_', '-' or '.'"
            )
        self.prefix = prefix
        self.names: dict[str, str] = {}  # user key -> client name, in order of appearance
        self.rooms: dict[str, None] = {}  # rooms entered, in order
        self.messages = 0
        self.skipped = 0
        self._owner: dict[str, str] = {}  # client name key -> original user name
        self._where: dict[str, str] = {}  # user key -> room, for users connected now

    def name_for(self, user: str) -> str:
        """The client name standing for ``user``."""
        key = name_key(user)
        name = self.names.get(key)
        if name is not None:
            return name
        name = (self.prefix + user)[:MAX_NAME]
        if not valid_name(name):
            raise UsageError(
                f"cannot re-inject user {clean_text(user)!r}: {clean_text(name)!r} is not a "
                "valid name (1-24 letters, digits, '_', '-', '.'); try --prefix"
            )
        owner = self._owner.setdefault(name_key(name), user)
        if name_key(owner) != key:
            raise UsageError(
                f"users {clean_text(owner)!r} and {clean_text(user)!r} would both connect as "
                f"{name!r} (names stop at {MAX_NAME} characters); use a shorter --prefix"
            )
        self.names[key] = name
        return name

    def connected(self, user: str) -> bool:
        """True when ``user``'s client is logged in at this point of the plan."""
        return name_key(user) in self._where

    def plan(self, event: object) -> list[Action]:
        """The actions that reproduce ``event``."""
        if isinstance(event, Msg):
            if (refusal := _refusal(event.text)) is not None:
                return self._skip(event.from_, refusal)
            if not valid_room(event.room):
                return self._skip(event.from_, f"room {clean_text(event.room)!r} is not valid")
            actions = self._enter(event.from_, event.room)
            sent = (Me if event.action else Say)(text=event.text)
            self.messages += 1
            return [*actions, Send(event.from_, sent, event.room)]
        if isinstance(event, DirectMessage):
            if (refusal := _refusal(event.text)) is not None:
                return self._skip(event.from_, refusal)
            if not self.connected(event.to):
                return self._skip(event.from_, f"dm to {clean_text(event.to)}, not connected")
            to = self.name_for(event.to)
            actions = [] if self.connected(event.from_) else self._enter(event.from_, DEFAULT_ROOM)
            self.messages += 1
            return [*actions, Send(event.from_, SendDirect(to=to, text=event.text), None)]
        if isinstance(event, Joined):
            if not valid_room(event.room):
                return self._skip(event.name, f"room {clean_text(event.room)!r} is not valid")
            return self._enter(event.name, event.room)
        if isinstance(event, Left):
            # any leave, a move to a room this transcript does not show included
            if self._where.pop(name_key(event.name), None) is None:
                return []
            return [Disconnect(event.name)]
        if isinstance(event, (Drawn, Erased, Moved, Cleared)):
            return self._board(event)
        return []

    def _board(self, event: Drawn | Erased | Moved | Cleared) -> list[Action]:
        """A board change, made again by its author's client in its room."""
        who = event.from_ if isinstance(event, Drawn) else event.by
        if not valid_room(event.room):
            return self._skip(who, f"room {clean_text(event.room)!r} is not valid")
        frame: BoardFrame
        shape: int | None = None
        if isinstance(event, Drawn):
            frame, shape = Draw(shape=event.shape), event.id
        elif isinstance(event, Erased):
            frame, shape = Erase(id=event.id), event.id
        elif isinstance(event, Moved):
            frame, shape = MoveShape(id=event.id, dx=event.dx, dy=event.dy), event.id
        elif event.all:
            return self._skip(who, "clearing the whole board needs an operator")
        else:
            frame = Clear()
        actions = self._enter(who, event.room)
        self.messages += 1
        return [*actions, Send(who, frame, event.room, shape)]

    def _enter(self, user: str, room: str) -> list[Action]:
        key = name_key(user)
        self.rooms.setdefault(room)
        current = self._where.get(key)
        self._where[key] = room
        if current is None:
            return [Connect(user, self.name_for(user), room)]
        return [] if current == room else [Move(user, room)]

    def _skip(self, user: str, reason: str) -> list[Action]:
        self.skipped += 1
        return [Skip(user, reason)]


def _refusal(text: str) -> str | None:
    try:
        checked_text(text)
    except ProtocolError as exc:
        return f"the server would refuse the text: {exc.message}"
    return None


class Reread:
    """Opens the transcript afresh for each loop; remembers the lines it had to skip."""

    def __init__(self, source: Source, options: PlayOptions) -> None:
        self.source = source
        self.options = options
        self.problems: list[str] = []
        self.warnings: list[str] = []
        self._reads = 0

    def __call__(self) -> Iterator[Entry]:
        playback = Playback(self.source, self.options)
        self._reads += 1
        try:
            yield from playback.entries()
        finally:
            playback.close()
            if self._reads == 1:
                self.problems = [f"{line} (line skipped)" for line in playback.problems]
                self.warnings = playback.warnings + [
                    f"chatcli: note: {note}" for note in playback.notes
                ]

    def report(self, stream: IO[str]) -> None:
        """Print the skipped lines and warnings of the first reading."""
        for line in self.problems + self.warnings:
            print(line, file=stream)


def plan(
    open_entries: Callable[[], Iterable[Entry]], planner: Planner, loops: int = 1
) -> Iterator[Step]:
    """One step per transcript event, ``loops`` times over (``open_entries`` re-reads it)."""
    for _ in range(loops):
        for entry in open_entries():
            event = entry.event
            if isinstance(event, (Header, End)):
                continue
            yield Step(event.ts, tuple(planner.plan(event)))


# --------------------------------------------------------------------------- the report


@dataclass
class InjectReport:
    """What a re-injection did; ``ok`` when every message sent was acknowledged."""

    target: str
    speed: float | None = 1.0  # None: --instant
    loops: int = 1
    sent: int = 0
    acknowledged: int = 0
    rate_limited: int = 0
    refused: int = 0
    lost: int = 0
    skipped: int = 0
    connections: int = 0
    duration: float = 0.0  # wall seconds from start to the last answer
    sending: float = 0.0  # wall seconds from the first send to the last
    span: float = 0.0  # playback seconds (idle capped) from the first send to the last
    played: float = 0.0  # playback seconds (idle capped) reached so far
    lag: Histogram = field(default_factory=Histogram)  # µs behind schedule, per send
    codes: Counter[str] = field(default_factory=Counter)  # refusals by error code
    failure: str | None = None  # what stopped the run early
    interrupted: bool = False  # stopped by the user (Ctrl-C)

    @property
    def ok(self) -> bool:
        """True when nothing was refused, rate-limited or lost and the run finished."""
        return not (
            self.refused or self.rate_limited or self.lost or self.failure or self.interrupted
        )

    @property
    def achieved_speed(self) -> float | None:
        """Transcript seconds played per wall second, between the first and last send."""
        if self.sending <= 0 or self.span <= 0:
            return None
        return self.span / self.sending

    def lines(self) -> list[str]:
        """The report as printed at the end of ``replay --to``."""
        loops = f" ({self.loops} loops)" if self.loops > 1 else ""
        lines = [f"replayed to {self.target}{loops}"]
        rows = [
            ("messages sent", self.sent, ""),
            ("acknowledged", self.acknowledged, ""),
            ("rate-limited", self.rate_limited, ""),
            ("refused", self.refused, _codes(self.codes)),
            ("lost", self.lost, "(no answer)" if self.lost else ""),
            ("skipped", self.skipped, "(not sent: see --dry-run)" if self.skipped else ""),
            ("connections", self.connections, ""),
        ]
        lines += [f"  {label:<15}{value:>8}  {note}".rstrip() for label, value, note in rows]
        lines.append(f"  {'duration':<15}{self.duration:>7.1f}s")
        asked = "instant" if self.speed is None else f"{self.speed:g}x"
        achieved = self.achieved_speed
        got = (
            "n/a"
            if achieved is None
            else f"{achieved:,.0f}x"
            if achieved >= 100
            else f"{achieved:.3g}x"
        )
        lines.append(f"  {'speed':<15}{got:>8}  (asked {asked})")
        if self.lag.count:
            p50, p99 = self.lag.percentiles([50, 99])
            lag = f"p50 {_ms(p50)}  p99 {_ms(p99)}  max {_ms(self.lag.max)}"
            lines.append(f"  {'send lag':<15}  {lag}")
        if self.failure:
            lines.append(f"  stopped early: {self.failure}")
        elif self.interrupted:
            lines.append("  stopped early: interrupted")
        return lines

    def progress(self) -> str:
        """One line for a live progress display."""
        lag = self.lag.percentile(99)
        return (
            f"played {format_offset(self.played)}  sent {self.sent}  "
            f"acknowledged {self.acknowledged}  rate-limited {self.rate_limited}  "
            f"refused {self.refused}  connections {self.connections}  p99 lag {_ms(lag)}"
        )


def _ms(us: int | None) -> str:
    return "-" if us is None else f"{us / 1000:.1f} ms"


def _codes(codes: Counter[str]) -> str:
    return ", ".join(f"{code} x{n}" for code, n in codes.most_common())


# --------------------------------------------------------------------------- execution


class _Client:
    """One injected user's connection and the messages it still waits answers for.

    Each message waiting is tracked with a future that its answer resolves, so that the
    next message (another client's) can wait for it to keep the conversation in order.
    """

    def __init__(self, user: str, client: ChatClient) -> None:
        self.user = user
        self.client = client
        #: a rate-limited message is counted, not sent again: the report says how many
        self.acks: AckTracker[asyncio.Future[Outcome]] = AckTracker(COUNT_RATE_LIMITED)
        self.leaving = False
        self.failure: ChatError | None = None
        self.receiver: asyncio.Task[None] | None = None


class Injector:
    """Carries out a plan against the server at ``host:port`` (see the module docstring).

    ``timeline`` sets the pace; ``clock`` (monotonic seconds) measures lag.
    """

    def __init__(
        self,
        host: str,
        port: int,
        timeline: Timeline,
        *,
        ack_timeout: float = DEFAULT_ACK_TIMEOUT,
        order_timeout: float = DEFAULT_ORDER_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
        loops: int = 1,
    ) -> None:
        self.host = host
        self.port = port
        self.timeline = timeline
        self.ack_timeout = ack_timeout
        self.order_timeout = min(order_timeout, ack_timeout)
        self.connect_timeout = connect_timeout
        self._clock = clock
        self.report = InjectReport(
            target=format_address(host, port),
            speed=None if timeline.instant else timeline.speed,
            loops=loops,
        )
        self._clients: dict[str, _Client] = {}
        self._leaving: dict[str, asyncio.Task[None]] = {}
        self._last: asyncio.Future[Outcome] | None = None  # the last message sent
        self._last_client: _Client | None = None
        self._first_send: tuple[float, float] | None = None  # (wall, pos)
        self._stopping = asyncio.Event()
        #: board shapes: transcript id -> the answer to its draw, and the id it got now
        self._drawn: dict[int, asyncio.Future[Outcome]] = {}
        self._draw_refs: dict[str, int] = {}
        self._shape_ids: dict[int, int] = {}

    def stop(self) -> None:
        """Stop before the next step (Ctrl-C); the clients still leave cleanly."""
        self._stopping.set()

    async def run_interruptible(
        self,
        steps: Iterable[Step],
        progress: Callable[[InjectReport], object] | None = None,
        every: float = 1.0,
    ) -> InjectReport:
        """:meth:`run` where the first Ctrl-C stops the run (a second one kills it), and
        ``progress`` is called with the report every ``every`` seconds."""
        loop = asyncio.get_running_loop()
        handled = False
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGINT, self._interrupt)
            handled = True
        ticker = None
        if progress is not None:

            async def tick() -> None:
                while True:
                    await asyncio.sleep(every)
                    progress(self.report)

            ticker = asyncio.create_task(tick())
        try:
            return await self.run(steps)
        finally:
            if ticker is not None:
                ticker.cancel()
            if handled:
                loop.remove_signal_handler(signal.SIGINT)

    def _interrupt(self) -> None:
        self.stop()
        # a second Ctrl-C is not caught: it interrupts whatever is still waiting
        asyncio.get_running_loop().remove_signal_handler(signal.SIGINT)

    async def run(self, steps: Iterable[Step]) -> InjectReport:
        """Carry out every step; the report says how it went (``failure`` if it stopped).

        A failure to reach the server before anything was sent is raised instead.
        """
        report = self.report
        began = self._clock()
        try:
            for step in steps:
                pos = self.timeline.place(step.ts)
                if not step.actions:
                    continue
                report.played = pos
                delay = self.timeline.due_in(pos) or 0.0
                due = self._clock() + max(0.0, delay)
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), delay)
                if self._stopping.is_set():
                    report.interrupted = True
                    break
                for action in step.actions:
                    await self._do(action, due, pos)
        except ChatError as exc:
            if not report.sent:
                await self._finish()
                raise
            report.failure = clean_text(str(exc))  # it may quote the server
        finally:
            with contextlib.suppress(ChatError):
                await self._finish()
            report.duration = self._clock() - began
        return report

    # ---------------------------------------------------------------- actions

    async def _do(self, action: Action, due: float, pos: float) -> None:
        if isinstance(action, Send):
            await self._send(action, due, pos)
        elif isinstance(action, Connect):
            await self._connect(action)
        elif isinstance(action, Move):
            client = self._client(action.user)
            await self._in_order(client)
            await client.client.send(JoinRoom(room=action.room))
        elif isinstance(action, Disconnect):
            key = name_key(action.user)
            gone = self._clients.pop(key, None)
            if gone is not None:
                self._leaving[key] = asyncio.create_task(self._leave(gone))
        else:
            self.report.skipped += 1

    async def _connect(self, action: Connect) -> None:
        key = name_key(action.user)
        leaving = self._leaving.pop(key, None)
        if leaving is not None:  # the same user came back: their old session must be gone
            await leaving
        try:
            chat = await connect(
                self.host,
                self.port,
                action.name,
                action.room,
                history=0,
                timeout=self.connect_timeout,
            )
        except ServerRefused as exc:  # the server's words are untrusted text
            hint = "; use --prefix" if exc.code in ("name_taken", "name_invalid") else ""
            raise ServerRefused(
                clean_text(exc.code),
                f"{self.report.target} refused {action.name!r}: {clean_text(exc.message)}{hint}",
            ) from exc
        self.report.connections += 1
        client = _Client(action.user, chat)
        client.receiver = asyncio.create_task(self._receive(client))
        self._clients[key] = client

    async def _send(self, action: Send, due: float, pos: float) -> None:
        client = self._client(action.user)
        await self._in_order(client)
        ref = client.client.next_ref()
        event: Say | Me | SendDirect | BoardFrame
        if isinstance(action.event, (Say, Me)):
            # a txn makes any resend of it stored once, so the accounting stays exact
            event = msgspec.structs.replace(action.event, ref=ref, txn=new_txn())
        elif isinstance(action.event, (Erase, MoveShape)):
            shape_id = await self._shape_now(action.shape)
            if shape_id is None:  # its draw was refused or never answered: nothing to change
                self.report.skipped += 1
                return
            event = msgspec.structs.replace(action.event, id=shape_id, ref=ref)
        else:
            event = msgspec.structs.replace(action.event, ref=ref)
        answer: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        client.acks.sent(ref, answer)
        if isinstance(event, Draw) and action.shape is not None:
            self._drawn[action.shape] = answer
            self._draw_refs[ref] = action.shape
        now = self._clock()
        self.report.lag.record(max(0, round((now - due) * 1_000_000)))
        if self._first_send is None:
            self._first_send = (now, pos)
        await client.client.send(event)
        self.report.sent += 1
        self.report.sending = now - self._first_send[0]
        self.report.span = pos - self._first_send[1]
        self._last, self._last_client = answer, client

    async def _shape_now(self, original: int | None) -> int | None:
        """The id the shape with transcript id ``original`` got on this server (its draw's
        answer awaited, at most ``order_timeout``), or None when it has none."""
        if original is None:
            return None
        drawn = self._drawn.get(original)
        if drawn is not None and not drawn.done():
            await asyncio.wait({drawn}, timeout=self.order_timeout)
        return self._shape_ids.get(original)

    def _board_answer(self, client: _Client, event: ServerEvent) -> bool:
        """Settle the board frame ``event`` (an echo with its ``ref``) acknowledges;
        a draw's echo also tells the id its shape got. False for anything else."""
        ref = getattr(event, "ref", None)
        if not isinstance(event, (Drawn, Erased, Moved, Cleared)) or not isinstance(ref, str):
            return False
        if isinstance(event, Drawn) and ref in self._draw_refs:
            self._shape_ids[self._draw_refs.pop(ref)] = event.id
        answer = client.acks.acknowledge(ref)
        if answer is not None:
            self._count(answer)
        return True

    def _client(self, user: str) -> _Client:
        client = self._clients[name_key(user)]
        if client.failure is not None:
            raise client.failure
        return client

    async def _in_order(self, client: _Client) -> None:
        """Wait for the previous message, sent by another client, to be answered."""
        last = self._last
        if last is not None and self._last_client is not client and not last.done():
            await asyncio.wait({last}, timeout=self.order_timeout)

    # ---------------------------------------------------------------- answers

    async def _receive(self, client: _Client) -> None:
        try:
            while True:
                event = await client.client.receive()
                if self._board_answer(client, event):
                    continue
                answer = client.acks.receive(event)
                if answer is not None:
                    assert not isinstance(answer, Retry)  # the policy never retries
                    self._count(answer)
        except ChatError as exc:
            if not client.leaving:
                client.failure = exc
        finally:
            self._lose(client)

    def _count(self, answer: Settled[asyncio.Future[Outcome]]) -> None:
        """Put one settled message in the report and wake whoever waits for it."""
        if not answer.sent.done():
            answer.sent.set_result(answer.outcome)
        report = self.report
        if answer.outcome is Outcome.ACKNOWLEDGED:
            report.acknowledged += 1
        elif answer.outcome is Outcome.RATE_LIMITED:
            report.rate_limited += 1
        elif answer.outcome is Outcome.REFUSED:
            report.refused += 1
            report.codes[clean_text(answer.code or "")] += 1
        else:
            report.lost += 1

    def _lose(self, client: _Client) -> None:
        for answer in client.acks.lose_all():
            self._count(answer)

    # ---------------------------------------------------------------- leaving

    async def _leave(self, client: _Client) -> None:
        """Log out after every earlier frame is answered (the server closes after bye)."""
        client.leaving = True
        receiver = client.receiver
        try:
            await client.client.send(Bye())
            if receiver is not None:
                await asyncio.wait({receiver}, timeout=self.ack_timeout)
        except ChatError:
            # the connection is already gone: nothing left to log out of; what it had not
            # acknowledged is counted as lost by _lose() below, so nothing goes unreported
            pass
        finally:
            if receiver is not None and not receiver.done():
                receiver.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await receiver
            await client.client.close(bye=False)
            self._lose(client)

    async def _finish(self) -> None:
        """Everyone still connected leaves; wait for all of them."""
        for key, client in list(self._clients.items()):
            self._leaving[key] = asyncio.create_task(self._leave(client))
        self._clients.clear()
        leaving = list(self._leaving.values())
        self._leaving.clear()
        if leaving:
            await asyncio.gather(*leaving, return_exceptions=True)


# --------------------------------------------------------------------------- dry run


def dry_run(steps: Iterable[Step], planner: Planner, timeline: Timeline, out: IO[str]) -> int:
    """Print what would be sent and when, then the users, rooms, counts and duration.

    Returns the number of messages that would be sent. Nothing connects anywhere.
    """
    renderer = Renderer(show_room=True)
    count, last = 0, 0.0
    for step in steps:
        pos = timeline.place(step.ts)
        for action in step.actions:
            at = f"+{format_offset(timeline.duration(pos), tenths=True)}".rjust(10)
            if isinstance(action, Send):
                count += 1
                last = pos
                out.write(f"{at}  {_preview(renderer, planner, action, step.ts)}\n")
            elif isinstance(action, Skip):
                out.write(f"{at}  skipped: {clean_text(action.user)}: {action.reason}\n")
    users = ", ".join(planner.names.values()) or "none"
    rooms = ", ".join(planner.rooms) or "none"
    skipped = f", {planner.skipped} skipped" if planner.skipped else ""
    pace = "instantly" if timeline.instant else f"at {timeline.speed:g}x"
    idle = "" if timeline.max_idle is None else f", pauses capped at {timeline.max_idle:g} s"
    out.write(
        f"dry run: {count} message(s){skipped} from {len(planner.names)} user(s) in "
        f"{len(planner.rooms)} room(s); would take {format_offset(timeline.duration(last))} "
        f"{pace}{idle}\n"
        f"users: {users}\nrooms: {rooms}\n"
    )
    return count


def _preview(renderer: Renderer, planner: Planner, action: Send, ts: float) -> str:
    """The line an observer would see for ``action`` (same look as join and replay)."""
    name = planner.name_for(action.user)
    event = action.event
    shown: Msg | DirectMessage | Drawn | Erased | Moved | Cleared
    room = action.room or ""
    if isinstance(event, Draw):
        shown = Drawn(id=action.shape or 0, room=room, from_=name, shape=event.shape, ts=ts)
    elif isinstance(event, Erase):
        shown = Erased(room=room, id=event.id, by=name, ts=ts)
    elif isinstance(event, MoveShape):
        shown = Moved(room=room, id=event.id, dx=event.dx, dy=event.dy, by=name, ts=ts)
    elif isinstance(event, Clear):
        shown = Cleared(room=room, by=name, all=event.all, ts=ts)
    elif isinstance(event, SendDirect):
        shown = DirectMessage(from_=name, to=event.to, text=event.text, ts=ts)
    else:
        shown = Msg(
            id=0,
            room=action.room or "",
            from_=name,
            text=event.text,
            ts=ts,
            action=isinstance(event, Me),
        )
    return renderer.plain(shown) or ""
