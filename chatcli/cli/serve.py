"""``chatcli serve``: run the relay."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import BinaryIO

import click

from chatcli.cluster.options import NatsOptions, nats_options
from chatcli.settings import DEFAULT_HOST, DEFAULT_MAX_PER_IP, DEFAULT_PORT, ServerSettings

__all__ = ["serve"]

#: what ``--max-per-ip-exempt`` takes to exempt nothing
NO_EXEMPTION = "none"

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
    "--record-dms",
    is_flag=True,
    envvar="CHATCLI_RECORD_DMS",
    help="With --record: record direct messages too (to <stamp>.dm.jsonl). They are "
    "private: off by default, and a warning says so at start-up.",
)
@click.option(
    "--op",
    "ops",
    metavar="NAME",
    multiple=True,
    help="Make NAME an operator (kick, ban, unban, mute) once it logs in with its "
    "account's password; repeatable. The name must be registered: register it first.",
)
@click.option(
    "--password-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Require the server password in this file (its first line) from every client; "
    "or set CHATCLI_SERVER_PASSWORD.",
)
@click.option(
    "--max-per-ip",
    type=click.IntRange(min=1),
    metavar="N",
    default=DEFAULT_MAX_PER_IP,
    show_default=True,
    envvar="CHATCLI_MAX_PER_IP",
    help="Connections one address may hold; more are told server_full.",
)
@click.option(
    "--max-per-ip-exempt",
    "exempt",
    metavar="CIDR",
    multiple=True,
    help="An address or network the --max-per-ip limit skips; repeatable. Default: "
    "loopback (127.0.0.0/8, ::1); 'none' exempts nothing.",
)
@click.option(
    "--max-rooms",
    type=click.IntRange(min=1),
    metavar="N",
    default=_DEFAULTS.max_rooms,
    show_default=True,
    envvar="CHATCLI_MAX_ROOMS",
    help="Rooms held at once, the default room included; joins past it are refused.",
)
@click.option(
    "--room-creations",
    type=click.IntRange(min=0),
    metavar="N",
    default=_DEFAULTS.room_creations,
    show_default=True,
    envvar="CHATCLI_ROOM_CREATIONS",
    help="Rooms one connection may create a minute; 0: no limit.",
)
@click.option(
    "--max-output-total",
    type=click.IntRange(min=0),
    metavar="BYTES",
    default=_DEFAULTS.max_output_total,
    show_default=True,
    envvar="CHATCLI_MAX_OUTPUT_TOTAL",
    help="Unsent output across all clients; past it the largest consumers are cut "
    "first. 0: no limit.",
)
@click.option(
    "--text-idle",
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    default=_DEFAULTS.text_idle,
    show_default=True,
    envvar="CHATCLI_TEXT_IDLE",
    help="Close nc/telnet sessions silent this long (they have no heartbeat). 0: never.",
)
@click.option(
    "--tls-cert",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    envvar="CHATCLI_TLS_CERT",
    help="Speak TLS only, with this PEM certificate chain (needs --tls-key).",
)
@click.option(
    "--tls-key",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    envvar="CHATCLI_TLS_KEY",
    help="The PEM private key of --tls-cert.",
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
@click.option(
    "--web-flush-interval",
    type=click.FloatRange(min=0, max=1),
    metavar="SECONDS",
    default=_DEFAULTS.web_flush_interval,
    show_default=True,
    envvar="CHATCLI_WEB_FLUSH_INTERVAL",
    help="While busy, write to browsers at most this often, all together (0: at every "
    "flush, like TCP).",
)
@nats_options(name="chatcli-serve")
@click.option(
    "--node",
    metavar="NAME",
    help="This node's name in the cluster (1-32 of A-Z a-z 0-9 _ -; default: HOST-PID). "
    "With --cluster only.",
)
@click.option(
    "--nats-wait",
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    help="With --cluster: give up (exit 1) when NATS cannot be reached within SECONDS at "
    "start-up (default: keep trying and say so).",
)
@click.option(
    "--nats-replicas",
    type=click.IntRange(1, 5),
    default=1,
    show_default=True,
    metavar="N",
    help="With --cluster: copies NATS keeps of the message stream and the buckets when "
    "this node creates them (3 on a NATS cluster of 3 servers).",
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
    record_dms: bool,
    ops: tuple[str, ...],
    password_file: Path | None,
    max_per_ip: int,
    exempt: tuple[str, ...],
    max_rooms: int,
    room_creations: int,
    max_output_total: int,
    text_idle: float,
    tls_cert: Path | None,
    tls_key: Path | None,
    web: str | None,
    web_origins: tuple[str, ...],
    web_flush_interval: float,
    nats: NatsOptions | None,
    node: str | None,
    nats_wait: float | None,
    nats_replicas: int,
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
      chatcli serve --op alice --password-file team.pass --max-per-ip 4
      chatcli serve --tls-cert cert.pem --tls-key key.pem   # TLS only
      chatcli serve --web 8080                   # and the browser page on port 8080
    """
    from chatcli.addresses import format_address, parse_host
    from chatcli.logs import console_err, setup_logging
    from chatcli.runtime import encode_ready, freeze_heap, run
    from chatcli.transports.tcp import run_server

    host = parse_host(host)
    _check_tls(tls_cert, tls_key)
    web_address = _web_address(web, host) if web is not None else None
    if record_dir is not None:
        _check_writable(record_dir)
    if record_dms and record_dir is None:
        from chatcli.cli.common import EXIT_USAGE, fail

        fail("--record-dms needs --record DIR", EXIT_USAGE)
    server_password = _server_password(password_file)
    checked_ops = _checked_ops(ops)
    exempt_networks = _exempt(exempt)
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
        ops=checked_ops,
        server_password=server_password,
        max_per_ip=max_per_ip,
        max_per_ip_exempt=exempt_networks,
        record_dms=record_dms,
        max_rooms=max_rooms,
        room_creations=room_creations,
        max_output_total=max_output_total,
        text_idle=text_idle,
        tls_cert=tls_cert,
        tls_key=tls_key,
        web=web_address,
        web_origins=tuple(_origin(origin) for origin in web_origins),
        web_flush_interval=web_flush_interval,
        cluster=nats,
        node=_node_name(nats, node, nats_wait),
        nats_wait=nats_wait,
        nats_replicas=nats_replicas,
    )
    setup_logging(logging.WARNING if quiet else logging.INFO)
    asked = click.get_current_context().get_parameter_source("max_connections")
    settings = _fit_open_files(settings, warn=asked is not click.core.ParameterSource.DEFAULT)
    _log_access(settings)

    def listening(addresses: list[tuple[str, int]]) -> None:
        freeze_heap()  # set up: what it holds now is never walked by the collector again
        where = ", ".join(format_address(h, p) for h, p in addresses)
        tls = " (TLS)" if tls_cert is not None else ""
        click.echo(f"chatcli serve listening on {where}{tls}", err=False)
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
            if tls_cert is not None:  # a private or self-signed certificate needs its CA
                join += " --tls [--ca CA-FILE]"
            console_err.print(
                f"Ctrl-C stops it; join with: {join}", style="dim", markup=False, soft_wrap=True
            )

    store_lines: list[str] = []
    servers: list[ChatServer] = []

    def opened(store: Store) -> None:
        store_lines.append(describe_store(store))

    from chatcli.cli.common import EXIT_USAGE, fail
    from chatcli.cluster.node import ClusterError
    from chatcli.errors import StoreError
    from chatcli.store import Store, describe_store
    from chatcli.transports.tcp import ChatServer

    try:
        run(run_server(settings, on_listening=listening, on_store=opened, setup=servers.append))
    except StoreError as exc:
        fail(str(exc), EXIT_USAGE)
    except ClusterError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot listen on {format_address(host, port)}: {exc.strerror or exc}")
    finally:
        if ready is not None:
            ready.close()  # the reader sees end of file: no address is coming


def _fit_open_files(settings: ServerSettings, *, warn: bool) -> ServerSettings:
    """``settings`` with --max-connections lowered (and a warning) when the open-files
    limit cannot hold that many connections and what the server needs beside them, so a
    client past the limit is told ``server_full`` instead of meeting a silent EOF."""
    import dataclasses

    from chatcli.runtime import connections_that_fit

    fit = connections_that_fit(settings.max_connections, warn=warn)
    if fit == settings.max_connections:
        return settings
    return dataclasses.replace(settings, max_connections=fit)


def _ready_file(fd: int) -> BinaryIO:
    """``--ready-fd FD`` as a file, or UsageError when FD is not open for writing."""
    from chatcli.errors import UsageError

    try:
        return os.fdopen(fd, "wb", buffering=0)
    except OSError as exc:
        raise UsageError(f"--ready-fd {fd}: {exc.strerror or exc}") from exc


def _check_tls(cert: Path | None, key: Path | None) -> None:
    """Exit 2 with one line unless --tls-cert and --tls-key come together and can be used.

    Checked before the store opens or the port is taken, like a bad ``--record``.
    """
    from chatcli.cli.common import EXIT_USAGE, fail
    from chatcli.tls import TlsError, server_context

    if (cert is None) != (key is None):
        given, missing = ("--tls-cert", "--tls-key") if key is None else ("--tls-key", "--tls-cert")
        fail(f"{given} needs {missing}: TLS takes a certificate and its private key", EXIT_USAGE)
    if cert is not None and key is not None:
        try:
            server_context(cert, key)
        except TlsError as exc:
            fail(str(exc), EXIT_USAGE)


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


def _server_password(path: Path | None) -> str | None:
    """The server password from ``--password-file`` (its first line) or the environment.

    An unreadable or empty file exits 2 with one line; the password itself is never
    printed, logged or put in an error message.
    """
    from chatcli.cli.common import EXIT_USAGE, fail
    from chatcli.cli.secrets import SERVER_PASSWORD_ENV, password_from_env, read_password_file
    from chatcli.errors import UsageError

    try:
        if path is not None:
            return read_password_file(path, "--password-file")
        return password_from_env(SERVER_PASSWORD_ENV)
    except UsageError as exc:
        fail(str(exc), EXIT_USAGE)


def _checked_ops(ops: tuple[str, ...]) -> tuple[str, ...]:
    """``--op`` names in their kept (NFKC) form; exit 2 for one that breaks the name rule."""
    from chatcli.cli.common import EXIT_USAGE, fail
    from chatcli.core.names import name_error, normalize

    checked = []
    for op in ops:
        name = normalize(op)
        problem = name_error(name)
        if problem is not None:
            fail(f"--op {op!r}: {problem}", EXIT_USAGE)
        checked.append(name)
    return tuple(checked)


def _exempt(given: tuple[str, ...]) -> tuple[str, ...] | None:
    """``--max-per-ip-exempt`` values: None (loopback) when none given, () for ``none``."""
    import ipaddress

    from chatcli.cli.common import EXIT_USAGE, fail

    if not given:
        return None
    if any(value.lower() == NO_EXEMPTION for value in given):
        if len(given) > 1:
            fail(f"--max-per-ip-exempt {NO_EXEMPTION} cannot be combined with others", EXIT_USAGE)
        return ()
    for value in given:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            fail(f"--max-per-ip-exempt {value!r}: not an address or network", EXIT_USAGE)
    return given


def _log_access(settings: ServerSettings) -> None:
    """Say at start-up who may do what: operators, the server password, DM recording.

    Never the password itself.
    """
    log = logging.getLogger("chatcli.server")
    if settings.ops:
        log.info(
            "operators: %s (each gets its powers when it logs in with its account's "
            "password; an op name nobody registered yet goes to whoever registers it first)",
            ", ".join(settings.ops),
        )
    if settings.server_password is not None:
        log.info("clients need the server password")
    if settings.record_dms:
        log.warning(
            "recording direct messages too (--record-dms): private conversations are kept in %s",
            settings.record_dir,
        )


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


def _node_name(nats: NatsOptions | None, node: str | None, nats_wait: float | None) -> str | None:
    """The node's name: checked, defaulted; a usage error without ``--cluster``."""
    from chatcli.cli.common import EXIT_USAGE, fail
    from chatcli.cluster.layout import valid_node_name
    from chatcli.cluster.node import default_node_name

    if nats is None:
        if node is not None or nats_wait is not None:
            fail("--node and --nats-wait need --cluster", EXIT_USAGE)
        return None
    if node is None:
        return default_node_name()
    if not valid_node_name(node):
        fail(f"--node {node!r}: 1-32 of A-Z a-z 0-9 _ -", EXIT_USAGE)
    return node
