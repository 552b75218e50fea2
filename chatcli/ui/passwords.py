"""Passwords in ``join``: asked with hidden input, kept for reconnects, never shown.

Two flows, written against an injected ``ask`` (a coroutine that shows a prompt and
returns what was typed, hidden, or None when the user gave up) so tests drive them
without a terminal:

- :func:`log_in`: the first login. When the server refuses it with ``auth_failed``, ask
  for what it wants (the server password when its welcome lists ``server_password`` and
  none was given yet, else the account's) and try again, a few times at most. The
  passwords end up in the session's :class:`~chatcli.client.resume.ResumeState`, so an
  automatic reconnect sends them again without asking.
- :func:`new_password`: ``/register`` and ``/password`` ask for the new password twice and
  refuse a mismatch (or a length the server would refuse) before anything is sent.

Interactive ``join`` asks through prompt_toolkit with ``is_password=True``
(:func:`terminal_asker`); piped ``join`` has no one to ask and reads ``CHATCLI_PASSWORD``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

from chatcli.client.resuming import ResumingClient
from chatcli.core.events import MAX_SECRET, MIN_PASSWORD
from chatcli.core.relay import SERVER_PASSWORD_FEATURE
from chatcli.errors import ServerRefused

__all__ = ["MAX_ASKS", "Ask", "log_in", "new_password", "terminal_asker"]

#: a prompt in, what was typed out (None: the user gave up, Ctrl-C or Ctrl-D)
Ask = Callable[[str], Awaitable[str | None]]
#: passwords asked at one login before giving up (the server limits guessing too)
MAX_ASKS: Final = 3


def _wants_server_password(client: ResumingClient) -> bool:
    welcome = client.welcome
    return welcome is not None and SERVER_PASSWORD_FEATURE in welcome.features


async def log_in(
    client: ResumingClient, ask: Ask | None, tell: Callable[[str], None] | None = None
) -> None:
    """Start ``client``'s session, asking for passwords while the server says auth_failed.

    The server password is asked when the welcome lists ``server_password`` and none was
    given, or again when the one given (typed, or from a file or the environment) was
    refused for the server ("wrong or missing server password"); otherwise the account's.
    ``ask`` None (a script) raises the refusal at once, with a hint about the environment
    variables. ``tell`` shows why a password is asked (the server's words).
    """
    state = client.state
    asked = 0
    while True:
        try:
            await client.start()
            return
        except ServerRefused as exc:
            if exc.code != "auth_failed":
                raise
            server = _wants_server_password(client) and (
                state.server_password is None or "server password" in exc.message.casefold()
            )
            if ask is None:
                hint = (
                    "give --server-password-file or CHATCLI_SERVER_PASSWORD"
                    if server
                    else "give the password in CHATCLI_PASSWORD"
                )
                raise ServerRefused(exc.code, f"{exc.message}; {hint}") from None
            if asked >= MAX_ASKS:
                raise
            asked += 1
            if tell is not None:
                tell(exc.message)
            if server:
                secret = await ask(f"server password for {client.address}: ")
            else:
                secret = await ask(f"password for {state.name}: ")
            if not secret:
                raise
            if server:
                state.server_password = secret
            else:
                state.password = secret


async def new_password(ask: Ask, what: str = "new password") -> tuple[str | None, str]:
    """Ask for a new password twice: (the password, "") or (None, why it was refused)."""
    first = await ask(f"{what}: ")
    if first is None:
        return None, "cancelled"
    if not MIN_PASSWORD <= len(first) <= MAX_SECRET:
        return None, f"passwords are {MIN_PASSWORD}-{MAX_SECRET} characters; nothing sent"
    second = await ask(f"{what} again: ")
    if second is None:
        return None, "cancelled"
    if second != first:
        return None, "the two passwords differ; nothing sent"
    return first, ""


def terminal_asker() -> Ask:
    """Ask on the terminal with prompt_toolkit, echoing nothing of what is typed."""
    from prompt_toolkit import PromptSession

    async def ask(message: str) -> str | None:
        session: PromptSession[str] = PromptSession()
        try:
            return await session.prompt_async(message, is_password=True)
        except (EOFError, KeyboardInterrupt):
            return None

    return ask
