"""Logging through rich: one readable line per connection event, on stderr."""

from __future__ import annotations

import logging

from rich.console import Console
from rich.logging import RichHandler

__all__ = ["console_err", "setup_logging"]

console_err = Console(stderr=True)


def setup_logging(level: int) -> None:
    """Send chatcli's log records to stderr through rich, at ``level`` and above."""
    handler = RichHandler(
        console=console_err,
        show_path=False,
        markup=False,
        rich_tracebacks=False,
        log_time_format="%H:%M:%S",
    )
    logger = logging.getLogger("chatcli")
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False
