"""``chatcli cluster``: a short status of a cluster's nodes and of its NATS connection."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from chatcli.cluster.options import nats_options

if TYPE_CHECKING:
    from chatcli.cluster.options import NatsOptions

__all__ = ["cluster"]


@click.command()
@nats_options(required=True, name="chatcli cluster")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON, for scripts.")
def cluster(nats: NatsOptions, as_json: bool) -> None:
    """Show the nodes of a cluster and the NATS server they share.

    \b
    Examples:
      chatcli cluster --cluster nats://127.0.0.1:4222
      chatcli cluster --cluster nats://n1:4222,nats://n2:4222 --json
    """
    import json

    from rich.console import Console

    from chatcli.cli.common import run_async
    from chatcli.cluster.status import gather_status, render_status, status_json

    status = run_async(gather_status(nats))
    if as_json:
        click.echo(json.dumps(status_json(status), indent=2))
    else:
        Console(highlight=False).print(render_status(status))
