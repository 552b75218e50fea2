"""The cluster's store: rooms kept in NATS JetStream, answered in one ordered feed.

:class:`ClusterStore` implements the store port (chatcli.store.base) for a node of a
cluster. Every room's messages and board changes are published to one JetStream stream
(``chatcli.msg.<room>``, ``chatcli.board.<room>``); a message's id is its stream sequence,
so ids increase strictly within a room across every node, and a message is kept
(acknowledged by JetStream) before anyone sees it.

Every node reads the whole stream back through one *ordered consumer* (the feed) and
hands out, in the feed's order, both the answers to its own intents (its own message
coming back is its ``Stored``) and the messages other nodes stored (``Relayed``): all
members of a room, on whichever node, see one order. The answers keep the port's
contract (in submission order); a relayed message is placed among them where the feed
says: after every answer whose feed position is known and before those still waiting
(their messages are later in the feed). A ``Recall`` is answered when it reaches the head
of the line, from the node's cache of each room's recent messages, up to the feed
position of what went out before it, so a joiner's ``ready`` and what follows it neither
miss nor repeat a message.

Adapter choice (CONVENTIONS.md): the relay returns intents; this store carries them out
on the event loop with nats-py and calls the wake-up when answers are ready. NATS
unreachable: a new message or board change is answered ``Failed`` (``unavailable``) at
once. One already published that the feed has not brought back within
:data:`ACK_TIMEOUT` is looked for in the stream: it waits for the feed when JetStream
has it, and is answered ``unavailable`` when JetStream does not, or does not answer (a
stalled server: then it may be kept after all, which a ``txn`` makes harmless).

Accounts and bans live in key-value buckets (chatcli.cluster.accounts); the name claims
of logins in the presence bucket (chatcli.cluster.presence).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

import msgspec
from nats.js import api
from nats.js.errors import NotFoundError

from chatcli.cluster.layout import (
    BOARD_SUBJECTS,
    MSG_SUBJECTS,
    MSGS_STREAM,
    board_subject,
    msg_subject,
)
from chatcli.core.board import Board
from chatcli.core.events import Cleared, Drawn, Erased, Moved
from chatcli.core.intents import (
    Append,
    BoardChange,
    BoardSaved,
    Completion,
    Failed,
    Intent,
    Recall,
    Recalled,
    Relayed,
    RelayedBoard,
    Stored,
)
from chatcli.core.protocol import Msg

__all__ = ["ACK_TIMEOUT", "CACHE_PER_ROOM", "UNAVAILABLE", "ClusterStore"]

log = logging.getLogger("chatcli.server")

#: messages of each room a node keeps in memory (history, ``since`` within reach)
CACHE_PER_ROOM: Final = 1000
#: messages read back at start-up, at most (the newest), to fill the cache
WARM_MESSAGES: Final = 200_000
#: seconds a published message may wait for JetStream's acknowledgement
ACK_TIMEOUT: Final = 3.0
#: seconds an acknowledged message may wait for the feed before it is answered anyway
ECHO_TIMEOUT: Final = 30.0
#: how long JetStream remembers a message id (a ``txn``): spec 1.1 asks for 24 hours
DUPLICATE_WINDOW: Final = 24 * 3600.0
#: what a sender is told when the cluster cannot store its message
UNAVAILABLE: Final = "the cluster cannot store right now; try again"


class _Said(msgspec.Struct, frozen=True, array_like=True):
    """A message as published: what the stream keeps (the id is the stream sequence).

    ``origin`` (``<node>.<nonce>``) lets the node that published it recognise it in the
    feed; it travels in the payload, not a header, so that a message needs no headers
    (cheaper to publish and to read) unless it has a ``txn``.
    """

    origin: str
    from_: str
    text: str
    ts: float
    action: bool


_BoardEvent = Drawn | Erased | Moved | Cleared


class _Changed(msgspec.Struct, frozen=True, array_like=True):
    """A board change as published (``origin`` as for :class:`_Said`)."""

    origin: str
    event: _BoardEvent


_said_encoder: Final = msgspec.json.Encoder()
_said_decoder: Final = msgspec.json.Decoder(_Said)
_board_decoder: Final = msgspec.json.Decoder(_Changed)


@dataclass(slots=True, eq=False)
class _Entry:
    """One intent in line (or a relayed message placed among them)."""

    intent: Intent | None
    answer: Completion | None = None
    #: the feed position of what this entry hands out, once known
    seq: int | None = None
    #: the subject it was published on, and when (monotonic, for the timeouts)
    subject: str = ""
    sent: float = 0.0
    acked: bool = False
    #: JetStream is being asked whether it has this message
    checking: bool = False


class ClusterStore:
    """The store port over JetStream, ordered by one feed; see the module doc."""

    def __init__(self, node: str, *, retain: int, replicas: int = 1) -> None:
        self.node = node
        self.replicas = replicas
        #: messages kept per room in the stream (``serve --retain``)
        self.retain = max(retain, CACHE_PER_ROOM)
        self.nc: Any = None
        self.js: Any = None
        self.epoch = ""
        self._line: deque[_Entry] = deque()
        self._ready: list[Completion] = []
        self._waiting_echo: dict[str, _Entry] = {}
        self._waiting_ack: dict[str, _Entry] = {}
        self._nonce = 0
        #: the highest feed position handed out so far (what a recall may include)
        self._emitted = 0
        #: the highest feed position read
        self._read = 0
        self._rooms: dict[str, deque[Msg]] = {}
        #: per room: the id of the newest message no longer in the cache (0: none)
        self._forgotten: dict[str, int] = {}
        self._boards: dict[str, list[_BoardEvent]] = {}
        self._wakeup: Callable[[], None] = lambda: None
        #: a wake-up is scheduled for the end of this loop turn
        self._waking = False
        #: messages published in this loop turn, sent by one task
        self._outbox: list[tuple[str, bytes, str, dict[str, str] | None]] = []
        self._ack_prefix = ""
        self._feed: Any = None
        self._acks: Any = None
        self._timer: asyncio.Task[None] | None = None
        #: questions to JetStream under way (see _check_kept)
        self._checks: set[asyncio.Task[None]] = set()
        #: set when the feed has read what the stream held at start-up
        self.caught_up = asyncio.Event()
        self._start_seq = 0
        #: account and ban intents, answered by chatcli.cluster.accounts (set by the node)
        self.answer_account: Callable[[Intent], Awaitable[Completion]] | None = None

    # -- opening -------------------------------------------------------------------------

    async def open(self, nc: Any) -> None:
        """Make sure the stream exists, start the feed, read until caught up."""
        self.nc = nc
        self.js = nc.jetstream()
        config = api.StreamConfig(
            name=MSGS_STREAM,
            subjects=[MSG_SUBJECTS, BOARD_SUBJECTS],
            # per room: the newest --retain messages, and as many board changes
            max_msgs_per_subject=self.retain,
            duplicate_window=DUPLICATE_WINDOW,
            storage=api.StorageType.FILE,
            num_replicas=self.replicas,
        )
        try:
            info = await self.js.stream_info(MSGS_STREAM)
        except Exception:
            info = await self.js.add_stream(config)
        self.epoch = _epoch_of(info)
        last = info.state.last_seq
        first = max(info.state.first_seq, last - WARM_MESSAGES + 1, 1)
        self._start_seq = last
        self._ack_prefix = f"_INBOX.chatcli.{self.node}.{nc._nuid.next().decode()}."
        self._acks = await nc.subscribe(self._ack_prefix + "*", cb=self._on_ack)
        self._feed = await self._subscribe(first)
        if last == 0 or info.state.messages == 0:  # nothing to read back
            self._emitted = self._read = last
            self.caught_up.set()
        self._timer = asyncio.get_running_loop().create_task(self._watch_timeouts())

    def describe(self) -> str:
        """For serve's start-up line."""
        return f"NATS JetStream stream {MSGS_STREAM} (shared by the cluster; epoch {self.epoch})"

    async def _subscribe(self, first: int) -> Any:
        return await self.js.subscribe(
            "chatcli.>",
            stream=MSGS_STREAM,
            cb=self._on_feed,
            ordered_consumer=True,
            deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
            config=api.ConsumerConfig(opt_start_seq=first),
            pending_msgs_limit=-1,
            pending_bytes_limit=-1,
        )

    async def resubscribe(self) -> None:
        """After NATS came back: a new feed from where this one stopped, at once.

        (nats-py's ordered consumer would find out by itself, after some missed
        heartbeats; a restarted server has forgotten it.) What both deliver twice is
        skipped by its sequence.
        """
        old, self._feed = self._feed, None
        if old is not None:
            with contextlib.suppress(Exception):
                await old.unsubscribe()
        for attempt in range(120):
            try:
                self._feed = await self._subscribe(self._read + 1)
            except Exception as exc:  # JetStream still starting: retry
                log.debug("cluster: feed not resubscribed yet: %s", exc)
                await asyncio.sleep(0.5)
                continue
            if attempt:
                log.info("cluster: message feed back after %d attempts", attempt + 1)
            return
        log.warning("cluster: the message feed could not be resubscribed; relying on NATS")

    # -- the store port ----------------------------------------------------------------------

    def submit(self, intent: Intent) -> None:
        entry = _Entry(intent)
        self._line.append(entry)
        kind = type(intent)
        if kind is Append or kind is BoardChange:
            self._publish(entry)
        elif kind is not Recall:
            asyncio.get_running_loop().create_task(self._account(entry))
        self._advance()

    def completed(self) -> list[Completion]:
        ready, self._ready = self._ready, []
        return ready

    def boards(self) -> dict[str, Board]:
        """Empty: a cluster relay's boards come from the feed (``RelayedBoard``) instead."""
        return {}

    def board_events(self) -> dict[str, list[_BoardEvent]]:
        """Every board change read at start-up, per room, in order (the relay replays them)."""
        events, self._boards = self._boards, {}
        return events

    def set_wakeup(self, wakeup: Callable[[], None]) -> None:
        self._wakeup = wakeup

    def _wake(self) -> None:
        """Call the wake-up once per loop turn, however many answers came in it."""
        if not self._waking:
            self._waking = True
            asyncio.get_running_loop().call_soon(self._woken)

    def _woken(self) -> None:
        self._waking = False
        self._wakeup()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    async def aclose(self) -> None:
        """Stop the feed and the acknowledgement subscription."""
        self.close()
        for sub in (self._feed, self._acks):
            if sub is not None:
                try:
                    await sub.unsubscribe()
                except Exception as exc:
                    log.debug("cluster: unsubscribing at close: %s", exc)

    # -- publishing ------------------------------------------------------------------------

    def _publish(self, entry: _Entry) -> None:
        intent = entry.intent
        if self.nc is None or not self.nc.is_connected:
            entry.answer = Failed(intent, UNAVAILABLE)  # type: ignore[arg-type]
            return
        self._nonce += 1
        nonce = str(self._nonce)
        origin = f"{self.node}.{nonce}"
        # JetStream's acknowledgement is asked for only where the feed cannot stand in
        # for it: a resend (txn) that JetStream recognises never comes back in the feed
        headers: dict[str, str] | None = None
        reply = ""
        if type(intent) is Append:
            subject = msg_subject(intent.room)
            said = _Said(origin, intent.sender, intent.text, intent.ts, intent.action)
            payload = _said_encoder.encode(said)
            if intent.txn is not None:
                user = hashlib.sha256(intent.user.encode()).hexdigest()[:24]
                headers = {"Nats-Msg-Id": f"{user}:{intent.txn}"}
                reply = self._ack_prefix + nonce
                self._waiting_ack[nonce] = entry
        else:
            assert type(intent) is BoardChange
            subject = board_subject(intent.write.room)
            payload = _said_encoder.encode(_Changed(origin, intent.event))
        entry.subject, entry.sent = subject, time.monotonic()
        self._waiting_echo[nonce] = entry
        self._outbox.append((subject, payload, reply, headers))
        if len(self._outbox) == 1:  # one task sends what one loop turn published
            asyncio.get_running_loop().create_task(self._send_outbox())

    async def _send_outbox(self) -> None:
        outbox, self._outbox = self._outbox, []
        publish = self.nc.publish
        for subject, payload, reply, headers in outbox:
            await publish(subject, payload, reply=reply, headers=headers)
        # (a message the server never took is answered by the acknowledgement timeout)

    async def _on_ack(self, msg: Any) -> None:
        nonce = msg.subject.rpartition(".")[2]
        entry = self._waiting_ack.pop(nonce, None)
        if entry is None or entry.answer is not None:
            return
        try:
            ack = msgspec.json.decode(msg.data)
        except msgspec.DecodeError:
            ack = {"error": {"description": "unreadable acknowledgement"}}
        if "error" in ack:
            self._waiting_echo.pop(nonce, None)
            log.warning("cluster: JetStream refused a message: %s", ack["error"])
            entry.answer = Failed(entry.intent, UNAVAILABLE)  # type: ignore[arg-type]
        elif ack.get("duplicate"):
            self._waiting_echo.pop(nonce, None)
            await self._answer_duplicate(entry, int(ack["seq"]))
        else:
            entry.acked = True
            return
        self._advance()
        self._wake()

    async def _answer_duplicate(self, entry: _Entry, seq: int) -> None:
        """A resend of a kept message (same ``txn``): answer with what was kept then."""
        intent = entry.intent
        assert type(intent) is Append
        kept = next((m for m in self._rooms.get(intent.room, ()) if m.id == seq), None)
        if kept is None:
            try:
                raw = await self.js.get_msg(MSGS_STREAM, seq)
                said = _said_decoder.decode(raw.data)
                kept = Msg(
                    id=seq,
                    room=intent.room,
                    from_=said.from_,
                    text=said.text,
                    ts=said.ts,
                    action=said.action,
                )
            except Exception as exc:
                log.warning("cluster: reading kept message %d: %s", seq, exc)
                entry.answer = Failed(intent, UNAVAILABLE)
                return
        entry.answer = Stored(intent, kept, duplicate=True)

    # -- the feed ---------------------------------------------------------------------------

    async def _on_feed(self, msg: Any) -> None:
        seq = _stream_sequence(msg)
        if seq <= self._read:
            return  # a redelivery after the ordered consumer was reset
        self._read = seq
        _, kind, room = msg.subject.split(".", 2)
        try:
            if kind == "msg":
                said = _said_decoder.decode(msg.data)
                entry = self._own(said.origin)
                message = Msg(
                    id=seq,
                    room=room,
                    from_=said.from_,
                    text=said.text,
                    ts=said.ts,
                    action=said.action,
                )
                self._keep(message)
                if entry is not None and entry.answer is None:
                    assert type(entry.intent) is Append
                    entry.answer = Stored(entry.intent, message)
                    entry.seq = seq
                else:
                    self._place(Relayed(message), seq)
            else:
                changed = _board_decoder.decode(msg.data)
                event = changed.event
                entry = self._own(changed.origin)
                if not self.caught_up.is_set():
                    self._boards.setdefault(room, []).append(_with_id(event, seq))
                elif entry is not None and entry.answer is None:
                    assert type(entry.intent) is BoardChange
                    entry.answer = BoardSaved(entry.intent, seq)
                    entry.seq = seq
                else:
                    self._place(RelayedBoard(event, seq), seq)
        except (msgspec.DecodeError, ValueError) as exc:
            log.warning("cluster: skipping unreadable stream message %d: %s", seq, exc)
        if not self.caught_up.is_set():
            self._emitted = seq  # read back at start-up: every recall may include it
            if seq >= self._start_seq:
                self.caught_up.set()
        self._advance()
        self._wake()

    def _own(self, origin: str) -> _Entry | None:
        """This node's entry waiting for the message published as ``origin``, if any."""
        node, _, nonce = origin.rpartition(".")
        if node != self.node:
            return None
        self._waiting_ack.pop(nonce, None)
        return self._waiting_echo.pop(nonce, None)

    def _keep(self, message: Msg) -> None:
        room = self._rooms.get(message.room)
        if room is None:
            room = self._rooms[message.room] = deque(maxlen=CACHE_PER_ROOM)
        if len(room) == room.maxlen:
            self._forgotten[message.room] = room[0].id
        room.append(message)

    def _place(self, relayed: Completion, seq: int) -> None:
        """Put a message stored by another node where the feed says it belongs."""
        if not self.caught_up.is_set():
            return  # read at start-up: in the cache, nobody to tell
        line = self._line
        entry = _Entry(None, relayed, seq)
        for index in range(len(line) - 1, -1, -1):
            if line[index].seq is not None:
                line.insert(index + 1, entry)
                return
        line.appendleft(entry)

    # -- handing answers out in order ---------------------------------------------------------

    def _advance(self) -> None:
        line = self._line
        while line:
            head = line[0]
            if head.answer is None:
                if type(head.intent) is not Recall:
                    return
                head.answer = self._recall(head.intent)
            line.popleft()
            if head.seq is not None:
                self._emitted = max(self._emitted, head.seq)
            self._ready.append(head.answer)

    def _recall(self, recall: Recall) -> Recalled:
        upto = self._emitted  # while catching up, what was read counts as handed out
        kept = [m for m in self._rooms.get(recall.room, ()) if m.id <= upto]
        forgotten = self._forgotten.get(recall.room, 0)
        since = recall.since
        if recall.epoch is not None and recall.epoch != self.epoch:
            since = None
            truncated = True
        else:
            truncated = False
        if since is not None:
            history = [m for m in kept if m.id > since]
            truncated = since < forgotten
            return Recalled(recall, history, truncated, self.epoch)
        history = kept[-recall.limit :] if recall.limit > 0 else []
        return Recalled(recall, history, truncated, self.epoch)

    # -- accounts ----------------------------------------------------------------------------

    async def _account(self, entry: _Entry) -> None:
        assert entry.intent is not None and self.answer_account is not None
        try:
            entry.answer = await self.answer_account(entry.intent)
        except Exception as exc:
            log.warning("cluster: %s failed: %s", type(entry.intent).__name__, exc)
            entry.answer = Failed(entry.intent, UNAVAILABLE)
        self._advance()
        self._wake()

    async def _check_kept(self, nonce: str, entry: _Entry) -> None:
        """A message the feed has not brought back in ACK_TIMEOUT: does JetStream have it?

        One JetStream kept (a restart in between) comes in the feed, however late: it
        waits. One JetStream says it does not have is answered ``unavailable``, truly.
        When NATS does not answer the question either (a stalled server), the outcome is
        unknown: it is answered ``unavailable`` all the same, since this node's other
        answers wait in line behind it; a resend with the same ``txn`` is recognised.
        """
        try:
            kept = await asyncio.wait_for(self._holds(entry.subject, f"{self.node}.{nonce}"), 2.0)
        except Exception as exc:
            # NATS does not answer: nobody can tell. Every answer of this node waits in
            # line behind this one, so it cannot wait for ever: unavailable (a resend
            # with its txn is safe either way; without one it may be kept twice)
            log.warning("cluster: NATS silent: message %s answered unavailable (%s)", nonce, exc)
            kept = False
        entry.checking = False
        if kept:
            entry.acked = True  # kept: the feed will bring it
            return
        if entry.answer is None and self._waiting_echo.pop(nonce, None) is not None:
            self._waiting_ack.pop(nonce, None)
            entry.answer = Failed(entry.intent, UNAVAILABLE)  # type: ignore[arg-type]
            self._advance()
            self._wake()

    async def _holds(self, subject: str, origin: str) -> bool:
        """Whether the stream holds a message published as ``origin``, past the feed.

        Asked on the connection the message was published on, after it: NATS has
        processed the publish by the time it answers.
        """
        prefix = b'["' + origin.encode() + b'",'
        seq = self._read + 1
        while True:
            try:
                raw = await self.js.get_msg(MSGS_STREAM, seq, subject=subject, next=True)
            except NotFoundError:
                return False
            if raw.data is not None and raw.data.startswith(prefix):
                return True
            seq = (raw.seq or seq) + 1

    async def _watch_timeouts(self) -> None:
        """Drop what was answered; ask JetStream about what the feed has not brought
        back in ACK_TIMEOUT (``_check_kept``); log what it kept but the feed is late with."""
        while True:
            await asyncio.sleep(0.25)
            now = time.monotonic()
            for nonce, entry in list(self._waiting_echo.items()):
                age = now - entry.sent
                if entry.answer is not None:
                    del self._waiting_echo[nonce]
                elif not entry.acked and not entry.checking and age > ACK_TIMEOUT:
                    entry.checking = True
                    loop = asyncio.get_running_loop()
                    self._checks.add(task := loop.create_task(self._check_kept(nonce, entry)))
                    task.add_done_callback(self._checks.discard)
                elif entry.acked and age > ECHO_TIMEOUT:
                    # kept: it comes in the feed once that catches up; say so every
                    # ECHO_TIMEOUT meanwhile
                    log.warning("cluster: the feed is %.0f s late with message %s", age, nonce)
                    entry.sent = now


def _stream_sequence(msg: Any) -> int:
    """The stream sequence of a message the feed delivered, from its reply subject.

    ``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>...`` (or, with a domain and an
    account hash, two tokens more before the stream): read directly, which costs less
    than nats-py's full ``metadata`` for every message.
    """
    tokens = msg.reply.split(".")
    if len(tokens) == 9:
        return int(tokens[5])
    if len(tokens) >= 11:
        return int(tokens[7])
    return int(msg.metadata.sequence.stream)


def _with_id(event: _BoardEvent, seq: int) -> _BoardEvent:
    """A draw's shape id is the stream sequence of its draw (increasing in every room)."""
    if type(event) is Drawn:
        return msgspec.structs.replace(event, id=seq)
    return event


def _epoch_of(info: Any) -> str:
    """The rooms' epoch: when the stream was made (it changes only if it is made again)."""
    created = getattr(info, "created", None) or ""
    digest = hashlib.sha256(f"{MSGS_STREAM}:{created}".encode()).hexdigest()[:16]
    return f"js-{digest}"
