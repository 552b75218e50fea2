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
    "--host", envvar="CHATCLI_HOST", help=f"Server address  [default: last used, or {DEFAULT_HOST}]"
)
@click.option(
    "--port",
    "-p",
    type=click.IntRange(1, 65535),
    envvar="CHATCLI_PORT",
    help=f"Server port  [default: last used, or {DEFAULT_PORT}]",
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
    host: str | None,
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

    \b
    Examples:
      chatcli join alice
      chatcli join bob --host 192.168.1.20 --port 7777 --room dev
      printf 'hello\\n/me waves\\n' | chatcli join bot
      chatcli join watcher --json < /dev/null
      chatcli join carol --host chat.example.org --tls
      chatcli join dave --host 127.0.0.1 --tls --ca ca.pem
    """
    from chatcli.addresses import parse_host
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
    remembered = []  # what was taken from the last join, said if connecting fails
    if not host and last and last.host != DEFAULT_HOST:
        remembered.append(f"host {last.host}")
    if not port and last and last.port != DEFAULT_PORT:
        remembered.append(f"port {last.port}")
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

    client_tls = _join_tls(host, last, tls, ca, insecure, remembered)
    interactive = sys.stdin.isatty() and sys.stdout.isatty() and not json_output
    options = JoinOptions(
        host=parse_host(host) if host else (last.host if last else DEFAULT_HOST),
        port=port or (last.port if last else DEFAULT_PORT),
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


def _join_tls(
    host: str | None,
    last: LastJoin | None,
    tls: bool | None,
    ca: Path | None,
    insecure: bool,
    remembered: list[str],
) -> ClientTls | None:
    """The TLS of this join: as given, else as remembered for the same host.

    Adds "TLS" to ``remembered`` when it came from the last join (said if connecting
    fails); a remembered --ca file that is gone is one line and exit 2.
    """
    from chatcli.addresses import parse_host
    from chatcli.cli.common import EXIT_USAGE, fail
    from chatcli.cli.tls_options import client_tls
    from chatcli.tls import TlsError

    same_host = last is not None and (not host or parse_host(host) == last.host)
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
