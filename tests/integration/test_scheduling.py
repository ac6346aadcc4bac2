"""Where a TrainingRun's Pod runs, decided by the real kube-scheduler: a second Node (an object kept Ready by
the test, tainted for GPUs and advertising `nvidia.com/gpu`: no kubelet behind it, so its Pods are bound,
never started) takes the run that tolerates its taint and selects it, and not the one that only selects it."""

from __future__ import annotations

import contextlib
import datetime
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from mlops_operator.dev.node import NODE_NAME
from mlops_operator.dev.runner import OperatorThread

from .conftest import Cluster, wait_for
from .test_trainingrun import TR, training_run

GPU_NODE = "mlops-gpu-node"
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}


def _heartbeat(cluster: Cluster) -> None:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    capacity = {"cpu": "8", "memory": "32Gi", "pods": "110", "nvidia.com/gpu": "1"}
    cluster.core.patch_node_status(GPU_NODE, {"status": {
        "capacity": capacity, "allocatable": capacity,
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kept by the test",
                        "lastHeartbeatTime": now, "lastTransitionTime": now}]}})


@pytest.fixture
def gpu_node(cluster: Cluster) -> Iterator[str]:
    cluster.core.create_node({"metadata": {"name": GPU_NODE, "labels": {
        "accelerator": "a100", "kubernetes.io/hostname": GPU_NODE}}, "spec": {"taints": [GPU_TAINT]}})
    stop = threading.Event()

    def keep_ready() -> None:  # the node-lifecycle controller marks a silent node NotReady after 40 s
        while not stop.wait(5):
            with contextlib.suppress(ApiException):  # the next beat tries again
                _heartbeat(cluster)
    _heartbeat(cluster)
    beat = threading.Thread(target=keep_ready, daemon=True)
    beat.start()
    # ready for the scheduler: only the test's taint left (the controller lifts not-ready's once it is Ready)
    wait_for(lambda: [t.key for t in cluster.core.read_node(GPU_NODE).spec.taints or ()] == ["nvidia.com/gpu"],
             60, "the GPU node to carry only its own taint")
    try:
        yield GPU_NODE
    finally:
        stop.set()
        beat.join(10)
        for pod in cluster.core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={GPU_NODE}").items:
            cluster.core.delete_namespaced_pod(pod.metadata.name, pod.metadata.namespace, grace_period_seconds=0)
        cluster.core.delete_node(GPU_NODE)


def pod_of(cluster: Cluster, ns: str, run: str) -> Any:
    pods = cluster.core.list_namespaced_pod(ns, label_selector=f"mlops.dev/trainingrun={run}").items
    return pods[0] if pods else None


def test_a_run_that_tolerates_and_selects_the_gpu_node_lands_there_and_one_that_only_selects_it_waits(
    cluster: Cluster, operator: OperatorThread, namespace: str, gpu_node: str
) -> None:
    on_gpu = {"nodeSelector": {"accelerator": "a100"},
              "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]}
    gpu = training_run("on-gpu", scheduling=on_gpu)
    gpu["spec"]["trainer"]["resources"] = {"limits": {"cpu": "1", "memory": "256Mi", "nvidia.com/gpu": 1}}
    cluster.create(gpu, namespace)
    untolerated = training_run("no-toleration", scheduling={"nodeSelector": {"accelerator": "a100"}})
    cluster.create(untolerated, namespace)
    anywhere = training_run("anywhere", suspend=True)  # where a run with no scheduling goes: checked below
    cluster.create(anywhere, namespace)

    bound = wait_for(lambda: (p := pod_of(cluster, namespace, "on-gpu")) and p.spec.node_name and p, 90,
                     "the GPU run's Pod to be bound")
    assert bound.spec.node_name == gpu_node
    assert bound.spec.tolerations and any(t.key == "nvidia.com/gpu" for t in bound.spec.tolerations)
    assert bound.spec.containers[0].resources.limits["nvidia.com/gpu"] == "1"

    def unschedulable() -> Any:
        pod = pod_of(cluster, namespace, "no-toleration")
        cond = next((c for c in (pod.status.conditions or ()) if c.type == "PodScheduled"), None) if pod else None
        return cond if cond is not None and cond.status == "False" else None
    cond = wait_for(unschedulable, 90, "the untolerating run's Pod to be refused by the scheduler")
    assert cond.reason == "Unschedulable" and "taint" in cond.message, cond.message
    assert not pod_of(cluster, namespace, "no-toleration").spec.node_name
    # both runs are still training as far as the operator knows: Pending is not failure
    for name in ("on-gpu", "no-toleration"):
        assert (cluster.condition(TR, namespace, name, "Succeeded") or {}).get("status") == "Unknown"
    # and a run that says nothing is never placed on the tainted node
    cluster.patch(TR, namespace, "anywhere", {"spec": {"suspend": False}})
    plain = wait_for(lambda: (p := pod_of(cluster, namespace, "anywhere")) and p.spec.node_name and p, 90,
                     "the plain run's Pod to be bound")
    assert plain.spec.node_name == NODE_NAME
