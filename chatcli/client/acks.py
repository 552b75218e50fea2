"""Matching sent messages with their answers, without any I/O: one tracker, one policy.

The server answers every ``say``, ``me`` and ``dm`` a client sends with exactly one frame
for the sender: its own copy of the message (the ack, carrying the ``ref`` it was sent
with) or an ``error`` carrying that ``ref``. :class:`AckTracker` keeps the messages still
waiting for that answer and tells its front end what each answer means, under one
:class:`AckPolicy` whose knobs are where front ends really differ:

- ``join`` sends a rate-limited message again after a growing pause (the user typed it;
  they want it said), and reports it as refused only after ``max_retries``; the same
  for ``unavailable`` (a cluster node that cannot store for a moment: "try again");
- ``replay --to`` and ``bench`` count a rate-limited message (the report says how many)
  and move on.

Time comes from an injected clock, so timeouts are tested without sleeping.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Final, Generic, NamedTuple, TypeVar

from chatcli.core.protocol import DirectMessage, Error, Msg, ServerEvent

__all__ = [
    "COUNT_RATE_LIMITED",
    "DEFAULT_ACK_TIMEOUT",
    "RATE_LIMIT_RETRIES",
    "RETRY_FIRST",
    "RETRY_MAX",
    "RETRY_RATE_LIMITED",
    "TRY_AGAIN_CODES",
    "AckPolicy",
    "AckTracker",
    "Outcome",
    "Retry",
    "Settled",
]

E = TypeVar("E")

#: seconds after its last send at which an unanswered message counts as lost
DEFAULT_ACK_TIMEOUT: Final = 10.0
#: times a retrying front end sends a rate-limited message again before giving up
RATE_LIMIT_RETRIES: Final = 30
#: first pause before sending a rate-limited message again; doubles up to RETRY_MAX
RETRY_FIRST: Final = 0.2
RETRY_MAX: Final = 2.0
#: refusals that mean "not now": a retrying policy sends the message again after a pause
TRY_AGAIN_CODES: Final = frozenset({"rate_limited", "unavailable"})


class Outcome(enum.Enum):
    """How the wait for a message's answer ended."""

    ACKNOWLEDGED = "acknowledged"  #: its echo arrived
    REFUSED = "refused"  #: the server refused it (``code`` says why)
    RATE_LIMITED = "rate_limited"  #: refused as too fast, and not (or no longer) retried
    LOST = "lost"  #: no answer: the connection ended or the timeout passed


@dataclass(frozen=True)
class AckPolicy:
    """What a front end does with answers.

    ``retry_rate_limited``: send a ``rate_limited`` (or ``unavailable``) message again
    after ``retry_first`` seconds, doubling up to ``retry_max``, at most ``max_retries``
    times; otherwise a ``rate_limited`` answer settles it as RATE_LIMITED (and an
    ``unavailable`` one as REFUSED).
    ``timeout``: seconds after its last send at which an unanswered message is overdue
    (None: never).
    """

    retry_rate_limited: bool = False
    max_retries: int = RATE_LIMIT_RETRIES
    retry_first: float = RETRY_FIRST
    retry_max: float = RETRY_MAX
    timeout: float | None = DEFAULT_ACK_TIMEOUT

    def retry_delay(self, attempt: int) -> float | None:
        """The pause before retry number ``attempt`` (1, 2, ...), or None: give up."""
        if not self.retry_rate_limited or attempt > self.max_retries:
            return None
        return float(min(self.retry_max, self.retry_first * 2 ** (attempt - 1)))


#: join's policy: a rate-limited line is sent again until it gets through (or 30 tries)
RETRY_RATE_LIMITED: Final = AckPolicy(retry_rate_limited=True)
#: replay --to's and bench's policy: a rate-limited message is counted, not retried
COUNT_RATE_LIMITED: Final = AckPolicy()


class Settled(NamedTuple, Generic[E]):
    """A message's wait is over: ``outcome``, and the server's ``code`` for a refusal.

    (A named tuple: bench settles one per message sent, so it must be cheap to make.)
    """

    ref: Hashable
    sent: E
    outcome: Outcome
    code: str | None = None
    attempts: int = 1


class Retry(NamedTuple, Generic[E]):
    """Send ``sent`` again after ``delay`` seconds, then call :meth:`AckTracker.resent`."""

    ref: Hashable
    sent: E
    delay: float
    attempt: int


@dataclass
class _Waiting(Generic[E]):
    sent: E
    at: float
    attempts: int = 1


class AckTracker(Generic[E]):
    """The messages one connection sent that still wait for their answer, by ``ref``.

    ``E`` is whatever the front end wants back with each answer (the event it sent, or
    nothing). Counters of every outcome are kept for reports.
    """

    def __init__(
        self, policy: AckPolicy = COUNT_RATE_LIMITED, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.policy = policy
        self._clock = clock
        self._waiting: dict[Hashable, _Waiting[E]] = {}
        self.acknowledged = 0
        self.refused = 0
        self.rate_limited = 0
        self.lost = 0

    # -- sending ---------------------------------------------------------------------

    def sent(self, ref: Hashable, event: E) -> None:
        """``event`` went out with ``ref``: wait for its answer."""
        at = self._clock() if self.policy.timeout is not None else 0.0
        self._waiting[ref] = _Waiting(event, at)

    def resent(self, ref: Hashable) -> None:
        """A :class:`Retry` went out: its timeout starts again."""
        waiting = self._waiting.get(ref)
        if waiting is not None and self.policy.timeout is not None:
            waiting.at = self._clock()

    # -- answers ---------------------------------------------------------------------

    def receive(self, event: ServerEvent) -> Settled[E] | Retry[E] | None:
        """Account for one server event; None when it answers nothing still waiting."""
        if isinstance(event, (Msg, DirectMessage)):
            return None if event.ref is None else self.acknowledge(event.ref)
        if isinstance(event, Error) and event.ref is not None:
            return self.refuse(event.ref, event.code)
        return None

    def acknowledge(self, ref: Hashable) -> Settled[E] | None:
        """The message sent with ``ref`` was echoed back (the lean path: no event)."""
        waiting = self._waiting.pop(ref, None)
        if waiting is None:
            return None
        self.acknowledged += 1
        return Settled(ref, waiting.sent, Outcome.ACKNOWLEDGED, None, waiting.attempts)

    def refuse(self, ref: Hashable, code: str) -> Settled[E] | Retry[E] | None:
        """The server refused the message sent with ``ref`` with error ``code``."""
        waiting = self._waiting.get(ref)
        if waiting is None:
            return None
        if code in TRY_AGAIN_CODES:
            delay = self.policy.retry_delay(waiting.attempts)
            if delay is not None:
                waiting.attempts += 1
                return Retry(ref, waiting.sent, delay, waiting.attempts - 1)
        if code == "rate_limited":
            del self._waiting[ref]
            self.rate_limited += 1
            return Settled(ref, waiting.sent, Outcome.RATE_LIMITED, code, waiting.attempts)
        del self._waiting[ref]
        self.refused += 1
        return Settled(ref, waiting.sent, Outcome.REFUSED, code, waiting.attempts)

    # -- no answer -------------------------------------------------------------------

    def deadline(self) -> float | None:
        """Clock time at which the oldest waiting message becomes overdue (None: never)."""
        timeout = self.policy.timeout
        if timeout is None or not self._waiting:
            return None
        return min(waiting.at for waiting in self._waiting.values()) + timeout

    def expire(self) -> list[Settled[E]]:
        """Settle as LOST every message unanswered for longer than the policy's timeout."""
        timeout = self.policy.timeout
        if timeout is None:
            return []
        now = self._clock()
        overdue = [ref for ref, w in self._waiting.items() if now - w.at >= timeout]
        return [self._lose(ref) for ref in overdue]

    def lose(self, ref: Hashable) -> Settled[E] | None:
        """Settle the message sent with ``ref`` as LOST (the front end cannot resend it)."""
        return self._lose(ref) if ref in self._waiting else None

    def lose_all(self) -> list[Settled[E]]:
        """The connection ended: every message still waiting is LOST."""
        return [self._lose(ref) for ref in list(self._waiting)]

    def _lose(self, ref: Hashable) -> Settled[E]:
        waiting = self._waiting.pop(ref)
        self.lost += 1
        return Settled(ref, waiting.sent, Outcome.LOST, None, waiting.attempts)

    # -- state -----------------------------------------------------------------------

    @property
    def waiting(self) -> int:
        """How many messages still wait for their answer."""
        return len(self._waiting)

    def waiting_items(self) -> list[tuple[Hashable, E]]:
        """The messages still waiting, as (ref, what was sent), oldest first."""
        return [(ref, waiting.sent) for ref, waiting in self._waiting.items()]

    def __contains__(self, ref: Hashable) -> bool:
        return ref in self._waiting
