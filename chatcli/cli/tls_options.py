"""The TLS options every client command shares: ``--tls``, ``--ca FILE``, ``--insecure``.

``join``, ``replay --to`` and ``bench`` take them through :func:`client_tls_options` and
turn them into a :class:`chatcli.tls.ClientTls` with :func:`client_tls`, so the three
spell, check and warn alike. ``--ca`` and ``--insecure`` imply ``--tls``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import click

from chatcli.errors import UsageError
from chatcli.tls import INSECURE_WARNING, ClientTls

__all__ = ["client_tls", "client_tls_options"]

F = TypeVar("F", bound=Callable[..., object])


def client_tls_options(*, negatable: bool = False, scope: str = "") -> Callable[[F], F]:
    """Add ``--tls`` (``--tls/--no-tls`` when ``negatable``), ``--ca`` and ``--insecure``.

    ``scope`` starts each help text (e.g. "--to: ").
    """

    def decorate(command: F) -> F:
        for option in reversed(
            [
                click.option(
                    "--tls/--no-tls" if negatable else "--tls",
                    "tls",
                    is_flag=True,
                    default=None if negatable else False,
                    help=f"{scope}Speak TLS, checking the server's certificate"
                    + (" [default: as remembered for this host]" if negatable else "."),
                ),
                click.option(
                    "--ca",
                    type=click.Path(dir_okay=False, path_type=Path),
                    metavar="FILE",
                    help=f"{scope}Trust the CA certificates in this PEM file instead of "
                    "the system's (implies --tls).",
                ),
                click.option(
                    "--insecure",
                    is_flag=True,
                    help=f"{scope}TLS without checking the certificate (implies --tls; warns).",
                ),
            ]
        ):
            command = option(command)
        return command

    return decorate


def client_tls(
    tls: bool | None, ca: Path | None, insecure: bool, *, warn: bool = True
) -> ClientTls | None:
    """What the options ask for: None for plain TCP, else the TLS to speak.

    ``tls`` is True (``--tls``), False (``--no-tls``, given) or None (neither given).

    Raises UsageError for contradictions and TlsError (exit 2 as well) for a CA file that
    cannot be used; prints the ``--insecure`` warning on stderr when ``warn``.
    """
    if tls is False and (ca is not None or insecure):
        raise UsageError(f"--no-tls does not go with {'--ca' if ca else '--insecure'}")
    if ca is not None and insecure:
        raise UsageError("--ca and --insecure contradict each other: give one of them")
    if not (tls or ca is not None or insecure):
        return None
    chosen = ClientTls(ca=ca.resolve() if ca is not None else None, insecure=insecure)
    chosen.context()  # a CA file that cannot be used stops the command now, in one line
    if insecure and warn:
        click.secho(f"chatcli: {INSECURE_WARNING}", fg="yellow", err=True)
    return chosen
