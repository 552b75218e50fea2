"""``chatcli cluster``: what the nodes of a cluster say about themselves, and the NATS under them.

:func:`gather_status` connects to NATS once (bounded: a one-shot tool must not retry for
ever as a node does), reads the node registry and the two streams' sizes, and closes.
:func:`render_status` draws it for a terminal (rich), :func:`status_json` for scripts;
both are pure, on a :class:`ClusterStatus` taken at one ``now``.

Everything in the registry was written by other processes: names, hosts, versions and
addresses are shown as plain text (no rich markup, control characters removed).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Final

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from chatcli.cluster.layout import MSGS_STREAM, NODES_BUCKET
from chatcli.cluster.nodes import NodeList, liveness, read_nodes
from chatcli.cluster.options import NatsOptions, redact
from chatcli.core.sanitize import clean_text
from chatcli.errors import ConnectionFailed
from chatcli.tls import client_reason

__all__ = ["ClusterStatus", "StreamSize", "gather_status", "render_status", "status_json"]

#: bound on the queries once connected (seconds)
QUERY_TIMEOUT: Final = 5.0
_STYLES: Final = {"alive": "green", "stale": "yellow", "dead": "red"}


@dataclass(frozen=True)
class StreamSize:
    """A JetStream stream's size: messages and bytes stored."""

    messages: int
    bytes: int


@dataclass(frozen=True)
class ClusterStatus:
    """One look at a cluster: the NATS server answered, its streams, the node registry."""

    #: the URL of the server connected to (password masked)
    server: str
    #: that server's version
    version: str
    #: CHATCLI_MSGS by name; None when it does not exist (no node ran yet)
    streams: dict[str, StreamSize | None]
    nodes: NodeList
    #: when the registry was read (unix seconds): ages are computed against it
    now: float


async def gather_status(nats: NatsOptions, clock: Callable[[], float] = time.time) -> ClusterStatus:
    """Connect to NATS, read the registry and the streams, close; ConnectionFailed if NATS
    cannot be reached within the connect timeout or has no JetStream.
    """
    asyncio_log = logging.getLogger("asyncio")
    asyncio_log.addFilter(_quiet_tls_eof)
    try:
        return await _gather(nats, clock)
    finally:
        asyncio_log.removeFilter(_quiet_tls_eof)


def _quiet_tls_eof(record: logging.LogRecord) -> bool:
    """Drop asyncio's warning about ``eof_received`` under TLS: nats-py's transport makes
    it on every close of a TLS connection, and it means nothing to the user."""
    return "eof_received() has no effect when using ssl" not in record.getMessage()


async def _gather(nats: NatsOptions, clock: Callable[[], float]) -> ClusterStatus:
    from nats.errors import Error as NatsError
    from nats.errors import NoRespondersError
    from nats.js.errors import ServiceUnavailableError

    errors: list[BaseException] = []

    async def remember(exc: Exception) -> None:  # nats-py would log a traceback instead
        errors.append(exc)

    # every server is tried twice at most (nats-py retries a server once with a count of
    # 1, and for ever with 0), and the whole attempt is bounded below
    once = replace(nats, max_reconnect_attempts=1)
    shown = nats.shown_servers()
    try:
        async with asyncio.timeout(nats.connect_timeout + 1.0):
            nc = await once.connect(allow_reconnect=False, error_cb=remember)
    except (TimeoutError, OSError, NatsError) as exc:
        raise ConnectionFailed(f"cannot reach NATS at {shown}: {_why(errors, exc)}") from exc
    try:
        async with asyncio.timeout(QUERY_TIMEOUT):
            js = nc.jetstream()
            streams = {name: await _stream_size(js, name) for name in (MSGS_STREAM,)}
            nodes = await read_nodes(js, timeout=QUERY_TIMEOUT)
        now = clock()  # ages as of the reading, not of the close below
        url = nc.connected_url
        server = redact(url.geturl()) if url is not None else shown
        version = _version(nc)
    except (NoRespondersError, ServiceUnavailableError) as exc:  # JetStream's API: no one
        raise ConnectionFailed(
            f"NATS at {shown} has no JetStream (start nats-server with -js)"
        ) from exc
    except (TimeoutError, NatsError) as exc:
        raise ConnectionFailed(f"NATS at {shown}: {_why(errors, exc)}") from exc
    finally:
        await nc.close()
    return ClusterStatus(server, version, streams, nodes, now)


def _version(nc: Any) -> str:
    """The connected server's version as ``2.11.3`` ("unknown" if it sent none we can read)."""
    version = nc.connected_server_version
    try:
        return f"{version.major}.{version.minor}.{version.patch}"
    except (ValueError, TypeError):
        return "unknown"


async def _stream_size(js: Any, name: str) -> StreamSize | None:
    from nats.js.errors import NotFoundError

    try:
        info = await js.stream_info(name)
    except NotFoundError:
        return None
    return StreamSize(messages=int(info.state.messages), bytes=int(info.state.bytes))


def _why(errors: list[BaseException], exc: BaseException) -> str:
    """The most telling reason among what nats-py reported and what it raised."""
    for error in reversed([*errors, exc]):
        if isinstance(error, ConnectionRefusedError):
            return "connection refused"
        if isinstance(error, ssl.SSLCertVerificationError):
            why = error.verify_message or "not verified"
            return (
                f"its certificate is not trusted ({why}); give --nats-ca FILE with the CA "
                "that signed it"
            )
        if isinstance(error, ssl.SSLError):
            return client_reason(error)
        text = str(error).strip()
        if isinstance(error, TimeoutError) or "timeout" in type(error).__name__.lower():
            continue
        if text and "no servers available" not in text.lower():
            text = clean_text(text.removeprefix("nats: "))
            if text[:1] in ("'", '"'):  # the server's own -ERR, quoted: 'Authorization Violation'
                return text.strip("'\"").lower()
            return text
    return "no answer (timed out)"


def _age(status: ClusterStatus, seen: float) -> float:
    return max(0.0, status.now - seen)


def _plain(text: str) -> Text:
    """Untrusted text as a rich Text: never markup, no control characters."""
    return Text(clean_text(text))


def _size(count: int) -> str:
    """Bytes in SI units: 512 B, 34.2 kB, 1.5 MB."""
    if count < 1000:
        return f"{count} B"
    size = float(count)
    for unit in ("kB", "MB", "GB"):
        size /= 1000
        if size < 1000 or unit == "GB":
            break
    return f"{size:.1f} {unit}"


def _duration(seconds: float) -> str:
    """A short duration: 42s, 12m05s, 3h04m, 2d03h."""
    whole = max(0, int(seconds))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def nats_lines(status: ClusterStatus) -> Text:
    """Two lines about NATS: the server connected to and its version; the streams' sizes."""
    text = Text("NATS ")
    text.append(clean_text(status.server), style="bold")
    text.append(f", nats-server {clean_text(status.version)}\nstreams: ")
    parts = []
    for name, size in status.streams.items():
        if size is None:
            parts.append(f"{name} absent")
        else:
            parts.append(f"{name} {size.messages} messages ({_size(size.bytes)})")
    text.append("; ".join(parts))
    return text


def render_status(status: ClusterStatus) -> RenderableType:
    """The NATS line, then a table of the nodes (or a line saying there are none)."""
    parts: list[RenderableType] = [nats_lines(status)]
    nodes = status.nodes
    if not nodes:
        if nodes.bucket:
            parts.append(Text(f"no chatcli node in the registry ({NODES_BUCKET} is empty)"))
        else:
            parts.append(Text(f"no chatcli node has run on this NATS (no {NODES_BUCKET} bucket)"))
    else:
        table = Table(box=None, pad_edge=False, header_style="bold")
        for column in ("node", "host", "listen", "users", "rooms", "up", "heartbeat"):
            right = column in ("users", "rooms", "up", "heartbeat")
            # an address cut short by an ellipsis would be useless: fold it instead
            table.add_column(
                column,
                justify="right" if right else "left",
                overflow="fold" if column == "listen" else "ellipsis",
            )
        table.add_column("state")
        counts = {"alive": 0, "stale": 0, "dead": 0}
        for info in nodes:
            state = liveness(info, status.now)
            counts[state] += 1
            shown_state = Text(state, style=_STYLES[state])
            if info.state != "ok":
                shown_state.append(f", {clean_text(info.state)}", style="yellow")
            table.add_row(
                _plain(info.node),
                _plain(info.host),
                Text("\n").join(_plain(address) for address in info.listen) or Text("-"),
                str(info.users),
                str(info.rooms),
                # on the node's own clock: the uptime at its last heartbeat
                _duration(info.seen - info.started),
                f"{_age(status, info.seen):.1f} s ago",
                shown_state,
            )
        parts.append(table)
        alive = [info for info in nodes if liveness(info, status.now) != "dead"]
        summary = ", ".join(f"{n} {state}" for state, n in counts.items() if n)
        users = sum(info.users for info in alive)
        parts.append(
            Text(f"{len(nodes)} node{'s' * (len(nodes) != 1)}: {summary}; {users} users online")
        )
    if nodes.damaged:
        parts.append(
            Text(
                f"{nodes.damaged} unreadable entr{'ies' if nodes.damaged != 1 else 'y'} "
                f"in {NODES_BUCKET} skipped",
                style="yellow",
            )
        )
    return Group(*parts)


def status_json(status: ClusterStatus) -> dict[str, Any]:
    """The status for scripts: the registry's entries as written, plus age and liveness."""
    nodes = []
    for info in status.nodes:
        entry: dict[str, Any] = {name: getattr(info, name) for name in info.__struct_fields__}
        entry["listen"] = list(info.listen)
        entry["age"] = round(_age(status, info.seen), 3)
        entry["liveness"] = liveness(info, status.now)
        nodes.append(entry)
    return {
        "nats": {
            "server": status.server,
            "version": status.version,
            "streams": {
                name: None if size is None else {"messages": size.messages, "bytes": size.bytes}
                for name, size in status.streams.items()
            },
        },
        "now": status.now,
        "nodes": nodes,
        "damaged": status.nodes.damaged,
        "registry": status.nodes.bucket,
    }
