"""How chatcli reaches NATS: ``--cluster`` URLs, credentials and TLS as ``nats.connect`` kwargs.

``serve --cluster`` and ``chatcli cluster`` take the same options through the click
decorator :func:`nats_options`, which hands the command one ``nats`` argument: a
:class:`NatsOptions` (or None when ``--cluster`` is not given). Its
:meth:`~NatsOptions.connect_kwargs` is what ``nats.connect(**kwargs)`` takes.

- ``--cluster nats://HOST:PORT[,...]``, repeatable, comma lists too; ``tls://`` URLs
  speak TLS; ``HOST:PORT`` alone means ``nats://``; the port defaults to 4222;
  ``nats://USER:PASSWORD@HOST:PORT`` carries credentials in the URL.
- ``--nats-creds FILE`` (a NATS ``.creds`` file: JWT and NKey seed),
  ``--nats-user``/``--nats-password`` (the password also from ``CHATCLI_NATS_PASSWORD``,
  so it need not be on the command line).
- ``--nats-ca FILE`` (trust these CAs for the NATS servers' certificates; implies TLS),
  ``--nats-cert FILE`` with ``--nats-key FILE`` (a client certificate: mutual TLS).

Passwords are never printed: :class:`NatsOptions` leaves the password out of its repr and
:func:`redact` masks the one in a URL before it is shown or logged. Nor are they sent in
the clear when TLS is asked for: :meth:`NatsOptions.connect` refuses a server that does
not require TLS (nats-py alone would fall back to plaintext).
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

import click
from click.core import ParameterSource

from chatcli.addresses import AddressError, format_address, split_address
from chatcli.errors import UsageError
from chatcli.tls import TlsError

__all__ = [
    "CONNECT_TIMEOUT",
    "DEFAULT_NATS_PORT",
    "RECONNECT_WAIT",
    "NatsOptions",
    "nats_options",
    "parse_servers",
    "redact",
]

DEFAULT_NATS_PORT: Final = 4222
#: seconds to open one connection to one server before trying the next
CONNECT_TIMEOUT: Final = 2.0
#: seconds between two rounds of reconnection attempts over the server list
RECONNECT_WAIT: Final = 0.5
_SCHEMES: Final = ("nats", "tls")

F = TypeVar("F", bound=Callable[..., Any])


def parse_servers(values: Iterable[str]) -> tuple[str, ...]:
    """``--cluster`` values (each a comma list) as normalized ``nats://``/``tls://`` URLs.

    Raises ValueError with a one-line reason (passwords masked) for an empty list, an
    empty item, a scheme other than nats/tls, a malformed host or port, or a path.
    """
    servers: list[str] = []
    for value in values:
        for item in value.split(","):
            servers.append(_parse_server(item.strip(), value))
    if not servers:
        raise ValueError("no NATS server given (like nats://127.0.0.1:4222)")
    return tuple(dict.fromkeys(servers))  # repeated URLs once, order kept


def _parse_server(item: str, whole: str) -> str:
    if not item:
        raise ValueError(f"{redact(whole)!r} has an empty item (like nats://127.0.0.1:4222)")
    scheme, sep, rest = item.partition("://")
    if not sep:
        scheme, rest = "nats", item
    scheme = scheme.lower()
    if scheme not in _SCHEMES:
        raise ValueError(f"{redact(item)!r}: scheme {scheme!r} is not nats:// or tls://")
    rest = rest.removesuffix("/")
    if any(char in rest for char in "/?#"):
        raise ValueError(f"{redact(item)!r}: a NATS URL has no path, query or fragment")
    userinfo, at, hostport = rest.rpartition("@")
    try:
        host, port = split_address(hostport, "--cluster")
    except AddressError as exc:
        raise ValueError(f"{redact(item)!r}: {exc.reason}") from None
    if not host:
        raise ValueError(f"{redact(item)!r}: no host")
    address = format_address(host, port if port is not None else DEFAULT_NATS_PORT)
    return f"{scheme}://{userinfo}{at}{address}"


def redact(url: str) -> str:
    """``url`` with the password of its ``user:password@`` part, or its token, masked."""
    head, sep, rest = url.partition("://")
    if not sep:
        head, rest = "", url
    userinfo, at, hostport = rest.rpartition("@")
    if not at:
        return url
    if ":" not in userinfo:  # nats://TOKEN@host: a user alone is an auth token to NATS
        return f"{head}{sep}***@{hostport}"
    user = userinfo.partition(":")[0]
    return f"{head}{sep}{user}:***@{hostport}"


@dataclass(frozen=True)
class NatsOptions:
    """Where NATS is and how to log in: what ``--cluster`` and the ``--nats-*`` options say."""

    #: normalized URLs (see :func:`parse_servers`); a client tries them in turn
    servers: tuple[str, ...]
    #: a NATS credentials file (JWT and seed)
    creds: Path | None = None
    user: str | None = None
    password: str | None = None
    #: CA certificates (PEM) to verify the servers with, instead of the system's
    ca: Path | None = None
    #: a client certificate and its key (PEM), for servers that verify clients
    cert: Path | None = None
    key: Path | None = None
    #: the connection's name as NATS monitoring shows it
    name: str = "chatcli"
    connect_timeout: float = CONNECT_TIMEOUT
    reconnect_time_wait: float = RECONNECT_WAIT
    #: -1: a node never gives up reconnecting; a one-shot tool passes 1 (one retry per
    #: server: with 0, nats-py's first connect retries for ever)
    max_reconnect_attempts: int = -1

    def __post_init__(self) -> None:
        if not self.servers:
            raise UsageError("--cluster: no NATS server given")
        if (self.cert is None) != (self.key is None):
            raise UsageError("--nats-cert and --nats-key go together: give both")
        if self.creds is not None and (self.user is not None or self.password is not None):
            raise UsageError("--nats-creds and --nats-user/--nats-password: give one of them")
        if (self.user is None) != (self.password is None):
            raise UsageError("--nats-user and --nats-password go together: give both")

    def __repr__(self) -> str:
        """The fields that are set, passwords masked (in URLs too): safe to log."""
        shown = [f"servers={tuple(redact(url) for url in self.servers)!r}"]
        for name in ("creds", "user", "ca", "cert", "key"):
            value = getattr(self, name)
            if value is not None:
                shown.append(f"{name}={value!r}")
        if self.password is not None:
            shown.append("password='***'")
        return f"NatsOptions({', '.join(shown)}, name={self.name!r})"

    @property
    def tls(self) -> bool:
        """Whether the connection speaks TLS (a tls:// URL, a CA or a client certificate)."""
        return (
            any(url.startswith("tls://") for url in self.servers)
            or self.ca is not None
            or self.cert is not None
        )

    def shown_servers(self) -> str:
        """The server list for messages and logs, passwords masked."""
        return ",".join(redact(url) for url in self.servers)

    def tls_context(self) -> ssl.SSLContext | None:
        """The client TLS context, or None without TLS; TlsError for unusable files."""
        if not self.tls:
            return None
        try:
            context = ssl.create_default_context(cafile=self.ca)
        except FileNotFoundError as exc:
            raise TlsError(f"--nats-ca {self.ca}: no such file") from exc
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise TlsError(f"--nats-ca {self.ca}: no usable CA certificate in it ({exc})") from exc
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cert is not None and self.key is not None:
            try:
                context.load_cert_chain(self.cert, self.key, password=_no_passphrase(self.key))
            except FileNotFoundError as exc:
                raise TlsError(f"--nats-cert {self.cert} / --nats-key {self.key}: {exc}") from exc
            except (ssl.SSLError, OSError) as exc:
                why = getattr(exc, "reason", None) or exc.strerror or str(exc)
                raise TlsError(
                    f"--nats-cert {self.cert} / --nats-key {self.key}: cannot use them "
                    f"({str(why).replace('_', ' ').lower()})"
                ) from exc
        return context

    def connect_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``nats.connect``: servers, auth, TLS, name, reconnection.

        Reconnection is on, every ``reconnect_time_wait`` seconds, ``max_reconnect_attempts``
        times per server (-1: for ever); each attempt is bounded by ``connect_timeout``.
        """
        kwargs: dict[str, Any] = {
            "servers": list(self.servers),
            "name": self.name,
            "connect_timeout": self.connect_timeout,
            "reconnect_time_wait": self.reconnect_time_wait,
            "max_reconnect_attempts": self.max_reconnect_attempts,
            "allow_reconnect": True,
        }
        if self.creds is not None:
            kwargs["user_credentials"] = str(self.creds)
        if self.user is not None:
            kwargs["user"] = self.user
            kwargs["password"] = self.password
        context = self.tls_context()
        if context is not None:
            kwargs["tls"] = context
        return kwargs

    async def connect(self, **overrides: Any) -> Any:
        """A connected ``nats.aio.client.Client``: ``connect_kwargs()`` plus ``overrides``.

        Use this rather than ``nats.connect(**connect_kwargs())``: when TLS is asked for,
        a server that does not require it is refused before anything is sent to it
        (nats-py alone would send the credentials in the clear).
        """
        client = _client_class()()
        await client.connect(**{**self.connect_kwargs(), **overrides})
        return client


@functools.cache
def _client_class() -> type:
    """nats-py's client, refusing a server that does not require TLS when TLS is wanted.

    nats-py 2.x upgrades to TLS only when the server's INFO says ``tls_required``: to a
    server (or someone in the way) that does not, it would send CONNECT, credentials
    included, in the clear despite a ``tls://`` URL or a CA. This subclass checks the
    INFO first, on every (re)connection, as nats.go's ``checkForSecure`` does.
    """
    from nats.aio.client import Client
    from nats.errors import Error

    class TlsRequiredError(Error):
        def __str__(self) -> str:
            return (
                "nats: the server does not require TLS, and TLS was asked for: "
                "nothing was sent to it in the clear"
            )

    class Guarded(Client):
        async def _process_info(
            self, info: dict[str, Any], initial_connection: bool = False
        ) -> None:
            wants_tls = self.options.get("tls") is not None
            if initial_connection and wants_tls and not info.get("tls_required"):
                raise TlsRequiredError()
            await super()._process_info(info, initial_connection)

    return Guarded


def _no_passphrase(key: Path) -> Callable[[], str]:
    def refuse() -> str:  # OpenSSL would otherwise ask on the terminal, and wait
        raise TlsError(f"--nats-key {key}: the key is encrypted; give it unencrypted")

    return refuse


def _servers_callback(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> tuple[str, ...] | None:
    if not values:
        return None
    try:
        return parse_servers(values)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


_FILE = click.Path(dir_okay=False, path_type=Path)
_KEYS: Final = (
    "cluster",
    "nats_creds",
    "nats_user",
    "nats_password",
    "nats_ca",
    "nats_cert",
    "nats_key",
)


def nats_options(*, required: bool = False, name: str = "chatcli") -> Callable[[F], F]:
    """Add ``--cluster`` and the ``--nats-*`` options; the command receives ``nats``.

    ``nats`` is a :class:`NatsOptions`, or None when ``--cluster`` is not given (only
    possible when not ``required``); ``--nats-*`` options without ``--cluster`` are a
    usage error. ``name`` names the connections in NATS's monitoring.
    """

    def decorate(command: F) -> F:
        @functools.wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            values = {key: kwargs.pop(key) for key in _KEYS}
            kwargs["nats"] = _build(values, name)
            return command(*args, **kwargs)

        options = [
            click.option(
                "--cluster",
                "cluster",
                multiple=True,
                required=required,
                callback=_servers_callback,
                metavar="nats://HOST:PORT[,...]",
                envvar="CHATCLI_CLUSTER",
                show_envvar=True,
                help="NATS servers (JetStream) of the cluster: repeat the option or give a "
                "comma list; tls:// for TLS, nats://USER:PASSWORD@HOST:PORT for a login.",
            ),
            click.option(
                "--nats-creds",
                type=_FILE,
                metavar="FILE",
                help="NATS credentials file (.creds: JWT and NKey seed).",
            ),
            click.option("--nats-user", metavar="USER", help="NATS user name."),
            click.option(
                "--nats-password",
                metavar="PASSWORD",
                envvar="CHATCLI_NATS_PASSWORD",
                show_envvar=True,
                help="NATS password (better from the environment than on the command line).",
            ),
            click.option(
                "--nats-ca",
                type=_FILE,
                metavar="FILE",
                help="Verify the NATS servers against the CA certificates in this PEM file "
                "(implies TLS).",
            ),
            click.option(
                "--nats-cert",
                type=_FILE,
                metavar="FILE",
                help="Client certificate (PEM) for NATS servers that verify clients "
                "(with --nats-key; implies TLS).",
            ),
            click.option("--nats-key", type=_FILE, metavar="FILE", help="Its private key (PEM)."),
        ]
        decorated: Any = wrapper
        for option in reversed(options):
            decorated = option(decorated)
        return decorated  # type: ignore[no-any-return]

    return decorate


def _build(values: dict[str, Any], name: str) -> NatsOptions | None:
    """The NatsOptions the option values describe (None without --cluster)."""
    servers = values["cluster"]
    if servers is None:
        # a password in the environment is no mistake when this run is not a cluster's
        from_env = click.get_current_context().get_parameter_source("nats_password")
        ignored = {"nats_password"} if from_env is ParameterSource.ENVIRONMENT else set()
        given = [
            f"--{key.replace('_', '-')}"
            for key in _KEYS[1:]
            if values[key] is not None and key not in ignored
        ]
        if given:
            raise UsageError(f"{given[0]} needs --cluster")
        return None
    nats = NatsOptions(
        servers=servers,
        creds=values["nats_creds"],
        user=values["nats_user"],
        password=values["nats_password"],
        ca=values["nats_ca"],
        cert=values["nats_cert"],
        key=values["nats_key"],
        name=name,
    )
    nats.tls_context()  # unusable certificate files stop the command now, in one line
    return nats
