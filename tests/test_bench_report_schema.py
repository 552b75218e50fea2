"""The --json report: a strict, versioned round trip, and clear refusals of bad files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from chatcli import __version__
from chatcli.bench.histogram import Histogram
from chatcli.bench.report_schema import (
    EXIT_CODES,
    SCHEMA,
    SCHEMA_VERSION,
    BenchReport,
    dumps_report,
    environment_info,
    loads_report,
    outcome_of,
    read_report,
)
from chatcli.errors import UsageError


def sample() -> BenchReport:
    latency = Histogram()
    latency.record_many([150, 900, 12_000, 48_000])
    return BenchReport(
        params={"clients": 50, "rooms": 1, "rate": 100.0, "duration": 10.0, "target": None},
        metrics={"p99": 48.0, "loss": 0.0, "relay_cpu_s": None, "lag_max": float("nan")},
        seed=42,
        histograms={"latency": latency},
        environment=environment_info(),
        thresholds=[{"expr": "p99<50ms", "passed": True}],
        started="2025-11-21T16:55:00Z",
    )


def test_round_trip_through_json_text() -> None:
    original = sample()
    text = dumps_report(original)
    again = loads_report(text)
    assert again.params == original.params
    assert again.seed == 42
    assert again.metrics == {"p99": 48.0, "loss": 0.0, "relay_cpu_s": None, "lag_max": None}
    assert again.histograms["latency"] == original.histograms["latency"]
    assert again.environment == original.environment
    assert again.thresholds == original.thresholds
    assert again.started == original.started
    assert dumps_report(again) == text


def test_document_shape() -> None:
    data = json.loads(dumps_report(sample()))
    assert data["schema"] == SCHEMA and data["schema_version"] == SCHEMA_VERSION == 1
    assert data["chatcli_version"] == __version__
    assert data["outcome"] == "pass" and data["valid"] is True
    assert data["units"] == {"p99": "ms", "loss": "fraction", "relay_cpu_s": "s", "lag_max": "ms"}
    assert data["metrics"]["lag_max"] is None  # NaN is never written
    assert data["histograms"]["latency"]["count"] == 4
    assert data["baseline"] is None
    env = data["environment"]
    assert {"python", "implementation", "platform", "machine", "cpu_count"} <= set(env)


@pytest.mark.parametrize(
    ("valid", "thresholds", "baseline", "outcome"),
    [
        (True, [{"passed": True}], None, "pass"),
        (True, [{"passed": True}, {"passed": False}], None, "fail"),
        (True, [], {"failed": True}, "fail"),
        (True, [], {"failed": False}, "pass"),
        (False, [{"passed": True}], None, "invalid"),
        (False, [{"passed": False}], {"failed": True}, "invalid"),
    ],
)
def test_outcome(
    valid: bool, thresholds: list[dict[str, Any]], baseline: dict[str, Any] | None, outcome: str
) -> None:
    report = BenchReport(params={}, metrics={}, valid=valid, thresholds=thresholds)
    report.baseline = baseline
    assert report.outcome == outcome
    assert EXIT_CODES[outcome] == {"pass": 0, "fail": 1, "invalid": 3}[outcome]


def test_outcome_of() -> None:
    assert outcome_of(True) == "pass"
    assert outcome_of(True, False, True) == "fail"
    assert outcome_of(False) == "invalid"
    assert EXIT_CODES["usage"] == 2


def mutated(**changes: Any) -> str:
    data = json.loads(dumps_report(sample()))
    for key, value in changes.items():
        if value is KeyError:
            del data[key]
        else:
            data[key] = value
    return json.dumps(data)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("{not json", "not valid JSON"),
        ("[]", "not a chatcli bench report"),
        (mutated(schema="k6"), "not a chatcli bench report"),
        (mutated(schema_version=2), "newer chatcli"),
        (mutated(schema_version="1"), "must be an integer"),
        (mutated(schema_version=0), "unknown schema version"),
        (mutated(metrics=KeyError), "'metrics' must be a JSON object"),
        (mutated(metrics={"p99": "fast"}), "metric 'p99' must be a number"),
        (mutated(metrics={"p99": True}), "metric 'p99' must be a number"),
        (mutated(histograms={"latency": {"layout": None}}), "histogram 'latency'"),
        (mutated(valid="yes"), "'valid' must be a JSON boolean"),
        (mutated(seed=1.5), "seed"),
        (mutated(thresholds=["p99<1ms"]), "threshold"),
        (mutated(started=5), "started"),
    ],
)
def test_refusals_name_the_source(text: str, fragment: str) -> None:
    with pytest.raises(UsageError, match=fragment) as info:
        loads_report(text, source="old.json")
    assert str(info.value).startswith("old.json: ")


def test_unknown_fields_are_ignored() -> None:
    data = json.loads(dumps_report(sample()))
    data["future_field"] = {"anything": 1}
    assert loads_report(json.dumps(data)).seed == 42


def test_read_report(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    path.write_text(dumps_report(sample()), encoding="utf-8")
    assert read_report(path).metrics["p99"] == 48.0
    with pytest.raises(UsageError, match="cannot read"):
        read_report(tmp_path / "missing.json")


def test_bench_core_imports_no_event_loop_socket_or_ui() -> None:
    # A fresh interpreter, so modules other tests imported do not hide an import.
    modules = ", ".join(
        f"chatcli.bench.{name}"
        for name in (
            "accounting",
            "baseline",
            "histogram",
            "metrics",
            "report_schema",
            "schedule",
            "thresholds",
        )
    )
    code = (
        f"import sys, {modules}\n"
        "print(sorted({'asyncio', 'socket', 'click', 'rich', 'uvloop'} & set(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    )
    assert out.stdout.strip() == "[]"
