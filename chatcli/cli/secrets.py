"""Where the commands read passwords from: a file's first line, or an environment variable.

Shared by ``serve --password-file`` and ``join --server-password-file``. A password is
never printed, logged or put in an error message; a file that cannot be read or holds
no password is a usage error (one line, exit 2).
"""

from __future__ import annotations

import os
from pathlib import Path

from chatcli.core.events import MAX_SECRET
from chatcli.errors import UsageError

__all__ = ["PASSWORD_ENV", "SERVER_PASSWORD_ENV", "password_from_env", "read_password_file"]

#: the server's password (``serve`` requires it, ``join`` sends it)
SERVER_PASSWORD_ENV = "CHATCLI_SERVER_PASSWORD"
#: the account password ``join`` logs in with (and registers with, in a script)
PASSWORD_ENV = "CHATCLI_PASSWORD"


def read_password_file(path: Path, option: str) -> str:
    """The password in ``path`` (its first line, without surrounding blanks).

    Raises UsageError, naming ``option`` and the file but never the content, when the
    file cannot be read, its first line is empty, or it is longer than the wire allows.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = getattr(exc, "strerror", None) or "not UTF-8 text"
        raise UsageError(f"{option} {path}: cannot read it ({why})") from None
    lines = text.splitlines()
    password = lines[0].strip() if lines else ""
    if not password:
        raise UsageError(f"{option} {path}: no password on its first line")
    return _bounded(password, f"{option} {path}")


def password_from_env(variable: str) -> str | None:
    """The password in environment ``variable``, or None when it is not set.

    Raises UsageError when it is set but empty (a mistake worth saying) or too long.
    """
    value = os.environ.get(variable)
    if value is None:
        return None
    if not value.strip():
        raise UsageError(f"{variable} is set but empty")
    return _bounded(value.strip(), variable)


def _bounded(password: str, where: str) -> str:
    if len(password) > MAX_SECRET:
        raise UsageError(f"{where}: the password is longer than {MAX_SECRET} characters")
    return password
