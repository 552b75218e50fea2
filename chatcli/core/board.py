"""The shared whiteboard of a room (spec 1.1, section 4) as pure state: no I/O.

A board is 1000 x 1000 units, origin top left. :func:`check_shape` validates a shape
exactly as the spec says (and cleans its text like message text); :func:`moved`
translates one, clamped so it stays on the board. A :class:`BoardWrite` is one change
as plain data (shapes to put, ids to delete, the next id): the relay makes it, the store
keeps it and both apply it with the same :meth:`Board.apply`, so what is kept is what
was shown.

:class:`RoomBoard` holds a room's board twice: ``committed`` (what the store has
confirmed: what a late joiner's ``ready.board`` shows, so nothing reaches anyone before
it is kept) and ``projected`` (committed plus the writes still with the store: what the
next frame is checked against, so two quick moves of one shape add up). When the store
fails a write, the projection is rebuilt from what was committed.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

import msgspec

from chatcli.core.events import Cleared, Drawn, Erased, Moved, Ref, Shape
from chatcli.core.sanitize import clean_text
from chatcli.errors import ProtocolError

__all__ = [
    "BOARD_SIZE",
    "DECIMALS",
    "KIND_POINTS",
    "MAX_BOARD_BYTES",
    "MAX_SHAPES",
    "MAX_SHAPE_TEXT",
    "WIDTH_RANGE",
    "Board",
    "BoardWrite",
    "RoomBoard",
    "check_shape",
    "encoded_size",
    "moved",
]

#: the board's side, in units: coordinates are numbers within 0..BOARD_SIZE
BOARD_SIZE: Final = 1000.0
#: shapes a room's board holds at most (``board_full`` past it)
MAX_SHAPES: Final = 10_000
#: points each kind takes: (fewest, most)
KIND_POINTS: Final = {
    "pencil": (2, 2000),
    "line": (2, 2),
    "rect": (2, 2),
    "oval": (2, 2),
    "text": (1, 1),
}
#: characters of a text shape, after cleaning
MAX_SHAPE_TEXT: Final = 200
#: the stroke width's bounds
WIDTH_RANGE: Final = (1.0, 50.0)
#: coordinates are kept to this many decimals (1/100 unit: finer than any screen shows,
#: and a point never takes more than 16 bytes of JSON)
DECIMALS: Final = 2
#: the most bytes a room's shapes may take as JSON (``board_full`` past it): half the
#: default slow-consumer bound, so that a ``ready`` carrying the whole board can always
#: be sent (10,000 long strokes or texts would otherwise make it tens of megabytes)
MAX_BOARD_BYTES: Final = 2 * 1024 * 1024
_COLOR: Final = re.compile(r"#[0-9a-fA-F]{6}\Z")


def _refuse(message: str, ref: Ref) -> ProtocolError:
    return ProtocolError("bad_request", message, ref)


def check_shape(shape: Shape, ref: Ref = None) -> Shape:
    """``shape`` as the board keeps it, or ProtocolError ``bad_request`` saying why not.

    The colour comes back in lower case and a text shape's text cleaned (control and
    escape characters removed) like message text.
    """
    limits = KIND_POINTS.get(shape.kind)
    if limits is None:
        kinds = ", ".join(KIND_POINTS)
        raise _refuse(f"unknown shape kind {shape.kind[:20]!r} (one of {kinds})", ref)
    fewest, most = limits
    count = len(shape.points)
    if not fewest <= count <= most:
        wanted = str(fewest) if fewest == most else f"{fewest}-{most}"
        raise _refuse(f"a {shape.kind} takes {wanted} points, not {count}", ref)
    for x, y in shape.points:
        if not (0.0 <= x <= BOARD_SIZE and 0.0 <= y <= BOARD_SIZE):
            raise _refuse(f"coordinates are numbers within 0..{BOARD_SIZE:g}", ref)
    if not _COLOR.match(shape.color):
        raise _refuse("color is #rrggbb", ref)
    low, high = WIDTH_RANGE
    if not low <= shape.width <= high:
        raise _refuse(f"width is {low:g}-{high:g}", ref)
    text = shape.text
    if shape.kind == "text":
        cleaned = clean_text(text or "")
        if not cleaned or cleaned.isspace():
            raise _refuse("a text shape needs its text", ref)
        if len(cleaned) > MAX_SHAPE_TEXT:
            raise _refuse(f"a text shape holds at most {MAX_SHAPE_TEXT} characters", ref)
        text = cleaned
    elif text is not None:
        raise _refuse(f"a {shape.kind} has no text", ref)
    color = shape.color.lower()
    points = tuple((round(x, DECIMALS), round(y, DECIMALS)) for x, y in shape.points)
    if color == shape.color and text == shape.text and points == shape.points:
        return shape
    return msgspec.structs.replace(shape, color=color, text=text, points=points)


def _on_board(value: float) -> float:
    """A coordinate rounded as kept, and within the board despite rounding."""
    return min(max(round(value, DECIMALS), 0.0), BOARD_SIZE)


def moved(shape: Shape, dx: float, dy: float) -> tuple[Shape, float, float]:
    """``shape`` moved by (dx, dy), clamped so every point stays on the board.

    Returns the moved shape and the move actually made (what everyone is told, so every
    copy of the board ends up the same).
    """
    xs = [x for x, _ in shape.points]
    ys = [y for _, y in shape.points]
    dx = round(min(max(dx, -min(xs)), BOARD_SIZE - max(xs)), DECIMALS)
    dy = round(min(max(dy, -min(ys)), BOARD_SIZE - max(ys)), DECIMALS)
    points = tuple((_on_board(x + dx), _on_board(y + dy)) for x, y in shape.points)
    return msgspec.structs.replace(shape, points=points), dx, dy


@dataclass(slots=True)
class BoardWrite:
    """One change of a room's board as data: what the store keeps and both sides apply.

    ``put`` are shapes drawn or moved (whole, with their latest points), ``delete`` the
    ids erased or cleared, ``next_id`` the id the next shape will get.
    """

    room: str
    put: list[Drawn] = field(default_factory=list)
    delete: list[int] = field(default_factory=list)
    next_id: int = 1


def encoded_size(drawn: Drawn) -> int:
    """The bytes ``drawn`` takes as a JSON frame (what it adds to a ``ready``)."""
    return len(_encoder.encode(drawn))


_encoder = msgspec.json.Encoder()


class Board:
    """A room's shapes by id, in id order, the id the next one gets, and their size."""

    __slots__ = ("_sizes", "next_id", "shapes", "size")

    def __init__(self, shapes: Iterable[Drawn] = (), next_id: int = 1) -> None:
        self.shapes: dict[int, Drawn] = {}
        self._sizes: dict[int, int] = {}
        #: the bytes every shape takes as JSON (bounded by ``MAX_BOARD_BYTES``)
        self.size = 0
        for shape in sorted(shapes, key=lambda s: s.id):
            self._put(shape)
        self.next_id = max(next_id, max(self.shapes, default=0) + 1)

    def _put(self, shape: Drawn) -> None:
        size = encoded_size(shape)
        self.size += size - self._sizes.get(shape.id, 0)
        self._sizes[shape.id] = size
        self.shapes[shape.id] = shape  # a moved shape keeps its place in id order

    def apply(self, write: BoardWrite) -> None:
        """Carry ``write`` out (deleting a missing id is nothing)."""
        for shape_id in write.delete:
            if self.shapes.pop(shape_id, None) is not None:
                self.size -= self._sizes.pop(shape_id)
        for shape in write.put:
            self._put(shape)
        self.next_id = max(self.next_id, write.next_id)

    def copy(self) -> Board:
        board = Board()
        board.shapes = dict(self.shapes)
        board._sizes = dict(self._sizes)
        board.size = self.size
        board.next_id = self.next_id
        return board

    def in_order(self) -> list[Drawn]:
        """The shapes in id order (ids only grow, and a move keeps the dict's order)."""
        return list(self.shapes.values())

    def __len__(self) -> int:
        return len(self.shapes)


class RoomBoard:
    """A room's board as the store confirmed it and as it will be once pending writes are.

    The relay checks frames against ``projected`` and applies each write there at once
    (:meth:`write`); the store's answer moves it to ``committed`` (:meth:`commit`) or, on
    a failure, drops it and rebuilds ``projected`` (:meth:`fail`). Writes are answered in
    the order they were made, which the store guarantees.
    """

    __slots__ = ("committed", "max_bytes", "max_shapes", "pending", "projected")

    def __init__(
        self,
        board: Board | None = None,
        max_shapes: int = MAX_SHAPES,
        max_bytes: int = MAX_BOARD_BYTES,
    ) -> None:
        self.committed = board if board is not None else Board()
        self.projected = self.committed.copy()
        self.pending: deque[BoardWrite] = deque()
        self.max_shapes = max_shapes
        self.max_bytes = max_bytes

    def write(self, write: BoardWrite) -> None:
        """A change checked against ``projected``: apply it there, wait for the store."""
        self.projected.apply(write)
        self.pending.append(write)

    def commit(self, write: BoardWrite) -> bool:
        """The store kept ``write``; False when it was not pending (a bug, or reloaded)."""
        if not self.pending or self.pending[0] is not write:
            return False
        self.pending.popleft()
        self.committed.apply(write)
        return True

    def settle(
        self, event: Drawn | Erased | Moved | Cleared, key_of: Callable[[str], str], own: bool
    ) -> Drawn | Erased | Moved | Cleared | None:
        """A cluster's change at its place in the shared order: apply it to ``committed``.

        Every node settles the same changes in the same order against the same board, so
        they agree without talking: a draw takes the id it carries (its place in the
        order), a move is made from the shape as it stands now (clamped), an erase or a
        move of a shape that is gone is nothing (None), a clear removes what the name
        ``by`` (compared by ``key_of``) has now. ``own``: the oldest pending write of this
        relay is the one settled. The projection follows: the same write when nothing of
        this relay's is pending (then both boards agree), else made again.
        """
        committed = self.committed
        if own and self.pending:
            self.pending.popleft()
        room, next_id = event.room, committed.next_id
        settled: Drawn | Erased | Moved | Cleared | None = event
        write: BoardWrite | None = None
        if type(event) is Drawn:
            if len(committed) < self.max_shapes and event.id not in committed.shapes:
                write = BoardWrite(room, put=[event], next_id=max(next_id, event.id + 1))
        elif type(event) is Erased:
            if event.id in committed.shapes:
                write = BoardWrite(room, delete=[event.id], next_id=next_id)
        elif type(event) is Moved:
            current = committed.shapes.get(event.id)
            if current is not None:
                shape, dx, dy = moved(current.shape, event.dx, event.dy)
                put = msgspec.structs.replace(current, shape=shape)
                write = BoardWrite(room, put=[put], next_id=next_id)
                settled = msgspec.structs.replace(event, dx=dx, dy=dy)
        else:
            assert type(event) is Cleared
            by = key_of(event.by)
            shapes = committed.shapes.values()
            ids = [s.id for s in shapes if event.all or key_of(s.from_) == by]
            write = BoardWrite(room, delete=ids, next_id=next_id)
        if write is None:
            settled = None
        else:
            committed.apply(write)
        if own or self.pending:
            self.projected = committed.copy()
            for pending in self.pending:
                self.projected.apply(pending)
        elif write is not None:
            self.projected.apply(write)
        return settled

    def fail(self, write: BoardWrite) -> None:
        """The store could not keep ``write``: forget it; the others still count."""
        with_it = list(self.pending)
        self.pending = deque(w for w in with_it if w is not write)
        self.projected = self.committed.copy()
        for pending in self.pending:
            self.projected.apply(pending)

    def draw(self, room: str, sender: str, shape: Shape, ts: float, ref: Ref) -> BoardWrite:
        """A new shape: the write that adds it under the next id, or ``board_full``."""
        board = self.projected
        if len(board) >= self.max_shapes:
            raise ProtocolError(
                "board_full", f"the board holds {self.max_shapes} shapes: erase some first", ref
            )
        drawn = Drawn(id=board.next_id, room=room, from_=sender, shape=shape, ts=ts)
        if board.size + encoded_size(drawn) > self.max_bytes:
            raise ProtocolError(
                "board_full",
                f"the board holds {self.max_bytes // 1024} KiB of shapes: erase some first",
                ref,
            )
        return BoardWrite(room, put=[drawn], next_id=board.next_id + 1)

    def find(self, shape_id: int, ref: Ref) -> Drawn:
        """The shape with ``shape_id``, or ``bad_request`` when there is none."""
        found = self.projected.shapes.get(shape_id)
        if found is None:
            raise ProtocolError("bad_request", f"no shape {shape_id} on this board", ref)
        return found

    def erase(self, room: str, shape_id: int) -> BoardWrite:
        return BoardWrite(room, delete=[shape_id], next_id=self.projected.next_id)

    def move(self, drawn: Drawn, dx: float, dy: float) -> tuple[BoardWrite, float, float]:
        """The write that moves ``drawn`` (clamped), and the move actually made."""
        shape, dx, dy = moved(drawn.shape, dx, dy)
        put = msgspec.structs.replace(drawn, shape=shape)
        return BoardWrite(drawn.room, put=[put], next_id=self.projected.next_id), dx, dy

    def clear(self, room: str, ids: Sequence[int]) -> BoardWrite:
        return BoardWrite(room, delete=list(ids), next_id=self.projected.next_id)
