"""Transcripts: the one reader and writer of recorded chats, used by everything.

A transcript is JSON Lines (docs/protocol.md, "Transcripts"): line 1 is a header
``{"type":"transcript","version":1,"started":...,"source":"server|client","recorder":...}``,
then one wire event per line (``msg``, ``dm``, ``join``, ``leave``, each with its ``ts``),
then ``{"type":"end","ts":...,"events":N}`` when the recording was closed cleanly.

The writer writes every line whole and flushes it at once, so a crash loses at most the
line being written. The reader streams (it never holds more than one line), tolerates what
a crash leaves behind (a truncated last line, no ``end``) with a warning, reports any other
bad line as ``FILE:LINE: reason``, and skips event types and fields it does not know.
:class:`TranscriptParser` is the sans-I/O core of the reader: lines in, typed items out.
"""

from __future__ import annotations

import io
import os
import sys
import time
from collections.abc import Callable, Generator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Final, NamedTuple, Union

import msgspec

from chatcli import __version__
from chatcli.core.events import RECORDED, RECORDED_TYPES, RecordedEvent, event_type
from chatcli.core.protocol import (
    Joined,
    Ready,
    encode,
    now,
    valid_room,
)
from chatcli.core.sanitize import json_kind
from chatcli.errors import TranscriptError

__all__ = [
    "DEFAULT_MAX_LINE",
    "DEFAULT_POLL_INTERVAL",
    "RECORDED_TYPES",
    "TRANSCRIPT_VERSION",
    "CheckResult",
    "End",
    "Entry",
    "Header",
    "Item",
    "ServerRecorder",
    "TranscriptEvent",
    "TranscriptParser",
    "TranscriptReader",
    "TranscriptWriter",
    "check_transcript",
    "client_filename",
    "last_timestamp",
    "read_transcript",
    "server_filename",
]

TRANSCRIPT_VERSION: Final = 1
# A transcript line is one wire frame (64 KiB by default, more with `serve --max-frame`);
# anything far beyond that is not a transcript line, and reading it whole could eat memory.
DEFAULT_MAX_LINE: Final = 1 << 20
DEFAULT_POLL_INTERVAL: Final = 0.25
SOURCES: Final = frozenset({"server", "client"})
STDIN_NAME: Final = "<stdin>"


class _Line(msgspec.Struct, tag_field="type", frozen=True, omit_defaults=True):
    """Base of the transcript's own line types (the events are the protocol's)."""


class Header(_Line, tag="transcript", frozen=True):
    """Line 1 of every transcript: what recorded it, when, and (optionally) where."""

    version: int
    started: datetime
    source: str
    recorder: str
    room: str | None = None  # server files: the room; client files: the first room
    name: str | None = None  # client files: the user who recorded
    host: str | None = None  # server: address it listened on; client: server address


class End(_Line, tag="end", frozen=True):
    """The last line of a transcript that was closed cleanly."""

    ts: float
    events: int


#: the events a transcript records (chatcli.core.events.EVENTS marks them ``recorded``)
TranscriptEvent = RecordedEvent
Item = Header | RecordedEvent | End
_KNOWN_TYPES: Final = RECORDED_TYPES | {"transcript", "end"}
# built from the table, so a reader reads every type the writer records
_decoder: msgspec.json.Decoder[Item] = msgspec.json.Decoder(
    Union[(Header, *(entry.cls for entry in RECORDED), End)]
)


class Entry(NamedTuple):
    """One item read from a transcript, the line number (from 1) it was on, and that line.

    ``raw`` is the line as stored (no newline), unknown fields included, for tools that
    pass events through unchanged (``replay --format jsonl``).
    """

    line: int
    event: Item
    raw: bytes = b""


# --------------------------------------------------------------------------- writer


def _started(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC).replace(microsecond=0)


class TranscriptWriter:
    """Writes one transcript: the header at once, one flushed line per event, ``end`` on close.

    Use :meth:`create` to start a new file; the constructor takes an open binary stream
    (closed by :meth:`close` unless ``close_file`` is false). ``clock`` gives Unix seconds.
    """

    def __init__(
        self,
        file: IO[bytes],
        *,
        source: str,
        path: str = "<transcript>",
        room: str | None = None,
        name: str | None = None,
        host: str | None = None,
        clock: Callable[[], float] = now,
        close_file: bool = True,
    ) -> None:
        if source not in SOURCES:
            raise ValueError(f"source must be 'server' or 'client', not {source!r}")
        self.path = path
        self.events = 0
        self.lines = 0
        self.closed = False
        self._file = file
        self._clock = clock
        self._close_file = close_file
        self.header = Header(
            version=TRANSCRIPT_VERSION,
            started=_started(clock()),
            source=source,
            recorder=f"chatcli {__version__}",
            room=room,
            name=name,
            host=host,
        )
        try:
            self._write_line(encode(self.header))
        except TranscriptError:
            if close_file:
                file.close()
            raise

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        *,
        source: str,
        unique: bool = True,
        **options: Any,
    ) -> TranscriptWriter:
        """Start a new transcript at ``path``, creating its directory; never overwrite a file.

        With ``unique`` an existing name gets a counter (``x.jsonl`` -> ``x.2.jsonl``, a
        ``.`` that no room name contains); without it an existing file is an error.
        Options are those of the constructor.
        """
        target = Path(path)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            file, target = _open_new(target, unique)
        except OSError as exc:
            raise TranscriptError(str(target), 0, f"cannot create: {_why(exc)}") from exc
        return cls(file, source=source, path=str(target), **options)

    def write(self, event: object) -> bool:
        """Record ``event`` if a transcript keeps it; True when a line was written.

        The recorded events (``msg``, ``dm``, ``join``, ``leave`` and the board's
        ``draw``, ``erase``, ``move``, ``clear``: those the event table marks
        ``recorded``) are written as on the wire, minus the sender-only ``ref``. A
        ``ready`` (the recorder itself entering a room, which the wire announces to everyone
        else as ``join``) is written as that ``join``, stamped with the clock. Every other
        event (``users``, ``error``, ``ping``...) is skipped.
        """
        if isinstance(event, Ready):
            event = Joined(room=event.room, name=event.name, ts=self._clock())
        entry = event_type(event)
        if entry is None or not entry.recorded or not isinstance(event, msgspec.Struct):
            return False
        if getattr(event, "ref", None) is not None:
            event = msgspec.structs.replace(event, ref=None)
        self._write_line(encode(event))
        self.events += 1
        return True

    def close(self) -> None:
        """Write ``end`` and close the file; calling it again does nothing."""
        if self.closed:
            return
        try:
            self._write_line(encode(End(ts=self._clock(), events=self.events)))
        finally:
            self.closed = True
            if self._close_file:
                self._file.close()

    def __enter__(self) -> TranscriptWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _write_line(self, data: bytes) -> None:
        if self.closed:
            raise TranscriptError(self.path, self.lines + 1, "transcript is closed")
        try:
            # One line, written whole: an unbuffered file may take it in pieces.
            view = memoryview(data)
            while view:
                written = self._file.write(view)
                view = view[written or len(view) :]  # None/0: a stream that took it all
            self._file.flush()
        except OSError as exc:
            raise TranscriptError(self.path, self.lines + 1, f"cannot write: {_why(exc)}") from exc
        self.lines += 1


def _open_new(target: Path, unique: bool) -> tuple[IO[bytes], Path]:
    candidate, counter = target, 1
    while True:
        try:
            return open(candidate, "xb", buffering=0), candidate
        except FileExistsError:
            if not unique:
                raise
            counter += 1
            candidate = target.with_name(f"{target.stem}.{counter}{target.suffix}")


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)


def client_filename(when: datetime | None = None) -> str:
    """The name ``join``'s ``/record`` gives a transcript: ``record_chat_<date>_<time>.jsonl``.

    ``when`` defaults to now, in local time (these files are named for people).
    """
    when = when or datetime.now()
    return when.strftime("record_chat_%Y-%m-%d_%H-%M-%S.jsonl")


def server_filename(room: str, when: datetime | float) -> str:
    """The name of one room's transcript of one server run: ``<YYYYmmdd-HHMMSS>_<room>.jsonl``.

    The stamp is the run's start in UTC, so ``ls`` sorts a directory of recordings by time
    whatever the server's time zone or daylight saving.
    """
    if not valid_room(room):
        raise ValueError(f"not a room name: {room!r}")
    if not isinstance(when, datetime):
        when = datetime.fromtimestamp(when, UTC)
    return f"{when.astimezone(UTC):%Y%m%d-%H%M%S}_{room}.jsonl"


class ServerRecorder:
    """``serve --record DIR``: one transcript per room per run, opened at the room's first event.

    Direct messages belong to no room; they are private, so they are recorded only with
    ``record_dms``, in their own file ``<stamp>.dm.jsonl``. :meth:`close` ends every file.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        host: str | None = None,
        clock: Callable[[], float] = now,
        record_dms: bool = False,
    ) -> None:
        self.directory = Path(directory)
        self.host = host
        self.record_dms = record_dms
        self._clock = clock
        self._run_started = clock()
        self._writers: dict[str | None, TranscriptWriter] = {}

    @property
    def paths(self) -> list[str]:
        """The files written so far, in the order they were opened."""
        return [writer.path for writer in self._writers.values()]

    def write(self, event: object) -> bool:
        """Record a relayed event in its room's file; True when a line was written.

        Recorded events that belong to no room (``dm``) go to the dm file, if kept.
        """
        entry = event_type(event)
        if entry is None or not entry.recorded:
            return False
        room = entry.room_of(event)
        if room is None and not self.record_dms:
            return False
        writer = self._writers.get(room)
        if writer is None:
            writer = self._writers[room] = self._open(room)
        return writer.write(event)

    def _open(self, room: str | None) -> TranscriptWriter:
        if room is None:
            stamp = _started(self._run_started).strftime("%Y%m%d-%H%M%S")
            filename = f"{stamp}.dm.jsonl"
        else:
            filename = server_filename(room, self._run_started)
        return TranscriptWriter.create(
            self.directory / filename,
            source="server",
            room=room,
            host=self.host,
            clock=self._clock,
        )

    def close(self) -> None:
        """Write ``end`` to every open transcript and close them all."""
        errors = []
        for writer in self._writers.values():
            try:
                writer.close()
            except TranscriptError as exc:
                errors.append(exc)
        if errors:
            raise errors[0]

    def __enter__(self) -> ServerRecorder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# --------------------------------------------------------------------------- parser


class TranscriptParser:
    """The reader's sans-I/O core: turns transcript lines into :class:`Entry` items.

    Feed it every line in order with :meth:`parse`, then call :meth:`finish`. Bad lines
    raise :class:`TranscriptError` (``path:line: reason``); what a crash leaves behind and
    other survivable oddities are appended to :attr:`warnings` instead.
    """

    def __init__(self, path: str = "<transcript>") -> None:
        self.path = path
        self.header: Header | None = None
        self.end: End | None = None
        self.end_line = 0
        self.events = 0  # recorded events read
        self.ignored = 0  # lines of types this reader does not know
        self.last_line = 0
        self.warnings: list[TranscriptError] = []

    def error(self, line: int, reason: str) -> TranscriptError:
        """A TranscriptError for ``line`` of this transcript."""
        return TranscriptError(self.path, line, reason)

    def parse(self, raw: bytes, line: int, *, unterminated: bool = False) -> Entry | None:
        """Parse line number ``line``; None for a line that yields nothing.

        ``unterminated`` marks the input's last line when it has no newline: if it does not
        parse, it is the line a crash cut short, and only a warning.
        """
        self.last_line = line
        raw = raw.rstrip(b"\r\n")
        if not raw.strip():
            return None
        if self.end is not None:
            raise self.error(line, f"line after the end line (line {self.end_line})")
        try:
            item = _decoder.decode(raw)
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
            if unterminated and self.header is not None and not _is_json(raw):
                self.warnings.append(
                    self.error(line, "last line is truncated (recording cut short)")
                )
                return None
            reason = self._why_bad(raw, exc)
            if reason is None:
                self.ignored += 1
                return None
            raise self.error(line, reason) from exc
        if self.header is None:
            if not isinstance(item, Header):
                raise self.error(line, "not a transcript: line 1 must be the transcript header")
            if item.version != TRANSCRIPT_VERSION:
                raise self.error(
                    line,
                    f"unsupported transcript version {item.version} "
                    f"(this chatcli reads version {TRANSCRIPT_VERSION})",
                )
            self.header = item
        elif isinstance(item, Header):
            raise self.error(line, "a second transcript header")
        elif isinstance(item, End):
            self.end, self.end_line = item, line
            if item.events != self.events:
                self.warnings.append(
                    self.error(line, f"end counts {item.events} events, read {self.events}")
                )
        else:
            self.events += 1
        return Entry(line, item, raw)

    def _why_bad(self, raw: bytes, exc: Exception) -> str | None:
        """Why a line failed to decode, or None for a type to skip (slow path only)."""
        try:
            # msgspec 0.23 reports invalid UTF-8 as a DecodeError: check the encoding first
            raw.decode("utf-8")
            value = msgspec.json.decode(raw)
        except UnicodeDecodeError:
            return "not valid UTF-8"
        except msgspec.DecodeError as err:
            detail = str(err).removeprefix("JSON is malformed: ")
            reason = f"not valid JSON ({detail[:1].lower()}{detail[1:]})"
            return reason if self.header else f"not a transcript: line 1 is {reason}"
        kind = value.get("type") if isinstance(value, dict) else None
        if self.header is None and kind != "transcript":
            return "not a transcript: line 1 must be the transcript header"
        if not isinstance(value, dict):
            return f"expected a JSON object, got {json_kind(value)}"
        if not isinstance(kind, str):
            return 'no string "type" field'
        if kind not in _KNOWN_TYPES:
            return None
        return f"bad {kind!r} line: {exc}"

    def finish(self) -> None:
        """The input ended: check for a missing header or ``end`` line."""
        if self.header is None:
            raise self.error(max(self.last_line, 1), "empty: no transcript header")
        if self.end is None:
            self.warnings.append(
                self.error(self.last_line, "no end line: the recording was cut short")
            )


def _is_json(raw: bytes) -> bool:
    try:
        msgspec.json.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return False
    return True


# --------------------------------------------------------------------------- reader

Source = str | os.PathLike[str] | IO[bytes] | IO[str]


class TranscriptReader:
    """Streams a transcript from a path, ``-`` (stdin) or an open stream, one line at a time.

    Iterating yields :class:`Entry` items (the header first, then events, then ``end``).
    ``strict`` raises the first bad line as TranscriptError; otherwise bad lines are
    skipped and collected in :attr:`problems`. :attr:`warnings` collects what a crash
    leaves behind (truncated last line, no ``end``) and never raises. A header that is
    missing or unreadable raises in both modes: nothing else in the file can be trusted.

    ``follow`` keeps reading a file that is still being written, like ``tail -f``: at the
    end of the data it calls ``sleep(poll_interval)`` and tries again, until ``end``
    (or until the consumer stops iterating). It has no effect on pipes, whose end is final.
    """

    def __init__(
        self,
        source: Source,
        *,
        strict: bool = True,
        follow: bool = False,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        sleep: Callable[[float], object] = time.sleep,
        max_line: int = DEFAULT_MAX_LINE,
        name: str | None = None,
    ) -> None:
        self.strict = strict
        self.follow = follow
        self.poll_interval = poll_interval
        self.max_line = max_line
        self._sleep = sleep
        self._owned = False
        if isinstance(source, (str, os.PathLike)):
            if os.fspath(source) == "-":
                self._file: IO[Any] = sys.stdin.buffer
                path = STDIN_NAME
            else:
                path = os.fspath(source)
                try:
                    self._file = open(path, "rb")  # noqa: SIM115
                except OSError as exc:
                    raise TranscriptError(path, 0, f"cannot open: {_why(exc)}") from exc
                self._owned = True
        else:
            self._file = source
            given = getattr(source, "name", None)
            path = given if isinstance(given, str) else "<stream>"
            if source is sys.stdin or source is getattr(sys.stdin, "buffer", None):
                path = STDIN_NAME
        self.path = name or path
        self.problems: list[TranscriptError] = []
        self._parser = TranscriptParser(self.path)
        self._entries = self._read()
        self._first: Entry | None = None

    @property
    def warnings(self) -> list[TranscriptError]:
        """Survivable problems seen so far (complete once iteration has finished)."""
        return self._parser.warnings

    @property
    def header(self) -> Header:
        """The transcript header, reading line 1 now if iteration has not reached it."""
        if self._parser.header is None and self._first is None:
            self._first = next(self._entries, None)
        if self._parser.header is None:  # pragma: no cover - _read raises first
            raise self._parser.error(1, "no transcript header")
        return self._parser.header

    @property
    def end(self) -> End | None:
        """The end line, once read; None when absent or not reached yet."""
        return self._parser.end

    @property
    def events(self) -> int:
        """How many recorded events have been read so far."""
        return self._parser.events

    @property
    def ignored(self) -> int:
        """How many lines of unknown types were skipped so far."""
        return self._parser.ignored

    def __iter__(self) -> Iterator[Entry]:
        return self

    def __next__(self) -> Entry:
        if self._first is not None:
            first, self._first = self._first, None
            return first
        return next(self._entries)

    def close(self) -> None:
        """Stop reading; closes the file if this reader opened it."""
        self._entries.close()
        if self._owned:
            self._file.close()

    def __enter__(self) -> TranscriptReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _bad(self, exc: TranscriptError) -> None:
        if self.strict or self._parser.header is None:
            raise exc
        self.problems.append(exc)

    def _read(self) -> Generator[Entry, None, None]:
        parser = self._parser
        for number, raw, unterminated in self._lines():
            if raw is None:
                self._bad(parser.error(number, f"line longer than {self.max_line} bytes"))
                continue
            try:
                entry = parser.parse(raw, number, unterminated=unterminated)
            except TranscriptError as exc:
                self._bad(exc)
                continue
            if entry is not None:
                yield entry
                if isinstance(entry.event, End) and self.follow:
                    break
        parser.finish()

    def _lines(self) -> Iterator[tuple[int, bytes | None, bool]]:
        """(number, line, unterminated) for each line; ``None`` for an over-long line."""
        readline = self._binary_readline()
        follow = self.follow and _seekable(self._file)
        limit = self.max_line + 2  # room for "\r\n"
        number, pending, skipping = 0, b"", False
        while True:
            chunk = readline(limit)
            if not chunk:
                if follow and self._parser.end is None:
                    self._sleep(self.poll_interval)
                    continue
                if pending or skipping:
                    number += 1
                    yield number, None if skipping else pending, True
                return
            if not chunk.endswith(b"\n"):
                if skipping:
                    continue
                pending += chunk
                if len(pending) > self.max_line:
                    pending, skipping = b"", True
                continue
            number += 1
            if skipping:
                skipping = False
                yield number, None, False
                continue
            if pending:
                chunk, pending = pending + chunk, b""
            if len(chunk.rstrip(b"\r\n")) > self.max_line:
                yield number, None, False
            else:
                yield number, chunk, False

    def _binary_readline(self) -> Callable[[int], bytes]:
        file = self._file
        if isinstance(file, io.TextIOBase):
            buffer = getattr(file, "buffer", None)
            if buffer is not None:
                return buffer.readline

            def readline(limit: int) -> bytes:
                return file.readline(limit).encode("utf-8", "surrogateescape")

            return readline
        return file.readline


def _seekable(file: IO[Any]) -> bool:
    try:
        return bool(file.seekable())
    except (OSError, ValueError, AttributeError):
        return False


def read_transcript(source: Source, **options: Any) -> TranscriptReader:
    """Open a transcript for streaming; options are those of :class:`TranscriptReader`."""
    return TranscriptReader(source, **options)


class CheckResult(NamedTuple):
    """What ``replay --check`` reports: problems fail the check, warnings do not."""

    path: str
    events: int
    problems: list[TranscriptError]
    warnings: list[TranscriptError]

    @property
    def ok(self) -> bool:
        """True when the transcript has no problem (warnings allowed)."""
        return not self.problems


def check_transcript(source: Source, **options: Any) -> CheckResult:
    """Read a whole transcript, collecting every problem and warning instead of raising."""
    try:
        reader = TranscriptReader(source, strict=False, **options)
    except TranscriptError as exc:
        return CheckResult(exc.path, 0, [exc], [])
    with reader:
        try:
            for _ in reader:
                pass
        except TranscriptError as exc:  # an unreadable header: nothing more to check
            reader.problems.append(exc)
        return CheckResult(reader.path, reader.events, reader.problems, list(reader.warnings))


def last_timestamp(
    path: str | os.PathLike[str], *, window: int = 1 << 16, events_only: bool = False
) -> float | None:
    """The ``ts`` of a transcript file's last complete line, read from its tail only.

    Lets a player show the duration of a long transcript without reading all of it. None
    when the tail holds no line with a timestamp. ``events_only`` skips the ``end`` line:
    the time of the last event, where the conversation (not the recorder) stopped.
    """
    with open(path, "rb") as file:
        size = file.seek(0, os.SEEK_END)
        file.seek(max(0, size - window))
        lines = file.read().split(b"\n")
    if size > window:
        lines = lines[1:]  # the first piece is probably part of a line
    for raw in reversed(lines):
        try:
            value = msgspec.json.decode(raw)
        except (msgspec.DecodeError, UnicodeDecodeError):
            continue
        if not isinstance(value, dict):
            continue
        if events_only and value.get("type") not in RECORDED_TYPES:
            continue
        ts = value.get("ts")
        if isinstance(ts, (int, float)) and not isinstance(ts, bool):
            return float(ts)
    return None
