"""How a benchmark looks in the terminal: live progress while it runs, a summary after."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from chatcli.addresses import format_address
from chatcli.bench.histogram import Histogram
from chatcli.bench.metrics import format_metric
from chatcli.bench.report_schema import BenchReport
from chatcli.bench.runner import BenchOptions, Progress

__all__ = ["LiveView", "render_summary"]

#: seconds between progress lines when the output is not a terminal
PLAIN_EVERY = 2.0


class LiveView:
    """A rich Live panel on a terminal; an occasional plain line otherwise."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.live: Live | None = None
        self._last_plain = 0.0

    def __enter__(self) -> LiveView:
        if self.console.is_terminal:
            self.live = Live(console=self.console, refresh_per_second=4, transient=True)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(None, None, None)

    def __call__(self, progress: Progress) -> None:
        if self.live is not None:
            self.live.update(_progress_table(progress))
            return
        now = time.monotonic()
        if now - self._last_plain >= PLAIN_EVERY or progress.phase == "done":
            self._last_plain = now
            # one line each, never wrapped: a log or CI output is read line by line
            self.console.print(
                _progress_line(progress), highlight=False, markup=False, soft_wrap=True
            )


def _progress_line(p: Progress) -> str:
    p99 = f"{p.p99_ms:.2f} ms" if p.p99_ms is not None else "-"
    return (
        f"[{p.phase}] {p.elapsed:5.1f}/{p.total:.0f} s  clients {p.connected}/{p.clients}  "
        f"sent/s {p.sent_per_s:,.0f}  delivered/s {p.delivered_per_s:,.0f}  "
        f"errors {p.errors}  p99 (last 0.5 s) {p99}"
    )


def run_header(options: BenchOptions) -> str:
    """One line that says what this run is, printed before the live view and in logs."""
    if options.targets:
        where = ",".join(format_address(*target) for target in options.targets)
    else:
        where = "a relay started for this run"
    if options.tls is not None:
        where += " over TLS"
    seed = options.seed if options.seed is not None else "random"
    return (
        f"chatcli bench: target {where}, clients {options.clients}, rooms {options.rooms}, "
        f"rate {options.rate:g}/s per client, duration {options.duration:g} s, "
        f"seed {seed}, workers {options.workers}"
    )


def _progress_table(p: Progress) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="dim")
    table.add_column()
    table.add_row("phase", p.phase)
    table.add_row("elapsed", f"{p.elapsed:.1f} / {p.total:.0f} s")
    table.add_row("clients", f"{p.connected} / {p.clients}")
    table.add_row("sent/s", f"{p.sent_per_s:,.0f}")
    table.add_row("delivered/s", f"{p.delivered_per_s:,.0f}")
    table.add_row("errors", str(p.errors))
    table.add_row("p99 (last 0.5 s)", f"{p.p99_ms:.2f} ms" if p.p99_ms is not None else "-")
    return table


_SECTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("throughput", ("offered_per_s", "sent_per_s", "deliveries_per_s")),
    ("board", ("draw_clients", "draws_sent", "draws_acked", "draw_errors")),
    (
        "correctness",
        (
            "sent",
            "expected",
            "received",
            "lost",
            "cross_node_expected",
            "cross_node",
            "unacked",
            "duplicated",
            "reordered",
            "unexpected",
            "loss",
            "errors",
        ),
    ),
    ("latency from planned send", ("p50", "p90", "p99", "p999", "max", "mean", "p99_1s_median")),
    ("latency from actual send", ("uncorrected_p50", "uncorrected_p99", "uncorrected_max")),
    ("schedule lag", ("lag_p50", "lag_p99", "lag_max")),
    ("connect", ("connected", "connect_p50", "connect_p99", "connect_max")),
    (
        "resources",
        (
            "relay_cpu_s",
            "relay_cpu_us_per_delivery",
            "relay_rss_mb",
            "relay_mem_per_conn_kb",
            "generator_cpu_pct",
        ),
    ),
)


def render_summary(report: BenchReport) -> Group:
    """The end-of-run summary: figures, latency distribution, verdicts."""
    parts: list[Any] = []
    table = Table(title="chatcli bench", show_header=True, header_style="bold")
    table.add_column("section", style="dim")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for section, names in _SECTIONS:
        first = True
        for name in names:
            if name not in report.metrics:
                continue
            table.add_row(section if first else "", name, format_metric(name, report.metrics[name]))
            first = False
    for n, row in enumerate(report.targets):  # several relays: the clients on each
        table.add_row(
            "targets" if n == 0 else "",
            Text(str(row["target"])),
            f"{row['connected']}/{row['clients']} clients",
        )
    parts.append(table)
    latency = report.histograms.get("latency")
    if latency is not None and latency.count:
        parts.append(_distribution(latency))
    parts.extend(_verdicts(report))
    return Group(*parts)


def _distribution(hist: Histogram, bins: int = 16, width: int = 40) -> Table:
    """Latency distribution as horizontal bars: one row per log-spaced bin."""
    rows = [b for b in hist.distribution(bins) if b.count]
    top = max((b.count for b in rows), default=1)
    table = Table(
        title="latency distribution (from planned send)",
        show_header=False,
        box=None,
        padding=(0, 1),
    )
    table.add_column(justify="right", style="dim")
    table.add_column()
    table.add_column(justify="right", style="dim")
    for b in rows:
        bar = "█" * max(1, round(width * b.count / top))
        table.add_row(
            f"{b.low_us / 1000:.2f}-{b.high_us / 1000:.2f} ms", Text(bar, "cyan"), f"{b.count:,}"
        )
    return table


def _verdicts(report: BenchReport) -> list[Text]:
    lines = []
    for reason in report.invalid_reasons:
        lines.append(Text(f"INVALID: {reason}", style="bold yellow"))
    for result in report.thresholds:
        ok = result.get("passed")
        actual = format_metric(result["metric"], result.get("actual"))
        lines.append(
            Text(
                f"{'PASS' if ok else 'FAIL'} {result['expr']} (measured {actual})",
                style="green" if ok else "bold red",
            )
        )
    if report.baseline:
        for row in report.baseline.get("rows", []):
            if row.get("status") == "regressed":
                name = row["metric"]
                before = format_metric(name, row["baseline"])
                after = format_metric(name, row["current"])
                lines.append(Text(f"REGRESSED {name}: {before} -> {after}", style="bold red"))
        for warning in report.baseline.get("warnings", []):
            lines.append(Text(f"baseline warning: {warning}", style="yellow"))
        verdict = "failed" if report.baseline.get("failed") else "passed"
        lines.append(
            Text(
                f"baseline comparison {verdict}",
                style="bold red" if verdict == "failed" else "green",
            )
        )
    lines.append(Text(f"outcome: {report.outcome}", style="bold"))
    return lines
