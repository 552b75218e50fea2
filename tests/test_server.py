"""The asyncio server against real sockets on 127.0.0.1 (a ChatServer on port 0 per test).

Every message type, every error code the server produces, text mode driven as nc would,
heartbeats, the slow consumer, floods, garbage, a thousand connections and shutdown.
Each test runs its own event loop (see helpers.async_test) and every read is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import time
from typing import Any

import pytest
from helpers import READ_TIMEOUT, LineClient, TestServer, async_test, serving

from chatcli import __version__
from chatcli.client.connection import connect
from chatcli.core.protocol import Msg, Say, Users, Who
from chatcli.errors import ConnectionFailed, ServerRefused

CLOCK = r"\d\d:\d\d:\d\d"


def assert_now(ts: Any) -> None:
    assert isinstance(ts, float)
    assert abs(ts - time.time()) < 5


def only(frame: dict[str, Any], **fields: Any) -> None:
    """Assert ``frame`` is exactly ``fields`` plus a current ``ts``."""
    ts = frame.pop("ts")
    assert_now(ts)
    assert frame == fields


# --------------------------------------------------------------------------- handshake


@async_test
async def test_welcome_on_connect() -> None:
    async with serving() as srv:
        client = await srv.connect()
        welcome = await client.recv()
        hint = welcome.pop("hint")
        assert "login" in hint and "hello" in hint
        assert welcome == {
            "type": "welcome",
            "server": f"chatcli/{__version__}",
            "proto": 1,
            "users": [],
            "rooms": [{"name": "lobby", "users": 0}],
            "features": ["resume", "board"],
        }


@async_test
async def test_welcome_lists_users_and_rooms() -> None:
    async with serving() as srv:
        await srv.login("bob")
        await srv.login("alice")
        await srv.login("carol", room="dev")
        client = await srv.connect()
        welcome = await client.expect("welcome")
        assert welcome["users"] == ["alice", "bob"]
        assert welcome["rooms"] == [{"name": "dev", "users": 1}, {"name": "lobby", "users": 2}]


@async_test
async def test_full_handshake_and_join() -> None:
    async with serving() as srv:
        alice = await srv.login("alice")
        assert isinstance(alice.ready.pop("epoch"), str)  # spec 1.1: checked in test_resume*
        assert isinstance(alice.ready.pop("resume"), str)
        assert alice.ready == {
            "type": "ready",
            "name": "alice",
            "room": "lobby",
            "users": ["alice"],
            "history": [],
        }
        bob = await srv.connect()
        await bob.expect("welcome", users=["alice"])
        await bob.send({"type": "hello", "name": "bob", "room": "lobby", "since": None})
        ready = await bob.recv()
        assert ready.pop("epoch") and ready.pop("resume")
        assert ready == {
            "type": "ready",
            "name": "bob",
            "room": "lobby",
            "users": ["alice", "bob"],
            "history": [],
        }
        only(await alice.recv(), type="join", room="lobby", name="bob")
        await alice.nothing_pending()


@async_test
async def test_ready_history_and_since() -> None:
    async with serving(history=5, rate_limit=0) as srv:
        alice = await srv.login("alice")
        for i in range(1, 9):
            await alice.send({"type": "say", "text": f"m{i}"})
            await alice.expect("msg", id=i)
        bob = await srv.login("bob")
        assert [m["id"] for m in bob.ready["history"]] == [4, 5, 6, 7, 8]
        first = bob.ready["history"][0]
        assert first["type"] == "msg" and first["text"] == "m4" and first["from"] == "alice"
        carol = await srv.login("carol", history=2)
        assert [m["text"] for m in carol.ready["history"]] == ["m7", "m8"]
        dave = await srv.login("dave", history=0)
        assert dave.ready["history"] == []
        erin = await srv.login("erin", since=6)
        assert [m["id"] for m in erin.ready["history"]] == [7, 8]
        assert "truncated" not in erin.ready
        fred = await srv.login("fred", since=1)
        assert [m["id"] for m in fred.ready["history"]] == [4, 5, 6, 7, 8]
        assert fred.ready["truncated"] is True


# ------------------------------------------------------------------------------- chat


@async_test
async def test_say_reaches_everyone_ref_only_to_the_sender() -> None:
    async with serving() as srv:
        alice = await srv.login("alice")
        bob = await srv.login("bob")
        carol = await srv.login("carol", room="dev")
        await alice.expect("join", name="bob")
        await alice.send({"type": "say", "text": "hi", "ref": "c-17"})
        echo = await alice.recv()
        only(echo, type="msg", id=1, room="lobby", text="hi", ref="c-17", **{"from": "alice"})
        relayed = await bob.recv()
        only(relayed, type="msg", id=1, room="lobby", text="hi", **{"from": "alice"})
        await carol.nothing_pending()
        await alice.send({"type": "say", "text": "again", "ref": 5})
        assert (await alice.expect("msg", id=2))["ref"] == 5
        assert "ref" not in await bob.expect("msg", id=2)


@async_test
async def test_me_is_relayed_as_an_action() -> None:
    async with serving() as srv:
        alice = await srv.login("alice")
        bob = await srv.login("bob")
        await alice.expect("join")
        await alice.send({"type": "me", "text": "waves", "ref": "m"})
        await alice.expect("msg", action=True, text="waves", ref="m", from_="alice")
        only(
            await bob.recv(),
            type="msg",
            id=1,
            room="lobby",
            text="waves",
            action=True,
            **{"from": "alice"},
        )


@async_test
async def test_dm() -> None:
    async with serving() as srv:
        alice = await srv.login("alice")
        bob = await srv.login("bob", room="dev")
        carol = await srv.login("carol")
        await alice.expect("join", name="carol")
        await alice.send({"type": "dm", "to": "BOB", "text": "psst", "ref": "d1"})
        only(await bob.recv(), type="dm", to="bob", text="psst", **{"from": "alice"})
        only(await alice.recv(), type="dm", to="bob", text="psst", ref="d1", **{"from": "alice"})
        await carol.nothing_pending()
        await alice.send({"type": "dm", "to": "alice", "text": "note to self"})
        await alice.expect("dm", to="alice", text="note to self", from_="alice")
        await alice.nothing_pending()


@async_test
async def test_who_and_rooms() -> None:
    async with serving() as srv:
        alice = await srv.login("alice")
        await srv.login("Bob")
        await srv.login("carol", room="dev")
        await alice.expect("join")
        await alice.send({"type": "who"})
        assert await alice.recv() == {"type": "users", "room": "lobby", "users": ["alice", "Bob"]}
        await alice.send({"type": "rooms"})
        assert await alice.recv() == {
            "type": "rooms",
            "rooms": [{"name": "dev", "users": 1}, {"name": "lobby", "users": 2}],
        }


@async_test
async def test_join_another_room() -> None:
    async with serving() as srv:
        alice = await srv.login("alice")
        bob = await srv.login("bob")
        carol = await srv.login("carol", room="dev")
        await alice.expect("join", name="bob")
        await carol.send({"type": "say", "text": "dev talk"})
        await carol.expect("msg")
        await alice.send({"type": "join", "room": "dev"})
        ready = await alice.expect("ready", name="alice", room="dev", users=["alice", "carol"])
        assert [m["text"] for m in ready["history"]] == ["dev talk"]
        only(await bob.recv(), type="leave", room="lobby", name="alice", reason="part")
        only(await carol.recv(), type="join", room="dev", name="alice")
        await alice.send({"type": "say", "text": "hello dev"})
        await carol.expect("msg", room="dev", text="hello dev", id=2)
        await bob.nothing_pending()


@async_test
async def test_bye_closes_and_the_room_gets_leave_quit() -> None:
    async with serving() as srv:
        alice = await srv.login("alice")
        bob = await srv.login("bob")
        await alice.expect("join")
        await bob.send({"type": "bye"})
        assert await bob.eof() == b""
        only(await alice.recv(), type="leave", room="lobby", name="bob", reason="quit")


@async_test
async def test_ping_pong_both_ways() -> None:
    async with serving() as srv:
        anon = await srv.connect()
        await anon.expect("welcome")
        await anon.send({"type": "ping"})
        assert await anon.recv() == {"type": "pong"}
        alice = await srv.login("alice")
        await alice.send({"type": "ping"})
        assert await alice.recv() == {"type": "pong"}
        await alice.send({"type": "pong"})  # an unsolicited pong is simply ignored
        await alice.nothing_pending()


@async_test
async def test_spoofed_from_is_ignored() -> None:
    async with serving() as srv:
        alice = await srv.login("alice")
        bob = await srv.login("bob")
        await alice.expect("join")
        await alice.send({"type": "say", "text": "trust me", "from": "bob", "id": 99, "ts": 1.0})
        msg = await bob.expect("msg", from_="alice", id=1, text="trust me")
        assert_now(msg["ts"])
        await alice.send({"type": "dm", "to": "bob", "text": "x", "from": "server"})
        await bob.expect("dm", from_="alice")


@async_test
async def test_escape_sequences_and_controls_are_stripped_before_relaying() -> None:
    async with serving() as srv:
        alice = await srv.login("alice")
        bob = await srv.login("bob")
        await alice.expect("join")
        dirty = "\x1b[31mred\x1b[0m \x1b]0;pwned\x07\u202eevil\x07\x00 \x9b2Jok"
        await alice.send({"type": "say", "text": dirty})
        await bob.expect("msg", text="red evil ok")
        await alice.send({"type": "dm", "to": "bob", "text": "\x1b[2Jhi\x7f"})
        await bob.expect("dm", text="hi")


# ----------------------------------------------------------------------------- errors


@async_test
async def test_bad_request_keeps_the_connection_open() -> None:
    async with serving() as srv:
        alice = await srv.login("alice")
        for line, ref in [
            (b"this is not json\n", None),
            (b'{"type":"say","text":"\xff\xfe"}\n', None),
            (b"[1,2,3]\n", None),
            (b'{"no":"type"}\n', None),
            (b'{"type":"say","text":42,"ref":"r1"}\n', "r1"),
            (b'{"type":"say","text":"   ","ref":"r2"}\n', "r2"),
            (b'{"type":"say","text":"' + b"x" * 4097 + b'","ref":"r3"}\n', "r3"),
            (b'{"type":"hello","name":"alice2"}\n', None),
            (b'{"type":"join","room":"Bad Room","ref":"r4"}\n', "r4"),
            (b"[" * 50_000 + b"\n", None),
        ]:
            await alice.send(line)
            error = await alice.expect("error", code="bad_request")
            assert error.get("ref") == ref, (line[:60], error)
            assert error["message"]
        await alice.send({"type": "who"})
        await alice.expect("users", users=["alice"])


@async_test
async def test_unknown_type_keeps_the_connection_open() -> None:
    async with serving() as srv:
        alice = await srv.login("alice")
        await alice.send({"type": "teleport", "ref": "t1"})
        error = await alice.expect("error", code="unknown_type", ref="t1")
        assert "teleport" in error["message"]
        await alice.send({"type": "msg", "text": "servers send these"})
        await alice.expect("error", code="unknown_type")
        await alice.send({"type": "say", "text": "still here"})
        await alice.expect("msg", text="still here")


@async_test
async def test_frame_too_large_error_arrives_before_the_close() -> None:
    async with serving(max_frame=1024) as srv:
        alice = await srv.login("alice")
        bob = await srv.login("bob")
        await alice.expect("join")
        await bob.send({"type": "say", "text": "x" * 900})  # under the limit: fine
        await bob.expect("msg")
        await alice.expect("msg")
        await bob.send(b'{"type":"say","text":"' + b"y" * 2000 + b'"}\n')
        error = await bob.expect("error", code="frame_too_large")
        assert "1024" in error["message"]
        assert await bob.eof() == b""
        await alice.expect("leave", name="bob", reason="lost")


@async_test
async def test_frame_too_large_unfinished_line_and_more_input_after_it() -> None:
    """No newline at all, and the client keeps sending: the error still arrives, no reset."""
    async with serving(max_frame=1024) as srv:
        client = await srv.connect()
        await client.expect("welcome")
        await client.send(b"z" * 300_000)
        await client.expect("error", code="frame_too_large")
        assert await client.eof() == b""


@async_test
async def test_text_session_gets_frame_too_large_as_a_line() -> None:
    async with serving(max_frame=1024) as srv:
        tom, _ = await srv.text_login("tom")
        await tom.send("w" * 3000)
        assert await tom.text() == "!! frame_too_large: frame exceeds 1024 bytes"
        assert await tom.eof() == b""


@pytest.mark.parametrize("name", ["bad name", "x" * 25, "server", "SYSTEM", "аlice", ""])
@async_test
async def test_name_invalid_closes(name: str) -> None:
    async with serving() as srv:
        client = await srv.connect()
        await client.expect("welcome")
        await client.send({"type": "hello", "name": name})
        await client.expect("error", code="name_invalid")
        assert await client.eof() == b""


@async_test
async def test_name_taken_case_insensitively_closes() -> None:
    async with serving() as srv:
        alice = await srv.login("alice")
        client = await srv.connect()
        await client.expect("welcome")
        await client.send({"type": "hello", "name": "ALICE"})
        error = await client.expect("error", code="name_taken")
        assert "ALICE" in error["message"]
        assert await client.eof() == b""
        await alice.nothing_pending()


@async_test
async def test_invalid_room_in_hello_is_bad_request_and_login_can_be_retried() -> None:
    async with serving() as srv:
        client = await srv.connect()
        await client.expect("welcome")
        await client.send({"type": "hello", "name": "bob", "room": "Not-Lowercase"})
        await client.expect("error", code="bad_request")
        await client.send({"type": "hello", "name": "bob", "room": "dev"})
        await client.expect("ready", name="bob", room="dev")


@async_test
async def test_login_timeout() -> None:
    async with serving(login_timeout=0.3) as srv:
        alice = await srv.login("alice")
        lurker = await srv.connect()
        await lurker.expect("welcome")
        await lurker.send({"type": "who"})  # talking is not logging in
        await lurker.expect("error", code="not_logged_in")
        # when exactly it fires is tested with a fake clock (test_connection.py)
        error = await lurker.expect("error", code="login_timeout", timeout=3)
        assert "0.3" in error["message"]
        assert await lurker.eof() == b""
        # a client that logged in in time is not affected
        await alice.send({"type": "who"})
        await alice.expect("users")


@async_test
async def test_not_logged_in_keeps_the_connection_open() -> None:
    async with serving() as srv:
        client = await srv.connect()
        await client.expect("welcome")
        for frame in [
            {"type": "say", "text": "hi", "ref": "s"},
            {"type": "me", "text": "hi", "ref": "m"},
            {"type": "dm", "to": "x", "text": "hi", "ref": "d"},
            {"type": "who"},
            {"type": "rooms"},
            {"type": "join", "room": "dev"},
        ]:
            await client.send(frame)
            error = await client.expect("error", code="not_logged_in")
            assert error.get("ref") == frame.get("ref")
        await client.send({"type": "hello", "name": "late"})
        await client.expect("ready", name="late")


@async_test
async def test_no_such_user() -> None:
    async with serving() as srv:
        alice = await srv.login("alice")
        await alice.send({"type": "dm", "to": "ghost", "text": "boo", "ref": 3})
        error = await alice.expect("error", code="no_such_user", ref=3)
        assert "ghost" in error["message"]
        await alice.send({"type": "who"})
        await alice.expect("users")


@async_test
async def test_rate_limited_one_error_per_refused_message() -> None:
    async with serving(rate_limit=4, rate_burst=3) as srv:
        alice = await srv.login("alice")
        bob = await srv.login("bob")
        await alice.expect("join")
        # one write, so the whole flood arrives well within one token's refill time
        await alice.send(
            b"".join(
                json.dumps({"type": "say", "text": f"flood {i}", "ref": i}).encode() + b"\n"
                for i in range(10)
            )
        )
        frames = [await alice.recv() for _ in range(10)]
        said = [f["ref"] for f in frames if f["type"] == "msg"]
        refused = [f["ref"] for f in frames if f["type"] == "error"]
        assert said == [0, 1, 2]
        assert refused == list(range(3, 10))
        assert {f.get("code") for f in frames if f["type"] == "error"} == {"rate_limited"}
        assert [(await bob.recv())["text"] for _ in range(3)] == ["flood 0", "flood 1", "flood 2"]
        await bob.nothing_pending()
        # flooding alone does not get a client disconnected; tokens come back with time
        await asyncio.sleep(0.3)
        await alice.send({"type": "say", "text": "calm now", "ref": "ok"})
        await alice.expect("msg", ref="ok", id=4)
        await bob.expect("msg", text="calm now")


@async_test
async def test_rate_limit_applies_to_text_sessions_too() -> None:
    async with serving(rate_limit=1, rate_burst=1) as srv:
        tom, _ = await srv.text_login("tom")
        await tom.send("one\ntwo\n")
        assert re.fullmatch(rf"{CLOCK} \[lobby\] <tom> one", await tom.text())
        assert (await tom.text()).startswith("!! rate_limited: ")


@async_test(timeout=30)
async def test_slow_consumer_is_cut_off_and_the_others_are_not_stalled() -> None:
    async with serving(rate_limit=0, max_buffer=64 * 1024, close_linger=5) as srv:
        # a client that never reads, with a small kernel receive buffer
        slow = await srv.login("slow", rcvbuf=4096, limit=8192)
        alice = await srv.login("alice")
        bob = await srv.login("bob")
        await alice.expect("join", name="bob")
        text = "x" * 4000
        worst = 0.0
        left = None
        for i in range(3000):  # the slow one is cut off well before
            started = time.monotonic()
            await alice.send({"type": "say", "text": text, "ref": i})
            # the echo of this message, unless the slow one's leave comes first
            frame = await alice.recv_until(lambda f: f.get("ref") == i or f["type"] == "leave")  # noqa: B023
            worst = max(worst, time.monotonic() - started)
            if frame["type"] == "leave":
                left = frame
                break
            await bob.recv_until("msg", id=i + 1)
        assert left is not None, "the slow consumer was never cut off"
        only(left, type="leave", room="lobby", name="slow", reason="slow")
        assert worst < 1.0, f"a reader waited {worst:.2f} s for its own message"
        # the slow client, reading at last, finds the error after what was queued, then EOF
        tail = (await slow.eof(timeout=10)).rstrip(b"\n").rsplit(b"\n", 1)[-1]
        assert json.loads(tail) == {
            "type": "error",
            "code": "slow_consumer",
            "message": "you are not reading",
        }
        await bob.recv_until("leave", name="slow")
        # chat goes on
        await bob.send({"type": "say", "text": "after", "ref": "b"})
        await alice.recv_until(text="after")


# -------------------------------------------------------------------------- text mode


@async_test
async def test_text_mode_as_nc_would_drive_it() -> None:
    async with serving() as srv:
        alice = await srv.login("alice")
        nc = await srv.connect()
        welcome = await nc.expect("welcome")  # the one JSON line: it cannot know yet
        assert "login" in welcome["hint"]
        await nc.send("hello?")  # the first line decides: a text session
        assert await nc.text() == "!! not_logged_in: log in first: login NAME"
        await nc.send("login carol")
        assert await nc.text() == "-- you are carol in lobby; here: alice, carol"
        await alice.expect("join", name="carol")

        await nc.send("hi all")
        assert re.fullmatch(rf"{CLOCK} \[lobby\] <carol> hi all", await nc.text())
        await alice.expect("msg", from_="carol", text="hi all", id=1)
        await nc.send("say  spaced  out ")
        assert re.fullmatch(rf"{CLOCK} \[lobby\] <carol> spaced  out", await nc.text())
        await alice.expect("msg", text="spaced  out")

        await alice.send({"type": "say", "text": "hi carol"})
        await alice.expect("msg")
        assert re.fullmatch(rf"{CLOCK} \[lobby\] <alice> hi carol", await nc.text())

        await nc.send("/who")
        assert await nc.text() == "-- in lobby: alice, carol"
        await nc.send("look")
        assert await nc.text() == "-- in lobby: alice, carol"
        await nc.send("/rooms")
        assert await nc.text() == "-- rooms: lobby (2)"

        await nc.send("/msg alice psst")
        assert re.fullmatch(rf"{CLOCK} \[dm\] carol -> alice: psst", await nc.text())
        await alice.expect("dm", from_="carol", to="alice", text="psst")
        await alice.send({"type": "dm", "to": "carol", "text": "back"})
        await alice.expect("dm")
        assert re.fullmatch(rf"{CLOCK} \[dm\] alice -> carol: back", await nc.text())

        await nc.send("/me waves")
        assert re.fullmatch(rf"{CLOCK} \[lobby\] \* carol waves", await nc.text())
        await alice.expect("msg", action=True, text="waves", from_="carol")

        await nc.send("/msg ghost boo")
        assert await nc.text() == "!! no_such_user: no user named 'ghost' is online"
        await nc.send("/frobnicate")
        assert await nc.text() == "!! unknown command /frobnicate; try /help"
        await nc.send("/help")
        assert (await nc.text()).startswith("commands: login NAME")
        await nc.send("   ")
        assert await nc.text() == "!! bad_request: text is empty"
        await nc.send("/join Bad")
        assert (await nc.text()).startswith("!! bad_request: ")
        await nc.send("\x1b[31mcolour\x1b[0m \u202eflip")
        assert re.fullmatch(rf"{CLOCK} \[lobby\] <carol> colour flip", await nc.text())
        await alice.expect("msg", text="colour flip")

        await nc.send("/join dev")
        assert await nc.text() == "-- you are carol in dev; here: carol"
        await alice.expect("leave", name="carol", reason="part")
        await alice.send({"type": "join", "room": "dev"})
        await alice.expect("ready")
        assert re.fullmatch(rf"{CLOCK} -- alice joined dev", await nc.text())
        await alice.send({"type": "bye"})
        assert re.fullmatch(rf"{CLOCK} -- alice left dev \(quit\)", await nc.text())

        await nc.send("/quit")
        assert await nc.eof() == b""


@async_test
async def test_text_session_gets_history_and_leaves_on_eof() -> None:
    async with serving() as srv:
        alice = await srv.login("alice")
        await alice.send({"type": "say", "text": "before you came"})
        await alice.expect("msg")
        nc = await srv.connect()
        await nc.expect("welcome")
        await nc.send(b"\r\n  \r\nlogin dave\r\n")  # telnet line endings, blank lines first
        assert re.fullmatch(rf"{CLOCK} \[lobby\] <alice> before you came", await nc.text())
        assert await nc.text() == "-- you are dave in lobby; here: alice, dave"
        await alice.expect("join", name="dave")
        nc.writer.write_eof()  # Ctrl-D in nc
        assert await nc.eof() == b""
        await alice.expect("leave", name="dave", reason="quit")


@async_test
async def test_text_login_failure_closes_with_a_plain_line() -> None:
    async with serving() as srv:
        await srv.login("alice")
        nc = await srv.connect()
        await nc.expect("welcome")
        await nc.send("login Alice")
        assert await nc.text() == "!! name_taken: the name 'Alice' is already in use"
        assert await nc.eof() == b""
        nc2 = await srv.connect()
        await nc2.expect("welcome")
        await nc2.send("login server")
        assert (await nc2.text()).startswith("!! name_invalid: ")
        assert await nc2.eof() == b""


@async_test
async def test_text_and_json_sessions_see_each_other() -> None:
    async with serving() as srv:
        tom, ready = await srv.text_login("tom")
        assert ready == "-- you are tom in lobby; here: tom"
        alice = await srv.login("alice")
        assert alice.ready["users"] == ["alice", "tom"]
        assert re.fullmatch(rf"{CLOCK} -- alice joined lobby", await tom.text())
        await alice.send({"type": "who"})
        await alice.expect("users", users=["alice", "tom"])
        await tom.send("bye now")
        await alice.expect("msg", from_="tom", text="bye now")
        await tom.text()
        await tom.send("logout")
        assert await tom.eof() == b""
        await alice.expect("leave", name="tom", reason="quit")


# -------------------------------------------------------------------------- heartbeat


@async_test
async def test_heartbeat_pings_idle_clients_and_drops_silent_ones() -> None:
    async with serving(ping_interval=0.2) as srv:
        alice = await srv.login("alice")  # answers pings
        bob = await srv.login("bob")  # never answers
        tom, _ = await srv.text_login("tom")  # text sessions are not pinged
        await alice.expect("join", name="bob")
        await alice.expect("join", name="tom")
        await bob.expect("join", name="tom")
        # the timing (ping after one idle interval, drop after three) is tested with a
        # fake clock in test_connection.py; here: the real sockets see it happen
        pings = 0
        while True:
            frame = await alice.recv(timeout=3)
            if frame["type"] == "ping":
                pings += 1
                await alice.send({"type": "pong"})
                continue
            only(frame, type="leave", room="lobby", name="bob", reason="timeout")
            break
        assert pings >= 1
        # bob got a ping each idle interval, then the close
        rest = await bob.eof()
        assert set(rest.splitlines()) == {b'{"type":"ping"}'}
        assert re.fullmatch(rf"{CLOCK} -- bob left lobby \(timed out\)", await tom.text())
        # alice and tom survive a few more intervals
        deadline = time.monotonic() + 0.8
        while time.monotonic() < deadline:
            try:
                frame = await alice.recv(timeout=deadline - time.monotonic())
            except AssertionError:
                break
            assert frame == {"type": "ping"}
            await alice.send({"type": "pong"})
        await alice.send({"type": "who"})
        await alice.recv_until("users")
        await tom.send("/who")
        assert await tom.text() == "-- in lobby: alice, tom"


# ------------------------------------------------------------------ abrupt disconnects


@async_test
async def test_abrupt_disconnect_is_leave_lost() -> None:
    async with serving() as srv:
        alice = await srv.login("alice")
        bob = await srv.login("bob")
        carol = await srv.login("carol")
        await alice.expect("join", name="bob")
        await alice.expect("join", name="carol")
        bob.abort()  # FIN without bye
        only(await alice.recv(), type="leave", room="lobby", name="bob", reason="lost")
        await carol.recv()  # bob's leave: carol had not read that one yet
        carol.reset()  # with unread data, a reset
        only(await alice.recv(), type="leave", room="lobby", name="carol", reason="lost")
        await alice.send({"type": "who"})
        await alice.expect("users", users=["alice"])


@async_test
async def test_shutdown_survives_a_client_that_just_went_away() -> None:
    """A peer gone (not yet noticed) at shutdown must not break the shutdown of the rest."""
    async with serving() as srv:
        gone = await srv.login("gone")
        stay = await srv.login("stay")
        await gone.expect("join", name="stay")
        gone.abort()
        await asyncio.sleep(0)  # its socket is closed, the server has not read that yet
        shutdown = asyncio.create_task(srv.server.shutdown())
        *before, last = map(json.loads, (await stay.eof()).splitlines())
        assert last == {
            "type": "error",
            "code": "server_shutdown",
            "message": "the server is shutting down",
        }
        # depending on the event loop, the server may have noticed the leave first
        assert all(f["type"] == "leave" and f["name"] == "gone" for f in before), before
        await stay.close()
        await asyncio.wait_for(shutdown, 3)


# --------------------------------------------------------------------------- shutdown


@async_test
async def test_server_shutdown_tells_everyone_then_closes() -> None:
    async with serving() as srv:
        clients = [await srv.login(name) for name in ("alice", "bob")]
        clients.append(await srv.login("carol", room="dev"))
        anon = await srv.connect()
        await anon.expect("welcome")
        tom, _ = await srv.text_login("tom")
        for client in clients[:2]:
            await client.recv_until("join", name="tom")
        started = time.monotonic()
        shutdown = asyncio.create_task(srv.server.shutdown())

        async def hears_shutdown(client: LineClient) -> None:
            frame = await client.recv()
            assert frame == {
                "type": "error",
                "code": "server_shutdown",
                "message": "the server is shutting down",
            }
            assert await client.eof() == b""
            await client.close()

        async def tom_hears_shutdown() -> None:
            assert await tom.text() == "!! server_shutdown: the server is shutting down"
            assert await tom.eof() == b""
            await tom.close()

        await asyncio.gather(*map(hears_shutdown, [*clients, anon]), tom_hears_shutdown())
        await asyncio.wait_for(shutdown, 3)
        assert time.monotonic() - started < 1.4  # nobody needed the 1.5 s grace
        assert not srv.server.connections
        with pytest.raises(OSError):
            await LineClient.open(srv.port)


@async_test
async def test_shutdown_resets_clients_that_never_close() -> None:
    async with serving(shutdown_grace=0.3) as srv:
        alice = await srv.login("alice")
        started = time.monotonic()
        await asyncio.wait_for(srv.server.shutdown(), 3)
        assert time.monotonic() - started < 1.5
        await alice.expect("error", code="server_shutdown")


@async_test
async def test_connections_over_the_limit_are_told_and_closed() -> None:
    async with serving(max_connections=2) as srv:
        alice = await srv.login("alice")
        await srv.login("bob")
        extra = await srv.connect()
        assert await extra.recv() == {
            "type": "error",
            "code": "server_full",
            "message": "too many connections",
        }
        assert await extra.eof() == b""
        await alice.send({"type": "who"})
        await alice.recv_until("users")


# ------------------------------------------------------------------------ bad traffic


@async_test
async def test_garbage_bytes_do_not_crash_the_server() -> None:
    rng = random.Random(20240521)
    async with serving(rate_limit=0, max_frame=4096) as srv:
        alice = await srv.login("alice")
        bob = await srv.login("bob")
        await alice.expect("join", name="bob")
        vandals = [await srv.connect() for _ in range(4)]
        vandals.append(await srv.login("vandal"))  # a JSON session gone mad
        await alice.expect("join", name="vandal")
        for round_ in range(20):
            for vandal in vandals:
                # a vandal may have been closed for a frame_too_large: fair enough
                with contextlib.suppress(ConnectionError, TimeoutError):
                    await vandal.send(rng.randbytes(rng.randint(1, 3000)))
            await alice.send({"type": "say", "text": f"round {round_}", "ref": round_})
            await alice.recv_until(ref=round_)
            await bob.recv_until(text=f"round {round_}")
        late = await srv.login("late")
        await late.send({"type": "say", "text": "still serving"})
        await bob.recv_until(text="still serving")


@async_test(timeout=40)
async def test_a_thousand_connections_logged_in_while_chat_goes_on() -> None:
    n, rooms = 1000, 50
    async with serving(rate_limit=0, history=0) as srv:
        gate = asyncio.Semaphore(200)

        async def one(i: int) -> LineClient:
            async with gate:
                return await srv.login(f"user{i}", room=f"r{i % rooms}", history=0)

        crowd = await asyncio.gather(*(one(i) for i in range(n)))
        assert len(srv.server.relay.users) == n
        alice = await srv.login("alice")
        bob = await srv.login("bob")
        await alice.expect("join", name="bob")
        assert sum(r["users"] for r in alice.welcome["rooms"]) == n
        assert len(alice.welcome["rooms"]) == rooms + 1
        started = time.monotonic()
        for i in range(20):
            await alice.send({"type": "say", "text": f"m{i}", "ref": i})
            await alice.expect("msg", ref=i)
            await bob.expect("msg", text=f"m{i}")
        assert time.monotonic() - started < 5
        # a message in a crowded room reaches every one of its members
        speaker = crowd[7]
        await speaker.send({"type": "say", "text": "hello r7"})
        members = [c for i, c in enumerate(crowd) if i % rooms == 7]
        for member in members:
            await member.recv_until(text="hello r7")


# -------------------------------------------------------------------- the client library


@async_test
async def test_client_connect_chat_and_close() -> None:
    async with serving() as srv:
        alice = await srv.login("alice")
        client = await connect("127.0.0.1", srv.port, "bob", history=0, timeout=READ_TIMEOUT)
        assert client.name == "bob"
        assert client.ready is not None and client.ready.users == ["alice", "bob"]
        assert client.welcome is not None and client.welcome.users == ["alice"]
        await alice.expect("join", name="bob")
        await client.send(Say(text="hi", ref=client.next_ref()))
        echo = await asyncio.wait_for(client.receive(), READ_TIMEOUT)
        assert isinstance(echo, Msg)
        assert echo == Msg(id=1, room="lobby", from_="bob", text="hi", ts=echo.ts, ref="c-1")
        await alice.expect("msg", from_="bob")
        await client.send(Who())
        assert await asyncio.wait_for(client.receive(), READ_TIMEOUT) == Users(
            room="lobby", users=["alice", "bob"]
        )
        await client.close()
        await alice.expect("leave", name="bob", reason="quit")


@async_test
async def test_client_answers_pings_by_itself() -> None:
    async with serving(ping_interval=0.2) as srv:
        client = await connect("127.0.0.1", srv.port, "bot", timeout=READ_TIMEOUT)

        async def listen() -> None:
            async for _ in client.events():
                pass

        task = asyncio.create_task(listen())
        await asyncio.sleep(0.8)  # past 3 intervals: it would be gone had it not answered
        assert not task.done()
        assert "bot" in srv.server.relay.users
        await client.close()
        await asyncio.wait_for(task, READ_TIMEOUT)


@async_test
async def test_client_errors_are_chat_errors() -> None:
    async with serving() as srv:
        alice = await srv.login("alice")
        with pytest.raises(ServerRefused) as info:
            await connect("127.0.0.1", srv.port, "Alice", timeout=READ_TIMEOUT)
        assert info.value.code == "name_taken"
        with pytest.raises(ServerRefused) as info:
            await connect("127.0.0.1", srv.port, "no good", timeout=READ_TIMEOUT)
        assert info.value.code == "name_invalid"
        client = await connect("127.0.0.1", srv.port, "bob", timeout=READ_TIMEOUT)
        await alice.close()
        shutdown = asyncio.create_task(srv.server.shutdown())
        with pytest.raises(ServerRefused) as info:
            async with asyncio.timeout(READ_TIMEOUT):
                while True:  # alice's leave first
                    await client.receive()
        assert info.value.code == "server_shutdown"
        await client.close(bye=False)
        await asyncio.wait_for(shutdown, 3)
        port = srv.port
    with pytest.raises(ConnectionFailed, match="refused"):
        await connect("127.0.0.1", port, "carol", timeout=READ_TIMEOUT)


@async_test
async def test_client_can_join_a_room_full_of_long_messages() -> None:
    async with serving(rate_limit=0) as srv:
        alice = await srv.login("alice")
        for _ in range(50):  # 4096 quotes: 8 KiB each once JSON-escaped
            await alice.send({"type": "say", "text": '"' * 4096})
            await alice.expect("msg")
        client = await connect("127.0.0.1", srv.port, "bob", timeout=READ_TIMEOUT)
        assert client.ready is not None and len(client.ready.history) == 50
        await client.close()


def test_helpers_bound_a_hung_test() -> None:
    """The async_test timeout really fires (so no test here can hang the suite)."""

    @async_test(timeout=0.2)
    async def hangs() -> None:
        await asyncio.sleep(10)

    with pytest.raises(TimeoutError):
        hangs()


def test_test_server_is_not_collected() -> None:
    assert TestServer.__test__ is False


@async_test
async def test_trickled_bytes_are_not_a_sign_of_life() -> None:
    """A client that sends bytes but never finishes a frame is still timed out."""
    async with serving(ping_interval=0.2) as srv:
        alice = await srv.login("alice")
        trickler = await srv.login("trickler")
        await alice.expect("join", name="trickler")
        started = time.monotonic()
        while True:  # a byte every 0.1 s, never a newline
            await trickler.send(b"x")
            try:
                frame = await alice.recv(timeout=0.1)
            except AssertionError:  # nothing within 0.1 s: trickle on
                frame = None
            if frame and frame["type"] == "ping":
                await alice.send({"type": "pong"})
            elif frame:
                only(frame, type="leave", room="lobby", name="trickler", reason="timeout")
                break
            assert time.monotonic() - started < 3, "the trickler was never timed out"


@async_test
async def test_a_last_text_line_cut_short_by_eof_is_still_said() -> None:
    async with serving() as srv:
        alice = await srv.login("alice")
        nc = await srv.connect()
        await nc.send(b"login carol\nbye for now")  # no newline at the end
        nc.writer.write_eof()
        await alice.expect("join", name="carol")
        await alice.expect("msg", text="bye for now", **{"from": "carol"})
        await alice.expect("leave", name="carol", reason="quit")


# ------------------------------------------------------------------ hostile peers


@async_test(timeout=90)
async def test_a_room_full_of_slow_consumers_is_cut_off_without_recursion() -> None:
    """Many recipients passing the output bound in the same fan-out are all cut off.

    Each cut-off recipient's ``leave`` was delivered from inside the fan-out that cut it,
    so the recursion grew one level per slow client and a few hundred of them raised
    RecursionError half-way: connections were left half-closed and never closed.
    """
    clients = 250
    async with serving(rate_limit=0, max_buffer=16384) as srv:
        room = [await srv.login(f"u{i}", history=0) for i in range(clients)]
        # one write, one loop turn: every member's queued output passes the bound at once
        say = json.dumps({"type": "say", "text": "x" * 2000}).encode() + b"\n"
        await room[0].send(say * 12)
        for client in room:
            tail = await client.eof(timeout=10)
            assert tail.rstrip(b"\n").rsplit(b"\n", 1)[-1] == (
                b'{"type":"error","code":"slow_consumer","message":"you are not reading"}'
            )
        late = await srv.login("late", history=0)
        assert late.ready["users"] == ["late"]
        await late.send({"type": "say", "text": "still here"})
        await late.expect("msg", text="still here")


@async_test
async def test_every_error_echoes_the_ref_of_the_frame_that_caused_it() -> None:
    """hello, join, who and rooms dropped their ref (msgspec ignored it as unknown)."""
    async with serving() as srv:
        anon = await srv.connect()
        await anon.expect("welcome")
        for kind in ("who", "rooms"):
            await anon.send({"type": kind, "ref": f"{kind}-1"})
            await anon.expect("error", code="not_logged_in", ref=f"{kind}-1")
        await anon.send({"type": "join", "room": "dev", "ref": 7})
        await anon.expect("error", code="not_logged_in", ref=7)
        await anon.send({"type": "hello", "name": "amy", "room": "NOT OK", "ref": "h1"})
        await anon.expect("error", code="bad_request", ref="h1")
        await anon.send({"type": "hello", "name": "amy", "ref": "h2"})
        await anon.expect("ready", name="amy")
        await anon.send({"type": "join", "room": "Bad Room", "ref": "j1"})
        await anon.expect("error", code="bad_request", ref="j1")
        await anon.send({"type": "hello", "name": "again", "ref": "h3"})
        await anon.expect("error", code="bad_request", ref="h3")
        other = await srv.connect()
        await other.expect("welcome")
        await other.send({"type": "hello", "name": "AMY", "ref": "h4"})
        await other.expect("error", code="name_taken", ref="h4")
        third = await srv.connect()
        await third.expect("welcome")
        await third.send({"type": "hello", "name": "bad name", "ref": "h5"})
        await third.expect("error", code="name_invalid", ref="h5")


@async_test
async def test_lines_before_a_too_long_line_in_the_same_read_are_acted_on() -> None:
    """A message pipelined just before an oversized line was dropped without a word."""
    async with serving(max_frame=1000) as srv:
        alice = await srv.login("alice")
        bob = await srv.login("bob")
        await alice.expect("join", name="bob")
        say = json.dumps({"type": "say", "text": "before", "ref": "b1"}).encode() + b"\n"
        await alice.send(say + b"x" * 2000 + b"\n")
        await bob.expect("msg", text="before", **{"from": "alice"})
        await bob.expect("leave", name="alice", reason="lost")
        tail = [json.loads(line) for line in (await alice.eof()).splitlines()]
        assert [(f["type"], f.get("ref"), f.get("code")) for f in tail] == [
            ("msg", "b1", None),
            ("error", None, "frame_too_large"),
        ]
