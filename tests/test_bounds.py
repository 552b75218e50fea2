"""Issue 13, at the sans-I/O level: budgets and bounds of the relay and the text cleaning.

The end-to-end rows (real sockets, real ``chatcli serve``) are in tests/test_abuse.py.
"""

from __future__ import annotations

import msgspec
import pytest

from chatcli.core.protocol import (
    Hello,
    JoinRoom,
    Msg,
    Ready,
    RoomsRequest,
    Say,
    Who,
    decode_client_frame,
    encode,
)
from chatcli.core.relay import ACTION_COSTS, WELCOME_ROOMS, WELCOME_USERS, fit_ready
from chatcli.core.sanitize import checked_text, clean_text
from chatcli.errors import ProtocolError
from tests.test_relay import Chat

# ------------------------------------------------------------------ one budget (row 4)


def test_every_repeatable_request_costs_tokens_and_a_refusal_changes_nothing() -> None:
    chat = Chat(rate_limit=1, rate_burst=4)
    alice = chat.login("alice")
    bob = chat.login("bob")
    chat.deliveries(alice, JoinRoom(room="dev"))
    chat.deliveries(alice, JoinRoom(room="lobby"))
    chat.deliveries(alice, Who())
    chat.deliveries(alice, Who())
    # four tokens spent: the next join is refused with its ref, and nothing moved
    refusal = chat.refuse(alice, JoinRoom(room="dev", ref="j-9"))
    assert (refusal.code, refusal.ref) == ("rate_limited", "j-9")
    assert alice.room == "lobby" and bob.room == "lobby"
    assert chat.refuse(alice, RoomsRequest()).code == "rate_limited"
    chat.clock.advance(2.0)  # rooms costs two
    assert chat.handle(alice, RoomsRequest())


def test_a_join_part_flood_reaches_the_room_at_the_rate_limit_only() -> None:
    chat = Chat(rate_limit=5, rate_burst=10)
    hopper = chat.login("hopper")
    chat.login("watcher")
    seen = 0
    for i in range(1000):  # a thousand toggles in one second of the fake clock
        chat.clock.advance(0.001)
        try:
            out = chat.handle(hopper, JoinRoom(room="away" if i % 2 == 0 else "lobby"))
        except ProtocolError as exc:
            assert exc.code == "rate_limited"
            continue
        seen += len(out.get("watcher", []))
    # a burst of 10 and 5 a second after it: at most 15 joins, so 15 join/leave lines
    assert seen <= 15


def test_rejoining_ones_own_room_costs_more_than_a_join() -> None:
    chat = Chat(rate_limit=1, rate_burst=3)
    alice = chat.login("alice")
    out = chat.handle(alice, JoinRoom(room="lobby"))  # its history again: costs 1 + 2
    assert [type(e) for e in out["alice"]] == [Ready]
    assert chat.refuse(alice, JoinRoom(room="lobby")).code == "rate_limited"


def test_a_hello_retry_after_an_error_costs_tokens() -> None:
    chat = Chat(rate_limit=1, rate_burst=2)
    session = chat.open("x")
    for _ in range(3):  # the first hello is free, the retries cost one each
        with pytest.raises(ProtocolError) as info:
            chat.relay.login(session, Hello(name="a b c d e f g h i j k l m n o p q r s t u v w"))
        assert info.value.code == "name_invalid"
    with pytest.raises(ProtocolError) as info:
        chat.relay.login(session, Hello(name="fine"))
    assert info.value.code == "rate_limited"


def test_the_cost_table_names_every_costly_client_type() -> None:
    assert ACTION_COSTS[Say] == 1 and ACTION_COSTS[RoomsRequest] >= ACTION_COSTS[Who]


# --------------------------------------------------------------- room limits (rows 1-2)


def test_rooms_per_server_are_capped() -> None:
    chat = Chat(max_rooms=3)  # lobby + 2
    a, b, c = chat.login("a", room="r1"), chat.login("b", room="r2"), chat.login("c")
    refusal = chat.refuse(c, JoinRoom(room="r3", ref=7))
    assert (refusal.code, refusal.ref) == ("rate_limited", 7) and c.room == "lobby"
    chat.handle(c, JoinRoom(room="r1"))  # a room that exists is always open
    chat.handle(a, JoinRoom(room="lobby"))
    chat.handle(c, JoinRoom(room="lobby"))  # r1 is empty now: its state is released
    chat.handle(b, JoinRoom(room="r3"))  # so there is room for another (r2 went too)
    chat.login("d", room="r4")
    with pytest.raises(ProtocolError) as info:
        chat.relay.login(chat.open("e"), Hello(name="e", room="r5"))
    assert info.value.code == "rate_limited"


def test_rooms_a_client_creates_a_minute_are_capped() -> None:
    chat = Chat(room_creations=3)
    alice = chat.login("alice")
    for i in range(3):
        chat.handle(alice, JoinRoom(room=f"new{i}"))
    assert chat.refuse(alice, JoinRoom(room="new3")).code == "rate_limited"
    assert alice.room == "new2"
    chat.handle(alice, JoinRoom(room="lobby"))  # an existing room costs no creation
    chat.clock.advance(20.0)  # a minute / 3
    chat.handle(alice, JoinRoom(room="new3"))


# ------------------------------------------------------ constant-size welcome (row 3)


def test_welcome_is_of_constant_size_however_many_rooms_and_users() -> None:
    chat = Chat()
    first = chat.login("u0", room="room0")
    for i in range(1, 300):
        chat.login(f"u{i}", room=f"room{i}")
    for i in range(150):
        chat.login(f"l{i}")
    welcome = chat.relay.welcome()
    assert len(welcome.rooms) == WELCOME_ROOMS and welcome.room_count == 301
    assert "lobby" in [r.name for r in welcome.rooms]
    assert len(welcome.users) == WELCOME_USERS and welcome.user_count == 150
    assert len(encode(welcome)) < 4096
    rooms = chat.handle(first, RoomsRequest())["u0"][0]
    assert rooms.total == 301 and len(rooms.rooms) == 200  # type: ignore[attr-defined]


# ------------------------------------------------------------ ready that fits (row 7)


def test_ready_leaves_out_the_oldest_history_that_does_not_fit() -> None:
    history = [Msg(id=i, room="r", from_="a", text="x" * 4000, ts=1.0) for i in range(1, 51)]
    ready = Ready(name="b", room="r", users=["a", "b"], history=history)
    fitted = fit_ready(ready, 50_000)
    assert len(encode(fitted)) <= 50_000 and fitted.truncated
    assert [m.id for m in fitted.history] == list(range(51 - len(fitted.history), 51))
    assert len(fitted.history) >= 11  # as many as fit, not fewer
    assert fit_ready(ready, 10**9) is ready


def test_the_relay_bounds_ready_by_max_ready() -> None:
    chat = Chat(max_ready=30_000)
    alice = chat.login("alice", room="big")
    for i in range(40):
        chat.say(alice, f"{i} " + "y" * 3000)
    bob = chat.open("bob")
    out = chat.logs_in(bob, Hello(name="bob", room="big"))
    ready = next(d.event for d in out if isinstance(d.event, Ready))
    assert ready.truncated and len(encode(ready)) <= 30_000
    assert ready.history[-1].text.startswith("39 ")


# --------------------------------------------------------------- text cleaning (row 11)


@pytest.mark.parametrize(
    "text",
    ["\u200b", "\u2028", "\u2029", "\ufeff", "\u3164", "\u115f\u1160", "\uffa0", " \u200b \u2060 ",
     "\u200d\ufe0f", "\u2800", "\u00ad", "\u180e"],
)  # fmt: skip
def test_invisible_only_text_is_empty(text: str) -> None:
    with pytest.raises(ProtocolError, match="text is empty"):
        checked_text(text)
    frame = msgspec.json.encode({"type": "say", "text": text})
    with pytest.raises(ProtocolError, match="text is empty"):
        decode_client_frame(frame)


def test_invisible_characters_are_removed_but_joiners_kept() -> None:
    assert clean_text("a\u200bb\u2028c\ufeffd\u3164") == "abcd"
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"
    assert clean_text(family) == family
    assert clean_text("plain ascii") == "plain ascii"
    assert clean_text("héllo wörld") == "héllo wörld"


# ------------------------------------------------------------ memory store bound (row 2)


def test_the_memory_store_forgets_least_recently_used_rooms_within_its_bounds() -> None:
    from chatcli.core.intents import Append, Recall, Recalled
    from chatcli.store.memory import MESSAGE_OVERHEAD, MemoryStore

    store = MemoryStore(50, max_rooms=100, max_bytes=60 * (16_384 + MESSAGE_OVERHEAD))
    chat = Chat()
    session = chat.login("hopper")
    big = "z" * 16_384
    for i in range(300):  # a hopper leaving one 16 KiB message in each new room
        store.submit(Append(session, f"room{i}", "hopper", big, T0, False, None, (), 0))
        assert store.size <= store.max_bytes
    store.completed()
    assert len(store._rooms) <= 60
    # the newest rooms are kept; a forgotten one comes back with a new epoch
    store.submit(Recall(session, "room299", 50, None, None))
    (kept,) = store.completed()
    assert isinstance(kept, Recalled) and len(kept.history) == 1
    store.submit(Recall(session, "room0", 50, 1, "old-epoch"))
    (gone,) = store.completed()
    assert isinstance(gone, Recalled) and gone.history == [] and gone.truncated


T0 = 1795251600.0


def test_the_cached_welcome_follows_joins_leaves_and_renames() -> None:
    from chatcli.core.events import Nick

    chat = Chat()
    alice = chat.login("alice")
    assert chat.relay.welcome().users == ["alice"]
    chat.login("bob")
    assert chat.relay.welcome().users == ["alice", "bob"]
    chat.handle(alice, Nick(name="zed"))
    assert chat.relay.welcome().users == ["bob", "zed"]
    chat.handle(alice, JoinRoom(room="dev"))
    welcome = chat.relay.welcome()
    assert welcome.users == ["bob"] and welcome.user_count == 1
