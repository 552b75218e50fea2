"""``chatcli serve``: run the relay."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import BinaryIO

import click

from chatcli.settings import DEFAULT_HOST, DEFAULT_PORT, ServerSettings

__all__ = ["serve"]

_DEFAULTS = ServerSettings()


@click.command()
@click.option(
    "--host",
    default=DEFAULT_HOST,
    show_default=True,
    envvar="CHATCLI_HOST",
    show_envvar=True,
    help="Address to listen on; 0.0.0.0 shares it on your LAN.",
)
@click.option(
    "--port",
    "-p",
    type=click.IntRange(0, 65535),
    default=DEFAULT_PORT,
    show_default=True,
    envvar="CHATCLI_PORT",
    show_envvar=True,
    help="TCP port; 0 picks a free one.",
)
@click.option(
    "--login-timeout",
    type=click.FloatRange(min=0.1),
    metavar="SECONDS",
    default=_DEFAULTS.login_timeout,
    show_default=True,
    envvar="CHATCLI_LOGIN_TIMEOUT",
    help="Time a new connection has to log in.",
)
@click.option(
    "--max-frame",
    type=click.IntRange(min=256),
    metavar="BYTES",
    default=_DEFAULTS.max_frame,
    show_default=True,
    envvar="CHATCLI_MAX_FRAME",
    help="Longest line accepted.",
)
@click.option(
    "--history",
    type=click.IntRange(min=0),
    metavar="N",
    default=_DEFAULTS.history,
    show_default=True,
    envvar="CHATCLI_HISTORY",
    help="Messages kept per room and sent to late joiners.",
)
@click.option(
    "--rate-limit",
    type=click.FloatRange(min=0),
    metavar="N",
    default=_DEFAULTS.rate_limit,
    show_default=True,
    envvar="CHATCLI_RATE_LIMIT",
    help="Messages per second per connection (bursts allowed); 0 disables.",
)
@click.option(
    "--rate-burst",
    type=click.IntRange(min=1),
    metavar="N",
    default=_DEFAULTS.rate_burst,
    show_default=True,
    envvar="CHATCLI_RATE_BURST",
    help="Messages a connection may send at once before --rate-limit applies.",
)
@click.option(
    "--ping-interval",
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    default=_DEFAULTS.ping_interval,
    show_default=True,
    envvar="CHATCLI_PING_INTERVAL",
    help="Ping idle clients this often; drop them after 3 silent intervals. 0: off.",
)
@click.option(
    "--max-buffer",
    type=click.IntRange(min=1024),
    metavar="BYTES",
    default=_DEFAULTS.max_buffer,
    show_default=True,
    envvar="CHATCLI_MAX_BUFFER",
    help="Unsent output after which a client is cut off as a slow consumer.",
)
@click.option(
    "--flush-interval",
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    default=_DEFAULTS.flush_interval,
    show_default=True,
    envvar="CHATCLI_FLUSH_INTERVAL",
    help="While busy, coalesce output for at most this long before writing (0: every turn).",
)
@click.option(
    "--flush-batch",
    type=click.IntRange(min=1),
    metavar="N",
    default=_DEFAULTS.flush_batch,
    show_default=True,
    envvar="CHATCLI_FLUSH_BATCH",
    help="While busy, write as soon as this many events have been gathered.",
)
@click.option(
    "--max-connections",
    type=click.IntRange(min=1),
    metavar="N",
    default=_DEFAULTS.max_connections,
    show_default=True,
    envvar="CHATCLI_MAX_CONNECTIONS",
    help="Connections accepted at once; more are told server_full and closed.",
)
@click.option(
    "--record",
    "record_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    envvar="CHATCLI_RECORD",
    help="Record every room to a transcript in this directory.",
)
@click.option(
    "--store",
    metavar="PATH|memory",
    default=None,
    envvar="CHATCLI_STORE",
    show_envvar=True,
    help="SQLite file that keeps rooms across restarts (default: chatcli.db in the "
    "user data dir), or 'memory' to keep nothing.",
)
@click.option(
    "--retain",
    type=click.IntRange(min=1),
    metavar="N",
    default=_DEFAULTS.retain,
    show_default=True,
    envvar="CHATCLI_RETAIN",
    help="Messages kept per room in the store file (oldest dropped first).",
)
@click.option(
    "--web",
    "web",
    metavar="[HOST:]PORT",
    default=None,
    envvar="CHATCLI_WEB",
    show_envvar=True,
    help="Also serve the browser page and its WebSocket (/ws) on this port "
    "(HOST defaults to --host).",
)
@click.option(
    "--web-origin",
    "web_origins",
    metavar="ORIGIN",
    multiple=True,
    help="Another page origin (like https://chat.example.org) allowed to open the "
    "WebSocket; repeatable. The page's own origin always is.",
)
@click.option("-q", "--quiet", is_flag=True, help="Log only warnings and errors.")
@click.option(
    "--ready-fd",
    type=click.IntRange(min=0),
    metavar="FD",
    hidden=True,
    help="For programs: once listening, write one JSON line with every address "
    '({"addresses": [[host, port], ...]}) to descriptor FD and close it.',
)
def serve(
    host: str,
    port: int,
    login_timeout: float,
    max_frame: int,
    history: int,
    rate_limit: float,
    rate_burst: int,
    ping_interval: float,
    max_buffer: int,
    flush_interval: float,
    flush_batch: int,
    max_connections: int,
    record_dir: Path | None,
    store: str | None,
    retain: int,
    web: str | None,
    web_origins: tuple[str, ...],
    quiet: bool,
    ready_fd: int | None,
) -> None:
    """Run a chat relay until Ctrl-C or SIGTERM.

    JSON clients (chatcli join, bots) and people with plain nc or telnet can use it
    at the same time; see docs/protocol.md.

    \b
    Examples:
      chatcli serve
      chatcli serve --port 0 -q                  # any free port, quiet
      chatcli serve --host 0.0.0.0 --port 7777   # share on your LAN
      chatcli serve --rate-limit 0 --history 200 --record recordings/
      chatcli serve --store team.db --retain 1000000
      chatcli serve --store memory               # keep nothing across restarts
      chatcli serve --web 8080                   # and the browser page on port 8080
    """
    from chatcli.addresses import format_address, parse_host
    from chatcli.logs import console_err, setup_logging
    from chatcli.runtime import encode_ready, run
    from chatcli.transports.tcp import run_server

    host = parse_host(host)
    web_address = _web_address(web, host) if web is not None else None
    if record_dir is not None:
        _check_writable(record_dir)
    ready = _ready_file(ready_fd) if ready_fd is not None else None
    settings = ServerSettings(
        host=host,
        port=port,
        login_timeout=login_timeout,
        max_frame=max_frame,
        history=history,
        rate_limit=rate_limit,
        rate_burst=rate_burst,
        ping_interval=ping_interval,
        max_buffer=max_buffer,
        flush_interval=flush_interval,
        flush_batch=flush_batch,
        max_connections=max_connections,
        record_dir=record_dir,
        store=store,
        retain=retain,
        web=web_address,
        web_origins=tuple(_origin(origin) for origin in web_origins),
    )
    setup_logging(logging.WARNING if quiet else logging.INFO)

    def listening(addresses: list[tuple[str, int]]) -> None:
        where = ", ".join(format_address(h, p) for h, p in addresses)
        click.echo(f"chatcli serve listening on {where}", err=False)
        if ready is not None:
            with ready:
                ready.write(encode_ready(addresses))
        if servers and servers[0].relay.web_url:
            click.echo(f"chatcli web page at {servers[0].relay.web_url}")
        if not quiet:
            for line in store_lines:
                console_err.print(f"store: {line}", style="dim", markup=False, soft_wrap=True)
            host, port = addresses[0]
            join = "chatcli join YOURNAME"
            if host not in (DEFAULT_HOST, "0.0.0.0", "::"):
                join += f" --host {host}"
            if port != DEFAULT_PORT:
                join += f" --port {port}"
            console_err.print(f"Ctrl-C stops it; join with: {join}", style="dim", markup=False)

    store_lines: list[str] = []
    servers: list[ChatServer] = []

    def opened(store: Store) -> None:
        store_lines.append(describe_store(store))

    from chatcli.cli.common import EXIT_USAGE, fail
    from chatcli.errors import StoreError
    from chatcli.store import Store, describe_store
    from chatcli.transports.tcp import ChatServer

    try:
        run(run_server(settings, on_listening=listening, on_store=opened, setup=servers.append))
    except StoreError as exc:
        fail(str(exc), EXIT_USAGE)
    except OSError as exc:
        fail(f"cannot listen on {format_address(host, port)}: {exc.strerror or exc}")
    finally:
        if ready is not None:
            ready.close()  # the reader sees end of file: no address is coming


def _ready_file(fd: int) -> BinaryIO:
    """``--ready-fd FD`` as a file, or UsageError when FD is not open for writing."""
    from chatcli.errors import UsageError

    try:
        return os.fdopen(fd, "wb", buffering=0)
    except OSError as exc:
        raise UsageError(f"--ready-fd {fd}: {exc.strerror or exc}") from exc


def _check_writable(directory: Path) -> None:
    """Exit 2 with one line unless ``directory`` can be created and written to.

    Checked before listening, so that a bad ``--record`` stops the start-up instead of
    the first event the server records.
    """
    import tempfile

    from chatcli.cli.common import EXIT_USAGE, fail

    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        why = exc.strerror or str(exc)
        fail(f"--record {directory}: cannot write there ({why})", EXIT_USAGE)


def _web_address(text: str, host: str) -> tuple[str, int]:
    """``--web [HOST:]PORT`` as (host, port); the host defaults to ``--host``.

    Port 0 picks a free port, as ``--port 0`` does (the one address parser wants 1-65535).
    """
    from chatcli.addresses import parse_address, parse_host

    head, colon, port = text.strip().rpartition(":")
    if port == "0" and (not colon or not head.endswith(":")):
        return (parse_host(head, "--web") if head else host), 0
    return parse_address(text, option="--web", default_host=host)


def _origin(text: str) -> str:
    """``--web-origin`` as the browser sends it: scheme://host[:port], no path."""
    from urllib.parse import urlsplit

    from chatcli.errors import UsageError

    parts = urlsplit(text.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
        raise UsageError(
            f"--web-origin wants scheme://host[:port] (like https://chat.example.org), not {text!r}"
        )
    return f"{parts.scheme}://{parts.netloc}"
