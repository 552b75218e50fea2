"""Who is online across a cluster: name claims and presence in a key-value bucket.

Each logged-in user has an entry ``u.<name key>`` in the presence bucket (its node, name,
room, operator flag, the digest of its resume token, ``state`` ``on``/``off``) and a claim
``a.<look-alike key>``; both keys are taken with the bucket's *create*, so two nodes
cannot give one name (or two look-alikes) to two people. Every node watches the bucket
and mirrors other nodes' users into its relay as *ghost* sessions (``Relay.ghost``), so
``welcome``, ``who``, ``rooms`` and name checks are cluster-wide, and their joins,
leaves and renames reach its own members.

A node publishes its own users' changes (``Relay.presence`` notes) in order, retrying
while NATS is away. Nodes heartbeat in the registry (chatcli.cluster.nodes); a node not
heard from for :data:`~chatcli.cluster.layout.NODE_TIMEOUT` seconds is dead: every other
node announces its users' ``leave`` (``lost``) to its own members and frees their names.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, Final, Literal

import msgspec
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

from chatcli.cluster.layout import NODE_TIMEOUT, PRESENCE_BUCKET, kv_key
from chatcli.core.relay import Effect, PresenceNote, Relay, token_digest

__all__ = ["Presence", "UserEntry"]

log = logging.getLogger("chatcli.server")

#: seconds between two retries of a presence write NATS did not take
RETRY: Final = 0.5


class UserEntry(msgspec.Struct, frozen=True, omit_defaults=True):
    """A user's presence entry (``u.<kv_key(name key)>``)."""

    node: str
    name: str
    key: str
    alike: str
    state: Literal["claim", "on", "off"]
    room: str | None = None
    op: bool = False
    account: str | None = None
    digest: str | None = None
    was: str | None = None
    reason: str | None = None


class _Claim(msgspec.Struct, frozen=True):
    """A look-alike key's claim (``a.<kv_key(alike key)>``): whose it is."""

    node: str
    key: str


_decode_user: Final = msgspec.json.Decoder(UserEntry)
_decode_claim: Final = msgspec.json.Decoder(_Claim)
_encode: Final = msgspec.json.encode


def _user_key(key: str) -> str:
    return "u." + kv_key(key)


def _alike_key(alike: str) -> str:
    return "a." + kv_key(alike)


class Presence:
    """This node's side of the cluster's presence; see the module doc."""

    def __init__(self, node: str, relay: Relay, apply: Callable[[list[Effect]], None]) -> None:
        self.node = node
        self.relay = relay
        #: hands the relay's effects to the hub (deliveries of joins, leaves, closes)
        self.apply = apply
        self.kv: Any = None
        self._notes: asyncio.Queue[PresenceNote] = asyncio.Queue()
        #: notes taken from the queue and not written yet
        self._writing = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._watcher: Any = None
        self._mirroring: asyncio.Task[None] | None = None
        #: other nodes: when this node last heard of them (monotonic seconds)
        self.heard: dict[str, float] = {}
        #: nodes found dead (their users announced gone)
        self.dead: set[str] = set()

    async def open(self, bucket: Callable[[str], Any]) -> None:
        """Open the bucket, forget this node's previous life, mirror the others."""
        self.kv = await bucket(PRESENCE_BUCKET)
        await self._forget_own()
        self._watcher = await self.kv.watchall()
        loop = asyncio.get_running_loop()
        self._mirroring = loop.create_task(self._mirror(self._watcher))
        self._tasks.append(loop.create_task(self._publish()))

    async def rewatch(self) -> None:
        """After NATS came back: mirror the bucket afresh (a restarted server forgot the
        old watcher), and forget the ghosts whose entries went meanwhile."""
        old, self._watcher = self._watcher, None
        if self._mirroring is not None:
            self._mirroring.cancel()
        if old is not None:
            with contextlib.suppress(Exception):
                await old.stop()
        for _attempt in range(120):
            try:
                self._watcher = await self.kv.watchall()
                break
            except Exception as exc:  # JetStream still starting: retry
                log.debug("cluster: presence watcher not back yet: %s", exc)
                await asyncio.sleep(0.5)
        else:
            log.warning("cluster: the presence bucket could not be watched again")
            return
        self._mirroring = asyncio.get_running_loop().create_task(
            self._mirror(self._watcher, sweep=True)
        )

    async def _forget_own(self) -> None:
        """Entries of this node from before a restart: their users are gone (lost)."""
        try:
            keys = await self.kv.keys()
        except Exception:
            return
        for key in keys:
            entry = await self._get(key)
            if entry is None:
                continue
            value, revision = entry
            if key.startswith("u."):
                user = _decode_user.decode(value)
                if user.node == self.node:
                    await self._free(user, "lost", revision)
            elif _decode_claim.decode(value).node == self.node:
                await self._delete(key, revision)

    async def _get(self, key: str) -> tuple[bytes, int] | None:
        try:
            entry = await self.kv.get(key)
        except KeyNotFoundError:
            return None
        if not entry.value:
            return None
        return entry.value, entry.revision

    async def _delete(self, key: str, revision: int | None = None) -> None:
        # someone else wrote it since: it is theirs now, not ours to delete
        with contextlib.suppress(KeyWrongLastSequenceError):
            await self.kv.delete(key, last=revision)

    # -- claims (a login's Authenticate) -------------------------------------------------

    async def claim(self, name: str, keys: tuple[str, str]) -> str | None:
        """Take ``name``'s keys for a login here: None, or why it is taken elsewhere."""
        key, alike = keys
        claim = _encode(_Claim(self.node, key))
        if not await self._take(_alike_key(alike), claim):
            return f"the name {name!r} (or one like it) is in use"
        entry = UserEntry(self.node, name, key, alike, "claim")
        if not await self._take(_user_key(key), _encode(entry)):
            await self._release_alike(alike, key)
            return f"the name {name!r} is already in use"
        return None

    async def _take(self, key: str, value: bytes) -> bool:
        """Create ``key``, or take it over from this node, an ``off`` user or a dead node."""
        try:
            await self.kv.create(key, value)
            return True
        except KeyWrongLastSequenceError:
            pass
        found = await self._get(key)
        if found is None:
            try:
                await self.kv.create(key, value)
                return True
            except KeyWrongLastSequenceError:
                return False
        data, revision = found
        if key.startswith("u."):
            user = _decode_user.decode(data)
            owner, free = user.node, user.state == "off"
        else:
            owner, free = _decode_claim.decode(data).node, False
        if not (free or owner == self.node or owner in self.dead):
            return False
        try:
            await self.kv.update(key, value, last=revision)
            return True
        except KeyWrongLastSequenceError:
            return False

    async def _release_alike(self, alike: str, key: str) -> None:
        found = await self._get(_alike_key(alike))
        if found is not None and _decode_claim.decode(found[0]) == _Claim(self.node, key):
            await self._delete(_alike_key(alike), found[1])

    # -- publishing this node's changes --------------------------------------------------

    def take_notes(self) -> None:
        """Queue the relay's presence notes for publishing (called after every hub call)."""
        notes = self.relay.presence
        if not notes:
            return
        while notes:
            self._notes.put_nowait(notes.popleft())

    async def _publish(self) -> None:
        while True:
            note = await self._notes.get()
            self._writing = 1
            while True:
                try:
                    await self._write(note)
                    break
                except Exception as exc:
                    log.debug("cluster: presence write failed (%s); retrying", exc)
                    await asyncio.sleep(RETRY)
            self._writing = 0

    async def _write(self, note: PresenceNote) -> None:
        session = note.session
        if note.gone is None:
            # read the session once, before any await: a bye meanwhile changes it
            name, key, claim = session.name, session.key, session.claim
            if name is None or key is None or claim is None:
                return  # it logged out since: the note that says so follows
            entry = UserEntry(
                self.node,
                name,
                key,
                claim[1],
                "on",
                room=session.room,
                op=session.op,
                account=session.account,
                digest=None if session.resume is None else token_digest(session.resume),
                was=note.was,
            )
            await self.kv.put(_user_key(key), _encode(entry))
            await self.kv.put(_alike_key(claim[1]), _encode(_Claim(self.node, key)))
            return
        assert note.keys is not None
        key, alike = note.keys
        found = await self._get(_user_key(key))
        if found is not None:
            user = _decode_user.decode(found[0])
            if user.node == self.node:
                await self._free(user, note.gone or "lost", found[1], visible=bool(note.gone))
        await self._release_alike(alike, key)

    async def _free(
        self, user: UserEntry, reason: str, revision: int, visible: bool = True
    ) -> None:
        """``user`` is gone (``reason``): say so (``off``), then delete both keys."""
        key = _user_key(user.key)
        if visible:
            off = msgspec.structs.replace(user, state="off", reason=reason, was=None)
            try:
                revision = await self.kv.update(key, _encode(off), last=revision)
            except KeyWrongLastSequenceError:
                return  # taken over meanwhile (a resume elsewhere): not ours any more
        await self._delete(key, revision)
        found = await self._get(_alike_key(user.alike))
        if found is not None and _decode_claim.decode(found[0]).key == user.key:
            await self._delete(_alike_key(user.alike), found[1])

    # -- mirroring the others ----------------------------------------------------------------

    async def _mirror(self, watcher: Any, sweep: bool = False) -> None:
        """Apply the bucket's entries, then its changes; ``sweep``: once the current
        entries are read, the ghosts none of them names are gone (``lost``)."""
        present: set[str] | None = set() if sweep else None
        async for entry in watcher:
            if entry is None:  # the current entries are all read
                if present is not None:
                    self._forget_missing(present)
                    present = None
                continue
            if not entry.key.startswith("u."):
                continue
            if present is not None and entry.value and entry.operation not in ("DEL", "PURGE"):
                present.add(entry.key)
            try:
                self._mirror_one(entry)
            except Exception:  # a bad entry must not stop the mirror
                log.exception("cluster: presence entry %s", entry.key)

    def _forget_missing(self, present: set[str]) -> None:
        effects: list[Effect] = []
        for ghost in [s for s in self.relay.users.values() if s.node is not None]:
            if ghost.key is not None and _user_key(ghost.key) not in present:
                effects += self.relay.ghost_gone(ghost.key, "lost")
        self.apply(effects)

    def _mirror_one(self, entry: Any) -> None:
        relay = self.relay
        if entry.operation in ("DEL", "PURGE") or not entry.value:
            return  # an "off" came first; a dead node's users are swept by the registry
        user = _decode_user.decode(entry.value)
        if user.node == self.node:
            return
        self.heard.setdefault(user.node, time.monotonic())
        if user.state == "off":
            self.apply(relay.ghost_gone(user.key, user.reason or "lost"))
            return
        if user.state != "on" or user.room is None or user.node in self.dead:
            return
        keys = (user.key, user.alike)
        self.apply(
            relay.ghost(
                user.node,
                user.name,
                keys,
                user.room,
                op=user.op,
                account=user.account,
                digest=user.digest,
                was=user.was,
            )
        )

    # -- dead nodes ------------------------------------------------------------------------------

    def grace(self) -> None:
        """NATS was away: count every node as heard from now (they could not beat)."""
        now = time.monotonic()
        for node in self.heard:
            if node not in self.dead:
                self.heard[node] = now

    def node_seen(self, node: str) -> None:
        """The registry heard from ``node`` (its heartbeat)."""
        if node == self.node:
            return
        self.heard[node] = time.monotonic()
        self.dead.discard(node)

    async def sweep(self) -> None:
        """Announce the users of nodes silent for NODE_TIMEOUT as lost; free their names."""
        now = time.monotonic()
        for node, heard in list(self.heard.items()):
            if node in self.dead or now - heard < NODE_TIMEOUT:
                continue
            self.dead.add(node)
            ghosts = self.relay.ghosts(node)
            log.warning(
                "cluster: node %s silent for %.0f s: %d users lost", node, now - heard, len(ghosts)
            )
            claims = [g.claim for g in ghosts if g.claim is not None]
            effects: list[Effect] = []
            for ghost in ghosts:
                assert ghost.key is not None
                effects += self.relay.ghost_gone(ghost.key, "lost")
            self.apply(effects)
            for claim in claims:
                found = await self._get(_user_key(claim[0]))
                if found is not None:
                    user = _decode_user.decode(found[0])
                    if user.node == node:
                        await self._free(user, "lost", found[1])

    async def close(self) -> None:
        if self._mirroring is not None:
            self._mirroring.cancel()
        for task in self._tasks:
            task.cancel()
        if self._watcher is not None:
            try:
                await self._watcher.stop()
            except Exception as exc:
                log.debug("cluster: stopping the presence watcher: %s", exc)

    async def flush(self, timeout: float) -> None:
        """Wait (at most ``timeout`` s) until every queued presence change is written."""
        deadline = time.monotonic() + timeout
        while (self._writing or not self._notes.empty()) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
