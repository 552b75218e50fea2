"""The relay state machine, driven directly with a fake clock: no sockets, no event loop."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
import pytest

from chatcli.core.protocol import (
    Bye,
    DirectMessage,
    Hello,
    Joined,
    JoinRoom,
    Left,
    Me,
    Msg,
    Ping,
    Pong,
    Ready,
    RoomInfo,
    RoomList,
    RoomsRequest,
    Say,
    SendDirect,
    Users,
    Welcome,
    Who,
)
from chatcli.core.relay import Close, Delivery, Effect, Relay, Session, TokenBucket, error_event
from chatcli.errors import ProtocolError
from chatcli.store.memory import MemoryStore
from chatcli.store.pipeline import StorePipeline

T0 = 1763700000.0


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, start: float = T0) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def fan_out(deliveries: Sequence[object]) -> dict[str, list[object]]:
    """What each session (by its link) receives, the sender's echo substituted."""
    out: dict[str, list[object]] = {}
    for d in deliveries:
        assert isinstance(d, Delivery)
        if isinstance(d.event, Ready):  # epochs and resume tokens are random: tested apart
            d = Delivery(d.targets, msgspec.structs.replace(d.event, epoch=None, resume=None))
        for target in d.targets:
            event = d.echo if target is d.sender and d.echo is not None else d.event
            out.setdefault(target.link, []).append(event)
    return out


class Chat:
    """A relay over a memory store, with a fake clock and helpers to log sessions in."""

    def __init__(self, **kwargs: object) -> None:
        self.clock = FakeClock()
        kwargs.setdefault("rate_limit", 0)
        self.relay = Relay(clock=self.clock, **kwargs)  # type: ignore[arg-type]
        history = kwargs.get("history", 50)
        assert isinstance(history, int)
        self.store = MemoryStore(history)
        self.pipeline = StorePipeline(self.relay, self.store)

    def open(self, link: str) -> Session:
        return self.relay.open(link)

    def run(self, effects: Sequence[Effect]) -> list[Delivery]:
        """The deliveries ``effects`` make once the store has done its part."""
        return self.pipeline.run(effects)

    def deliveries(self, session: Session, event: object) -> list[Delivery]:
        return self.run(self.relay.handle(session, event))  # type: ignore[arg-type]

    def logs_in(self, session: Session, hello: Hello) -> list[Delivery]:
        return self.run(self.relay.login(session, hello))

    def login(self, name: str, room: str = "lobby", **hello: object) -> Session:
        session = self.open(name)
        self.logs_in(session, Hello(name=name, room=room, **hello))  # type: ignore[arg-type]
        return session

    def handle(self, session: Session, event: object) -> dict[str, list[object]]:
        return fan_out(self.deliveries(session, event))

    def refuse(self, session: Session, event: object) -> ProtocolError:
        with pytest.raises(ProtocolError) as info:
            self.relay.handle(session, event)  # type: ignore[arg-type]
        return info.value

    def say(self, session: Session, *texts: str) -> None:
        for text in texts:
            self.deliveries(session, Say(text=text))


# ---------------------------------------------------------------------------- welcome


def test_welcome_lists_default_room_users_and_rooms() -> None:
    chat = Chat()
    chat.login("bob")
    chat.login("alice")
    chat.login("carol", room="dev")
    welcome = chat.relay.welcome()
    assert isinstance(welcome, Welcome)
    assert welcome.proto == 1
    assert welcome.server.startswith("chatcli/")
    assert welcome.users == ["alice", "bob"]
    assert welcome.rooms == [RoomInfo("dev", 1), RoomInfo("lobby", 2)]
    assert "login" in welcome.hint


def test_welcome_on_an_empty_server_lists_the_empty_lobby() -> None:
    welcome = Chat().relay.welcome()
    assert welcome.users == []
    assert welcome.rooms == [RoomInfo("lobby", 0)]


# ------------------------------------------------------------------------------ login


def test_login_ok_first_user() -> None:
    chat = Chat()
    alice = chat.open("alice")
    out = fan_out(chat.logs_in(alice, Hello(name="alice")))
    assert out == {"alice": [Ready(name="alice", room="lobby", users=["alice"], history=[])]}
    assert alice.logged_in and alice.name == "alice" and alice.room == "lobby"


def test_login_second_user_gets_everyone_and_the_others_get_join() -> None:
    chat = Chat()
    chat.login("alice")
    chat.login("Carol")
    bob = chat.open("bob")
    out = fan_out(chat.logs_in(bob, Hello(name="bob")))
    assert out == {
        "bob": [Ready(name="bob", room="lobby", users=["alice", "bob", "Carol"], history=[])],
        "alice": [Joined(room="lobby", name="bob", ts=T0)],
        "Carol": [Joined(room="lobby", name="bob", ts=T0)],
    }


def test_login_in_another_room_does_not_disturb_the_lobby() -> None:
    chat = Chat()
    chat.login("alice")
    bob = chat.open("bob")
    out = fan_out(chat.logs_in(bob, Hello(name="bob", room="dev")))
    assert out == {"bob": [Ready(name="bob", room="dev", users=["bob"], history=[])]}


@pytest.mark.parametrize(
    "name", ["", "bad name", "x" * 25, "аlice", "server", "Server", "SYSTEM", "sYsTeM", "a\x1b"]
)
def test_login_name_invalid(name: str) -> None:
    chat = Chat()
    session = chat.open("s")
    with pytest.raises(ProtocolError) as info:
        chat.logs_in(session, Hello(name=name))
    assert info.value.code == "name_invalid"
    assert not session.logged_in
    assert chat.relay.users == {}


@pytest.mark.parametrize("taken", ["alice", "Alice", "ALICE"])
def test_login_name_taken_case_insensitively(taken: str) -> None:
    chat = Chat()
    chat.login("alice")
    session = chat.open("other")
    with pytest.raises(ProtocolError) as info:
        chat.deliveries(session, Hello(name=taken))
    assert info.value.code == "name_taken"
    assert not session.logged_in
    assert [s.name for s in chat.relay.users.values()] == ["alice"]


@pytest.mark.parametrize("room", ["Lobby", "", "a b", "x" * 33, "#dev"])
def test_login_invalid_room_is_bad_request_and_the_session_stays_usable(room: str) -> None:
    chat = Chat()
    session = chat.open("bob")
    with pytest.raises(ProtocolError) as info:
        chat.logs_in(session, Hello(name="bob", room=room))
    assert info.value.code == "bad_request"
    assert not session.logged_in
    assert "bob" not in chat.relay.users
    out = fan_out(chat.logs_in(session, Hello(name="bob", room="dev")))
    assert out["bob"] == [Ready(name="bob", room="dev", users=["bob"], history=[])]


def test_second_hello_is_bad_request() -> None:
    chat = Chat()
    alice = chat.login("alice")
    assert chat.refuse(alice, Hello(name="alice2")).code == "bad_request"
    assert alice.name == "alice"


def test_name_is_free_again_after_leaving() -> None:
    chat = Chat()
    alice = chat.login("alice")
    chat.relay.leave(alice, "quit")
    assert chat.relay.users == {}
    chat.login("ALICE")


# ---------------------------------------------------------------------------- history


def _ids(ready: object) -> list[int]:
    assert isinstance(ready, Ready)
    return [m.id for m in ready.history]


def _ready_for(chat: Chat, name: str, **hello: object) -> Ready:
    session = chat.open(name)
    out = fan_out(chat.logs_in(session, Hello(name=name, **hello)))  # type: ignore[arg-type]
    ready = out[name][0]
    assert isinstance(ready, Ready)
    return ready


def test_ready_history_default_is_the_last_50_oldest_first() -> None:
    chat = Chat()
    alice = chat.login("alice")
    chat.say(alice, *(f"m{i}" for i in range(1, 61)))
    ready = _ready_for(chat, "bob")
    assert _ids(ready) == list(range(11, 61))
    assert ready.history[0] == Msg(id=11, room="lobby", from_="alice", text="m11", ts=T0)
    assert ready.truncated is False


def test_ready_history_param() -> None:
    chat = Chat()
    alice = chat.login("alice")
    chat.say(alice, *(f"m{i}" for i in range(1, 61)))
    assert _ids(_ready_for(chat, "b1", history=5)) == [56, 57, 58, 59, 60]
    assert _ids(_ready_for(chat, "b2", history=0)) == []
    # asking for more than the server keeps gives what it keeps
    assert _ids(_ready_for(chat, "b3", history=1000)) == list(range(11, 61))


def test_ready_since_without_truncation() -> None:
    chat = Chat()
    alice = chat.login("alice")
    chat.say(alice, *(f"m{i}" for i in range(1, 61)))
    ready = _ready_for(chat, "b1", since=55)
    assert (_ids(ready), ready.truncated) == ([56, 57, 58, 59, 60], False)
    ready = _ready_for(chat, "b2", since=10)  # 11 is the oldest kept: nothing missing
    assert (_ids(ready), ready.truncated) == (list(range(11, 61)), False)
    ready = _ready_for(chat, "b3", since=60)
    assert (_ids(ready), ready.truncated) == ([], False)
    # since wins over history: every stored message after it
    ready = _ready_for(chat, "b4", since=50, history=2)
    assert _ids(ready) == list(range(51, 61))


def test_ready_since_with_truncation() -> None:
    chat = Chat()
    alice = chat.login("alice")
    chat.say(alice, *(f"m{i}" for i in range(1, 61)))
    ready = _ready_for(chat, "b1", since=3)
    assert (_ids(ready), ready.truncated) == (list(range(11, 61)), True)
    ready = _ready_for(chat, "b2", since=9)
    assert (_ids(ready), ready.truncated) == (list(range(11, 61)), True)


def test_ready_since_in_an_empty_room() -> None:
    ready = _ready_for(Chat(), "bob", since=0)
    assert (_ids(ready), ready.truncated) == ([], False)


def test_ready_since_an_id_the_room_never_had_means_a_restart() -> None:
    """After a server restart ids begin again: a since beyond them may hide anything."""
    chat = Chat()
    alice = chat.login("alice")
    chat.say(alice, "a", "b", "c")
    ready = _ready_for(chat, "back", since=500)
    assert (_ids(ready), ready.truncated) == ([1, 2, 3], True)
    ready = _ready_for(Chat(), "fresh", since=7)  # nothing said since the restart
    assert (_ids(ready), ready.truncated) == ([], True)


def test_ready_since_with_no_history_kept_flags_what_was_missed() -> None:
    chat = Chat(history=0)
    alice = chat.login("alice")
    chat.say(alice, "a", "b")
    ready = _ready_for(chat, "b1", since=1)  # message 2 was said, but is not kept
    assert (_ids(ready), ready.truncated) == ([], True)
    ready = _ready_for(chat, "b2", since=2)  # up to date
    assert (_ids(ready), ready.truncated) == ([], False)


def test_history_is_bounded_per_room() -> None:
    chat = Chat(history=3)
    alice = chat.login("alice")
    bob = chat.login("bob", room="dev")
    chat.say(alice, *(f"l{i}" for i in range(10)))
    chat.say(bob, "d0", "d1")
    assert [m.text for m in _ready_for(chat, "c1").history] == ["l7", "l8", "l9"]
    assert [m.text for m in _ready_for(chat, "c2", room="dev").history] == ["d0", "d1"]
    assert [m.id for m in chat.store.history("lobby", 100, None)[0]] == [8, 9, 10]


def test_history_zero_keeps_nothing() -> None:
    chat = Chat(history=0)
    alice = chat.login("alice")
    chat.say(alice, "a", "b")
    assert _ids(_ready_for(chat, "bob")) == []


# ---------------------------------------------------------------------- join / leave


@pytest.mark.parametrize("reason", ["quit", "lost", "timeout", "slow", "kicked"])
def test_leave_tells_the_room_with_its_reason(reason: str) -> None:
    chat = Chat()
    alice = chat.login("alice")
    chat.login("bob")
    chat.login("carol", room="dev")
    chat.clock.advance(5)
    out = fan_out(chat.relay.leave(alice, reason))
    assert out == {"bob": [Left(room="lobby", name="alice", reason=reason, ts=T0 + 5)]}
    assert not alice.logged_in
    assert chat.relay.welcome().users == ["bob"]


def test_bye_is_a_close_with_reason_quit_then_a_leave() -> None:
    """bye is handled once, here: a Close effect, after which the adapter calls leave."""
    chat = Chat()
    alice = chat.login("alice")
    chat.login("bob")
    [close] = chat.relay.handle(alice, Bye())
    assert isinstance(close, Close) and (close.session, close.reason) == (alice, "quit")
    assert "alice" in chat.relay.users  # still there until the connection is closed
    assert fan_out(chat.relay.leave(alice, "quit")) == {
        "bob": [Left(room="lobby", name="alice", reason="quit", ts=T0)]
    }
    [close] = chat.relay.handle(chat.open("anonymous"), Bye())  # before login too
    assert isinstance(close, Close)


def test_last_one_out_tells_nobody_and_leave_twice_is_harmless() -> None:
    chat = Chat()
    alice = chat.login("alice")
    # The leave is still emitted (recorders observe it), but it has no recipients.
    (delivery,) = chat.relay.leave(alice, "quit")
    assert delivery.targets == ()
    assert delivery.event == Left(room="lobby", name="alice", reason="quit", ts=T0)
    assert chat.relay.leave(alice, "lost") == []
    assert chat.relay.leave(chat.open("never-logged-in"), "lost") == []


# -------------------------------------------------------------------------------- say


def test_say_goes_to_every_member_including_the_sender_with_ref_only_in_the_echo() -> None:
    chat = Chat()
    alice = chat.login("alice")
    chat.login("bob")
    chat.login("carol")
    chat.login("dave", room="dev")
    chat.clock.advance(1.5)
    out = chat.handle(alice, Say(text="hi", ref="c-1"))
    plain = Msg(id=1, room="lobby", from_="alice", text="hi", ts=T0 + 1.5)
    assert out == {
        "alice": [Msg(id=1, room="lobby", from_="alice", text="hi", ts=T0 + 1.5, ref="c-1")],
        "bob": [plain],
        "carol": [plain],
    }


def test_say_without_ref_has_no_echo_and_one_event_for_all() -> None:
    chat = Chat()
    alice = chat.login("alice")
    chat.login("bob")
    [delivery] = chat.deliveries(alice, Say(text="hi"))
    assert delivery.echo is None
    assert [s.name for s in delivery.targets] == ["alice", "bob"]
    assert delivery.event == Msg(id=1, room="lobby", from_="alice", text="hi", ts=T0)


def test_say_from_is_the_bound_name() -> None:
    chat = Chat()
    session = chat.open("conn-1")
    chat.logs_in(session, Hello(name="Alice"))
    [delivery] = chat.deliveries(session, Say(text="hi"))
    assert isinstance(delivery.event, Msg)
    assert delivery.event.from_ == "Alice"


def test_ids_increase_strictly_per_room() -> None:
    chat = Chat()
    alice = chat.login("alice")
    bob = chat.login("bob", room="dev")

    def said(session: Session, text: str) -> int:
        [delivery] = chat.deliveries(session, Say(text=text))
        assert isinstance(delivery.event, Msg)
        return delivery.event.id

    assert [said(alice, "a"), said(alice, "b"), said(bob, "c"), said(alice, "d")] == [1, 2, 1, 3]
    assert said(bob, "e") == 2


def test_ids_keep_increasing_when_a_room_empties_and_is_reused() -> None:
    for keep in (0, 5):
        chat = Chat(history=keep)
        alice = chat.login("alice", room="dev")
        [first] = chat.deliveries(alice, Say(text="one"))
        chat.deliveries(alice, JoinRoom(room="lobby"))  # dev is empty now
        chat.deliveries(alice, JoinRoom(room="dev"))
        [second] = chat.deliveries(alice, Say(text="two"))
        assert isinstance(first.event, Msg) and isinstance(second.event, Msg)
        assert second.event.id > first.event.id, f"history={keep}"


def test_me_is_a_msg_with_action() -> None:
    chat = Chat()
    alice = chat.login("alice")
    chat.login("bob")
    out = chat.handle(alice, Me(text="waves", ref=7))
    assert out == {
        "alice": [Msg(id=1, room="lobby", from_="alice", text="waves", ts=T0, action=True, ref=7)],
        "bob": [Msg(id=1, room="lobby", from_="alice", text="waves", ts=T0, action=True)],
    }


# --------------------------------------------------------------------------------- dm


@pytest.mark.parametrize("to", ["bob", "BOB", "Bob"])
def test_dm_reaches_the_user_and_the_sender(to: str) -> None:
    chat = Chat()
    alice = chat.login("alice")
    chat.login("bob", room="dev")
    chat.login("carol")
    out = chat.handle(alice, SendDirect(to=to, text="psst", ref="d-1"))
    assert out == {
        "bob": [DirectMessage(from_="alice", to="bob", text="psst", ts=T0)],
        "alice": [DirectMessage(from_="alice", to="bob", text="psst", ts=T0, ref="d-1")],
    }


def test_dm_to_self_arrives_once() -> None:
    chat = Chat()
    alice = chat.login("alice")
    out = chat.handle(alice, SendDirect(to="Alice", text="note", ref="n"))
    assert out == {"alice": [DirectMessage(from_="alice", to="alice", text="note", ts=T0, ref="n")]}


def test_dm_to_nobody_is_no_such_user_with_ref() -> None:
    chat = Chat()
    alice = chat.login("alice")
    error = chat.refuse(alice, SendDirect(to="ghost", text="hello?", ref="d-9"))
    assert (error.code, error.ref) == ("no_such_user", "d-9")
    assert "ghost" in error.message


def test_dm_to_someone_who_left_is_no_such_user() -> None:
    chat = Chat()
    alice = chat.login("alice")
    bob = chat.login("bob")
    chat.relay.leave(bob, "quit")
    assert chat.refuse(alice, SendDirect(to="bob", text="x")).code == "no_such_user"


# ------------------------------------------------------------------------ who / rooms


def test_who_lists_the_current_room_sorted_case_insensitively() -> None:
    chat = Chat()
    alice = chat.login("alice")
    chat.login("Carol")
    chat.login("bob")
    chat.login("dave", room="dev")
    assert chat.handle(alice, Who()) == {
        "alice": [Users(room="lobby", users=["alice", "bob", "Carol"])]
    }


def test_rooms_lists_rooms_with_counts() -> None:
    chat = Chat()
    alice = chat.login("alice")
    chat.login("bob", room="dev")
    chat.login("carol", room="dev")
    chat.login("dave", room="zoo")
    assert chat.handle(alice, RoomsRequest()) == {
        "alice": [
            RoomList(rooms=[RoomInfo("dev", 2), RoomInfo("lobby", 1), RoomInfo("zoo", 1)], total=3)
        ]
    }


def test_empty_rooms_are_not_listed_but_the_lobby_always_is() -> None:
    chat = Chat()
    alice = chat.login("alice", room="dev")
    chat.deliveries(alice, Say(text="kept in history"))
    chat.deliveries(alice, JoinRoom(room="tmp"))
    chat.deliveries(alice, JoinRoom(room="dev"))
    out = chat.handle(alice, RoomsRequest())
    assert out == {"alice": [RoomList(rooms=[RoomInfo("dev", 1), RoomInfo("lobby", 0)], total=2)]}


def test_ping_pong() -> None:
    chat = Chat()
    session = chat.open("x")
    assert chat.handle(session, Ping()) == {"x": [Pong()]}
    assert chat.handle(session, Pong()) == {}


# ------------------------------------------------------------------------ room switch


def test_join_another_room() -> None:
    chat = Chat()
    alice = chat.login("alice")
    chat.login("bob")
    chat.login("carol", room="dev")
    carol_said = chat.deliveries(chat.relay.users["carol"], Say(text="in dev"))
    assert carol_said
    chat.clock.advance(2)
    out = chat.handle(alice, JoinRoom(room="dev"))
    assert out == {
        "bob": [Left(room="lobby", name="alice", reason="part", ts=T0 + 2)],
        "alice": [
            Ready(
                name="alice",
                room="dev",
                users=["alice", "carol"],
                history=[Msg(id=1, room="dev", from_="carol", text="in dev", ts=T0)],
            )
        ],
        "carol": [Joined(room="dev", name="alice", ts=T0 + 2)],
    }
    assert alice.room == "dev"
    # messages now go to dev only
    assert set(chat.handle(alice, Say(text="hi dev"))) == {"alice", "carol"}


def test_join_the_same_room_is_just_a_ready() -> None:
    chat = Chat()
    alice = chat.login("alice")
    chat.login("bob")
    out = chat.handle(alice, JoinRoom(room="lobby"))
    assert out == {"alice": [Ready(name="alice", room="lobby", users=["alice", "bob"], history=[])]}


def test_join_invalid_room_is_bad_request_and_nothing_moves() -> None:
    chat = Chat()
    alice = chat.login("alice")
    assert chat.refuse(alice, JoinRoom(room="Not Valid")).code == "bad_request"
    assert alice.room == "lobby"


# ---------------------------------------------------------------------- not logged in


@pytest.mark.parametrize(
    "event",
    [
        Say(text="hi", ref="r"),
        Me(text="waves", ref="r"),
        SendDirect(to="bob", text="x", ref="r"),
        Who(),
        RoomsRequest(),
        JoinRoom(room="dev"),  # (bye before login is a close: see the bye test)
    ],
)
def test_not_logged_in(event: object) -> None:
    chat = Chat()
    chat.login("bob")
    session = chat.open("anon")
    error = chat.refuse(session, event)
    assert error.code == "not_logged_in"
    assert error.ref == getattr(event, "ref", None)


def test_error_event_carries_code_message_and_ref() -> None:
    event = error_event(ProtocolError("rate_limited", "slow down", "c-3"))
    assert (event.code, event.message, event.ref) == ("rate_limited", "slow down", "c-3")


# --------------------------------------------------------------------- flood control


def test_token_bucket_burst_refusal_and_refill() -> None:
    clock = FakeClock(100.0)
    bucket = TokenBucket(rate=2, burst=3, clock=clock)
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    clock.advance(0.25)  # half a token
    assert bucket.take() is False
    clock.advance(0.25)  # the half from before plus another half
    assert [bucket.take(), bucket.take()] == [True, False]
    clock.advance(60)  # refills to the burst, not beyond
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]


def test_token_bucket_rate_zero_is_off() -> None:
    bucket = TokenBucket(rate=0, burst=1, clock=FakeClock())
    assert all(bucket.take() for _ in range(10_000))


def test_rate_limit_refuses_with_ref_and_relays_nothing() -> None:
    chat = Chat(rate_limit=1, rate_burst=2)
    alice = chat.login("alice")
    chat.login("bob")
    assert chat.handle(alice, Say(text="1"))
    assert chat.handle(alice, Me(text="2"))
    error = chat.refuse(alice, Say(text="3", ref="c-3"))
    assert (error.code, error.ref) == ("rate_limited", "c-3")
    error = chat.refuse(alice, SendDirect(to="bob", text="4", ref="c-4"))
    assert (error.code, error.ref) == ("rate_limited", "c-4")
    # who and rooms are flood-controlled too (spec 1.1, section 7); pings are not
    assert chat.refuse(alice, Who(ref="c-w")).code == "rate_limited"
    assert chat.refuse(alice, RoomsRequest()).code == "rate_limited"
    assert chat.handle(alice, Ping())
    chat.clock.advance(1.0)
    out = chat.handle(alice, Say(text="5"))
    assert out["bob"] == [Msg(id=3, room="lobby", from_="alice", text="5", ts=T0 + 1)]


def test_rate_limit_is_per_connection() -> None:
    chat = Chat(rate_limit=1, rate_burst=1)
    alice = chat.login("alice")
    bob = chat.login("bob")
    chat.say(alice, "a")
    assert chat.refuse(alice, Say(text="again")).code == "rate_limited"
    chat.say(bob, "b")


def test_rate_limit_zero_disables_flood_control() -> None:
    chat = Chat(rate_limit=0, rate_burst=1)
    alice = chat.login("alice")
    chat.say(alice, *(str(i) for i in range(500)))
