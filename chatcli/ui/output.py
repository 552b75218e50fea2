"""Where ``join`` and ``replay`` show events: one output per format, shared by both.

- :class:`RichOutput`: styled lines on a rich Console (a terminal), as people see them.
- :class:`PlainOutput`: plain IRC-style lines on a stream (pipes, logs, scripts).
- :class:`JsonlOutput`: one JSON object per line (programs; ``replay --format jsonl``
  passes transcript lines through, so its output is itself a transcript).

How an event looks is decided by :class:`chatcli.ui.render.Renderer` alone (peer text is
escaped there); these classes only choose the stream and the format. Each also shows the
front end's own notices: on the console for rich, on stderr for the others, so that their
stdout holds only events.
"""

from __future__ import annotations

import re
import sys
from typing import IO, Final, Protocol

from rich.console import Console

from chatcli.core.protocol import encode
from chatcli.transcript import End, Header
from chatcli.ui.render import Renderer

__all__ = ["JsonlOutput", "Output", "PlainOutput", "RichOutput"]


class Output(Protocol):
    """Where a front end shows events from a server or a transcript, and its own notices."""

    def show(self, event: object, raw: bytes = b"") -> None:
        """Show one event; ``raw`` is its line as stored, when it came from a transcript."""

    def notice(self, text: str, error: bool = False) -> None:
        """Show one of the front end's own lines (set apart from what peers said)."""

    def flush(self) -> None:
        """Push out whatever is buffered (before waiting, and at the end)."""


class RichOutput:
    """Styled lines on a rich Console, identical for ``join`` and ``replay``.

    Without a ``console`` it prints to whatever ``sys.stdout`` is at print time, which
    prompt_toolkit's ``patch_stdout`` replaces to keep the line being typed intact.
    """

    def __init__(self, renderer: Renderer, console: Console | None = None) -> None:
        self.renderer = renderer
        self.console = console or Console(highlight=False, soft_wrap=True)

    def show(self, event: object, raw: bytes = b"") -> None:
        text = self.renderer.render(event)
        if text is not None:
            self.console.print(text)

    def notice(self, text: str, error: bool = False) -> None:
        self.console.print(self.renderer.notice(text, error=error))

    def flush(self) -> None:
        """Nothing to do: rich writes each line as it is printed."""


class PlainOutput:
    """Plain IRC-style lines (``12:00:01 <alice> hi``), as ``Renderer.plain`` makes them.

    ``line_buffered`` flushes after every line, for a reader waiting on a pipe (``join``);
    otherwise lines go out at :meth:`flush` (a fast log or export). Notices go to
    ``notices`` (stderr by default), errors prefixed ``error:``.
    """

    def __init__(
        self,
        renderer: Renderer,
        stream: IO[str] | None = None,
        *,
        line_buffered: bool = False,
        notices: IO[str] | None = None,
    ) -> None:
        self.renderer = renderer
        self.stream = stream or sys.stdout
        self.line_buffered = line_buffered
        self.notices = notices

    def show(self, event: object, raw: bytes = b"") -> None:
        line = self.renderer.plain(event)
        if line is not None:
            self.stream.write(line + "\n")
            if self.line_buffered:
                self.stream.flush()

    def notice(self, text: str, error: bool = False) -> None:
        _notice(self.notices, text, error)

    def flush(self) -> None:
        self.stream.flush()


# C1 controls and bidi overrides may sit raw in a JSON string; spelled as \u escapes they
# mean the same to a JSON reader and nothing to a terminal. (C0 controls and ESC cannot
# be raw in JSON: encoders escape them and the transcript reader refuses such lines.)
_UNSAFE_IN_JSON: Final = re.compile(rb"\xc2[\x80-\x9f]|\xe2\x80[\xaa-\xae]|\xe2\x81[\xa6-\xa9]")


def _escape_json_controls(match: re.Match[bytes]) -> bytes:
    return b"\\u%04x" % ord(match[0].decode("utf-8"))


class JsonlOutput:
    """One JSON object per line: the event's stored line (``raw``) or its encoding.

    Transcript lines pass through as stored (unknown fields included); only the ``end``
    line is rewritten when a filter changed how many events there are, so that an export
    passes ``--check`` without a warning. ``line_buffered`` and ``notices`` are as for
    :class:`PlainOutput`.
    """

    def __init__(
        self,
        stream: IO[bytes] | None = None,
        *,
        line_buffered: bool = False,
        notices: IO[str] | None = None,
    ) -> None:
        self.stream = stream or sys.stdout.buffer
        self.line_buffered = line_buffered
        self.notices = notices
        self.events = 0

    def show(self, event: object, raw: bytes = b"") -> None:
        if isinstance(event, End):
            if event.events != self.events or not raw:
                raw = encode(End(ts=event.ts, events=self.events)).rstrip(b"\n")
        elif not isinstance(event, Header):
            self.events += 1
        if not raw:
            raw = encode(event).rstrip(b"\n")  # type: ignore[arg-type]
        self.stream.write(_UNSAFE_IN_JSON.sub(_escape_json_controls, raw) + b"\n")
        if self.line_buffered:
            self.stream.flush()

    def notice(self, text: str, error: bool = False) -> None:
        _notice(self.notices, text, error)

    def flush(self) -> None:
        self.stream.flush()


def _notice(stream: IO[str] | None, text: str, error: bool) -> None:
    """A notice of a plain or JSON output: on its own stream, never mixed into stdout."""
    print(("error: " if error else "") + text, file=stream or sys.stderr, flush=True)
