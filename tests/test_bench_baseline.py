"""Baseline comparison: direction-aware, zero-safe, tolerant of noise, loud about doubts."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from chatcli.bench.baseline import (
    Comparison,
    compare_metrics,
    compare_reports,
    parse_tolerance,
)
from chatcli.bench.metrics import LATENCY_NOISE_MS, METRICS
from chatcli.bench.report_schema import BenchReport
from chatcli.bench.view import render_summary
from chatcli.errors import UsageError

TEN_PERCENT = 0.10


def status(name: str, base: float | None, current: float | None, tol: float = TEN_PERCENT) -> str:
    result = compare_metrics({name: current}, {name: base}, tol, names=[name])
    [row] = result.rows
    return row.status


@pytest.mark.parametrize(
    ("text", "value"), [("10%", 0.10), ("0%", 0.0), (" 2.5 % ", 0.025), ("150%", 1.5)]
)
def test_parse_tolerance(text: str, value: float) -> None:
    assert parse_tolerance(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["10", "0.1", "-5%", "ten%", "%", ""])
def test_tolerance_needs_a_percent_sign(text: str) -> None:
    with pytest.raises(UsageError, match="percentage"):
        parse_tolerance(text)


@pytest.mark.parametrize(
    ("name", "base", "current", "expected"),
    [
        # lower is better: p99 limit is 100 * 1.1 + noise
        ("p99", 100.0, 110.0 + LATENCY_NOISE_MS, "ok"),
        ("p99", 100.0, 110.0 + LATENCY_NOISE_MS + 0.01, "regressed"),
        ("p99", 100.0, 50.0, "improved"),
        ("p99", 100.0, 95.0, "ok"),
        # higher is better: throughput may drop 10 %, no more
        ("deliveries_per_s", 100_000.0, 90_000.0, "ok"),
        ("deliveries_per_s", 100_000.0, 89_999.0, "regressed"),
        ("deliveries_per_s", 100_000.0, 120_000.0, "improved"),
        # a zero baseline: any loss is a regression, any throughput is not
        ("loss", 0.0, 0.0, "ok"),
        ("loss", 0.0, 1e-6, "regressed"),
        ("lost", 0.0, 1.0, "regressed"),
        ("duplicated", 0.0, 1.0, "regressed"),
        ("reordered", 0.0, 1.0, "regressed"),
        ("errors", 0.0, 1.0, "regressed"),
        ("deliveries_per_s", 0.0, 0.0, "ok"),
        ("deliveries_per_s", 0.0, 10.0, "improved"),
        # the noise floor: a sub-millisecond wobble of a tiny median is not a regression
        ("p50", 0.2, 0.2 + LATENCY_NOISE_MS, "ok"),
        ("p50", 0.2, 0.3 + LATENCY_NOISE_MS, "regressed"),
    ],
)
def test_direction_aware_statuses(name: str, base: float, current: float, expected: str) -> None:
    assert status(name, base, current) == expected


def test_zero_tolerance_still_allows_equal_values() -> None:
    assert status("deliveries_per_s", 5000.0, 5000.0, tol=0.0) == "ok"
    assert status("deliveries_per_s", 5000.0, 4999.0, tol=0.0) == "regressed"


def test_rows_carry_change_and_limit() -> None:
    result = compare_metrics({"loss": 0.02, "p99": 30.0}, {"loss": 0.0, "p99": 20.0}, 0.25)
    rows = {row.metric: row for row in result.rows}
    assert rows["p99"].change == pytest.approx(0.5)
    assert rows["p99"].limit == pytest.approx(25.0 + LATENCY_NOISE_MS)
    assert rows["loss"].change is None  # no relative change from zero
    assert rows["loss"].limit == 0.0
    assert result.failed
    assert {row.metric for row in result.regressions} == {"p99", "loss"}
    assert str(rows["p99"]) == "p99: 20 ms -> 30 ms (+50.0%) regressed"


def test_default_compares_only_metrics_with_a_direction() -> None:
    everything = {name: 1.0 for name in METRICS}
    result = compare_metrics(everything, everything, TEN_PERCENT)
    compared = {row.metric for row in result.rows}
    assert compared == {name for name, m in METRICS.items() if m.better}
    assert "expected" not in compared and "sent_per_s" not in compared
    assert not result.failed and all(row.status == "ok" for row in result.rows)


def test_missing_values_are_reported_not_failed() -> None:
    result = compare_metrics(
        {"relay_cpu_s": None, "p99": float("nan")},
        {"relay_cpu_s": 3.0, "p99": None},
        TEN_PERCENT,
    )
    [row] = result.rows  # p99 is missing in both: nothing to say
    assert (row.metric, row.status, row.current) == ("relay_cpu_s", "missing", None)
    assert not result.failed
    assert result.warnings == ["measured in only one of the runs: relay_cpu_s"]


def test_refuses_descriptive_or_unknown_metrics_and_bad_tolerance() -> None:
    with pytest.raises(UsageError):
        compare_metrics({}, {}, TEN_PERCENT, names=["expected"])
    with pytest.raises(UsageError):
        compare_metrics({}, {}, TEN_PERCENT, names=["p98"])
    with pytest.raises(UsageError):
        compare_metrics({}, {}, -0.1)


def report(**overrides: object) -> BenchReport:
    fields: dict[str, object] = {
        "params": {"clients": 50, "rate": 100.0},
        "metrics": {"p99": 10.0, "deliveries_per_s": 400_000.0, "loss": 0.0},
        "seed": 1,
        "environment": {"machine": "x86_64", "cpu_count": 2, "python": "3.11.7"},
    }
    fields.update(overrides)
    return BenchReport(**fields)  # type: ignore[arg-type]


def test_compare_reports_passes_identical_runs_without_warnings() -> None:
    result = compare_reports(report(), report(), TEN_PERCENT)
    assert not result.failed and result.warnings == []
    assert len(result.rows) == 3


def test_compare_reports_fails_on_regression_and_explains_doubts() -> None:
    slower = report(
        metrics={"p99": 30.0, "deliveries_per_s": 400_000.0, "loss": 0.0},
        params={"clients": 200, "rate": 100.0},
        seed=2,
        environment={"machine": "x86_64", "cpu_count": 8, "python": "3.11.7"},
    )
    result = compare_reports(slower, report(valid=False), TEN_PERCENT)
    assert result.failed
    assert [row.metric for row in result.regressions] == ["p99"]
    text = "\n".join(result.warnings)
    assert "baseline run was marked invalid" in text
    assert "clients 50 -> 200" in text and "seed 1 -> 2" in text
    assert "cpu_count 2 -> 8" in text


def test_comparison_json_form() -> None:
    result = compare_metrics({"loss": 0.5}, {"loss": 0.0}, TEN_PERCENT, names=["loss"])
    assert result.to_dict() == {
        "tolerance": TEN_PERCENT,
        "failed": True,
        "warnings": [],
        "rows": [
            {
                "metric": "loss",
                "unit": "fraction",
                "baseline": 0.0,
                "current": 0.5,
                "change": None,
                "limit": 0.0,
                "status": "regressed",
            }
        ],
    }
    assert isinstance(result, Comparison)


def test_error_codes_are_results_not_parameters() -> None:
    from chatcli.bench.report_schema import dumps_report, loads_report

    current = report(error_codes={"rate_limited": 3})
    again = loads_report(dumps_report(current))
    assert again.error_codes == {"rate_limited": 3}
    assert "error_codes" not in again.params
    comparison = compare_reports(current, report(), TEN_PERCENT)
    assert not any("parameters differ" in w for w in comparison.warnings)


def test_default_gate_ignores_noisy_tail_figures() -> None:
    metrics = {"p99": 10.0, "deliveries_per_s": 400_000.0, "loss": 0.0}
    base = report(metrics={**metrics, "max": 20.0, "lag_p99": 1.0})
    noisy = report(metrics={**metrics, "max": 200.0, "lag_p99": 10.0})
    assert not compare_reports(noisy, base, TEN_PERCENT).failed
    # ...while the same jump in a gated figure fails
    worse = report(metrics={**metrics, "p99": 100.0, "max": 20.0, "lag_p99": 1.0})
    assert compare_reports(worse, base, TEN_PERCENT).failed


# ------------------------------------------------------------------ on screen


def test_bench_summary_shows_the_baseline_warnings() -> None:
    # a comparison against another machine or other parameters must say so on screen,
    # not only inside the --json file
    report = BenchReport(params={}, metrics={})
    report.baseline = {
        "tolerance": 0.1,
        "failed": False,
        "warnings": ["parameters differ from the baseline: clients 50 -> 5"],
        "rows": [],
    }
    console = Console(file=io.StringIO(), width=200, color_system=None)
    console.print(render_summary(report))
    shown = console.file.getvalue()  # type: ignore[attr-defined]
    assert "parameters differ from the baseline: clients 50 -> 5" in shown
