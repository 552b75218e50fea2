"""k6-style pass/fail thresholds: ``p99<50ms``, ``loss==0``, ``deliveries_per_s>50000``.

Grammar: ``METRIC OP NUMBER [UNIT]`` with optional spaces, OP one of
``< <= > >= == !=``. METRIC is a name from ``METRICS``; ``p99.9`` and k6's ``p(99.9)``
are accepted for ``p999`` (also after a prefix: ``connect_p99.9``). UNIT depends on the
metric (see ``UNIT_SUFFIXES``): ``us``/``µs``/``ms``/``s`` for times, ``%`` for fractions
and percentages, ``KB``/``MB``/``GB`` for memory; a bare number is in the metric's own
unit (milliseconds for latency, as in k6).

Nothing passes silently: an unknown metric or a unit that does not fit is a UsageError
when parsed, and a threshold on a figure the run did not measure fails when evaluated.
"""

from __future__ import annotations

import difflib
import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from chatcli.bench.metrics import METRICS, UNIT_SUFFIXES, finite_or_none, format_metric
from chatcli.errors import UsageError

__all__ = [
    "OPERATORS",
    "Threshold",
    "ThresholdResult",
    "evaluate",
    "parse_threshold",
    "parse_thresholds",
]

OPERATORS: Final[Mapping[str, Callable[[float, float], bool]]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    ">": operator.gt,
}

_EXPR: Final = re.compile(
    r"""\s*(?P<metric>[A-Za-z_][A-Za-z0-9_.()]*)
        \s*(?P<op><=|>=|==|!=|<|>)
        \s*(?P<number>[-+]?(?:\d+(?:_\d+)*(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)
        \s*(?P<unit>[^\s\d.].*?)?\s*$""",
    re.VERBOSE,
)
_K6_PERCENTILE: Final = re.compile(r"p\((\d+(?:\.\d+)?)\)")
_DOTTED_PERCENTILE: Final = re.compile(r"(?<![A-Za-z0-9])(p\d+)\.(\d+)")
_CLOSE_MATCHES: Final = 3


@dataclass(frozen=True)
class Threshold:
    """One parsed condition: the metric must satisfy ``op limit`` (limit in its unit)."""

    metric: str
    op: str
    limit: float
    source: str

    def check(self, metrics: Mapping[str, float | None]) -> ThresholdResult:
        """Test this threshold against a run's metrics; an unmeasured figure fails."""
        actual = finite_or_none(metrics.get(self.metric))
        if actual is None:
            return ThresholdResult(self, None, False, "not measured in this run")
        passed = OPERATORS[self.op](actual, self.limit)
        return ThresholdResult(self, actual, passed, "" if passed else "threshold crossed")

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {format_metric(self.metric, self.limit)}"


@dataclass(frozen=True)
class ThresholdResult:
    """The outcome of one threshold: the measured value and whether it passed, and why not."""

    threshold: Threshold
    actual: float | None
    passed: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """The JSON form used in the ``--json`` report."""
        t = self.threshold
        return {
            "expr": t.source,
            "metric": t.metric,
            "op": t.op,
            "limit": t.limit,
            "unit": METRICS[t.metric].unit,
            "actual": self.actual,
            "passed": self.passed,
        }


def _normalise_name(name: str) -> str:
    name = _K6_PERCENTILE.sub(r"p\1", name)
    return _DOTTED_PERCENTILE.sub(r"\1\2", name)


def _unknown_metric(name: str, expr: str) -> UsageError:
    close = difflib.get_close_matches(name, METRICS, n=_CLOSE_MATCHES)
    hint = f" (did you mean {' or '.join(close)}?)" if close else ""
    return UsageError(
        f"unknown metric {name!r} in threshold {expr!r}{hint}; known metrics: " + ", ".join(METRICS)
    )


def parse_threshold(expr: str) -> Threshold:
    """Parse one threshold expression; a UsageError explains anything it cannot accept."""
    match = _EXPR.fullmatch(expr)
    if match is None:
        raise UsageError(
            f"cannot parse threshold {expr!r}: write METRIC OP NUMBER[UNIT] with OP one of "
            f"{' '.join(sorted(OPERATORS, key=len))}, e.g. p99<50ms, loss==0"
        )
    name = _normalise_name(match["metric"])
    metric = METRICS.get(name)
    if metric is None:
        raise _unknown_metric(match["metric"], expr)
    suffixes = UNIT_SUFFIXES[metric.unit]
    unit = match["unit"] or ""
    if unit not in suffixes:
        allowed = ", ".join(s for s in suffixes if s)
        allowed = f"{allowed} or none" if allowed else "none (a plain number)"
        raise UsageError(
            f"unit {unit!r} does not fit {name} (measured in {metric.unit}) in threshold "
            f"{expr!r}; units allowed: {allowed}"
        )
    limit = float(match["number"]) * suffixes[unit]
    if not math.isfinite(limit):
        raise UsageError(f"threshold {expr!r} has no finite limit")
    return Threshold(name, match["op"], limit, expr.strip())


def parse_thresholds(exprs: Iterable[str]) -> list[Threshold]:
    """Parse every ``--threshold`` option, in order."""
    return [parse_threshold(expr) for expr in exprs]


def evaluate(
    thresholds: Iterable[Threshold], metrics: Mapping[str, float | None]
) -> list[ThresholdResult]:
    """Check every threshold against a run's metrics; the run passes if all of them pass."""
    return [threshold.check(metrics) for threshold in thresholds]
