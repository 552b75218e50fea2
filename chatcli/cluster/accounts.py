"""Accounts and bans of a cluster, kept in NATS key-value buckets.

Every node mirrors both buckets in memory (a watcher keeps the mirror current), so a
login reads them without a round trip; writes go to the buckets, and an account is
created with the bucket's *create* (it fails when the key exists), so two nodes cannot
register one name twice. The rules are the single server's (chatcli.store.accounts
``answer``), run on a worker thread because checking a password is slow on purpose.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, Final

import msgspec
from nats.js.errors import KeyWrongLastSequenceError

from chatcli.cluster.layout import ACCOUNTS_BUCKET, BANS_BUCKET, kv_key
from chatcli.core.intents import Answered, BanRecord, Completion, Intent, Register
from chatcli.store.accounts import answer

__all__ = ["ClusterAccounts"]

log = logging.getLogger("chatcli.server")

#: seconds a bucket write may take before the intent is answered ``unavailable``
WRITE_TIMEOUT: Final = 3.0


class _Account(msgspec.Struct, frozen=True):
    key: str
    alike: str
    name: str
    hash: str


class _Ban(msgspec.Struct, frozen=True):
    key: str
    alike: str
    name: str
    address: str | None
    until: float | None
    reason: str
    by: str


def _ban_record(ban: _Ban) -> BanRecord:
    return BanRecord(ban.key, ban.alike, ban.name, ban.address, ban.until, ban.reason, ban.by)


class _Book:
    """The mirror as an AccountBook; writes are collected, carried out afterwards."""

    def __init__(self, accounts: dict[str, _Account], bans: dict[str, _Ban]) -> None:
        self.accounts = accounts
        self.bans_by_key = bans
        self.writes: list[tuple[str, Any]] = []

    def account(self, keys: tuple[str, str]) -> tuple[str, str] | None:
        for account in self.accounts.values():
            if account.key == keys[0] or account.alike == keys[1]:
                return account.name, account.hash
        return None

    def put_account(self, keys: tuple[str, str], name: str, hashed: str) -> None:
        self.writes.append(("create", _Account(keys[0], keys[1], name, hashed)))

    def set_hash(self, key: str, hashed: str) -> None:
        for account in self.accounts.values():
            if account.key == key:
                self.writes.append(("put", msgspec.structs.replace(account, hash=hashed)))

    def bans(self, keys: tuple[str, str], address: str | None) -> list[BanRecord]:
        return [
            _ban_record(b)
            for b in self.bans_by_key.values()
            if b.key == keys[0] or b.alike == keys[1] or (address and b.address == address)
        ]

    def put_ban(self, ban: BanRecord) -> None:
        record = _Ban(ban.key, ban.alike, ban.name, ban.address, ban.until, ban.reason, ban.by)
        self.writes.append(("ban", record))

    def drop_bans(self, keys: tuple[str, str]) -> int:
        gone = [b for b in self.bans_by_key.values() if b.key == keys[0] or b.alike == keys[1]]
        for ban in gone:
            self.writes.append(("unban", ban))
        return len(gone)


class ClusterAccounts:
    """Mirrors the accounts and bans buckets; answers account intents (see module doc)."""

    def __init__(self) -> None:
        self.accounts: dict[str, _Account] = {}
        self.bans: dict[str, _Ban] = {}
        self._accounts_kv: Any = None
        self._bans_kv: Any = None
        self._watchers: list[Any] = []
        self._tasks: list[asyncio.Task[None]] = []
        #: called with every ban that arrives in the mirror (the node closes its users)
        self.on_ban: Callable[[BanRecord], None] = lambda ban: None

    async def open(self, js: Any, bucket: Callable[[str], Any]) -> None:
        """Open (or make) both buckets and start mirroring them."""
        self._accounts_kv = await bucket(ACCOUNTS_BUCKET)
        self._bans_kv = await bucket(BANS_BUCKET)
        await self.rewatch()

    async def rewatch(self) -> None:
        """Mirror both buckets afresh (at start, and when NATS came back: a restarted
        server forgot the old watchers); what went meanwhile is dropped from the mirror."""
        for task in self._tasks:
            task.cancel()
        for watcher in self._watchers:
            with contextlib.suppress(Exception):
                await watcher.stop()
        self._tasks, self._watchers = [], []
        for kv, into, kind in (
            (self._accounts_kv, self.accounts, _Account),
            (self._bans_kv, self.bans, _Ban),
        ):
            watcher = await kv.watchall()
            self._watchers.append(watcher)
            task = asyncio.get_running_loop().create_task(self._mirror(watcher, into, kind))
            self._tasks.append(task)

    async def _mirror(self, watcher: Any, into: dict[str, Any], kind: type) -> None:
        decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(kind)
        present: set[str] | None = set()
        async for entry in watcher:
            if entry is None:  # the current entries are read: drop what went meanwhile
                if present is not None:
                    for gone in set(into) - present:
                        del into[gone]
                    present = None
                continue
            if entry.operation in ("DEL", "PURGE") or not entry.value:
                into.pop(entry.key, None)
                continue
            try:
                record = into[entry.key] = decoder.decode(entry.value)
            except msgspec.DecodeError as exc:
                log.warning("cluster: skipping damaged entry %s: %s", entry.key, exc)
                continue
            if present is not None:
                present.add(entry.key)
            if kind is _Ban:
                self.on_ban(_ban_record(record))

    async def answer(self, intent: Intent) -> Completion:
        """Carry an account or ban intent out: the rules on a thread, then the writes."""
        book = _Book(self.accounts, self.bans)
        done = await asyncio.to_thread(answer, book, intent)
        for op, record in book.writes:
            try:
                await asyncio.wait_for(self._write(op, record), WRITE_TIMEOUT)
            except KeyWrongLastSequenceError:
                assert isinstance(intent, Register)
                reason = "this name (or one like it) is already registered"
                return Answered(intent, False, reason)
        return done

    async def _write(self, op: str, record: Any) -> None:
        data = msgspec.json.encode(record)
        if op == "create":
            await self._accounts_kv.create(kv_key(record.key), data)
            self.accounts[kv_key(record.key)] = record
        elif op == "put":
            await self._accounts_kv.put(kv_key(record.key), data)
            self.accounts[kv_key(record.key)] = record
        elif op == "ban":
            await self._bans_kv.put(kv_key(record.key), data)
            self.bans[kv_key(record.key)] = record
        else:
            await self._bans_kv.delete(kv_key(record.key))
            self.bans.pop(kv_key(record.key), None)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for watcher in self._watchers:
            try:
                await watcher.stop()
            except Exception as exc:
                log.debug("cluster: stopping a watcher: %s", exc)
