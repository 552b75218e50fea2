"""Per-second series of a bench run: what the HTML report's charts draw.

A run's totals say how it ended; the series say how it went. Each worker samples its
counters at every whole second of the run (counted from the common start, on the clock
every process shares) and once more when it has drained, with the latencies recorded
since the previous sample; the coordinator merges the workers' samples second by second,
adds the schedule's planned sends, the relay's CPU and memory (when bench started the
relay) and the loss of the messages planned in each second, and stores the result in the
report's ``timeline`` field (documented in docs/bench-report.md).

Interval ``k`` (1-based) covers run time ``(k - 1, k]`` seconds, warm-up included; the last
one ends when the workers finished draining. Counts are per interval, gauges (``unacked``,
``connected``) are read at its end. Latency percentiles are by arrival time, loss by
planned send time (a message owed but never delivered has no arrival).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from chatcli.bench.accounting import ClientLog, account
from chatcli.bench.histogram import US_PER_MS, Histogram, bucket_highest, bucket_index
from chatcli.bench.schedule import Schedule

__all__ = [
    "COUNTERS",
    "DECIMALS",
    "GAUGES",
    "P99_MIN_ARRIVALS",
    "SERIES",
    "Timeline",
    "build_timeline",
    "lost_per_interval",
    "planned_per_interval",
]

INTERVAL_S: Final = 1.0
#: the most intervals whose loss is accounted one by one (see lost_per_interval)
MAX_LOSS_INTERVALS: Final = 60
#: the fewest measured arrivals an interval needs for its p99 to count in median_p99
P99_MIN_ARRIVALS: Final = 100
#: decimals kept of times (s), latencies (ms), CPU (%) and memory (MiB) in the series
DECIMALS: Final = 3

COUNTERS: Final = ("sent", "acked", "deliveries", "errors", "duplicated", "reordered")
"""Worker counters sampled cumulatively and reported per interval."""
GAUGES: Final = ("unacked", "connected")
"""Worker figures read at the end of each interval."""
LATENCY_SERIES: Final = ("latency_count", "p50_ms", "p90_ms", "p99_ms", "max_ms")
SERIES: Final = (
    "planned",
    *COUNTERS,
    "lost",
    *GAUGES,
    *LATENCY_SERIES,
    "relay_cpu_pct",
    "relay_rss_mb",
)
"""Every series a timeline may hold, in the order docs/bench-report.md lists them."""

_LAYOUT: Final = Histogram().to_dict()["layout"]


def planned_per_interval(
    clients: int,
    *,
    rate: float,
    seconds: float,
    arrivals: str,
    seed: int,
    intervals: int,
) -> list[float | None]:
    """Messages the open-loop schedule planned in each interval (the same Schedule the
    workers send from, for every client, so it is exact)."""
    schedule = Schedule(
        range(clients),
        rate=rate,
        duration=seconds,
        arrivals=arrivals,  # type: ignore[arg-type]
        seed=seed,
        total_clients=clients,
    )
    return [
        float(len(schedule.due(math.nextafter(float(k), -math.inf))))
        for k in range(1, intervals + 1)
    ]


def lost_per_interval(
    logs: Sequence[ClientLog],
    *,
    start: float,
    since: float,
    until: float,
    intervals: int,
    in_flight: float,
    total_lost: int,
) -> list[float | None] | None:
    """Deliveries lost of the messages planned in each interval of the measured window.

    The intervals partition the window, so the values add up to the run's ``lost``; a
    run that lost nothing needs no per-interval accounting (None outside the window).
    Each interval with loss costs one ``account`` pass (about 0.5 s for 200 clients in
    one room), so a lossy run of more than MAX_LOSS_INTERVALS intervals gets None.
    """
    if total_lost and intervals > MAX_LOSS_INTERVALS:
        return None
    out: list[float | None] = []
    for k in range(1, intervals + 1):
        lo, hi = max(since, start + k - 1), min(until, start + k)
        if lo >= hi:
            out.append(None)
        elif not total_lost:
            out.append(0.0)
        else:
            counts = account(logs, since=lo, until=hi, in_flight=in_flight, max_examples=0)
            out.append(float(counts.lost))
    return out


def _interval_latency(buckets: Mapping[int, int]) -> Histogram | None:
    """A histogram of one interval's new latencies (bucket resolution: within 0.4 %)."""
    if not buckets:
        return None
    pairs = sorted(buckets.items())
    return Histogram.from_dict(
        {
            "unit": "us",
            "layout": _LAYOUT,
            "count": sum(n for _, n in pairs),
            "min": pairs[0][0],
            "max": bucket_highest(bucket_index(pairs[-1][0])),
            "sum": sum(lowest * n for lowest, n in pairs),
            "overflow": 0,
            "buckets": [[lowest, n] for lowest, n in pairs],
        }
    )


def _at_or_before(rows: Sequence[Mapping[str, Any]], index: int) -> Mapping[str, Any] | None:
    """The last of a worker's rows whose interval is ``index`` or earlier."""
    found = None
    for row in rows:
        if row["i"] > index:
            break
        found = row
    return found


@dataclass
class Timeline:
    """The per-interval series of one run (see the module docstring and the schema doc)."""

    t: list[float]
    series: dict[str, list[float | None] | None]
    interval_s: float = INTERVAL_S
    measure_from_s: float = 0.0
    measure_until_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def get(self, name: str) -> list[float | None] | None:
        """A series by name, or None when the run did not measure it."""
        return self.series.get(name)

    def rate(self, name: str) -> list[float | None] | None:
        """A count series divided by each interval's length: per second."""
        values = self.series.get(name)
        if values is None:
            return None
        out: list[float | None] = []
        previous = 0.0
        for t, v in zip(self.t, values, strict=True):
            span = t - previous
            out.append(None if v is None or span <= 0 else v / span)
            previous = t
        return out

    def median_p99(self) -> float | None:
        """The median of the one-second p99s, over the intervals with enough arrivals.

        A run's p99 is decided by its worst moments: on a shared machine, one noisy phase
        of a few seconds sets it. The middle of the per-second p99s is what the relay did
        most of the time, so a noise phase moves it far less (docs/benchmarks.md, "Issue
        10, session 20"). An interval counts when it holds at least
        ``P99_MIN_ARRIVALS`` measured arrivals (fewer make its p99 its maximum); None
        when none does.
        """
        counts, p99s = self.series.get("latency_count"), self.series.get("p99_ms")
        if counts is None or p99s is None:
            return None
        kept = [
            p99
            for count, p99 in zip(counts, p99s, strict=True)
            if count is not None and count >= P99_MIN_ARRIVALS and p99 is not None
        ]
        return round(statistics.median(kept), DECIMALS) if kept else None

    def to_dict(self) -> dict[str, Any]:
        """The report's ``timeline`` object."""
        return {
            **self.extra,
            "interval_s": self.interval_s,
            "measure_from_s": self.measure_from_s,
            "measure_until_s": self.measure_until_s,
            "t": list(self.t),
            **{name: (None if v is None else list(v)) for name, v in self.series.items()},
        }

    @classmethod
    def from_dict(cls, data: Any) -> Timeline:
        """Read a ``timeline`` object; ValueError says what is wrong with it."""
        if not isinstance(data, dict):
            raise ValueError("timeline must be a JSON object")
        t = data.get("t")
        if not isinstance(t, list) or not all(_is_number(v) for v in t):
            raise ValueError("timeline.t must be a list of numbers")
        series: dict[str, list[float | None] | None] = {}
        for name in SERIES:
            values = data.get(name)
            if values is None:
                if name in data:
                    series[name] = None
                continue
            if not isinstance(values, list) or len(values) != len(t):
                raise ValueError(f"timeline.{name} must be a list as long as timeline.t")
            if not all(v is None or _is_number(v) for v in values):
                raise ValueError(f"timeline.{name} must hold numbers or nulls")
            series[name] = [None if v is None else float(v) for v in values]
        scalars = {}
        for key in ("interval_s", "measure_from_s", "measure_until_s"):
            value = data.get(key, 0.0)
            if not _is_number(value):
                raise ValueError(f"timeline.{key} must be a number")
            scalars[key] = float(value)
        known = {"t", *SERIES, *scalars}
        return cls(
            t=[float(v) for v in t],
            series=series,
            extra={k: v for k, v in data.items() if k not in known},
            **scalars,
        )


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def build_timeline(
    worker_rows: Iterable[Sequence[Mapping[str, Any]]],
    *,
    warmup: float,
    duration: float,
    planned: Callable[[int], list[float | None]] | None = None,
    lost: Callable[[int], list[float | None] | None] | None = None,
    relay: Callable[[int], tuple[list[float | None], list[float | None]]] | None = None,
) -> Timeline:
    """Merge the workers' samples into one Timeline.

    Counters are summed across workers (a worker with no sample for an interval counts
    with its latest earlier one); latencies are merged per interval. ``planned``,
    ``lost`` and ``relay`` add the series the coordinator knows, given the number of
    intervals.
    """
    workers = [list(rows) for rows in worker_rows]
    intervals = max((row["i"] for rows in workers for row in rows), default=0)
    t: list[float] = []
    series: dict[str, list[float | None] | None] = {
        name: [] for name in (*COUNTERS, *GAUGES, *LATENCY_SERIES)
    }
    before = {name: 0.0 for name in COUNTERS}
    for k in range(1, intervals + 1):
        now = {name: 0.0 for name in (*COUNTERS, *GAUGES)}
        buckets: dict[int, int] = {}
        ends = []
        for rows in workers:
            row = _at_or_before(rows, k)
            if row is None:
                continue
            for name in now:
                now[name] += row[name]
            if row["i"] == k:
                ends.append(row["t"])
                for lowest, n in row["latency"]:
                    buckets[lowest] = buckets.get(lowest, 0) + n
        t.append(round(max(ends), DECIMALS) if ends else float(k))
        for name in COUNTERS:
            _append(series, name, now[name] - before[name])
            before[name] = now[name]
        for name in GAUGES:
            _append(series, name, now[name])
        hist = _interval_latency(buckets)
        _append(series, "latency_count", float(hist.count) if hist else 0.0)
        values = hist.percentiles([50, 90, 99, 100]) if hist else [None] * 4
        for name, us in zip(("p50_ms", "p90_ms", "p99_ms", "max_ms"), values, strict=True):
            _append(series, name, None if us is None else round(us / US_PER_MS, DECIMALS))
    series["planned"] = planned(intervals) if planned is not None else None
    series["lost"] = lost(intervals) if lost is not None else None
    if relay is not None:
        series["relay_cpu_pct"], series["relay_rss_mb"] = relay(intervals)
    else:
        series["relay_cpu_pct"] = series["relay_rss_mb"] = None
    ordered = {name: series.get(name) for name in SERIES}
    return Timeline(t=t, series=ordered, measure_from_s=warmup, measure_until_s=warmup + duration)


def _append(series: dict[str, list[float | None] | None], name: str, value: float | None) -> None:
    values = series[name]
    assert values is not None
    values.append(value)
