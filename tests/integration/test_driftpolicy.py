"""DriftPolicies for real: the served model counts live inputs into its reference profile's bins,
the operator scrapes the stable revision's pods, judges the window and retrains (once)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mlops_operator.builders.driftpolicy import window_state
from mlops_operator.dev.runner import OperatorThread
from tests.conftest import S3

from .conftest import Cluster, OperatorProcess, operator_metrics, wait_for
from .test_modeldeployment import MD, TR, cond, infer, promoted, serving_first_version
from .test_trainingrun import iris_data

__all__ = ["iris_data"]  # a fixture used here
DP = "DriftPolicy"


def policy(name: str, action: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "mlops.dev/v1alpha1", "kind": DP, "metadata": {"name": name},
            "spec": {"targetRef": {"name": "iris"}, "intervalSeconds": 5,
                     "window": {"minSamples": 50, "maxSamples": 100}, "driftShare": "0.5", "action": action}}


RETRAIN = {"type": "Retrain", "retrain": {"cooldownSeconds": 3600, "maxPerDay": 3, "template": {
    "model": "iris", "trainer": {"estimator": "sklearn.ensemble.RandomForestClassifier"},
    "dataset": {"uri": "s3://data/iris.csv", "targetColumn": "target"}, "params": {"n_estimators": 20},
    "storage": {"secretRef": {"name": "s3-credentials"}}, "activeDeadlineSeconds": 300,
    "gates": [{"metric": "accuracy", "operator": ">=", "threshold": "0.8"}]}}}


@pytest.fixture(scope="module")
def iris_rows() -> list[list[float]]:
    from sklearn.datasets import load_iris

    return [list(map(float, r)) for r in load_iris().data]


def send(url: str, rows: list[list[float]]) -> None:
    for i in range(0, len(rows), 10):
        assert infer(url, rows[i:i + 10]) == 200


def evaluation(cluster: Cluster, ns: str, name: str) -> dict[str, Any]:
    return (cluster.get(DP, ns, name).get("status") or {}).get("lastEvaluation") or {}


def test_drift_is_detected_from_live_traffic_and_retrains_exactly_once(
    cluster: Cluster, operator: OperatorThread, namespace: str, s3: S3, iris_data: str, iris_rows: list[list[float]]
) -> None:
    ns = namespace
    rev = serving_first_version(cluster, ns, s3)
    retrain = policy("iris-drift", RETRAIN)
    retrain["spec"]["perFeatureMetrics"] = True
    cluster.create(retrain, ns)
    cluster.create(policy("iris-alert", {"type": "Alert"}), ns)
    for name in ("iris-drift", "iris-alert"):
        c = cluster.wait_condition(DP, ns, name, "Unknown", "InsufficientData", type_="Drifted", timeout=60)
        assert "0 samples" in c["message"]
    pod = next(p for p in cluster.core.list_namespaced_pod(ns, label_selector=f"mlops.dev/revision={rev}").items
               if p.status.pod_ip)
    url = f"http://{pod.status.pod_ip}:8080"

    # requests drawn from the training distribution: not drifted
    send(url, iris_rows[::3] + iris_rows[1::3])  # 100 of the 150 training rows
    for name in ("iris-drift", "iris-alert"):  # a scrape may land mid-way: wait for the full window's verdict
        ev = wait_for(lambda n=name: (e := evaluation(cluster, ns, n)).get("samples") == 100 and e, 60,
                      f"{name}'s verdict on 100 samples", show=lambda n=name: cluster.get(DP, ns, n)["status"])
        assert ev["verdict"] == "NotDrifted"
        assert cluster.condition(DP, ns, name, "Drifted")["reason"] == "NotDrifted"
    assert {f["name"] for f in ev["features"]} == {"sepal length (cm)", "sepal width (cm)", "petal length (cm)",
                                                   "petal width (cm)"}
    assert all(f["test"] == "psi" and f["value"] < 0.2 for f in ev["features"])

    # a shifted distribution (values beyond the training range): drifted, features named
    send(url, [[v * 3 for v in r] for r in iris_rows[2::3] * 2])
    c = cluster.wait_condition(DP, ns, "iris-drift", "True", "Drifted", type_="Drifted", timeout=60)
    assert "petal length (cm)" in c["message"]
    ev = evaluation(cluster, ns, "iris-drift")
    assert 50 <= ev["samples"] <= 100 and ev["driftedShare"] == 1.0  # the window tumbled after 100 samples
    # exactly one retrain, owned by the policy, with the evaluation that caused it
    runs = wait_for(lambda: [r for r in cluster.custom.list_namespaced_custom_object(
        "mlops.dev", "v1alpha1", ns, "trainingruns")["items"] if r["metadata"]["name"].startswith("iris-drift-")],
        30, "the retrain TrainingRun")
    assert [r["metadata"]["name"] for r in runs] == ["iris-drift-1"]
    run = runs[0]
    assert run["metadata"]["ownerReferences"][0]["name"] == "iris-drift" and run["spec"]["model"] == "iris"
    cause = json.loads(run["metadata"]["annotations"]["mlops.dev/drift-evaluation"])
    assert cause["samples"] >= 50 and "petal length (cm)" in cause["drifted"]
    cluster.wait_condition(DP, ns, "iris-alert", "True", "Drifted", type_="Drifted", timeout=60)
    # the verdicts on the operator's /metrics; per-feature series only for the policy that asks
    metrics = operator_metrics()
    for name in ("iris-drift", "iris-alert"):
        who = (("name", name), ("namespace", ns))
        assert metrics[("mlops_driftpolicy_drifted", who)] == 1.0
        assert metrics[("mlops_driftpolicy_drifted_share", who)] == 1.0
    features = {dict(labels)["feature"]: v for (metric, labels), v in metrics.items()
                if metric == "mlops_driftpolicy_feature_drifted" and dict(labels)["namespace"] == ns}
    assert features == {"sepal length (cm)": 1.0, "sepal width (cm)": 1.0, "petal length (cm)": 1.0,
                        "petal width (cm)": 1.0}
    assert metrics[("mlops_reconciles_total", (("kind", "DriftPolicy"),))] > 0

    # still drifted while the retrain is in flight (then in cooldown): no second run
    send(url, [[v * 3 for v in r] for r in iris_rows[:100]])
    c = wait_for(lambda: (x := cluster.condition(DP, ns, "iris-drift", "Drifted")) and "retrain blocked" in
                 x["message"] and x, 60, "a blocked second retrain")
    assert "in flight" in c["message"] or "cooldown" in c["message"]
    names = [r["metadata"]["name"] for r in cluster.custom.list_namespaced_custom_object(
        "mlops.dev", "v1alpha1", ns, "trainingruns")["items"]]
    assert sorted(names) == ["iris-drift-1", "iris-v1"]  # and the Alert policy created none
    st = cluster.get(DP, ns, "iris-drift")["status"]
    assert [r["name"] for r in st["retrains"]] == ["iris-drift-1"]
    assert cond(st, "Ready")["status"] == "True"
    # the retrained version goes through the same quality gate and rollout
    cluster.wait_condition(TR, ns, "iris-drift-1", "True", type_="GatesPassed", timeout=180)
    promoted(cluster, ns, "iris-drift-1")
    assert cluster.get(MD, ns, "iris")["status"]["stable"]["trainingRun"] == "iris-drift-1"


def test_an_operator_restarted_between_evaluations_neither_loses_nor_double_counts(
    cluster: Cluster, operator_process: OperatorProcess, sp_namespace: str, s3: S3, iris_data: str,
    iris_rows: list[list[float]]
) -> None:
    ns = sp_namespace
    operator_process.start()
    rev = serving_first_version(cluster, ns, s3)
    alert = policy("iris-alert", {"type": "Alert"})
    alert["spec"]["window"] = {"minSamples": 1000}
    cluster.create(alert, ns)
    pod = next(p for p in cluster.core.list_namespaced_pod(ns, label_selector=f"mlops.dev/revision={rev}").items
               if p.status.pod_ip)
    url = f"http://{pod.status.pod_ip}:8080"

    def samples(n: int) -> Any:
        return wait_for(lambda: evaluation(cluster, ns, "iris-alert").get("samples") == n, 60, f"{n} samples counted",
                        show=lambda: cluster.get(DP, ns, "iris-alert").get("status"))

    send(url, iris_rows[:30])
    samples(30)
    operator_process.kill()
    send(url, iris_rows[30:70])  # counted by the server while no operator runs
    operator_process.start()
    samples(70)  # the 30 from before the restart are not counted again, the 40 during it not lost
    state = cluster.core.read_namespaced_config_map("iris-alert-window", ns)
    kept = window_state({"binaryData": state.binary_data, "data": state.data})
    assert kept is not None and json.loads(kept)["counts"]["rows"] == 70
    send(url, iris_rows[70:80])
    samples(80)
    c = cluster.condition(DP, ns, "iris-alert", "Drifted")
    assert c is not None and c["reason"] == "InsufficientData" and c["message"].startswith("80 samples")


def test_retrains_beyond_the_history_are_pruned_and_a_retrain_name_taken_is_never_adopted(
    cluster: Cluster, operator: OperatorThread, namespace: str, s3: S3, iris_data: str, iris_rows: list[list[float]]
) -> None:
    import copy

    ns = namespace
    rev = serving_first_version(cluster, ns, s3)
    action = copy.deepcopy(RETRAIN)
    action["retrain"].update(historyLimit=1, cooldownSeconds=0, maxPerDay=10)
    dp = cluster.create(policy("iris-drift", action), ns)
    # two earlier retrains of this policy that failed (a dataset that is not there)
    owner = {"apiVersion": "mlops.dev/v1alpha1", "kind": DP, "name": "iris-drift", "uid": dp["metadata"]["uid"],
             "controller": True, "blockOwnerDeletion": True}
    for n in (1, 2):
        cluster.create({"apiVersion": "mlops.dev/v1alpha1", "kind": TR, "metadata": {
            "name": f"iris-drift-{n}", "ownerReferences": [owner]}, "spec": {
            **action["retrain"]["template"], "backoffLimit": 0,
            "dataset": {"uri": "s3://data/missing.csv", "targetColumn": "target"}}}, ns)
    # beyond historyLimit 1, the oldest that is neither in flight nor serving goes
    wait_for(lambda: [r["metadata"]["name"] for r in cluster.custom.list_namespaced_custom_object(
        "mlops.dev", "v1alpha1", ns, "trainingruns")["items"] if r["metadata"]["name"].startswith("iris-drift-")]
        == ["iris-drift-2"], 180, "the older failed retrain pruned",
        show=lambda: cluster.get(DP, ns, "iris-drift").get("status"))
    wait_for(lambda: [r["name"] for r in cluster.get(DP, ns, "iris-drift")["status"].get("retrains") or ()]
             == ["iris-drift-2"], 30, "the retrains record without it")
    # the next retrain's name is someone else's TrainingRun: left alone, the policy says so
    theirs = cluster.create({"apiVersion": "mlops.dev/v1alpha1", "kind": TR, "metadata": {"name": "iris-drift-3"},
                             "spec": {**action["retrain"]["template"], "model": "other", "suspend": True}}, ns)
    pod = next(p for p in cluster.core.list_namespaced_pod(ns, label_selector=f"mlops.dev/revision={rev}").items
               if p.status.pod_ip)
    send(f"http://{pod.status.pod_ip}:8080", [[v * 3 for v in r] for r in iris_rows[2::3] * 2])
    c = cluster.wait_condition(DP, ns, "iris-drift", "False", "NameConflict", timeout=90)
    assert "TrainingRun iris-drift-3 already exists" in c["message"], c
    after = cluster.get(TR, ns, "iris-drift-3")
    assert after["metadata"]["uid"] == theirs["metadata"]["uid"] and after["spec"] == theirs["spec"]
    assert not after["metadata"].get("ownerReferences")
