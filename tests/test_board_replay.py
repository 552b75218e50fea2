"""The board in terminals and recordings: coalesced activity lines, replay, SVG export and
re-injection of draws."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from helpers import HOST, async_test, serving
from test_replay import T0, write_transcript

from chatcli.cli import cli
from chatcli.core.events import Cleared, Drawn, Erased, Joined, Moved, Msg, Shape
from chatcli.replay.board_svg import board_at, board_svg, text_size
from chatcli.replay.inject import Injector, Planner, Reread, Send, plan
from chatcli.replay.player import PlayOptions, Timeline
from chatcli.ui.board_activity import BoardBursts, BoardSummary, summary_text
from chatcli.ui.render import Renderer

SVG = "{http://www.w3.org/2000/svg}"


def line(x: float = 10, y: float = 20, color: str = "#d62728") -> Shape:
    return Shape(kind="line", points=((x, y), (x + 100, y + 50)), color=color, width=3)


def drawn(id: int, who: str, ts: float, shape: Shape | None = None, room: str = "lobby") -> Drawn:
    return Drawn(id=id, room=room, from_=who, shape=shape or line(), ts=ts)


# -- coalescing (pure) --------------------------------------------------------------------


def test_a_burst_is_one_line_per_person_ended_by_quiet() -> None:
    bursts = BoardBursts(quiet=2.0)
    bursts.add(drawn(1, "alice", T0), now=0.0)
    bursts.add(drawn(2, "alice", T0 + 1), now=1.0)
    bursts.add(drawn(3, "bob", T0 + 1), now=1.5)
    bursts.add(drawn(4, "alice", T0 + 2), now=2.5)
    assert bursts.due(3.0) == []  # alice drew 0.5 s ago, bob 1.5 s ago
    assert bursts.next_deadline() == 3.5
    [bob] = bursts.due(3.5)
    assert (bob.who, bob.drew) == ("bob", 1)
    [alice] = bursts.due(4.5)
    assert (alice.who, alice.drew, alice.ts) == ("alice", 3, T0)
    assert not bursts and bursts.next_deadline() is None


@pytest.mark.parametrize(
    ("counts", "text"),
    [
        ({"drew": 1, "kinds": {"line": 1}}, "drew a line on the board"),
        ({"drew": 1, "kinds": {"oval": 1}}, "drew an oval on the board"),
        ({"drew": 3, "kinds": {"pencil": 3}}, "drew 3 strokes on the board"),
        ({"drew": 1, "kinds": {"text": 1}}, "drew a text on the board"),
        ({"drew": 3, "kinds": {"line": 1, "rect": 2}}, "drew 3 shapes on the board"),
        ({"moved": 2, "erased": 1}, "moved 2 shapes and erased a shape on the board"),
        ({"cleared": "own"}, "cleared their drawings"),
        ({"cleared": "all"}, "cleared the whole board"),
        (
            {"drew": 2, "kinds": {"rect": 2}, "cleared": "own"},
            "drew 2 rectangles on the board and cleared their drawings",
        ),
    ],
)
def test_summary_text(counts: dict[str, Any], text: str) -> None:
    assert summary_text(BoardSummary("alice", "lobby", T0, T0, **counts)) == text


def test_the_renderer_shows_a_burst_as_one_dim_notice() -> None:
    summary = BoardSummary("alice", "lobby", T0, T0, drew=3, kinds={"line": 3})
    renderer = Renderer(timestamps=False)
    assert renderer.plain(summary) == "-- alice drew 3 lines on the board"
    rendered = renderer.render(summary)
    assert rendered is not None and "dim" in str(rendered.spans)
    hostile = BoardSummary("\x1b[31mmallory", "lobby", T0, T0, erased=1)
    assert renderer.plain(hostile) == "-- mallory erased a shape on the board"


# -- replay -------------------------------------------------------------------------------


def invoke(*args: str) -> Any:
    return CliRunner().invoke(cli, ["replay", *args], catch_exceptions=False)


BOARD: list[object] = [
    Joined(room="lobby", name="alice", ts=T0 + 1),
    drawn(1, "alice", T0 + 2),
    drawn(
        2, "alice", T0 + 2.5, Shape(kind="rect", points=((300, 300), (400, 350)), color="#1f77b4")
    ),
    drawn(
        3, "bob", T0 + 3, Shape(kind="text", points=((500, 500),), color="#2ca02c", text="<b>&hi")
    ),
    Moved(room="lobby", id=2, dx=600, dy=0, by="alice", ts=T0 + 3.2),
    Msg(id=1, room="lobby", from_="alice", text="look at the board", ts=T0 + 4),
    Erased(room="lobby", id=1, by="alice", ts=T0 + 10),
    drawn(4, "alice", T0 + 20, Shape(kind="oval", points=((0, 0), (100, 50)), color="#9467bd")),
    drawn(
        5,
        "bob",
        T0 + 21,
        Shape(kind="pencil", points=((1, 1), (2, 3), (5, 8)), color="#8c564b", width=5),
    ),
    Cleared(room="lobby", by="bob", all=False, ts=T0 + 30),
]


def test_replay_shows_board_activity_coalesced(tmp_path: Path) -> None:
    path = write_transcript(tmp_path / "board.jsonl", BOARD)
    result = invoke(str(path), "--format", "text", "--no-timestamps")
    lines = result.output.splitlines()
    board = [
        line for line in lines if line.startswith("-- ") and ("board" in line or "drawings" in line)
    ]
    assert board == [
        "-- alice drew 2 shapes and moved a shape on the board",
        "-- bob drew a text on the board",
        "-- alice erased a shape on the board",
        "-- alice drew an oval on the board",
        "-- bob drew a stroke on the board",
        "-- bob cleared their drawings",
    ], lines
    # the message comes after the burst that came before it
    assert lines.index("<alice> look at the board") == lines.index(board[1]) + 1


def test_jsonl_export_keeps_every_board_event(tmp_path: Path) -> None:
    path = write_transcript(tmp_path / "board.jsonl", BOARD)
    result = invoke(str(path), "--format", "jsonl", "--type", "draw")
    assert result.output.count('"type":"draw"') == 5


def test_board_at_follows_draws_moves_erases_and_clears() -> None:
    boards = board_at(BOARD)
    assert [d.id for d in boards["lobby"].in_order()] == [2, 4]
    assert boards["lobby"].shapes[2].shape.points == ((900.0, 300.0), (1000.0, 350.0))
    earlier = board_at(BOARD, until=T0 + 5)
    assert [d.id for d in earlier["lobby"].in_order()] == [1, 2, 3]


def _svg_shapes(svg_text: str) -> list[ET.Element]:
    root = ET.fromstring(svg_text.encode())
    assert root.tag == f"{SVG}svg" and root.get("viewBox") == "0 0 1000 1000"
    return [child for child in root if child.get("class") not in (None, "background")]


def test_replay_board_writes_the_board_as_svg(tmp_path: Path) -> None:
    path = write_transcript(tmp_path / "board.jsonl", BOARD)
    out = tmp_path / "board.svg"
    result = invoke(str(path), "--board", str(out), "--at", "+5")
    assert result.exit_code == 0, result.output
    assert f"wrote {out}: 3 shapes in lobby" in result.output
    shapes = _svg_shapes(out.read_text())
    assert [(s.tag, s.get("data-id")) for s in shapes] == [
        (f"{SVG}line", "1"),
        (f"{SVG}rect", "2"),
        (f"{SVG}text", "3"),
    ]
    line_el, rect, text = shapes
    assert (line_el.get("x1"), line_el.get("y1"), line_el.get("x2"), line_el.get("y2")) == (
        "10",
        "20",
        "110",
        "70",
    )
    assert line_el.get("stroke") == "#d62728" and line_el.get("stroke-width") == "3"
    assert (rect.get("x"), rect.get("y"), rect.get("width"), rect.get("height")) == (
        "900",
        "300",
        "100",
        "50",
    )
    assert text.text == "<b>&hi" and text.get("fill") == "#2ca02c"  # escaped, read back
    assert text.get("font-size") == "22" == str(round(text_size(3)))
    # at the end: the rect and the oval are left (bob cleared his)
    invoke(str(path), "--board", str(out))
    assert [s.tag for s in _svg_shapes(out.read_text())] == [f"{SVG}rect", f"{SVG}ellipse"]


def test_svg_escapes_everything_from_the_transcript() -> None:
    evil = Shape(kind="text", points=((1, 1),), color="#000000", text='"/><script>x</script>')
    svg = board_svg([drawn(1, 'a"><script>', T0, evil)], title="</title><script>")
    assert "<script>" not in svg
    [text] = _svg_shapes(svg)
    assert text.text == '"/><script>x</script>' and text.get("data-from") == 'a"><script>'
    assert ET.fromstring(svg.encode()).find(f"{SVG}title").text == "</title><script>"  # type: ignore[union-attr]


def test_svg_oval_and_pencil_geometry() -> None:
    oval = Shape(kind="oval", points=((100, 50), (0, 0)), color="#ABCDEF", width=2)
    pencil = Shape(kind="pencil", points=((1, 1), (2.5, 3), (5, 8)), color="#000000")
    ellipse, polyline = _svg_shapes(board_svg([drawn(2, "b", T0, pencil), drawn(1, "a", T0, oval)]))
    assert (ellipse.get("cx"), ellipse.get("cy"), ellipse.get("rx"), ellipse.get("ry")) == (
        "50",
        "25",
        "50",
        "25",
    )
    assert ellipse.get("stroke") == "#abcdef" and ellipse.get("fill") == "none"
    assert polyline.get("points") == "1,1 2.5,3 5,8"


def test_board_needs_a_room_when_several_have_boards(tmp_path: Path) -> None:
    events = [drawn(1, "a", T0 + 1), drawn(1, "b", T0 + 2, room="dev")]
    path = write_transcript(tmp_path / "two.jsonl", events)
    result = CliRunner().invoke(cli, ["replay", str(path), "--board", str(tmp_path / "o.svg")])
    assert result.exit_code != 0 and "--room" in result.output
    out = tmp_path / "dev.svg"
    result = invoke(str(path), "--board", str(out), "--room", "dev")
    assert result.exit_code == 0 and len(_svg_shapes(out.read_text())) == 1


def test_at_without_board_is_a_usage_error(tmp_path: Path) -> None:
    path = write_transcript(tmp_path / "b.jsonl", BOARD)
    result = CliRunner().invoke(cli, ["replay", str(path), "--at", "5"])
    assert result.exit_code == 2 and "--at goes with --board" in result.output


# -- replay --to ---------------------------------------------------------------------------


def test_the_planner_redraws_with_the_original_ids() -> None:
    planner = Planner("re-")
    actions = [a for event in BOARD for a in planner.plan(event)]
    sends = [a for a in actions if isinstance(a, Send)]
    assert [(type(s.event).__name__, s.shape) for s in sends][:5] == [
        ("Draw", 1),
        ("Draw", 2),
        ("Draw", 3),
        ("Move", 2),
        ("Say", None),
    ]
    assert type(sends[-1].event).__name__ == "Clear"


@async_test
async def test_replay_to_reinjects_draws_moves_erases_and_clears(tmp_path: Path) -> None:
    path = write_transcript(tmp_path / "board.jsonl", BOARD)
    async with serving(rate_limit=0) as srv:
        # a shape already on the target board: the re-drawn ones get other ids
        srv.server.relay.board("lobby").write(
            srv.server.relay.board("lobby").draw("lobby", "zed", line(), T0, None)
        )
        srv.server.relay.board("lobby").commit(srv.server.relay.board("lobby").pending[0])
        seen: list[Any] = []
        srv.server.observers.append(seen.append)
        steps = plan(Reread(path, PlayOptions()), Planner("re-"))
        report = await Injector(HOST, srv.port, Timeline(instant=True)).run(steps)
        assert report.ok, report.lines()
        assert (report.sent, report.acknowledged, report.skipped) == (9, 9, 0)
        board = [e for e in seen if isinstance(e, (Drawn, Moved, Erased, Cleared))]
        assert [type(e).__name__ for e in board] == [
            "Drawn",
            "Drawn",
            "Drawn",
            "Moved",
            "Erased",
            "Drawn",
            "Drawn",
            "Cleared",
        ]
        assert [e.id for e in board if isinstance(e, Drawn)] == [2, 3, 4, 5, 6]
        moved = next(e for e in board if isinstance(e, Moved))
        assert (moved.id, moved.by) == (3, "re-alice")  # the transcript's 2 is now 3
        erased = next(e for e in board if isinstance(e, Erased))
        assert erased.id == 2
        left = srv.server.relay.board("lobby").committed.in_order()
        assert [(d.id, d.from_) for d in left] == [(1, "zed"), (3, "re-alice"), (5, "re-alice")]
        assert left[1].shape.points == ((900.0, 300.0), (1000.0, 350.0))


# -- join ---------------------------------------------------------------------------------


class _Shown:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.renderer = Renderer()

    def show(self, event: object, raw: bytes = b"") -> None:
        self.lines.append(self.renderer.plain(event) or "")

    def notice(self, text: str, error: bool = False) -> None:
        self.lines.append(f"** {text}")


class _Client:
    """Just what a JoinSession reads of its client here: no ready yet, a name, a state."""

    ready = None
    name = "carol"

    def __init__(self) -> None:
        from chatcli.client.resume import ResumeState

        self.state = ResumeState(self.name)


@async_test
async def test_join_shows_one_line_per_burst_and_keeps_order() -> None:
    import asyncio

    from chatcli.ui.join import JoinOptions, JoinSession

    output = _Shown()
    session = JoinSession(
        _Client(),  # type: ignore[arg-type]
        JoinOptions(host=HOST, port=1, name="carol"),
        output,  # type: ignore[arg-type]
        output.renderer,
    )
    session.board.quiet = 0.2
    for i in range(1, 4):
        session.handle(drawn(i, "alice", T0 + i))
    session.handle(drawn(4, "bob", T0 + 4))
    assert output.lines == []  # gathered, not shown one by one
    session.handle(Msg(id=1, room="lobby", from_="bob", text="nice", ts=T0 + 5))
    assert output.lines == [
        "-- alice drew 3 lines on the board",
        "-- bob drew a line on the board",
        "<bob> nice",
    ]
    session.handle(Erased(room="lobby", id=1, by="alice", ts=T0 + 6))
    await asyncio.sleep(0.5)  # the burst ends by itself after the quiet time
    assert output.lines[-1] == "-- alice erased a shape on the board"


def test_board_url_replaces_a_wildcard_host() -> None:
    from chatcli.ui.join import board_url

    assert board_url("http://0.0.0.0:8080/", "chat.example.org") == "http://chat.example.org:8080/"
    assert board_url("http://[::]:8080/", "::1") == "http://[::1]:8080/"
    assert board_url("https://10.0.0.5:8443/", "x") == "https://10.0.0.5:8443/"
