"""``bench --junit FILE.xml``: the run's checks as JUnit XML, for CI test reporters.

One ``testsuite`` with a ``testcase`` for the validity of the run, one per threshold and
one per metric of the baseline comparison; each check that did not hold has a
``failure`` element saying what was measured against what limit. GitLab, Jenkins and
the GitHub test-report actions read this shape (testsuites/testsuite/testcase/failure).
Text from the report is untrusted: ElementTree escapes markup, and characters XML 1.0
cannot carry at all are removed first.
"""

from __future__ import annotations

import json
import re
from typing import Final
from xml.etree import ElementTree as ET

from chatcli.bench.report_facts import baseline_rows, label, plain, threshold_rows
from chatcli.bench.report_schema import BenchReport

__all__ = ["render_junit"]

SUITE: Final = "chatcli bench"
_NOT_XML: Final = re.compile("[\ud800-\udfff\ufffe\uffff]")


def _x(value: object) -> str:
    """Text XML 1.0 can carry: ``plain`` text without lone surrogates or non-characters."""
    return _NOT_XML.sub("", plain(value))


def _case(suite: ET.Element, classname: str, name: str, failure: str | None, kind: str) -> None:
    case = ET.SubElement(suite, "testcase", classname=_x(classname), name=_x(name), time="0")
    if failure is not None:
        ET.SubElement(case, "failure", message=_x(failure), type=kind).text = _x(failure)


def render_junit(report: BenchReport) -> str:
    """The XML document (UTF-8 declaration included)."""
    root = ET.Element("testsuites", name=SUITE)
    suite = ET.SubElement(root, "testsuite", name=SUITE)
    if report.started:
        suite.set("timestamp", _x(report.started))
    properties = ET.SubElement(suite, "properties")
    for key, value in [
        ("outcome", report.outcome),
        ("chatcli_version", report.chatcli_version),
        *sorted(report.params.items()),
    ]:
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        ET.SubElement(properties, "property", name=_x(key), value=_x(text))

    reasons = "; ".join(report.invalid_reasons) or "the run was marked invalid"
    _case(
        suite,
        "chatcli.bench.validity",
        "the load generator kept up (valid run)",
        None if report.valid else reasons,
        "invalid",
    )
    for t in threshold_rows(report):
        failure = None if t.passed else f"{t.metric} measured {t.measured}, required {t.limit}"
        _case(suite, "chatcli.bench.thresholds", t.expr, failure, "threshold")
    for row in baseline_rows(report.baseline):
        failure = None
        if row.status == "regressed":
            failure = (
                f"{label(row.metric)} regressed: {row.baseline} -> {row.current} "
                f"({row.change}), limit {row.limit}"
            )
        _case(suite, "chatcli.bench.baseline", f"baseline {row.metric}", failure, "regression")

    cases = suite.findall("testcase")
    failures = sum(1 for case in cases if case.find("failure") is not None)
    duration = report.params.get("duration")
    seconds = f"{duration:g}" if isinstance(duration, (int, float)) else "0"
    for element in (root, suite):
        element.set("tests", str(len(cases)))
        element.set("failures", str(failures))
        element.set("errors", "0")
        element.set("time", seconds)
    suite.set("skipped", "0")
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, "unicode") + "\n"
