"""The memory store: rooms' recent messages and ids kept in this process only.

It completes every intent inside ``submit``, so a relay over it delivers in the same
event-loop turn and pays nothing for the store port. Nothing survives a restart, so each
room gets a new epoch when this process first sees it.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence

from chatcli.core.intents import Append, Completion, Intent, Recall, Recalled, Stored
from chatcli.core.protocol import Msg

__all__ = ["TXN_KEEP_COUNT", "TXN_KEEP_SECONDS", "MemoryStore", "new_epoch"]

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
        else:
            assert isinstance(intent, Recall)
            log = self._log(intent.room)
            if intent.epoch is not None and intent.epoch != log.epoch:
                history, truncated = self.history(intent.room, intent.limit, None)[0], True
            else:
                history, truncated = self.history(intent.room, intent.limit, intent.since)
            self._done.append(Recalled(intent, history, truncated, log.epoch))

    def completed(self) -> list[Completion]:
        done, self._done = self._done, []
        return done

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
        msg = Msg(
            id=log.next_id,
            room=append.room,
            from_=append.sender,
            text=append.text,
            ts=append.ts,
            action=append.action,
        )
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
