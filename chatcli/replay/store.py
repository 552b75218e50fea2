"""A room of a store, read as a transcript: so that a store is never a dead end.

``chatcli replay STORE.db --room lobby`` plays a room's history straight from the SQLite
file a ``chatcli serve --store`` writes (read-only, beside a running server if need be).
The room is turned into the transcript a server recorder would have written for it (a
``transcript`` header with ``source`` "server" and the room, one ``msg`` line per stored
message, an ``end`` line) and streamed through the one transcript reader, so every filter,
format and ``--check`` of ``replay`` works on it unchanged, and ``--format jsonl`` exports
it as a transcript file. Only messages are stored, so only ``msg`` lines appear.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import IO

from chatcli import __version__
from chatcli.core.protocol import encode
from chatcli.errors import StoreError, UsageError
from chatcli.store.sqlite import RoomInfo, is_store, list_rooms, read_room
from chatcli.transcript import TRANSCRIPT_VERSION, End, Header

__all__ = ["choose_room", "is_store", "open_room", "room_lines", "rooms_table"]


def choose_room(path: str, rooms: tuple[str, ...]) -> str:
    """The one room to read from the store at ``path``: the ``--room`` given, or its only one.

    Raises UsageError naming the store's rooms when that is not one existing room.
    """
    known = [info.name for info in list_rooms(path)]
    if len(rooms) > 1:
        raise UsageError("a store is played one room at a time: give one --room")
    if not rooms:
        if len(known) == 1:
            return known[0]
        if not known:
            raise UsageError(f"the store {path} holds no rooms")
        raise UsageError(
            f"the store {path} holds {len(known)} rooms: give --room "
            f"(one of {', '.join(known)}), or see them with --list-rooms"
        )
    if rooms[0] not in known:
        listed = ", ".join(known) if known else "none"
        raise UsageError(f"the store {path} has no room {rooms[0]!r} (its rooms: {listed})")
    return rooms[0]


def room_lines(path: str, room: str) -> Iterator[bytes]:
    """The transcript lines of ``room``: header, one ``msg`` per stored message, ``end``."""
    info = next((i for i in list_rooms(path) if i.name == room), None)
    if info is None:
        raise StoreError(f"the store {path} has no room {room!r}")
    first = info.first_ts if info.first_ts is not None else 0.0
    yield encode(
        Header(
            version=TRANSCRIPT_VERSION,
            started=datetime.fromtimestamp(first, UTC).replace(microsecond=0),
            source="server",
            recorder=f"chatcli {__version__} (store {os.path.basename(path)})",
            room=room,
        )
    )
    events, last = 0, first
    for msg in read_room(path, room):
        yield encode(msg)
        events += 1
        last = msg.ts
    yield encode(End(ts=last, events=events))


class _LineStream(io.RawIOBase):
    """A read-only binary stream over an iterator of lines (read as they are needed)."""

    def __init__(self, lines: Iterator[bytes], name: str) -> None:
        super().__init__()
        self._lines = lines
        self._pending = b""
        self.name = name

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self._pending:
            try:
                self._pending = next(self._lines)
            except StopIteration:
                return 0
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def close(self) -> None:
        close = getattr(self._lines, "close", None)
        if close is not None:
            close()
        super().close()


def open_room(path: str, room: str) -> IO[bytes]:
    """``room`` of the store at ``path`` as a transcript stream, named ``PATH#ROOM``.

    Raises StoreError when the store cannot be read (see chatcli.store.sqlite).
    """
    lines = room_lines(path, room)
    first = next(lines)  # fail now, not in the middle of playing, if the store is unreadable
    stream = _LineStream(_chain(first, lines), f"{path}#{room}")
    return io.BufferedReader(stream)


def _chain(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    yield first
    yield from rest


def rooms_table(path: str) -> list[str]:
    """``--list-rooms``: one line per room (messages held, ids, time span), then a total."""
    rooms = list_rooms(path)
    lines = [_room_line(info) for info in rooms]
    total = sum(info.messages for info in rooms)
    lines.append(f"{_count(len(rooms), 'room')}, {_count(total, 'message')} in {path}")
    return lines


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'s' if n != 1 else ''}"


def _room_line(info: RoomInfo) -> str:
    held = _count(info.messages, "message")
    if not info.messages or info.first_ts is None or info.last_ts is None:
        return f"{info.name}\t{held}"
    span = " .. ".join(
        datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        for ts in (info.first_ts, info.last_ts)
    )
    return f"{info.name}\t{held}\tids {info.first_id}-{info.last_id}\t{span}"
