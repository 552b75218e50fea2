"""``chatcli cluster`` against a real nats-server, with registry entries put as nodes put them.

The entries are put with nats-py into the ``chatcli_nodes`` bucket, exactly as a node's
heartbeat does (cluster.md), so these tests check the status command against the wire
contract, not against the node's code.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import time
from collections.abc import Callable
from typing import Any, TypeVar

import nats
import pytest
from helpers import run
from nats.js.api import StreamConfig
from nats_server import NatsServer
from processes import EXIT_TIMEOUT, START_TIMEOUT, chatcli
from rich.console import Console

from chatcli.cluster.layout import (
    MSG_SUBJECTS,
    MSGS_STREAM,
    NODES_BUCKET,
    msg_subject,
)
from chatcli.cluster.nodes import NodeInfo, encode_node, read_nodes
from chatcli.cluster.options import NatsOptions
from chatcli.cluster.status import gather_status, render_status

pytestmark = pytest.mark.e2e

T = TypeVar("T")
#: makes a node's entry from the time of its put
Maker = Callable[[float], NodeInfo]


def node(name: str, seen: float, **fields: Any) -> NodeInfo:
    values: dict[str, Any] = {
        "node": name,
        "pid": 4242,
        "host": "box1",
        "started": seen - 3600,
        "seen": seen,
        "listen": ("127.0.0.1:7001",),
        "web": None,
        "users": 3,
        "rooms": 2,
        "version": "0.1.0",
        "state": "ok",
    }
    values.update(fields)
    return NodeInfo(**values)


async def put_entries(url: str, entries: dict[str, bytes], messages: int = 0) -> None:
    """Create the bucket as a node would and put raw values under keys; publish messages."""
    nc = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=0)
    try:
        js = nc.jetstream()
        kv = await js.create_key_value(bucket=NODES_BUCKET)
        for key, value in entries.items():
            await kv.put(key, value)
        if messages:
            await js.add_stream(StreamConfig(name=MSGS_STREAM, subjects=[MSG_SUBJECTS]))
            for i in range(messages):
                await js.publish(msg_subject("lobby"), f'{{"text": "m{i}"}}'.encode())
    finally:
        await nc.close()


def run_cluster(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """``chatcli cluster ARGS``: exit code, stdout, stderr (bounded)."""
    proc = chatcli("cluster", *args, env={"COLUMNS": "200", "TZ": "UTC", **(env or {})})
    out, err = proc.communicate(timeout=START_TIMEOUT + EXIT_TIMEOUT)
    return proc.returncode, out.decode(), err.decode()


async def beating(url: str, nodes: dict[str, Maker], command: Callable[[], T]) -> T:
    """Run ``command`` in a thread while every node of ``nodes`` keeps re-putting its entry.

    Each entry is put every 0.2 s, made by its maker from the time of the put, as a
    node's heartbeat would (a stale node's ``seen`` lags behind), so how long the command
    takes to start on a busy machine cannot move a node from one state to another.
    """
    nc = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=0)
    try:
        kv = await nc.jetstream().key_value(NODES_BUCKET)

        async def beat_once() -> None:
            for name, make in nodes.items():
                await kv.put(name, encode_node(make(time.time())))

        async def beat() -> None:
            while True:
                await asyncio.sleep(0.2)
                await beat_once()

        await beat_once()
        task = asyncio.create_task(beat())
        try:
            return await asyncio.to_thread(command)
        finally:
            task.cancel()
    finally:
        await nc.close()


def test_table_shows_alive_stale_and_dead_nodes(nats_server: NatsServer) -> None:
    now = time.time()
    run(
        put_entries(
            nats_server.url,
            {
                "n1": encode_node(node("n1", now, listen=("127.0.0.1:7001", "10.0.0.1:7001"))),
                "n2": encode_node(node("n2", now - 5, host="box2", users=1, pid=77)),
                "n3": encode_node(node("n3", now - 60, host="box3", users=9)),
            },
            messages=5,
        )
    )
    code, out, err = run(
        beating(
            nats_server.url,
            {
                "n1": lambda t: node(
                    "n1", t, started=now - 3600, listen=("127.0.0.1:7001", "10.0.0.1:7001")
                ),
                "n2": lambda t: node("n2", t - 5, host="box2", users=1, pid=77),
            },
            lambda: run_cluster("--cluster", nats_server.url),
        )
    )
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert re.fullmatch(rf"NATS {nats_server.url}, nats-server 2\.\d+\.\d+", lines[0])
    assert lines[1].startswith(f"streams: {MSGS_STREAM} 5 messages (")
    assert lines[1].endswith(" B)")
    assert lines[2].split() == [
        "node", "host", "listen", "users", "rooms", "up", "heartbeat", "state"
    ]  # fmt: skip
    rows = [line.split() for line in lines[3:7]]
    assert rows[0][:6] == ["n1", "box1", "127.0.0.1:7001", "3", "2", "1h00m"]
    assert rows[0][-1] == "alive"
    assert rows[1] == ["10.0.0.1:7001"]  # one address a line
    # a stale node: its heartbeats are 5 s old, more than 4 s, not yet dead (10 s): the
    # command has 5 s from a put to its reading of the registry, on a busy machine too
    assert rows[2][:5] == ["n2", "box2", "127.0.0.1:7001", "1", "2"]
    assert rows[2][-1] == "stale"
    assert rows[3][:3] == ["n3", "box3", "127.0.0.1:7001"]
    assert rows[3][-3:] == ["s", "ago", "dead"] and float(rows[3][-4]) >= 60.0
    # the dead node's users are not counted as online
    assert lines[7] == "3 nodes: 1 alive, 1 stale, 1 dead; 4 users online"


def test_json_for_scripts(nats_server: NatsServer) -> None:
    run(put_entries(nats_server.url, {}))
    code, out, err = run(
        beating(
            nats_server.url,
            {
                "n1": lambda t: node("n1", t, web="http://127.0.0.1:8080/"),
                "n2": lambda t: node("n2", t - 5, state="unavailable"),
            },
            lambda: run_cluster("--cluster", nats_server.url, "--json"),
        )
    )
    assert (code, err) == (0, "")
    status = json.loads(out)
    assert status["nats"]["server"] == nats_server.url
    assert status["nats"]["streams"] == {MSGS_STREAM: None}
    assert status["registry"] is True and status["damaged"] == 0
    by_name = {entry["node"]: entry for entry in status["nodes"]}
    assert by_name["n1"]["liveness"] == "alive" and by_name["n2"]["liveness"] == "stale"
    assert by_name["n1"]["web"] == "http://127.0.0.1:8080/"
    assert by_name["n2"]["state"] == "unavailable"
    assert 5.0 <= by_name["n2"]["age"] <= 10.0
    # every field of the registry entry passes through as written
    expected = {
        "node": "n1", "pid": 4242, "host": "box1", "listen": ["127.0.0.1:7001"],
        "web": "http://127.0.0.1:8080/", "users": 3, "rooms": 2, "version": "0.1.0",
        "state": "ok",
    }  # fmt: skip
    assert {key: by_name["n1"][key] for key in expected} == expected
    assert by_name["n1"]["started"] == pytest.approx(by_name["n1"]["seen"] - 3600, abs=1)


def test_untrusted_values_are_shown_as_plain_text(nats_server: NatsServer) -> None:
    hostile = node("n1", time.time(), host="[bold red]evil[/] \x1b[31mred\x1b[0m", version="[x]")
    run(put_entries(nats_server.url, {"n1": encode_node(hostile)}))
    code, out, _ = run_cluster("--cluster", nats_server.url, env={"FORCE_COLOR": "1"})
    assert code == 0
    assert "[bold red]evil[/]" in out  # the markup shown, not interpreted
    assert "\x1b[31mred" not in out  # the escape sequence removed


def test_damaged_entries_are_skipped_and_counted(nats_server: NatsServer) -> None:
    now = time.time()
    run(
        put_entries(
            nats_server.url,
            {
                "n1": encode_node(node("n1", now)),
                "n2": b"{not json",
                "n3": json.dumps({"node": "n3", "pid": "x"}).encode(),
                "n4": encode_node(node("other", now)),  # node is not its key
            },
        )
    )
    code, out, err = run(
        beating(
            nats_server.url,
            {"n1": lambda t: node("n1", t)},
            lambda: run_cluster("--cluster", nats_server.url),
        )
    )
    assert (code, err) == (0, "")
    assert "3 unreadable entries in chatcli_nodes skipped" in out
    assert "1 node: 1 alive; 3 users online" in out


def test_no_nodes_says_so(nats_server: NatsServer) -> None:
    code, out, err = run_cluster("--cluster", nats_server.url)
    assert (code, err) == (0, "")
    assert out.splitlines()[2] == "no chatcli node has run on this NATS (no chatcli_nodes bucket)"
    run(put_entries(nats_server.url, {}))
    code, out, _ = run_cluster("--cluster", nats_server.url)
    assert out.splitlines()[2] == "no chatcli node in the registry (chatcli_nodes is empty)"
    assert json.loads(run_cluster("--cluster", nats_server.url, "--json")[1])["nodes"] == []


def test_deleted_entry_is_gone(nats_server: NatsServer) -> None:
    """A node that stops cleanly deletes its key: the listing no longer shows it."""

    async def scenario() -> list[str]:
        now = time.time()
        await put_entries(
            nats_server.url,
            {"n1": encode_node(node("n1", now)), "n2": encode_node(node("n2", now))},
        )
        nc = await nats.connect(nats_server.url, connect_timeout=2, max_reconnect_attempts=0)
        try:
            js = nc.jetstream()
            await (await js.key_value(NODES_BUCKET)).delete("n2")
            return [info.node for info in await read_nodes(js)]
        finally:
            await nc.close()

    assert run(scenario()) == ["n1"]


def test_unreachable_nats_is_one_line_and_exit_1(nats_server: NatsServer) -> None:
    url = nats_server.url
    nats_server.stop()
    started = time.monotonic()
    code, out, err = run_cluster("--cluster", url)
    assert code == 1 and out == ""
    assert err == f"chatcli: cannot reach NATS at {url}: connection refused\n"
    assert time.monotonic() - started < START_TIMEOUT


def test_password_is_never_printed(nats_server: NatsServer) -> None:
    url = nats_server.url.replace("nats://", "nats://alice:s3cret@")
    nats_server.stop()
    code, _out, err = run_cluster("--cluster", url)
    assert code == 1 and "s3cret" not in err and "alice:***@" in err


def test_nats_without_jetstream(tmp_path: Any) -> None:
    """A plain NATS (no -js) is not a cluster's NATS: one line, exit 1."""
    with NatsServer(tmp_path / "plain", jetstream=False) as plain:
        code, out, err = run_cluster("--cluster", plain.url)
    assert code == 1 and out == ""
    assert err == f"chatcli: NATS at {plain.url} has no JetStream (start nats-server with -js)\n"


def test_render_status_in_process(nats_server: NatsServer) -> None:
    """The library call the command makes, with an injected clock."""
    run(put_entries(nats_server.url, {"n1": encode_node(node("n1", 1000.0))}))
    status = run(gather_status(NatsOptions(servers=(nats_server.url,)), clock=lambda: 1011.0))
    assert [info.node for info in status.nodes] == ["n1"]
    out = io.StringIO()
    Console(file=out, width=200).print(render_status(status))
    text = out.getvalue()
    assert "11.0 s ago" in text and text.splitlines()[3].rstrip().endswith("dead")


def test_first_reachable_server_of_the_list(nats_server: NatsServer) -> None:
    """A dead server in the list does not stop the command: it connects to a live one."""
    dead = NatsServer(nats_server.directory.parent / "dead").start()
    dead_url = dead.url
    dead.stop()
    code, out, err = run_cluster("--cluster", f"{dead_url},{nats_server.url}")
    assert (code, err) == (0, "")
    assert out.startswith(f"NATS {nats_server.url}, nats-server ")
    code, out, err = run_cluster(env={"CHATCLI_CLUSTER": f"{nats_server.url} {dead_url}"})
    assert (code, err) == (0, "") and out.startswith(f"NATS {nats_server.url}, ")


def test_hanging_nats_is_one_line_and_exit_1_in_bounded_time(nats_server: NatsServer) -> None:
    """A NATS that accepts the connection and then says nothing (paused): no hang."""
    nats_server.pause()
    try:
        started = time.monotonic()
        code, out, err = run_cluster("--cluster", nats_server.url)
        took = time.monotonic() - started
    finally:
        nats_server.resume()
    assert (code, out) == (1, "")
    assert err == f"chatcli: cannot reach NATS at {nats_server.url}: no answer (timed out)\n"
    assert took < 3.0 + START_TIMEOUT  # the 3 s bound, plus a cold start on a busy machine
