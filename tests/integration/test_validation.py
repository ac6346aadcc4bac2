"""Semantic validation by the operator: Ready=False/InvalidSpec naming the field, nothing created,
the operator keeps running; references that appear later are picked up (level-based)."""

from __future__ import annotations

import pytest

from mlops_operator.dev.runner import OperatorThread
from tests.cases import STATUS_CASES, TARGET_CASES, example
from tests.health import argocd_health

from .conftest import Cluster, wait_for


@pytest.mark.parametrize("case", STATUS_CASES + TARGET_CASES, ids=lambda c: c.id)
def test_invalid_spec_reaches_status_and_creates_nothing(
    cluster: Cluster, operator: OperatorThread, namespace: str, case
) -> None:
    if case in TARGET_CASES:
        cluster.create(example("ModelDeployment"), namespace)
    manifest = case.manifest()
    created = cluster.create(manifest, namespace)
    name = manifest["metadata"]["name"]
    cond = cluster.wait_condition(case.kind, namespace, name, "False", "InvalidSpec")
    assert case.field in cond["message"], cond["message"]
    assert cond["observedGeneration"] == created["metadata"]["generation"]
    status = cluster.get(case.kind, namespace, name)["status"]
    assert status["observedGeneration"] == created["metadata"]["generation"]
    wait_for(lambda: any(e.reason == "InvalidSpec" and e.type == "Warning" for e in cluster.events(namespace, name)),
             what="a Warning event InvalidSpec")
    assert cluster.children(namespace) == []
    assert operator.error is None and operator.thread.is_alive()


def test_drift_policy_waits_for_its_target_and_recovers(
    cluster: Cluster, operator: OperatorThread, namespace: str
) -> None:
    cluster.create(example("DriftPolicy"), namespace)
    cond = cluster.wait_condition("DriftPolicy", namespace, "iris-drift", "False", "TargetNotFound")
    assert "spec.targetRef.name" in cond["message"] and "iris" in cond["message"]
    assert argocd_health(cluster.get("DriftPolicy", namespace, "iris-drift"))[0] == "Degraded"
    # the target appearing is an event of a referenced object: no resync or timer needed to notice
    cluster.create(example("ModelDeployment"), namespace)
    cluster.wait_condition("DriftPolicy", namespace, "iris-drift", "Unknown", "Pending", timeout=10)
    cluster.custom.delete_namespaced_custom_object("mlops.dev", "v1alpha1", namespace, "modeldeployments", "iris")
    cluster.wait_condition("DriftPolicy", namespace, "iris-drift", "False", "TargetNotFound", timeout=10)


def test_model_deployment_waits_for_a_model_version(
    cluster: Cluster, operator: OperatorThread, namespace: str
) -> None:
    cluster.create(example("ModelDeployment"), namespace)
    cond = cluster.wait_condition("ModelDeployment", namespace, "iris", "False", "NoModelVersion")
    assert "model iris" in cond["message"]
    assert argocd_health(cluster.get("ModelDeployment", namespace, "iris"))[0] == "Progressing"
    # recovery when a run passes its gates: test_trainingrun.py, with a real training run


def test_conditions_track_generation_and_only_real_transitions(
    cluster: Cluster, operator: OperatorThread, namespace: str
) -> None:
    run = example("TrainingRun")
    del run["spec"]["trainer"]["estimator"]
    cluster.create(run, namespace)
    first = cluster.wait_condition("TrainingRun", namespace, "iris-v1", "False", "InvalidSpec")
    assert first["observedGeneration"] == 1 and "spec.trainer.estimator" in first["message"]
    # still invalid, for another reason: message and generation move, the transition time does not
    cluster.patch("TrainingRun", namespace, "iris-v1", {"spec": {"trainer": {"env": [{"name": "MLOPS_RUN"}]}}})
    second = wait_for(lambda: (c := cluster.condition("TrainingRun", namespace, "iris-v1")) and
                      c["observedGeneration"] == 2 and c, what="generation 2 observed")
    assert "MLOPS_RUN" in second["message"] and second["status"] == "False"
    assert second["lastTransitionTime"] == first["lastTransitionTime"]
    # fixed (and suspended, so nothing runs): a real transition
    cluster.patch("TrainingRun", namespace, "iris-v1", {"spec": {"suspend": True, "trainer": {
        "env": None, "estimator": "sklearn.linear_model.LogisticRegression"}}})
    third = cluster.wait_condition("TrainingRun", namespace, "iris-v1", "False", "Suspended")
    assert third["observedGeneration"] == 3 and third["lastTransitionTime"] >= first["lastTransitionTime"]
    assert cluster.get("TrainingRun", namespace, "iris-v1")["status"]["observedGeneration"] == 3


def test_resync_writes_nothing_when_nothing_changed(
    cluster: Cluster, operator: OperatorThread, namespace: str
) -> None:
    run = example("TrainingRun")
    run["spec"]["suspend"] = True  # a steady state: no Job whose progress would be written
    for obj in (run, example("ModelDeployment"), example("DriftPolicy")):
        cluster.create(obj, namespace)
    cluster.wait_condition("TrainingRun", namespace, "iris-v1", "False", "Suspended")
    cluster.wait_condition("ModelDeployment", namespace, "iris", "False", "NoModelVersion")
    cluster.wait_condition("DriftPolicy", namespace, "iris-drift", "Unknown", "Pending")
    ctx = operator.ctx
    wait_for(lambda: ctx.queue.idle(), what="the work queue to drain")
    versions = {k: cluster.get(k, namespace, n)["metadata"]["resourceVersion"]
                for k, n in (("TrainingRun", "iris-v1"), ("ModelDeployment", "iris"), ("DriftPolicy", "iris-drift"))}
    writes, reconciles, requests = ctx.status_writes, ctx.queue.reconciles, dict(ctx.api.requests)
    # two resync rounds (every object reconciled again at least twice)
    wait_for(lambda: ctx.queue.reconciles >= reconciles + 2 * len(ctx.store.keys("TrainingRun")) + 4,
             timeout=30, what="two resync rounds")
    after = {k: cluster.get(k, namespace, n)["metadata"]["resourceVersion"] for k, n in
             (("TrainingRun", "iris-v1"), ("ModelDeployment", "iris"), ("DriftPolicy", "iris-drift"))}
    assert after == versions
    assert ctx.status_writes == writes
    # steady state: no list call and no write of any kind (requests counted by the operator's API layer)
    made = {key: n - requests.get(key, 0) for key, n in ctx.api.requests.items() if n != requests.get(key, 0)}
    assert not {key: n for key, n in made.items() if key[0] in ("LIST", "PATCH", "POST", "PUT", "DELETE")}, made
