"""The memory store: rooms' recent messages and ids kept in this process only.

It completes every intent inside ``submit``, so a relay over it delivers in the same
event-loop turn and pays nothing for the store port. Nothing survives a restart, so each
room gets a new epoch when this process first sees it. Accounts and bans are kept in
memory too (:class:`MemoryBook`); their password hashing runs inside ``submit``, on the
event loop (see chatcli.store.accounts for the cost and why it is acceptable here).
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence

from chatcli.core.board import Board
from chatcli.core.intents import (
    Append,
    BanRecord,
    BoardChange,
    BoardSaved,
    Completion,
    Intent,
    Recall,
    Recalled,
    Stored,
)
from chatcli.core.protocol import Msg
from chatcli.store.accounts import answer

__all__ = ["TXN_KEEP_COUNT", "TXN_KEEP_SECONDS", "MemoryBook", "MemoryStore", "new_epoch"]

#: a user's txns are remembered for at least this long...
TXN_KEEP_SECONDS = 24 * 3600.0
#: ...or for at least this many of its latest messages, whichever is more (spec 1.1)
TXN_KEEP_COUNT = 1000


def new_epoch() -> str:
    """A fresh room epoch: opaque, unique enough never to repeat."""
    return secrets.token_hex(8)


class _RoomLog:
    """One room's kept messages, the next id to give and the epoch they belong to."""

    __slots__ = ("epoch", "messages", "next_id")

    def __init__(self, keep: int) -> None:
        self.messages: deque[Msg] = deque(maxlen=keep)
        self.next_id = 1
        self.epoch = new_epoch()


class MemoryBook:
    """Accounts and bans in dictionaries (the AccountBook of chatcli.store.accounts)."""

    def __init__(self) -> None:
        #: name key -> (look-alike key, name, hash)
        self._accounts: dict[str, tuple[str, str, str]] = {}
        #: name key -> ban
        self._bans: dict[str, BanRecord] = {}

    def account(self, keys: tuple[str, str]) -> tuple[str, str] | None:
        found = self._accounts.get(keys[0])
        if found is None:
            found = next((a for a in self._accounts.values() if a[0] == keys[1]), None)
        return None if found is None else (found[1], found[2])

    def put_account(self, keys: tuple[str, str], name: str, hashed: str) -> None:
        self._accounts[keys[0]] = (keys[1], name, hashed)

    def set_hash(self, key: str, hashed: str) -> None:
        alike, name, _ = self._accounts[key]
        self._accounts[key] = (alike, name, hashed)

    def bans(self, keys: tuple[str, str], address: str | None) -> list[BanRecord]:
        return [
            ban
            for ban in self._bans.values()
            if ban.key == keys[0]
            or ban.alike == keys[1]
            or (address is not None and ban.address == address)
        ]

    def put_ban(self, ban: BanRecord) -> None:
        self._bans[ban.key] = ban

    def drop_bans(self, keys: tuple[str, str]) -> int:
        gone = [k for k, ban in self._bans.items() if ban.key == keys[0] or ban.alike == keys[1]]
        for key in gone:
            del self._bans[key]
        return len(gone)


class MemoryStore:
    """Keeps the last ``keep`` messages of every room in memory; ids never restart.

    A room's log is kept once it has had a message, even when nobody is in it, so that its
    ids never begin again at 1 while the process lives.
    """

    def __init__(self, keep: int = 50, clock: Callable[[], float] = time.time) -> None:
        self.keep = keep
        self.clock = clock
        self._rooms: dict[str, _RoomLog] = {}
        self._done: list[Completion] = []
        #: user -> txn -> (when, the message it was stored as), oldest first
        self._txns: dict[str, OrderedDict[str, tuple[float, Msg]]] = {}
        self.book = MemoryBook()
        #: every room's board as kept (the relay holds its own copy)
        self._boards: dict[str, Board] = {}

    # -- the Store port ----------------------------------------------------------------

    def submit(self, intent: Intent) -> None:
        """Carry ``intent`` out at once; its completion is ready for :meth:`completed`."""
        if type(intent) is Append:
            if intent.txn is not None:
                txns = self._txns.get(intent.user)
                kept = txns.get(intent.txn) if txns is not None else None
                if kept is not None:
                    self._done.append(Stored(intent, kept[1], duplicate=True))
                    return
            msg = self.append(intent)
            if intent.txn is not None:
                self._remember(intent.user, intent.txn, msg)
            self._done.append(Stored(intent, msg))
        elif isinstance(intent, Recall):
            log = self._log(intent.room)
            if intent.epoch is not None and intent.epoch != log.epoch:
                history, truncated = self.history(intent.room, intent.limit, None)[0], True
            else:
                history, truncated = self.history(intent.room, intent.limit, intent.since)
            self._done.append(Recalled(intent, history, truncated, log.epoch))
        elif type(intent) is BoardChange:
            write = intent.write
            board = self._boards.get(write.room)
            if board is None:
                board = self._boards[write.room] = Board()
            board.apply(write)
            self._done.append(BoardSaved(intent))
        else:
            self._done.append(answer(self.book, intent))

    def completed(self) -> list[Completion]:
        done, self._done = self._done, []
        return done

    def boards(self) -> dict[str, Board]:
        """Every room's board (empty in a new process: nothing survives it)."""
        return {room: board.copy() for room, board in self._boards.items()}

    def set_wakeup(self, wakeup: Callable[[], None]) -> None:
        """Never needed: every intent completes inside :meth:`submit`."""

    def close(self) -> None:
        """Nothing to release: the memory goes with the process."""

    # -- reads and writes --------------------------------------------------------------

    def _log(self, room: str) -> _RoomLog:
        log = self._rooms.get(room)
        if log is None:
            log = self._rooms[room] = _RoomLog(self.keep)
        return log

    def _remember(self, user: str, txn: str, msg: Msg) -> None:
        txns = self._txns.setdefault(user, OrderedDict())
        now = self.clock()
        txns[txn] = (now, msg)
        while len(txns) > TXN_KEEP_COUNT:
            oldest = next(iter(txns.values()))[0]
            if now - oldest < TXN_KEEP_SECONDS:
                break
            txns.popitem(last=False)

    def append(self, append: Append) -> Msg:
        """Keep the message ``append`` describes under its room's next id."""
        log = self._log(append.room)
        msg = append.message(log.next_id)
        log.next_id += 1
        log.messages.append(msg)
        return msg

    def history(self, room: str, limit: int, since: int | None) -> tuple[list[Msg], bool]:
        """Kept messages, oldest first: the last ``limit``, or every one after id ``since``.

        The flag is True when messages after ``since`` are no longer kept, or when
        ``since`` is an id this room never had (the server, and its ids, restarted since
        the client saw it, so it may have missed anything: it gets the recent history).
        """
        log = self._rooms.get(room)
        kept: Sequence[Msg] = log.messages if log is not None else ()
        last_id = log.next_id - 1 if log is not None else 0
        recent = list(kept)[-limit:] if limit > 0 else []
        if since is None:
            return recent, False
        if since > last_id:
            return recent, True
        first = kept[0].id if kept else last_id + 1
        after = [m for m in kept if m.id > since]
        return after, since + 1 < first
