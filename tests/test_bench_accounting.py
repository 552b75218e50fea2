"""Loss, duplicate, reorder and misrouting accounting, fed synthetic deliveries."""

from __future__ import annotations

import math
import pickle
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatcli.bench.accounting import (
    DUPLICATE,
    NEW,
    REORDERED,
    ClientLog,
    account,
)
from chatcli.bench.metrics import METRICS


def room_of(clients: int, room: str = "lobby", t: float = 0.0) -> list[ClientLog]:
    """Clients that are all in one room from time ``t``."""
    logs = [ClientLog(i) for i in range(clients)]
    for log in logs:
        log.joining(room, t)
        log.joined(t)
    return logs


def send(log: ClientLog, seqs: Iterable[int], t0: float = 1.0) -> None:
    for seq in seqs:
        log.sent(seq, t0 + seq)


def deliver_all(logs: list[ClientLog], sender: int, seqs: Iterable[int]) -> None:
    for seq in seqs:
        for log in logs:
            if log.client != sender:
                log.delivered(sender, seq)


def test_everything_delivered_once_in_order() -> None:
    logs = room_of(3)
    for log in logs:
        send(log, range(5))
        deliver_all(logs, log.client, range(5))
    counts = account(logs)
    assert (counts.sent, counts.expected, counts.received, counts.lost) == (15, 30, 30, 0)
    assert (counts.duplicated, counts.reordered, counts.unexpected) == (0, 0, 0)
    assert counts.loss == 0.0
    assert counts.lost_examples == []


def test_lost_deliveries_are_counted_and_named() -> None:
    alice, bob, carol = room_of(3)
    send(alice, range(10))
    for seq in range(10):
        if seq not in (3, 4, 9):
            bob.delivered(0, seq)
        if seq != 0:
            carol.delivered(0, seq)
    counts = account([alice, bob, carol])
    assert (counts.expected, counts.received, counts.lost) == (20, 16, 4)
    assert counts.loss == pytest.approx(0.2)
    assert counts.lost_examples == [(1, 0, 3), (1, 0, 4), (1, 0, 9), (2, 0, 0)]
    assert account([alice, bob, carol], max_examples=2).lost_examples == [(1, 0, 3), (1, 0, 4)]


def test_a_receiver_that_got_nothing_loses_everything() -> None:
    alice, bob = room_of(2)
    send(alice, range(4))
    counts = account([alice, bob])
    assert (counts.expected, counts.received, counts.lost) == (4, 0, 4)
    assert counts.loss == 1.0


def test_duplicates_are_counted_once_as_received() -> None:
    alice, bob = room_of(2)
    send(alice, range(3))
    results = [bob.delivered(0, seq) for seq in (0, 1, 1, 2, 0, 2)]
    assert results == [NEW, NEW, DUPLICATE, NEW, DUPLICATE, DUPLICATE]
    counts = account([alice, bob])
    assert (counts.received, counts.lost, counts.duplicated, counts.reordered) == (3, 0, 3, 0)


def test_late_arrivals_are_reordered_not_lost() -> None:
    alice, bob = room_of(2)
    send(alice, range(6))
    results = [bob.delivered(0, seq) for seq in (0, 2, 5, 1, 4, 3, 3)]
    assert results == [NEW, NEW, NEW, REORDERED, REORDERED, REORDERED, DUPLICATE]
    assert bob.received_runs(0) == [(0, 6)]
    counts = account([alice, bob])
    assert (counts.received, counts.lost, counts.reordered, counts.duplicated) == (6, 0, 3, 1)


seq_lists = st.lists(st.integers(0, 40), max_size=80)


@settings(max_examples=200, deadline=None)
@given(seq_lists)
def test_receive_path_matches_a_set_model(arrivals: list[int]) -> None:
    log = ClientLog(1)
    seen: set[int] = set()
    highest = -1
    for seq in arrivals:
        want = DUPLICATE if seq in seen else REORDERED if seq < highest else NEW
        assert log.delivered(0, seq) == want
        seen.add(seq)
        highest = max(highest, seq)
    runs = log.received_runs(0)
    assert [s for a, b in runs for s in range(a, b)] == sorted(seen)
    assert all(b < c for (_, b), (c, _) in pairwise(runs)), runs
    assert log.duplicated == len(arrivals) - len(seen)


def test_messages_stay_in_their_room() -> None:
    logs = [ClientLog(i) for i in range(4)]
    for log in logs:
        log.joining("a" if log.client < 2 else "b", 0.0)
        log.joined(0.0)
    send(logs[0], range(3))
    logs[1].delivered(0, 0)
    logs[1].delivered(0, 1)
    logs[1].delivered(0, 2)
    logs[3].delivered(0, 1)  # leaked into room b
    counts = account(logs)
    assert (counts.expected, counts.received, counts.lost) == (3, 3, 0)
    assert counts.unexpected == 1
    assert counts.unexpected_examples == [(3, 0, 1)]


def test_join_and_leave_windows() -> None:
    alice, bob = ClientLog(0), ClientLog(1)
    alice.joining("lobby", 0.0)
    alice.joined(0.0)
    alice.sent(0, 1.0)  # before bob asked to join: not owed, must not arrive
    bob.joining("lobby", 2.0)
    alice.sent(1, 3.0)  # while bob's join is in flight: may arrive or not
    alice.sent(2, 3.5)
    bob.joined(4.0)
    alice.sent(3, 5.0)  # owed
    alice.sent(4, 6.0)  # owed
    bob.leaving(7.0)
    alice.sent(5, 8.0)  # no longer owed, may still arrive
    alice.sent(6, 8.5)
    bob.left(9.0)
    alice.sent(7, 10.0)  # cannot arrive
    for seq in (1, 3, 5, 7):
        bob.delivered(0, seq)
    counts = account([alice, bob])
    assert (counts.expected, counts.received, counts.lost) == (2, 1, 1)
    assert counts.lost_examples == [(1, 0, 4)]
    assert counts.permitted == 2  # seqs 1 and 5
    assert counts.unexpected == 1
    assert counts.unexpected_examples == [(1, 0, 7)]
    bob.delivered(0, 0)
    assert account([alice, bob]).unexpected == 2


def test_in_flight_widens_what_may_arrive_before_a_join() -> None:
    alice, bob = ClientLog(0), ClientLog(1)
    alice.joining("lobby", 0.0)
    alice.joined(0.0)
    alice.sent(0, 1.8)
    bob.joining("lobby", 2.0)
    bob.joined(2.5)
    bob.delivered(0, 0)
    assert account([alice, bob]).unexpected == 1
    counts = account([alice, bob], in_flight=0.5)
    assert (counts.unexpected, counts.permitted, counts.expected) == (0, 1, 0)


def test_switching_rooms() -> None:
    alice, bob, carol = ClientLog(0), ClientLog(1), ClientLog(2)
    for log, room in ((alice, "a"), (bob, "a"), (carol, "b")):
        log.joining(room, 0.0)
        log.joined(0.0)
    alice.sent(0, 1.0)  # to a: owed to bob
    alice.joining("b", 2.0)
    alice.sent(1, 2.5)  # after the join request on the same socket: lands in b, owed to carol
    alice.joined(3.0)
    alice.sent(2, 4.0)  # in b: owed to carol only
    carol.sent(0, 2.6)  # in b while alice is joining: alice may get it
    carol.sent(1, 4.5)  # owed to alice
    bob.sent(0, 2.2)  # in a while alice is switching away: may still reach her
    bob.sent(1, 5.0)  # alice is gone from a: must not reach her
    assert alice.room == "b"
    bob.delivered(0, 0)
    carol.delivered(0, 1)
    carol.delivered(0, 2)
    alice.delivered(2, 0)
    alice.delivered(2, 1)
    alice.delivered(1, 0)
    counts = account([alice, bob, carol])
    # owed: alice0->bob, alice1->carol, alice2->carol, carol1->alice
    assert (counts.expected, counts.received, counts.lost) == (4, 4, 0)
    assert counts.permitted == 2  # carol0->alice, bob0->alice
    assert counts.unexpected == 0
    alice.delivered(1, 1)
    assert account([alice, bob, carol]).unexpected_examples == [(0, 1, 1)]


def test_measured_window_excludes_warmup_and_the_tail() -> None:
    alice, bob = room_of(2)
    send(alice, range(10), t0=0.0)  # sent at 0..9
    for seq in (0, 1, 5, 6):
        bob.delivered(0, seq)
    counts = account([alice, bob], since=2.0, until=8.0)  # seqs 2..7
    assert (counts.sent, counts.expected, counts.received, counts.lost) == (6, 6, 2, 4)
    assert counts.unexpected == 0
    assert [seq for _, _, seq in counts.lost_examples] == [2, 3, 4, 7]


def test_deliveries_of_unsent_messages_or_unknown_senders_are_unexpected() -> None:
    alice, bob = room_of(2)
    send(alice, [0, 2])
    for seq in (0, 1, 2):
        bob.delivered(0, seq)
    bob.delivered(7, 0)  # a client nobody logged
    counts = account([alice, bob])
    assert (counts.received, counts.lost) == (2, 0)
    assert counts.unexpected == 2
    assert counts.unexpected_examples == [(1, 0, 1), (1, 7, 0)]


def test_own_echo_is_not_a_delivery() -> None:
    alice, bob = room_of(2)
    send(alice, range(2))
    alice.delivered(0, 0)
    alice.delivered(0, 1)
    bob.delivered(0, 0)
    bob.delivered(0, 1)
    counts = account([alice, bob])
    assert (counts.expected, counts.received, counts.unexpected) == (2, 2, 0)


def test_nothing_owed_means_no_loss_figure() -> None:
    counts = account(room_of(1))
    assert counts.expected == 0 and counts.loss is None
    assert counts.metrics()["loss"] is None
    assert set(counts.metrics()) <= set(METRICS)


def test_send_log_is_strict() -> None:
    log = ClientLog(0)
    with pytest.raises(ValueError, match="no room"):
        log.sent(0, 1.0)
    with pytest.raises(ValueError, match="joined before joining"):
        log.joined(1.0)
    log.joining("lobby", 0.0)
    log.sent(5, 1.0)
    with pytest.raises(ValueError, match="does not follow"):
        log.sent(5, 2.0)
    with pytest.raises(ValueError, match="does not follow"):
        log.sent(6, 0.5)
    log.sent(9, 1.0)
    assert log.sent_count == 2
    log.left(2.0)
    with pytest.raises(ValueError, match="no room"):
        log.sent(10, 3.0)


def test_logs_survive_pickling_between_worker_processes() -> None:
    alice, bob = room_of(2)
    send(alice, range(5))
    for seq in (0, 1, 3, 1):
        bob.delivered(0, seq)
    again = pickle.loads(pickle.dumps([alice, bob]))
    assert account(again) == account([alice, bob])
    assert account(again).lost_examples == [(1, 0, 2), (1, 0, 4)]


# ------------------------------------------------------------- against brute force

Message = tuple[int, int, float, str]  # sender, seq, time, room


@dataclass
class Stay:
    """One stay of a client in a room, as the brute-force model sees it."""

    room: str
    joining: float
    joined: float | None = None
    leaving: float | None = None
    left: float | None = None

    def holds(self, m: Message, certain: bool) -> bool:
        """Was the client (certainly, or possibly) in the room when ``m`` was sent?"""
        end = math.inf if self.left is None else self.left
        if certain:
            if self.joined is None:
                return False
            start = self.joined
            end = min(end, math.inf if self.leaving is None else self.leaving)
        else:
            start = self.joining
        return self.room == m[3] and start <= m[2] < end


@pytest.mark.slow
@settings(max_examples=80, deadline=None)
@given(st.data())
def test_agrees_with_brute_force_over_random_churn(data: st.DataObject) -> None:
    n = data.draw(st.integers(2, 4), label="clients")
    logs = [ClientLog(c) for c in range(n)]
    stays: list[list[Stay]] = [[] for _ in range(n)]
    phase = ["out"] * n
    messages: list[Message] = []
    next_seq = [0] * n
    t = 0.0
    for _ in range(data.draw(st.integers(1, 50), label="steps")):
        t += 1.0
        c = data.draw(st.integers(0, n - 1))
        log, now = logs[c], phase[c]
        options = {
            "out": ["joining"],
            "joining": ["joined", "left", "send", "joining"],
            "joined": ["send", "send", "leaving", "left", "joining"],
            "leaving": ["send", "left", "joining"],
        }[now]
        action = data.draw(st.sampled_from(options))
        if action == "joining":  # from a room too: a room switch
            room = data.draw(st.sampled_from(["a", "b"]))
            log.joining(room, t)
            if stays[c] and stays[c][-1].leaving is None:
                stays[c][-1].leaving = t  # nothing more owed in the old room
            stays[c].append(Stay(room, t))
        elif action == "joined":
            log.joined(t)
            stays[c][-1].joined = t
            for stay in stays[c][:-1]:  # the relay has moved us: the old room is over
                stay.left = t if stay.left is None else stay.left
        elif action == "leaving":
            log.leaving(t)
            stays[c][-1].leaving = t
        elif action == "left":
            log.left(t)
            for stay in stays[c]:
                stay.left = t if stay.left is None else stay.left
        else:
            next_seq[c] += data.draw(st.integers(1, 2))  # seqs may skip
            log.sent(next_seq[c], t)
            messages.append((c, next_seq[c], t, stays[c][-1].room))
            continue
        phase[c] = "out" if action == "left" else action

    # deliveries: each message 0-2 copies to each other client, plus a few bogus ones
    arrivals: list[list[tuple[int, int]]] = [[] for _ in range(n)]
    for m in messages:
        for r in range(n):
            if r != m[0]:
                arrivals[r] += [(m[0], m[1])] * data.draw(st.sampled_from([0, 1, 1, 1, 2]))
    for r in range(n):
        if data.draw(st.booleans()):
            arrivals[r].append(((r + data.draw(st.integers(1, n - 1))) % n, 999))
        arrivals[r] = data.draw(st.permutations(arrivals[r]))

    since = data.draw(st.floats(0.0, t + 1.0))
    until = data.draw(st.floats(since, t + 2.0))

    expected = received = unexpected = permitted = duplicated = reordered = 0
    for r in range(n):
        got: set[tuple[int, int]] = set()
        highest: dict[int, int] = {}
        for sender, seq in arrivals[r]:
            logs[r].delivered(sender, seq)
            if (sender, seq) in got:
                duplicated += 1
            elif seq < highest.get(sender, -1):
                reordered += 1
            got.add((sender, seq))
            highest[sender] = max(highest.get(sender, -1), seq)
        sent_ids = {(m[0], m[1]) for m in messages}
        unexpected += sum(1 for g in got if g not in sent_ids)
        for m in messages:
            if m[0] == r or not since <= m[2] < until:
                continue
            owed = any(stay.holds(m, certain=True) for stay in stays[r])
            allowed = any(stay.holds(m, certain=False) for stay in stays[r])
            arrived = (m[0], m[1]) in got
            expected += owed
            received += owed and arrived
            permitted += arrived and allowed and not owed
            unexpected += arrived and not allowed

    counts = account(logs, since=since, until=until)
    assert counts.sent == sum(1 for m in messages if since <= m[2] < until)
    assert (counts.expected, counts.received, counts.lost) == (
        expected,
        received,
        expected - received,
    )
    assert (counts.duplicated, counts.reordered) == (duplicated, reordered)
    assert (counts.unexpected, counts.permitted) == (unexpected, permitted)
    assert len(counts.lost_examples) == min(10, expected - received)
    assert len(counts.unexpected_examples) == min(10, unexpected)


def test_sends_never_acknowledged_are_lost() -> None:
    alice, bob = room_of(2)
    send(alice, range(10))
    deliver_all([alice, bob], 0, range(10))
    alice.never_acked([2, 5, 9])
    counts = account([alice, bob])
    assert (counts.expected, counts.received, counts.unacked, counts.lost) == (10, 10, 3, 3)
    assert counts.loss == pytest.approx(0.3)
    assert counts.metrics()["unacked"] == 3.0
    # only the measured window counts: seqs 2 and 5 were sent (t = 3 s, 6 s) before it
    late = account([alice, bob], since=7.0)
    assert (late.sent, late.unacked, late.lost) == (4, 1, 1)


def test_unacked_survive_pickling() -> None:
    (alice,) = room_of(1)
    send(alice, range(3))
    alice.never_acked([1])
    again = pickle.loads(pickle.dumps(alice))
    assert account([again]).unacked == 1
    assert account([again]).loss is None  # nothing owed to others: the threshold fails
