"""``chatcli bench``: load-test a relay, honestly, and gate CI on the result.

``chatcli bench [OPTIONS]`` runs a benchmark; ``chatcli bench report RUN.json`` renders
the HTML report, JUnit XML or Markdown summary of a saved run later. ``bench`` is a
click group that runs the benchmark when no subcommand is given, so every option of a
run keeps working as before.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from signal import SIGHUP, SIGINT, SIGTERM
from types import FrameType

import click
from click.core import ParameterSource

from chatcli.cli.tls_options import client_tls_options

__all__ = ["bench", "report"]

_OUTPUT = click.Path(dir_okay=False, path_type=Path)
#: the --max-regression of `bench report` when neither it nor the run says otherwise
DEFAULT_TOLERANCE = 0.10


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def _targets(
    ctx: click.Context, param: click.Parameter, value: tuple[str, ...]
) -> tuple[tuple[str, int], ...]:
    """Every --target, each a HOST:PORT or a comma list of them, in order, once each."""
    from chatcli.addresses import AddressError, parse_address_list

    if not value:
        return ()
    try:
        return tuple(parse_address_list(value, option="--target"))
    except AddressError as exc:
        raise click.BadParameter(
            f"{exc.reason}: expected HOST:PORT or a comma list of them, e.g. 127.0.0.1:7777 "
            f"or [::1]:7777,[::1]:7778 (not {exc.text!r})"
        ) from exc


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


@click.group(
    invoke_without_command=True,
    subcommand_metavar="[report RUN.json ...]",
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.option(
    "--target",
    "targets",
    multiple=True,
    callback=_targets,
    metavar="HOST:PORT[,...]",
    help="Benchmark this running relay (default: start one on a free port); several "
    "(a cluster's nodes, comma list or repeated): clients spread round-robin over them, "
    "cross-node deliveries counted.",
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
    help="Write the full report (schema chatcli-bench v1) to this file (- for stdout).",
)
@click.option(
    "--report",
    "html_path",
    type=_OUTPUT,
    metavar="FILE.html",
    help="Write a self-contained HTML report (charts, thresholds, baseline overlay).",
)
@click.option(
    "--junit",
    "junit_path",
    type=_OUTPUT,
    metavar="FILE.xml",
    help="Write JUnit XML: a test case for validity, each threshold and baseline metric.",
)
@click.option(
    "--summary-md",
    "summary_path",
    type=_OUTPUT,
    metavar="FILE",
    help="Write a Markdown summary (e.g. to $GITHUB_STEP_SUMMARY).",
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
    "--draw-clients",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    metavar="N",
    help="Also run N WebSocket clients drawing on the first room's board (the draw mix).",
)
@click.option(
    "--draw-rate",
    type=click.FloatRange(min=0.01),
    default=5.0,
    show_default=True,
    metavar="N",
    help="Draws per second per drawing client.",
)
@click.option(
    "--draw-target",
    callback=_target,
    metavar="HOST:PORT",
    help="With --target: the relay's web port (serve --web) for the drawing clients.",
)
@click.option(
    "--baseline",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Compare with an earlier --json report.",
)
@client_tls_options(scope="Clients: ")
@click.option(
    "--max-regression",
    default="10%",
    show_default=True,
    metavar="PCT",
    help="Tolerance of the --baseline comparison.",
)
@click.pass_context
def bench(
    ctx: click.Context,
    targets: tuple[tuple[str, int], ...],
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
    html_path: Path | None,
    junit_path: Path | None,
    summary_path: Path | None,
    threshold_exprs: tuple[str, ...],
    relay_store: str,
    draw_clients: int,
    draw_rate: float,
    draw_target: tuple[str, int] | None,
    baseline: Path | None,
    max_regression: str,
    tls: bool,
    ca: Path | None,
    insecure: bool,
) -> None:
    """Stress a chat relay with simulated clients and report what it really does.

    Open loop: every message has a planned send time and sends never wait for
    replies. Latency is measured from the planned time to each arrival (safe from
    coordinated omission); every message must reach every member of its room exactly
    once, in order, and whatever did not is counted. Exit codes: 0 pass, 1 a threshold
    or the baseline failed, 2 usage error, 3 the run was invalid (the generator, not
    the relay, was the limit). With --tls every client speaks TLS and verifies the
    relay: the one bench starts gets a throwaway certificate made for the run; a
    --target is checked against the system's CAs or --ca FILE (--insecure: not at all).

    \b
    Examples:
      chatcli bench
      chatcli bench --clients 200 --rate 20 --duration 20
      chatcli bench --target 127.0.0.1:7777 --clients 20 --rate 2
      chatcli bench --target 10.0.0.1:7777,10.0.0.2:7777 --clients 200   # a cluster
      chatcli bench --scenario idle --clients 5000
      chatcli bench -t 'p99<50ms' -t 'loss==0' --json bench.json
      chatcli bench --baseline main.json --max-regression 10%
      chatcli bench --relay-store memory          # the relay without durability
      chatcli bench --tls                         # the cost of TLS (own relay)
      chatcli bench --target 127.0.0.1:7777 --tls --ca ca.pem
      chatcli bench --report bench.html --junit bench.xml --summary-md summary.md
      chatcli bench --clients 50 --draw-clients 10 --draw-rate 5   # chat + drawing
      chatcli bench report bench.json --baseline main.json --html bench.html
    """
    if ctx.invoked_subcommand is not None:
        _no_run_options(ctx)
        return
    from rich.console import Console

    from chatcli.bench.baseline import parse_tolerance
    from chatcli.bench.report_files import ReportFiles
    from chatcli.bench.report_schema import EXIT_CODES, read_report
    from chatcli.bench.runner import (
        INTERRUPTED,
        BenchOptions,
        TargetUnreachable,
        interrupted,
        run_bench,
    )
    from chatcli.bench.thresholds import parse_thresholds
    from chatcli.bench.view import LiveView, render_summary, run_header
    from chatcli.cli.common import fail
    from chatcli.cli.tls_options import client_tls

    json_to_stdout = json_path == Path("-")  # `--json -`: the report on stdout
    outputs = ReportFiles(
        json=None if json_to_stdout else json_path,
        html=html_path,
        junit=junit_path,
        summary=summary_path,
    )
    outputs.check()  # find out now, not after the whole run
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
        targets=targets,
        relay_args=("--store", "memory") if relay_store == "memory" else (),
        thresholds=tuple(parse_thresholds(threshold_exprs)),
        baseline=read_report(baseline) if baseline else None,
        max_regression=parse_tolerance(max_regression),
        tls=client_tls(tls or None, ca, insecure, warn=bool(targets)),
        draw_clients=draw_clients,
        draw_rate=draw_rate,
        draw_target=draw_target,
    )
    options.check()
    console = Console(stderr=True)
    # SIGTERM/SIGHUP (a CI timeout, `timeout`, a closed terminal) unwind like Ctrl-C
    # does, so that run_bench stops the relay and the workers it started
    handlers = {sig: signal.signal(sig, _exit_on_signal) for sig in (SIGTERM, SIGHUP)}
    # Ctrl-C: KeyboardInterrupt as ever, and remembered, so that one raised where Python
    # drops it (inside a finalizer) still stops the run
    INTERRUPTED.clear()
    handlers[SIGINT] = signal.signal(SIGINT, interrupted)
    console.print(
        run_header(options),
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    try:
        with LiveView(console) as view:
            report = run_bench(options, view)
    except TargetUnreachable as exc:
        fail(str(exc), EXIT_CODES["invalid"])  # a run that could not happen: invalid
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    # the human summary goes where the report does not: stderr when the JSON is on stdout
    (console if json_to_stdout else Console(highlight=False)).print(render_summary(report))
    if json_to_stdout:
        from chatcli.bench.report_schema import dumps_report

        sys.stdout.write(dumps_report(report) + "\n")
    for path in outputs.write(report, options.baseline):
        console.print(f"report written to {path}", style="dim")
    sys.exit(EXIT_CODES[report.outcome])


def _no_run_options(ctx: click.Context) -> None:
    """``bench --clients 5 report x.json``: the run options would be silently ignored."""
    given = [
        param.opts[0]
        for param in ctx.command.params
        if param.name and ctx.get_parameter_source(param.name) is ParameterSource.COMMANDLINE
    ]
    if given:
        raise click.UsageError(
            f"{', '.join(given)} belong to a run, not to 'bench {ctx.invoked_subcommand}'", ctx
        )


@bench.command()
@click.argument(
    "run", metavar="RUN.json", type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option(
    "--baseline",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="An earlier run's JSON: drawn beside this one and compared with it.",
)
@click.option(
    "--max-regression",
    default=None,
    metavar="PCT",
    help="Tolerance of the --baseline comparison  [default: the run's own, else 10%]",
)
@click.option(
    "--html", "html_path", type=_OUTPUT, metavar="OUT.html", help="Write the HTML report."
)
@click.option("--junit", "junit_path", type=_OUTPUT, metavar="OUT.xml", help="Write JUnit XML.")
@click.option(
    "--summary-md", "summary_path", type=_OUTPUT, metavar="OUT.md", help="Write a Markdown summary."
)
def report(
    run: Path,
    baseline: Path | None,
    max_regression: str | None,
    html_path: Path | None,
    junit_path: Path | None,
    summary_path: Path | None,
) -> None:
    """Render the report of a saved run (from `chatcli bench --json`).

    CI can keep the JSON and render on demand. With --baseline, the comparison is
    made again against that run (and drawn dashed in the HTML report); without it, the
    comparison saved in RUN.json (if any) is shown. Exits 0 once the files are written,
    whatever the run's outcome (the run itself exited with it).

    \b
    Examples:
      chatcli bench report bench.json --html bench.html
      chatcli bench report bench.json --baseline main.json --html bench.html
      chatcli bench report bench.json --junit bench.xml --summary-md summary.md
    """
    from chatcli.bench.baseline import compare_reports, parse_tolerance
    from chatcli.bench.report_files import ReportFiles
    from chatcli.bench.report_schema import read_report
    from chatcli.errors import UsageError

    if not (html_path or junit_path or summary_path):
        raise UsageError("nothing to write: give --html, --junit or --summary-md")
    outputs = ReportFiles(html=html_path, junit=junit_path, summary=summary_path)
    outputs.check()
    current = read_report(run)
    old = read_report(baseline) if baseline is not None else None
    if old is not None:
        saved = (current.baseline or {}).get("tolerance")
        if max_regression is not None:
            tolerance = parse_tolerance(max_regression)
        elif isinstance(saved, (int, float)) and not isinstance(saved, bool):
            tolerance = float(saved)
        else:
            tolerance = DEFAULT_TOLERANCE
        current.baseline = compare_reports(current, old, tolerance).to_dict()
    elif max_regression is not None:
        raise UsageError("--max-regression needs --baseline")
    for path in outputs.write(current, old):
        click.echo(f"written: {path}")
