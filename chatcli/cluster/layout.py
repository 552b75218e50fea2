"""Where the cluster keeps things in NATS: the names every node and tool agree on.

One module holds the layout (docs/architecture.md, "cluster"), so that ``serve --cluster``,
``chatcli cluster`` and the tests cannot drift apart:

- JetStream stream :data:`MSGS_STREAM` holds every room's messages on
  ``chatcli.msg.<room>`` and its whiteboard's changes on ``chatcli.board.<room>``: one
  stream, so that one ordered feed gives every node one order of both; a message's id is
  its stream sequence.
- Key-value buckets: :data:`NODES_BUCKET` (one :class:`chatcli.cluster.nodes.NodeInfo`
  per live node, key = node name), :data:`PRESENCE_BUCKET`, :data:`ACCOUNTS_BUCKET`,
  :data:`BANS_BUCKET`.
- Core NATS subjects ``chatcli.node.<node>.>`` carry what is forwarded to one node.
- A node puts its registry entry every :data:`HEARTBEAT` seconds; one not seen for
  :data:`NODE_TIMEOUT` seconds is dead.

Room names (``[a-z0-9_-]{1,32}``) and node names (``[A-Za-z0-9_-]{1,32}``) are valid
subject tokens and KV keys as they are; anything else that becomes a key (a user's name,
in any script) goes through :func:`kv_key`, which is reversible (:func:`kv_text`).
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Final

__all__ = [
    "ACCOUNTS_BUCKET",
    "BANS_BUCKET",
    "BOARD_SUBJECTS",
    "HEARTBEAT",
    "MSGS_STREAM",
    "MSG_SUBJECTS",
    "NODES_BUCKET",
    "NODE_SUBJECTS",
    "NODE_TIMEOUT",
    "PRESENCE_BUCKET",
    "SUBJECT_PREFIX",
    "board_subject",
    "kv_key",
    "kv_text",
    "msg_subject",
    "node_subject",
    "room_of",
    "valid_node_name",
    "valid_room",
]

#: first token of every chatcli subject
SUBJECT_PREFIX: Final = "chatcli"

#: JetStream stream of room messages, and the subjects it captures
MSGS_STREAM: Final = "CHATCLI_MSGS"
MSG_SUBJECTS: Final = f"{SUBJECT_PREFIX}.msg.>"
#: the subjects of whiteboard changes (in the same stream, for one order)
BOARD_SUBJECTS: Final = f"{SUBJECT_PREFIX}.board.>"
#: core NATS subjects forwarded to one node (DMs, closes): ``chatcli.node.<node>.>``
NODE_SUBJECTS: Final = f"{SUBJECT_PREFIX}.node.>"

#: key-value buckets
NODES_BUCKET: Final = "chatcli_nodes"
PRESENCE_BUCKET: Final = "chatcli_presence"
ACCOUNTS_BUCKET: Final = "chatcli_accounts"
BANS_BUCKET: Final = "chatcli_bans"

#: seconds between two puts of a node's registry entry
HEARTBEAT: Final = 2.0
#: a registry entry not refreshed for this many seconds is a dead node
NODE_TIMEOUT: Final = 10.0

_ROOM: Final = re.compile(r"[a-z0-9_-]{1,32}")
_NODE: Final = re.compile(r"[A-Za-z0-9_-]{1,32}")
_KEY: Final = re.compile(r"[a-z2-7]+")


def valid_room(room: str) -> bool:
    """Whether ``room`` is a room name, hence one safe subject token."""
    return _ROOM.fullmatch(room) is not None


def valid_node_name(name: str) -> bool:
    """Whether ``name`` can name a node: ``[A-Za-z0-9_-]{1,32}`` (a subject token, a key)."""
    return _NODE.fullmatch(name) is not None


def msg_subject(room: str) -> str:
    """``chatcli.msg.<room>``; ValueError for a string that is not a room name.

    The check matters: a "room" like ``a.>`` or ``*`` would be a wildcard, not a subject.
    """
    return f"{SUBJECT_PREFIX}.msg.{_room_token(room)}"


def board_subject(room: str) -> str:
    """``chatcli.board.<room>``; ValueError for a string that is not a room name."""
    return f"{SUBJECT_PREFIX}.board.{_room_token(room)}"


def node_subject(node: str, *tokens: str) -> str:
    """``chatcli.node.<node>[.<token>...]``: what is sent to one node (the lead's tokens).

    ValueError for a bad node name, and for a token that is empty or holds ``.``,
    ``*``, ``>`` or whitespace (it would change the subject's shape).
    """
    if not valid_node_name(node):
        raise ValueError(f"not a node name: {node!r}")
    for token in tokens:
        if not token or any(char in token for char in ".*> \t\r\n"):
            raise ValueError(f"not a subject token: {token!r}")
    return ".".join((SUBJECT_PREFIX, "node", node, *tokens))


def room_of(subject: str) -> str | None:
    """The room of a ``chatcli.msg.<room>`` or ``chatcli.board.<room>`` subject, else None."""
    prefix, _, rest = subject.partition(".")
    kind, _, room = rest.partition(".")
    if prefix != SUBJECT_PREFIX or kind not in ("msg", "board") or not valid_room(room):
        return None
    return room


def kv_key(text: str) -> str:
    """``text`` (any non-empty Unicode string) as a valid KV key, reversibly.

    Lowercase base32 of its UTF-8 bytes, without padding: only ``[a-z2-7]``, so no
    ``.``, wildcard or space can reach the key, and :func:`kv_text` gives the text back.
    A name's key is at most 8/5 of its UTF-8 length, rounded up.
    """
    if not text:
        raise ValueError("an empty string has no key")
    return base64.b32encode(text.encode("utf-8", "surrogatepass")).decode().rstrip("=").lower()


def kv_text(key: str) -> str:
    """The text :func:`kv_key` made ``key`` from; ValueError for anything else."""
    if not _KEY.fullmatch(key) or len(key) % 8 in (1, 3, 6):
        raise ValueError(f"not a chatcli key: {key!r}")
    padded = key.upper() + "=" * (-len(key) % 8)
    try:
        text = base64.b32decode(padded).decode("utf-8", "surrogatepass")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise ValueError(f"not a chatcli key: {key!r}") from exc
    if kv_key(text) != key:  # stray bits in the last character: not one we made
        raise ValueError(f"not a chatcli key: {key!r}")
    return text


def _room_token(room: str) -> str:
    if not valid_room(room):
        raise ValueError(f"not a room name: {room!r}")
    return room
