"""``bench --report FILE.html``: one self-contained HTML page about a run.

Everything is inline (CSS in a style element, charts as SVG drawn by chatcli.bench.svg),
with no script and no URL, so the file opens anywhere, offline, as a CI artifact. Built
with the standard library: every value that reaches the page goes through ``html.escape``
(a report read from a file is untrusted text). Given the baseline run's report too, the
charts draw both runs, the baseline dashed.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Final

from chatcli.bench.histogram import US_PER_MS, Histogram, bucket_index, bucket_lowest
from chatcli.bench.report_facts import (
    OUTCOME_TITLES,
    baseline_rows,
    figure,
    key_figures,
    label,
    plain,
    run_facts,
    threshold_rows,
)
from chatcli.bench.report_schema import BenchReport
from chatcli.bench.svg import Bar, Line, bar_chart, compact, line_chart
from chatcli.bench.timeline import Timeline

__all__ = ["render_html"]

#: bars of the latency and connect-time distributions
DISTRIBUTION_BARS: Final = 32
_PERCENTILES: Final = (50.0, 90.0, 99.0, 99.9, 100.0)

_CSS: Final = """
:root{color-scheme:light dark;--bg:#fff;--fg:#1f2328;--dim:#59636e;--line:#d1d9e0;
--card:#f6f8fa;--window:rgba(37,99,235,.06);--pass:#1a7f37;--fail:#cf222e;--warn:#9a6700}
@media (prefers-color-scheme:dark){:root{--bg:#0d1117;--fg:#e6edf3;--dim:#9198a1;
--line:#3d444d;--card:#151b23;--window:rgba(88,166,255,.08);--pass:#3fb950;--fail:#f85149;
--warn:#d29922}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);
font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
main{max-width:1240px;margin:0 auto;padding:16px}
h1{font-size:1.5rem;margin:0 0 4px}h2{font-size:1.15rem;margin:28px 0 8px;
border-bottom:1px solid var(--line);padding-bottom:4px}h3{font-size:1rem;margin:0 0 2px}
.sub,.note,figcaption{color:var(--dim)}.note{font-size:.9rem;margin:4px 0}
.badge{display:inline-block;padding:2px 10px;border-radius:999px;color:#fff;
font-weight:600;font-size:.95rem;vertical-align:middle}
.b-pass{background:var(--pass)}.b-fail{background:var(--fail)}.b-invalid{background:var(--warn)}
.ok{color:var(--pass);font-weight:600}.bad{color:var(--fail);font-weight:600}
.warn{color:var(--warn);font-weight:600}
dl.facts{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(45%,190px),1fr));
gap:6px 16px;margin:12px 0}dl.facts div{min-width:0}dt{color:var(--dim);font-size:.8rem}
dd{margin:0;overflow-wrap:anywhere}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:8px}
.card{background:var(--card);border:1px solid var(--line);border-radius:6px;padding:8px 10px}
.card .v{font-size:1.25rem;font-weight:600;font-variant-numeric:tabular-nums}
.card .k,.card .d{font-size:.8rem;color:var(--dim)}
.scroll{overflow-x:auto}
table{border-collapse:collapse;font-variant-numeric:tabular-nums;min-width:100%}
th,td{text-align:left;padding:4px 10px;border-bottom:1px solid var(--line);white-space:nowrap}
td.n,th.n{text-align:right}td.w{white-space:normal;min-width:12em}th{font-size:.85rem;color:var(--dim);font-weight:600}
code{font:.9em ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,500px),1fr));
gap:20px}
figure{margin:0;min-width:0}svg.chart{width:100%;height:auto;display:block}
svg text{fill:var(--dim);font-size:13px;font-family:inherit}
.grid{stroke:var(--line);stroke-width:1}.base,.tick{stroke:var(--dim);stroke-width:1}
.window{fill:var(--window)}
.line{fill:none;stroke:var(--c);stroke-width:2;stroke-linejoin:round}
.dashed{stroke-dasharray:6 4}.line.wide{stroke-width:7;opacity:.35}
.key.wide{border-top-width:7px;opacity:.45}.dot{fill:var(--c)}.bar{fill:var(--c);opacity:.75}
.legend{list-style:none;padding:0;margin:4px 0;display:flex;flex-wrap:wrap;gap:2px 14px;
font-size:.85rem}.key{display:inline-block;width:22px;margin-right:6px;
border-top:3px solid var(--c);vertical-align:middle}.key.dashed{border-top-style:dashed}
.c1{--c:#2563eb}.c2{--c:#e8590c}.c3{--c:#2f9e44}.c4{--c:#9c36b5}.c5{--c:#e03131}
.c6{--c:#868e96}
@media (prefers-color-scheme:dark){.c1{--c:#58a6ff}.c2{--c:#ff922b}.c3{--c:#51cf66}
.c4{--c:#da77f2}.c5{--c:#ff6b6b}}
details{margin-top:12px}summary{cursor:pointer;color:var(--dim)}
footer{margin:32px 0 8px;color:var(--dim);font-size:.8rem}
@media (max-width:640px){main{padding:10px}h1{font-size:1.25rem}
svg text{font-size:21px}th,td{padding:3px 6px}.card .v{font-size:1.1rem}
table{font-size:.85rem}td.w{min-width:7em}.opt{display:none}/* change and status say it */}
"""


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _e(value: object) -> str:
    return escape(plain(value), quote=True)


def render_html(report: BenchReport, baseline: BenchReport | None = None) -> str:
    """The whole page for ``report`` (and ``baseline``, drawn dashed beside it)."""
    outcome = report.outcome
    title = f"chatcli bench: {outcome}"
    body = [
        _header(report, baseline),
        _verdicts(report),
        _figures(report, baseline),
        _charts(report, baseline),
        _errors(report),
        _per_second(report.timeline),
        f"<footer>Written by chatcli {_e(report.chatcli_version)} from a "
        "chatcli-bench report (docs/bench-report.md). Self-contained: no script, "
        "nothing loaded from the network.</footer>",
    ]
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head>"
        f"<body><main>{''.join(body)}</main></body></html>\n"
    )


# ------------------------------------------------------------------------- sections


def _header(report: BenchReport, baseline: BenchReport | None) -> str:
    outcome = report.outcome
    facts = "".join(
        f"<div><dt>{_e(f.name)}</dt><dd>{_e(f.value)}</dd></div>" for f in run_facts(report)
    )
    compared = ""
    if baseline is not None:
        compared = (
            f'<p class="note">Compared with a baseline run started {_e(baseline.started or "?")}'
            f" (chatcli {_e(baseline.chatcli_version)}): drawn dashed.</p>"
        )
    return (
        f"<header><h1>chatcli bench "
        f'<span class="badge b-{_e(outcome)}">{_e(OUTCOME_TITLES.get(outcome, outcome))}'
        f"</span></h1>"
        f'<p class="sub">{_e(report.params.get("scenario", "run"))} run, started '
        f"{_e(report.started or 'at an unknown time')}</p>"
        f'<dl class="facts">{facts}</dl>{compared}</header>'
    )


def _mark(passed: bool) -> str:
    return '<span class="ok">PASS</span>' if passed else '<span class="bad">FAIL</span>'


def _verdicts(report: BenchReport) -> str:
    validity = (
        '<span class="ok">PASS</span>' if report.valid else '<span class="warn">INVALID</span>'
    )
    rows = [
        f'<tr><td>{validity}</td><td class="w">the load generator kept up (a valid run)</td>'
        f'<td class="n">{"yes" if report.valid else "no"}</td><td class="n">yes</td></tr>'
    ]
    for t in threshold_rows(report):
        rows.append(
            f'<tr><td>{_mark(t.passed)}</td><td class="w"><code>{_e(t.expr)}</code></td>'
            f'<td class="n">{_e(t.measured)}</td><td class="n">{_e(t.limit)}</td></tr>'
        )
    parts = [
        '<section id="thresholds"><h2>Thresholds</h2>',
        "" if report.thresholds else '<p class="note">No --threshold was given.</p>',
        '<div class="scroll"><table><thead><tr><th>result</th><th>check</th>'
        '<th class="n">measured</th><th class="n">limit</th></tr></thead><tbody>',
        *rows,
        "</tbody></table></div>",
    ]
    if report.invalid_reasons:
        parts.append(
            "<ul>"
            + "".join(f'<li class="warn">{_e(r)}</li>' for r in report.invalid_reasons)
            + "</ul>"
        )
    comparison = report.baseline
    if comparison:
        tolerance = comparison.get("tolerance")
        verdict = "failed" if comparison.get("failed") else "passed"
        tol = f"{tolerance:.0%}" if isinstance(tolerance, (int, float)) else "?"
        parts.append(
            f"<h2>Baseline comparison</h2><p>Tolerance {_e(tol)}: "
            f'<span class="{"bad" if verdict == "failed" else "ok"}">{verdict}</span></p>'
        )
        parts.append(
            '<div class="scroll"><table><thead><tr><th>metric</th><th class="n opt">baseline</th>'
            '<th class="n">this run</th><th class="n">change</th><th class="n opt">limit</th>'
            "<th>status</th></tr></thead><tbody>"
        )
        for row in baseline_rows(comparison):
            css = {"regressed": "bad", "improved": "ok", "missing": "warn"}.get(row.status, "")
            parts.append(
                f'<tr><td>{_e(label(row.metric))}</td><td class="n opt">{_e(row.baseline)}</td>'
                f"<td class=n>{_e(row.current)}</td><td class=n>{_e(row.change)}</td>"
                f'<td class="n opt">{_e(row.limit)}</td>'
                f'<td class="{css}">{_e(row.status)}</td></tr>'
            )
        parts.append("</tbody></table></div>")
        for warning in comparison.get("warnings", []) or []:
            parts.append(f'<p class="note warn">{_e(warning)}</p>')
    parts.append("</section>")
    return "".join(parts)


def _figures(report: BenchReport, baseline: BenchReport | None) -> str:
    cards = []
    for name, value in key_figures(report):
        extra = ""
        before = _number(baseline.metrics.get(name)) if baseline else None
        now = _number(report.metrics.get(name))
        if before is not None:
            change = f" ({(now - before) / abs(before):+.1%})" if before and now is not None else ""
            extra = f'<div class="d">baseline {_e(figure(name, before))}{_e(change)}</div>'
        cards.append(
            f'<div class="card"><div class="k">{_e(label(name))}</div>'
            f'<div class="v">{_e(value)}</div>{extra}</div>'
        )
    return (
        '<section id="figures"><h2>Key figures</h2><p class="note">Latency is measured from each '
        "message's planned send time to its arrival at every other member of its room.</p>"
        f'<div class="cards">{"".join(cards)}</div></section>'
    )


def _legend(items: Sequence[tuple[str, str, bool]]) -> str:
    return (
        '<ul class="legend">'
        + "".join(
            f'<li><span class="key {css}{" dashed" if dashed else ""}"></span>{_e(name)}</li>'
            for name, css, dashed in items
        )
        + "</ul>"
    )


def _figure(title: str, caption: str, chart: str, legend: str = "") -> str:
    return (
        f"<figure><h3>{_e(title)}</h3>{legend}{chart}"
        f"<figcaption>{_e(caption)}</figcaption></figure>"
    )


def _lines(
    timeline: Timeline | None,
    baseline: Timeline | None,
    wanted: Sequence[tuple[str, str, str]],
    *,
    rate: bool = False,
) -> tuple[list[Line], list[tuple[str, str, bool]]]:
    """Lines for (series, label, css) of this run, and dashed ones of the baseline."""
    lines: list[Line] = []
    legend: list[tuple[str, str, bool]] = []
    for run, dashed, suffix in ((timeline, False, ""), (baseline, True, " (baseline)")):
        if run is None:
            continue
        for name, text, css in wanted:
            values = run.rate(name) if rate else run.get(name)
            if values is None:
                continue
            lines.append(Line(text + suffix, run.t, values, css, dashed))
            legend.append((text + suffix, css, dashed))
    return lines, legend


def _window(timeline: Timeline) -> tuple[float, float]:
    return timeline.measure_from_s, timeline.measure_until_s


def _charts(report: BenchReport, baseline: BenchReport | None) -> str:
    timeline = report.timeline
    base = baseline.timeline if baseline is not None else None
    figures = []
    if timeline is not None:
        shade = _window(timeline)

        def chart(
            title: str,
            caption: str,
            wanted: Sequence[tuple[str, str, str]],
            *,
            rate: bool = False,
            y_label: str = "",
            counts: bool = False,
        ) -> None:
            lines, legend = _lines(timeline, base, wanted, rate=rate)
            if not lines:
                return
            svg = line_chart(
                lines,
                title=title,
                shade=shade,
                y_label=(lambda v: f"{compact(v)}{y_label}"),
                integer=counts,
            )
            ours = [v for line in lines if not line.dashed for v in line.ys if v is not None]
            if counts and not any(ours):
                caption += " All zero in this run."
            figures.append(_figure(title, caption, svg, _legend(legend)))

        chart(
            "Latency over time",
            "Per second of arrival, from the planned send time (ms).",
            [("p50_ms", "p50", "c1"), ("p99_ms", "p99", "c2")],
        )
        chart(
            "Send rate: planned and actual",
            "Messages per second the schedule planned (wide band), and the generator sent.",
            [("planned", "planned", "c3 wide"), ("sent", "sent", "c1")],
            rate=True,
        )
        chart(
            "Deliveries per second",
            "Messages arriving at receivers each second.",
            [("deliveries", "deliveries", "c4")],
            rate=True,
        )
        chart(
            "Loss, duplicates, reorders, errors",
            "Per second: deliveries lost (by planned send time, measured window only), "
            "duplicated, reordered; error frames and dropped connections.",
            [
                ("lost", "lost", "c5"),
                ("duplicated", "duplicated", "c2"),
                ("reordered", "reordered", "c4"),
                ("errors", "errors", "c6"),
            ],
            counts=True,
        )
        chart(
            "Unacknowledged messages",
            "Sent messages whose echo had not come back yet, at the end of each second.",
            [("unacked", "unacked", "c2"), ("connected", "clients connected", "c3")],
            counts=True,
        )
        chart(
            "Relay CPU",
            "CPU time the relay used, in % of one core (when bench started the relay).",
            [("relay_cpu_pct", "relay CPU", "c1")],
            y_label="%",
        )
        chart(
            "Relay memory",
            "Resident memory of the relay process (MiB).",
            [("relay_rss_mb", "relay RSS", "c4")],
        )
    figures.insert(
        min(1, len(figures)),
        _distribution(
            "Latency distribution",
            "Share of deliveries per latency range (ms, logarithmic).",
            report,
            baseline,
            "latency",
        ),
    )
    figures.append(
        _distribution(
            "Connect times",
            "Time from starting to connect to logged in (ms, logarithmic).",
            report,
            baseline,
            "connect",
        )
    )
    missing = (
        '<p class="note">Time is counted from the start of the load; the shaded band is the '
        "measured window (warm-up before it, draining after it). Baseline runs are dashed.</p>"
        if timeline is not None
        else '<p class="note">This report has no per-second series (written by a chatcli '
        "that did not record them): only the distributions can be drawn.</p>"
    )
    charts = "".join(figures)
    return (
        f'<section id="charts"><h2>Charts</h2>{missing}<div class="charts">{charts}</div></section>'
    )


def _bars(hist: Histogram, edges: Sequence[int]) -> list[Bar]:
    """The share of ``hist`` in each [edges[i], edges[i+1]) (bucket boundaries, µs)."""
    total = hist.count
    if not total:
        return []
    above = [hist.count_above(edge - 1) if edge > 0 else total for edge in edges]
    return [
        Bar(edges[i] / US_PER_MS, edges[i + 1] / US_PER_MS, (above[i] - above[i + 1]) / total)
        for i in range(len(edges) - 1)
    ]


def _edges(hists: Sequence[Histogram]) -> list[int]:
    """Shared log-spaced bar edges (on bucket boundaries) covering every histogram."""
    lows = [h.min for h in hists if h.min is not None]
    highs = [h.max for h in hists if h.max is not None]
    if not lows or not highs:
        return []
    low, high = max(1, min(lows)), max(highs) + 1
    ratio = (high / low) ** (1.0 / DISTRIBUTION_BARS) if high > low else 2.0
    edges = [bucket_lowest(bucket_index(low))]
    for i in range(1, DISTRIBUTION_BARS + 1):
        edge = bucket_lowest(bucket_index(round(low * ratio**i)))
        if edge > edges[-1]:
            edges.append(edge)
    if edges[-1] < high:
        edges.append(high)
    return edges


def _distribution(
    title: str, caption: str, report: BenchReport, baseline: BenchReport | None, key: str
) -> str:
    hist = report.histograms.get(key)
    base = baseline.histograms.get(key) if baseline is not None else None
    if hist is None or not hist.count:
        return _figure(title, "Nothing was recorded.", "")
    edges = _edges([h for h in (hist, base) if h is not None and h.count])
    overlay = _bars(base, edges) if base is not None and base.count else []
    svg = bar_chart(_bars(hist, edges), title=title, overlay=overlay)
    legend = [("this run", "c1", False)]
    if overlay:
        legend.append(("baseline", "c2", True))
    head = "".join(f'<th class="n">{_e(_pct(p))}</th>' for p in _PERCENTILES)
    rows = [("this run", hist)] + ([("baseline", base)] if overlay and base is not None else [])
    body = "".join(
        f"<tr><td>{_e(name)}</td>"
        + "".join(f'<td class="n">{_e(_ms(v))}</td>' for v in h.percentiles(_PERCENTILES))
        + "</tr>"
        for name, h in rows
    )
    table = (
        f'<div class="scroll"><table><thead><tr><th>ms</th>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table></div>"
    )
    return _figure(title, caption, svg + table, _legend(legend))


def _pct(p: float) -> str:
    return "max" if p >= 100 else f"p{p:g}"


def _ms(us: int | None) -> str:
    return "-" if us is None else f"{us / US_PER_MS:.3g}"


def _errors(report: BenchReport) -> str:
    if not report.error_codes:
        return ""
    rows = "".join(
        f'<tr><td><code>{_e(code)}</code></td><td class="n">{n:,}</td></tr>'
        for code, n in sorted(report.error_codes.items())
    )
    return (
        "<section><h2>Errors from the relay</h2>"
        '<div class="scroll"><table><thead><tr><th>code</th><th class="n">count</th></tr>'
        f"</thead><tbody>{rows}</tbody></table></div></section>"
    )


_TABLE_SERIES: Final = (
    ("planned", "planned"),
    ("sent", "sent"),
    ("deliveries", "deliveries"),
    ("p50_ms", "p50 ms"),
    ("p99_ms", "p99 ms"),
    ("max_ms", "max ms"),
    ("lost", "lost"),
    ("duplicated", "dup"),
    ("reordered", "reord"),
    ("errors", "errors"),
    ("unacked", "unacked"),
    ("relay_cpu_pct", "relay CPU %"),
    ("relay_rss_mb", "relay MiB"),
)


def _per_second(timeline: Timeline | None) -> str:
    if timeline is None or not timeline.t:
        return ""
    columns = [(name, text) for name, text in _TABLE_SERIES if timeline.get(name) is not None]
    head = "".join(f'<th class="n">{_e(text)}</th>' for _, text in columns)
    rows = []
    for i, t in enumerate(timeline.t):
        cells = []
        for name, _ in columns:
            values = timeline.get(name)
            value = values[i] if values is not None else None
            cells.append(f'<td class="n">{"-" if value is None else _e(f"{value:,.6g}")}</td>')
        rows.append(f'<tr><td class="n">{t:.2f}</td>{"".join(cells)}</tr>')
    return (
        "<section><details><summary>Per-second figures (counts per interval; the "
        "interval ends at t)</summary>"
        f'<div class="scroll"><table><thead><tr><th class="n">t (s)</th>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div></details></section>"
    )
