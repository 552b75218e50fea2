"""The client's half of resume, with no I/O: the backoff schedule and ResumeState."""

from __future__ import annotations

import random

import pytest

from chatcli.client.resume import BACKOFF_CAP, ResumeState, backoff_delay
from chatcli.core.protocol import Hello, Me, Msg, Ready, Say, SendDirect


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def msg(id: int, room: str = "lobby", ref: str | None = None, text: str = "x") -> Msg:
    return Msg(id=id, room=room, from_="bob", text=text, ts=0.0, ref=ref)


def ready(*history: Msg, epoch: str = "e1", token: str = "t1", truncated: bool = False) -> Ready:
    return Ready(
        name="alice",
        room="lobby",
        users=["alice"],
        history=list(history),
        epoch=epoch,
        resume=token,
        truncated=truncated,
    )


def test_backoff_doubles_from_half_a_second_to_thirty_without_jitter() -> None:
    schedule = [backoff_delay(n, lambda: 0.0) for n in range(1, 10)]
    assert schedule == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_backoff_jitter_shortens_by_at_most_half_and_is_seeded() -> None:
    rng = random.Random(7)
    first = [backoff_delay(n, rng.random) for n in range(1, 12)]
    rng = random.Random(7)
    assert first == [backoff_delay(n, rng.random) for n in range(1, 12)]
    for n, delay in enumerate(first, 1):
        nominal = min(BACKOFF_CAP, 0.5 * 2 ** (n - 1))
        assert nominal / 2 < delay <= nominal
    assert len(set(first[6:])) > 1  # capped pauses still differ: clients do not stampede
    assert backoff_delay(3, lambda: 0.999999) == pytest.approx(1.0, abs=1e-5)


def test_first_hello_asks_for_history_and_a_reconnect_asks_since_with_epoch_and_token() -> None:
    state = ResumeState("alice", "lobby", history=20)
    assert state.hello() == Hello(name="alice", room="lobby", history=20)
    state.ready(ready(msg(1), msg(2)))
    assert state.first_sight(msg(3))
    assert state.hello() == Hello(name="alice", room="lobby", since=3, epoch="e1", resume="t1")


def test_an_empty_room_resumes_from_zero() -> None:
    state = ResumeState("alice", "lobby")
    state.ready(ready())
    assert state.hello().since == 0 and state.hello().epoch == "e1"


def test_messages_are_shown_once_by_room_and_id() -> None:
    state = ResumeState("alice", "lobby")
    state.ready(ready(msg(1)))
    assert not state.first_sight(msg(1))
    assert state.first_sight(msg(2))
    assert not state.first_sight(msg(2))
    assert state.first_sight(msg(2, room="dev"))  # another room, another stream
    caught = state.ready(ready(msg(1), msg(2), msg(4), msg(3), token="t2"))
    assert [m.id for m in caught.missed] == [3, 4] and not caught.truncated
    assert state.token == "t2" and state.last_id("lobby") == 4


def test_seen_ids_are_bounded_and_old_ones_stay_seen() -> None:
    state = ResumeState("alice", "lobby", seen_per_room=10)
    for n in range(1, 50):
        assert state.first_sight(msg(n))
    assert all(not state.first_sight(msg(n)) for n in range(1, 50))
    assert state.last_id("lobby") == 49


def test_a_new_epoch_forgets_the_old_ids_and_says_messages_may_be_lost() -> None:
    state = ResumeState("alice", "lobby")
    state.ready(ready(msg(1), msg(2)))
    caught = state.ready(ready(msg(1), epoch="e2"))
    assert caught.truncated and [m.id for m in caught.missed] == [1]
    assert state.epoch("lobby") == "e2"
    assert state.ready(ready(msg(1), msg(2), epoch="e2", truncated=True)).truncated


def test_says_and_mes_get_a_txn_and_are_resent_in_order_until_acknowledged() -> None:
    state = ResumeState("alice", "lobby")
    one = state.outgoing("c-1", Say(text="one", ref="c-1"))
    two = state.outgoing("c-2", Me(text="two", ref="c-2"))
    three = state.outgoing("c-3", Say(text="three", ref="c-3"))
    dm = SendDirect(to="bob", text="psst", ref="c-4")
    assert state.outgoing("c-4", dm) is dm  # a dm has no txn in the protocol: not kept
    assert isinstance(one, Say) and isinstance(two, Me)
    assert one.txn and two.txn and one.txn != two.txn and len(one.txn) == 32
    assert state.to_resend() == [one, two, three]
    assert state.outgoing("c-1", one) == one  # a resend keeps its txn
    assert state.to_resend() == [one, two, three]
    state.acknowledged(msg(5, ref="c-2"))
    state.settled("c-3")
    assert state.to_resend() == [one] and state.in_flight == 1


def test_reconnect_pauses_grow_then_give_up_after_retry_for() -> None:
    clock = Clock()
    state = ResumeState("alice", "lobby", retry_for=60, clock=clock, random=lambda: 0.0)
    state.ready(ready())
    pauses = []
    while (pause := state.lost()) is not None:
        pauses.append(pause)
        clock.now += pause + 1.0  # the pause, and a connect attempt that fails
    assert pauses == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0]
    assert state.attempt == 7
    state.ready(ready(token="t9"))  # a later success starts the schedule again
    assert state.attempt == 0 and state.lost() == 0.5


def test_refusals_that_end_the_session_are_final_and_name_taken_with_a_token_is_retried() -> None:
    clock = Clock()
    state = ResumeState("alice", "lobby", clock=clock, random=lambda: 0.0, name_taken_for=20)
    for code in ("kicked", "banned", "replaced", "name_invalid", "auth_failed"):
        assert state.refused(code, offered_token=True) is None
    assert ResumeState("a").refused("server_full", offered_token=False) is None  # not in yet
    state.ready(ready())
    assert state.refused("name_taken", offered_token=False) is None
    assert state.refused("server_full", offered_token=True) == 0.5
    assert state.refused("name_taken", offered_token=True) == 1.0
    clock.now += 19
    assert state.refused("name_taken", offered_token=True) == 2.0
    clock.now += 1
    assert state.refused("name_taken", offered_token=True) is None
