"""The whiteboard through real sockets: browsers (WebSocket) and terminals (TCP) share it,
text sessions never see it, and it survives a restart of a server on a store file."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from helpers import HOST, async_test
from test_web import WebClient, web_login, web_serving

from chatcli.settings import ServerSettings
from chatcli.store.sqlite import SQLiteStore
from chatcli.transports.tcp import ChatServer
from chatcli.transports.web import start_web

LINE = {"kind": "line", "points": [[10, 10], [200, 100]], "color": "#d62728", "width": 3}
RECT = {"kind": "rect", "points": [[300, 300], [400, 350]], "color": "#1f77b4", "width": 2}


@async_test
async def test_a_page_draws_and_a_tcp_client_and_a_second_page_see_it() -> None:
    async with web_serving(rate_limit=0) as (srv, web):
        page = await web_login(web, "alice")
        other = await web_login(web, "bob")
        tcp = await srv.login("carol")
        text, _ = await srv.text_login("dave")
        await page.send({"type": "draw", "shape": LINE, "ref": "d1"})
        ack = await page.recv_until("draw")
        assert ack["ref"] == "d1" and ack["id"] == 1 and ack["from"] == "alice"
        seen = await other.recv_until("draw")
        assert seen == {k: v for k, v in ack.items() if k != "ref"}
        assert seen["shape"]["points"] == [[10.0, 10.0], [200.0, 100.0]]
        got = await tcp.recv_until("draw")
        assert got == seen
        await page.send({"type": "draw", "shape": RECT})
        assert (await tcp.recv_until("draw"))["id"] == 2
        # another's shape: forbidden; one's own: moved and erased for everyone
        await other.send({"type": "erase", "id": 1, "ref": "e"})
        refused = await other.recv_until("error")
        assert refused["code"] == "forbidden" and refused["ref"] == "e"
        await page.send({"type": "move", "id": 2, "dx": 1000, "dy": 0})
        moved = await tcp.recv_until("move")
        assert (moved["id"], moved["dx"], moved["dy"], moved["by"]) == (2, 600, 0, "alice")
        await page.send({"type": "erase", "id": 1})
        assert (await tcp.recv_until("erase"))["id"] == 1
        # a late page sees the board as it is now
        late = await web_login(web, "erin")
        assert [s["id"] for s in late.ready["board"]] == [2]
        assert late.ready["board"][0]["shape"]["points"] == [[900.0, 300.0], [1000.0, 350.0]]
        # the text session saw none of it: its next line answers its own command
        await text.send("/who")
        lines = [await text.text()]
        while "-- in lobby" not in lines[-1]:
            lines.append(await text.text())
        assert all("joined" in line for line in lines[:-1]), lines
        # and a JSON terminal's ready carries the board too
        tcp2 = await srv.login("frank")
        assert [s["id"] for s in tcp2.ready["board"]] == [2]


@async_test
async def test_the_board_survives_a_restart_on_a_store_file(tmp_path: Path) -> None:
    path = tmp_path / "board.db"

    async def session(draw: bool) -> list[dict]:
        async with _page_on_store(path) as page:
            if draw:
                await page.send({"type": "draw", "shape": LINE})
                await page.send({"type": "draw", "shape": RECT})
                await page.send({"type": "move", "id": 2, "dx": -300, "dy": 10})
                await page.recv_until("move")
            return page.ready.get("board", [])

    assert await session(draw=True) == []
    # the store file can be drawn while the server is down, too
    from click.testing import CliRunner

    from chatcli.cli import cli

    out = tmp_path / "store.svg"
    result = CliRunner().invoke(cli, ["replay", str(path), "--board", str(out)])
    assert result.exit_code == 0 and "2 shapes in lobby" in result.output, result.output
    assert out.read_text().count("data-id=") == 2
    refused = CliRunner().invoke(cli, ["replay", str(path), "--board", str(out), "--at", "5"])
    assert refused.exit_code == 2 and "--at needs a transcript" in refused.output
    board = await session(draw=False)
    assert [s["id"] for s in board] == [1, 2]
    assert board[1]["shape"]["points"] == [[0.0, 310.0], [100.0, 360.0]]
    assert board[0]["from"] == "alice" and board[0]["shape"]["color"] == "#d62728"


def test_a_version_2_store_is_upgraded_with_empty_boards(tmp_path: Path) -> None:
    import sqlite3

    from chatcli.store.sqlite import _SCHEMA_V1, _SCHEMA_V2, SCHEMA_VERSION

    path = tmp_path / "v2.db"
    db = sqlite3.connect(path)
    db.executescript(_SCHEMA_V1 + _SCHEMA_V2)
    db.execute("INSERT INTO rooms VALUES ('lobby', 'e1', 2)")
    db.execute("INSERT INTO messages VALUES ('lobby', 1, 'old', 'kept', 1.0, 0, NULL)")
    db.execute("PRAGMA application_id=1667785076")
    db.execute("PRAGMA user_version=2")
    db.commit()
    db.close()
    store = SQLiteStore(path)
    try:
        assert store.boards() == {}
    finally:
        store.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
    assert db.execute("SELECT text FROM messages").fetchall() == [("kept",)]
    assert db.execute("SELECT count(*) FROM shapes").fetchone() == (0,)
    assert db.execute("SELECT name, next_id, board_next FROM rooms").fetchall() == [("lobby", 2, 1)]
    db.close()


@async_test
async def test_the_bench_draw_mix_draws_and_is_acknowledged() -> None:
    from chatcli.bench.draw import DrawLoad, DrawSpec

    async with web_serving(rate_limit=0) as (srv, web):
        host, port = web.addresses[0]
        watcher = await srv.login("watcher", room="r0")
        draw = DrawLoad(DrawSpec(host, port, clients=2, rate=20.0, points=5))
        await asyncio.to_thread(draw.start)
        assert draw.result.connected == 2
        seen = await watcher.recv_until("draw")
        assert seen["from"].startswith("drawbench") and len(seen["shape"]["points"]) == 5
        await asyncio.sleep(0.5)
        result = await asyncio.to_thread(draw.stop)
        assert result.sent >= 10 and result.errors == 0
        assert result.acked == result.sent  # the draws in flight at the stop were waited for
        # each client cleared its drawings on the way out
        async with asyncio.timeout(5.0):
            while len(srv.server.relay.board("r0").committed):
                await asyncio.sleep(0.05)


def test_the_draw_mix_against_a_target_needs_its_web_port() -> None:
    import pytest

    from chatcli.bench.runner import BenchOptions
    from chatcli.errors import UsageError

    with pytest.raises(UsageError, match="--draw-target"):
        BenchOptions(draw_clients=2, targets=(("127.0.0.1", 7777),)).check()
    BenchOptions(draw_clients=2, targets=(("127.0.0.1", 7777),), draw_target=(HOST, 8080)).check()
    params = BenchOptions(draw_clients=2, draw_target=(HOST, 8080)).params()
    assert params["draw_clients"] == 2 and params["draw_target"] == "127.0.0.1:8080"


@asynccontextmanager
async def _page_on_store(path: Path) -> AsyncIterator[WebClient]:
    """A server on the SQLite store ``path`` with one page logged in as alice, for the
    block; then the page leaves and the server stops (a restart is the next block)."""
    store = SQLiteStore(path)
    server = ChatServer(ServerSettings(host=HOST, port=0, rate_limit=0), store=store)
    await server.start()
    web = await start_web(server, HOST, 0)
    try:
        page = await web_login(web, "alice")
        yield page
        await page.ws.close()
    finally:
        web.close()
        await asyncio.wait_for(server.shutdown(), 5.0)
        await web.wait_closed(2.0)
        store.close()


async def _board_session(path: Path, *frames: dict) -> list[dict]:
    """Send ``frames`` from a page of a server on ``path`` (each answered before the
    next), then stop the server; the answers."""
    async with _page_on_store(path) as page:
        acks = []
        for frame in frames:
            await page.send({**frame, "ref": "x"})
            acks.append(await page.recv_until(frame["type"]))
        return acks


@async_test
async def test_ids_go_on_after_a_restart_even_when_every_shape_was_erased(tmp_path: Path) -> None:
    path = tmp_path / "ids.db"
    drawn = await _board_session(
        path, {"type": "draw", "shape": LINE}, {"type": "draw", "shape": RECT}
    )
    assert [a["id"] for a in drawn] == [1, 2]
    await _board_session(path, {"type": "clear"})
    [again] = await _board_session(path, {"type": "draw", "shape": LINE})
    assert again["id"] == 3


@async_test
async def test_an_erased_last_shapes_id_is_not_given_again_after_a_restart(tmp_path: Path) -> None:
    """Draws alone do not save the next id (the shapes carry theirs); an erase does."""
    path = tmp_path / "ids.db"
    drawn = await _board_session(path, *[{"type": "draw", "shape": LINE}] * 3)
    assert [a["id"] for a in drawn] == [1, 2, 3]
    [more] = await _board_session(path, {"type": "draw", "shape": RECT})
    assert more["id"] == 4
    await _board_session(path, {"type": "erase", "id": 4}, {"type": "erase", "id": 2})
    [again] = await _board_session(path, {"type": "draw", "shape": LINE})
    assert again["id"] == 5
