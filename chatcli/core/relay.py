"""The relay's domain logic as pure state: users, rooms, history and flood control.

No sockets, no event loop and no store: the server feeds decoded client events in and
gets back *effects*: ``Delivery`` records (who receives which event) to encode and write,
and store *intents* (``Append`` a message, ``Recall`` a room's history; see
chatcli.core.intents) that the adapter hands to whichever store it runs on. The store's
answers come back through :meth:`Relay.complete` and become deliveries, so a message is
delivered only once the store has it (durable before visible) and a store that answers
later (SQLite, NATS JetStream) fits without the relay waiting on it. Membership (who is in
which room) lives here, in memory: it belongs to live connections, not to the store.

Every refusal raises ProtocolError with the spec's code and the ``ref`` of the frame that
caused it. ``bye`` is answered with a ``Close`` effect, which waits in line behind the
messages the client sent before it (their acknowledgements go out first); the adapter
then closes the connection and tells the relay through :meth:`Relay.leave`.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from chatcli import __version__
from chatcli.core.events import Ref
from chatcli.core.intents import Append, Completion, Failed, Recall, Recalled, Stored
from chatcli.core.protocol import (
    DEFAULT_ROOM,
    PROTOCOL_VERSION,
    Bye,
    ClientEvent,
    DirectMessage,
    Error,
    Hello,
    Joined,
    JoinRoom,
    Left,
    Me,
    Msg,
    Ping,
    Pong,
    Ready,
    RoomList,
    RoomsRequest,
    Say,
    SendDirect,
    ServerEvent,
    Users,
    Welcome,
    Who,
    name_key,
    now,
    room_infos,
    valid_name,
    valid_room,
)
from chatcli.errors import ProtocolError

__all__ = [
    "FATAL_CODES",
    "Close",
    "Delivery",
    "Effect",
    "Relay",
    "Session",
    "TokenBucket",
    "error_event",
]

#: error codes after which the server closes the connection (a protocol fact, re-exported)
from chatcli.core.protocol import FATAL_CODES

#: what this server offers beyond protocol v1 (``welcome.features``, spec 1.1)
FEATURES = ("resume",)

WELCOME_HINT = 'type  login YOURNAME  (or send {"type":"hello","name":"YOURNAME"})'


def _new_token() -> str:
    return secrets.token_urlsafe(18)


def _same_secret(given: str, kept: str | None) -> bool:
    """Compare a resume token in constant time (a guess must learn nothing from timing)."""
    return kept is not None and hmac.compare_digest(given.encode(), kept.encode())


class TokenBucket:
    """Flood control: ``rate`` tokens a second, at most ``burst`` saved up.

    ``rate`` 0 disables the limit. The clock is injected so tests need not sleep.
    """

    __slots__ = ("_clock", "_stamp", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: int, clock: Callable[[], float]) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self._clock = clock
        self._tokens = float(self.burst)
        self._stamp = clock()

    def take(self) -> bool:
        """Spend one token if there is one; False means the message must be refused."""
        if self.rate <= 0:
            return True
        stamp = self._clock()
        tokens = min(self.burst, self._tokens + (stamp - self._stamp) * self.rate)
        self._stamp = stamp
        if tokens < 1.0:
            self._tokens = tokens
            return False
        self._tokens = tokens - 1.0
        return True


class Session:
    """What the relay knows of one connection; ``link`` is the adapter's own handle."""

    __slots__ = ("bucket", "key", "link", "name", "resume", "room")

    def __init__(self, link: Any, bucket: TokenBucket) -> None:
        self.link = link
        self.bucket = bucket
        self.name: str | None = None
        self.key: str | None = None
        self.room: str | None = None
        #: the secret of this session's last ready: whoever shows it may take the name over
        self.resume: str | None = None

    @property
    def logged_in(self) -> bool:
        return self.name is not None

    def __repr__(self) -> str:
        return f"Session({self.name!r}, room={self.room!r})"


@dataclass(slots=True)
class Delivery:
    """``event`` goes to every session in ``targets``; ``echo`` replaces it for ``sender``.

    The echo carries the sender's ``ref``, which only the sender may see, so a message is
    still encoded once for everyone else.
    """

    targets: Sequence[Session]
    event: ServerEvent
    sender: Session | None = None
    echo: ServerEvent | None = None


@dataclass(slots=True, eq=False)
class Close:
    """End ``session``'s connection (leave reason ``reason``) once what came before is out.

    ``error`` is sent last when given (e.g. ``replaced``).
    """

    session: Session
    reason: str
    error: Error | None = None


#: what the relay's methods return: deliveries to make, closes, and intents for the store
Effect = Delivery | Close | Append | Recall

_LOGIN_FIRST = 'log in first: {"type":"hello","name":"..."}'
_ROOM_RULE = "rooms are 1-32 lowercase letters, digits, _ or -"


class _Room:
    """Who is in a room now; ``version`` counts changes, so a snapshot can be checked."""

    __slots__ = ("members", "version")

    def __init__(self) -> None:
        self.members: dict[Session, None] = {}
        self.version = 0


class Relay:
    """The chat relay as a state machine: client events in, effects out.

    Every method takes the acting session and returns the effects it causes (deliveries
    and store intents, in the order they must take effect). Refusals raise ProtocolError
    carrying the spec's code and the frame's ``ref``; FATAL_CODES ones end the connection.
    """

    def __init__(
        self,
        *,
        history: int = 50,
        rate_limit: float = 5.0,
        rate_burst: int = 10,
        clock: Callable[[], float] = now,
        monotonic: Callable[[], float] | None = None,
        default_room: str = DEFAULT_ROOM,
        token: Callable[[], str] = _new_token,
    ) -> None:
        self.history_limit = history
        self.rate_limit = rate_limit
        self.rate_burst = rate_burst
        self.clock = clock
        self.monotonic = monotonic or clock
        self.default_room = default_room
        self.token = token
        self.users: dict[str, Session] = {}
        self._rooms: dict[str, _Room] = {default_room: _Room()}

    # -- sessions -----------------------------------------------------------------

    def open(self, link: Any) -> Session:
        """A new connection: its session, not logged in yet."""
        return Session(link, TokenBucket(self.rate_limit, self.rate_burst, self.monotonic))

    def welcome(self) -> Welcome:
        """The greeting every new connection gets before it says anything."""
        return Welcome(
            server=f"chatcli/{__version__}",
            proto=PROTOCOL_VERSION,
            users=self._names(self.default_room),
            rooms=room_infos(self.counts()),
            hint=WELCOME_HINT,
            features=list(FEATURES),
        )

    def login(self, session: Session, hello: Hello) -> list[Effect]:
        """Bind a name to ``session`` and enter the requested room."""
        ref = hello.ref
        if session.logged_in:
            raise ProtocolError("bad_request", "already logged in", ref)
        if not valid_name(hello.name):
            raise ProtocolError(
                "name_invalid",
                "names are 1-24 letters, digits, '_', '-' or '.'; 'server' and 'system' "
                "are reserved",
                ref,
            )
        room = self.default_room if hello.room is None else hello.room
        if not valid_room(room):
            raise ProtocolError("bad_request", _ROOM_RULE, ref)
        key = name_key(hello.name)
        holder = self.users.get(key)
        if holder is not None:
            if hello.resume is None or not _same_secret(hello.resume, holder.resume):
                raise ProtocolError("name_taken", f"the name {hello.name!r} is already in use", ref)
            return self._take_over(session, holder, room, hello)
        session.name, session.key = hello.name, key
        self.users[key] = session
        return self._enter(session, room, hello.history, hello.since, hello.epoch)

    def _take_over(
        self, session: Session, holder: Session, room: str, hello: Hello
    ) -> list[Effect]:
        """``session`` resumes ``holder``'s session: same name, same place, no leave or join.

        The old connection is told ``replaced`` and closed; the room sees nothing unless the
        resumed session asked for another room (then it moves, as ``join`` would).
        """
        assert holder.name is not None and holder.key is not None
        session.name, session.key = holder.name, holder.key
        self.users[holder.key] = session
        old_room, holder.room = holder.room, None
        holder.name = holder.key = holder.resume = None  # its close tells nobody
        replaced = Error(code="replaced", message="this session was resumed by another connection")
        out: list[Effect] = [Close(holder, "lost", replaced)]
        if old_room is not None:
            state = self._rooms[old_room]
            state.members = {(session if s is holder else s): None for s in state.members}
            state.version += 1
            session.room = old_room
        if session.room == room:
            out.append(self._recall(session, hello.history, hello.since, hello.epoch))
            return out
        if session.room is not None:
            out += self._exit(session, "part")
        return out + self._enter(session, room, hello.history, hello.since, hello.epoch)

    def leave(self, session: Session, reason: str) -> list[Delivery]:
        """The session is gone (``reason`` as in the spec); tell its room."""
        if not session.logged_in:
            return []
        assert session.key is not None and session.name is not None
        self.users.pop(session.key, None)
        out = self._exit(session, reason)
        session.name = session.key = None
        return out

    # -- events -------------------------------------------------------------------

    def handle(self, session: Session, event: ClientEvent) -> list[Effect]:
        """Act on one decoded client event and return what must happen."""
        if type(event) is Say:
            return self._say(session, event.text, event.ref, False, event.txn)
        if isinstance(event, Hello):
            return self.login(session, event)
        if isinstance(event, Ping):
            return [Delivery((session,), Pong())]
        if isinstance(event, Pong):
            return []
        ref: Ref = getattr(event, "ref", None)
        if isinstance(event, Bye) and not session.logged_in:
            return [Close(session, "quit")]
        if not session.logged_in:
            raise ProtocolError("not_logged_in", _LOGIN_FIRST, ref)
        if isinstance(event, Me):
            return self._say(session, event.text, ref, True, event.txn)
        if isinstance(event, SendDirect):
            return self._direct(session, event)
        if isinstance(event, Who):
            assert session.room is not None
            return [Delivery((session,), Users(room=session.room, users=self._names(session.room)))]
        if isinstance(event, RoomsRequest):
            return [Delivery((session,), RoomList(rooms=room_infos(self.counts())))]
        if isinstance(event, JoinRoom):
            return self._switch(session, event.room, ref)
        if isinstance(event, Bye):
            return [Close(session, "quit")]
        raise ProtocolError("unknown_type", f"unhandled event {type(event).__name__}", ref)

    def complete(self, completion: Completion) -> list[Delivery]:
        """The store answered an intent: what to deliver now."""
        if type(completion) is Stored:
            if completion.duplicate:  # a resend of a kept message: its sender alone is told
                return self._acknowledge(completion.intent, completion.msg)
            return self._stored(completion.intent, completion.msg)
        if isinstance(completion, Recalled):
            return self._recalled(
                completion.intent, completion.history, completion.truncated, completion.epoch
            )
        assert isinstance(completion, Failed)
        intent = completion.intent
        if isinstance(intent, Append):
            if not intent.session.logged_in:
                return []
            error = Error(code="unavailable", message=completion.reason, ref=intent.ref)
            return [Delivery((intent.session,), error)]
        # the room's history could not be read: the session is in the room all the same,
        # and its ready says that earlier messages may be missing
        return self._recalled(intent, [], True)

    def counts(self) -> list[tuple[str, int]]:
        """(room, member count) for every room worth listing: occupied, or the default."""
        default = self.default_room
        return [
            (name, len(room.members))
            for name, room in self._rooms.items()
            if room.members or name == default
        ]

    def members(self, room: str) -> Collection[Session]:
        """Who is in ``room`` now, in the order they entered."""
        state = self._rooms.get(room)
        return state.members.keys() if state is not None else ()

    # -- messages -------------------------------------------------------------------

    def _say(
        self, session: Session, text: str, ref: Ref, action: bool, txn: str | None
    ) -> list[Effect]:
        room = session.room
        if room is None:
            raise ProtocolError("not_logged_in", _LOGIN_FIRST, ref)
        if not session.bucket.take():
            raise ProtocolError("rate_limited", "slow down: message not sent", ref)
        assert session.name is not None
        state = self._rooms[room]
        targets = tuple(state.members)
        append = Append(
            session, room, session.name, text, self.clock(), action, ref, targets, state.version
        )
        if txn is not None:
            append.txn, append.user = txn, session.key or ""
        return [append]

    def _stored(self, append: Append, msg: Msg) -> list[Delivery]:
        sender, targets = append.session, append.targets
        state = self._rooms.get(append.room)
        if state is None or state.version != append.version:
            # members came or went while the store worked: those who left are not sent it,
            # and those who came got it in their ready (recalled after this was stored)
            room = append.room
            targets = tuple(s for s in targets if s.room == room)
            if sender.logged_in and sender not in targets:
                targets += (sender,)  # the sender's copy is its acknowledgement
        echo = None if append.ref is None else _with_ref(msg, append.ref)
        return [Delivery(targets, msg, sender, echo)]

    def _acknowledge(self, append: Append, msg: Msg) -> list[Delivery]:
        sender = self.users.get(append.user)  # the session may have been resumed since
        if sender is None:
            return []
        echo = msg if append.ref is None else _with_ref(msg, append.ref)
        return [Delivery((sender,), echo)]

    def _direct(self, session: Session, event: SendDirect) -> list[Effect]:
        target = self.users.get(name_key(event.to))
        if target is None:
            raise ProtocolError("no_such_user", f"no user named {event.to!r} is online", event.ref)
        if not session.bucket.take():
            raise ProtocolError("rate_limited", "slow down: message not sent", event.ref)
        assert session.name is not None and target.name is not None
        dm = DirectMessage(from_=session.name, to=target.name, text=event.text, ts=self.clock())
        echo = None if event.ref is None else _with_ref(dm, event.ref)
        targets = (target,) if target is session else (target, session)
        return [Delivery(targets, dm, session, echo)]

    def _switch(self, session: Session, room: str, ref: Ref) -> list[Effect]:
        if not valid_room(room):
            raise ProtocolError("bad_request", _ROOM_RULE, ref)
        if room == session.room:
            return [self._recall(session, None, None, None)]
        out: list[Effect] = [*self._exit(session, "part")]
        return out + self._enter(session, room, None, None, None)

    # -- room membership ------------------------------------------------------------

    def _enter(
        self,
        session: Session,
        room: str,
        limit: int | None,
        since: int | None,
        epoch: str | None,
    ) -> list[Effect]:
        assert session.name is not None
        state = self._rooms.get(room)
        if state is None:
            state = self._rooms[room] = _Room()
        others = tuple(state.members)
        session.room = room
        state.members[session] = None
        state.version += 1
        # Emitted even into an empty room: observers (recorders) see every join.
        joined = Delivery(others, Joined(room=room, name=session.name, ts=self.clock()))
        return [self._recall(session, limit, since, epoch), joined]

    def _recall(
        self, session: Session, limit: int | None, since: int | None, epoch: str | None
    ) -> Recall:
        assert session.room is not None
        keep = self.history_limit if limit is None else min(limit, self.history_limit)
        return Recall(session, session.room, keep, since, epoch)

    def _recalled(
        self, recall: Recall, history: list[Msg], truncated: bool, epoch: str = ""
    ) -> list[Delivery]:
        session = recall.session
        if session.room != recall.room or session.name is None:
            return []  # it left (or moved on) before the store answered
        session.resume = self.token()  # each ready brings a new token
        ready = Ready(
            name=session.name,
            room=recall.room,
            users=self._names(recall.room),
            history=history,
            truncated=truncated,
            epoch=epoch or None,
            resume=session.resume,
        )
        return [Delivery((session,), ready)]

    def _exit(self, session: Session, reason: str) -> list[Delivery]:
        room = session.room
        if room is None:
            return []
        assert session.name is not None
        state = self._rooms[room]
        state.members.pop(session, None)
        state.version += 1
        session.room = None
        if not state.members and room != self.default_room:
            del self._rooms[room]  # ids and history stay in the store
        others = tuple(state.members)
        left = Left(room=room, name=session.name, reason=reason, ts=self.clock())
        return [Delivery(others, left)]

    def _names(self, room: str) -> list[str]:
        return sorted((s.name for s in self.members(room) if s.name), key=str.lower)


def _with_ref(event: Msg | DirectMessage, ref: Ref) -> Msg | DirectMessage:
    return msgspec.structs.replace(event, ref=ref)


def error_event(exc: ProtocolError) -> Error:
    """The wire form of a refusal."""
    return Error(code=exc.code, message=exc.message, ref=exc.ref)
