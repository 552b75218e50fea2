"""Planned send times: exact constant-rate plans, seeded Poisson plans, ramps and splits."""

from __future__ import annotations

import heapq
import itertools
import statistics
from collections import defaultdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatcli.bench.schedule import (
    Planned,
    Schedule,
    client_rng,
    ramp,
    room_of,
    split_clients,
)
from chatcli.errors import UsageError


def per_client(plan: list[Planned]) -> dict[int, list[tuple[float, int]]]:
    streams: dict[int, list[tuple[float, int]]] = defaultdict(list)
    for when, client, seq in plan:
        streams[client].append((when, seq))
    return streams


def test_constant_rate_plan_is_exact_and_phases_interleave() -> None:
    plan = list(Schedule(range(4), rate=2.0, duration=1.0))
    # interval 0.5 s; client i starts at i/4 of an interval
    assert plan == [
        (0.0, 0, 0),
        (0.125, 1, 0),
        (0.25, 2, 0),
        (0.375, 3, 0),
        (0.5, 0, 1),
        (0.625, 1, 1),
        (0.75, 2, 1),
        (0.875, 3, 1),
    ]


def test_constant_rate_does_not_drift_over_a_long_run() -> None:
    plan = list(Schedule([0], rate=1000.0, duration=100.0))
    assert len(plan) == 100_000
    assert plan[-1] == (99.999, 0, 99_999)


def test_start_offset_bounds_the_plan() -> None:
    plan = list(Schedule(range(3), rate=10.0, duration=2.0, start=5.0))
    assert len(plan) == 60
    assert all(5.0 <= when < 7.0 for when, _, _ in plan)


@pytest.mark.parametrize("arrivals", ["constant", "poisson"])
def test_plan_is_time_ordered_with_contiguous_seqs(arrivals: str) -> None:
    plan = list(Schedule(range(7), rate=30.0, duration=3.0, arrivals=arrivals, seed=3))  # type: ignore[arg-type]
    assert plan == sorted(plan)
    for stream in per_client(plan).values():
        assert [seq for _, seq in stream] == list(range(len(stream)))


def test_poisson_is_reproducible_per_seed() -> None:
    def make(seed: int) -> list[Planned]:
        return list(Schedule(range(5), rate=20.0, duration=2.0, arrivals="poisson", seed=seed))

    assert make(1) == make(1)
    assert make(1) != make(2)


def test_poisson_gaps_look_exponential() -> None:
    rate, duration = 50.0, 400.0
    plan = list(Schedule([0], rate=rate, duration=duration, arrivals="poisson", seed=11))
    times = [when for when, _, _ in plan]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    expected = rate * duration  # 20,000 arrivals; sd of the count is about 141
    assert abs(len(plan) - expected) < 5 * expected**0.5
    assert statistics.fmean(gaps) == pytest.approx(1 / rate, rel=0.03)
    # exponential: standard deviation equals the mean (a constant rate would give 0)
    assert statistics.pstdev(gaps) == pytest.approx(1 / rate, rel=0.05)


def test_poisson_clients_are_independent_streams() -> None:
    plan = list(Schedule(range(2), rate=10.0, duration=5.0, arrivals="poisson", seed=4))
    streams = per_client(plan)
    assert [t for t, _ in streams[0]] != [t for t, _ in streams[1]]
    assert client_rng(4, 0).random() != client_rng(4, 1).random()
    assert client_rng(4, 0).random() == client_rng(4, 0).random()


@settings(max_examples=40, deadline=None)
@given(
    clients=st.integers(1, 12),
    workers=st.integers(1, 5),
    seed=st.integers(0, 2**32),
    arrivals=st.sampled_from(["constant", "poisson"]),
)
def test_splitting_over_workers_changes_nothing(
    clients: int, workers: int, seed: int, arrivals: str
) -> None:
    def plan(share: range) -> list[Planned]:
        return list(
            Schedule(
                share,
                rate=7.0,
                duration=1.5,
                arrivals=arrivals,  # type: ignore[arg-type]
                seed=seed,
                total_clients=clients,
            )
        )

    shares = split_clients(clients, workers)
    assert list(heapq.merge(*map(plan, shares))) == plan(range(clients))


def test_due_hands_out_what_is_due_and_no_more() -> None:
    schedule = Schedule(range(2), rate=4.0, duration=1.0)  # 0, .125, .25, .375, ...
    assert schedule.next_time() == 0.0
    assert schedule.due(-1.0) == []
    assert schedule.due(0.2) == [(0.0, 0, 0), (0.125, 1, 0)]
    assert schedule.due(0.2) == []
    assert schedule.next_time() == 0.25
    assert schedule.emitted == 2
    rest = schedule.due(10.0)
    assert [seq for _, _, seq in rest] == [1, 1, 2, 2, 3, 3]
    assert schedule.done and schedule.next_time() is None
    assert schedule.emitted == 8


def test_late_caller_gets_the_whole_backlog_in_order() -> None:
    # A generator that fell behind must still send everything it owes, oldest first.
    schedule = Schedule(range(3), rate=100.0, duration=1.0, arrivals="poisson", seed=9)
    backlog = schedule.due(0.5)
    assert backlog == sorted(backlog)
    assert all(when <= 0.5 for when, _, _ in backlog)
    assert schedule.next_time() is not None and schedule.next_time() > 0.5  # type: ignore[operator]


@pytest.mark.parametrize(("rate", "duration"), [(0.0, 10.0), (5.0, 0.0)])
def test_nothing_to_send(rate: float, duration: float) -> None:
    schedule = Schedule(range(3), rate=rate, duration=duration)
    assert schedule.done and list(schedule) == []


def test_low_rate_client_may_send_nothing() -> None:
    # interval 10 s, client 1 of 2 starts at 5 s: outside a 4 s run
    plan = list(Schedule(range(2), rate=0.1, duration=4.0))
    assert plan == [(0.0, 0, 0)]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rate": -1.0, "duration": 1.0},
        {"rate": float("nan"), "duration": 1.0},
        {"rate": float("inf"), "duration": 1.0},
        {"rate": 1.0, "duration": -1.0},
        {"rate": 1.0, "duration": 1.0, "arrivals": "bursty"},
        {"rate": 1.0, "duration": 1.0, "total_clients": 2},
    ],
)
def test_bad_parameters_are_usage_errors(kwargs: dict[str, object]) -> None:
    with pytest.raises(UsageError):
        Schedule(range(3), **kwargs)  # type: ignore[arg-type]


def test_ramp_spreads_connections_by_global_index() -> None:
    assert ramp(range(4), 2.0) == [(0.0, 0), (0.5, 1), (1.0, 2), (1.5, 3)]
    assert ramp([3, 1], 2.0, start=1.0) == [(1.5, 1), (2.5, 3)]
    assert ramp(range(3), None) == [(0.0, 0), (0.0, 1), (0.0, 2)]
    assert ramp(range(2), float("inf"), start=2.0) == [(2.0, 0), (2.0, 1)]
    with pytest.raises(UsageError):
        ramp(range(2), 0.0)


def test_split_clients_is_balanced_and_complete() -> None:
    assert split_clients(10, 3) == [range(0, 4), range(4, 7), range(7, 10)]
    assert split_clients(2, 4) == [range(0, 1), range(1, 2), range(2, 2), range(2, 2)]
    with pytest.raises(UsageError):
        split_clients(10, 0)


def test_room_of_spreads_clients_evenly() -> None:
    rooms = [room_of(client, 3) for client in range(9)]
    assert [rooms.count(r) for r in range(3)] == [3, 3, 3]
    with pytest.raises(UsageError):
        room_of(0, 0)


def test_burst_sends_everyone_s_batch_at_the_same_instant() -> None:
    plan = list(Schedule(range(3), rate=4.0, duration=2.0, arrivals="burst", burst_period=1.0))
    times = sorted({when for when, _client, _seq in plan})
    assert times == [0.0, 1.0]
    for client in range(3):
        seqs = [seq for _when, c, seq in plan if c == client]
        assert seqs == list(range(8))
    assert sum(1 for when, _c, _s in plan if when == 0.0) == 12
