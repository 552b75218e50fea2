"""The ack tracker: pure tests, a fake clock, no event loop."""

from __future__ import annotations

import pytest

from chatcli.client.acks import (
    COUNT_RATE_LIMITED,
    RETRY_RATE_LIMITED,
    AckPolicy,
    AckTracker,
    Outcome,
    Retry,
    Settled,
)
from chatcli.core.protocol import DirectMessage, Error, Msg, Pong, Say, SendDirect


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def echo(ref: str | None, text: str = "hi") -> Msg:
    return Msg(id=1, room="lobby", from_="alice", text=text, ts=1.0, ref=ref)


def refusal(ref: str | None, code: str) -> Error:
    return Error(code=code, message="no", ref=ref)


def test_an_echo_with_the_ref_acknowledges_the_message() -> None:
    acks: AckTracker[Say] = AckTracker()
    sent = Say(text="hi", ref="c-1")
    acks.sent("c-1", sent)
    assert "c-1" in acks and acks.waiting == 1
    assert acks.receive(echo("c-1")) == Settled("c-1", sent, Outcome.ACKNOWLEDGED)
    assert acks.waiting == 0 and acks.acknowledged == 1
    assert acks.receive(echo("c-1")) is None  # a second copy answers nothing
    assert acks.acknowledged == 1


def test_a_dm_echo_acknowledges_too() -> None:
    acks: AckTracker[SendDirect] = AckTracker()
    sent = SendDirect(to="bob", text="psst", ref="c-2")
    acks.sent("c-2", sent)
    dm = DirectMessage(from_="alice", to="bob", text="psst", ts=1.0, ref="c-2")
    answer = acks.receive(dm)
    assert isinstance(answer, Settled) and answer.outcome is Outcome.ACKNOWLEDGED


def test_frames_without_a_waiting_ref_answer_nothing() -> None:
    acks: AckTracker[None] = AckTracker()
    acks.sent("c-1", None)
    for event in (echo(None), echo("c-9"), refusal(None, "bad_request"), Pong()):
        assert acks.receive(event) is None
    assert acks.waiting == 1


def test_an_error_with_the_ref_refuses_it_with_its_code() -> None:
    acks: AckTracker[None] = AckTracker()
    acks.sent("c-1", None)
    answer = acks.receive(refusal("c-1", "no_such_user"))
    assert answer == Settled("c-1", None, Outcome.REFUSED, "no_such_user")
    assert acks.refused == 1 and acks.waiting == 0


def test_counting_policy_settles_a_rate_limited_message() -> None:
    acks: AckTracker[None] = AckTracker(COUNT_RATE_LIMITED)
    acks.sent("c-1", None)
    answer = acks.receive(refusal("c-1", "rate_limited"))
    assert answer == Settled("c-1", None, Outcome.RATE_LIMITED, "rate_limited")
    assert acks.rate_limited == 1 and acks.refused == 0


def test_retrying_policy_asks_for_growing_pauses_then_gives_up() -> None:
    policy = AckPolicy(retry_rate_limited=True, max_retries=6, retry_first=0.2, retry_max=2.0)
    acks: AckTracker[str] = AckTracker(policy)
    acks.sent("c-1", "the line")
    delays = []
    for attempt in range(1, 7):
        answer = acks.receive(refusal("c-1", "rate_limited"))
        assert isinstance(answer, Retry) and answer.sent == "the line"
        assert answer.attempt == attempt
        delays.append(answer.delay)
        acks.resent("c-1")
    assert delays == pytest.approx([0.2, 0.4, 0.8, 1.6, 2.0, 2.0])
    answer = acks.receive(refusal("c-1", "rate_limited"))
    assert answer == Settled("c-1", "the line", Outcome.RATE_LIMITED, "rate_limited", 7)
    assert acks.waiting == 0 and acks.rate_limited == 1


def test_a_retried_message_is_acknowledged_with_its_attempts() -> None:
    acks: AckTracker[None] = AckTracker(RETRY_RATE_LIMITED)
    acks.sent("c-1", None)
    assert isinstance(acks.receive(refusal("c-1", "rate_limited")), Retry)
    answer = acks.receive(echo("c-1"))
    assert answer == Settled("c-1", None, Outcome.ACKNOWLEDGED, None, 2)


def test_unavailable_is_tried_again_like_rate_limited_then_refused() -> None:
    # a cluster node that cannot store for a moment says "unavailable": try again later
    policy = AckPolicy(retry_rate_limited=True, max_retries=2, retry_first=0.2)
    acks: AckTracker[str] = AckTracker(policy)
    acks.sent("c-1", "the line")
    for attempt in (1, 2):
        answer = acks.receive(refusal("c-1", "unavailable"))
        assert isinstance(answer, Retry) and answer.attempt == attempt
    answer = acks.receive(refusal("c-1", "unavailable"))
    assert answer == Settled("c-1", "the line", Outcome.REFUSED, "unavailable", 3)
    # bench and replay count it as the refusal it is
    counting: AckTracker[None] = AckTracker(COUNT_RATE_LIMITED)
    counting.sent("c-2", None)
    answer = counting.receive(refusal("c-2", "unavailable"))
    assert answer == Settled("c-2", None, Outcome.REFUSED, "unavailable")


def test_join_policy_matches_what_join_always_did() -> None:
    assert [RETRY_RATE_LIMITED.retry_delay(n) for n in (1, 2, 30, 31)] == [0.2, 0.4, 2.0, None]
    assert COUNT_RATE_LIMITED.retry_delay(1) is None


def test_unanswered_messages_expire_on_the_injected_clock() -> None:
    clock = Clock()
    acks: AckTracker[None] = AckTracker(AckPolicy(timeout=10.0), clock)
    acks.sent("c-1", None)
    clock.now += 4
    acks.sent("c-2", None)
    assert acks.deadline() == 110.0
    clock.now = 109.9
    assert acks.expire() == []
    clock.now = 110.0
    assert acks.expire() == [Settled("c-1", None, Outcome.LOST)]
    assert acks.deadline() == 114.0 and acks.lost == 1


def test_a_resend_restarts_the_timeout() -> None:
    clock = Clock()
    acks: AckTracker[None] = AckTracker(AckPolicy(retry_rate_limited=True, timeout=10.0), clock)
    acks.sent("c-1", None)
    clock.now += 8
    acks.receive(refusal("c-1", "rate_limited"))
    acks.resent("c-1")
    clock.now += 8
    assert acks.expire() == [] and acks.deadline() == 118.0


def test_without_a_timeout_nothing_expires() -> None:
    clock = Clock()
    acks: AckTracker[None] = AckTracker(AckPolicy(timeout=None), clock)
    acks.sent(1, None)
    clock.now += 1e9
    assert acks.deadline() is None and acks.expire() == []


def test_a_lost_connection_loses_everything_still_waiting() -> None:
    acks: AckTracker[int] = AckTracker()
    for seq in range(3):
        acks.sent(seq, seq)
    acks.acknowledge(1)
    assert [a.ref for a in acks.lose_all()] == [0, 2]
    assert (acks.acknowledged, acks.lost, acks.waiting) == (1, 2, 0)


def test_the_lean_path_acknowledges_by_any_hashable_ref() -> None:
    acks: AckTracker[None] = AckTracker(AckPolicy(timeout=None))
    acks.sent(41, None)
    assert acks.acknowledge(40) is None
    assert acks.acknowledge(41) == Settled(41, None, Outcome.ACKNOWLEDGED)
