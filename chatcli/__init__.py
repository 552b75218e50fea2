"""chatcli: a terminal chat toolkit.

A relay (``chatcli serve``), an interactive client (``chatcli join``), transcript replay
(``chatcli replay``) and a load tester (``chatcli bench``) over one sans-I/O protocol core.
"""

from __future__ import annotations

__version__ = "0.1.0"

from chatcli.errors import (
    ChatError,
    ConnectionFailed,
    FrameTooLarge,
    ProtocolError,
    ServerRefused,
    TranscriptError,
    UsageError,
)

__all__ = [
    "ChatError",
    "ConnectionFailed",
    "FrameTooLarge",
    "ProtocolError",
    "ServerRefused",
    "TranscriptError",
    "UsageError",
    "__version__",
]
