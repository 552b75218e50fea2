"""``chatcli replay STORE.db``: a store written by ``serve --store`` plays, lists, exports.

The stores are real SQLite files written by SQLiteStore (as the relay's pipeline would),
then read through the reader API and through the ``replay`` command.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from chatcli.cli import cli
from chatcli.core.intents import Append, Stored
from chatcli.core.protocol import Msg
from chatcli.core.relay import Relay
from chatcli.errors import StoreError
from chatcli.store.sqlite import (
    SQLiteStore,
    _insert_many,
    is_store,
    list_rooms,
    read_room,
)
from chatcli.transcript import TranscriptWriter, check_transcript

WAIT = 10.0
T0 = 1763700000.123456


def say(store: SQLiteStore, *lines: tuple[str, str, str, float]) -> list[Msg]:
    """Store (room, sender, text, ts) lines in one group; the messages they became."""
    session = Relay().open("link")
    woken = threading.Event()
    store.set_wakeup(woken.set)
    for room, sender, text, ts in lines:
        store.submit(Append(session, room, sender, text, ts, False, None, (), 0))
    answers: list[Any] = []
    while len(answers) < len(lines):
        answers += store.completed()
        if len(answers) < len(lines):
            assert woken.wait(WAIT), "the store did not answer in time"
            woken.clear()
    assert all(isinstance(a, Stored) for a in answers), answers
    return [a.msg for a in answers]


TEXTS = ["héllo 😀", 'quotes " and \\ back', "tab\there", "𝄞 clef", "x" * 4096]


@pytest.fixture
def store_file(tmp_path: Path) -> Iterator[Path]:
    """A store with two rooms: lobby (5 messages, odd texts) and dev (2)."""
    path = tmp_path / "chat.db"
    store = SQLiteStore(path)
    try:
        say(store, *[("lobby", "alice", text, T0 + k * 1.5) for k, text in enumerate(TEXTS)])
        say(store, ("dev", "bob", "ship it", T0 + 60), ("dev", "carol", "/me waves", T0 + 61))
    finally:
        store.close()
    yield path


def invoke(*args: str) -> Any:
    return CliRunner().invoke(cli, ["replay", *args], catch_exceptions=False)


# -------------------------------------------------------------------- the reader API


def test_a_store_is_recognised_by_its_content_not_its_name(
    store_file: Path, tmp_path: Path
) -> None:
    renamed = tmp_path / "history.jsonl"
    renamed.write_bytes(store_file.read_bytes())
    assert is_store(store_file) and is_store(renamed)
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    transcript = tmp_path / "t.jsonl"
    TranscriptWriter.create(transcript, source="server", room="lobby").close()
    assert not is_store(other) and not is_store(transcript)
    assert not is_store(tmp_path / "missing.db")


def test_rooms_and_messages_read_back_exactly(store_file: Path) -> None:
    rooms = list_rooms(store_file)
    assert [(r.name, r.messages, r.first_id, r.last_id) for r in rooms] == [
        ("dev", 2, 1, 2),
        ("lobby", 5, 1, 5),
    ]
    lobby = list(read_room(store_file, "lobby"))
    assert [m.id for m in lobby] == [1, 2, 3, 4, 5]
    assert [m.text for m in lobby] == TEXTS  # unicode, escapes, 4096 characters
    assert [m.ts for m in lobby] == [T0 + k * 1.5 for k in range(5)]  # REALs exact
    assert {m.room for m in lobby} == {"lobby"} and {m.from_ for m in lobby} == {"alice"}
    assert [m.id for m in read_room(store_file, "lobby", since=3)] == [4, 5]
    assert list(read_room(store_file, "nowhere")) == []


def test_a_store_in_use_by_a_server_can_be_read(store_file: Path) -> None:
    store = SQLiteStore(store_file)  # holds the lock, as a running serve does
    try:
        say(store, ("lobby", "dave", "still here", T0 + 100))
        assert [m.text for m in read_room(store_file, "lobby")][-1] == "still here"
    finally:
        store.close()


def test_a_store_from_a_newer_chatcli_is_not_misread(store_file: Path) -> None:
    db = sqlite3.connect(store_file)
    db.execute("PRAGMA user_version=99")
    db.close()
    with pytest.raises(StoreError, match="newer chatcli"):
        list_rooms(store_file)


def test_bulk_rows_with_a_nul_take_the_row_by_row_path(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "x.db")
    db.execute("CREATE TABLE t (a TEXT, b REAL)")
    rows = [("a\x00b", 1.5), ("plain", T0), ("ü", 0.1)]
    _insert_many(db, True, "INSERT INTO t VALUES (?, ?)", "unused", rows)
    assert db.execute("SELECT a, b FROM t").fetchall() == rows
    db.close()


# ------------------------------------------------------------------------ the command


def test_replay_plays_a_room_of_a_store_as_text(store_file: Path) -> None:
    result = invoke(str(store_file), "--room", "dev", "--format", "text", "--utc")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith(f"{_clock(T0 + 60)} -- recording started ")
    assert lines[0].endswith(" in dev (server, chatcli 0.1.0 (store chat.db))")
    assert lines[1:3] == [
        f"{_clock(T0 + 60)} <bob> ship it",
        f"{_clock(T0 + 61)} <carol> /me waves",
    ]


def _clock(ts: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).strftime("%H:%M:%S")


def test_export_as_jsonl_is_a_valid_transcript(store_file: Path, tmp_path: Path) -> None:
    result = invoke(str(store_file), "--room", "lobby", "--format", "jsonl")
    assert result.exit_code == 0, result.output
    exported = tmp_path / "lobby.jsonl"
    exported.write_text(result.output)
    lines = [json.loads(line) for line in result.output.splitlines()]
    assert lines[0]["type"] == "transcript" and lines[0]["room"] == "lobby"
    assert lines[0]["source"] == "server"
    assert [line["text"] for line in lines[1:-1]] == TEXTS
    assert lines[-1] == {"type": "end", "ts": T0 + 6.0, "events": 5}
    checked = check_transcript(exported)
    assert checked.ok and checked.events == 5 and not checked.warnings
    again = invoke("--check", str(exported))
    assert again.exit_code == 0 and again.output.endswith("ok (5 events)\n"), again.output
    # the export plays back just like the store itself
    assert (
        invoke(str(exported), "--format", "text").output
        == invoke(str(store_file), "--room", "lobby", "--format", "text").output
    )


def test_filters_apply_to_a_store(store_file: Path) -> None:
    result = invoke(str(store_file), "-r", "lobby", "--grep", "clef", "--no-timestamps")
    assert result.exit_code == 0
    assert result.output.splitlines()[1:] == ["<alice> 𝄞 clef", "-- recording ended (5 events)"]


def test_check_reads_every_room_of_a_store(store_file: Path) -> None:
    result = invoke("--check", str(store_file))
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        f"{store_file}#dev: ok (2 events)",
        f"{store_file}#lobby: ok (5 events)",
        "2 files checked, 0 with problems",
    ]


def test_list_rooms(store_file: Path) -> None:
    result = invoke(str(store_file), "--list-rooms")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("dev\t2 messages\tids 1-2\t")
    assert lines[1].startswith("lobby\t5 messages\tids 1-5\t")
    assert lines[2] == f"2 rooms, 7 messages in {store_file}"


def test_a_store_of_several_rooms_needs_one_room(store_file: Path) -> None:
    result = invoke(str(store_file), "--format", "text")
    assert result.exit_code == 2
    assert "holds 2 rooms: give --room (one of dev, lobby)" in result.output
    result = invoke(str(store_file), "--room", "attic")
    assert result.exit_code == 2 and "no room 'attic' (its rooms: dev, lobby)" in result.output
    result = invoke(str(store_file), "--follow")
    assert result.exit_code == 2 and "not a store" in result.output


def test_list_rooms_needs_a_store(tmp_path: Path) -> None:
    transcript = tmp_path / "t.jsonl"
    TranscriptWriter.create(transcript, source="server", room="lobby").close()
    result = invoke(str(transcript), "--list-rooms")
    assert result.exit_code == 2 and "--list-rooms goes with one STORE" in result.output


# ------------------------------------------- the writer's one-statement-per-group path


@pytest.mark.parametrize("txn", ["t-1", "nul\x00txn", "ünï"])
def test_txns_are_kept_once_within_and_across_groups(tmp_path: Path, txn: str) -> None:
    store = SQLiteStore(tmp_path / "chat.db")
    session = Relay().open("link")
    woken = threading.Event()
    store.set_wakeup(woken.set)

    def group(*texts: str) -> list[Any]:
        for text in texts:
            append = Append(session, "lobby", "alice", text, T0, False, None, (), 0)
            append.txn, append.user = txn, "alice"
            store.submit(append)
        answers: list[Any] = []
        while len(answers) < len(texts):
            answers += store.completed()
            if len(answers) < len(texts):
                assert woken.wait(WAIT)
                woken.clear()
        return answers

    try:
        first, again = group("hello", "hello")  # most often one group: found in memory
        later = group("hello")[0]  # a later group: found in the table
    finally:
        store.close()
    assert not first.duplicate and again.duplicate and later.duplicate
    assert first.msg == again.msg == later.msg
    assert [m.text for m in read_room(tmp_path / "chat.db", "lobby")] == ["hello"]


def test_old_txns_are_pruned_in_batches_never_below_what_is_promised(tmp_path: Path) -> None:
    from chatcli.store.memory import TXN_KEEP_COUNT
    from chatcli.store.sqlite import FORGET_EVERY

    path = tmp_path / "chat.db"
    store = SQLiteStore(path)
    session = Relay().open("link")
    woken = threading.Event()
    store.set_wakeup(woken.set)

    def put(k: int) -> Any:
        # more than a day old: only the count rule keeps them
        append = Append(session, "lobby", "alice", f"m{k}", T0 + k / 1000, False, None, (), 0)
        append.txn, append.user = f"t{k}", "alice"
        store.submit(append)
        return append

    def wait(n: int) -> list[Any]:
        answers: list[Any] = []
        while len(answers) < n:
            answers += store.completed()
            if len(answers) < n:
                assert woken.wait(WAIT)
                woken.clear()
        return answers

    total = TXN_KEEP_COUNT + FORGET_EVERY + 50
    try:
        for start in range(0, total, 100):
            batch = range(start, min(total, start + 100))
            for k in batch:
                put(k)
            wait(len(batch))
        db = sqlite3.connect(path)
        kept = db.execute("SELECT count(*) FROM txns").fetchone()[0]
        db.close()
        assert TXN_KEEP_COUNT <= kept < TXN_KEEP_COUNT + FORGET_EVERY
        put(total - 1)  # recent: still known
        put(0)  # pruned: stored anew
        newest, oldest = wait(2)
    finally:
        store.close()
    assert newest.duplicate and not oldest.duplicate


def test_a_store_left_by_a_killed_server_can_be_read(tmp_path: Path) -> None:
    # The writer process dies without closing: the messages are only in the WAL file.
    path = tmp_path / "chat.db"
    script = (
        "import os, sys\n"
        "sys.path.insert(0, sys.argv[2])\n"
        "from pathlib import Path\n"
        "from test_replay_store import say, T0\n"
        "from chatcli.store.sqlite import SQLiteStore\n"
        "store = SQLiteStore(Path(sys.argv[1]))\n"
        "say(store, ('lobby', 'alice', 'before the crash', T0))\n"
        "os._exit(9)\n"
    )
    tests = str(Path(__file__).parent)
    done = subprocess.run([sys.executable, "-c", script, str(path), tests], timeout=60)
    assert done.returncode == 9
    assert (tmp_path / "chat.db-wal").stat().st_size > 0
    assert [m.text for m in read_room(path, "lobby")] == ["before the crash"]
