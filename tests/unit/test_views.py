"""`mlops get` and `mlops status` as a user reads them, from statuses shaped as the operator writes them."""

from __future__ import annotations

import datetime
from typing import Any

from mlops_operator.views import _tree, get_table, status_tree

NOW = datetime.datetime(2026, 11, 22, 12, 0, tzinfo=datetime.UTC)


def cond(type_: str, status: str, reason: str, message: str = "") -> dict[str, str]:
    return {"type": type_, "status": status, "reason": reason, "message": message}


def run(name: str, accuracy: float, created: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns", "creationTimestamp": created},
            "spec": {"model": "iris"},
            "status": {"metrics": {"accuracy": accuracy}, "conditions": [
                cond("Succeeded", "True", "Completed"), cond("GatesPassed", "True", "Passed")]}}


MD = {"metadata": {"name": "iris", "namespace": "ns", "creationTimestamp": "2026-11-22T11:00:00Z"},
      "spec": {"model": {"fromTrainingRuns": {"model": "iris"}}},
      "status": {"stable": {"revision": "bbbb", "trainingRun": "iris-drift-1", "since": "2026-11-22T11:50:00Z"},
                 "trafficSummary": "bbbb 100%",
                 "lastAnalysis": {"revision": "cccc", "verdict": "Failed", "message": "accuracy 0.66 is worse"},
                 "liveQuality": {"time": "2026-11-22T11:59:30Z", "labels": 130, "unknownLabels": 2, "revisions": [
                     {"revision": "bbbb", "predictions": 150, "labelled": 120, "metrics": {"accuracy": 0.925}}]},
                 "history": [{"revision": "bbbb", "trainingRun": "iris-drift-1", "outcome": "Promoted"},
                             {"revision": "cccc", "trainingRun": "iris-stump", "outcome": "RolledBack"}],
                 "conditions": [cond("Ready", "True", "Serving"), cond("Available", "True", "Serving"),
                                cond("Progressing", "False", "RolledBack", "candidate cccc rejected"),
                                cond("Degraded", "False", "AsExpected")]}}
RUNS = [run("iris-stump", 0.658, "2026-11-22T11:55:00Z"), run("iris-v1", 0.921, "2026-11-22T11:00:00Z"),
        run("iris-drift-1", 0.947, "2026-11-22T11:40:00Z"), {**run("other", 0.5, "2026-11-22T11:00:00Z"),
                                                             "spec": {"model": "other"}}]
POLICY = {"metadata": {"name": "iris-drift", "namespace": "ns", "creationTimestamp": "2026-11-22T11:00:00Z"},
          "spec": {"targetRef": {"name": "iris"}},
          "status": {"conditions": [cond("Drifted", "False", "NotDrifted")],
                     "lastEvaluation": {"time": "2026-11-22T11:59:00Z", "verdict": "NotDrifted", "samples": 240,
                                        "features": [{"name": "petal_length", "test": "psi", "value": 0.041,
                                                      "threshold": 0.2, "drifted": False}]},
                     "retrains": [{"name": "iris-drift-1", "created": "2026-11-22T11:40:00Z",
                                   "outcome": "Promoted"}]}}
QUALITY = {"metadata": {"name": "iris-quality", "namespace": "ns", "creationTimestamp": "2026-11-22T11:00:00Z"},
           "spec": {"targetRef": {"name": "iris"}},
           "status": {"conditions": [cond("Drifted", "False", "NotDrifted"),
                                     cond("PerformanceDrifted", "True", "Degraded")],
                      "lastPerformance": {"time": "2026-11-22T11:59:30Z", "revision": "bbbb", "metric": "accuracy",
                                          "value": 0.53, "labelled": 1820, "limit": 0.7, "verdict": "Degraded"}}}


def test_status_is_the_models_loop_as_a_tree() -> None:
    assert status_tree(MD, RUNS, [POLICY, {**POLICY, "spec": {"targetRef": {"name": "other"}}}, QUALITY]) == """\
ModelDeployment ns/iris: Ready=True, Available=True, Progressing=False, Degraded=False
├─ RolledBack: candidate cccc rejected
├─ stable    bbbb  iris-drift-1  since 2026-11-22T11:50:00Z
├─ traffic   bbbb 100%
├─ analysis  cccc Failed: accuracy 0.66 is worse
├─ live quality at 2026-11-22T11:59:30Z: 130 labels, 2 for unknown ids
│  └─ bbbb  accuracy 0.925  (120 of 150 rows labelled)
├─ TrainingRuns of model iris
│  ├─ iris-v1  Completed  gates Passed  accuracy 0.921
│  ├─ iris-drift-1  Completed  gates Passed  accuracy 0.947  ← serving
│  └─ iris-stump  Completed  gates Passed  accuracy 0.658  (rejected by analysis)
├─ DriftPolicy iris-drift: Drifted=False (NotDrifted)
│  ├─ last evaluation 2026-11-22T11:59:00Z: NotDrifted over 240 rows
│  │  └─ petal_length  psi 0.041 (threshold 0.2)
│  └─ retrain iris-drift-1 created 2026-11-22T11:40:00Z: Promoted
└─ DriftPolicy iris-quality: Drifted=False (NotDrifted), PerformanceDrifted=True (Degraded)
   └─ live accuracy of bbbb at 2026-11-22T11:59:30Z: 0.530 over 1820 labelled rows (limit 0.7): Degraded"""


def test_tree_branches_close_where_their_siblings_end() -> None:
    drawn = _tree([(0, "a"), (1, "b"), (2, "c"), (1, "d"), (2, "e"), (3, "f")])
    assert drawn == "a\n├─ b\n│  └─ c\n└─ d\n   └─ e\n      └─ f"


def test_get_tables_say_where_each_resource_is() -> None:
    assert get_table("ModelDeployment", [MD], NOW).splitlines() == [
        "NAME   STABLE   CANDIDATE   TRAFFIC     STATE        AGE",
        "iris   bbbb     -           bbbb 100%   RolledBack   60m"]
    lines = get_table("TrainingRun", RUNS[:2], NOW).splitlines()
    assert lines[0].split() == ["NAME", "MODEL", "STATE", "GATES", "METRICS", "AGE"]
    assert lines[1].split() == ["iris-stump", "iris", "Completed", "Passed", "accuracy", "0.658", "5m"]
    assert get_table("DriftPolicy", [POLICY], NOW).splitlines()[1].split() == [
        "iris-drift", "iris", "NotDrifted", "-", "1", "60m"]
