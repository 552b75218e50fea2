"""The files a bench run (or ``chatcli bench report``) writes, checked before any work.

``--json``, ``--report`` (HTML), ``--junit`` and ``--summary-md`` each name a file; a
path that cannot be written is refused up front (a usage error), not after a run of
minutes, and each file is rendered by its own module when written.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from chatcli.bench.report_html import render_html
from chatcli.bench.report_junit import render_junit
from chatcli.bench.report_md import render_markdown
from chatcli.bench.report_schema import BenchReport, dumps_report
from chatcli.errors import ChatError, UsageError

__all__ = ["ReportFiles"]


class ReportFiles:
    """The files a run or ``bench report`` writes: JSON, HTML, JUnit XML, Markdown."""

    def __init__(
        self,
        *,
        json: Path | None = None,
        html: Path | None = None,
        junit: Path | None = None,
        summary: Path | None = None,
    ) -> None:
        self.paths = {
            "--json": json,
            "--report": html,
            "--junit": junit,
            "--summary-md": summary,
        }

    def check(self) -> None:
        """Refuse (UsageError) any path that cannot be written, before any work."""
        for option, path in self.paths.items():
            if path is None:
                continue
            if not path.parent.is_dir():
                raise UsageError(f"{option} {path}: no such directory {path.parent}")
            existed = path.exists()
            try:
                path.open("a", encoding="utf-8").close()
            except OSError as exc:
                raise UsageError(f"{option} {path}: cannot write: {exc.strerror}") from exc
            if not existed:
                path.unlink(missing_ok=True)

    def write(self, report: BenchReport, baseline: BenchReport | None) -> list[Path]:
        """Render and write each requested file; the paths written, in order."""
        renderers: dict[str, Callable[[], str]] = {
            "--json": lambda: dumps_report(report),
            "--report": lambda: render_html(report, baseline),
            "--junit": lambda: render_junit(report),
            "--summary-md": lambda: render_markdown(report, baseline),
        }
        written = []
        for option, path in self.paths.items():
            if path is None:
                continue
            try:
                path.write_text(renderers[option](), "utf-8")
            except OSError as exc:
                raise ChatError(f"cannot write {path}: {exc.strerror}") from exc
            written.append(path)
        return written
