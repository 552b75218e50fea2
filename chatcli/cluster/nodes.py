"""The node registry: what each node of a cluster says about itself in ``chatcli_nodes``.

Every node puts a :class:`NodeInfo` (JSON) under its name every
:data:`~chatcli.cluster.layout.HEARTBEAT` seconds and deletes it when it stops cleanly;
an entry whose ``seen`` is older than :data:`~chatcli.cluster.layout.NODE_TIMEOUT` is a
dead node. Entries are written by other processes, possibly other versions, possibly
damaged: :func:`decode_node` checks them, and :func:`read_nodes` skips and counts the
ones it cannot read rather than failing the whole listing.

``seen`` and ``started`` are the writing node's wall clock (unix seconds), so an age
computed on another machine includes the clock difference between the two; ages below
zero (a clock ahead of ours) count as zero.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

import msgspec

from chatcli.cluster.layout import HEARTBEAT, NODE_TIMEOUT, NODES_BUCKET

__all__ = [
    "STALE_AFTER",
    "DamagedNodeInfo",
    "Liveness",
    "NodeInfo",
    "NodeList",
    "decode_node",
    "encode_node",
    "is_alive",
    "liveness",
    "read_nodes",
]

#: a node that missed this many seconds of heartbeats (two) is shown as stale
STALE_AFTER: Final = 2 * HEARTBEAT
#: bound on reading the whole registry (seconds), so a listing never hangs
READ_TIMEOUT: Final = 5.0

Liveness = Literal["alive", "stale", "dead"]

_NodeName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,32}$")]
_Count = Annotated[int, msgspec.Meta(ge=0)]


class NodeInfo(msgspec.Struct, frozen=True):
    """One node's registry entry (cluster.md): who it is, where it listens, how busy it is."""

    #: the node's name, also its key in the bucket
    node: _NodeName
    #: its process id on ``host``
    pid: int
    #: the machine's host name
    host: str
    #: when the node started (unix seconds, its clock)
    started: float
    #: its last heartbeat (unix seconds, its clock)
    seen: float
    #: TCP addresses clients connect to, as ``host:port``
    listen: tuple[str, ...]
    #: the web page's URL, or None without ``--web``
    web: str | None
    #: local sessions logged in
    users: _Count
    #: rooms with local members
    rooms: _Count
    #: chatcli version of the node
    version: str
    #: "ok", or "unavailable" while the node cannot store new messages
    state: Literal["ok", "unavailable"]


class DamagedNodeInfo(ValueError):
    """A registry entry that is not a NodeInfo (bad JSON, a field missing or of a wrong type)."""


_encoder: Final = msgspec.json.Encoder()
_decoder: Final = msgspec.json.Decoder(NodeInfo)


def encode_node(info: NodeInfo) -> bytes:
    """The JSON a node puts under its name."""
    return _encoder.encode(info)


def decode_node(data: bytes) -> NodeInfo:
    """A registry entry's value as a NodeInfo; DamagedNodeInfo when it is not one.

    Unknown fields are ignored, so a newer node's entry still reads.
    """
    try:
        return _decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise DamagedNodeInfo(str(exc)) from exc


def is_alive(info: NodeInfo, now: float) -> bool:
    """Whether the node has put its entry within NODE_TIMEOUT of ``now`` (unix seconds)."""
    return now - info.seen <= NODE_TIMEOUT


def liveness(info: NodeInfo, now: float) -> Liveness:
    """ "alive" (heartbeats on time), "stale" (late, not yet dead) or "dead"."""
    age = now - info.seen
    if age > NODE_TIMEOUT:
        return "dead"
    return "stale" if age > STALE_AFTER else "alive"


class NodeList(list[NodeInfo]):
    """The entries :func:`read_nodes` could read, sorted by node name.

    ``damaged`` counts the entries it skipped; ``bucket`` is False when the registry
    bucket does not exist (no node has ever run against this NATS).
    """

    def __init__(self, nodes: list[NodeInfo], *, damaged: int = 0, bucket: bool = True) -> None:
        super().__init__(sorted(nodes, key=lambda info: info.node))
        self.damaged = damaged
        self.bucket = bucket


async def read_nodes(js: Any, timeout: float = READ_TIMEOUT) -> NodeList:
    """Every node's current entry in the ``chatcli_nodes`` bucket of JetStream ``js``.

    ``js`` is a ``nats.js.JetStreamContext``. A missing bucket gives an empty list with
    ``bucket=False``; an entry that does not decode, or whose ``node`` is not its key,
    is skipped and counted in ``damaged``. NATS errors (not connected, timeouts)
    propagate: the caller says what they mean to its user.
    """
    from nats.js.errors import BucketNotFoundError

    try:
        kv = await js.key_value(NODES_BUCKET)
    except BucketNotFoundError:
        return NodeList([], bucket=False)
    nodes: list[NodeInfo] = []
    damaged = 0
    # one ordered watcher delivers the last value of every key, then None: one round
    # trip for the whole registry instead of a get per key
    watcher = await kv.watchall(ignore_deletes=True)
    try:
        while (entry := await watcher.updates(timeout)) is not None:
            try:
                info = decode_node(entry.value or b"")
            except DamagedNodeInfo:
                damaged += 1
                continue
            if info.node != entry.key:
                damaged += 1
                continue
            nodes.append(info)
    finally:
        await watcher.stop()
    return NodeList(nodes, damaged=damaged)
