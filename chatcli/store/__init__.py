"""Where rooms' durable state lives: the store port and its implementations.

``base`` is the port (what the relay's intents ask, what a store answers), ``memory`` keeps
everything in this process, ``sqlite`` keeps it in a file across restarts, and
``pipeline`` carries intents out between a relay and a store. :func:`open_store` turns the
``serve --store`` option into a store.
"""

from __future__ import annotations

from pathlib import Path

from chatcli.store.base import Store

__all__ = ["MEMORY", "Store", "default_store_path", "describe_store", "open_store"]

#: the ``--store`` value that keeps nothing across restarts
MEMORY = "memory"


def default_store_path() -> Path:
    """The store ``chatcli serve`` uses when no ``--store`` is given."""
    from chatcli.config import data_dir

    return data_dir() / "chatcli.db"


def open_store(spec: str | Path | None, *, history: int, retain: int) -> Store:
    """The store named by ``spec``: ``memory``, a SQLite file path, or None for the default.

    Raises StoreError (one clear line) when the file cannot be used.
    """
    if spec is not None and str(spec) == MEMORY:
        from chatcli.store.memory import MemoryStore

        return MemoryStore(history)
    from chatcli.store.sqlite import SQLiteStore

    path = default_store_path() if spec is None else Path(spec).expanduser()
    return SQLiteStore(path, retain=retain)


def describe_store(store: Store) -> str:
    """Where ``store`` keeps things, for the start-up line."""
    describe = getattr(store, "describe", None)
    if describe is not None:
        return str(describe())
    path = getattr(store, "path", None)
    if path is None:
        return "memory (history is lost when the server stops)"
    return f"{path} (history survives restarts)"
