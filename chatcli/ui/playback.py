"""The front end of ``chatcli replay FILE``: outputs, the terminal's keys and status line.

:func:`run_playback` picks the output for a format, plays, and prints what the player
has to say (skipped lines, a recording cut short) where it belongs: the console for
``rich``, stderr for ``text`` and ``jsonl`` so that stdout holds only the transcript.

:class:`TerminalControls` reads single keys without echo (termios cbreak mode, always
restored: on return, on errors, on Ctrl-C, on SIGTERM, around Ctrl-Z) and keeps a
status line at the bottom of the screen with rich's Live display.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
from collections.abc import Callable
from datetime import tzinfo
from types import FrameType
from typing import IO, Any

from rich.console import Console
from rich.text import Text

from chatcli.replay.player import DEFAULT_TICK, Playback, PlayOptions, PlayState, format_status
from chatcli.transcript import Source
from chatcli.ui.output import JsonlOutput, Output, PlainOutput, RichOutput

__all__ = ["STATUS_STYLE", "TerminalControls", "run_playback"]

STATUS_STYLE = "reverse"
_READ_SIZE = 64


class TerminalControls:
    """Keys and a status line for a player on a terminal; use it as a context manager.

    ``on_suspend`` runs when the user suspends the player (Ctrl-Z), so that playback
    pauses instead of racing ahead while stopped. ``fd`` is the terminal to read keys from.
    """

    tick: float | None = DEFAULT_TICK

    def __init__(
        self,
        console: Console,
        *,
        fd: int | None = None,
        tz: tzinfo | None = None,
        on_suspend: Callable[[], object] | None = None,
    ) -> None:
        from rich.live import Live

        self.console = console
        self.tz = tz
        self._fd = sys.stdin.fileno() if fd is None else fd
        self._on_suspend = on_suspend
        self._saved: list[Any] | None = None
        self._handlers: dict[int, Any] = {}
        self._live = Live(
            Text(""),
            console=console,
            auto_refresh=False,
            transient=True,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._state: PlayState | None = None

    def __enter__(self) -> TerminalControls:
        import termios

        self._saved = termios.tcgetattr(self._fd)
        try:
            self._raw()
            self._handle(signal.SIGTERM, self._terminate)
            self._handle(signal.SIGHUP, self._terminate)
            self._handle(signal.SIGTSTP, self._suspend)
            self._live.start()
        except BaseException:
            self._restore()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._restore()

    # ---------------------------------------------------------------- Controls

    def wait(self, timeout: float | None) -> str:
        """Wait up to ``timeout`` seconds for keys; return them (empty when none came)."""
        ready, _, _ = select.select([self._fd], [], [], timeout)
        if not ready:
            return ""
        try:
            data = os.read(self._fd, _READ_SIZE)
        except OSError:
            return ""
        return data.decode("utf-8", "replace")

    def status(self, state: PlayState) -> None:
        """Redraw the status line."""
        self._state = state
        line = Text(format_status(state, self.tz), style=STATUS_STYLE)
        line.no_wrap = True
        line.overflow = "ellipsis"
        self._live.update(line, refresh=True)

    # ---------------------------------------------------------------- terminal state

    def _raw(self) -> None:
        import termios

        # cbreak: keys arrive one by one and unechoed; ISIG stays on, so Ctrl-C and
        # Ctrl-Z still send their signals (and reach the handlers that restore things).
        mode = termios.tcgetattr(self._fd)
        mode[3] &= ~(termios.ECHO | termios.ICANON)
        mode[6][termios.VMIN] = 1
        mode[6][termios.VTIME] = 0
        termios.tcsetattr(self._fd, termios.TCSADRAIN, mode)

    def _cooked(self) -> None:
        import termios

        if self._saved is not None:
            with contextlib.suppress(termios.error, OSError):
                termios.tcsetattr(self._fd, termios.TCSADRAIN, self._saved)

    def _restore(self) -> None:
        try:
            with contextlib.suppress(Exception):
                self._live.stop()
        finally:
            self._cooked()
            for signum, handler in self._handlers.items():
                signal.signal(signum, handler)
            self._handlers.clear()

    def _handle(self, signum: int, handler: Callable[[int, FrameType | None], None]) -> None:
        self._handlers[signum] = signal.signal(signum, handler)

    def _terminate(self, signum: int, frame: FrameType | None) -> None:
        # SystemExit unwinds through __exit__, which puts the terminal back
        raise SystemExit(128 + signum)

    def _suspend(self, signum: int, frame: FrameType | None) -> None:
        if self._on_suspend is not None:
            self._on_suspend()
        with contextlib.suppress(Exception):
            self._live.stop()
        self._cooked()
        signal.signal(signal.SIGTSTP, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTSTP)  # stops here until `fg`
        signal.signal(signal.SIGTSTP, self._suspend)
        self._raw()
        self._live.start()
        if self._state is not None:
            self.status(self._state)


def run_playback(
    source: Source | tuple[str, ...],
    options: PlayOptions,
    fmt: str,
    *,
    interactive: bool = False,
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
) -> int:
    """Play ``source`` in format ``fmt`` (rich, text or jsonl); return the exit code.

    A tuple of several files plays them merged into one timeline by timestamp.

    ``interactive`` (rich format on a terminal) adds keys and the status line.
    """
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    if isinstance(source, tuple):  # several files: one timeline
        from chatcli.replay.player import open_merged

        playback = Playback(source[0], options, reader=open_merged(source, options))
    else:
        playback = Playback(source, options)
    console: Console | None = None
    output: Output
    if fmt == "jsonl":
        output = JsonlOutput(out.buffer, notices=err)  # type: ignore[union-attr]
    elif fmt == "text":
        output = PlainOutput(playback.renderer, out, notices=err)
    else:
        console = Console(file=out, highlight=False, soft_wrap=True)
        output = RichOutput(playback.renderer, console)
    for note in playback.notes:
        print(f"chatcli: note: {note}", file=err, flush=True)
    if interactive and console is not None:
        controls = TerminalControls(console, tz=options.tz, on_suspend=playback.timeline.pause)
        with controls:
            playback.play(output, controls)
    else:
        playback.play(output)
    problems = playback.problems
    said = [f"{line} (line skipped)" for line in problems] + playback.warnings
    output.flush()
    for line in said:
        output.notice(line)
    # bad lines were played around, but the file is not what --check calls valid: say so
    return 1 if problems else 0
