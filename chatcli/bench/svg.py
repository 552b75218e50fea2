"""Small SVG charts drawn in Python, for the self-contained HTML report.

Two kinds, enough for a bench report: line charts of per-second series (several lines,
dashed ones for a baseline run, gaps where a value is missing, an optional shaded span
for the measured window) and bar charts of a distribution on a logarithmic axis, with a
baseline drawn over the bars as a step line. No script and no external resource: colours
and fonts come from CSS classes of the page (``c1``..``c6``, ``axis``, ``grid``), so a
dark theme restyles the charts too. Every text that reaches the SVG is escaped here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape
from typing import Final

__all__ = [
    "Bar",
    "Line",
    "bar_chart",
    "compact",
    "line_chart",
    "nice_ticks",
]

WIDTH: Final = 600
HEIGHT: Final = 260
#: room for tick labels: left, right, top, bottom (SVG units)
MARGIN: Final = (58, 14, 12, 34)
TICKS: Final = 5


@dataclass(frozen=True)
class Line:
    """One line of a line chart: y values at x positions (None: a gap)."""

    label: str
    xs: Sequence[float]
    ys: Sequence[float | None]
    css: str = "c1"
    dashed: bool = False


@dataclass(frozen=True)
class Bar:
    """One bar of a distribution: values in [low, high) hold ``share`` (0..1) of all."""

    low: float
    high: float
    share: float


def compact(value: float) -> str:
    """A short axis label: ``0``, ``2.5``, ``40``, ``1.2k``, ``3M``."""
    magnitude = abs(value)
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if magnitude >= limit:
            return f"{value / limit:.3g}{suffix}"
    if magnitude and magnitude < 0.01:
        return f"{value:.1g}"
    return f"{value:.3g}"


def nice_ticks(low: float, high: float, count: int = TICKS, min_step: float = 0.0) -> list[float]:
    """Round tick values (1, 2, 2.5, 5 x 10^n steps, at least ``min_step``) over [low, high]."""
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        high = low + 1.0
    raw = max(min_step, (high - low) / max(1, count - 1))
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.floor(low / step) * step
    ticks = []
    value = first
    while value < high + step * 0.999:
        ticks.append(round(value, 10))
        value += step
    return ticks


def _frame(
    title: str,
    x_ticks: Sequence[tuple[float, str]],
    y_ticks: Sequence[tuple[float, str]],
    body: str,
) -> str:
    """The chart's svg element: grid, tick labels and ``body`` (already positioned)."""
    left, right, _, bottom = MARGIN
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
    ]
    for y, label in y_ticks:
        parts.append(
            f'<line class="grid" x1="{left}" x2="{WIDTH - right}" y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<text class="axis" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{escape(label)}</text>"
        )
    for x, label in x_ticks:
        parts.append(
            f'<line class="tick" x1="{x:.1f}" x2="{x:.1f}" y1="{HEIGHT - bottom}" '
            f'y2="{HEIGHT - bottom + 4}"/>'
            f'<text class="axis" x="{x:.1f}" y="{HEIGHT - bottom + 20}" text-anchor="middle">'
            f"{escape(label)}</text>"
        )
    parts.append(
        f'<line class="base" x1="{left}" x2="{WIDTH - right}" y1="{HEIGHT - bottom}" '
        f'y2="{HEIGHT - bottom}"/>'
    )
    parts.append(body)
    parts.append("</svg>")
    return "".join(parts)


def _scale(low: float, high: float, out_low: float, out_high: float) -> Callable[[float], float]:
    span = (high - low) or 1.0
    return lambda v: out_low + (v - low) / span * (out_high - out_low)


def line_chart(
    lines: Sequence[Line],
    *,
    title: str,
    x_label: Callable[[float], str] = lambda v: f"{v:g}s",
    y_label: Callable[[float], str] = compact,
    shade: tuple[float, float] | None = None,
    integer: bool = False,
) -> str:
    """A line chart of ``lines`` from y = 0 up; ``shade`` marks an x span (the window).

    ``integer``: the values are counts, so the y ticks are whole numbers.
    """
    left, right, top, bottom = MARGIN
    xs = [x for line in lines for x in line.xs]
    ys = [y for line in lines for y in line.ys if y is not None and math.isfinite(y)]
    x_high = max(xs, default=1.0)
    y_ticks = nice_ticks(0.0, max(ys, default=0.0) or 1.0, min_step=1.0 if integer else 0.0)
    sx = _scale(0.0, x_high or 1.0, left, WIDTH - right)
    sy = _scale(0.0, y_ticks[-1], HEIGHT - bottom, top)
    body = []
    if shade is not None:
        a, b = sx(max(0.0, shade[0])), sx(min(x_high, shade[1]))
        if b > a:
            body.append(
                f'<rect class="window" x="{a:.1f}" y="{top}" width="{b - a:.1f}" '
                f'height="{HEIGHT - top - bottom}"/>'
            )
    for line in lines:
        segments: list[list[tuple[float, float]]] = [[]]
        for x, y in zip(line.xs, line.ys, strict=True):
            if y is None or not math.isfinite(y):
                segments.append([])
            else:
                segments[-1].append((sx(x), sy(y)))
        dash = " dashed" if line.dashed else ""
        for points in segments:
            if len(points) == 1:  # a lone value between gaps: a dot, or it would vanish
                cx, cy = points[0]
                body.append(f'<circle class="dot {line.css}" cx="{cx:.1f}" cy="{cy:.1f}" r="2.5"/>')
            elif points:
                coords = " ".join(f"{px:.1f},{py:.1f}" for px, py in points)
                body.append(
                    f'<polyline class="line {line.css}{dash}" points="{coords}">'
                    f"<title>{escape(line.label)}</title></polyline>"
                )
    x_ticks = [(sx(v), x_label(v)) for v in nice_ticks(0.0, x_high or 1.0, 6) if v <= x_high]
    return _frame(title, x_ticks, [(sy(v), y_label(v)) for v in y_ticks], "".join(body))


def bar_chart(
    bars: Sequence[Bar],
    *,
    title: str,
    overlay: Sequence[Bar] = (),
    x_label: Callable[[float], str] = compact,
) -> str:
    """Bars of a distribution on a log x axis (shares in %); ``overlay`` as a step line."""
    left, right, top, bottom = MARGIN
    every = [*bars, *overlay]
    if not every:
        return _frame(title, [], [], "")
    low = min(max(b.low, 1e-9) for b in every)
    high = max(b.high for b in every)
    if high <= low:
        high = low * 2
    log_low, log_high = math.log10(low), math.log10(high)
    sx_log = _scale(log_low, log_high, left, WIDTH - right)

    def sx(value: float) -> float:
        return sx_log(math.log10(max(value, low)))

    y_ticks = nice_ticks(0.0, 100.0 * max(b.share for b in every) or 1.0)
    sy = _scale(0.0, y_ticks[-1], HEIGHT - bottom, top)
    body = []
    for b in bars:
        x0, x1 = sx(b.low), sx(b.high)
        y = sy(100.0 * b.share)
        body.append(
            f'<rect class="bar c1" x="{x0:.1f}" y="{y:.1f}" width="{max(1.0, x1 - x0 - 1):.1f}" '
            f'height="{HEIGHT - bottom - y:.1f}"><title>{escape(x_label(b.low))}-'
            f"{escape(x_label(b.high))}: {100 * b.share:.2f}%</title></rect>"
        )
    if overlay:
        points = []
        for b in overlay:
            y = sy(100.0 * b.share)
            points += [f"{sx(b.low):.1f},{y:.1f}", f"{sx(b.high):.1f},{y:.1f}"]
        body.append(f'<polyline class="line c2 dashed" points="{" ".join(points)}"/>')
    x_ticks = []
    for exponent in range(math.floor(log_low), math.ceil(log_high) + 1):
        for mantissa in (1, 2, 5):
            value = mantissa * 10.0**exponent
            if low <= value <= high:
                x_ticks.append((sx(value), x_label(value)))
    if len(x_ticks) < 2:
        x_ticks = [(sx(low), x_label(low)), (sx(high), x_label(high))]
    return _frame(title, x_ticks, [(sy(v), f"{v:g}%") for v in y_ticks], "".join(body))
