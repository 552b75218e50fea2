"""Planned send times for the open-loop load generator, and connection ramps.

An open-loop generator sends every message at the time the schedule planned for it,
whether or not earlier messages were answered, and latency is measured from that planned
time (so a stalled relay cannot hide its stall by slowing the senders down). Times here
are offsets in seconds from the start of the run; the generator adds its own clock.

Each client's times depend only on (seed, client index, rate, arrivals, total clients),
never on which worker process runs it, so ``--workers`` changes nothing but speed:

- ``constant``: one message every ``1/rate`` s; client ``i`` of ``n`` starts at
  ``i/n`` of an interval, so the clients' sends interleave evenly instead of all firing
  at once;
- ``poisson``: exponential gaps with mean ``1/rate`` from a ``random.Random`` seeded with
  the seed and the client index (memoryless, so the first gap staggers clients too).

``Schedule`` merges the clients' streams with a heap, so asking "what is due by now?"
costs O(log clients) per message and no precomputation: plain tuples, no objects.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable, Iterable, Iterator
from typing import Final, Literal

from chatcli.errors import UsageError

__all__ = [
    "ARRIVALS",
    "Arrivals",
    "Planned",
    "Schedule",
    "client_rng",
    "ramp",
    "room_of",
    "split_clients",
]

Arrivals = Literal["constant", "poisson", "burst"]
ARRIVALS: Final = ("constant", "poisson", "burst")

Planned = tuple[float, int, int]
"""One planned message: (offset in seconds from the run start, client index, seq)."""


def client_rng(seed: int, client: int) -> random.Random:
    """The random stream of one client: independent of the others and of the worker split."""
    # A string seed is hashed with SHA-512, so nearby (seed, client) pairs give unrelated
    # streams and the result does not depend on PYTHONHASHSEED.
    return random.Random(f"chatcli-bench:{seed}:{client}")


def _check_rate(rate: float, what: str) -> None:
    if not (rate >= 0 and math.isfinite(rate)):
        raise UsageError(f"{what} must be a finite number >= 0, not {rate}")


class Schedule:
    """The planned sends of some clients over ``[start, start + duration)``, in time order.

    ``clients`` are the global indexes this generator drives (a worker's share);
    ``total_clients`` is how many the whole run has (it spreads the constant-rate phases
    and defaults to one more than the highest index). Each client's seq counts from 0.
    Ties in time are broken by client index, so the order is fully deterministic.
    """

    __slots__ = ("_end", "_gap", "_heap", "emitted")

    def __init__(
        self,
        clients: Iterable[int],
        *,
        rate: float,
        duration: float,
        arrivals: Arrivals = "constant",
        seed: int = 0,
        total_clients: int | None = None,
        start: float = 0.0,
        burst_period: float = 1.0,
    ) -> None:
        _check_rate(rate, "the message rate per client")
        if not (duration >= 0 and math.isfinite(duration)):
            raise UsageError(f"the duration must be a finite number >= 0, not {duration}")
        if arrivals not in ARRIVALS:
            raise UsageError(f"arrivals must be one of {', '.join(ARRIVALS)}, not {arrivals!r}")
        indexes = sorted(set(clients))
        if indexes and indexes[0] < 0:
            raise UsageError("client indexes cannot be negative")
        total = (indexes[-1] + 1 if indexes else 0) if total_clients is None else total_clients
        if indexes and total <= indexes[-1]:
            raise UsageError(f"client {indexes[-1]} is outside the run's {total} clients")

        self._end = start + duration
        self.emitted = 0
        """How many planned messages ``due`` (or iteration) has handed out so far."""
        self._heap: list[Planned] = []
        self._gap: dict[int, Callable[[float, int], float]] = {}
        if rate == 0 or duration == 0:
            return
        interval = 1.0 / rate
        for client in indexes:
            if arrivals == "constant":
                first = start + interval * client / total
                self._gap[client] = _constant(first, interval)
            elif arrivals == "burst":
                # Every client sends rate x period messages back to back, all at once.
                first = start
                size = max(1, round(rate * burst_period))
                self._gap[client] = _burst(first, burst_period, size)
            else:
                rng = client_rng(seed, client)
                first = start + rng.expovariate(rate)
                self._gap[client] = _poisson(rng, rate)
            if first < self._end:
                self._heap.append((first, client, 0))
        heapq.heapify(self._heap)

    def next_time(self) -> float | None:
        """The planned offset of the next message, or None when the schedule is done."""
        return self._heap[0][0] if self._heap else None

    def due(self, now: float) -> list[Planned]:
        """Every planned message with an offset at or before ``now``, in time order."""
        heap = self._heap
        out: list[Planned] = []
        end = self._end
        gaps = self._gap
        while heap and heap[0][0] <= now:
            entry = heap[0]
            out.append(entry)
            when, client, seq = entry
            after = gaps[client](when, seq + 1)
            if after < end:
                heapq.heapreplace(heap, (after, client, seq + 1))
            else:
                heapq.heappop(heap)
        self.emitted += len(out)
        return out

    @property
    def done(self) -> bool:
        """True once every planned message has been handed out."""
        return not self._heap

    def __iter__(self) -> Iterator[Planned]:
        """Hand out everything left, in time order (for tests and offline planning)."""
        while self._heap:
            yield from self.due(self._heap[0][0])


def _constant(first: float, interval: float) -> Callable[[float, int], float]:
    # Multiplying instead of adding keeps float error from accumulating over a long run.
    return lambda _when, seq: first + seq * interval


def _burst(first: float, period: float, size: int) -> Callable[[float, int], float]:
    return lambda _when, seq: first + (seq // size) * period


def _poisson(rng: random.Random, rate: float) -> Callable[[float, int], float]:
    expovariate = rng.expovariate
    return lambda when, _seq: when + expovariate(rate)


def ramp(
    clients: Iterable[int], spawn_rate: float | None, *, start: float = 0.0
) -> list[tuple[float, int]]:
    """Connect times (offset seconds, client index) for a ramp of ``spawn_rate`` per second.

    Client ``i`` connects at ``start + i / spawn_rate``: global indexes, so workers that
    each ramp their own share still add up to one ramp at the requested rate. ``None`` or
    infinity connects everyone at ``start``.
    """
    indexes = sorted(set(clients))
    if spawn_rate is None or spawn_rate == math.inf:
        return [(start, client) for client in indexes]
    if not spawn_rate > 0:
        raise UsageError(f"the connection ramp must be above 0 per second, not {spawn_rate}")
    return [(start + client / spawn_rate, client) for client in indexes]


def room_of(client: int, rooms: int) -> int:
    """The room index of a client when ``rooms`` rooms share the clients evenly."""
    if rooms < 1:
        raise UsageError(f"there must be at least one room, not {rooms}")
    return client % rooms


def split_clients(total: int, workers: int) -> list[range]:
    """Global client indexes per worker: contiguous shares differing by at most one."""
    if workers < 1:
        raise UsageError(f"there must be at least one worker, not {workers}")
    if total < 0:
        raise UsageError(f"the number of clients cannot be negative: {total}")
    share, extra = divmod(total, workers)
    bounds = [w * share + min(w, extra) for w in range(workers + 1)]
    return [range(bounds[w], bounds[w + 1]) for w in range(workers)]
