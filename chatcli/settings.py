"""Every tunable limit of chatcli, with its default, in one place.

The CLI surfaces these as options (and ``CHATCLI_*`` environment variables); code takes
them as named parameters instead of hiding numbers in the middle of functions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chatcli.core.protocol import DEFAULT_MAX_FRAME
from chatcli.core.relay import DEFAULT_MAX_PER_IP

__all__ = ["DEFAULT_HOST", "DEFAULT_MAX_PER_IP", "DEFAULT_PORT", "ServerSettings"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7777


@dataclass(frozen=True)
class ServerSettings:
    """How a relay listens, what it keeps and what it tolerates from its clients."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    #: seconds a new connection has to log in
    login_timeout: float = 10.0
    #: longest line accepted, in bytes
    max_frame: int = DEFAULT_MAX_FRAME
    #: messages kept per room and sent to late joiners
    history: int = 50
    #: sustained messages per second per connection (0 disables flood control)
    rate_limit: float = 5.0
    #: messages a connection may send at once before the sustained rate applies
    rate_burst: int = 10
    #: seconds of silence before the server pings a client; 3 silent intervals drop it
    ping_interval: float = 15.0
    #: unsent bytes a client may fall behind by before it is cut off as a slow consumer
    max_buffer: int = 4 * 1024 * 1024
    #: write coalescing: a relay that wrote less than this many seconds ago is busy and
    #: gathers output (for at most this long) before writing again; an idle one writes at
    #: the end of the loop turn (0: always at the end of the turn). At moderate load this
    #: turns one write per message per recipient into one per few; see docs/benchmarks.md.
    flush_interval: float = 0.001
    #: while busy, write as soon as this many events have been gathered
    flush_batch: int = 3
    #: seconds a closing connection is given to take its last frames before it is reset
    close_linger: float = 2.0
    #: seconds the server waits for clients to go at shutdown before resetting them
    shutdown_grace: float = 1.5
    #: most simultaneous connections accepted (further ones are told and closed)
    max_connections: int = 20000
    #: directory for per-room transcripts (None: do not record)
    record_dir: Path | None = None
    #: where rooms are kept: a SQLite file, "memory", or None for the default file
    store: str | None = None
    #: messages kept per room in the store (the oldest are dropped first)
    retain: int = 100_000
    #: names that are operators once logged in with their account's password (``--op``)
    ops: tuple[str, ...] = ()
    #: the server password every hello must carry (None: none); never shown by repr()
    server_password: str | None = field(default=None, repr=False)
    #: connections one address may hold (more get server_full)
    max_per_ip: int = DEFAULT_MAX_PER_IP
    #: addresses or networks the per-address limit skips; None: loopback ones, (): none
    max_per_ip_exempt: tuple[str, ...] | None = None
    #: with ``record_dir``: record direct messages too (private: off unless asked)
    record_dms: bool = False
    #: rooms the server holds at once, the default room included (joins past it refused)
    max_rooms: int = 10_000
    #: rooms one connection may create a minute (0: no limit)
    room_creations: int = 10
    #: unsent output across all connections, in bytes; past it the largest consumers are
    #: cut off first (0: no limit)
    max_output_total: int = 256 * 1024 * 1024
    #: seconds a text (nc/telnet) session may stay silent before it is closed (0: never)
    text_idle: float = 3600.0
    #: a cluster (``--cluster``): the NATS connection (chatcli.cluster.options.NatsOptions),
    #: this node's name, and seconds to wait for NATS at start-up (None: for ever)
    cluster: Any = None
    node: str | None = None
    nats_wait: float | None = None
    #: copies NATS keeps of the streams and buckets a node creates (a NATS cluster of 3: 3)
    nats_replicas: int = 1
    #: TLS: the certificate chain and private key (PEM) that make the port speak TLS only
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: where the web page and its WebSocket listen (``serve --web``); None: no web port
    web: tuple[str, int] | None = None
    #: page origins besides the page's own allowed to open the WebSocket (``--web-origin``)
    web_origins: tuple[str, ...] = ()
    #: browsers' write pacing: a web port that wrote less than this many seconds ago
    #: holds what follows for its browsers and writes it all together once the interval
    #: is over (0: every flush, like TCP). A page paints at most every ~16 ms, so up to
    #: this much delay is not seen; the relay makes one write per browser per interval
    #: instead of one per message. See docs/benchmarks.md, "Issue 10, session 19".
    web_flush_interval: float = 0.01
