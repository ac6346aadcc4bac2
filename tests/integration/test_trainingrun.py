"""TrainingRuns for real: the operator's Job runs `mlops train` as a process on the local node,
reading from and writing to a local S3 (moto), and the result reaches the TrainingRun status."""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from mlops_operator.api import artifacts
from mlops_operator.dev.imagebuild import RUNTIME_IMAGE
from mlops_operator.dev.runner import OperatorThread
from mlops_operator.runtime import storage
from tests.cases import example
from tests.conftest import S3
from tests.health import argocd_health
from tests.pipelines import compile_pipeline

from .conftest import Cluster, OperatorProcess, wait_for

TR = "TrainingRun"


@pytest.fixture(scope="module")
def iris_data(s3: S3, tmp_path_factory: pytest.TempPathFactory) -> str:
    from sklearn.datasets import load_iris

    path = tmp_path_factory.mktemp("iris") / "iris.csv"
    load_iris(as_frame=True).frame.to_csv(path, index=False)
    client = s3.client()
    for bucket in ("data", "models"):
        with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
            client.create_bucket(Bucket=bucket)
    client.upload_file(str(path), "data", "iris.csv")
    return "s3://data/iris.csv"


def credentials(cluster: Cluster, namespace: str, s3: S3) -> None:
    cluster.core.create_namespaced_secret(namespace, {"metadata": {"name": "s3-credentials"}, "stringData": s3.env})


def training_run(name: str = "iris-v1", **spec: Any) -> dict[str, Any]:
    run = example(TR)
    run["metadata"]["name"] = name
    run["spec"].update({"dataset": {"uri": "s3://data/iris.csv", "targetColumn": "target"},
                        "gates": [{"metric": "accuracy", "operator": ">=", "threshold": "0.8"}],
                        "params": {"n_estimators": 20}, "activeDeadlineSeconds": 300, "backoffLimit": 0})
    run["spec"].update(spec)
    return run


def jobs(cluster: Cluster, ns: str, run: str) -> list[Any]:
    return cluster.batch.list_namespaced_job(ns, label_selector=f"mlops.dev/trainingrun={run}").items


def test_builtin_trainer_trains_passes_gates_and_records_the_version(
    cluster: Cluster, operator: OperatorThread, namespace: str, s3: S3, iris_data: str, tmp_path: Path
) -> None:
    credentials(cluster, namespace, s3)
    cluster.create(example("ModelDeployment"), namespace)
    cluster.wait_condition("ModelDeployment", namespace, "iris", "False", "NoModelVersion")
    cluster.create(training_run(), namespace)
    cluster.wait_condition(TR, namespace, "iris-v1", "True", "Completed", type_="Succeeded", timeout=180)
    run = cluster.get(TR, namespace, "iris-v1")
    status = run["status"]
    conditions = {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}
    assert conditions["GatesPassed"] == ("True", "Passed") and conditions["Ready"] == ("True", "Succeeded")
    assert status["metrics"]["accuracy"] >= 0.8 and set(status["metrics"]) == {"accuracy", "f1", "roc_auc"}
    model = status["model"]
    assert model["uri"] == f"s3://models/{namespace}/iris/iris-v1" and model["format"] == "sklearn"
    assert model["profileUri"] == model["uri"] + "/profile.json"
    (job,) = jobs(cluster, namespace, "iris-v1")
    assert status["jobName"] == job.metadata.name and status["attempts"] == 1
    assert argocd_health(run)[0] == "Healthy"
    assert status["startTime"] <= status["completionTime"]
    record = status["reproducibility"]
    assert record["datasetUri"] == "s3://data/iris.csv" and record["seed"] == 42
    assert record["params"] == {"n_estimators": 20} and re.search(r"sha256:[0-9a-f]{64}$", record["imageDigest"])
    dataset = s3.client().get_object(Bucket="data", Key="iris.csv")["Body"].read()
    assert record["datasetDigest"] == "sha256:" + hashlib.sha256(dataset).hexdigest() and record["datasetRows"] == 150
    # the digest in status is the directory's, per the artifact contract
    os.environ.update(s3.env)
    try:
        storage.download_dir(model["uri"], tmp_path / "model")
    finally:
        for key in s3.env:
            os.environ.pop(key, None)
    assert artifacts.verify(tmp_path / "model", model["digest"])
    # Events tell the story: started, trained, gates passed
    wait_for(lambda: {"Running", "Completed", "Passed"} <= {e.reason for e in cluster.events(namespace, "iris-v1")},
             what="Events for the start, the success and the gate verdict")
    # the ModelDeployment following this model starts rolling the version out (test_modeldeployment.py)
    c = cluster.wait_condition("ModelDeployment", namespace, "iris", "True", type_="Progressing", timeout=15)
    assert model["uri"] in c["message"]


def test_failed_gates_succeed_but_never_become_a_version(
    cluster: Cluster, operator: OperatorThread, namespace: str, s3: S3, iris_data: str
) -> None:
    credentials(cluster, namespace, s3)
    cluster.create(training_run(gates=[{"metric": "accuracy", "operator": ">", "threshold": "1"},
                                       {"metric": "log_loss", "operator": "<", "threshold": "0.5"}]), namespace)
    cluster.wait_condition(TR, namespace, "iris-v1", "True", "Completed", type_="Succeeded", timeout=180)
    gates = cluster.wait_condition(TR, namespace, "iris-v1", "False", "GatesFailed", type_="GatesPassed")
    assert "accuracy > 1: got" in gates["message"] and "did not report log_loss" in gates["message"]
    assert cluster.condition(TR, namespace, "iris-v1")["reason"] == "GatesFailed"
    assert len(cluster.get(TR, namespace, "iris-v1")["status"]["failedGates"]) == 2
    assert argocd_health(cluster.get(TR, namespace, "iris-v1")) == ("Degraded", "Gates failed: " + gates["message"])
    wait_for(lambda: any(e.reason == "GatesFailed" and e.type == "Warning"
                         for e in cluster.events(namespace, "iris-v1")), what="a Warning Event for the failed gates")


def test_data_checks_pass_on_the_first_version_and_stop_a_second_trained_on_a_broken_table(
    cluster: Cluster, operator: OperatorThread, namespace: str, s3: S3, iris_data: str, tmp_path: Path
) -> None:
    credentials(cluster, namespace, s3)
    checks = {"minRows": 100, "maxMissingShare": "0.05", "labelClasses": ["0", "1", "2"],
              "sameColumnsAsPrevious": True, "maxPsi": "0.25"}
    cluster.create(training_run("iris-v1", dataChecks=checks), namespace)
    cluster.wait_condition(TR, namespace, "iris-v1", "True", "Passed", type_="GatesPassed", timeout=180)
    first = cluster.get(TR, namespace, "iris-v1")["status"]
    assert first["dataChecks"]["passed"] is True and first["dataChecks"]["rows"] == 150
    assert "no earlier version" in first["dataChecks"]["skipped"][0]  # nothing to compare the first one with
    # the second version's table lost a column
    from sklearn.datasets import load_iris

    broken = tmp_path / "broken.csv"
    load_iris(as_frame=True).frame.drop(columns=["petal width (cm)"]).to_csv(broken, index=False)
    s3.client().upload_file(str(broken), "data", "broken.csv")
    cluster.create(training_run("iris-v2", dataChecks=checks,
                                dataset={"uri": "s3://data/broken.csv", "targetColumn": "target"}), namespace)
    stopped = cluster.wait_condition(TR, namespace, "iris-v2", "False", "DataCheckFailed", type_="Succeeded",
                                     timeout=180)
    assert "columns differ from the previous version's: missing petal width (cm)" in stopped["message"]
    second = cluster.get(TR, namespace, "iris-v2")["status"]
    assert second["reproducibility"]["referenceProfile"] == first["model"]["profileUri"]
    assert second["dataChecks"]["passed"] is False and "model" not in second
    assert cluster.condition(TR, namespace, "iris-v2")["reason"] == "DataCheckFailed"


def test_failing_trainer_is_retried_per_backoff_limit_and_says_why(
    cluster: Cluster, operator: OperatorThread, namespace: str, s3: S3, iris_data: str
) -> None:
    credentials(cluster, namespace, s3)
    cluster.create(training_run(dataset={"uri": "s3://data/missing.csv"}, backoffLimit=1), namespace)
    failed = cluster.wait_condition(TR, namespace, "iris-v1", "False", "BackoffLimitExceeded", type_="Succeeded",
                                    timeout=180)
    assert "s3://data/missing.csv: not found" in failed["message"]
    (job,) = jobs(cluster, namespace, "iris-v1")
    assert job.status.failed == 2
    status = cluster.get(TR, namespace, "iris-v1")["status"]
    assert status["attempts"] == 2 and "model" not in status
    assert argocd_health(cluster.get(TR, namespace, "iris-v1"))[0] == "Degraded"
    assert cluster.condition(TR, namespace, "iris-v1", "GatesPassed")["status"] == "False"


def test_deadline_is_enforced(cluster: Cluster, operator: OperatorThread, namespace: str) -> None:
    run = training_run(trainer={"image": RUNTIME_IMAGE, "command": ["python", "-c", "import time; time.sleep(600)"]},
                       activeDeadlineSeconds=3, storage=None)
    cluster.create(run, namespace)

    # Kubernetes 1.20's Job controller checks activeDeadlineSeconds only when it next syncs the Job (later releases
    # schedule that sync themselves): once the deadline has passed, an update gives it one, as any Pod event would
    def deadline_passed_and_job_touched() -> bool:
        found = jobs(cluster, namespace, "iris-v1")
        if not found or found[0].status.start_time is None:
            return False
        if datetime.datetime.now(datetime.UTC) < found[0].status.start_time + datetime.timedelta(seconds=4):
            return False
        cluster.batch.patch_namespaced_job(found[0].metadata.name, namespace,
                                           {"metadata": {"annotations": {"test/deadline-passed": "true"}}})
        return True
    wait_for(deadline_passed_and_job_touched, 60, "the Job's deadline to pass")
    cluster.wait_condition(TR, namespace, "iris-v1", "False", "DeadlineExceeded", type_="Succeeded", timeout=60)


def test_ttl_removes_the_job_and_keeps_the_record(
    cluster: Cluster, operator: OperatorThread, namespace: str, s3: S3, iris_data: str
) -> None:
    credentials(cluster, namespace, s3)
    cluster.create(training_run(ttlSecondsAfterFinished=1), namespace)
    cluster.wait_condition(TR, namespace, "iris-v1", "True", "Completed", type_="Succeeded", timeout=180)
    wait_for(lambda: not jobs(cluster, namespace, "iris-v1"), 30, "the Job to be removed after its TTL")
    status = cluster.get(TR, namespace, "iris-v1")["status"]
    assert status["model"]["digest"].startswith("sha256:")
    assert cluster.condition(TR, namespace, "iris-v1", "Succeeded")["status"] == "True"


def test_suspended_run_has_no_job_until_resumed_and_later_edits_are_ignored(
    cluster: Cluster, operator: OperatorThread, namespace: str, s3: S3, iris_data: str
) -> None:
    credentials(cluster, namespace, s3)
    cluster.create(training_run(suspend=True), namespace)
    cluster.wait_condition(TR, namespace, "iris-v1", "False", "Suspended")
    assert jobs(cluster, namespace, "iris-v1") == []
    assert argocd_health(cluster.get(TR, namespace, "iris-v1"))[0] == "Suspended"
    cluster.patch(TR, namespace, "iris-v1", {"spec": {"suspend": False}})
    wait_for(lambda: jobs(cluster, namespace, "iris-v1"), 30, "the Job after resuming")
    # a change after the start is reported, not silently retrained
    cluster.patch(TR, namespace, "iris-v1", {"spec": {"seed": 7}})
    changed = cluster.wait_condition(TR, namespace, "iris-v1", "False", "ChangedAfterStart", type_="SpecApplied")
    assert "generation 2" in changed["message"]
    cluster.wait_condition(TR, namespace, "iris-v1", "True", "Completed", type_="Succeeded", timeout=180)
    (job,) = jobs(cluster, namespace, "iris-v1")
    seed = next(e.value for e in job.spec.template.spec.containers[0].env if e.name == "MLOPS_SEED")
    assert seed == "42"
    assert cluster.get(TR, namespace, "iris-v1")["status"]["reproducibility"]["seed"] == 42


def test_pipeline_from_a_configmap_waits_for_it_then_runs(
    cluster: Cluster, operator: OperatorThread, namespace: str, s3: S3, iris_data: str, tmp_path: Path
) -> None:
    credentials(cluster, namespace, s3)
    run = training_run(pipeline={"configMapKeyRef": {"name": "pipelines", "key": "wine.yaml"},
                                 "arguments": {"n_estimators": 5}}, trainer=None)
    del run["spec"]["trainer"]
    cluster.create(run, namespace)
    missing = cluster.wait_condition(TR, namespace, "iris-v1", "False", "PipelineNotFound")
    assert "ConfigMap pipelines does not exist" in missing["message"]
    assert jobs(cluster, namespace, "iris-v1") == []
    cluster.core.create_namespaced_config_map(namespace, {"metadata": {"name": "pipelines"},
                                                          "data": {"wine.yaml": compile_pipeline(tmp_path / "w.yaml")}})
    done = cluster.wait_condition(TR, namespace, "iris-v1", "True", "Completed", type_="Succeeded", timeout=240)
    assert done
    status = cluster.get(TR, namespace, "iris-v1")["status"]
    assert 0.8 < status["metrics"]["accuracy"] <= 1 and status["model"]["uri"].endswith("/iris/iris-v1")


def test_pipeline_that_would_install_another_kfp_is_invalid(
    cluster: Cluster, operator: OperatorThread, namespace: str, tmp_path: Path
) -> None:
    text = compile_pipeline(tmp_path / "w.yaml").replace("kfp==2.17.0", "kfp==2.9.0")
    run = training_run(pipeline={"inline": text})
    del run["spec"]["trainer"]
    cluster.create(run, namespace)
    invalid = cluster.wait_condition(TR, namespace, "iris-v1", "False", "InvalidSpec")
    assert "kfp==2.9.0" in invalid["message"] and jobs(cluster, namespace, "iris-v1") == []


def test_deleting_a_run_removes_its_job_and_pods(
    cluster: Cluster, operator: OperatorThread, namespace: str
) -> None:
    # a trainer that stops when asked (as PID 1 a bare sleep would ignore SIGTERM and hold its Pod for the whole
    # grace period): what is measured is garbage collection, not the container's shutdown
    sleeper = "import signal, sys, time; signal.signal(signal.SIGTERM, lambda *_: sys.exit(0)); time.sleep(600)"
    run = training_run(trainer={"image": RUNTIME_IMAGE, "command": ["python", "-c", sleeper]}, storage=None)
    cluster.create(run, namespace)

    def pods() -> list[Any]:
        return cluster.core.list_namespaced_pod(namespace, label_selector="mlops.dev/trainingrun=iris-v1").items

    wait_for(pods, 60, "the training Pod")
    cluster.custom.delete_namespaced_custom_object("mlops.dev", "v1alpha1", namespace, "trainingruns", "iris-v1")
    # owned children go with garbage collection: no finalizer, nothing left behind
    wait_for(lambda: not jobs(cluster, namespace, "iris-v1") and not pods(), 90, "the Job and its Pods to be gone",
             show=lambda: [{"name": o.metadata.name, "deletionTimestamp": str(o.metadata.deletion_timestamp),
                            "finalizers": o.metadata.finalizers, "owners": [r.name for r in o.metadata.owner_references
                                                                            or ()],
                            "phase": getattr(o.status, "phase", None)}
                           for o in [*jobs(cluster, namespace, "iris-v1"), *pods()]])


def test_operator_killed_mid_run_creates_no_second_job(
    cluster: Cluster, operator_process: OperatorProcess, sp_namespace: str, s3: S3, iris_data: str
) -> None:
    ns = sp_namespace
    credentials(cluster, ns, s3)
    operator_process.start()
    cluster.create(training_run(), ns)
    wait_for(lambda: jobs(cluster, ns, "iris-v1"), 60, "the training Job")
    operator_process.kill()
    operator_process.start()
    cluster.wait_condition(TR, ns, "iris-v1", "True", "Completed", type_="Succeeded", timeout=180)
    assert len(jobs(cluster, ns, "iris-v1")) == 1
    with pytest.raises(ApiException):
        cluster.batch.read_namespaced_job("iris-v1", ns)  # the name is the run's plus a hash, found again


def test_children_are_admitted_in_a_namespace_with_a_compute_quota_and_no_limit_range(
    cluster: Cluster, operator: OperatorThread, namespace: str, s3: S3, iris_data: str
) -> None:
    """A compute ResourceQuota without a LimitRange admits only Pods whose every container names requests
    and limits: the operator's defaults do, so the run trains and the model's Pods are created."""
    cluster.core.create_namespaced_resource_quota(namespace, {
        "metadata": {"name": "compute"},
        "spec": {"hard": {"requests.cpu": "4", "requests.memory": "4Gi", "limits.cpu": "12",
                          "limits.memory": "8Gi"}}})
    credentials(cluster, namespace, s3)
    cluster.create(training_run(), namespace)
    cluster.wait_condition(TR, namespace, "iris-v1", "True", "Completed", type_="Succeeded", timeout=180)
    cluster.create(example("ModelDeployment"), namespace)
    pods = wait_for(lambda: cluster.core.list_namespaced_pod(
        namespace, label_selector="mlops.dev/modeldeployment=iris").items, 90, "the model's Pods, admitted")
    for c in pods[0].spec.init_containers + pods[0].spec.containers:
        assert c.resources.requests and c.resources.limits, c.name
    used = cluster.core.read_namespaced_resource_quota("compute", namespace).status.used
    assert used and used.get("limits.memory"), used


TORCH = {"engine": "KubeflowTrainer", "workers": 2, "kubeflowTrainer": {"runtimeRef": {"name": "torch-distributed"}}}


def distributed_run(name: str, **spec: Any) -> dict[str, Any]:
    return training_run(name, **{"trainer": {"estimator": "xgboost.XGBClassifier"}, "distributed": {"workers": 2},
                                 "params": {"n_estimators": 10, "max_depth": 3}, **spec})


def test_kubeflow_trainer_not_installed_is_said_and_nothing_is_made(
    cluster: Cluster, operator: OperatorThread, namespace: str
) -> None:
    # the TrainJob CRD is installed by a later test of this module (and never removed)
    run = training_run("iris-torch", trainer={"image": "team/torch:1", "command": ["torchrun", "train.py"]},
                       distributed=TORCH)
    cluster.create(run, namespace)
    cluster.wait_condition(TR, namespace, "iris-torch", "False", "EngineNotInstalled", timeout=60)
    message = next(c["message"] for c in cluster.get(TR, namespace, "iris-torch")["status"]["conditions"]
                   if c["type"] == "Ready")
    assert "serves no trainjobs.trainer.kubeflow.org" in message and not jobs(cluster, namespace, "iris-torch")


def test_two_workers_train_one_model_together_each_logs_its_rank_and_one_version_is_recorded(
    cluster: Cluster, operator: OperatorThread, namespace: str, s3: S3, iris_data: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    credentials(cluster, namespace, s3)
    cluster.create(distributed_run("iris-dist"), namespace)
    cluster.wait_condition(TR, namespace, "iris-dist", "True", "Completed", type_="Succeeded", timeout=300)
    status = cluster.get(TR, namespace, "iris-dist")["status"]
    assert status["workers"] == 2 and status["workersSucceeded"] == 2 and status["attempts"] == 1
    assert status["model"]["format"] == "xgboost" and status["metrics"]["accuracy"] >= 0.8
    assert {c["type"]: c["reason"] for c in status["conditions"]}["Ready"] == "Succeeded"
    # this apiserver (1.20) serves no Indexed Jobs: one Job per worker, found by discovery
    found = sorted(jobs(cluster, namespace, "iris-dist"), key=lambda j: j.metadata.labels["mlops.dev/rank"])
    assert [j.metadata.labels["mlops.dev/rank"] for j in found] == ["0", "1"]
    assert status["jobName"] == found[0].metadata.name
    (service,) = [s for s in cluster.core.list_namespaced_service(namespace).items
                  if (s.metadata.labels or {}).get("mlops.dev/trainingrun") == "iris-dist"]
    assert service.spec.cluster_ip == "None"
    for rank, j in enumerate(found):
        (p,) = cluster.core.list_namespaced_pod(namespace, label_selector=f"controller-uid={j.metadata.uid}").items
        assert p.spec.hostname == f"{service.metadata.name}-{rank}" and p.spec.subdomain == service.metadata.name
        log = cluster.core.read_namespaced_pod_log(p.metadata.name, namespace)
        assert f"worker {rank} of 2 joined {service.metadata.name}-0.{service.metadata.name}:29500" in log, log
    # rank 0 wrote the one model: its files match the recorded digest
    keys = {o["Key"] for o in s3.client().list_objects_v2(Bucket="models", Prefix=f"{namespace}/iris/iris-dist/")[
        "Contents"]}
    assert f"{namespace}/iris/iris-dist/model.json" in keys
    for k, v in s3.env.items():
        monkeypatch.setenv(k, v)
    storage.download_dir(status["model"]["uri"], tmp_path)
    assert artifacts.verify(tmp_path, status["model"]["digest"]) == status["model"]["digest"]


def test_one_failed_worker_fails_the_run_and_stops_the_other(
    cluster: Cluster, operator: OperatorThread, namespace: str, s3: S3
) -> None:
    credentials(cluster, namespace, s3)
    command = ["python", "-c", "import os, sys, time; sys.exit(3) if os.environ['RANK'] == '1' else time.sleep(600)"]
    run = distributed_run("iris-lost", trainer={"image": RUNTIME_IMAGE, "command": command})
    cluster.create(run, namespace)
    cluster.wait_condition(TR, namespace, "iris-lost", "False", "BackoffLimitExceeded", type_="Succeeded",
                           timeout=180)
    status = cluster.get(TR, namespace, "iris-lost")["status"]
    message = next(c["message"] for c in status["conditions"] if c["type"] == "Succeeded")
    assert "worker Job" in message and message.split(":")[0].endswith("-1"), message
    # rank 0 would wait for rank 1 until its deadline: it is stopped
    wait_for(lambda: [j.metadata.labels["mlops.dev/rank"] for j in jobs(cluster, namespace, "iris-lost")] == ["1"],
             60, "rank 0's Job to be stopped", show=lambda: [j.metadata.name for j in jobs(cluster, namespace,
                                                                                         "iris-lost")])


# Kubeflow Trainer's TrainJob kind as a cluster with Kubeflow Trainer serves it (schema left open: the controller
# cannot run here; the test writes the statuses it writes)
TRAINJOB_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "trainjobs.trainer.kubeflow.org"},
    "spec": {"group": "trainer.kubeflow.org", "scope": "Namespaced",
             "names": {"kind": "TrainJob", "plural": "trainjobs", "singular": "trainjob", "listKind": "TrainJobList"},
             "versions": [{"name": "v1alpha1", "served": True, "storage": True, "subresources": {"status": {}},
                           "schema": {"openAPIV3Schema": {"type": "object",
                                                          "x-kubernetes-preserve-unknown-fields": True}}}]},
}


def test_a_run_delegated_to_kubeflow_trainer_follows_its_trainjob_and_reads_rank_zeros_result(
    cluster: Cluster, operator: OperatorThread, namespace: str
) -> None:
    from mlops_operator.builders.common import container_security, pod_security

    ns = namespace
    cluster.kubectl("apply", "-f", "-", stdin=json.dumps(TRAINJOB_CRD))
    cluster.kubectl("wait", "--for=condition=Established", "crd/trainjobs.trainer.kubeflow.org")
    run = training_run("iris-torch", trainer={"image": "team/torch:1", "command": ["torchrun", "train.py"]},
                       distributed=TORCH, ttlSecondsAfterFinished=0)
    cluster.create(run, ns)

    def train_job() -> dict[str, Any] | None:
        found = cluster.custom.list_namespaced_custom_object("trainer.kubeflow.org", "v1alpha1", ns, "trainjobs")
        return next(iter(found["items"]), None)
    tj = wait_for(train_job, 150, "the TrainJob (discovery caches an absent kind for a minute)")
    name = tj["metadata"]["name"]
    assert tj["spec"]["runtimeRef"] == {"name": "torch-distributed", "apiGroup": "trainer.kubeflow.org",
                                        "kind": "ClusterTrainingRuntime"}
    assert tj["spec"]["trainer"]["numNodes"] == 2 and tj["spec"]["trainer"]["command"] == ["torchrun", "train.py"]
    assert tj["metadata"]["ownerReferences"][0]["name"] == "iris-torch"
    assert not jobs(cluster, ns, "iris-torch"), "the operator made its own Jobs too"
    cluster.wait_condition(TR, ns, "iris-torch", "Unknown", "Running", type_="Succeeded", timeout=30)
    # as Kubeflow Trainer would: the JobSet's node Job, index 0, says the result and ends; the TrainJob completes
    message = json.dumps({"metrics": {"accuracy": 0.96}, "model": {
        "uri": f"s3://models/{ns}/iris/iris-torch", "digest": "sha256:" + "cd" * 32, "format": "sklearn"}})
    cluster.core.create_namespaced_pod(ns, {
        "metadata": {"name": f"{name}-node-0-0", "labels": {"jobset.sigs.k8s.io/jobset-name": name,
                                                            "jobset.sigs.k8s.io/replicatedjob-name": "node"},
                     "annotations": {"batch.kubernetes.io/job-completion-index": "0"}},
        "spec": {"restartPolicy": "Never", "securityContext": pod_security(), "automountServiceAccountToken": False,
                 "containers": [{"name": "node", "image": RUNTIME_IMAGE, "securityContext": container_security(),
                                 "command": ["python", "-c", "import sys; open('/dev/termination-log', 'w')"
                                             ".write(sys.argv[1])", message]}]}})
    wait_for(lambda: cluster.core.read_namespaced_pod(f"{name}-node-0-0", ns).status.phase == "Succeeded", 120,
             "the rank 0 Pod to finish")
    tj = train_job()
    assert tj is not None
    tj["status"] = {"conditions": [{"type": "Complete", "status": "True", "reason": "JobsCompleted",
                                    "message": "TrainJob is completed", "lastTransitionTime": "2026-12-02T00:00:00Z"}],
                    "jobsStatus": [{"name": "node", "ready": 0, "succeeded": 1, "failed": 0, "active": 0,
                                    "suspended": 0}]}
    cluster.custom.replace_namespaced_custom_object_status("trainer.kubeflow.org", "v1alpha1", ns, "trainjobs",
                                                           name, tj)
    cluster.wait_condition(TR, ns, "iris-torch", "True", "Completed", type_="Succeeded", timeout=60)
    status = cluster.get(TR, ns, "iris-torch")["status"]
    assert status["model"]["digest"] == "sha256:" + "cd" * 32 and status["metrics"] == {"accuracy": 0.96}
    assert status["workers"] == status["workersSucceeded"] == 2
    assert status["completionTime"] == "2026-12-02T00:00:00Z"
    # its time to live was 0: the TrainJob is deleted, the record stands
    wait_for(lambda: train_job() is None, 60, "the TrainJob deleted after its time to live")


def test_a_grid_sweep_runs_two_trials_at_a_time_and_its_best_passing_trial_is_the_version(
    cluster: Cluster, operator: OperatorThread, namespace: str, s3: S3, iris_data: str
) -> None:
    ns = namespace
    credentials(cluster, ns, s3)
    cluster.create(example("ModelDeployment"), ns)
    cluster.wait_condition("ModelDeployment", ns, "iris", "False", "NoModelVersion")
    sweep = {"parameters": [{"name": "n_estimators", "values": [5, 20, 40]}, {"name": "max_depth", "values": [1, 4]}],
             "maxParallel": 2, "objective": {"metric": "accuracy", "goal": "maximize"}}
    cluster.create(training_run("iris-sweep", sweep=sweep, params={}), ns)
    cluster.wait_condition(TR, ns, "iris-sweep", "True", "Completed", type_="Succeeded", timeout=420)
    status = cluster.get(TR, ns, "iris-sweep")["status"]
    trials = {t["name"]: t for t in status["trials"]}
    assert len(trials) == 6 and {t["state"] for t in trials.values()} <= {"Succeeded", "GatesFailed"}
    runs = {r["metadata"]["name"]: r for r in cluster.custom.list_namespaced_custom_object(
        "mlops.dev", "v1alpha1", ns, "trainingruns")["items"]}
    assert set(runs) == {"iris-sweep", *trials}
    for name, t in trials.items():
        assert runs[name]["spec"]["params"] == t["params"] and "sweep" not in runs[name]["spec"]
        assert runs[name]["status"]["metrics"]["accuracy"] == t["value"]
    # never more than two trials' Jobs at once, by their own records (created, completed)
    spans = sorted((j.metadata.creation_timestamp, j.status.completion_time)
                   for name in trials for j in jobs(cluster, ns, name))
    assert len(spans) == 6
    assert max(sum(1 for c, e in spans if c <= start < e) for start, _ in spans) <= 2, spans
    # the best passing trial by the objective is the sweep's version, and the one the ModelDeployment takes
    passing = {n: t["value"] for n, t in trials.items() if t["state"] == "Succeeded"}
    best = max(passing, key=lambda n: (passing[n], -list(trials).index(n)))
    assert status["bestTrial"] == best and status["model"] == runs[best]["status"]["model"]
    c = cluster.wait_condition("ModelDeployment", ns, "iris", "True", type_="Progressing", timeout=30)
    assert status["model"]["uri"] in c["message"]
    from .test_modeldeployment import mlops

    out = mlops(cluster, "get", "tr", "-n", ns)
    assert out.returncode == 0 and "sweep iris-sweep (maximize accuracy):" in out.stdout, out.stdout + out.stderr
    assert re.search(rf"{best}\s+.*Succeeded\s+(0\.9\d*|1)\s+best", out.stdout), out.stdout


def test_a_sweep_whose_trials_all_fail_their_gates_offers_nothing(
    cluster: Cluster, operator: OperatorThread, namespace: str, s3: S3, iris_data: str
) -> None:
    credentials(cluster, namespace, s3)
    sweep = {"parameters": [{"name": "n_estimators", "values": [5, 10]}], "maxParallel": 2,
             "objective": {"metric": "accuracy"}}
    cluster.create(training_run("iris-sweep", sweep=sweep, params={},
                                gates=[{"metric": "accuracy", "operator": ">", "threshold": "1"}]), namespace)
    cluster.wait_condition(TR, namespace, "iris-sweep", "False", "NoPassingTrial", type_="GatesPassed", timeout=300)
    status = cluster.get(TR, namespace, "iris-sweep")["status"]
    assert [t["state"] for t in status["trials"]] == ["GatesFailed", "GatesFailed"]
    assert "model" not in status and "bestTrial" not in status
