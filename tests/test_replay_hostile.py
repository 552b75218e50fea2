"""Issue 13, rows 9-10: hostile transcripts give ``FILE:LINE: reason``, never a traceback.

``--check`` and playback read with the same parser, so they agree; a fuzz test feeds the
reader arbitrary bytes; ``--follow`` survives rotation and truncation as ``tail -F`` does.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatcli.cli import cli
from chatcli.core.protocol import Msg
from chatcli.errors import TranscriptError
from chatcli.transcript import End, Header, read_transcript

T0 = 1795251600.0
HEADER = (
    '{"type":"transcript","version":1,"started":"2026-11-21T09:00:00Z",'
    '"source":"server","recorder":"x","room":"lobby"}'
)


def msg_line(i: int, ts: str | None = None, extra: str = "") -> str:
    stamp = ts if ts is not None else repr(T0 + i)
    return f'{{"type":"msg","id":{i},"room":"lobby","from":"a","text":"m{i}","ts":{stamp}{extra}}}'


def invoke(*args: str) -> Any:
    return CliRunner().invoke(cli, ["replay", *args], catch_exceptions=False)


DEEP = "[" * 1000 + "]" * 1000
HOSTILE = {
    "ts-huge": (HEADER, msg_line(1), msg_line(2, "1e308")),
    "ts-negative": (HEADER, msg_line(1), msg_line(2, "-1e18")),
    "ts-400-digits": (HEADER, msg_line(1), msg_line(2, "1" + "0" * 400)),
    "id-400-digits": (HEADER, msg_line(1).replace('"id":1', '"id":1' + "0" * 400)),
    "started-year-1": (HEADER.replace("2026-11-21", "0001-01-01"), msg_line(1)),
    "deep-unknown-field": (HEADER, msg_line(1, extra=f',"junk":{DEEP}')),
    "deep-header": (HEADER[:-1] + f',"x":{DEEP}}}', msg_line(1)),
    "deep-unknown-type": (HEADER, f'{{"type":"zzz","a":{DEEP}}}'),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_transcripts_give_file_line_reasons_and_check_and_play_agree(
    tmp_path: Path, name: str
) -> None:
    path = tmp_path / f"{name}.jsonl"
    path.write_text("\n".join(HOSTILE[name]) + "\n")
    check = invoke("--check", str(path))
    play = invoke("--format", "text", str(path))
    jsonl = invoke("--format", "jsonl", "--start-at", "1m", str(path))
    for result in (check, play, jsonl):
        assert "Traceback" not in result.output + result.stderr
    reasons = re.findall(rf"{re.escape(str(path))}:(\d+): (?!warning)(.*)", check.output)
    if name == "id-400-digits":  # a big id is only big: valid, and played
        assert check.exit_code == 0 and play.exit_code == 0 and not reasons
        return
    assert check.exit_code == 1 and reasons, check.output
    # playback stops or skips at the same line, for the same reason, and exits non-zero
    assert play.exit_code == 1 and jsonl.exit_code == 1
    line, reason = reasons[0]
    assert f"{path}:{line}: {reason}" in play.stderr
    assert f"{path}:{line}: {reason}" in jsonl.stderr


def test_check_of_a_file_without_newlines_stops_at_the_line_limit(tmp_path: Path) -> None:
    result = invoke("--check", "/dev/zero")  # would spin forever if it read to the end
    assert result.exit_code == 1
    assert "/dev/zero:1: line longer than" in result.output


def test_an_endless_later_line_is_given_up_on(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_bytes((HEADER + "\n" + msg_line(1) + "\n").encode() + b"x" * 200_000)
    with read_transcript(path, strict=False, max_line=1000) as reader:
        assert sum(1 for _ in reader) == 2
    assert [(p.line, p.reason) for p in reader.problems] == [(3, "line longer than 1000 bytes")]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.one_of(
            st.binary(max_size=80),
            st.sampled_from([HEADER, msg_line(1), msg_line(2, "1e308"), '{"type":"end"}']).map(
                str.encode
            ),
            st.recursive(
                st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text()),
                lambda inner: st.one_of(
                    st.lists(inner), st.dictionaries(st.sampled_from(["type", "ts", "x"]), inner)
                ),
            ).map(lambda value: json.dumps(value).encode()),
        ),
        max_size=8,
    ),
    st.booleans(),
)
def test_fuzz_the_reader_any_bytes_in_only_file_line_reasons_out(
    lines: list[bytes], header_first: bool
) -> None:
    import io

    data = b"\n".join(([HEADER.encode()] if header_first else []) + lines)
    reader = read_transcript(io.BytesIO(data), strict=False, name="fuzz.jsonl")
    try:
        for entry in reader:
            assert isinstance(entry.line, int)
    except TranscriptError as exc:
        assert re.fullmatch(r"fuzz\.jsonl:\d+: .+", str(exc), re.DOTALL), str(exc)
    for problem in [*reader.problems, *reader.warnings]:
        assert re.fullmatch(r"fuzz\.jsonl:\d+: .+", str(problem), re.DOTALL), str(problem)


def _follow(path: Path, steps: list[Any]) -> list[object]:
    todo = iter(steps)

    def sleep(_: float) -> None:
        step = next(todo, None)
        assert step is not None, "follow did not reach the end"
        step()

    with read_transcript(path, follow=True, poll_interval=0.01, sleep=sleep) as reader:
        seen = [entry.event for entry in reader]
    return [e for e in seen if not isinstance(e, (Header, End))]


def test_follow_reads_on_after_a_rotation(tmp_path: Path) -> None:
    path = tmp_path / "live.jsonl"
    path.write_text(HEADER + "\n" + msg_line(1) + "\n")

    def rotate() -> None:
        os.rename(path, tmp_path / "live.jsonl.1")
        path.write_text(HEADER + "\n" + msg_line(2) + "\n")

    def end() -> None:
        with open(path, "a") as file:
            file.write('{"type":"end","ts":%r,"events":1}\n' % (T0 + 9))

    seen = _follow(path, [lambda: None, rotate, lambda: None, end])
    assert [m.id for m in seen if isinstance(m, Msg)] == [1, 2]


def test_follow_reads_on_after_a_copytruncate(tmp_path: Path) -> None:
    path = tmp_path / "live.jsonl"
    path.write_text(HEADER + "\n" + msg_line(1) + "\n")

    def truncate_and_write() -> None:
        with open(path, "r+") as file:
            file.truncate(0)
        with open(path, "a") as file:
            file.write(msg_line(2) + "\n")

    def end() -> None:
        with open(path, "a") as file:
            file.write('{"type":"end","ts":%r,"events":2}\n' % (T0 + 9))

    seen = _follow(path, [truncate_and_write, lambda: None, end])
    assert [m.id for m in seen if isinstance(m, Msg)] == [1, 2]
