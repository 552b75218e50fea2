"""``chatcli bench``: load-test a relay, honestly, and gate CI on the result."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from signal import SIGHUP, SIGTERM
from types import FrameType

import click

__all__ = ["bench"]


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def _target(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> tuple[str, int] | None:
    if value is None:
        return None
    from chatcli.addresses import AddressError, parse_address

    try:
        return parse_address(value, option="--target")
    except AddressError as exc:
        raise click.BadParameter(
            f"{exc.reason}: expected HOST:PORT, e.g. 127.0.0.1:7777 or [::1]:7777"
        ) from exc


@click.command()
@click.option(
    "--target",
    callback=_target,
    metavar="HOST:PORT",
    help="Benchmark this running relay (default: start one on a free port).",
)
@click.option(
    "--scenario",
    type=click.Choice(["steady", "churn", "idle", "burst"]),
    default="steady",
    show_default=True,
    help="steady chat; churn: clients keep leaving and rejoining; idle: many "
    "quiet connections (relay memory per connection); burst: all at once.",
)
@click.option(
    "--clients",
    "-c",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="Simulated clients.",
)
@click.option(
    "--rooms",
    type=click.IntRange(min=1),
    default=None,
    help="Rooms the clients are spread over evenly  [default: 1; idle: clients/50]",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0),
    default=None,
    help="Messages per second per client  [default: 10; idle: 0.02]",
)
@click.option(
    "--duration",
    "-d",
    type=click.FloatRange(min=0.1),
    default=10.0,
    show_default=True,
    help="Measured seconds.",
)
@click.option(
    "--warmup",
    type=click.FloatRange(min=0),
    default=2.0,
    show_default=True,
    help="Seconds of load before measuring (not counted).",
)
@click.option(
    "--size",
    type=click.IntRange(min=24, max=4096),
    default=64,
    show_default=True,
    help="Bytes of message text.",
)
@click.option(
    "--ramp",
    type=click.FloatRange(min=0),
    default=1000.0,
    show_default=True,
    help="Connections opened per second (0: all at once).",
)
@click.option(
    "--seed",
    type=int,
    default=1,
    show_default=True,
    help="Seed of every random choice (Poisson arrivals, churn).",
)
@click.option(
    "--arrivals",
    type=click.Choice(["constant", "poisson"]),
    default="constant",
    show_default=True,
    help="Spacing of each client's planned sends.",
)
@click.option(
    "--closed", is_flag=True, help="Closed loop: send the next message when your own echo arrives."
)
@click.option(
    "--workers",
    "-w",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Load-generator processes (one core each).",
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the full report (schema chatcli-bench v1) to this file.",
)
@click.option(
    "--threshold",
    "-t",
    "threshold_exprs",
    multiple=True,
    metavar="EXPR",
    help="Fail (exit 1) unless EXPR holds, e.g. 'p99<50ms', 'loss==0'. Repeatable.",
)
@click.option(
    "--relay-store",
    type=click.Choice(["sqlite", "memory"]),
    default="sqlite",
    show_default=True,
    help="Store of the relay bench starts: a throwaway SQLite file, or memory.",
)
@click.option(
    "--baseline",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Compare with an earlier --json report.",
)
@click.option(
    "--max-regression",
    default="10%",
    show_default=True,
    metavar="PCT",
    help="Tolerance of the --baseline comparison.",
)
def bench(
    target: tuple[str, int] | None,
    scenario: str,
    clients: int,
    rooms: int | None,
    rate: float | None,
    duration: float,
    warmup: float,
    size: int,
    ramp: float,
    seed: int,
    arrivals: str,
    closed: bool,
    workers: int,
    json_path: Path | None,
    threshold_exprs: tuple[str, ...],
    relay_store: str,
    baseline: Path | None,
    max_regression: str,
) -> None:
    """Stress a chat relay with simulated clients and report what it really does.

    Open loop: every message has a planned send time and sends never wait for
    replies. Latency is measured from the planned time to each arrival (safe from
    coordinated omission); every message must reach every member of its room exactly
    once, in order, and whatever did not is counted. Exit codes: 0 pass, 1 a threshold
    or the baseline failed, 2 usage error, 3 the run was invalid (the generator, not
    the relay, was the limit).

    \b
    Examples:
      chatcli bench
      chatcli bench --clients 200 --rate 20 --duration 20
      chatcli bench --target 127.0.0.1:7777 --clients 20 --rate 2
      chatcli bench --scenario idle --clients 5000
      chatcli bench -t 'p99<50ms' -t 'loss==0' --json bench.json
      chatcli bench --baseline main.json --max-regression 10%
      chatcli bench --relay-store memory          # the relay without durability
    """
    from rich.console import Console

    from chatcli.bench.baseline import parse_tolerance
    from chatcli.bench.report_schema import EXIT_CODES, dumps_report, read_report
    from chatcli.bench.runner import BenchOptions, run_bench
    from chatcli.bench.thresholds import parse_thresholds
    from chatcli.bench.view import LiveView, render_summary
    from chatcli.errors import ChatError, UsageError

    if json_path is not None and not json_path.parent.is_dir():
        raise UsageError(f"--json {json_path}: no such directory {json_path.parent}")
    if json_path is not None:  # find out now, not after the whole run
        existed = json_path.exists()
        try:
            json_path.open("a", encoding="utf-8").close()
        except OSError as exc:
            raise UsageError(f"--json {json_path}: cannot write: {exc.strerror}") from exc
        if not existed:
            json_path.unlink(missing_ok=True)
    idle = scenario == "idle"
    options = BenchOptions(
        clients=clients,
        rooms=rooms if rooms is not None else (max(1, clients // 50) if idle else 1),
        rate=rate if rate is not None else (0.02 if idle else 10.0),
        duration=duration,
        warmup=warmup,
        size=size,
        spawn_rate=ramp or None,
        seed=seed,
        arrivals=arrivals,
        closed=closed,
        workers=workers,
        scenario=scenario,
        target=target,
        relay_args=("--store", "memory") if relay_store == "memory" else (),
        thresholds=tuple(parse_thresholds(threshold_exprs)),
        baseline=read_report(baseline) if baseline else None,
        max_regression=parse_tolerance(max_regression),
    )
    options.check()
    console = Console(stderr=True)
    # SIGTERM/SIGHUP (a CI timeout, `timeout`, a closed terminal) unwind like Ctrl-C
    # does, so that run_bench stops the relay and the workers it started
    handlers = {sig: signal.signal(sig, _exit_on_signal) for sig in (SIGTERM, SIGHUP)}
    try:
        with LiveView(console) as view:
            report = run_bench(options, view)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    Console(highlight=False).print(render_summary(report))
    if json_path is not None:
        try:
            json_path.write_text(dumps_report(report), "utf-8")
        except OSError as exc:
            raise ChatError(f"cannot write the report to {json_path}: {exc.strerror}") from exc
        console.print(f"report written to {json_path}", style="dim")
    sys.exit(EXIT_CODES[report.outcome])
