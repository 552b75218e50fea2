"""``bench --target a,b``: clients spread round-robin over several relays, cross-node
deliveries counted beside the total, the clients of each relay reported.

The accounting is proven on synthetic logs where senders and receivers sit on different
relays (so a non-zero cross-node count is checked exactly); a real run against two
standalone ``chatcli serve`` shows the figures end to end: two servers that share
nothing deliver nothing across, and that shows as exactly the cross-node share lost.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import click
import pytest
from processes import EXIT_TIMEOUT, chatcli, serve_process

from chatcli.bench.accounting import ClientLog, account
from chatcli.bench.metrics import METRICS
from chatcli.bench.report_facts import run_facts, target_text
from chatcli.bench.report_html import render_html
from chatcli.bench.report_md import render_markdown
from chatcli.bench.report_schema import BenchReport, loads_report
from chatcli.bench.runner import BenchOptions, target_rows
from chatcli.bench.worker import target_of
from chatcli.cli.bench import _targets
from chatcli.errors import UsageError

HOST = "127.0.0.1"


def room(clients: int) -> list[ClientLog]:
    logs = [ClientLog(i) for i in range(clients)]
    for log in logs:
        log.joining("lobby", 0.0)
        log.joined(0.0)
    return logs


def test_clients_go_round_robin_over_the_targets() -> None:
    assert [target_of(i, 3) for i in range(7)] == [0, 1, 2, 0, 1, 2, 0]
    rows = target_rows((("a", 1), ("::1", 2)), 5, [3, 1])
    assert rows == [
        {"target": "a:1", "clients": 3, "connected": 3},
        {"target": "[::1]:2", "clients": 2, "connected": 1},
    ]


def test_cross_node_deliveries_are_counted_exactly_beside_the_total() -> None:
    # 4 clients, 2 relays: 0 and 2 on relay 0, 1 and 3 on relay 1. Each sends seqs 0..4.
    logs = room(4)
    for log in logs:
        for seq in range(5):
            log.sent(seq, 1.0 + seq)
    # every delivery arrives, except: client 1 misses seqs 3, 4 of client 0 (cross) and
    # client 2 misses seq 0 of client 0 (same relay)
    missing = {(1, 0, 3), (1, 0, 4), (2, 0, 0)}
    for receiver in logs:
        for sender in range(4):
            for seq in range(5):
                if sender != receiver.client and (receiver.client, sender, seq) not in missing:
                    receiver.delivered(sender, seq)
    counts = account(logs, target_of=lambda i: target_of(i, 2))
    # owed: 4 senders x 5 seqs x 3 others = 60; each receiver has 2 others across
    assert (counts.expected, counts.received, counts.lost) == (60, 57, 3)
    assert counts.cross_node_expected == 4 * 5 * 2
    assert counts.cross_node == 40 - 2
    figures = counts.metrics()
    assert figures["cross_node"] == 38.0 and figures["cross_node_expected"] == 40.0
    assert set(figures) <= set(METRICS)
    # the same logs as one relay: the totals are the same, no cross-node figures
    alone = account(logs)
    assert (alone.expected, alone.received, alone.lost) == (60, 57, 3)
    assert alone.cross_node is None and "cross_node" not in alone.metrics()


def test_each_client_counted_on_its_own_relay() -> None:
    # three relays, 3 clients: everything a client gets from the others crosses
    logs = room(3)
    for log in logs:
        log.sent(0, 1.0)
    for receiver in logs:
        for sender in range(3):
            if sender != receiver.client:
                receiver.delivered(sender, 0)
    counts = account(logs, target_of=lambda i: target_of(i, 3))
    assert counts.cross_node == counts.received == counts.expected == 6


def test_the_target_option_takes_lists_and_repeats() -> None:
    ctx = click.Context(click.Command("bench"))
    param = click.Option(["--target"], multiple=True)
    assert _targets(ctx, param, ("a:1,b:2", "[::1]:3", "a:1")) == (("a", 1), ("b", 2), ("::1", 3))
    assert _targets(ctx, param, ()) == ()
    with pytest.raises(click.BadParameter, match="no port: expected HOST:PORT"):
        _targets(ctx, param, ("a:1,b",))


def test_params_and_report_say_every_target() -> None:
    one = BenchOptions(targets=((HOST, 1),)).params()
    assert one["target"] == f"{HOST}:1" and "targets" not in one  # as before
    two = BenchOptions(targets=((HOST, 1), ("::1", 2))).params()
    assert two["target"] == f"{HOST}:1,[::1]:2" and two["targets"] == [f"{HOST}:1", "[::1]:2"]
    report = BenchReport(params=two, metrics={"cross_node": 0.0, "cross_node_expected": 10.0})
    report.targets = target_rows(((HOST, 1), ("::1", 2)), 3, [2, 1])
    again = loads_report(json.dumps(report.to_dict()))
    assert again.targets == report.targets
    assert target_text(again) == f"{HOST}:1 (2/2 clients), [::1]:2 (1/1 clients)"
    assert ("target", target_text(again)) in [(f.name, f.value) for f in run_facts(again)]
    markdown = render_markdown(again)
    assert "(2/2 clients)" in markdown and "cross-node deliveries" in markdown
    page = render_html(again)
    assert "[::1]:2 (1/1 clients)" in page and "cross-node deliveries" in page
    with pytest.raises(UsageError, match="'targets'"):
        loads_report(json.dumps({**report.to_dict(), "targets": [{"target": 1}]}))


@contextmanager
def two_servers() -> Iterator[list[int]]:
    with ExitStack() as stack:
        ports = [stack.enter_context(serve_process("--store", "memory"))[1] for _ in range(2)]
        yield ports


@pytest.mark.slow
@pytest.mark.e2e
def test_bench_spreads_its_clients_over_two_servers_and_counts_across(tmp_path: Path) -> None:
    out = tmp_path / "run.json"
    with two_servers() as (a, b):
        proc = chatcli(
            "bench", "--target", f"{HOST}:{a},{HOST}:{b}", "-c", "4", "--rate", "5",
            "-d", "1", "--warmup", "0.5", "--json", str(out), "--summary-md",
            str(tmp_path / "run.md"),
        )  # fmt: skip
        try:
            stdout, stderr = proc.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate(timeout=EXIT_TIMEOUT)
            raise
    # 0 pass, 3 a run the busy machine made invalid: either way it ran and reported
    assert proc.returncode in (0, 3), stderr.decode()[-2000:]
    assert f"target {HOST}:{a},{HOST}:{b}, clients 4" in stderr.decode()
    data = json.loads(out.read_text())
    assert data["targets"] == [
        {"target": f"{HOST}:{a}", "clients": 2, "connected": 2},
        {"target": f"{HOST}:{b}", "clients": 2, "connected": 2},
    ]
    m = data["metrics"]
    # one room over two servers that share nothing: of each message, the one other
    # client on its server gets it, the two on the other server never do
    assert m["cross_node"] == 0
    assert m["cross_node_expected"] == 2 * m["sent"] and m["expected"] == 3 * m["sent"]
    assert m["received"] == m["expected"] - m["cross_node_expected"]
    assert m["lost"] == m["cross_node_expected"] and m["unacked"] == 0
    assert "cross_node" in stdout.decode()  # the terminal summary lists it
    summary = (tmp_path / "run.md").read_text()
    assert f"{HOST}:{a} (2/2 clients)" in summary
