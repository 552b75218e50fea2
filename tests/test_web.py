"""The web transport: the page's HTTP answers and chat over WebSocket beside TCP.

Every test runs a real ``ChatServer`` with its web port on 127.0.0.1 (port 0) in the
test's own loop, and talks to it with the ``websockets`` client and raw TCP.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from helpers import HOST, READ_TIMEOUT, TestServer, async_test, serving
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from chatcli.transports.web import (
    CONTENT_SECURITY_POLICY,
    STATIC_DIR,
    MessageTransport,
    WebListener,
    start_web,
    static_file,
)


class WebClient:
    """A WebSocket chat client whose every read is bounded."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.welcome: dict[str, Any] = {}
        self.ready: dict[str, Any] = {}

    async def send(self, frame: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(frame))

    async def recv(self, timeout: float = READ_TIMEOUT) -> dict[str, Any]:
        message = await asyncio.wait_for(self.ws.recv(), timeout)
        assert isinstance(message, str), f"a binary message: {message!r}"
        assert "\n" not in message, f"a newline in a message: {message!r}"
        frame = json.loads(message)
        assert isinstance(frame, dict)
        return frame

    async def expect(self, kind: str, **fields: Any) -> dict[str, Any]:
        frame = await self.recv()
        assert frame.get("type") == kind, f"expected {kind}, got {frame}"
        for key, value in fields.items():
            assert frame.get("from" if key == "from_" else key) == value, (key, frame)
        return frame

    async def recv_until(self, kind: str) -> dict[str, Any]:
        async with asyncio.timeout(READ_TIMEOUT):
            while (frame := await self.recv()).get("type") != kind:
                pass
        return frame


@asynccontextmanager
async def web_serving(
    static_dir: Path = STATIC_DIR, **overrides: Any
) -> AsyncIterator[tuple[TestServer, WebListener]]:
    """A ChatServer with its TCP port and a web port, both on 127.0.0.1 port 0."""
    origins = overrides.pop("origins", ())
    async with serving(**overrides) as srv:
        web = await start_web(srv.server, HOST, 0, origins=origins, static_dir=static_dir)
        try:
            yield srv, web
        finally:
            web.close()
            for client in srv.clients:
                client.abort()
            await srv.server.shutdown()
            await web.wait_closed(2.0)


def ws_url(web: WebListener) -> str:
    host, port = web.addresses[0]
    return f"ws://{host}:{port}/ws"


async def web_login(web: WebListener, name: str, **hello: Any) -> WebClient:
    ws = await asyncio.wait_for(connect(ws_url(web)), READ_TIMEOUT)
    client = WebClient(ws)
    client.welcome = await client.expect("welcome")
    await client.send({"type": "hello", "name": name, **hello})
    client.ready = await client.recv_until("ready")
    return client


async def http_get(web: WebListener, path: str, headers: str = "") -> tuple[int, dict, bytes]:
    """A raw HTTP/1.1 GET: (status, headers with lower-case names, body)."""
    host, port = web.addresses[0]
    reader, writer = await asyncio.open_connection(host, port)
    try:
        request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{headers}\r\n"
        writer.write(request.encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        fields = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                fields[name.strip().lower()] = value.strip()
        length = int(fields.get("content-length", "0"))
        body = await asyncio.wait_for(reader.readexactly(length), READ_TIMEOUT)
        return status, fields, body
    finally:
        writer.close()


# -- chat ---------------------------------------------------------------------------------


@async_test
async def test_a_browser_and_a_tcp_user_chat_both_ways() -> None:
    async with web_serving(rate_limit=0) as (srv, web):
        browser = await web_login(web, "alice")
        assert "web" in browser.welcome["features"]
        assert browser.welcome["web"] == f"http://{HOST}:{web.addresses[0][1]}/"
        tcp = await srv.login("bob")
        assert tcp.welcome["web"] == browser.welcome["web"]
        await browser.expect("join", name="bob")
        await browser.send({"type": "say", "text": "hi from the page", "ref": "r1"})
        ack = await browser.expect("msg", text="hi from the page", ref="r1", from_="alice")
        seen = await tcp.expect("msg", text="hi from the page", from_="alice")
        assert seen["id"] == ack["id"] and "ref" not in seen
        await tcp.send({"type": "say", "text": "hi from the terminal"})
        await browser.expect("msg", text="hi from the terminal", from_="bob")
        await browser.ws.close()
        await tcp.recv_until("leave", name="alice")


@async_test
async def test_a_web_session_is_pinged_and_answered() -> None:
    async with web_serving(ping_interval=0.2) as (_srv, web):
        browser = await web_login(web, "alice")
        await browser.expect("ping")
        await browser.send({"type": "pong"})
        await browser.send({"type": "ping"})
        await browser.expect("pong")


@async_test
async def test_a_silent_web_session_is_dropped() -> None:
    async with web_serving(ping_interval=0.1) as (srv, web):
        browser = await web_login(web, "alice")
        await browser.expect("ping")
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(3.0):
                while True:
                    await browser.ws.recv()
        async with asyncio.timeout(3.0):
            while srv.server.connections:
                await asyncio.sleep(0.01)


@async_test
async def test_a_frame_over_the_limit_is_refused_and_the_connection_closed() -> None:
    async with web_serving(max_frame=1024) as (srv, web):
        browser = await web_login(web, "alice")
        await browser.send({"type": "say", "text": "x" * 2000})
        error = await browser.recv_until("error")
        assert error["code"] == "frame_too_large"
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(browser.ws.recv(), READ_TIMEOUT)
        # the others go on
        bob = await srv.login("bob")
        await bob.send({"type": "say", "text": "still here"})
        await bob.expect("msg", text="still here")


@async_test
async def test_a_huge_message_is_closed_by_the_library_without_harm() -> None:
    async with web_serving(max_frame=1024) as (srv, web):
        browser = await web_login(web, "alice")
        await browser.ws.send("x" * 100_000)
        with pytest.raises(ConnectionClosed) as info:
            async with asyncio.timeout(READ_TIMEOUT):
                while True:
                    await browser.ws.recv()
        assert info.value.rcvd is not None and info.value.rcvd.code == 1009
        bob = await srv.login("bob")
        assert "alice" not in bob.ready.get("users", [])


@async_test
async def test_a_binary_message_gets_bad_request_and_the_connection_stays() -> None:
    async with web_serving() as (_srv, web):
        browser = await web_login(web, "alice")
        await browser.ws.send(b'{"type":"say","text":"hi"}')
        error = await browser.expect("error", code="bad_request")
        assert "text" in error["message"]
        await browser.send({"type": "say", "text": "hi"})
        await browser.expect("msg", text="hi")


@async_test
async def test_flood_control_applies_to_web_clients() -> None:
    async with web_serving(rate_limit=0.1, rate_burst=2) as (_srv, web):
        browser = await web_login(web, "alice")
        for i in range(4):
            await browser.send({"type": "say", "text": f"m{i}", "ref": f"r{i}"})
        answers = [await browser.recv_until(kind) for kind in ("msg", "msg")]
        assert [a["ref"] for a in answers] == ["r0", "r1"]
        for ref in ("r2", "r3"):
            refused = await browser.expect("error", code="rate_limited")
            assert refused["ref"] == ref


@async_test
async def test_a_websocket_has_no_text_mode() -> None:
    async with web_serving() as (_srv, web):
        ws = await asyncio.wait_for(connect(ws_url(web)), READ_TIMEOUT)
        client = WebClient(ws)
        await client.expect("welcome")
        await ws.send("login alice")
        error = await client.expect("error", code="bad_request")
        assert "JSON" in error["message"]
        await client.send({"type": "hello", "name": "alice"})
        await client.recv_until("ready")


@async_test
async def test_web_clients_are_told_when_the_server_shuts_down() -> None:
    async with serving() as srv:
        web = await start_web(srv.server, HOST, 0)
        browser = await web_login(web, "alice")
        web.close()
        await srv.server.shutdown()
        await browser.expect("error", code="server_shutdown")
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(browser.ws.recv(), READ_TIMEOUT)
        await web.wait_closed(2.0)
        assert not srv.server.connections


@async_test
async def test_a_web_client_that_stops_reading_is_cut_off() -> None:
    async with web_serving(rate_limit=0, max_buffer=64 * 1024) as (srv, web):
        slow = await asyncio.wait_for(
            connect(ws_url(web), max_queue=1, max_size=None), READ_TIMEOUT
        )
        await slow.send(json.dumps({"type": "hello", "name": "slow"}))
        talker = await srv.login("talker")
        # the slow client never reads: its queue, the kernel buffers, then our bound fill
        text = "y" * 3000
        async with asyncio.timeout(10.0):
            while True:
                await talker.send({"type": "say", "text": text})
                frame = await talker.recv_until(lambda f: f["type"] in ("msg", "leave"))
                if frame["type"] == "leave":
                    assert frame["name"] == "slow" and frame["reason"] == "slow", frame
                    break
        slow.transport.abort()


@async_test
async def test_a_web_client_that_falls_behind_and_catches_up_gets_everything_in_order() -> None:
    """Behind backpressure the browser's frames queue (``MessageTransport``'s writer
    task) instead of being written at once; once it reads again it gets them all, each
    one message, in order, and the queue is empty again."""
    async with web_serving(rate_limit=0) as (srv, web):
        lagging = WebClient(
            await asyncio.wait_for(connect(ws_url(web), max_queue=1, max_size=None), READ_TIMEOUT)
        )
        await lagging.expect("welcome")
        await lagging.send({"type": "hello", "name": "lagging"})
        talker = await srv.login("talker")
        (link,) = (
            core.link
            for core in srv.server.connections
            if isinstance(core.link.transport, MessageTransport)
        )
        transport: MessageTransport = link.transport
        sent, queued = 0, False
        async with asyncio.timeout(10.0):
            while not queued or sent < 20:  # a few more after the queue began
                await talker.send({"type": "say", "text": f"{sent:05d}" + "y" * 3000})
                await talker.recv_until(lambda f: f["type"] == "msg")
                sent += 1
                queued = queued or bool(transport._queue)
        async with asyncio.timeout(10.0):
            texts = []
            while len(texts) < sent:
                frame = await lagging.recv()
                if frame["type"] == "msg":
                    texts.append(frame["text"][:5])
        assert texts == [f"{i:05d}" for i in range(sent)]
        assert not transport._queue and transport._queued == 0
        await lagging.ws.close()


def _browser_transports(srv: TestServer) -> list[MessageTransport]:
    return [
        core.link.transport
        for core in srv.server.connections
        if isinstance(core.link.transport, MessageTransport)
    ]


async def _nothing_within(client: WebClient, seconds: float) -> None:
    with pytest.raises(asyncio.TimeoutError):
        frame = await client.recv(timeout=seconds)
        pytest.fail(f"got {frame} while the port should hold it")


@async_test
async def test_a_busy_port_holds_browser_output_and_writes_it_before_the_close() -> None:
    """Pacing (``Pacer``): the first output after a quiet interval is written at once,
    what follows within the interval is held, the same for every browser, and a close
    writes what is held before the close frame: nothing is lost to pacing."""
    async with serving(rate_limit=0, web_flush_interval=0) as srv:
        web = await start_web(srv.server, HOST, 0)
        alice = await web_login(web, "alice")
        bob = await web_login(web, "bob")
        await alice.recv_until("join")  # bob's
        talker = await srv.login("talker")
        for browser in (alice, bob):
            await browser.recv_until("join")  # talker's
        transports = _browser_transports(srv)
        pacer = transports[0]._pacer
        assert all(t._pacer is pacer for t in transports)
        pacer.interval = 60.0  # from now on: one write-out a minute
        await talker.send({"type": "say", "text": "one"})
        for browser in (alice, bob):
            await browser.expect("msg", text="one")  # the port was quiet: at once
        for text in ("two", "three"):
            await talker.send({"type": "say", "text": text})
            await talker.recv_until(lambda f, text=text: f["type"] == "msg" and f["text"] == text)
        for browser in (alice, bob):
            await _nothing_within(browser, 0.3)
        held = [t._held for t in transports]
        assert len(held[0]) == 2 and held[0] == held[1]
        assert all(t.get_write_buffer_size() >= sum(map(len, t._held)) for t in transports)
        web.close()
        await srv.server.shutdown()
        for browser in (alice, bob):
            await browser.expect("msg", text="two")
            await browser.expect("msg", text="three")
            await browser.expect("error", code="server_shutdown")
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(browser.ws.recv(), READ_TIMEOUT)
        await web.wait_closed(2.0)


@async_test
async def test_held_browser_output_is_written_out_when_the_interval_is_over() -> None:
    async with web_serving(rate_limit=0, web_flush_interval=0.2) as (srv, web):
        alice = await web_login(web, "alice")
        talker = await srv.login("talker")
        await alice.recv_until("join")
        texts = [f"m{i}" for i in range(20)]
        for text in texts:
            await talker.send({"type": "say", "text": text})
        got: list[str] = []
        async with asyncio.timeout(READ_TIMEOUT):
            while len(got) < len(texts):
                frame = await alice.recv()
                if frame["type"] == "msg":
                    got.append(frame["text"])
        assert got == texts
        (transport,) = _browser_transports(srv)
        assert not transport._held and transport._held_bytes == 0


# -- origin ------------------------------------------------------------------------------


@async_test
async def test_a_foreign_origin_is_refused_with_403() -> None:
    async with web_serving() as (_srv, web):
        with pytest.raises(InvalidStatus) as info:
            await connect(ws_url(web), origin="http://evil.example")  # type: ignore[arg-type]
        assert info.value.response.status_code == 403


@async_test
async def test_the_pages_own_origin_and_allowed_ones_are_let_in() -> None:
    async with web_serving(origins=("https://chat.example.org",)) as (_srv, web):
        host, port = web.addresses[0]
        own = await connect(ws_url(web), origin=f"http://{host}:{port}")  # type: ignore[arg-type]
        assert json.loads(await asyncio.wait_for(own.recv(), READ_TIMEOUT))["type"] == "welcome"
        await own.close()
        other = await connect(ws_url(web), origin="https://chat.example.org")  # type: ignore[arg-type]
        assert json.loads(await asyncio.wait_for(other.recv(), READ_TIMEOUT))["type"] == "welcome"
        await other.close()
        with pytest.raises(InvalidStatus):
            await connect(ws_url(web), origin="http://chat.example.org")  # type: ignore[arg-type]


# -- static files ------------------------------------------------------------------------


@async_test
async def test_the_page_is_served_with_its_type_and_security_headers() -> None:
    async with web_serving() as (_srv, web):
        status, headers, body = await http_get(web, "/")
        assert status == 200
        assert headers["content-type"] == "text/html; charset=utf-8"
        assert headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert "script-src 'self'" in headers["content-security-policy"]
        assert "unsafe-inline" not in headers["content-security-policy"]
        assert headers["x-content-type-options"] == "nosniff"
        assert body == (STATIC_DIR / "index.html").read_bytes()


@async_test
async def test_static_files_have_their_content_types(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("<!doctype html><title>t</title>")
    (tmp_path / "app.js").write_text("console.log(1)")
    (tmp_path / "style.css").write_text("body{}")
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "board.js").write_text("export {}")
    (tmp_path / "notes.exe").write_bytes(b"MZ")
    async with web_serving(static_dir=tmp_path) as (_srv, web):
        expected = {
            "/app.js": "text/javascript; charset=utf-8",
            "/style.css": "text/css; charset=utf-8",
            "/lib/board.js": "text/javascript; charset=utf-8",
            "/index.html?v=2": "text/html; charset=utf-8",
        }
        for path, kind in expected.items():
            status, headers, _ = await http_get(web, path)
            assert (status, headers["content-type"]) == (200, kind), path
            assert headers["x-content-type-options"] == "nosniff"
        for path in ("/nothing.js", "/notes.exe", "/lib/", "/a/b/c.js"):
            status, headers, _ = await http_get(web, path)
            assert status == 404, path
            assert headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize(
    "path",
    [
        "/../pyproject.toml",
        "/..%2f..%2fetc%2fpasswd",
        "/%2e%2e/secret.txt",
        "/lib/../../secret.txt",
        "/.hidden.js",
        "//etc/passwd",
        "/lib/..",
        "/\\..\\secret.txt",
    ],
)
def test_no_path_leaves_the_static_dir(tmp_path: Path, path: str) -> None:
    root = tmp_path / "static"
    (root / "lib").mkdir(parents=True)
    (root / "index.html").write_text("x")
    (tmp_path / "secret.txt").write_text("secret")
    (root / ".hidden.js").write_text("x")
    assert static_file(root, path) is None


@async_test
async def test_traversal_over_http_gets_404(tmp_path: Path) -> None:
    root = tmp_path / "static"
    root.mkdir()
    (root / "index.html").write_text("x")
    (tmp_path / "secret.txt").write_text("secret")
    async with web_serving(static_dir=root) as (_srv, web):
        for path in ("/../secret.txt", "/%2e%2e/secret.txt", "/..%2fsecret.txt"):
            status, _, body = await http_get(web, path)
            assert status in (400, 404) and b"secret" not in body, path


def test_the_page_ships_inside_the_package() -> None:
    assert (STATIC_DIR / "index.html").is_file()
    assert STATIC_DIR.parent.name == "web" and STATIC_DIR.parent.parent.name == "chatcli"


# -- the command -------------------------------------------------------------------------


@pytest.mark.e2e
def test_serve_web_prints_the_page_url_and_serves_it() -> None:
    import re
    import urllib.request

    from processes import read_line, serve_process

    with serve_process("--web", "0", "--store", "memory") as (proc, port):
        line = read_line(proc.stdout, 10.0).decode()
        match = re.fullmatch(r"chatcli web page at (http://127\.0\.0\.1:(\d+)/)\n", line)
        assert match, line
        with urllib.request.urlopen(match.group(1), timeout=READ_TIMEOUT) as answer:
            assert answer.status == 200
            assert answer.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
        from helpers import run

        async def chat() -> None:
            web_port = int(match.group(2))
            async with connect(f"ws://127.0.0.1:{web_port}/ws") as ws:
                welcome = json.loads(await asyncio.wait_for(ws.recv(), READ_TIMEOUT))
                assert welcome["web"] == match.group(1) and "web" in welcome["features"]

        run(chat())
        from processes import run_join

        env = {"CHATCLI_CONFIG_DIR": tempfile.mkdtemp(), "LC_ALL": "C.UTF-8"}
        joined = run_join("alice", "--port", str(port), stdin=b"hi\n", env=env)
        assert joined.returncode == 0, joined.stderr
        shown = joined.stdout.decode() + joined.stderr.decode()
        assert f"whiteboard: {match.group(1)}" in shown, shown


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--web", "nope:x"], "--web wants HOST:PORT"),
        (["--web-origin", "chat.example.org", "--web", "0"], "--web-origin wants"),
        (["--web", "0", "--web-flush-interval", "-1"], "--web-flush-interval"),
    ],
)
def test_serve_web_refuses_bad_options_in_one_line(args: list[str], message: str) -> None:
    from click.testing import CliRunner

    from chatcli.cli import cli

    result = CliRunner().invoke(cli, ["serve", "--store", "memory", *args])
    assert result.exit_code != 0
    assert message in result.output, result.output
    assert "Traceback" not in result.output
