"""End to end: ``chatcli bench`` runs for real, and tells the truth about the relay.

Short real-time runs of the simulator against the relay bench starts itself, through
``run_bench`` and through the ``chatcli bench`` process, and against small fake relays
defined here that lose, delay, duplicate and reorder deliveries on purpose and count
what they did: bench must report exactly that. The fake relays run on 127.0.0.1 port 0
in a thread with its own event loop (bench's clients live in worker processes).

Exact figures come from the constant-rate schedule: client ``i`` of ``n`` sends seq
``k`` at ``k / rate + i / (n * rate)`` seconds, so with ``RATE`` = 10 messages/s, a 0.5 s
warmup and a 1.5 s measured window every client sends seqs 0..19 and seqs 5..19 fall
in the window. Planned times keep 1/(n * rate) s (16 ms or more) away from the window's
edges, so a send that leaves a few ms late still lands on the same side.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any

import psutil
import pytest
from processes import read_line
from rich.console import Console

from chatcli.bench.metrics import METRICS
from chatcli.bench.report_schema import (
    SCHEMA,
    SCHEMA_VERSION,
    BenchReport,
    dumps_report,
    read_report,
)
from chatcli.bench.runner import BenchOptions, Progress, run_bench
from chatcli.bench.schedule import Schedule
from chatcli.bench.thresholds import parse_threshold
from chatcli.bench.timeline import P99_MIN_ARRIVALS
from chatcli.bench.view import render_summary

HOST = "127.0.0.1"
RATE = 10.0
WARMUP = 0.5
DURATION = 1.5
SEQS_PER_CLIENT = 20  # (WARMUP + DURATION) * RATE
MEASURED_SEQS = range(5, 20)  # planned at or after WARMUP
#: bound on one bench process (cold start, workers, relay, a 2 s run, drain)
CLI_TIMEOUT = 45.0


def short(clients: int, **overrides: Any) -> BenchOptions:
    """The short steady run every test here builds on."""
    options = BenchOptions(clients=clients, rate=RATE, duration=DURATION, warmup=WARMUP)
    return dataclasses.replace(options, **overrides)


def num(report: BenchReport, name: str) -> float:
    """A metric the run must have measured."""
    value = report.metrics[name]
    assert value is not None, f"{name} was not measured"
    return value


def figures(report: BenchReport) -> dict[str, float | None]:
    """The correctness figures, for assertion messages that say everything at once."""
    names = (
        "sent",
        "expected",
        "received",
        "lost",
        "unacked",
        "duplicated",
        "reordered",
        "unexpected",
    )
    return {
        **{name: report.metrics[name] for name in names},
        "errors": report.metrics["errors"],
        "lag_max": report.metrics["lag_max"],
    }


def assert_exact_run(report: BenchReport, clients: int, sent: int | None = None) -> None:
    """Every measured message reached every other member once, in order, and was timed.

    ``sent`` defaults to what the constant-rate schedule of ``short`` measures.
    """
    sent = clients * len(MEASURED_SEQS) if sent is None else sent
    expected = sent * (clients - 1)
    assert figures(report) == {
        **figures(report),
        "sent": sent,
        "expected": expected,
        "received": expected,
        "lost": 0,
        "unacked": 0,
        "duplicated": 0,
        "reordered": 0,
        "unexpected": 0,
        "errors": 0,
    }
    assert report.metrics["loss"] == 0
    assert report.histograms["latency"].count == expected
    assert report.histograms["uncorrected"].count == expected
    assert report.metrics["connected"] == clients


# --------------------------------------------------------------------------------------
# a real run against bench's own relay


def generator_fell_behind(data: dict[str, Any]) -> bool:
    """True when bench called its run invalid because the generator could not keep up.

    This machine is shared: another load can stall the generator, and bench rightly says
    so (exit 3) instead of passing or failing the relay. Checks of the verdict then skip.
    """
    reasons = data["invalid_reasons"]
    return not data["valid"] and all("behind schedule" in r or "of a core" in r for r in reasons)


@pytest.fixture(scope="module")
def steady() -> tuple[BenchReport, list[Progress]]:
    """One short real run (shared: runs are real time) and the progress it showed.

    Run again, once, if a busy machine made the first one invalid.
    """
    seen: list[Progress] = []
    for _ in range(2):
        seen.clear()
        report = run_bench(short(6), lambda p: seen.append(dataclasses.replace(p)))
        if not generator_fell_behind(report.to_dict()):
            break
    return report, seen


def test_real_run_loses_nothing_and_counts_exactly(
    steady: tuple[BenchReport, list[Progress]],
) -> None:
    report, _ = steady
    assert_exact_run(report, 6)
    m = report.metrics
    assert m["offered_per_s"] == 6 * RATE
    assert m["deliveries_per_s"] == pytest.approx(90 * 5 / DURATION)
    assert m["duration_s"] == DURATION
    # latency is measured from the planned send, which is never after the actual send
    for stat in ("p50", "p99", "max"):
        assert num(report, stat) >= num(report, f"uncorrected_{stat}") > 0
    assert num(report, "lag_p50") >= 0
    # the middle of the one-second p99s, over the seconds with a p99's worth of arrivals
    # (300 a second here: the warm-up's edge and the drain do not count)
    assert report.timeline is not None
    counts, p99s = report.timeline.get("latency_count"), report.timeline.get("p99_ms")
    assert counts is not None and p99s is not None
    counted = [
        p for n, p in zip(counts, p99s, strict=True) if n is not None and n >= P99_MIN_ARRIVALS
    ]
    assert counted and num(report, "p99_1s_median") == round(statistics.median(counted), 3)
    assert num(report, "p99_1s_median") <= num(report, "max")
    assert report.histograms["connect"].count == 6
    # bench started the relay, so its resources were measured
    for name in ("relay_cpu_s", "relay_rss_mb", "relay_cpu_us_per_delivery"):
        assert num(report, name) > 0, name
    assert num(report, "generator_cpu_pct") > 0
    if generator_fell_behind(report.to_dict()):
        pytest.skip(f"the machine was too busy: {report.invalid_reasons}")
    assert report.valid and report.outcome == "pass"


def test_real_run_reports_progress_while_running(
    steady: tuple[BenchReport, list[Progress]],
) -> None:
    _, seen = steady
    phases = [p.phase for p in seen]
    assert phases[0] == "starting relay"
    assert "connecting" in phases and "measuring" in phases
    assert phases[-1] == "done"
    assert max(p.connected for p in seen) == 6
    assert max(p.received for p in seen) > 0
    sent = [p.sent for p in seen]
    assert sent == sorted(sent), "the sent counter never goes back"


def test_real_run_report_is_well_formed_json(
    steady: tuple[BenchReport, list[Progress]], tmp_path: Path
) -> None:
    report, _ = steady
    path = tmp_path / "run.json"
    path.write_text(dumps_report(report), "utf-8")
    data = json.loads(path.read_text("utf-8"))
    assert data["schema"] == SCHEMA == "chatcli-bench"
    assert data["schema_version"] == SCHEMA_VERSION == 1
    assert data["outcome"] == report.outcome and data["valid"] is report.valid
    assert data["seed"] == 1
    params = data["params"]
    assert {k: params[k] for k in ("clients", "rate", "duration", "warmup", "seed")} == {
        "clients": 6,
        "rate": RATE,
        "duration": DURATION,
        "warmup": WARMUP,
        "seed": 1,
    }
    assert params["target"] is None and params["scenario"] == "steady"
    env = data["environment"]
    assert {"python", "platform", "cpu_count", "chatcli_version"} <= set(env)
    assert data["units"]["p99"] == "ms" and data["units"]["loss"] == "fraction"
    assert data["histograms"]["latency"]["count"] == 450
    assert data["metrics"]["lost"] == 0 and data["metrics"]["received"] == 450
    # what --baseline reads back is the same report
    again = read_report(path)
    assert again.to_dict() == data
    assert again.histograms["latency"] == report.histograms["latency"]


def test_real_run_summary_renders(steady: tuple[BenchReport, list[Progress]]) -> None:
    report, _ = steady
    out = io.StringIO()
    Console(file=out, width=120, color_system=None).print(render_summary(report))
    text = out.getvalue()
    assert "latency distribution" in text
    assert f"outcome: {report.outcome}" in text
    assert "│ lost" in text and "│ received" in text


# --------------------------------------------------------------------------------------
# fake relays that misbehave on purpose


@dataclasses.dataclass(frozen=True)
class Faults:
    """What a FakeRelay does wrong. Deliveries are to members other than the sender."""

    drop_every: int = 0
    """Drop every Nth delivery of a message whose seq is in ``drop_seqs``."""
    drop_seqs: range = range(0)
    delay: float = 0.0
    """Seconds every msg frame is held before it is written (FIFO per connection)."""
    duplicate_every: int = 0
    """Write every Nth ordinary delivery twice."""
    hold_seqs: frozenset[int] = frozenset()
    """Deliver these seqs only after the sender's next message: one reorder each."""
    refuse_relogin: bool = False
    """Close, without a word, a connection whose hello reuses a name seen before."""
    stall_at: float | None = None
    """SIGSTOP bench's worker processes for ``stall_for`` s once a message planned this
    many seconds after the run's start arrives: a generator that falls behind."""
    stall_for: float = 0.3
    drop_acks: range = range(0)
    """Drop the sender's own copy (its ack) of these seqs: a middlebox that eats acks."""


class _FakeConnection(asyncio.Protocol):
    def __init__(self, relay: FakeRelay) -> None:
        self.relay = relay
        self.loop = relay.loop
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.name: str | None = None
        self.room = "lobby"
        self.held: dict[int, bytes] = {}  # sender -> a msg frame held back
        self.queue: deque[tuple[float, bytes]] = deque()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.write(
            {
                "type": "welcome",
                "server": "fake/0",
                "proto": 1,
                "users": [],
                "rooms": [{"name": "lobby", "users": 0}],
                "hint": "say hello",
            }
        )

    def write(self, frame: dict[str, Any]) -> None:
        assert self.transport is not None
        self.transport.write(json.dumps(frame, separators=(",", ":")).encode() + b"\n")

    def deliver(self, data: bytes) -> None:
        """Write a msg frame now, or after the relay's delay (in order)."""
        assert self.transport is not None
        delay = self.relay.faults.delay
        if not delay:
            self.transport.write(data)
            return
        self.queue.append((self.loop.time() + delay, data))
        if len(self.queue) == 1:
            self.loop.call_at(self.queue[0][0], self._flush)

    def _flush(self) -> None:
        assert self.transport is not None
        now = self.loop.time()
        while self.queue and self.queue[0][0] <= now:
            _, data = self.queue.popleft()
            if not self.transport.is_closing():
                self.transport.write(data)
        if self.queue:
            self.loop.call_at(self.queue[0][0], self._flush)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            if line.strip():
                self.frame(json.loads(line))

    def frame(self, frame: dict[str, Any]) -> None:
        assert self.transport is not None
        relay = self.relay
        kind = frame.get("type")
        if kind == "hello":
            name = frame["name"]
            relay.logins[name] += 1
            if relay.faults.refuse_relogin and relay.logins[name] > 1:
                relay.refused += 1
                self.transport.close()
                return
            self.name, self.room = name, frame.get("room") or "lobby"
            members = relay.rooms.setdefault(self.room, {})
            members[name] = self
            self.write(
                {
                    "type": "ready",
                    "name": name,
                    "room": self.room,
                    "users": sorted(members),
                    "history": [],
                }
            )
        elif kind == "say" and self.name is not None:
            relay.say(self, frame["text"])
        elif kind == "ping":
            self.write({"type": "pong"})
        elif kind == "bye":
            self.leave()
            self.transport.close()

    def leave(self) -> None:
        members = self.relay.rooms.get(self.room, {})
        if self.name is not None and members.get(self.name) is self:
            del members[self.name]

    def connection_lost(self, exc: Exception | None) -> None:
        self.leave()


class FakeRelay:
    """Just enough of the protocol for bench, with faults, counting every one it commits.

    welcome on connect, hello -> ready (users, no history), say -> msg with an id to every
    member of the room including the sender, ping -> pong, bye -> close.
    """

    def __init__(self, faults: Faults) -> None:
        self.faults = faults
        self.loop = asyncio.new_event_loop()
        self.rooms: dict[str, dict[str, _FakeConnection]] = {}
        self.logins: Counter[str] = Counter()
        self.next_id = 0
        self.says = 0
        self.eligible = 0
        self.ordinary = 0
        self.dropped = 0
        self.duplicated = 0
        self.reordered = 0
        self.refused = 0
        self.acks_dropped = 0
        self.start_us: int | None = None  # client 0's seq 0 is planned at the start
        self.stalled: list[int] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def say(self, sender: _FakeConnection, text: str) -> None:
        self.says += 1
        self.next_id += 1
        frame = {
            "type": "msg",
            "id": self.next_id,
            "room": sender.room,
            "from": sender.name,
            "text": text,
            "ts": round(time.time(), 3),
        }
        data = json.dumps(frame, separators=(",", ":")).encode() + b"\n"
        index, seq, planned_us, _ = (int(part) for part in text.split(":", 4)[:4])
        if (index, seq) == (0, 0):
            self.start_us = planned_us
        if self._stall_due(planned_us):
            self._stall()
        for member in list(self.rooms.get(sender.room, {}).values()):
            if member is sender:
                if seq in self.faults.drop_acks:
                    self.acks_dropped += 1
                else:
                    member.deliver(data)  # the sender's ack: tampered with only on demand
            else:
                self.deliver(member, index, seq, data)

    def deliver(self, member: _FakeConnection, sender: int, seq: int, data: bytes) -> None:
        faults = self.faults
        if seq in faults.hold_seqs:
            member.held[sender] = data
            return
        if faults.drop_every and seq in faults.drop_seqs:
            self.eligible += 1
            if self.eligible % faults.drop_every == 0:
                self.dropped += 1
                return
        member.deliver(data)
        held = member.held.pop(sender, None)
        if held is not None:
            member.deliver(held)
            self.reordered += 1
        elif faults.duplicate_every:
            self.ordinary += 1
            if self.ordinary % faults.duplicate_every == 0:
                member.deliver(data)
                self.duplicated += 1

    def _stall_due(self, planned_us: int) -> bool:
        stall_at, started = self.faults.stall_at, self.start_us
        if stall_at is None or started is None or self.stalled:
            return False
        return planned_us - started >= stall_at * 1e6

    def _stall(self) -> None:
        """Freeze the load generator's worker processes for a while (they are our children)."""
        for child in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if any("spawn_main" in part for part in child.cmdline()):
                    child.send_signal(signal.SIGSTOP)
                    self.stalled.append(child.pid)
        for pid in self.stalled:
            self.loop.call_later(self.faults.stall_for, os.kill, pid, signal.SIGCONT)

    async def _start(self) -> int:
        self._server = await self.loop.create_server(lambda: _FakeConnection(self), HOST, 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def _stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for members in self.rooms.values():
            for conn in list(members.values()):
                if conn.transport is not None:
                    conn.transport.abort()

    def __enter__(self) -> FakeRelay:
        self._thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(5)
        return self

    def __exit__(self, *exc: object) -> None:
        for pid in self.stalled:  # never leave a process stopped, whatever happened
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGCONT)
        asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()

    @property
    def target(self) -> tuple[str, int]:
        return HOST, self.port


@pytest.mark.slow
def test_lossy_relay_loss_is_reported_exactly() -> None:
    # Drop every 7th delivery of seqs 6..18: planned 0.6..1.88 s, well inside the window.
    faults = Faults(drop_every=7, drop_seqs=range(6, 19))
    with FakeRelay(faults) as relay:
        options = short(5, targets=(relay.target,), thresholds=(parse_threshold("loss==0"),))
        report = run_bench(options)
    eligible = 5 * len(faults.drop_seqs) * 4
    assert relay.says == 5 * SEQS_PER_CLIENT, "every planned message was sent"
    assert relay.eligible == eligible
    assert relay.dropped == eligible // 7 == 37
    m = report.metrics
    assert figures(report) == {
        **figures(report),
        "sent": 75,
        "expected": 300,
        "received": 300 - 37,
        "lost": 37,
        "unacked": 0,
        "duplicated": 0,
        "reordered": 0,
        "unexpected": 0,
        "errors": 0,
    }
    assert m["loss"] == pytest.approx(37 / 300)
    assert report.histograms["latency"].count == 300 - 37, "lost messages have no latency"
    # a threshold on loss sees the real figure and fails the run
    assert report.thresholds == [
        {
            "expr": "loss==0",
            "metric": "loss",
            "op": "==",
            "limit": 0.0,
            "unit": "fraction",
            "actual": m["loss"],
            "passed": False,
        }
    ]
    assert report.outcome == ("fail" if report.valid else "invalid")
    # bench did not start this relay: it cannot know its resources
    assert m["relay_cpu_s"] is None and m["relay_rss_mb"] is None


@pytest.mark.slow
def test_relay_that_drops_the_senders_copies_fails_loss() -> None:
    # Every delivery to the other members arrives; only the senders' own copies of seqs
    # 8..13 (the acks) vanish. That is a loss the protocol promises never happens.
    faults = Faults(drop_acks=range(8, 14))
    with FakeRelay(faults) as relay:
        options = short(4, targets=(relay.target,), thresholds=(parse_threshold("loss==0"),))
        report = run_bench(options)
    unacked = 4 * len(faults.drop_acks)
    assert relay.acks_dropped == unacked
    m = report.metrics
    assert figures(report) == {
        **figures(report),
        "sent": 60,
        "expected": 180,
        "received": 180,
        "lost": unacked,
        "unacked": unacked,
        "duplicated": 0,
        "reordered": 0,
        "unexpected": 0,
        "errors": 0,
    }
    assert m["loss"] == pytest.approx(unacked / 180)
    assert [(t["metric"], t["passed"]) for t in report.thresholds] == [("loss", False)]
    assert report.outcome == ("fail" if report.valid else "invalid")


@pytest.mark.slow
def test_relay_that_drops_every_ack_is_not_a_clean_run() -> None:
    # A relay that never answers its senders: every measured send is unacked.
    faults = Faults(drop_acks=range(SEQS_PER_CLIENT))
    with FakeRelay(faults) as relay:
        report = run_bench(short(3, targets=(relay.target,)))
    m = report.metrics
    assert (m["sent"], m["received"], m["expected"]) == (45, 90, 90)
    assert (m["unacked"], m["lost"]) == (45, 45)
    assert m["loss"] == pytest.approx(45 / 90)


@pytest.mark.slow
def test_the_draw_mix_is_measured_and_its_thresholds_judged() -> None:
    """``--draw-clients``: browsers draw on bench's own relay (started with a web port)
    beside the chat, every draw is answered, the chat is still exact, and thresholds on
    the draw figures are judged on them (they once read "not measured")."""
    checks = ("draw_errors==0", "draws_acked>0", "p99_1s_median<10s")
    options = short(4, draw_clients=2, draw_rate=10.0)
    report = run_bench(dataclasses.replace(options, thresholds=tuple(map(parse_threshold, checks))))
    m = report.metrics
    assert m["draw_clients"] == 2 and m["draw_errors"] == 0
    assert m["draws_sent"] == m["draws_acked"] and num(report, "draws_sent") >= 2 * 10 * 1.5
    assert_exact_run(report, 4)  # the chat clients skip the board changes they are sent
    assert [(t["metric"], t["passed"]) for t in report.thresholds] == [
        ("draw_errors", True),
        ("draws_acked", True),
        ("p99_1s_median", True),
    ]


@pytest.mark.slow
def test_slow_relay_latency_is_at_least_its_delay() -> None:
    # Poisson arrivals this time: the seeded schedule says exactly what is measured.
    delay = 0.08
    options = short(5, arrivals="poisson", seed=7)
    planned = Schedule(range(5), rate=RATE, duration=WARMUP + DURATION, arrivals="poisson", seed=7)
    measured = sum(1 for when, _, _ in planned if when >= WARMUP)
    with FakeRelay(Faults(delay=delay)) as relay:
        report = run_bench(dataclasses.replace(options, targets=(relay.target,)))
    assert_exact_run(report, 5, sent=measured)
    assert relay.says == planned.emitted
    m = report.metrics
    floor_us = int(delay * 1e6)
    # every single delivery took at least the delay, measured either way
    assert report.histograms["latency"].min is not None
    assert report.histograms["latency"].min >= floor_us
    assert report.histograms["uncorrected"].min is not None
    assert report.histograms["uncorrected"].min >= floor_us
    for stat in ("p50", "p90", "p99", "max", "mean"):
        corrected, uncorrected = m[stat], m[f"uncorrected_{stat}"]
        assert corrected is not None and uncorrected is not None
        assert corrected >= uncorrected >= delay * 1000, stat
    # and not wildly more: the delay is what is measured, not the run's length
    assert num(report, "p50") < delay * 1000 + 500


@pytest.mark.slow
def test_duplicating_and_reordering_relay_is_caught() -> None:
    # Seqs 3, 8 and 13 reach each receiver after the sender's next message; every 9th
    # other delivery arrives twice. Both are counted over the whole run, warmup included.
    faults = Faults(duplicate_every=9, hold_seqs=frozenset({3, 8, 13}))
    with FakeRelay(faults) as relay:
        report = run_bench(short(5, targets=(relay.target,)))
    pairs = 5 * 4  # (sender, receiver)
    assert relay.reordered == 3 * pairs
    ordinary = pairs * SEQS_PER_CLIENT - 2 * relay.reordered  # neither held nor releasing
    assert relay.duplicated == ordinary // 9 == 31
    assert figures(report) == {
        **figures(report),
        "sent": 75,
        "expected": 300,
        "received": 300,
        "lost": 0,
        "duplicated": 31,
        "reordered": 60,
        "unexpected": 0,
        "errors": 0,
    }
    assert report.histograms["latency"].count == 300, "a duplicate is not timed twice"


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_churn_counts_reconnects_the_relay_refused() -> None:
    # The relay closes any second login under a name: every churner's comeback fails.
    with FakeRelay(Faults(refuse_relogin=True)) as relay:
        report = run_bench(
            BenchOptions(
                clients=10,
                rate=RATE,
                # long enough that each churner's first cycle (after 1-3 s) starts more
                # than 1 s before the end, the last moment a cycle may begin
                duration=4.5,
                warmup=0.5,
                scenario="churn",
                targets=(relay.target,),
            )
        )
    assert relay.refused >= 2, "both churners (4 and 9) tried to come back"
    assert report.metrics["errors"] == relay.refused
    assert report.metrics["lost"] == 0


@pytest.mark.slow
def test_generator_stall_drops_nothing_from_the_figures() -> None:
    # Freeze the worker near the end of the window: messages planned before the end go
    # out after it. They were planned in the window, so they are owed, received and
    # timed like the others; the run is invalid (bench fell behind), and says why.
    with FakeRelay(Faults(stall_at=1.85, stall_for=0.3)) as relay:
        report = run_bench(short(5, targets=(relay.target,)))
    assert relay.stalled, "the worker process was found and frozen"
    assert_exact_run(report, 5)
    assert num(report, "lag_max") >= 200
    assert not report.valid and report.outcome == "invalid"
    assert any("behind schedule" in reason for reason in report.invalid_reasons)


# --------------------------------------------------------------------------------------
# scenarios


@pytest.mark.slow
def test_churn_owes_only_what_members_could_get() -> None:
    report = run_bench(
        BenchOptions(clients=10, rate=RATE, duration=2.5, warmup=0.5, scenario="churn")
    )
    m = report.metrics
    planned = 10 * 25  # seqs 5..29 of every client
    assert m["errors"] == 0 and m["unexpected"] == 0
    assert m["lost"] == 0 and m["received"] == m["expected"]
    assert num(report, "expected") > 0
    # the churners (4 and 9) were away for a while: they sent less and were owed less
    assert num(report, "sent") < planned
    assert num(report, "expected") < num(report, "sent") * 9
    # deliveries to a churner on its way in or out are timed too, though not owed
    assert report.histograms["latency"].count >= num(report, "received")


@pytest.mark.slow
def test_idle_measures_relay_memory_per_connection() -> None:
    report = run_bench(
        BenchOptions(clients=200, rooms=4, rate=0, duration=0.5, warmup=0, scenario="idle")
    )
    m = report.metrics
    assert m["connected"] == 200 and m["errors"] == 0
    assert report.histograms["connect"].count == 200
    assert num(report, "relay_mem_per_conn_kb") > 0
    assert m["sent"] == 0 and m["loss"] is None
    assert report.valid, report.invalid_reasons


@pytest.mark.slow
def test_burst_sends_each_second_all_at_once() -> None:
    # rate 5, burst: every client sends 5 messages at 0 s and 5 more at 1 s; the window
    # (0.5 s to 1.5 s) holds the second burst.
    report = run_bench(BenchOptions(clients=4, rate=5, duration=1.0, warmup=0.5, scenario="burst"))
    m = report.metrics
    assert figures(report) == {
        **figures(report),
        "sent": 20,
        "expected": 60,
        "received": 60,
        "lost": 0,
        "duplicated": 0,
        "reordered": 0,
        "unexpected": 0,
        "errors": 0,
    }
    assert report.histograms["latency"].count == 60
    assert m["offered_per_s"] == 4 * 5


@pytest.mark.slow
def test_closed_loop_sends_on_each_echo() -> None:
    report = run_bench(BenchOptions(clients=4, closed=True, duration=1.0, warmup=0.5))
    m = report.metrics
    assert num(report, "sent") > 4, "more than one round trip each"
    assert m["expected"] == num(report, "sent") * 3 == m["received"]
    assert m["lost"] == 0 and m["duplicated"] == 0 and m["reordered"] == 0
    assert m["errors"] == 0
    assert m["offered_per_s"] is None
    assert report.histograms["latency"].count == m["received"]


# --------------------------------------------------------------------------------------
# the chatcli bench command


SHORT_ARGS = ("--clients", "6", "--rate", "10", "--duration", "1", "--warmup", "0.5")
#: with SHORT_ARGS every client's seqs 5..14 are measured
SHORT_SENT, SHORT_EXPECTED = 6 * 10, 6 * 10 * 5


def bench_cli(*args: str, timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """Run ``chatcli bench`` as its own process, bounded."""
    return subprocess.run(
        [sys.executable, "-m", "chatcli", "bench", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "NO_COLOR": "1", "COLUMNS": "120"},
    )


def finished(proc: subprocess.CompletedProcess[str], path: Path, code: int) -> dict[str, Any]:
    """The JSON report of a finished run, after checking its exit code matches."""
    assert "Traceback" not in proc.stderr, proc.stderr
    data: dict[str, Any] = json.loads(path.read_text("utf-8"))
    if proc.returncode == 3 and generator_fell_behind(data):
        pytest.skip(f"the machine was too busy: {data['invalid_reasons']}")
    assert proc.returncode == code, (proc.returncode, proc.stderr[-2000:])
    return data


def doctored(report: BenchReport, path: Path, factor: float) -> Path:
    """``report`` with every comparable figure made ``factor`` times better, as a file.

    factor > 1: a baseline much better than any real run (a run must regress from it);
    factor < 1: much worse (a run cannot regress from it).
    """
    data = report.to_dict()
    for name, value in data["metrics"].items():
        better = METRICS[name].better if name in METRICS else None
        if value is None or better is None:
            continue
        if better == "lower":
            data["metrics"][name] = value / factor if factor > 1 else value / factor + 1000
        else:
            data["metrics"][name] = value * factor
    path.write_text(json.dumps(data), "utf-8")
    return path


@pytest.mark.slow
@pytest.mark.e2e
def test_cli_run_passes_and_writes_the_report(
    steady: tuple[BenchReport, list[Progress]], tmp_path: Path
) -> None:
    baseline = doctored(steady[0], tmp_path / "worse.json", 0.01)
    out = tmp_path / "run.json"
    proc = bench_cli(
        *SHORT_ARGS,
        "--workers", "2",
        "-t", "loss==0",
        "-t", "p99<10s",
        "-t", "p99_1s_median<10s",
        "--baseline", str(baseline),
        "--max-regression", "10%",
        "--json", str(out),
    )  # fmt: skip
    data = finished(proc, out, 0)
    assert data["schema"] == "chatcli-bench" and data["schema_version"] == 1
    assert data["outcome"] == "pass"
    assert data["params"]["workers"] == 2 and data["seed"] == 1
    assert {"python", "platform", "cpu_count", "chatcli_version"} <= set(data["environment"])
    m = data["metrics"]
    # two worker processes, one figure: their logs and histograms merged exactly
    assert (m["sent"], m["expected"], m["received"], m["lost"]) == (
        SHORT_SENT,
        SHORT_EXPECTED,
        SHORT_EXPECTED,
        0,
    )
    assert data["histograms"]["latency"]["count"] == SHORT_EXPECTED
    assert data["histograms"]["connect"]["count"] == 6
    assert [t["passed"] for t in data["thresholds"]] == [True, True, True]
    assert data["thresholds"][2]["actual"] == m["p99_1s_median"] > 0
    assert data["baseline"]["failed"] is False
    assert read_report(out).to_dict() == data
    assert "outcome: pass" in proc.stdout
    assert "report written to" in proc.stderr


@pytest.mark.slow
@pytest.mark.e2e
def test_cli_failing_threshold_exits_1(tmp_path: Path) -> None:
    out = tmp_path / "run.json"
    proc = bench_cli(*SHORT_ARGS, "-t", "p99<0.001ms", "--json", str(out))
    data = finished(proc, out, 1)
    assert data["outcome"] == "fail"
    [result] = data["thresholds"]
    assert result["passed"] is False and result["metric"] == "p99"
    assert result["actual"] == data["metrics"]["p99"] > 0.001
    assert "FAIL p99<0.001ms" in proc.stdout


@pytest.mark.slow
@pytest.mark.e2e
def test_cli_baseline_regression_exits_1(
    steady: tuple[BenchReport, list[Progress]], tmp_path: Path
) -> None:
    baseline = doctored(steady[0], tmp_path / "better.json", 10)
    out = tmp_path / "run.json"
    proc = bench_cli(
        *SHORT_ARGS, "--baseline", str(baseline), "--max-regression", "10%", "--json", str(out)
    )
    data = finished(proc, out, 1)
    assert data["thresholds"] == []
    comparison = data["baseline"]
    assert comparison["failed"] is True and comparison["tolerance"] == 0.1
    regressed = {row["metric"] for row in comparison["rows"] if row["status"] == "regressed"}
    # 300 deliveries in 1 s in any complete run, against a baseline of ten times as many
    assert "deliveries_per_s" in regressed
    assert "REGRESSED deliveries_per_s" in proc.stdout


def one_line_error(proc: subprocess.CompletedProcess[str], code: int, *words: str) -> str:
    """The command failed with ``code`` and said why on one line, without a traceback."""
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if all(w in line for w in words)]
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("-t", "p95<5ms"), ("unknown metric 'p95'", "did you mean")),
        (("-t", "p99<5kg"), ("unit 'kg' does not fit p99",)),
        (("--max-regression", "10"), ("--max-regression takes a percentage",)),
        (("--target", "localhost"), ("Invalid value for '--target'", "HOST:PORT")),
        (("--target", "127.0.0.1:99999"), ("Invalid value for '--target'",)),
        (("--clients", "2", "--workers", "3"), ("--workers must be between",)),
        (("--closed", "--scenario", "churn"), ("--closed does not combine",)),
    ],
)
def test_cli_usage_errors_exit_2(args: tuple[str, ...], words: tuple[str, ...]) -> None:
    one_line_error(bench_cli(*args, timeout=20), 2, *words)


@pytest.mark.e2e
def test_cli_baseline_that_is_not_a_report_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "old.json"
    path.write_text('{"schema": "something-else"}', "utf-8")
    one_line_error(bench_cli("--baseline", str(path), timeout=20), 2, "not a chatcli bench report")


@pytest.mark.e2e
def test_cli_unwritable_json_path_is_refused_before_running(tmp_path: Path) -> None:
    path = tmp_path / "no" / "such" / "dir" / "run.json"
    proc = bench_cli("-c", "2", "-d", "1", "--warmup", "0", "--json", str(path), timeout=30)
    one_line_error(proc, 2, str(path))
    assert "starting relay" not in proc.stderr, "refused up front, not after a run"


@pytest.mark.e2e
def test_cli_unreachable_target_says_so() -> None:
    with socket.socket() as sock:  # bound, never listening: connections are refused
        sock.bind((HOST, 0))
        port = sock.getsockname()[1]
        proc = bench_cli("-c", "2", "-d", "1", "--warmup", "0", "--target", f"{HOST}:{port}")
    # a run that could not happen is invalid (exit 3), not a failed one (issue 12)
    line = one_line_error(proc, 3, f"{HOST}:{port}", "connect")  # (the header names it too)
    assert line.startswith("chatcli: no client could connect")


@pytest.mark.slow
@pytest.mark.e2e
def test_cli_ctrl_c_stops_everything_quietly() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "chatcli", "bench", "-c", "4", "--rate", "5", "-d", "20"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "NO_COLOR": "1", "PYTHONUNBUFFERED": "1"},
        start_new_session=True,  # its own process group, as a terminal's Ctrl-C reaches
    )
    try:
        assert proc.stderr is not None
        # wait (bounded) for the run itself, however slowly a busy machine gets there
        assert read_line(proc.stderr, CLI_TIMEOUT).startswith(b"chatcli bench: target ")
        phases = [read_line(proc.stderr, CLI_TIMEOUT)]
        assert b"[starting relay]" in phases[0]
        while not phases[-1].startswith((b"[warmup]", b"[measuring]")):
            phases.append(read_line(proc.stderr, CLI_TIMEOUT))
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_ctrl_c_python_dropped_still_stops_the_wait_for_the_workers() -> None:
    """CPython only reports ("Exception ignored") a KeyboardInterrupt raised inside a
    finalizer. Bench's SIGINT handler remembers the Ctrl-C, so the wait for the workers
    stops on it instead of running on to its end (a rare CI failure: bench went on
    measuring after Ctrl-C)."""
    import multiprocessing

    from chatcli.bench import runner

    class Finalized:
        def __del__(self) -> None:
            runner.interrupted(signal.SIGINT, None)

    workers = object.__new__(runner._Workers)
    parent, child = multiprocessing.Pipe()
    workers.pipes, workers.procs = [parent], []
    runner.INTERRUPTED.clear()
    try:
        Finalized()  # gone at once: its KeyboardInterrupt is dropped, as CPython does
        with pytest.raises(KeyboardInterrupt):  # without the flag: ChatError after 5 s
            workers.collect(runner.WorkerResult, timeout=5.0)
    finally:
        runner.INTERRUPTED.clear()
        parent.close()
        child.close()


# ------------------------------------------------------------------ the command, stopped


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc")
def test_bench_unwritable_json_is_a_usage_error_before_the_run() -> None:
    # /proc takes no new files, even for root: learn it before the run, not after it
    path = "/proc/chatcli-review.json"
    proc = bench_cli("-c", "2", "--rate", "2", "-d", "5", "--warmup", "0", "--json", path)
    one_line_error(proc, 2, path)
    assert "starting relay" not in proc.stderr


@pytest.mark.slow
@pytest.mark.e2e
def test_bench_sigterm_stops_the_relay_and_the_workers() -> None:
    # CI timeouts, `timeout` and `kill` send SIGTERM to bench alone: its relay and its
    # worker processes must not outlive it
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "chatcli",
            "bench",
            "--warmup",
            "0",
            "-c",
            "2",
            "--rate",
            "2",
            "-d",
            "30",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "NO_COLOR": "1", "PYTHONUNBUFFERED": "1"},
        start_new_session=True,
    )
    children: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            children = psutil.Process(proc.pid).children(recursive=True)
            commands = [" ".join(c.cmdline()) for c in children if c.is_running()]
            if any("serve" in c for c in commands) and any("spawn_main" in c for c in commands):
                break
            time.sleep(0.2)
        else:
            pytest.fail("bench did not start its relay and a worker within 30 s")
        time.sleep(1.0)  # the run is going
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        _, alive = psutil.wait_procs(children, timeout=15)
        assert not alive, [" ".join(p.cmdline()) for p in alive]
        assert proc.returncode == 128 + signal.SIGTERM, err[-1000:]
        assert "Traceback" not in err, err[-2000:]
    finally:
        for child in children:
            with contextlib.suppress(psutil.Error):
                child.kill()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
