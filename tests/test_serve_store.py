"""``chatcli serve --store``: history and ids survive a restart and a ``kill -9``.

Real ``chatcli serve`` processes on loopback, real SQLite files, JSON clients on sockets.
"""

from __future__ import annotations

import json
import signal
import socket
from pathlib import Path
from typing import Any

import pytest
from processes import EXIT_TIMEOUT, START_TIMEOUT, Watcher, chatcli, read_line, serve_process

pytestmark = pytest.mark.e2e


def _say_acked(port: int, name: str, texts: list[str]) -> list[int]:
    """Say each text and wait for its acknowledgement; return the ids given."""
    client = Watcher(port, name)
    ids = []
    try:
        for i, text in enumerate(texts):
            client.send({"type": "say", "text": text, "ref": i})
            ids.append(client.expect("msg", ref=i)["id"])
    finally:
        client.close()
    return ids


def _history(port: int, since: int | None = None) -> dict[str, Any]:
    """The ``ready`` a newcomer gets (with ``since`` when given)."""
    hello: dict[str, Any] = {"type": "hello", "name": "reader"}
    if since is not None:
        hello["since"] = since
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(json.dumps(hello).encode() + b"\n")
        with sock.makefile("rb") as lines:
            for line in lines:
                frame = json.loads(line)
                if frame["type"] in ("ready", "error"):
                    return frame
    raise AssertionError("the server closed before ready")


def test_history_and_ids_survive_a_restart(tmp_path: Path) -> None:
    store = str(tmp_path / "chat.db")
    with serve_process("--store", store) as (proc, port):
        first = _say_acked(port, "alice", ["one", "two"])
        proc.send_signal(signal.SIGINT)
        assert proc.wait(EXIT_TIMEOUT) == 0
    with serve_process("--store", store) as (_proc, port):
        ready = _history(port)
        assert [(m["id"], m["text"]) for m in ready["history"]] == [(1, "one"), (2, "two")]
        assert _say_acked(port, "bob", ["three"]) == [first[-1] + 1]


def test_every_acknowledged_message_survives_kill_9(tmp_path: Path) -> None:
    store = str(tmp_path / "crash.db")
    with serve_process("--store", store, "--rate-limit", "0") as (proc, port):
        ids = _say_acked(port, "alice", [f"m{i}" for i in range(30)])
        proc.send_signal(signal.SIGKILL)
        proc.wait(EXIT_TIMEOUT)
    with serve_process("--store", store) as (_proc, port):
        ready = _history(port, since=0)
        assert [m["id"] for m in ready["history"]] == ids
        assert ready.get("truncated", False) is False


def test_a_second_server_on_the_same_store_exits_2_with_one_line(tmp_path: Path) -> None:
    store = str(tmp_path / "shared.db")
    with serve_process("--store", store):
        second = chatcli("serve", "--port", "0", "-q", "--store", store)
        out, err = second.communicate(timeout=START_TIMEOUT)
    assert second.returncode == 2
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1 and "in use by another chatcli serve" in lines[0], lines
    assert out == b""


def test_a_damaged_store_exits_2_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"\x00garbage" * 1000)
    proc = chatcli("serve", "--port", "0", "-q", "--store", str(bad))
    _out, err = proc.communicate(timeout=START_TIMEOUT)
    assert proc.returncode == 2
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1 and "not a chatcli store" in lines[0], lines


def test_the_default_store_is_announced_and_kept_in_the_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "data"
    proc = chatcli(
        "serve", "--port", "0", "--host", "127.0.0.1", env={"CHATCLI_DATA_DIR": str(data)}
    )
    try:
        assert read_line(proc.stdout, START_TIMEOUT).startswith(b"chatcli serve listening on")
        store_line = read_line(proc.stderr, START_TIMEOUT).decode()
        assert f"store: {data / 'chatcli.db'} (history survives restarts)" in store_line
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(EXIT_TIMEOUT)
    assert (data / "chatcli.db").exists()


def test_refusals_keep_their_place_behind_messages_the_store_is_still_keeping(
    tmp_path: Path,
) -> None:
    """A flood's rate_limited errors come after the ready and acks that came first."""
    store = str(tmp_path / "o.db")
    frames = [{"type": "hello", "name": "alice", "history": 0}]
    frames += [{"type": "say", "text": f"m{i}", "ref": i} for i in range(8)]
    got = []
    with (
        serve_process("--store", store, "--rate-burst", "3") as (_proc, port),
        socket.create_connection(("127.0.0.1", port), timeout=10) as sock,
        sock.makefile("rb") as lines,
    ):
        sock.sendall(b"".join(json.dumps(f).encode() + b"\n" for f in frames))
        for line in lines:
            frame = json.loads(line)
            if frame["type"] != "welcome":
                got.append((frame["type"], frame.get("ref")))
            if len(got) == 9:
                break
    assert got[0] == ("ready", None)
    assert [ref for _, ref in got[1:]] == list(range(8))  # in the order they were sent
    assert [kind for kind, _ in got[1:4]] == ["msg"] * 3
    assert {kind for kind, _ in got[4:]} == {"error"}


def test_a_text_session_may_type_before_its_login_is_answered(tmp_path: Path) -> None:
    """`printf 'login bob\\nhello\\n' | nc`: with a store that answers later, the lines
    after `login` wait for it instead of being refused as not logged in."""
    with (
        serve_process("--store", str(tmp_path / "t.db")) as (_proc, port),
        socket.create_connection(("127.0.0.1", port), timeout=10) as sock,
        sock.makefile("rb") as lines,
    ):
        sock.sendall(b"login bob\nhello there\n/who\n")
        got = []
        for raw in lines:
            line = raw.decode().rstrip("\n")
            if not line.startswith("{"):  # the welcome is JSON: nothing else is
                got.append(line)
            if line.startswith("-- in lobby"):
                break
    assert not [line for line in got if line.startswith("!!")], got
    assert got[0].startswith("-- you are bob in lobby")
    assert got[1].endswith("[lobby] <bob> hello there")
    assert got[2] == "-- in lobby: bob"


def test_a_text_sessions_local_answers_keep_their_place_behind_its_login(
    tmp_path: Path,
) -> None:
    """An unknown command typed right after `login` is answered after the ready line."""
    with (
        serve_process("--store", str(tmp_path / "u.db")) as (_proc, port),
        socket.create_connection(("127.0.0.1", port), timeout=10) as sock,
        sock.makefile("rb") as lines,
    ):
        sock.sendall(b"login bob\n/bogus\n")
        got = []
        for raw in lines:
            line = raw.decode().rstrip("\n")
            if not line.startswith("{"):
                got.append(line)
            if line.startswith("!!"):
                break
    assert got[0].startswith("-- you are bob in lobby"), got
    assert got[1].startswith("!! unknown command /bogus"), got
