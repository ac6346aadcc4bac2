"""`mlops analyze` as a process against real `mlops serve` processes: a champion, a challenger,
and challengers with injected faults; the report is judged by rollout/analysis.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mlops_operator.api.modeldeployment import Analysis
from mlops_operator.api.reports import parse_report
from mlops_operator.rollout.analysis import judge_report
from mlops_operator.runtime.analyze import classification_metrics, percentile, regression_metrics

from .test_server import Served, make_model

ANALYSIS = Analysis.model_validate({"intervalSeconds": 1, "durationSeconds": 1, "successRate": "0.99",
                                    "maxP99LatencyMs": 100,
                                    "compareToStable": {"metric": "accuracy", "maxDegradation": "0.02"}})


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, Any, str]:
    return make_model(tmp_path_factory.mktemp("analyze"))


def analyze(model_dir: Path, tmp: Path, candidate: Served, stable: Served | None, seconds: str = "1",
            windows: str = "2") -> tuple[int, str]:
    log = tmp / "termination-log"
    args = [sys.executable, "-m", "mlops_operator.cli", "analyze", "--model-dir", str(model_dir), "--name", "iris",
            # the pods' monitoring port, as the operator passes them (replayed rows never count as live data)
            "--candidate", f"http://127.0.0.1:{candidate.monitoring_port}", "--duration-seconds", seconds,
            "--windows", windows]
    if stable is not None:
        args += ["--stable", f"127.0.0.1:{stable.monitoring_port}"]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120,
                          env={"MLOPS_TERMINATION_LOG": str(log), "PATH": "/usr/bin:/bin"})
    return proc.returncode, log.read_text()


def test_champion_and_challenger_are_both_replayed_and_judged(model: tuple[Path, Any, Any, str],
                                                              tmp_path: Path) -> None:
    model_dir, _, _, digest = model
    champion, challenger = Served(model_dir, "iris", "--digest", digest), Served(model_dir, "iris")
    try:
        code, message = analyze(model_dir, tmp_path, challenger, champion)
        _, counted = challenger.request("GET", "/v2/models/iris/monitoring", port=challenger.monitoring_port)
    finally:
        champion.stop(), challenger.stop()
    assert code == 0
    report = parse_report(message)
    # replayed rows are answered and timed, but never counted as live inputs for drift
    assert counted["requests"] == report.candidate.requests and counted["rows"] == 0
    assert all(sum(f["counts"]) == 0 for f in counted["features"])
    assert report.rows == 20 and report.task == "classification"
    assert set(report.candidate.metrics) == {"accuracy", "f1"}
    # the sample is the first 20 training rows: the forest predicts them all right, on both sides
    assert report.candidate.metrics["accuracy"] == report.stable.metrics["accuracy"] == 1.0  # type: ignore[union-attr]
    assert report.candidate.requests >= 20 and report.candidate.errors == 0
    assert sum(w.requests for w in report.candidate.windows) == report.candidate.requests
    assert len(report.candidate.windows) == 2
    verdict = judge_report(report, ANALYSIS)
    assert verdict.passed, verdict.message
    assert verdict.measurements["stable.accuracy"] == 1.0 and verdict.measurements["degradation"] == 0.0


@pytest.mark.parametrize("fault,needle", [
    (("--inject-error-rate", "0.5"), "success rate 0.5"),
    (("--inject-delay-ms", "150"), "p99 latency"),
])
def test_a_faulty_challenger_fails_with_its_numbers(model: tuple[Path, Any, Any, str], tmp_path: Path,
                                                    fault: tuple[str, str], needle: str) -> None:
    model_dir, _, _, _digest = model
    champion, challenger = Served(model_dir, "iris"), Served(model_dir, "iris", *fault)
    try:
        code, message = analyze(model_dir, tmp_path, challenger, champion)
    finally:
        champion.stop(), challenger.stop()
    assert code == 0
    report = parse_report(message)
    assert report.stable is not None and report.stable.errors == 0
    verdict = judge_report(report, ANALYSIS)
    assert not verdict.passed and needle in verdict.message
    if "error" in fault[0]:
        assert report.candidate.errors * 2 == report.candidate.requests
        assert "injected fault" in (report.candidate.error or "")
    else:
        assert report.candidate.p99_ms is not None and report.candidate.p99_ms >= 150


def test_an_unreachable_candidate_and_a_missing_sample_are_reported(model: tuple[Path, Any, Any, str],
                                                                    tmp_path: Path) -> None:
    model_dir, _, _, _ = model
    gone = Served(model_dir, "iris")
    gone.stop()
    code, message = analyze(model_dir, tmp_path, gone, None, seconds="0", windows="1")
    assert code == 0
    verdict = judge_report(parse_report(message), ANALYSIS)
    assert not verdict.passed and "every one of" in verdict.message and "Connection refused" in verdict.message
    empty = tmp_path / "empty"
    empty.mkdir()
    code, message = analyze(empty, tmp_path, gone, None)
    assert code == 1 and "metadata.json is missing" in message


def test_metrics_and_percentiles() -> None:
    assert classification_metrics(["a", "a", "b", "b"], ["a", "b", "b", "b"]) == \
        {"accuracy": 0.75, "f1": pytest.approx((2 / 3 + 0.8) / 2)}
    assert classification_metrics([1, 2], ["1", "2"])["accuracy"] == 1.0  # labels and answers in other types
    r = regression_metrics([1.0, 2.0, 3.0], [1.0, 2.0, 5.0])
    assert r["mae"] == pytest.approx(2 / 3) and r["rmse"] == pytest.approx((4 / 3) ** 0.5)
    assert r["r2"] == pytest.approx(1 - 4 / 2)
    assert percentile([], 0.99) is None and percentile([5.0], 0.5) == 5.0
    assert percentile(list(map(float, range(1, 101))), 0.99) == 99.0


def test_live_only_faults_spare_the_replay(model: tuple[Path, Any, Any, str], tmp_path: Path) -> None:
    """A server that passes its replay and fails its live traffic: what rehearses the live analysis
    after a promotion."""
    model_dir, _, _, _ = model
    champion = Served(model_dir, "iris")
    challenger = Served(model_dir, "iris", "--inject-error-rate", "0.5", "--inject-live-only")
    try:
        code, message = analyze(model_dir, tmp_path, challenger, champion)
        row = {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": [[5.1, 3.5, 1.4, 0.2]]}]}
        live = [challenger.infer(row)[0] for _ in range(10)]
    finally:
        champion.stop(), challenger.stop()
    assert code == 0 and judge_report(parse_report(message), ANALYSIS).passed
    assert sorted(live) == [200] * 5 + [500] * 5
