"""One node of a cluster: the NATS connection and everything a node shares through it.

``serve --cluster`` runs a :class:`ClusterNode` beside the usual ``ChatServer``: it
connects to NATS (waiting for it, one log line per change of state), opens the
:class:`~chatcli.cluster.store.ClusterStore` (rooms, ids, history, boards), the accounts
and bans mirror, the presence (name claims, other nodes' users as ghosts), the node's
own subject (``chatcli.node.<node>.*``: DMs and closes other nodes forward to its users),
and the registry heartbeat (chatcli.cluster.nodes), and notices dead nodes.

Other nodes' users are reached through :class:`RemoteLink`, which stands where a local
session has its connection: what the relay sends one of them alone (a DM, a kick, a
``replaced``) is forwarded to its node; room traffic never is (every node delivers the
room's messages to its own members from the feed).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Final

import msgspec
from nats.js import api

from chatcli import __version__
from chatcli.cluster.accounts import ClusterAccounts
from chatcli.cluster.layout import HEARTBEAT, NODE_TIMEOUT, NODES_BUCKET, node_subject
from chatcli.cluster.nodes import NodeInfo, decode_node, encode_node, read_nodes
from chatcli.cluster.options import NatsOptions
from chatcli.cluster.presence import Presence
from chatcli.cluster.store import ClusterStore
from chatcli.core.connection import JSON_LINES, State
from chatcli.core.intents import Authenticate, Authenticated, BanRecord, Completion, Intent
from chatcli.core.protocol import Error, ServerEvent, decode_server_frame
from chatcli.core.relay import Close, Delivery, Effect, Session
from chatcli.errors import ChatError

if TYPE_CHECKING:
    from chatcli.transports.tcp import ChatServer

__all__ = ["ClusterError", "ClusterNode", "RemoteLink", "default_node_name"]

log = logging.getLogger("chatcli.server")

#: seconds between two attempts to reach NATS while a node starts
START_RETRY: Final = 1.0
#: seconds the feed may take to read the stream back at start-up
CATCH_UP: Final = 120.0
#: seconds between the node's pings to NATS (3 unanswered: the connection is dead)
PING_INTERVAL: Final = 2.0
#: seconds a dead node stays in the registry (shown dead by ``chatcli cluster``)
FORGET_DEAD: Final = 600.0


class ClusterError(ChatError):
    """The node cannot join its cluster (NATS unreachable when told not to wait, ...)."""


def default_node_name() -> str:
    """``<host>-<pid>`` cut to a valid node name: unique enough when none is given."""
    host = "".join(c if c.isalnum() or c in "-_" else "-" for c in socket.gethostname())
    return f"{host[:20] or 'node'}-{os.getpid()}"[:32]


def _running(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Close(msgspec.Struct, frozen=True):
    key: str
    reason: str
    code: str
    message: str
    node: str


class _Mute(msgspec.Struct, frozen=True):
    key: str
    minutes: int


#: where operators' mutes are broadcast to every node
MUTES: Final = "chatcli.mute"


class RemoteLink:
    """Where another node's user is connected, as the hub's fan-out sees it.

    Looks like a connection to the fan-out (``wire``, ``state``, ``queue``, ``send``,
    ``close``); what is queued is forwarded to the user's node, which delivers it.
    """

    __slots__ = ("node", "owner", "session")

    wire = JSON_LINES
    state = State.OPEN

    def __init__(self, owner: ClusterNode, node: str, session: Session) -> None:
        self.owner = owner
        self.node = node
        self.session = session

    def queue(self, data: bytes) -> None:
        key = self.session.key
        if key is not None:
            self.owner.forward(self.node, "deliver", data, {"To": key})

    def send(self, event: ServerEvent) -> None:
        data = JSON_LINES.encode(event)
        if data is not None:
            self.queue(data)

    def close(self, error: Error | None, reason: str) -> None:
        key = self.session.key
        if key is None:
            return
        code = error.code if error is not None else ""
        message = error.message if error is not None else ""
        data = msgspec.json.encode(_Close(key, reason, code, message, self.owner.name))
        self.owner.forward(self.node, "close", data, {})


class ClusterNode:
    """This process's place in the cluster; see the module doc."""

    def __init__(
        self, options: NatsOptions, name: str, *, wait: float | None = None, replicas: int = 1
    ) -> None:
        self.options = options
        #: copies of the stream and buckets this node creates (when they do not exist)
        self.replicas = replicas
        self.name = name
        #: seconds to wait for NATS at start-up (None: for ever)
        self.wait = wait
        self.nc: Any = None
        self.js: Any = None
        self.store: ClusterStore | None = None
        self.server: ChatServer | None = None
        self.presence: Presence | None = None
        self.accounts = ClusterAccounts()
        self._nodes_kv: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self._subs: list[Any] = []
        self.started = time.time()
        self.connected = False
        self.stopping = False
        #: the last error nats-py reported (its connect attempts say why they failed)
        self._last_error: Exception | None = None
        #: when this node's heartbeat was last written (others are judged only after it)
        self.beat = 0.0

    # -- connecting ---------------------------------------------------------------------------

    async def connect(self) -> None:
        """Reach NATS, retrying every START_RETRY s (for ``wait`` s when given)."""
        shown = self.options.shown_servers()
        deadline = None if self.wait is None else time.monotonic() + self.wait
        said = False
        overrides = {
            "name": f"chatcli-{self.name}",
            "disconnected_cb": self._disconnected,
            "reconnected_cb": self._reconnected,
            "error_cb": self._error,
            "max_reconnect_attempts": -1,
            # a NATS server that stops answering (a stall, a cut cable) is noticed
            # within seconds, not minutes: new messages are then refused at once
            "ping_interval": PING_INTERVAL,
            "max_outstanding_pings": 3,
        }
        while True:
            try:
                # NatsOptions.connect refuses a server that would not speak TLS when TLS
                # is asked for (nats-py alone would send the credentials in the clear)
                # the first connection is tried once per round here (nats-py would retry
                # it for ever inside connect(), never saying so); reconnects after it
                # are nats-py's, for ever
                first = {**overrides, "allow_reconnect": False, "max_reconnect_attempts": 1}
                self.nc = await self.options.connect(**first)
                self.nc.options["allow_reconnect"] = True
                self.nc.options["max_reconnect_attempts"] = -1
                break
            except Exception as exc:
                # nats-py's own error says "no servers available"; the attempt's says why
                cause = self._last_error or exc
                why = str(cause) or type(cause).__name__
                if deadline is not None and time.monotonic() >= deadline:
                    raise ClusterError(f"cannot reach NATS at {shown}: {why}") from exc
                if not said:
                    log.warning("cluster: waiting for NATS at %s (%s)", shown, why)
                    said = True
                await asyncio.sleep(START_RETRY)
        self.connected = True
        self.js = self.nc.jetstream()
        log.info(
            "cluster: node %s connected to NATS at %s", self.name, self.nc.connected_url.netloc
        )

    async def _disconnected(self) -> None:
        if self.connected and not self.stopping:
            self.connected = False
            log.warning("cluster: NATS unreachable: new messages are refused until it is back")

    async def _reconnected(self) -> None:
        if not self.connected:
            self.connected = True
            log.warning("cluster: NATS reachable again at %s", self.nc.connected_url.netloc)
        if self.presence is not None:
            self.presence.grace()
        # a restarted server forgot the consumers: the feed and the mirrors start again
        loop = asyncio.get_running_loop()
        if self.store is not None:
            self._tasks.append(loop.create_task(self.store.resubscribe()))
        if self.presence is not None:
            self._tasks.append(loop.create_task(self.presence.rewatch()))
            self._tasks.append(loop.create_task(self.accounts.rewatch()))

    async def _error(self, exc: Exception) -> None:
        self._last_error = exc
        log.debug("cluster: NATS: %s", exc)

    async def bucket(self, name: str) -> Any:
        """The key-value bucket ``name``, made when it does not exist yet."""
        try:
            return await self.js.key_value(name)
        except Exception:
            config = api.KeyValueConfig(bucket=name, history=1, replicas=self.replicas)
            return await self.js.create_key_value(config)

    # -- the store ------------------------------------------------------------------------------

    async def open_store(self, *, retain: int) -> ClusterStore:
        """The cluster's store, read back until caught up with the stream."""
        store = self.store = ClusterStore(self.name, retain=retain, replicas=self.replicas)
        store.answer_account = self.answer_account
        await store.open(self.nc)
        try:
            await asyncio.wait_for(store.caught_up.wait(), CATCH_UP)
        except TimeoutError as exc:
            raise ClusterError("the message stream could not be read back in time") from exc
        return store

    async def answer_account(self, intent: Intent) -> Completion:
        """Accounts and bans from the mirror; a login also claims its name cluster-wide."""
        done = await self.accounts.answer(intent)
        if (
            type(intent) is Authenticate
            and type(done) is Authenticated
            and done.ban is None
            and (not done.registered or done.verified)
        ):
            assert self.presence is not None
            if not self.nc.is_connected:
                raise ChatError("NATS unreachable")
            done.taken = await self.presence.claim(intent.name, intent.keys)
        return done

    # -- running beside a server -------------------------------------------------------------------

    async def start(self, server: ChatServer) -> None:
        """Share ``server``'s relay with the cluster (before it listens)."""
        assert self.store is not None
        self.server = server
        relay = server.relay
        relay.presence = deque()
        relay.shared_mutes = deque()
        relay.remote_link = lambda node, session: RemoteLink(self, node, session)
        relay.features = (*relay.features, "cluster")
        for events in self.store.board_events().values():
            for event in events:
                relay.replay_board(event)
        self._nodes_kv = await self.bucket(NODES_BUCKET)
        await self._check_name_free()
        self.presence = Presence(self.name, relay, self.inject)
        self.accounts.on_ban = self._banned
        relay.cluster_up = lambda: self.nc.is_connected
        await self.accounts.open(self.js, self.bucket)
        await self.presence.open(self.bucket)
        server.hub.after_apply = self._after_apply
        self._subs.append(await self.nc.subscribe(MUTES, cb=self._muted))
        self._subs.append(
            await self.nc.subscribe(node_subject(self.name) + ".*", cb=self._forwarded)
        )
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._watch_nodes()))
        self._tasks.append(loop.create_task(self._heartbeat()))
        self._tasks.append(loop.create_task(self._sweep()))

    def _after_apply(self) -> None:
        """After every relay call: share presence changes and mutes."""
        assert self.presence is not None and self.server is not None
        self.presence.take_notes()
        mutes = self.server.relay.shared_mutes
        while mutes:
            key, minutes = mutes.popleft()
            data = msgspec.json.encode(_Mute(key, minutes))
            if self.nc.is_connected:
                task = asyncio.get_running_loop().create_task(self.nc.publish(MUTES, data))
                self._tasks.append(task)
                task.add_done_callback(self._tasks.remove)
            else:
                log.warning("cluster: NATS away: a mute holds on this node only")

    async def _muted(self, msg: Any) -> None:
        """An operator on any node muted (or unmuted) a name: every node applies it."""
        assert self.server is not None
        try:
            mute = msgspec.json.decode(msg.data, type=_Mute)
        except msgspec.DecodeError as exc:
            log.warning("cluster: unreadable mute from NATS: %s", exc)
            return
        self.server.relay.mute(mute.key, mute.minutes)

    async def _check_name_free(self) -> None:
        """Refuse to start under the name of a node that is running (its heartbeat is
        fresh, and it is not this machine's dead process of that name)."""
        try:
            entry = await self._nodes_kv.get(self.name)
            info = decode_node(entry.value or b"")
        except Exception:  # no entry (or a damaged one): the name is free
            return
        if time.time() - info.seen > NODE_TIMEOUT:
            return
        here = info.host == socket.gethostname()
        if here and (info.pid == os.getpid() or not _running(info.pid)):
            return  # this machine's earlier life of the node, killed: the name is ours
        raise ClusterError(
            f"a node named {self.name} is running on {info.host} (pid {info.pid}): "
            "give this one another --node"
        )

    def _banned(self, ban: BanRecord) -> None:
        """A ban reached the mirror (made on any node): close this node's users it names.

        The operator's node closes the user itself when it knows them; this covers a
        user it has not heard of yet (a login a moment earlier, on this node).
        """
        if self.server is None or not ban.active(time.time()):
            return
        closes: list[Effect] = []
        for session in list(self.server.relay.users.values()):
            claim = session.claim
            if session.node is not None or claim is None:
                continue
            address = ban.address is not None and session.address == ban.address
            if claim[0] == ban.key or claim[1] == ban.alike or address:
                text = f"banned by {ban.by}" + (f": {ban.reason}" if ban.reason else "")
                closes.append(Close(session, "kicked", Error(code="banned", message=text)))
        self.inject(closes)

    def inject(self, effects: list[Effect]) -> None:
        """Effects the cluster caused (not a connection): through the hub, then written."""
        if not effects or self.server is None:
            return
        self.server.hub.inject(effects)
        self.server.settle(None)

    def forward(self, node: str, kind: str, data: bytes, headers: dict[str, str]) -> None:
        """Send ``data`` to ``node`` (its subject ``kind``); lost if NATS is away."""
        if not self.nc.is_connected:
            log.info("cluster: NATS away: a %s for node %s is dropped", kind, node)
            return
        subject = node_subject(node, kind)
        task = asyncio.get_running_loop().create_task(
            self.nc.publish(subject, data, headers=headers or None)
        )
        self._tasks.append(task)
        task.add_done_callback(self._tasks.remove)

    async def _forwarded(self, msg: Any) -> None:
        """A delivery or a close another node sends one of this node's users."""
        assert self.server is not None
        relay = self.server.relay
        kind = msg.subject.rpartition(".")[2]
        try:
            if kind == "deliver":
                key = (msg.headers or {}).get("To", "")
                session = relay.users.get(key)
                if session is None or session.node is not None:
                    return
                event = decode_server_frame(msg.data.rstrip(b"\n"))
                self.inject([Delivery((session,), event)])
            elif kind == "close":
                close = msgspec.json.decode(msg.data, type=_Close)
                session = relay.users.get(close.key)
                if session is None or session.node is not None:
                    return
                if close.code == "replaced":
                    self.inject(relay.hand_over(session, close.node, None))
                else:
                    error = Error(code=close.code, message=close.message) if close.code else None
                    self.inject([Close(session, close.reason, error)])
        except (msgspec.DecodeError, ValueError) as exc:
            log.warning("cluster: unreadable forward from NATS: %s", exc)

    # -- the registry ------------------------------------------------------------------------

    def info(self) -> NodeInfo:
        assert self.server is not None
        relay = self.server.relay
        local = [s for s in relay.users.values() if s.node is None]
        rooms = {s.room for s in local if s.room is not None}
        try:
            listen = tuple(f"{h}:{p}" for h, p in self.server.addresses)
        except AssertionError:  # not listening yet
            listen = ()
        return NodeInfo(
            node=self.name,
            pid=os.getpid(),
            host=socket.gethostname(),
            started=self.started,
            seen=time.time(),
            listen=listen,
            web=relay.web_url,
            users=len(local),
            rooms=len(rooms),
            version=__version__,
            state="ok" if self.nc.is_connected else "unavailable",
        )

    async def _heartbeat(self) -> None:
        while True:
            try:
                await self._nodes_kv.put(self.name, encode_node(self.info()))
                self.beat = time.monotonic()
            except Exception as exc:  # NATS away: the next beat tries again
                log.debug("cluster: heartbeat not written: %s", exc)
                if self.presence is not None:  # others' silence meanwhile proves nothing
                    self.presence.grace()
            await asyncio.sleep(HEARTBEAT)

    async def _watch_nodes(self) -> None:
        """Read the registry every heartbeat: a node whose ``seen`` moved is alive.

        A fresh read each time (not a long-lived watcher), so a NATS restart cannot
        leave this node reading nothing; ``seen`` is compared with its last value, not
        with this machine's clock, so clocks that differ do not matter.
        """
        assert self.presence is not None
        last: dict[str, tuple[float, float]] = {}  # node -> (its seen, when it changed)
        while True:
            try:
                listing = await read_nodes(self.js)
            except Exception as exc:  # NATS away: silence proves nothing
                log.debug("cluster: registry not read: %s", exc)
            else:
                now = time.monotonic()
                for info in listing:
                    if info.node == self.name:
                        continue
                    before = last.get(info.node)
                    if before is None or before[0] != info.seen:
                        if before is not None:
                            self.presence.node_seen(info.node)
                        last[info.node] = (info.seen, now)
                    elif now - before[1] > FORGET_DEAD and now - self.beat < 2 * HEARTBEAT:
                        # long dead: its entry leaves the registry (chatcli cluster)
                        await self._nodes_kv.delete(info.node)
                        del last[info.node]
                        log.info("cluster: node %s forgotten (silent for ever)", info.node)
            await asyncio.sleep(HEARTBEAT)

    async def _sweep(self) -> None:
        assert self.presence is not None
        while True:
            await asyncio.sleep(1.0)
            # judged only while this node's own heartbeats get through
            if self.nc.is_connected and time.monotonic() - self.beat < 2 * HEARTBEAT:
                try:
                    await self.presence.sweep()
                except Exception as exc:
                    log.warning("cluster: sweeping dead nodes: %s", exc)

    # -- stopping ---------------------------------------------------------------------------

    async def stop(self) -> None:
        """After the server closed its clients: publish their leaves, leave the registry."""
        self.stopping = True
        if self.presence is not None:
            self.presence.take_notes()
            await self.presence.flush(5.0)
            await self.presence.close()
        for task in list(self._tasks):
            task.cancel()
        if self._nodes_kv is not None and self.nc.is_connected:
            try:
                await asyncio.wait_for(self._nodes_kv.delete(self.name), 2.0)
            except Exception as exc:
                log.debug("cluster: registry entry not deleted: %s", exc)
        if self.store is not None:
            await self.store.aclose()
        await self.accounts.close()
        if self.nc is not None:
            try:
                await asyncio.wait_for(self.nc.drain(), 5.0)
            except Exception as exc:
                log.debug("cluster: NATS drain: %s", exc)
