"""What the relay asks of the store, and what the store answers: intents and completions.

The relay returns intents beside its deliveries; the adapter hands them to the store
(chatcli.store), whose completions the relay turns into deliveries. Plain records, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from chatcli.core.events import Msg, Ref

if TYPE_CHECKING:
    from chatcli.core.relay import Session

__all__ = ["Append", "Completion", "Failed", "Intent", "Recall", "Recalled", "Stored"]


@dataclass(slots=True, eq=False)
class Append:
    """Intent: keep a message said in ``room`` and give it the room's next id.

    ``targets`` are the room's members when it was said; ``version`` is the room's
    membership version then, so the relay can tell whether they are still the members
    when the store answers (an asynchronous store answers later). ``txn``, when the client
    gave one, makes the append idempotent per ``user`` (the sender's name key): a store
    that already holds ``(user, txn)`` answers with that message, marked a duplicate.
    """

    session: Session
    room: str
    sender: str
    text: str
    ts: float
    action: bool
    ref: Ref
    targets: Sequence[Session]
    version: int
    txn: str | None = None
    user: str = ""


@dataclass(slots=True, eq=False)
class Recall:
    """Intent: read ``room``'s history for ``session``'s ``ready``.

    The last ``limit`` messages, or, when ``since`` is given, every kept message after
    that id (with ``truncated`` set when some of them are no longer kept). A ``since``
    from another ``epoch`` than the room's means nothing: the recent history, truncated.
    """

    session: Session
    room: str
    limit: int
    since: int | None
    epoch: str | None = None


Intent = Append | Recall


@dataclass(slots=True, eq=False)
class Stored:
    """The message of ``intent`` is kept as ``msg`` (with its id and room).

    ``duplicate``: the store already had this ``txn`` and ``msg`` is what it kept then.
    """

    intent: Append
    msg: Msg
    duplicate: bool = False


@dataclass(slots=True, eq=False)
class Recalled:
    """The history ``intent`` asked for, oldest first."""

    intent: Recall
    history: list[Msg]
    truncated: bool
    epoch: str = ""


@dataclass(slots=True, eq=False)
class Failed:
    """The store could not carry ``intent`` out; ``reason`` is for the person affected."""

    intent: Intent
    reason: str


Completion = Stored | Recalled | Failed
