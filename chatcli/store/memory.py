"""The memory store: rooms' recent messages and ids kept in this process only.

It completes every intent inside ``submit``, so a relay over it delivers in the same
event-loop turn and pays nothing for the store port. Nothing survives a restart.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence

from chatcli.core.intents import Append, Completion, Intent, Recall, Recalled, Stored
from chatcli.core.protocol import Msg

__all__ = ["MemoryStore"]


class _RoomLog:
    """One room's kept messages and the next id to give."""

    __slots__ = ("messages", "next_id")

    def __init__(self, keep: int) -> None:
        self.messages: deque[Msg] = deque(maxlen=keep)
        self.next_id = 1


class MemoryStore:
    """Keeps the last ``keep`` messages of every room in memory; ids never restart.

    A room's log is kept once it has had a message, even when nobody is in it, so that its
    ids never begin again at 1 while the process lives.
    """

    def __init__(self, keep: int = 50) -> None:
        self.keep = keep
        self._rooms: dict[str, _RoomLog] = {}
        self._done: list[Completion] = []

    # -- the Store port ----------------------------------------------------------------

    def submit(self, intent: Intent) -> None:
        """Carry ``intent`` out at once; its completion is ready for :meth:`completed`."""
        if type(intent) is Append:
            self._done.append(Stored(intent, self.append(intent)))
        else:
            assert isinstance(intent, Recall)
            history, truncated = self.history(intent.room, intent.limit, intent.since)
            self._done.append(Recalled(intent, history, truncated))

    def completed(self) -> list[Completion]:
        done, self._done = self._done, []
        return done

    def set_wakeup(self, wakeup: Callable[[], None]) -> None:
        """Never needed: every intent completes inside :meth:`submit`."""

    def close(self) -> None:
        """Nothing to release: the memory goes with the process."""

    # -- reads and writes --------------------------------------------------------------

    def append(self, append: Append) -> Msg:
        """Keep the message ``append`` describes under its room's next id."""
        log = self._rooms.get(append.room)
        if log is None:
            log = self._rooms[append.room] = _RoomLog(self.keep)
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
