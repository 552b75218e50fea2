"""The one table of every figure ``chatcli bench`` reports.

A run ends as a flat dict of metric name -> number (None when the run could not measure
it, e.g. the relay's CPU when bench did not start the relay). Thresholds, the baseline
comparison, the ``--json`` report and the summary table all read names, units and
directions from ``METRICS`` here, so a new figure is added in one place.

Latencies are in milliseconds. ``p50 .. mean`` are measured from each message's PLANNED
send time (coordinated-omission-safe, like wrk2); ``uncorrected_*`` from the moment it was
actually written, which hides a generator or relay stall and is shown only beside them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Literal

from chatcli.bench.histogram import US_PER_MS, Histogram

__all__ = [
    "HISTOGRAMS",
    "LATENCY_STATS",
    "METRICS",
    "UNIT_SUFFIXES",
    "Better",
    "HistogramFamily",
    "Metric",
    "finite_or_none",
    "format_metric",
    "histogram_metrics",
]

Better = Literal["lower", "higher"]

LATENCY_NOISE_MS: Final = 0.5
"""Latency changes smaller than this are scheduling jitter, not regressions."""
CPU_NOISE_S: Final = 0.02
"""Two 10 ms clock ticks: the resolution of process CPU time."""
RSS_NOISE_MIB: Final = 1.0
"""Allocator and page-granularity jitter in a process's resident memory."""
PER_CONN_NOISE_KIB: Final = 0.5
"""Jitter of resident memory divided by thousands of connections."""


@dataclass(frozen=True)
class Metric:
    """One reported figure.

    ``better`` says which way is good ("lower" latency, "higher" throughput), or None for
    figures that merely describe the run (its size is set by the parameters) and are never
    compared with a baseline. ``noise`` is an absolute change in ``unit`` too small to
    count as a regression, whatever the relative tolerance.
    """

    name: str
    unit: str
    description: str
    better: Better | None
    noise: float = 0.0


@dataclass(frozen=True)
class HistogramFamily:
    """A histogram the run keeps, and the prefix of the metrics derived from it."""

    key: str
    prefix: str
    description: str


HISTOGRAMS: Final = (
    HistogramFamily("latency", "", "latency from the planned send time to each arrival"),
    HistogramFamily("uncorrected", "uncorrected_", "latency from the actual send to each arrival"),
    HistogramFamily("connect", "connect_", "time from starting to connect to ready"),
    HistogramFamily("lag", "lag_", "schedule lag: how late each send left after its plan"),
)

LATENCY_STATS: Final = (
    ("p50", 50.0),
    ("p90", 90.0),
    ("p99", 99.0),
    ("p999", 99.9),
    ("max", 100.0),
    ("mean", None),
)
"""The statistics derived from each histogram: (suffix, percentile or None for the mean)."""


def _histogram_metrics() -> list[Metric]:
    rows = []
    for family in HISTOGRAMS:
        for stat, percentile in LATENCY_STATS:
            what = "mean" if percentile is None else f"{percentile:g}th percentile"
            if percentile == 100.0:
                what = "maximum"
            rows.append(
                Metric(
                    f"{family.prefix}{stat}",
                    "ms",
                    f"{what} of the {family.description}",
                    "lower",
                    LATENCY_NOISE_MS,
                )
            )
    return rows


_METRICS: Final = [
    *_histogram_metrics(),
    Metric(
        "p99_1s_median",
        "ms",
        "median of the one-second p99s (a noisy phase of a few seconds moves it less than p99)",
        "lower",
        LATENCY_NOISE_MS,
    ),
    Metric("deliveries_per_s", "msg/s", "messages delivered to receivers per second", "higher"),
    Metric("sent_per_s", "msg/s", "messages actually sent per second", None),
    Metric("offered_per_s", "msg/s", "messages the schedule planned per second", None),
    Metric("sent", "count", "messages sent in the measured window", None),
    Metric("expected", "count", "deliveries owed: each message to each other room member", None),
    Metric("received", "count", "expected deliveries that arrived (first copy only)", None),
    Metric("lost", "count", "expected deliveries that never arrived, plus unacked sends", "lower"),
    Metric("loss", "fraction", "lost / expected", "lower"),
    Metric("unacked", "count", "sends whose ack (the sender's own copy) never came back", "lower"),
    Metric("duplicated", "count", "extra copies of a message at one receiver", "lower"),
    Metric("reordered", "count", "arrivals after a later message from the same sender", "lower"),
    Metric("unexpected", "count", "arrivals at a client that was not in the room", "lower"),
    # several --target relays (a cluster's nodes): the part of expected/received that
    # crossed from one relay to another (sender's client and receiver's on different ones)
    Metric(
        "cross_node_expected", "count", "expected deliveries from a sender on another relay", None
    ),
    Metric("cross_node", "count", "received deliveries from a sender on another relay", None),
    Metric("errors", "count", "error frames, failed connects and dropped connections", "lower"),
    Metric("connected", "count", "clients that logged in", None),
    Metric("duration_s", "s", "length of the measured window", None),
    Metric(
        "relay_cpu_s", "s", "CPU time the relay used (when bench started it)", "lower", CPU_NOISE_S
    ),
    Metric("relay_cpu_us_per_delivery", "us", "relay CPU time per delivery", "lower"),
    Metric("relay_rss_mb", "MiB", "peak resident memory of the relay", "lower", RSS_NOISE_MIB),
    Metric(
        "relay_mem_per_conn_kb",
        "KiB",
        "relay memory per connection (idle scenario)",
        "lower",
        PER_CONN_NOISE_KIB,
    ),
    Metric("generator_cpu_pct", "%", "CPU the load generator used (100 = one core)", None),
    # the draw mix (--draw-clients), over the whole run, warm-up included
    Metric("draw_clients", "count", "drawing WebSocket clients that logged in", None),
    Metric("draws_sent", "count", "board draws the drawing clients sent", None),
    Metric("draws_acked", "count", "draws whose own echo came back", None),
    Metric("draw_errors", "count", "error frames and failed logins of drawing clients", "lower"),
]

METRICS: Final[Mapping[str, Metric]] = MappingProxyType({m.name: m for m in _METRICS})
"""Every metric bench reports, in display order."""

_TIME: Final = {"us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000}  # in ns
_BYTES: Final = {
    "B": 1,
    "KB": 1 << 10,
    "KiB": 1 << 10,
    "MB": 1 << 20,
    "MiB": 1 << 20,
    "GB": 1 << 30,
    "GiB": 1 << 30,
}


def _scaled(table: Mapping[str, int], canonical: str) -> dict[str, float]:
    """Suffix -> factor that converts a number with that suffix into ``canonical``."""
    return {"": 1.0, **{suffix: factor / table[canonical] for suffix, factor in table.items()}}


UNIT_SUFFIXES: Final[Mapping[str, Mapping[str, float]]] = MappingProxyType(
    {
        "ms": _scaled(_TIME, "ms"),
        "us": _scaled(_TIME, "us"),
        "s": _scaled(_TIME, "s"),
        "MiB": _scaled(_BYTES, "MiB"),
        "KiB": _scaled(_BYTES, "KiB"),
        "fraction": {"": 1.0, "%": 0.01},
        "%": {"": 1.0, "%": 1.0},
        "msg/s": {"": 1.0, "/s": 1.0},
        "count": {"": 1.0},
    }
)
"""Per metric unit: the suffixes a threshold may use and their factor to that unit.

A bare number is in the metric's own unit (milliseconds for latency, as in k6). Sizes
are binary: KB and KiB both mean 1024 bytes.
"""


def finite_or_none(value: float | None) -> float | None:
    """A metric value as a float, or None when it is missing, NaN or infinite."""
    return float(value) if value is not None and math.isfinite(value) else None


def histogram_metrics(hist: Histogram, prefix: str = "") -> dict[str, float | None]:
    """The ``LATENCY_STATS`` of one histogram as metrics in ms (None when it is empty)."""
    percentiles = [p for _, p in LATENCY_STATS if p is not None]
    values = dict(zip(percentiles, hist.percentiles(percentiles), strict=True))
    mean = hist.mean
    out: dict[str, float | None] = {}
    for stat, percentile in LATENCY_STATS:
        us = mean if percentile is None else values[percentile]
        out[f"{prefix}{stat}"] = None if us is None else us / US_PER_MS
    return out


def format_metric(name: str, value: float | None) -> str:
    """A metric's value for people: ``12.3 ms``, ``0.1%``, ``412,345 msg/s``, ``-``."""
    if value is None or not math.isfinite(value):
        return "-"
    unit = METRICS[name].unit
    if unit == "fraction":
        return f"{value * 100:.3g}%"
    if unit == "count":
        return f"{value:,.0f}"
    if unit == "%":
        return f"{value:.1f}%"
    if unit == "msg/s":
        return f"{value:,.0f} msg/s"
    if abs(value) >= 100:
        return f"{value:,.0f} {unit}"
    return f"{value:.3g} {unit}"
