"""``bench --summary-md FILE``: a short Markdown summary for a CI job's summary page.

Written for ``$GITHUB_STEP_SUMMARY`` (GitHub renders it under the job) and any CI page
that shows Markdown: the outcome, one line about the run, the key figures (against the
baseline run when there is one), the thresholds and the baseline comparison. Text from
the report is untrusted: Markdown and HTML punctuation in it is backslash-escaped and
line breaks flattened, so a value can neither break a table nor inject markup.
"""

from __future__ import annotations

import re
from typing import Final

from chatcli.bench.report_facts import (
    OUTCOME_TITLES,
    baseline_rows,
    figure,
    key_figures,
    label,
    plain,
    target_text,
    threshold_rows,
)
from chatcli.bench.report_schema import BenchReport

__all__ = ["render_markdown"]

_ICONS: Final = {"pass": "✅", "fail": "❌", "invalid": "⚠️"}
_SPECIAL: Final = re.compile(r"([\\`*_\[\]<>|~&])")


def _md(value: object) -> str:
    """Plain text that Markdown shows as written, on one line, safe in a table cell."""
    return _SPECIAL.sub(r"\\\1", plain(value))


def _count(n: object, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{'?' if n is None else n} {noun}s"


def _run_line(report: BenchReport) -> str:
    p = report.params
    rate = "closed loop" if p.get("closed") else f"{p.get('rate', '?')} msg/s per client"
    parts = [
        f"{p.get('scenario', 'steady')}",
        _count(p.get("clients"), "client"),
        _count(p.get("rooms"), "room"),
        rate,
        f"{p.get('duration', '?')} s (+{p.get('warmup', 0)} s warm-up)",
        f"seed {report.seed if report.seed is not None else '-'}",
        _count(p.get("workers"), "worker"),
        f"target {target_text(report)}" if p.get("target") else "its own relay",
        f"chatcli {report.chatcli_version}",
    ]
    return " · ".join(_md(part) for part in parts)


def render_markdown(report: BenchReport, baseline: BenchReport | None = None) -> str:
    """The summary as Markdown text, ending with a newline."""
    outcome = report.outcome
    lines = [
        f"### chatcli bench: {_ICONS.get(outcome, '')} {_md(OUTCOME_TITLES.get(outcome, outcome))}",
        "",
        _run_line(report),
        "",
    ]
    for reason in report.invalid_reasons:
        lines.append(f"- ⚠️ invalid: {_md(reason)}")
    if report.invalid_reasons:
        lines.append("")

    if baseline is not None:
        lines += ["| figure | this run | baseline | change |", "|---|--:|--:|--:|"]
    else:
        lines += ["| figure | this run |", "|---|--:|"]
    for name, value in key_figures(report):
        row = f"| {_md(label(name))} | {_md(value)} |"
        if baseline is not None:
            before, now = baseline.metrics.get(name), report.metrics.get(name)
            change = f"{(now - before) / abs(before):+.1%}" if before and now is not None else "-"
            row += f" {_md(figure(name, before))} | {_md(change)} |"
        lines.append(row)
    lines.append("")

    thresholds = threshold_rows(report)
    if thresholds:
        lines += ["**Thresholds**", "", "| | threshold | measured |", "|---|---|--:|"]
        for t in thresholds:
            lines.append(f"| {'✅' if t.passed else '❌'} | {_md(t.expr)} | {_md(t.measured)} |")
        lines.append("")

    comparison = report.baseline
    if comparison:
        tolerance = comparison.get("tolerance")
        tol = f"{tolerance:.0%}" if isinstance(tolerance, (int, float)) else "?"
        verdict = "❌ regressed" if comparison.get("failed") else "✅ no regression"
        lines += [
            f"**Against the baseline** (tolerance {_md(tol)}): {verdict}",
            "",
            "| metric | baseline | this run | change | status |",
            "|---|--:|--:|--:|---|",
        ]
        for compared in baseline_rows(comparison):
            status = _md(compared.status)
            lines.append(
                f"| {_md(label(compared.metric))} | {_md(compared.baseline)} "
                f"| {_md(compared.current)} | {_md(compared.change)} "
                f"| {f'**{status}**' if compared.status == 'regressed' else status} |"
            )
        lines.append("")
        for warning in comparison.get("warnings", []) or []:
            lines.append(f"- {_md(warning)}")
        if comparison.get("warnings"):
            lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"
