"""The client side of the protocol: the sans-I/O core (no event loop), then its asyncio
adapter against small loopback servers that speak exactly what each test needs."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from helpers import HOST, READ_TIMEOUT, async_test, serving

from chatcli.client.connection import ChatClient, connect
from chatcli.core.client import ClientConnection, ClientState
from chatcli.core.protocol import (
    Error,
    Hello,
    LineFramer,
    Msg,
    Pong,
    Ready,
    Say,
    Users,
    Welcome,
    encode,
)
from chatcli.errors import ConnectionFailed, FrameTooLarge, ServerRefused

WELCOME = Welcome(server="chatcli/test", proto=1, users=[], rooms=[], hint="say hello")
READY = Ready(name="alice", room="lobby", users=["alice"], history=[])
MSG = Msg(id=1, room="lobby", from_="bob", text="hi", ts=1.0)


def wire(*frames: Any) -> bytes:
    """Frames as a server writes them: events encoded, dicts as compact JSON lines."""
    out = b""
    for frame in frames:
        out += encode(frame) if not isinstance(frame, dict) else json.dumps(frame).encode() + b"\n"
    return out


def logged_in() -> ClientConnection:
    conn = ClientConnection()
    conn.send(Hello(name="alice"))
    conn.data_to_send()
    conn.receive_data(wire(WELCOME, READY))
    assert conn.state is ClientState.READY
    return conn


# -------------------------------------------------------------------------- the core


def test_handshake_sends_hello_and_keeps_welcome_and_ready_out_of_the_events() -> None:
    conn = ClientConnection()
    assert conn.state is ClientState.CONNECTED
    conn.send(Hello(name="alice", history=0))
    assert conn.state is ClientState.LOGGING_IN
    assert conn.data_to_send() == b'{"type":"hello","name":"alice","history":0}\n'
    assert conn.data_to_send() == b""
    conn.receive_data(wire(WELCOME))
    assert conn.welcome == WELCOME and conn.state is ClientState.LOGGING_IN
    conn.receive_data(wire(READY, MSG))
    assert conn.ready == READY and conn.state is ClientState.READY
    assert conn.events_received() == [MSG]
    assert conn.events_received() == []


def test_a_later_ready_after_join_is_an_event() -> None:
    conn = logged_in()
    moved = Ready(name="alice", room="dev", users=["alice"], history=[])
    conn.receive_data(wire(moved))
    assert conn.events_received() == [moved]
    assert conn.ready == READY


def test_pings_are_answered_in_order_and_not_returned() -> None:
    conn = logged_in()
    conn.send(Say(text="one"))
    conn.receive_data(wire({"type": "ping"}, MSG, {"type": "ping"}))
    assert conn.events_received() == [MSG]
    assert conn.data_to_send() == encode(Say(text="one")) + encode(Pong()) * 2


def test_a_pong_is_returned_as_the_barrier_answer() -> None:
    conn = logged_in()
    conn.receive_data(wire(Pong()))
    assert conn.events_received() == [Pong()]


@pytest.mark.parametrize("code", ["name_taken", "name_invalid", "bad_request"])
def test_any_error_before_ready_refuses_the_login(code: str) -> None:
    conn = ClientConnection()
    conn.send(Hello(name="alice"))
    conn.receive_data(wire(WELCOME, Error(code=code, message="no"), READY))
    assert isinstance(conn.failure, ServerRefused)
    assert (conn.failure.code, str(conn.failure)) == (code, f"no ({code})")
    assert conn.state is ClientState.CLOSED and conn.ready is None
    assert conn.events_received() == []


def test_a_fatal_error_ends_the_session_after_the_events_before_it() -> None:
    conn = logged_in()
    shutdown = Error(code="server_shutdown", message="bye now")
    conn.receive_data(wire(MSG, shutdown, MSG, {"type": "ping"}))
    assert conn.events_received() == [MSG]
    assert isinstance(conn.failure, ServerRefused) and conn.failure.code == "server_shutdown"
    assert conn.data_to_send() == b""  # nothing after the end, not even a pong
    conn.send(Say(text="too late"))
    assert conn.data_to_send() == b""


def test_an_error_that_does_not_end_the_session_is_an_event() -> None:
    conn = logged_in()
    limited = Error(code="rate_limited", message="slow down", ref="c-1")
    conn.receive_data(wire(limited))
    assert conn.events_received() == [limited] and conn.failure is None


def test_unknown_types_and_fields_from_a_newer_server_are_ignored() -> None:
    conn = logged_in()
    conn.receive_data(
        wire(
            {"type": "whiteboard", "strokes": []},
            {"type": "users", "room": "lobby", "users": ["a"], "colour": "red"},
            {"no": "type"},
        )
        + b"not json at all\n"
    )
    assert conn.events_received() == [Users(room="lobby", users=["a"])]
    assert conn.failure is None


def test_any_chunking_gives_the_same_events() -> None:
    data = wire(WELCOME, READY, MSG, {"type": "ping"}, Users(room="lobby", users=["x"]))
    rng = random.Random(7)
    for _ in range(50):
        conn = ClientConnection()
        conn.send(Hello(name="alice"))
        cuts = sorted(rng.sample(range(1, len(data)), rng.randint(1, 12)))
        for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True):
            conn.receive_data(data[a:b])
        assert conn.ready == READY
        assert conn.events_received() == [MSG, Users(room="lobby", users=["x"])]


def test_a_frame_over_the_limit_fails_after_the_frames_before_it() -> None:
    conn = ClientConnection(max_frame=200)
    conn.send(Hello(name="alice"))
    conn.receive_data(wire(WELCOME, READY, MSG) + b'{"type":"msg"' + b" " * 300 + b"}\n")
    assert conn.events_received() == [MSG]
    assert isinstance(conn.failure, FrameTooLarge)
    assert conn.state is ClientState.CLOSED


def test_message_transports_hand_over_whole_frames() -> None:
    conn = ClientConnection(framing=None)
    conn.send(Hello(name="alice"))
    for frame in wire(WELCOME, READY, MSG).splitlines():
        conn.receive_frame(frame)
    assert conn.ready == READY and conn.events_received() == [MSG]


def test_the_framing_is_pluggable() -> None:
    class Halves:
        """A toy framing: every 4-byte length prefix announces one frame."""

        def __init__(self) -> None:
            self.buffer = b""

        def feed(self, data: bytes) -> list[bytes]:
            self.buffer += data
            frames = []
            while len(self.buffer) >= 4 and len(self.buffer) >= 4 + int(self.buffer[:4]):
                size = int(self.buffer[:4])
                frames.append(self.buffer[4 : 4 + size])
                self.buffer = self.buffer[4 + size :]
            return frames

    conn = ClientConnection(Halves())
    conn.send(Hello(name="alice"))
    for frame in (WELCOME, READY, MSG):
        body = encode(frame)[:-1]
        conn.receive_data(b"%04d" % len(body) + body)
    assert conn.ready == READY and conn.events_received() == [MSG]


def test_the_server_closing_ends_the_session_without_a_failure() -> None:
    conn = logged_in()
    conn.receive_data(wire(MSG))
    conn.receive_eof()
    assert conn.eof and conn.state is ClientState.CLOSED and conn.failure is None
    assert conn.events_received() == [MSG]


def test_the_default_framer_is_the_shared_line_framer() -> None:
    assert isinstance(ClientConnection().framing, LineFramer)


# ----------------------------------------------------------------- asyncio adapter

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def fake_server(handler: Handler) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(handler, HOST, 0)
    return server, int(server.sockets[0].getsockname()[1])


@async_test
async def test_connect_logs_in_against_the_real_server_and_answers_barriers() -> None:
    async with serving(rate_limit=0) as srv:
        client = await connect(HOST, srv.port, "alice", "dev", history=0)
        try:
            assert client.ready is not None and client.ready.room == "dev"
            assert client.welcome is not None and client.name == "alice"
            ref = client.next_ref()
            await client.send(Say(text="hi", ref=ref))
            echo = await asyncio.wait_for(client.receive(), READ_TIMEOUT)
            assert isinstance(echo, Msg) and echo.ref == ref and echo.text == "hi"
        finally:
            await client.close()


@async_test
async def test_the_client_answers_pings_through_the_core() -> None:
    answered: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(wire(WELCOME))
        await reader.readline()  # hello
        writer.write(wire(READY, {"type": "ping"}))
        answered.set_result(await reader.readline())
        writer.write(wire(MSG))
        await reader.read()

    server, port = await fake_server(handler)
    async with server:
        client = await connect(HOST, port, "alice")
        try:
            assert await asyncio.wait_for(client.receive(), READ_TIMEOUT) == MSG
            assert await asyncio.wait_for(answered, READ_TIMEOUT) == b'{"type":"pong"}\n'
        finally:
            await client.close()


@async_test
async def test_a_server_that_closes_is_one_clear_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(wire(WELCOME))
        await reader.readline()
        writer.write(wire(READY, MSG))
        await writer.drain()
        writer.close()

    server, port = await fake_server(handler)
    async with server:
        client = await connect(HOST, port, "alice")
        try:
            assert await asyncio.wait_for(client.receive(), READ_TIMEOUT) == MSG
            with pytest.raises(ConnectionFailed) as caught:
                await asyncio.wait_for(client.receive(), READ_TIMEOUT)
            assert str(caught.value) == f"the server at {HOST}:{port} closed the connection"
        finally:
            await client.close(bye=False)


@async_test
async def test_a_refused_login_is_server_refused() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(wire(WELCOME))
        await reader.readline()
        writer.write(wire(Error(code="name_taken", message="alice is taken")))
        await writer.drain()
        writer.close()

    server, port = await fake_server(handler)
    async with server:
        with pytest.raises(ServerRefused) as caught:
            await connect(HOST, port, "alice")
        assert str(caught.value) == "alice is taken (name_taken)"


@async_test
async def test_no_answer_within_the_timeout_is_one_clear_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # never a word

    server, port = await fake_server(handler)
    async with server:
        with pytest.raises(ConnectionFailed) as caught:
            await connect(HOST, port, "alice", timeout=0.2)
        assert str(caught.value) == f"no answer from {HOST}:{port} within 0.2 s"


def test_the_adapter_keeps_its_public_names() -> None:
    from chatcli.client.connection import DEFAULT_CONNECT_TIMEOUT, MAX_SERVER_FRAME

    assert DEFAULT_CONNECT_TIMEOUT == 10.0 and MAX_SERVER_FRAME == 64 * 1024 * 1024
    assert ChatClient.__name__ == "ChatClient"


def test_the_sans_io_modules_import_no_io_framework() -> None:
    code = (
        "import sys, chatcli.core.client, chatcli.client.acks\n"
        "bad = {'asyncio', 'socket', 'click', 'rich'} & set(sys.modules)\n"
        "print(sorted(bad))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"
