"""The stores themselves: the memory store and the SQLite file, held to one contract.

Intents are submitted as the relay's pipeline would and answers awaited through the
store's wake-up, with a bound on every wait. The SQLite tests use real files.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatcli.core.intents import Append, Completion, Failed, Recall, Recalled, Stored
from chatcli.core.protocol import Msg
from chatcli.core.relay import Relay, Session
from chatcli.errors import StoreError
from chatcli.store import describe_store, open_store
from chatcli.store.base import Store
from chatcli.store.memory import MemoryStore
from chatcli.store.sqlite import SCHEMA_VERSION, SQLiteStore

WAIT = 10.0
T0 = 1763700000.0


class Driver:
    """Submits intents to a store and waits (bounded) for their answers."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.session: Session = Relay().open("link")
        self._woken = threading.Event()
        store.set_wakeup(self._woken.set)

    def run(self, *intents: Append | Recall) -> list[Completion]:
        for intent in intents:
            self.store.submit(intent)
        answers: list[Completion] = []
        while len(answers) < len(intents):
            answers += self.store.completed()
            if len(answers) < len(intents):
                assert self._woken.wait(WAIT), "the store did not answer in time"
                self._woken.clear()
        return answers

    def say(self, room: str, *texts: str) -> list[Msg]:
        appends = [
            Append(self.session, room, "alice", text, T0, False, None, (), 0) for text in texts
        ]
        answers = self.run(*appends)
        assert all(isinstance(a, Stored) for a in answers), answers
        return [a.msg for a in answers if isinstance(a, Stored)]

    def history(self, room: str, limit: int = 50, since: int | None = None) -> Recalled:
        [answer] = self.run(Recall(self.session, room, limit, since))
        assert isinstance(answer, Recalled)
        return answer


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    made: Store = (
        MemoryStore(5) if request.param == "memory" else SQLiteStore(tmp_path / "s.db", retain=5)
    )
    yield made
    made.close()


def ids(recalled: Recalled) -> list[int]:
    return [m.id for m in recalled.history]


# -------------------------------------------------------------- the contract, both stores


def test_ids_increase_per_room_and_answers_come_in_order(store: Store) -> None:
    d = Driver(store)
    msgs = d.say("lobby", "a", "b") + d.say("dev", "c") + d.say("lobby", "d")
    assert [(m.room, m.id, m.text) for m in msgs] == [
        ("lobby", 1, "a"),
        ("lobby", 2, "b"),
        ("dev", 1, "c"),
        ("lobby", 3, "d"),
    ]


def test_a_recall_sees_every_append_submitted_before_it(store: Store) -> None:
    d = Driver(store)
    session = d.session
    answers = d.run(
        Append(session, "lobby", "bob", "one", T0, False, "r", (), 0),
        Recall(session, "lobby", 50, None),
        Append(session, "lobby", "bob", "two", T0, True, None, (), 0),
    )
    assert [type(a) for a in answers] == [Stored, Recalled, Stored]
    recalled = answers[1]
    assert isinstance(recalled, Recalled)
    assert [(m.id, m.text, m.from_) for m in recalled.history] == [(1, "one", "bob")]
    last = answers[2]
    assert isinstance(last, Stored) and last.msg.action is True


def test_history_keeps_the_last_n_and_since_flags_what_is_gone(store: Store) -> None:
    d = Driver(store)
    d.say("lobby", *(f"m{i}" for i in range(1, 13)))  # 12 said, 5 kept
    assert ids(d.history("lobby")) == [8, 9, 10, 11, 12]
    assert ids(d.history("lobby", limit=2)) == [11, 12]
    assert ids(d.history("lobby", limit=0)) == []
    r = d.history("lobby", since=9)
    assert (ids(r), r.truncated) == ([10, 11, 12], False)
    r = d.history("lobby", since=7)  # 8 is the oldest kept: nothing missing
    assert (ids(r), r.truncated) == ([8, 9, 10, 11, 12], False)
    r = d.history("lobby", since=2)
    assert (ids(r), r.truncated) == ([8, 9, 10, 11, 12], True)
    r = d.history("lobby", since=12)
    assert (ids(r), r.truncated) == ([], False)
    r = d.history("lobby", since=99)  # an id this room never had
    assert (ids(r), r.truncated) == ([8, 9, 10, 11, 12], True)
    r = d.history("empty", since=0)
    assert (ids(r), r.truncated) == ([], False)


# ------------------------------------------------------------------------- SQLite only


def test_sqlite_keeps_messages_ids_across_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "keep.db"
    store = SQLiteStore(path)
    Driver(store).say("lobby", "before")
    store.close()
    store = SQLiteStore(path)
    d = Driver(store)
    assert [m.text for m in d.history("lobby").history] == ["before"]
    assert [m.id for m in d.say("lobby", "after")] == [2]
    store.close()


def _saved_next_id(path: Path, room: str) -> int:
    reader = sqlite3.connect(path)
    try:
        return int(
            reader.execute("SELECT next_id FROM rooms WHERE name = ?", (room,)).fetchone()[0]
        )
    finally:
        reader.close()


def test_a_clean_close_writes_each_rooms_next_id_back(tmp_path: Path) -> None:
    path = tmp_path / "saved.db"
    store = SQLiteStore(path)
    Driver(store).say("lobby", "a", "b", "c")
    store.close()
    assert _saved_next_id(path, "lobby") == 4


def test_ids_go_on_from_the_kept_messages_when_the_next_id_was_never_saved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server killed before its close saved nothing: the committed messages say how far
    each room got, so no id is ever given twice (retention always keeps the newest)."""
    path = tmp_path / "killed.db"
    store = SQLiteStore(path, retain=2)
    Driver(store).say("lobby", *(f"m{i}" for i in range(1, 8)))
    monkeypatch.setattr(store, "_save_ids", lambda: None)  # as if killed: nothing saved
    store.close()
    assert _saved_next_id(path, "lobby") == 1  # the row is stale...
    store = SQLiteStore(path, retain=2)
    try:
        assert [m.id for m in Driver(store).say("lobby", "after")] == [8]  # ...the ids are not
    finally:
        store.close()


def test_retention_deletes_in_steps_and_never_keeps_fewer_than_asked(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "steps.db", retain=32)
    assert store.prune_step == 2
    d = Driver(store)
    try:
        kept_counts = []
        for i in range(1, 81):
            d.say("lobby", f"m{i}")
            kept_counts.append(len(d.history("lobby", limit=1000).history))
        assert min(kept_counts[31:]) == 32
        assert max(kept_counts) <= 32 + store.prune_step
        assert ids(d.history("lobby", limit=1000))[-1] == 80
    finally:
        store.close()


def test_sqlite_commits_before_it_answers(tmp_path: Path) -> None:
    """Durable before visible: what was answered Stored is in the file for any reader."""
    path = tmp_path / "d.db"
    store = SQLiteStore(path)
    Driver(store).say("lobby", "kept?")
    reader = sqlite3.connect(path)
    try:
        assert reader.execute("SELECT text FROM messages").fetchall() == [("kept?",)]
    finally:
        reader.close()
        store.close()


def test_a_second_server_on_one_store_is_refused_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "one.db"
    first = SQLiteStore(path)
    try:
        with pytest.raises(StoreError, match=r"in use by another chatcli serve \(pid \d+\)"):
            SQLiteStore(path)
    finally:
        first.close()
    SQLiteStore(path).close()  # free again once the first one closed


def test_a_store_from_a_newer_chatcli_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    SQLiteStore(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(StoreError, match="newer chatcli"):
        SQLiteStore(path)


def test_a_file_that_is_not_a_store_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE t (x)")
    db.close()
    with pytest.raises(StoreError, match="not a chatcli store"):
        SQLiteStore(other)
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database, just text\n" * 200)
    with pytest.raises(StoreError, match="not a chatcli store"):
        SQLiteStore(garbage)


def test_a_store_whose_directory_cannot_be_made_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="cannot use the store"):
        SQLiteStore(blocker / "sub" / "s.db")


def test_an_empty_old_file_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "v0.db"
    sqlite3.connect(path).close()  # schema 0: an empty SQLite file
    store = SQLiteStore(path)
    store.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.close()


def test_a_full_disk_refuses_the_message_and_the_store_recovers(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "full.db")
    d = Driver(store)
    d.say("lobby", "fits")
    page_count = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count={page_count}")  # no room to grow
    big = "x" * 4000
    answers = d.run(*(Append(d.session, "lobby", "a", big, T0, False, i, (), 0) for i in range(20)))
    assert answers and all(isinstance(a, Failed) for a in answers)
    assert "disk is full" in answers[0].reason  # type: ignore[union-attr]
    store._db.execute("PRAGMA max_page_count=1073741823")
    assert [m.id for m in d.say("lobby", "again")] == [2]  # the failed ones took no id
    store.close()


def test_open_store_and_its_description(tmp_path: Path) -> None:
    memory = open_store("memory", history=3, retain=10)
    assert isinstance(memory, MemoryStore) and "memory" in describe_store(memory)
    path = tmp_path / "x.db"
    disk = open_store(path, history=3, retain=10)
    try:
        assert isinstance(disk, SQLiteStore) and str(path) in describe_store(disk)
    finally:
        disk.close()


def test_under_load_a_group_waits_for_the_group_delay_and_a_lone_message_does_not(
    tmp_path: Path,
) -> None:
    """Group commit under load (PostgreSQL's commit_delay): after a group of
    GROUP_SIBLINGS or more, the next group begins no sooner than ``group_delay`` after it,
    so commits (and their fsyncs) are shared by more messages; a quiet store never waits."""
    import time

    from chatcli.store.sqlite import GROUP_SIBLINGS

    store = SQLiteStore(tmp_path / "delay.db", group_delay=1.0)
    d = Driver(store)
    try:
        began = time.monotonic()
        d.say("lobby", "alone")  # a group of one: the next group may go at once
        d.say("lobby", "quick")
        assert time.monotonic() - began < 0.9
        began = time.monotonic()
        d.say("lobby", *(f"m{i}" for i in range(GROUP_SIBLINGS)))  # a busy group
        d.say("lobby", "after a busy group")
        assert time.monotonic() - began >= 1.0
    finally:
        store.close()
