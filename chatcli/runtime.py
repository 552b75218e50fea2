"""Process plumbing every chatcli process shares: its event loop, its descriptor limit,
and how a relay tells the process that started it where it listens.

``chatcli serve``, ``join``, ``replay --to`` and bench's worker processes all run their
main coroutine through :func:`run` (uvloop when it is installed) and raise their
open-files limit through :func:`raise_open_files_limit`, so that a fix to either lands
once; the long-running ones (the relay, bench's load generators) freeze what they hold
once set up (:func:`freeze_heap`). :func:`encode_ready` and :func:`decode_ready` are
the two ends of ``chatcli serve --ready-fd``: one JSON line naming every listening
address, written to a descriptor the parent passed down, for programs (bench, tests)
that must not scrape the human "listening on" line.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import sys
from collections.abc import Coroutine
from typing import Any, Final, TypeVar

__all__ = [
    "OPEN_FILES_SPARE",
    "connections_that_fit",
    "decode_ready",
    "encode_ready",
    "freeze_heap",
    "raise_open_files_limit",
    "run",
]

T = TypeVar("T")

#: descriptors kept on top of the connections for logs, transcripts and the listener
OPEN_FILES_SPARE: Final = 64

log = logging.getLogger("chatcli.server")


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on uvloop when it is installed, else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def raise_open_files_limit(connections: int | None = None, *, warn: bool = True) -> int:
    """Raise this process's open-files limit to fit ``connections`` (up to the hard limit).

    Many systems start processes at 1024 descriptors, far below what a relay or a load
    generator with thousands of connections needs. ``None`` asks for the hard limit
    itself. Returns the soft limit now in force, and warns only when it cannot hold
    ``connections`` (and ``warn`` is true).
    """
    try:
        import resource
    except ImportError:  # not on this platform
        return connections + OPEN_FILES_SPARE if connections is not None else 0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if connections is None:  # an unlimited hard limit is no number to ask for
        target = soft if hard == resource.RLIM_INFINITY else hard
    else:
        wanted = connections + OPEN_FILES_SPARE
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-files limit to %d: %s", target, exc)
    if warn and connections is not None and soft != resource.RLIM_INFINITY and soft < connections:
        log.warning(
            "open-files limit is %d: fewer clients than --max-connections can connect", soft
        )
    return soft


def connections_that_fit(connections: int, *, warn: bool = True) -> int:
    """How many connections a relay may accept: ``connections`` when the open-files limit
    can be raised to hold them plus OPEN_FILES_SPARE, else fewer, with a warning.

    A relay that ran out of descriptors could not accept a connection to tell it
    ``server_full``: the client saw a silent EOF. Lowering ``--max-connections`` to fit
    keeps the descriptors that telling takes. The lowering is a warning when ``warn``
    (the number was asked for), a debug line otherwise (it was only the default).
    """
    soft = raise_open_files_limit(connections, warn=False)
    try:
        import resource
    except ImportError:  # pragma: no cover - not on this platform
        return connections
    if soft == resource.RLIM_INFINITY or soft >= connections + OPEN_FILES_SPARE:
        return connections
    fit = max(1, soft - OPEN_FILES_SPARE)
    (log.warning if warn else log.debug)(
        "open-files limit is %d: --max-connections lowered from %d to %d to fit",
        soft,
        connections,
        fit,
    )
    return fit


def encode_ready(addresses: list[tuple[str, int]]) -> bytes:
    """The readiness line: ``{"addresses": [[host, port], ...]}`` and a newline."""
    return json.dumps({"addresses": [[host, port] for host, port in addresses]}).encode() + b"\n"


def decode_ready(line: bytes) -> list[tuple[str, int]]:
    """The addresses in a readiness line; ValueError when it is not one."""
    data = json.loads(line)
    addresses = data.get("addresses") if isinstance(data, dict) else None
    if not isinstance(addresses, list) or not addresses:
        raise ValueError(f"not a readiness line: {line[:200]!r}")
    found = []
    for item in addresses:
        match item:
            case [str(host), int(port)] if 0 < port < 65536:
                found.append((host, port))
            case _:
                raise ValueError(f"not an address: {item!r}")
    return found


def freeze_heap() -> None:
    """Leave what the process holds once it is set up out of every later full collection.

    CPython's full (generation 2) collection walks every object the collector tracks, with
    the event loop stopped. A process's first one comes once ten younger collections have
    run, that is whenever its allocations bring it: in a relay under the draw mix about
    15 s after start, walking the ~40,000 objects of its imports in 20-25 ms, which bench
    saw as a one-second p99 of 16-20 ms (docs/benchmarks.md, "Pauses of the garbage
    collector"). Collected once here, then frozen (``gc.freeze``), those objects are never
    walked again: later full collections cost what the process made since.

    Called by long-running processes (``chatcli serve``, bench's load generators) once,
    when they are ready to work and before they say so.
    """
    gc.collect()
    gc.freeze()


#: GIL switch interval while a store's writer thread shares the process with the relay
WRITER_SWITCH_INTERVAL: Final = 0.0005


def favour_writer_thread() -> None:
    """Let a store's writer thread take the GIL back quickly from a busy event loop.

    Every SQLite statement releases the GIL and must take it back to go on. While the
    relay's loop is busy, CPython makes a waiting thread wait a whole switch interval
    (5 ms by default) before the loop is asked to let go, so a group commit of a few
    statements could take 20 ms of waiting and the messages in it that much longer to be
    seen. Half a millisecond keeps commits short; the loop pays a switch only when the
    writer actually waits (docs/benchmarks.md, "Cost of durability").
    """
    sys.setswitchinterval(WRITER_SWITCH_INTERVAL)
