"""The latency histogram against exact figures computed from the raw values."""

from __future__ import annotations

import itertools
import json
import math
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatcli.bench.histogram import (
    HIGHEST_TRACKABLE_US,
    SUB_BUCKET_BITS,
    Histogram,
    bucket_highest,
    bucket_index,
    bucket_lowest,
    percentile_label,
)

BUCKETS = bucket_index(HIGHEST_TRACKABLE_US) + 1
PRECISION = Fraction(1, 2**SUB_BUCKET_BITS)
PERCENTILES = ["0", "1", "25", "50", "90", "99", "99.9", "99.99", "100"]

latencies = st.integers(min_value=0, max_value=HIGHEST_TRACKABLE_US)
# Mostly realistic latencies, with occasional huge and tiny ones.
samples = st.lists(
    st.one_of(st.integers(0, 2_000), st.integers(0, 200_000), latencies), min_size=1, max_size=300
)


def exact_percentile(values: list[int], percentile: str) -> int:
    """Nearest rank: the smallest value with at least p% of the values at or below it."""
    ordered = sorted(values)
    rank = max(1, math.ceil(Fraction(percentile) * len(ordered) / 100))
    return ordered[rank - 1]


def filled(values: list[int]) -> Histogram:
    hist = Histogram()
    for value in values:
        hist.record(value)
    return hist


def test_buckets_tile_the_range_without_gaps() -> None:
    assert bucket_lowest(0) == 0
    for index in range(BUCKETS - 1):
        assert bucket_highest(index) + 1 == bucket_lowest(index + 1)
    assert bucket_highest(BUCKETS - 1) == HIGHEST_TRACKABLE_US
    assert bucket_index(HIGHEST_TRACKABLE_US + 1) == BUCKETS


def test_bucket_width_is_within_the_precision() -> None:
    for index in range(BUCKETS):
        low, high = bucket_lowest(index), bucket_highest(index)
        assert bucket_index(low) == index == bucket_index(high)
        assert high - low + 1 <= max(Fraction(1), low * PRECISION)


def test_small_values_are_exact() -> None:
    values = list(range(2 ** (SUB_BUCKET_BITS + 1)))
    hist = filled(values)
    for p in PERCENTILES:
        assert hist.percentile(float(p)) == exact_percentile(values, p)


@settings(max_examples=150, deadline=None)
@given(samples)
def test_percentiles_are_never_low_and_high_by_under_one_bucket(values: list[int]) -> None:
    hist = filled(values)
    reported = hist.percentiles([float(p) for p in PERCENTILES])
    for p, value in zip(PERCENTILES, reported, strict=True):
        true = exact_percentile(values, p)
        assert value is not None
        assert true <= value <= true + true * PRECISION, (p, true, value)


@settings(max_examples=100, deadline=None)
@given(samples)
def test_count_min_max_mean_are_exact(values: list[int]) -> None:
    hist = filled(values)
    assert hist.count == len(values)
    assert hist.min == min(values)
    assert hist.max == max(values)
    assert hist.total == sum(values)
    assert hist.mean == pytest.approx(sum(values) / len(values))
    assert hist.percentile(100) == max(values)


def test_known_data_gives_known_percentiles() -> None:
    # 1..1000 ms: p50 is 500 ms, p99 990 ms, p99.9 999 ms, within 1/256.
    hist = filled([ms * 1000 for ms in range(1, 1001)])
    for p, expected in [(50.0, 500_000), (90.0, 900_000), (99.0, 990_000), (99.9, 999_000)]:
        value = hist.percentile(p)
        assert value is not None
        assert expected <= value <= expected * (1 + 1 / 256)
    assert hist.percentile(100.0) == 1_000_000
    assert hist.mean == 500_500.0


@given(samples)
def test_record_many_matches_record(values: list[int]) -> None:
    batch = Histogram()
    batch.record_many(values)
    assert batch == filled(values)


def test_overflow_is_counted_not_dropped() -> None:
    huge = HIGHEST_TRACKABLE_US * 10
    hist = filled([100, 200, huge])
    assert hist.count == 3
    assert hist.overflow == 1
    assert hist.max == huge
    assert hist.percentile(100) == huge
    assert hist.percentile(99) == huge  # rank 3 of 3 is the overflowed value
    assert hist.percentile(50) == 200
    batch = Histogram()
    batch.record_many([100, 200, huge])
    assert batch == hist


def test_negative_values_are_refused_and_leave_no_trace() -> None:
    hist = filled([10, 20])
    before = hist.to_dict()
    with pytest.raises(ValueError, match="negative"):
        hist.record(-1)
    with pytest.raises(ValueError, match="negative"):
        hist.record_many([5, -3])
    assert hist.to_dict() == before


def test_empty_histogram_has_no_statistics() -> None:
    hist = Histogram()
    assert hist.count == 0
    assert hist.min is None and hist.max is None and hist.mean is None
    assert hist.percentile(99) is None
    assert hist.distribution() == []
    hist.record_many([])
    assert hist.count == 0


def test_percentile_outside_0_100_is_refused() -> None:
    with pytest.raises(ValueError):
        filled([1]).percentile(101)
    with pytest.raises(ValueError):
        filled([1]).percentile(-0.5)


@settings(max_examples=60, deadline=None)
@given(samples, samples)
def test_merge_equals_recording_everything_in_one(left: list[int], right: list[int]) -> None:
    merged = filled(left)
    merged.merge(filled(right))
    assert merged == filled(left + right)


def test_merge_with_empty_histograms() -> None:
    hist = filled([7, 70_000])
    hist.merge(Histogram())
    assert hist == filled([7, 70_000])
    empty = Histogram()
    empty.merge(hist)
    assert empty == hist
    assert empty.min == 7


def test_copy_and_reset_are_independent() -> None:
    hist = filled([1, 2, 3])
    twin = hist.copy()
    hist.reset()
    assert hist.count == 0 and hist.min is None
    assert twin.count == 3 and twin.min == 1


@settings(max_examples=60, deadline=None)
@given(samples)
def test_json_round_trip(values: list[int]) -> None:
    hist = filled([*values, HIGHEST_TRACKABLE_US + 5])
    data = json.loads(json.dumps(hist.to_dict()))
    again = Histogram.from_dict(data)
    assert again == hist
    assert again.percentiles([50.0, 99.9]) == hist.percentiles([50.0, 99.9])


def test_serialised_form_is_sparse_and_self_describing() -> None:
    data = filled([3, 3, 1000]).to_dict()
    assert data["unit"] == "us"
    assert data["buckets"] == [[3, 2], [bucket_lowest(bucket_index(1000)), 1]]
    assert (data["count"], data["min"], data["max"], data["sum"]) == (3, 3, 1000, 1006)
    assert Histogram().to_dict()["min"] is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"layout": {"sub_bucket_bits": 7, "max_value_bits": 36}}, "layout"),
        ({"count": 99}, "count"),
        ({"buckets": [[1001, 1]]}, "lowest value"),
        ({"buckets": [[3, -2]]}, "non-negative"),
        ({"buckets": [[3, True]]}, "non-negative"),
        ({"sum": "x"}, "non-negative"),
        ({"buckets": "nope"}, "malformed"),
    ],
)
def test_from_dict_refuses_tampered_data(change: dict[str, object], message: str) -> None:
    data = filled([3, 3, 1000]).to_dict()
    data.update(change)
    with pytest.raises(ValueError, match=message):
        Histogram.from_dict(data)


def test_distribution_bars_hold_exactly_their_values() -> None:
    values = [0, 3, 90, 950, 1_200, 5_000, 5_001, 48_000, 2_500_000, HIGHEST_TRACKABLE_US + 1]
    bars = filled(values).distribution(bins=8)
    assert 1 < len(bars) <= 8
    assert bars[0].low_us == 0 and bars[-1].high_us == max(values)
    for left, right in itertools.pairwise(bars):
        assert left.high_us + 1 == right.low_us
    for bar in bars:
        assert bar.count == sum(bar.low_us <= v <= bar.high_us for v in values), bar


def test_distribution_of_one_value_is_one_bar() -> None:
    bars = filled([42_000] * 5).distribution()
    assert [(b.low_us, b.high_us, b.count) for b in bars] == [(42_000, 42_000, 5)]


def test_percentile_rows_and_labels() -> None:
    rows = filled(list(range(1, 101))).percentile_rows([50.0, 99.9, 100.0])
    assert rows == [("p50", 50.0, 50), ("p99.9", 99.9, 100), ("max", 100.0, 100)]
    assert percentile_label(99.99) == "p99.99"
