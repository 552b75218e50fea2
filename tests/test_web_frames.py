"""The browser transport's own WebSocket framing (``text_frames``) and its cache.

The relay frames its output to browsers itself instead of through ``websockets``'
``send_text``; these tests hold it to the library's bytes and to what a client parses.
"""

from __future__ import annotations

import pytest
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

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
