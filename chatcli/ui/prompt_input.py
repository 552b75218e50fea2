"""The prompt_toolkit side of ``join``'s input: paste, completion, the bell.

The decisions (how a paste splits, what Tab offers) live in :mod:`chatcli.ui.input_lines`
with no terminal; this module only wires them to prompt_toolkit:

- :func:`input_bindings`: a bracketed paste that holds line breaks is submitted at once,
  whole, so that :func:`lines_typed` makes one message per line (it used to be glued
  into one message).
- :func:`ask_to_send`: a paste of more than :data:`PASTE_CONFIRM` lines is confirmed
  once ("send 30 lines? [y/N]"), as WeeChat does.
- :func:`name_completer`: Tab completes names in the room and commands.
- :class:`WatchingOutput`: follows who is in the room, and rings the bell when someone
  names you.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

from prompt_toolkit import PromptSession
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.key_binding.bindings.mouse import load_mouse_bindings
from prompt_toolkit.keys import Keys

from chatcli.ui.input_lines import PASTE_CONFIRM, Roster, completions, paste_lines
from chatcli.ui.output import Output
from chatcli.ui.render import Renderer

__all__ = ["WatchingOutput", "ask_to_send", "input_bindings", "lines_typed", "name_completer"]

BELL = "\a"


def input_bindings() -> KeyBindings:
    """Key bindings of the join prompt: a multi-line paste is submitted as it arrives."""
    bindings = KeyBindings()

    @bindings.add(Keys.BracketedPaste)
    def _paste(event: KeyPressEvent) -> None:
        data = event.data.replace("\r\n", "\n").replace("\r", "\n")
        buffer = event.current_buffer
        buffer.insert_text(data)
        if "\n" in data:
            buffer.validate_and_handle()

    mouse = load_mouse_bindings().get_bindings_for_keys((Keys.Vt100MouseEvent,))

    @bindings.add(Keys.Vt100MouseEvent)
    def _mouse(event: KeyPressEvent) -> None:
        # A typed escape sequence such as ESC [ 3 1 m reads like a mouse report to the
        # parser, and prompt_toolkit's own handler then fails on it with a traceback and
        # "Press ENTER to continue". A report that does not parse is dropped.
        try:
            for binding in mouse:
                binding.handler(event)
        except (ValueError, KeyError, IndexError):
            return

    return bindings


def lines_typed(text: str) -> list[str]:
    """What the prompt returned, as the lines to send (a paste holds several)."""
    if "\n" in text or "\r" in text:
        return paste_lines(text)
    return [text]


async def ask_to_send(lines: list[str], output: Output) -> bool:
    """True if ``lines`` may be sent: asks once when there are many (a large paste)."""
    if len(lines) <= PASTE_CONFIRM:
        return True
    asking: PromptSession[str] = PromptSession(erase_when_done=True)
    answer = await asking.prompt_async(f"send {len(lines)} lines? [y/N] ")
    if answer.strip().lower() in ("y", "yes"):
        return True
    output.notice(f"paste of {len(lines)} lines not sent")
    return False


class _NameCompleter(Completer):
    def __init__(self, roster: Roster) -> None:
        self.roster = roster

    def get_completions(
        self, document: Document, complete_event: CompleteEvent
    ) -> Iterable[Completion]:
        word, options = completions(document.text_before_cursor, self.roster.names)
        for option in options:
            yield Completion(option, start_position=-len(word))


def name_completer(roster: Roster) -> Completer:
    """Tab completion of the names in ``roster`` and of the join commands."""
    return _NameCompleter(roster)


class WatchingOutput:
    """An :class:`Output` that also follows the room's names and rings for mentions."""

    def __init__(self, inner: Output, renderer: Renderer, roster: Roster, *, bell: bool) -> None:
        self.inner = inner
        self.renderer = renderer
        self.roster = roster
        self.bell = bell

    def show(self, event: object, raw: bytes = b"") -> None:
        self.roster.update(event)
        self.inner.show(event, raw)
        if self.bell and self.renderer.mentions_me(event):
            sys.stdout.write(BELL)
            sys.stdout.flush()

    def notice(self, text: str, error: bool = False) -> None:
        self.inner.notice(text, error)

    def flush(self) -> None:
        self.inner.flush()
