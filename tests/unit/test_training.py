"""TrainingRun logic without a cluster: gates, pipeline checks, the Job builder, the decisions."""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest

from mlops_operator.api.trainingrun import Gate, TrainingRunSpec
from mlops_operator.builders.trainingrun import job_name, job_names, training_job
from mlops_operator.conditions import merge
from mlops_operator.training import pipeline
from mlops_operator.training.gates import evaluate
from mlops_operator.training.run import decide, start_record, with_job
from tests.cases import example

NOW = datetime.datetime(2026, 11, 22, 12, 0, tzinfo=datetime.UTC)
DIGEST = "sha256:" + "ab" * 32


def run_body(**spec_changes: Any) -> dict[str, Any]:
    body = example("TrainingRun")
    body["metadata"].update(namespace="ns", uid="uid-1", generation=1, labels={
        "app.kubernetes.io/name": "iris", "app.kubernetes.io/instance": "argocd-app", "team": "ml"})
    body["spec"].update(spec_changes)
    return body


def spec_of(body: dict[str, Any]) -> TrainingRunSpec:
    return TrainingRunSpec.model_validate(body["spec"])


# -- gates

def test_gates_pass_fail_and_missing_metric() -> None:
    gates = [Gate(metric="accuracy", operator=">=", threshold="0.9"), Gate(metric="rmse", operator="<", threshold="1")]
    assert evaluate(gates[:1], {"accuracy": 0.9}) == []
    failed = evaluate(gates, {"accuracy": 0.85, "f1": 0.8})
    assert failed[0] == "accuracy >= 0.9: got 0.85"
    assert "did not report rmse (it reported accuracy, f1)" in failed[1]


@pytest.mark.parametrize("op,value,passes", [(">", 0.9, False), ("==", 0.9, True), ("!=", 0.9, False),
                                              ("<=", 0.9, True), ("<", 0.89, True)])
def test_gate_operators_compare_decimals_exactly(op: str, value: float, passes: bool) -> None:
    assert (evaluate([Gate(metric="m", operator=op, threshold="0.9")], {"m": value}) == []) is passes


# -- pipelines

COMPILED = """
pipelineInfo: {name: p}
deploymentSpec:
  executors:
    exec-train:
      container:
        command: [sh, -c, "python3 -m pip install --quiet 'kfp==VERSION' && python3 -m kfp.dsl.executor_main"]
"""


def test_pipeline_installing_another_kfp_is_refused() -> None:
    assert pipeline.check(COMPILED.replace("VERSION", pipeline.RUNTIME_KFP_VERSION), "p") == []
    errors = pipeline.check(COMPILED.replace("VERSION", "2.9.0"), "spec.pipeline.inline")
    assert errors and "kfp==2.9.0" in errors[0] and "exec-train" in errors[0]
    assert "not YAML" in pipeline.check("a: [", "x")[0]
    assert "not a compiled pipeline" in pipeline.check("a: 1", "x")[0]


# -- the Job

def test_job_is_deterministic_restricted_and_carries_the_contract() -> None:
    body = run_body(trainer={"estimator": "sklearn.linear_model.LogisticRegression",
                             "env": [{"name": "EXTRA", "value": "1"}],
                             "volumes": [{"name": "data", "mountPath": "/data", "persistentVolumeClaim": {"name": "d"}},
                                         {"name": "cfg", "mountPath": "/cfg", "readOnly": True,
                                          "secret": {"name": "s"}}]})
    spec = spec_of(body)
    job = training_job(body, spec, runtime_image="img:1", artifact_root="s3://models")
    assert job["metadata"]["name"] == job_name(body) == training_job(body, spec, runtime_image="x",
                                                                      artifact_root="y")["metadata"]["name"]
    assert job["metadata"]["name"].startswith("iris-v1-") and len(job["metadata"]["name"]) == len("iris-v1") + 9
    assert job["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    labels = job["metadata"]["labels"]
    assert labels["app.kubernetes.io/name"] == "iris" and "app.kubernetes.io/instance" not in labels
    assert "team" not in labels and labels["app.kubernetes.io/managed-by"] == "mlops-operator"
    pod = job["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["automountServiceAccountToken"] is False
    (c,) = pod["containers"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert c["image"] == "img:1" and c["command"] == ["mlops", "train"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["MLOPS_OUTPUT_URI"] == "s3://models/ns/iris/iris-v1"
    assert json.loads(env["MLOPS_PARAMS"]) == {"n_estimators": 50, "max_depth": 4}
    assert env["MLOPS_ESTIMATOR"] == "sklearn.linear_model.LogisticRegression" and env["EXTRA"] == "1"
    assert env["MLOPS_DATASET_URI"] == "s3://datasets/iris/train.csv" and env["MLOPS_SEED"] == "42"
    assert c["envFrom"] == [{"secretRef": {"name": "s3-credentials"}}]
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "d"}} in pod["volumes"]
    assert {"name": "cfg", "secret": {"secretName": "s"}} in pod["volumes"]
    assert {"name": "cfg", "mountPath": "/cfg", "readOnly": True} in c["volumeMounts"]
    assert job["spec"]["backoffLimit"] == 2 and job["spec"]["activeDeadlineSeconds"] == 1800


def test_pipeline_job_mounts_the_configmap_key() -> None:
    body = run_body(pipeline={"configMapKeyRef": {"name": "pipes", "key": "iris.yaml"}, "arguments": {"n": 3}})
    del body["spec"]["trainer"]
    job = training_job(body, spec_of(body), runtime_image="img:1", artifact_root="s3://m")
    pod = job["spec"]["template"]["spec"]
    items = [{"key": "iris.yaml", "path": "pipeline.yaml"}]
    assert {"name": "pipeline", "configMap": {"name": "pipes", "items": items}} in pod["volumes"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert pod["containers"][0]["command"] == ["mlops", "train-pipeline"]
    assert env["MLOPS_PIPELINE_FILE"] == "/etc/mlops/pipeline/pipeline.yaml" and env["MLOPS_PIPELINE_ARGUMENTS"] == \
        '{"n": 3}'


# -- decisions

def job(complete: bool = False, failed: str | None = None, active: int = 0, succeeded: int = 0,
        failures: int = 0) -> dict[str, Any]:
    conditions = []
    if complete:
        conditions.append({"type": "Complete", "status": "True"})
    if failed:
        conditions.append({"type": "Failed", "status": "True", "reason": failed, "message": "Job failed"})
    return {"metadata": {"name": "iris-v1-abcdef12", "uid": "job-uid"},
            "status": {"conditions": conditions, "active": active, "succeeded": succeeded, "failed": failures,
                       **({"completionTime": "2026-11-22T11:59:00Z"} if complete else {})}}


def pod(phase: str, message: str, created: str = "2026-11-22T11:00:00Z", code: int = 0) -> dict[str, Any]:
    return {"metadata": {"creationTimestamp": created}, "status": {"phase": phase, "containerStatuses": [{
        "image": "runtime:1", "imageID": "docker-pullable://runtime@sha256:1234",
        "state": {"terminated": {"exitCode": code, "message": message}}}]}}


def result(accuracy: float) -> str:
    return json.dumps({"metrics": {"accuracy": accuracy},
                       "model": {"uri": "s3://m/iris-v1", "digest": DIGEST, "format": "sklearn"}})


def conds(decision: Any) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in decision.conditions}


def with_status(body: dict[str, Any], decision: Any) -> dict[str, Any]:
    status = dict(body.get("status") or {})
    status.update(decision.status)
    status["conditions"] = merge(status.get("conditions"), decision.conditions, body["metadata"]["generation"])
    return {**body, "status": status}


def test_no_job_creates_one_and_records_the_start() -> None:
    body = run_body()
    d = decide(body, spec_of(body), None, None, NOW)
    assert d.apply_job and conds(d)["Succeeded"] == ("Unknown", "Pending")
    assert d.status == {"startTime": "2026-11-22T12:00:00Z", "startedGeneration": 1, "reproducibility": {
        "params": {"n_estimators": 50, "max_depth": 4}, "seed": 42, "datasetUri": "s3://datasets/iris/train.csv",
        "datasetVersion": "2026-11-01"}}


def test_the_job_just_made_is_in_the_one_status_write_and_its_watch_event_changes_nothing() -> None:
    body = run_body()
    spec = spec_of(body)
    first = decide(body, spec, None, None, NOW)
    made = {"metadata": {"name": "iris-v1-abcdef12", "uid": "job-uid"}, "spec": {"suspend": False}}  # no status yet
    d = with_job(body, spec, first, made, NOW)
    assert not d.apply_job and not d.needs_pods
    assert conds(d) == {"Succeeded": ("Unknown", "Running"), "Ready": ("Unknown", "Training"),
                        "SpecApplied": ("True", "Started")}
    assert d.status == {**first.status, "jobName": "iris-v1-abcdef12", "attempts": 0}
    written = with_status(body, d)
    # the Job's ADDED event, a second later: the same decision, so write_status writes nothing
    again = decide(written, spec, made, None, NOW + datetime.timedelta(seconds=1))
    assert conds(again) == conds(d) and all(written["status"].get(k) == v for k, v in again.status.items())
    # a Job created suspended for a queue (Kueue) is said so at once
    queued = {**made, "metadata": {**made["metadata"], "labels": {"kueue.x-k8s.io/queue-name": "q"}},
              "spec": {"suspend": True}}
    assert conds(with_job(body, spec, first, queued, NOW))["Succeeded"] == ("Unknown", "Queued")
    # a spec changed while no Job ran: the restart is what SpecApplied keeps saying
    renewed = with_status(body, first)
    renewed["metadata"]["generation"] = 2
    restarted = decide(renewed, spec, None, None, NOW)
    assert conds(with_job(renewed, spec, restarted, made, NOW))["SpecApplied"] == ("True", "Restarted")


def test_a_start_record_whose_status_write_was_refused_is_recovered_from_the_job() -> None:
    """The spec is edited between the Job's create and the status write that records the start: that write is
    refused (409), and the next reconcile finds the Job. The Job carries the record it was made from."""
    body = run_body(seed=42)
    first = decide(body, spec_of(body), None, None, NOW)
    made = training_job(body, spec_of(body), runtime_image="img:1", artifact_root="s3://m",
                        record=start_record(first.status))
    made["status"] = {"active": 1}
    edited = {**body, "spec": {**body["spec"], "seed": 9}, "metadata": {**body["metadata"], "generation": 2}}
    later = NOW + datetime.timedelta(seconds=3)
    d = decide(edited, spec_of(edited), made, None, later)
    assert conds(d)["SpecApplied"] == ("False", "ChangedAfterStart") and conds(d)["Succeeded"][1] == "Running"
    assert d.status["startedGeneration"] == 1 and d.status["startTime"] == "2026-11-22T12:00:00Z"
    assert d.status["reproducibility"] == first.status["reproducibility"]  # seed 42: what the Job trains
    # once written, the status holds the record and the Job is not asked again
    written = with_status(edited, d)
    again = decide(written, spec_of(written), {**made, "metadata": {"name": "x"}}, None, later)
    assert conds(again)["SpecApplied"] == ("False", "ChangedAfterStart") and "startedGeneration" not in again.status
    assert with_status(written, again)["status"]["reproducibility"]["seed"] == 42
    # a record too long for an annotation (the user's params) is left off the Job, which is still made
    huge = run_body(params={"vocabulary": ["w" * 100] * 1000})
    big = training_job(huge, spec_of(huge), runtime_image="img:1", artifact_root="s3://m",
                       record=start_record(decide(huge, spec_of(huge), None, None, NOW).status))
    assert "annotations" not in big["metadata"] and big["spec"]["template"]["spec"]["containers"]
    # a Job made before Jobs carried the record (or whose annotation was mangled) recovers nothing
    for said in (None, "not json", "[1]", "null"):
        plain = {**made, "metadata": {"name": made["metadata"]["name"],
                                      **({"annotations": {"mlops.dev/started": said}} if said else {})}}
        assert "startedGeneration" not in decide(edited, spec_of(edited), plain, None, later).status
    bare = {**made, "metadata": {"name": made["metadata"]["name"], "annotations": None}}
    assert "startedGeneration" not in decide(edited, spec_of(edited), bare, None, later).status


def test_running_job() -> None:
    body = run_body()
    body = with_status(body, decide(body, spec_of(body), None, None, NOW))
    d = decide(body, spec_of(body), job(active=1), None, NOW)
    assert not d.apply_job and conds(d)["Succeeded"] == ("Unknown", "Running")
    assert d.status["jobName"] == "iris-v1-abcdef12"


def test_completed_job_records_result_and_gate_verdict() -> None:
    body = run_body()
    spec = spec_of(body)
    body = with_status(body, decide(body, spec, None, None, NOW))
    assert decide(body, spec, job(complete=True, succeeded=1), None, NOW).needs_pods
    d = decide(body, spec, job(complete=True, succeeded=1), [pod("Succeeded", result(0.95))], NOW)
    assert conds(d) == {"Succeeded": ("True", "Completed"), "GatesPassed": ("True", "Passed"),
                        "Ready": ("True", "Succeeded"), "SpecApplied": ("True", "Started")}
    assert d.status["metrics"] == {"accuracy": 0.95} and d.status["model"]["digest"] == DIGEST
    assert d.status["reproducibility"] == {"params": {"n_estimators": 50, "max_depth": 4}, "seed": 42,
                                           "datasetUri": "s3://datasets/iris/train.csv",
                                           "datasetVersion": "2026-11-01", "image": "runtime:1",
                                           "imageDigest": "docker-pullable://runtime@sha256:1234"}
    data = {"uri": "s3://datasets/iris/train.csv", "digest": "sha256:" + "d" * 64, "rows": 150}
    reported = json.dumps({**json.loads(result(0.95)), "data": data})
    recorded = decide(body, spec, job(complete=True, succeeded=1), [pod("Succeeded", reported)], NOW)
    assert recorded.status["reproducibility"] == {**d.status["reproducibility"], "datasetDigest": data["digest"],
                                                  "datasetRows": 150}
    done = with_status(body, d)
    # finished: nothing more happens, whatever the Job does later
    again = decide(done, spec, None, None, NOW)
    assert not again.apply_job and not again.delete_job and again.status == {}


def test_failed_gates_are_succeeded_but_not_ready() -> None:
    body = run_body()
    spec = spec_of(body)
    body = with_status(body, decide(body, spec, None, None, NOW))
    d = decide(body, spec, job(complete=True, succeeded=1), [pod("Succeeded", result(0.5))], NOW)
    assert conds(d)["Succeeded"] == ("True", "Completed")
    assert conds(d)["GatesPassed"] == ("False", "GatesFailed") and conds(d)["Ready"] == ("False", "GatesFailed")
    assert d.status["failedGates"] == ["accuracy >= 0.9: got 0.5"]


def test_no_gates_is_said() -> None:
    body = run_body(gates=None)
    spec = spec_of(body)
    body = with_status(body, decide(body, spec, None, None, NOW))
    d = decide(body, spec, job(complete=True, succeeded=1), [pod("Succeeded", result(0.1))], NOW)
    assert conds(d)["GatesPassed"] == ("True", "NoGates") and conds(d)["Ready"] == ("True", "Succeeded")


@pytest.mark.parametrize("message,expected", [("not json at all", "not JSON"), ("{" + " " * 5000 + "}", "4096"),
                                              ('{"metrics": {}}', "contract")])
def test_unusable_result_is_invalid(message: str, expected: str) -> None:
    body = run_body()
    spec = spec_of(body)
    body = with_status(body, decide(body, spec, None, None, NOW))
    d = decide(body, spec, job(complete=True, succeeded=1), [pod("Succeeded", message)], NOW)
    assert conds(d)["Succeeded"] == ("False", "InvalidResult")
    assert expected in next(c.message for c in d.conditions if c.type == "Succeeded")


def test_failed_job_reports_the_reason_from_the_last_pod() -> None:
    body = run_body()
    spec = spec_of(body)
    body = with_status(body, decide(body, spec, None, None, NOW))
    pods = [pod("Failed", "mlops train: first", "2026-11-22T11:00:00Z", 1),
            pod("Failed", "mlops train: dataset s3://x: not found", "2026-11-22T11:01:00Z", 1)]
    d = decide(body, spec, job(failed="BackoffLimitExceeded", failures=2), pods, NOW)
    assert conds(d)["Succeeded"] == ("False", "BackoffLimitExceeded") and conds(d)["Ready"][1] == \
        "BackoffLimitExceeded"
    assert "dataset s3://x: not found" in next(c.message for c in d.conditions if c.type == "Succeeded")
    d = decide(body, spec, job(failed="DeadlineExceeded"), [], NOW)
    assert conds(d)["Succeeded"] == ("False", "DeadlineExceeded")


def test_suspended_runs_no_job() -> None:
    body = run_body(suspend=True)
    d = decide(body, spec_of(body), None, None, NOW)
    assert not d.apply_job and conds(d)["Ready"] == ("False", "Suspended")
    assert decide(body, spec_of(body), job(active=1), None, NOW).delete_job


def test_a_run_edited_while_suspended_trains_what_its_record_names() -> None:
    body = run_body(seed=1)
    body = with_status(body, decide(body, spec_of(body), None, None, NOW))  # started: generation 1, seed 1
    body = {**body, "spec": {**body["spec"], "suspend": True}, "metadata": {**body["metadata"], "generation": 2}}
    body = with_status(body, decide(body, spec_of(body), job(active=1), None, NOW))  # suspended: Job deleted
    body = {**body, "spec": {**body["spec"], "suspend": False, "seed": 7},
            "metadata": {**body["metadata"], "generation": 3}}  # edited, then resumed
    d = decide(body, spec_of(body), None, None, NOW)
    assert d.apply_job and conds(d)["SpecApplied"] == ("True", "Restarted")
    body = with_status(body, d)
    env = {e["name"]: e["value"] for e in training_job(body, spec_of(body), runtime_image="img:1",
                                                        artifact_root="s3://m")["spec"]["template"]["spec"][
        "containers"][0]["env"] if "value" in e}
    # the Job and the record agree: both the edited spec
    assert env["MLOPS_SEED"] == "7" == str(body["status"]["reproducibility"]["seed"])
    assert body["status"]["startedGeneration"] == 3
    # once its Job runs, later edits are refused as before (the Job keeps the record's spec)
    edited = {**body, "spec": {**body["spec"], "seed": 9}, "metadata": {**body["metadata"], "generation": 4}}
    d = decide(edited, spec_of(edited), job(active=1), None, NOW)
    assert conds(d)["SpecApplied"] == ("False", "ChangedAfterStart")
    assert with_status(edited, d)["status"]["reproducibility"]["seed"] == 7


def test_a_job_a_queue_suspends_is_queued_not_failed() -> None:
    """Kueue creates admitted-later Jobs suspended (spec.suspend, a `Suspended` condition on 1.25+): recorded
    statuses, since the 1.20 apiserver of the tests has no Job suspend."""
    body = run_body()
    body = with_status(body, decide(body, spec_of(body), None, None, NOW))
    queued = {**job(), "spec": {"suspend": True}}
    queued["metadata"]["labels"] = {"kueue.x-k8s.io/queue-name": "gpu-queue"}
    queued["status"]["conditions"] = [{"type": "Suspended", "status": "True", "reason": "JobSuspended"}]
    d = decide(body, spec_of(body), queued, None, NOW)
    assert conds(d)["Succeeded"] == ("Unknown", "Queued") and conds(d)["Ready"] == ("Unknown", "Queued")
    assert "gpu-queue" in next(c.message for c in d.conditions if c.type == "Succeeded")
    assert not d.apply_job and not d.delete_job
    admitted = {**queued, "spec": {"suspend": False}, "status": {**queued["status"], "active": 1}}
    assert conds(decide(body, spec_of(body), admitted, None, NOW))["Succeeded"] == ("Unknown", "Running")


def test_spec_change_after_start_is_reported_not_applied() -> None:
    body = run_body()
    body = with_status(body, decide(body, spec_of(body), None, None, NOW))
    body["metadata"]["generation"] = 2
    body["spec"]["seed"] = 7
    d = decide(body, spec_of(body), job(active=1), None, NOW)
    assert not d.apply_job and conds(d)["SpecApplied"] == ("False", "ChangedAfterStart")


def test_ttl_after_finished_deletes_the_job_at_the_right_time() -> None:
    body = run_body(ttlSecondsAfterFinished=120)
    spec = spec_of(body)
    body = with_status(body, decide(body, spec, None, None, NOW))
    done = with_status(body, decide(body, spec, job(complete=True, succeeded=1),
                                    [pod("Succeeded", result(0.95))], NOW))
    assert done["status"]["completionTime"] == "2026-11-22T11:59:00Z"
    early = decide(done, spec, job(complete=True), None, NOW)
    assert not early.delete_job and early.requeue_after == pytest.approx(60)
    late = decide(done, spec, job(complete=True), None, NOW + datetime.timedelta(minutes=2))
    assert late.delete_job
    assert not decide(done, spec, None, None, NOW + datetime.timedelta(minutes=2)).delete_job


# -- distributed training

def distributed_body(workers: int = 2, **changes: Any) -> dict[str, Any]:
    return run_body(distributed={"workers": workers}, trainer={"estimator": "xgboost.XGBClassifier"}, **changes)


def env_of(job: dict[str, Any]) -> dict[str, Any]:
    (container,) = job["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_a_distributed_run_is_one_job_per_worker_with_stable_names_behind_a_headless_service() -> None:
    from mlops_operator.builders.trainingrun import training_jobs, workers_service

    body = distributed_body(3)
    jobs = training_jobs(body, spec_of(body), runtime_image="img:1", artifact_root="s3://m")
    service = workers_service(body, spec_of(body))
    svc = service["metadata"]["name"]
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    assert service["spec"]["ports"] == [{"name": "coordinator", "port": 29500, "protocol": "TCP"}]
    assert [j["metadata"]["name"] for j in jobs] == [f"{svc}-{r}" for r in range(3)] == job_names(body, spec_of(body))
    for rank, j in enumerate(jobs):
        pod = j["spec"]["template"]
        assert pod["spec"]["hostname"] == f"{svc}-{rank}" and pod["spec"]["subdomain"] == svc
        # the Service selects every worker's Pod, and only those
        assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
        assert j["metadata"]["labels"]["mlops.dev/rank"] == str(rank)
        env = env_of(j)
        assert env["RANK"] == env["DMLC_TASK_ID"] == str(rank)
        assert env["WORLD_SIZE"] == env["DMLC_NUM_WORKER"] == "3"
        assert env["MASTER_ADDR"] == env["DMLC_TRACKER_URI"] == f"{svc}-0.{svc}"
        assert env["MASTER_PORT"] == env["DMLC_TRACKER_PORT"] == "29500"
        assert "completionMode" not in j["spec"] and j["spec"]["template"]["spec"]["containers"][0]["ports"] == [
            {"name": "coordinator", "containerPort": 29500, "protocol": "TCP"}]
    # a one-worker run is the Job it always was
    plain = run_body()
    (one,) = training_jobs(plain, spec_of(plain), runtime_image="img:1", artifact_root="s3://m")
    assert one == training_job(plain, spec_of(plain), runtime_image="img:1", artifact_root="s3://m")
    assert "RANK" not in env_of(one) and "subdomain" not in one["spec"]["template"]["spec"]


def test_where_indexed_jobs_are_served_a_distributed_run_is_one_indexed_job_of_the_same_names() -> None:
    from mlops_operator.builders.trainingrun import training_jobs, workers_service

    body = distributed_body(2)
    (job_,) = training_jobs(body, spec_of(body), runtime_image="img:1", artifact_root="s3://m", indexed=True)
    per_worker = training_jobs(body, spec_of(body), runtime_image="img:1", artifact_root="s3://m")
    svc = workers_service(body, spec_of(body))["metadata"]["name"]
    spec = job_["spec"]
    assert job_["metadata"]["name"] == svc == job_names(body, spec_of(body), indexed=True)[0]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] == 2
    # the Job controller names the Pods `<job>-<index>`: the same host names as one Job per worker
    assert spec["template"]["spec"]["subdomain"] == svc and "hostname" not in spec["template"]["spec"]
    assert [j["spec"]["template"]["spec"]["hostname"] for j in per_worker] == [f"{svc}-0", f"{svc}-1"]
    env = env_of(job_)
    index = {"fieldRef": {"fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}
    assert env["RANK"] == env["DMLC_TASK_ID"] == index and env["MASTER_ADDR"] == env_of(per_worker[1])["MASTER_ADDR"]
    assert "mlops.dev/rank" not in spec["template"]["metadata"]["labels"]


def test_worker_names_are_dns_labels_for_any_run_name() -> None:
    from mlops_operator.builders.trainingrun import worker_host, workers_name

    body = distributed_body(64)
    body["metadata"]["name"] = "9" + "a.b" * 80
    name, host = workers_name(body), worker_host(body, 63)
    assert name[0].isalpha() and "." not in name and len(host) <= 63, host


def worker_job(rank: int, complete: bool = False, failed: bool = False, active: int = 0) -> dict[str, Any]:
    conditions = [{"type": "Complete", "status": "True"}] if complete else []
    if failed:
        conditions.append({"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                           "message": "Job has reached the specified backoff limit"})
    return {"metadata": {"name": f"w-{rank}", "uid": f"uid-{rank}", "labels": {"mlops.dev/rank": str(rank)}},
            "status": {"conditions": conditions, "active": active, "succeeded": int(complete),
                       "failed": int(failed), **({"completionTime": f"2026-11-22T11:5{rank}:00Z"} if complete else {})}}


def test_one_job_per_worker_is_followed_as_one_run() -> None:
    from mlops_operator.training.workers import combine

    names = ["w-0", "w-1"]
    body = distributed_body(2, gates=[{"metric": "accuracy", "operator": ">=", "threshold": "0.9"}])
    body["status"] = {"startedGeneration": 1}
    spec = spec_of(body)
    # a worker's Job missing: all are made (the ones that exist are found, not made twice)
    assert combine({"w-0": worker_job(0, active=1)}, names) is None
    assert decide(body, spec, None, None, NOW).apply_job
    # running until every worker is done
    running = combine({"w-0": worker_job(0, complete=True), "w-1": worker_job(1, active=1)}, names)
    d = decide(body, spec, running, None, NOW)
    assert conds(d)["Succeeded"] == ("Unknown", "Running")
    assert d.status["workers"] == 2 and d.status["workersSucceeded"] == 1
    # all done: rank 0's Pod has the result
    done = combine({"w-0": worker_job(0, complete=True), "w-1": worker_job(1, complete=True)}, names)
    assert done is not None and done["metadata"]["uid"] == "uid-0"
    assert done["status"]["completionTime"] == "2026-11-22T11:51:00Z"
    d = decide(body, spec, done, [pod("Succeeded", result(0.95))], NOW)
    assert conds(d)["Succeeded"] == ("True", "Completed") and conds(d)["Ready"] == ("True", "Succeeded")
    assert d.status["model"]["digest"] == DIGEST and d.status["workersSucceeded"] == 2
    assert d.status["jobName"] == "w-0" and not d.stop_workers
    # one worker failed: the run failed, with that worker's reason, and the others are stopped
    lost = combine({"w-0": worker_job(0, active=1), "w-1": worker_job(1, failed=True)}, names)
    assert lost is not None and lost["metadata"]["uid"] == "uid-1"
    d = decide(body, spec, lost, [pod("Failed", "connection reset by peer", code=1)], NOW)
    assert conds(d)["Succeeded"] == ("False", "BackoffLimitExceeded") and d.stop_workers
    message = next(c.message for c in d.conditions if c.type == "Succeeded")
    assert message == "worker Job w-1: Job has reached the specified backoff limit: connection reset by peer"


def test_an_indexed_jobs_result_is_index_zeros() -> None:
    body = distributed_body(2)
    body["status"] = {"startedGeneration": 1}
    indexed = job(complete=True, succeeded=2)

    def indexed_pod(index: int, message: str, created: str) -> dict[str, Any]:
        p = pod("Succeeded", message, created)
        p["metadata"]["annotations"] = {"batch.kubernetes.io/job-completion-index": str(index)}
        return p
    # rank 1 finished last and said nothing a result could be read from: rank 0's message stands
    pods = [indexed_pod(0, result(0.93), "2026-11-22T11:00:00Z"), indexed_pod(1, "done", "2026-11-22T11:00:01Z")]
    d = decide(body, spec_of(body), indexed, pods, NOW)
    assert conds(d)["Succeeded"] == ("True", "Completed") and d.status["metrics"] == {"accuracy": 0.93}
    assert d.status["attempts"] == 1 and d.status["workersSucceeded"] == 2


def kubeflow_body(**changes: Any) -> dict[str, Any]:
    return run_body(distributed={"workers": 3, "engine": "KubeflowTrainer",
                                 "kubeflowTrainer": {"runtimeRef": {"name": "torch-distributed"}}},
                    trainer={"image": "team/train:1", "command": ["torchrun", "train.py"],
                             "resources": {"limits": {"nvidia.com/gpu": "1"}}}, **changes)


def test_a_run_delegated_to_kubeflow_trainer_is_one_trainjob_of_its_runtime() -> None:
    from mlops_operator.builders.trainingrun import train_job, workers_name

    body = kubeflow_body(storage={"secretRef": {"name": "s3"}})
    body["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] = "gpus"
    tj = train_job(body, spec_of(body), api_version="trainer.kubeflow.org/v1alpha1", runtime_image="img:1",
                   artifact_root="s3://m")
    assert tj["apiVersion"] == "trainer.kubeflow.org/v1alpha1" and tj["kind"] == "TrainJob"
    assert tj["metadata"]["name"] == workers_name(body)
    assert tj["metadata"]["ownerReferences"][0]["kind"] == "TrainingRun"
    assert tj["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpus"
    assert tj["spec"]["runtimeRef"] == {"name": "torch-distributed", "apiGroup": "trainer.kubeflow.org",
                                        "kind": "ClusterTrainingRuntime"}
    trainer = tj["spec"]["trainer"]
    assert trainer["image"] == "team/train:1" and trainer["command"] == ["torchrun", "train.py"]
    assert trainer["numNodes"] == 3 and trainer["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == "1"
    env = {e["name"]: e for e in trainer["env"]}
    assert env["MLOPS_OUTPUT_URI"]["value"] == "s3://m/ns/iris/iris-v1" and "RANK" not in env
    # the storage Secret's keys, each optional (a TrainJob's trainer takes no envFrom)
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"] == {"secretKeyRef": {"name": "s3", "key": "AWS_ACCESS_KEY_ID",
                                                                      "optional": True}}


def test_a_trainjobs_status_is_the_runs() -> None:
    from mlops_operator.training.workers import from_train_job

    body = kubeflow_body()
    body["status"] = {"startedGeneration": 1}
    spec = spec_of(body)
    meta = {"name": "iris-v1-x", "uid": "tj-uid"}
    assert from_train_job(None, 3) is None
    # suspended (Kueue admits TrainJobs by resuming them): queued
    queued = from_train_job({"metadata": meta, "spec": {"suspend": True}, "status": {"conditions": [
        {"type": "Suspended", "status": "True", "reason": "Suspended"}]}}, 3)
    assert conds(decide(body, spec, queued, None, NOW))["Succeeded"] == ("Unknown", "Queued")
    running = from_train_job({"metadata": meta, "status": {"conditions": [
        {"type": "Suspended", "status": "False", "reason": "Resumed"}],
        "jobsStatus": [{"name": "node", "active": 1, "ready": 1, "succeeded": 0, "failed": 0}]}}, 3)
    d = decide(body, spec, running, None, NOW)
    assert conds(d)["Succeeded"] == ("Unknown", "Running") and d.status["workersSucceeded"] == 0
    complete = from_train_job({"metadata": meta, "status": {"conditions": [
        {"type": "Complete", "status": "True", "reason": "JobsCompleted", "message": "TrainJob is completed",
         "lastTransitionTime": "2026-11-22T11:58:00Z"}],
        "jobsStatus": [{"name": "node", "succeeded": 1}]}}, 3)
    d = decide(body, spec, complete, [pod("Succeeded", result(0.97))], NOW)
    assert conds(d)["Succeeded"] == ("True", "Completed") and d.status["workersSucceeded"] == 3
    assert d.status["completionTime"] == "2026-11-22T11:58:00Z" and d.status["model"]["digest"] == DIGEST
    failed = from_train_job({"metadata": meta, "status": {"conditions": [
        {"type": "Failed", "status": "True", "reason": "DeadlineExceeded", "message": "TrainJob exceeded its "
         "activeDeadlineSeconds"}], "jobsStatus": [{"name": "node", "failed": 1}]}}, 3)
    d = decide(body, spec, failed, [], NOW)
    assert conds(d)["Succeeded"] == ("False", "DeadlineExceeded") and d.final


def test_kubeflow_trainer_needs_its_runtime_and_a_command() -> None:
    from mlops_operator.training.spec import check

    body = kubeflow_body()
    assert check(spec_of(body)) == []
    body["spec"]["distributed"].pop("kubeflowTrainer")
    body["spec"]["trainer"] = {"estimator": "xgboost.XGBClassifier"}
    errors = check(spec_of(body))
    assert any(e.startswith("spec.distributed.kubeflowTrainer: required by engine KubeflowTrainer") for e in errors)
    assert any(e.startswith("spec.trainer.command: required by engine KubeflowTrainer") for e in errors)


# -- sweeps

GRID = {"parameters": [{"name": "n_estimators", "values": [10, 30, 50]}, {"name": "max_depth", "values": [2, 4]}],
        "maxParallel": 2, "objective": {"metric": "accuracy"}}


def sweep_body(**sweep: Any) -> dict[str, Any]:
    body = run_body(sweep={**GRID, **sweep})
    body["metadata"]["name"] = "iris-sweep"
    return body


def trial(body: dict[str, Any], index: int, state: str | None, accuracy: float | None = None) -> dict[str, Any]:
    from mlops_operator.training import sweep

    status: dict[str, Any] = {}
    if state == "Running":
        status["conditions"] = [{"type": "Succeeded", "status": "Unknown", "reason": "Running"}]
    elif state in ("Succeeded", "GatesFailed"):
        status["conditions"] = [{"type": "Succeeded", "status": "True", "reason": "Completed"},
                                {"type": "GatesPassed", "status": "True" if state == "Succeeded" else "False",
                                 "reason": "Passed" if state == "Succeeded" else "GatesFailed"}]
        status["metrics"] = {"accuracy": accuracy}
        status["model"] = {"uri": f"s3://m/{index}", "digest": f"sha256:{index:064x}", "format": "sklearn"}
    elif state == "Failed":
        status["conditions"] = [{"type": "Succeeded", "status": "False", "reason": "BackoffLimitExceeded"}]
    return {"metadata": {"name": sweep.trial_name("iris-sweep", index), "namespace": "ns",
                         "ownerReferences": [{"kind": "TrainingRun", "uid": body["metadata"]["uid"],
                                              "name": "iris-sweep", "controller": True}]}, "status": status}


def test_a_grid_is_the_product_in_order_and_random_trials_come_from_the_seed() -> None:
    from mlops_operator.api.trainingrun import Sweep
    from mlops_operator.training import sweep

    grid = sweep.trials(Sweep.model_validate(GRID), 0)
    assert grid == [{"n_estimators": n, "max_depth": d} for n in (10, 30, 50) for d in (2, 4)]
    assert sweep.trials(Sweep.model_validate({**GRID, "trials": 4}), 0) == grid[:4]
    drawn = Sweep.model_validate({"strategy": "random", "trials": 20, "seed": 7, "objective": {"metric": "rmse"},
                                  "parameters": [{"name": "alpha", "min": 1e-4, "max": 1.0, "log": True},
                                                 {"name": "n", "min": 5, "max": 9, "integer": True},
                                                 {"name": "kernel", "values": ["rbf", "linear"]}]})
    first = sweep.trials(drawn, 0)
    assert first == sweep.trials(drawn, 123), "a restarted operator (any run seed) draws the same trials"
    assert len(first) == 20 and all(1e-4 <= t["alpha"] <= 1.0 and t["n"] in range(5, 10) and
                                    t["kernel"] in ("rbf", "linear") for t in first)
    # a log scale: a good share of draws below 0.01, which a uniform draw would almost never make
    assert sum(t["alpha"] < 0.01 for t in first) >= 5
    assert sweep.trials(drawn.model_copy(update={"seed": 8}), 0) != first


def test_a_sweep_runs_at_most_max_parallel_trials_and_offers_the_best_passing_one() -> None:
    from mlops_operator.builders.trainingrun import trial_run
    from mlops_operator.training import sweep

    body = sweep_body()
    spec = spec_of(body)
    d = sweep.decide(body, spec, {}, NOW)
    assert d.start == [0, 1] and conds(d)["Succeeded"] == ("Unknown", "Running")
    assert [t["state"] for t in d.status["trials"]] == ["Pending"] * 6
    # the trials' runs: the sweep's spec without the sweep, the trial's params over its own
    child = trial_run(body, "iris-sweep-1", sweep.trial_spec(spec, d.status["trials"][0]["params"]))
    assert child["spec"]["params"] == {"n_estimators": 10, "max_depth": 2} and "sweep" not in child["spec"]
    assert child["metadata"]["ownerReferences"][0]["uid"] == "uid-1" and child["spec"]["model"] == "iris"
    # two running: nothing more starts; one done: one more
    running = {t["metadata"]["name"]: t for t in (trial(body, 0, "Running"), trial(body, 1, "Running"))}
    assert sweep.decide(body, spec, running, NOW).start == []
    running["iris-sweep-1"] = trial(body, 0, "Succeeded", 0.9)
    assert sweep.decide(body, spec, running, NOW).start == [2]
    # all done: the best passing trial by the objective is the sweep's version (a better one failed its gates)
    done = [trial(body, 0, "Succeeded", 0.90), trial(body, 1, "Succeeded", 0.95), trial(body, 2, "GatesFailed", 0.99),
            trial(body, 3, "Failed"), trial(body, 4, "Succeeded", 0.95), trial(body, 5, "Succeeded", 0.80)]
    d = sweep.decide(body, spec, {t["metadata"]["name"]: t for t in done}, NOW)
    assert conds(d) == {"Succeeded": ("True", "Completed"), "GatesPassed": ("True", "Passed"),
                        "Ready": ("True", "Succeeded")}
    assert d.status["bestTrial"] == "iris-sweep-2" and d.status["model"]["digest"] == f"sha256:{1:064x}"
    assert [t["state"] for t in d.status["trials"]] == ["Succeeded", "Succeeded", "GatesFailed", "Failed",
                                                        "Succeeded", "Succeeded"]
    assert d.status["trials"][1]["value"] == 0.95 and "value" not in d.status["trials"][3]
    # minimize: the lowest
    low = sweep.decide(sweep_body(objective={"metric": "accuracy", "goal": "minimize"}),
                       spec_of(sweep_body(objective={"metric": "accuracy", "goal": "minimize"})),
                       {t["metadata"]["name"]: t for t in done}, NOW)
    assert low.status["bestTrial"] == "iris-sweep-6"


def test_a_sweep_whose_trials_all_fail_their_gates_offers_nothing() -> None:
    from mlops_operator.rollout.spec import newest_passing_run
    from mlops_operator.training import sweep

    body = sweep_body()
    failed = {t["metadata"]["name"]: t for t in (trial(body, i, "GatesFailed", 0.5) for i in range(5))}
    failed["iris-sweep-6"] = trial(body, 5, "Failed")
    d = sweep.decide(body, spec_of(body), failed, NOW)
    assert conds(d)["GatesPassed"] == ("False", "NoPassingTrial") and conds(d)["Ready"][1] == "NoPassingTrial"
    assert "model" not in d.status and "bestTrial" not in d.status
    assert newest_passing_run([with_status(body, d)]) is None


def test_trials_are_known_only_to_their_sweep() -> None:
    from mlops_operator.handlers.trainingrun import known_as, refers_to

    body = sweep_body()
    child = {**trial(body, 0, "Running"), "spec": {"model": "iris"}}
    assert known_as(child) == {("sweep", "ns", "iris-sweep")}
    assert refers_to(body) == {("sweep", "ns", "iris-sweep")}
    assert known_as(body) == {("model", "ns", "iris")} and refers_to(run_body()) == set()


@pytest.mark.parametrize("change,expected", [
    ({"strategy": "random"}, "spec.sweep.trials: required by strategy random"),
    ({"parameters": [{"name": "alpha", "min": 0.1, "max": 1}]}, "a grid takes values, not a range"),
    ({"strategy": "random", "trials": 3, "parameters": [{"name": "alpha", "min": 0, "max": 1, "log": True}]},
     "spec.sweep.parameters[0].min: a log range starts above 0"),
    ({"parameters": [{"name": "a", "values": [1]}, {"name": "a", "values": [2]}]}, "a is given twice"),
    ({"parameters": [{"name": "a", "values": list(range(11))}, {"name": "b", "values": list(range(10))}]},
     "the grid has 110 trials, more than 100"),
])
def test_sweep_mistakes_are_named(change: dict[str, Any], expected: str) -> None:
    from mlops_operator.training.spec import check

    errors = check(spec_of(sweep_body(**change)))
    assert any(expected in e for e in errors), errors


def test_mlops_get_shows_a_sweeps_trials() -> None:
    from mlops_operator.training import sweep
    from mlops_operator.views import get_table

    body = sweep_body()
    done = [trial(body, 0, "Succeeded", 0.9), trial(body, 1, "Succeeded", 0.95)] + \
        [trial(body, i, "Failed") for i in range(2, 6)]
    shown = with_status(body, sweep.decide(body, spec_of(body), {t["metadata"]["name"]: t for t in done}, NOW))
    out = get_table("TrainingRun", [shown], NOW)
    assert "sweep iris-sweep (maximize accuracy):" in out
    line = next(line for line in out.splitlines() if line.startswith("iris-sweep-2 "))
    assert "n_estimators=10, max_depth=4" in line and "Succeeded" in line and "0.95" in line
    assert line.rstrip().endswith("best")
