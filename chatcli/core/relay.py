"""The relay's domain logic as pure state: users, rooms, history and flood control.

No sockets, no event loop and no store: the server feeds decoded client events in and
gets back *effects*: ``Delivery`` records (who receives which event) to encode and write,
and store *intents* (``Append`` a message, ``Recall`` a room's history; see
chatcli.core.intents) that the adapter hands to whichever store it runs on. The store's
answers come back through :meth:`Relay.complete` and become deliveries, so a message is
delivered only once the store has it (durable before visible) and a store that answers
later (SQLite, NATS JetStream) fits without the relay waiting on it. Membership (who is in
which room) lives here, in memory: it belongs to live connections, not to the store.

Every refusal raises ProtocolError with the spec's code and the ``ref`` of the frame that
caused it. ``bye`` is answered with a ``Close`` effect, which waits in line behind the
messages the client sent before it (their acknowledgements go out first); the adapter
then closes the connection and tells the relay through :meth:`Relay.leave`.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import ipaddress
import secrets
from collections import deque
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from chatcli import __version__
from chatcli.core.board import MAX_BOARD_BYTES, MAX_SHAPES, Board, RoomBoard, check_shape
from chatcli.core.events import (
    Ban,
    ChangePassword,
    Clear,
    Cleared,
    Draw,
    Drawn,
    Erase,
    Erased,
    Kick,
    Moderated,
    Move,
    Moved,
    Mute,
    Nick,
    PasswordChanged,
    Ref,
    Register,
    Registered,
    Renamed,
    Unban,
)
from chatcli.core.intents import (
    AddBan,
    AddressChecked,
    Answered,
    Append,
    Authenticate,
    Authenticated,
    BanRecord,
    BoardChange,
    BoardSaved,
    CheckAddress,
    Completion,
    Failed,
    LiftBan,
    Recall,
    Recalled,
    Relayed,
    RelayedBoard,
    Stored,
)
from chatcli.core.intents import ChangePassword as ChangePasswordIntent
from chatcli.core.intents import Register as RegisterIntent
from chatcli.core.names import NAME_RULE, name_error, name_key, name_keys, normalize
from chatcli.core.protocol import (
    DEFAULT_ROOM,
    PROTOCOL_VERSION,
    Bye,
    ClientEvent,
    DirectMessage,
    Error,
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
    ServerEvent,
    Users,
    Welcome,
    Who,
    now,
    room_infos,
    valid_room,
)
from chatcli.errors import ProtocolError

__all__ = [
    "FATAL_CODES",
    "AddressLimit",
    "AuditRecord",
    "Close",
    "Delivery",
    "Effect",
    "FailedLogins",
    "PresenceNote",
    "Raw",
    "Relay",
    "Session",
    "TokenBucket",
    "error_event",
]

#: error codes after which the server closes the connection (a protocol fact, re-exported)
from chatcli.core.protocol import FATAL_CODES

#: what this server offers beyond protocol v1 (``welcome.features``, spec 1.1)
FEATURES = ("resume", "accounts", "board")
#: added to ``welcome.features`` when every hello must carry ``server_password``, so a
#: client can ask its user for it before logging in (docs/protocol.md)
SERVER_PASSWORD_FEATURE = "server_password"
#: failed-login limiting (spec 1.1, section 2): more than this many wrong passwords...
MAX_FAILED_LOGINS = 5
#: ...from one address within this many seconds blocks password logins from it
FAILED_LOGIN_WINDOW = 60.0
#: connections one address may hold (``serve --max-per-ip``)
DEFAULT_MAX_PER_IP = 16
#: operator actions kept for the adapter to log (oldest dropped if it never takes them)
AUDIT_KEEP = 1000
#: frames a client may send after its hello before the store has answered about its name
MAX_EARLY_FRAMES = 256

#: rooms a server holds at once (``serve --max-rooms``); a join past it is refused
DEFAULT_MAX_ROOMS = 10_000
#: rooms one connection may create a minute (``serve --room-creations``)
DEFAULT_ROOM_CREATIONS = 10
#: the busiest rooms ``welcome`` lists (spec 1.1, section 7), the default room among them
WELCOME_ROOMS = 20
#: names of the default room ``welcome`` lists at most (``user_count`` gives the total)
WELCOME_USERS = 100
#: rooms a ``rooms`` reply lists at most, busiest first (``total`` gives the count)
ROOMS_LISTED = 200
#: a ``welcome`` with more rooms than this is recomputed at most every WELCOME_REFRESH
#: seconds, so a stream of bare connects costs O(rooms) a second, not per connect
WELCOME_CACHE_ROOMS = 100
WELCOME_REFRESH = 1.0

#: Flood-control tokens each client action costs (spec 1.1, section 7): the one bucket of
#: a connection (``--rate-limit`` a second, ``--rate-burst`` saved up) pays for everything
#: a client can repeat, so a join/part or ``rooms`` flood is throttled like a message
#: flood. A refused action gets ``rate_limited`` and changes nothing. Types missing here
#: cost nothing (ping, pong, bye); a connection's first ``hello`` is free, retries cost.
#: Board frames (draw, erase, move, clear) must get a row
#: when they land. Re-joining the room one is in resends its history: REJOIN_COST more.
ACTION_COSTS: dict[type, float] = {
    Say: 1.0,
    Me: 1.0,
    SendDirect: 1.0,
    Hello: 1.0,
    JoinRoom: 1.0,
    Who: 1.0,
    RoomsRequest: 2.0,
    Nick: 1.0,
    Register: 1.0,
    ChangePassword: 1.0,
    Kick: 1.0,
    Ban: 1.0,
    Unban: 1.0,
    Mute: 1.0,
    # board frames (spec 1.1, section 4: "the same flood bucket as messages"); like
    # messages they are charged in _board_change, after the mute check
    Draw: 1.0,
    Erase: 1.0,
    Move: 1.0,
    Clear: 1.0,
}
#: frames charged where they are handled (after their mute check), not on arrival
_CHARGED_LATER = frozenset({Say, Me, SendDirect, Draw, Erase, Move, Clear})
REJOIN_COST = 2.0

WELCOME_HINT = 'type  login YOURNAME  (or send {"type":"hello","name":"YOURNAME"})'


def _new_token() -> str:
    return secrets.token_urlsafe(18)


def token_digest(token: str) -> str:
    """What a cluster shares of a resume token: its SHA-256, never the token itself."""
    return hashlib.sha256(token.encode()).hexdigest()


def _same_secret(given: str, kept: str | None) -> bool:
    """Compare a resume token in constant time (a guess must learn nothing from timing)."""
    return kept is not None and hmac.compare_digest(given.encode(), kept.encode())


class TokenBucket:
    """Flood control: ``rate`` tokens a second, at most ``burst`` saved up.

    ``rate`` 0 disables the limit. The clock is injected so tests need not sleep.
    """

    __slots__ = ("_clock", "_stamp", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: int, clock: Callable[[], float]) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self._clock = clock
        self._tokens = float(self.burst)
        self._stamp = clock()

    def take(self, cost: float = 1.0) -> bool:
        """Spend ``cost`` tokens if there are that many; False means refuse the action.

        A refused action spends nothing, so a client that waits gets served again.
        """
        if self.rate <= 0 or cost <= 0:
            return True
        stamp = self._clock()
        tokens = min(self.burst, self._tokens + (stamp - self._stamp) * self.rate)
        self._stamp = stamp
        if tokens < cost:
            self._tokens = tokens
            return False
        self._tokens = tokens - cost
        return True


def is_loopback(address: str | None) -> bool:
    """True for a loopback address (127.0.0.0/8, ::1); never banned by address."""
    if address is None:
        return False
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


class FailedLogins:
    """Guessing limit: more than ``limit`` wrong passwords from one address in ``window``
    seconds blocks further password logins from it until the window has passed.

    Pure state with an injected clock; addresses are strings (None counts as one address).
    """

    def __init__(
        self,
        clock: Callable[[], float],
        limit: int = MAX_FAILED_LOGINS,
        window: float = FAILED_LOGIN_WINDOW,
    ) -> None:
        self.clock = clock
        self.limit = limit
        self.window = window
        self._failures: dict[str | None, deque[float]] = {}

    def _recent(self, address: str | None) -> deque[float] | None:
        stamps = self._failures.get(address)
        if stamps is None:
            return None
        cut = self.clock() - self.window
        while stamps and stamps[0] <= cut:
            stamps.popleft()
        if not stamps:
            del self._failures[address]
            return None
        return stamps

    def blocked(self, address: str | None) -> bool:
        """True while ``address`` has had more than ``limit`` failures in the window."""
        stamps = self._recent(address)
        return stamps is not None and len(stamps) > self.limit

    def failed(self, address: str | None) -> None:
        """Count one wrong password from ``address``."""
        self._recent(address)
        self._failures.setdefault(address, deque()).append(self.clock())


class AddressLimit:
    """Per-address connection counting (``--max-per-ip``), pure: the adapter calls it.

    ``exempt`` lists addresses or networks that are never limited; None (the default)
    exempts loopback addresses, as ergo does, and an empty list exempts nothing.
    """

    def __init__(
        self, max_per_ip: int = DEFAULT_MAX_PER_IP, exempt: Iterable[str] | None = None
    ) -> None:
        self.max_per_ip = max_per_ip
        self._exempt = (
            None if exempt is None else [ipaddress.ip_network(e, strict=False) for e in exempt]
        )
        self._open: dict[str, int] = {}

    def exempt(self, address: str) -> bool:
        """True when ``address`` is not counted."""
        if self._exempt is None:
            return is_loopback(address)
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self._exempt)

    def acquire(self, address: str) -> bool:
        """Count a new connection from ``address``; False means refuse it (server_full)."""
        if self.exempt(address):
            return True
        count = self._open.get(address, 0)
        if count >= self.max_per_ip:
            return False
        self._open[address] = count + 1
        return True

    def release(self, address: str) -> None:
        """A connection from ``address`` (one that was acquired) closed."""
        if self.exempt(address):
            return
        count = self._open.get(address, 0) - 1
        if count > 0:
            self._open[address] = count
        else:
            self._open.pop(address, None)

    def count(self, address: str) -> int:
        """Connections counted for ``address`` now."""
        return self._open.get(address, 0)


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """An operator action for the adapter to log: who did what to whom, and why."""

    by: str
    action: str
    name: str
    minutes: int | None = None
    reason: str = ""
    address: str | None = None


@dataclass(slots=True, eq=False)
class PresenceNote:
    """A change a cluster must share (``Relay.presence``): a local session's presence.

    ``gone`` None: publish ``session`` as it is now (logged in, its room, name, operator
    flag, resume digest; ``was`` the name key it had before a rename). ``gone`` a string:
    the name ``keys`` are free again, and when ``name`` was visible its ``leave`` reason
    is ``gone`` (an empty string: a login that never completed).
    """

    session: Session
    keys: tuple[str, str] | None = None
    gone: str | None = None
    name: str | None = None
    was: str | None = None


class Session:
    """What the relay knows of one connection; ``link`` is the adapter's own handle.

    ``address`` is the peer's IP address: the adapter sets it (``Relay.open(link,
    address)``); bans, per-address limits and the guessing limit use it.
    """

    __slots__ = (
        "account",
        "address",
        "bucket",
        "claim",
        "counted",
        "creations",
        "early",
        "hellos",
        "key",
        "link",
        "name",
        "node",
        "op",
        "resume",
        "room",
    )

    def __init__(self, link: Any, bucket: TokenBucket, address: str | None = None) -> None:
        self.link = link
        self.bucket = bucket
        self.address = address
        self.name: str | None = None
        self.key: str | None = None
        self.room: str | None = None
        #: the secret of this session's last ready: whoever shows it may take the name over
        self.resume: str | None = None
        #: the two name keys this session holds (logged in) or is being checked for
        self.claim: tuple[str, str] | None = None
        #: the registered name this session proved it owns (its password), if any
        self.account: str | None = None
        #: an operator: a ``--op`` name logged in with its account's password
        self.op = False
        #: frames received after hello while the store checks the name, handled after it
        self.early: list[ClientEvent] = []
        #: counted against its address's connection limit (released at leave)
        self.counted = False
        #: the rooms it may still create (``Relay.room_creations`` a minute), made on first use
        self.creations: TokenBucket | None = None
        #: hellos it sent: every one after the first costs tokens (spec 1.1, section 7)
        self.hellos = 0
        #: the cluster node holding this session when it is another node's (a *ghost*:
        #: it counts in names, rooms and ``who``, but its connection is elsewhere, and
        #: ``resume`` then holds the digest of its token); None for a local connection
        self.node: str | None = None

    @property
    def logged_in(self) -> bool:
        return self.name is not None

    def __repr__(self) -> str:
        return f"Session({self.name!r}, room={self.room!r})"


@dataclass(slots=True)
class Delivery:
    """``event`` goes to every session in ``targets``; ``echo`` replaces it for ``sender``.

    The echo carries the sender's ``ref``, which only the sender may see, so a message is
    still encoded once for everyone else.
    """

    targets: Sequence[Session]
    event: ServerEvent
    sender: Session | None = None
    echo: ServerEvent | None = None


@dataclass(slots=True, eq=False)
class Close:
    """End ``session``'s connection (leave reason ``reason``) once what came before is out.

    ``error`` is sent last when given (e.g. ``replaced``).
    """

    session: Session
    reason: str
    error: Error | None = None


@dataclass(slots=True, eq=False)
class Raw:
    """Bytes for ``session``'s connection alone, already in its format (a text-mode help or
    usage line the connection answers itself), in line behind what came before."""

    session: Session
    data: bytes


#: what the relay's methods return: deliveries to make, closes, and intents for the store
Effect = (
    Delivery
    | Close
    | Raw
    | Append
    | Recall
    | Authenticate
    | RegisterIntent
    | ChangePasswordIntent
    | AddBan
    | LiftBan
    | CheckAddress
    | BoardChange
)

#: another node's user is never charged or limited here: its node does that
_NO_BUCKET = TokenBucket(0.0, 0, lambda: 0.0)

_LOGIN_FIRST = 'log in first: {"type":"hello","name":"..."}'
_ROOM_RULE = "rooms are 1-32 lowercase letters, digits, _ or -"


class _Room:
    """Who is in a room now; ``version`` counts changes, so a snapshot can be checked.

    ``members`` is everyone (in a cluster, other nodes' users too: names, ``who``,
    counts); ``local`` those connected to this relay, the ones it delivers to; ``ready``
    the local ones whose ``ready`` went out (a message relayed from another node goes to
    them only: the others get it in their ``ready``).
    """

    __slots__ = ("local", "members", "ready", "version")

    def __init__(self) -> None:
        self.members: dict[Session, None] = {}
        self.local: dict[Session, None] = {}
        self.ready: dict[Session, None] = {}
        self.version = 0


class Relay:
    """The chat relay as a state machine: client events in, effects out.

    Every method takes the acting session and returns the effects it causes (deliveries
    and store intents, in the order they must take effect). Refusals raise ProtocolError
    carrying the spec's code and the frame's ``ref``; FATAL_CODES ones end the connection.
    """

    def __init__(
        self,
        *,
        history: int = 50,
        rate_limit: float = 5.0,
        rate_burst: int = 10,
        clock: Callable[[], float] = now,
        monotonic: Callable[[], float] | None = None,
        default_room: str = DEFAULT_ROOM,
        token: Callable[[], str] = _new_token,
        ops: Collection[str] = (),
        server_password: str | None = None,
        failed_logins: FailedLogins | None = None,
        address_limit: AddressLimit | None = None,
        max_rooms: int = DEFAULT_MAX_ROOMS,
        room_creations: int = DEFAULT_ROOM_CREATIONS,
        max_ready: int | None = None,
        max_shapes: int = MAX_SHAPES,
        max_board_bytes: int = MAX_BOARD_BYTES,
    ) -> None:
        self.history_limit = history
        #: rooms held at once (the default room counts), and rooms a session may create a
        #: minute (0: no limit)
        self.max_rooms = max_rooms
        self.room_creations = room_creations
        #: the largest ``ready`` frame (bytes) a client is sent: older history is left out
        #: past it (spec 1.1, section 7); None: no bound
        self.max_ready = max_ready
        #: the last welcome's room list and when it was made (see welcome)
        self._welcome_rooms: tuple[float, int, list[RoomInfo]] | None = None
        #: the default room's version and the names the last welcome listed
        self._welcome_users: tuple[tuple[int, int], list[str]] | None = None
        #: renames so far (a name in the welcome list may have changed)
        self._renames = 0
        self.rate_limit = rate_limit
        self.rate_burst = rate_burst
        self.clock = clock
        self.monotonic = monotonic or clock
        self.default_room = default_room
        self.token = token
        self.users: dict[str, Session] = {}
        self._rooms: dict[str, _Room] = {default_room: _Room()}
        #: both keys of every name held (logged in or being checked) -> its session
        self._taken: dict[str, Session] = {}
        self._taken_alike: dict[str, Session] = {}
        self.op_keys = frozenset(name_key(op) for op in ops)
        self.server_password = server_password
        self.failed_logins = failed_logins or FailedLogins(self.monotonic)
        self.address_limit = address_limit
        #: name key -> until (monotonic seconds)
        self._mutes: dict[str, float] = {}
        #: operator actions for the adapter to log (take_audit)
        self.audit: deque[AuditRecord] = deque(maxlen=AUDIT_KEEP)
        #: ``welcome.features``; an adapter adds what its transport offers ("tls")
        self.features: tuple[str, ...] = FEATURES
        #: the page's URL when a web port serves this relay (``welcome.web``)
        self.web_url: str | None = None
        #: every room's whiteboard (spec 1.1, 4), kept while the relay lives
        self.boards: dict[str, RoomBoard] = {}
        self.max_shapes = max_shapes
        self.max_board_bytes = max_board_bytes
        #: in a cluster (chatcli.cluster): the local presence changes to share, oldest
        #: first, and a factory of the links of other nodes' sessions; None standalone
        self.presence: deque[PresenceNote] | None = None
        self.remote_link: Callable[[str, Session], Any] | None = None
        #: in a cluster: mutes (name key, minutes; 0 lifts) for every node to apply
        self.shared_mutes: deque[tuple[str, int]] | None = None
        #: in a cluster: whether other nodes can be reached now (a DM to another node's
        #: user is refused ``unavailable`` while they cannot)
        self.cluster_up: Callable[[], bool] | None = None

    # -- sessions -----------------------------------------------------------------

    def open(self, link: Any, address: str | None = None) -> Session:
        """A new connection (from IP ``address``, when the adapter knows it): its session."""
        bucket = TokenBucket(self.rate_limit, self.rate_burst, self.monotonic)
        return Session(link, bucket, address)

    def connect(self, session: Session) -> list[Effect]:
        """The adapter's hook for a new connection, called once after :meth:`open`.

        Counts it against its address's limit (``server_full`` past it) and asks the store
        whether the address is banned (``banned``, closed, when the answer comes). A
        session whose address is unknown, or loopback for bans, is let through.
        """
        address = session.address
        if address is None:
            return []
        limit = self.address_limit
        if limit is not None:
            if not limit.acquire(address):
                full = Error(code="server_full", message="too many connections from your address")
                return [Close(session, "lost", full)]
            session.counted = True
        if is_loopback(address):
            return []
        return [CheckAddress(session, address, self.clock())]

    def take_audit(self) -> list[AuditRecord]:
        """The operator actions since the last call, for the adapter to log."""
        records = list(self.audit)
        self.audit.clear()
        return records

    def welcome(self) -> Welcome:
        """The greeting every new connection gets before it says anything.

        Of constant size whatever other clients did (spec 1.1, section 7): the busiest
        WELCOME_ROOMS rooms with ``room_count``, at most WELCOME_USERS names of the default
        room with ``user_count``. On a server with many rooms the list is remade at most
        every WELCOME_REFRESH seconds, so bare connects cannot make the relay sort its
        rooms once each.
        """
        lobby = self._rooms[self.default_room]
        cached = self._welcome_users
        stamp = (lobby.version, self._renames)
        if cached is None or cached[0] != stamp:  # sorted once per change
            names = self._names(self.default_room)[:WELCOME_USERS]
            cached = self._welcome_users = (stamp, names)
        return Welcome(
            server=f"chatcli/{__version__}",
            proto=PROTOCOL_VERSION,
            users=cached[1],
            rooms=self._welcome_room_list(),
            hint=WELCOME_HINT,
            features=list(self.features)
            + ([SERVER_PASSWORD_FEATURE] if self.server_password is not None else [])
            + (["web"] if self.web_url else []),
            web=self.web_url,
            room_count=len(self._rooms),
            user_count=len(lobby.members),
        )

    def _welcome_room_list(self) -> list[RoomInfo]:
        stamp, count = self.monotonic(), len(self._rooms)
        cached = self._welcome_rooms
        if (
            cached is not None
            and count > WELCOME_CACHE_ROOMS
            and cached[1] > WELCOME_CACHE_ROOMS
            and stamp - cached[0] < WELCOME_REFRESH
        ):
            return cached[2]
        rooms = room_infos(self.busiest(WELCOME_ROOMS))
        self._welcome_rooms = (stamp, count, rooms)
        return rooms

    def busiest(self, limit: int) -> list[tuple[str, int]]:
        """(room, members) of the ``limit`` busiest rooms, the default room always among them."""
        default = self.default_room
        counts = (
            (name, len(room.members)) for name, room in self._rooms.items() if name != default
        )
        top = heapq.nlargest(max(0, limit - 1), counts, key=lambda item: item[1])
        return [(default, len(self.members(default))), *top]

    def _charge(self, session: Session, cost: float, ref: Ref) -> None:
        """Spend ``cost`` flood-control tokens of ``session``, or refuse with rate_limited."""
        if not session.bucket.take(cost):
            raise ProtocolError("rate_limited", "slow down: request not taken", ref)

    def _check_new_room(self, session: Session, room: str, ref: Ref) -> None:
        """Refuse (rate_limited, nothing changes) a room this server or session may not
        create now: past ``max_rooms`` rooms, or past ``room_creations`` a minute."""
        if room in self._rooms:
            return
        if self.max_rooms and len(self._rooms) >= self.max_rooms:
            message = f"this server holds its limit of {self.max_rooms} rooms: join one that exists"
            raise ProtocolError("rate_limited", message, ref)
        if self.room_creations:
            bucket = session.creations
            if bucket is None:
                rate = self.room_creations / 60.0
                bucket = session.creations = TokenBucket(rate, self.room_creations, self.monotonic)
            if not bucket.take():
                message = f"you may create {self.room_creations} rooms a minute: wait a little"
                raise ProtocolError("rate_limited", message, ref)

    def login(self, session: Session, hello: Hello) -> list[Effect]:
        """Check a ``hello`` and ask the store about the name; :meth:`complete` logs in.

        Refusals that need no store (server password, name rules, a name in use, the
        guessing limit) raise at once; the name is held while the store looks it up.
        """
        ref = hello.ref
        session.hellos += 1
        if session.hellos > 1:  # a retry after an error (or a stray one): it costs
            self._charge(session, ACTION_COSTS[Hello], ref)
        if session.logged_in or session.claim is not None:
            raise ProtocolError("bad_request", "already logged in", ref)
        address = session.address
        if self.server_password is not None or hello.password is not None:
            self._check_guessing(address, ref)
        if self.server_password is not None:
            given = hello.server_password
            if given is None or not _same_secret(given, self.server_password):
                if given is not None:
                    self.failed_logins.failed(address)
                raise ProtocolError("auth_failed", "wrong or missing server password", ref)
        name, problem = _checked_name(hello.name)
        if problem is not None:
            raise ProtocolError("name_invalid", problem, ref)
        room = self.default_room if hello.room is None else hello.room
        if not valid_room(room):
            raise ProtocolError("bad_request", _ROOM_RULE, ref)
        self._check_new_room(session, room, ref)
        keys = name_keys(name)
        holder = self._holder(keys)
        if holder is not None:
            given = hello.resume
            if given is not None and holder.node is not None:
                given = token_digest(given)  # another node's session: its token's digest
            if given is None or not _same_secret(given, holder.resume):
                raise ProtocolError("name_taken", self._in_use(name, holder), ref)
            if holder.logged_in:
                return self._take_over(session, holder, room, hello)
            raise ProtocolError("name_taken", self._in_use(name, holder), ref)
        self._hold(session, keys)
        password = hello.password
        return [Authenticate(session, hello, name, keys, address, password, self.clock())]

    def _check_guessing(self, address: str | None, ref: Ref) -> None:
        if self.failed_logins.blocked(address):
            raise ProtocolError(
                "auth_failed", "too many wrong passwords from your address: wait a minute", ref
            )

    def _holder(self, keys: tuple[str, str]) -> Session | None:
        return self._taken.get(keys[0]) or self._taken_alike.get(keys[1])

    @staticmethod
    def _in_use(name: str, holder: Session) -> str:
        if holder.name is not None and holder.name.casefold() != name.casefold():
            return f"the name {name!r} looks like {holder.name!r}, who is online"
        return f"the name {name!r} is already in use"

    def _hold(self, session: Session, keys: tuple[str, str]) -> None:
        session.claim = keys
        self._taken[keys[0]] = session
        self._taken_alike[keys[1]] = session

    def _release(self, session: Session, keys: tuple[str, str] | None) -> None:
        if keys is None:
            return
        if self._taken.get(keys[0]) is session:
            del self._taken[keys[0]]
        if self._taken_alike.get(keys[1]) is session:
            del self._taken_alike[keys[1]]

    def _authenticated(self, done: Authenticated) -> list[Effect]:
        """The store's answer about a login: refuse it, or log the session in."""
        intent = done.intent
        session, hello = intent.session, intent.hello
        assert hello is not None
        if session.claim is not intent.keys or session.logged_in:
            return []  # it left while the store looked
        address = session.address

        def refuse(code: str, message: str) -> list[Effect]:
            self._released(session, intent.keys)
            session.claim, session.early = None, []
            return [Close(session, "lost", Error(code=code, message=message, ref=hello.ref))]

        if done.taken is not None:  # a cluster: another node's user holds the name
            return refuse("name_taken", done.taken)
        if done.ban is not None:
            return refuse("banned", _ban_text(done.ban))
        if done.registered:
            if self.failed_logins.blocked(address):
                return refuse("auth_failed", "too many wrong passwords from your address")
            if intent.password is None:
                return refuse("auth_failed", f"{intent.name!r} is registered: give its password")
            if not done.verified:
                self.failed_logins.failed(address)
                return refuse("auth_failed", "wrong password")
            session.account = done.account
            session.op = name_key(done.account) in self.op_keys
        session.name, session.key = intent.name, intent.keys[0]
        self.users[intent.keys[0]] = session
        room = self.default_room if hello.room is None else hello.room
        out = self._enter(session, room, hello.history, hello.since, hello.epoch)
        return out + self._handle_early(session)

    def _handle_early(self, session: Session) -> list[Effect]:
        """Act on the frames that came between hello and the store's answer, in order.

        A refusal becomes the error it would have been; one that ends the connection
        ends the run (the adapter does the same for frames it hands over itself).
        """
        out: list[Effect] = []
        early, session.early = session.early, []
        for event in early:
            try:
                out += self.handle(session, event)
            except ProtocolError as exc:
                if exc.code in FATAL_CODES:
                    out.append(Close(session, "lost", error_event(exc)))
                    break
                out.append(Delivery((session,), error_event(exc)))
        return out

    def _take_over(
        self, session: Session, holder: Session, room: str, hello: Hello
    ) -> list[Effect]:
        """``session`` resumes ``holder``'s session: same name, same place, no leave or join.

        The old connection is told ``replaced`` and closed; the room sees nothing unless the
        resumed session asked for another room (then it moves, as ``join`` would).
        """
        assert holder.name is not None and holder.key is not None
        session.name, session.key = holder.name, holder.key
        self.users[holder.key] = session
        session.account, session.op = holder.account, holder.op
        if holder.claim is not None:
            self._hold(session, holder.claim)
        holder.claim, holder.account, holder.op = None, None, False
        old_room, holder.room = holder.room, None
        holder.name = holder.key = holder.resume = None  # its close tells nobody
        replaced = Error(code="replaced", message="this session was resumed by another connection")
        out: list[Effect] = [Close(holder, "lost", replaced)]
        if old_room is not None:
            state = self._rooms[old_room]
            state.members = {(session if s is holder else s): None for s in state.members}
            state.local.pop(holder, None)
            state.ready.pop(holder, None)
            state.local[session] = None
            state.version += 1
            session.room = old_room
        if session.room == room:
            out.append(self._recall(session, hello.history, hello.since, hello.epoch))
            return out
        if session.room is not None:
            out += self._exit(session, "part")
        return out + self._enter(session, room, hello.history, hello.since, hello.epoch)

    def leave(self, session: Session, reason: str) -> list[Delivery]:
        """The session is gone (``reason`` as in the spec); tell its room."""
        if session.counted and self.address_limit is not None and session.address is not None:
            self.address_limit.release(session.address)
        session.counted = False
        if session.claim is not None and self.presence is not None and session.node is None:
            self.presence.append(PresenceNote(session, session.claim, reason, session.name))
        self._release(session, session.claim)
        session.claim = None
        if not session.logged_in:
            return []
        assert session.key is not None and session.name is not None
        if self.users.get(session.key) is session:
            del self.users[session.key]
        out = self._exit(session, reason)
        session.name = session.key = None
        return out

    # -- a cluster's shared presence (chatcli.cluster) ------------------------------

    def _note(self, session: Session) -> None:
        """A local session's presence changed: note it for the cluster to share."""
        if self.presence is not None and session.node is None:
            self.presence.append(PresenceNote(session))

    def _released(self, session: Session, keys: tuple[str, str] | None) -> None:
        """Free ``keys`` held for ``session``'s login or rename, noting it in a cluster."""
        if keys is None:
            return
        self._release(session, keys)
        if self.presence is not None and session.node is None:
            self.presence.append(PresenceNote(session, keys, ""))

    def ghost(
        self,
        node: str,
        name: str,
        keys: tuple[str, str],
        room: str,
        *,
        op: bool = False,
        account: str | None = None,
        digest: str | None = None,
        was: str | None = None,
    ) -> list[Effect]:
        """Another node's user, as that node shared it: add it, or update what changed.

        A new one enters its room (the local members are told ``join``), a moved one
        leaves and enters, a renamed one (``was`` its old name key) is announced as a
        rename. A local session holding the name was resumed on ``node``: it is handed
        over (closed with ``replaced``, the room told nothing).
        """
        holder = self.users.get(keys[0])
        if holder is None and was is not None:
            old = self.users.get(was)
            if old is not None and old.node is not None:
                return self._ghost_renamed(old, node, name, keys) + self.ghost(
                    node, name, keys, room, op=op, account=account, digest=digest
                )
        if holder is not None and holder.node is None:
            out: list[Effect] = self.hand_over(holder, node, digest)
            ghost = self.users[keys[0]]
            if ghost.room != room:
                out += self._exit(ghost, "part") + self._enter_ghost(ghost, room)
            return out
        if holder is None:
            assert self.remote_link is not None, "a cluster relay needs remote_link"
            ghost = Session(None, _NO_BUCKET)
            ghost.link, ghost.node = self.remote_link(node, ghost), node
            ghost.name, ghost.key = name, keys[0]
            ghost.op, ghost.account, ghost.resume = op, account, digest
            self._hold(ghost, keys)
            self.users[keys[0]] = ghost
            return self._enter_ghost(ghost, room)
        holder.op, holder.account, holder.resume = op, account, digest
        if holder.node != node and self.remote_link is not None:
            holder.node, holder.link = node, self.remote_link(node, holder)
        if holder.room == room:
            return []
        return [*self._exit(holder, "part"), *self._enter_ghost(holder, room)]

    def _enter_ghost(self, ghost: Session, room: str) -> list[Effect]:
        assert ghost.name is not None
        state = self._rooms.get(room)
        if state is None:
            state = self._rooms[room] = _Room()
        ghost.room = room
        state.members[ghost] = None
        state.version += 1
        return [Delivery(tuple(state.local), Joined(room=room, name=ghost.name, ts=self.clock()))]

    def _ghost_renamed(
        self, ghost: Session, node: str, name: str, keys: tuple[str, str]
    ) -> list[Effect]:
        old = ghost.name
        assert old is not None and ghost.key is not None
        self._release(ghost, ghost.claim)
        del self.users[ghost.key]
        self._hold(ghost, keys)
        ghost.name, ghost.key, ghost.node = name, keys[0], node
        self.users[keys[0]] = ghost
        self._renames += 1
        if ghost.room is None:
            return []
        state = self._rooms[ghost.room]
        event = Renamed(room=ghost.room, old=old, name=name, ts=self.clock())
        return [Delivery(tuple(state.local), event)]

    def ghost_gone(self, key: str, reason: str) -> list[Effect]:
        """Another node's user with name key ``key`` left (``reason``): tell its room."""
        ghost = self.users.get(key)
        if ghost is None or ghost.node is None:
            return []
        return list(self.leave(ghost, reason))

    def ghosts(self, node: str) -> list[Session]:
        """The users ``node`` holds, as this relay knows them."""
        return [s for s in self.users.values() if s.node == node]

    def hand_over(self, holder: Session, node: str, digest: str | None) -> list[Effect]:
        """``holder`` (local) was resumed on ``node``: a ghost takes its place, quietly.

        The mirror of a take-over: the connection is told ``replaced`` and closed, the
        room sees neither a leave nor a join.
        """
        assert holder.name is not None and holder.key is not None
        assert self.remote_link is not None, "a cluster relay needs remote_link"
        ghost = Session(None, _NO_BUCKET)
        ghost.link, ghost.node = self.remote_link(node, ghost), node
        ghost.name, ghost.key, ghost.resume = holder.name, holder.key, digest
        ghost.account, ghost.op = holder.account, holder.op
        if holder.claim is not None:
            self._hold(ghost, holder.claim)
        self.users[holder.key] = ghost
        room, ghost.room = holder.room, holder.room
        if room is not None:
            state = self._rooms[room]
            state.members = {(ghost if s is holder else s): None for s in state.members}
            state.local.pop(holder, None)
            state.ready.pop(holder, None)
            state.version += 1
        holder.claim, holder.account, holder.op, holder.room = None, None, False, None
        holder.name = holder.key = holder.resume = None  # its close tells nobody
        replaced = Error(code="replaced", message="this session was resumed by another connection")
        return [Close(holder, "lost", replaced)]

    def _relayed(self, msg: Msg) -> list[Effect]:
        """A message another node had stored: to this relay's members whose ready is out."""
        state = self._rooms.get(msg.room)
        if state is None or not state.ready:
            return []
        return [Delivery(tuple(state.ready), msg)]

    # -- events -------------------------------------------------------------------

    def handle(self, session: Session, event: ClientEvent) -> list[Effect]:
        """Act on one decoded client event and return what must happen."""
        if type(event) is Say and session.room is not None:  # the hot path first
            return self._say(session, event.text, event.ref, False, event.txn)
        if isinstance(event, Hello):
            return self.login(session, event)
        if isinstance(event, Ping):
            return [Delivery((session,), Pong())]
        if isinstance(event, Pong):
            return []
        ref: Ref = getattr(event, "ref", None)
        if isinstance(event, Bye) and not session.logged_in:
            return [Close(session, "quit")]
        if not session.logged_in:
            if session.claim is not None:  # hello sent, store not answered yet: hold it
                if len(session.early) >= MAX_EARLY_FRAMES:
                    raise ProtocolError("rate_limited", "wait for ready: frame not taken", ref)
                session.early.append(event)
                return []
            raise ProtocolError("not_logged_in", _LOGIN_FIRST, ref)
        kind = type(event)
        if kind not in _CHARGED_LATER:
            # messages and board frames are charged after the mute check, where handled
            self._charge(session, ACTION_COSTS.get(kind, 0.0), ref)
        if isinstance(event, Say):
            return self._say(session, event.text, ref, False, event.txn)
        if isinstance(event, Me):
            return self._say(session, event.text, ref, True, event.txn)
        if isinstance(event, SendDirect):
            return self._direct(session, event)
        if isinstance(event, Who):
            assert session.room is not None
            room = session.room
            ops = sorted((s.name for s in self.members(room) if s.op and s.name), key=str.lower)
            return [Delivery((session,), Users(room=room, users=self._names(room), ops=ops))]
        if isinstance(event, RoomsRequest):
            rooms = room_infos(self.busiest(ROOMS_LISTED))
            return [Delivery((session,), RoomList(rooms=rooms, total=len(self._rooms)))]
        if isinstance(event, JoinRoom):
            return self._switch(session, event.room, ref)
        if isinstance(event, Bye):
            return [Close(session, "quit")]
        if isinstance(event, Register):
            return self._register(session, event)
        if isinstance(event, ChangePassword):
            return self._change_password(session, event)
        if isinstance(event, Nick):
            return self._nick(session, event)
        if isinstance(event, (Kick, Ban, Unban, Mute)):
            return self._moderate(session, event)
        if isinstance(event, (Draw, Erase, Move, Clear)):
            return self._board_change(session, event)
        raise ProtocolError("unknown_type", f"unhandled event {type(event).__name__}", ref)

    def complete(self, completion: Completion) -> list[Effect]:
        """The store answered an intent: what to deliver (or ask the store) now."""
        if type(completion) is Stored:
            if completion.duplicate:  # a resend of a kept message: its sender alone is told
                return list(self._acknowledge(completion.intent, completion.msg))
            return list(self._stored(completion.intent, completion.msg))
        if type(completion) is Relayed:
            return self._relayed(completion.msg)
        if isinstance(completion, Recalled):
            return list(
                self._recalled(
                    completion.intent, completion.history, completion.truncated, completion.epoch
                )
            )
        if isinstance(completion, Authenticated):
            if completion.intent.rename is not None:
                return self._renamed(completion)
            return self._authenticated(completion)
        if isinstance(completion, Answered):
            return self._answered(completion)
        if isinstance(completion, BoardSaved):
            if completion.seq is not None:
                return self._board_settled(completion.intent, completion.seq)
            return self._board_saved(completion.intent)
        if isinstance(completion, RelayedBoard):
            return self._board_relayed(completion.event, completion.seq)
        if isinstance(completion, AddressChecked):
            ban, session = completion.ban, completion.intent.session
            if ban is None:
                return []
            self._released(session, session.claim)  # a hello may be waiting on the store
            session.claim, session.early = None, []
            return [Close(session, "lost", Error(code="banned", message=_ban_text(ban)))]
        assert isinstance(completion, Failed)
        intent = completion.intent
        if isinstance(intent, Recall):
            # the room's history could not be read: the session is in the room all the same,
            # and its ready says that earlier messages may be missing
            return list(self._recalled(intent, [], True))
        if isinstance(intent, CheckAddress):
            return []  # the address is checked again at hello
        if isinstance(intent, BoardChange):
            self.board(intent.write.room).fail(intent.write)
        if isinstance(intent, Authenticate):
            self._released(intent.session, intent.keys)
            if intent.session.claim is intent.keys:
                intent.session.claim, intent.session.early = None, []
        if not intent.session.logged_in and not isinstance(intent, Authenticate):
            return []
        ref: Ref = None
        if not isinstance(intent, Authenticate):
            ref = intent.ref
        elif intent.rename is not None:
            ref = intent.rename.ref
        elif intent.hello is not None:
            ref = intent.hello.ref
        error = Error(code="unavailable", message=completion.reason, ref=ref)
        return [Delivery((intent.session,), error)]

    # -- accounts, names and moderation ---------------------------------------------

    def _register(self, session: Session, event: Register) -> list[Effect]:
        assert session.name is not None
        if session.account is not None and name_key(session.account) == session.key:
            raise ProtocolError("bad_request", "your name is already registered", event.ref)
        keys = name_keys(session.name)
        return [RegisterIntent(session, session.name, keys, event.password, event.ref)]

    def _change_password(self, session: Session, event: ChangePassword) -> list[Effect]:
        if session.account is None:
            raise ProtocolError("bad_request", "your name is not registered", event.ref)
        self._check_guessing(session.address, event.ref)
        keys = name_keys(session.account)
        return [ChangePasswordIntent(session, keys, event.old, event.new, event.ref)]

    def _answered(self, done: Answered) -> list[Effect]:
        intent = done.intent
        session = intent.session
        if not session.logged_in:
            return []
        if not done.ok:
            if isinstance(intent, ChangePasswordIntent):
                self.failed_logins.failed(session.address)
            code = "forbidden" if isinstance(intent, ChangePasswordIntent) else "bad_request"
            return [Delivery((session,), Error(code=code, message=done.reason, ref=intent.ref))]
        reply: ServerEvent
        if isinstance(intent, RegisterIntent):
            session.account = intent.name
            reply = Registered(name=intent.name, ref=intent.ref)
        elif isinstance(intent, ChangePasswordIntent):
            reply = PasswordChanged(name=session.account or "", ref=intent.ref)
        elif isinstance(intent, AddBan):
            minutes = None if intent.ban.until is None else self._minutes(intent.ban.until)
            reply = Moderated(action="ban", name=intent.ban.name, minutes=minutes, ref=intent.ref)
        else:
            reply = Moderated(action="unban", name=intent.name, ref=intent.ref)
        return [Delivery((session,), reply)]

    def _minutes(self, until: float) -> int:
        return max(0, round((until - self.clock()) / 60))

    def _nick(self, session: Session, event: Nick) -> list[Effect]:
        """Change a name: the rules of a login (bans and accounts through the store)."""
        ref = event.ref
        name, problem = _checked_name(event.name)
        if problem is not None:  # the connection stays open: a rename is not a login
            raise ProtocolError("bad_request", problem, ref)
        keys = name_keys(name)
        holder = self._holder(keys)
        if holder is not None and holder is not session:
            raise ProtocolError("bad_request", self._in_use(name, holder), ref)
        if holder is None:  # hold the new name too while the store looks it up
            self._taken[keys[0]] = session
            self._taken_alike[keys[1]] = session
        return [Authenticate(session, None, name, keys, session.address, None, self.clock(), event)]

    def _renamed(self, done: Authenticated) -> list[Effect]:
        intent = done.intent
        session, keys = intent.session, intent.keys
        assert intent.rename is not None
        ref = intent.rename.ref
        old_keys = session.claim
        if old_keys is None or not session.logged_in or session.room is None:
            self._released(session, keys)
            return []

        def refuse(code: str, message: str) -> list[Effect]:
            if keys[0] != old_keys[0] and self._taken.get(keys[0]) is session:
                del self._taken[keys[0]]
            if keys[1] != old_keys[1] and self._taken_alike.get(keys[1]) is session:
                del self._taken_alike[keys[1]]
            if keys != old_keys and self.presence is not None:  # the claim of the new name
                self.presence.append(PresenceNote(session, keys, ""))
            return [Delivery((session,), Error(code=code, message=message, ref=ref))]

        own = session.account is not None and (
            name_keys(session.account)[0] == keys[0] or name_keys(session.account)[1] == keys[1]
        )
        if done.ban is not None and done.ban.address != session.address:
            return refuse("forbidden", f"{intent.name!r} is banned")
        if done.registered and not own:
            return refuse("forbidden", f"{intent.name!r} is registered: log in with it instead")
        old, old_key = session.name, session.key
        assert old is not None and old_key is not None
        self._release(session, old_keys)
        if self.presence is not None:  # the new name is shared first, then the old freed
            self.presence.append(PresenceNote(session, was=old_key))
            self.presence.append(PresenceNote(session, old_keys, "renamed", old))
        self._hold(session, keys)
        del self.users[old_key]
        session.name, session.key = intent.name, keys[0]
        self.users[keys[0]] = session
        self._renames += 1
        if old_key in self._mutes:
            self._mutes[keys[0]] = self._mutes.pop(old_key)
        state = self._rooms[session.room]
        event = Renamed(room=session.room, old=old, name=intent.name, ts=self.clock())
        echo = None if ref is None else msgspec.structs.replace(event, ref=ref)
        targets = tuple(state.local)
        return [Delivery(targets, event, session, echo)]

    def _moderate(self, session: Session, event: Kick | Ban | Unban | Mute) -> list[Effect]:
        """An operator frame: forbidden unless ``session`` is an operator."""
        ref = event.ref
        if not session.op:
            raise ProtocolError("forbidden", "only operators may do that", ref)
        assert session.name is not None
        name = normalize(event.name)
        if not name:
            raise ProtocolError("bad_request", "name whom?", ref)
        keys = name_keys(name)
        target = self.users.get(keys[0])
        if target is None:
            alike = self._taken_alike.get(keys[1])
            target = alike if alike is not None and alike.logged_in else None
        address = None if target is None or is_loopback(target.address) else target.address
        if isinstance(event, Unban):
            self.audit.append(AuditRecord(session.name, "unban", name))
            return [LiftBan(session, name, keys, ref)]
        if isinstance(event, Mute):
            self.mute(keys[0], event.minutes)
            if self.shared_mutes is not None:
                self.shared_mutes.append((keys[0], event.minutes))
            self.audit.append(AuditRecord(session.name, "mute", name, event.minutes))
            reply = Moderated(action="mute", name=name, minutes=event.minutes, ref=ref)
            return [Delivery((session,), reply)]
        reason = event.reason
        out: list[Effect] = []
        if isinstance(event, Ban):
            until = self.clock() + event.minutes * 60 if event.minutes else None
            shown = target.name if target is not None and target.name else name
            ban = BanRecord(keys[0], keys[1], shown, address, until, reason, session.name)
            self.audit.append(
                AuditRecord(session.name, "ban", shown, event.minutes, reason, address)
            )
            out.append(AddBan(session, ban, ref))
            code = "banned"
        elif target is None:
            raise ProtocolError("no_such_user", f"no user named {event.name!r} is online", ref)
        else:
            self.audit.append(AuditRecord(session.name, "kick", name, None, reason, address))
            out.append(Delivery((session,), Moderated(action="kick", name=name, ref=ref)))
            code = "kicked"
        if target is not None:
            text = f"{code} by {session.name}" + (f": {reason}" if reason else "")
            out.insert(0, Close(target, "kicked", Error(code=code, message=text)))
        return out

    def mute(self, key: str, minutes: int) -> None:
        """Mute the name with key ``key`` for ``minutes`` (0 lifts it)."""
        if minutes:
            self._mutes[key] = self.monotonic() + minutes * 60
        else:
            self._mutes.pop(key, None)

    def _muted(self, session: Session, ref: Ref) -> None:
        until = self._mutes.get(session.key or "")
        if until is None:
            return
        if self.monotonic() < until:
            raise ProtocolError("muted", "an operator muted you", ref)
        del self._mutes[session.key or ""]

    def counts(self) -> list[tuple[str, int]]:
        """(room, member count) for every room worth listing: occupied, or the default."""
        default = self.default_room
        return [
            (name, len(room.members))
            for name, room in self._rooms.items()
            if room.members or name == default
        ]

    def members(self, room: str) -> Collection[Session]:
        """Who is in ``room`` now, in the order they entered."""
        state = self._rooms.get(room)
        return state.members.keys() if state is not None else ()

    # -- messages -------------------------------------------------------------------

    def _say(
        self, session: Session, text: str, ref: Ref, action: bool, txn: str | None
    ) -> list[Effect]:
        room = session.room
        if room is None:
            raise ProtocolError("not_logged_in", _LOGIN_FIRST, ref)
        self._muted(session, ref)
        if not session.bucket.take(ACTION_COSTS[Me if action else Say]):
            raise ProtocolError("rate_limited", "slow down: message not sent", ref)
        assert session.name is not None
        state = self._rooms[room]
        targets = tuple(state.local)
        append = Append(
            session, room, session.name, text, self.clock(), action, ref, targets, state.version
        )
        if txn is not None:
            append.txn, append.user = txn, session.key or ""
        return [append]

    def _stored(self, append: Append, msg: Msg) -> list[Delivery]:
        sender, targets = append.session, append.targets
        state = self._rooms.get(append.room)
        if state is None or state.version != append.version:
            # members came or went while the store worked: those who left are not sent it,
            # and those who came got it in their ready (recalled after this was stored)
            room = append.room
            targets = tuple(s for s in targets if s.room == room)
            if sender.logged_in and sender not in targets:
                targets += (sender,)  # the sender's copy is its acknowledgement
        echo = None if append.ref is None else _with_ref(msg, append.ref)
        return [Delivery(targets, msg, sender, echo)]

    def _acknowledge(self, append: Append, msg: Msg) -> list[Delivery]:
        sender = self.users.get(append.user)  # the session may have been resumed since
        if sender is None:
            return []
        echo = msg if append.ref is None else _with_ref(msg, append.ref)
        return [Delivery((sender,), echo)]

    def _direct(self, session: Session, event: SendDirect) -> list[Effect]:
        target = self.users.get(name_key(event.to))
        if target is None:
            raise ProtocolError("no_such_user", f"no user named {event.to!r} is online", event.ref)
        self._muted(session, event.ref)
        if target.node is not None and self.cluster_up is not None and not self.cluster_up():
            message = "the cluster cannot reach that user right now; try again"
            raise ProtocolError("unavailable", message, event.ref)
        if not session.bucket.take(ACTION_COSTS[SendDirect]):
            raise ProtocolError("rate_limited", "slow down: message not sent", event.ref)
        assert session.name is not None and target.name is not None
        dm = DirectMessage(from_=session.name, to=target.name, text=event.text, ts=self.clock())
        echo = None if event.ref is None else _with_ref(dm, event.ref)
        targets = (target,) if target is session else (target, session)
        return [Delivery(targets, dm, session, echo)]

    def _switch(self, session: Session, room: str, ref: Ref) -> list[Effect]:
        if not valid_room(room):
            raise ProtocolError("bad_request", _ROOM_RULE, ref)
        if room == session.room:  # its history again: the join's cost and then some
            self._charge(session, REJOIN_COST, ref)
            return [self._recall(session, None, None, None)]
        self._check_new_room(session, room, ref)
        out: list[Effect] = [*self._exit(session, "part")]
        return out + self._enter(session, room, None, None, None)

    # -- room membership ------------------------------------------------------------

    def _enter(
        self,
        session: Session,
        room: str,
        limit: int | None,
        since: int | None,
        epoch: str | None,
    ) -> list[Effect]:
        assert session.name is not None
        state = self._rooms.get(room)
        if state is None:
            state = self._rooms[room] = _Room()
        others = tuple(state.local)
        session.room = room
        state.members[session] = None
        if session.node is None:
            state.local[session] = None
        state.version += 1
        # Emitted even into an empty room: observers (recorders) see every join.
        joined = Delivery(others, Joined(room=room, name=session.name, ts=self.clock()))
        return [self._recall(session, limit, since, epoch), joined]

    def _recall(
        self, session: Session, limit: int | None, since: int | None, epoch: str | None
    ) -> Recall:
        assert session.room is not None
        keep = self.history_limit if limit is None else min(limit, self.history_limit)
        return Recall(session, session.room, keep, since, epoch)

    def _recalled(
        self, recall: Recall, history: list[Msg], truncated: bool, epoch: str = ""
    ) -> list[Delivery]:
        session = recall.session
        if session.room != recall.room or session.name is None:
            return []  # it left (or moved on) before the store answered
        session.resume = self.token()  # each ready brings a new token
        state = self._rooms.get(recall.room)
        if state is not None:
            state.ready[session] = None
        self._note(session)
        ready = Ready(
            name=session.name,
            room=recall.room,
            users=self._names(recall.room),
            history=history,
            truncated=truncated,
            epoch=epoch or None,
            resume=session.resume,
            op=session.op,
            board=self._board_now(recall.room),
        )
        if self.max_ready is not None and history:
            ready = fit_ready(ready, self.max_ready)
        return [Delivery((session,), ready)]

    def _exit(self, session: Session, reason: str) -> list[Delivery]:
        room = session.room
        if room is None:
            return []
        assert session.name is not None
        state = self._rooms[room]
        state.members.pop(session, None)
        state.local.pop(session, None)
        state.ready.pop(session, None)
        state.version += 1
        session.room = None
        if not state.members and room != self.default_room:
            del self._rooms[room]  # ids and history stay in the store
        others = tuple(state.local)
        left = Left(room=room, name=session.name, reason=reason, ts=self.clock())
        return [Delivery(others, left)]

    def _names(self, room: str) -> list[str]:
        return sorted((s.name for s in self.members(room) if s.name), key=str.lower)

    # -- the whiteboard (spec 1.1, 4) ---------------------------------------------------

    def load_boards(self, boards: dict[str, Board]) -> None:
        """The boards the store kept (read once at start-up, before anyone connects)."""
        for room, board in boards.items():
            self.boards[room] = RoomBoard(board, self.max_shapes, self.max_board_bytes)

    def board(self, room: str) -> RoomBoard:
        """``room``'s board (an empty one for a room that never had a shape)."""
        board = self.boards.get(room)
        if board is None:
            board = self.boards[room] = RoomBoard(None, self.max_shapes, self.max_board_bytes)
        return board

    def _board_now(self, room: str) -> list[Drawn]:
        """What ``ready.board`` shows: the shapes the store has confirmed, in id order."""
        board = self.boards.get(room)
        return board.committed.in_order() if board is not None else []

    def _board_change(self, session: Session, event: Draw | Erase | Move | Clear) -> list[Effect]:
        """A board frame: checked, applied to the room's projected board, kept, then shown.

        Every board frame costs a flood-control token; a muted user may not draw. Erasing
        or moving someone else's shape, or clearing the whole board, is for operators.
        """
        ref = event.ref
        room = session.room
        if room is None:
            raise ProtocolError("not_logged_in", _LOGIN_FIRST, ref)
        assert session.name is not None
        if type(event) is Draw:
            self._muted(session, ref)
            shape = check_shape(event.shape, ref)
        if not session.bucket.take(ACTION_COSTS[type(event)]):
            raise ProtocolError("rate_limited", "slow down: board change not made", ref)
        board = self.board(room)
        ts = self.clock()
        out: Drawn | Erased | Moved | Cleared
        if type(event) is Draw:
            write = board.draw(room, session.name, shape, ts, ref)
            out = write.put[0]
        elif type(event) is Erase:
            self._own(session, board.find(event.id, ref), ref)
            write = board.erase(room, event.id)
            out = Erased(room=room, id=event.id, by=session.name, ts=ts)
        elif type(event) is Move:
            drawn = self._own(session, board.find(event.id, ref), ref)
            write, dx, dy = board.move(drawn, event.dx, event.dy)
            out = Moved(room=room, id=event.id, dx=dx, dy=dy, by=session.name, ts=ts)
        else:
            assert type(event) is Clear
            if event.all and not session.op:
                raise ProtocolError("forbidden", "only operators may clear the whole board", ref)
            shapes = board.projected.shapes.values()
            if event.all:
                ids = [s.id for s in shapes]
            else:  # a name's key is computed once, not once per shape (ICU is not free)
                keys: dict[str, str] = {}
                ids = [
                    s.id
                    for s in shapes
                    if (keys.get(s.from_) or keys.setdefault(s.from_, name_key(s.from_)))
                    == session.key
                ]
            write = board.clear(room, ids)
            out = Cleared(room=room, by=session.name, all=event.all, ts=ts)
        board.write(write)
        state = self._rooms[room]
        echo = None if ref is None else msgspec.structs.replace(out, ref=ref)
        targets = tuple(state.local)
        return [BoardChange(session, write, out, echo, ref, targets, state.version)]

    @staticmethod
    def _own(session: Session, drawn: Drawn, ref: Ref) -> Drawn:
        """``drawn`` if ``session`` may change it (its own, or an operator), else forbidden."""
        if session.op or name_key(drawn.from_) == session.key:
            return drawn
        raise ProtocolError("forbidden", f"shape {drawn.id} is {drawn.from_}'s", ref)

    def _board_saved(self, change: BoardChange) -> list[Effect]:
        """The store kept a board change: the room (as it is now) is told."""
        self.board(change.write.room).commit(change.write)
        room = change.write.room
        sender, targets = change.session, change.targets
        state = self._rooms.get(room)
        if state is None or state.version != change.version:
            targets = tuple(s for s in targets if s.room == room)
            if sender.logged_in and sender.room == room and sender not in targets:
                targets += (sender,)
        return [Delivery(targets, change.event, sender, change.echo)]

    def _board_settled(self, change: BoardChange, seq: int) -> list[Effect]:
        """A cluster kept this relay's board change at place ``seq``: settle it, tell the room."""
        event = change.event
        if type(event) is Drawn:
            event = msgspec.structs.replace(event, id=seq)
        settled = self.board(change.write.room).settle(event, name_key, own=True)
        sender = change.session
        if settled is None:
            if not sender.logged_in:
                return []
            gone = "the board changed meanwhile: that change no longer applies"
            return [Delivery((sender,), Error(code="bad_request", message=gone, ref=change.ref))]
        room = change.write.room
        targets = change.targets
        state = self._rooms.get(room)
        if state is None or state.version != change.version:
            targets = tuple(s for s in targets if s.room == room)
            if sender.logged_in and sender.room == room and sender not in targets:
                targets += (sender,)
        echo = None if change.ref is None else msgspec.structs.replace(settled, ref=change.ref)
        return [Delivery(targets, settled, sender, echo)]

    def _board_relayed(self, event: Drawn | Erased | Moved | Cleared, seq: int) -> list[Effect]:
        """Another node's board change at place ``seq``: settle it, tell the ready members."""
        if type(event) is Drawn:
            event = msgspec.structs.replace(event, id=seq)
        settled = self.board(event.room).settle(event, name_key, own=False)
        state = self._rooms.get(event.room)
        if settled is None or state is None or not state.ready:
            return []
        return [Delivery(tuple(state.ready), settled)]

    def replay_board(self, event: Drawn | Erased | Moved | Cleared) -> None:
        """A board change read back at start-up (a cluster's boards are their changes)."""
        self.board(event.room).settle(event, name_key, own=False)


_size_encoder = msgspec.json.Encoder()


def fit_ready(ready: Ready, limit: int) -> Ready:
    """``ready`` with its oldest history left out until it encodes to at most ``limit``
    bytes, marked ``truncated`` when anything was (spec 1.1, section 7).

    A room whose history grew past what a client may be sent at once (``--max-buffer``)
    stays joinable: the joiner gets the newest messages that fit, never a cut as a slow
    consumer for output it had no chance to read.
    """
    size = len(_size_encoder.encode(ready))
    if size <= limit:
        return ready
    history = ready.history
    keep = len(history)
    while keep and size > limit:
        keep -= 1
        size -= len(_size_encoder.encode(history[len(history) - keep - 1])) + 1
    return msgspec.structs.replace(ready, history=history[len(history) - keep :], truncated=True)


def _with_ref(event: Msg | DirectMessage, ref: Ref) -> Msg | DirectMessage:
    return msgspec.structs.replace(event, ref=ref)


def _checked_name(given: str) -> tuple[str, str | None]:
    """The name as it is kept (NFKC), and why it is refused (None when it is not)."""
    name = normalize(given)
    problem = name_error(name)
    return name, None if problem is None else f"{problem}; {NAME_RULE}"


def _ban_text(ban: BanRecord) -> str:
    how_long = "until an operator lifts it" if ban.until is None else "for now"
    return f"banned {how_long}" + (f": {ban.reason}" if ban.reason else "")


def error_event(exc: ProtocolError) -> Error:
    """The wire form of a refusal."""
    return Error(code=exc.code, message=exc.message, ref=exc.ref)
