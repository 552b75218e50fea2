"""What the relay asks of the store, and what the store answers: intents and completions.

The relay returns intents beside its deliveries; the adapter hands them to the store
(chatcli.store), whose completions the relay turns into deliveries. Plain records, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from chatcli.core.events import Cleared, Drawn, Erased, Hello, Moved, Msg, Nick, Ref

if TYPE_CHECKING:
    from chatcli.core.board import BoardWrite
    from chatcli.core.relay import Session

__all__ = [
    "AddBan",
    "AddressChecked",
    "Answered",
    "Append",
    "Authenticate",
    "Authenticated",
    "BanRecord",
    "BoardChange",
    "BoardSaved",
    "ChangePassword",
    "CheckAddress",
    "Completion",
    "Failed",
    "Intent",
    "LiftBan",
    "Recall",
    "Recalled",
    "Register",
    "Relayed",
    "RelayedBoard",
    "Stored",
]


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

    def message(self, id: int) -> Msg:
        """The message this append becomes once the store gave it ``id``."""
        return Msg(
            id=id, room=self.room, from_=self.sender, text=self.text, ts=self.ts, action=self.action
        )


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


@dataclass(frozen=True, slots=True)
class BanRecord:
    """A ban: the name's two keys (chatcli.core.names) and the address, until ``until``.

    ``until`` None is until unbanned; ``address`` None bans the name only (loopback
    addresses are never banned). ``by`` is the operator who banned, for the log.
    """

    key: str
    alike: str
    name: str
    address: str | None
    until: float | None
    reason: str
    by: str

    def active(self, now: float) -> bool:
        """True while the ban holds."""
        return self.until is None or now < self.until


@dataclass(slots=True, eq=False)
class Authenticate:
    """Intent: may ``session`` log in as ``name`` (keys ``keys``) from ``address``?

    The store looks the name (and its look-alikes) up among accounts and bans, and checks
    ``password`` against the account's hash (slow on purpose, so never on the event loop
    of a store that has a thread). ``hello`` is kept for the login that follows;
    ``rename`` instead when a logged-in session asks to change its name (``nick``).
    """

    session: Session
    hello: Hello | None
    name: str
    keys: tuple[str, str]
    address: str | None
    password: str | None
    now: float
    rename: Nick | None = None


@dataclass(slots=True, eq=False)
class Register:
    """Intent: ``session``'s name (``keys``) gets an account with ``password``."""

    session: Session
    name: str
    keys: tuple[str, str]
    password: str
    ref: Ref


@dataclass(slots=True, eq=False)
class ChangePassword:
    """Intent: the account with ``keys`` gets password ``new`` if ``old`` is its password."""

    session: Session
    keys: tuple[str, str]
    old: str
    new: str
    ref: Ref


@dataclass(slots=True, eq=False)
class AddBan:
    """Intent: keep ``ban`` (replacing any ban of the same name) so it survives restarts."""

    session: Session
    ban: BanRecord
    ref: Ref


@dataclass(slots=True, eq=False)
class LiftBan:
    """Intent: remove every ban of a name with one of ``keys`` (lifting ``name``'s ban)."""

    session: Session
    name: str
    keys: tuple[str, str]
    ref: Ref


@dataclass(slots=True, eq=False)
class CheckAddress:
    """Intent: is ``address`` (a new connection's) banned at ``now``?"""

    session: Session
    address: str
    now: float


@dataclass(slots=True, eq=False)
class BoardChange:
    """Intent: keep ``write`` (one change of ``write.room``'s board) before anyone sees it.

    ``event`` is what the room is told once it is kept (``echo`` the sender's copy, with
    its ``ref``); ``targets`` and ``version`` are the room's members and membership
    version when the change was made, as for :class:`Append`.
    """

    session: Session
    write: BoardWrite
    event: Drawn | Erased | Moved | Cleared
    echo: Drawn | Erased | Moved | Cleared | None
    ref: Ref
    targets: Sequence[Session]
    version: int


Intent = (
    Append
    | Recall
    | Authenticate
    | Register
    | ChangePassword
    | AddBan
    | LiftBan
    | CheckAddress
    | BoardChange
)


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


@dataclass(slots=True, eq=False)
class Authenticated:
    """The answer to :class:`Authenticate`.

    ``registered``: the name (or a look-alike) has an account, named ``account``;
    ``verified``: the password given matches it; ``ban``: an active ban of the name, its
    look-alikes or the address, if any.
    """

    intent: Authenticate
    registered: bool
    verified: bool
    ban: BanRecord | None = None
    account: str = ""
    #: a cluster: another node's user holds the name (or a look-alike); why, for the user
    taken: str | None = None


@dataclass(slots=True, eq=False)
class AddressChecked:
    """The answer to :class:`CheckAddress`: the active ban of that address, if any."""

    intent: CheckAddress
    ban: BanRecord | None


@dataclass(slots=True, eq=False)
class Answered:
    """The answer to Register, ChangePassword, AddBan or LiftBan: done, or why not."""

    intent: Register | ChangePassword | AddBan | LiftBan
    ok: bool
    reason: str = ""


@dataclass(slots=True, eq=False)
class BoardSaved:
    """The board change of ``intent`` is kept.

    ``seq``: a cluster's store gives the change's place in the rooms' shared order (a
    draw's shape id is it), and the relay settles the change against the board as it
    stands then (chatcli.core.board.RoomBoard.settle); None for a single server.
    """

    intent: BoardChange
    seq: int | None = None


@dataclass(slots=True, eq=False)
class Relayed:
    """Not an answer: a message another cluster node stored, in the room's order.

    A store that shares rooms between nodes (chatcli.cluster) hands these out among its
    completions, at the place in the room's order where they belong.
    """

    msg: Msg


@dataclass(slots=True, eq=False)
class RelayedBoard:
    """Not an answer: a board change another cluster node stored, at its place ``seq``."""

    event: Drawn | Erased | Moved | Cleared
    seq: int


Completion = (
    Relayed
    | RelayedBoard
    | Stored
    | Recalled
    | Failed
    | Authenticated
    | Answered
    | AddressChecked
    | BoardSaved
)
