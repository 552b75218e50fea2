"""The ``chatcli`` command group: thin click commands over the library.

Each command parses its options, calls one library coroutine and maps ChatError to one
clear line on stderr and a non-zero exit code. Heavy imports happen inside the commands
so that ``chatcli --help`` stays fast.
"""

from __future__ import annotations

import sys

import click

from chatcli import __version__
from chatcli.cli.common import EXIT_INTERRUPTED, EXIT_USAGE, ChatGroup, fail
from chatcli.cli.join import join
from chatcli.cli.serve import serve

__all__ = ["cli", "main"]


@click.group(cls=ChatGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="chatcli")
def cli() -> None:
    """Terminal chat: a relay, a client, transcript replay and a load tester.

    \b
    Examples:
      chatcli serve                      # relay on 127.0.0.1:7777
      chatcli join alice                 # chat as alice
      chatcli replay recordings/FILE     # play a transcript back
      chatcli bench --clients 50         # measure a relay
    """


cli.add_command(serve)
cli.add_command(join)

for _module, _name in (
    ("chatcli.cli.replay", "replay"),
    ("chatcli.cli.bench", "bench"),
    ("chatcli.cli.cluster", "cluster"),
):
    try:
        cli.add_command(getattr(__import__(_module, fromlist=[_name]), _name))
    except ModuleNotFoundError as _exc:  # command not built yet in this checkout
        if _exc.name != _module:
            raise


def _command_path(args: list[str]) -> str:
    """``chatcli SUBCOMMAND`` for the first subcommand named in ``args``, else ``chatcli``.

    click reports some parse errors (an option missing its value) with no context, so
    the help to point at is found from the command line itself.
    """
    for arg in args:
        if arg in cli.commands:
            return f"chatcli {arg}"
    return "chatcli"


def main() -> None:
    """Console-script entry point: one clear line for every usage error."""
    try:
        code = cli.main(prog_name="chatcli", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:  # plain `chatcli`: show the help
        click.echo(exc.ctx.get_help() if exc.ctx is not None else exc.format_message())
        sys.exit(0)
    except click.UsageError as exc:
        command = exc.ctx.command_path if exc.ctx is not None else _command_path(sys.argv[1:])
        fail(f"{exc.format_message()} (see '{command} --help')", EXIT_USAGE)
    except click.ClickException as exc:
        fail(exc.format_message())
    except click.Abort:
        click.echo("", err=True)
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(code if isinstance(code, int) else 0)
