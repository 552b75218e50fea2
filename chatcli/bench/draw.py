"""The ``draw`` mix of ``chatcli bench``: browsers drawing on the board while others chat.

``--draw-clients N`` opens N WebSocket clients on the relay's web port (``serve --web``)
in the chat's first room; each draws a pencil stroke of ``points`` points every
``1/rate`` seconds, open loop (it never waits for its echo), for the whole run, and
clears its own drawings at the end. Its figures (draws sent, acknowledged by their own
echo, refused) go beside the chat's: what the chat clients measure is whether board
traffic slows the conversation. The clients run on a thread of their own with their own
event loop, so the load generator's chat workers are not slowed by them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import threading
from dataclasses import dataclass
from typing import Any

__all__ = ["DrawLoad", "DrawResult", "DrawSpec"]


@dataclass(frozen=True)
class DrawSpec:
    """Where and how hard to draw."""

    host: str
    port: int
    clients: int
    rate: float
    room: str = "r0"
    points: int = 20
    seed: int = 1
    name_prefix: str = "drawbench"


@dataclass
class DrawResult:
    """What the drawing clients did."""

    connected: int = 0
    sent: int = 0
    acked: int = 0
    errors: int = 0


class DrawLoad:
    """N drawing WebSocket clients on a thread: :meth:`start`, then :meth:`stop`."""

    def __init__(self, spec: DrawSpec) -> None:
        self.spec = spec
        self.result = DrawResult()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-draw", daemon=True)

    def start(self, timeout: float = 10.0) -> None:
        """Start drawing; returns once every client has logged in (or ``timeout``)."""
        self._thread.start()
        self._ready.wait(timeout)

    def stop(self, timeout: float = 10.0) -> DrawResult:
        """Stop drawing, clear the drawings, close; the figures."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            loop.call_soon_threadsafe(stop.set)
        self._thread.join(timeout)
        return self.result

    # -- the drawing thread --------------------------------------------------------------

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        finally:
            self._ready.set()

    async def _main(self) -> None:
        from websockets.asyncio.client import connect

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        spec = self.spec
        url = f"ws://{spec.host}:{spec.port}/ws"
        sockets = []
        for index in range(spec.clients):
            try:
                ws = await asyncio.wait_for(connect(url, max_size=None), 10.0)
            except Exception:  # a client that cannot connect is counted, never fatal
                self.result.errors += 1
                continue
            name = f"{spec.name_prefix}{index}"
            await ws.send(json.dumps({"type": "hello", "name": name, "room": spec.room}))
            sockets.append(ws)
        logged_in = await asyncio.gather(*(self._ready_of(ws) for ws in sockets))
        live = [ws for ws, ok in zip(sockets, logged_in, strict=True) if ok]
        self.result.connected = len(live)
        self._ready.set()
        tasks = [asyncio.create_task(self._draw(ws, i)) for i, ws in enumerate(live)]
        tasks += [asyncio.create_task(self._read(ws)) for ws in live]
        await self._stop.wait()
        for task in tasks:
            task.cancel()
        for ws in live:
            with contextlib.suppress(Exception):
                await ws.send(json.dumps({"type": "clear"}))
                await asyncio.wait_for(ws.close(), 2.0)

    async def _ready_of(self, ws: Any) -> bool:
        try:
            async with asyncio.timeout(10.0):
                while True:
                    frame = json.loads(await ws.recv())
                    if frame.get("type") == "ready":
                        return True
                    if frame.get("type") == "error":
                        self.result.errors += 1
                        return False
        except Exception:  # a client that could not log in is counted
            self.result.errors += 1
            return False

    async def _draw(self, ws: Any, index: int) -> None:
        spec = self.spec
        rng = random.Random(spec.seed * 1000 + index)
        interval = 1.0 / spec.rate
        loop = asyncio.get_running_loop()
        due = loop.time() + rng.random() * interval
        ref = 0
        with contextlib.suppress(asyncio.CancelledError, Exception):
            while True:
                await asyncio.sleep(max(0.0, due - loop.time()))
                due += interval
                x, y = rng.uniform(0, 900), rng.uniform(0, 900)
                points = [
                    [round(x + 100 * k / spec.points, 1), round(y + rng.uniform(0, 100), 1)]
                    for k in range(spec.points)
                ]
                ref += 1
                shape = {"kind": "pencil", "points": points, "color": "#1f77b4", "width": 3}
                await ws.send(json.dumps({"type": "draw", "shape": shape, "ref": ref}))
                self.result.sent += 1

    async def _read(self, ws: Any) -> None:
        """Count own echoes and errors; answer pings. Frames are told apart by their
        start (the server writes ``type`` first), not parsed: these clients see every
        chat message too, and parsing each would load the machine being measured."""
        with contextlib.suppress(asyncio.CancelledError, Exception):
            async for message in ws:
                if message.startswith('{"type":"draw"'):
                    if message.endswith("}") and '"ref":' in message[-40:]:
                        self.result.acked += 1
                elif message.startswith('{"type":"error"'):
                    self.result.errors += 1
                elif message.startswith('{"type":"ping"'):
                    await ws.send('{"type":"pong"}')
