"""Run a benchmark: relay (own or ``--target``), worker processes, figures, verdict.

The coordinator starts the relay under test (unless given a target), spreads the
simulated clients over ``--workers`` processes, waits until every client is logged in,
gives all workers one start time, collects their progress for the live view, and at the
end merges histograms and delivery logs into one BenchReport with every figure, the
validity of the run, the thresholds and the baseline comparison.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection, wait
from types import FrameType
from typing import Any, TypeVar, cast

from chatcli.addresses import format_address
from chatcli.bench.accounting import account
from chatcli.bench.baseline import compare_reports
from chatcli.bench.draw import DrawLoad, DrawResult, DrawSpec
from chatcli.bench.histogram import Histogram
from chatcli.bench.messages import (
    Connected,
    CoordinatorMessage,
    Start,
    WorkerFailed,
    WorkerMessage,
    WorkerProgress,
    WorkerResult,
)
from chatcli.bench.metrics import histogram_metrics
from chatcli.bench.relay_process import RelayProcess
from chatcli.bench.report_schema import BenchReport, environment_info
from chatcli.bench.sampling import RelaySampler
from chatcli.bench.schedule import split_clients
from chatcli.bench.thresholds import Threshold, evaluate
from chatcli.bench.timeline import (
    Timeline,
    build_timeline,
    lost_per_interval,
    planned_per_interval,
)
from chatcli.bench.worker import WorkerSpec, target_of, worker_main
from chatcli.errors import ChatError, UsageError
from chatcli.tls import ClientTls

__all__ = [
    "SCENARIOS",
    "BenchOptions",
    "Progress",
    "TargetUnreachable",
    "run_bench",
    "target_rows",
]

M = TypeVar("M", Connected, WorkerResult)

SCENARIOS = ("steady", "churn", "idle", "burst")
#: a worker busier than this share of one core is saturated: its own delays would count
GENERATOR_SATURATED_PCT = 90.0
#: a send this late (ms) is behind schedule; more than LATE_SHARE_TOLERATED of the
#: window's sends (and more than LATE_SENDS_TOLERATED) behind schedule invalidate a run
MAX_LAG_MS = 10.0
LATE_SHARE_TOLERATED = 0.01
LATE_SENDS_TOLERATED = 2
#: seconds allowed per client to connect, on top of the ramp, before giving up
CONNECT_GRACE = 30.0
#: seconds the idle scenario lets the relay settle before reading its memory
IDLE_SETTLE = 1.0
#: seconds a message may be in flight towards a client that has just joined its room
IN_FLIGHT_S = 0.5


class TargetUnreachable(ChatError):
    """No client reached the relay: the run could not happen (exit 3, invalid, not 1)."""


@dataclass(frozen=True)
class BenchOptions:
    """Everything that shapes a run (all of it goes into the report's params)."""

    clients: int = 50
    rooms: int = 1
    rate: float = 10.0
    duration: float = 10.0
    warmup: float = 2.0
    size: int = 64
    spawn_rate: float | None = 1000.0
    seed: int = 1
    arrivals: str = "constant"
    closed: bool = False
    workers: int = 1
    scenario: str = "steady"
    #: relays to benchmark (``--target``; several: a cluster's nodes, the clients spread
    #: round-robin over them); none: bench starts its own
    targets: tuple[tuple[str, int], ...] = ()
    name_prefix: str = "bench"
    relay_args: tuple[str, ...] = ()
    thresholds: tuple[Threshold, ...] = field(default=())
    baseline: BenchReport | None = None
    max_regression: float = 0.10
    #: speak TLS: to --target, verified as this says; bench's own relay gets a
    #: throwaway certificate that its clients verify (so only a bare ClientTls() fits it)
    tls: ClientTls | None = None
    #: the draw mix: WebSocket clients drawing in the first room (chatcli.bench.draw)
    draw_clients: int = 0
    #: draws per second per drawing client
    draw_rate: float = 5.0
    #: the web port (``serve --web``) of a --target relay, for the drawing clients
    draw_target: tuple[str, int] | None = None

    @property
    def target(self) -> tuple[str, int] | None:
        """The first --target relay (None: bench starts its own)."""
        return self.targets[0] if self.targets else None

    def check(self) -> None:
        """Refuse combinations that cannot produce a meaningful run."""
        if self.clients < 1:
            raise UsageError("--clients must be at least 1")
        if not 1 <= self.rooms <= self.clients:
            raise UsageError("--rooms must be between 1 and --clients")
        if self.workers < 1 or self.workers > self.clients:
            raise UsageError("--workers must be between 1 and --clients")
        if self.duration <= 0 or self.warmup < 0:
            raise UsageError("--duration must be positive and --warmup not negative")
        if self.scenario == "burst" and self.arrivals != "constant":
            raise UsageError("--scenario burst sends in bursts: it takes no --arrivals")
        if self.closed and self.scenario in ("churn", "burst"):
            raise UsageError(f"--closed does not combine with --scenario {self.scenario}")
        if self.scenario not in SCENARIOS:
            raise UsageError(f"--scenario must be one of {', '.join(SCENARIOS)}")
        if self.target is None and self.tls is not None and self.tls != ClientTls():
            raise UsageError(
                "--ca and --insecure go with --target: the relay bench starts gets a "
                "throwaway certificate that its clients trust"
            )
        if self.draw_clients < 0 or self.draw_rate <= 0:
            raise UsageError("--draw-clients must not be negative and --draw-rate positive")
        if self.draw_clients and self.target is not None and self.draw_target is None:
            raise UsageError("--draw-clients with --target needs --draw-target (its web port)")

    def params(self) -> dict[str, Any]:
        """The parameters as written to the JSON report."""
        data = asdict(self)
        for key in ("thresholds", "baseline", "max_regression"):
            data.pop(key)
        data["target"] = ",".join(format_address(*t) for t in self.targets) or None
        del data["targets"]  # one relay: as in reports older than several targets
        if len(self.targets) > 1:
            data["targets"] = [format_address(*t) for t in self.targets]
        data["draw_target"] = format_address(*self.draw_target) if self.draw_target else None
        data["relay_args"] = list(self.relay_args)
        if self.tls is None:
            del data["tls"]  # plaintext runs keep comparing with baselines older than TLS
        elif self.target is None:
            data["tls"] = "verified against a throwaway certificate"
        else:
            data["tls"] = self.tls.describe()
        return data


@dataclass
class Progress:
    """What the live view shows, updated a few times a second."""

    phase: str = "starting"
    elapsed: float = 0.0
    total: float = 0.0
    connected: int = 0
    clients: int = 0
    sent: int = 0
    received: int = 0
    errors: int = 0
    sent_per_s: float = 0.0
    delivered_per_s: float = 0.0
    p99_ms: float | None = None


View = Callable[[Progress], None]

#: set by ``interrupted``, bench's SIGINT handler, and looked at while the run waits for
#: its workers: a Ctrl-C whose KeyboardInterrupt CPython dropped (raised inside a
#: finalizer, it is only reported as "Exception ignored") still stops the run
INTERRUPTED = threading.Event()


def interrupted(signum: int, frame: FrameType | None) -> None:
    """SIGINT during a run: remember it, and raise KeyboardInterrupt as Python would."""
    INTERRUPTED.set()
    raise KeyboardInterrupt


class _Workers:
    """The worker processes and their pipes."""

    def __init__(
        self,
        options: BenchOptions,
        targets: tuple[tuple[str, int], ...],
        tls: ClientTls | None = None,
    ) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.pipes: list[Connection] = []
        self.procs: list[Any] = []
        burst = options.scenario == "burst"
        for share in split_clients(options.clients, options.workers):
            spec = WorkerSpec(
                targets=targets,
                clients=share,
                total_clients=options.clients,
                rooms=options.rooms,
                rate=options.rate,
                duration=options.duration,
                warmup=options.warmup,
                size=options.size,
                arrivals="burst" if burst else options.arrivals,
                seed=options.seed,
                spawn_rate=options.spawn_rate,
                closed=options.closed,
                churn=options.scenario == "churn",
                name_prefix=options.name_prefix,
                tls=tls,
            )
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=worker_main, args=(child, spec), daemon=True)
            proc.start()
            child.close()
            self.pipes.append(parent)
            self.procs.append(proc)

    def collect(
        self,
        kind: type[M],
        timeout: float,
        on_progress: Callable[[int, WorkerProgress], None] | None = None,
        tick: Callable[[], None] | None = None,
    ) -> list[M]:
        """Wait for a ``kind`` message from every worker, passing progress along."""
        results: dict[int, M] = {}
        deadline = time.monotonic() + timeout
        while len(results) < len(self.pipes):
            if INTERRUPTED.is_set():
                raise KeyboardInterrupt
            if time.monotonic() > deadline:
                raise ChatError(f"load generator timed out waiting for '{kind.__name__}'")
            waiting = [p for i, p in enumerate(self.pipes) if i not in results]
            for ready in wait(waiting, timeout=0.25):
                pipe = cast(Connection, ready)
                index = self.pipes.index(pipe)
                try:
                    message: WorkerMessage = pipe.recv()
                except EOFError as exc:
                    if INTERRUPTED.is_set():  # Ctrl-C reached the workers too
                        raise KeyboardInterrupt from None
                    raise ChatError("a load generator process died") from exc
                if isinstance(message, WorkerFailed):
                    raise ChatError(f"load generator failed: {message.reason}")
                if isinstance(message, WorkerProgress):
                    if on_progress is not None:
                        on_progress(index, message)
                elif isinstance(message, kind):
                    results[index] = message
            if tick is not None:
                tick()
        return [results[i] for i in range(len(self.pipes))]

    def send(self, message: CoordinatorMessage) -> None:
        for pipe in self.pipes:
            pipe.send(message)

    def stop(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(OSError):
                pipe.close()
        for proc in self.procs:
            proc.join(timeout=2)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=2)


def run_bench(options: BenchOptions, view: View | None = None) -> BenchReport:
    """Run one benchmark as ``options`` say and return its report."""
    options.check()
    show = view or (lambda progress: None)
    progress = Progress(clients=options.clients, total=options.warmup + options.duration)
    started = datetime.now(UTC).isoformat(timespec="seconds")
    relay: RelayProcess | None = None
    relay_sampler: RelaySampler | None = None
    workers: _Workers | None = None
    draw: DrawLoad | None = None
    draw_result: DrawResult | None = None
    web = options.draw_target
    try:
        if options.target is None:
            progress.phase = "starting relay"
            show(progress)
            relay_args = list(options.relay_args)
            if options.draw_clients:
                web = ("127.0.0.1", free_port())
                relay_args += ["--web", format_address(*web)]
            relay = RelayProcess(relay_args, tls=options.tls is not None)
            targets: tuple[tuple[str, int], ...] = ((relay.host, relay.port),)
            tls = relay.client_tls
            relay_sampler = RelaySampler(relay)
        else:
            targets = options.targets
            tls = options.tls
        rss_before = relay.rss() if relay else None

        progress.phase = "connecting"
        show(progress)
        workers = _Workers(options, targets, tls)
        ramp_time = options.clients / options.spawn_rate if options.spawn_rate else 0.0
        connected = workers.collect(
            Connected, ramp_time + CONNECT_GRACE, tick=relay.sample if relay else None
        )
        progress.connected = sum(c.connected for c in connected)
        connect_failures = sum(c.failures for c in connected)
        per_target = [sum(c.per_target[k] for c in connected) for k in range(len(targets))]
        if not progress.connected:
            why = next((c.first_failure for c in connected if c.first_failure), None)
            where = ", ".join(format_address(*t) for t in targets)
            raise TargetUnreachable(
                f"no client could connect and log in to {where}: "
                "nothing was measured" + (f" (first failure: {why})" if why else "")
            )
        mem_per_conn = None
        if relay is not None and rss_before is not None and progress.connected:
            if options.scenario == "idle":
                time.sleep(IDLE_SETTLE)
            mem_per_conn = (relay.rss() - rss_before) / progress.connected / 1024
            relay.mark_cpu()

        if options.draw_clients and web is not None:
            progress.phase = "drawing clients"
            show(progress)
            draw = DrawLoad(
                DrawSpec(web[0], web[1], options.draw_clients, options.draw_rate, seed=options.seed)
            )
            draw.start()
        start = time.monotonic() + 0.3
        workers.send(Start(at=start))
        if relay_sampler is not None:
            relay_sampler.begin(start)
        progress.phase = "warmup" if options.warmup else "measuring"
        latest: dict[int, WorkerProgress] = {}

        def on_progress(index: int, snap: WorkerProgress) -> None:
            previous = latest.get(index)
            latest[index] = snap
            _update(progress, latest, previous, snap, start, options)
            show(progress)

        results = workers.collect(
            WorkerResult,
            options.warmup + options.duration + 60.0,
            on_progress,
            tick=relay_sampler.tick if relay_sampler else None,
        )
        relay_cpu = relay.cpu_since_mark() if relay else None
        progress.phase = "done"
        show(progress)
    finally:
        if draw is not None:
            draw_result = draw.stop()
        if workers is not None:
            workers.stop()
        if relay is not None:
            relay.stop()

    report = _report(
        options, results, start, started, connect_failures, relay, relay_cpu, mem_per_conn
    )
    if len(targets) > 1:
        report.targets = target_rows(targets, options.clients, per_target)
    if draw_result is not None:
        report.metrics["draw_clients"] = draw_result.connected
        report.metrics["draws_sent"] = draw_result.sent
        report.metrics["draws_acked"] = draw_result.acked
        report.metrics["draw_errors"] = draw_result.errors
    report.timeline = _timeline(
        options, results, start, int(report.metrics["lost"] or 0), relay_sampler
    )
    report.metrics["p99_1s_median"] = report.timeline.median_p99()
    _judge(report, options)
    return report


def _judge(report: BenchReport, options: BenchOptions) -> None:
    """Check the thresholds and the baseline, once every metric is in the report.

    Last, on purpose: the draw mix's figures and the per-second ones are added after the
    chat's, and a threshold on them judged earlier would read "not measured".
    """
    report.thresholds = [r.to_dict() for r in evaluate(options.thresholds, report.metrics)]
    if options.baseline is not None:
        report.baseline = compare_reports(
            report, options.baseline, options.max_regression
        ).to_dict()


def target_rows(
    targets: tuple[tuple[str, int], ...], clients: int, connected: list[int]
) -> list[dict[str, Any]]:
    """The report's per-relay rows: each target, the clients planned on it (round-robin)
    and how many of them logged in."""
    return [
        {
            "target": format_address(*target),
            "clients": sum(1 for i in range(clients) if target_of(i, len(targets)) == k),
            "connected": connected[k],
        }
        for k, target in enumerate(targets)
    ]


def _update(
    progress: Progress,
    latest: dict[int, WorkerProgress],
    previous: WorkerProgress | None,
    snap: WorkerProgress,
    start: float,
    options: BenchOptions,
) -> None:
    progress.elapsed = max(0.0, time.monotonic() - start)
    if progress.elapsed >= options.warmup:
        progress.phase = "measuring"
    if progress.elapsed >= options.warmup + options.duration:
        progress.phase = "draining"
    progress.sent = sum(s.sent for s in latest.values())
    progress.received = sum(s.received for s in latest.values())
    progress.errors = sum(s.errors for s in latest.values())
    progress.connected = sum(s.connected for s in latest.values())
    if previous is not None:
        # rates from this worker's step, scaled by the number of workers (an estimate)
        scale = len(latest)
        step = 0.5
        progress.sent_per_s = (snap.sent - previous.sent) / step * scale
        progress.delivered_per_s = (snap.received - previous.received) / step * scale
    if snap.p99_us is not None:
        progress.p99_ms = snap.p99_us / 1000


def _report(
    options: BenchOptions,
    results: list[WorkerResult],
    start: float,
    started: str,
    connect_failures: int,
    relay: RelayProcess | None,
    relay_cpu: float | None,
    mem_per_conn: float | None,
) -> BenchReport:
    hists = {key: Histogram() for key in ("latency", "uncorrected", "connect", "lag")}
    for result in results:
        for key, histogram in result.histograms.items():
            hists[key].merge(histogram)
    logs = [log for result in results for log in result.logs]
    # In the workers' own microseconds (Worker.measure_from_us and end_us), so a message
    # planned on an edge of the window is on the same side of it for every figure.
    start_us = int(start * 1e6)
    measure_from = (start_us + int(options.warmup * 1e6)) / 1e6
    measure_until = (start_us + int((options.warmup + options.duration) * 1e6)) / 1e6
    relays = len(options.targets)
    counts = account(
        logs,
        since=measure_from,
        until=measure_until,
        in_flight=IN_FLIGHT_S,
        target_of=(lambda index: target_of(index, relays)) if relays > 1 else None,
    )

    duration = options.duration
    metrics: dict[str, float | None] = {}
    metrics.update(histogram_metrics(hists["latency"]))
    metrics.update(histogram_metrics(hists["uncorrected"], "uncorrected_"))
    metrics.update(histogram_metrics(hists["connect"], "connect_"))
    metrics.update(histogram_metrics(hists["lag"], "lag_"))
    metrics.update(counts.metrics())
    sent_in_window = sum(r.sent_in_window for r in results)
    metrics["sent_per_s"] = sent_in_window / duration
    metrics["offered_per_s"] = None if options.closed else options.clients * options.rate
    metrics["deliveries_per_s"] = counts.received / duration
    metrics["errors"] = float(sum(r.errors + r.disconnects + r.connect_failures for r in results))
    metrics["connected"] = float(options.clients - connect_failures)
    metrics["duration_s"] = duration
    worker_cpu = [100.0 * r.cpu_s / r.wall_s for r in results if r.wall_s > 0]
    metrics["generator_cpu_pct"] = max(worker_cpu) if worker_cpu else None
    if relay is not None:
        metrics["relay_cpu_s"] = relay_cpu
        metrics["relay_rss_mb"] = relay.peak_rss / (1 << 20)
        total = sum(r.received + r.acked for r in results)
        metrics["relay_cpu_us_per_delivery"] = (
            relay_cpu * 1e6 / total if relay_cpu is not None and total else None
        )
        metrics["relay_mem_per_conn_kb"] = mem_per_conn
    else:
        for name in (
            "relay_cpu_s",
            "relay_rss_mb",
            "relay_cpu_us_per_delivery",
            "relay_mem_per_conn_kb",
        ):
            metrics[name] = None

    late = hists["lag"].count_above(int(MAX_LAG_MS * 1000))
    reasons = _invalid_reasons(metrics, counts.sent, late, options)
    report = BenchReport(
        params=options.params(),
        metrics=metrics,
        seed=options.seed,
        histograms=hists,
        environment=environment_info(),
        valid=not reasons,
        invalid_reasons=reasons,
        started=started,
    )
    error_codes: dict[str, int] = {}
    for result in results:
        for code, n in result.error_codes.items():
            error_codes[code] = error_codes.get(code, 0) + n
    report.error_codes = error_codes
    return report


def _timeline(
    options: BenchOptions,
    results: list[WorkerResult],
    start: float,
    total_lost: int,
    relay_sampler: RelaySampler | None,
) -> Timeline:
    """The run's per-second series (chatcli.bench.timeline) for the report's charts."""
    # the same window edges as _report, in the workers' microseconds
    start_us = int(start * 1e6)
    since = (start_us + int(options.warmup * 1e6)) / 1e6
    until = (start_us + int((options.warmup + options.duration) * 1e6)) / 1e6
    logs = [log for result in results for log in result.logs]
    return build_timeline(
        (result.timeline for result in results),
        warmup=options.warmup,
        duration=options.duration,
        planned=None
        if options.closed
        else lambda n: planned_per_interval(
            options.clients,
            rate=options.rate,
            seconds=options.warmup + options.duration,
            arrivals="burst" if options.scenario == "burst" else options.arrivals,
            seed=options.seed,
            intervals=n,
        ),
        lost=lambda n: lost_per_interval(
            logs,
            start=start_us / 1e6,
            since=since,
            until=until,
            intervals=n,
            in_flight=IN_FLIGHT_S,
            total_lost=total_lost,
        ),
        relay=relay_sampler.series if relay_sampler is not None else None,
    )


def _invalid_reasons(
    metrics: dict[str, float | None], sent: int, late: int, options: BenchOptions
) -> list[str]:
    """Why a run says more about the generator than the relay (empty: a valid run).

    ``sent``: messages sent in the measured window; ``late``: how many of them left more
    than MAX_LAG_MS after their planned time.
    """
    reasons = []
    cpu = metrics.get("generator_cpu_pct")
    if cpu is not None and cpu >= GENERATOR_SATURATED_PCT:
        reasons.append(
            f"the load generator used {cpu:.0f}% of a core: its own delays would be blamed "
            "on the relay (add --workers or lower the load)"
        )
    # More than 1% of sends late is a generator that fell behind (for a large run, the
    # same as lag p99 over the limit); in a small run one or two late sends are a hiccup,
    # not that. Bursts queue many sends at one planned instant by design: only CPU
    # judges them.
    allowed = max(LATE_SENDS_TOLERATED, LATE_SHARE_TOLERATED * sent)
    judged = not options.closed and options.scenario != "burst"
    if judged and late > allowed:
        reasons.append(
            f"sends fell behind schedule ({late} of {sent} left over {MAX_LAG_MS:g} ms late, "
            f"lag p99 {metrics.get('lag_p99') or 0:.1f} ms): the generator could not keep up"
        )
    if sent == 0 and options.rate > 0:
        reasons.append("no message was sent in the measured window")
    return reasons


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now (for the relay's web port; bench's own use only)."""
    import socket

    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port
