"""The sans-I/O connection core and hub, with no event loop and an injected clock.

Bytes go in through ``Hub.receive_data``/``receive_eof``, time through ``handle_timer``;
what comes out is read from ``data_to_send`` and ``shutdown_to_perform``, exactly as an
adapter would. Nothing here sleeps or opens a socket.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from chatcli.core.connection import (
    TRANSITIONS,
    Input,
    LineFraming,
    ServerConnection,
    Shutdown,
    State,
    Wire,
)
from chatcli.core.hub import Hub
from chatcli.core.protocol import TEXT_HELP, Ping
from chatcli.core.relay import Relay
from chatcli.settings import ServerSettings


class Clock:
    """A clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Rig:
    """A hub with a fake clock, and helpers to talk to it as a client would."""

    def __init__(self, **overrides: Any) -> None:
        self.clock = Clock()
        settings = ServerSettings(**{"rate_limit": 0, **overrides})
        relay = Relay(history=settings.history, rate_limit=0, monotonic=self.clock)
        self.hub = Hub(settings, relay, clock=self.clock)

    def connect(self, peer: str = "127.0.0.1:5000") -> ServerConnection:
        conn = self.hub.open(LineFraming(self.hub.settings.max_frame), peer)
        assert self.frames(conn)[0]["type"] == "welcome"
        return conn

    def login(self, name: str) -> ServerConnection:
        conn = self.connect(f"127.0.0.1:{len(self.hub.connections)}")
        self.send(conn, {"type": "hello", "name": name})
        assert self.frames(conn)[0]["type"] == "ready"
        return conn

    def send(self, conn: ServerConnection, frame: dict[str, Any] | bytes | str) -> None:
        if isinstance(frame, dict):
            data = json.dumps(frame).encode() + b"\n"
        elif isinstance(frame, str):
            data = frame.encode() + b"\n"
        else:
            data = frame
        self.hub.receive_data(conn, data)

    def tick(self, seconds: float) -> None:
        """Move the clock and fire every connection's due deadline, as the adapter does."""
        self.clock.now += seconds
        for conn in list(self.hub.connections):
            deadline = conn.next_deadline()
            if deadline is not None and deadline <= self.clock.now:
                self.hub.handle_timer(conn, self.clock.now)

    @staticmethod
    def raw(conn: ServerConnection) -> bytes:
        return b"".join(conn.data_to_send())

    def frames(self, conn: ServerConnection) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.raw(conn).splitlines()]

    def lines(self, conn: ServerConnection) -> list[str]:
        return self.raw(conn).decode().splitlines()


# ------------------------------------------------------------------------ state table


def test_every_transition_goes_through_the_table() -> None:
    rig = Rig()
    conn = rig.connect()
    assert conn.state is State.HANDSHAKE
    conn.handle_timer(rig.clock.now)  # nothing due: nothing happens
    assert conn.state is State.HANDSHAKE
    with pytest.raises(RuntimeError, match="HANDSHAKE connection cannot take LINGER_EXPIRED"):
        conn._move(Input.LINGER_EXPIRED)
    # the table never leaves CLOSED except to itself
    assert {after for (before, _), after in TRANSITIONS.items() if before is State.CLOSED} == {
        State.CLOSED
    }


def test_login_moves_to_open_and_eof_to_closing_then_closed() -> None:
    rig = Rig()
    alice = rig.login("alice")
    assert alice.state is State.OPEN
    rig.hub.receive_eof(alice)
    assert alice.state is State.CLOSING
    assert alice.shutdown_to_perform() is Shutdown.CLOSE  # the peer is gone: no half-close
    assert alice.next_deadline() == rig.clock.now + rig.hub.settings.close_linger
    rig.hub.connection_lost(alice)
    assert alice.state is State.CLOSED
    assert alice not in rig.hub.connections


# ----------------------------------------------------------------------- login timeout


def test_login_timeout_fires_at_the_deadline_and_not_before() -> None:
    rig = Rig(login_timeout=10)
    conn = rig.connect()
    assert conn.next_deadline() == rig.clock.now + 10
    rig.send(conn, {"type": "who"})  # talking is not logging in
    assert rig.frames(conn)[0]["code"] == "not_logged_in"
    rig.tick(9.999)
    assert conn.state is State.HANDSHAKE and rig.raw(conn) == b""
    rig.tick(0.001)
    assert rig.frames(conn) == [
        {"type": "error", "code": "login_timeout", "message": "no login within 10 seconds"}
    ]
    assert conn.state is State.CLOSING
    assert conn.shutdown_to_perform() is Shutdown.HALF_CLOSE
    assert conn in rig.hub.urgent


def test_login_in_time_cancels_the_login_timeout() -> None:
    rig = Rig(login_timeout=10, ping_interval=0)
    alice = rig.login("alice")
    assert alice.next_deadline() is None
    rig.tick(60)
    assert alice.state is State.OPEN and rig.raw(alice) == b""


# -------------------------------------------------------------------------- heartbeat


def test_heartbeat_pings_after_each_idle_interval_and_drops_after_three() -> None:
    rig = Rig(ping_interval=15)
    alice = rig.login("alice")
    bob = rig.login("bob")
    assert rig.frames(alice)[0]["type"] == "join"
    start = rig.clock.now
    assert bob.next_deadline() == start + 15
    rig.tick(14.9)
    assert rig.raw(bob) == b""
    rig.tick(0.1)  # one interval: ping
    assert rig.raw(bob) == b'{"type":"ping"}\n'
    assert bob.next_deadline() == start + 30
    rig.tick(15)  # two intervals: ping again
    assert rig.raw(bob) == b'{"type":"ping"}\n'
    # alice answers her pings, so she stays
    rig.send(alice, {"type": "pong"})
    rig.tick(14.9)
    assert bob.state is State.OPEN
    rig.tick(0.1)  # three silent intervals: bob is dropped, the room told
    assert bob.state is State.CLOSING
    assert bob.shutdown_to_perform() is Shutdown.HALF_CLOSE
    assert rig.raw(bob) == b""  # a timeout sends no error frame
    (leave,) = [f for f in rig.frames(alice) if f["type"] != "ping"]
    assert leave["type"] == "leave" and leave["name"] == "bob" and leave["reason"] == "timeout"
    assert alice.state is State.OPEN


def test_any_frame_is_a_sign_of_life_but_trickled_bytes_are_not() -> None:
    rig = Rig(ping_interval=15)
    alice = rig.login("alice")
    start = rig.clock.now
    rig.tick(10)
    rig.send(alice, {"type": "who"})  # a frame: the interval starts over
    rig.raw(alice)
    assert alice.next_deadline() == start + 25
    for _ in range(60):  # a byte a second, never a newline
        rig.send(alice, b"x")
        rig.tick(1)
        if alice.closing:
            break
    assert alice.state is State.CLOSING
    assert rig.clock.now == start + 10 + 45  # three intervals after the last frame


def test_text_sessions_are_never_pinged() -> None:
    rig = Rig(ping_interval=15)
    tom = rig.connect()
    rig.send(tom, "login tom")
    assert rig.lines(tom)[-1].startswith("-- you are tom in lobby")
    # no ping: only the generous --text-idle deadline (an hour by default)
    assert tom.next_deadline() == rig.clock.now + 3600
    rig.tick(100)
    assert tom.state is State.OPEN and rig.raw(tom) == b""


def test_a_text_session_idle_past_text_idle_is_closed() -> None:
    rig = Rig(text_idle=60)
    tom = rig.connect()
    rig.send(tom, "login tom")
    rig.lines(tom)
    rig.tick(50)
    rig.send(tom, "still here")
    rig.lines(tom)
    rig.tick(50)  # 50 s after its last line: still open
    assert tom.state is State.OPEN
    rig.tick(11)
    assert tom.state is State.CLOSING
    assert rig.lines(tom)[-1] == "-- idle for 60 seconds: closing"


def test_an_idle_limit_of_zero_keeps_text_sessions_forever() -> None:
    rig = Rig(text_idle=0)
    tom = rig.connect()
    rig.send(tom, "login tom")
    assert tom.next_deadline() is None


# ---------------------------------------------------------------------- mode detection


def test_blank_first_lines_do_not_decide_the_mode() -> None:
    rig = Rig()
    conn = rig.connect()
    rig.send(conn, b"   \n\t\n\r\n")
    assert conn.text is None
    rig.send(conn, b'  {"type":"hello","name":"ann"}\n')
    assert conn.text is False and rig.frames(conn)[0]["type"] == "ready"


def test_a_first_line_not_starting_with_a_brace_is_text_mode() -> None:
    rig = Rig()
    conn = rig.connect()
    rig.send(conn, b"\n  \nhelp\n")
    assert conn.text is True
    assert rig.lines(conn) == [TEXT_HELP]
    # once text, JSON is just text said to the room (after logging in)
    rig.send(conn, '{"type":"who"}')
    assert rig.lines(conn) == ["!! not_logged_in: log in first: login NAME"]


def test_replies_keep_the_order_of_the_frames_that_caused_them() -> None:
    rig = Rig()
    alice = rig.login("alice")
    rig.send(alice, b'{"type":"who","ref":1}\nnot json\n{"type":"rooms","ref":2}\n')
    kinds = [(f["type"], f.get("ref")) for f in rig.frames(alice)]
    assert kinds == [("users", None), ("error", None), ("rooms", None)]


# ------------------------------------------------------------------ frame too large


def test_frame_too_large_after_good_lines_acts_on_them_then_closes() -> None:
    rig = Rig(max_frame=100)
    alice = rig.login("alice")
    bob = rig.login("bob")
    rig.raw(alice)
    rig.send(bob, b'{"type":"say","text":"one","ref":"a"}\n' + b"y" * 500 + b"\n")
    out = rig.frames(bob)
    assert [f["type"] for f in out] == ["msg", "error"]
    assert out[0]["ref"] == "a"
    assert out[1] == {
        "type": "error",
        "code": "frame_too_large",
        "message": "frame exceeds 100 bytes",
    }
    assert bob.shutdown_to_perform() is Shutdown.HALF_CLOSE
    said, left = rig.frames(alice)
    assert said["text"] == "one" and left["type"] == "leave" and left["reason"] == "lost"
    rig.send(bob, b'{"type":"say","text":"after"}\n')  # input is discarded now
    assert rig.raw(alice) == b""


def test_frame_too_large_in_a_text_session_is_a_line() -> None:
    rig = Rig(max_frame=50)
    tom = rig.connect()
    rig.send(tom, "login tom")
    rig.raw(tom)
    rig.send(tom, b"w" * 200)  # no newline at all: the unfinished line is too long
    assert rig.lines(tom) == ["!! frame_too_large: frame exceeds 50 bytes"]


# ------------------------------------------------------------ close, half-close, linger


def test_bye_half_closes_and_lingers_until_the_peer_goes() -> None:
    rig = Rig(close_linger=2)
    alice = rig.login("alice")
    rig.send(alice, {"type": "bye"})
    assert alice.state is State.CLOSING
    assert alice.shutdown_to_perform() is Shutdown.HALF_CLOSE
    assert alice.next_deadline() == rig.clock.now + 2
    rig.send(alice, {"type": "say", "text": "too late"})
    assert rig.raw(alice) == b""
    rig.hub.receive_eof(alice)  # the peer closes its side in time: close now
    assert alice.shutdown_to_perform() is Shutdown.CLOSE
    # a peer that half-closed but does not read is still reset after the linger
    rig.tick(2)
    assert alice.state is State.CLOSED
    assert alice.shutdown_to_perform() is Shutdown.ABORT


def test_a_peer_that_never_closes_is_reset_after_the_linger() -> None:
    rig = Rig(close_linger=2)
    alice = rig.login("alice")
    rig.send(alice, {"type": "bye"})
    assert alice.shutdown_to_perform() is Shutdown.HALF_CLOSE
    rig.tick(1.999)
    assert alice.shutdown_to_perform() is None
    rig.tick(0.001)
    assert alice.state is State.CLOSED
    assert alice.shutdown_to_perform() is Shutdown.ABORT


def test_eof_after_an_unfinished_text_line_says_it_then_leaves_quit() -> None:
    rig = Rig()
    alice = rig.login("alice")
    rig.raw(alice)
    nc = rig.connect()
    rig.send(nc, b"login carol\nbye for now")
    rig.hub.receive_eof(nc)
    joined, said, left = rig.frames(alice)
    assert joined["name"] == "carol" and said["text"] == "bye for now"
    assert left["reason"] == "quit"
    assert nc.shutdown_to_perform() is Shutdown.CLOSE


def test_shutdown_tells_everyone_and_closes_them() -> None:
    rig = Rig()
    alice = rig.login("alice")
    bob = rig.login("bob")
    rig.raw(alice)
    rig.hub.shutdown()
    for conn in (alice, bob):
        assert rig.frames(conn) == [
            {"type": "error", "code": "server_shutdown", "message": "the server is shutting down"}
        ]
        assert conn.shutdown_to_perform() is Shutdown.HALF_CLOSE
    assert not rig.hub.relay.users


# ---------------------------------------------------------------------- slow consumer


def test_slow_consumer_is_cut_off_mid_fan_out_and_the_room_told() -> None:
    rig = Rig(max_buffer=1024)
    alice = rig.login("alice")
    slow = rig.login("slow")
    rig.raw(alice)
    behind = 0
    for i in range(20):
        rig.send(alice, {"type": "say", "text": f"{i:03d}" + "x" * 100})
        said, *rest = rig.raw(alice).splitlines(keepends=True)  # alice reads
        behind += len(said)  # slow is queued the same bytes and never reads
        assert slow.closing is (behind > 1024)
        if slow.closing:
            break
    assert slow.state is State.CLOSING
    # what it did not take is dropped; the error goes out last, alone
    assert rig.frames(slow) == [
        {"type": "error", "code": "slow_consumer", "message": "you are not reading"}
    ]
    (leave,) = [json.loads(line) for line in rest]
    assert leave["type"] == "leave" and leave["name"] == "slow" and leave["reason"] == "slow"


def test_the_transport_backlog_counts_toward_the_bound() -> None:
    rig = Rig(max_buffer=1024)
    alice = rig.login("alice")
    alice.buffered(1000)
    assert alice.state is State.OPEN
    alice.buffered(1025)
    assert alice.state is State.CLOSING


# ------------------------------------------------------------------------------ wires


def test_fan_out_encodes_once_per_wire_and_shares_the_bytes() -> None:
    rig = Rig()
    alice, bob = rig.login("alice"), rig.login("bob")
    tom = rig.connect()
    rig.send(tom, "login tom")
    carol = rig.login("carol")
    for conn in (alice, bob, tom, carol):
        conn.data_to_send()
    rig.send(alice, {"type": "say", "text": "hi", "ref": 7})
    (a,), (b,), (t,), (c,) = (c.data_to_send() for c in (alice, bob, tom, carol))
    assert b is c  # one encoding shared by every JSON recipient
    assert json.loads(a)["ref"] == 7 and "ref" not in json.loads(b)
    assert t.decode().endswith("<alice> hi\n")


def test_a_stream_takes_its_output_as_one_string_of_bytes() -> None:
    rig = Rig()
    alice = rig.login("alice")
    rig.hub.take_dirty(rig.clock.now)
    rig.send(alice, b'{"type":"who"}\n{"type":"rooms"}\n')
    assert rig.hub.dirty == [alice]  # told once, however much was queued
    data = alice.bytes_to_send()
    assert [json.loads(line)["type"] for line in data.splitlines()] == ["users", "rooms"]
    assert alice.bytes_to_send() == b"" and alice.data_to_send() == []


def test_a_message_wire_has_no_terminator() -> None:
    """How a WebSocket framing will write: one frame per message, no newline."""
    wire = Wire(text=False, terminator=b"")
    assert wire.encode(Ping()) == b'{"type":"ping"}'
    assert Wire(text=True, terminator=b"").line("hello") == b"hello"


# ------------------------------------------------------------------- write coalescing


def test_an_idle_hub_writes_at_once_and_a_busy_one_gathers() -> None:
    rig = Rig(flush_interval=0.001, flush_batch=3)
    alice = rig.login("alice")
    now = rig.clock.now
    rig.hub.take_dirty(now - 1)
    assert rig.hub.flush_delay(now) == 0  # nothing written for a second: idle
    rig.hub.take_dirty(now)
    assert rig.hub.flush_delay(now + 0.0004) == 0.001  # busy: gather up to an interval
    assert rig.hub.flush_delay(now + 0.0011) == 0  # quiet for an interval: idle again
    rig.send(alice, {"type": "say", "text": "one"})
    rig.send(alice, {"type": "say", "text": "two"})
    assert rig.hub.flush_delay(now + 0.0004) == 0.001  # two events gathered: wait on
    rig.send(alice, {"type": "say", "text": "three"})
    assert rig.hub.flush_delay(now + 0.0004) == 0  # a full batch: write now
    assert [f["text"] for f in rig.frames(alice)] == ["one", "two", "three"]
    rig.hub.take_dirty(now + 0.0004)
    assert rig.hub.flush_delay(now + 0.0005) == 0.001  # the count starts over


def test_the_connection_core_and_hub_import_no_io_library() -> None:
    """Convention 1: checked in a fresh interpreter, as for protocol and relay."""
    code = (
        "import sys, chatcli.core.connection, chatcli.core.hub\n"
        "bad = {'asyncio', 'socket', 'selectors', 'click', 'rich', 'uvloop'} & set(sys.modules)\n"
        "assert not bad, sorted(bad)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)


# ------------------------------------------------------------- hostile input (issue 13)


def test_telnet_negotiation_before_login_is_ignored() -> None:
    rig = Rig()
    putty = rig.connect()
    # what PuTTY's telnet mode sends first: WILL/DO options and a subnegotiation
    negotiation = b"\xff\xfb\x1f\xff\xfb\x20\xff\xfa\x18\x00xterm\xff\xf0\xff\xfd\x01"
    rig.send(putty, negotiation + b"login tom\r\n")
    assert rig.lines(putty)[-1].startswith("-- you are tom in lobby")
    rig.send(putty, b"\xff\xfd\x03hello there\r\n")
    assert rig.lines(putty)[-1].endswith("<tom> hello there")


def test_cr_nul_ends_a_line_even_split_between_reads() -> None:
    rig = Rig()
    tom = rig.connect()
    rig.send(tom, b"login tom\r\x00")
    assert rig.lines(tom)[-1].startswith("-- you are tom in lobby")
    rig.send(tom, b"one\r")
    rig.send(tom, b"\x00two\r\x00")
    lines = rig.lines(tom)
    assert lines[0].endswith("<tom> one") and lines[1].endswith("<tom> two")


def test_a_bom_before_a_json_hello_keeps_the_session_json() -> None:
    rig = Rig()
    conn = rig.connect()
    rig.send(conn, b'\xef\xbb\xbf{"type":"hello","name":"alice"}\n')
    assert conn.text is False
    assert rig.frames(conn)[0]["type"] == "ready"


def test_output_across_all_clients_is_bounded_largest_cut_first() -> None:
    rig = Rig(max_output_total=200_000, max_buffer=150_000)
    talker = rig.login("talker")
    readers = [rig.login(f"r{i}") for i in range(3)]
    sleepers = [rig.login(f"s{i}") for i in range(5)]
    text = "x" * 4000
    for i in range(12):
        rig.send(talker, {"type": "say", "text": f"{i} {text}"})
        for conn in [talker, *readers]:
            rig.raw(conn)  # these read everything they are sent
    # 5 sleepers x 12 messages of 4 KB would be 240 KB: the total stays bounded...
    assert rig.hub.meter.total <= 200_000
    cut = [s for s in sleepers if s.closing]
    assert cut, "somebody must have been cut"
    # ...the cut fell on those who do not read, never on the readers
    assert not any(c.closing for c in [talker, *readers])
    assert b"slow_consumer" in rig.raw(cut[0])
    rig.send(talker, {"type": "say", "text": "still serving"})
    assert rig.frames(readers[0])[-1]["text"] == "still serving"


def test_text_mode_help_and_unknown_commands_cost_tokens() -> None:
    clock = Clock()
    settings = ServerSettings(rate_limit=1, rate_burst=3)
    relay = Relay(rate_limit=1, rate_burst=3, monotonic=clock)
    rig_hub = Hub(settings, relay, clock=clock)
    conn = rig_hub.open(LineFraming(settings.max_frame), "127.0.0.1:1")
    conn.data_to_send()
    rig_hub.receive_data(conn, b"help\n" * 5)
    lines = b"".join(conn.data_to_send()).decode().splitlines()
    assert sum(line.startswith("commands:") for line in lines) == 3  # the burst
    assert lines[-2:] == ["!! rate_limited: slow down: request not taken"] * 2
