"""Spec 1.1, section 1: epochs, ``txn`` de-duplication and session takeover with ``resume``.

The relay over a real store (memory, and SQLite files where restarts matter), driven
without an event loop.
"""

from __future__ import annotations

import itertools
import threading
from pathlib import Path

import pytest

from chatcli.core.events import Error, Hello, Joined, JoinRoom, Left, Msg, Ready, Say, Welcome
from chatcli.core.relay import Close, Delivery, Relay, Session
from chatcli.errors import ProtocolError
from chatcli.store.base import Store
from chatcli.store.memory import MemoryStore
from chatcli.store.pipeline import StorePipeline
from chatcli.store.sqlite import SQLiteStore

T0 = 1763700000.0
WAIT = 10.0


class Rig:
    """A relay, a store and its pipeline; waits (bounded) for a threaded store's answers."""

    def __init__(self, store: Store) -> None:
        tokens = (f"token-{i}" for i in itertools.count(1))
        self.relay = Relay(rate_limit=0, clock=lambda: T0, token=lambda: next(tokens))
        self.store = store
        self.pipeline = StorePipeline(self.relay, store)
        self._woken = threading.Event()
        store.set_wakeup(self._woken.set)

    def run(self, effects: list) -> list[Delivery | Close]:  # type: ignore[type-arg]
        out = self.pipeline.run(effects)
        while self.pipeline.waiting:
            assert self._woken.wait(WAIT), "the store did not answer in time"
            self._woken.clear()
            out += self.pipeline.drain()
        return out

    def login(self, name: str, **hello: object) -> tuple[Session, dict[str, list[object]]]:
        session = self.relay.open(name if "link" not in hello else hello.pop("link"))
        out = self.run(self.relay.login(session, Hello(name=name, **hello)))  # type: ignore[arg-type]
        return session, received(out)

    def handle(self, session: Session, event: object) -> dict[str, list[object]]:
        return received(self.run(self.relay.handle(session, event)))  # type: ignore[arg-type]


def received(out: list[Delivery | Close]) -> dict[str, list[object]]:
    got: dict[str, list[object]] = {}
    for item in out:
        if isinstance(item, Close):
            got.setdefault(item.session.link, []).append(item)
            continue
        for target in item.targets:
            event = item.echo if target is item.sender and item.echo is not None else item.event
            got.setdefault(target.link, []).append(event)
    return got


def ready_of(got: dict[str, list[object]], link: str) -> Ready:
    [ready] = [e for e in got[link] if isinstance(e, Ready)]
    return ready


@pytest.fixture(params=["memory", "sqlite"])
def rig(request: pytest.FixtureRequest, tmp_path: Path) -> Rig:
    store: Store = MemoryStore(50) if request.param == "memory" else SQLiteStore(tmp_path / "r.db")
    made = Rig(store)
    request.addfinalizer(store.close)
    return made


def test_welcome_offers_resume() -> None:
    welcome = Relay().welcome()
    assert isinstance(welcome, Welcome) and "resume" in welcome.features


def test_every_ready_names_the_epoch_and_brings_a_new_resume_token(rig: Rig) -> None:
    alice, got = rig.login("alice")
    first = ready_of(got, "alice")
    assert first.epoch and first.resume == "token-1"
    again = ready_of(rig.handle(alice, JoinRoom(room="lobby")), "alice")
    assert again.epoch == first.epoch and again.resume == "token-2"
    assert alice.resume == "token-2"


def test_since_in_the_same_epoch_is_honoured_and_in_another_means_start_over(rig: Rig) -> None:
    alice, got = rig.login("alice")
    epoch = ready_of(got, "alice").epoch
    for i in range(5):
        rig.handle(alice, Say(text=f"m{i}"))
    same = ready_of(rig.login("b1", since=3, epoch=epoch)[1], "b1")
    assert ([m.id for m in same.history], same.truncated) == ([4, 5], False)
    other = ready_of(rig.login("b2", since=3, epoch="an-old-epoch")[1], "b2")
    assert ([m.id for m in other.history], other.truncated) == ([1, 2, 3, 4, 5], True)
    unnamed = ready_of(rig.login("b3", since=3)[1], "b3")  # no epoch given: same rules
    assert [m.id for m in unnamed.history] == [4, 5]


def test_a_resent_txn_is_stored_once_and_only_its_sender_hears_of_it_again(rig: Rig) -> None:
    alice, _ = rig.login("alice")
    rig.login("bob")
    first = rig.handle(alice, Say(text="hello", ref="r1", txn="t-1"))
    assert first["alice"] == [Msg(id=1, room="lobby", from_="alice", text="hello", ts=T0, ref="r1")]
    assert first["bob"] == [Msg(id=1, room="lobby", from_="alice", text="hello", ts=T0)]
    again = rig.handle(alice, Say(text="hello", ref="r2", txn="t-1"))
    assert again == {
        "alice": [Msg(id=1, room="lobby", from_="alice", text="hello", ts=T0, ref="r2")]
    }
    other = rig.handle(alice, Say(text="hello", txn="t-2"))  # another txn: a new message
    assert [m.id for m in other["bob"]] == [2]  # type: ignore[attr-defined]


def test_txns_belong_to_the_name_so_a_new_connection_resending_is_deduplicated(rig: Rig) -> None:
    alice, _ = rig.login("alice")
    rig.login("bob")
    rig.handle(alice, Say(text="sent before the drop", txn="x"))
    rig.run(rig.relay.leave(alice, "lost"))
    back, _ = rig.login("alice", link="alice-2")
    again = rig.handle(back, Say(text="sent before the drop", ref=9, txn="x"))
    assert list(again) == ["alice-2"]
    [msg] = again["alice-2"]
    assert isinstance(msg, Msg) and (msg.id, msg.ref) == (1, 9)
    # bob (another name) may use the same txn string for a message of his own
    bob = rig.relay.users["bob"]
    assert [m.id for m in rig.handle(bob, Say(text="mine", txn="x"))["bob"]] == [2]  # type: ignore[attr-defined]


def test_resume_takes_the_session_over_silently(rig: Rig) -> None:
    alice, got = rig.login("alice")
    token = ready_of(got, "alice").resume
    bob, _ = rig.login("bob")
    new, got = rig.login("alice", link="alice-2", resume=token)
    [close] = [e for e in got["alice"] if isinstance(e, Close)]
    assert close.error == Error(
        code="replaced", message="this session was resumed by another connection"
    )
    assert "bob" not in got  # the room sees neither a leave nor a join
    ready = ready_of(got, "alice-2")
    assert ready.users == ["alice", "bob"] and ready.resume != token
    assert rig.relay.users["alice"] is new and not alice.logged_in
    assert rig.run(rig.relay.leave(alice, "lost")) == []  # the old connection's end: silent
    said = rig.handle(bob, Say(text="still there?"))
    assert set(said) == {"alice-2", "bob"}


def test_a_wrong_token_is_name_taken_and_a_token_for_nobody_is_ignored(rig: Rig) -> None:
    _alice, got = rig.login("alice")
    with pytest.raises(ProtocolError) as info:
        rig.login("alice", link="thief", resume="not-the-token")
    assert info.value.code == "name_taken"
    _carol, got = rig.login("carol", resume="stale-token-of-a-gone-session")
    assert isinstance(ready_of(got, "carol"), Ready)


def test_resume_into_another_room_moves_the_session_as_join_would(rig: Rig) -> None:
    _alice, got = rig.login("alice")
    token = ready_of(got, "alice").resume
    rig.login("bob")
    rig.login("dave", room="dev")
    _new, got = rig.login("alice", link="alice-2", resume=token, room="dev")
    assert [type(e) for e in got["bob"]] == [Left]
    assert [type(e) for e in got["dave"]] == [Joined]
    assert ready_of(got, "alice-2").room == "dev"


def test_sqlite_keeps_the_epoch_and_the_txns_across_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "restart.db"
    store = SQLiteStore(path)
    rig = Rig(store)
    alice, got = rig.login("alice")
    epoch = ready_of(got, "alice").epoch
    rig.handle(alice, Say(text="kept", txn="t"))
    store.close()
    store = SQLiteStore(path)
    try:
        rig = Rig(store)
        alice, got = rig.login("alice", since=0, epoch=epoch)
        ready = ready_of(got, "alice")
        assert (ready.epoch, [m.text for m in ready.history]) == (epoch, ["kept"])
        assert ready.truncated is False
        again = rig.handle(alice, Say(text="kept", txn="t"))
        assert [m.id for m in again["alice"]] == [1]  # type: ignore[attr-defined]
    finally:
        store.close()


def test_a_memory_store_restart_is_a_new_epoch() -> None:
    first = ready_of(Rig(MemoryStore()).login("a")[1], "a").epoch
    second = ready_of(Rig(MemoryStore()).login("a")[1], "a").epoch
    assert first and second and first != second
