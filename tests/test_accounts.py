"""Accounts, the server password, guessing limits, operators and moderation, and nick.

Protocol v1.1 sections 2 and 3, driven through the relay and a real store (memory, and a
SQLite file where persistence matters) with fake clocks: no sockets, no event loop.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from chatcli.core.events import (
    Ban,
    ChangePassword,
    Error,
    Hello,
    Kick,
    Left,
    Moderated,
    Msg,
    Mute,
    Nick,
    PasswordChanged,
    Ready,
    Register,
    Registered,
    Renamed,
    Say,
    SendDirect,
    Unban,
    Users,
    Who,
)
from chatcli.core.intents import Completion
from chatcli.core.relay import (
    AddressLimit,
    AuditRecord,
    Close,
    Delivery,
    Effect,
    FailedLogins,
    Relay,
    Session,
)
from chatcli.errors import ProtocolError
from chatcli.store.accounts import check_password, hash_password
from chatcli.store.base import Store
from chatcli.store.memory import MemoryStore
from chatcli.store.pipeline import StorePipeline
from chatcli.store.sqlite import _SCHEMA_V1, SCHEMA_VERSION, SQLiteStore

T0 = 1763700000.0
PASSWORD = "correct horse"


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> float:
        return self.t


class Server:
    """A relay over a store, as an adapter drives it: effects in, what each link got out."""

    def __init__(self, store: Store, clock: Clock | None = None, **options: object) -> None:
        self.clock = clock or Clock()
        self.relay = Relay(rate_limit=0, clock=self.clock, **options)  # type: ignore[arg-type]
        self.store = store
        self.pipeline = StorePipeline(self.relay, store)
        self.got: dict[str, list[object]] = {}
        self.closed: dict[str, tuple[str, Error | None]] = {}

    def _settle(self, out: list[Delivery | Close]) -> None:
        deadline = time.monotonic() + 10
        while self.pipeline.waiting:
            assert time.monotonic() < deadline, "the store did not answer"
            time.sleep(0.005)
            out += self.pipeline.drain()
        for effect in out:
            if isinstance(effect, Close):  # what the adapter does: close, then tell the relay
                link = effect.session.link
                if link in self.closed:
                    continue
                self.closed[link] = (effect.reason, effect.error)
                self._settle(self.pipeline.run(self.relay.leave(effect.session, effect.reason)))
                continue
            for target in effect.targets:
                event = effect.echo if target is effect.sender and effect.echo else effect.event
                self.got.setdefault(target.link, []).append(event)

    def run(self, effects: Sequence[Effect]) -> None:
        self._settle(self.pipeline.run(effects))

    def send(self, session: Session, event: object) -> ProtocolError | None:
        """Hand ``event`` over; a refusal is returned (a fatal one closes, as the adapter)."""
        try:
            effects = self.relay.handle(session, event)  # type: ignore[arg-type]
        except ProtocolError as exc:
            if exc.code in ("auth_failed", "name_invalid", "name_taken", "banned"):
                self.run([Close(session, "lost", Error(code=exc.code, message=exc.message))])
            return exc
        self.run(effects)
        return None

    def connect(self, link: str, address: str | None = "10.0.0.1") -> Session:
        self.got[link] = []
        return self.relay.open(link, address)

    def login(self, link: str, name: str | None = None, **hello: object) -> Session:
        session = self.connect(link, hello.pop("address", "10.0.0.1"))  # type: ignore[arg-type]
        refused = self.send(session, Hello(name=name or link, **hello))  # type: ignore[arg-type]
        assert refused is None, refused
        return session

    def last(self, link: str) -> object:
        return self.got[link][-1]

    def refusal(self, link: str) -> str | None:
        """The code of the error ``link`` was closed with, if it was closed."""
        closed = self.closed.get(link)
        return None if closed is None or closed[1] is None else closed[1].code


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    made: Store = MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "s.db")
    yield made
    made.close()


def registered(server: Server, name: str, password: str = PASSWORD) -> Session:
    session = server.login(name)
    assert server.send(session, Register(password=password, ref="r")) is None
    assert server.last(name) == Registered(name=name, ref="r")
    return session


# --------------------------------------------------------------------- names


@pytest.mark.parametrize("other", ["ALICE", "ａｌｉｃｅ", "Alice"])
def test_a_case_or_width_variant_of_an_online_name_is_taken(store: Store, other: str) -> None:
    server = Server(store)
    server.login("alice")
    refused = server.send(server.connect("x"), Hello(name=other))
    assert refused is not None and refused.code == "name_taken"


def test_look_alikes_of_an_online_name_are_refused(store: Store) -> None:
    server = Server(store)
    server.login("paypal")
    server.login("coco")
    for link, name, code in [
        ("a", "pаypal", "name_invalid"),  # mixed scripts: invalid before it can clash
        ("b", "paypaI", "name_taken"),
        ("c", "сосо", "name_taken"),  # all Cyrillic: valid, but it is coco
    ]:
        refused = server.send(server.connect(link), Hello(name=name))
        assert refused is not None and refused.code == code, (name, refused)
        assert "looks like" in refused.message or code == "name_invalid"


def test_names_in_other_scripts_log_in_and_are_kept_in_nfkc(store: Store) -> None:
    server = Server(store)
    for link, name in [("j", "José"), ("t", "田中さん"), ("a", "Алиса"), ("w", "ｗｉｄｅ")]:
        server.login(link, name)
    ready = server.got["w"][0]
    assert isinstance(ready, Ready) and ready.name == "wide"
    assert sorted(ready.users) == sorted(["José", "田中さん", "Алиса", "wide"])


# ------------------------------------------------------------------ accounts


def test_a_registered_name_needs_its_password(store: Store) -> None:
    server = Server(store)
    alice = registered(server, "alice")
    server.run(server.relay.leave(alice, "quit"))
    server.login("a2", "alice", password=PASSWORD)
    assert isinstance(server.got["a2"][0], Ready)
    server.run(server.relay.leave(server.relay.users["alice"], "quit"))
    server.send(server.connect("a3"), Hello(name="alice"))
    assert server.refusal("a3") == "auth_failed"
    server.send(server.connect("a4"), Hello(name="ALICE", password="wrong password"))
    assert server.refusal("a4") == "auth_failed"
    assert server.relay.users == {}  # refused logins hold no name
    server.login("a5", "ALICE", password=PASSWORD)  # a look-alike with the password is her
    assert isinstance(server.got["a5"][0], Ready)


def test_a_look_alike_of_a_registered_name_needs_the_accounts_password(store: Store) -> None:
    server = Server(store)
    paypal = registered(server, "paypal")
    server.run(server.relay.leave(paypal, "quit"))
    server.send(server.connect("x"), Hello(name="paypaI"))
    assert server.refusal("x") == "auth_failed"


def test_register_refuses_a_short_password_and_a_second_registration(store: Store) -> None:
    from chatcli.core.protocol import decode_client_frame

    with pytest.raises(ProtocolError) as info:
        decode_client_frame(b'{"type":"register","password":"short"}')
    assert info.value.code == "bad_request"
    server = Server(store)
    alice = registered(server, "alice")
    refused = server.send(alice, Register(password=PASSWORD))
    assert refused is not None and refused.code == "bad_request"


def test_password_change_needs_the_old_password(store: Store) -> None:
    server = Server(store)
    alice = registered(server, "alice")
    server.send(alice, ChangePassword(old="not it at all", new="new password", ref=1))
    assert server.last("alice") == Error(
        code="forbidden", message="the old password is wrong", ref=1
    )
    server.send(alice, ChangePassword(old=PASSWORD, new="new password", ref=2))
    assert server.last("alice") == PasswordChanged(name="alice", ref=2)
    server.run(server.relay.leave(alice, "quit"))
    server.send(server.connect("old"), Hello(name="alice", password=PASSWORD))
    assert server.refusal("old") == "auth_failed"
    server.login("new", "alice", password="new password")


def test_password_hashes_are_salted_scrypt_and_compare_right() -> None:
    one, two = hash_password(PASSWORD), hash_password(PASSWORD)
    assert one != two and one.startswith("scrypt$") and PASSWORD not in one
    assert check_password(PASSWORD, one) and not check_password(PASSWORD + "x", one)
    assert not check_password(PASSWORD, "scrypt$damaged")


def test_passwords_never_show_in_a_repr_or_the_store_file(tmp_path: Path) -> None:
    hello = Hello(name="a", password="hunter2hunter2", server_password="s3cret")
    assert "hunter2" not in repr(hello) and "s3cret" not in repr(hello)
    assert "hunter2" not in repr(Register(password="hunter2hunter2"))
    store = SQLiteStore(tmp_path / "p.db")
    server = Server(store)
    registered(server, "alice", "hunter2hunter2")
    store.close()
    for path in tmp_path.iterdir():
        assert b"hunter2" not in path.read_bytes(), path


# --------------------------------------------------------- server password, guessing


def test_a_server_password_is_needed_by_every_hello(store: Store) -> None:
    server = Server(store, server_password="letmein")
    for link, given in [("none", None), ("wrong", "nope")]:
        refused = server.send(server.connect(link), Hello(name=link, server_password=given))
        assert refused is not None and refused.code == "auth_failed"
    server.login("ok", server_password="letmein")


def test_more_than_five_wrong_passwords_block_an_address_for_a_minute(store: Store) -> None:
    clock = Clock()
    server = Server(store, clock, failed_logins=FailedLogins(clock))
    alice = registered(server, "alice")
    server.run(server.relay.leave(alice, "quit"))
    for attempt in range(6):
        server.send(server.connect(f"w{attempt}"), Hello(name="alice", password="wrong guess"))
        assert server.refusal(f"w{attempt}") == "auth_failed"
    # the right password from that address is refused at once, without checking
    refused = server.send(server.connect("right"), Hello(name="alice", password=PASSWORD))
    assert refused is not None and refused.code == "auth_failed"
    assert "wait a minute" in refused.message
    # a login without a password from it is not blocked; another address is not either
    server.login("guest")
    server.login("elsewhere", "alice", password=PASSWORD, address="10.9.9.9")
    server.run(server.relay.leave(server.relay.users["alice"], "quit"))
    clock.t += 61
    server.login("later", "alice", password=PASSWORD)


def test_invalid_or_taken_names_do_not_count_as_guesses(store: Store) -> None:
    clock = Clock()
    server = Server(store, clock, failed_logins=FailedLogins(clock))
    server.login("bob")
    for attempt in range(10):
        server.send(server.connect(f"x{attempt}"), Hello(name="bob", password="whatever1"))
        server.send(server.connect(f"y{attempt}"), Hello(name="bad name", password="whatever1"))
    assert not server.relay.failed_logins.blocked("10.0.0.1")


def test_failed_logins_counts_per_address_within_its_window() -> None:
    clock = Clock()
    guard = FailedLogins(clock, limit=5, window=60)
    for _ in range(5):
        guard.failed("1.2.3.4")
    assert not guard.blocked("1.2.3.4")
    guard.failed("1.2.3.4")
    assert guard.blocked("1.2.3.4") and not guard.blocked("1.2.3.5")
    clock.t += 60
    assert not guard.blocked("1.2.3.4")


def test_the_per_address_limit_exempts_loopback_unless_told_otherwise() -> None:
    limit = AddressLimit(max_per_ip=2)
    assert all(limit.acquire("127.0.0.2") for _ in range(10))  # loopback: exempt
    assert limit.acquire("10.0.0.7") and limit.acquire("10.0.0.7")
    assert not limit.acquire("10.0.0.7")
    limit.release("10.0.0.7")
    assert limit.acquire("10.0.0.7")
    strict = AddressLimit(max_per_ip=1, exempt=[])
    assert strict.acquire("127.0.0.2") and not strict.acquire("127.0.0.2")
    assert strict.acquire("127.0.0.3")  # another loopback address counts apart
    listed = AddressLimit(max_per_ip=0, exempt=["192.168.0.0/16"])
    assert listed.acquire("192.168.4.5") and not listed.acquire("10.1.1.1")


# --------------------------------------------------------------- operators


def op_server(store: Store, clock: Clock | None = None) -> tuple[Server, Session, Session]:
    server = Server(store, clock, ops={"boss"})
    boss = registered(server, "boss")
    server.run(server.relay.leave(boss, "quit"))
    boss = server.login("boss2", "boss", password=PASSWORD)
    ready = server.got["boss2"][0]
    assert isinstance(ready, Ready) and ready.op
    bob = server.login("bob", address="10.0.0.9")
    return server, boss, bob


def test_an_op_name_is_an_operator_only_when_registered_and_logged_in_with_it(
    store: Store,
) -> None:
    server = Server(store, ops={"boss"})
    server.login("boss")  # not registered: an ordinary user
    ready = server.got["boss"][0]
    assert isinstance(ready, Ready) and not ready.op
    refused = server.send(server.relay.users["boss"], Kick(name="boss"))
    assert refused is not None and refused.code == "forbidden"


@pytest.mark.parametrize(
    "frame", [Kick(name="boss"), Ban(name="boss"), Unban(name="boss"), Mute(name="boss", minutes=1)]
)
def test_operator_frames_are_forbidden_to_others(store: Store, frame: object) -> None:
    server, _boss, bob = op_server(store)
    refused = server.send(bob, frame)
    assert refused is not None and refused.code == "forbidden"
    assert "bob" not in server.closed  # the connection stays open


def test_users_names_the_operators(store: Store) -> None:
    server, _boss, bob = op_server(store)
    server.send(bob, Who())
    assert server.last("bob") == Users(room="lobby", users=["bob", "boss"], ops=["boss"])


def test_kick_closes_the_target_and_the_room_sees_kicked(store: Store) -> None:
    server, boss, _bob = op_server(store)
    server.send(boss, Kick(name="BOB", reason="spam", ref=3))
    reason, error = server.closed["bob"]
    assert reason == "kicked" and error is not None
    assert (error.code, error.message) == ("kicked", "kicked by boss: spam")
    assert Moderated(action="kick", name="BOB", ref=3) in server.got["boss2"]
    left = [e for e in server.got["boss2"] if isinstance(e, Left)]
    assert [(e.name, e.reason) for e in left] == [("bob", "kicked")]
    assert server.relay.take_audit() == [
        AuditRecord("boss", "kick", "BOB", None, "spam", "10.0.0.9")
    ]
    server.login("bob-again", "bob")  # a kick is not a ban
    refused = server.send(boss, Kick(name="nobody"))
    assert refused is not None and refused.code == "no_such_user"


def test_ban_refuses_the_name_its_look_alikes_and_the_address(store: Store) -> None:
    clock = Clock()
    server, boss, _bob = op_server(store, clock)
    server.send(boss, Ban(name="bob", minutes=60, reason="trolling", ref=4))
    assert server.closed["bob"][1] == Error(code="banned", message="banned by boss: trolling")
    assert Moderated(action="ban", name="bob", minutes=60, ref=4) in server.got["boss2"]
    for link, name, address in [
        ("b1", "bob", "10.0.0.2"),
        ("b2", "BOB", "10.0.0.2"),
        ("b3", "carol", "10.0.0.9"),  # bob's address
    ]:
        server.send(server.connect(link, address), Hello(name=name))
        assert server.refusal(link) == "banned", link
    server.login("dave", address="10.0.0.3")
    clock.t += 3601
    server.login("b4", "bob", address="10.0.0.9")


def test_a_banned_address_is_refused_at_connect(store: Store) -> None:
    server, boss, _bob = op_server(store)
    server.send(boss, Ban(name="bob", minutes=5))
    early = server.connect("early", "10.0.0.9")
    server.run(server.relay.connect(early))
    assert server.refusal("early") == "banned"
    other = server.connect("other", "10.0.0.10")
    server.run(server.relay.connect(other))
    assert "other" not in server.closed


def test_the_relay_counts_connections_per_address_and_frees_them_at_leave(
    store: Store,
) -> None:
    server = Server(store, address_limit=AddressLimit(max_per_ip=2, exempt=[]))
    sessions = []
    for n in range(3):
        session = server.connect(f"c{n}", "127.0.0.2")
        server.run(server.relay.connect(session))
        sessions.append(session)
    assert server.refusal("c2") == "server_full"
    assert server.relay.address_limit is not None
    assert server.relay.address_limit.count("127.0.0.2") == 2
    other = server.connect("c3", "127.0.0.3")  # another loopback address
    server.run(server.relay.connect(other))
    assert "c3" not in server.closed
    server.run(server.relay.leave(sessions[0], "quit"))
    again = server.connect("c4", "127.0.0.2")
    server.run(server.relay.connect(again))
    assert "c4" not in server.closed


def test_unban_lifts_a_permanent_ban(store: Store) -> None:
    server, boss, _bob = op_server(store)
    server.send(boss, Ban(name="bob"))
    server.send(server.connect("b1", "10.0.0.2"), Hello(name="bob"))
    assert server.refusal("b1") == "banned"
    server.send(boss, Unban(name="bob", ref=5))
    assert server.last("boss2") == Moderated(action="unban", name="bob", ref=5)
    server.login("b2", "bob")
    server.send(boss, Unban(name="nobody", ref=6))
    last = server.last("boss2")
    assert isinstance(last, Error) and last.ref == 6


def test_loopback_addresses_are_never_banned(store: Store) -> None:
    server, boss, _ = op_server(store)
    server.login("local", address="127.0.0.1")
    server.send(boss, Ban(name="local"))
    server.login("other", address="127.0.0.1")


def test_mute_refuses_messages_until_it_ends_and_keeps_the_connection(store: Store) -> None:
    clock = Clock()
    server, boss, bob = op_server(store, clock)
    server.send(boss, Mute(name="bob", minutes=10, ref=7))
    assert server.last("boss2") == Moderated(action="mute", name="bob", minutes=10, ref=7)
    for frame in [Say(text="hi"), SendDirect(to="boss", text="hi")]:
        refused = server.send(bob, frame)
        assert refused is not None and refused.code == "muted"
    assert "bob" not in server.closed
    clock.t += 601
    assert server.send(bob, Say(text="back")) is None
    server.send(boss, Mute(name="bob", minutes=10))
    server.send(boss, Mute(name="bob", minutes=0))  # 0 unmutes
    assert server.send(bob, Say(text="again")) is None
    assert [e.text for e in server.got["boss2"] if isinstance(e, Msg)] == ["back", "again"]


def test_bans_and_accounts_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "chat.db"
    store = SQLiteStore(path)
    server, boss, _bob = op_server(store)
    server.send(boss, Ban(name="bob"))
    store.close()
    store = SQLiteStore(path)
    try:
        server = Server(store, ops={"boss"})
        server.send(server.connect("b", "10.0.0.2"), Hello(name="bob"))
        assert server.refusal("b") == "banned"
        server.send(server.connect("x"), Hello(name="boss"))
        assert server.refusal("x") == "auth_failed"
        server.login("boss", password=PASSWORD)
    finally:
        store.close()


def test_a_version_1_store_is_upgraded_with_its_messages_kept(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    db = sqlite3.connect(path)
    db.executescript(_SCHEMA_V1)
    db.execute("INSERT INTO rooms VALUES ('lobby', 'e1', 2)")
    db.execute("INSERT INTO messages VALUES ('lobby', 1, 'old', 'kept', 1.0, 0, NULL)")
    db.execute("PRAGMA application_id=1667785076")
    db.execute("PRAGMA user_version=1")
    db.commit()
    db.close()
    store = SQLiteStore(path)
    try:
        server = Server(store)
        server.login("alice")
        ready = server.got["alice"][0]
        assert isinstance(ready, Ready) and [m.text for m in ready.history] == ["kept"]
        server.send(server.relay.users["alice"], Register(password=PASSWORD))
        assert server.last("alice") == Registered(name="alice")
    finally:
        store.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert db.execute("SELECT name FROM accounts").fetchall() == [("alice",)]
    db.close()


# --------------------------------------------------------------------- nick


def test_nick_renames_and_the_room_sees_it_once(store: Store) -> None:
    server = Server(store)
    alice = server.login("alice")
    server.login("bob")
    server.send(alice, Nick(name="alicia", ref=9))
    assert server.last("bob") == Renamed(room="lobby", old="alice", name="alicia", ts=T0)
    assert server.last("alice") == Renamed(room="lobby", old="alice", name="alicia", ts=T0, ref=9)
    assert set(server.relay.users) == {"alicia", "bob"}
    server.login("alice2", "alice")  # the old name is free again
    server.send(alice, Nick(name="Alicia"))  # a change of case is one's own name
    assert alice.name == "Alicia"


def test_nick_follows_the_login_rules(store: Store) -> None:
    server, boss, bob = op_server(store)
    server.login("carol")
    server.send(boss, Ban(name="mallory"))
    for name, code in [
        ("bad name", "bad_request"),  # invalid: refused, connection open
        ("CAROL", "bad_request"),  # taken (case)
        ("сarol", "bad_request"),  # mixed script
        ("boss", "bad_request"),  # taken (online)
        ("mallory", "forbidden"),  # banned
    ]:
        refused = server.send(bob, Nick(name=name))
        if refused is None:  # answered by the store
            last = server.last("bob")
            assert isinstance(last, Error) and last.code == code, name
        else:
            assert refused.code == code, name
    server.run(server.relay.leave(boss, "quit"))
    server.send(bob, Nick(name="BOSS", ref=1))  # registered to someone else
    last = server.last("bob")
    assert isinstance(last, Error) and last.code == "forbidden"
    assert bob.name == "bob" and "bob" not in server.closed


def test_a_muted_user_stays_muted_after_a_nick(store: Store) -> None:
    server, boss, bob = op_server(store)
    server.send(boss, Mute(name="bob", minutes=10))
    server.send(bob, Nick(name="robert"))
    assert bob.name == "robert"
    refused = server.send(bob, Say(text="hi"))
    assert refused is not None and refused.code == "muted"


class HeldStore(MemoryStore):
    """A memory store whose answers wait while ``holding`` (as SQLite's come later)."""

    holding = True

    def completed(self) -> list[Completion]:
        return [] if self.holding else super().completed()


def test_frames_sent_before_the_store_answers_a_hello_are_kept_and_acted_on() -> None:
    store = HeldStore()
    relay = Relay(rate_limit=0, clock=Clock())
    pipeline = StorePipeline(relay, store)
    alice = relay.open("alice", "10.0.0.1")
    out = pipeline.run(relay.handle(alice, Hello(name="alice", ref="h")))
    out += pipeline.run(relay.handle(alice, Say(text="early", ref=1)))
    out += pipeline.run(relay.handle(alice, Who(ref=2)))
    assert out == [] and not alice.logged_in
    # a second hello for the same name meanwhile is refused: the name is held
    with pytest.raises(ProtocolError) as info:
        relay.handle(relay.open("x"), Hello(name="ALICE"))
    assert info.value.code == "name_taken"
    store.holding = False
    out += pipeline.drain()
    assert pipeline.waiting == 0
    events = [d.echo or d.event for d in out if isinstance(d, Delivery)]
    assert [type(e) for e in events] == [Ready, type(events[1]), Msg, Users]
    msg = events[2]
    assert isinstance(msg, Msg) and (msg.text, msg.ref) == ("early", 1)
