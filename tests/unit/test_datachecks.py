"""A TrainingRun's data checks: what the trainer finds in a training set (pandera, the previous version's profile),
how a stopped run reaches its status, and what the Job is told. The checks run on iris, broken in known ways."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mlops_operator.api import artifacts
from mlops_operator.api.trainingrun import DataChecks
from mlops_operator.builders.trainingrun import training_jobs
from mlops_operator.runtime import datachecks
from mlops_operator.runtime import profile as profiles
from mlops_operator.training.run import decide, previous_profile, reference_for, start_record
from tests.unit.test_training import NOW, job, pod, run_body, spec_of, with_status

TARGET = "target"
ALL = {"minRows": 100, "maxMissingShare": "0.05", "labelClasses": ["0", "1", "2"], "sameColumnsAsPrevious": True,
       "maxPsi": "0.25", "columns": [{"name": "sepal width (cm)", "type": "numeric", "min": "0", "max": "10"},
                                     {"name": "petal width (cm)", "type": "numeric"}]}


@pytest.fixture(scope="module")
def iris() -> pd.DataFrame:
    from sklearn.datasets import load_iris

    return load_iris(as_frame=True).frame


@pytest.fixture(scope="module")
def previous(iris: pd.DataFrame) -> artifacts.Profile:
    return profiles.build({c: ("numeric", iris[c].to_numpy()) for c in iris.columns if c != TARGET}, None)


def test_a_clean_training_set_passes_every_check(iris: pd.DataFrame, previous: artifacts.Profile) -> None:
    report = datachecks.check(iris, DataChecks.model_validate(ALL), TARGET, previous)
    assert report.passed and report.rows == 150 and report.failures == [] and report.skipped == []


def test_each_broken_rule_is_named_with_its_column_and_number(iris: pd.DataFrame,
                                                              previous: artifacts.Profile) -> None:
    broken = iris.drop(columns=["petal width (cm)"]).copy()
    broken.loc[:20, "sepal length (cm)"] = np.nan  # 21 of 150 missing
    broken.loc[30, "sepal width (cm)"] = 99.0
    broken[TARGET] = broken[TARGET].replace({2: 7})
    report = datachecks.check(broken, DataChecks.model_validate({**ALL, "minRows": 200}), TARGET, previous)
    assert not report.passed
    text = "\n".join(report.failures)
    assert "column petal width (cm): missing" in text
    assert "150 rows, at least 200 required" in text
    assert "column sepal width (cm): 1 value not at most 10 (e.g. 99.0)" in text
    assert "column target: 50 values not a label class" in text and "(e.g. 7)" in text
    assert "column sepal length (cm): 0.14 of the values missing, allowed at most 0.05 missing" in text
    assert "columns differ from the previous version's: missing petal width (cm)" in text
    assert len(report.failures) == 6


def test_a_shifted_feature_fails_the_psi_check_and_without_a_previous_version_it_is_skipped(
        iris: pd.DataFrame, previous: artifacts.Profile) -> None:
    shifted = iris.copy()
    shifted["petal length (cm)"] += 3
    report = datachecks.check(shifted, DataChecks(max_psi="0.25"), TARGET, previous)
    [failure] = report.failures
    assert failure.startswith("column petal length (cm): PSI ") and "allowed 0.25" in failure
    alone = datachecks.check(shifted, DataChecks(max_psi="0.25"), TARGET, None)
    assert alone.passed and "no earlier version" in alone.skipped[0]


def mlops_train(tmp: Path, dataset: Path, checks: dict[str, Any], reference: str | None = None) -> tuple[int, str]:
    term = tmp / "termination-log"
    term.write_text("")
    env = {**os.environ, "MLOPS_TERMINATION_LOG": str(term), "MLOPS_DATA_CHECKS": json.dumps(checks),
           **({"MLOPS_REFERENCE_PROFILE": reference} if reference else {})}
    proc = subprocess.run([sys.executable, "-m", "mlops_operator.cli", "train", "--estimator",
                           "sklearn.tree.DecisionTreeClassifier", "--dataset", str(dataset), "--output",
                           f"file://{tmp / 'model'}"], capture_output=True, text=True, timeout=300, env=env)
    return proc.returncode, term.read_text()


def test_the_trainer_stops_before_training_and_reports_in_its_termination_message(
        iris: pd.DataFrame, previous: artifacts.Profile, tmp_path: Path) -> None:
    (tmp_path / "profile.json").write_text(previous.model_dump_json(by_alias=True, exclude_none=True))
    good = tmp_path / "good.csv"
    iris.to_csv(good, index=False)
    code, message = mlops_train(tmp_path, good, ALL, str(tmp_path / "profile.json"))
    assert code == 0, message
    result = artifacts.parse_termination_message(message)
    assert result.data_checks is not None and result.data_checks.passed and result.data_checks.rows == 150
    bad = tmp_path / "bad.csv"
    iris.drop(columns=["petal width (cm)"]).to_csv(bad, index=False)
    (tmp_path / "x").mkdir()
    code, message = mlops_train(tmp_path / "x", bad, ALL, str(tmp_path / "profile.json"))
    assert code == 1
    report = artifacts.parse_data_check_failure(message)
    assert report is not None and not report.passed and any("petal width (cm)" in f for f in report.failures)
    assert not (tmp_path / "x" / "model").exists()  # nothing was trained


# -- the operator's side

def checked_body(**extra: Any) -> dict[str, Any]:
    return run_body(dataChecks={"minRows": 10, "maxPsi": "0.25"}, **extra)


def earlier(name: str, minute: int, passed: bool = True) -> dict[str, Any]:
    return {"metadata": {"name": name, "creationTimestamp": f"2026-11-22T10:{minute:02d}:00Z"},
            "status": {"conditions": [{"type": "GatesPassed", "status": "True" if passed else "False"}],
                       "model": {"profileUri": f"s3://m/{name}/profile.json"}}}


def test_the_previous_version_is_the_newest_earlier_run_that_passed_and_its_profile_is_recorded() -> None:
    body = checked_body()
    body["metadata"]["creationTimestamp"] = "2026-11-22T11:00:00Z"
    runs = [earlier("iris-a", 1), earlier("iris-b", 5), earlier("iris-c", 9, passed=False),
            {**earlier("iris-later", 0),
             "metadata": {"name": "iris-later", "creationTimestamp": "2026-11-22T12:00:00Z"}}]
    assert previous_profile(body, runs) == "s3://m/iris-b/profile.json"
    spec = spec_of(body)
    reference = reference_for(body, spec, runs)
    d = decide(body, spec, None, None, NOW, reference)
    assert d.apply_job and d.status["reproducibility"]["referenceProfile"] == "s3://m/iris-b/profile.json"
    started = with_status(body, d)
    assert reference_for(started, spec, [*runs, earlier("iris-d", 30)]) == reference  # recorded: it stands
    env = {e["name"]: e.get("value") for e in training_jobs(
        started, spec, runtime_image="img", artifact_root="s3://m", record=start_record(d.status))[0]
        ["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert json.loads(env["MLOPS_DATA_CHECKS"]) == {"minRows": 10, "maxPsi": "0.25", "sameColumnsAsPrevious": False}
    assert env["MLOPS_REFERENCE_PROFILE"] == "s3://m/iris-b/profile.json"
    plain = run_body()
    assert reference_for(plain, spec_of(plain), runs) is None  # no checks: no reference looked up


def test_a_run_its_data_checks_stopped_is_data_check_failed_with_the_report_in_status() -> None:
    body = checked_body()
    spec = spec_of(body)
    body = with_status(body, decide(body, spec, None, None, NOW))
    said = json.dumps({"dataChecks": {"passed": False, "rows": 3, "failures": ["3 rows, at least 10 required"]}})
    d = decide(body, spec, job(failed="BackoffLimitExceeded", failures=2), [pod("Failed", said, code=1)], NOW)
    conditions = {c.type: (c.status, c.reason, c.message) for c in d.conditions}
    assert conditions["Succeeded"] == ("False", "DataCheckFailed", "data checks failed: 3 rows, at least 10 required")
    assert conditions["Ready"][1] == "DataCheckFailed" and conditions["GatesPassed"][:2] == ("False", "NoResult")
    assert d.status["dataChecks"] == {"passed": False, "rows": 3, "failures": ["3 rows, at least 10 required"],
                                      "skipped": []}
    assert d.final  # a data check failure is final: the data, not the attempt, is wrong


def test_the_first_attempt_its_data_checks_stop_ends_the_run_and_its_job_without_a_retry() -> None:
    body = checked_body()
    spec = spec_of(body)
    body = with_status(body, decide(body, spec, None, None, NOW))
    running = job(active=1, failures=1)  # the Job controller has started attempt 2 of backoffLimit + 1
    asked = decide(body, spec, running, None, NOW)
    assert asked.needs_pods and not asked.conditions
    said = json.dumps({"dataChecks": {"passed": False, "rows": 3, "failures": ["3 rows, at least 10 required"]}})
    d = decide(body, spec, running, [pod("Failed", said, code=1), pod("Running", "")], NOW)
    conditions = {c.type: (c.status, c.reason) for c in d.conditions}
    assert conditions["Succeeded"] == ("False", "DataCheckFailed") and d.stop_workers and d.final
    assert d.status["dataChecks"]["failures"] == ["3 rows, at least 10 required"] and d.status["attempts"] == 2
    # a first attempt that failed for another reason is retried as before
    d = decide(body, spec, running, [pod("Failed", "out of memory", code=137), pod("Running", "")], NOW)
    assert {c.type: c.reason for c in d.conditions}["Succeeded"] == "Running" and not d.stop_workers
