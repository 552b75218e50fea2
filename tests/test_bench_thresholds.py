"""Threshold expressions: parsing with units, clear refusals, and never a silent pass."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatcli.bench.histogram import Histogram
from chatcli.bench.metrics import METRICS, UNIT_SUFFIXES, format_metric, histogram_metrics
from chatcli.bench.thresholds import (
    OPERATORS,
    Threshold,
    evaluate,
    parse_threshold,
    parse_thresholds,
)
from chatcli.errors import UsageError


@pytest.mark.parametrize(
    ("expr", "metric", "op", "limit"),
    [
        ("p99<50ms", "p99", "<", 50.0),
        ("p99.9<=100ms", "p999", "<=", 100.0),
        ("p(99.9) <= 100ms", "p999", "<=", 100.0),
        ("p(99)<5", "p99", "<", 5.0),  # a bare number is in the metric's unit (ms)
        ("loss==0", "loss", "==", 0.0),
        ("loss < 0.1%", "loss", "<", 0.001),
        ("deliveries_per_s>50000", "deliveries_per_s", ">", 50_000.0),
        ("deliveries_per_s >= 400_000", "deliveries_per_s", ">=", 400_000.0),
        ("connect_p99<1s", "connect_p99", "<", 1000.0),
        ("connect_p99.9<2s", "connect_p999", "<", 2000.0),
        ("uncorrected_max != 0", "uncorrected_max", "!=", 0.0),
        ("p50 < 500us", "p50", "<", 0.5),
        ("p50 < 500 µs", "p50", "<", 0.5),
        ("lag_p99<.5ms", "lag_p99", "<", 0.5),
        ("relay_cpu_s<1500ms", "relay_cpu_s", "<", 1.5),
        ("relay_cpu_us_per_delivery<2ms", "relay_cpu_us_per_delivery", "<", 2000.0),
        ("relay_rss_mb<=1GB", "relay_rss_mb", "<=", 1024.0),
        ("relay_mem_per_conn_kb<20KB", "relay_mem_per_conn_kb", "<", 20.0),
        ("generator_cpu_pct<90%", "generator_cpu_pct", "<", 90.0),
        ("errors==0", "errors", "==", 0.0),
        ("  lost <= 1e2  ", "lost", "<=", 100.0),
    ],
)
def test_parse(expr: str, metric: str, op: str, limit: float) -> None:
    threshold = parse_threshold(expr)
    assert (threshold.metric, threshold.op) == (metric, op)
    assert threshold.limit == pytest.approx(limit, rel=1e-12)
    assert threshold.source == expr.strip()


def test_unknown_metric_is_an_error_listing_the_known_ones() -> None:
    with pytest.raises(UsageError) as info:
        parse_threshold("p98<5ms")
    message = str(info.value)
    assert "unknown metric 'p98'" in message
    assert "did you mean" in message
    for name in ("p99", "loss", "deliveries_per_s", "connect_p99"):
        assert name in message


@pytest.mark.parametrize(
    ("expr", "fragment"),
    [
        ("p99", "cannot parse"),
        ("p99<<5ms", "cannot parse"),
        ("p99 ~ 5ms", "cannot parse"),
        ("<5ms", "cannot parse"),
        ("p99<fast", "cannot parse"),
        ("p99<5kb", "unit 'kb' does not fit p99"),
        ("p99<5 ms extra", "does not fit"),
        ("loss<5ms", "does not fit loss"),
        ("deliveries_per_s>5%", "does not fit"),
        ("lost<3s", "does not fit"),
        ("p99<1e999ms", "finite"),
        ("p99.99<1ms", "unknown metric"),
        ("latency_p99<1ms", "unknown metric"),
    ],
)
def test_refusals(expr: str, fragment: str) -> None:
    with pytest.raises(UsageError, match=fragment):
        parse_threshold(expr)


def test_unit_error_lists_the_allowed_units() -> None:
    with pytest.raises(UsageError, match=r"us, µs, ms, s or none"):
        parse_threshold("p99<5h")
    with pytest.raises(UsageError, match=r"none \(a plain number\)"):
        parse_threshold("lost<5x")


@pytest.mark.parametrize(
    ("expr", "value", "passed"),
    [
        ("p99<50ms", 49.9, True),
        ("p99<50ms", 50.0, False),
        ("p99<=50ms", 50.0, True),
        ("loss==0", 0.0, True),
        ("loss==0", 1e-9, False),
        ("loss!=0", 0.0, False),
        ("deliveries_per_s>50000", 50_001.0, True),
        ("deliveries_per_s>50000", 50_000.0, False),
        ("deliveries_per_s>=50000", 50_000.0, True),
        ("connect_p99<1s", 999.0, True),
        ("connect_p99<1s", 1001.0, False),
    ],
)
def test_evaluate(expr: str, value: float, passed: bool) -> None:
    threshold = parse_threshold(expr)
    [result] = evaluate([threshold], {threshold.metric: value})
    assert result.passed is passed
    assert result.actual == value
    assert (result.reason == "") is passed


@pytest.mark.parametrize("missing", [{}, {"p99": None}, {"p99": float("nan")}])
def test_an_unmeasured_metric_fails(missing: dict[str, float | None]) -> None:
    [result] = evaluate(parse_thresholds(["p99<50ms"]), missing)
    assert not result.passed
    assert result.actual is None
    assert "not measured" in result.reason


def test_every_threshold_is_evaluated_in_order() -> None:
    thresholds = parse_thresholds(["p99<50ms", "loss==0", "errors==0"])
    results = evaluate(thresholds, {"p99": 12.0, "loss": 0.5, "errors": 0.0})
    assert [r.passed for r in results] == [True, False, True]
    assert results[1].to_dict() == {
        "expr": "loss==0",
        "metric": "loss",
        "op": "==",
        "limit": 0.0,
        "unit": "fraction",
        "actual": 0.5,
        "passed": False,
    }


@given(
    op=st.sampled_from(sorted(OPERATORS)),
    limit=st.integers(0, 10**6),
    actual=st.integers(0, 10**6),
)
def test_operators_agree_with_python(op: str, limit: int, actual: int) -> None:
    [result] = evaluate([parse_threshold(f"lost{op}{limit}")], {"lost": float(actual)})
    assert result.passed == eval(f"{actual} {op} {limit}")


def test_str_is_readable() -> None:
    assert str(parse_threshold("p99<50ms")) == "p99 < 50 ms"
    assert str(parse_threshold("loss<0.1%")) == "loss < 0.1%"
    assert str(Threshold("deliveries_per_s", ">", 5e4, "")) == "deliveries_per_s > 50,000 msg/s"


def test_metric_table_is_consistent() -> None:
    for name, metric in METRICS.items():
        assert metric.name == name
        assert metric.unit in UNIT_SUFFIXES, name
        assert metric.better in ("lower", "higher", None)
        assert metric.noise >= 0
        assert metric.description
    required = (
        "p50 p90 p99 p999 max mean uncorrected_p50 uncorrected_p99 uncorrected_max "
        "deliveries_per_s sent_per_s offered_per_s expected received lost duplicated "
        "reordered loss connect_p50 connect_p99 connect_max lag_p99 lag_max relay_cpu_s "
        "relay_rss_mb generator_cpu_pct errors"
    )
    assert set(required.split()) <= set(METRICS)
    assert METRICS["p99"].better == "lower" and METRICS["deliveries_per_s"].better == "higher"


def test_histogram_metrics_are_in_ms() -> None:
    hist = Histogram()
    hist.record_many([100, 200, 300, 250_000])  # below 512 µs buckets are exact
    figures = histogram_metrics(hist, "connect_")
    assert set(figures) == {f"connect_{s}" for s in ("p50", "p90", "p99", "p999", "max", "mean")}
    assert figures["connect_max"] == 250.0
    assert figures["connect_mean"] == 62.65
    assert figures["connect_p50"] == 0.2
    assert set(histogram_metrics(Histogram()).values()) == {None}


def test_format_metric() -> None:
    assert format_metric("p99", 12.345) == "12.3 ms"
    assert format_metric("p99", 1234.5) == "1,234 ms"
    assert format_metric("loss", 0.00123) == "0.123%"
    assert format_metric("lost", 1234.0) == "1,234"
    assert format_metric("deliveries_per_s", 412_345.4) == "412,345 msg/s"
    assert format_metric("p99", None) == "-"
