"""What every command shares: error mapping and exit codes.

``run_async`` is :func:`chatcli.runtime.run` (the one loop runner), re-exported here for
the commands that import it from this module.
"""

from __future__ import annotations

import sys
from typing import Any, NoReturn

import click

from chatcli.errors import ChatError, UsageError
from chatcli.runtime import run as run_async

__all__ = ["EXIT_FAILURE", "EXIT_INTERRUPTED", "ChatGroup", "fail", "run_async"]

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def fail(message: str, code: int = EXIT_FAILURE) -> NoReturn:
    """Print one red line on stderr and exit with ``code``."""
    click.secho(f"chatcli: {message}", fg="red", err=True)
    sys.exit(code)


class ChatGroup(click.Group):
    """A click group that turns ChatError into one line and an exit code, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except UsageError as exc:
            fail(str(exc), EXIT_USAGE)
        except ChatError as exc:
            fail(str(exc))
        except KeyboardInterrupt:
            click.echo("", err=True)
            sys.exit(EXIT_INTERRUPTED)
        except BrokenPipeError:
            # the reader of our output went away (e.g. `| head`); nothing left to say
            sys.stderr.close()
            sys.exit(EXIT_FAILURE)
