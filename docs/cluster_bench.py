"""Cluster benchmark (issue 11): the standalone relay and clusters side by side, in one run.

For each client count N it finds, in rounds that alternate the setups, the highest load
each one holds (``chatcli bench`` thresholds ``p99<50ms``, ``loss==0``, and a valid run):

- ``standalone``: the relay ``chatcli bench`` starts itself (its default, durable store:
  SQLite; ``--memory`` adds the memory store too);
- ``cluster-1``: one ``chatcli serve --cluster`` node over a local ``nats-server -js``;
- ``cluster-2``: two nodes over the same NATS, the clients split between them
  (``bench --target a,b``: half the deliveries cross nodes).

Every node gets the options bench gives its own relay (no flood limit, no history, a
64 MiB output buffer), a fresh NATS store per setup, and is stopped at the end.

    python docs/cluster_bench.py --clients 50 200 --rounds 3 --json cluster.json

Each step is ``chatcli bench --clients N --rate R --duration 5 --warmup 2 --workers 2``;
the rate goes up by ``--step`` (a factor) from ``--start`` until a step fails, so each
setup's figure is the last rate that held, in deliveries per second.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
BIN = Path(sys.executable).parent
NODE_ARGS = ["--rate-limit", "0", "--history", "0", "--max-buffer", str(64 << 20), "-q"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((HOST, port), 0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listens on {HOST}:{port} after {timeout} s")


class Cluster:
    """A nats-server and ``nodes`` chatcli nodes, started fresh, stopped on exit."""

    def __init__(self, nodes: int) -> None:
        self.dir = tempfile.mkdtemp(prefix="chatcli-cluster-bench-")
        self.nats_port = free_port()
        self.ports = [free_port() for _ in range(nodes)]
        self.procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Cluster:
        nats = [str(BIN / "nats-server"), "-js", "-a", HOST, "-p", str(self.nats_port)]
        self.procs.append(subprocess.Popen([*nats, "-sd", self.dir], stderr=subprocess.DEVNULL))
        wait_port(self.nats_port)
        url = f"nats://{HOST}:{self.nats_port}"
        for index, port in enumerate(self.ports):
            serve = [str(BIN / "chatcli"), "serve", "--cluster", url, "--node", f"b{index}"]
            self.procs.append(
                subprocess.Popen(
                    [*serve, "--host", HOST, "--port", str(port), *NODE_ARGS],
                    stdout=subprocess.DEVNULL,
                )
            )
            wait_port(port)
        return self

    @property
    def target(self) -> str:
        return ",".join(f"{HOST}:{port}" for port in self.ports)

    def __exit__(self, *exc: object) -> None:
        for proc in reversed(self.procs):
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def bench(clients: int, rate: float, extra: list[str]) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        command = [
            str(BIN / "chatcli"), "bench", "--clients", str(clients), "--rate", f"{rate:g}",
            "--duration", "5", "--warmup", "2", "--workers", "2",
            "-t", "p99<50ms", "-t", "loss==0", "--json", out.name, *extra,
        ]  # fmt: skip
        subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=180)
        with open(out.name) as written:
            report: dict[str, Any] = json.load(written)
    return report


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of process ``pid`` so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def highest(
    clients: int, extra: list[str], start: float, step: float, cluster: Cluster | None = None
) -> dict[str, Any]:
    """The last rate that held, and the run that held it (its metrics).

    With ``cluster``, the CPU its nodes and its nats-server spent per delivery received.
    """
    rate, held = start, None
    while rate < 100_000:
        pids = [proc.pid for proc in cluster.procs] if cluster is not None else []
        before = [cpu_seconds(pid) for pid in pids]
        report = bench(clients, rate, extra)
        spent = [cpu_seconds(pid) - was for pid, was in zip(pids, before, strict=True)]
        metrics = report["metrics"]
        line = {
            "rate": rate,
            "outcome": report.get("outcome"),
            "deliveries_per_s": metrics.get("deliveries_per_s"),
            "p50": metrics.get("p50"),
            "p99": metrics.get("p99"),
            "loss": metrics.get("loss"),
            "cross_node": metrics.get("cross_node"),
            "relay_cpu_us_per_delivery": metrics.get("relay_cpu_us_per_delivery"),
        }
        received = metrics.get("received") or 0
        if spent and received:
            line["nats_cpu_us_per_delivery"] = round(spent[0] * 1e6 / received, 2)
            line["nodes_cpu_us_per_delivery"] = round(sum(spent[1:]) * 1e6 / received, 2)
        print("   ", json.dumps(line), flush=True)
        if report.get("outcome") != "pass":
            break
        held = line
        rate = round(rate * step, 1)
    return held or {"rate": 0, "deliveries_per_s": 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--start", type=float, default=20.0, help="first rate per client at N=50 (scaled)"
    )
    parser.add_argument("--step", type=float, default=1.25, help="rate factor per step")
    parser.add_argument("--memory", action="store_true", help="the memory-store relay too")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    setups = ["standalone", "cluster-1", "cluster-2"] + (["memory"] if args.memory else [])
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for clients in args.clients:
        start = args.start * 50 * 49 / (clients * (clients - 1))  # the same deliveries/s
        for round_ in range(args.rounds):
            order = setups if round_ % 2 == 0 else list(reversed(setups))
            for setup in order:
                print(f"N={clients} round {round_ + 1} {setup}", flush=True)
                if setup in ("standalone", "memory"):
                    extra = ["--relay-store", "memory"] if setup == "memory" else []
                    held = highest(clients, extra, start, args.step)
                else:
                    with Cluster(int(setup[-1])) as cluster:
                        target = ["--target", cluster.target]
                        held = highest(clients, target, start, args.step, cluster)
                results.setdefault(str(clients), {}).setdefault(setup, []).append(held)
        print(f"N={clients}: median highest held (deliveries/s)")
        for setup, runs in results[str(clients)].items():
            figures = [run["deliveries_per_s"] or 0.0 for run in runs]
            print(f"  {setup:11} {statistics.median(figures):>10,.0f}   rounds: {figures}")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
