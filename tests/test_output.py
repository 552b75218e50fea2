"""The outputs join and replay share (chatcli.ui.output): one per format, same lines."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime

import pytest
from rich.console import Console

from chatcli.core.protocol import Error, Joined, Msg, encode
from chatcli.transcript import End, Header
from chatcli.ui.output import JsonlOutput, PlainOutput, RichOutput
from chatcli.ui.render import Renderer

T0 = 1795251600.0  # 2026-11-21 09:00:00 UTC


class Counting(io.StringIO):
    """A text stream that counts its flushes."""

    flushes = 0

    def flush(self) -> None:
        self.flushes += 1
        super().flush()


class CountingBytes(io.BytesIO):
    flushes = 0

    def flush(self) -> None:
        self.flushes += 1
        super().flush()


def renderer() -> Renderer:
    return Renderer(me="bob", tz=UTC, clock=lambda: T0, timestamps=True)


def hi(text: str = "hi") -> Msg:
    return Msg(id=1, room="lobby", from_="alice", text=text, ts=T0 + 1)


def test_rich_output_prints_what_the_renderer_renders() -> None:
    # truecolor, as test_render.py uses: rich caches a style's codes for the first
    # colour system it is rendered in, so another system here would leak into those tests
    file = io.StringIO()
    out = RichOutput(
        renderer(), Console(file=file, width=80, force_terminal=True, color_system="truecolor")
    )
    out.show(hi("[bold]not markup[/]"))
    out.show(Joined(room="lobby", name="carol", ts=T0 + 2))
    out.notice("bad news", error=True)
    out.flush()
    expected = io.StringIO()
    console = Console(file=expected, width=80, force_terminal=True, color_system="truecolor")
    for text in (
        renderer().render(hi("[bold]not markup[/]")),
        renderer().render(Joined(room="lobby", name="carol", ts=T0 + 2)),
        renderer().notice("bad news", error=True),
    ):
        console.print(text)
    assert file.getvalue() == expected.getvalue()
    assert "[bold]not markup[/]" in file.getvalue()  # peer text is never markup


@pytest.mark.parametrize("line_buffered", [False, True])
def test_plain_output_writes_renderer_plain_lines(line_buffered: bool) -> None:
    stream, notices = Counting(), io.StringIO()
    out = PlainOutput(renderer(), stream, line_buffered=line_buffered, notices=notices)
    out.show(hi())
    out.show(Error(code="bad_request", message="no"))
    assert stream.getvalue().splitlines() == [
        renderer().plain(hi()),
        renderer().plain(Error(code="bad_request", message="no")),
    ]
    assert stream.flushes == (2 if line_buffered else 0)
    out.flush()
    assert stream.flushes == (3 if line_buffered else 1)
    out.notice("just so you know")
    out.notice("it failed", error=True)
    assert notices.getvalue() == "just so you know\nerror: it failed\n"


def test_plain_output_notices_go_to_stderr_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    out = PlainOutput(renderer(), io.StringIO())
    out.notice("refused", error=True)
    assert capsys.readouterr() == ("", "error: refused\n")


def test_jsonl_output_of_live_events_is_their_encoding() -> None:
    stream = CountingBytes()
    out = JsonlOutput(stream, line_buffered=True)
    events = [hi(), Joined(room="lobby", name="carol", ts=T0 + 2)]
    for event in events:
        out.show(event)
    assert stream.getvalue() == b"".join(encode(event) for event in events)
    assert stream.flushes == 2


def test_jsonl_output_escapes_c1_and_bidi_controls_to_the_same_json_value() -> None:
    stream = io.BytesIO()
    JsonlOutput(stream).show(hi("a\x9b31mb\u202ec"))
    line = stream.getvalue()
    assert b"\xc2\x9b" not in line and "\u202e".encode() not in line
    assert json.loads(line)["text"] == "a\x9b31mb\u202ec"


def test_jsonl_output_passes_transcript_lines_through_and_counts_events() -> None:
    stream = io.BytesIO()
    out = JsonlOutput(stream)
    header = Header(
        version=1, started=datetime.fromtimestamp(T0, UTC), source="server", recorder="t"
    )
    out.show(header, b'{"type":"transcript","x":1}')
    out.show(hi(), b'{"type":"msg","unknown":"kept"}')
    out.show(End(ts=T0 + 5, events=7), b'{"type":"end"}')
    first, second, end = stream.getvalue().splitlines()
    assert (first, second) == (b'{"type":"transcript","x":1}', b'{"type":"msg","unknown":"kept"}')
    assert json.loads(end) == {"type": "end", "ts": T0 + 5, "events": 1}
