"""ModelDeployments for real: TrainingRuns train on the local node, `mlops serve` runs each revision,
`mlops analyze` replays the validation sample against the candidate and the stable revision, and the
operator promotes or rolls back from what they report."""

from __future__ import annotations

import copy
import json
import urllib.request
from typing import Any

from mlops_operator.dev.runner import OperatorThread
from tests.cases import example
from tests.conftest import S3
from tests.health import argocd_health

from .conftest import Cluster, wait_for
from .test_trainingrun import credentials, iris_data, training_run

__all__ = ["iris_data"]  # a fixture used here
MD, TR = "ModelDeployment", "TrainingRun"
ANALYSIS = {"intervalSeconds": 1, "durationSeconds": 2, "successRate": "0.99", "maxP99LatencyMs": 250,
            "compareToStable": {"metric": "accuracy", "maxDegradation": "0.02"}}


def model_deployment(name: str = "iris", **spec: Any) -> dict[str, Any]:
    md = example(MD)
    md["metadata"]["name"] = name
    md["spec"].update({"replicas": 1, "analysis": copy.deepcopy(ANALYSIS),
                       "strategy": {"type": "BlueGreen", "blueGreen": {"previewReplicas": 1,
                                                                        "scaleDownDelaySeconds": 5}}})
    md["spec"].update(spec)
    return md


def status(cluster: Cluster, ns: str, name: str = "iris") -> dict[str, Any]:
    return cluster.get(MD, ns, name).get("status") or {}


def wait_status(cluster: Cluster, ns: str, check: Any, what: str, name: str = "iris", timeout: float = 180) -> Any:
    return wait_for(lambda: check(status(cluster, ns, name)), timeout, what,
                    show=lambda: json.dumps(status(cluster, ns, name), indent=1)[:3000])


def cond(st: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in st.get("conditions") or () if c["type"] == type_), {})


def deployments(cluster: Cluster, ns: str) -> dict[str, Any]:
    return {d.metadata.labels["mlops.dev/revision"]: d for d in cluster.apps.list_namespaced_deployment(ns).items}


def selector(cluster: Cluster, ns: str, name: str) -> dict[str, str]:
    return dict(cluster.core.read_namespaced_service(name, ns).spec.selector)


def resync_rounds(operator: OperatorThread, rounds: int = 2) -> None:
    """Wait until every object was reconciled again at least `rounds` times (resyncs run every 2 s)."""
    ctx = operator.ctx
    start = ctx.queue.reconciles
    every = sum(len(ctx.store.keys(kind)) for kind in (TR, MD, "DriftPolicy"))
    wait_for(lambda: ctx.queue.reconciles >= start + rounds * every, 30, "resync rounds")


def train(cluster: Cluster, ns: str, name: str, **spec: Any) -> dict[str, Any]:
    cluster.create(training_run(name, model="iris", **spec), ns)
    cluster.wait_condition(TR, ns, name, "True", type_="GatesPassed", timeout=180)
    return dict(cluster.get(TR, ns, name)["status"]["model"])


def infer(url: str, rows: list[list[float]]) -> int:
    body = json.dumps({"inputs": [{"name": "x", "shape": [len(rows), 4], "datatype": "FP64",
                                   "data": rows}]}).encode()
    request = urllib.request.Request(f"{url}/v2/models/iris/infer", data=body,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_first_version_then_a_better_one_are_promoted_with_no_spec_change(
    cluster: Cluster, operator: OperatorThread, namespace: str, s3: S3, iris_data: str
) -> None:
    ns = namespace
    credentials(cluster, ns, s3)
    md = cluster.create(model_deployment(), ns)
    cluster.wait_condition(MD, ns, "iris", "False", "NoModelVersion", timeout=30)
    v1 = train(cluster, ns, "iris-v1")
    st = wait_status(cluster, ns, lambda s: s if cond(s, "Available").get("status") == "True" else None,
                     "the first version to be promoted")
    rev1 = st["stable"]["revision"]
    assert st["stable"]["digest"] == v1["digest"] and st["stable"]["trainingRun"] == "iris-v1"
    assert st["lastAnalysis"]["verdict"] == "Passed" and "stable.accuracy" not in st["lastAnalysis"]["measurements"]
    assert st["lastAnalysis"]["measurements"]["candidate.accuracy"] > 0.8
    assert selector(cluster, ns, "iris")["mlops.dev/revision"] == rev1
    assert cond(st, "Ready")["status"] == "True" and cond(st, "Degraded")["status"] == "False"
    assert argocd_health(cluster.get(MD, ns, "iris"))[0] == "Healthy"
    assert st["url"] == f"http://iris.{ns}.svc.cluster.local"

    v2 = train(cluster, ns, "iris-v2", params={"n_estimators": 30})
    st = wait_status(cluster, ns, lambda s: s if (s.get("stable") or {}).get("trainingRun") == "iris-v2" else None,
                     "the new passing version to be promoted")
    rev2 = st["stable"]["revision"]
    assert rev2 != rev1 and st["stable"]["digest"] == v2["digest"]
    measured = st["lastAnalysis"]["measurements"]
    assert measured["candidateRequests"] >= 38 and measured["stableRequests"] >= 38  # both sides replayed
    assert {"candidate.accuracy", "stable.accuracy", "degradation"} <= set(measured)
    assert selector(cluster, ns, "iris")["mlops.dev/revision"] == rev2
    assert [h["outcome"] for h in st["history"]] == ["Promoted", "Promoted"]
    assert st["previous"]["revision"] == rev1
    # the old revision scales down after scaleDownDelaySeconds, and stays as history
    wait_for(lambda: deployments(cluster, ns)[rev1].spec.replicas == 0, 60, "the old revision to scale down")
    assert deployments(cluster, ns)[rev2].spec.replicas == 1
    final = cluster.get(MD, ns, "iris")
    assert final["spec"] == md["spec"] and final["metadata"]["generation"] == md["metadata"]["generation"]
    reasons = {e.reason for e in cluster.events(ns, "iris")}
    assert {"Promoted", "AnalysisPassed", "RolloutStarted"} <= reasons


def test_a_worse_model_is_rolled_back_and_deleting_the_stable_run_changes_nothing(
    cluster: Cluster, operator: OperatorThread, namespace: str, s3: S3, iris_data: str
) -> None:
    ns = namespace
    credentials(cluster, ns, s3)
    train(cluster, ns, "iris-v1")
    cluster.create(model_deployment(), ns)
    st = wait_status(cluster, ns, lambda s: s if cond(s, "Available").get("status") == "True" else None,
                     "the first version to be promoted")
    rev1 = st["stable"]["revision"]
    # a version that passes its own (lax) gates but is much worse than the champion
    train(cluster, ns, "iris-v2", params={"n_estimators": 1, "max_depth": 1},
          gates=[{"metric": "accuracy", "operator": ">=", "threshold": "0.3"}])
    st = wait_status(cluster, ns, lambda s: s if cond(s, "Progressing").get("reason") == "RolledBack" else None,
                     "the worse candidate to be rolled back")
    rejected = st["rejected"][-1]
    assert "accuracy" in cond(st, "Progressing")["message"] and "worse than the stable" in \
        cond(st, "Progressing")["message"]
    assert st["lastAnalysis"]["verdict"] == "Failed"
    assert st["lastAnalysis"]["measurements"]["degradation"] > 0.02
    assert st["stable"]["revision"] == rev1 and "candidate" not in st
    assert cond(st, "Available")["status"] == "True" and cond(st, "Degraded")["status"] == "False"
    assert argocd_health(cluster.get(MD, ns, "iris"))[0] == "Healthy"
    assert selector(cluster, ns, "iris")["mlops.dev/revision"] == rev1
    wait_for(lambda: deployments(cluster, ns)[rejected].spec.replicas == 0, 30, "the candidate to scale down")
    assert any(e.reason == "RolledBack" and e.type == "Warning" for e in cluster.events(ns, "iris"))

    # deleting the stable version's TrainingRun changes nothing that serves
    before = cluster.get(MD, ns, "iris")
    cluster.kubectl("delete", "trainingrun", "iris-v1", "-n", ns, "--wait=true")
    cluster.kubectl("delete", "trainingrun", "iris-v2", "-n", ns, "--wait=true")
    resync_rounds(operator)
    after = cluster.get(MD, ns, "iris")
    assert after["status"]["stable"] == before["status"]["stable"]
    assert cond(after["status"], "Available")["status"] == "True"
    assert selector(cluster, ns, "iris")["mlops.dev/revision"] == rev1
