"""The chatcli wire protocol, version 1, without any I/O.

Everything that turns bytes into typed events and back lives here: line framing with a
maximum frame size, the event classes of both directions, validation of names, rooms and
text, sanitising of untrusted text, and the human-readable text mode used by ``nc`` and
``telnet`` users. The server, the client, ``bench`` and ``replay`` all share this module,
and because it never touches a socket it can be unit-tested and fuzzed on its own.

The specification is docs/protocol.md.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from typing import Annotated, Any, Final

import msgspec

from chatcli.errors import FrameTooLarge, ProtocolError

__all__ = [
    "DEFAULT_MAX_FRAME",
    "DEFAULT_ROOM",
    "ERROR_CODES",
    "LEAVE_REASONS",
    "MAX_TEXT",
    "PROTOCOL_VERSION",
    "Bye",
    "ClientEvent",
    "DirectMessage",
    "Error",
    "Hello",
    "JoinRoom",
    "Joined",
    "Left",
    "LineFramer",
    "Me",
    "Msg",
    "Ping",
    "Pong",
    "Ready",
    "RoomInfo",
    "RoomList",
    "RoomsRequest",
    "Say",
    "SendDirect",
    "ServerEvent",
    "Users",
    "Welcome",
    "Who",
    "clean_text",
    "decode_client_frame",
    "decode_server_frame",
    "encode",
    "format_text_event",
    "name_key",
    "now",
    "parse_text_line",
    "valid_name",
    "valid_room",
]

PROTOCOL_VERSION: Final = 1
DEFAULT_ROOM: Final = "lobby"
DEFAULT_MAX_FRAME: Final = 65536
MAX_TEXT: Final = 4096

ERROR_CODES: Final = frozenset(
    {
        "bad_request",
        "unknown_type",
        "frame_too_large",
        "name_invalid",
        "name_taken",
        "login_timeout",
        "auth_failed",
        "not_logged_in",
        "no_such_user",
        "rate_limited",
        "slow_consumer",
        "server_shutdown",
    }
)
LEAVE_REASONS: Final = frozenset({"quit", "part", "lost", "timeout", "slow", "kicked"})

Ref = str | int | None
NonNegative = Annotated[int, msgspec.Meta(ge=0)]


def now() -> float:
    """Server time as the wire carries it: Unix seconds, millisecond precision."""
    return round(time.time(), 3)


# --------------------------------------------------------------------------- events
# Both directions share one tag field, "type". A class is an event of one direction,
# except ping/pong, which either side may send.


class _Event(msgspec.Struct, tag_field="type", frozen=True, omit_defaults=True):
    """Base of every frame: a small immutable record tagged by its ``type``."""


class Ping(_Event, tag="ping", frozen=True):
    """Heartbeat probe; the other side answers ``pong``."""


class Pong(_Event, tag="pong", frozen=True):
    """Answer to ``ping``."""


# Client -> server


class Hello(_Event, tag="hello", frozen=True):
    """Login: the first JSON frame of a session."""

    name: str
    room: str | None = None
    since: NonNegative | None = None
    history: NonNegative | None = None
    ref: Ref = None


class Say(_Event, tag="say", frozen=True):
    """Say ``text`` in the current room; ``ref`` is echoed back to the sender only."""

    text: str
    ref: Ref = None


class Me(_Event, tag="me", frozen=True):
    """An action (``/me waves``), relayed as ``msg`` with ``action: true`` (extension)."""

    text: str
    ref: Ref = None


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


ClientEvent = Hello | Say | Me | SendDirect | Who | RoomsRequest | JoinRoom | Bye | Ping | Pong
CLIENT_TYPES: Final = frozenset(
    {"hello", "say", "me", "dm", "who", "rooms", "join", "bye", "ping", "pong"}
)

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


class RoomList(_Event, tag="rooms", frozen=True):
    """Answer to ``rooms``."""

    rooms: list[RoomInfo]


class Error(_Event, tag="error", frozen=True):
    """Something went wrong; ``code`` is one of ERROR_CODES."""

    code: str
    message: str
    ref: Ref = None


ServerEvent = (
    Welcome | Ready | Joined | Left | Msg | DirectMessage | Users | RoomList | Error | Ping | Pong
)
SERVER_TYPES: Final = frozenset(
    {"welcome", "ready", "join", "leave", "msg", "dm", "users", "rooms", "error", "ping", "pong"}
)

# ------------------------------------------------------------------------ encoding

_encoder = msgspec.json.Encoder()
_client_decoder = msgspec.json.Decoder(ClientEvent)
_server_decoder = msgspec.json.Decoder(ServerEvent)
# msgspec raises RecursionError for deeply nested JSON such as "[[[[...": a bad request too
_DECODE_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, RecursionError)


def encode(event: msgspec.Struct) -> bytes:
    """One frame on the wire: the event as compact JSON and a newline."""
    return _encoder.encode(event) + b"\n"


def _classify(line: bytes, exc: Exception, known: frozenset[str]) -> ProtocolError:
    """Turn a failed typed decode into the error the spec assigns (slow path only)."""
    try:
        # msgspec < 0.23 raised UnicodeDecodeError for invalid UTF-8, 0.23 a DecodeError:
        # check the encoding first so both give the same answer
        line.decode("utf-8")
        raw = msgspec.json.decode(line)
    except UnicodeDecodeError:
        return ProtocolError("bad_request", "frame is not valid UTF-8")
    except msgspec.DecodeError as err:
        return ProtocolError("bad_request", f"frame is not valid JSON ({err})")
    except RecursionError:
        return ProtocolError("bad_request", "frame is nested too deeply")
    if not isinstance(raw, dict):
        return ProtocolError("bad_request", f"frame must be a JSON object, not {_json_kind(raw)}")
    ref = raw.get("ref")
    ref = ref if isinstance(ref, (str, int)) and not isinstance(ref, bool) else None
    kind = raw.get("type")
    if not isinstance(kind, str):
        return ProtocolError("bad_request", 'frame has no string "type" field', ref)
    if kind not in known:
        return ProtocolError("unknown_type", f"unknown type {_preview(kind)}", ref)
    return ProtocolError("bad_request", f"bad {kind!r} frame: {exc}", ref)


def _json_kind(value: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


def _preview(text: str, limit: int = 40) -> str:
    shown = clean_text(text)
    return repr(shown if len(shown) <= limit else shown[:limit] + "...")


def decode_client_frame(line: bytes) -> ClientEvent:
    """Decode and validate one line a client sent; raise ProtocolError with the spec's code.

    Text carried by ``say``, ``me`` and ``dm`` comes back cleaned (see clean_text) and
    checked for length, so the relay never sees text the spec refuses.
    """
    try:
        event = _client_decoder.decode(line)
    except _DECODE_ERRORS as exc:
        raise _classify(line, exc, CLIENT_TYPES) from exc
    if isinstance(event, (Say, Me, SendDirect)):
        text = checked_text(event.text, event.ref)
        if text is not event.text:
            event = msgspec.structs.replace(event, text=text)
    return event


def decode_server_frame(line: bytes) -> ServerEvent:
    """Decode one line a server sent; unknown fields are ignored, unknown types refused."""
    try:
        return _server_decoder.decode(line)
    except _DECODE_ERRORS as exc:
        raise _classify(line, exc, SERVER_TYPES) from exc


# ------------------------------------------------------------------------- framing


class LineFramer:
    """Splits a byte stream into frames (lines), enforcing the maximum frame size.

    ``feed`` returns complete lines with the newline and an optional ``\\r`` removed; empty
    lines are skipped. A line (or an unfinished tail) longer than ``max_frame`` raises
    FrameTooLarge, after which the stream cannot be resynchronised and must be closed;
    the error carries the complete frames that came before the long line.
    """

    __slots__ = ("_held", "_pending", "_tail", "max_frame")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._tail = b""
        #: chunks of an unfinished line received after ``_tail``, joined once it ends:
        #: copying the tail on every chunk made a long line cost quadratic time
        self._held: list[bytes] = []
        self._pending = 0

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the complete frames they finish."""
        # an unfinished tail may end with the \r of its line ending: allow one byte for it
        if b"\n" not in data:
            if self._pending + len(data) > self.max_frame + 1:
                raise FrameTooLarge(self.max_frame)
            self._pending += len(data)
            if self._tail:
                self._held.append(data)
            else:
                self._tail = data
            return []
        if self._tail:
            data = b"".join([self._tail, *self._held, data])
            self._held.clear()
        lines = data.split(b"\n")
        self._tail = lines.pop()
        self._pending = len(self._tail)
        limit = self.max_frame
        if len(data) <= limit and b"\r" not in data and all(lines):
            return lines  # the common case: no line can be too long, empty or end in \r
        frames: list[bytes] = []
        for line in lines:
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                continue
            if len(line) > limit:
                raise FrameTooLarge(limit, frames)
            frames.append(line)
        if len(self._tail) > limit + 1:
            raise FrameTooLarge(limit, frames)
        return frames

    @property
    def pending(self) -> int:
        """Bytes of an unfinished line held back."""
        return self._pending


# -------------------------------------------------------------------- validation

_NAME_RE: Final = re.compile(r"[A-Za-z0-9_.\-]{1,24}")
_ROOM_RE: Final = re.compile(r"[a-z0-9_\-]{1,32}")
RESERVED_NAMES: Final = frozenset({"server", "system"})


def valid_name(name: str) -> bool:
    """True for 1-24 ASCII letters, digits, ``_ - .`` that are not reserved."""
    return _NAME_RE.fullmatch(name) is not None and name.lower() not in RESERVED_NAMES


def name_key(name: str) -> str:
    """The identity of a name: names are unique case-insensitively."""
    return name.lower()


def valid_room(room: str) -> bool:
    """True for 1-32 lowercase letters, digits, ``_`` and ``-``."""
    return _ROOM_RE.fullmatch(room) is not None


# Escape sequences, payload included: CSI (ESC [ or 0x9B), OSC/DCS/SOS/PM/APC strings
# (ESC ] P X ^ _ or their C1 forms) up to their terminator or the end of the text, and
# two-character escapes. Then every remaining C0, C1, DEL and bidi control character.
_ANSI_RE: Final = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?"
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|\x1b[ -~]?"
)
_CONTROL_RE: Final = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def clean_text(text: str) -> str:
    """Remove ANSI escape sequences, control and bidi-override characters from ``text``.

    Used on everything a peer or a transcript supplies before it is relayed or shown, so
    that nothing can move the cursor, retitle a terminal or reorder what a reader sees.
    Returns ``text`` itself when there is nothing to remove (the common case, checked fast).
    """
    if text.isprintable():
        return text
    return _CONTROL_RE.sub("", _ANSI_RE.sub("", text))


def checked_text(text: str, ref: Ref = None) -> str:
    """Clean message text and enforce 1-4096 code points of visible text."""
    text = clean_text(text)
    if not text or text.isspace():
        raise ProtocolError("bad_request", "text is empty", ref)
    if len(text) > MAX_TEXT:
        raise ProtocolError("bad_request", f"text is longer than {MAX_TEXT} characters", ref)
    return text


# -------------------------------------------------------------------- text mode

TEXT_HELP: Final = (
    "commands: login NAME | say TEXT | look | logout | /who | /rooms | /join ROOM | "
    "/msg NAME TEXT | /me TEXT | /quit | /help; any other line is said to the room"
)


def parse_text_line(line: str, logged_in: bool) -> ClientEvent | str:
    """Translate one line of a text (nc/telnet) session into a client event.

    Returns a string instead when the line is answered locally (help or a usage hint)
    rather than acted on. Raises ProtocolError for text the spec refuses.
    """
    stripped = line.strip()
    word, _, rest = stripped.partition(" ")
    rest = rest.strip()
    command = word.lower()
    if rest and command in ("help", "look", "logout"):
        command = ""  # these bare words take no argument: "look at this" is chat
    if command in ("/help", "help", "/?"):
        return TEXT_HELP
    if command == "login":
        if logged_in:
            return "you are already logged in"
        if not rest:
            return "usage: login NAME"
        return Hello(name=rest)
    if command in ("logout", "/quit", "/exit"):
        return Bye()
    if not logged_in:
        raise ProtocolError("not_logged_in", "log in first: login NAME")
    if command in ("look", "/who", "/users", "/look"):
        return Who()
    if command == "/rooms":
        return RoomsRequest()
    if command == "/join":
        if not rest:
            return "usage: /join ROOM"
        return JoinRoom(room=rest)
    if command in ("/msg", "/dm"):
        to, _, text = rest.partition(" ")
        if not to or not text.strip():
            return "usage: /msg NAME TEXT"
        return SendDirect(to=to, text=checked_text(text))
    if command == "/me":
        return Me(text=checked_text(rest)) if rest else "usage: /me TEXT"
    if command == "say":
        return Say(text=checked_text(rest))
    if stripped.startswith("/"):
        return f"unknown command {_preview(word)}; /help lists them"
    return Say(text=checked_text(line))


def _clock(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts))


def format_text_event(event: ServerEvent) -> str | None:
    """One human-readable line for a text-mode session, or None for events it skips."""
    if isinstance(event, Msg):
        if event.action:
            return f"{_clock(event.ts)} [{event.room}] * {event.from_} {event.text}"
        return f"{_clock(event.ts)} [{event.room}] <{event.from_}> {event.text}"
    if isinstance(event, DirectMessage):
        return f"{_clock(event.ts)} *{event.from_} -> {event.to}* {event.text}"
    if isinstance(event, Joined):
        return f"{_clock(event.ts)} -- {event.name} joined {event.room}"
    if isinstance(event, Left):
        return f"{_clock(event.ts)} -- {event.name} left {event.room} ({event.reason})"
    if isinstance(event, Ready):
        lines = [format_text_event(m) for m in event.history]
        lines.append(
            f"-- you are {event.name} in {event.room}; here: {', '.join(event.users)}"
            + (" (older history not kept)" if event.truncated else "")
        )
        return "\n".join(line for line in lines if line)
    if isinstance(event, Users):
        return f"-- in {event.room}: {', '.join(event.users)}"
    if isinstance(event, RoomList):
        return "-- rooms: " + ", ".join(f"{r.name} ({r.users})" for r in event.rooms)
    if isinstance(event, Error):
        return f"!! {event.code}: {event.message}"
    if isinstance(event, Welcome):
        return f"-- welcome to {event.server}. {event.hint}"
    return None


def room_infos(counts: Iterable[tuple[str, int]]) -> list[RoomInfo]:
    """RoomInfo objects for (name, user count) pairs, sorted by name."""
    return [RoomInfo(name=name, users=users) for name, users in sorted(counts)]
