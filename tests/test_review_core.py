"""Adversarial review of the core: hostile peers against a real server, and the client.

Each test here reproduces a defect found in review (it failed before the fix that came
with it) or pins down a behaviour of the spec that a hostile peer probes.
"""

from __future__ import annotations

import json

from helpers import async_test, serving


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
