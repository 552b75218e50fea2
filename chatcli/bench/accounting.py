"""Loss, duplicate and reorder accounting: correctness is checked, not assumed.

Every message is identified by (sender index, seq), seq strictly increasing per sender.
Each simulated client keeps one ``ClientLog``: what it sent (seq, send time, room), the
membership windows of the rooms it was in, and what it received from each sender. At the
end ``account`` compares the logs (from every worker process) and says, for the messages
sent in the measured window, how many deliveries were owed, how many arrived, how many
never did (lost: counted, never dropped from the figures), and how many arrived twice,
out of order, or where they had no business arriving.

The sender's own copy of a message is its acknowledgement (the protocol promises exactly
one answer per send), so it is owed too: at the end each client reports, with
``never_acked``, the seqs whose echo never came back, and ``account`` counts those of the
measured window as ``unacked`` and adds them to ``lost``. A relay that drops every ack,
or a middlebox that drops only the senders' copies, therefore fails ``loss==0``.

A delivery is OWED (expected) when the receiver was certainly a member of the message's
room when the message was sent, and PERMITTED when it may have been (joins and leaves
race with messages in flight). The simulator marks a membership with four moments:

- ``joining(room, t)``: asked to enter (hello or join sent): deliveries now permitted,
  and this client's own sends go to that room;
- ``joined(t)``: ``ready`` arrived: messages others send from ``t`` on are owed
  (the relay emitted ``ready`` after adding the client, so it sees them after that);
- ``leaving(t)``: from ``t`` nothing more is owed (call it, then keep reading for a grace
  period before actually leaving, so messages sent just before ``t`` can still arrive);
- ``left(t)``: gone; nothing sent from ``t`` on can arrive.

With several relays (``bench --target a,b``: the nodes of a cluster), each client is on
one of them; given ``target_of`` (client index -> which relay), ``account`` also counts
the owed deliveries, and those that arrived, whose sender was on another relay than the
receiver (``cross_node_expected``, ``cross_node``): the traffic that crossed between
nodes. They are part of ``expected`` and ``received``, never counted apart from them.

Receiving costs one dict lookup in the common case: per sender the log keeps the highest
contiguous run of seqs seen; gaps, late arrivals and duplicates take a slower path that
keeps older runs. Memory is a few words per (receiver, sender) pair plus one run per gap,
and 16 bytes per message sent, so 200 clients x 100k messages fit easily; nothing is
stored per delivery. All times must come from one clock shared by every worker (e.g.
``time.monotonic()``).
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left, bisect_right
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import chain, islice, pairwise
from typing import Final

__all__ = [
    "DUPLICATE",
    "NEW",
    "REORDERED",
    "ClientLog",
    "DeliveryCounts",
    "account",
]

NEW: Final = 0
"""``delivered`` result: the first copy, in order."""
REORDERED: Final = 1
"""``delivered`` result: the first copy, but after a later message from the same sender."""
DUPLICATE: Final = 2
"""``delivered`` result: a copy already received (do not record its latency again)."""

DEFAULT_EXAMPLES: Final = 10
"""How many lost or unexpected deliveries ``account`` lists by name, for diagnosis."""

_NEVER: Final = math.inf
_BEYOND: Final = 1 << 63  # above any seq


class _Window:
    """One stay of a client in one room (see the module docstring for the four moments)."""

    __slots__ = ("certain_from", "certain_until", "possible_from", "possible_until", "room")

    def __init__(self, room: str, t: float) -> None:
        self.room = room
        self.possible_from = t
        self.certain_from = _NEVER
        self.certain_until = _NEVER
        self.possible_until = _NEVER


class ClientLog:
    """What one simulated client sent, when it was in which room, and what it received."""

    __slots__ = (
        "_end",
        "_older",
        "_room",
        "_room_changes",
        "_send_seqs",
        "_send_times",
        "_start",
        "_unacked",
        "_windows",
        "client",
        "duplicated",
        "reordered",
    )

    def __init__(self, client: int) -> None:
        self.client = client
        self.duplicated = 0
        """Copies received more than once, over the whole run (warmup included)."""
        self.reordered = 0
        """First copies received after a later seq of the same sender (whole run)."""
        self._send_seqs = array("q")
        self._send_times = array("d")
        self._room: str | None = None
        self._room_changes: list[tuple[int, str | None]] = []  # (first send index, room)
        self._windows: list[_Window] = []
        # Received seqs per sender as sorted disjoint runs [start, end): the highest run in
        # _start/_end (the hot path), the others in _older, only when there were gaps.
        self._start: dict[int, int] = {}
        self._end: dict[int, int] = {}
        self._older: dict[int, list[tuple[int, int]]] = {}
        self._unacked: set[int] = set()

    # ------------------------------------------------------------ membership

    @property
    def next_expected(self) -> dict[int, int]:
        """Per sender, the seq that continues its highest run of received seqs.

        For the receive hot path: when ``next_expected.get(sender) == seq`` the message is
        NEW and in order, and bumping the entry to ``seq + 1`` is exactly what
        :meth:`delivered` would do; in every other case call :meth:`delivered`.
        """
        return self._end

    @property
    def room(self) -> str | None:
        """The room this client's sends go to (None before joining or after leaving)."""
        return self._room

    def joining(self, room: str, t: float) -> None:
        """Asked to enter ``room`` at ``t`` (leaving any current room: nothing more is owed
        there, though its messages may still arrive until ``joined``)."""
        if self._windows:
            current = self._windows[-1]
            current.certain_until = min(current.certain_until, t)
        self._windows.append(_Window(room, t))
        self._set_room(room)

    def joined(self, t: float) -> None:
        """The relay confirmed the latest ``joining`` at ``t``; an earlier room is left."""
        if not self._windows:
            raise ValueError(f"client {self.client}: joined before joining")
        *earlier, current = self._windows
        current.certain_from = t
        for window in earlier:
            window.possible_until = min(window.possible_until, t)

    def leaving(self, t: float) -> None:
        """From ``t`` on, no more deliveries are owed to this client."""
        if self._windows:
            current = self._windows[-1]
            current.certain_until = min(current.certain_until, t)

    def left(self, t: float) -> None:
        """Gone at ``t`` (bye acknowledged, connection closed or lost)."""
        for window in self._windows:
            window.certain_until = min(window.certain_until, t)
            window.possible_until = min(window.possible_until, t)
        self._set_room(None)

    def _set_room(self, room: str | None) -> None:
        if self._room != room:
            self._room = room
            self._room_changes.append((len(self._send_seqs), room))

    # ---------------------------------------------------------------- sending

    def sent(self, seq: int, t: float) -> None:
        """This client sent message ``seq`` at ``t`` into its current room."""
        seqs, times = self._send_seqs, self._send_times
        if seqs and (seq <= seqs[-1] or t < times[-1]):
            raise ValueError(
                f"client {self.client}: seq {seq} at {t} does not follow "
                f"seq {seqs[-1]} at {times[-1]}"
            )
        if self._room is None:
            raise ValueError(f"client {self.client}: sent seq {seq} while in no room")
        seqs.append(seq)
        times.append(t)

    def never_acked(self, seqs: Iterable[int]) -> None:
        """These seqs, sent by this client, never got their answer (their echo).

        Call it when a connection of this client is given up (at the end of the run, or
        when it leaves to come back on a new connection) with the seqs it still waited for.
        """
        self._unacked.update(seqs)

    def sent_seqs(self, first: int = 0) -> array[int]:
        """The seqs this client sent, from its ``first``-th send on."""
        return self._send_seqs[first:]

    def unacked_between(self, lo: int, hi: int) -> int:
        """How many of this client's sends with index in [lo, hi) were never acknowledged."""
        if not self._unacked:
            return 0
        seqs = self._send_seqs
        return sum(1 for seq in self._unacked if lo <= bisect_left(seqs, seq) < hi)

    @property
    def sent_count(self) -> int:
        """How many messages this client sent, over the whole run."""
        return len(self._send_seqs)

    # -------------------------------------------------------------- receiving

    def delivered(self, sender: int, seq: int) -> int:
        """Record that message (sender, seq) arrived; NEW, REORDERED or DUPLICATE.

        Feed every copy of every other client's message, in arrival order; never this
        client's own echo (it is the sender's ack, not a delivery).
        """
        ends = self._end
        if ends.get(sender) == seq:
            ends[sender] = seq + 1
            return NEW
        return self._delivered_slowly(sender, seq)

    def _delivered_slowly(self, sender: int, seq: int) -> int:
        end = self._end.get(sender)
        if end is None or seq > end:  # first from this sender, or past a gap
            if end is not None:
                self._older.setdefault(sender, []).append((self._start[sender], end))
            self._start[sender] = seq
            self._end[sender] = seq + 1
            return NEW
        start = self._start[sender]
        if seq >= start:
            self.duplicated += 1
            return DUPLICATE
        older = self._older.setdefault(sender, [])
        k = bisect_right(older, (seq, _NEVER)) - 1  # the last older run starting <= seq
        if k >= 0 and seq < older[k][1]:
            self.duplicated += 1
            return DUPLICATE
        # A first copy arriving late: it fills (part of) a gap below the highest seq seen.
        self.reordered += 1
        low, high = seq, seq + 1
        if k >= 0 and older[k][1] == seq:
            low = older.pop(k)[0]
            k -= 1
        if high == start:
            self._start[sender] = low
        elif k + 1 < len(older) and older[k + 1][0] == high:
            older[k + 1] = (low, older[k + 1][1])
        else:
            older.insert(k + 1, (low, high))
        return REORDERED

    def received_runs(self, sender: int) -> list[tuple[int, int]]:
        """The seqs received from ``sender`` as sorted disjoint ranges [start, end)."""
        if sender not in self._end:
            return []
        return [*self._older.get(sender, []), (self._start[sender], self._end[sender])]

    @property
    def senders(self) -> list[int]:
        """Every sender this client received anything from."""
        return list(self._end)


@dataclass(frozen=True)
class DeliveryCounts:
    """The correctness figures of a run (see ``account``)."""

    sent: int
    expected: int
    received: int
    lost: int
    """Owed copies that never arrived: deliveries to other members, plus ``unacked``."""
    duplicated: int
    reordered: int
    unexpected: int
    permitted: int
    """Deliveries that arrived while membership was in flux: neither owed nor wrong."""
    unacked: int = 0
    """Sends whose answer (the sender's own copy) never came back; part of ``lost``."""
    lost_examples: list[tuple[int, int, int]] = field(default_factory=list)
    """Some (receiver, sender, seq) that were owed and never arrived."""
    unexpected_examples: list[tuple[int, int, int]] = field(default_factory=list)
    """Some (receiver, sender, seq) that arrived where they should not have."""
    cross_node_expected: int | None = None
    """Of ``expected``, those whose sender was on another relay (None: one relay)."""
    cross_node: int | None = None
    """Of ``received``, those whose sender was on another relay (None: one relay)."""

    @property
    def loss(self) -> float | None:
        """lost / expected, or None when no delivery was owed (a run that proves nothing).

        ``lost`` includes the unacknowledged sends, so this exceeds 1 only when the
        senders' copies went missing as well as the deliveries.
        """
        return self.lost / self.expected if self.expected else None

    def metrics(self) -> dict[str, float | None]:
        """These figures under their ``METRICS`` names (the cross-relay ones only when
        counted: a run against one relay has none)."""
        figures: dict[str, float | None] = {
            "sent": float(self.sent),
            "expected": float(self.expected),
            "received": float(self.received),
            "lost": float(self.lost),
            "loss": self.loss,
            "unacked": float(self.unacked),
            "duplicated": float(self.duplicated),
            "reordered": float(self.reordered),
            "unexpected": float(self.unexpected),
        }
        if self.cross_node is not None and self.cross_node_expected is not None:
            figures["cross_node_expected"] = float(self.cross_node_expected)
            figures["cross_node"] = float(self.cross_node)
        return figures


# A sender's messages in one room, as a range of indexes into its send arrays.
_Segment = tuple["ClientLog", int, int]


def _segments(
    logs: Iterable[ClientLog], since: float, until: float
) -> tuple[dict[str, list[_Segment]], dict[int, tuple[ClientLog, int, int]]]:
    """Per room, each sender's measured sends there; per sender, its measured range."""
    by_room: dict[str, list[_Segment]] = defaultdict(list)
    measured: dict[int, tuple[ClientLog, int, int]] = {}
    for log in logs:
        times = log._send_times
        lo, hi = bisect_left(times, since), bisect_left(times, until)
        measured[log.client] = (log, lo, hi)
        changes = log._room_changes
        for n, (first, room) in enumerate(changes):
            last = changes[n + 1][0] if n + 1 < len(changes) else len(times)
            a, b = max(first, lo), min(last, hi)
            if room is not None and a < b:
                by_room[room].append((log, a, b))
    return by_room, measured


def _index_range(times: array[float], a: int, b: int, t0: float, t1: float) -> tuple[int, int]:
    """Indexes in [a, b) whose send time is in [t0, t1)."""
    return max(a, bisect_left(times, t0, a, b)), min(b, bisect_left(times, t1, a, b))


def _count_in_runs(seqs: array[int], a: int, b: int, runs: list[tuple[int, int]]) -> int:
    """How many of seqs[a:b] lie in the runs."""
    return sum(bisect_left(seqs, end, a, b) - bisect_left(seqs, start, a, b) for start, end in runs)


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, disjoint union of index ranges."""
    merged: list[tuple[int, int]] = []
    for a, b in sorted(r for r in ranges if r[0] < r[1]):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
        else:
            merged.append((a, b))
    return merged


def _missing(
    seqs: array[int], a: int, b: int, runs: list[tuple[int, int]], limit: int
) -> list[int]:
    """Up to ``limit`` of seqs[a:b] in no run, found gap by gap rather than seq by seq."""
    out: list[int] = []
    edges = [(-_BEYOND, -_BEYOND), *runs, (_BEYOND, _BEYOND)]
    for (_, gap_start), (gap_end, _) in pairwise(edges):
        i = bisect_left(seqs, gap_start, a, b)
        j = bisect_left(seqs, gap_end, a, b)
        out.extend(seqs[i : min(j, i + limit - len(out))])
        if len(out) >= limit:
            break
    return out


def _strays(
    seqs: array[int],
    measured: tuple[int, int],
    allowed: list[tuple[int, int]],
    runs: list[tuple[int, int]],
) -> Iterator[int]:
    """Received seqs that were never sent, or sent in the measured range but not allowed."""
    lo, hi = measured
    for start, end in runs:
        for seq in range(start, end):
            i = bisect_left(seqs, seq)
            never_sent = i == len(seqs) or seqs[i] != seq
            if never_sent or (lo <= i < hi and not any(a <= i < b for a, b in allowed)):
                yield seq


@dataclass
class _Tally:
    """Running totals of ``account``, one (receiver, sender) pair at a time."""

    max_examples: int
    expected: int = 0
    received: int = 0
    cross_expected: int = 0
    cross_received: int = 0
    unexpected: int = 0
    permitted: int = 0
    lost_examples: list[tuple[int, int, int]] = field(default_factory=list)
    unexpected_examples: list[tuple[int, int, int]] = field(default_factory=list)

    def pair(
        self,
        receiver: int,
        sender: int,
        found: tuple[ClientLog, int, int] | None,
        runs: list[tuple[int, int]],
        owed: list[tuple[int, int]],
        allowed: list[tuple[int, int]],
        cross: bool = False,
    ) -> None:
        """Add what ``receiver`` was owed by, permitted from and got from one sender.

        ``found`` is the sender's (log, measured index range), None when its log is
        missing; ``owed`` and ``allowed`` are index ranges into its sends; ``cross``
        says the two were on different relays.
        """
        if found is None:  # no log of this sender: nothing it sent was expected
            self.unexpected += sum(end - start for start, end in runs)
            everything = chain.from_iterable(range(start, end) for start, end in runs)
            self._stray_examples(receiver, sender, everything)
            return
        log, lo, hi = found
        seqs = log._send_seqs
        owed = _merge(owed)
        allowed = _merge([*owed, *allowed])
        n_owed = sum(b - a for a, b in owed)
        n_got = sum(_count_in_runs(seqs, a, b, runs) for a, b in owed)
        n_allowed = sum(_count_in_runs(seqs, a, b, runs) for a, b in allowed)
        never_sent = sum(end - start for start, end in runs) - _count_in_runs(
            seqs, 0, len(seqs), runs
        )
        stray = _count_in_runs(seqs, lo, hi, runs) - n_allowed + never_sent
        self.expected += n_owed
        self.received += n_got
        if cross:
            self.cross_expected += n_owed
            self.cross_received += n_got
        self.permitted += n_allowed - n_got
        self.unexpected += stray
        if n_got < n_owed:
            for a, b in owed:
                room = self.max_examples - len(self.lost_examples)
                missing = _missing(seqs, a, b, runs, room)
                self.lost_examples += [(receiver, sender, seq) for seq in missing]
        if stray:
            self._stray_examples(receiver, sender, _strays(seqs, (lo, hi), allowed, runs))

    def _stray_examples(self, receiver: int, sender: int, seqs: Iterator[int]) -> None:
        room = max(0, self.max_examples - len(self.unexpected_examples))
        self.unexpected_examples += [(receiver, sender, seq) for seq in islice(seqs, room)]


def account(
    logs: Iterable[ClientLog],
    *,
    since: float = -_NEVER,
    until: float = _NEVER,
    in_flight: float = 0.0,
    max_examples: int = DEFAULT_EXAMPLES,
    target_of: Callable[[int], int] | None = None,
) -> DeliveryCounts:
    """Count the deliveries of the messages sent in ``[since, until)`` by these clients.

    ``since`` excludes the warmup and ``until`` the messages sent too late to be waited
    for; deliveries of messages outside the window are ignored (duplicates and reorders,
    counted as they arrive, cover the whole run). ``in_flight`` widens each membership
    backwards: a message sent up to that long before a client asked to join may still be
    delivered to it without being wrong. A delivery from a sender whose log is missing,
    or of a seq it never sent, is unexpected. Pass every client's log, from every worker.
    ``target_of`` (client index -> its relay) adds the cross-relay counts.
    """
    clients = list(logs)
    by_room, measured = _segments(clients, since, until)
    tally = _Tally(max_examples)
    for receiver in clients:
        owed: dict[int, list[tuple[int, int]]] = defaultdict(list)
        allowed: dict[int, list[tuple[int, int]]] = defaultdict(list)
        for window in receiver._windows:
            for log, a, b in by_room.get(window.room, ()):
                if log is not receiver:
                    times = log._send_times
                    c0, c1 = window.certain_from, window.certain_until
                    owed[log.client].append(_index_range(times, a, b, c0, c1))
                    p0, p1 = window.possible_from - in_flight, window.possible_until
                    allowed[log.client].append(_index_range(times, a, b, p0, p1))
        for sender in sorted(set(owed) | set(receiver.senders)):
            if sender != receiver.client:
                tally.pair(
                    receiver.client,
                    sender,
                    measured.get(sender),
                    receiver.received_runs(sender),
                    owed.get(sender, []),
                    allowed.get(sender, []),
                    target_of is not None and target_of(sender) != target_of(receiver.client),
                )
    unacked = sum(log.unacked_between(lo, hi) for log, lo, hi in measured.values())
    return DeliveryCounts(
        sent=sum(hi - lo for _, lo, hi in measured.values()),
        expected=tally.expected,
        received=tally.received,
        lost=tally.expected - tally.received + unacked,
        duplicated=sum(c.duplicated for c in clients),
        reordered=sum(c.reordered for c in clients),
        unexpected=tally.unexpected,
        permitted=tally.permitted,
        unacked=unacked,
        lost_examples=tally.lost_examples,
        unexpected_examples=tally.unexpected_examples,
        cross_node_expected=None if target_of is None else tally.cross_expected,
        cross_node=None if target_of is None else tally.cross_received,
    )
