"""The CI outputs of bench: per-second series, HTML report, JUnit XML, Markdown summary.

Saved reports in tests/data/bench/ (a failed run with a baseline comparison, hostile
strings and per-second series; an older baseline run without series; an invalid run
with control characters in its reasons) check each format against the JSON it came
from; one short real run checks the whole chain, from the workers' samples to the files.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import pytest

from chatcli.bench.accounting import ClientLog, account
from chatcli.bench.baseline import GATED_METRICS, compare_reports
from chatcli.bench.histogram import Histogram, bucket_highest, bucket_index, bucket_lowest
from chatcli.bench.report_facts import figure, key_figures, label
from chatcli.bench.report_html import render_html
from chatcli.bench.report_junit import render_junit
from chatcli.bench.report_md import render_markdown
from chatcli.bench.report_schema import BenchReport, dumps_report, loads_report, read_report
from chatcli.bench.sampling import RelaySampler, WorkerSampler
from chatcli.bench.schedule import Schedule
from chatcli.bench.svg import nice_ticks
from chatcli.bench.timeline import (
    MAX_LOSS_INTERVALS,
    Timeline,
    build_timeline,
    lost_per_interval,
    planned_per_interval,
)
from chatcli.errors import UsageError

DATA = Path(__file__).parent / "data" / "bench"
CLI_TIMEOUT = 60.0


def load(name: str) -> BenchReport:
    return read_report(DATA / f"{name}.json")


def raw(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA / f"{name}.json").read_text("utf-8"))
    return data


# --------------------------------------------------------------------------------------
# per-second series


class FakeClient:
    def __init__(self, live: bool = True) -> None:
        self.live = live


class FakeWorker:
    """The attributes WorkerSampler reads, set by hand."""

    def __init__(self) -> None:
        self.sent = self.acked = self.received = 0
        self.errors = self.disconnects = self.connect_failures = 0
        self.latency = Histogram()
        self.clients = {0: FakeClient(), 1: FakeClient()}
        self.logs = {0: ClientLog(0), 1: ClientLog(1)}
        self.folded = 0

    def fold(self) -> None:
        self.folded += 1


def test_worker_sampler_counts_per_interval_and_new_latencies_only() -> None:
    now = [0]
    sampler = WorkerSampler(start_us=1_000_000, clock_us=lambda: now[0])
    worker = FakeWorker()
    now[0] = 2_000_000  # t = 1 s
    worker.sent, worker.acked, worker.received = 10, 8, 30
    worker.latency.record_many([1000, 1000, 5000])
    sampler.sample(worker, 1)
    now[0] = 3_000_000
    worker.sent, worker.acked, worker.received, worker.errors = 25, 25, 70, 1
    worker.latency.record_many([1000, 9000])
    worker.clients[1].live = False
    sampler.sample(worker, 2)
    now[0] = 3_100_000  # a sliver after the last whole second: replaces interval 2
    worker.disconnects = 1
    sampler.sample(worker)
    assert worker.folded == 3
    first, last = sampler.rows
    assert (first["i"], first["t"], first["sent"], first["unacked"]) == (1, 1.0, 10, 2)
    assert first["latency"] == [[1000, 2], [bucket_lowest(bucket_index(5000)), 1]]
    assert (last["i"], last["t"], last["sent"], last["errors"], last["connected"]) == (
        2,
        2.1,
        25,
        2,
        1,
    )
    # only what is new since interval 1, the replaced sample's included
    assert last["latency"] == [[1000, 1], [bucket_lowest(bucket_index(9000)), 1]]


def test_build_timeline_merges_workers_and_carries_counters_forward() -> None:
    def row(i: int, t: float, sent: int, latency: list[list[int]]) -> dict[str, Any]:
        return {
            "i": i, "t": t, "sent": sent, "acked": sent, "deliveries": 2 * sent, "errors": 0,
            "duplicated": 0, "reordered": 0, "unacked": 0, "connected": 5, "latency": latency,
        }  # fmt: skip

    a = [row(1, 1.0, 10, [[1000, 3]]), row(2, 2.0, 20, []), row(3, 2.6, 25, [[2000, 1]])]
    b = [row(1, 1.001, 5, [[1000, 1], [3000, 1]]), row(2, 2.3, 9, [])]  # b ended earlier
    timeline = build_timeline(
        [a, b],
        warmup=1.0,
        duration=1.5,
        planned=lambda n: [15.0] * n,
        lost=lambda n: [None, 0.0, 0.0][:n],
        relay=lambda n: ([50.0] * n, [None] * n),
    )
    assert timeline.t == [1.001, 2.3, 2.6]
    assert timeline.get("sent") == [15.0, 14.0, 5.0]  # b's 9 counts on in interval 3
    assert timeline.get("deliveries") == [30.0, 28.0, 10.0]
    assert timeline.get("connected") == [10.0, 10.0, 10.0]
    assert timeline.get("latency_count") == [5.0, 0.0, 1.0]
    # bucket resolution: the highest value of the bucket, as Histogram reports it
    assert timeline.get("p50_ms") == [top(1000), None, top(2000)]
    assert timeline.get("max_ms") == [top(3000), None, top(2000)]
    assert timeline.get("relay_cpu_pct") == [50.0] * 3
    assert timeline.rate("sent") == [
        pytest.approx(15 / 1.001),
        pytest.approx(14 / 1.299),
        pytest.approx(5 / 0.3),
    ]
    assert (timeline.measure_from_s, timeline.measure_until_s) == (1.0, 2.5)


def top(us: int) -> float:
    """The value (ms) a histogram reports for ``us``: its bucket's highest."""
    return bucket_highest(bucket_index(us)) / 1000


def test_planned_per_interval_is_the_whole_schedule() -> None:
    args = {"rate": 7.0, "seconds": 3.0, "seed": 3, "intervals": 4}
    for arrivals in ("constant", "poisson", "burst"):
        planned = planned_per_interval(10, arrivals=arrivals, **args)  # type: ignore[arg-type]
        everything = Schedule(range(10), rate=7.0, duration=3.0, arrivals=arrivals, seed=3)  # type: ignore[arg-type]
        assert sum(v or 0 for v in planned) == len(list(everything)), arrivals
        assert planned[3] == 0
    assert planned_per_interval(10, arrivals="constant", **args)[:3] == [70.0, 70.0, 70.0]


def test_lost_per_interval_adds_up_to_the_run() -> None:
    sender, receiver = ClientLog(0), ClientLog(1)
    for log in (sender, receiver):
        log.joining("r0", 99.0)
        log.joined(99.5)
    for seq in range(40):  # 10 a second from t = 100
        sender.sent(seq, 100.0 + seq / 10)
    for seq in range(40):
        if seq not in (3, 7, 25):
            receiver.delivered(0, seq)
    logs = [sender, receiver]
    total = account(logs, since=100.5, until=103.5).lost
    per = lost_per_interval(
        logs, start=100.0, since=100.5, until=103.5, intervals=5, in_flight=0.5, total_lost=total
    )
    assert total == 2  # seq 3 was planned in the warm-up
    assert per == [1.0, 0.0, 1.0, 0.0, None]
    assert lost_per_interval(
        logs, start=100.0, since=100.5, until=103.5, intervals=2, in_flight=0.5, total_lost=0
    ) == [0.0, 0.0]
    many = MAX_LOSS_INTERVALS + 1  # too costly to account one by one: not measured
    assert (
        lost_per_interval(
            logs, start=100.0, since=100.5, until=103.5, intervals=many, in_flight=0.5, total_lost=2
        )
        is None
    )


def test_relay_sampler_records_once_a_second_from_the_start() -> None:
    class Relay:
        cpu = 0.0
        samples = 0

        def sample(self) -> None:
            self.samples += 1

        def cpu_seconds(self) -> float:
            return self.cpu

        def rss(self) -> int:
            return 40 << 20

    relay, now = Relay(), [10.0]
    sampler = RelaySampler(relay, clock=lambda: now[0])
    sampler.tick()  # before the start: peak memory only
    sampler.begin(10.5)
    for t, cpu in ((10.6, 0.1), (10.9, 0.2), (11.6, 0.35), (12.5, 0.85), (14.7, 1.0)):
        now[0], relay.cpu = t, cpu
        sampler.tick()
    assert relay.samples == 6
    assert [p[0] for p in sampler.points] == [0, 1, 2, 4]
    cpu, rss = sampler.series(4)
    assert cpu == [pytest.approx(25.0), pytest.approx(55.556), None, pytest.approx(6.818)]
    assert rss == [40.0, 40.0, None, 40.0]


def test_the_median_p99_counts_only_the_seconds_with_enough_arrivals() -> None:
    """p99_1s_median: the middle of the one-second p99s. A second with too few arrivals
    for a p99 (the warm-up's edge, the drain) does not count; none at all is None."""
    timeline = Timeline(
        t=[1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        series={
            "latency_count": [0.0, 500.0, 500.0, 500.0, 99.0, 500.0],
            "p99_ms": [None, 3.0, 40.0, 4.0, 90.0, 5.0],
        },
    )
    assert timeline.median_p99() == 4.5  # of 3, 40, 4 and 5: one noisy second moves it little
    timeline.series["latency_count"] = [0.0, 99.0, 0.0, 0.0, 0.0, 0.0]
    assert timeline.median_p99() is None
    assert Timeline(t=[], series={}).median_p99() is None  # a report without the series


def test_timeline_round_trips_and_bad_ones_are_refused() -> None:
    report = load("failed")
    again = loads_report(dumps_report(report))
    assert again.timeline == report.timeline
    data = raw("failed")
    data["timeline"]["sent"] = [1.0]
    with pytest.raises(UsageError, match=r"timeline\.sent must be a list as long"):
        BenchReport.from_dict(data, "x.json")
    data["timeline"] = {"t": ["soon"]}
    with pytest.raises(UsageError, match=r"x\.json: timeline\.t"):
        BenchReport.from_dict(data, "x.json")
    assert load("baseline").timeline is None  # older reports have none: still readable


def test_nice_ticks_are_round_and_cover_the_range() -> None:
    assert nice_ticks(0, 7.3) == [0, 2, 4, 6, 8]
    assert nice_ticks(0, 1) == [0, 0.25, 0.5, 0.75, 1]
    ticks = nice_ticks(0, 123_456)
    assert ticks[0] == 0 and ticks[-1] >= 123_456 and len(ticks) <= 7


# --------------------------------------------------------------------------------------
# HTML


VOID = {"meta", "br", "hr", "img", "input", "link", "wbr", "col", "area", "base", "source"}
SVG_EMPTY_OK = {"line", "rect", "circle", "polyline", "path"}


class Page(HTMLParser):
    """A strict reader: every element closed in order, text and attributes collected."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in VOID | SVG_EMPTY_OK:
            self.errors.append(f"<{tag}/> is not an empty element")

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    @property
    def words(self) -> str:
        return " ".join(" ".join(self.text).split())


def parse(html: str) -> Page:
    page = Page()
    page.feed(html)
    page.close()
    assert page.errors == [], page.errors[:5]
    assert page.stack == [], page.stack
    return page


def assert_self_contained(html: str, page: Page) -> None:
    for tag, attrs in page.tags:
        assert tag not in ("script", "link", "iframe", "object", "embed", "img"), tag
        for name, value in attrs.items():
            assert not name.startswith("on"), (tag, name)  # no event handler, no script
            if name in ("src", "href", "xlink:href", "action", "srcset", "data"):
                pytest.fail(f"<{tag} {name}={value!r}> loads something")
    assert not re.search(r"https?:|//[a-z0-9]|url\(|@import", html, re.IGNORECASE)


@pytest.mark.parametrize(
    ("name", "baseline"), [("failed", "baseline"), ("failed", None), ("invalid", None)]
)
def test_html_is_well_formed_self_contained_and_shows_the_json(
    name: str, baseline: str | None
) -> None:
    report = load(name)
    html = render_html(report, load(baseline) if baseline else None)
    page = parse(html)
    assert_self_contained(html, page)
    for svg in re.findall(r"<svg.*?</svg>", html, re.DOTALL):
        ET.fromstring(svg)  # every chart is well-formed XML too
    words = page.words
    data = raw(name)
    for t in data["thresholds"]:
        assert t["expr"] in words
        assert figure(t["metric"], t["actual"]) in words
    for metric, value in key_figures(report):
        assert f"{label(metric)} {value}" in words
    for fact in ("clients", "rooms", "seed", "workers", "chatcli", "python"):
        assert fact in words
    assert f"{data['params']['clients']}" in words and data["environment"]["python"] in words
    if report.invalid_reasons:
        assert "INVALID" in words and "the load generator used 97% of a core" in words
        # escape sequences and control characters removed, markup shown as text
        assert not re.search("[\x00-\x08\x1b\x7f]|\\[31m", html)
        assert "red <b>x</b> & more" in words


def test_html_escapes_every_untrusted_string() -> None:
    html = render_html(load("failed"), load("baseline"))
    page = parse(html)
    assert not any(tag in ("script", "img", "b") for tag, _ in page.tags)
    words = page.words
    assert "evil<script>alert(1)</script>|x:7777" in words  # the target, as text
    assert "<img src=x onerror=alert(1)>" in words  # an error code, as text
    assert "errors <= 5 | `x` *y*" in words


def test_html_draws_the_series_and_the_baseline_overlay() -> None:
    report, baseline = load("failed"), load("baseline")
    alone = render_html(report)
    both = render_html(report, baseline)
    for title in (
        "Latency over time",
        "Send rate: planned and actual",
        "Deliveries per second",
        "Latency distribution",
        "Loss, duplicates, reorders, errors",
        "Unacknowledged messages",
        "Connect times",
        "Relay CPU",
        "Relay memory",
    ):
        assert f"<h3>{title}</h3>" in alone
    assert alone.count("<polyline") >= 12
    assert not re.search(r'class="[^"]*dashed', alone)  # no baseline, nothing dashed
    # the baseline has no series (an older report) but its distributions are overlaid
    assert both.count('class="line c2 dashed"') == 2
    assert "baseline 0.4 s (+37.5%)" in parse(both).words  # relay CPU card
    # the per-second table holds every interval of the JSON
    rows = re.findall(r"<tr><td class=\"n\">(\d+\.\d\d)</td>", alone)
    assert [float(t) for t in rows] == raw("failed")["timeline"]["t"]


def test_html_of_a_report_without_series_says_so() -> None:
    html = render_html(load("baseline"))
    assert "has no per-second series" in parse(html).words
    assert "<h3>Latency over time</h3>" not in html
    assert "<h3>Latency distribution</h3>" in html


# --------------------------------------------------------------------------------------
# JUnit XML


def junit(report: BenchReport) -> ET.Element:
    root = ET.fromstring(render_junit(report).encode("utf-8"))
    assert root.tag == "testsuites"
    [suite] = root.findall("testsuite")
    cases = suite.findall("testcase")
    failed = [c for c in cases if c.find("failure") is not None]
    for element in (root, suite):
        assert element.get("tests") == str(len(cases))
        assert element.get("failures") == str(len(failed))
        assert element.get("errors") == "0"
    for case in cases:
        assert case.get("classname", "").startswith("chatcli.bench.") and case.get("name")
        assert {child.tag for child in case} <= {"failure"}
        for failure in case.findall("failure"):
            assert failure.get("message") and failure.get("type")
    return suite


def test_junit_has_a_case_per_check_and_a_failure_per_failed_one() -> None:
    data = raw("failed")
    suite = junit(load("failed"))
    by_class: dict[str, list[ET.Element]] = {}
    for case in suite.findall("testcase"):
        by_class.setdefault(case.get("classname", ""), []).append(case)
    assert len(by_class["chatcli.bench.validity"]) == 1
    assert by_class["chatcli.bench.validity"][0].find("failure") is None
    thresholds = by_class["chatcli.bench.thresholds"]
    assert [c.get("name") for c in thresholds] == [t["expr"] for t in data["thresholds"]]
    assert [c.find("failure") is not None for c in thresholds] == [
        not t["passed"] for t in data["thresholds"]
    ]
    loss = thresholds[1].find("failure")
    assert loss is not None and loss.get("message") == "loss measured 1%, required == 0%"
    rows = data["baseline"]["rows"]
    compared = by_class["chatcli.bench.baseline"]
    assert len(compared) == len(rows)
    assert sum(c.find("failure") is not None for c in compared) == sum(
        r["status"] == "regressed" for r in rows
    )
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["outcome"] == "fail" and props["clients"] == "20"
    assert props["target"] == "evil<script>alert(1)</script>|x:7777"


def test_junit_invalid_run_fails_validity_and_strips_what_xml_cannot_carry() -> None:
    suite = junit(load("invalid"))
    validity = suite.find("testcase[@classname='chatcli.bench.validity']")
    assert validity is not None
    failure = validity.find("failure")
    assert failure is not None and failure.get("type") == "invalid"
    assert failure.get("message") == ("the load generator used 97% of a core red  <b>x</b> & more")


# --------------------------------------------------------------------------------------
# Markdown


def table(md: str, header: str) -> list[list[str]]:
    """The cells of the Markdown table whose header row starts with ``header``."""
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = re.split(r"(?<!\\)\|", line)[1:-1]
        rows.append([c.strip() for c in cells])
    width = len(re.split(r"(?<!\\)\|", lines[start])) - 2
    assert all(len(r) == width for r in rows), rows
    return rows


def unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def test_markdown_summary_matches_the_json() -> None:
    report, data = load("failed"), raw("failed")
    md = render_markdown(report, load("baseline"))
    assert md.splitlines()[0] == "### chatcli bench: ❌ failed"
    assert "20 clients · 2 rooms · 10.0 msg/s per client · 5.0 s (+1.0 s warm-up)" in md
    figures = table(md, "| figure |")
    assert [(unescape(r[0]), unescape(r[1])) for r in figures] == [
        (label(m), figure(m, data["metrics"][m])) for m, _ in key_figures(report)
    ]
    p99 = next(r for r in figures if r[0] == "latency p99")
    before, now = raw("baseline")["metrics"]["p99"], data["metrics"]["p99"]
    assert p99[2:] == [figure("p99", before), f"{(now - before) / before:+.1%}"]
    thresholds = table(md, "| | threshold |")
    assert [unescape(r[1]) for r in thresholds] == [t["expr"] for t in data["thresholds"]]
    assert [r[0] == "✅" for r in thresholds] == [t["passed"] for t in data["thresholds"]]
    compared = table(md, "| metric | baseline |")
    assert [r[-1].strip("*") for r in compared] == [r["status"] for r in data["baseline"]["rows"]]
    assert "**Against the baseline** (tolerance 10%): ❌ regressed" in md
    assert "<script>" not in md and "\\<script\\>" in md


def test_markdown_of_a_passing_and_an_invalid_run() -> None:
    md = render_markdown(load("baseline"))
    assert md.startswith("### chatcli bench: ✅ passed\n")
    assert "| figure | this run |" in md and "baseline" not in md.split("**Thresholds**")[0]
    invalid = render_markdown(load("invalid"))
    assert invalid.startswith("### chatcli bench: ⚠️ invalid")
    assert "- ⚠️ invalid: the load generator used 97% of a core" in invalid
    assert "\x1b" not in invalid and "\x00" not in invalid and "[31m" not in invalid


def test_report_modules_import_no_event_loop_socket_or_ui() -> None:
    code = (
        "import sys, chatcli.bench.report_html, chatcli.bench.report_junit, "
        "chatcli.bench.report_md, chatcli.bench.timeline\n"
        "print(sorted({'asyncio', 'socket', 'click', 'rich', 'uvloop'} & set(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    )
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------------------
# the commands


def chatcli(*args: str, timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chatcli", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "NO_COLOR": "1", "COLUMNS": "120"},
    )


@pytest.mark.e2e
def test_bench_report_renders_saved_json(tmp_path: Path) -> None:
    html, xml, md = tmp_path / "r.html", tmp_path / "r.xml", tmp_path / "r.md"
    proc = chatcli(
        "bench", "report", str(DATA / "failed.json"), "--baseline", str(DATA / "baseline.json"),
        "--max-regression", "10%", "--html", str(html), "--junit", str(xml),
        "--summary-md", str(md),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("written: ") == 3
    # the comparison is made again, against the baseline given, and drawn beside the run
    report, baseline = load("failed"), load("baseline")
    report.baseline = compare_reports(report, baseline, 0.10).to_dict()
    assert html.read_text("utf-8") == render_html(report, baseline)
    assert md.read_text("utf-8") == render_markdown(report, baseline)
    assert xml.read_text("utf-8") == render_junit(report)
    text = md.read_text("utf-8")
    assert len(table(text, "| metric | baseline |")) == len(GATED_METRICS)
    assert "parameters differ from the baseline: target" in text
    ET.fromstring(xml.read_bytes())


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("bench", "report", str(DATA / "failed.json")), "nothing to write"),
        (("bench", "-c", "3", "report", str(DATA / "failed.json")), "--clients belong to a run"),
        (("bench", "report", "missing.json", "--html", "x.html"), "does not exist"),
        (
            (
                "bench",
                "report",
                str(DATA / "failed.json"),
                "--max-regression",
                "5%",
                "--html",
                "x.html",
            ),
            "--max-regression needs --baseline",
        ),
    ],
)
def test_bench_report_usage_errors_exit_2(args: tuple[str, ...], words: str) -> None:
    proc = chatcli(*args, timeout=20)
    assert proc.returncode == 2, proc.stderr
    assert words in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.e2e
def test_real_run_writes_every_format_consistently(tmp_path: Path) -> None:
    paths = {ext: tmp_path / f"run.{ext}" for ext in ("json", "html", "xml", "md")}
    proc = chatcli(
        "bench", "--clients", "4", "--rate", "10", "--duration", "2", "--warmup", "0.5",
        "-t", "loss==0", "-t", "p99<0.001ms",
        "--json", str(paths["json"]), "--report", str(paths["html"]),
        "--junit", str(paths["xml"]), "--summary-md", str(paths["md"]),
    )  # fmt: skip
    assert "Traceback" not in proc.stderr, proc.stderr
    data = json.loads(paths["json"].read_text("utf-8"))
    if proc.returncode == 3 and all("behind" in r or "core" in r for r in data["invalid_reasons"]):
        pytest.skip(f"the machine was too busy: {data['invalid_reasons']}")
    assert proc.returncode == 1, proc.stderr  # p99 < 1 µs cannot hold
    assert proc.stderr.count("report written to") == 4
    # the series add up to the run's totals
    timeline = Timeline.from_dict(data["timeline"])
    planned, sent = timeline.get("planned"), timeline.get("sent")
    assert planned is not None and sent is not None
    assert sum(v or 0 for v in planned) == sum(v or 0 for v in sent) == 4 * 10 * 2.5
    counts = timeline.get("latency_count")
    assert (
        counts is not None and sum(v or 0 for v in counts) == data["histograms"]["latency"]["count"]
    )
    lost = timeline.get("lost")
    assert lost is not None and sum(v or 0 for v in lost) == data["metrics"]["lost"] == 0
    assert timeline.get("relay_cpu_pct") is not None  # bench started the relay
    assert len(timeline.t) >= 3 and timeline.t[-1] >= 2.5
    # each file says the same as the JSON
    report = read_report(paths["json"])
    html = paths["html"].read_text("utf-8")
    assert html == render_html(report)
    page = parse(html)
    assert_self_contained(html, page)
    assert "p99<0.001ms" in page.words and "loss==0" in page.words
    suite = junit(report)
    failures = suite.findall("testcase[@classname='chatcli.bench.thresholds']/failure")
    assert len(failures) == 1
    assert paths["xml"].read_text("utf-8") == render_junit(report)
    assert paths["md"].read_text("utf-8") == render_markdown(report)
    # and `bench report` renders the same page later from the JSON alone
    later = tmp_path / "later.html"
    proc = chatcli("bench", "report", str(paths["json"]), "--html", str(later))
    assert proc.returncode == 0, proc.stderr
    assert later.read_text("utf-8") == html


@pytest.mark.e2e
@pytest.mark.parametrize("option", ["--report", "--junit", "--summary-md"])
def test_unwritable_output_is_refused_before_running(option: str, tmp_path: Path) -> None:
    path = tmp_path / "no" / "such" / "dir" / "out"
    proc = chatcli("bench", "-c", "2", "-d", "30", "--warmup", "0", option, str(path), timeout=20)
    assert proc.returncode == 2, proc.stderr
    assert f"{option} {path}: no such directory" in proc.stderr
