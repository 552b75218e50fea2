"""The browser page in a real headless Chromium, against real ``chatcli serve --web``
processes: chat with terminal users, the shared whiteboard, late joiners, ownership,
reconnect across a server restart, hostile text, the layout at two window sizes and
the board's SVG export compared with what the page shows.

Playwright drives Debian's Chromium at /usr/bin/chromium (``.ci/run`` installs it);
Playwright's own browser download is never used. One browser per module, one context
(a fresh profile) per test.

``CHATCLI_SCREENSHOTS=docs/img`` makes the layout test also write the README's
screenshots there.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import sync_playwright
from processes import EXIT_TIMEOUT, START_TIMEOUT, Watcher, chatcli, read_line

from chatcli.ui.render import PALETTE_RGB, colour_index

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
HOST = "127.0.0.1"
#: every wait on the page (ms): generous for a busy 2-core machine, never unbounded
WAIT_MS = 15_000
_LISTENING = re.compile(r"chatcli serve listening on 127\.0\.0\.1:(\d+)\n")
_WEB = re.compile(r"chatcli web page at (http://127\.0\.0\.1:(\d+)/)\n")


# -- servers ---------------------------------------------------------------------------


class WebServer:
    """A ``chatcli serve --web`` subprocess: its TCP port and page URL."""

    def __init__(self, *args: str) -> None:
        self.proc = chatcli(
            "serve", "--port", "0", "-q", "--host", HOST, "--rate-limit", "0", *args
        )
        line = read_line(self.proc.stdout, START_TIMEOUT).decode()
        match = _LISTENING.fullmatch(line)
        assert match, line
        self.port = int(match.group(1))
        line = read_line(self.proc.stdout, START_TIMEOUT).decode()
        web = _WEB.fullmatch(line)
        assert web, line
        self.url = web.group(1)
        self.web_port = int(web.group(2))

    def stop(self) -> None:
        """SIGTERM: clients get server_shutdown, transcripts are closed; then reap it."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(EXIT_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(EXIT_TIMEOUT)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@contextmanager
def web_server(*args: str) -> Iterator[WebServer]:
    server = WebServer("--web", "0", *args) if "--web" not in args else WebServer(*args)
    try:
        yield server
    finally:
        server.stop()


def expect(watcher: Watcher, kind: str, **fields: Any) -> dict[str, Any]:
    """The first frame of ``kind`` with these fields, skipping others (each read bounded)."""
    deadline = time.monotonic() + WAIT_MS / 1000
    while time.monotonic() < deadline:
        frame = watcher.recv()
        if frame["type"] == kind and all(frame.get(k) == v for k, v in fields.items()):
            return frame
    raise AssertionError(f"no {kind} with {fields} within {WAIT_MS} ms")


class LinkCutter:
    """A TCP relay between the browser and the server's web port that can cut the
    browser's side of every link while keeping the server's side open, the way a
    vanished Wi-Fi leaves a server holding a connection it believes alive."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server((HOST, 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"http://{HOST}:{self.port}/"
        self.browser_side: list[socket.socket] = []
        self.server_side: list[socket.socket] = []
        self.lock = threading.Lock()
        self.cut_off: set[socket.socket] = set()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection((HOST, self.target_port), timeout=5)
            upstream.settimeout(None)
            with self.lock:
                self.browser_side.append(client)
                self.server_side.append(upstream)
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        """Copy until the source ends, then pass the end on, unless it is a cut: then the
        server's side stays open (and unread) as if the packets were lost on the way."""
        while True:
            try:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
            except OSError:
                break
        if source not in self.cut_off and sink not in self.cut_off:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)

    def cut(self) -> None:
        """Drop every browser-side socket; the server sees nothing happen."""
        with self.lock:
            self.cut_off.update(self.browser_side)
            for sock in self.browser_side:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self.browser_side.clear()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread
        self.listener.close()
        self.cut()
        with self.lock:
            for sock in self.server_side:
                sock.close()
            self.server_side.clear()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


# -- the browser -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """One headless Debian Chromium for the module's tests.

    Playwright is started and stopped here, not by pytest-playwright's session-wide
    ``playwright`` fixture: while the sync API is started, its event loop counts as
    running in this thread, and every later test that calls ``asyncio.run`` would fail.
    """
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run does)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def browser_pages(chromium: Any) -> Iterator[Any]:
    """Opens pages, each in a context of its own (separate storage, like two people)."""
    contexts: list[Any] = []
    errors: list[str] = []

    def open_page(width: int = 1280, height: int = 800, scale: float = 1) -> Any:
        viewport = {"width": width, "height": height}
        context = chromium.new_context(viewport=viewport, device_scale_factor=scale)
        context.set_default_timeout(WAIT_MS)
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        return page

    yield open_page
    for context in contexts:
        context.close()
    assert not errors, f"script errors on the page: {errors}"


def log_in(page: Any, url: str, name: str, room: str = "lobby") -> Any:
    page.goto(url)
    page.fill("#login-name", name)
    page.fill("#login-room", room)
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("body[data-conn=connected]")
    page.wait_for_function("() => document.querySelector('#login').hidden")
    return page


def type_line(page: Any, text: str) -> None:
    page.fill("#line", text)
    page.press("#line", "Enter")


def log_line(page: Any, text: str) -> Any:
    """The acknowledged chat line that contains ``text`` (waits for it)."""
    line = page.locator("#log li.line:not(.pending)", has_text=text)
    line.first.wait_for()
    return line


def board(page: Any) -> list[dict[str, Any]]:
    return page.evaluate("() => window.chatcliBoard.snapshot()")


def wait_shapes(page: Any, count: int) -> list[dict[str, Any]]:
    page.wait_for_function("n => window.chatcliBoard.shapes.size === n", arg=count)
    return board(page)


def to_screen(page: Any, x: float, y: float) -> tuple[float, float]:
    """Board units to page pixels, through the canvas's box on screen."""
    box = page.locator("#canvas").bounding_box()
    return box["x"] + x / 1000 * box["width"], box["y"] + y / 1000 * box["height"]


def gesture(page: Any, tool: str, points: list[tuple[float, float]]) -> None:
    """Pick ``tool`` and press, move through ``points``, release: real pointer events."""
    page.click(f"#tool-buttons button[data-tool={tool}]")
    first = to_screen(page, *points[0])
    page.mouse.move(*first)
    page.mouse.down()
    for point in points[1:]:
        page.mouse.move(*to_screen(page, *point), steps=4)
    page.mouse.up()


def near(a: list[float], b: list[float], slack: float = 3.0) -> bool:
    return all(abs(p - q) <= slack for p, q in zip(a, b, strict=True))


def rgb(hex_colour: str) -> str:
    value = hex_colour.lstrip("#")
    r, g, b = (int(value[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgb({r}, {g}, {b})"


# -- chat --------------------------------------------------------------------------------


def test_a_page_user_and_a_tcp_user_chat_both_ways(browser_pages: Any) -> None:
    with web_server("--store", "memory") as server:
        page = log_in(browser_pages(), server.url, "alice")
        bob = Watcher(server.port, "bob")
        try:
            # bob's arrival shows dim, in his colour
            joined = page.locator("#log li.presence", has_text="bob joined")
            joined.wait_for()
            # page -> terminal
            type_line(page, "hello from the page")
            expect(bob, "msg", text="hello from the page", **{"from": "alice"})
            own = log_line(page, "hello from the page")
            assert "own" in own.get_attribute("class")
            weight = own.locator(".text").evaluate("e => getComputedStyle(e).fontWeight")
            assert int(weight) >= 700
            # terminal -> page, bob's name in the colour join gives him
            bob.send({"type": "say", "text": "hello from the terminal"})
            theirs = log_line(page, "hello from the terminal")
            name = theirs.locator(".name")
            assert name.text_content() == "bob"
            expected = PALETTE_RGB[colour_index("bob")][1]
            assert name.evaluate("e => getComputedStyle(e).color") == rgb(expected)
            assert "own" not in theirs.get_attribute("class")
            # /me, /msg both ways, /who
            type_line(page, "/me waves")
            action = expect(bob, "msg", text="waves")
            assert action.get("action") is True
            log_line(page, "waves").locator(".name", has_text="alice").wait_for()
            type_line(page, "/msg bob just between us")
            expect(bob, "dm", text="just between us", to="bob")
            bob.send({"type": "dm", "to": "alice", "text": "psst back"})
            log_line(page, "psst back").locator(".dm-mark").wait_for()
            type_line(page, "/who")
            page.locator("#log li.notice", has_text="in lobby: alice, bob").wait_for()
            type_line(page, "/rooms")
            page.locator("#log li.notice", has_text="rooms: lobby (2)").wait_for()
            page.locator("#users .name", has_text="bob").wait_for()
            # rooms: /join moves the page; bob sees alice leave; clicking lobby goes back
            type_line(page, "/join dev")
            expect(bob, "leave", name="alice", reason="part")
            page.wait_for_function("() => window.chatcli.state.room === 'dev'")
            page.locator("#rooms button[data-room=lobby]").click()
            expect(bob, "join", name="alice")
            page.wait_for_function("() => window.chatcli.state.room === 'lobby'")
            assert page.locator("#rooms button.current").text_content().startswith("#lobby")
            bob.close()
            page.locator("#log li.presence", has_text="bob left").wait_for()
            # /quit: the room sees alice leave; the page offers to log in again
            carol = Watcher(server.port, "carol")
            type_line(page, "/quit")
            expect(carol, "leave", name="alice", reason="quit")
            page.locator("#login-form").wait_for()
            assert page.evaluate("document.body.dataset.conn") == "offline"
            carol.close()
        finally:
            bob.close()


def test_a_registered_name_asks_for_its_password(browser_pages: Any) -> None:
    with web_server("--store", "memory") as server:
        owner = Watcher(server.port, "alice")
        owner.send({"type": "register", "password": "correct horse"})
        expect(owner, "registered", name="alice")
        owner.close()
        page = browser_pages()
        page.goto(server.url)
        page.fill("#login-name", "alice")
        page.click("#login-form button[type=submit]")
        page.locator("#password-row").wait_for()
        assert page.locator("#login-error").text_content()
        assert page.evaluate("document.body.dataset.conn") == "offline"
        page.fill("#login-password", "correct horse")
        page.click("#login-form button[type=submit]")
        page.wait_for_selector("body[data-conn=connected]")
        page.wait_for_function("() => document.querySelector('#login').hidden")


def test_names_get_the_same_colour_as_in_a_terminal(browser_pages: Any) -> None:
    with web_server("--store", "memory") as server:
        page = browser_pages()
        page.goto(server.url)
        names = ["alice", "Bob", "carol", "dave", "eve", "mallory", "ＡＬＩＣＥ", "José"]
        names += ["Straße", "ΟΔΥΣΣΕΥΣ", "Алиса", "田中さん", "x.y-z_1"]
        got = page.evaluate("ns => ns.map(n => window.chatcli.colourFor(n))", names)
        assert got == [PALETTE_RGB[colour_index(name)][1] for name in names]


def test_the_page_modules_parse_commands_and_back_off(browser_pages: Any) -> None:
    """The page's pure helpers, imported as the page imports them (ES modules)."""
    with web_server("--store", "memory") as server:
        page = browser_pages()
        page.goto(server.url)
        got = page.evaluate(
            """async () => {
              const chat = await import('/chat.js');
              const session = await import('/session.js');
              const lines = ['hi', '/me waves', '/msg bob hi there', '/dm', '/who',
                             '/JOIN dev', '//not a command', '/nope', '   '];
              return {
                parsed: lines.map((l) => chat.parseInput(l)),
                delays: [[1, 0], [1, 0.999], [2, 0], [7, 0], [30, 0.5]].map(
                  ([n, r]) => session.backoffDelay(n, () => r)),
              };
            }"""
        )
        assert got["parsed"] == [
            {"kind": "say", "text": "hi"},
            {"kind": "me", "text": "waves"},
            {"kind": "dm", "to": "bob", "text": "hi there"},
            {"kind": "error", "message": "usage: /msg NAME TEXT"},
            {"kind": "who"},
            {"kind": "join", "room": "dev"},
            {"kind": "say", "text": "/not a command"},
            {"kind": "error", "message": "unknown command /nope: /help lists them"},
            {"kind": "empty"},
        ]
        # exponential from 0.5 s, capped at 30 s, shortened by up to half for jitter
        assert got["delays"] == pytest.approx([0.5, 0.25025, 1.0, 30.0, 22.5])


def test_hostile_text_shows_as_text(browser_pages: Any) -> None:
    with web_server("--store", "memory") as server:
        page = log_in(browser_pages(), server.url, "alice")
        mallory = Watcher(server.port, "mallory")
        try:
            hostile = (
                '<img src=x onerror="window.pwned=1"><b>bold</b><script>window.pwned=2</script>'
            )
            mallory.send({"type": "say", "text": hostile})
            mallory.send({"type": "dm", "to": "alice", "text": hostile})
            mallory.send({"type": "me", "text": hostile})
            shape = {"kind": "text", "points": [[100, 200]], "color": "#d62728", "width": 5}
            mallory.send({"type": "draw", "shape": {**shape, "text": "<img src=x>"}})
            lines = page.locator("#log li.line", has_text="<img src=x")
            lines.nth(2).wait_for()
            assert lines.count() == 3
            for index in range(3):
                assert hostile in lines.nth(index).text_content()
            assert wait_shapes(page, 1)[0]["text"] == "<img src=x>"
            assert (
                page.evaluate("document.querySelectorAll('img, b, script:not([src])').length") == 0
            )
            assert page.evaluate("window.pwned") is None
        finally:
            mallory.close()


# -- the whiteboard ----------------------------------------------------------------------


def test_drawings_reach_a_second_page_a_tcp_client_and_a_late_page(browser_pages: Any) -> None:
    with web_server("--store", "memory") as server:
        alice = log_in(browser_pages(), server.url, "alice")
        bob = log_in(browser_pages(), server.url, "bob")
        carol = Watcher(server.port, "carol")
        try:
            alice.click("#swatches button[data-color='#d62728']")
            gesture(alice, "line", [(100, 100), (400, 250)])
            gesture(alice, "rect", [(500, 500), (800, 700)])
            shapes = wait_shapes(alice, 2)
            assert [s["kind"] for s in shapes] == ["line", "rect"]
            assert all(s["from"] == "alice" and s["color"] == "#d62728" for s in shapes)
            assert near(shapes[0]["points"][0] + shapes[0]["points"][1], [100, 100, 400, 250])
            assert near(shapes[1]["points"][0] + shapes[1]["points"][1], [500, 500, 800, 700])
            assert wait_shapes(bob, 2) == shapes
            for shape in shapes:
                drawn = expect(carol, "draw", id=shape["id"])
                assert drawn["from"] == "alice" and drawn["shape"]["kind"] == shape["kind"]
                assert drawn["shape"]["points"] == shape["points"]
            # a late page gets the same board from ready.board, and the same pixels
            late = log_in(browser_pages(), server.url, "dave")
            assert wait_shapes(late, 2) == shapes
            alice.wait_for_function("() => window.chatcli.view.pending.size === 0")
            pixels = "() => document.querySelector('#canvas').toDataURL()"
            assert late.evaluate(pixels) == alice.evaluate(pixels)
            # a pencil stroke and a text too
            gesture(bob, "pencil", [(50, 800), (100, 850), (150, 820), (200, 900)])
            bob.fill("#board-text", "hello board")
            gesture(bob, "text", [(600, 150)])
            shapes = wait_shapes(alice, 4)
            assert [s["kind"] for s in shapes[2:]] == ["pencil", "text"]
            assert shapes[3]["text"] == "hello board" and len(shapes[2]["points"]) >= 4
            assert wait_shapes(late, 4) == shapes
            # each room has its own board: another room's is empty, and back again
            type_line(late, "/join dev")
            wait_shapes(late, 0)
            late.locator("#rooms button[data-room=lobby]").click()
            assert wait_shapes(late, 4) == shapes
        finally:
            carol.close()


def test_own_shapes_can_be_erased_and_dragged_others_cannot(browser_pages: Any) -> None:
    with web_server("--store", "memory") as server:
        alice = log_in(browser_pages(), server.url, "alice")
        bob = log_in(browser_pages(), server.url, "bob")
        gesture(alice, "rect", [(100, 100), (300, 300)])
        wait_shapes(bob, 1)
        gesture(bob, "line", [(600, 600), (900, 600)])
        rect, line = wait_shapes(alice, 2)
        assert (rect["from"], line["from"]) == ("alice", "bob")
        # drag alice's own rect by (+200, +100): everyone sees it moved
        gesture(alice, "drag", [(200, 200), (300, 250), (400, 300)])
        has_moved = "() => window.chatcliBoard.shapes.get(1).shape.points[0][0] !== 100"
        bob.wait_for_function(has_moved)
        alice.wait_for_function(has_moved)
        moved = board(bob)[0]
        assert near(moved["points"][0] + moved["points"][1], [300, 200, 500, 400])
        assert board(alice) == board(bob)
        # bob's line: alice can neither drag nor erase it
        gesture(alice, "drag", [(750, 600), (750, 700)])
        alice.locator("#log li.error", has_text="forbidden").first.wait_for()
        alice.wait_for_function("() => window.chatcli.view.moving.size === 0")  # snaps back
        gesture(alice, "eraser", [(750, 600)])
        alice.locator("#log li.error", has_text="forbidden").nth(1).wait_for()
        assert board(alice)[1]["points"] == line["points"]
        assert board(bob) == board(alice) and len(board(bob)) == 2
        # alice erases her own rect (at its new place)
        gesture(alice, "eraser", [(400, 300)])
        assert [s["id"] for s in wait_shapes(bob, 1)] == [line["id"]]
        # bob clears his drawings: the board is empty for both
        bob.click("#clear-mine")
        wait_shapes(alice, 0)
        wait_shapes(bob, 0)


def test_a_finger_draws_on_a_touch_screen(chromium: Any) -> None:
    """Touch input (real touch events through the DevTools protocol) draws like a mouse."""
    context = chromium.new_context(viewport={"width": 390, "height": 844}, has_touch=True)
    context.set_default_timeout(WAIT_MS)
    try:
        with web_server("--store", "memory") as server:
            page = log_in(context.new_page(), server.url, "alice")
            page.click("#tabs button[data-tab=board]")
            page.click("#tool-buttons button[data-tool=line]")
            cdp = context.new_cdp_session(page)
            start, end = to_screen(page, 100, 100), to_screen(page, 700, 500)
            touch = "Input.dispatchTouchEvent"
            cdp.send(touch, {"type": "touchStart", "touchPoints": [{"x": start[0], "y": start[1]}]})
            for step in range(1, 6):
                x = start[0] + (end[0] - start[0]) * step / 5
                y = start[1] + (end[1] - start[1]) * step / 5
                cdp.send(touch, {"type": "touchMove", "touchPoints": [{"x": x, "y": y}]})
            cdp.send(touch, {"type": "touchEnd", "touchPoints": []})
            (shape,) = wait_shapes(page, 1)
            assert shape["kind"] == "line"
            assert near(shape["points"][0] + shape["points"][1], [100, 100, 700, 500])
    finally:
        context.close()


# -- reconnecting ------------------------------------------------------------------------


def test_a_page_takes_its_session_over_after_the_link_drops(browser_pages: Any) -> None:
    """The server still holds the old connection: the resume token replaces it, the room
    sees neither a leave nor a join, and the page asks for what it missed by since/epoch."""
    with web_server("--store", "memory") as server:
        cutter = LinkCutter(server.web_port)
        carol = Watcher(server.port, "carol")
        try:
            page = browser_pages()
            sent: list[dict[str, Any]] = []
            received: list[dict[str, Any]] = []

            def watch(ws: Any) -> None:
                ws.on("framesent", lambda p: sent.append(json.loads(p)))
                ws.on("framereceived", lambda p: received.append(json.loads(p)))

            page.on("websocket", watch)
            log_in(page, cutter.url, "alice")
            expect(carol, "join", name="alice")
            type_line(page, "before the drop")
            first = expect(carol, "msg", text="before the drop")
            # the page's own copy (its ack) may arrive after carol's: cut only once it has,
            # so the page knows the id it resumes from (bounded: 10 s)
            deadline = time.monotonic() + 10.0
            while not any(f.get("text") == "before the drop" for f in received):
                assert time.monotonic() < deadline, "the page never got its own message"
                page.wait_for_timeout(20)
            cutter.cut()
            carol.send({"type": "say", "text": "said while alice was away"})
            expect(carol, "msg", text="said while alice was away")
            page.wait_for_selector("body[data-conn=reconnecting]")
            page.wait_for_selector("body[data-conn=connected]")
            log_line(page, "said while alice was away")
            readies = [f for f in received if f["type"] == "ready"]
            hellos = [f for f in sent if f["type"] == "hello"]
            assert len(readies) == len(hellos) == 2
            assert hellos[1]["resume"] == readies[0]["resume"] != readies[1]["resume"]
            assert hellos[1]["since"] == first["id"]
            assert hellos[1]["epoch"] == readies[0]["epoch"]
            type_line(page, "back again")
            # carol saw the message, and no leave or join of alice in between
            between = []
            while True:
                frame = carol.recv()
                if frame["type"] == "msg" and frame["text"] == "back again":
                    break
                between.append(frame)
            assert not [f for f in between if f["type"] in ("join", "leave")], between
            assert page.locator("#log li.line", has_text="before the drop").count() == 1
        finally:
            carol.close()
            cutter.close()


def test_a_page_reconnects_after_a_server_restart_and_keeps_board_and_chat(
    browser_pages: Any, tmp_path: Path
) -> None:
    store = str(tmp_path / "chat.db")
    web = f"{HOST}:{free_port()}"
    server = WebServer("--web", web, "--store", store)
    try:
        page = log_in(browser_pages(), server.url, "alice")
        type_line(page, "said before the restart")
        log_line(page, "said before the restart")
        gesture(page, "oval", [(200, 200), (500, 400)])
        before = wait_shapes(page, 1)
        server.stop()
        page.wait_for_selector("body[data-conn=reconnecting]")
        page.locator("#conn", has_text=re.compile(r"reconnecting")).wait_for()
        # typed while the server is down: kept, sent again once the session is back
        type_line(page, "typed while offline")
        page.locator("#log li.pending", has_text="typed while offline").wait_for()
        server = WebServer("--web", web, "--store", store)
        page.wait_for_selector("body[data-conn=connected]", timeout=30_000)
        page.locator("#log li.pending").first.wait_for(state="detached")
        log_line(page, "typed while offline")
        assert board(page) == before
        assert page.locator("#log li.line", has_text="said before the restart").count() == 1
        # the server kept it all: a fresh terminal sees both messages once, and the oval
        late = log_in(browser_pages(), server.url, "carol")
        assert board(late) == before
        for text in ("said before the restart", "typed while offline"):
            assert late.locator("#log li.line", has_text=text).count() == 1
        page.locator("#log li.presence", has_text="carol joined").wait_for()
    finally:
        server.stop()


# -- layout and screenshots --------------------------------------------------------------


@pytest.mark.parametrize(("width", "height"), [(1280, 800), (390, 844)])
def test_the_layout_fits_a_desktop_and_a_phone(
    browser_pages: Any, width: int, height: int, tmp_path: Path
) -> None:
    with web_server("--store", "memory") as server:
        # a phone's screen is dense: the canvas must have device pixels, not CSS pixels
        scale = 2 if width < 800 else 1
        page = log_in(browser_pages(width, height, scale), server.url, "alice")
        bob = Watcher(server.port, "bob")
        carol = Watcher(server.port, "carol")
        try:
            carol.send({"type": "join", "room": "dev"})
            carol.send({"type": "join", "room": "lobby"})
            bob.send({"type": "say", "text": "morning! the board works from a terminal too"})
            type_line(page, "morning bob, drawing the plan")
            carol.send({"type": "me", "text": "brings coffee"})
            bob.send(
                {
                    "type": "draw",
                    "shape": {
                        "kind": "pencil",
                        "points": [[80, 760], [150, 700], [230, 740], [320, 660], [420, 700]],
                        "color": "#2ca02c",
                        "width": 6,
                    },
                }
            )
            bob.send({"type": "say", "text": "that green line is me"})
            bob.send({"type": "dm", "to": "alice", "text": "can you add the deadline?"})
            log_line(page, "can you add the deadline?")
            type_line(page, "/msg bob sure, on the board in a minute")
            log_line(page, "sure, on the board in a minute")
            if width < 800:
                page.click("#tabs button[data-tab=board]")
                # what is said while the chat is out of sight is counted, and marked
                bob.send({"type": "say", "text": "see my line, bottom left?"})
                page.locator("#unread", has_text="1").wait_for()
                assert page.title() == "(1) chatcli"
            page.click("#swatches button[data-color='#1f77b4']")
            gesture(page, "rect", [(120, 120), (460, 380)])
            page.click("#swatches button[data-color='#d62728']")
            gesture(page, "oval", [(560, 160), (880, 420)])
            gesture(page, "line", [(460, 250), (560, 290)])
            page.fill("#board-text", "release plan")
            page.fill("#width", "6")
            gesture(page, "text", [(150, 470)])
            wait_shapes(page, 5)
            page.wait_for_function("() => window.chatcli.view.pending.size === 0")
            overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0
            canvas = page.locator("#canvas").bounding_box()
            assert abs(canvas["width"] - canvas["height"]) < 1
            assert canvas["width"] >= min(width, height) * 0.45
            assert (
                canvas["x"] + canvas["width"] <= width and canvas["y"] + canvas["height"] <= height
            )
            ratio = page.evaluate("window.devicePixelRatio")
            assert ratio == scale
            assert page.evaluate("document.querySelector('#canvas').width") == round(
                canvas["width"] * ratio
            )
            # the desktop shows chat and board at once; a phone shows one tab at a time
            shots = [tmp_path / (f"web-{width}-board.png" if width < 800 else f"web-{width}.png")]
            page.screenshot(path=str(shots[0]))
            if width < 800:
                page.click("#tabs button[data-tab=chat]")
                page.locator("#unread").wait_for(state="hidden")
                assert page.title() == "chatcli"
                marker = page.locator("#log li.unread-marker + li", has_text="see my line")
                assert marker.count() == 1
                shots.append(tmp_path / f"web-{width}.png")
                page.screenshot(path=str(shots[1]))
            line = page.locator("#line").bounding_box()
            assert line["y"] + line["height"] <= height and line["x"] >= 0
            assert all(shot.stat().st_size > 10_000 for shot in shots)
            target = os.environ.get("CHATCLI_SCREENSHOTS")
            if target:
                Path(target).mkdir(parents=True, exist_ok=True)
                for shot in shots:
                    (Path(target) / shot.name).write_bytes(shot.read_bytes())
        finally:
            bob.close()
            carol.close()


# -- the SVG export ----------------------------------------------------------------------


def _svg_shapes(path: Path) -> dict[int, dict[str, Any]]:
    """The shapes in ``replay --board`` output: id -> kind and geometry."""
    root = ET.parse(path).getroot()
    found: dict[int, dict[str, Any]] = {}
    for element in root.iter():
        if "data-id" not in element.attrib:
            continue
        a = element.attrib
        kind = a["class"]

        def num(key: str, a: dict[str, str] = a) -> float:
            return float(a[key])

        if kind in ("line",):
            points = [[num("x1"), num("y1")], [num("x2"), num("y2")]]
        elif kind == "rect":
            points = [[num("x"), num("y")], [num("x") + num("width"), num("y") + num("height")]]
        elif kind == "oval":
            cx, cy, rx, ry = num("cx"), num("cy"), num("rx"), num("ry")
            points = [[cx - rx, cy - ry], [cx + rx, cy + ry]]
        elif kind == "pencil":
            points = [[float(v) for v in pair.split(",")] for pair in a["points"].split()]
        else:
            points = [[num("x"), num("y")]]
        found[int(a["data-id"])] = {
            "kind": kind,
            "from": a["data-from"],
            "points": points,
            "color": a.get("stroke", a.get("fill")),
            "text": element.text,
        }
    return found


def _box(points: list[list[float]]) -> list[float]:
    """Two opposite corners as (left, top, right, bottom): how rect and oval are drawn."""
    (x1, y1), (x2, y2) = points[0], points[-1]
    return [min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)]


def test_the_svg_export_matches_the_page(browser_pages: Any, tmp_path: Path) -> None:
    recordings = tmp_path / "rec"
    with web_server("--store", "memory", "--record", str(recordings)) as server:
        alice = log_in(browser_pages(), server.url, "alice")
        bob = log_in(browser_pages(), server.url, "bob")
        gesture(alice, "pencil", [(50, 50), (120, 90), (200, 60), (260, 140)])
        gesture(alice, "line", [(300, 300), (600, 350)])
        gesture(bob, "rect", [(700, 100), (900, 300)])
        alice.click("#swatches button[data-color='#9467bd']")
        gesture(alice, "oval", [(100, 600), (400, 800)])
        alice.fill("#board-text", "a <b>note</b> & more")
        gesture(alice, "text", [(500, 700)])
        wait_shapes(bob, 5)
        # the oval dragged down by 390 from near its top: the server clamps the move to 200
        gesture(alice, "drag", [(250, 605), (250, 800), (250, 995)])
        has_moved = "() => window.chatcliBoard.shapes.get(4).shape.points[0][1] !== 600"
        alice.wait_for_function(has_moved)
        assert _box(board(alice)[3]["points"]) == [100, 800, 400, 1000]
        gesture(bob, "eraser", [(800, 100)])
        wait_shapes(alice, 4)
        bob.wait_for_function("() => window.chatcliBoard.shapes.size === 4")
        page_board = board(alice)
        assert board(bob) == page_board
    transcripts = sorted(recordings.rglob("*.jsonl"))
    assert transcripts, list(recordings.rglob("*"))
    lobby = [t for t in transcripts if '"draw"' in t.read_text(encoding="utf-8")]
    assert len(lobby) == 1, transcripts
    out = tmp_path / "board.svg"
    done = subprocess.run(
        [*chatcli_cmd(), "replay", str(lobby[0]), "--board", str(out)],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    svg = _svg_shapes(out)
    assert sorted(svg) == [s["id"] for s in page_board]
    for shape in page_board:
        exported = svg[shape["id"]]
        assert exported["kind"] == shape["kind"] and exported["from"] == shape["from"]
        assert exported["color"] == shape["color"]
        if shape["kind"] in ("rect", "oval"):
            assert exported["points"] == [_box(shape["points"])[:2], _box(shape["points"])[2:]]
        else:
            assert exported["points"] == [[float(x), float(y)] for x, y in shape["points"]]
        if shape["kind"] == "text":
            assert exported["text"] == shape["text"] == "a <b>note</b> & more"
    # and the pictures agree: the SVG drawn by the same browser at the canvas's size
    differ, inked = alice.evaluate(COMPARE_PIXELS, base64.b64encode(out.read_bytes()).decode())
    assert inked > 2000, inked
    assert differ / inked < 0.02, (differ, inked)  # 0 here; a text size off gives 13%


#: (pixels that differ clearly, pixels inked in either): the page's canvas (blended over
#: white, as the board is shown) against an SVG document drawn at the canvas's size
COMPARE_PIXELS = """async (svg64) => {
  const board = document.querySelector('#canvas');
  const [w, h] = [board.width, board.height];
  const img = new Image();
  img.src = 'data:image/svg+xml;base64,' + svg64;
  await img.decode();
  const other = document.createElement('canvas');
  other.width = w;
  other.height = h;
  const ctx = other.getContext('2d');
  ctx.drawImage(img, 0, 0, w, h);
  const a = ctx.getImageData(0, 0, w, h).data;
  const b = board.getContext('2d').getImageData(0, 0, w, h).data;
  let differ = 0, inked = 0;
  for (let i = 0; i < a.length; i += 4) {
    const alpha = b[i + 3] / 255;
    let d = 0, ink = false;
    for (let k = 0; k < 3; k++) {
      const bv = b[i + k] * alpha + 255 * (1 - alpha);
      d = Math.max(d, Math.abs(a[i + k] - bv));
      if (a[i + k] < 200 || bv < 200) ink = true;
    }
    if (ink) inked++;
    if (d > 80) differ++;
  }
  return [differ, inked];
}"""


def chatcli_cmd() -> list[str]:
    return [sys.executable, "-m", "chatcli"]


def test_draw_frames_on_the_wire_are_json_objects_one_per_message(browser_pages: Any) -> None:
    """What the page sends is exactly one protocol frame per WebSocket message."""
    with web_server("--store", "memory") as server:
        page = browser_pages()
        sent: list[str] = []
        page.on("websocket", lambda ws: ws.on("framesent", lambda p: sent.append(p)))
        log_in(page, server.url, "alice")
        gesture(page, "line", [(10, 10), (20, 20)])
        type_line(page, "one frame")
        log_line(page, "one frame")
        frames = [json.loads(p if isinstance(p, str) else p.decode()) for p in sent]
        kinds = [f["type"] for f in frames]
        assert kinds[0] == "hello" and "draw" in kinds and "say" in kinds
        say = next(f for f in frames if f["type"] == "say")
        assert say["txn"] and say["ref"] and not any("\n" in p for p in sent if isinstance(p, str))
