"""Sampling a run second by second, for the per-second series of chatcli.bench.timeline.

``WorkerSampler`` runs inside each load-generator process and reads its counters at
every whole second of the run; ``RelaySampler`` runs in the coordinator and reads the
relay's CPU time and memory. Both only record: merging is ``build_timeline``'s job.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Mapping
from typing import Any, Final, Protocol

import psutil

from chatcli.bench.accounting import ClientLog
from chatcli.bench.histogram import US_PER_S, Histogram
from chatcli.bench.timeline import DECIMALS

__all__ = ["RelaySampler", "WorkerSampler"]

#: a worker's last sample closer than this (s) to its previous one replaces it, so no
#: interval is a sliver whose rates would be noise
MIN_LAST_INTERVAL_S: Final = 0.25


class _Client(Protocol):
    live: bool


class _Worker(Protocol):
    """What WorkerSampler reads from a worker (chatcli.bench.worker.Worker)."""

    sent: int
    acked: int
    received: int
    errors: int
    disconnects: int
    connect_failures: int
    latency: Histogram

    @property
    def clients(self) -> Mapping[int, _Client]: ...

    @property
    def logs(self) -> Mapping[int, ClientLog]: ...

    def fold(self) -> None: ...


class WorkerSampler:
    """One worker's samples: cumulative counters and each interval's new latencies.

    ``rows`` go back to the coordinator in the worker's result; ``build_timeline``
    merges them. A sample costs one pass over the latency histogram and the clients.
    """

    def __init__(self, start_us: int, clock_us: Callable[[], int]) -> None:
        self.start_us = start_us
        self.clock_us = clock_us
        self.rows: list[dict[str, Any]] = []
        self._seen: dict[int, int] = {}

    def sample(self, worker: _Worker, index: int | None = None) -> None:
        """Record the worker's counters now, as interval ``index`` (default: the current)."""
        worker.fold()
        now = self.clock_us()
        t = (now - self.start_us) / US_PER_S
        if index is None:  # the last sample: a sliver after the previous one joins it
            index = max(1, math.ceil(t - MIN_LAST_INTERVAL_S))
        fresh: dict[int, int] = {}
        if self.rows and self.rows[-1]["i"] >= index:  # replaced: keep its latencies
            fresh = {lowest: n for lowest, n in self.rows.pop()["latency"]}
        for lowest, n in worker.latency.to_dict()["buckets"]:
            seen = self._seen.get(lowest, 0)
            if n > seen:
                fresh[lowest] = fresh.get(lowest, 0) + n - seen
                self._seen[lowest] = n
        logs = worker.logs.values()
        self.rows.append(
            {
                "i": index,
                "t": round(t, DECIMALS),
                "sent": worker.sent,
                "acked": worker.acked,
                "deliveries": worker.received,
                "errors": worker.errors + worker.disconnects + worker.connect_failures,
                "duplicated": sum(log.duplicated for log in logs),
                "reordered": sum(log.reordered for log in logs),
                "unacked": worker.sent - worker.acked,
                "connected": sum(1 for c in worker.clients.values() if c.live),
                "latency": [[lowest, n] for lowest, n in sorted(fresh.items())],
            }
        )

    async def run(self, worker: _Worker) -> None:
        """Sample at every whole second of the run until cancelled."""
        index = 1
        while True:
            due = self.start_us + index * US_PER_S
            await asyncio.sleep(max(0.0, (due - self.clock_us()) / US_PER_S))
            self.sample(worker, index)
            index += 1


class _Relay(Protocol):
    def sample(self) -> None: ...
    def cpu_seconds(self) -> float: ...
    def rss(self) -> int: ...


class RelaySampler:
    """The relay's CPU share and memory at each whole second of the run.

    ``tick`` is called often (whenever the coordinator waits on its workers); it keeps
    the relay's peak memory up to date and records a point when a second has passed.
    """

    def __init__(self, relay: _Relay, clock: Callable[[], float] = time.monotonic) -> None:
        self.relay = relay
        self.clock = clock
        self.start: float | None = None
        #: (interval the point ends, t, CPU seconds, resident bytes); interval 0: the start
        self.points: list[tuple[int, float, float, int]] = []
        self._next = 0

    def begin(self, start: float) -> None:
        """Count seconds from ``start`` (the common start of the load)."""
        self.start = start

    def tick(self) -> None:
        """Sample the relay's peak memory; record a point once per second of the run."""
        self.relay.sample()
        if self.start is None:
            return
        t = self.clock() - self.start
        if t < self._next:
            return
        try:
            point = (math.floor(t), t, self.relay.cpu_seconds(), self.relay.rss())
        except psutil.Error:  # the relay just exited: a gap in the chart, never invented
            return
        self.points.append(point)
        self._next = point[0] + 1

    def series(self, intervals: int) -> tuple[list[float | None], list[float | None]]:
        """CPU % of one core and resident MiB for intervals 1..``intervals``."""
        cpu: list[float | None] = [None] * intervals
        rss: list[float | None] = [None] * intervals
        for (_, t0, cpu0, _), (k, t1, cpu1, rss1) in zip(
            self.points, self.points[1:], strict=False
        ):
            if 1 <= k <= intervals and t1 > t0:
                cpu[k - 1] = round(max(0.0, 100.0 * (cpu1 - cpu0) / (t1 - t0)), DECIMALS)
                rss[k - 1] = round(rss1 / (1 << 20), DECIMALS)
        return cpu, rss
