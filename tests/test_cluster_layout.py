"""The cluster's names in NATS (layout) and the node registry's record (nodes)."""

from __future__ import annotations

import json
import string

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatcli.cluster.layout import (
    HEARTBEAT,
    NODE_TIMEOUT,
    board_subject,
    kv_key,
    kv_text,
    msg_subject,
    node_subject,
    room_of,
    valid_node_name,
    valid_room,
)
from chatcli.cluster.nodes import (
    DamagedNodeInfo,
    NodeInfo,
    NodeList,
    decode_node,
    encode_node,
    is_alive,
    liveness,
)

#: what NATS accepts in a key-value key (nats-py's own check)
KV_KEY_CHARS = set(string.ascii_letters + string.digits + "-_=./")

ENTRY = {
    "node": "n1",
    "pid": 12,
    "host": "box",
    "started": 100.0,
    "seen": 200.5,
    "listen": ["127.0.0.1:7001", "[::1]:7001"],
    "web": None,
    "users": 3,
    "rooms": 1,
    "version": "0.1.0",
    "state": "ok",
}


def test_subjects() -> None:
    assert msg_subject("lobby") == "chatcli.msg.lobby"
    assert board_subject("dev-ops_2") == "chatcli.board.dev-ops_2"
    assert node_subject("n1") == "chatcli.node.n1"
    assert node_subject("n1", "dm") == "chatcli.node.n1.dm"
    assert room_of("chatcli.msg.lobby") == room_of("chatcli.board.lobby") == "lobby"
    assert room_of("chatcli.node.n1") is None and room_of("other.msg.lobby") is None


@pytest.mark.parametrize("room", ["", "a.b", ">", "*", "Lobby", "a b", "x" * 33, "é"])
def test_subjects_refuse_what_is_not_a_room(room: str) -> None:
    """A wildcard or a dot would change the subject's shape: refused, never built."""
    assert not valid_room(room)
    with pytest.raises(ValueError, match="not a room name"):
        msg_subject(room)
    with pytest.raises(ValueError, match="not a room name"):
        board_subject(room)


def test_node_names() -> None:
    assert valid_node_name("n1") and valid_node_name("Node_2-b") and valid_node_name("x" * 32)
    for bad in ("", "x" * 33, "a.b", "a b", "a>", "é", "a\n"):
        assert not valid_node_name(bad)
        with pytest.raises(ValueError):
            node_subject(bad)
    for token in ("", "a.b", "*", ">", "a b"):
        with pytest.raises(ValueError, match="not a subject token"):
            node_subject("n1", token)


def test_timings() -> None:
    assert (HEARTBEAT, NODE_TIMEOUT) == (2.0, 10.0)


@given(st.text(min_size=1, max_size=64))
def test_kv_key_is_valid_and_reversible(text: str) -> None:
    key = kv_key(text)
    assert set(key) <= set("abcdefghijklmnopqrstuvwxyz234567")
    assert set(key) <= KV_KEY_CHARS and not key.startswith(".")
    assert kv_text(key) == text


def test_kv_key_examples() -> None:
    assert kv_key("alice") == "mfwgsy3f"
    assert kv_key("a") == "me"  # "mf" decodes to "a" too, with stray bits: refused below
    assert kv_key("Alice") != kv_key("alice")  # the caller folds case if it wants to
    assert kv_text(kv_key("名前 ✓")) == "名前 ✓"
    with pytest.raises(ValueError):
        kv_key("")
    for bad in ("", "MFWGSY3F", "mfwgsy3f=", "a", "mfw", "mf", "18"):
        with pytest.raises(ValueError, match="not a chatcli key"):
            kv_text(bad)


def test_node_info_round_trip() -> None:
    info = decode_node(json.dumps(ENTRY).encode())
    assert info.listen == ("127.0.0.1:7001", "[::1]:7001")
    assert json.loads(encode_node(info)) == ENTRY
    assert list(NodeInfo.__struct_fields__) == list(ENTRY)


def test_node_info_ignores_unknown_fields() -> None:
    """A newer node may add fields: its entry still reads."""
    info = decode_node(json.dumps({**ENTRY, "zone": "eu"}).encode())
    assert info.node == "n1"


@pytest.mark.parametrize(
    "change",
    [
        {"node": "a.b"},
        {"node": ""},
        {"pid": "12"},
        {"users": -1},
        {"state": "fine"},
        {"listen": "127.0.0.1:7001"},
        {"seen": None},
    ],
)
def test_damaged_entries_are_refused(change: dict[str, object]) -> None:
    with pytest.raises(DamagedNodeInfo):
        decode_node(json.dumps({**ENTRY, **change}).encode())


@pytest.mark.parametrize("data", [b"", b"{", b"[]", b"null", json.dumps({"node": "n1"}).encode()])
def test_undecodable_entries_are_refused(data: bytes) -> None:
    with pytest.raises(DamagedNodeInfo):
        decode_node(data)


def test_liveness() -> None:
    info = msgspec.convert(ENTRY, NodeInfo)
    seen = info.seen
    assert [liveness(info, seen + age) for age in (-5, 0, 4, 4.1, 10, 10.1)] == [
        "alive", "alive", "alive", "stale", "stale", "dead"
    ]  # fmt: skip
    assert is_alive(info, seen + 10) and not is_alive(info, seen + 10.1)


def test_node_list_is_sorted_and_counts() -> None:
    b = msgspec.convert({**ENTRY, "node": "b"}, NodeInfo)
    a = msgspec.convert({**ENTRY, "node": "a"}, NodeInfo)
    nodes = NodeList([b, a], damaged=2)
    assert [info.node for info in nodes] == ["a", "b"]
    assert (nodes.damaged, nodes.bucket) == (2, True)
    assert NodeList([], bucket=False).bucket is False
