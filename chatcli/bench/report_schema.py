"""The ``--json`` report of a bench run: a versioned, documented schema.

Schema ``chatcli-bench``, version 1. One JSON object::

    {
      "schema": "chatcli-bench",
      "schema_version": 1,
      "chatcli_version": "0.1.0",        # the chatcli that wrote the report
      "started": "2025-11-21T16:55:00Z", # ISO 8601 UTC start of the run, or null
      "outcome": "pass",                 # "pass" | "fail" | "invalid" (see EXIT_CODES)
      "valid": true,                     # false: the generator, not the relay, was the limit
      "invalid_reasons": [],             # why not valid, one sentence each
      "seed": 42,                        # the seed of every random choice, or null
      "params": {"clients": 50, "rooms": 1, "rate": 100.0, "duration": 10.0, ...},
      "environment": {"python": "3.11.7", "implementation": "CPython",
                      "platform": "Linux-...", "machine": "x86_64", "cpu_count": 2,
                      "chatcli_version": "0.1.0"},
      "metrics": {"p99": 12.3, "loss": 0.0, "relay_cpu_s": null, ...},
      "units": {"p99": "ms", "loss": "fraction", ...},
      "histograms": {"latency": HISTOGRAM, "uncorrected": ..., "connect": ..., "lag": ...},
      "thresholds": [{"expr": "p99<50ms", "metric": "p99", "op": "<", "limit": 50.0,
                      "unit": "ms", "actual": 12.3, "passed": true}],
      "baseline": null,                  # or the comparison with --baseline (baseline.py)
      "error_codes": {"rate_limited": 3},# error frames the relay sent the clients, by code
      "timeline": TIMELINE,              # per-second series (chatcli.bench.timeline), or null
      "targets": [{"target": "127.0.0.1:7777", "clients": 25, "connected": 25}, ...]
                                         # per relay of a run against several (--target
                                         # a,b: a cluster's nodes); absent otherwise
    }

``metrics`` maps every name of ``chatcli.bench.metrics.METRICS`` the run knows to a
number in the unit given by ``units`` (ms for latencies), or null when not measured.
A ``HISTOGRAM`` is ``Histogram.to_dict()``: ``{"unit": "us", "layout": {...},
"count", "min", "max", "sum", "overflow", "buckets": [[lowest_value_us, count], ...]}``,
exact enough to merge or to recompute any percentile. A ``TIMELINE`` is
``Timeline.to_dict()``: ``{"interval_s": 1.0, "measure_from_s", "measure_until_s",
"t": [end of each interval, s], "sent": [per interval], "p99_ms": [...], ...}``, every
series as long as ``t`` (docs/bench-report.md lists them). Readers ignore fields they do not
know; a higher ``schema_version`` is refused rather than misread.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from chatcli import __version__
from chatcli.bench.histogram import Histogram
from chatcli.bench.metrics import METRICS, finite_or_none
from chatcli.bench.timeline import Timeline
from chatcli.errors import UsageError

__all__ = [
    "EXIT_CODES",
    "SCHEMA",
    "SCHEMA_VERSION",
    "BenchReport",
    "Outcome",
    "dumps_report",
    "environment_info",
    "loads_report",
    "outcome_of",
    "read_report",
]

SCHEMA: Final = "chatcli-bench"
SCHEMA_VERSION: Final = 1

Outcome = Literal["pass", "fail", "invalid"]
EXIT_CODES: Final[Mapping[str, int]] = {"pass": 0, "fail": 1, "usage": 2, "invalid": 3}
"""Process exit codes of ``chatcli bench``: a threshold or baseline failed is 1, a usage
error 2, and a run whose generator could not keep up (so proves nothing) 3."""


def outcome_of(valid: bool, *failures: bool) -> Outcome:
    """``invalid`` beats ``fail`` (figures of an invalid run prove nothing), then ``pass``."""
    if not valid:
        return "invalid"
    return "fail" if any(failures) else "pass"


def environment_info() -> dict[str, Any]:
    """Where the run happened, so figures from different machines are not confused."""
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "chatcli_version": __version__,
    }


@dataclass
class BenchReport:
    """Everything a run measured, as written to and read from ``--json``."""

    params: dict[str, Any]
    metrics: dict[str, float | None]
    seed: int | None = None
    histograms: dict[str, Histogram] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    valid: bool = True
    invalid_reasons: list[str] = field(default_factory=list)
    thresholds: list[dict[str, Any]] = field(default_factory=list)
    baseline: dict[str, Any] | None = None
    started: str | None = None
    chatcli_version: str = __version__
    #: error codes the relay sent the simulated clients, with how often
    error_codes: dict[str, int] = field(default_factory=dict)
    #: per-second series for charts; None in reports written before it existed
    timeline: Timeline | None = None
    #: per relay of a run against several: target, clients planned on it, logged in
    targets: list[dict[str, Any]] = field(default_factory=list)

    @property
    def outcome(self) -> Outcome:
        """pass, fail (a threshold or the baseline comparison failed) or invalid."""
        failed_threshold = any(not t.get("passed", False) for t in self.thresholds)
        failed_baseline = bool(self.baseline and self.baseline.get("failed"))
        return outcome_of(self.valid, failed_threshold, failed_baseline)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of the schema (non-finite numbers become null)."""
        metrics = {name: finite_or_none(value) for name, value in self.metrics.items()}
        data = {
            "schema": SCHEMA,
            "schema_version": SCHEMA_VERSION,
            "chatcli_version": self.chatcli_version,
            "started": self.started,
            "outcome": self.outcome,
            "valid": self.valid,
            "invalid_reasons": list(self.invalid_reasons),
            "seed": self.seed,
            "params": dict(self.params),
            "environment": dict(self.environment),
            "metrics": metrics,
            "units": {name: METRICS[name].unit for name in metrics if name in METRICS},
            "histograms": {key: hist.to_dict() for key, hist in self.histograms.items()},
            "thresholds": list(self.thresholds),
            "baseline": self.baseline,
            "error_codes": dict(self.error_codes),
            "timeline": None if self.timeline is None else self.timeline.to_dict(),
        }
        if self.targets:
            data["targets"] = [dict(row) for row in self.targets]
        return data

    @classmethod
    def from_dict(cls, data: Any, source: str = "report") -> BenchReport:
        """Read a report object; UsageError (naming ``source``) says what is wrong."""
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise UsageError(f"{source}: not a chatcli bench report (no schema {SCHEMA!r})")
        version = data.get("schema_version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise UsageError(f"{source}: schema_version must be an integer")
        if version > SCHEMA_VERSION:
            raise UsageError(
                f"{source}: written with schema version {version} by a newer chatcli; "
                f"this one reads version {SCHEMA_VERSION}"
            )
        if version < 1:
            raise UsageError(f"{source}: unknown schema version {version}")
        metrics = _typed(data, "metrics", dict, source)
        for name, value in metrics.items():
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, (int, float))
            ):
                raise UsageError(f"{source}: metric {name!r} must be a number or null")
        histograms = {}
        for key, raw in _typed(data, "histograms", dict, source).items():
            try:
                histograms[key] = Histogram.from_dict(raw)
            except ValueError as exc:
                raise UsageError(f"{source}: histogram {key!r}: {exc}") from exc
        thresholds = _typed(data, "thresholds", list, source)
        if not all(isinstance(t, dict) for t in thresholds):
            raise UsageError(f"{source}: every threshold must be a JSON object")
        started = data.get("started")
        if started is not None and not isinstance(started, str):
            raise UsageError(f"{source}: started must be a string or null")
        timeline = None
        if data.get("timeline") is not None:
            try:
                timeline = Timeline.from_dict(data["timeline"])
            except ValueError as exc:
                raise UsageError(f"{source}: {exc}") from exc
        seed = data.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise UsageError(f"{source}: seed must be an integer or null")
        return cls(
            params=_typed(data, "params", dict, source),
            metrics={name: finite_or_none(v) for name, v in metrics.items()},
            seed=seed,
            histograms=histograms,
            environment=_typed(data, "environment", dict, source),
            valid=_typed(data, "valid", bool, source),
            invalid_reasons=[str(r) for r in _typed(data, "invalid_reasons", list, source)],
            thresholds=thresholds,
            baseline=data.get("baseline"),
            started=started,
            chatcli_version=str(data.get("chatcli_version", "unknown")),
            error_codes={
                str(code): int(n)
                for code, n in (data.get("error_codes") or {}).items()
                if isinstance(n, int) and not isinstance(n, bool)
            }
            if isinstance(data.get("error_codes"), dict)
            else {},
            timeline=timeline,
            targets=_target_rows(data.get("targets"), source),
        )


def _target_rows(value: Any, source: str) -> list[dict[str, Any]]:
    """The ``targets`` rows of a report (absent: none), each checked for its types."""
    if value is None:
        return []
    rows = value if isinstance(value, list) else None
    if rows is None or not all(
        isinstance(row, dict)
        and isinstance(row.get("target"), str)
        and all(
            isinstance(row.get(key), int) and not isinstance(row.get(key), bool)
            for key in ("clients", "connected")
        )
        for row in rows
    ):
        raise UsageError(
            f"{source}: field 'targets' must be an array of "
            '{"target": string, "clients": integer, "connected": integer}'
        )
    return [
        {"target": row["target"], "clients": row["clients"], "connected": row["connected"]}
        for row in rows
    ]


_JSON_KINDS: Final = {dict: "object", list: "array", bool: "boolean"}


def _typed(data: Mapping[str, Any], key: str, kind: type, source: str) -> Any:
    """``data[key]`` if it has the JSON type ``kind``, else a UsageError saying so."""
    value = data.get(key)
    if not isinstance(value, kind):
        raise UsageError(f"{source}: field {key!r} must be a JSON {_JSON_KINDS[kind]}")
    return value


def dumps_report(report: BenchReport) -> str:
    """The report as JSON text (strict: no NaN or Infinity), ending with a newline."""
    return json.dumps(report.to_dict(), indent=2, allow_nan=False, ensure_ascii=False) + "\n"


def loads_report(text: str, source: str = "report") -> BenchReport:
    """Parse report JSON text; UsageError names ``source`` and what is wrong."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{source}: not valid JSON ({exc})") from exc
    return BenchReport.from_dict(data, source)


def read_report(path: str | os.PathLike[str]) -> BenchReport:
    """Load a report written by ``--json`` (for ``--baseline``); UsageError if unusable."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {os.fspath(path)}: {exc}") from exc
    return loads_report(text, os.fspath(path))
