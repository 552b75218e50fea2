"""A fixed-memory log-linear latency histogram, in the spirit of HdrHistogram.

Values are integer microseconds. Values below ``2 ** (SUB_BUCKET_BITS + 1)`` (512 µs)
get a bucket each, so they are exact; above that every power of two is split into
``2 ** SUB_BUCKET_BITS`` (256) equal buckets, so a bucket is never wider than 1/256 of the
values it holds (about 0.4 %, between two and three significant digits). Values up to
``2 ** MAX_VALUE_BITS - 1`` µs (about 19 hours) are tracked in 7,424 counters; larger
values are counted as overflow, never dropped, and count, min, max and mean stay exact.

Percentiles use the nearest-rank definition and report the highest value that the
bucket holding that rank could contain (as HdrHistogram does), clamped to the exact
min and max: a reported percentile is never below the true one, and above it by less
than one bucket width. Histograms with the same layout merge exactly, which is how the
``--workers`` processes combine their figures.

``record`` is the hot path of the load generator's receive loop: a few integer
operations and one list increment. ``record_many`` is cheaper still per value.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate
from operator import add
from typing import Any, Final

__all__ = [
    "DEFAULT_PERCENTILES",
    "HIGHEST_TRACKABLE_US",
    "MAX_VALUE_BITS",
    "SUB_BUCKET_BITS",
    "US_PER_MS",
    "US_PER_S",
    "Bin",
    "Histogram",
    "bucket_highest",
    "bucket_index",
    "bucket_lowest",
    "percentile_label",
]

US_PER_S: Final = 1_000_000
US_PER_MS: Final = 1_000

SUB_BUCKET_BITS: Final = 8
"""Each power of two above the exact range is split into 2**SUB_BUCKET_BITS buckets."""
MAX_VALUE_BITS: Final = 36
"""Values up to 2**MAX_VALUE_BITS - 1 µs (about 19 hours) are bucketed; above is overflow."""
HIGHEST_TRACKABLE_US: Final = (1 << MAX_VALUE_BITS) - 1

_P: Final = SUB_BUCKET_BITS
_K: Final = SUB_BUCKET_BITS + 1  # values with at most _K bits are their own bucket
_BUCKETS: Final = ((MAX_VALUE_BITS - _K + 1) << _P) + (1 << _P)
_LAYOUT: Final = {"sub_bucket_bits": SUB_BUCKET_BITS, "max_value_bits": MAX_VALUE_BITS}

DEFAULT_PERCENTILES: Final = (50.0, 90.0, 99.0, 99.9, 99.99, 100.0)
"""The rows of the percentile table shown at the end of a run."""

_RANK_DECIMALS: Final = 6  # p * count / 100 is rounded to this many places before ceil()


def bucket_index(value_us: int) -> int:
    """The counter index of a non-negative value (may exceed the table: overflow)."""
    bits = value_us.bit_length()
    if bits <= _K:
        return value_us
    shift = bits - _K
    return (shift << _P) + (value_us >> shift)


def bucket_lowest(index: int) -> int:
    """The smallest value that falls in bucket ``index``."""
    shift = max(0, (index >> _P) - 1)
    return (index - (shift << _P)) << shift


def bucket_highest(index: int) -> int:
    """The largest value that falls in bucket ``index``."""
    shift = max(0, (index >> _P) - 1)
    return ((index - (shift << _P) + 1) << shift) - 1


def percentile_label(percentile: float) -> str:
    """A short name for a percentile: ``p50``, ``p99.9``, ``max`` for 100."""
    if percentile >= 100.0:
        return "max"
    return f"p{percentile:g}"


@dataclass(frozen=True)
class Bin:
    """One bar of a coarse latency distribution: values in [low_us, high_us]."""

    low_us: int
    high_us: int
    count: int


class Histogram:
    """Counts of integer-microsecond values in log-linear buckets (see module docstring)."""

    __slots__ = ("_counts", "_max", "_min", "_overflow", "_sum")

    def __init__(self) -> None:
        self._counts: list[int] = []
        self._overflow = 0
        self._sum = 0
        self._min: float = math.inf  # a sentinel that keeps the hot path free of None checks
        self._max = -1
        self.reset()

    # ------------------------------------------------------------------ recording

    def record(self, value_us: int) -> None:
        """Count one value (integer microseconds, >= 0)."""
        if value_us < self._min:
            if value_us < 0:
                raise ValueError(f"a latency cannot be negative: {value_us} µs")
            self._min = value_us
        if value_us > self._max:
            self._max = value_us
        self._sum += value_us
        bits = value_us.bit_length()
        if bits > _K:
            shift = bits - _K
            index = (shift << _P) + (value_us >> shift)
        else:
            index = value_us
        try:
            self._counts[index] += 1
        except IndexError:
            self._overflow += 1

    def record_many(self, values: Sequence[int]) -> None:
        """Count a batch of values; faster per value than ``record``."""
        if not values:
            return
        low = min(values)
        if low < 0:
            raise ValueError(f"a latency cannot be negative: {low} µs")
        high = max(values)
        counts = self._counts
        if high > HIGHEST_TRACKABLE_US:
            for value in values:
                index = bucket_index(value)
                if index < _BUCKETS:
                    counts[index] += 1
                else:
                    self._overflow += 1
        else:
            for value in values:
                bits = value.bit_length()
                if bits > _K:
                    shift = bits - _K
                    counts[(shift << _P) + (value >> shift)] += 1
                else:
                    counts[value] += 1
        self._sum += sum(values)
        if low < self._min:
            self._min = low
        if high > self._max:
            self._max = high

    def merge(self, other: Histogram) -> None:
        """Add every value counted by ``other`` to this histogram (exact)."""
        if other._max < 0:
            return
        self._counts = list(map(add, self._counts, other._counts))
        self._overflow += other._overflow
        self._sum += other._sum
        self._min = min(self._min, other._min)
        self._max = max(self._max, other._max)

    def reset(self) -> None:
        """Forget every value (used for interval figures such as the live p99)."""
        self._counts = [0] * _BUCKETS
        self._overflow = 0
        self._sum = 0
        self._min = math.inf
        self._max = -1

    def copy(self) -> Histogram:
        """An independent histogram with the same counts."""
        twin = Histogram()
        twin.merge(self)
        return twin

    # ---------------------------------------------------------------- statistics

    @property
    def count(self) -> int:
        """How many values were recorded, overflow included."""
        return sum(self._counts) + self._overflow

    @property
    def overflow(self) -> int:
        """How many values were above HIGHEST_TRACKABLE_US (counted, not dropped)."""
        return self._overflow

    @property
    def total(self) -> int:
        """The exact sum of every recorded value, in µs."""
        return self._sum

    @property
    def min(self) -> int | None:
        """The exact smallest value, or None when empty."""
        return None if self._max < 0 else int(self._min)

    @property
    def max(self) -> int | None:
        """The exact largest value, or None when empty."""
        return None if self._max < 0 else self._max

    @property
    def mean(self) -> float | None:
        """The exact mean, or None when empty."""
        count = self.count
        return self._sum / count if count else None

    def count_above(self, value_us: int) -> int:
        """How many values were certainly above ``value_us`` (overflow included).

        Counts the buckets whose every value exceeds ``value_us``; values sharing a bucket
        with ``value_us`` are left out, so the answer is never too high.
        """
        first = bucket_index(value_us) + 1
        return sum(self._counts[first:]) + self._overflow

    def percentile(self, percentile: float) -> int | None:
        """The value at ``percentile`` (0-100), or None when empty (see module docstring)."""
        return self.percentiles([percentile])[0]

    def percentiles(self, percentiles: Iterable[float]) -> list[int | None]:
        """Several percentiles in one pass over the counters."""
        wanted = list(percentiles)
        for p in wanted:
            if not 0.0 <= p <= 100.0:
                raise ValueError(f"a percentile is between 0 and 100, not {p}")
        count = self.count
        if not count:
            return [None] * len(wanted)
        cumulative = list(accumulate(self._counts))
        low, high = int(self._min), self._max
        result: list[int | None] = []
        for p in wanted:
            rank = max(1, math.ceil(round(p * count / 100.0, _RANK_DECIMALS)))
            index = bisect_left(cumulative, rank)
            value = high if index >= _BUCKETS else bucket_highest(index)
            result.append(min(max(value, low), high))
        return result

    # ------------------------------------------------------------- for displays

    def percentile_rows(
        self, percentiles: Iterable[float] = DEFAULT_PERCENTILES
    ) -> list[tuple[str, float, int | None]]:
        """Rows of (label, percentile, value in µs) for a percentile table."""
        wanted = list(percentiles)
        return list(
            zip(map(percentile_label, wanted), wanted, self.percentiles(wanted), strict=True)
        )

    def distribution(self, bins: int = 20) -> list[Bin]:
        """A coarse histogram for drawing: at most ``bins`` log-spaced bars from min to max.

        Bar edges are geometric, so a long tail and a tight body both stay visible, and
        snapped to bucket boundaries, so every count lands in exactly the bar that holds its
        values (overflow in the last bar). Narrow ranges give fewer bars.
        """
        if bins < 1:
            raise ValueError("a distribution needs at least one bin")
        if self._max < 0:
            return []
        low, high = int(self._min), self._max
        ratio = (high / max(1, low)) ** (1.0 / bins)
        edges = [low]  # edges[i] is the lowest value of bar i
        for i in range(1, bins):
            edge = bucket_lowest(bucket_index(math.ceil(max(1, low) * ratio**i)))
            if edge > high:
                break
            if edge > edges[-1]:
                edges.append(edge)
        totals = [0] * len(edges)
        for index, n in enumerate(self._counts):
            if n:
                totals[bisect_right(edges, max(bucket_lowest(index), low)) - 1] += n
        totals[-1] += self._overflow
        highs = [edge - 1 for edge in edges[1:]] + [high]
        return [Bin(edges[i], highs[i], totals[i]) for i in range(len(edges))]

    # ------------------------------------------------------------- serialisation

    def to_dict(self) -> dict[str, Any]:
        """A compact JSON-able form: non-empty buckets as [lowest value µs, count] pairs."""
        empty = self._max < 0
        return {
            "unit": "us",
            "layout": dict(_LAYOUT),
            "count": self.count,
            "min": None if empty else int(self._min),
            "max": None if empty else self._max,
            "sum": self._sum,
            "overflow": self._overflow,
            "buckets": [[bucket_lowest(i), n] for i, n in enumerate(self._counts) if n],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Histogram:
        """Rebuild a histogram written by ``to_dict``; ValueError says what is wrong."""
        if not isinstance(data, Mapping):
            raise ValueError("a histogram must be a JSON object")
        if data.get("layout") != _LAYOUT:
            raise ValueError(f"histogram layout {data.get('layout')!r} is not {_LAYOUT!r}")
        hist = cls()
        try:
            buckets = data["buckets"]
            if not isinstance(buckets, list) or not all(
                isinstance(pair, list) and len(pair) == 2 for pair in buckets
            ):
                raise TypeError("buckets must be a list of [lowest value, count] pairs")
            for lowest, n in buckets:
                index = bucket_index(_natural(lowest, "bucket value"))
                if index >= _BUCKETS or bucket_lowest(index) != lowest:
                    raise ValueError(f"{lowest} is not the lowest value of a bucket")
                hist._counts[index] += _natural(n, "bucket count")
            hist._overflow = _natural(data["overflow"], "overflow")
            hist._sum = _natural(data["sum"], "sum")
            low, high = data["min"], data["max"]
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed histogram: {exc}") from exc
        if hist.count != data.get("count"):
            raise ValueError(f"histogram count {data.get('count')!r} != {hist.count} counted")
        if hist.count:
            hist._min = _natural(low, "min")
            hist._max = _natural(high, "max")
            if hist._min > hist._max:
                raise ValueError("histogram min is above its max")
        return hist

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Histogram):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<Histogram count={self.count} min={self.min} max={self.max}>"


def _natural(value: Any, what: str) -> int:
    """``value`` if it is a non-negative int (not a bool), else ValueError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"histogram {what} must be a non-negative integer, not {value!r}")
    return value
