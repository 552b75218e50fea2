"""Issue 13, row 1 and 8: the server recorder stays bounded and survives write errors."""

from __future__ import annotations

import errno
import time
from pathlib import Path
from typing import IO, Any

import pytest

from chatcli import transcript
from chatcli.core.protocol import Msg
from chatcli.transcript import ServerRecorder, check_transcript, read_transcript

T0 = 1795251600.0


def msg(i: int, room: str) -> Msg:
    return Msg(id=i, room=room, from_="alice", text=f"message {i}", ts=T0 + i)


def test_a_room_hopper_cannot_hold_more_than_max_open_files(tmp_path: Path) -> None:
    recorder = ServerRecorder(tmp_path, clock=lambda: T0, max_open=4)
    for round_ in range(3):
        for room in range(50):
            assert recorder.write(msg(round_, f"r{room}"))
            assert recorder.open_files <= 4
    started = time.monotonic()
    recorder.close()
    assert time.monotonic() - started < 5.0  # fast shutdown, even with 50 files to end
    assert recorder.open_files == 0
    files = sorted(tmp_path.iterdir())
    assert len(files) == 50
    for path in files:
        result = check_transcript(path)
        assert result.ok, result
        with read_transcript(path) as reader:
            assert [e.event.id for e in reader if isinstance(e.event, Msg)] == [0, 1, 2]
            assert reader.end is not None and reader.end.events == 3


def test_a_write_error_stops_only_that_file_leaves_no_partial_line_and_is_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    now = [0.0]
    recorder = ServerRecorder(tmp_path, clock=lambda: T0, retry=10.0, monotonic=lambda: now[0])
    assert recorder.write(msg(1, "full"))
    assert recorder.write(msg(1, "fine"))
    real = transcript._write_all
    disk_full = {"on": True}

    def half_then_enospc(file: IO[bytes], data: bytes) -> None:
        if disk_full["on"] and "full" in file.name:
            file.write(data[: len(data) // 2])  # the disk took half of the line
            raise OSError(errno.ENOSPC, "No space left on device")
        real(file, data)

    monkeypatch.setattr(transcript, "_write_all", half_then_enospc)
    with caplog.at_level("WARNING", logger="chatcli.server"):
        for i in range(2, 6):
            assert not recorder.write(msg(i, "full"))
            assert recorder.write(msg(i, "fine"))  # the other room records on
    stopped = [r for r in caplog.records if "stopped" in r.getMessage()]
    assert len(stopped) == 1  # logged once
    disk_full["on"] = False
    now[0] = 11.0  # past the retry time: the file is written again
    assert recorder.write(msg(6, "full"))
    recorder.close()
    for name, ids in (("full", [1, 6]), ("fine", [1, 2, 3, 4, 5])):
        (path,) = tmp_path.glob(f"*_{name}.jsonl")
        result = check_transcript(path)
        assert result.ok, result  # no half line anywhere
        with read_transcript(path) as reader:
            assert [e.event.id for e in reader if isinstance(e.event, Msg)] == ids


def test_a_removed_directory_stops_recording_without_raising(tmp_path: Path) -> None:
    where = tmp_path / "rec"
    recorder = ServerRecorder(where, clock=lambda: T0, max_open=1)
    assert recorder.write(msg(1, "a"))
    for path in where.iterdir():
        path.unlink()
    where.rmdir()
    (tmp_path / "rec").write_text("now a file")  # the directory cannot come back
    assert not recorder.write(msg(1, "b"))  # a new room: cannot be created
    recorder.close()  # never raises


def test_the_client_writer_cuts_off_a_half_written_line(tmp_path: Path) -> None:
    import io

    from chatcli.errors import TranscriptError
    from chatcli.transcript import TranscriptWriter

    class HalfFull(io.BytesIO):
        full = False

        def write(self, data: Any) -> int:
            if self.full:
                super().write(bytes(data)[:10])
                raise OSError(errno.ENOSPC, "No space left on device")
            return super().write(data)

    file = HalfFull()
    writer = TranscriptWriter(file, source="client", close_file=False, clock=lambda: T0)
    writer.write(msg(1, "lobby"))
    file.full = True
    with pytest.raises(TranscriptError, match="No space left"):
        writer.write(msg(2, "lobby"))
    file.full = False
    writer.close()  # the end line follows whole lines only
    path = tmp_path / "t.jsonl"
    path.write_bytes(file.getvalue())
    result = check_transcript(path)
    assert result.ok, result
