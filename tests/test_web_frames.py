"""The browser transport's own WebSocket framing (``text_frames``) and its cache.

The relay frames its output to browsers itself instead of through ``websockets``'
``send_text``; these tests hold it to the library's bytes and to what a client parses.
"""

from __future__ import annotations

import asyncio

import pytest
from helpers import HOST, async_test
from test_web import web_serving
from websockets.client import ClientProtocol
from websockets.frames import Close, CloseCode, Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from chatcli.bench.draw import DrawLoad, DrawSpec, FrameReader, HandshakeError
from chatcli.transports.web import FrameCache, text_frame_header, text_frames

LENGTHS = [0, 1, 2, 125, 126, 127, 1000, 65535, 65536, 70000]


def library_bytes(payload: bytes) -> bytes:
    """What ``websockets`` writes for one unmasked text message of ``payload``."""
    return Frame(Opcode.TEXT, payload).serialize(mask=False)


@pytest.mark.parametrize("length", LENGTHS)
def test_one_frame_is_the_librarys_bytes(length: int) -> None:
    payload = b"x" * length
    assert text_frames(payload + b"\n") == library_bytes(payload)
    assert text_frame_header(length) == library_bytes(payload)[: -length or None]


def test_several_frames_are_several_messages_in_order() -> None:
    payloads = [b'{"type":"say","text":"' + b"a" * n + b'"}' for n in (0, 130, 70000, 5)]
    data = b"".join(p + b"\n" for p in payloads)
    assert text_frames(data) == b"".join(library_bytes(p) for p in payloads)


def test_a_client_parses_them_back() -> None:
    """A real client-side protocol reads the bytes as the same text messages."""
    client = ClientProtocol(parse_uri("ws://127.0.0.1/ws"), state=State.OPEN)
    texts = ['{"text":"h\\u00e9llo"}', "{}", '{"text":"' + "é" * 200 + '"}']
    client.receive_data(text_frames(b"".join(t.encode() + b"\n" for t in texts)))
    events = client.events_received()
    assert [(e.opcode, e.data.decode()) for e in events] == [(Opcode.TEXT, t) for t in texts]
    assert client.state is State.OPEN


def test_the_cache_frames_equal_bytes_once() -> None:
    cache = FrameCache()
    data = b'{"type":"say"}\n'
    first = cache.framed(data)
    assert first == text_frames(data)
    assert cache.framed(data) is first  # the same object: no second framing
    assert cache.framed(bytes(bytearray(data))) is first  # equal bytes, other object
    other = cache.framed(b'{"type":"me"}\n')
    assert other == text_frames(b'{"type":"me"}\n') and other != first
    assert cache.framed(b"") == b""  # nothing to frame, never the last frames again


# -- the bench's lean client: its frame reader and handshake ------------------------------


def server_frame(opcode: Opcode, payload: bytes, *, fin: bool = True) -> bytes:
    return Frame(opcode, payload, fin=fin).serialize(mask=False)


@pytest.mark.parametrize("chunk", [1, 3, 7, 130, 1 << 20])
def test_the_reader_cuts_a_stream_into_messages_however_it_arrives(chunk: int) -> None:
    payloads = [b"{}", b"a" * 125, b"b" * 126, b"c" * 70000, "é".encode() * 3]
    stream = text_frames(b"".join(p + b"\n" for p in payloads))
    reader = FrameReader()
    got: list[tuple[int, bytes]] = []
    for at in range(0, len(stream), chunk):
        got += reader.feed(stream[at : at + chunk])
    assert got == [(1, p) for p in payloads]
    assert reader.feed(b"") == []  # nothing left over


def test_the_reader_joins_fragments_and_passes_control_frames_between_them() -> None:
    stream = (
        server_frame(Opcode.TEXT, b'{"type":', fin=False)
        + server_frame(Opcode.PING, b"hb")
        + server_frame(Opcode.CONT, b'"draw"', fin=False)
        + server_frame(Opcode.CONT, b"}")
        + server_frame(Opcode.CLOSE, Close(CloseCode.GOING_AWAY, "bye").serialize())
    )
    assert FrameReader().feed(stream) == [
        (9, b"hb"),
        (1, b'{"type":"draw"}'),
        (8, Close(CloseCode.GOING_AWAY, "bye").serialize()),
    ]


@pytest.mark.parametrize(
    "stream",
    [
        Frame(Opcode.TEXT, b"masked").serialize(mask=True),  # a server never masks
        b"\xc1\x00",  # an extension bit nobody negotiated
        server_frame(Opcode.CONT, b"x"),  # a continuation of nothing
        server_frame(Opcode.TEXT, b"x", fin=False) + server_frame(Opcode.TEXT, b"y"),
        b"\x83\x00",  # opcode 3 is reserved
        b"\x89\x7e\x00\x80" + b"x" * 128,  # a control frame over 125 bytes
        b"\x81\x7f" + (1 << 40).to_bytes(8, "big"),  # over the size limit, refused at once
    ],
)
def test_the_reader_refuses_what_a_server_must_not_send(stream: bytes) -> None:
    with pytest.raises(HandshakeError):
        FrameReader().feed(stream)


async def answer_upgrades_with(head: bytes) -> tuple[asyncio.Server, int]:
    """A fake web port that reads a request's head and answers ``head``."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(head)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, HOST, 0)
    return server, server.sockets[0].getsockname()[1]


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: bm90IHRoZSByaWdodCBoYXNo\r\n\r\n",
        b"HTTP/1.1 101 Switch",  # the server went away in the middle of its answer
    ],
)
@async_test
async def test_a_drawing_client_refused_or_lied_to_is_counted_never_fatal(head: bytes) -> None:
    server, port = await answer_upgrades_with(head)
    try:
        load = DrawLoad(DrawSpec(HOST, port, clients=2, rate=10.0))
        await asyncio.to_thread(load.start, 5.0)
        result = await asyncio.to_thread(load.stop, 5.0)
        assert result.connected == 0 and result.errors == 2
    finally:
        server.close()
        await server.wait_closed()


@async_test
async def test_a_drawing_client_answers_pings_and_the_close_handshake() -> None:
    """Against the real web port: a protocol ping gets a pong (the relay keeps the
    client), and the closing handshake ends the connection on the server's side."""
    async with web_serving(rate_limit=0, ping_interval=0.1) as (srv, web):
        host, port = web.addresses[0]
        # one draw every 4 s at most: the client is silent for many ping intervals
        load = DrawLoad(DrawSpec(host, port, clients=1, rate=0.25, points=3))
        await asyncio.to_thread(load.start, 5.0)
        assert load.result.connected == 1
        await asyncio.sleep(1.0)  # 3 silent intervals would drop a client that did not answer
        assert len(srv.server.connections) == 1
        result = await asyncio.to_thread(load.stop, 5.0)
        assert result.errors == 0 and result.sent == result.acked
        async with asyncio.timeout(5.0):
            while srv.server.connections:
                await asyncio.sleep(0.02)
