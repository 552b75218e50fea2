"""The text of a benchmark message: who sent it, its number and when, padded to size.

``<sender>:<seq>:<planned_us>:<sent_us>:xxxx...`` travels as the ``text`` of a ``say``.
Receivers take it back out of the relayed ``msg`` with one regular-expression scan over
a whole received chunk, without decoding the JSON: the receive path is the generator's
bottleneck at hundreds of thousands of deliveries a second.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["PAYLOAD_RE", "say_frame"]

#: matches the payload inside a relayed msg frame; groups: sender, seq, planned, sent (µs)
PAYLOAD_RE: Final = re.compile(rb'"text":"(\d+):(\d+):(\d+):(\d+):')
_SAY_HEAD: Final = b'{"type":"say","text":"'
_SAY_TAIL: Final = b'"}\n'


def say_frame(sender: int, seq: int, planned_us: int, sent_us: int, size: int) -> bytes:
    """A complete ``say`` frame whose text is the payload padded with ``x`` to ``size`` bytes."""
    head = b"%d:%d:%d:%d:" % (sender, seq, planned_us, sent_us)
    pad = size - len(head)
    return _SAY_HEAD + head + (b"x" * pad if pad > 0 else b"") + _SAY_TAIL
