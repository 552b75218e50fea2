"""The chatcli wire protocol, version 1, without any I/O: codec, framing, validation.

Everything that turns bytes into typed events and back lives here: line framing with a
maximum frame size, the JSON codec of both directions, validation of names and rooms,
and the human-readable text mode used by ``nc`` and ``telnet`` users. The event types
themselves, the error codes and the line each event shows as are declared once in
:mod:`chatcli.core.events` (re-exported here, where the rest of chatcli imports them from);
untrusted text is cleaned by :mod:`chatcli.core.sanitize`. The server, the client,
``bench`` and ``replay`` all share this module, and because it never touches a socket it
can be unit-tested and fuzzed on its own.

The specification is docs/protocol.md.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from typing import Final

import msgspec

from chatcli.core.commands import DEFAULT_MUTE_MINUTES, TEXT_HELP, Command, parse_command
from chatcli.core.events import (
    CLIENT_TYPES,
    ERROR_CODES,
    FATAL_CODES,
    LEAVE_REASONS,
    MAX_REASON,
    MAX_SECRET,
    MIN_PASSWORD,
    SERVER_TYPES,
    Ban,
    Bye,
    ChangePassword,
    ClientEvent,
    DirectMessage,
    Error,
    Hello,
    Joined,
    JoinRoom,
    Kick,
    Left,
    Me,
    Msg,
    Mute,
    Nick,
    Ping,
    Pong,
    Ready,
    Register,
    RoomInfo,
    RoomList,
    RoomsRequest,
    Say,
    SendDirect,
    ServerEvent,
    Unban,
    Users,
    Welcome,
    Who,
    event_lines,
    event_type,
)
from chatcli.core.lines import TEXT_MODE, plain_text
from chatcli.core.names import RESERVED_NAMES, name_key, valid_name
from chatcli.core.sanitize import MAX_TEXT, checked_text, clean_text, json_kind, preview
from chatcli.errors import FrameTooLarge, ProtocolError

__all__ = [
    "CLIENT_TYPES",
    "DEFAULT_MAX_FRAME",
    "DEFAULT_ROOM",
    "ERROR_CODES",
    "FATAL_CODES",
    "LEAVE_REASONS",
    "MAX_TEXT",
    "PROTOCOL_VERSION",
    "RESERVED_NAMES",
    "SERVER_TYPES",
    "TEXT_HELP",
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
    "ServerPasswordLine",
    "Users",
    "Welcome",
    "Who",
    "checked_text",
    "clean_text",
    "decode_client_frame",
    "decode_server_frame",
    "encode",
    "format_text_event",
    "name_key",
    "now",
    "parse_text_line",
    "room_infos",
    "valid_name",
    "valid_room",
]

PROTOCOL_VERSION: Final = 1
DEFAULT_ROOM: Final = "lobby"
DEFAULT_MAX_FRAME: Final = 65536


def now() -> float:
    """Server time as the wire carries it: Unix seconds, millisecond precision."""
    return round(time.time(), 3)


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
        return ProtocolError("bad_request", f"frame must be a JSON object, not {json_kind(raw)}")
    ref = raw.get("ref")
    ref = ref if isinstance(ref, (str, int)) and not isinstance(ref, bool) else None
    kind = raw.get("type")
    if not isinstance(kind, str):
        return ProtocolError("bad_request", 'frame has no string "type" field', ref)
    if kind not in known:
        return ProtocolError("unknown_type", f"unknown type {preview(kind)}", ref)
    return ProtocolError("bad_request", f"bad {kind!r} frame: {exc}", ref)


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
    lines are skipped. A telnet line end, CR NUL, ends a line too (telnet clients send it
    for Enter in some modes, and never a newline). A line (or an unfinished tail) longer
    than ``max_frame`` raises FrameTooLarge, after which the stream cannot be
    resynchronised and must be closed; the error carries the complete frames that came
    before the long line.

    An unfinished line is held in one ``bytearray``, so what it costs is its length in
    bytes however many pieces it arrived in (one object per chunk made 2-byte segments
    cost twenty times their size), and appending to it is amortised constant time.
    """

    __slots__ = ("_buf", "max_frame")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        #: the unfinished line received so far
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the complete frames they finish."""
        buf = self._buf
        if b"\r\x00" in data:  # telnet's CR NUL: a line end
            data = data.replace(b"\r\x00", b"\r\n")
        if buf and data[:1] == b"\x00" and buf[-1] == 13:  # CR NUL split between reads
            data = b"\n" + data[1:]
        # an unfinished tail may end with the \r of its line ending: allow one byte for it
        if b"\n" not in data:
            if len(buf) + len(data) > self.max_frame + 1:
                raise FrameTooLarge(self.max_frame)
            buf += data
            return []
        if buf:
            buf += data
            data = bytes(buf)
            buf.clear()
        lines = data.split(b"\n")
        tail = lines.pop()
        if tail:
            buf += tail
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
        if len(tail) > limit + 1:
            raise FrameTooLarge(limit, frames)
        return frames

    @property
    def pending(self) -> int:
        """Bytes of an unfinished line held back."""
        return len(self._buf)


# -------------------------------------------------------------------- validation

_ROOM_RE: Final = re.compile(r"[a-z0-9_\-]{1,32}")
# Names in every script (spec 1.1, section 2) live in chatcli.core.names; re-exported here,
# where the rest of chatcli imports them from.


def valid_room(room: str) -> bool:
    """True for 1-32 lowercase letters, digits, ``_`` and ``-``."""
    return _ROOM_RE.fullmatch(room) is not None


# -------------------------------------------------------------------- text mode


class ServerPasswordLine:
    """A text session's ``pass PASSWORD`` line: the connection keeps the password for the
    ``hello`` its ``login`` line makes. Its repr never shows the password."""

    __slots__ = ("password",)

    def __init__(self, password: str) -> None:
        self.password = password

    def __repr__(self) -> str:
        return "ServerPasswordLine(***)"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ServerPasswordLine) and other.password == self.password

    __hash__ = None  # type: ignore[assignment]


#: what a text session is told after ``pass`` (never the password itself)
PASS_TAKEN: Final = "server password noted; now: login NAME [PASSWORD]"
_PASSWORD_RULE: Final = "passwords are 8-256 characters"
_ALREADY_IN: Final = "you are already logged in"


def parse_text_line(
    line: str, logged_in: bool, server_password: str | None = None
) -> ClientEvent | ServerPasswordLine | str:
    """Translate one line of a text (nc/telnet) session into a client event.

    Parsing is :func:`chatcli.core.commands.parse_command`, the parser ``join`` uses too.
    Returns a string instead when the line is answered locally (help, a usage hint or an
    unknown command) rather than acted on, and a :class:`ServerPasswordLine` for ``pass``
    (the connection keeps it and passes it back as ``server_password`` for ``login``).
    Raises ProtocolError for text the spec refuses and for anything but ``help``,
    ``pass``, ``login`` and ``logout`` before login. A password on a line is never put
    in a reply or an error message.
    """
    command = parse_command(line, "text")
    verb = command.verb
    if verb == "help":
        return TEXT_HELP
    if verb == "login":
        if logged_in:
            return _ALREADY_IN
        if command.error:
            return command.error
        return Hello(
            name=command.arg, password=command.text or None, server_password=server_password
        )
    if verb == "pass":
        if logged_in:  # never said to the room: it may well be a password
            return f"{_ALREADY_IN} (pass gives the server password before login)"
        if command.error:
            return command.error
        return ServerPasswordLine(command.text)
    if verb == "quit":
        return Bye()
    if not logged_in:
        raise ProtocolError("not_logged_in", "log in first: login NAME")
    if command.error:
        return command.error
    account = _account_event(command)
    if account is not None:
        return account
    if verb == "who":
        return Who()
    if verb == "rooms":
        return RoomsRequest()
    if verb == "join":
        return JoinRoom(room=command.arg)
    if verb == "msg":
        return SendDirect(to=command.arg, text=checked_text(command.text))
    if verb == "me":
        return Me(text=checked_text(command.text))
    return Say(text=checked_text(command.text))


def _account_event(command: Command) -> ClientEvent | None:
    """The frame of a text-mode account, name or operator command; None for other verbs.

    The fields are checked here as the JSON decoder checks them (a struct built in code
    is not validated), with the same answers.
    """
    verb = command.verb
    if verb == "register":
        return Register(password=_new_password(command.text))
    if verb == "password":
        if len(command.arg) > MAX_SECRET:
            raise ProtocolError("bad_request", _PASSWORD_RULE)
        return ChangePassword(old=command.arg, new=_new_password(command.text))
    if verb == "nick":
        return Nick(name=command.arg)
    if verb in ("kick", "ban") and len(command.text) > MAX_REASON:
        raise ProtocolError("bad_request", f"a reason is at most {MAX_REASON} characters")
    if verb == "kick":
        return Kick(name=command.arg, reason=command.text)
    if verb == "ban":
        return Ban(name=command.arg, minutes=command.minutes or 0, reason=command.text)
    if verb == "unban":
        return Unban(name=command.arg)
    if verb == "mute":
        minutes = DEFAULT_MUTE_MINUTES if command.minutes is None else command.minutes
        return Mute(name=command.arg, minutes=minutes)
    if verb == "unmute":
        return Mute(name=command.arg, minutes=0)
    return None


def _new_password(password: str) -> str:
    if not MIN_PASSWORD <= len(password) <= MAX_SECRET:
        raise ProtocolError("bad_request", _PASSWORD_RULE)
    return password


def format_text_event(event: ServerEvent) -> str | None:
    """The line(s) a text-mode session is sent for ``event``, or None for events it skips.

    The same layout as ``join`` and ``replay`` print (chatcli.core.events), with the time
    and room in front of every message (:data:`chatcli.core.lines.TEXT_MODE`).
    """
    entry = event_type(event)
    if entry is None or not entry.text:
        return None
    return plain_text(event_lines(event, TEXT_MODE))


def room_infos(counts: Iterable[tuple[str, int]]) -> list[RoomInfo]:
    """RoomInfo objects for (name, user count) pairs, sorted by name."""
    return [RoomInfo(name=name, users=users) for name, users in sorted(counts)]
