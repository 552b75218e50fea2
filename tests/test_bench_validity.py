"""When a run is invalid: the generator, not the relay, was the limit (pure rules)."""

from __future__ import annotations

import pytest

from chatcli.bench.histogram import Histogram
from chatcli.bench.runner import BenchOptions, _invalid_reasons
from chatcli.errors import UsageError

CALM: dict[str, float | None] = {"generator_cpu_pct": 40.0, "lag_p50": 0.5, "lag_p99": 3.0}


def reasons(late: int, sent: int, **options: object) -> list[str]:
    return _invalid_reasons(CALM, sent, late, BenchOptions(**options))  # type: ignore[arg-type]


def test_a_calm_run_is_valid() -> None:
    assert reasons(late=0, sent=5000) == []


def test_a_saturated_generator_invalidates() -> None:
    metrics = {**CALM, "generator_cpu_pct": 95.0}
    (reason,) = _invalid_reasons(metrics, 5000, 0, BenchOptions())
    assert "95% of a core" in reason


def test_more_than_one_percent_late_is_a_generator_behind_schedule() -> None:
    assert reasons(late=50, sent=5000) == []
    (reason,) = reasons(late=51, sent=5000)
    assert "51 of 5000 left over 10 ms late" in reason


def test_one_or_two_late_sends_in_a_small_run_are_a_hiccup() -> None:
    assert reasons(late=2, sent=25) == []
    assert reasons(late=3, sent=25)  # a stall that delays several sends still counts


def test_bursts_are_judged_by_cpu_only() -> None:
    assert reasons(late=4000, sent=5000, scenario="burst") == []
    metrics = {**CALM, "generator_cpu_pct": 99.0}
    assert _invalid_reasons(metrics, 5000, 0, BenchOptions(scenario="burst"))


def test_nothing_sent_is_invalid() -> None:
    assert reasons(late=0, sent=0) == ["no message was sent in the measured window"]


def test_burst_refuses_an_arrivals_choice() -> None:
    with pytest.raises(UsageError, match="burst"):
        BenchOptions(scenario="burst", arrivals="poisson").check()


def test_count_above_counts_only_values_certainly_above() -> None:
    hist = Histogram()
    hist.record_many([5_000, 9_990, 10_000, 10_100, 20_000, 50_000])
    assert hist.count_above(10_000) == 3  # 10_100 shares no bucket with 10_000
    assert hist.count_above(60_000) == 0
    assert hist.count_above(0) == 6
