"""The SQLite store: rooms' messages, ids and epochs kept in one file across restarts.

Choice (see chatcli.store.base): the relay returns intents and this store carries them out
on a thread of its own, in *groups*: every intent submitted while the previous group was
being committed goes into the next transaction, so under load one commit (one fsync)
covers many messages and the relay's event loop never waits on the disk. A message is
reported ``Stored`` only after its transaction committed (durable before visible: a
``kill -9`` right after any member saw it cannot lose it). Intents are answered strictly
in submission order, recalls included, so a ``ready`` sees every message submitted
before it.

The writer's cost is counted in statements, not bytes: each statement releases the GIL
and must take it back from the relay's busy event loop, which can take a switch
interval (5 ms) each time. So a group costs a fixed handful of statements whatever its
size: its new messages go in as one JSON array unpacked by ``json_each``, its txns are
looked up and inserted the same way, and old txns are pruned every FORGET_EVERY per user.
Per room, the next id is written back every SAVE_ID_EVERY ids only (at start-up the next
id is the larger of the saved one and the highest kept id plus one, and retention always
keeps the newest message, so no id is ever given twice), and retention deletes in steps
of ``prune_step`` messages rather than one statement per commit.

The file is in WAL mode with ``synchronous=FULL``: every commit is fsynced before its
messages are answered. ``NORMAL`` would keep every commit through a ``kill -9`` too (in
WAL mode a commit is in the operating system's cache when it returns) but not through a
power loss or a kernel crash, which "durable before visible" must survive; with group
commit the fsync is paid once per group, so FULL stays. The schema carries a version and is
upgraded in place when an older one is opened; a file from a newer chatcli, or not a
chatcli store at all, is refused at start-up. An advisory lock on ``PATH.lock`` keeps a
second server off a store that is in use.

Boards (schema 3: ``shapes`` for the shapes as their ``draw`` frames in JSON,
``rooms.board_next`` for a room's next shape id as of its last delete) are written like
everything else, in order, in the group's transaction: a board change is answered only
once it is committed. The relay reads every board once at start-up
(:meth:`SQLiteStore.boards`).

Accounts and bans (schema 2) are kept here too and answered on the same writer thread, in
order with everything else: the slow password hashing of a login never runs on the event
loop (see chatcli.store.accounts).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import msgspec

from chatcli.core.board import Board, BoardWrite
from chatcli.core.events import Drawn
from chatcli.core.intents import (
    Append,
    BanRecord,
    BoardChange,
    BoardSaved,
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

__all__ = [
    "DEFAULT_RESUME_LIMIT",
    "DEFAULT_RETAIN",
    "SCHEMA_VERSION",
    "RoomInfo",
    "SQLiteStore",
    "is_store",
    "list_rooms",
    "open_read_only",
    "read_room",
]

log = logging.getLogger("chatcli.store")

#: the schema this code writes; older files are upgraded by MIGRATIONS
SCHEMA_VERSION = 3
#: messages kept per room in the file by default (oldest dropped first)
DEFAULT_RETAIN = 100_000
#: most messages a ``since`` catch-up returns (the newest of them; older ones are truncated)
DEFAULT_RESUME_LIMIT = 1000
#: a user's old txns are pruned once this many more were stored (so a user keeps at most
#: TXN_KEEP_COUNT + FORGET_EVERY - 1 beyond its last 24 hours: more than promised, never less)
FORGET_EVERY = 100
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

#: rooms' whiteboards (protocol 1.1, section 4): each shape is its ``draw`` frame as JSON
#: (the next shape id lives beside the next message id, so that a group with messages and
#: draws in one room updates both with one statement: statements, not bytes, are what a
#: group costs, and every statement delays the messages committed with it)
_SCHEMA_V3 = """
ALTER TABLE rooms ADD COLUMN board_next INTEGER NOT NULL DEFAULT 1;
CREATE TABLE shapes (
    room     TEXT NOT NULL,
    id       INTEGER NOT NULL,
    data     TEXT NOT NULL,
    PRIMARY KEY (room, id)
) WITHOUT ROWID;
"""

#: version -> statements that bring a store of version-1 up to it
MIGRATIONS: dict[int, str] = {1: _SCHEMA_V1, 2: _SCHEMA_V2, 3: _SCHEMA_V3}
_shape_encoder = msgspec.json.Encoder()
_shape_decoder = msgspec.json.Decoder(Drawn)


#: seconds a group waits, under load, after the previous group began (see SQLiteStore._run)
GROUP_DELAY = 0.004
#: a group this large means load: the next one waits for GROUP_DELAY
GROUP_SIBLINGS = 4

#: a room's next id is written to its row once every this many ids (and at close)
SAVE_ID_EVERY = 1024


class _RoomCursor:
    """A room's epoch and next id, cached by the writer thread.

    ``saved_id`` is the next id as last written to the room's row; ``pruned`` the highest
    id retention has deleted up to (0: not pruned since the cursor was loaded).
    """

    __slots__ = ("epoch", "next_id", "pruned", "saved_id")

    def __init__(self, epoch: str, next_id: int, saved_id: int) -> None:
        self.epoch = epoch
        self.next_id = next_id
        self.saved_id = saved_id
        self.pruned = 0


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
        group_delay: float = GROUP_DELAY,
    ) -> None:
        self.path = path
        #: under load (the last group had GROUP_SIBLINGS intents or more), a group is
        #: taken no sooner than this long after the previous one began (see _run)
        self.group_delay = group_delay
        self.retain = max(1, retain)
        #: retention deletes once this many messages are past ``retain`` (1 for small ones)
        self.prune_step = max(1, min(1024, self.retain // 16))
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
        self._idle = False
        self._bulk = _has_json(self._db)
        self._unpruned: dict[str, int] = {}  # per user: txns stored since its last pruning
        self._wakeup: Callable[[], None] = lambda: None
        self._failing = False
        self._thread = threading.Thread(target=self._run, name="chatcli-store", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"

    # -- the Store port (event-loop side) ------------------------------------------------

    def submit(self, intent: Intent) -> None:
        # deque.append is atomic: the lock is taken only to wake a writer that sleeps,
        # not once per message (the relay submits hundreds of thousands a minute)
        self._queue.append(intent)
        if self._idle:
            with self._work:
                self._work.notify()

    def completed(self) -> list[Completion]:
        if not self._done:  # the common case between two commits: no lock
            return []
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
        try:
            self._save_ids()
        finally:
            self._db.close()
        _unlock(self._lock_file)

    def boards(self) -> dict[str, Board]:
        """Every room's board as kept (read once, at start-up, before any intent)."""
        return read_boards(self._db)

    # -- reads for tools (replay, export) ---------------------------------------------------

    def rooms(self) -> list[str]:
        """Names of the rooms the file holds messages of."""
        with self._reader() as db:
            return [row[0] for row in db.execute("SELECT DISTINCT room FROM messages ORDER BY 1")]

    # -- the writer thread -------------------------------------------------------------------

    def _run(self) -> None:
        busy = False  # the last group was large: more are coming, gather them
        began = 0.0
        while True:
            with self._work:
                self._idle = True  # before the check: a submit after it will notify
                while not self._queue and not self._stopping:
                    self._work.wait()
                self._idle = False
            queue = self._queue
            if not queue:
                return
            if busy and not self._stopping:
                # a commit's fixed cost (its fsync above all) is paid once per group, so
                # under load a short wait buys larger groups: PostgreSQL's commit_delay
                wait = began + self.group_delay - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
            began = time.monotonic()
            # only this thread takes from the queue: what submit appends meanwhile waits
            group = [queue.popleft() for _ in range(len(queue))]
            busy = len(group) >= GROUP_SIBLINGS
            answers = self._commit(group)
            with self._done_lock:
                self._done.extend(answers)
            self._wakeup()

    def _commit(self, group: list[Intent]) -> list[Completion]:
        """Carry out one group in one transaction; answers in the group's order.

        The group's new messages are written with one statement (see ``_flush``), not one
        per message: every statement releases and retakes the GIL, and under load each
        retake waits for the relay's busy event loop, so statements per group, not bytes,
        are what a durable relay pays for.
        """
        db = self._db
        answers: list[Completion] = []
        touched: dict[str, int] = {}
        users: dict[str, int] = {}
        rows: list[_Row] = []
        txn_rows: list[tuple[object, ...]] = []
        next_ids: dict[str, int] = {}  # boards changed: room -> the next shape id
        try:
            db.execute("BEGIN IMMEDIATE")
            kept = self._kept_all(group)
            for intent in group:
                if type(intent) is Append:
                    key = None if intent.txn is None else (intent.user, intent.txn)
                    if key is not None:
                        earlier = kept.get(key)
                        if earlier is not None:
                            answers.append(Stored(intent, earlier, duplicate=True))
                            continue
                    msg = self._new_msg(intent)
                    row = (msg.room, msg.id, msg.from_, msg.text, msg.ts, int(msg.action))
                    rows.append(row)
                    if key is not None:
                        txn_rows.append((*key, *row))
                        kept[key] = msg
                        users[intent.user] = users.get(intent.user, 0) + 1
                    touched[intent.room] = msg.id
                    answers.append(Stored(intent, msg))
                elif isinstance(intent, Recall):
                    self._flush(rows, txn_rows)  # a recall sees every append before it
                    answers.append(self._recall(intent))
                elif type(intent) is BoardChange:
                    write = intent.write
                    self._cursor(write.room)  # its rooms row exists (a recall made it)
                    self._write_board(write)
                    if write.delete:  # see _write_board: only a delete must save the next id
                        next_ids[write.room] = max(next_ids.get(write.room, 0), write.next_id)
                    answers.append(BoardSaved(intent))
                else:
                    answers.append(answer(self._book, intent))  # accounts and bans
            self._flush(rows, txn_rows)
            for room, board_next in next_ids.items():  # boards changed: their next shape id
                db.execute(
                    "UPDATE rooms SET board_next = max(board_next, ?) WHERE name = ?",
                    (board_next, room),
                )
            for room, last_id in touched.items():
                cursor = self._rooms[room]
                if cursor.next_id - cursor.saved_id >= SAVE_ID_EVERY:
                    db.execute("UPDATE rooms SET next_id = ? WHERE name = ?", (last_id + 1, room))
                    cursor.saved_id = last_id + 1
                cut = last_id - self.retain
                if cut - cursor.pruned >= self.prune_step:
                    db.execute("DELETE FROM messages WHERE room = ? AND id <= ?", (room, cut))
                    cursor.pruned = cut
            for user, added in users.items():
                # pruning costs a statement per user: do it every FORGET_EVERY txns only
                pending = self._unpruned.get(user, 0) + added
                if pending >= FORGET_EVERY:
                    self._forget_old_txns(user)
                    pending = 0
                self._unpruned[user] = pending
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

    def _flush(self, rows: list[_Row], txn_rows: list[tuple[object, ...]]) -> None:
        """Insert the rows gathered so far: one statement each for messages and txns.

        The rows travel as one JSON array that SQLite's ``json_each`` unpacks (text and
        REAL values round-trip exactly; checked by the tests). A text with a NUL, which
        SQLite's JSON functions would cut, and a SQLite without JSON take executemany.
        """
        db = self._db
        if rows:
            _insert_many(db, self._bulk, _INSERT_MSGS, _INSERT_MSGS_JSON, rows)
            rows.clear()
        if txn_rows:
            _insert_many(db, self._bulk, _INSERT_TXNS, _INSERT_TXNS_JSON, txn_rows)
            txn_rows.clear()

    def _write_board(self, write: BoardWrite) -> None:
        """One board change: deletes, then the shapes put (drawn or moved).

        A room's next shape id is never given twice, across restarts too. The shapes
        kept carry the ids given so far (``read_boards`` starts after the largest), so
        only a group that deletes shapes saves the next id in the room's row
        (``_commit``, once per group): a draw, the board's commonest change, costs one
        statement, not two (every statement of a group hands the GIL to a busy loop and
        back, see ``_commit``)."""
        db, room = self._db, write.room
        if write.delete:
            db.executemany(
                "DELETE FROM shapes WHERE room = ? AND id = ?", [(room, i) for i in write.delete]
            )
        if write.put:
            db.executemany(
                "INSERT OR REPLACE INTO shapes VALUES (?, ?, ?)",
                [(room, d.id, _shape_encoder.encode(d).decode()) for d in write.put],
            )

    def _cursor(self, room: str) -> _RoomCursor:
        cursor = self._rooms.get(room)
        if cursor is None:
            row = self._db.execute(
                "SELECT epoch, next_id, (SELECT max(id) FROM messages WHERE room = ?) "
                "FROM rooms WHERE name = ?",
                (room, room),
            ).fetchone()
            if row is None:
                epoch, saved, last = new_epoch(), 1, None
                self._db.execute(
                    "INSERT INTO rooms (name, epoch, next_id) VALUES (?, ?, ?)",
                    (room, epoch, saved),
                )
            else:
                epoch, saved, last = row
            # the row's next id is written back only now and then: the kept messages,
            # committed with their ids, say how far the room really got
            next_id = saved if last is None else max(saved, last + 1)
            cursor = self._rooms[room] = _RoomCursor(epoch, next_id, saved)
        return cursor

    def _save_ids(self) -> None:
        """Write every room's next id to its row (at close: the next start reads it)."""
        stale = [(c.next_id, room) for room, c in self._rooms.items() if c.next_id != c.saved_id]
        if not stale:
            return
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            db.executemany("UPDATE rooms SET next_id = ? WHERE name = ?", stale)
            db.execute("COMMIT")
        except sqlite3.Error as exc:  # the kept messages still say where each room got to
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            log.warning("store %s: could not save the rooms' next ids: %s", self.path, exc)

    def _new_msg(self, append: Append) -> Msg:
        """The message ``append`` becomes: the room's next id (the row is written later)."""
        cursor = self._cursor(append.room)
        msg = append.message(cursor.next_id)
        cursor.next_id += 1
        return msg

    def _kept_all(self, group: list[Intent]) -> dict[tuple[str, str], Msg]:
        """The messages stored earlier under the (user, txn)s of the group's appends.

        One statement for the whole group (see ``_commit``), or one per txn without JSON.
        """
        keys = [(i.user, i.txn) for i in group if type(i) is Append and i.txn is not None]
        if not keys:
            return {}
        payload = json.dumps(keys, ensure_ascii=False)
        if not self._bulk or "\\u0000" in payload:  # see _insert_many
            found = {key: self._kept(*key) for key in keys}
            return {key: msg for key, msg in found.items() if msg is not None}
        rows = self._db.execute(
            "SELECT t.user, t.txn, t.id, t.room, t.sender, t.text, t.ts, t.action "
            "FROM json_each(?) AS k JOIN txns AS t "
            "ON t.user = json_extract(k.value, '$[0]') AND t.txn = json_extract(k.value, '$[1]')",
            (payload,),
        )
        return {(row[0], row[1]): _msg(row[2:]) for row in rows}

    def _kept(self, user: str, txn: str) -> Msg | None:
        """The message stored earlier under ``user`` and ``txn``, if any."""
        row = self._db.execute(
            "SELECT id, room, sender, text, ts, action FROM txns WHERE user = ? AND txn = ?",
            (user, txn),
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


#: a message row: room, id, sender, text, ts, action
_Row = tuple[str, int, str, str, float, int]
_INSERT_MSGS = "INSERT INTO messages (room, id, sender, text, ts, action) VALUES (?, ?, ?, ?, ?, ?)"
_INSERT_TXNS = "INSERT INTO txns VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
_INSERT_MSGS_JSON = (
    "INSERT INTO messages (room, id, sender, text, ts, action) SELECT "
    + ", ".join(f"json_extract(value, '$[{k}]')" for k in range(6))
    + " FROM json_each(?)"
)
_INSERT_TXNS_JSON = (
    "INSERT INTO txns SELECT "
    + ", ".join(f"json_extract(value, '$[{k}]')" for k in range(8))
    + " FROM json_each(?)"
)


def _insert_many(
    db: sqlite3.Connection, bulk: bool, each: str, as_json: str, rows: Sequence[tuple[object, ...]]
) -> None:
    """Insert ``rows``: in one statement over a JSON array when we can, else row by row."""
    if bulk and len(rows) > 1:
        payload = json.dumps(rows, ensure_ascii=False)
        if "\\u0000" not in payload:
            db.execute(as_json, (payload,))
            return
    db.executemany(each, rows)


def _has_json(db: sqlite3.Connection) -> bool:
    """Whether this SQLite has the JSON functions the bulk insert uses."""
    try:
        db.execute("SELECT json_extract('[1]', '$[0]')").fetchone()
    except sqlite3.Error:
        return False
    return True


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


# -- reading a store without a server (replay, export) ------------------------------------
#
# Tools read a store read-only, beside a server that may be writing it (WAL mode lets a
# reader see the last committed state without blocking the writer), without its lock.

_SQLITE_MAGIC = b"SQLite format 3\x00"


@dataclass(frozen=True)
class RoomInfo:
    """One room of a store: its epoch and the messages the store still holds."""

    name: str
    epoch: str
    messages: int
    first_id: int | None
    last_id: int | None
    first_ts: float | None
    last_ts: float | None


def is_store(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a chatcli store: a SQLite file marked with our application id.

    Decided by the file's content, never by its name: the SQLite header (its first 100
    bytes) carries the mark; a store whose server died before the first checkpoint has
    the mark only in its write-ahead log, so an unmarked (or empty) file beside a WAL
    file is asked through SQLite itself, read-only.
    """
    where = os.fspath(path)
    try:
        with open(where, "rb") as file:
            head = file.read(100)
    except OSError:
        return False
    if is_sqlite_header(head):
        if int.from_bytes(head[68:72], "big") == _APPLICATION_ID:
            return True
    elif head:
        return False
    if not os.path.exists(where + "-wal"):
        return False
    try:
        db = sqlite3.connect(_read_only_uri(where), uri=True)
        try:
            return bool(db.execute("PRAGMA application_id").fetchone()[0] == _APPLICATION_ID)
        finally:
            db.close()
    except sqlite3.Error:
        return False


def _read_only_uri(path: str) -> str:
    return Path(path).resolve().as_uri() + "?mode=ro"


def is_sqlite_header(head: bytes) -> bool:
    """Whether these first bytes of a file are a SQLite database's header."""
    return head.startswith(_SQLITE_MAGIC)


@contextlib.contextmanager
def open_read_only(path: str | os.PathLike[str]) -> Iterator[sqlite3.Connection]:
    """A read-only connection to the store at ``path``, checked to be one we can read.

    Raises StoreError (one line for the user) when it is not a chatcli store, was written
    by a newer chatcli, or cannot be read.
    """
    where = os.fspath(path)
    if not is_store(where):
        raise StoreError(f"{where} is not a chatcli store")
    try:
        db = sqlite3.connect(_read_only_uri(where), uri=True)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read the store {where}: {_describe(exc)}") from exc
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"the store {where} was written by a newer chatcli (schema {version}, "
                f"this one knows {SCHEMA_VERSION}); upgrade chatcli to read it"
            )
        yield db
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read the store {where}: {_describe(exc)}") from exc
    finally:
        db.close()


def list_rooms(path: str | os.PathLike[str]) -> list[RoomInfo]:
    """Every room of the store at ``path``, by name, with what it holds."""
    with open_read_only(path) as db:
        db.execute("BEGIN")  # one snapshot for the whole listing
        rows = db.execute(
            "SELECT r.name, r.epoch, count(m.id), min(m.id), max(m.id), min(m.ts), max(m.ts) "
            "FROM rooms r LEFT JOIN messages m ON m.room = r.name "
            "GROUP BY r.name ORDER BY r.name"
        ).fetchall()
    return [RoomInfo(*row) for row in rows]


def read_room(
    path: str | os.PathLike[str], room: str, *, since: int | None = None
) -> Iterator[Msg]:
    """The messages of ``room`` the store at ``path`` holds, oldest first, streaming.

    ``since``: only messages with a greater id. One read transaction covers the whole
    iteration, so a server writing meanwhile neither blocks it nor shows it half a commit.
    Raises StoreError when the store cannot be read (see :func:`open_read_only`).
    """
    with open_read_only(path) as db:
        db.execute("BEGIN")
        rows = db.execute(
            "SELECT id, room, sender, text, ts, action FROM messages "
            "WHERE room = ? AND id > ? ORDER BY id",
            (room, -1 if since is None else since),
        )
        for row in rows:
            yield _msg(row)


def read_boards(db: sqlite3.Connection) -> dict[str, Board]:
    """Every room's board in the store ``db`` is connected to."""
    shapes: dict[str, list[Drawn]] = {}
    for room, data in db.execute("SELECT room, data FROM shapes ORDER BY room, id"):
        shapes.setdefault(room, []).append(_shape_decoder.decode(data))
    boards = {
        room: Board(shapes.pop(room, []), next_id)
        for room, next_id in db.execute("SELECT name, board_next FROM rooms WHERE board_next > 1")
    }
    for room, left in shapes.items():  # shapes without a rooms row: not written by us
        boards[room] = Board(left)
    return boards
