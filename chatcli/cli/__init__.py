"""The ``chatcli`` command group: thin click commands over the library.

Each command parses its options, calls one library coroutine and maps ChatError to one
clear line on stderr and a non-zero exit code. Heavy imports happen inside the commands
so that ``chatcli --help`` stays fast.
"""

from __future__ import annotations

import click

from chatcli import __version__
from chatcli.cli.common import ChatGroup
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

for _module, _name in (("chatcli.cli.replay", "replay"), ("chatcli.cli.bench", "bench")):
    try:
        cli.add_command(getattr(__import__(_module, fromlist=[_name]), _name))
    except ModuleNotFoundError as _exc:  # command not built yet in this checkout
        if _exc.name != _module:
            raise


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="chatcli")
