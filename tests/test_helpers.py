"""The test helpers themselves: the ping/pong barrier catches a frame however late it is."""

from __future__ import annotations

import pytest
from helpers import async_test, serving


@async_test
async def test_nothing_pending_catches_a_frame_queued_before_the_barrier() -> None:
    async with serving(rate_limit=0) as srv:
        alice = await srv.login("alice")
        bob = await srv.login("bob")
        await alice.expect("join", name="bob")
        await alice.send({"type": "say", "text": "for everyone"})
        await alice.expect("msg", text="for everyone")
        # bob has not read it yet: the barrier still sees it, before the pong
        with pytest.raises(AssertionError, match="for everyone"):
            await bob.nothing_pending()
        await alice.send({"type": "say", "text": "again"})
        await alice.expect("msg", text="again")
        await bob.nothing_pending("join", "leave")  # a msg is not of those kinds
        await bob.nothing_pending()  # and the barrier consumed it
        assert await alice.barrier() == []
