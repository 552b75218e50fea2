"""The store port: what the relay asks of whatever keeps rooms beyond a connection's life.

The relay never calls a store. It returns *intents* beside its deliveries (``Append``:
store this message and give it its id; ``Recall``: read a room's history for a ``ready``)
and the adapter hands them to a :class:`Store`, which answers each with a *completion*
(``Stored``, ``Recalled`` or ``Failed``) that the relay turns into deliveries. This is the
h11 way of keeping I/O out of the domain logic, and it is what lets a store that answers
later (SQLite committing in groups on a thread, NATS JetStream acknowledging over the
network) sit below the relay without the relay, or the sans-I/O hub, ever waiting: a
memory store completes every intent the moment it is submitted, an asynchronous one
completes them later and calls the wake-up it was given.

The contract every store keeps:

- intents complete in the order they were submitted (so a room's ids are given, and its
  messages delivered, in one order, and a ``Recall`` sees every ``Append`` submitted
  before it);
- a message is reported ``Stored`` only once it is kept (durable before visible);
- a store that cannot keep a message reports ``Failed`` with a reason, never drops it.

:class:`chatcli.store.pipeline.StorePipeline` carries this out between a relay and a store.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from chatcli.core.board import Board
from chatcli.core.intents import (
    Append,
    Completion,
    Failed,
    Intent,
    Recall,
    Recalled,
    Stored,
)

__all__ = [
    "Append",
    "Completion",
    "Failed",
    "Intent",
    "Recall",
    "Recalled",
    "Store",
    "Stored",
]


class Store(Protocol):
    """Keeps rooms' messages and ids; takes intents and answers them in order."""

    def submit(self, intent: Intent) -> None:
        """Start carrying ``intent`` out; its completion follows in submission order."""

    def completed(self) -> list[Completion]:
        """Take the completions ready so far, oldest first (empty when none are)."""

    def boards(self) -> dict[str, Board]:
        """Every room's whiteboard as kept: read once, when a relay starts on this store.

        Board changes themselves are intents (``BoardChange``), answered ``BoardSaved``.
        """

    def set_wakeup(self, wakeup: Callable[[], None]) -> None:
        """Call ``wakeup`` (from any thread) whenever completions become ready later.

        A store that completes every intent inside ``submit`` never calls it.
        """

    def close(self) -> None:
        """Finish outstanding work and release what the store holds."""
