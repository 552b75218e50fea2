"""``chatcli join``: the interactive client (placeholder replaced below)."""

import click


@click.command()
def join() -> None:
    """Join a chat."""
