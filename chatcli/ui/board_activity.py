"""Board activity for terminals, coalesced: one line per person per burst, not per shape.

A page draws a pencil stroke, then another, then moves one: a terminal that showed each
board event would scroll the conversation away. :class:`BoardBursts` gathers each
person's board events and ends a burst once that person has been quiet on the board for
``quiet`` seconds (or when something else is shown, so lines keep their order); the
burst becomes one :class:`BoardSummary` ("alice drew 3 shapes and moved 1 on the
board"), which the renderer lays out as a dim notice. Pure: time is a parameter, so
``join`` (live clock) and ``replay`` (the transcript's times) share it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from chatcli.core.events import Cleared, Drawn, Erased, Moved, shape_count

__all__ = ["BURST_QUIET", "BoardBursts", "BoardSummary", "is_board_event", "summary_text"]

#: a person's burst of board activity ends after this many seconds without one more
BURST_QUIET: Final = 2.0
_BOARD_TYPES: Final = (Drawn, Erased, Moved, Cleared)


def is_board_event(event: object) -> bool:
    """True for the board's server events (draw, erase, move, clear)."""
    return isinstance(event, _BOARD_TYPES)


@dataclass
class BoardSummary:
    """One person's burst of board activity in one room, from ``ts`` to ``last``."""

    who: str
    room: str
    ts: float
    last: float
    drew: int = 0
    erased: int = 0
    moved: int = 0
    #: "" (did not clear), "own" or "all"
    cleared: str = ""
    kinds: dict[str, int] = field(default_factory=dict)

    def add(self, event: Drawn | Erased | Moved | Cleared) -> None:
        self.last = event.ts
        if type(event) is Drawn:
            self.drew += 1
            kind = event.shape.kind
            self.kinds[kind] = self.kinds.get(kind, 0) + 1
        elif type(event) is Erased:
            self.erased += 1
        elif type(event) is Moved:
            self.moved += 1
        elif type(event) is Cleared:
            self.cleared = "all" if event.all or self.cleared == "all" else "own"


def summary_text(summary: BoardSummary) -> str:
    """What the burst's line says after the name: "drew 3 shapes and erased a shape on
    the board", "cleared their drawings"."""
    parts = []
    if summary.drew:
        kind = next(iter(summary.kinds)) if len(summary.kinds) == 1 else "shape"
        parts.append("drew " + shape_count(summary.drew, kind))
    if summary.moved:
        parts.append("moved " + shape_count(summary.moved, "shape"))
    if summary.erased:
        parts.append("erased " + shape_count(summary.erased, "shape"))
    said = ", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else "".join(parts)
    if said:
        said += " on the board"
    if summary.cleared:
        cleared = "the whole board" if summary.cleared == "all" else "their drawings"
        said = f"{said} and cleared {cleared}" if said else f"cleared {cleared}"
    return said


class BoardBursts:
    """Board events gathered per (room, person) into bursts; see the module doc."""

    def __init__(self, quiet: float = BURST_QUIET) -> None:
        self.quiet = quiet
        #: open bursts in the order they began; the time of each one's last event
        self._open: dict[tuple[str, str], tuple[BoardSummary, float]] = {}

    def add(self, event: Drawn | Erased | Moved | Cleared, now: float) -> None:
        """Count ``event`` (received at ``now``) in its author's open burst."""
        who = event.from_ if type(event) is Drawn else event.by  # type: ignore[union-attr]
        key = (event.room, who)
        found = self._open.get(key)
        summary = found[0] if found else BoardSummary(who, event.room, event.ts, event.ts)
        summary.add(event)
        self._open[key] = (summary, now)

    def due(self, now: float) -> list[BoardSummary]:
        """The bursts whose author has been quiet for ``quiet`` seconds by ``now``."""
        done = [key for key, (_, seen) in self._open.items() if now - seen >= self.quiet]
        return [self._open.pop(key)[0] for key in done]

    def flush(self) -> list[BoardSummary]:
        """Every open burst, ended now (before another line is shown, or at the end)."""
        out = [summary for summary, _ in self._open.values()]
        self._open.clear()
        return out

    def next_deadline(self) -> float | None:
        """When the next burst ends if nothing more comes (None: no open burst)."""
        if not self._open:
            return None
        return min(seen for _, seen in self._open.values()) + self.quiet

    def __bool__(self) -> bool:
        return bool(self._open)
