"""Resume over real sockets: takeover with the token, txn resends, TCP keepalive."""

from __future__ import annotations

import socket

from helpers import async_test, serving


@async_test
async def test_a_resume_token_takes_the_session_over_and_the_old_one_hears_replaced() -> None:
    async with serving() as srv:
        alice = await srv.login("alice")
        bob = await srv.login("bob")
        await alice.expect("join", name="bob")
        token = alice.ready["resume"]
        assert alice.ready["epoch"]
        again = await srv.login("alice", resume=token, since=0, epoch=alice.ready["epoch"])
        assert again.ready["users"] == ["alice", "bob"] and again.ready["resume"] != token
        error = await alice.expect("error")
        assert error["code"] == "replaced"
        await alice.eof()
        await bob.send({"type": "say", "text": "who is there?"})
        await again.expect("msg", text="who is there?")
        await bob.expect("msg", text="who is there?")
        await bob.nothing_pending("join", "leave")  # the room saw neither


@async_test
async def test_a_wrong_resume_token_is_name_taken_and_closes() -> None:
    async with serving() as srv:
        await srv.login("alice")
        thief = await srv.connect()
        await thief.expect("welcome")
        await thief.send({"type": "hello", "name": "alice", "resume": "guess"})
        assert (await thief.expect("error"))["code"] == "name_taken"
        await thief.eof()


@async_test
async def test_a_resend_with_the_same_txn_is_acknowledged_once_more_but_not_relayed() -> None:
    async with serving() as srv:
        alice = await srv.login("alice")
        bob = await srv.login("bob")
        await alice.expect("join", name="bob")
        await alice.send({"type": "say", "text": "once", "ref": 1, "txn": "u-1"})
        first = await alice.expect("msg", ref=1)
        await bob.expect("msg", text="once")
        await alice.send({"type": "say", "text": "once", "ref": 2, "txn": "u-1"})
        second = await alice.expect("msg", ref=2)
        assert second["id"] == first["id"]
        await bob.nothing_pending("msg")


@async_test
async def test_every_connection_has_tcp_keepalive() -> None:
    async with serving() as srv:
        await srv.login("alice")
        await srv.text_login("bob")
        conns = list(srv.server.connections)
        assert len(conns) == 2
        for conn in conns:
            transport = conn.link.transport  # the TCP adapter's Connection
            assert transport is not None
            sock = transport.get_extra_info("socket")
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            if hasattr(socket, "TCP_KEEPIDLE"):
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 60
