"""``chatcli join``: chat from a terminal, or from a script through stdin."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from chatcli.cli.tls_options import client_tls_options
from chatcli.settings import DEFAULT_HOST, DEFAULT_PORT

if TYPE_CHECKING:
    from chatcli.config import LastJoin
    from chatcli.tls import ClientTls

__all__ = ["join"]


@click.command()
@click.argument("name", required=False)
@click.option(
    "--host",
    multiple=True,
    envvar="CHATCLI_HOST",
    metavar="HOST[:PORT][,...]",
    help="Server address; several servers of one chat (cluster nodes) as a comma list or "
    "repeated --host: the first that answers is used, the next when it is lost  "
    f"[default: last used, or {DEFAULT_HOST}]",
)
@click.option(
    "--port",
    "-p",
    type=click.IntRange(1, 65535),
    envvar="CHATCLI_PORT",
    help=f"Port of each --host that names none  [default: last used, or {DEFAULT_PORT}]",
)
@click.option("--room", "-r", help="Room to enter  [default: lobby]")
@click.option(
    "--history",
    type=click.IntRange(min=0),
    metavar="N",
    help="Past messages to show on entry (0: none)  [default: the server's]",
)
@click.option(
    "--timestamps/--no-timestamps",
    "-t",
    default=False,
    help="Show the time in front of each line (/time toggles it).",
)
@click.option("--record", is_flag=True, help="Start recording at once (/record toggles it).")
@click.option(
    "--record-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("recordings"),
    show_default=True,
    help="Where /record writes transcripts.",
)
@click.option(
    "--bell/--no-bell",
    default=True,
    envvar="CHATCLI_BELL",
    show_default=True,
    help="Ring the terminal bell when a message names you.",
)
@click.option(
    "--json",
    "json_output",
    is_flag=True,
    help="Print incoming events as JSON lines (for programs).",
)
@click.option(
    "--retry-for",
    type=click.FloatRange(min=0),
    default=300.0,
    show_default=True,
    metavar="SECONDS",
    help="When the connection drops, keep reconnecting this long before giving up.",
)
@click.option(
    "--server-password-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Send the server password in this file (its first line); or set "
    "CHATCLI_SERVER_PASSWORD. Asked (hidden) when needed and not given.",
)
@client_tls_options(negatable=True)
def join(
    name: str | None,
    host: tuple[str, ...],
    port: int | None,
    room: str | None,
    history: int | None,
    timestamps: bool,
    record: bool,
    record_dir: Path,
    bell: bool,
    json_output: bool,
    retry_for: float,
    server_password_file: Path | None,
    tls: bool | None,
    ca: Path | None,
    insecure: bool,
) -> None:
    """Join a chat server as NAME (NAME, host and port default to the last ones used).

    In a terminal it is interactive: type to talk, /help lists the commands
    (/who .l, /msg, /me, /join, /rooms, /nick, /register, /password, /ignore,
    /time .t, /record .r, /quit .q; operators: /kick, /ban, /unban, /mute).
    With stdin not a terminal, it sends each input line, prints what arrives as plain
    lines (or JSON with --json) and exits once its messages are acknowledged.
    A registered name's password is asked (hidden), or taken from CHATCLI_PASSWORD
    (the only way in a script); reconnects send it again without asking.
    A dropped connection or a restarted server is resumed by itself: nothing typed is
    lost or said twice; it gives up (exit 1) after --retry-for seconds without one.
    --tls (and its --ca FILE) is remembered with the host; --insecure never is.

    Several --host (a cluster's nodes): tried in order at start (up to 10 s each), and
    when the connection is lost the session resumes on the next one, round-robin,
    with nothing lost or said twice; the whole list is remembered; TLS applies to all.

    \b
    Examples:
      chatcli join alice
      chatcli join bob --host 192.168.1.20 --port 7777 --room dev
      chatcli join erin --host 10.0.0.1:7777,10.0.0.2:7777,10.0.0.3:7777
      chatcli join finn --host 10.0.0.1:7777 --host '[::1]:7777'
      printf 'hello\\n/me waves\\n' | chatcli join bot
      chatcli join watcher --json < /dev/null
      chatcli join carol --host chat.example.org --tls
      chatcli join dave --host 127.0.0.1 --tls --ca ca.pem
    """
    from chatcli.cli.common import fail
    from chatcli.config import load_last_join
    from chatcli.core.names import NAME_RULE, name_error
    from chatcli.core.protocol import valid_room
    from chatcli.errors import ConnectionFailed
    from chatcli.runtime import run
    from chatcli.ui.join import JoinOptions, run_join

    last = load_last_join()
    name = name or (last.name if last else None)
    if not name:
        fail("give a NAME to join as (none is remembered yet): chatcli join alice", 2)
    problem = name_error(name)
    if problem == "that name is reserved":
        fail(f"{name!r} is reserved for the server (or looks like it); choose another name", 2)
    if problem is not None:
        fail(f"{name!r} is not a valid name ({problem}): {NAME_RULE}", 2)
    if room is not None and not valid_room(room.lstrip("#")):
        fail(f"{room!r} is not a valid room: 1-32 lowercase letters, digits, '_' or '-'", 2)
    remembered: list[str] = []  # what was taken from the last join, said if connecting fails
    servers = _servers(host, port, last, remembered)
    from chatcli.cli.secrets import (
        PASSWORD_ENV,
        SERVER_PASSWORD_ENV,
        password_from_env,
        read_password_file,
    )

    server_password: str | None
    if server_password_file is not None:
        server_password = read_password_file(server_password_file, "--server-password-file")
    else:
        server_password = password_from_env(SERVER_PASSWORD_ENV)
    password = password_from_env(PASSWORD_ENV)

    client_tls = _join_tls(servers if host else None, last, tls, ca, insecure, remembered)
    interactive = sys.stdin.isatty() and sys.stdout.isatty() and not json_output
    options = JoinOptions(
        host=servers[0][0],
        port=servers[0][1],
        fallbacks=tuple(servers[1:]),
        name=name,
        room=room.lstrip("#") if room else None,
        history=history,
        timestamps=timestamps,
        json_output=json_output,
        record_dir=record_dir,
        record=record,
        retry_for=retry_for,
        bell=bell,
        # a script or a pipe never overwrites what a person at the terminal remembered
        remember=sys.stdin.isatty(),
        password=password,
        server_password=server_password,
        tls=client_tls,
    )
    try:
        code = run(run_join(options, interactive))
    except ConnectionFailed as exc:
        if not remembered or not str(exc).startswith("cannot connect"):
            raise
        what = " and ".join(remembered)
        flags = " / ".join(
            "--no-tls" if item == "TLS" else f"--{item.split()[0]}" for item in remembered
        )
        fail(f"{exc}; {what} remembered from your last join; give {flags} to change it")
    sys.exit(code)


def _servers(
    hosts: tuple[str, ...], port: int | None, last: LastJoin | None, remembered: list[str]
) -> list[tuple[str, int]]:
    """The servers of this join, in order: as given (an entry without a port takes
    --port, else the last one used), else as remembered (--port replacing their ports).

    Adds what was taken from the last join to ``remembered`` (said if connecting fails).
    """
    from chatcli.addresses import format_address, parse_address_list, split_address

    default_port = port or (last.port if last else DEFAULT_PORT)
    if hosts:
        servers = parse_address_list(
            hosts, option="--host", default_host=DEFAULT_HOST, default_port=default_port
        )
        entries = [entry for text in hosts for entry in text.split(",")]
        portless = any(split_address(entry, "--host")[1] is None for entry in entries)
        if not port and last and last.port != DEFAULT_PORT and portless:
            remembered.append(f"port {last.port}")
        return servers
    if last is None:
        return [(DEFAULT_HOST, default_port)]
    servers = last.addresses()
    if len(servers) > 1:
        remembered.append("host " + ",".join(format_address(h, p) for h, p in servers))
    elif last.host != DEFAULT_HOST:
        remembered.append(f"host {last.host}")
    if port:
        servers = list(dict.fromkeys((h, port) for h, _ in servers))
    elif len(servers) == 1 and last.port != DEFAULT_PORT:
        remembered.append(f"port {last.port}")
    return servers


def _join_tls(
    given: list[tuple[str, int]] | None,
    last: LastJoin | None,
    tls: bool | None,
    ca: Path | None,
    insecure: bool,
    remembered: list[str],
) -> ClientTls | None:
    """The TLS of this join: as given, else as remembered for the same host(s).

    ``given`` is the --host list (None: none given, the remembered one is used); it is
    the same host when every one of its hosts was remembered. Adds "TLS" to
    ``remembered`` when it came from the last join (said if connecting fails); a
    remembered --ca file that is gone is one line and exit 2.
    """
    from chatcli.cli.common import EXIT_USAGE, fail
    from chatcli.cli.tls_options import client_tls
    from chatcli.tls import TlsError

    same_host = last is not None and (
        given is None or {h for h, _ in given} <= {h for h, _ in last.addresses()}
    )
    remembered_ca = False
    if last is not None and same_host and last.tls and tls is not False and not insecure:
        if tls is None and ca is None:
            tls = True
            remembered.append("TLS")
        if ca is None and last.ca:
            ca, remembered_ca = Path(last.ca), True
    try:
        return client_tls(tls, ca, insecure)
    except TlsError as exc:
        if not remembered_ca:
            raise
        fail(f"{exc} (remembered from your last join: give --ca FILE or --no-tls)", EXIT_USAGE)
