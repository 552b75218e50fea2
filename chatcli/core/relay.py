"""The relay's domain logic as pure state: users, rooms, history and flood control.

No sockets and no event loop: the asyncio server feeds decoded client events in and gets
back ``Delivery`` records (who receives which event) to encode and write. Room state
(members, history, message ids) sits behind the small ``RoomState`` interface so that a
persistent (SQLite) or multi-node (NATS) implementation can replace ``MemoryRooms``
without touching the relay or the server.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec

from chatcli import __version__
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
    "Delivery",
    "MemoryRooms",
    "Relay",
    "RoomState",
    "Session",
    "TokenBucket",
    "error_event",
]

#: error codes after which the server closes the connection (a protocol fact, re-exported)
from chatcli.core.protocol import FATAL_CODES

WELCOME_HINT = 'type  login YOURNAME  (or send {"type":"hello","name":"YOURNAME"})'


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

    __slots__ = ("bucket", "key", "link", "name", "room")

    def __init__(self, link: Any, bucket: TokenBucket) -> None:
        self.link = link
        self.bucket = bucket
        self.name: str | None = None
        self.key: str | None = None
        self.room: str | None = None

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


class RoomState(Protocol):
    """Where rooms live: members, history and message ids. Swap it to persist or share."""

    def enter(self, room: str, session: Session) -> None:
        """Add ``session`` to the members of ``room`` (creating the room)."""

    def exit(self, room: str, session: Session) -> None:
        """Remove ``session`` from ``room``."""

    def members(self, room: str) -> Collection[Session]:
        """Current members of ``room``, in the order they entered."""

    def counts(self) -> list[tuple[str, int]]:
        """(room, member count) for every room worth listing."""

    def append(self, room: str, sender: str, text: str, ts: float, action: bool) -> Msg:
        """Store a new message, assigning the room's next id, and return it."""

    def history(self, room: str, limit: int, since: int | None) -> tuple[list[Msg], bool]:
        """Stored messages, oldest first: the last ``limit``, or all after id ``since``.

        The flag is True when messages after ``since`` are no longer stored.
        """


class _Room:
    __slots__ = ("history", "members", "next_id")

    def __init__(self, keep: int) -> None:
        self.members: dict[Session, None] = {}
        self.history: deque[Msg] = deque(maxlen=keep)
        self.next_id = 1


class MemoryRooms:
    """RoomState kept in this process's memory: ``keep`` messages of history per room."""

    def __init__(self, keep: int = 50, default_room: str = DEFAULT_ROOM) -> None:
        self.keep = keep
        self.default_room = default_room
        self._rooms: dict[str, _Room] = {default_room: _Room(keep)}

    def _room(self, room: str) -> _Room:
        state = self._rooms.get(room)
        if state is None:
            state = self._rooms[room] = _Room(self.keep)
        return state

    def enter(self, room: str, session: Session) -> None:
        self._room(room).members[session] = None

    def exit(self, room: str, session: Session) -> None:
        state = self._rooms.get(room)
        if state is None:
            return
        state.members.pop(session, None)
        # a room that ever had a message is kept, so its ids never start over at 1
        if not state.members and state.next_id == 1 and room != self.default_room:
            del self._rooms[room]

    def members(self, room: str) -> Collection[Session]:
        state = self._rooms.get(room)
        return state.members.keys() if state else ()

    def counts(self) -> list[tuple[str, int]]:
        return [
            (name, len(state.members))
            for name, state in self._rooms.items()
            if state.members or name == self.default_room
        ]

    def append(self, room: str, sender: str, text: str, ts: float, action: bool) -> Msg:
        state = self._room(room)
        msg = Msg(id=state.next_id, room=room, from_=sender, text=text, ts=ts, action=action)
        state.next_id += 1
        state.history.append(msg)
        return msg

    def history(self, room: str, limit: int, since: int | None) -> tuple[list[Msg], bool]:
        state = self._rooms.get(room)
        stored: Sequence[Msg] = state.history if state is not None else ()
        last_id = state.next_id - 1 if state is not None else 0
        recent = list(stored)[-limit:] if limit > 0 else []
        if since is None:
            return recent, False
        if since > last_id:
            # an id this room never had: the server (and its ids) restarted since then,
            # so the client may have missed anything; it gets the recent history
            return recent, True
        first = stored[0].id if stored else last_id + 1
        after = [m for m in stored if m.id > since]
        return after, since + 1 < first


class Relay:
    """The chat relay as a state machine: client events in, deliveries out.

    Every method takes the acting session and returns the deliveries it causes. Refusals
    raise ProtocolError carrying the spec's code; FATAL_CODES ones end the connection.
    """

    def __init__(
        self,
        rooms: RoomState | None = None,
        *,
        history: int = 50,
        rate_limit: float = 5.0,
        rate_burst: int = 10,
        clock: Callable[[], float] = now,
        monotonic: Callable[[], float] | None = None,
        default_room: str = DEFAULT_ROOM,
    ) -> None:
        self.rooms: RoomState = rooms if rooms is not None else MemoryRooms(history, default_room)
        self.history_limit = history
        self.rate_limit = rate_limit
        self.rate_burst = rate_burst
        self.clock = clock
        self.monotonic = monotonic or clock
        self.default_room = default_room
        self.users: dict[str, Session] = {}

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
            rooms=room_infos(self.rooms.counts()),
            hint=WELCOME_HINT,
        )

    def login(self, session: Session, hello: Hello) -> list[Delivery]:
        """Bind a name to ``session`` and enter the requested room."""
        if session.logged_in:
            raise ProtocolError("bad_request", "already logged in")
        if not valid_name(hello.name):
            raise ProtocolError(
                "name_invalid",
                "names are 1-24 letters, digits, '_', '-' or '.'; 'server' and 'system' "
                "are reserved",
            )
        room = self.default_room if hello.room is None else hello.room
        if not valid_room(room):
            raise ProtocolError("bad_request", "rooms are 1-32 lowercase letters, digits, _ or -")
        key = name_key(hello.name)
        if key in self.users:
            raise ProtocolError("name_taken", f"the name {hello.name!r} is already in use")
        session.name, session.key = hello.name, key
        self.users[key] = session
        return self._enter(session, room, hello.history, hello.since)

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

    def handle(self, session: Session, event: ClientEvent) -> list[Delivery]:
        """Act on one decoded client event and return what must be delivered."""
        if isinstance(event, Say):
            return self._say(session, event.text, event.ref, False)
        if isinstance(event, Hello):
            return self.login(session, event)
        if isinstance(event, Ping):
            return [Delivery((session,), Pong())]
        if isinstance(event, Pong):
            return []
        if not session.logged_in:
            raise ProtocolError(
                "not_logged_in",
                'log in first: {"type":"hello","name":"..."}',
                getattr(event, "ref", None),
            )
        if isinstance(event, Me):
            return self._say(session, event.text, event.ref, True)
        if isinstance(event, SendDirect):
            return self._direct(session, event)
        if isinstance(event, Who):
            assert session.room is not None
            return [Delivery((session,), Users(room=session.room, users=self._names(session.room)))]
        if isinstance(event, RoomsRequest):
            return [Delivery((session,), RoomList(rooms=room_infos(self.rooms.counts())))]
        if isinstance(event, JoinRoom):
            return self._switch(session, event.room)
        if isinstance(event, Bye):
            return self.leave(session, "quit")
        raise ProtocolError("unknown_type", f"unhandled event {type(event).__name__}")

    def _say(self, session: Session, text: str, ref: Any, action: bool) -> list[Delivery]:
        room = session.room
        if room is None:
            raise ProtocolError("not_logged_in", 'log in first: {"type":"hello","name":"..."}', ref)
        if not session.bucket.take():
            raise ProtocolError("rate_limited", "slow down: message not sent", ref)
        assert session.name is not None
        msg = self.rooms.append(room, session.name, text, self.clock(), action)
        echo = None if ref is None else _with_ref(msg, ref)
        return [Delivery(tuple(self.rooms.members(room)), msg, session, echo)]

    def _direct(self, session: Session, event: SendDirect) -> list[Delivery]:
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

    def _switch(self, session: Session, room: str) -> list[Delivery]:
        if not valid_room(room):
            raise ProtocolError("bad_request", "rooms are 1-32 lowercase letters, digits, _ or -")
        if room == session.room:
            return self._ready(session, None, None)
        out = self._exit(session, "part")
        return out + self._enter(session, room, None, None)

    # -- room membership ------------------------------------------------------------

    def _enter(
        self, session: Session, room: str, limit: int | None, since: int | None
    ) -> list[Delivery]:
        assert session.name is not None
        others = tuple(self.rooms.members(room))
        session.room = room
        self.rooms.enter(room, session)
        out = self._ready(session, limit, since)
        # Emitted even into an empty room: observers (recorders) see every join.
        out.append(Delivery(others, Joined(room=room, name=session.name, ts=self.clock())))
        return out

    def _ready(self, session: Session, limit: int | None, since: int | None) -> list[Delivery]:
        assert session.name is not None and session.room is not None
        keep = self.history_limit if limit is None else min(limit, self.history_limit)
        history, truncated = self.rooms.history(session.room, keep, since)
        ready = Ready(
            name=session.name,
            room=session.room,
            users=self._names(session.room),
            history=history,
            truncated=truncated,
        )
        return [Delivery((session,), ready)]

    def _exit(self, session: Session, reason: str) -> list[Delivery]:
        room = session.room
        if room is None:
            return []
        assert session.name is not None
        self.rooms.exit(room, session)
        session.room = None
        others = tuple(self.rooms.members(room))
        left = Left(room=room, name=session.name, reason=reason, ts=self.clock())
        return [Delivery(others, left)]

    def _names(self, room: str) -> list[str]:
        return sorted((s.name for s in self.rooms.members(room) if s.name), key=str.lower)


def _with_ref(event: Msg | DirectMessage, ref: Any) -> Msg | DirectMessage:
    return msgspec.structs.replace(event, ref=ref)


def error_event(exc: ProtocolError) -> Error:
    """The wire form of a refusal."""
    return Error(code=exc.code, message=exc.message, ref=exc.ref)
