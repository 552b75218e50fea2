"""The SQLite store: rooms' messages, ids and epochs kept in one file across restarts.

Choice (see chatcli.store.base): the relay returns intents and this store carries them out
on a thread of its own, in *groups*: every intent submitted while the previous group was
being committed goes into the next transaction, so under load one commit (one fsync)
covers many messages and the relay's event loop never waits on the disk. A message is
reported ``Stored`` only after its transaction committed (durable before visible: a
``kill -9`` right after any member saw it cannot lose it). Intents are answered strictly
in submission order, recalls included, so a ``ready`` sees every message submitted
before it.

The file is in WAL mode with ``synchronous=FULL``; the schema carries a version and is
upgraded in place when an older one is opened; a file from a newer chatcli, or not a
chatcli store at all, is refused at start-up. An advisory lock on ``PATH.lock`` keeps a
second server off a store that is in use.

Accounts and bans (schema 2) are kept here too and answered on the same writer thread, in
order with everything else: the slow password hashing of a login never runs on the event
loop (see chatcli.store.accounts).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from chatcli.core.intents import (
    Append,
    BanRecord,
    Completion,
    Failed,
    Intent,
    Recall,
    Recalled,
    Stored,
)
from chatcli.core.protocol import Msg
from chatcli.errors import StoreError
from chatcli.store.accounts import answer
from chatcli.store.memory import TXN_KEEP_COUNT, TXN_KEEP_SECONDS, new_epoch

__all__ = ["DEFAULT_RESUME_LIMIT", "DEFAULT_RETAIN", "SCHEMA_VERSION", "SQLiteStore"]

log = logging.getLogger("chatcli.store")

#: the schema this code writes; older files are upgraded by MIGRATIONS
SCHEMA_VERSION = 2
#: messages kept per room in the file by default (oldest dropped first)
DEFAULT_RETAIN = 100_000
#: most messages a ``since`` catch-up returns (the newest of them; older ones are truncated)
DEFAULT_RESUME_LIMIT = 1000
_APPLICATION_ID = 0x63686174  # "chat": marks a SQLite file as a chatcli store

_SCHEMA_V1 = """
CREATE TABLE rooms (
    name     TEXT PRIMARY KEY,
    epoch    TEXT NOT NULL,
    next_id  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE messages (
    room     TEXT NOT NULL,
    id       INTEGER NOT NULL,
    sender   TEXT NOT NULL,
    text     TEXT NOT NULL,
    ts       REAL NOT NULL,
    action   INTEGER NOT NULL DEFAULT 0,
    txn      TEXT,
    PRIMARY KEY (room, id)
) WITHOUT ROWID;
CREATE TABLE txns (
    user     TEXT NOT NULL,
    txn      TEXT NOT NULL,
    room     TEXT NOT NULL,
    id       INTEGER NOT NULL,
    sender   TEXT NOT NULL,
    text     TEXT NOT NULL,
    ts       REAL NOT NULL,
    action   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user, txn)
) WITHOUT ROWID;
CREATE INDEX txns_by_age ON txns (user, ts);
"""

#: accounts and bans (protocol 1.1, sections 2 and 3); keys are chatcli.core.names's
_SCHEMA_V2 = """
CREATE TABLE accounts (
    key      TEXT PRIMARY KEY,
    alike    TEXT NOT NULL,
    name     TEXT NOT NULL,
    hash     TEXT NOT NULL,
    created  REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX accounts_by_alike ON accounts (alike);
CREATE TABLE bans (
    key        TEXT PRIMARY KEY,
    alike      TEXT NOT NULL,
    name       TEXT NOT NULL,
    address    TEXT,
    until      REAL,
    reason     TEXT NOT NULL,
    banned_by  TEXT NOT NULL,
    ts         REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX bans_by_alike ON bans (alike);
CREATE INDEX bans_by_address ON bans (address);
"""

#: version -> statements that bring a store of version-1 up to it
MIGRATIONS: dict[int, str] = {1: _SCHEMA_V1, 2: _SCHEMA_V2}


class _RoomCursor:
    """A room's epoch and next id, cached by the writer thread."""

    __slots__ = ("epoch", "next_id")

    def __init__(self, epoch: str, next_id: int) -> None:
        self.epoch = epoch
        self.next_id = next_id


class _SQLiteBook:
    """Accounts and bans in the store's tables; used on the writer thread only."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def account(self, keys: tuple[str, str]) -> tuple[str, str] | None:
        row = self._db.execute(
            "SELECT name, hash FROM accounts WHERE key = ? OR alike = ? LIMIT 1", keys
        ).fetchone()
        return None if row is None else (row[0], row[1])

    def put_account(self, keys: tuple[str, str], name: str, hashed: str) -> None:
        self._db.execute(
            "INSERT INTO accounts VALUES (?, ?, ?, ?, ?)", (*keys, name, hashed, time.time())
        )

    def set_hash(self, key: str, hashed: str) -> None:
        self._db.execute("UPDATE accounts SET hash = ? WHERE key = ?", (hashed, key))

    def bans(self, keys: tuple[str, str], address: str | None) -> list[BanRecord]:
        rows = self._db.execute(
            "SELECT key, alike, name, address, until, reason, banned_by FROM bans "
            "WHERE key = ? OR alike = ? OR (? IS NOT NULL AND address = ?)",
            (*keys, address, address),
        ).fetchall()
        return [BanRecord(*row) for row in rows]

    def put_ban(self, ban: BanRecord) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO bans VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (ban.key, ban.alike, ban.name, ban.address, ban.until, ban.reason, ban.by, time.time()),
        )

    def drop_bans(self, keys: tuple[str, str]) -> int:
        return self._db.execute("DELETE FROM bans WHERE key = ? OR alike = ?", keys).rowcount


class SQLiteStore:
    """A store in one SQLite file, committed in groups by a writer thread."""

    def __init__(
        self,
        path: Path,
        *,
        retain: int = DEFAULT_RETAIN,
        resume_limit: int = DEFAULT_RESUME_LIMIT,
    ) -> None:
        self.path = path
        self.retain = max(1, retain)
        self.resume_limit = max(1, resume_limit)
        self._lock_file = _lock(path)
        try:
            self._db = _open(path)
        except BaseException:
            _unlock(self._lock_file)
            raise
        self._rooms: dict[str, _RoomCursor] = {}
        self._book = _SQLiteBook(self._db)
        self._queue: deque[Intent] = deque()
        self._done: list[Completion] = []
        self._done_lock = threading.Lock()
        self._work = threading.Condition()
        self._stopping = False
        self._wakeup: Callable[[], None] = lambda: None
        self._failing = False
        self._thread = threading.Thread(target=self._run, name="chatcli-store", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"

    # -- the Store port (event-loop side) ------------------------------------------------

    def submit(self, intent: Intent) -> None:
        with self._work:
            self._queue.append(intent)
            self._work.notify()

    def completed(self) -> list[Completion]:
        with self._done_lock:
            done, self._done = self._done, []
        return done

    def set_wakeup(self, wakeup: Callable[[], None]) -> None:
        self._wakeup = wakeup

    def close(self) -> None:
        """Commit what was submitted, stop the writer, release the file and its lock."""
        with self._work:
            self._stopping = True
            self._work.notify()
        self._thread.join()
        self._db.close()
        _unlock(self._lock_file)

    # -- reads for tools (replay, export) ---------------------------------------------------

    def rooms(self) -> list[str]:
        """Names of the rooms the file holds messages of."""
        with self._reader() as db:
            return [row[0] for row in db.execute("SELECT DISTINCT room FROM messages ORDER BY 1")]

    # -- the writer thread -------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._work:
                while not self._queue and not self._stopping:
                    self._work.wait()
                if not self._queue:
                    return
                group = list(self._queue)
                self._queue.clear()
            answers = self._commit(group)
            with self._done_lock:
                self._done.extend(answers)
            self._wakeup()

    def _commit(self, group: list[Intent]) -> list[Completion]:
        db = self._db
        answers: list[Completion] = []
        touched: dict[str, int] = {}
        users: set[str] = set()
        try:
            db.execute("BEGIN IMMEDIATE")
            for intent in group:
                if type(intent) is Append:
                    kept = self._kept(intent) if intent.txn is not None else None
                    if kept is not None:
                        answers.append(Stored(intent, kept, duplicate=True))
                        continue
                    msg = self._insert(intent)
                    touched[intent.room] = msg.id
                    if intent.txn is not None:
                        users.add(intent.user)
                    answers.append(Stored(intent, msg))
                elif isinstance(intent, Recall):
                    answers.append(self._recall(intent))
                else:
                    answers.append(answer(self._book, intent))
            for room, next_id in touched.items():
                db.execute("UPDATE rooms SET next_id = ? WHERE name = ?", (next_id + 1, room))
                cut = next_id - self.retain
                if cut > 0:
                    db.execute("DELETE FROM messages WHERE room = ? AND id <= ?", (room, cut))
            for user in users:
                self._forget_old_txns(user)
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            self._rooms.clear()  # ids given in the failed transaction are given again
            reason = f"the server could not store this: {_describe(exc)}"
            if not self._failing:
                log.error("store %s: %s; refusing messages until it works again", self.path, exc)
                self._failing = True
            return [Failed(intent, reason) for intent in group]
        if self._failing:
            log.warning("store %s works again", self.path)
            self._failing = False
        return answers

    def _cursor(self, room: str) -> _RoomCursor:
        cursor = self._rooms.get(room)
        if cursor is None:
            row = self._db.execute(
                "SELECT epoch, next_id FROM rooms WHERE name = ?", (room,)
            ).fetchone()
            if row is None:
                row = (new_epoch(), 1)
                self._db.execute("INSERT INTO rooms VALUES (?, ?, ?)", (room, *row))
            cursor = self._rooms[room] = _RoomCursor(row[0], row[1])
        return cursor

    def _insert(self, append: Append) -> Msg:
        cursor = self._cursor(append.room)
        msg = Msg(
            id=cursor.next_id,
            room=append.room,
            from_=append.sender,
            text=append.text,
            ts=append.ts,
            action=append.action,
        )
        row = (msg.room, msg.id, msg.from_, msg.text, msg.ts, int(msg.action))
        self._db.execute(
            "INSERT INTO messages (room, id, sender, text, ts, action) VALUES (?, ?, ?, ?, ?, ?)",
            row,
        )
        if append.txn is not None:
            self._db.execute(
                "INSERT INTO txns VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (append.user, append.txn, *row)
            )
        cursor.next_id += 1
        return msg

    def _kept(self, append: Append) -> Msg | None:
        """The message stored earlier under ``append``'s user and txn, if any."""
        row = self._db.execute(
            "SELECT id, room, sender, text, ts, action FROM txns WHERE user = ? AND txn = ?",
            (append.user, append.txn),
        ).fetchone()
        return None if row is None else _msg(row)

    def _forget_old_txns(self, user: str) -> None:
        """Keep a user's txns of the last 24 hours or last 1000 messages, whichever is more."""
        row = self._db.execute(
            "SELECT ts FROM txns WHERE user = ? ORDER BY ts DESC LIMIT 1 OFFSET ?",
            (user, TXN_KEEP_COUNT),
        ).fetchone()
        if row is not None:
            cut = min(row[0], time.time() - TXN_KEEP_SECONDS)
            self._db.execute("DELETE FROM txns WHERE user = ? AND ts <= ?", (user, cut))

    def _recall(self, recall: Recall) -> Recalled:
        epoch = self._cursor(recall.room).epoch
        if recall.epoch is not None and recall.epoch != epoch:
            history = self._history(recall.room, recall.limit, None)[0]
            return Recalled(recall, history, True, epoch)
        history, truncated = self._history(recall.room, recall.limit, recall.since)
        return Recalled(recall, history, truncated, epoch)

    def _history(self, room: str, limit: int, since: int | None) -> tuple[list[Msg], bool]:
        """Same rules as the memory store: see MemoryStore.history."""
        cursor = self._cursor(room)
        last_id = cursor.next_id - 1
        select = "SELECT id, room, sender, text, ts, action FROM messages WHERE room = ? "

        def recent() -> list[Msg]:
            if limit <= 0:
                return []
            rows = self._db.execute(select + "ORDER BY id DESC LIMIT ?", (room, limit))
            return [_msg(row) for row in reversed(rows.fetchall())]

        if since is None:
            return recent(), False
        if since > last_id:
            return recent(), True
        rows = self._db.execute(
            select + "AND id > ? ORDER BY id DESC LIMIT ?", (room, since, self.resume_limit)
        ).fetchall()
        after = [_msg(row) for row in reversed(rows)]
        first = after[0].id if after else last_id + 1
        return after, since + 1 < first

    @contextlib.contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        try:
            yield db
        finally:
            db.close()


def _msg(row: tuple[int, str, str, str, float, int]) -> Msg:
    return Msg(id=row[0], room=row[1], from_=row[2], text=row[3], ts=row[4], action=bool(row[5]))


def _describe(exc: BaseException) -> str:
    text = str(exc)
    if "disk" in text or "full" in text:
        return "the disk is full"
    if "readonly" in text or "read-only" in text:
        return "the store is read-only"
    return text


# -- opening, checking and upgrading a file ----------------------------------------------


def _lock(path: Path) -> IO[str]:
    """Take the advisory lock that keeps a second server off this store."""
    lock_path = path.with_name(path.name + ".lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock_file = open(lock_path, "a+")  # noqa: SIM115 - held for the store's life
    except OSError as exc:
        raise StoreError(f"cannot use the store {path}: {exc.strerror or exc}") from exc
    try:
        import fcntl

        fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except ImportError:  # no fcntl on this platform: no lock
        pass
    except OSError as exc:
        lock_file.seek(0)
        holder = lock_file.read().strip()
        lock_file.close()
        who = f" (pid {holder})" if holder.isdigit() else ""
        raise StoreError(
            f"the store {path} is in use by another chatcli serve{who}; "
            "give --store another file, or --store memory"
        ) from exc
    lock_file.seek(0)
    lock_file.truncate()
    lock_file.write(str(os.getpid()))
    lock_file.flush()
    return lock_file


def _unlock(lock_file: IO[str]) -> None:
    with contextlib.suppress(OSError):
        lock_file.seek(0)
        lock_file.truncate()
    lock_file.close()


def _open(path: Path) -> sqlite3.Connection:
    """Open (or create) the file, check it is a chatcli store we can use, upgrade it."""
    try:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open the store {path}: {_describe(exc)}") from exc
    try:
        _prepare(db, path)
    except BaseException:
        db.close()
        raise
    return db


def _prepare(db: sqlite3.Connection, path: Path) -> None:
    try:
        app_id = db.execute("PRAGMA application_id").fetchone()[0]
        version = db.execute("PRAGMA user_version").fetchone()[0]
        tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path} is not a chatcli store (or is damaged): {exc}") from exc
    if tables and app_id != _APPLICATION_ID:
        raise StoreError(f"{path} is not a chatcli store; give --store another file")
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"the store {path} was written by a newer chatcli (schema {version}, "
            f"this one knows {SCHEMA_VERSION}); upgrade chatcli or use another --store"
        )
    try:
        if db.execute("PRAGMA journal_mode=WAL").fetchone()[0].lower() != "wal":
            raise StoreError(f"the store {path} cannot use write-ahead logging")
        db.execute("PRAGMA synchronous=FULL")
        if version < SCHEMA_VERSION:
            db.execute("BEGIN IMMEDIATE")
            for step in range(version + 1, SCHEMA_VERSION + 1):
                _run_script(db, MIGRATIONS[step])
            db.execute(f"PRAGMA application_id={_APPLICATION_ID}")
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            db.execute("COMMIT")
            if version:
                log.info("store %s upgraded from schema %d to %d", path, version, SCHEMA_VERSION)
        db.execute("SELECT count(*) FROM rooms").fetchone()
        check = db.execute("PRAGMA quick_check").fetchone()[0]
    except sqlite3.Error as exc:
        raise StoreError(f"cannot use the store {path}: {_describe(exc)}") from exc
    if check != "ok":
        raise StoreError(f"the store {path} is damaged: {check}")


def _run_script(db: sqlite3.Connection, script: str) -> None:
    """Run each statement of ``script`` inside the current transaction."""
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)
