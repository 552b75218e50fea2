"""Compare a run with an earlier one (``--baseline OLD.json --max-regression 10%``).

Only metrics with a direction (``Metric.better``) are compared; figures that merely
describe the run's size are not. A "lower is better" metric regresses when

    current > baseline * (1 + tolerance) + noise

and a "higher is better" one when ``current < baseline * (1 - tolerance) - noise``, where
``noise`` is the metric's absolute noise floor from ``METRICS``. The additive floor keeps
a 0.2 -> 0.3 ms median from failing CI, and makes a zero baseline sane: with baseline
``loss == 0`` any loss at all is a regression, while a zero throughput baseline can never
be regressed from. Improvements beyond the tolerance are reported as such.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from chatcli.bench.metrics import METRICS, finite_or_none, format_metric
from chatcli.bench.report_schema import BenchReport
from chatcli.errors import UsageError

__all__ = [
    "Comparison",
    "ComparisonRow",
    "Status",
    "compare_metrics",
    "compare_reports",
    "parse_tolerance",
]

Status = Literal["ok", "improved", "regressed", "missing"]

_PERCENT: Final = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*%\s*")
_PERCENT_PER_UNIT: Final = 100.0
_ENVIRONMENT_KEYS: Final = ("machine", "cpu_count", "implementation", "python")


def parse_tolerance(text: str) -> float:
    """``"10%"`` -> 0.1. The percent sign is required, so "0.1" is never misread."""
    match = _PERCENT.fullmatch(text)
    if match is None:
        raise UsageError(f"--max-regression takes a percentage such as 10%, not {text!r}")
    return float(match[1]) / _PERCENT_PER_UNIT


@dataclass(frozen=True)
class ComparisonRow:
    """One metric compared: values in the metric's unit, ``change`` relative to baseline.

    ``limit`` is the worst current value still accepted. ``change`` is None when the
    baseline is zero (no relative change exists) or a value is missing.
    """

    metric: str
    baseline: float | None
    current: float | None
    change: float | None
    limit: float | None
    status: Status

    def to_dict(self) -> dict[str, Any]:
        """The JSON form, as embedded in the ``baseline`` field of a report."""
        return {
            "metric": self.metric,
            "unit": METRICS[self.metric].unit,
            "baseline": self.baseline,
            "current": self.current,
            "change": self.change,
            "limit": self.limit,
            "status": self.status,
        }

    def __str__(self) -> str:
        change = "" if self.change is None else f" ({self.change:+.1%})"
        return (
            f"{self.metric}: {format_metric(self.metric, self.baseline)} -> "
            f"{format_metric(self.metric, self.current)}{change} {self.status}"
        )


@dataclass(frozen=True)
class Comparison:
    """Every compared metric, and whether the run regressed beyond the tolerance."""

    rows: list[ComparisonRow]
    tolerance: float
    warnings: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        """True when any metric regressed beyond the tolerance."""
        return any(row.status == "regressed" for row in self.rows)

    @property
    def regressions(self) -> list[ComparisonRow]:
        """The rows that failed the comparison."""
        return [row for row in self.rows if row.status == "regressed"]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form stored in a report's ``baseline`` field."""
        return {
            "tolerance": self.tolerance,
            "failed": self.failed,
            "warnings": list(self.warnings),
            "rows": [row.to_dict() for row in self.rows],
        }


def _compare_one(name: str, base: float, current: float, tolerance: float) -> ComparisonRow:
    metric = METRICS[name]
    change = (current - base) / abs(base) if base else (0.0 if current == base else None)
    slack = abs(base) * tolerance + metric.noise
    if metric.better == "lower":
        limit = base + slack
        regressed, improved = current > limit, current < base - slack
    else:
        limit = base - slack
        regressed, improved = current < limit, current > base + slack
    status: Status = "regressed" if regressed else "improved" if improved else "ok"
    return ComparisonRow(name, base, current, change, limit, status)


def compare_metrics(
    current: Mapping[str, float | None],
    baseline: Mapping[str, float | None],
    tolerance: float,
    names: Iterable[str] | None = None,
) -> Comparison:
    """Compare two runs' metrics, direction-aware (see the module docstring).

    ``names`` limits the comparison (default: every metric with a direction). A metric
    measured in only one of the runs is reported as "missing" and does not fail.
    """
    if not (tolerance >= 0 and math.isfinite(tolerance)):
        raise UsageError(f"the regression tolerance must be >= 0, not {tolerance}")
    wanted = [n for n in METRICS if METRICS[n].better] if names is None else list(names)
    rows: list[ComparisonRow] = []
    missing: list[str] = []
    for name in wanted:
        metric = METRICS.get(name)
        if metric is None or metric.better is None:
            raise UsageError(f"{name!r} is not a metric that can regress")
        base, now = finite_or_none(baseline.get(name)), finite_or_none(current.get(name))
        if base is not None and now is not None:
            rows.append(_compare_one(name, base, now, tolerance))
        elif base is not None or now is not None:
            rows.append(ComparisonRow(name, base, now, None, None, "missing"))
            missing.append(name)
    warnings = []
    if missing:
        warnings.append("measured in only one of the runs: " + ", ".join(missing))
    return Comparison(rows, tolerance, warnings)


#: what a baseline comparison gates on by default: figures stable enough between two
#: runs of the same code that a 10% move means something. Tail extremes (max, p99.9),
#: schedule lag, connect times and per-connection or per-delivery resource figures of
#: small runs swing far more than that on a shared machine.
GATED_METRICS: Final = (
    "p50",
    "p90",
    "p99",
    "deliveries_per_s",
    "loss",
    "lost",
    "duplicated",
    "reordered",
    "errors",
)


def compare_reports(
    current: BenchReport,
    baseline: BenchReport,
    tolerance: float,
    names: Iterable[str] | None = GATED_METRICS,
) -> Comparison:
    """Compare two reports, warning when the comparison itself is doubtful.

    Different parameters, seeds or machines, or a baseline that was not a valid run, do
    not fail the comparison (the user may mean it) but are spelled out in ``warnings``.
    """
    result = compare_metrics(current.metrics, baseline.metrics, tolerance, names)
    warnings = list(result.warnings)
    if not baseline.valid:
        warnings.append("the baseline run was marked invalid: its figures prove little")
    keys = sorted(set(current.params) | set(baseline.params))
    changed = [
        f"{key} {baseline.params.get(key)!r} -> {current.params.get(key)!r}"
        for key in keys
        if current.params.get(key) != baseline.params.get(key)
    ]
    if current.seed != baseline.seed:
        changed.append(f"seed {baseline.seed!r} -> {current.seed!r}")
    if changed:
        warnings.append("parameters differ from the baseline: " + "; ".join(changed))
    machine = [
        f"{key} {baseline.environment.get(key)!r} -> {current.environment.get(key)!r}"
        for key in _ENVIRONMENT_KEYS
        if current.environment.get(key) != baseline.environment.get(key)
    ]
    if machine:
        warnings.append("the environment differs from the baseline: " + "; ".join(machine))
    return Comparison(result.rows, tolerance, warnings)
