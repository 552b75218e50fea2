"""``chatcli replay``: time specs, the timing engine and player with a fake clock, filters,
formats, --check, stdin, --follow on a growing file, the samples, and streaming 100k events.

Nothing here sleeps for real except the --follow test, whose waits are all bounded.
"""

from __future__ import annotations

import io
import json
import re
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, cast

import pytest
from click.testing import CliRunner

from chatcli.cli import cli
from chatcli.core.protocol import DirectMessage, Joined, Left, Msg
from chatcli.errors import TranscriptError, UsageError
from chatcli.replay.player import (
    MAX_SPEED,
    EventFilter,
    Playback,
    Player,
    PlayOptions,
    PlayState,
    SleepControls,
    Timeline,
    TimeSpec,
    check_lines,
    format_offset,
    format_status,
    parse_speed,
    select,
)
from chatcli.transcript import End, Entry, Header, TranscriptWriter, check_transcript
from chatcli.ui.output import JsonlOutput, PlainOutput
from chatcli.ui.render import Renderer

REPO = Path(__file__).resolve().parent.parent
SAMPLES = sorted((REPO / "recordings").glob("*.jsonl"))
LOBBY = REPO / "recordings" / "20261121-090000_lobby.jsonl"
CLIENT = REPO / "recordings" / "record_chat_2026-11-20_18-30-00.jsonl"
CRASHED = REPO / "recordings" / "20261122-141500_lobby.jsonl"
T0 = 1795251600.0  # 2026-11-21 09:00:00 UTC
ESC = "\x1b"


# --------------------------------------------------------------------------- helpers


class FakeClock:
    """Monotonic seconds that move only when a test (or FakeControls) moves them."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeControls:
    """Controls whose waits advance a FakeClock; ``keys`` are pressed at given clock times."""

    def __init__(
        self, clock: FakeClock, keys: list[tuple[float, str]] | None = None, tick: float | None = 1
    ) -> None:
        self.clock = clock
        self.keys = sorted(keys or [])
        self.tick = tick
        self.waits: list[float | None] = []
        self.states: list[PlayState] = []

    def wait(self, timeout: float | None) -> str:
        self.waits.append(timeout)
        until = float("inf") if timeout is None else self.clock.now + timeout
        if self.keys and self.keys[0][0] <= until:
            at, key = self.keys.pop(0)
            self.clock.now = max(self.clock.now, at)
            return key
        assert timeout is not None, "waiting forever with no key to come"
        assert self.clock.now < 10**6, "the player never got to the end"
        self.clock.now = until
        return ""

    def status(self, state: PlayState) -> None:
        self.states.append(state)


class Shown:
    """An Output that records when (fake clock) each event was shown."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.times: list[float] = []
        self.events: list[object] = []

    def show(self, event: object, raw: bytes = b"") -> None:
        if not isinstance(event, (Header, End)):
            self.times.append(round(self.clock.now - 1000.0, 6))
        self.events.append(event)

    def notice(self, text: str, error: bool = False) -> None:
        raise AssertionError(f"the player has nothing to say here: {text}")

    def flush(self) -> None:
        pass


def msg(i: int, at: float, text: str = "hi", who: str = "alice", room: str = "lobby") -> Msg:
    return Msg(id=i, room=room, from_=who, text=text, ts=T0 + at)


def entries(*events: object) -> list[Entry]:
    return [Entry(n, e, b"") for n, e in enumerate(events, 1)]  # type: ignore[arg-type]


def play(
    events: list[object], clock: FakeClock | None = None, controls: Any = None, **timeline: Any
) -> Shown:
    clock = clock or FakeClock()
    shown = Shown(clock)
    player = Player(
        Timeline(clock=clock, **timeline), shown, controls or FakeControls(clock, tick=None)
    )
    player.run(entries(*events))
    return shown


def write_transcript(path: Path, events: list[object], *, end: bool = True, **header: Any) -> Path:
    clock = FakeClock(T0)
    writer = TranscriptWriter.create(path, source="server", room="lobby", clock=clock, **header)
    for event in events:
        writer.write(event)
    if end:
        clock.now = T0 + 3600
        writer.close()
    else:
        writer._file.close()  # a crash: no end line
    return Path(writer.path)


def invoke(*args: str, input: bytes | str | None = None) -> Any:
    return CliRunner().invoke(cli, ["replay", *args], input=input, catch_exceptions=False)


CONVERSATION: list[object] = [
    Joined(room="lobby", name="alice", ts=T0 + 1),
    msg(1, 2, "morning"),
    Joined(room="lobby", name="Bob", ts=T0 + 3),
    msg(2, 4, "hey alice, deploy done?", who="Bob"),
    DirectMessage(from_="alice", to="bob", text="psst", ts=T0 + 5),
    Msg(id=3, room="lobby", from_="alice", text="waves", ts=T0 + 6, action=True),
    Left(room="lobby", name="Bob", reason="quit", ts=T0 + 7),
]


@pytest.fixture
def convo(tmp_path: Path) -> Path:
    return write_transcript(tmp_path / "convo.jsonl", CONVERSATION)


# --------------------------------------------------------------------------- time specs


@pytest.mark.parametrize(
    ("text", "kind", "seconds"),
    [
        ("90", "offset", 90),
        ("90.5", "offset", 90.5),
        ("90s", "offset", 90),
        ("2m", "offset", 120),
        ("1m30s", "offset", 90),
        ("1h2m", "offset", 3720),
        ("1h30", "offset", 5400),
        ("1h 2m 3s", "offset", 3723),
        ("1:30", "offset", 90),
        ("1:02:03", "offset", 3723),
        ("+12:30", "offset", 750),
        ("+09:15", "offset", 555),
        ("09:15", "clock", 9 * 3600 + 15 * 60),
        ("09:15:30", "clock", 9 * 3600 + 15 * 60 + 30),
        ("@9:15", "clock", 9 * 3600 + 15 * 60),
        ("23:59", "clock", 23 * 3600 + 59 * 60),
    ],
)
def test_time_spec_forms(text: str, kind: str, seconds: float) -> None:
    spec = TimeSpec.parse(text)
    assert (spec.kind, spec.seconds) == (kind, seconds)


@pytest.mark.parametrize("text", ["", "abc", "1:75", "25:00", "1x", "-5", "9::15", "1h2h"])
def test_time_spec_errors_are_one_line_usage_errors(text: str) -> None:
    with pytest.raises(UsageError) as info:
        TimeSpec.parse(text)
    assert "\n" not in str(info.value)


def test_time_spec_resolves_against_the_transcript_start() -> None:
    start = T0 + 30  # 09:00:30 UTC
    assert TimeSpec.parse("1:30").resolve(start, UTC) == start + 90
    assert TimeSpec.parse("09:15").resolve(start, UTC) == T0 + 15 * 60
    assert TimeSpec.parse("08:59").resolve(start, UTC) == T0 - 60  # before the start: that day
    # more than 12 h before the start means the next day (a transcript across midnight)
    late = T0 + 14 * 3600  # 23:00
    assert TimeSpec.parse("@1:00").resolve(late, UTC) == T0 + 16 * 3600
    assert TimeSpec.parse("22:30").resolve(late, UTC) == late - 1800
    assert TimeSpec.parse("2026-11-21T09:15").resolve(start, UTC) == T0 + 15 * 60
    assert TimeSpec.parse("2026-11-21T10:15+01:00").resolve(start, UTC) == T0 + 15 * 60


def test_time_spec_other_reading_is_for_unmarked_colon_forms_only() -> None:
    assert TimeSpec.parse("09:15").other_reading() == TimeSpec.parse("+09:15")
    assert TimeSpec.parse("1:30").other_reading() == TimeSpec.parse("@1:30")
    assert TimeSpec.parse("@09:15").other_reading() is None
    assert TimeSpec.parse("90").other_reading() is None


def test_format_offset_and_speed() -> None:
    assert [format_offset(s) for s in (0, 59.9, 61, 3600, 3723, -5)] == [
        "0:00",
        "0:59",
        "1:01",
        "1:00:00",
        "1:02:03",
        "0:00",
    ]
    assert [parse_speed(s) for s in ("2", "0.5", "10x", "3X")] == [2, 0.5, 10, 3]
    for bad in ("0", "-1", "fast", "inf", "nan"):
        with pytest.raises(UsageError):
            parse_speed(bad)


# --------------------------------------------------------------------------- timeline


def test_timeline_schedules_from_the_first_event_scaled_by_speed() -> None:
    shown = play([msg(1, 50), msg(2, 60), msg(3, 80)], speed=2)
    assert shown.times == [0, 5, 15]


def test_timeline_caps_gaps_and_treats_negative_gaps_as_zero() -> None:
    shown = play([msg(1, 0), msg(2, 100), msg(3, 90), msg(4, 91), msg(5, 91.5)], max_idle=3)
    assert shown.times == [0, 3, 3, 4, 4.5]


def test_max_idle_applies_before_speed() -> None:
    shown = play([msg(1, 0), msg(2, 100)], max_idle=4, speed=2)
    assert shown.times == [0, 2]


def test_instant_never_waits() -> None:
    clock = FakeClock()
    controls = FakeControls(clock, tick=None)
    shown = play([msg(1, 0), msg(2, 500), msg(3, 9000)], clock, controls, instant=True)
    assert shown.times == [0, 0, 0]
    assert controls.waits == []


def test_lateness_does_not_accumulate() -> None:
    clock = FakeClock()
    timeline = Timeline(clock=clock)
    first = timeline.place(T0)
    assert timeline.due_in(first) == 0
    second = timeline.place(T0 + 10)
    clock.now += 13  # shown 3 s late (a slow terminal, an oversleep)
    assert timeline.due_in(second) == -3
    third = timeline.place(T0 + 20)
    assert timeline.due_in(third) == 7  # still due 20 s after the first, not 23


def test_pause_resume_and_speed_change_keep_the_position() -> None:
    clock = FakeClock()
    timeline = Timeline(clock=clock)
    timeline.place(T0)
    later = timeline.place(T0 + 10)
    clock.now += 4
    timeline.pause()
    clock.now += 100  # paused: nothing moves
    assert timeline.position() == 4
    assert timeline.due_in(later) is None
    timeline.resume()
    assert timeline.due_in(later) == 6
    clock.now += 2
    timeline.set_speed(4)  # at position 6, 4 s of transcript left: 1 s at 4x
    assert timeline.position() == 6
    assert timeline.due_in(later) == 1
    timeline.pause()
    timeline.set_speed(1)  # changing speed while paused keeps the paused position
    timeline.resume()
    assert timeline.position() == 6
    assert timeline.due_in(later) == 4


def test_jump_makes_a_position_current() -> None:
    clock = FakeClock()
    timeline = Timeline(clock=clock)
    timeline.place(T0)
    pos = timeline.place(T0 + 600)
    timeline.jump(pos)
    assert timeline.due_in(pos) == 0


def test_timeline_refuses_bad_settings() -> None:
    with pytest.raises(ValueError):
        Timeline(speed=0)
    with pytest.raises(ValueError):
        Timeline(max_idle=-1)


# --------------------------------------------------------------------------- player keys


def test_space_pauses_and_resumes_the_player() -> None:
    clock = FakeClock()
    controls = FakeControls(clock, keys=[(1002, " "), (1030, " ")])
    shown = play([msg(1, 0), msg(2, 5), msg(3, 6)], clock, controls)
    # paused at 2 s with 3 s to go; resumed at 30 s
    assert shown.times == [0, 33, 34]
    assert any(state.paused for state in controls.states)


def test_plus_and_minus_change_speed_mid_wait() -> None:
    clock = FakeClock()
    controls = FakeControls(clock, keys=[(1002, "+"), (1004, "++"), (1006, "-")])
    shown = play([msg(1, 0), msg(2, 30)], clock, controls)
    # 2 s at 1x (pos 2), 2 s at 2x (pos 6), 2 s at 8x (pos 22), then 4x: 8 left = 2 s
    assert shown.times == [0, 8]
    assert controls.states[-1].speed == 4


def test_speed_keys_stay_in_range() -> None:
    clock = FakeClock()
    controls = FakeControls(clock, keys=[(1001, "+" * 20)])
    play([msg(1, 0), msg(2, 100000)], clock, controls)
    assert controls.states[-1].speed == MAX_SPEED


def test_n_skips_the_wait_even_when_paused_and_q_quits() -> None:
    clock = FakeClock()
    controls = FakeControls(clock, keys=[(1001, "n"), (1002, " "), (1003, "\x1b[C"), (1004, "q")])
    shown = Shown(clock)
    player = Player(Timeline(clock=clock), shown, controls)
    result = player.run(entries(msg(1, 0), msg(2, 600), msg(3, 1200), msg(4, 1800)))
    assert shown.times == [0, 1, 3]  # n at 1; paused at 2; right arrow steps at 3; q at 4
    assert result.quit and result.shown == 3
    assert controls.states[-1].paused


def test_keys_work_even_when_playback_is_behind_schedule() -> None:
    clock = FakeClock()
    controls = FakeControls(clock, keys=[(1000.5, "q")], tick=0.2)

    class Slow(Shown):
        def show(self, event: object, raw: bytes = b"") -> None:
            super().show(event, raw)
            clock.now += 0.1  # a terminal slower than the events come

    shown = Slow(clock)
    player = Player(Timeline(clock=clock, speed=100), shown, controls)
    result = player.run(entries(*(msg(i, i * 0.01) for i in range(1000))))
    assert result.quit and 5 <= result.shown <= 8
    assert 0 in controls.waits  # a look at the keys that did not wait


def test_status_line_shows_position_duration_and_speed() -> None:
    clock = FakeClock()
    controls = FakeControls(clock, keys=[(1005, " "), (1010, " ")], tick=1)
    shown = Shown(clock)
    player = Player(Timeline(clock=clock), shown, controls, started=T0, end=T0 + 3600)
    events = entries(msg(1, 60), msg(2, 70))
    iterator = iter(events)
    player.run([next(iterator)])
    assert player.state().position == T0 + 60
    player.run(iterator)
    paused = next(s for s in controls.states if s.paused)
    assert paused.position == pytest.approx(T0 + 65)  # half-way through the 10 s gap
    line = format_status(paused, UTC)
    assert line.startswith("❚❚ paused  09:01:05  1:05 / 1:00:00  1x")
    assert "space resume" in line and "q quit" in line


def test_playhead_moves_through_an_idle_capped_gap_proportionally() -> None:
    clock = FakeClock()
    controls = FakeControls(clock, keys=[(1001, " "), (1002, " ")], tick=1)
    player = Player(Timeline(clock=clock, max_idle=2), Shown(clock), controls, started=T0)
    player.run(entries(msg(1, 0), msg(2, 600)))
    paused = next(s for s in controls.states if s.paused)
    assert paused.position == pytest.approx(T0 + 300)  # half of the capped gap: half of 600 s


def test_a_live_event_is_shown_as_soon_as_it_arrives() -> None:
    clock = FakeClock()
    shown = Shown(clock)
    player = Player(Timeline(clock=clock), shown, FakeControls(clock, tick=None))

    def growing() -> Iterator[Entry]:
        yield Entry(1, msg(1, 0))
        player.idle(50)  # what the following reader does while the file does not grow
        yield Entry(2, msg(2, 100))  # written 100 s in, seen 50 s in: show it now
        yield Entry(3, msg(3, 102))

    player.run(growing())
    assert shown.times == [0, 50, 52]


def test_status_mentions_live_while_following() -> None:
    state = PlayState(T0, T0, None, 1.0, paused=False, live=True, shown=3)
    assert format_status(state, UTC).startswith("● live  09:00:00  0:00  1x")


# --------------------------------------------------------------------------- filters


def test_filter_by_user_is_case_insensitive_and_covers_dms_and_presence() -> None:
    keep = EventFilter.build(users=["BOB"])
    assert [e for e in CONVERSATION if keep(e)] == [CONVERSATION[i] for i in (2, 3, 4, 6)]


def test_filter_by_type_room_and_grep() -> None:
    assert [e for e in CONVERSATION if EventFilter.build(types=["dm", "LEAVE"])(e)] == [
        CONVERSATION[4],
        CONVERSATION[6],
    ]
    lobby = EventFilter.build(rooms=["#Lobby"])
    assert [e for e in CONVERSATION if lobby(e)] == [
        e for e in CONVERSATION if not isinstance(e, DirectMessage)
    ]
    grep = EventFilter.build(grep="DEPLOY|psst", ignore_case=True)
    assert [e for e in CONVERSATION if grep(e)] == [CONVERSATION[3], CONVERSATION[4]]
    assert [e for e in CONVERSATION if EventFilter.build(grep="DEPLOY")(e)] == []
    both = EventFilter.build(users=["alice"], types=["msg"])
    assert [e for e in CONVERSATION if both(e)] == [CONVERSATION[1], CONVERSATION[5]]


def test_filter_errors() -> None:
    with pytest.raises(UsageError, match="not a valid regular expression"):
        EventFilter.build(grep="(unclosed")
    with pytest.raises(UsageError, match="unknown event type 'ping'"):
        EventFilter.build(types=["ping"])


def test_select_keeps_header_and_end_and_stops_reading_after_until() -> None:
    header = Header(
        version=1, started=datetime.fromtimestamp(T0, UTC), source="server", recorder="x"
    )
    end = End(ts=T0 + 99, events=5)
    consumed: list[int] = []

    def source() -> Iterator[Entry]:
        for entry in entries(header, msg(1, 1), msg(2, 2), msg(3, 3), msg(4, 4), msg(5, 5), end):
            consumed.append(entry.line)
            yield entry

    kept = [e.event for e in select(source(), start=T0 + 2, until=T0 + 3)]
    assert kept == [header, msg(2, 2), msg(3, 3)]
    assert consumed == [1, 2, 3, 4, 5]  # stopped at the first event after --until


# --------------------------------------------------------------------------- formats (CLI)


def test_text_format_is_plain_irc_style_lines(convo: Path) -> None:
    result = invoke(str(convo), "--utc", "--format", "text")
    assert result.exit_code == 0
    assert result.output.splitlines() == [
        "09:00:00 -- recording started 2026-11-21 09:00:00 UTC in lobby (server, chatcli 0.1.0)",
        "09:00:01 -- alice joined lobby",
        "09:00:02 <alice> morning",
        "09:00:03 -- Bob joined lobby",
        "09:00:04 <Bob> hey alice, deploy done?",
        "09:00:05 [dm] alice -> bob: psst",
        "09:00:06 * alice waves",
        "09:00:07 -- Bob left lobby (quit)",
        "10:00:00 -- recording ended (7 events)",
    ]


def test_text_is_the_default_off_a_terminal_and_instant(
    convo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    waits: list[float | None] = []

    def wait(self: SleepControls, timeout: float | None) -> str:
        waits.append(timeout)
        return ""

    monkeypatch.setattr(SleepControls, "wait", wait)
    result = invoke(str(convo), "--utc", "--no-timestamps", "--user", "bob", "--type", "msg")
    assert result.output.splitlines()[1:-1] == ["<Bob> hey alice, deploy done?"]
    # 7 s of transcript, printed at once: the player never asked to wait
    assert all(not timeout or timeout <= 0 for timeout in waits), waits


def test_rich_format_renders_like_join(convo: Path) -> None:
    result = invoke(str(convo), "--utc", "--format", "rich", "--instant", "--no-timestamps")
    assert result.exit_code == 0
    renderer = Renderer(timestamps=False, tz=UTC)
    expected = [renderer.plain(e) for e in CONVERSATION]
    assert result.output.splitlines()[1:-1] == expected


def test_jsonl_passes_lines_through_and_stays_a_valid_transcript(
    convo: Path, tmp_path: Path
) -> None:
    result = invoke(str(convo), "--format", "jsonl", "--user", "bob")
    assert result.exit_code == 0
    lines = result.output.splitlines()
    original = convo.read_text().splitlines()
    assert lines[0] == original[0]
    assert lines[1:-1] == [original[i] for i in (3, 4, 5, 7)]
    assert json.loads(lines[-1]) == {"type": "end", "ts": T0 + 3600, "events": 4}
    exported = tmp_path / "bob.jsonl"
    exported.write_text(result.output)
    check = check_transcript(exported)
    assert check.ok and not check.warnings and check.events == 4


def test_jsonl_unfiltered_is_byte_identical(convo: Path) -> None:
    result = invoke(str(convo), "--format", "jsonl")
    assert result.output == convo.read_text()


HOSTILE: list[object] = [
    msg(1, 1, "red \x1b[31malert\x1b[0m and \x1b]0;pwned\x07 title \x9b2J", who="mallory"),
    DirectMessage(from_="mallory", to="bob", text="rtl \u202eevil", ts=T0 + 2),
]


def test_no_escape_sequence_from_a_transcript_reaches_the_terminal(tmp_path: Path) -> None:
    path = write_transcript(tmp_path / "hostile.jsonl", HOSTILE)
    for fmt in ("text", "rich"):
        output = invoke(str(path), "--format", fmt, "--instant").output
        assert ESC not in output and "\x9b" not in output and "\u202e" not in output
        assert "red alert and  title" in output
    raw = invoke(str(path), "--format", "jsonl").stdout_bytes
    assert b"\x1b" not in raw and b"\xc2\x9b" not in raw and "\u202e".encode() not in raw
    exported = tmp_path / "export.jsonl"
    exported.write_bytes(raw)  # the escaped form is the same JSON value
    assert [json.loads(line) for line in raw.splitlines()] == [
        json.loads(line) for line in path.read_bytes().splitlines()
    ]


def test_jsonl_output_rewrites_end_only_when_needed() -> None:
    stream = io.BytesIO()
    out = JsonlOutput(stream)
    out.show(msg(1, 1), b'{"raw":1}')
    out.show(End(ts=T0, events=1), b'{"type":"end","ts":1,"events":1}')
    out.show(End(ts=T0, events=9), b"x")
    assert stream.getvalue().splitlines() == [
        b'{"raw":1}',
        b'{"type":"end","ts":1,"events":1}',
        b'{"type":"end","ts":%r,"events":1}' % T0,
    ]


def test_start_at_and_until_on_the_command_line(convo: Path) -> None:
    result = invoke(
        str(convo), "--utc", "--no-timestamps", "--start-at", "3", "--until", "09:00:05"
    )
    assert result.output.splitlines()[1:] == [
        "-- Bob joined lobby",
        "<Bob> hey alice, deploy done?",
        "[dm] alice -> bob: psst",
    ]


def test_a_time_that_makes_more_sense_the_other_way_gets_a_note(convo: Path) -> None:
    # 00:03 as a time of day is long before this transcript; as an offset it is inside
    result = invoke(str(convo), "--utc", "--start-at", "00:03")
    assert result.stderr == (
        "chatcli: note: --start-at 00:03 was read as a time of day, outside this "
        "transcript; write +00:03 for the other reading\n"
    )
    assert invoke(str(convo), "--utc", "--start-at", "+00:03").stderr == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--grep", "("], "not a valid regular expression"),
        (["--start-at", "soon"], "cannot read 'soon' as a time"),
        (["--until", "25:61"], "cannot read '25:61'"),
        (["--speed", "0"], "--speed must be a positive number"),
        (["--instant", "--realtime"], "--instant does not go with"),
        (["--loop", "2"], "--loop goes with --to"),
        (["--prefix", "x-"], "--prefix goes with --to"),
        (["--dry-run"], "--dry-run goes with --to"),
        (["--to", "localhost:7777", "--follow"], "--follow does not go with --to"),
        (["--to", "nowhere"], "--to wants HOST:PORT"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(convo: Path, args: list[str], message: str) -> None:
    result = invoke(str(convo), *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_a_missing_file_is_one_line_alone_or_among_several(tmp_path: Path) -> None:
    # several files play merged (issue 12): a missing one is still one line
    result = invoke(str(tmp_path / "a"), str(tmp_path / "b"))
    assert result.exit_code == 1
    assert result.stderr == f"chatcli: {tmp_path / 'a'}: cannot open: No such file or directory\n"
    result = invoke(str(tmp_path / "missing.jsonl"))
    assert result.exit_code == 1
    assert (
        result.stderr
        == f"chatcli: {tmp_path / 'missing.jsonl'}: cannot open: No such file or directory\n"
    )


def test_not_a_transcript_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello\n")
    result = invoke(str(path))
    assert result.exit_code == 1
    assert result.stderr.startswith(f"chatcli: {path}:1: not a transcript")


def test_bad_lines_are_skipped_and_reported_on_stderr(tmp_path: Path, convo: Path) -> None:
    lines = convo.read_text().splitlines()
    lines[2] = '{"type":"msg","id":"nope"}'
    path = tmp_path / "damaged.jsonl"
    path.write_text("\n".join(lines) + "\n")
    result = invoke(str(path), "--no-timestamps")
    assert result.exit_code == 1  # played around, but not valid: as --check says
    assert "<alice> morning" not in result.stdout and "<Bob> hey" in result.stdout
    assert result.stderr.splitlines() == [
        f"{path}:3: bad 'msg' line: Expected `int`, got `str` - at `$.id` (line skipped)",
        f"{path}:9: warning: end counts 7 events, read 6",
    ]


# --------------------------------------------------------------------------- --check


def test_check_accepts_every_sample_with_warnings_only_for_the_crashed_one() -> None:
    result = invoke("--check", *map(str, SAMPLES))
    assert result.exit_code == 0
    assert f"{CRASHED}:10: warning: last line is truncated (recording cut short)" in result.stdout
    assert f"{CRASHED}:10: warning: no end line: the recording was cut short" in result.stdout
    assert f"{LOBBY}: ok (33 events)" in result.stdout
    assert result.stdout.rstrip().endswith("4 files checked, 0 with problems")


def test_check_reports_every_bad_line_with_its_number(tmp_path: Path, convo: Path) -> None:
    lines = convo.read_text().splitlines()
    lines[2] = "{not json"
    lines[5] = '{"type":"join","room":"lobby"}'
    lines.insert(7, "[1, 2]")
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    result = invoke("--check", str(path))
    assert result.exit_code == 1
    out = result.stdout.splitlines()
    assert out[0].startswith(f"{path}:3: not valid JSON")
    assert out[1].startswith(f"{path}:6: bad 'join' line: Object missing required field `name`")
    assert out[2] == f"{path}:8: expected a JSON object, got an array"
    assert out[3] == f"{path}:10: warning: end counts 7 events, read 5"
    assert out[-1] == f"{path}: FAILED (5 events, 3 problems, 1 warning)"


def test_check_truncated_tail_and_missing_end_are_warnings(tmp_path: Path) -> None:
    path = write_transcript(tmp_path / "crash.jsonl", CONVERSATION[:3], end=False)
    with path.open("a") as file:
        file.write('{"type":"msg","id":9,"room":"lo')
    result = invoke("--check", str(path))
    assert result.exit_code == 0
    assert result.stdout.splitlines() == [
        f"{path}:5: warning: last line is truncated (recording cut short)",
        f"{path}:5: warning: no end line: the recording was cut short",
        f"{path}: ok (3 events, 2 warnings)",
    ]


def test_check_missing_file_and_stdin(convo: Path, tmp_path: Path) -> None:
    result = invoke("--check", str(tmp_path / "nope.jsonl"))
    assert result.exit_code == 1
    assert "nope.jsonl: cannot open: No such file or directory" in result.stdout
    result = invoke("--check", "-", input=convo.read_bytes())
    assert result.exit_code == 0 and result.stdout == "<stdin>: ok (7 events)\n"
    result = invoke("--check", "-", input=b"garbage\n")
    assert result.exit_code == 1 and result.stdout.startswith("<stdin>:1: not a transcript")


def test_check_lines_pluralise() -> None:
    result = check_transcript(io.BytesIO(b""), name="empty")
    assert check_lines(result) == [
        "empty:1: empty: no transcript header",
        "empty: FAILED (0 events, 1 problem)",
    ]


# --------------------------------------------------------------------------- stdin, samples


def test_stdin_plays_like_a_file(convo: Path) -> None:
    from_file = invoke(str(convo), "--utc")
    from_stdin = invoke("-", "--utc", input=convo.read_bytes())
    assert from_stdin.exit_code == 0
    assert from_stdin.output == from_file.output


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.name)
def test_every_sample_plays(sample: Path) -> None:
    result = invoke(str(sample), "--instant", "--format", "text")
    assert result.exit_code == 0, result.output
    shown = result.stdout.splitlines()
    events = check_transcript(sample).events
    has_end = '"type":"end"' in sample.read_text()
    assert len(shown) == 1 + events + has_end
    assert shown[0].split(" ", 1)[1].startswith("-- recording started")


def test_duration_is_the_last_event_not_the_end_line() -> None:
    playback = Playback(LOBBY, PlayOptions())
    try:
        assert playback.end is not None
        assert playback.end - playback.started == pytest.approx(24 * 60 + 15.514, abs=0.01)
    finally:
        playback.close()


def test_client_transcripts_show_rooms_and_server_ones_do_not() -> None:
    client = invoke(str(CLIENT), "--no-timestamps").stdout.splitlines()
    assert "[dev] <noor> welcome to #dev chloe" in client
    assert "[lobby] <alice> who's up for the meetup on thursday?" in client
    lobby = invoke(str(LOBBY), "--no-timestamps").stdout.splitlines()
    assert "<alice> morning bob! coffee's on ☕" in lobby


# --------------------------------------------------------------------------- --follow


def test_follow_plays_a_growing_file_until_its_end_line(tmp_path: Path) -> None:
    path = tmp_path / "live.jsonl"
    clock = FakeClock(T0)
    writer = TranscriptWriter.create(path, source="server", room="lobby", clock=clock)
    out = io.StringIO()
    lines_seen = threading.Event()
    wrote_all = threading.Event()

    class Watch(io.StringIO):
        def write(self, text: str) -> int:
            out.write(text)
            if out.getvalue().count("\n") >= 2:
                lines_seen.set()
            return len(text)

    playback = Playback(
        path, PlayOptions(follow=True, instant=True, poll_interval=0.01, tz=UTC, timestamps=False)
    )
    output = PlainOutput(playback.renderer, Watch())
    worker = threading.Thread(target=playback.play, args=(output,), daemon=True)
    worker.start()

    def append() -> None:
        writer.write(msg(1, 1, "first"))
        assert lines_seen.wait(5), "the player did not show the first line while following"
        writer.write(msg(2, 2, "second"))
        clock.now = T0 + 3
        writer.close()
        wrote_all.set()

    appender = threading.Thread(target=append, daemon=True)
    appender.start()
    appender.join(10)
    worker.join(10)
    assert wrote_all.is_set() and not worker.is_alive(), "follow did not stop at the end line"
    assert out.getvalue().splitlines()[1:] == [
        "<alice> first",
        "<alice> second",
        "-- recording ended (2 events)",
    ]


def test_follow_on_a_finished_file_stops_at_once(convo: Path) -> None:
    result = invoke(str(convo), "--follow", "--format", "text")
    assert result.exit_code == 0 and result.stdout.count("\n") == 9


# --------------------------------------------------------------------------- streaming


N_BIG = 100_000


@pytest.fixture(scope="module")
def big_transcript(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """100k events over 10 hours; every 10th message mentions x."""
    path = tmp_path_factory.mktemp("big") / "big.jsonl"
    with TranscriptWriter.create(path, source="server", room="lobby", clock=lambda: T0) as writer:
        for i in range(N_BIG):
            text = f"line {i} with x" if i % 10 == 0 else f"line {i}"
            writer.write(
                Msg(id=i + 1, room="lobby", from_=f"u{i % 50}", text=text, ts=T0 + i * 0.36)
            )
    return path


def test_a_big_transcript_filters_in_seconds(big_transcript: Path) -> None:
    # CPU seconds of this process, not wall seconds: a busy machine does not stretch them
    started = time.process_time()
    result = invoke(str(big_transcript), "--format", "text", "--instant", "--grep", "x")
    spent = time.process_time() - started
    assert result.exit_code == 0
    assert result.stdout.count("\n") == N_BIG // 10 + 2
    assert spent < 15, f"{spent:.1f} s of CPU to filter {N_BIG} events"


def test_the_first_line_is_shown_before_the_file_is_read(big_transcript: Path) -> None:
    size = big_transcript.stat().st_size
    with big_transcript.open("rb") as raw:

        class Counting(io.RawIOBase):
            def readline(self, limit: int = -1) -> bytes:  # type: ignore[override]
                return raw.readline(limit)

        read_at_first_line: list[int] = []

        class FirstWrite(io.StringIO):
            def write(self, text: str) -> int:
                if not read_at_first_line and "with x" in text:
                    read_at_first_line.append(raw.tell())
                return len(text)

        source = cast(IO[bytes], Counting())
        playback = Playback(source, PlayOptions(instant=True, keep=EventFilter.build(grep="x")))
        playback.play(PlainOutput(playback.renderer, FirstWrite()))
        assert read_at_first_line and read_at_first_line[0] < size / 100


# --------------------------------------------------------------------------- misc


def test_playback_rejects_a_missing_file_with_a_transcript_error(tmp_path: Path) -> None:
    with pytest.raises(TranscriptError, match="cannot open"):
        Playback(tmp_path / "none.jsonl", PlayOptions())


def test_help_ends_with_examples() -> None:
    result = CliRunner().invoke(cli, ["replay", "--help"])
    assert result.exit_code == 0
    description = result.output.split("Options:")[0].rstrip().splitlines()
    examples = description.index("  Examples:")
    assert all(line.strip().startswith("chatcli replay") for line in description[examples + 1 :])
    assert re.search(r"chatcli replay .* --to 127\.0\.0\.1:7777", result.output)


# --------------------------------------------------------------------------- end to end


def run_chatcli(*args: str, input: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chatcli", *args],
        input=None if input is None else input.decode(),
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.e2e
def test_e2e_check(tmp_path: Path) -> None:
    good = run_chatcli("replay", "--check", *map(str, SAMPLES))
    assert good.returncode == 0 and good.stderr == ""
    assert good.stdout.count("warning:") == 2
    bad = tmp_path / "bad.jsonl"
    lines = LOBBY.read_text().splitlines()
    lines[9] = lines[9][:-5]  # a damaged line in the middle
    bad.write_text("\n".join(lines) + "\n")
    result = run_chatcli("replay", "--check", str(bad))
    assert result.returncode == 1
    assert result.stdout.splitlines()[0].startswith(f"{bad}:10: not valid JSON")


@pytest.mark.e2e
def test_e2e_text_format_and_stdin() -> None:
    result = run_chatcli("replay", str(LOBBY), "--format", "text", "--utc", "--user", "yuki")
    assert result.returncode == 0 and result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0].startswith("09:00:00 -- recording started 2026-11-21 09:00:00 UTC")
    assert lines[1:3] == [
        "09:01:54 -- yuki joined lobby",
        "09:01:56 <yuki> おはようございます！ good morning 🌸",
    ]
    assert lines[-1] == "10:30:00 -- recording ended (33 events)"
    piped = run_chatcli("replay", "-", "--utc", "--user", "yuki", input=LOBBY.read_bytes())
    assert piped.stdout == result.stdout
    missing = run_chatcli("replay", "no/such/file.jsonl")
    assert missing.returncode == 1
    assert missing.stderr == "chatcli: no/such/file.jsonl: cannot open: No such file or directory\n"


# --------------------------------------------------------------------------- the README


ROOT = Path(__file__).resolve().parent.parent


def _readme_commands(section: str) -> list[str]:
    """The ``chatcli ...`` lines of the sh blocks in README section ``section``."""
    text = (ROOT / "README.md").read_text("utf-8")
    body = text.split(f"## `{section}`", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", body, re.S)
    return [line for block in blocks for line in block.splitlines() if "chatcli" in line]


def test_readme_replay_examples_name_files_that_exist() -> None:
    # a new user copies these lines: every shipped file they name must be there
    missing = []
    for line in _readme_commands("chatcli replay"):
        for word in shlex.split(line, comments=True):
            shipped = word.startswith("recordings/") and not set("*$") & set(word)
            if shipped and not (ROOT / word).is_file():
                missing.append(word)
    assert not missing, missing


def test_with_max_idle_the_status_shows_the_length_as_it_plays() -> None:
    """The lobby sample lasts 24:15 as recorded; capped at 2 s per gap it plays in ~1:05."""
    capped = Playback(LOBBY, PlayOptions(max_idle=2.0))
    uncapped = Playback(LOBBY, PlayOptions())
    try:
        assert uncapped.played_length() is None
        length = capped.played_length()
        assert length is not None and 60 < length < 70
        # the same timeline, placed event by event, ends at the same length
        timeline = Timeline(max_idle=2.0, instant=True)
        last = 0.0
        for entry in capped.entries():
            if not isinstance(entry.event, Header):
                last = timeline.place(entry.event.ts)  # type: ignore[union-attr]
        assert last == pytest.approx(length)
    finally:
        capped.close()
        uncapped.close()
    state = PlayState(
        position=T0 + 600,
        started=T0,
        end=T0 + 1455,
        speed=1.0,
        paused=False,
        live=False,
        shown=3,
        played=30.0,
        length=65.5,
    )
    assert format_status(state, UTC).startswith("▶  09:10:00  0:30 / 1:05  1x")
