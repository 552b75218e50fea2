"""``chatcli replay``: timed playback of a transcript, filters and export, with no terminal I/O.

The pieces, each usable alone:

- :class:`TimeSpec` reads ``--start-at``/``--until`` (offsets such as ``90``, ``1:30``,
  ``1h2m``; times of day such as ``09:15``; dates such as ``2026-11-21T09:15``).
- :class:`EventFilter` keeps the events asked for (rooms, users, types, a regex);
  :func:`select` applies it and the time window to a stream of transcript entries.
- :class:`Timeline` is the timing engine: transcript time in, wall-clock deadlines out,
  with speed, idle capping, pause and speed changes. Its clock is injected, so it is
  tested without sleeping, and every deadline is measured from one anchor on a monotonic
  clock, so lateness never accumulates into drift.
- :class:`Player` shows entries at their deadlines through an Output
  (:mod:`chatcli.ui.output`, the same outputs as ``join``'s), waiting
  through a :class:`Controls` (plain sleeping, or a terminal that also reads keys).
- :class:`Playback` ties them to a transcript file; :func:`check` backs ``--check``.

Everything streams: one entry at a time from the reader to the output, so a long
transcript starts playing at once and filters in constant memory.
"""

from __future__ import annotations

import heapq
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from typing import Final, Literal, Protocol

import msgspec

from chatcli.core.events import RECORDED, RecordedEvent, event_type
from chatcli.core.protocol import name_key
from chatcli.errors import ChatError, TranscriptError, UsageError
from chatcli.transcript import (
    DEFAULT_POLL_INTERVAL,
    CheckResult,
    End,
    Entry,
    Header,
    Item,
    Source,
    TranscriptReader,
    check_transcript,
    last_timestamp,
    read_transcript,
)
from chatcli.ui.board_activity import BoardBursts, is_board_event
from chatcli.ui.output import JsonlOutput, Output, PlainOutput, RichOutput
from chatcli.ui.render import Renderer

#: the plain output's name here before join and replay shared it
TextOutput = PlainOutput

__all__ = [
    "DEFAULT_TICK",
    "EVENT_TYPES",
    "FORMATS",
    "MAX_SPEED",
    "MIN_SPEED",
    "Controls",
    "EventFilter",
    "JsonlOutput",
    "Output",
    "PlainOutput",
    "PlayOptions",
    "PlayResult",
    "PlayState",
    "Playback",
    "Player",
    "RichOutput",
    "SleepControls",
    "TextOutput",
    "TimeSpec",
    "Timeline",
    "check",
    "check_lines",
    "format_offset",
    "format_status",
    "parse_speed",
    "select",
]

#: seconds between status-line refreshes while an interactive player waits
DEFAULT_TICK: Final = 0.2
#: the range ``+`` and ``-`` move the speed in (each press doubles or halves it)
MIN_SPEED: Final = 1 / 64
MAX_SPEED: Final = 1024.0
#: what ``--type`` accepts, and the event class each name stands for: the recorded types
EVENT_TYPES: Final = {entry.type: entry.cls for entry in RECORDED}
FORMATS: Final = ("rich", "text", "jsonl")
#: a clock time more than this before the transcript start means the next day
_DAY_ROLLOVER: Final = timedelta(hours=12)

Event = RecordedEvent

# --------------------------------------------------------------------------- time specs

_NUM = r"\d+(?:\.\d+)?"
_SECONDS_RE: Final = re.compile(rf"\+?({_NUM})")
# 1h2m3s, 90s, 2m; a last number without its unit counts in the next unit down (1h30, 2m30)
_UNITS_RE: Final = re.compile(rf"\+?(?:({_NUM})h)?(?:({_NUM})m(?:in)?)?(?:({_NUM})(s?))?")
_COLON_RE: Final = re.compile(r"([+@]?)(\d+):(\d\d)(?::(\d\d))?(\.\d+)?")
_SPEC_HELP: Final = (
    "an offset from the start (90, 1:30, 1h2m, +12:30) or a time of day "
    "(09:15, 09:15:30, @9:15, 2026-11-21T09:15)"
)


@dataclass(frozen=True)
class TimeSpec:
    """A point in a transcript as the user wrote it: an offset, a time of day or a moment.

    ``offset`` is seconds after the transcript start; ``clock`` is seconds after midnight
    on the transcript's day (the next day when that is more than 12 h before the start);
    ``moment`` is a date and time (naive ones are read in the player's time zone).
    """

    text: str
    kind: Literal["offset", "clock", "moment"]
    seconds: float = 0.0
    moment: datetime | None = None

    @classmethod
    def parse(cls, text: str) -> TimeSpec:
        """Read a time spec; UsageError (one line) for anything else.

        Colon forms are read as the player shows time: a two-digit hour (``09:15``,
        ``10:30:00``, as in the timestamps) is a time of day, a one-digit first field
        (``1:30``, ``1:02:03``) an offset; ``@`` forces a time of day, ``+`` an offset.
        """
        spec = text.strip().replace(" ", "")
        if not spec:
            raise UsageError(f"empty time: give {_SPEC_HELP}")
        if match := _SECONDS_RE.fullmatch(spec):
            return cls(text, "offset", float(match[1]))
        if (match := _UNITS_RE.fullmatch(spec.lower())) and any(match.groups()):
            hours, minutes, last = (float(g) if g else 0.0 for g in match.groups()[:3])
            if match[3] and not match[4] and match[1] and not match[2]:
                minutes, last = last, 0.0  # 1h30
            return cls(text, "offset", hours * 3600 + minutes * 60 + last)
        if match := _COLON_RE.fullmatch(spec):
            return cls._colon(text, match)
        try:
            moment = datetime.fromisoformat(spec)
        except ValueError:
            pass
        else:
            return cls(text, "moment", moment=moment)
        raise UsageError(f"cannot read {text!r} as a time: give {_SPEC_HELP}")

    @classmethod
    def _colon(cls, text: str, match: re.Match[str]) -> TimeSpec:
        mark, first, second, third, fraction = match.groups()
        a, b, c = int(first), int(second), int(third or 0)
        extra = float(fraction or 0)
        clock = mark == "@" or (mark == "" and len(first) == 2)
        if b >= 60 or c >= 60:
            raise UsageError(f"cannot read {text!r} as a time: minutes and seconds go to 59")
        if clock:
            if a >= 24:
                raise UsageError(
                    f"cannot read {text!r} as a time of day (hours go to 23); "
                    f"write +{text.strip().lstrip('@')} for an offset"
                )
            return cls(text, "clock", a * 3600 + b * 60 + c + extra)
        if third is None:  # M:SS
            return cls(text, "offset", a * 60 + b + extra)
        return cls(text, "offset", a * 3600 + b * 60 + c + extra)  # H:MM:SS

    def resolve(self, started: float, tz: tzinfo | None = None) -> float:
        """The Unix time this spec names in a transcript that started at ``started``."""
        if self.kind == "offset":
            return started + self.seconds
        if self.kind == "moment":
            assert self.moment is not None
            moment = self.moment
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=tz) if tz else moment.astimezone()
            return moment.timestamp()
        start = _aware(started, tz)
        midnight = start.replace(hour=0, minute=0, second=0, microsecond=0)
        when = midnight + timedelta(seconds=self.seconds)
        if when < start - _DAY_ROLLOVER:
            when += timedelta(days=1)
        return when.timestamp()

    def other_reading(self) -> TimeSpec | None:
        """For an unmarked colon form, the reading the rules did not pick (for hints)."""
        match = _COLON_RE.fullmatch(self.text.strip().replace(" ", ""))
        if match is None or match[1]:
            return None
        try:
            return TimeSpec.parse(self.alternative_spelling)
        except UsageError:
            return None

    @property
    def alternative_spelling(self) -> str:
        """How to write the other reading of an unmarked colon form explicitly."""
        return ("+" if self.kind == "clock" else "@") + self.text.strip().replace(" ", "")


def _aware(ts: float, tz: tzinfo | None) -> datetime:
    return datetime.fromtimestamp(ts, tz) if tz else datetime.fromtimestamp(ts).astimezone()


def format_offset(seconds: float, tenths: bool = False) -> str:
    """``M:SS`` under an hour, ``H:MM:SS`` from one (negative values count as 0);
    ``tenths`` adds a decimal (``1:02.5``)."""
    seconds = max(0.0, seconds)
    total = int(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
    return f"{text}.{int((seconds - total) * 10)}" if tenths else text


def parse_speed(text: str) -> float:
    """``2``, ``0.5`` or ``2x``: a positive playback speed; UsageError otherwise."""
    spec = text.strip().lower().removesuffix("x")
    try:
        speed = float(spec)
    except ValueError:
        speed = float("nan")
    if not speed > 0 or speed == float("inf"):
        raise UsageError(f"--speed must be a positive number such as 2 or 0.5, not {text!r}")
    return speed


# --------------------------------------------------------------------------- filters


@dataclass(frozen=True)
class EventFilter:
    """Which events to keep; an empty criterion keeps everything.

    ``rooms``: events in these rooms (dms belong to no room, so a room filter drops them);
    ``users``: events by or about these users (sender, recipient, who joined or left),
    case-insensitively; ``types``: names from EVENT_TYPES; ``pattern``: a regex searched
    in message text (joins and leaves have none, so a pattern drops them).
    """

    rooms: frozenset[str] = frozenset()
    users: frozenset[str] = frozenset()
    types: frozenset[str] = frozenset()
    pattern: re.Pattern[str] | None = None

    @classmethod
    def build(
        cls,
        *,
        rooms: Iterable[str] = (),
        users: Iterable[str] = (),
        types: Iterable[str] = (),
        grep: str | None = None,
        ignore_case: bool = False,
    ) -> EventFilter:
        """A filter from option values; UsageError for an unknown type or a bad regex."""
        kinds = frozenset(t.lower() for t in types)
        unknown = sorted(kinds - EVENT_TYPES.keys())
        if unknown:
            raise UsageError(
                f"unknown event type {unknown[0]!r}: choose from {', '.join(EVENT_TYPES)}"
            )
        pattern = None
        if grep is not None:
            try:
                pattern = re.compile(grep, re.IGNORECASE if ignore_case else 0)
            except re.error as exc:
                raise UsageError(
                    f"--grep {grep!r} is not a valid regular expression: {exc}"
                ) from exc
        return cls(
            rooms=frozenset(room.strip().lstrip("#").lower() for room in rooms),
            users=frozenset(name_key(user.strip()) for user in users),
            types=kinds,
            pattern=pattern,
        )

    @property
    def everything(self) -> bool:
        """True when the filter keeps every event."""
        return not (self.rooms or self.users or self.types or self.pattern)

    def __call__(self, event: object) -> bool:
        """True when ``event`` (a recorded event) passes every criterion."""
        entry = event_type(event)
        if self.types and (entry is None or entry.type not in self.types):
            return False
        if self.rooms and (entry is None or entry.room_of(event) not in self.rooms):
            return False
        if self.users:
            people = () if entry is None else entry.people(event)
            if not any(name_key(person) in self.users for person in people):
                return False
        if self.pattern is not None:
            text = getattr(event, "text", None)
            if text is None or self.pattern.search(text) is None:
                return False
        return True


def select(
    entries: Iterable[Entry],
    keep: Callable[[object], bool] = EventFilter(),
    *,
    start: float | None = None,
    until: float | None = None,
) -> Iterator[Entry]:
    """The entries to show: the header, the events in [start, until] that ``keep`` accepts,
    then ``end``. Stops reading at the first event after ``until``."""
    for entry in entries:
        event = entry.event
        if isinstance(event, (Header, End)):
            yield entry
            continue
        ts = event.ts
        if until is not None and ts > until:
            return
        if start is not None and ts < start:
            continue
        if keep(event):
            yield entry


# --------------------------------------------------------------------------- timing


class Timeline:
    """Maps transcript time to wall-clock deadlines (the timing engine, clock injected).

    :meth:`place` puts each event to show on the playback line: its position is the
    previous one's plus the gap in transcript time, a negative gap counting as 0 and any
    gap capped at ``max_idle`` (in transcript seconds, before ``speed``, as asciinema's
    ``-i``). The first event placed is due at once. :meth:`due_in` says how long until a
    position is due: positions advance ``speed`` per second of ``clock`` from an anchor
    that moves only on pause, resume, speed changes and jumps, so time lost showing one
    event is caught up on the next one instead of accumulating.
    """

    def __init__(
        self,
        *,
        speed: float = 1.0,
        max_idle: float | None = None,
        instant: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not speed > 0:
            raise ValueError(f"speed must be positive, not {speed}")
        if max_idle is not None and max_idle < 0:
            raise ValueError(f"max_idle cannot be negative, not {max_idle}")
        self.speed = speed
        self.max_idle = max_idle
        self.instant = instant
        self._clock = clock
        self._anchor_wall: float | None = None
        self._anchor_pos = 0.0
        self._paused_pos: float | None = None
        self._last_ts: float | None = None
        self._last_pos = 0.0

    @property
    def paused(self) -> bool:
        """True between :meth:`pause` and :meth:`resume`."""
        return self._paused_pos is not None

    @property
    def started(self) -> bool:
        """True once an event has been placed."""
        return self._last_ts is not None

    def place(self, ts: float) -> float:
        """Put the next event (transcript time ``ts``) on the line; return its position."""
        if self._last_ts is None:
            pos = 0.0
            if self._anchor_wall is None:
                self._anchor_wall, self._anchor_pos = self._clock(), 0.0
        else:
            gap = ts - self._last_ts
            if not gap > 0:  # negative (or NaN): events out of order count as simultaneous
                gap = 0.0
            if self.max_idle is not None and gap > self.max_idle:
                gap = self.max_idle
            pos = self._last_pos + gap
        self._last_ts, self._last_pos = ts, pos
        return pos

    def position(self) -> float:
        """Where playback is now, in (idle-capped) transcript seconds since the first event."""
        if self._paused_pos is not None:
            return self._paused_pos
        if self._anchor_wall is None:
            return 0.0
        return self._anchor_pos + (self._clock() - self._anchor_wall) * self.speed

    def now(self) -> float:
        """The injected clock's current reading."""
        return self._clock()

    def due_in(self, pos: float) -> float | None:
        """Seconds until ``pos`` is due (0 or less: now); None while paused."""
        if self.instant:
            return 0.0
        if self._paused_pos is not None:
            return None
        if self._anchor_wall is None:
            return 0.0
        return self._anchor_wall + (pos - self._anchor_pos) / self.speed - self._clock()

    def pause(self) -> None:
        """Stop the playback clock where it is."""
        if self._paused_pos is None:
            self._paused_pos = self.position()

    def resume(self) -> None:
        """Restart the playback clock from where it was paused."""
        if self._paused_pos is not None:
            self._anchor_pos, self._anchor_wall = self._paused_pos, self._clock()
            self._paused_pos = None

    def toggle(self) -> None:
        """Pause when playing, resume when paused."""
        if self.paused:
            self.resume()
        else:
            self.pause()

    def set_speed(self, speed: float) -> None:
        """Change the speed from now on, keeping the current position."""
        if not speed > 0:
            raise ValueError(f"speed must be positive, not {speed}")
        if self._paused_pos is None and self._anchor_wall is not None:
            self._anchor_pos, self._anchor_wall = self.position(), self._clock()
        self.speed = speed

    def jump(self, pos: float) -> None:
        """Make ``pos`` the current position (skip a wait, or follow a live source)."""
        if self._paused_pos is not None:
            self._paused_pos = pos
        else:
            self._anchor_pos, self._anchor_wall = pos, self._clock()

    def duration(self, pos: float) -> float:
        """Wall seconds that playing to position ``pos`` takes at the current speed."""
        return 0.0 if self.instant else pos / self.speed


# --------------------------------------------------------------------------- player


@dataclass(frozen=True)
class PlayState:
    """What a status line shows: where the playhead is, how fast, and whether it waits."""

    position: float | None  # transcript time (Unix seconds) of the playhead
    started: float  # transcript start
    end: float | None  # transcript end, when known
    speed: float
    paused: bool
    live: bool  # waiting for a transcript that is still being written
    shown: int
    #: with --max-idle: playback position and length as played (idle-capped seconds)
    played: float | None = None
    length: float | None = None


class Controls(Protocol):
    """How a player waits: plain sleeping, or a terminal that reads keys meanwhile.

    ``tick`` is None when waits need no interruption (no keys, no status); otherwise the
    longest the player waits before refreshing the status line.
    """

    tick: float | None

    def wait(self, timeout: float | None) -> str:
        """Wait up to ``timeout`` seconds (None: until a key); return the keys pressed."""
        ...

    def status(self, state: PlayState) -> None:
        """Show the player's state (called after each event and each tick)."""
        ...


class SleepControls:
    """Controls for pipes and files: sleep through every wait, read no keys."""

    tick: float | None = None

    def __init__(self, sleep: Callable[[float], object] = time.sleep) -> None:
        self._sleep = sleep

    def wait(self, timeout: float | None) -> str:
        if timeout is not None and timeout > 0:
            self._sleep(timeout)
        return ""

    def status(self, state: PlayState) -> None:
        pass


class _Quit(Exception):
    """The user pressed q (raised through the reader when it waits for data)."""


#: keys the interactive player understands (a terminal's right arrow means "next")
KEY_PAUSE: Final = frozenset(" p")
KEY_FASTER: Final = frozenset("+=")
KEY_SLOWER: Final = frozenset("-_")
KEY_NEXT: Final = frozenset("n.")
KEY_QUIT: Final = frozenset("qQ")
RIGHT_ARROW: Final = "\x1b[C"


@dataclass
class PlayResult:
    """How a playback went."""

    shown: int = 0  # events shown (header and end not counted)
    quit: bool = False  # the user pressed q
    reached_end: bool = False  # the transcript's end line was shown
    notes: list[str] = field(default_factory=list)  # hints about the options


class Player:
    """Shows entries at their timeline deadlines, reacting to keys between them.

    Header and end lines are shown without waiting (the end may come long after the last
    event: a server that ran on after the chat). :meth:`idle` is what a following reader
    calls while it waits for more data: the next event then counts as live and is shown
    as soon as it arrives.
    """

    def __init__(
        self,
        timeline: Timeline,
        output: Output,
        controls: Controls | None = None,
        *,
        started: float = 0.0,
        end: float | None = None,
        length: float | None = None,
        coalesce_board: bool = False,
    ) -> None:
        self.timeline = timeline
        self.output = output
        #: board events shown as one line per person per burst (as join shows them), in
        #: the transcript's time; None shows each (jsonl passes every line through)
        self.bursts = BoardBursts() if coalesce_board else None
        self.controls = controls or SleepControls()
        self.started = started
        self.end = end
        #: the length as it will play (idle gaps capped), when known in advance
        self.length = length
        self.shown = 0
        self._live = False
        self._step = False
        self._last: tuple[float, float] | None = None  # (ts, pos) of the last event shown
        self._next: tuple[float, float] | None = None  # (ts, pos) of the event waited for
        self._polled = timeline.now()  # when the keys were last looked at

    def run(self, entries: Iterable[Entry]) -> PlayResult:
        """Play ``entries`` to the end (or until q); return what happened."""
        result = PlayResult()
        try:
            for entry in entries:
                event = entry.event
                if isinstance(event, End):
                    result.reached_end = True
                elif not isinstance(event, Header):
                    self._wait_for(event)
                    self.shown += 1
                if self.bursts is not None and self._board(event):
                    continue
                self.output.show(entry.event, entry.raw)
                self._status()
        except _Quit:
            result.quit = True
        finally:
            if self.bursts is not None:
                for burst in self.bursts.flush():
                    self.output.show(burst)
            self.output.flush()
        result.shown = self.shown
        return result

    def _board(self, event: Item) -> bool:
        """Gather a board event into its author's burst (True: nothing to show now);
        before anything else, show the bursts that ended (in transcript time)."""
        bursts = self.bursts
        assert bursts is not None
        if is_board_event(event):
            ts = event.ts  # type: ignore[union-attr]
            for burst in bursts.due(ts):
                self.output.show(burst)
            bursts.add(event, ts)  # type: ignore[arg-type]
            self._status()
            return True
        if bursts:
            for burst in bursts.flush():
                self.output.show(burst)
        return False

    def idle(self, seconds: float) -> None:
        """Wait ``seconds`` for a transcript that is still growing, keys still working."""
        self._live = True
        if self.bursts:  # caught up with a growing transcript: show what was drawn
            for burst in self.bursts.flush():
                self.output.show(burst)
        self.output.flush()
        self._status()
        self._keys(self.controls.wait(seconds))
        self._status()

    def state(self) -> PlayState:
        """The current state, for a status line."""
        return PlayState(
            position=self._playhead(),
            started=self.started,
            end=self.end,
            speed=self.timeline.speed,
            paused=self.timeline.paused,
            live=self._live,
            shown=self.shown,
            played=None if self.length is None else min(self.timeline.position(), self.length),
            length=self.length,
        )

    # ---------------------------------------------------------------- internals

    def _wait_for(self, event: Item) -> None:
        ts = event.ts  # type: ignore[union-attr]
        pos = self.timeline.place(ts)
        if self._live:  # it arrived while we waited for data: show it now
            self.timeline.jump(pos)
            self._live = False
        self._next = (ts, pos)
        tick = self.controls.tick
        if tick is not None and self.timeline.now() - self._polled >= tick:
            # behind schedule nothing waits: look at the keys anyway, once a tick
            self._polled = self.timeline.now()
            self._keys(self.controls.wait(0))
            self._status()
        while True:
            delay = self.timeline.due_in(pos)
            if self._step:
                self._step = False
                self.timeline.jump(pos)
                break
            if delay is not None and delay <= 0:
                break
            self.output.flush()
            # no keys: sleep the whole delay; keys: wake each tick to refresh the status
            timeout = delay if tick is None else tick if delay is None else min(delay, tick)
            self._keys(self.controls.wait(timeout))
            self._polled = self.timeline.now()
            self._status()
        self._last, self._next = (ts, pos), None

    def _keys(self, keys: str) -> None:
        if not keys:
            return
        keys = keys.replace(RIGHT_ARROW, "n")
        for key in keys:
            if key in KEY_QUIT:
                raise _Quit
            if key in KEY_PAUSE:
                self.timeline.toggle()
            elif key in KEY_FASTER:
                self.timeline.set_speed(min(MAX_SPEED, self.timeline.speed * 2))
            elif key in KEY_SLOWER:
                self.timeline.set_speed(max(MIN_SPEED, self.timeline.speed / 2))
            elif key in KEY_NEXT:
                self._step = True

    def _status(self) -> None:
        if self.controls.tick is not None:
            self.controls.status(self.state())

    def _playhead(self) -> float | None:
        """Transcript time of the playhead: between two events it moves through the real
        gap in proportion to the (possibly idle-capped) playback gap."""
        if self._last is None:
            return None if self._next is None else self._next[0]
        last_ts, last_pos = self._last
        if self._next is None:
            return last_ts
        next_ts, next_pos = self._next
        if next_pos <= last_pos:
            return last_ts
        share = (self.timeline.position() - last_pos) / (next_pos - last_pos)
        return last_ts + min(1.0, max(0.0, share)) * (next_ts - last_ts)


def format_status(state: PlayState, tz: tzinfo | None = None) -> str:
    """The status line: mode, clock time, position / duration, speed and the keys."""
    if state.paused:
        mode = "❚❚ paused"
    elif state.live:
        mode = "● live"
    else:
        mode = "▶"
    parts = [mode]
    if state.position is not None:
        clock = _aware(state.position, tz).strftime("%H:%M:%S")
        where = format_offset(state.position - state.started)
        if state.length is not None and state.played is not None:
            # --max-idle: where playback is in the length as it plays, not as recorded
            where = f"{format_offset(state.played)} / {format_offset(state.length)}"
        elif state.end is not None:
            where += " / " + format_offset(max(state.end, state.position) - state.started)
        parts += [clock, where]
    parts.append(f"{state.speed:g}x")
    keys = "space resume" if state.paused else "space pause"
    parts.append(f"{keys} · +/- speed · n next · q quit")
    return "  ".join(parts)


# --------------------------------------------------------------------------- playback


@dataclass(frozen=True)
class PlayOptions:
    """What ``chatcli replay FILE`` was asked to play, and how."""

    speed: float = 1.0
    max_idle: float | None = None
    instant: bool = False
    start_at: TimeSpec | None = None
    until: TimeSpec | None = None
    keep: EventFilter = EventFilter()
    timestamps: bool = True
    tz: tzinfo | None = None
    follow: bool = False
    poll_interval: float = DEFAULT_POLL_INTERVAL


class Playback:
    """One transcript opened for playing: its header read, its window resolved.

    Raises TranscriptError when the source cannot be opened or is not a transcript.
    Bad lines later on are skipped (see :attr:`problems`), as are a crash's leftovers
    (see :attr:`warnings`): a player shows what can be shown; ``--check`` judges.
    """

    def __init__(
        self,
        source: Source,
        options: PlayOptions,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
        reader: TranscriptReader | MergedReader | None = None,
    ) -> None:
        self.options = options
        self._sleep = sleep
        self._player: Player | None = None
        self.timeline = Timeline(
            speed=options.speed, max_idle=options.max_idle, instant=options.instant, clock=clock
        )
        self.reader = reader or read_transcript(
            source,
            strict=False,
            follow=options.follow,
            poll_interval=options.poll_interval,
            sleep=self._idle,
        )
        try:
            self.header = self.reader.header
        except BaseException:
            self.reader.close()
            raise
        self.started = self.header.started.timestamp()
        merged = isinstance(self.reader, MergedReader)
        self.end = self.reader.end if isinstance(self.reader, MergedReader) else _known_end(source)
        tz = options.tz
        self.start = options.start_at.resolve(self.started, tz) if options.start_at else None
        self.until = options.until.resolve(self.started, tz) if options.until else None
        keep = options.keep
        self.renderer = Renderer(
            me=self.header.name,
            timestamps=options.timestamps,
            # a server file holds one room; a client's follows its user between rooms
            # (several files merged: rooms shown when they hold several)
            show_room=len(keep.rooms) != 1
            and (self.header.source != "server" or (merged and self.header.room is None)),
            tz=tz,
        )
        self.notes = self._hints()

    @property
    def path(self) -> str:
        """The transcript's name in messages (``<stdin>`` for ``-``)."""
        return self.reader.path

    def play(self, output: Output, controls: Controls | None = None) -> PlayResult:
        """Play the transcript through ``output``; close it afterwards."""
        self._player = Player(
            self.timeline,
            output,
            controls,
            started=self.started,
            end=self.end,
            length=self.played_length(),
            coalesce_board=not isinstance(output, JsonlOutput),
        )
        try:
            result = self._player.run(self.entries())
        finally:
            self._player = None
            self.reader.close()
        result.notes = self.notes + result.notes
        return result

    def played_length(self) -> float | None:
        """With ``--max-idle``, the length as it will play: the selected events of the
        file(s) read once more, placed on a timeline capped the same way. None when there
        is no cap or the source cannot be read twice (stdin, --follow)."""
        options = self.options
        if options.max_idle is None or options.follow or self.end is None:
            return None  # (a file, or merged files, always has a known end)
        paths = (
            [reader.path for reader in self.reader.readers]
            if isinstance(self.reader, MergedReader)
            else [self.reader.path]
        )
        try:
            readers = [read_transcript(path, strict=False) for path in paths]
        except ChatError:
            return None
        source: Iterable[Entry] = readers[0] if len(readers) == 1 else MergedReader(readers)
        timeline = Timeline(max_idle=options.max_idle, instant=True)
        length = 0.0
        try:
            for entry in select(source, options.keep, start=self.start, until=self.until):
                if not isinstance(entry.event, Header):
                    length = timeline.place(entry.event.ts)
        except ChatError:
            return None
        finally:
            for reader in readers:
                reader.close()
        return length

    def entries(self) -> Iterator[Entry]:
        """The entries to show, streaming: the header, the events selected, the end."""
        return select(self.reader, self.options.keep, start=self.start, until=self.until)

    @property
    def problems(self) -> list[str]:
        """Bad lines skipped so far, as ``FILE:LINE: reason``."""
        return [str(problem) for problem in self.reader.problems]

    @property
    def warnings(self) -> list[str]:
        """What a crash left behind, as ``FILE:LINE: warning: reason``."""
        return [_warning(w.path, w.line, w.reason) for w in self.reader.warnings]

    def close(self) -> None:
        """Stop reading (when :meth:`play` was never called)."""
        self.reader.close()

    def _idle(self, seconds: float) -> None:
        if self._player is None:
            self._sleep(seconds)
        else:
            self._player.idle(seconds)

    def _hints(self) -> list[str]:
        """Notes for a --start-at/--until whose other reading would have made more sense."""
        notes = []
        end = self.end
        for option, spec, at in (
            ("--start-at", self.options.start_at, self.start),
            ("--until", self.options.until, self.until),
        ):
            other = spec.other_reading() if spec else None
            if spec is None or other is None or at is None or end is None:
                continue
            then = other.resolve(self.started, self.options.tz)
            if not self.started <= at <= end and self.started <= then <= end:
                what = "a time of day" if spec.kind == "clock" else "an offset"
                notes.append(
                    f"{option} {spec.text} was read as {what}, outside this transcript; "
                    f"write {spec.alternative_spelling} for the other reading"
                )
        return notes


class MergedReader:
    """Several transcripts (one server run's rooms, say) read as one timeline.

    Events of all files come out in timestamp order (a stable merge: equal times keep the
    files' order); the header is the earliest file's, without a room when the files hold
    several; one ``end`` closes the whole, counting every event. Problems and warnings
    of every file are kept, each naming its file.
    """

    def __init__(self, readers: Sequence[TranscriptReader]) -> None:
        self.readers = list(readers)
        headers = [reader.header for reader in self.readers]
        first = min(headers, key=lambda header: header.started)
        self.rooms = {header.room for header in headers}
        self.header = first if len(self.rooms) == 1 else msgspec.structs.replace(first, room=None)
        self.path = " + ".join(reader.path for reader in self.readers)
        ends = [_known_end(reader.path) for reader in self.readers]
        self.end = max((end for end in ends if end is not None), default=None)

    def __iter__(self) -> Iterator[Entry]:
        events = heapq.merge(
            *(self._events(reader) for reader in self.readers),
            key=lambda entry: entry.event.ts,  # type: ignore[union-attr]
        )
        yield Entry(1, self.header, msgspec.json.encode(self.header))
        last: End | None = None
        count = 0
        for entry in events:
            if isinstance(entry.event, End):
                last = entry.event if last is None or entry.event.ts > last.ts else last
                continue
            count += 1
            yield entry
        if last is not None:
            end = End(ts=last.ts, events=count)
            yield Entry(0, end, msgspec.json.encode(end))

    @staticmethod
    def _events(reader: TranscriptReader) -> Iterator[Entry]:
        return (entry for entry in reader if not isinstance(entry.event, Header))

    @property
    def problems(self) -> list[TranscriptError]:
        return [problem for reader in self.readers for problem in reader.problems]

    @property
    def warnings(self) -> list[TranscriptError]:
        return [warning for reader in self.readers for warning in reader.warnings]

    def close(self) -> None:
        for reader in self.readers:
            reader.close()


def open_merged(sources: Sequence[Source], options: PlayOptions) -> MergedReader:
    """The transcripts ``sources`` opened and merged into one timeline (files only)."""
    readers: list[TranscriptReader] = []
    try:
        for source in sources:
            readers.append(read_transcript(source, strict=False))
            readers[-1].header  # noqa: B018  (read now: a bad file fails before playing)
    except BaseException:
        for reader in readers:
            reader.close()
        raise
    return MergedReader(readers)


def _known_end(source: Source) -> float | None:
    """The transcript's last timestamp, when the source is a file that can be read from
    the end (never stdin or a pipe)."""
    if not isinstance(source, (str, os.PathLike)) or os.fspath(source) == "-":
        return None
    try:
        return last_timestamp(source, events_only=True)
    except (OSError, ValueError):
        return None


def _warning(path: str, line: int, reason: str) -> str:
    return f"{path}:{line}: warning: {reason}" if line > 0 else f"{path}: warning: {reason}"


# --------------------------------------------------------------------------- --check


def check(sources: Sequence[Source]) -> list[CheckResult]:
    """Validate each transcript (stdin for ``-``), reading each once, streaming."""
    return [check_transcript(source) for source in sources]


def check_lines(result: CheckResult) -> list[str]:
    """What ``--check`` prints for one file: its problems and warnings, then a summary.

    Problems are ``FILE:LINE: reason``, warnings ``FILE:LINE: warning: reason``.
    """
    lines = [str(problem) for problem in result.problems]
    lines += [_warning(w.path, w.line, w.reason) for w in result.warnings]
    counts = [f"{result.events} event{'s' if result.events != 1 else ''}"]
    if result.problems:
        n = len(result.problems)
        counts.append(f"{n} problem{'s' if n != 1 else ''}")
    if result.warnings:
        n = len(result.warnings)
        counts.append(f"{n} warning{'s' if n != 1 else ''}")
    verdict = "ok" if result.ok else "FAILED"
    lines.append(f"{result.path}: {verdict} ({', '.join(counts)})")
    return lines
