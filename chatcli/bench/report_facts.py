"""What every report format says about a run, decided once.

The HTML report, the Markdown summary and the JUnit XML all show the run's header, its
key figures, its thresholds and its baseline comparison. The rows come from here as
plain text (not yet escaped: each format escapes for itself), so the three formats never
disagree about a figure, its unit or a verdict. Reports read from a file may come from
another chatcli version or be edited by hand: unknown metrics and odd values are shown
as they are, never trusted to be well-formed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from chatcli.bench.metrics import METRICS, format_metric
from chatcli.bench.report_schema import BenchReport

__all__ = [
    "KEY_FIGURES",
    "OUTCOME_TITLES",
    "BaselineRow",
    "Fact",
    "ThresholdRow",
    "baseline_rows",
    "figure",
    "key_figures",
    "label",
    "plain",
    "run_facts",
    "target_text",
    "threshold_rows",
]

KEY_FIGURES: Final = (
    "p50",
    "p99",
    "p99_1s_median",
    "p999",
    "max",
    "deliveries_per_s",
    "sent_per_s",
    "loss",
    "lost",
    "cross_node",
    "duplicated",
    "reordered",
    "errors",
    "connect_p99",
    "relay_cpu_s",
    "relay_rss_mb",
    "generator_cpu_pct",
)
"""The figures every format shows first, in this order (when the run measured them)."""

_LABELS: Final = {
    "p50": "latency p50",
    "p99": "latency p99",
    "p99_1s_median": "p99, median second",
    "p999": "latency p99.9",
    "max": "latency max",
    "deliveries_per_s": "deliveries/s",
    "sent_per_s": "sent/s",
    "offered_per_s": "planned/s",
    "loss": "loss",
    "connect_p99": "connect p99",
    "cross_node": "cross-node deliveries",
    "cross_node_expected": "cross-node owed",
    "relay_cpu_s": "relay CPU",
    "relay_rss_mb": "relay memory",
    "generator_cpu_pct": "generator CPU",
}

OUTCOME_TITLES: Final = {
    "pass": "passed",
    "fail": "failed",
    "invalid": "invalid: the load generator was the limit",
}


_ANSI: Final = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-_]")
_CONTROL: Final = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_SPACING: Final = re.compile(r"[\t\n]+")


def plain(value: object) -> str:
    """Untrusted text made inert for any format: escape sequences and control characters
    removed, line breaks and tabs flattened to spaces (each format then escapes its own
    markup)."""
    text = _ANSI.sub("", str(value))
    return _CONTROL.sub("", _SPACING.sub(" ", text))


def label(metric: str) -> str:
    """A metric's name for people (``latency p99``), or the name itself."""
    return _LABELS.get(metric, metric)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def figure(metric: str, value: Any) -> str:
    """A value in its metric's unit (``5.18 ms``, ``0%``), ``-`` when missing."""
    number = _number(value)
    if metric in METRICS:
        return format_metric(metric, number)
    return "-" if number is None else f"{number:g}"


@dataclass(frozen=True)
class Fact:
    """One entry of the run header: ``target`` = ``own relay (127.0.0.1)``."""

    name: str
    value: str


def run_facts(report: BenchReport) -> list[Fact]:
    """The run header: what was run, against what, with which versions."""
    p = report.params
    env = report.environment
    facts = [
        Fact("target", target_text(report)),
        Fact("scenario", str(p.get("scenario", "-"))),
        Fact("clients", str(p.get("clients", "-"))),
        Fact("rooms", str(p.get("rooms", "-"))),
        Fact(
            "rate",
            "closed loop" if p.get("closed") else f"{p.get('rate', '-')} msg/s per client",
        ),
        Fact("arrivals", str(p.get("arrivals", "-"))),
        Fact("duration", f"{p.get('duration', '-')} s (+{p.get('warmup', 0)} s warm-up)"),
        Fact("message size", f"{p.get('size', '-')} bytes"),
        Fact("seed", str(report.seed if report.seed is not None else "-")),
        Fact("workers", str(p.get("workers", "-"))),
        Fact("started", report.started or "-"),
        Fact("chatcli", report.chatcli_version),
        Fact(
            "python",
            f"{env.get('implementation', '')} {env.get('python', '-')}".strip(),
        ),
        Fact("machine", f"{env.get('platform', '-')}, {env.get('cpu_count', '?')} CPUs"),
    ]
    return facts


def target_text(report: BenchReport) -> str:
    """The relay(s) of a run: ``a:7777 (25/25 clients), b:7777 (25/25 clients)`` when
    there were several (clients logged in / planned on each), else the one target."""
    if report.targets:
        return ", ".join(
            f"{row['target']} ({row['connected']}/{row['clients']} clients)"
            for row in report.targets
        )
    target = report.params.get("target")
    return str(target) if target else "its own relay (started by bench)"


def key_figures(report: BenchReport) -> list[tuple[str, str]]:
    """(metric, formatted value) of the KEY_FIGURES this run measured."""
    return [
        (name, figure(name, report.metrics.get(name)))
        for name in KEY_FIGURES
        if report.metrics.get(name) is not None
    ]


@dataclass(frozen=True)
class ThresholdRow:
    """One ``--threshold`` as every format shows it."""

    expr: str
    metric: str
    measured: str
    limit: str
    passed: bool


def threshold_rows(report: BenchReport) -> list[ThresholdRow]:
    """The run's thresholds, in the order given; a missing value failed (unmeasured)."""
    rows = []
    for t in report.thresholds:
        metric = str(t.get("metric", ""))
        measured = figure(metric, t.get("actual"))
        rows.append(
            ThresholdRow(
                expr=str(t.get("expr", metric)),
                metric=metric,
                measured=measured if measured != "-" else "not measured",
                limit=f"{t.get('op', '?')} {figure(metric, t.get('limit'))}",
                passed=t.get("passed") is True,
            )
        )
    return rows


@dataclass(frozen=True)
class BaselineRow:
    """One metric compared with the baseline run."""

    metric: str
    baseline: str
    current: str
    change: str
    limit: str
    status: str


def baseline_rows(comparison: Mapping[str, Any] | None) -> list[BaselineRow]:
    """The rows of a report's ``baseline`` comparison (empty without one)."""
    if not comparison:
        return []
    rows = []
    for row in comparison.get("rows", []):
        if not isinstance(row, Mapping):
            continue
        metric = str(row.get("metric", ""))
        change = _number(row.get("change"))
        rows.append(
            BaselineRow(
                metric=metric,
                baseline=figure(metric, row.get("baseline")),
                current=figure(metric, row.get("current")),
                change="-" if change is None else f"{change:+.1%}",
                limit=figure(metric, row.get("limit")),
                status=str(row.get("status", "-")),
            )
        )
    return rows
