"""The operator as a real process: killed with SIGKILL and restarted; namespaces delete cleanly
while it is down (no finalizers)."""

from __future__ import annotations

import time

from tests.cases import example

from .conftest import Cluster, OperatorProcess, wait_for


def test_operator_killed_and_restarted_catches_up(
    cluster: Cluster, operator_process: OperatorProcess, sp_namespace: str
) -> None:
    ns = sp_namespace
    operator_process.start()
    run = example("TrainingRun")
    del run["spec"]["dataset"]
    run["spec"]["suspend"] = True
    cluster.create(run, ns)
    cluster.wait_condition("TrainingRun", ns, "iris-v1", "False", "InvalidSpec", timeout=60)
    operator_process.kill()
    # while it is down: a fix, and a new policy whose target does not exist yet
    cluster.patch("TrainingRun", ns, "iris-v1", {"spec": {"dataset": {"uri": "file:///data/iris.csv"}}})
    cluster.create(example("DriftPolicy"), ns)
    operator_process.start()
    cluster.wait_condition("TrainingRun", ns, "iris-v1", "False", "Suspended", timeout=60)
    assert cluster.condition("TrainingRun", ns, "iris-v1")["observedGeneration"] == 2
    cluster.wait_condition("DriftPolicy", ns, "iris-drift", "False", "TargetNotFound", timeout=30)
    cluster.create(example("ModelDeployment"), ns)
    cluster.wait_condition("DriftPolicy", ns, "iris-drift", "Unknown", "Pending", timeout=30)
    assert operator_process.proc is not None and operator_process.proc.poll() is None, operator_process.output()
    assert "Traceback" not in operator_process.output(), operator_process.output()


def test_namespace_full_of_resources_deletes_while_operator_is_stopped(
    cluster: Cluster, operator_process: OperatorProcess, sp_namespace: str
) -> None:
    ns = sp_namespace
    operator_process.start()
    for kind in ("TrainingRun", "ModelDeployment", "DriftPolicy"):
        for i in range(3):
            obj = example(kind)
            obj["metadata"]["name"] += f"-{i}"
            cluster.create(obj, ns)
    for kind, name in (("TrainingRun", "iris-v1-2"), ("ModelDeployment", "iris-2"), ("DriftPolicy", "iris-drift-2")):
        wait_for(lambda k=kind, n=name: cluster.condition(k, ns, n), 60, f"{kind} {name} reconciled")
    for kind in ("trainingruns", "modeldeployments", "driftpolicies"):
        for obj in cluster.custom.list_namespaced_custom_object("mlops.dev", "v1alpha1", ns, kind)["items"]:
            assert not obj["metadata"].get("finalizers"), obj["metadata"]
            assert not any(k.startswith("kopf.zalando.org") for k in obj["metadata"].get("annotations") or {})
    operator_process.kill()
    cluster.core.delete_namespace(ns)
    started = time.monotonic()

    def gone() -> bool:
        return ns not in [n.metadata.name for n in cluster.core.list_namespace().items]

    wait_for(gone, 120, f"namespace {ns} to be deleted",
             show=lambda: cluster.core.read_namespace(ns).to_dict())
    assert time.monotonic() - started < 120
