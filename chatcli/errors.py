"""The exception tree of chatcli: one root, a few meaningful branches.

::

    ChatError                     anything chatcli raises on purpose
    ├── ProtocolError             a peer sent something the protocol refuses (has .code)
    │   └── FrameTooLarge         a line longer than the frame limit (ends the connection)
    ├── ConnectionFailed          could not reach a server, or it went away
    ├── ServerRefused             the server answered with an error that ends the session
    ├── TranscriptError           a transcript line could not be read (has .path, .line)
    ├── StoreError                the store cannot be opened or used (in use, damaged, newer)
    └── UsageError                bad options or arguments given by the user

Commands map ``ChatError`` to one clear line and a non-zero exit code; anything else is a bug.
"""

from __future__ import annotations

__all__ = [
    "ChatError",
    "ConnectionFailed",
    "FrameTooLarge",
    "ProtocolError",
    "ServerRefused",
    "StoreError",
    "TranscriptError",
    "UsageError",
]


class ChatError(Exception):
    """Root of every error chatcli raises deliberately."""


class ProtocolError(ChatError):
    """A frame broke the protocol; ``code`` is the error code the spec assigns to it."""

    def __init__(self, code: str, message: str, ref: str | int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.ref = ref


class FrameTooLarge(ProtocolError):
    """A line exceeded the maximum frame size; the connection must be closed.

    ``frames`` holds the complete frames received before that line, still to be acted on.
    """

    def __init__(self, limit: int, frames: list[bytes] | None = None) -> None:
        super().__init__("frame_too_large", f"frame exceeds {limit} bytes")
        self.limit = limit
        self.frames = frames if frames is not None else []


class ConnectionFailed(ChatError):
    """The server could not be reached, or the connection was lost."""


class ServerRefused(ChatError):
    """The server sent an error that ends the session (name taken, shutdown, ...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{message} ({code})")
        self.code = code
        self.message = message


class TranscriptError(ChatError):
    """A transcript could not be read or written; ``path:line`` says where (line 0: the file)."""

    def __init__(self, path: str, line: int, reason: str) -> None:
        super().__init__(f"{path}:{line}: {reason}" if line > 0 else f"{path}: {reason}")
        self.path = path
        self.line = line
        self.reason = reason


class StoreError(ChatError):
    """The store cannot be opened or used: in use by another server, damaged, too new."""


class UsageError(ChatError):
    """The user asked for something that cannot be done as asked."""
