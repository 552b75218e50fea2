"""TLS for chatcli: the server's and the clients' ``ssl`` contexts, and TLS failures in words.

One place decides how chatcli speaks TLS, so that ``serve``, ``join``, ``replay --to`` and
``bench`` agree: the standard library's ``ssl``, TLS 1.2 at least, the library's default
ciphers and verification (certificate chain and host name, against the system's CAs or a
``--ca`` file). ``--insecure`` turns verification off, and every command that takes it
prints :data:`INSECURE_WARNING` once.

Failures become one line each: a certificate or key that cannot be used is a
:class:`TlsError` (a usage error, exit 2); a handshake that fails is explained by
:func:`client_failure` (for the user of a client) and :func:`server_failure` (for the
server's log), which name the likely cause (a plaintext peer, an untrusted certificate)
instead of OpenSSL's reason codes alone.
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from chatcli.errors import UsageError

__all__ = [
    "INSECURE_WARNING",
    "ClientTls",
    "TlsError",
    "client_failure",
    "client_reason",
    "server_context",
    "server_failure",
]

INSECURE_WARNING: Final = (
    "warning: --insecure: the server's certificate is not checked, so anyone on the way "
    "can read and change this chat"
)

#: OpenSSL reasons that mean the other side does not speak TLS at all
_NOT_TLS: Final = frozenset(
    {"WRONG_VERSION_NUMBER", "UNKNOWN_PROTOCOL", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG"}
)


class TlsError(UsageError):
    """A certificate, key or CA file that cannot be used (missing, unreadable, mismatched)."""


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """The context of a server presenting ``cert`` (a PEM chain) with its private ``key``.

    Raises TlsError, one line naming the file and the reason, when either cannot be used.
    """
    for what, path in (("--tls-cert", cert), ("--tls-key", key)):
        problem = _unreadable(path)
        if problem:
            raise TlsError(f"{what} {path}: {problem}")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2

    def no_passphrase() -> str:  # OpenSSL would otherwise ask on the terminal, and wait
        raise TlsError(
            f"--tls-key {key}: the key is encrypted; give it unencrypted "
            "(openssl pkey -in KEY -out KEY.plain, kept readable by the server only)"
        )

    try:
        context.load_cert_chain(cert, key, password=no_passphrase)
    except ssl.SSLError as exc:
        reason = _reason(exc)
        if reason == "KEY_VALUES_MISMATCH":
            why = "the key does not belong to the certificate"
        elif "PEM" in reason or "PEM" in str(exc) or reason in ("NO_START_LINE", "BAD_END_LINE"):
            why = f"not a PEM certificate and key ({_words(reason) or _plain(exc)})"
        else:
            why = _words(reason) or _plain(exc)
        raise TlsError(f"--tls-cert {cert} / --tls-key {key}: {why}") from exc
    except OSError as exc:  # read between the check above and now, or a directory
        raise TlsError(f"--tls-cert {cert} / --tls-key {key}: {exc.strerror or exc}") from exc
    return context


@dataclass(frozen=True)
class ClientTls:
    """How a client speaks TLS: whom it trusts, and whether it checks at all.

    Plain data (bench hands it to its worker processes, ``join`` remembers it); the
    ``ssl.SSLContext`` is made from it by :meth:`context` where it is used.
    """

    #: a PEM file of CA certificates to trust instead of the system's
    ca: Path | None = None
    #: skip verification (certificate and host name): encryption without authentication
    insecure: bool = False

    def context(self) -> ssl.SSLContext:
        """The client context; TlsError when ``ca`` cannot be used."""
        if self.ca is not None and not self.insecure:
            problem = _unreadable(self.ca)
            if problem:
                raise TlsError(f"--ca {self.ca}: {problem}")
        try:
            # with a CA file, the system's CAs stay out: --ca says exactly whom to trust
            context = ssl.create_default_context(cafile=None if self.insecure else self.ca)
        except (ssl.SSLError, ValueError) as exc:
            why = _words(_reason(exc)) if isinstance(exc, ssl.SSLError) else str(exc)
            raise TlsError(f"--ca {self.ca}: no usable CA certificate in it ({why})") from exc
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def describe(self) -> str:
        """A few words for reports: how the server's certificate is checked."""
        if self.insecure:
            return "insecure (not verified)"
        return f"verified against {self.ca}" if self.ca else "verified against the system CAs"


def client_failure(exc: OSError, address: str) -> str:
    """One line saying why a TLS connection to ``address`` failed, and what to do."""
    return f"cannot connect to {address} over TLS: {client_reason(exc)}"


def client_reason(exc: OSError) -> str:
    """Why a client's TLS handshake failed, and what to do about it (no address)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        why = (exc.verify_message or _words(_reason(exc)) or str(exc)).rstrip(".")
        if "mismatch" in why.lower():
            return f"its certificate is not for this address ({why})"
        return (
            f"its certificate is not trusted ({why}); give --ca FILE with the CA that "
            "signed it, or --insecure to skip the check"
        )
    if isinstance(exc, ssl.SSLError):
        reason = _reason(exc)
        if reason in _NOT_TLS:
            return f"the server does not speak TLS ({_words(reason)}); connect without TLS"
        return _words(reason) or _plain(exc)
    return f"the handshake failed ({exc.strerror or exc or type(exc).__name__})"


def server_failure(exc: BaseException, handshake_timeout: float) -> str:
    """Why a client's TLS handshake failed, in a few words for the server's log."""
    if isinstance(exc, ssl.SSLError):
        reason = _reason(exc)
        if reason == "HTTP_REQUEST":
            return "a plain HTTP request (not TLS)"
        if reason in _NOT_TLS:
            return f"not TLS, a plaintext client? ({_words(reason)})"
        if reason == "UNSUPPORTED_PROTOCOL":
            return "the client offers no TLS version this server accepts (TLS 1.2 or later)"
        if "ALERT" in reason:
            return f"the client refused the handshake ({_words(reason)})"
        return _words(reason) or _plain(exc)
    if isinstance(exc, ConnectionAbortedError | TimeoutError):
        return f"no TLS handshake within {handshake_timeout:g} s"
    if isinstance(exc, ConnectionError | EOFError):
        return "the client went away during the handshake"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc) or type(exc).__name__
    return str(exc) or type(exc).__name__


def _unreadable(path: Path) -> str | None:
    """Why ``path`` cannot be read as a file, or None if it can."""
    try:
        with open(path, "rb"):
            pass
    except FileNotFoundError:
        return "no such file"
    except IsADirectoryError:
        return "is a directory, not a file"
    except OSError as exc:
        return f"cannot read it ({exc.strerror or exc})"
    return None


def _plain(exc: ssl.SSLError) -> str:
    """OpenSSL's message without its ``[LIB]`` prefix and ``(_ssl.c:123)`` suffix."""
    text = re.sub(r"^\[\w+\]\s*|\s*\(_ssl\.c:\d+\)$", "", str(exc.strerror or exc))
    return text or type(exc).__name__


def _reason(exc: ssl.SSLError) -> str:
    return str(exc.reason or "")


def _words(reason: str) -> str:
    """OpenSSL's ``WRONG_VERSION_NUMBER`` as ``wrong version number``."""
    return reason.replace("_", " ").lower()
