"""What a client remembers to resume a session after its connection dropped (no I/O).

Spec 1.1 section 1 gives the server's half: room epochs, ``since``, ``txn``s stored
once, and the ``resume`` token that takes a half-dead session over. This module is the
client's half, as plain state that an adapter (:mod:`chatcli.client.resuming`) drives
and a test drives with an injected clock and random source:

- per room, the epoch and the ids of the messages seen, so that the next ``hello``
  asks for exactly what was missed and nothing is shown twice (de-duplication by
  ``(room, id)``);
- the last ``ready.resume`` token;
- every ``say``/``me`` gets a ``txn``; the messages not yet acknowledged are kept, in
  order, and sent again with the same ``txn`` after a reconnect;
- when to try again (:func:`backoff_delay`: exponential, with jitter) and when to stop
  (a refusal that a retry cannot cure, or ``retry_for`` seconds without a session).
"""

from __future__ import annotations

import random as _random
import time
import uuid
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Final

import msgspec

from chatcli.core.protocol import ClientEvent, Hello, Me, Msg, Ready, Say

__all__ = [
    "BACKOFF_CAP",
    "BACKOFF_FIRST",
    "BACKOFF_JITTER",
    "DEFAULT_RETRY_FOR",
    "FINAL_CODES",
    "NAME_TAKEN_RETRY_FOR",
    "SEEN_PER_ROOM",
    "Caught",
    "ResumeState",
    "backoff_delay",
    "new_txn",
]

#: first pause before reconnecting (seconds); it doubles with each failed attempt ...
BACKOFF_FIRST: Final = 0.5
#: ... up to this
BACKOFF_CAP: Final = 30.0
#: a pause is drawn between (1 - BACKOFF_JITTER) and 1 times its nominal length, so that
#: clients cut off together do not all come back in the same instant
BACKOFF_JITTER: Final = 0.5
#: seconds without a session after which a client gives up reconnecting
DEFAULT_RETRY_FOR: Final = 300.0
#: seconds a ``name_taken`` is retried after a reconnect that offered a token: the server
#: may hold a session it has not yet found dead (its pings take up to 3 x 15 s)
NAME_TAKEN_RETRY_FOR: Final = 120.0
#: message ids remembered per room for de-duplication; older ones are remembered as a floor
SEEN_PER_ROOM: Final = 10_000

#: refusals after which reconnecting is pointless or unwanted: the user was removed,
#: replaced by another connection of theirs, or the login can never succeed as asked
FINAL_CODES: Final = frozenset(
    {"kicked", "banned", "replaced", "name_invalid", "auth_failed", "frame_too_large"}
)


def backoff_delay(
    attempt: int,
    random: Callable[[], float] = _random.random,
    *,
    first: float = BACKOFF_FIRST,
    cap: float = BACKOFF_CAP,
    jitter: float = BACKOFF_JITTER,
) -> float:
    """The pause before reconnection ``attempt`` (1, 2, ...): ``first`` doubling to ``cap``.

    ``random`` returns a float in [0, 1); the pause is shortened by up to ``jitter`` of
    its nominal length.
    """
    nominal = min(cap, first * 2.0 ** (max(attempt, 1) - 1))
    return nominal * (1.0 - jitter * random())


def new_txn() -> str:
    """A fresh transaction id for one message (spec 1.1: 1-64 characters, unique)."""
    return uuid.uuid4().hex


@dataclass
class _Room:
    """What was seen of one room's message stream."""

    epoch: str | None = None
    #: ids at or below this count as seen (the oldest ids forgotten to bound memory)
    floor: int = 0
    ids: set[int] = field(default_factory=set)
    last: int | None = None


class Caught(msgspec.Struct, frozen=True):
    """What a ``ready`` after a reconnect brought: the messages missed, and if some were not."""

    missed: list[Msg]
    truncated: bool


@dataclass
class _InFlight:
    ref: Hashable
    event: ClientEvent


class ResumeState:
    """One user's session across connections; see the module docstring.

    ``clock`` (monotonic seconds) and ``random`` are injected so that the reconnect
    schedule is tested without sleeping.
    """

    def __init__(
        self,
        name: str,
        room: str | None = None,
        history: int | None = None,
        *,
        retry_for: float = DEFAULT_RETRY_FOR,
        name_taken_for: float = NAME_TAKEN_RETRY_FOR,
        clock: Callable[[], float] = time.monotonic,
        random: Callable[[], float] = _random.random,
        seen_per_room: int = SEEN_PER_ROOM,
    ) -> None:
        self.name = name
        self.room = room
        self.history = history
        self.retry_for = retry_for
        self.name_taken_for = name_taken_for
        self._clock = clock
        self._random = random
        self._seen_per_room = seen_per_room
        self._rooms: dict[str, _Room] = {}
        #: the token of the last ``ready``; offered at the next login
        self.token: str | None = None
        #: messages sent (or to be sent) and not yet acknowledged, in the order typed
        self._in_flight: dict[str, _InFlight] = {}
        #: reconnection attempts since the session was lost (0 while connected)
        self.attempt = 0
        #: when the session was lost (None while connected)
        self.lost_at: float | None = None
        #: logged in at least once: later logins are reconnects
        self.logged_in = False
        #: the account's password and the server's, sent with every login (a reconnect
        #: too, so nobody is asked again); never shown by repr()
        self.password: str | None = None
        self.server_password: str | None = None

    # -- logging in ------------------------------------------------------------------

    def hello(self) -> Hello:
        """The ``hello`` for the next login: same name and room, what was seen, the token."""
        room = self._rooms.get(self.room) if self.room else None
        if not self.logged_in or room is None:
            return Hello(
                name=self.name,
                room=self.room,
                history=self.history,
                resume=self.token,
                password=self.password,
                server_password=self.server_password,
            )
        return Hello(
            name=self.name,
            room=self.room,
            since=room.last or 0,
            epoch=room.epoch,
            resume=self.token,
            password=self.password,
            server_password=self.server_password,
        )

    def ready(self, ready: Ready) -> Caught:
        """A ``ready`` arrived (a login or a room change): remember it, say what is new.

        ``missed`` holds the history messages not seen before, in id order. ``truncated``
        is true when the server said some are no longer stored or the room's epoch changed
        (ids of the old stream mean nothing in the new one).
        """
        self.room = ready.room
        if ready.resume is not None:
            self.token = ready.resume
        room = self._rooms.setdefault(ready.room, _Room())
        truncated = ready.truncated
        if ready.epoch is not None and ready.epoch != room.epoch:
            if room.epoch is not None:
                truncated = True
                self._rooms[ready.room] = room = _Room()
            room.epoch = ready.epoch
        missed = [msg for msg in sorted(ready.history, key=lambda m: m.id) if self.first_sight(msg)]
        self.logged_in = True
        self.attempt = 0
        self.lost_at = None
        return Caught(missed, truncated)

    # -- receiving -------------------------------------------------------------------

    def first_sight(self, msg: Msg) -> bool:
        """Record ``msg`` as seen; False when it was seen before (do not show it again)."""
        room = self._rooms.setdefault(msg.room, _Room())
        if msg.id <= room.floor or msg.id in room.ids:
            return False
        room.ids.add(msg.id)
        if room.last is None or msg.id > room.last:
            room.last = msg.id
        if len(room.ids) > self._seen_per_room:
            keep = sorted(room.ids)[len(room.ids) // 2 :]
            room.floor = keep[0] - 1
            room.ids = set(keep)
        return True

    def last_id(self, room: str) -> int | None:
        """The highest message id seen in ``room`` (None: none yet)."""
        known = self._rooms.get(room)
        return known.last if known else None

    def epoch(self, room: str) -> str | None:
        """The epoch of ``room``'s stream as last seen."""
        known = self._rooms.get(room)
        return known.epoch if known else None

    # -- sending ---------------------------------------------------------------------

    def outgoing(self, ref: Hashable, event: ClientEvent) -> ClientEvent:
        """``event`` as it is to be sent: a say or me gets a ``txn`` and is kept until acked.

        A say or me that already has a ``txn`` keeps it (a resend of the same message).
        """
        if isinstance(event, (Say, Me)):
            if event.txn is None:
                event = msgspec.structs.replace(event, txn=new_txn())
            assert event.txn is not None
            self._in_flight[event.txn] = _InFlight(ref, event)
        return event

    def acknowledged(self, msg: Msg) -> None:
        """The sender's copy of a message arrived: it is stored, stop keeping it."""
        if msg.ref is None:
            return
        for txn, sent in self._in_flight.items():
            if sent.ref == msg.ref:
                del self._in_flight[txn]
                return

    def settled(self, ref: Hashable) -> None:
        """The message sent with ``ref`` was refused or given up: do not resend it."""
        for txn, sent in self._in_flight.items():
            if sent.ref == ref:
                del self._in_flight[txn]
                return

    def to_resend(self) -> list[ClientEvent]:
        """The messages to send after a reconnect, in order, with their same ``txn``."""
        return [sent.event for sent in self._in_flight.values()]

    @property
    def in_flight(self) -> int:
        """How many messages wait for an acknowledgement (sent or not yet)."""
        return len(self._in_flight)

    # -- losing the connection ---------------------------------------------------------

    def lost(self) -> float | None:
        """The connection (or an attempt) failed: the pause before the next try, or None.

        None means give up: ``retry_for`` seconds passed since the session was lost.
        """
        now = self._clock()
        if self.lost_at is None:
            self.lost_at = now
        if now - self.lost_at >= self.retry_for:
            return None
        self.attempt += 1
        return backoff_delay(self.attempt, self._random)

    def refused(self, code: str, offered_token: bool) -> float | None:
        """A login was refused with ``code``: the pause before the next try, or None.

        ``name_taken`` after offering a token means the server still holds a session
        it has not found dead: worth retrying for ``name_taken_for`` seconds. Other
        refusals of a reconnect are final (the user was removed or cannot log in).
        """
        if code == "name_taken" and offered_token and self.logged_in:
            now = self._clock()
            if self.lost_at is not None and now - self.lost_at >= self.name_taken_for:
                return None
            return self.lost()
        if code in FINAL_CODES or code == "name_taken" or not self.logged_in:
            return None
        return self.lost()  # e.g. server_full, rate_limited: a passing condition
