"""End to end: the one-line errors of the ``chatcli`` commands, and plain log lines."""

from __future__ import annotations

import io
import json
import logging
import subprocess
from pathlib import Path

import pytest
from processes import EXIT_TIMEOUT, START_TIMEOUT, chatcli

from chatcli.logs import log_handler

pytestmark = pytest.mark.e2e


def run(*args: str) -> subprocess.CompletedProcess[bytes]:
    proc = chatcli(*args)
    try:
        out, err = proc.communicate(timeout=START_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=EXIT_TIMEOUT)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.parametrize("command", ["bench", "replay", "serve"])
def test_a_missing_option_value_points_to_the_subcommand_help(command: str) -> None:
    option = {"bench": "--json", "replay": "--speed", "serve": "--port"}[command]
    done = run(command, option)
    assert done.returncode == 2
    assert done.stderr.decode().splitlines() == [
        f"chatcli: Option '{option}' requires an argument. (see 'chatcli {command} --help')"
    ]


def test_an_unknown_group_option_still_points_to_the_group_help() -> None:
    done = run("--frob")
    assert done.returncode == 2
    assert done.stderr.decode().rstrip().endswith("(see 'chatcli --help')")


def test_serve_record_into_a_directory_that_cannot_be_made_fails_at_start(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    done = run("serve", "--port", "0", "--record", str(blocker / "recordings"))
    assert done.returncode == 2
    lines = done.stderr.decode().splitlines()
    assert len(lines) == 1 and "--record" in lines[0] and "cannot write there" in lines[0]
    assert b"listening" not in done.stdout


def test_log_lines_off_a_terminal_carry_no_padding() -> None:
    stream = io.StringIO()
    logger = logging.getLogger("chatcli.test-plain")
    logger.handlers[:] = [log_handler(stream, terminal=False)]
    logger.propagate = False
    logger.warning("short")
    logger.warning("a longer line, %s", "formatted")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert all(line == line.rstrip() for line in lines)
    assert lines[0].endswith("WARNING short")
    assert lines[1].endswith("WARNING a longer line, formatted")


RECORDING = Path(__file__).parent.parent / "recordings" / "20261121-090000_lobby.jsonl"


@pytest.mark.parametrize(
    ("start", "until"), [("09:10", "09:00"), ("5m", "1m"), ("2026-11-21T09:10", "2026-11-21T09:00")]
)
def test_replay_start_after_until_is_a_usage_error(start: str, until: str) -> None:
    done = run("replay", str(RECORDING), "--start-at", start, "--until", until)
    assert done.returncode == 2
    assert done.stderr.decode().splitlines() == [
        f"chatcli: --start-at {start} is after --until {until}: nothing to play"
    ]


def test_replay_start_before_until_plays() -> None:
    done = run("replay", str(RECORDING), "--start-at", "09:00", "--until", "09:10")
    assert done.returncode == 0, done.stderr
    assert b"alice joined lobby" in done.stdout


def test_bench_against_an_unreachable_target_is_invalid_exit_3(free_port: int) -> None:
    done = run("bench", "--target", f"127.0.0.1:{free_port}", "--clients", "2", "--duration", "1")
    assert done.returncode == 3
    errors = [line for line in done.stderr.decode().splitlines() if line.startswith("chatcli:")]
    assert errors == [
        f"chatcli: no client could connect and log in to 127.0.0.1:{free_port}: "
        "nothing was measured (first failure: connection refused)"
    ]


def test_bench_json_dash_writes_the_report_to_stdout(tmp_path: Path) -> None:
    proc = chatcli(
        "bench",
        "--clients",
        "2",
        "--duration",
        "1",
        "--warmup",
        "0",
        "--json",
        "-",
        cwd=tmp_path,
    )
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=EXIT_TIMEOUT)
    report = json.loads(out)
    assert report["outcome"] in ("pass", "invalid")
    assert b"outcome:" in err  # the human summary, on stderr
    assert not (tmp_path / "-").exists()


@pytest.fixture
def free_port() -> int:
    import socket

    with socket.socket() as probe:  # nobody listens there once it is closed
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_bench_off_a_terminal_prints_a_header_and_unwrapped_progress_lines() -> None:
    proc = chatcli(
        "bench",
        "--clients",
        "2",
        "--duration",
        "1",
        "--warmup",
        "0",
        "--seed",
        "7",
        env={"COLUMNS": "60"},
    )
    try:
        _out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=EXIT_TIMEOUT)
    lines = err.decode().splitlines()
    assert lines[0] == (
        "chatcli bench: target a relay started for this run, clients 2, rooms 1, "
        "rate 10/s per client, duration 1 s, seed 7, workers 1"
    )
    progress = [line for line in lines if line.startswith("[")]
    assert progress and all(line.count(" p99 (last 0.5 s) ") == 1 for line in progress)
    assert progress[-1].startswith("[done]")


def test_replay_of_several_transcripts_merges_them_by_time() -> None:
    dev = RECORDING.with_name("20261121-090000_dev.jsonl")
    merged = run("replay", "--utc", "--format", "jsonl", str(RECORDING), str(dev))
    assert merged.returncode == 0, merged.stderr
    lines = [json.loads(line) for line in merged.stdout.decode().splitlines()]
    assert lines[0]["type"] == "transcript" and "room" not in lines[0]
    assert lines[-1]["type"] == "end"
    events = lines[1:-1]
    times = [event["ts"] for event in events]
    assert times == sorted(times)
    assert lines[-1]["events"] == len(events)
    one = [run("replay", "--format", "jsonl", str(path)).stdout for path in (RECORDING, dev)]
    counts = [len(out.decode().splitlines()) - 2 for out in one]  # minus header and end
    assert len(events) == sum(counts)
    assert {event.get("room") for event in events if event["type"] == "msg"} == {"lobby", "dev"}
    text = run("replay", "--utc", "--format", "text", str(RECORDING), str(dev)).stdout.decode()
    assert "[dev] <noor>" in text and "[lobby] <alice>" in text  # rooms told apart


def test_replay_of_several_files_refuses_stdin() -> None:
    done = run("replay", str(RECORDING), "-")
    assert done.returncode == 2
    assert b"several FILEs play merged" in done.stderr
