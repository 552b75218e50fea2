"""What bench's coordinator and its worker processes say to each other over their pipe.

One frozen class per kind of message, so that both ends agree on the fields by
construction (and mypy checks them) instead of by matching string tags and dict keys.
They travel pickled through a ``multiprocessing`` pipe, hence plain dataclasses.

The conversation, per worker::

    worker -> coordinator   Connected            its clients are logged in
    coordinator -> worker   Start                one start time for every worker
    worker -> coordinator   WorkerProgress ...   a few times a second
    worker -> coordinator   WorkerResult         figures and delivery logs, at the end
    worker -> coordinator   WorkerFailed         instead of any of the above, on a crash
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from chatcli.bench.accounting import ClientLog
from chatcli.bench.histogram import Histogram

__all__ = [
    "Connected",
    "CoordinatorMessage",
    "Start",
    "WorkerFailed",
    "WorkerMessage",
    "WorkerProgress",
    "WorkerResult",
]


@dataclass(frozen=True)
class Connected:
    """The worker's clients are connected and logged in (or have failed to)."""

    connected: int
    failures: int
    #: why the worker's first failed connection failed (None: none failed)
    first_failure: str | None = None
    #: clients logged in, per relay (by its place in the list of targets)
    per_target: tuple[int, ...] = ()


@dataclass(frozen=True)
class Start:
    """Start the load at ``at`` (seconds on the machine-wide monotonic clock)."""

    at: float


@dataclass(frozen=True)
class WorkerProgress:
    """Running totals for the live view; ``p99_us`` over the latencies since the last one."""

    sent: int
    received: int
    acked: int
    errors: int
    connected: int
    p99_us: int | None


@dataclass(frozen=True)
class WorkerResult:
    """Everything a worker measured, sent once after it drained."""

    sent: int
    sent_in_window: int
    skipped: int
    acked: int
    received: int
    errors: int
    disconnects: int
    connect_failures: int
    #: CPU and wall seconds while generating load (the drain excluded)
    cpu_s: float
    wall_s: float
    #: latency, uncorrected, connect and lag
    histograms: dict[str, Histogram]
    logs: list[ClientLog]
    error_codes: dict[str, int] = field(default_factory=dict)
    #: per-second samples (chatcli.bench.sampling.WorkerSampler rows)
    timeline: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class WorkerFailed:
    """The worker crashed; ``reason`` is one line for the user."""

    reason: str


WorkerMessage = Connected | WorkerProgress | WorkerResult | WorkerFailed
CoordinatorMessage = Start
