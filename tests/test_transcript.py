"""Transcript reader and writer: format, tolerance, streaming and follow (no sockets)."""

from __future__ import annotations

import io
import itertools
import json
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from chatcli import __version__
from chatcli.core.protocol import DirectMessage, Error, Joined, Left, Msg, Ready, Users
from chatcli.errors import TranscriptError
from chatcli.transcript import (
    End,
    Entry,
    Header,
    ServerRecorder,
    TranscriptParser,
    TranscriptReader,
    TranscriptWriter,
    check_transcript,
    client_filename,
    last_timestamp,
    read_transcript,
    server_filename,
)

T0 = 1795251600.0  # 2026-11-21 09:00:00 UTC
HEADER = (
    '{"type":"transcript","version":1,"started":"2026-11-21T09:00:00Z",'
    '"source":"server","recorder":"chatcli 0.1.0","room":"lobby"}'
)


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, start: float = T0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def msg(i: int, text: str = "hi", who: str = "alice", room: str = "lobby") -> Msg:
    return Msg(id=i, room=room, from_=who, text=text, ts=T0 + i)


def msg_line(i: int, text: str = "hi") -> str:
    return json.dumps(
        {"type": "msg", "id": i, "room": "lobby", "from": "alice", "text": text, "ts": T0 + i}
    )


def write_lines(path: Path, *lines: str, newline_at_end: bool = True) -> Path:
    path.write_text("\n".join(lines) + ("\n" if newline_at_end else ""), encoding="utf-8")
    return path


def events(reader: TranscriptReader) -> list[object]:
    return [entry.event for entry in reader if not isinstance(entry.event, (Header, End))]


# ----------------------------------------------------------------------------- writer


def test_round_trip(tmp_path: Path) -> None:
    clock = FakeClock()
    path = tmp_path / "t.jsonl"
    recorded = [
        Joined(room="lobby", name="alice", ts=T0 + 0.5),
        msg(1, "hello"),
        Msg(id=2, room="lobby", from_="alice", text="waves", ts=T0 + 2, action=True),
        DirectMessage(from_="alice", to="bob", text="psst", ts=T0 + 3),
        Left(room="lobby", name="bob", reason="lost", ts=T0 + 4),
    ]
    with TranscriptWriter.create(
        path, source="server", room="lobby", host="127.0.0.1:7777", clock=clock
    ) as writer:
        for event in recorded:
            assert writer.write(event)
        clock.now = T0 + 5
    assert writer.closed and writer.events == 5

    with read_transcript(path) as reader:
        entries = list(reader)
    assert [e.line for e in entries] == [1, 2, 3, 4, 5, 6, 7]
    header, *middle, end = (e.event for e in entries)
    assert header == Header(
        version=1,
        started=datetime.fromisoformat("2026-11-21T09:00:00+00:00"),
        source="server",
        recorder=f"chatcli {__version__}",
        room="lobby",
        host="127.0.0.1:7777",
    )
    assert middle == recorded
    assert end == End(ts=T0 + 5, events=5)
    assert reader.warnings == [] and reader.problems == []


def test_written_lines_are_the_spec_format(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    with TranscriptWriter.create(path, source="client", name="alice", clock=FakeClock()) as w:
        w.write(msg(1))
    lines = path.read_text(encoding="utf-8").splitlines()
    assert json.loads(lines[0]) == {
        "type": "transcript",
        "version": 1,
        "started": "2026-11-21T09:00:00Z",
        "source": "client",
        "recorder": f"chatcli {__version__}",
        "name": "alice",
    }
    assert lines[1] == (
        '{"type":"msg","id":1,"room":"lobby","from":"alice","text":"hi","ts":1795251601.0}'
    )
    assert json.loads(lines[2]) == {"type": "end", "ts": T0, "events": 1}


def test_each_line_is_on_disk_as_soon_as_it_is_written(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    writer = TranscriptWriter.create(path, source="server", clock=FakeClock())
    assert path.read_bytes().count(b"\n") == 1
    writer.write(msg(1))
    on_disk = path.read_bytes()
    assert on_disk.endswith(b"\n") and on_disk.count(b"\n") == 2
    # Abandoned without close (a crash): still a readable transcript, minus the end line.
    with read_transcript(path) as reader:
        assert events(reader) == [msg(1)]
    assert [str(w) for w in reader.warnings] == [
        f"{path}:2: no end line: the recording was cut short"
    ]
    writer.close()


def test_write_strips_ref_turns_ready_into_join_and_skips_the_rest() -> None:
    out = io.BytesIO()
    clock = FakeClock()
    writer = TranscriptWriter(out, source="client", clock=clock, close_file=False)
    clock.now = T0 + 9
    assert writer.write(
        Msg(id=1, room="lobby", from_="me", text="x", ts=T0, ref="c-1")
    )  # the sender's own copy carries its ref
    assert writer.write(DirectMessage(from_="me", to="bob", text="y", ts=T0, ref=7))
    assert writer.write(Ready(name="me", room="dev", users=["me"], history=[msg(1)]))
    assert not writer.write(Users(room="dev", users=["me"]))
    assert not writer.write(Error(code="rate_limited", message="slow down"))
    writer.close()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert "ref" not in lines[1] and "ref" not in lines[2]
    assert lines[3] == {"type": "join", "room": "dev", "name": "me", "ts": T0 + 9}
    assert lines[4] == {"type": "end", "ts": T0 + 9, "events": 3}
    assert len(lines) == 5


def test_close_is_idempotent_and_write_after_close_fails(tmp_path: Path) -> None:
    writer = TranscriptWriter.create(tmp_path / "t.jsonl", source="server", clock=FakeClock())
    writer.close()
    writer.close()
    assert (tmp_path / "t.jsonl").read_text().count('"end"') == 1
    with pytest.raises(TranscriptError, match="closed"):
        writer.write(msg(1))


def test_write_errors_are_transcript_errors() -> None:
    class DiskFull(io.BytesIO):
        def write(self, data: object) -> int:
            if self.tell() > 0:
                raise OSError(28, "No space left on device")
            return super().write(data)  # type: ignore[arg-type]

    writer = TranscriptWriter(DiskFull(), source="server", path="x.jsonl", clock=FakeClock())
    with pytest.raises(TranscriptError) as info:
        writer.write(msg(1))
    assert str(info.value) == "x.jsonl:2: cannot write: No space left on device"


def test_unknown_source_is_refused() -> None:
    with pytest.raises(ValueError):
        TranscriptWriter(io.BytesIO(), source="bench")


def test_create_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dir" / "t.jsonl"
    first = TranscriptWriter.create(path, source="client", clock=FakeClock())
    second = TranscriptWriter.create(path, source="client", clock=FakeClock())
    third = TranscriptWriter.create(path, source="client", clock=FakeClock())
    assert [Path(w.path).name for w in (first, second, third)] == [
        "t.jsonl",
        "t.2.jsonl",
        "t.3.jsonl",
    ]
    with pytest.raises(TranscriptError, match="cannot create"):
        TranscriptWriter.create(path, source="client", unique=False)
    for writer in (first, second, third):
        writer.close()


def test_file_names_sort_by_time() -> None:
    assert client_filename(datetime(2026, 11, 20, 18, 30, 0)) == (
        "record_chat_2026-11-20_18-30-00.jsonl"
    )
    assert client_filename().startswith("record_chat_20")
    assert server_filename("lobby", T0) == "20261121-090000_lobby.jsonl"
    assert server_filename("dev", datetime.fromisoformat("2026-11-21T10:00:00+01:00")) == (
        "20261121-090000_dev.jsonl"
    )
    for bad in ("../etc", "a/b", "", "Lobby"):
        with pytest.raises(ValueError):
            server_filename(bad, T0)


def test_server_recorder_one_file_per_room(tmp_path: Path) -> None:
    clock = FakeClock()
    recorder = ServerRecorder(tmp_path, host="0.0.0.0:7777", clock=clock)
    assert recorder.write(Joined(room="lobby", name="alice", ts=T0))
    clock.now = T0 + 3600  # files keep the run's start in their names
    assert recorder.write(msg(1, room="dev"))
    assert recorder.write(msg(1, room="lobby"))
    assert not recorder.write(DirectMessage(from_="alice", to="bob", text="secret", ts=T0))
    assert not recorder.write(Users(room="lobby", users=[]))
    recorder.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["20261121-090000_dev.jsonl", "20261121-090000_lobby.jsonl"]
    assert [Path(p).name for p in recorder.paths] == list(reversed(names))
    with read_transcript(tmp_path / names[1]) as reader:
        assert reader.header.room == "lobby" and reader.header.source == "server"
        assert events(reader) == [Joined(room="lobby", name="alice", ts=T0), msg(1)]
        assert reader.end == End(ts=T0 + 3600, events=2)
    assert "secret" not in "".join(p.read_text() for p in tmp_path.iterdir())


def test_server_recorder_dms_only_when_asked(tmp_path: Path) -> None:
    with ServerRecorder(tmp_path, clock=FakeClock(), record_dms=True) as recorder:
        assert recorder.write(DirectMessage(from_="alice", to="bob", text="psst", ts=T0))
    (path,) = tmp_path.iterdir()
    assert path.name == "20261121-090000.dm.jsonl"
    with read_transcript(path) as reader:
        assert reader.header.room is None
        assert len(events(reader)) == 1


# ----------------------------------------------------------------------------- reader


def test_truncated_last_line_is_only_a_warning(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "t.jsonl", HEADER, msg_line(1), msg_line(2)[:25], newline_at_end=False
    )
    with read_transcript(path) as reader:
        assert events(reader) == [msg(1)]
    assert [str(w) for w in reader.warnings] == [
        f"{path}:3: last line is truncated (recording cut short)",
        f"{path}:3: no end line: the recording was cut short",
    ]
    assert check_transcript(path).ok


def test_bad_middle_line_reports_its_line_number(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "t.jsonl",
        HEADER,
        msg_line(1),
        '{"type":"msg","id":2,"room":"lobby"',  # broken, yet not the last line
        msg_line(3),
        '{"type":"msg","id":"four","room":"lobby","from":"a","text":"x","ts":1}',
        "[1, 2]",
        '{"no_type": true}',
        '{"type":"end","ts":1795251700.0,"events":2}',
    )
    with pytest.raises(TranscriptError) as info, read_transcript(path) as reader:
        list(reader)
    assert info.value.line == 3 and info.value.path == str(path)
    assert str(info.value).startswith(f"{path}:3: not valid JSON")

    result = check_transcript(path)
    assert not result.ok and result.events == 2
    assert [(p.line, p.reason) for p in result.problems] == [
        (3, "not valid JSON (input data was truncated)"),
        (5, "bad 'msg' line: Expected `int`, got `str` - at `$.id`"),
        (6, "expected a JSON object, got an array"),
        (7, 'no string "type" field'),
    ]
    assert result.warnings == []


def test_collecting_mode_still_yields_the_good_events(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "t.jsonl", HEADER, msg_line(1), "{oops", msg_line(3))
    with read_transcript(path, strict=False) as reader:
        assert [e.id for e in events(reader)] == [1, 3]  # type: ignore[attr-defined]
    assert [p.line for p in reader.problems] == [3]


def test_unknown_types_and_fields_are_ignored(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "t.jsonl",
        HEADER[:-1] + ',"future":{"x":1}}',
        '{"type":"typing","name":"alice","ts":1795251600.5}',
        '{"type":"users","room":"lobby","users":[]}',
        msg_line(1)[:-1] + ', "colour": "red", "reactions": [1, 2]}',
        '{"type":"end","ts":1795251700.0,"events":1,"checksum":"abc"}',
    )
    with read_transcript(path) as reader:
        entries = list(reader)
    assert [e.line for e in entries] == [1, 4, 5]
    assert entries[1].event == msg(1)
    assert b'"reactions": [1, 2]' in entries[1].raw  # kept for pass-through
    assert reader.ignored == 2 and reader.warnings == []


def test_unicode_survives_the_round_trip(tmp_path: Path) -> None:
    texts = [
        "café, naïve, Ærøskøbing",
        "emoji 😀👍🏽👨‍👩‍👧 ok",
        "RTL: مرحبا بالعالم and שלום",
        "CJK: 你好，世界 こんにちは 안녕하세요",
        "combining e\u0301 and zero-width\u200djoiner",
    ]
    path = tmp_path / "t.jsonl"
    with TranscriptWriter.create(path, source="server", clock=FakeClock()) as writer:
        for i, text in enumerate(texts, 1):
            writer.write(msg(i, text))
    assert "😀" in path.read_text(encoding="utf-8")  # stored as UTF-8, readable with jq/less
    with read_transcript(path) as reader:
        assert [e.text for e in events(reader)] == texts  # type: ignore[attr-defined]


def test_missing_end_is_a_warning(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "t.jsonl", HEADER, msg_line(1), msg_line(2))
    result = check_transcript(path)
    assert result.ok and result.events == 2
    assert [(w.line, w.reason) for w in result.warnings] == [
        (3, "no end line: the recording was cut short")
    ]


def test_header_problems_stop_reading(tmp_path: Path) -> None:
    cases = {
        "": "empty: no transcript header",
        "\n\n": "empty: no transcript header",
        msg_line(1): "not a transcript: line 1 must be the transcript header",
        "hello world": "not a transcript: line 1 is not valid JSON",
        HEADER.replace('"version":1', '"version":2'): "unsupported transcript version 2",
        HEADER.replace('"2026-11-21T09:00:00Z"', '"yesterday"'): "bad 'transcript' line",
        HEADER.replace('"source":"server",', ""): "missing required field `source`",
    }
    for i, (first, reason) in enumerate(cases.items()):
        path = tmp_path / f"t{i}.jsonl"
        body = first + "\n" + (msg_line(1) + "\n" if first.strip() else "")
        path.write_text(body, encoding="utf-8")
        for strict in (True, False):
            with (
                pytest.raises(TranscriptError, match=reason),
                read_transcript(path, strict=strict) as reader,
            ):
                list(reader)
        result = check_transcript(path)
        assert len(result.problems) == 1 and reason in str(result.problems[0])


def test_lines_after_end_and_a_second_header_are_problems(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "t.jsonl",
        HEADER,
        msg_line(1),
        HEADER,
        '{"type":"end","ts":1795251700.0,"events":5}',
        msg_line(2),
    )
    result = check_transcript(path)
    assert [(p.line, p.reason) for p in result.problems] == [
        (3, "a second transcript header"),
        (5, "line after the end line (line 4)"),
    ]
    assert [(w.line, w.reason) for w in result.warnings] == [
        (4, "end counts 5 events, read 1"),
    ]


def test_blank_lines_crlf_and_no_final_newline_are_fine(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_bytes(
        (HEADER + "\r\n\r\n" + msg_line(1) + "\r\n\n" + '{"type":"end","ts":1,"events":1}').encode()
    )
    with read_transcript(path) as reader:
        assert [e.line for e in reader] == [1, 3, 5]
    assert reader.warnings == []


def test_invalid_utf8_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_bytes(
        HEADER.encode() + b"\n" + msg_line(1).encode().replace(b"hi", b"h\xff") + b"\n"
    )
    result = check_transcript(path)
    assert [(p.line, p.reason) for p in result.problems] == [(2, "not valid UTF-8")]


def test_over_long_lines_are_skipped_without_reading_them_whole(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    huge = msg_line(2, "x" * 5000)
    path.write_text("\n".join([HEADER, msg_line(1), huge, msg_line(3), "y" * 5000]))
    with read_transcript(path, strict=False, max_line=1000) as reader:
        assert [e.id for e in events(reader)] == [1, 3]  # type: ignore[attr-defined]
    assert [(p.line, p.reason) for p in reader.problems] == [
        (3, "line longer than 1000 bytes"),
        (5, "line longer than 1000 bytes"),
    ]


def test_missing_file_is_a_transcript_error(tmp_path: Path) -> None:
    with pytest.raises(TranscriptError, match="cannot open"):
        read_transcript(tmp_path / "nope.jsonl")
    result = check_transcript(tmp_path / "nope.jsonl")
    assert not result.ok


def test_reads_binary_and_text_streams_and_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    data = "\n".join([HEADER, msg_line(1, "ünï 😀"), ""])
    for stream in (io.BytesIO(data.encode()), io.StringIO(data)):
        reader = read_transcript(stream, name="sample")
        assert events(reader) == [msg(1, "ünï 😀")]
        assert reader.path == "sample"
    stdin = io.TextIOWrapper(io.BytesIO(data.encode()), encoding="utf-8")
    monkeypatch.setattr(sys, "stdin", stdin)
    reader = read_transcript("-")
    assert events(reader) == [msg(1, "ünï 😀")]
    assert str(reader.warnings[0]).startswith("<stdin>:2: no end line")


def test_header_is_available_before_iterating(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "t.jsonl", HEADER, msg_line(1))
    with read_transcript(path) as reader:
        assert reader.header.room == "lobby"
        entries = list(reader)
    assert [e.line for e in entries] == [1, 2]  # the header is still yielded, once


def test_first_events_come_before_the_rest_is_read(tmp_path: Path) -> None:
    """Streaming: a reader never needs the whole file before its first event."""

    def endless() -> Iterator[bytes]:
        yield HEADER.encode() + b"\n"
        for i in itertools.count(1):
            yield msg_line(i).encode() + b"\n"

    class EndlessStream(io.RawIOBase):
        def __init__(self) -> None:
            self.chunks, self.served = endless(), 0

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
            chunk = next(self.chunks)
            buffer[: len(chunk)] = chunk
            self.served += len(chunk)
            return len(chunk)

    raw = EndlessStream()
    reader = read_transcript(io.BufferedReader(raw), name="endless")
    first = list(itertools.islice(reader, 3))
    assert [e.line for e in first] == [1, 2, 3]
    assert raw.served < 64 * 1024


def test_good_start_is_readable_even_if_the_rest_is_garbage(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    with path.open("wb") as file:
        file.write((HEADER + "\n" + msg_line(1) + "\n").encode())
        file.write(b"\x00\xff garbage \x1b[2J" * 200_000)  # ~3 MB, no newline
    reader = read_transcript(path)
    assert next(reader).line == 1
    assert next(reader).event == msg(1)
    assert reader._file.tell() < 64 * 1024  # only the head was read
    with pytest.raises(TranscriptError, match="line longer than"):
        next(reader)
    reader.close()


def test_a_100k_event_file_streams(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    with TranscriptWriter.create(path, source="server", clock=FakeClock()) as writer:
        for i in range(1, 100_001):
            writer.write(msg(i, f"message number {i}"))
    with read_transcript(path) as reader:
        assert next(reader).line == 1 and next(reader).event == msg(1, "message number 1")
        assert reader._file.tell() < 64 * 1024
        count = sum(1 for _ in reader)
    assert count == 100_000  # 99_999 messages and the end line
    assert reader.warnings == [] and reader.end == End(ts=T0, events=100_000)
    assert last_timestamp(path) == T0


def test_follow_reads_a_growing_file_until_end(tmp_path: Path) -> None:
    path = tmp_path / "live.jsonl"
    clock = FakeClock()
    # Both appenders are in append mode, so each line lands at the current end.
    appender = open(path, "ab", buffering=0)  # noqa: SIM115 - the writer closes it
    writer = TranscriptWriter(appender, source="server", clock=clock)
    raw = open(path, "ab", buffering=0)  # noqa: SIM115 - a second appender, for half lines
    steps = iter(
        [
            lambda: writer.write(msg(1)),
            lambda: None,  # nothing new: keep polling
            lambda: raw.write(msg_line(2).encode()[:20]),  # half a line...
            lambda: raw.write(msg_line(2).encode()[20:] + b"\n"),  # ...and the rest
            lambda: writer.write(msg(3)),
            lambda: writer.close(),
        ]
    )
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        assert len(sleeps) < 20, "follow did not stop at end"
        next(steps, lambda: None)()

    with read_transcript(path, follow=True, poll_interval=0.5, sleep=sleep) as reader:
        seen = [entry.event for entry in reader]
    raw.close()
    assert seen[1:4] == [msg(1), msg(2), msg(3)]
    assert isinstance(seen[-1], End)
    assert sleeps and set(sleeps) == {0.5}
    # The writer did not see the line appended behind its back, and end says so.
    assert [w.reason for w in reader.warnings] == ["end counts 2 events, read 3"]


def test_follow_on_a_pipe_ends_at_its_end() -> None:
    class Pipe(io.BytesIO):
        def seekable(self) -> bool:
            return False

    def sleep(_: float) -> None:
        raise AssertionError("a pipe must not be polled")

    data = (HEADER + "\n" + msg_line(1) + "\n").encode()
    reader = read_transcript(Pipe(data), follow=True, sleep=sleep)
    assert events(reader) == [msg(1)]
    assert len(reader.warnings) == 1


def test_parser_is_usable_without_io() -> None:
    parser = TranscriptParser("mem")
    assert parser.parse(HEADER.encode(), 1) == Entry(1, parser.header, HEADER.encode())  # type: ignore[arg-type]
    assert parser.parse(b"   ", 2) is None
    entry = parser.parse(msg_line(1).encode() + b"\r\n", 3)
    assert entry == Entry(3, msg(1), msg_line(1).encode())
    with pytest.raises(TranscriptError, match="mem:4: not valid JSON"):
        parser.parse(b"{", 4)
    assert parser.parse(b'{"type":"ms', 5, unterminated=True) is None
    parser.finish()
    assert [w.line for w in parser.warnings] == [5, 5]


def test_last_timestamp_reads_only_the_tail(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "t.jsonl", HEADER, msg_line(1), msg_line(7)[:30])
    assert last_timestamp(path) == T0 + 1
    assert last_timestamp(write_lines(tmp_path / "h.jsonl", HEADER)) is None


# ------------------------------------------------------------------------ samples

RECORDINGS = Path(__file__).resolve().parent.parent / "recordings"
SAMPLES = sorted(RECORDINGS.glob("*.jsonl"))
CRASHED = {"20261122-141500_lobby.jsonl"}  # left behind by a crash, on purpose


def test_the_samples_are_there() -> None:
    names = {path.name for path in SAMPLES}
    assert names >= CRASHED
    assert "record_chat_2026-11-20_18-30-00.jsonl" in names
    assert len(names) >= 3


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_every_sample_reads_cleanly(path: Path) -> None:
    result = check_transcript(path)
    assert result.ok, [str(p) for p in result.problems]
    assert result.events > 5
    if path.name in CRASHED:
        assert [w.reason for w in result.warnings] == [
            "last line is truncated (recording cut short)",
            "no end line: the recording was cut short",
        ]
    else:
        assert result.warnings == []
    with read_transcript(path) as reader:
        header = reader.header
        items = [entry.event for entry in reader]
    assert header.source == ("client" if path.name.startswith("record_chat_") else "server")
    if header.source == "server":
        assert path.name == server_filename(header.room or "", header.started)
    stamps = [e.ts for e in items if not isinstance(e, Header)]
    assert stamps == sorted(stamps)
    last_id: dict[str, int] = {}
    for event in items:
        if isinstance(event, Msg):
            assert event.id > last_id.get(event.room, 0)
            last_id[event.room] = event.id


def test_the_samples_cover_what_a_chat_leaves_behind() -> None:
    seen = [e.event for path in SAMPLES for e in read_transcript(path)]
    reasons = {e.reason for e in seen if isinstance(e, Left)}
    assert {"quit", "part", "lost", "timeout", "kicked"} <= reasons
    assert any(isinstance(e, DirectMessage) for e in seen)
    assert any(isinstance(e, Msg) and e.action for e in seen)
    texts = "".join(e.text for e in seen if isinstance(e, (Msg, DirectMessage)))
    for sample in ("é", "📚", "东京", "おはよう", "Привет", "صباح"):
        assert sample in texts
    gaps = []
    for path in SAMPLES:
        stamps = [e.event.ts for e in read_transcript(path) if isinstance(e.event, Msg)]
        gaps += [b - a for a, b in itertools.pairwise(stamps)]
    assert max(gaps) >= 20 * 60  # a long idle gap, for replay --max-idle
