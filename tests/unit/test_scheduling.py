"""Where the operator's Pods run: the scheduling fields of a TrainingRun, a ModelDeployment's serving
revision and its analysis Job reach the Pod specs as written; Kueue's queue label reaches the Job."""

from __future__ import annotations

from typing import Any

from mlops_operator.api.modeldeployment import ModelDeploymentSpec
from mlops_operator.api.trainingrun import TrainingRunSpec
from mlops_operator.builders.modeldeployment import analysis_job, deployment, revision
from mlops_operator.builders.trainingrun import training_job
from tests.cases import example

DIGEST = "sha256:" + "ab" * 32
GPU = {
    "nodeSelector": {"accelerator": "a100"},
    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["a", "b"]}]}]}}},
    "priorityClassName": "training-high",
    "runtimeClassName": "nvidia",
}


def test_a_training_job_runs_where_its_scheduling_says_and_keeps_kueues_queue() -> None:
    body = example("TrainingRun")
    body["metadata"].update(namespace="ns", uid="uid-1", labels={"kueue.x-k8s.io/queue-name": "gpu-queue"})
    body["spec"]["scheduling"] = GPU
    body["spec"]["trainer"]["resources"] = {"limits": {"nvidia.com/gpu": 1}}
    job = training_job(body, TrainingRunSpec.model_validate(body["spec"]), runtime_image="img:1",
                       artifact_root="s3://m")
    pod = job["spec"]["template"]["spec"]
    assert {k: pod[k] for k in GPU} == GPU
    assert pod["containers"][0]["resources"] == {"limits": {"nvidia.com/gpu": 1}}
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-queue"
    # none given: no scheduling field at all (the scheduler's defaults)
    plain = example("TrainingRun")
    plain["metadata"].update(namespace="ns", uid="uid-2")
    pod = training_job(plain, TrainingRunSpec.model_validate(plain["spec"]), runtime_image="img:1",
                       artifact_root="s3://m")["spec"]["template"]["spec"]
    assert not set(GPU) & set(pod)


def md(runtime: dict[str, Any] | None = None, analysis: dict[str, Any] | None = None
       ) -> tuple[dict[str, Any], ModelDeploymentSpec]:
    body = example("ModelDeployment")
    body["metadata"].update(namespace="ns", uid="uid-md")
    if runtime is not None:
        body["spec"]["runtime"] = runtime
    if analysis is not None:
        body["spec"]["analysis"] = analysis
    return body, ModelDeploymentSpec.model_validate(body["spec"])


def test_serving_pods_are_placed_and_spread_and_placement_is_part_of_the_revision() -> None:
    spread = [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway"}]
    body, spec = md(runtime={**example("ModelDeployment")["spec"].get("runtime", {}),
                             "scheduling": {**GPU, "topologySpreadConstraints": spread}})
    rev = revision(spec, DIGEST)
    assert rev != revision(md()[1], DIGEST)  # a placement change is rolled out like any other
    pod = deployment(body, spec, rev, model_uri="s3://m/iris", digest=DIGEST, replicas=2,
                     runtime_image="runtime:1")["spec"]["template"]["spec"]
    assert {k: pod[k] for k in GPU} == GPU
    # a spread constraint without a selector spreads this ModelDeployment's serving Pods
    assert pod["topologySpreadConstraints"] == [{**spread[0], "labelSelector": {
        "matchLabels": {"mlops.dev/modeldeployment": "iris"}}}]
    job = analysis_job(body, spec, rev, model_uri="s3://m/iris", digest=DIGEST, candidate=["http://p:8082"],
                       stable=[], runtime_image="runtime:1")
    analysis_pod = job["spec"]["template"]["spec"]
    # the analysis Pod goes where the servers may, but is no replica to spread
    assert {k: analysis_pod[k] for k in GPU} == GPU and "topologySpreadConstraints" not in analysis_pod


def test_the_analysis_job_has_a_scheduling_of_its_own_when_given() -> None:
    own = {"nodeSelector": {"pool": "cpu"}, "priorityClassName": "batch-low"}
    body, spec = md(runtime={"scheduling": GPU}, analysis={"scheduling": own})
    pod = analysis_job(body, spec, revision(spec, DIGEST), model_uri="s3://m/iris", digest=DIGEST,
                       candidate=["http://p:8082"], stable=[], runtime_image="runtime:1")["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "cpu"} and pod["priorityClassName"] == "batch-low"
    assert "tolerations" not in pod and "affinity" not in pod and "runtimeClassName" not in pod


def test_an_onnx_model_can_ask_for_the_cuda_provider_as_part_of_its_revision() -> None:
    body, spec = md(runtime={"onnxExecutionProvider": "CUDA", "resources": {"limits": {"nvidia.com/gpu": 1}}})
    rev = revision(spec, DIGEST)
    assert rev != revision(md(runtime={"resources": {"limits": {"nvidia.com/gpu": 1}}})[1], DIGEST)
    server = deployment(body, spec, rev, model_uri="s3://m/iris", digest=DIGEST, replicas=1,
                        runtime_image="runtime:1")["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "MLOPS_ONNX_EXECUTION_PROVIDER", "value": "CUDA"} in server["env"]
    assert server["resources"] == {"limits": {"nvidia.com/gpu": 1}}
