"""A room's whiteboard as an SVG picture: ``chatcli replay FILE --board OUT.svg [--at TIME]``.

Pure: :func:`board_at` replays a transcript's board events (up to a moment) onto a
:class:`~chatcli.core.board.Board` with the relay's own rules (a shape erased, moved or
cleared is what the server said it was: ids, clamped moves, whose shapes a clear took),
and :func:`board_svg` draws the shapes in id order on the 1000 x 1000 board. Every
string from the transcript (text shapes, names, the room) is XML-escaped, and colours
and numbers are re-checked, so a hostile transcript cannot inject markup or script.

How shapes look (the page draws them the same way; docs/protocol.md): strokes have
round caps and joins, no fill; ``line`` joins its two points; ``rect`` and ``oval`` fill
the box their two opposite corners span (the oval is inscribed in it); ``pencil`` is a
polyline; ``text`` is filled in its colour, left-aligned on its point as baseline, in a
font of ``text_size(width)`` units.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final
from xml.sax.saxutils import escape, quoteattr

import msgspec

from chatcli.core.board import BOARD_SIZE, Board, BoardWrite
from chatcli.core.events import Cleared, Drawn, Erased, Moved
from chatcli.core.names import name_key

__all__ = ["board_at", "board_svg", "text_size"]

_COLOR: Final = re.compile(r"#[0-9a-fA-F]{6}\Z")
#: the board's background
BACKGROUND: Final = "#ffffff"


def text_size(width: float) -> float:
    """The font size of a text shape, in board units, for its ``width``."""
    return 10.0 + 4.0 * width


def board_at(events: Iterable[object], until: float | None = None) -> dict[str, Board]:
    """Each room's board after the board events in ``events`` (those up to ``until``).

    Events of other types are ignored; erasing or moving a shape the transcript never
    showed drawn (drawn before the recording began) changes nothing.
    """
    boards: dict[str, Board] = {}
    for event in events:
        if not isinstance(event, (Drawn, Erased, Moved, Cleared)):
            continue
        if until is not None and event.ts > until:
            break
        board = boards.get(event.room)
        if board is None:
            board = boards[event.room] = Board()
        board.apply(_write(board, event))
    return boards


def _write(board: Board, event: Drawn | Erased | Moved | Cleared) -> BoardWrite:
    room = event.room
    if isinstance(event, Drawn):
        return BoardWrite(room, put=[event], next_id=event.id + 1)
    if isinstance(event, Erased):
        return BoardWrite(room, delete=[event.id])
    if isinstance(event, Moved):
        found = board.shapes.get(event.id)
        if found is None:
            return BoardWrite(room)
        points = tuple((x + event.dx, y + event.dy) for x, y in found.shape.points)
        shape = msgspec.structs.replace(found.shape, points=points)
        return BoardWrite(room, put=[msgspec.structs.replace(found, shape=shape)])
    key = name_key(event.by)
    gone = [s.id for s in board.shapes.values() if event.all or name_key(s.from_) == key]
    return BoardWrite(room, delete=gone)


def _num(value: float) -> str:
    """A coordinate as SVG text: finite, short (``12.5``, ``300``)."""
    value = float(value)
    if value != value or value in (float("inf"), float("-inf")):
        value = 0.0
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _color(color: str) -> str:
    return color.lower() if _COLOR.match(color) else "#000000"


def _shape(drawn: Drawn) -> str:
    shape = drawn.shape
    color = _color(shape.color)
    width = _num(min(max(shape.width, 1.0), 50.0))
    ident = f' data-id="{int(drawn.id)}" data-from={quoteattr(drawn.from_)}'
    stroke = (
        f' fill="none" stroke="{color}" stroke-width="{width}"'
        ' stroke-linecap="round" stroke-linejoin="round"'
    )
    points = shape.points
    kind = shape.kind
    if kind == "text" and points:
        x, y = points[0]
        size = _num(text_size(min(max(shape.width, 1.0), 50.0)))
        return (
            f'<text class="text"{ident} x="{_num(x)}" y="{_num(y)}" fill="{color}" '
            f'font-size="{size}" font-family="sans-serif">{escape(shape.text or "")}</text>'
        )
    if len(points) < 2:
        return ""
    (x1, y1), (x2, y2) = points[0], points[-1]
    if kind == "line":
        return (
            f'<line class="line"{ident} x1="{_num(x1)}" y1="{_num(y1)}" '
            f'x2="{_num(x2)}" y2="{_num(y2)}"{stroke}/>'
        )
    left, top = min(x1, x2), min(y1, y2)
    w, h = abs(x2 - x1), abs(y2 - y1)
    if kind == "rect":
        return (
            f'<rect class="rect"{ident} x="{_num(left)}" y="{_num(top)}" '
            f'width="{_num(w)}" height="{_num(h)}"{stroke}/>'
        )
    if kind == "oval":
        return (
            f'<ellipse class="oval"{ident} cx="{_num(left + w / 2)}" cy="{_num(top + h / 2)}" '
            f'rx="{_num(w / 2)}" ry="{_num(h / 2)}"{stroke}/>'
        )
    if kind == "pencil":
        joined = " ".join(f"{_num(x)},{_num(y)}" for x, y in points)
        return f'<polyline class="pencil"{ident} points="{joined}"{stroke}/>'
    return ""


def board_svg(shapes: Iterable[Drawn], *, title: str = "") -> str:
    """The shapes (in id order) drawn on the board, as a standalone SVG document."""
    size = _num(BOARD_SIZE)
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}" '
        f'viewBox="0 0 {size} {size}">',
    ]
    if title:
        parts.append(f"<title>{escape(title)}</title>")
    parts.append(f'<rect class="background" width="{size}" height="{size}" fill="{BACKGROUND}"/>')
    for drawn in sorted(shapes, key=lambda d: d.id):
        element = _shape(drawn)
        if element:
            parts.append(element)
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
