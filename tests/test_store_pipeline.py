"""The store port: intents out of the relay, completions back, deliveries kept in order.

Driven without an event loop. ``LaterStore`` answers only when told to, as SQLite's group
commit or NATS JetStream's acknowledgements will, so the ordering rules are checked here
before any asynchronous store exists.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

from chatcli.core.intents import (
    Append,
    Authenticate,
    Authenticated,
    Completion,
    Failed,
    Intent,
    Recall,
)
from chatcli.core.protocol import (
    Bye,
    Error,
    Hello,
    Joined,
    JoinRoom,
    Left,
    Msg,
    Ready,
    Say,
    SendDirect,
    Users,
    Who,
)
from chatcli.core.relay import Close, Delivery, Effect, Relay, Session
from chatcli.errors import ProtocolError
from chatcli.store.memory import MemoryStore
from chatcli.store.pipeline import StorePipeline

T0 = 1763700000.0


def login_now(relay: Relay, session: Session, hello: Hello) -> list[Effect]:
    """Log in with no store: answer the relay's account lookup (no account, no ban)."""
    [auth] = relay.login(session, hello)
    assert isinstance(auth, Authenticate)
    return relay.complete(Authenticated(auth, registered=False, verified=False))


class LaterStore:
    """A memory store whose answers wait until :meth:`answer` (an asynchronous store).

    The account lookup of a login is answered at once when nothing is held before it,
    so that these tests hold the history recall behind which everything else waits.
    """

    def __init__(self, fail: Callable[[Intent], str | None] = lambda intent: None) -> None:
        self.inner = MemoryStore(50)
        self.held: list[Completion] = []
        self.ready: list[Completion] = []
        self.fail = fail
        self.wakeups = 0
        self._wakeup: Callable[[], None] | None = None

    def submit(self, intent: Intent) -> None:
        reason = self.fail(intent)
        if reason is not None:
            self.held.append(Failed(intent, reason))
            return
        self.inner.submit(intent)
        if isinstance(intent, Authenticate) and not self.held:
            self.ready.extend(self.inner.completed())
            return
        self.held.extend(self.inner.completed())

    def completed(self) -> list[Completion]:
        done, self.ready = self.ready, []
        return done

    def set_wakeup(self, wakeup: Callable[[], None]) -> None:
        self._wakeup = wakeup

    def close(self) -> None:
        pass

    def answer(self, count: int | None = None) -> None:
        """Let the first ``count`` held completions (all by default) be taken."""
        count = len(self.held) if count is None else count
        self.ready.extend(self.held[:count])
        del self.held[:count]
        self.wakeups += 1
        if self._wakeup is not None:
            self._wakeup()


def received(deliveries: Sequence[Delivery]) -> dict[str, list[object]]:
    out: dict[str, list[object]] = {}
    for d in deliveries:
        for target in d.targets:
            event = d.echo if target is d.sender and d.echo is not None else d.event
            out.setdefault(target.link, []).append(event)
    return out


class Rig:
    def __init__(self, store: LaterStore | MemoryStore) -> None:
        self.relay = Relay(rate_limit=0, clock=lambda: T0)
        self.store = store
        self.pipeline = StorePipeline(self.relay, store)

    def login(self, name: str, room: str = "lobby") -> tuple[Session, list[Delivery]]:
        session = self.relay.open(name)
        return session, self.pipeline.run(self.relay.login(session, Hello(name=name, room=room)))

    def handle(self, session: Session, event: object) -> list[Delivery]:
        return self.pipeline.run(self.relay.handle(session, event))  # type: ignore[arg-type]


def test_say_is_an_append_intent_and_nothing_is_delivered_before_it_is_stored() -> None:
    relay = Relay(rate_limit=0, clock=lambda: T0)
    alice = relay.open("alice")
    bob = relay.open("bob")
    login_now(relay, alice, Hello(name="alice"))
    login_now(relay, bob, Hello(name="bob"))
    [intent] = relay.handle(alice, Say(text="hi", ref="r1"))
    assert isinstance(intent, Append)
    assert (intent.room, intent.sender, intent.text, intent.ref) == ("lobby", "alice", "hi", "r1")
    assert list(intent.targets) == [alice, bob]


def test_login_recalls_history_before_telling_the_room() -> None:
    relay = Relay(rate_limit=0, clock=lambda: T0)
    login_now(relay, relay.open("alice"), Hello(name="alice"))
    bob = relay.open("bob")
    recall, joined = login_now(relay, bob, Hello(name="bob", since=4, history=7))
    assert isinstance(recall, Recall)
    assert (recall.session, recall.room, recall.limit, recall.since) == (bob, "lobby", 7, 4)
    assert isinstance(joined, Delivery) and isinstance(joined.event, Joined)


def test_a_later_store_holds_every_later_delivery_behind_the_unanswered_intent() -> None:
    store = LaterStore()
    rig = Rig(store)
    alice, out = rig.login("alice")
    assert out == [] and rig.pipeline.waiting == 1  # alice's ready waits for her history
    store.answer()
    assert [type(e) for e in received(rig.pipeline.drain())["alice"]] == [Ready]

    bob, out = rig.login("bob")
    assert out == []  # bob's ready, and the join alice must see after it, wait together
    said = rig.handle(alice, Say(text="one", ref=1))
    who = rig.handle(bob, Who())
    assert said == [] and who == []  # behind the unanswered ready: nothing overtakes it
    store.answer(1)  # only bob's history
    first = received(rig.pipeline.drain())
    assert [type(e) for e in first["bob"]] == [Ready]
    assert [type(e) for e in first["alice"]] == [Joined]
    store.answer()
    rest = received(rig.pipeline.drain())
    assert rest["alice"] == [Msg(id=1, room="lobby", from_="alice", text="one", ts=T0, ref=1)]
    # bob was a member when alice spoke (his ready, recalled before, does not hold it),
    # and his who, asked after, is answered after it
    assert rest["bob"] == [
        Msg(id=1, room="lobby", from_="alice", text="one", ts=T0),
        Users(room="lobby", users=["alice", "bob"]),
    ]
    assert rig.pipeline.waiting == 0


def test_someone_who_left_while_the_store_worked_is_not_sent_the_message() -> None:
    store = LaterStore()
    rig = Rig(store)
    alice, _ = rig.login("alice")
    bob, _ = rig.login("bob")
    rig.login("carol", room="dev")
    store.answer()
    rig.pipeline.drain()
    rig.handle(alice, Say(text="hi", ref="a1"))
    rig.handle(bob, JoinRoom(room="dev"))  # bob moves on before the store answers
    rig.handle(alice, JoinRoom(room="dev"))  # and so does the sender
    store.answer()
    out = received(rig.pipeline.drain())
    msgs = {name: [e for e in events if isinstance(e, Msg)] for name, events in out.items()}
    # the sender still gets its acknowledgement; bob, gone, does not get lobby's message
    assert msgs["alice"] == [Msg(id=1, room="lobby", from_="alice", text="hi", ts=T0, ref="a1")]
    assert msgs.get("bob", []) == []
    assert msgs.get("carol", []) == []


def test_a_failed_append_is_refused_to_its_sender_with_its_ref_and_reaches_nobody() -> None:
    store = LaterStore(fail=lambda i: "disk full" if isinstance(i, Append) else None)
    rig = Rig(store)
    alice, _ = rig.login("alice")
    rig.login("bob")
    store.answer()  # alice's history and bob's account lookup...
    rig.pipeline.drain()
    store.answer()  # ...then bob's history
    rig.pipeline.drain()
    rig.handle(alice, Say(text="lost?", ref="x9"))
    store.answer()
    out = received(rig.pipeline.drain())
    assert out == {"alice": [Error(code="unavailable", message="disk full", ref="x9")]}


def test_a_failed_recall_still_gives_a_ready_that_says_history_may_be_missing() -> None:
    store = LaterStore(fail=lambda i: "cannot read" if isinstance(i, Recall) else None)
    rig = Rig(store)
    rig.login("alice")
    store.answer()
    [ready] = received(rig.pipeline.drain())["alice"]
    assert isinstance(ready, Ready)
    assert (ready.history, ready.truncated) == ([], True)


def test_the_pipeline_refuses_a_store_that_answers_out_of_order() -> None:
    store = LaterStore()
    rig = Rig(store)
    rig.login("alice")
    rig.login("bob")
    store.held.reverse()
    store.answer()
    with pytest.raises(RuntimeError, match="out of order"):
        rig.pipeline.drain()


def test_the_memory_store_answers_at_once_so_nothing_ever_waits() -> None:
    rig = Rig(MemoryStore(50))
    alice, out = rig.login("alice")
    assert [type(e) for e in received(out)["alice"]] == [Ready]
    out = rig.handle(alice, Say(text="now"))
    assert received(out)["alice"] == [Msg(id=1, room="lobby", from_="alice", text="now", ts=T0)]
    assert rig.pipeline.waiting == 0


@pytest.mark.parametrize(
    ("event", "code"),
    [
        (Hello(name="bad name", ref="h1"), "name_invalid"),
        (Hello(name="ok", room="Bad Room", ref="h1"), "bad_request"),
        (JoinRoom(room="#nope", ref="h1"), "bad_request"),
        (SendDirect(to="nobody", text="hi", ref="h1"), "no_such_user"),
        (Who(ref="h1"), "not_logged_in"),
    ],
)
def test_every_refusal_carries_the_ref_of_its_frame_from_the_relay_itself(
    event: object, code: str
) -> None:
    relay = Relay(rate_limit=0, clock=lambda: T0)
    session = relay.open("s")
    if not isinstance(event, (Hello, Who)):
        login_now(relay, session, Hello(name="me"))
    with pytest.raises(ProtocolError) as info:
        relay.handle(session, event)  # type: ignore[arg-type]
    assert (info.value.code, info.value.ref) == (code, "h1")


def test_rate_limited_say_carries_its_ref() -> None:
    relay = Relay(rate_limit=1, rate_burst=1, clock=lambda: T0)
    session = relay.open("s")
    login_now(relay, session, Hello(name="me"))
    relay.handle(session, Say(text="one"))
    with pytest.raises(ProtocolError) as info:
        relay.handle(session, Say(text="two", ref=5))
    assert (info.value.code, info.value.ref) == ("rate_limited", 5)


def test_an_empty_room_is_forgotten_by_the_relay_but_its_ids_go_on_in_the_store() -> None:
    rig = Rig(MemoryStore(5))
    alice, _ = rig.login("alice", room="dev")
    rig.handle(alice, Say(text="one"))
    rig.handle(alice, JoinRoom(room="lobby"))
    assert [name for name, _ in rig.relay.counts()] == ["lobby"]
    out = rig.handle(alice, JoinRoom(room="dev"))
    out += rig.handle(alice, Say(text="two"))
    msgs = [e for e in received(out)["alice"] if isinstance(e, Msg)]
    assert [m.id for m in msgs] == [2]
    left = [e for e in received(rig.handle(alice, JoinRoom(room="lobby"))).get("alice", [])]
    assert not any(isinstance(e, Left) for e in left)


def test_bye_waits_behind_the_acknowledgement_of_what_was_said_before_it() -> None:
    store = LaterStore()
    rig = Rig(store)
    alice, _ = rig.login("alice")
    store.answer()
    rig.pipeline.drain()
    out = rig.handle(alice, Say(text="last words", ref=1)) + rig.handle(alice, Bye())
    assert out == []  # neither the ack nor the close may go before the store answers
    store.answer()
    released = rig.pipeline.drain()
    assert [type(x) for x in released] == [Delivery, Close]
    ack = released[0]
    assert isinstance(ack, Delivery) and isinstance(ack.echo, Msg) and ack.echo.ref == 1
