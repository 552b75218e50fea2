"""The text of a benchmark message: who sent it, its number and when, padded to size.

``<sender>:<seq>:<planned_us>:<sent_us>:xxxx...`` travels as the ``text`` of a ``say``.
Receivers take it back out of the relayed ``msg`` frames with one regular-expression
scan over a chunk's frames, without decoding the JSON: the receive path is the
generator's bottleneck at hundreds of thousands of deliveries a second.
"""

from __future__ import annotations

import re
from typing import Final

from chatcli.core.protocol import Say

__all__ = ["PAYLOAD_RE", "say_event"]

#: matches the payload inside a relayed msg frame; groups: sender, seq, planned, sent (µs)
PAYLOAD_RE: Final = re.compile(rb'"text":"(\d+):(\d+):(\d+):(\d+):')


def say_event(sender: int, seq: int, planned_us: int, sent_us: int, size: int) -> Say:
    """A ``say`` whose text is the payload padded with ``x`` to ``size`` characters."""
    head = f"{sender}:{seq}:{planned_us}:{sent_us}:"
    pad = size - len(head)
    return Say(text=head + "x" * pad if pad > 0 else head)
