"""Accounts and bans: the rules every store keeps for them, and password hashing.

A store keeps accounts (a name's two keys, its name as registered, a password hash) and
bans (:class:`chatcli.core.intents.BanRecord`) in whatever it holds them in and exposes
them through :class:`AccountBook`; :func:`answer` carries an account intent out on it, so
the memory and SQLite stores apply one set of rules.

Passwords are kept only as scrypt hashes (hashlib, salted, parameters in the encoded
string so they can be raised later) and compared in constant time. Hashing is slow on
purpose (about 50 ms and 16 MiB): the SQLite store runs it on its writer thread; the
memory store runs it inside ``submit``, on the caller's thread (the event loop), which is
acceptable for the tests and development it is meant for, and bounded by the relay's
failed-login limit. A password is never logged, and never put in a completion.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from typing import Protocol

from chatcli.core.intents import (
    AddBan,
    AddressChecked,
    Answered,
    Authenticate,
    Authenticated,
    BanRecord,
    ChangePassword,
    CheckAddress,
    Completion,
    Intent,
    LiftBan,
    Register,
)

__all__ = ["AccountBook", "answer", "check_password", "hash_password"]

#: scrypt cost: N (CPU and memory), r (block size), p (parallelism); RFC 7914's advice
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
_SALT_BYTES = 16
_HASH_BYTES = 32


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str, *, n: int = SCRYPT_N) -> str:
    """A salted scrypt hash of ``password``, encoded with its parameters."""
    salt = secrets.token_bytes(_SALT_BYTES)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=n, r=SCRYPT_R, p=SCRYPT_P, dklen=_HASH_BYTES
    )
    return f"scrypt${n}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def check_password(password: str, encoded: str) -> bool:
    """True when ``password`` hashes to ``encoded`` (constant-time comparison)."""
    try:
        scheme, n, r, p, salt, digest = encoded.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        given = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            maxmem=2**26,
            dklen=len(expected),
        )
    except ValueError:  # a damaged hash matches nothing
        return False
    return hmac.compare_digest(given, expected)


class AccountBook(Protocol):
    """Where a store keeps accounts and bans (a name's keys: chatcli.core.names)."""

    def account(self, keys: tuple[str, str]) -> tuple[str, str] | None:
        """(registered name, hash) of the account whose key or look-alike key matches."""

    def put_account(self, keys: tuple[str, str], name: str, hashed: str) -> None:
        """Create an account."""

    def set_hash(self, key: str, hashed: str) -> None:
        """Replace the password hash of the account of ``key``."""

    def bans(self, keys: tuple[str, str], address: str | None) -> list[BanRecord]:
        """Bans of a name matching either key, or of ``address``, expired ones included."""

    def put_ban(self, ban: BanRecord) -> None:
        """Keep ``ban``, replacing any ban of the same name key."""

    def drop_bans(self, keys: tuple[str, str]) -> int:
        """Remove the bans of names matching either key; how many there were."""


def answer(book: AccountBook, intent: Intent) -> Completion:
    """Carry an account or ban intent out on ``book`` (TypeError for a message intent)."""
    if isinstance(intent, Authenticate):
        ban = next(
            (b for b in book.bans(intent.keys, intent.address) if b.active(intent.now)), None
        )
        found = book.account(intent.keys)
        if found is None:
            return Authenticated(intent, False, False, ban)
        name, hashed = found
        verified = intent.password is not None and check_password(intent.password, hashed)
        return Authenticated(intent, True, verified, ban, name)
    if isinstance(intent, CheckAddress):
        bans = book.bans(("", ""), intent.address)
        ban = next((b for b in bans if b.address == intent.address and b.active(intent.now)), None)
        return AddressChecked(intent, ban)
    if isinstance(intent, Register):
        if book.account(intent.keys) is not None:
            return Answered(intent, False, "this name (or one like it) is already registered")
        book.put_account(intent.keys, intent.name, hash_password(intent.password))
        return Answered(intent, True)
    if isinstance(intent, ChangePassword):
        found = book.account(intent.keys)
        if found is None:
            return Answered(intent, False, "your name is not registered")
        if not check_password(intent.old, found[1]):
            return Answered(intent, False, "the old password is wrong")
        book.set_hash(intent.keys[0], hash_password(intent.new))
        return Answered(intent, True)
    if isinstance(intent, AddBan):
        book.put_ban(intent.ban)
        return Answered(intent, True)
    if not isinstance(intent, LiftBan):
        raise TypeError(f"not an account intent: {type(intent).__name__}")
    removed = book.drop_bans(intent.keys)
    return Answered(intent, removed > 0, "" if removed else f"{intent.name!r} is not banned")
