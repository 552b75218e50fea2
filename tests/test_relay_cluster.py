"""The relay's cluster hooks, driven directly: other nodes' users as ghosts, presence notes,
relayed messages and board changes, hand-overs. No sockets, no NATS (tests/test_cluster.py
runs real nodes)."""

from __future__ import annotations

from collections import deque
from typing import Any

from test_relay import Chat, fan_out

from chatcli.core.board import RoomBoard
from chatcli.core.events import Cleared, Drawn, Erased, Moved, Mute, Renamed, Shape
from chatcli.core.intents import Authenticate, Authenticated, Relayed, RelayedBoard
from chatcli.core.names import name_key, name_keys
from chatcli.core.protocol import (
    DirectMessage,
    Error,
    Hello,
    Joined,
    Left,
    Msg,
    Say,
    SendDirect,
    Users,
    Who,
)
from chatcli.core.relay import Close, Delivery, PresenceNote, Session, token_digest


class Link:
    """Stands for a remote node's link: records what the fan-out would forward."""

    def __init__(self, node: str, session: Session) -> None:
        self.node = node
        self.session = session


def cluster_chat() -> Chat:
    chat = Chat()
    chat.relay.presence = deque()
    chat.relay.remote_link = Link
    return chat


def ghost(chat: Chat, name: str, room: str = "lobby", node: str = "n2", **kw: Any) -> list[Any]:
    return chat.relay.ghost(node, name, name_keys(name), room, **kw)


def notes(chat: Chat) -> list[PresenceNote]:
    assert chat.relay.presence is not None
    taken = list(chat.relay.presence)
    chat.relay.presence.clear()
    return taken


def test_a_ghost_counts_in_names_who_and_welcome_but_is_not_delivered_room_traffic() -> None:
    chat = cluster_chat()
    alice = chat.login("alice")
    effects = ghost(chat, "bob")
    # alice (local) is told bob joined; the ghost itself is nobody's target
    assert fan_out(effects) == {"alice": [Joined(room="lobby", name="bob", ts=chat.clock())]}
    assert chat.relay.welcome().users == ["alice", "bob"]
    users = chat.handle(alice, Who())["alice"][0]
    assert isinstance(users, Users) and users.users == ["alice", "bob"]
    said = chat.deliveries(alice, Say(text="hi", ref="r"))
    targets = [t for d in said for t in d.targets]
    assert all(t.node is None for t in targets)  # bob's node delivers to bob itself


def test_a_name_held_on_another_node_is_taken_here_too() -> None:
    chat = cluster_chat()
    ghost(chat, "bob")
    newcomer = chat.open("x")
    try:
        chat.relay.login(newcomer, Hello(name="Bob"))
    except Exception as exc:  # ProtocolError
        assert getattr(exc, "code", None) == "name_taken"
    else:
        raise AssertionError("a ghost's name was given away")


def test_the_store_says_taken_elsewhere_and_the_login_is_refused() -> None:
    chat = cluster_chat()
    session = chat.open("x")
    (auth,) = chat.relay.login(session, Hello(name="carol"))
    assert isinstance(auth, Authenticate)
    done = Authenticated(auth, False, False, taken="the name 'carol' is already in use")
    effects = chat.relay.complete(done)
    assert [type(e) for e in effects] == [Close]
    assert isinstance(effects[0], Close) and effects[0].error is not None
    assert effects[0].error.code == "name_taken"
    # the claim is noted as freed, so the node releases it in NATS
    (note,) = notes(chat)
    assert note.gone == "" and note.keys == name_keys("carol")


def test_local_presence_changes_are_noted_and_ghost_ones_are_not() -> None:
    chat = cluster_chat()
    alice = chat.login("alice")
    assert [n.session for n in notes(chat)] == [alice]  # its ready: publish it
    ghost(chat, "bob")
    assert notes(chat) == []
    chat.relay.leave(alice, "quit")
    (gone,) = notes(chat)
    assert gone.gone == "quit" and gone.name == "alice" and gone.keys == name_keys("alice")


def test_ghost_moves_renames_and_leaves_are_announced_to_local_members() -> None:
    chat = cluster_chat()
    chat.login("alice")
    ghost(chat, "bob")
    ts = chat.clock()
    moved = fan_out(ghost(chat, "bob", room="dev"))
    assert moved == {"alice": [Left(room="lobby", name="bob", reason="part", ts=ts)]}
    back = fan_out(ghost(chat, "bob"))
    assert back == {"alice": [Joined(room="lobby", name="bob", ts=ts)]}
    renamed = fan_out(ghost(chat, "robert", was=name_key("bob")))
    assert renamed == {"alice": [Renamed(room="lobby", old="bob", name="robert", ts=ts)]}
    assert chat.relay.users.get(name_key("bob")) is None
    gone = fan_out(chat.relay.ghost_gone(name_key("robert"), "lost"))
    assert gone == {"alice": [Left(room="lobby", name="robert", reason="lost", ts=ts)]}
    assert chat.relay.welcome().users == ["alice"]


def test_a_dm_to_a_ghost_is_addressed_to_its_link() -> None:
    chat = cluster_chat()
    alice = chat.login("alice")
    ghost(chat, "bob")
    (delivery,) = chat.deliveries(alice, SendDirect(to="bob", text="psst"))
    remote = [t for t in delivery.targets if t.node is not None]
    assert len(remote) == 1 and isinstance(remote[0].link, Link)
    assert remote[0].link.node == "n2" and remote[0].link.session is remote[0]
    assert isinstance(delivery.event, DirectMessage) and delivery.event.to == "bob"


def test_relayed_messages_reach_only_members_whose_ready_is_out() -> None:
    chat = cluster_chat()
    alice = chat.login("alice")
    msg = Msg(id=7, room="lobby", from_="bob", text="from n2", ts=chat.clock())
    out = chat.relay.complete(Relayed(msg))
    assert [d.targets for d in out if isinstance(d, Delivery)] == [(alice,)]
    # a session that entered but whose ready has not gone out yet is left out: the
    # message will be in its ready
    late = chat.open("late")
    chat.relay.login(late, Hello(name="late"))  # Authenticate pending: not in the room
    assert chat.relay.complete(Relayed(msg))[0].targets == (alice,)  # type: ignore[union-attr]


def test_resume_of_a_ghost_checks_the_token_digest_and_takes_it_over() -> None:
    chat = cluster_chat()
    chat.login("alice")
    ghost(chat, "bob", digest=token_digest("secret-token"))
    wrong = chat.open("wrong")
    try:
        chat.relay.login(wrong, Hello(name="bob", resume="not-it"))
    except Exception as exc:
        assert getattr(exc, "code", None) == "name_taken"
    else:
        raise AssertionError("a wrong token took a session over")
    new = chat.open("bob-new")
    effects = chat.relay.login(new, Hello(name="bob", resume="secret-token"))
    closes = [e for e in effects if isinstance(e, Close)]
    assert len(closes) == 1 and closes[0].error is not None
    assert closes[0].error.code == "replaced" and closes[0].session.node == "n2"
    # the room sees no leave and no join; bob is local now
    assert not [e for e in effects if isinstance(e, Delivery) and e.targets]
    assert chat.relay.users[name_key("bob")] is new and new.node is None


def test_hand_over_turns_a_local_session_into_a_ghost_quietly() -> None:
    chat = cluster_chat()
    alice = chat.login("alice")
    bob = chat.login("bob")
    effects = ghost(chat, "bob", node="n3")  # bob resumed on n3
    closes = [e for e in effects if isinstance(e, Close)]
    assert [c.session for c in closes] == [bob]
    assert closes[0].error == Error(
        code="replaced", message="this session was resumed by another connection"
    )
    ghost_bob = chat.relay.users[name_key("bob")]
    assert ghost_bob.node == "n3" and ghost_bob is not bob
    assert not [e for e in effects if isinstance(e, Delivery) and alice in e.targets]
    assert chat.relay.welcome().users == ["alice", "bob"]


def test_an_operators_mute_is_shared_for_every_node_and_applied_from_others() -> None:
    chat = cluster_chat()
    chat.relay.shared_mutes = deque()
    alice = chat.login("alice")
    alice.op = True
    ghost(chat, "bob")
    chat.handle(alice, Mute(name="bob", minutes=5))
    assert chat.relay.shared_mutes == deque([(name_key("bob"), 5)])
    # a mute received from another node applies here and is not shared again
    carol = chat.login("carol")
    chat.relay.shared_mutes.clear()
    chat.relay.mute(name_key("carol"), 1)
    assert chat.refuse(carol, Say(text="hi")).code == "muted"
    assert chat.relay.shared_mutes == deque()


def _line(shape_id: int, sender: str = "alice") -> Drawn:
    shape = Shape(kind="line", points=((1.0, 1.0), (5.0, 5.0)), color="#112233", width=2)
    return Drawn(id=shape_id, room="lobby", from_=sender, shape=shape, ts=1.0)


def test_boards_settle_the_same_on_every_node() -> None:
    one, two = RoomBoard(), RoomBoard()
    changes = [
        _line(3),
        _line(9, "bob"),
        Moved(room="lobby", id=3, dx=2000.0, dy=0.0, by="alice", ts=2.0),
        Erased(room="lobby", id=9, by="bob", ts=3.0),
        Erased(room="lobby", id=9, by="bob", ts=3.0),  # already gone: nothing
        _line(12, "bob"),
        Cleared(room="lobby", by="bob", all=False, ts=4.0),
    ]
    settled = [one.settle(c, name_key, own=False) for c in changes]
    assert [two.settle(c, name_key, own=False) for c in changes] == settled
    assert settled[4] is None
    moved = settled[2]
    assert isinstance(moved, Moved) and moved.dx == 995.0  # clamped at the edge
    assert list(one.committed.shapes) == [3] == list(two.committed.shapes)
    assert one.committed.shapes[3].shape.points[1][0] == 1000.0


def test_a_relayed_draw_gets_its_place_as_id_and_reaches_ready_members() -> None:
    chat = cluster_chat()
    alice = chat.login("alice")
    out = chat.relay.complete(RelayedBoard(_line(0, "bob"), 41))
    (delivery,) = out
    assert isinstance(delivery, Delivery) and delivery.targets == (alice,)
    assert isinstance(delivery.event, Drawn) and delivery.event.id == 41
    assert [s.id for s in chat.relay.board("lobby").committed.in_order()] == [41]
