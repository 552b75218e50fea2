"""Developer sessions: ``nox -s tests``, ``nox -s lint``, ``nox -s typecheck``, ``nox -s bench``.

Arguments after ``--`` go to the underlying tool, e.g. ``nox -s tests -- -k relay -x``.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True

PYTHONS = ["3.11", "3.12", "3.13"]


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """Run the test suite (unit, loopback integration and end-to-end)."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Check style and common mistakes with ruff."""
    session.install("ruff>=0.6,<1")
    session.run("ruff", "check", "chatcli", "tests", "noxfile.py", *session.posargs)
    session.run("ruff", "format", "--check", "chatcli", "tests", "noxfile.py")


@nox.session
def typecheck(session: nox.Session) -> None:
    """Type-check the package with mypy."""
    session.install("-e", ".", "mypy>=1.10,<3")
    session.run("mypy", "chatcli", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """A short benchmark with thresholds: the performance gate CI can run."""
    session.install("-e", ".")
    session.run(
        "chatcli",
        "bench",
        "--clients",
        "50",
        "--rate",
        "40",
        "--duration",
        "10",
        "--warmup",
        "2",
        "--threshold",
        "loss==0",
        "--threshold",
        "p99<50ms",
        "--json",
        "bench-ci.json",
        *session.posargs,
    )
