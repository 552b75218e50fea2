"""``chatcli replay --to``: the planner alone, then re-injection into a real server on
127.0.0.1 port 0 (in-process), checked by what the server relayed, in order, by whom."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from helpers import HOST, async_test, serving

from chatcli.cli import cli
from chatcli.core.protocol import DirectMessage, Joined, Left, Me, Msg, Say, SendDirect
from chatcli.errors import ConnectionFailed, ServerRefused, UsageError
from chatcli.replay.inject import (
    Connect,
    Disconnect,
    Injector,
    Move,
    Planner,
    Reread,
    Send,
    Skip,
    Step,
    dry_run,
    parse_target,
    plan,
)
from chatcli.replay.player import PlayOptions, Timeline
from chatcli.transcript import TranscriptWriter, read_transcript

REPO = Path(__file__).resolve().parent.parent
LOBBY = REPO / "recordings" / "20261121-090000_lobby.jsonl"
CLIENT = REPO / "recordings" / "record_chat_2026-11-20_18-30-00.jsonl"
CRASHED = REPO / "recordings" / "20261122-141500_lobby.jsonl"
T0 = 1795251600.0


def said(path: Path, room: str | None = None) -> list[tuple[str, str, bool]]:
    """(sender, text, action) of every message in a transcript (in ``room``)."""
    with read_transcript(path, strict=False) as reader:
        return [
            (e.event.from_, e.event.text, e.event.action)
            for e in reader
            if isinstance(e.event, Msg) and room in (None, e.event.room)
        ]


def relayed(events: list[Any], room: str | None = None) -> list[tuple[str, str, bool]]:
    return [
        (e.from_, e.text, e.action) for e in events if isinstance(e, Msg) and room in (None, e.room)
    ]


def steps(path: Path, prefix: str = "", loops: int = 1, **options: Any) -> Iterator[Step]:
    return plan(Reread(path, PlayOptions(**options)), Planner(prefix), loops)


# --------------------------------------------------------------------------- pure parts


@pytest.mark.parametrize(
    ("text", "target"),
    [
        ("127.0.0.1:7777", ("127.0.0.1", 7777)),
        ("chat.example.org:80", ("chat.example.org", 80)),
        ("[::1]:7777", ("::1", 7777)),
        (":7000", ("127.0.0.1", 7000)),
        ("7000", ("127.0.0.1", 7000)),
    ],
)
def test_parse_target(text: str, target: tuple[str, int]) -> None:
    assert parse_target(text) == target


@pytest.mark.parametrize("text", ["localhost", "host:0", "host:70000", "host:x", ""])
def test_parse_target_refuses(text: str) -> None:
    with pytest.raises(UsageError, match="--to wants HOST:PORT"):
        parse_target(text)


def test_planner_connects_lazily_follows_rooms_and_logs_out() -> None:
    planner = Planner("re-")
    assert planner.plan(Joined(room="lobby", name="alice", ts=1)) == [
        Connect("alice", "re-alice", "lobby")
    ]
    assert planner.plan(Msg(id=1, room="lobby", from_="Alice", text="hi", ts=2)) == [
        Send("Alice", Say(text="hi"), "lobby")
    ]
    # bob speaks without a join on record: he connects into the room he speaks in
    assert planner.plan(Msg(id=2, room="dev", from_="bob", text="waves", ts=3, action=True)) == [
        Connect("bob", "re-bob", "dev"),
        Send("bob", Me(text="waves"), "dev"),
    ]
    assert planner.plan(Joined(room="dev", name="alice", ts=4)) == [Move("alice", "dev")]
    assert planner.plan(DirectMessage(from_="bob", to="ALICE", text="psst", ts=5)) == [
        Send("bob", SendDirect(to="re-alice", text="psst"), None)
    ]
    assert planner.plan(Left(room="dev", name="alice", reason="quit", ts=6)) == [
        Disconnect("alice")
    ]
    assert planner.plan(Left(room="dev", name="alice", reason="quit", ts=7)) == []
    assert planner.plan(DirectMessage(from_="bob", to="alice", text="?", ts=8)) == [
        Skip("bob", "dm to alice, not connected")
    ]
    assert planner.plan(Msg(id=3, room="dev", from_="alice", text="back", ts=9)) == [
        Connect("alice", "re-alice", "dev"),
        Send("alice", Say(text="back"), "dev"),
    ]
    assert list(planner.names.values()) == ["re-alice", "re-bob"]
    assert list(planner.rooms) == ["lobby", "dev"]
    assert (planner.messages, planner.skipped) == (4, 1)


def test_planner_skips_what_the_server_would_refuse() -> None:
    planner = Planner()
    assert planner.plan(Msg(id=1, room="lobby", from_="a", text="\x1b[0m ", ts=1)) == [
        Skip("a", "the server would refuse the text: text is empty")
    ]
    assert planner.plan(Msg(id=1, room="Bad Room", from_="a", text="x", ts=1)) == [
        Skip("a", "room 'Bad Room' is not valid")
    ]
    assert not planner.names


def test_planner_names_are_truncated_and_clashes_are_errors() -> None:
    planner = Planner("replayed-")
    long = "a_very_long_name_indeed_1"[:24]
    assert planner.name_for(long) == ("replayed-" + long)[:24]
    with pytest.raises(UsageError, match="would both connect as 'replayed-a_very_long_nam'"):
        planner.name_for("a_very_long_name_indeed_2")
    with pytest.raises(UsageError, match="not a valid name"):
        Planner().name_for("server")
    for bad in ("bad prefix ", "x" * 24, "\u200b-"):
        with pytest.raises(UsageError, match="--prefix"):
            Planner(bad)


def test_dry_run_prints_the_plan_and_connects_nowhere() -> None:
    out = io.StringIO()
    planner = Planner("re-")
    count = dry_run(
        plan(Reread(CLIENT, PlayOptions()), planner),
        planner,
        Timeline(speed=2, max_idle=1),
        out,
    )
    lines = out.getvalue().splitlines()
    assert count == 9
    assert lines[0] == "   +0:00.0  [lobby] <re-alice> who's up for the meetup on thursday?"
    assert "   +0:02.0  [dm] re-bob -> re-chloe: psst, can you review my PR before then?" in lines
    assert lines[-3] == (
        "dry run: 9 message(s) from 4 user(s) in 2 room(s); would take 0:05 at 2x, "
        "pauses capped at 1 s"
    )
    assert lines[-2:] == ["users: re-alice, re-chloe, re-bob, re-noor", "rooms: lobby, dev"]


# --------------------------------------------------------------------------- real server


@async_test
async def test_every_message_arrives_in_order_with_its_sender() -> None:
    async with serving(rate_limit=0) as srv:
        seen: list[Any] = []
        srv.server.observers.append(seen.append)
        timeline = Timeline(instant=True)
        report = await Injector(HOST, srv.port, timeline).run(steps(LOBBY))
        assert relayed(seen) == said(LOBBY)
        assert (report.sent, report.acknowledged, report.lost, report.refused) == (21, 21, 0, 0)
        assert report.ok and report.connections == 6  # yuki came back after losing wifi
        assert report.lag.count == 21
        joins = [e.name for e in seen if isinstance(e, Joined)]
        assert joins == ["alice", "bob", "chloe", "yuki", "dmitri", "yuki"]
        assert not srv.server.relay.users  # everyone logged out at the end


@async_test
async def test_prefix_rooms_and_dms_of_a_client_transcript() -> None:
    async with serving(rate_limit=0) as srv:
        seen: list[Any] = []
        srv.server.observers.append(seen.append)
        report = await Injector(HOST, srv.port, Timeline(instant=True)).run(
            steps(CLIENT, prefix="re-")
        )
        expected = [("re-" + who, text, action) for who, text, action in said(CLIENT)]
        assert relayed(seen) == expected
        in_dev = [("re-" + who, text, action) for who, text, action in said(CLIENT, "dev")]
        assert len(in_dev) == 2 and relayed(seen, "dev") == in_dev
        dms = [(e.from_, e.to, e.text) for e in seen if isinstance(e, DirectMessage)]
        assert dms == [
            ("re-bob", "re-chloe", "psst, can you review my PR before then?"),
            ("re-chloe", "re-bob", "sure, send me the link"),
        ]
        assert report.ok and (report.sent, report.acknowledged) == (9, 9)


@async_test
async def test_loops_and_filters_apply() -> None:
    async with serving(rate_limit=0) as srv:
        seen: list[Any] = []
        srv.server.observers.append(seen.append)
        from chatcli.replay.player import EventFilter

        keep = EventFilter.build(users=["alice", "bob"])
        report = await Injector(HOST, srv.port, Timeline(instant=True), loops=2).run(
            steps(LOBBY, loops=2, keep=keep)
        )
        once = [m for m in said(LOBBY) if m[0] in ("alice", "bob")]
        assert relayed(seen) == once + once
        assert report.ok and report.sent == 2 * len(once) == report.acknowledged


@async_test
async def test_pace_follows_the_transcript_clock_scaled_by_speed(tmp_path: Path) -> None:
    path = tmp_path / "paced.jsonl"
    with TranscriptWriter.create(path, source="server", clock=lambda: T0) as writer:
        for i in range(4):
            writer.write(Msg(id=i, room="lobby", from_="alice", text=f"m{i}", ts=T0 + i * 2))
    async with serving(rate_limit=0) as srv:
        arrivals: list[float] = []
        srv.server.observers.append(
            lambda e: arrivals.append(time.monotonic()) if isinstance(e, Msg) else None
        )
        # The timeline's clock is time.monotonic too, and its anchor is set after this:
        # message i is due at anchor + i * 0.1 s (2 s apart at 20x). A busy machine only
        # delays sends, so "never before its time" holds however loaded it is.
        before = time.monotonic()
        report = await Injector(HOST, srv.port, Timeline(speed=20)).run(steps(path))
        assert len(arrivals) == 4
        early = [(i, at - before) for i, at in enumerate(arrivals) if at - before < i * 0.1]
        assert not early, early
        # and scaled: at the transcript's own pace the last one would come 6 s in
        assert arrivals[-1] - before < 4.0, arrivals[-1] - before
        assert report.ok and report.achieved_speed is not None
        assert report.achieved_speed > 1.5


@async_test
async def test_stop_ends_the_run_early_and_cleanly(tmp_path: Path) -> None:
    path = tmp_path / "slow.jsonl"
    with TranscriptWriter.create(path, source="server", clock=lambda: T0) as writer:
        for i in range(4):
            writer.write(Msg(id=i, room="lobby", from_="alice", text=f"m{i}", ts=T0 + i * 5))
    async with serving(rate_limit=0) as srv:
        injector = Injector(HOST, srv.port, Timeline())
        asyncio.get_running_loop().call_later(0.3, injector.stop)
        report = await injector.run_interruptible(steps(path))
        # unstopped, the run would take 15 s (messages 5 s apart)
        assert report.interrupted and not report.ok and report.duration < 10
        assert (report.sent, report.acknowledged) == (1, 1)
        assert report.lines()[-1] == "  stopped early: interrupted"
        assert not srv.server.relay.users


@async_test
async def test_a_rate_limited_server_is_reported() -> None:
    async with serving(rate_limit=1, rate_burst=2) as srv:
        report = await Injector(HOST, srv.port, Timeline(instant=True)).run(steps(LOBBY))
        assert report.rate_limited > 0 and not report.ok
        assert report.acknowledged + report.rate_limited == report.sent == 21
        assert "rate-limited" in "\n".join(report.lines())


@async_test
async def test_a_taken_name_is_one_clear_error() -> None:
    async with serving(rate_limit=0) as srv:
        await srv.login("alice")
        with pytest.raises(ServerRefused, match=r"refused 'alice'.*use --prefix"):
            await Injector(HOST, srv.port, Timeline(instant=True)).run(steps(LOBBY))


@async_test
async def test_no_server_is_a_connection_error() -> None:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port = sock.getsockname()[1]  # bound, not listening: nothing answers here
        with pytest.raises(ConnectionFailed, match="connection refused"):
            await Injector(HOST, port, Timeline(instant=True)).run(steps(LOBBY))


@async_test
async def test_messages_never_answered_are_lost_after_a_bounded_wait() -> None:
    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Logs everyone in, then answers nothing, and never closes."""
        writer.write(
            b'{"type":"welcome","server":"mute","proto":1,"users":[],"rooms":[],"hint":""}\n'
        )
        line = await reader.readline()
        name = line.split(b'"name":"')[1].split(b'"')[0]
        writer.write(
            b'{"type":"ready","name":"%s","room":"lobby","users":[],"history":[]}\n' % name
        )
        with contextlib.suppress(ConnectionError):
            while await reader.read(65536):
                pass
        writer.close()

    server = await asyncio.start_server(mute, HOST, 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        loop = asyncio.get_running_loop()
        started = loop.time()
        injector = Injector(HOST, port, Timeline(instant=True), ack_timeout=0.3)
        report = await injector.run(steps(CRASHED))
        assert report.sent == 5 and report.lost == 5 and not report.ok
        assert loop.time() - started < 5  # the waits are bounded


# --------------------------------------------------------------------------- the command


@contextlib.contextmanager
def server_thread(**settings: Any) -> Iterator[tuple[int, list[Any]]]:
    """A real server in its own thread and loop, for commands run with CliRunner."""
    ready = threading.Event()
    box: dict[str, Any] = {}
    seen: list[Any] = []

    async def main() -> None:
        async with serving(**settings) as srv:
            srv.server.observers.append(seen.append)
            box["loop"], box["stop"], box["port"] = (
                asyncio.get_running_loop(),
                asyncio.Event(),
                srv.port,
            )
            box["srv"] = srv
            ready.set()
            await box["stop"].wait()

    def run() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:  # surfaced to the test below
            box["error"] = exc
            ready.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(10), "server did not start"
    assert "error" not in box, box.get("error")
    try:
        yield box["port"], seen
    finally:
        box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(10)
        assert not thread.is_alive()
        if "error" in box:
            raise box["error"]


def invoke(*args: str) -> Any:
    return CliRunner().invoke(cli, ["replay", *args], catch_exceptions=False)


def test_command_reports_and_exits_0() -> None:
    with server_thread(rate_limit=0) as (port, seen):
        result = invoke(str(LOBBY), "--to", f"{HOST}:{port}", "--prefix", "re-", "--instant")
    assert result.exit_code == 0, result.output
    assert relayed(seen) == [("re-" + w, t, a) for w, t, a in said(LOBBY)]
    out = result.stdout
    assert out.startswith(f"replayed to {HOST}:{port}\n")
    for row in ("messages sent", "acknowledged", "connections"):
        assert row in out
    assert "  acknowledged         21" in out and "  lost                  0" in out
    assert "(asked instant)" in out and "send lag" in out


def test_command_exits_1_when_the_server_rate_limits() -> None:
    with server_thread(rate_limit=1, rate_burst=1) as (port, _):
        result = invoke(str(LOBBY), "--to", f"{HOST}:{port}", "--instant")
    assert result.exit_code == 1
    assert "rate-limited" in result.stdout
    assert (
        result.stderr.startswith("chatcli: ")
        and "of 21 messages did not get through" in result.stderr
    )


def test_dry_run_connects_to_nothing() -> None:
    with server_thread(rate_limit=0) as (port, seen):
        result = invoke(str(LOBBY), "--to", f"{HOST}:{port}", "--dry-run", "--max-idle", "1")
    assert result.exit_code == 0
    assert seen == []
    assert "dry run: 21 message(s) from 5 user(s) in 1 room(s)" in result.stdout
    assert "[lobby] <alice> morning bob! coffee's on ☕" in result.stdout


def test_server_down_is_one_line_exit_1() -> None:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port = sock.getsockname()[1]
        result = invoke(str(LOBBY), "--to", f"{HOST}:{port}")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == (
        f"chatcli: cannot connect to {HOST}:{port}: connection refused "
        "(is `chatcli serve` running?)\n"
    )


# --------------------------------------------------------------------------- end to end


@pytest.mark.e2e
def test_serve_record_then_replay_to_reproduces_the_conversation(tmp_path: Path) -> None:
    """The issue's "done when": a fresh `chatcli serve --record` gets the conversation
    from `chatcli replay --to`, and replaying what it recorded shows the same lines."""
    chatcli = [sys.executable, "-m", "chatcli"]
    record = tmp_path / "rec"
    store = ["--store", str(tmp_path / "store.db")]
    server = subprocess.Popen(
        [*chatcli, "serve", "--port", "0", "--rate-limit", "0", "--record", str(record), *store],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert server.stdout is not None
        ready, _, _ = select.select([server.stdout], [], [], 15)
        assert ready, "chatcli serve did not start"
        address = server.stdout.readline().split()[-1]
        injected = subprocess.run(
            [*chatcli, "replay", str(LOBBY), "--to", address, "--instant", "--prefix", "re-"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert injected.returncode == 0, injected.stderr
        assert "acknowledged         21" in injected.stdout
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(15)
    (recorded,) = record.glob("*_lobby.jsonl")
    shown = subprocess.run(
        [*chatcli, "replay", str(recorded), "--no-timestamps"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    original = subprocess.run(
        [*chatcli, "replay", str(LOBBY), "--no-timestamps"],
        capture_output=True,
        text=True,
        timeout=30,
    )

    def chat(output: str) -> list[str]:
        return [line.replace("re-", "") for line in output.splitlines() if line[0] in "<*"]

    assert len(chat(original.stdout)) == 21
    assert chat(shown.stdout) == chat(original.stdout)


@async_test
async def test_every_message_goes_out_with_its_own_txn() -> None:
    """Each say/me carries a fresh txn (spec 1.1), so any resend of it is stored once."""
    frames: list[dict[str, Any]] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b'{"type":"welcome","server":"rec","proto":1,"users":[],"rooms":[],"hint":""}\n'
        )
        with contextlib.suppress(ConnectionError):
            while line := await reader.readline():
                frame = json.loads(line)
                frames.append(frame)
                if frame["type"] == "hello":
                    ready = {"type": "ready", "name": frame["name"], "room": "lobby"}
                    writer.write(json.dumps({**ready, "users": [], "history": []}).encode() + b"\n")
        writer.close()

    server = await asyncio.start_server(record, HOST, 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        injector = Injector(HOST, port, Timeline(instant=True), ack_timeout=0.3)
        await injector.run(steps(CRASHED))
    said = [f for f in frames if f["type"] in ("say", "me")]
    assert len(said) == 5
    txns = [f["txn"] for f in said]
    assert len(set(txns)) == 5 and all(len(t) == 32 and int(t, 16) >= 0 for t in txns)
