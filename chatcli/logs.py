"""Logging on stderr: rich columns in a terminal, plain unpadded lines otherwise.

rich pads every log line to the console width, which is right on a screen and wrong in a
file or a pipe (``serve 2> log``, CI output): there each record is one plain line,
``HH:MM:SS LEVEL message``, with nothing trailing.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

from rich.console import Console
from rich.logging import RichHandler

__all__ = ["LOG_TIME_FORMAT", "console_err", "log_handler", "setup_logging"]

console_err = Console(stderr=True)
LOG_TIME_FORMAT = "%H:%M:%S"


def log_handler(stream: TextIO, terminal: bool) -> logging.Handler:
    """The handler for ``stream``: rich columns when it is a ``terminal``, plain lines if not."""
    if terminal:
        return RichHandler(
            console=console_err,
            show_path=False,
            markup=False,
            rich_tracebacks=False,
            log_time_format=LOG_TIME_FORMAT,
        )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)-7s %(message)s", datefmt=LOG_TIME_FORMAT)
    )
    return handler


def setup_logging(level: int) -> None:
    """Send chatcli's log records to stderr, at ``level`` and above."""
    logger = logging.getLogger("chatcli")
    logger.handlers[:] = [log_handler(sys.stderr, console_err.is_terminal)]
    logger.setLevel(level)
    logger.propagate = False
