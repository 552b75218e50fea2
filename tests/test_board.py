"""The whiteboard (spec 1.1, section 4): shape rules, ids, ownership, bounds, ready.board.

Pure tests: the shape checker and the relay over a memory store, with no event loop.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from test_relay import Chat

from chatcli.core.board import Board, BoardWrite, RoomBoard, check_shape, moved
from chatcli.core.events import (
    Clear,
    Cleared,
    Draw,
    Drawn,
    Erase,
    Erased,
    Hello,
    Move,
    Moved,
    Ready,
    Shape,
)
from chatcli.core.protocol import JoinRoom, decode_client_frame, encode
from chatcli.core.relay import Delivery
from chatcli.errors import ProtocolError
from chatcli.store.pipeline import StorePipeline


def frame(shape: dict[str, Any]) -> bytes:
    data = json.dumps({"type": "draw", "shape": shape, "ref": "d1"})
    return data.replace("Infinity", "1e400").encode()  # a number JSON allows, too big


def checked(shape: dict[str, Any]) -> Shape:
    """Decode a draw frame and check its shape, as the relay does."""
    event = decode_client_frame(frame(shape))
    assert isinstance(event, Draw)
    return check_shape(event.shape, event.ref)


LINE = {"kind": "line", "points": [[0, 0], [1000, 1000]], "color": "#d62728", "width": 3}
GOOD = [
    LINE,
    {"kind": "pencil", "points": [[1, 2], [3, 4]], "color": "#000000", "width": 1},
    {"kind": "pencil", "points": [[5, 5]] * 2000, "color": "#ffffff", "width": 50},
    {"kind": "rect", "points": [[10.5, 20.25], [30, 40]], "color": "#ABCDEF", "width": 2.5},
    {"kind": "oval", "points": [[10, 20], [5, 5]], "color": "#123456", "width": 3},
    {"kind": "text", "points": [[500, 500]], "color": "#1f77b4", "width": 3, "text": "hi"},
    {"kind": "text", "points": [[0, 1000]], "color": "#1f77b4", "width": 3, "text": "x" * 200},
    {"kind": "line", "points": [[0, 0], [1, 1]], "color": "#1f77b4"},  # width defaults to 3
]
BAD = {
    "unknown kind": {**LINE, "kind": "star"},
    "pencil with one point": {**LINE, "kind": "pencil", "points": [[1, 1]]},
    "pencil with 2001 points": {**LINE, "kind": "pencil", "points": [[1, 1]] * 2001},
    "line with 3 points": {**LINE, "points": [[1, 1], [2, 2], [3, 3]]},
    "rect with 1 point": {**LINE, "kind": "rect", "points": [[1, 1]]},
    "oval with 3 points": {**LINE, "kind": "oval", "points": [[1, 1]] * 3},
    "text with 2 points": {**LINE, "kind": "text", "points": [[1, 1]] * 2, "text": "a"},
    "text without text": {**LINE, "kind": "text", "points": [[1, 1]]},
    "text empty": {**LINE, "kind": "text", "points": [[1, 1]], "text": ""},
    "text only controls": {**LINE, "kind": "text", "points": [[1, 1]], "text": "\x1b[2J\x07"},
    "text 201 chars": {**LINE, "kind": "text", "points": [[1, 1]], "text": "x" * 201},
    "line with text": {**LINE, "text": "no"},
    "x below 0": {**LINE, "points": [[-0.1, 0], [1, 1]]},
    "y above 1000": {**LINE, "points": [[0, 0], [1, 1000.5]]},
    "coordinate a string": {**LINE, "points": [["1", 0], [1, 1]]},
    "coordinate a boolean": {**LINE, "points": [[True, 0], [1, 1]]},
    "coordinate null": {**LINE, "points": [[None, 0], [1, 1]]},
    "point of 3 numbers": {**LINE, "points": [[1, 2, 3], [1, 1]]},
    "point of 1 number": {**LINE, "points": [[1], [1, 1]]},
    "points not a list": {**LINE, "points": "0,0 1,1"},
    "colour name": {**LINE, "color": "red"},
    "colour short": {**LINE, "color": "#fff"},
    "colour not hex": {**LINE, "color": "#gggggg"},
    "colour with newline": {**LINE, "color": "#000000\n"},
    "width 0": {**LINE, "width": 0},
    "width 51": {**LINE, "width": 51},
    "width a string": {**LINE, "width": "3"},
    "no colour": {k: v for k, v in LINE.items() if k != "color"},
    "no points": {k: v for k, v in LINE.items() if k != "points"},
    "kind not a string": {**LINE, "kind": 3},
}


@pytest.mark.parametrize("shape", GOOD, ids=lambda s: f"{s['kind']}-{len(s['points'])}")
def test_shapes_within_the_rules_are_kept(shape: dict[str, Any]) -> None:
    kept = checked(shape)
    assert kept.kind == shape["kind"]
    assert kept.points == tuple(tuple(p) for p in shape["points"])
    assert kept.color == shape["color"].lower()


@pytest.mark.parametrize("shape", BAD.values(), ids=list(BAD))
def test_anything_else_is_a_bad_request(shape: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError) as info:
        checked(shape)
    assert info.value.code == "bad_request"
    assert info.value.ref == "d1"


def test_a_number_too_big_for_a_double_is_a_bad_request() -> None:
    with pytest.raises(ProtocolError) as info:
        checked({**LINE, "points": [[float("inf"), 0], [1, 1]]})
    assert info.value.code == "bad_request"  # refused by the JSON decoder itself


def test_text_is_cleaned_like_message_text() -> None:
    shape = {**LINE, "kind": "text", "points": [[1, 1]], "text": "\x1b[31mred\x1b[0m\u202e!"}
    assert checked(shape).text == "red!"


def test_a_move_is_clamped_at_the_edges() -> None:
    shape = Shape(kind="rect", points=((100.0, 100.0), (300.0, 200.0)), color="#000000")
    assert moved(shape, 10, -5) == (
        msgspec.structs.replace(shape, points=((110.0, 95.0), (310.0, 195.0))),
        10,
        -5,
    )
    far, dx, dy = moved(shape, 5000, -5000)
    assert (dx, dy) == (700, -100)
    assert far.points == ((800.0, 0.0), (1000.0, 100.0))


def test_board_write_applies_alike_everywhere() -> None:
    shape = Shape(kind="line", points=((0.0, 0.0), (1.0, 1.0)), color="#000000")
    one = Drawn(id=1, room="r", from_="a", shape=shape, ts=1.0)
    two = Drawn(id=2, room="r", from_="a", shape=shape, ts=1.0)
    board = Board()
    board.apply(BoardWrite("r", put=[one, two], next_id=3))
    board.apply(BoardWrite("r", delete=[1, 99], next_id=3))
    assert board.in_order() == [two] and board.next_id == 3
    assert Board([two], next_id=1).next_id == 3  # never below the ids it holds


def test_a_failed_write_is_dropped_from_the_projection_only() -> None:
    shape = Shape(kind="line", points=((0.0, 0.0), (1.0, 1.0)), color="#000000")
    room = RoomBoard()
    first = room.draw("r", "a", shape, 1.0, None)
    room.write(first)
    second = room.draw("r", "a", shape, 1.0, None)
    room.write(second)
    assert [d.id for d in room.projected.in_order()] == [1, 2]
    room.fail(first)
    assert [d.id for d in room.projected.in_order()] == [2]
    assert room.commit(second)
    assert [d.id for d in room.committed.in_order()] == [2]


# -- the relay ----------------------------------------------------------------------------


def line(x: float = 10, y: float = 10) -> Shape:
    return Shape(kind="line", points=((x, y), (x + 100, y + 50)), color="#d62728", width=3)


def draw(chat: Chat, session: Any, shape: Shape | None = None, ref: str = "d") -> Drawn:
    out = chat.handle(session, Draw(shape=shape or line(), ref=ref))
    ack = out[session.link][-1]
    assert isinstance(ack, Drawn), out
    return ack


def test_draws_get_increasing_ids_and_reach_every_member_the_sender_with_its_ref() -> None:
    chat = Chat()
    alice, bob = chat.login("alice"), chat.login("bob")
    out = chat.handle(alice, Draw(shape=line(), ref="d1"))
    ack, seen = out["alice"][0], out["bob"][0]
    assert isinstance(ack, Drawn) and isinstance(seen, Drawn)
    assert (ack.id, ack.room, ack.from_, ack.ref) == (1, "lobby", "alice", "d1")
    assert seen == msgspec.structs.replace(ack, ref=None)
    assert draw(chat, bob).id == 2
    assert draw(chat, alice).id == 3
    # ids are per room
    chat.handle(bob, JoinRoom(room="dev"))
    assert draw(chat, bob).id == 1


def test_a_late_joiner_gets_the_board_in_id_order_with_latest_positions() -> None:
    chat = Chat()
    alice = chat.login("alice")
    first, second, third = draw(chat, alice), draw(chat, alice, line(500, 500)), draw(chat, alice)
    chat.handle(alice, Move(id=second.id, dx=1000, dy=-20))
    chat.handle(alice, Erase(id=first.id))
    carol = chat.open("carol")
    delivered = chat.logs_in(carol, Hello(name="carol"))
    ready = next(d.event for d in delivered if isinstance(d.event, Ready))
    assert [d.id for d in ready.board] == [second.id, third.id]
    assert ready.board[0].shape.points == ((900.0, 480.0), (1000.0, 530.0))
    assert ready.board[1] == msgspec.structs.replace(third, ref=None)
    assert b'"board":[' in encode(ready)


def test_erasing_or_moving_anothers_shape_is_forbidden_but_operators_may() -> None:
    chat = Chat()
    alice, bob = chat.login("alice"), chat.login("bob")
    shape = draw(chat, alice)
    for event in (Erase(id=shape.id, ref="e"), Move(id=shape.id, dx=1, dy=1, ref="m")):
        refused = chat.refuse(bob, event)
        assert refused.code == "forbidden" and refused.ref == event.ref
    assert chat.refuse(bob, Clear(all=True)).code == "forbidden"
    out = chat.handle(alice, Move(id=shape.id, dx=5, dy=5, ref="m"))
    assert out["bob"] == [Moved(room="lobby", id=shape.id, dx=5, dy=5, by="alice", ts=chat.clock.t)]
    bob.op = True
    out = chat.handle(bob, Erase(id=shape.id))
    assert out["alice"] == [Erased(room="lobby", id=shape.id, by="bob", ts=chat.clock.t)]
    assert chat.refuse(alice, Erase(id=shape.id)).code == "bad_request"  # gone


def test_clear_removes_ones_own_shapes_and_all_for_operators() -> None:
    chat = Chat()
    alice, bob = chat.login("alice"), chat.login("bob")
    draw(chat, alice), draw(chat, bob), draw(chat, alice)
    out = chat.handle(alice, Clear())
    assert out["bob"] == [Cleared(room="lobby", by="alice", all=False, ts=chat.clock.t)]
    assert b'"all":false' in encode(out["bob"][0])  # always said, even when false
    assert [d.from_ for d in chat.relay.board("lobby").committed.in_order()] == ["bob"]
    bob.op = True
    chat.handle(bob, Clear(all=True))
    assert len(chat.relay.board("lobby").committed) == 0


def test_a_full_board_refuses_draws_with_board_full() -> None:
    chat = Chat(max_shapes=3)
    alice = chat.login("alice")
    for _ in range(3):
        draw(chat, alice)
    refused = chat.refuse(alice, Draw(shape=line(), ref="full"))
    assert (refused.code, refused.ref) == ("board_full", "full")
    chat.handle(alice, Erase(id=1))
    assert draw(chat, alice).id == 4  # ids never come back


def test_draws_cost_flood_tokens_and_muted_users_cannot_draw() -> None:
    chat = Chat(rate_limit=1, rate_burst=2)
    alice = chat.login("alice")
    draw(chat, alice), draw(chat, alice)
    assert chat.refuse(alice, Draw(shape=line())).code == "rate_limited"
    assert chat.refuse(alice, Erase(id=1)).code == "rate_limited"
    chat.clock.advance(10)
    chat.relay._mutes[alice.key or ""] = chat.relay.monotonic() + 60
    assert chat.refuse(alice, Draw(shape=line(), ref="x")).code == "muted"


def test_board_frames_before_login_are_refused() -> None:
    chat = Chat()
    session = chat.open("x")
    with pytest.raises(ProtocolError) as info:
        chat.relay.handle(session, Draw(shape=line()))
    assert info.value.code == "not_logged_in"


def _later_chat(fail: str | None = None) -> tuple[Chat, Any]:
    from test_store_pipeline import LaterStore

    from chatcli.core.intents import BoardChange

    chat = Chat()
    store = LaterStore(lambda intent: fail if isinstance(intent, BoardChange) else None)
    chat.pipeline = StorePipeline(chat.relay, store)  # type: ignore[arg-type]
    return chat, store


def _logged_in(chat: Chat, store: Any, name: str) -> Any:
    session = chat.open(name)
    chat.logs_in(session, Hello(name=name))
    store.answer()
    chat.pipeline.drain()
    assert session.room == "lobby"
    return session


def test_a_change_waits_for_the_store_before_anyone_sees_it() -> None:
    chat, store = _later_chat()
    alice, _bob = _logged_in(chat, store, "alice"), _logged_in(chat, store, "bob")
    assert chat.run(chat.relay.handle(alice, Draw(shape=line(), ref="1"))) == []
    assert len(chat.relay.board("lobby").committed) == 0
    assert len(chat.relay.board("lobby").projected) == 1
    store.answer()
    delivered = chat.pipeline.drain()
    assert {t.link for d in delivered for t in d.targets} == {"alice", "bob"}  # type: ignore[union-attr]
    assert [type(d.event) for d in delivered if isinstance(d, Delivery)] == [Drawn]
    assert len(chat.relay.board("lobby").committed) == 1


def test_a_change_the_store_cannot_keep_is_shown_to_nobody() -> None:
    chat, store = _later_chat(fail="the disk is full")
    alice, _bob = _logged_in(chat, store, "alice"), _logged_in(chat, store, "bob")
    assert chat.run(chat.relay.handle(alice, Draw(shape=line(), ref="1"))) == []
    store.answer()
    delivered = chat.pipeline.drain()
    assert len(delivered) == 1 and isinstance(delivered[0], Delivery)
    assert [t.link for t in delivered[0].targets] == ["alice"]
    assert delivered[0].event.code == "unavailable"  # type: ignore[union-attr]
    assert delivered[0].event.ref == "1"  # type: ignore[union-attr]
    board = chat.relay.board("lobby")
    assert len(board.projected) == 0 and len(board.committed) == 0


def test_coordinates_are_kept_to_a_hundredth() -> None:
    shape = checked({**LINE, "points": [[1.23456, 999.999], [0.004, 3]]})
    assert shape.points == ((1.23, 1000.0), (0.0, 3.0))
    moved_shape, dx, dy = moved(shape, 0.1 + 0.2, -0.123)
    assert (dx, dy) == (0.3, -0.12)
    assert all(len(repr(c)) <= 7 for point in moved_shape.points for c in point)


def test_kept_shapes_are_out_of_the_garbage_collectors_sight() -> None:
    """A relay keeps up to 10,000 shapes a room for as long as it runs: none of them may
    lengthen a full collection (which stops the loop), whether drawn by a client or read
    back from a store or a transcript."""
    import gc

    chat = Chat()
    alice = chat.login("alice")
    stroke = {"kind": "pencil", "points": [[1, 2], [3, 4.5], [5, 6]], "color": "#000000"}
    event = decode_client_frame(frame(stroke))
    assert isinstance(event, Draw)
    draw(chat, alice, event.shape)
    kept = chat.relay.board("lobby").committed.shapes[1]
    read_back = msgspec.json.decode(encode(kept), type=Drawn)
    # CPython stops tracking a tuple of untracked things when a collection meets it: the
    # first collection the points, the next the tuple of them (as gen 0 then gen 1 do)
    gc.collect()
    gc.collect()
    for drawn in (kept, read_back):
        assert drawn.shape.points == ((1.0, 2.0), (3.0, 4.5), (5.0, 6.0))
        assert not any(map(gc.is_tracked, (drawn, drawn.shape, drawn.shape.points)))


def test_a_board_bigger_than_its_byte_bound_refuses_draws() -> None:
    from chatcli.core.board import encoded_size

    chat = Chat(max_board_bytes=3000)
    alice = chat.login("alice")
    stroke = Shape(kind="pencil", points=((1.5, 2.5),) * 60, color="#000000")
    first = draw(chat, alice, stroke)
    size = encoded_size(msgspec.structs.replace(first, ref=None))
    assert chat.relay.board("lobby").committed.size == size
    while chat.relay.board("lobby").projected.size + size <= 3000:
        draw(chat, alice, stroke)
    refused = chat.refuse(alice, Draw(shape=stroke, ref="big"))
    assert (refused.code, refused.ref) == ("board_full", "big")
    chat.handle(alice, Erase(id=first.id))
    assert chat.relay.board("lobby").committed.size <= 3000 - size
    draw(chat, alice, stroke)  # room again
    ready_size = len(
        encode(
            Ready(
                name="x",
                room="lobby",
                users=[],
                history=[],
                board=chat.relay.board("lobby").committed.in_order(),
            )
        )
    )
    assert ready_size < 3000 + 200
