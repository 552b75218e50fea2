"""Network addresses as users type them: the one HOST:PORT parser and its printer.

Every command that takes an address (``join --host``, ``serve --host``, ``replay --to``,
``bench --target``) reads it here, so they all accept the same spellings:

    HOST:PORT      127.0.0.1:7777, chat.example.org:80
    [IPV6]:PORT    [::1]:7777, [fe80::1%eth0]:7777
    :PORT, PORT    the default host, on PORT
    HOST, [IPV6]   a host alone, where a default port applies
    IPV6           bare, as ::1 (a bare IPv6 address never carries a port: it would be
                   ambiguous, ``::1:7777`` being an address too)

A list of servers (``join --host``, ``bench --target``) is several of these, given as
repeated options, comma-separated, or both: ``a:7777,b:7777``, ``[::1]:7777,[::1]:7778``
(:func:`parse_address_list`).

No I/O, no name resolution: a name is checked for shape only, the resolver has the last
word when the connection is made.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Final

from chatcli.errors import UsageError

__all__ = [
    "AddressError",
    "format_address",
    "parse_address",
    "parse_address_list",
    "parse_host",
    "split_address",
]

#: how the messages show a good address, by what was wanted
EXAMPLES: Final = {"HOST:PORT": "127.0.0.1:7777 or [::1]:7777", "a HOST": "127.0.0.1 or ::1"}
_FORBIDDEN_IN_NAMES: Final = frozenset(" \t\r\n/\\@[]")


class AddressError(UsageError):
    """An address that cannot be read; ``reason`` says why, without the option's name."""

    def __init__(self, option: str, text: str, reason: str, wanted: str = "HOST:PORT") -> None:
        example = EXAMPLES.get(wanted, EXAMPLES["HOST:PORT"])
        super().__init__(f"{option} wants {wanted} (like {example}), not {text!r}: {reason}")
        self.option = option
        self.text = text
        self.reason = reason


def split_address(text: str, option: str = "address") -> tuple[str, int | None]:
    """``text`` -> (host, port): host ``""`` when absent, port None when absent.

    Raises AddressError for a malformed host or a port outside 1-65535.
    """
    spec = text.strip()
    if not spec:
        raise AddressError(option, text, "it is empty")
    if "," in spec:  # no host or address has one: a list given where one server is wanted
        raise AddressError(option, text, "one address is wanted here, not a list")
    if spec.startswith("["):
        inside, bracket, rest = spec[1:].partition("]")
        if not bracket:
            raise AddressError(option, text, "'[' without its ']'")
        if rest and not rest.startswith(":"):
            raise AddressError(option, text, f"{rest!r} after ']' (expected ':PORT')")
        return _ipv6(inside, option, text), _port(rest[1:], option, text) if rest else None
    if spec.isdigit():
        return "", _port(spec, option, text)
    if spec.count(":") > 1:  # a bare IPv6 address: never with a port
        return _ipv6(spec, option, text), None
    host, colon, port = spec.partition(":")
    return _name(host, option, text), _port(port, option, text) if colon else None


def parse_address(
    text: str,
    *,
    option: str = "address",
    default_host: str = "127.0.0.1",
    default_port: int | None = None,
) -> tuple[str, int]:
    """``text`` -> (host, port), filling in the defaults; AddressError when it cannot.

    Without ``default_port`` the port is required.
    """
    host, port = split_address(text, option)
    if port is None:
        port = default_port
    if port is None:
        raise AddressError(option, text, "no port")
    return host or default_host, port


def parse_address_list(
    texts: str | Iterable[str],
    *,
    option: str = "address",
    default_host: str = "127.0.0.1",
    default_port: int | None = None,
) -> list[tuple[str, int]]:
    """Every address in ``texts`` (one text or several, each a comma-separated list), in
    order, the same one named twice kept once; AddressError names the faulty entry.

    Each entry is read by :func:`parse_address` with the same defaults. Commas never
    occur in a host name or an IPv6 address, so splitting on them is unambiguous.
    """
    found: list[tuple[str, int]] = []
    for text in [texts] if isinstance(texts, str) else texts:
        entries = text.split(",")
        if len(entries) > 1 and not all(entry.strip() for entry in entries):
            raise AddressError(option, text, "an empty entry in the list")
        for entry in entries:
            address = parse_address(
                entry, option=option, default_host=default_host, default_port=default_port
            )
            if address not in found:
                found.append(address)
    if not found:
        raise AddressError(option, "", "it is empty")
    return found


def parse_host(text: str, option: str = "--host") -> str:
    """A host alone (a name, an IPv4 address, an IPv6 address bare or in brackets).

    Raises AddressError for a malformed host and for one that carries a port, which
    belongs in ``--port``.
    """
    host, port = split_address(text, option)
    if port is not None:
        raise AddressError(option, text, "give the port with --port", wanted="a HOST")
    return host  # not empty: only a port leaves the host out


def format_address(host: str, port: int) -> str:
    """``host:port``, with an IPv6 host in brackets so that it reads back unambiguously."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _port(text: str, option: str, whole: str) -> int:
    if not text.isdigit():
        raise AddressError(option, whole, f"port {text!r} is not a number" if text else "no port")
    port = int(text)
    if not 0 < port < 65536:
        raise AddressError(option, whole, f"port {port} is outside 1-65535")
    return port


def _ipv6(text: str, option: str, whole: str) -> str:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        raise AddressError(option, whole, f"{text!r} is not an IPv6 address") from None
    return text


def _name(text: str, option: str, whole: str) -> str:
    if any(char in _FORBIDDEN_IN_NAMES or not char.isprintable() for char in text):
        raise AddressError(option, whole, f"{text!r} is not a host name or address")
    return text
