"""Every event of the wire protocol, declared once: its struct and its entry in EVENTS.

An entry (:class:`EventType`) says everything the code base needs to know about one event
type: its struct (which gives its wire ``type``), which way it travels, which field names
its room and which its actor and target, whether transcripts record it, whether text-mode
(``nc``) sessions are sent it, and its layout: the line(s) people see for it, used alike
by text-mode sessions, ``join``, ``replay`` and the rich renderer (:mod:`chatcli.core.lines`).
Every list of event types is derived from :data:`EVENTS`; the ``ClientEvent``,
``ServerEvent`` and transcript unions are written out for the type checker, and
tests/test_events.py checks that they match the table.

Adding an event type means: its struct, one entry in EVENTS (and in the union of its
direction), and its handler in the relay. The error codes are protocol facts too, in
:data:`ERRORS`, from which ERROR_CODES and FATAL_CODES are derived. No I/O here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal

import msgspec

from chatcli.core.lines import Line, LineOptions, Role, Span, name, names, notice, stamp
from chatcli.core.sanitize import clean_text

__all__ = [
    "CLIENT_TYPES",
    "ERRORS",
    "ERROR_CODES",
    "EVENTS",
    "FATAL_CODES",
    "LEAVE_REASONS",
    "LEAVE_REASON_TEXT",
    "MAX_REASON",
    "MAX_SECRET",
    "MIN_PASSWORD",
    "RECORDED",
    "RECORDED_TYPES",
    "SERVER_TYPES",
    "Ban",
    "BoardEvent",
    "Bye",
    "ChangePassword",
    "Clear",
    "Cleared",
    "ClientEvent",
    "DirectMessage",
    "Draw",
    "Drawn",
    "Erase",
    "Erased",
    "Error",
    "ErrorCode",
    "EventType",
    "Hello",
    "JoinRoom",
    "Joined",
    "Kick",
    "Left",
    "Me",
    "Moderated",
    "Move",
    "Moved",
    "Msg",
    "Mute",
    "Nick",
    "PasswordChanged",
    "Ping",
    "Pong",
    "Ready",
    "RecordedEvent",
    "Register",
    "Registered",
    "Renamed",
    "RoomInfo",
    "RoomList",
    "RoomsRequest",
    "Say",
    "SendDirect",
    "ServerEvent",
    "Shape",
    "Unban",
    "Users",
    "Welcome",
    "Who",
    "event_lines",
    "event_type",
    "shape_count",
]

Ref = str | int | None
NonNegative = Annotated[int, msgspec.Meta(ge=0)]
#: a client's id for one of its messages, so that a resend is stored once (spec 1.1, 1)
Txn = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
#: an opaque token (room epochs, resume tokens); bounded so nobody can make us keep a novel
Token = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]

#: password lengths (spec 1.1, section 2: 8-256 characters) and an operator's reason
MIN_PASSWORD: Final = 8
MAX_SECRET: Final = 256
MAX_REASON: Final = 200
#: a password (account or server): bounded, never shown by repr() (see _Secrets)
Secret = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_SECRET)]
#: a new account password
NewPassword = Annotated[str, msgspec.Meta(min_length=MIN_PASSWORD, max_length=MAX_SECRET)]
Minutes = Annotated[int, msgspec.Meta(ge=0, le=10_000_000)]
Reason = Annotated[str, msgspec.Meta(max_length=MAX_REASON)]

LEAVE_REASONS: Final = frozenset({"quit", "part", "lost", "timeout", "slow", "kicked"})
#: how a leave reason reads in a line
LEAVE_REASON_TEXT: Final = {
    "quit": "quit",
    "part": "moved to another room",
    "lost": "connection lost",
    "timeout": "timed out",
    "slow": "too slow to keep up",
    "kicked": "kicked",
}

# --------------------------------------------------------------------------- structs
# Both directions share one tag field, "type". A class is an event of one direction,
# except ping/pong, which either side may send.


class _Event(msgspec.Struct, tag_field="type", frozen=True, omit_defaults=True):
    """Base of every frame: a small immutable record tagged by its ``type``."""


class _Secrets:
    """Mixin: repr() masks the fields named in ``_secret`` so a password is never logged."""

    __slots__ = ()
    _secret: tuple[str, ...] = ()

    def __repr__(self) -> str:
        def shown(field: str) -> str:
            value = getattr(self, field)
            return "***" if field in self._secret and value is not None else repr(value)

        fields = ", ".join(f"{f}={shown(f)}" for f in self.__struct_fields__)  # type: ignore[attr-defined]
        return f"{type(self).__name__}({fields})"


class Ping(_Event, tag="ping", frozen=True):
    """Heartbeat probe; the other side answers ``pong``."""


class Pong(_Event, tag="pong", frozen=True):
    """Answer to ``ping``."""


# Client -> server


class Hello(_Secrets, _Event, tag="hello", frozen=True):
    """Login: the first JSON frame of a session."""

    _secret = ("password", "server_password")

    name: str
    room: str | None = None
    since: NonNegative | None = None
    history: NonNegative | None = None
    ref: Ref = None
    #: the epoch ``since`` belongs to (from the last ``ready``): another one means start over
    epoch: Token | None = None
    #: the token of the last ``ready``: takes over a session the server still holds
    resume: Token | None = None
    #: the account's password, needed for a registered name (spec 1.1, 2)
    password: Secret | None = None
    #: the server's password, needed when the server has one
    server_password: Secret | None = None


class Say(_Event, tag="say", frozen=True):
    """Say ``text`` in the current room; ``ref`` is echoed back to the sender only.

    ``txn`` makes a resend after a lost connection safe: the server stores it once.
    """

    text: str
    ref: Ref = None
    txn: Txn | None = None


class Me(_Event, tag="me", frozen=True):
    """An action (``/me waves``), relayed as ``msg`` with ``action: true`` (extension)."""

    text: str
    ref: Ref = None
    txn: Txn | None = None


class SendDirect(_Event, tag="dm", frozen=True):
    """A direct message to one user."""

    to: str
    text: str
    ref: Ref = None


class Who(_Event, tag="who", frozen=True):
    """Ask who is in the current room."""

    ref: Ref = None


class RoomsRequest(_Event, tag="rooms", frozen=True):
    """Ask for the list of rooms."""

    ref: Ref = None


class JoinRoom(_Event, tag="join", frozen=True):
    """Leave the current room and enter ``room``."""

    room: str
    ref: Ref = None


class Bye(_Event, tag="bye", frozen=True):
    """Log out; the server closes the connection."""


class Register(_Secrets, _Event, tag="register", frozen=True):
    """Claim the name one is logged in with: from then on it needs ``password``."""

    _secret = ("password",)
    password: NewPassword
    ref: Ref = None


class ChangePassword(_Secrets, _Event, tag="password", frozen=True):
    """Change one's account password from ``old`` to ``new``."""

    _secret = ("old", "new")
    old: Secret
    new: NewPassword
    ref: Ref = None


class Nick(_Event, tag="nick", frozen=True):
    """Change one's name to ``name`` (same rules as at login)."""

    name: str
    ref: Ref = None


class Kick(_Event, tag="kick", frozen=True):
    """Operator: close ``name``'s connection (``kicked``)."""

    name: str
    reason: Reason = ""
    ref: Ref = None


class Ban(_Event, tag="ban", frozen=True):
    """Operator: kick ``name`` and refuse its name, look-alikes and address; 0 = until unban."""

    name: str
    minutes: Minutes = 0
    reason: Reason = ""
    ref: Ref = None


class Unban(_Event, tag="unban", frozen=True):
    """Operator: lift the ban of ``name``."""

    name: str
    ref: Ref = None


class Mute(_Event, tag="mute", frozen=True):
    """Operator: ``name``'s messages are refused (``muted``) for ``minutes``; 0 unmutes."""

    name: str
    minutes: Minutes
    ref: Ref = None


# Board (spec 1.1, section 4): shapes and the frames that change a room's board. The
# exact rules (kinds, point counts, ranges) are checked by chatcli.core.board.

#: a coordinate or a move: a JSON number (true and false are refused)
Number = Annotated[float, msgspec.Meta(ge=-1e9, le=1e9)]
ShapeId = Annotated[int, msgspec.Meta(ge=1)]


class Shape(msgspec.Struct, frozen=True, omit_defaults=True, gc=False):
    """A shape on a board: ``points`` [[x, y], ...] in board units (0..1000).

    ``text`` only for kind ``text``; ``width`` is the stroke (or text size) in units.

    Out of the garbage collector's sight (``gc=False``, and points as tuples of numbers,
    which CPython stops tracking): a relay keeps up to 10,000 shapes a room for as long
    as it runs, and a full collection walking three full boards of pencil strokes took
    53 ms with the loop stopped, against 0.4 ms so (docs/benchmarks.md, "Pauses of the
    garbage collector"). Nothing in a shape can refer back to it, so it is in no cycle.
    """

    kind: str
    points: tuple[tuple[Number, Number], ...]
    color: str
    width: Number = 3.0
    text: str | None = None


class Draw(_Event, tag="draw", frozen=True):
    """Add ``shape`` to the room's board; the server gives it an id."""

    shape: Shape
    ref: Ref = None


class Erase(_Event, tag="erase", frozen=True):
    """Remove shape ``id`` (one's own; operators any)."""

    id: ShapeId
    ref: Ref = None


class Move(_Event, tag="move", frozen=True):
    """Move shape ``id`` by (``dx``, ``dy``) units (one's own; operators any)."""

    id: ShapeId
    dx: Number
    dy: Number
    ref: Ref = None


class Clear(_Event, tag="clear", frozen=True):
    """Remove one's own shapes, or (``all``, operators only) every shape."""

    all: bool = False
    ref: Ref = None


# Server -> client


class RoomInfo(msgspec.Struct, frozen=True):
    """A room and how many users are in it."""

    name: str
    users: int


class Welcome(_Event, tag="welcome", frozen=True):
    """Sent to every new connection before it says anything."""

    server: str
    proto: int
    users: list[str]
    rooms: list[RoomInfo]
    hint: str
    #: what the server offers beyond v1 ("resume", ...): spec 1.1
    features: list[str] = []
    #: rooms on the server (``rooms`` lists at most the 20 busiest): spec 1.1, section 7
    room_count: int | None = None
    #: people in the default room (``users`` names at most 100 of them)
    user_count: int | None = None
    #: the URL of the server's web page when it offers "web" (``serve --web``)
    web: str | None = None


class Msg(_Event, tag="msg", frozen=True):
    """A message said in a room, as relayed to every member (the sender's copy is the ack)."""

    id: int
    room: str
    from_: str = msgspec.field(name="from")
    text: str
    ts: float
    action: bool = False
    ref: Ref = None


class Ready(_Event, tag="ready", frozen=True):
    """Login (or room change) succeeded: who is there and what was said before."""

    name: str
    room: str
    users: list[str]
    history: list[Msg]
    truncated: bool = False
    #: names the room's message stream; ids mean something only within one epoch
    epoch: str | None = None
    #: a secret that lets this client take its session over after a network failure
    resume: str | None = None
    #: this user is an operator (spec 1.1, 3)
    op: bool = False
    #: the room's board: its shapes in id order, where they are now (spec 1.1, 4)
    board: list[Drawn] = []


class Drawn(_Event, tag="draw", frozen=True, gc=False):
    """A shape added to ``room``'s board under ``id`` by ``from``.

    Kept for as long as the shape is on the board: untracked by the garbage collector
    like its :class:`Shape` (its fields are numbers, strings and the shape).
    """

    id: int
    room: str
    from_: str = msgspec.field(name="from")
    shape: Shape
    ts: float
    ref: Ref = None


class Erased(_Event, tag="erase", frozen=True):
    """Shape ``id`` of ``room``'s board was removed by ``by``."""

    room: str
    id: int
    by: str
    ts: float
    ref: Ref = None


class Moved(_Event, tag="move", frozen=True):
    """Shape ``id`` was moved by (``dx``, ``dy``): the move made, after clamping."""

    room: str
    id: int
    dx: float
    dy: float
    by: str
    ts: float
    ref: Ref = None


class Cleared(_Event, tag="clear", frozen=True):
    """``by``'s shapes (or, ``all``, every shape) were removed from ``room``'s board."""

    room: str
    by: str
    all: bool
    ts: float
    ref: Ref = None


class Joined(_Event, tag="join", frozen=True):
    """Someone entered the room."""

    room: str
    name: str
    ts: float


class Left(_Event, tag="leave", frozen=True):
    """Someone left the room; ``reason`` is one of LEAVE_REASONS."""

    room: str
    name: str
    reason: str
    ts: float


class DirectMessage(_Event, tag="dm", frozen=True):
    """A direct message, delivered to the recipient and (as the ack) to the sender."""

    from_: str = msgspec.field(name="from")
    to: str
    text: str
    ts: float
    ref: Ref = None


class Users(_Event, tag="users", frozen=True):
    """Answer to ``who``."""

    room: str
    users: list[str]
    #: the operators among ``users``
    ops: list[str] = []


class Registered(_Event, tag="registered", frozen=True):
    """Answer to ``register``: ``name`` now needs its password."""

    name: str
    ref: Ref = None


class PasswordChanged(_Event, tag="password", frozen=True):
    """Answer to ``password``: the account of ``name`` has its new password."""

    name: str
    ref: Ref = None


class Renamed(_Event, tag="nick", frozen=True):
    """Someone in the room changed its name from ``old`` to ``name``."""

    room: str
    old: str
    name: str
    ts: float
    ref: Ref = None


class Moderated(_Event, tag="moderated", frozen=True):
    """Answer to an operator frame: ``action`` (kick, ban, unban, mute) done on ``name``."""

    action: str
    name: str
    minutes: int | None = None
    ref: Ref = None


class RoomList(_Event, tag="rooms", frozen=True):
    """Answer to ``rooms``."""

    rooms: list[RoomInfo]
    #: rooms on the server, when ``rooms`` lists only the busiest (spec 1.1, section 7)
    total: int | None = None


class Error(_Event, tag="error", frozen=True):
    """Something went wrong; ``code`` is one of ERROR_CODES."""

    code: str
    message: str
    ref: Ref = None


# Written out for the type checker (and msgspec's decoders); tests/test_events.py checks
# that each union holds exactly the classes EVENTS gives its direction.
ClientEvent = (
    Hello
    | Say
    | Me
    | SendDirect
    | Who
    | RoomsRequest
    | JoinRoom
    | Bye
    | Register
    | ChangePassword
    | Nick
    | Kick
    | Ban
    | Unban
    | Mute
    | Draw
    | Erase
    | Move
    | Clear
    | Ping
    | Pong
)
ServerEvent = (
    Welcome
    | Ready
    | Joined
    | Left
    | Msg
    | DirectMessage
    | Users
    | RoomList
    | Error
    | Registered
    | PasswordChanged
    | Renamed
    | Moderated
    | Drawn
    | Erased
    | Moved
    | Cleared
    | Ping
    | Pong
)
#: the events a transcript records
RecordedEvent = Msg | DirectMessage | Joined | Left | Drawn | Erased | Moved | Cleared
#: the board's events (server to client), which text-mode sessions are not sent
BoardEvent = Drawn | Erased | Moved | Cleared

# --------------------------------------------------------------------------- layouts
# The line(s) each event shows as; see chatcli.core.lines. Untrusted strings are cleaned
# by the span helpers (plain strings given to notice() included).


def _msg(event: Msg, options: LineOptions) -> list[Line]:
    spans = stamp(event.ts, options)
    if options.show_room:
        spans.append(Span(f"[{clean_text(event.room)}] ", Role.ROOM))
    spans.append(name(event.from_, "* ") if event.action else name(event.from_, "<", ">"))
    spans.append(Span(" "))
    spans.append(Span(clean_text(event.text), Role.TEXT, event.from_))
    return [Line(tuple(spans))]


def _dm(event: DirectMessage, options: LineOptions) -> list[Line]:
    spans = stamp(event.ts, options)
    spans += [
        Span("[dm] ", Role.DM_MARK),
        name(event.from_),
        Span(" -> ", Role.DIM),
        name(event.to),
        Span(": "),
        Span(clean_text(event.text), Role.DM_TEXT, event.from_),
    ]
    return [Line(tuple(spans))]


def _joined(event: Joined, options: LineOptions) -> list[Line]:
    return [notice(event.ts, options, name(event.name), " joined ", event.room)]


def _left(event: Left, options: LineOptions) -> list[Line]:
    reason = LEAVE_REASON_TEXT.get(event.reason, event.reason)
    return [notice(event.ts, options, name(event.name), " left ", event.room, f" ({reason})")]


def _ready(event: Ready, options: LineOptions) -> list[Line]:
    lines = [line for message in event.history for line in _msg(message, options)]
    more = " (older messages were not kept)" if event.truncated else ""
    you = ("you are ", name(event.name), " in ", event.room)
    op = " (you are an operator)" if event.op else ""
    lines.append(notice(None, options, *you, "; here: ", *names(event.users), more, op))
    return lines


def _users(event: Users, options: LineOptions) -> list[Line]:
    here = names(event.users) or [Span("nobody")]
    ops: tuple[str | Span, ...] = ("; operators: ", *names(event.ops)) if event.ops else ()
    return [notice(None, options, "in ", event.room, ": ", *here, *ops)]


def _rooms(event: RoomList, options: LineOptions) -> list[Line]:
    rooms = ", ".join(f"{clean_text(r.name)} ({r.users})" for r in event.rooms)
    more = event.total - len(event.rooms) if event.total is not None else 0
    rooms += f" and {more} more" if more > 0 else ""
    return [notice(None, options, "rooms: ", rooms or "none")]


def _error(event: Error, options: LineOptions) -> list[Line]:
    spans = stamp(None, options)
    spans += [
        Span("!! ", Role.ERROR),
        Span(clean_text(event.code), Role.ERROR_CODE),
        Span(": " + clean_text(event.message), Role.ERROR),
    ]
    return [Line(tuple(spans))]


def _renamed(event: Renamed, options: LineOptions) -> list[Line]:
    return [notice(event.ts, options, name(event.old), " is now known as ", name(event.name))]


def _registered(event: Registered, options: LineOptions) -> list[Line]:
    return [notice(None, options, "the name ", name(event.name), " is registered to you")]


def _password_changed(event: PasswordChanged, options: LineOptions) -> list[Line]:
    return [notice(None, options, "your password is changed")]


#: how an operator is told its action was done: (words before the name, after it)
_MODERATED: Final = {
    "kick": "kicked",
    "ban": "banned",
    "unban": "lifted the ban of",
    "mute": "muted",
}


def _moderated(event: Moderated, options: LineOptions) -> list[Line]:
    action = clean_text(event.action)
    done = _MODERATED.get(action, action)
    if action == "mute" and not event.minutes:
        done = "unmuted"
    if event.minutes:
        time = f" for {event.minutes} min"
    else:
        time = " until /unban" if action == "ban" else ""
    return [notice(None, options, f"you {done} ", name(event.name), time)]


#: how lines name each kind of shape ("alice drew 2 strokes on the board")
SHAPE_NOUNS: Final = {
    "pencil": "stroke",
    "line": "line",
    "rect": "rectangle",
    "oval": "oval",
    "text": "text",
}


def shape_count(count: int, kind: str) -> str:
    """``a line``, ``an oval``, ``3 rectangles``: ``count`` shapes of ``kind`` in words."""
    noun = SHAPE_NOUNS.get(kind, "shape")
    if count == 1:
        return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"
    return f"{count} {noun}s"


def _board(event: Drawn | Erased | Moved | Cleared, options: LineOptions) -> list[Line]:
    """One board change alone; ``join`` and ``replay`` show bursts of them coalesced
    (chatcli.ui.board_activity), this is the line of a single one."""
    if type(event) is Drawn:
        what = f"drew {shape_count(1, event.shape.kind)}"
        return [notice(event.ts, options, name(event.from_), f" {what} on the board")]
    if type(event) is Erased:
        return [notice(event.ts, options, name(event.by), " erased a shape on the board")]
    if type(event) is Moved:
        return [notice(event.ts, options, name(event.by), " moved a shape on the board")]
    assert type(event) is Cleared
    what = "the whole board" if event.all else "their drawings"
    return [notice(event.ts, options, name(event.by), f" cleared {what}")]


def _welcome(event: Welcome, options: LineOptions) -> list[Line]:
    online: tuple[str | Span, ...] = ("; online: ", *names(event.users)) if event.users else ()
    return [notice(None, options, "connected to ", event.server, *online)]


# --------------------------------------------------------------------------- the table

Direction = Literal["client", "server", "both"]
Layout = Callable[[Any, LineOptions], Sequence[Line]]


@dataclass(frozen=True, slots=True)
class EventType:
    """One event type, declared once: everything the code base knows about it.

    ``room``, ``actor`` and ``target`` name the struct's attributes (not wire fields)
    holding the room it happens in, who did it and whom it was done to, or None.
    ``recorded``: transcripts keep it. ``text``: text-mode sessions are sent it as a
    line (events without a layout are never sent to them). ``layout``: its line(s).
    """

    cls: type[msgspec.Struct]
    direction: Direction
    room: str | None = None
    actor: str | None = None
    target: str | None = None
    recorded: bool = False
    text: bool = False
    layout: Layout | None = None

    @property
    def type(self) -> str:
        """The wire ``type`` tag."""
        tag = self.cls.__struct_config__.tag
        assert isinstance(tag, str)
        return tag

    def people(self, event: object) -> tuple[str, ...]:
        """The names of the actor and target of ``event`` (one of this type), if any."""
        return tuple(getattr(event, field) for field in (self.actor, self.target) if field)

    def room_of(self, event: object) -> str | None:
        """The room ``event`` (one of this type) happens in, or None."""
        return None if self.room is None else str(getattr(event, self.room))


EVENTS: Final[tuple[EventType, ...]] = (
    EventType(Ping, "both"),
    EventType(Pong, "both"),
    # client -> server
    EventType(Hello, "client", room="room", actor="name"),
    EventType(Say, "client"),
    EventType(Me, "client"),
    EventType(SendDirect, "client", target="to"),
    EventType(Who, "client"),
    EventType(RoomsRequest, "client"),
    EventType(JoinRoom, "client", room="room"),
    EventType(Bye, "client"),
    EventType(Register, "client"),
    EventType(ChangePassword, "client"),
    EventType(Nick, "client", target="name"),
    EventType(Kick, "client", target="name"),
    EventType(Ban, "client", target="name"),
    EventType(Unban, "client", target="name"),
    EventType(Mute, "client", target="name"),
    EventType(Draw, "client"),
    EventType(Erase, "client"),
    EventType(Move, "client"),
    EventType(Clear, "client"),
    # server -> client
    EventType(Welcome, "server", text=True, layout=_welcome),
    EventType(Ready, "server", room="room", actor="name", text=True, layout=_ready),
    EventType(Msg, "server", room="room", actor="from_", recorded=True, text=True, layout=_msg),
    EventType(
        DirectMessage, "server", actor="from_", target="to", recorded=True, text=True, layout=_dm
    ),
    EventType(
        Joined, "server", room="room", actor="name", recorded=True, text=True, layout=_joined
    ),
    EventType(Left, "server", room="room", actor="name", recorded=True, text=True, layout=_left),
    EventType(Users, "server", room="room", text=True, layout=_users),
    EventType(RoomList, "server", text=True, layout=_rooms),
    EventType(Error, "server", text=True, layout=_error),
    EventType(Registered, "server", actor="name", text=True, layout=_registered),
    EventType(PasswordChanged, "server", text=True, layout=_password_changed),
    EventType(
        Renamed, "server", room="room", actor="old", target="name", text=True, layout=_renamed
    ),
    EventType(Moderated, "server", target="name", text=True, layout=_moderated),
    # the board: recorded, never sent to text sessions (spec 1.1, 4)
    EventType(Drawn, "server", room="room", actor="from_", recorded=True, layout=_board),
    EventType(Erased, "server", room="room", actor="by", recorded=True, layout=_board),
    EventType(Moved, "server", room="room", actor="by", recorded=True, layout=_board),
    EventType(Cleared, "server", room="room", actor="by", recorded=True, layout=_board),
)

_BY_CLASS: Final[dict[type, EventType]] = {entry.cls: entry for entry in EVENTS}


def _types(*directions: Direction) -> frozenset[str]:
    return frozenset(entry.type for entry in EVENTS if entry.direction in directions)


CLIENT_TYPES: Final = _types("client", "both")
SERVER_TYPES: Final = _types("server", "both")
#: the recorded event types in table order, and their wire names
RECORDED: Final = tuple(entry for entry in EVENTS if entry.recorded)
RECORDED_TYPES: Final = frozenset(entry.type for entry in RECORDED)


def event_type(event: object) -> EventType | None:
    """The table entry of ``event``'s class, or None for anything that is not an event."""
    return _BY_CLASS.get(type(event))


def event_lines(event: object, options: LineOptions) -> Sequence[Line]:
    """The line(s) ``event`` shows as; none for events that show nothing (ping, client)."""
    entry = _BY_CLASS.get(type(event))
    if entry is None or entry.layout is None:
        return ()
    return entry.layout(event, options)


# --------------------------------------------------------------------------- errors


@dataclass(frozen=True, slots=True)
class ErrorCode:
    """An error code of the protocol: whether the server closes the connection after it."""

    code: str
    closes: bool
    meaning: str


ERRORS: Final[tuple[ErrorCode, ...]] = (
    # v1
    ErrorCode("bad_request", False, "a malformed frame or invalid field"),
    ErrorCode("unknown_type", False, "a frame of a type the server does not know"),
    ErrorCode("frame_too_large", True, "a line longer than the frame limit"),
    ErrorCode("name_invalid", True, "the name breaks the naming rules"),
    ErrorCode("name_taken", True, "someone online has that name"),
    ErrorCode("login_timeout", True, "no login in time"),
    ErrorCode("auth_failed", True, "wrong or missing password"),
    ErrorCode("not_logged_in", False, "the frame needs a login first"),
    ErrorCode("no_such_user", False, "no one of that name is online"),
    ErrorCode("rate_limited", False, "too many messages: this one was not sent"),
    ErrorCode("slow_consumer", True, "the client does not read what it is sent"),
    ErrorCode("server_shutdown", True, "the server is shutting down"),
    ErrorCode("server_full", True, "too many connections (overall or from your address)"),
    # v1.1
    ErrorCode("replaced", True, "another connection resumed this session"),
    ErrorCode("kicked", True, "an operator removed you"),
    ErrorCode("banned", True, "your name or address is banned"),
    ErrorCode("muted", False, "you are muted"),
    ErrorCode("forbidden", False, "not allowed: operator frame, someone else's shape"),
    ErrorCode("board_full", False, "the room's board is full"),
    ErrorCode("unavailable", False, "the cluster cannot store right now; try again"),
)
ERROR_CODES: Final = frozenset(error.code for error in ERRORS)
#: error codes after which the server closes the connection
FATAL_CODES: Final = frozenset(error.code for error in ERRORS if error.closes)
