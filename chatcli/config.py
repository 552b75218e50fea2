"""Where chatcli keeps what it remembers between runs (the last servers and name used).

The directory is the platform's user config dir, or ``CHATCLI_CONFIG_DIR`` when set
(tests and portable setups use that).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["LastJoin", "config_dir", "data_dir", "load_last_join", "save_last_join"]


def config_dir() -> Path:
    """chatcli's configuration directory (not created here)."""
    override = os.environ.get("CHATCLI_CONFIG_DIR")
    if override:
        return Path(override)
    from platformdirs import user_config_dir

    return Path(user_config_dir("chatcli", appauthor=False))


def data_dir() -> Path:
    """Where chatcli keeps data (the server's default store): ``CHATCLI_DATA_DIR`` or the
    platform's user data dir."""
    override = os.environ.get("CHATCLI_DATA_DIR")
    if override:
        return Path(override)
    from platformdirs import user_data_dir

    return Path(user_data_dir("chatcli", appauthor=False))


@dataclass(frozen=True)
class LastJoin:
    """The server(s) and name of the last successful ``chatcli join``.

    ``host`` and ``port`` are the first server; ``hosts`` lists every server as
    ``HOST:PORT`` when several were given (``join --host a:7777,b:7777``), else is empty.
    ``tls`` and ``ca`` belong to the host: a join to another host does not inherit them.
    ``--insecure`` is never remembered (skipping verification is chosen each time).
    """

    host: str
    port: int
    name: str
    room: str | None = None
    tls: bool = False
    #: the --ca file (an absolute path) the server's certificate was checked against
    ca: str | None = None
    #: every server of a multi-server join, in the order given, as HOST:PORT
    hosts: tuple[str, ...] = ()

    def addresses(self) -> list[tuple[str, int]]:
        """The remembered servers as (host, port), the first one first."""
        from chatcli.addresses import AddressError, parse_address_list

        if self.hosts:
            try:
                return parse_address_list(self.hosts, option="remembered host")
            except AddressError:
                pass  # a damaged list: the first server alone is still known
        return [(self.host, self.port)]


def _last_path() -> Path:
    return config_dir() / "last-join.json"


def load_last_join() -> LastJoin | None:
    """What ``join`` used last time, or None if nothing (readable) is remembered."""
    try:
        data = json.loads(_last_path().read_text("utf-8"))
        return LastJoin(
            host=str(data["host"]),
            port=int(data["port"]),
            name=str(data["name"]),
            room=data.get("room") if isinstance(data.get("room"), str) else None,
            tls=data.get("tls") is True,
            ca=data.get("ca") if isinstance(data.get("ca"), str) else None,
            hosts=_strings(data.get("hosts")),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None  # a missing or damaged file just means nothing is remembered


def _strings(value: object) -> tuple[str, ...]:
    """A remembered JSON list of strings, or () for anything else."""
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return tuple(value)
    return ()


def save_last_join(last: LastJoin) -> None:
    """Remember ``last`` for the next ``join``; failing to write is not worth an error."""
    path = _last_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # a temporary file of its own: two joins starting at once must not share one
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as tmp:
            tmp.write(json.dumps(asdict(last)))
        Path(name).replace(path)
    except OSError as exc:
        import logging

        logging.getLogger("chatcli").warning("could not remember the last join: %s", exc)
