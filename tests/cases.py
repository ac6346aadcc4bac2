"""Invalid manifests, one per validation rule, shared by the unit and the integration tests.

`SCHEMA_CASES` are rejected by the apiserver at admission (the generated structural schema);
`STATUS_CASES` pass the schema and reach `Ready=False, reason=InvalidSpec` from the operator.
Each names the field the error message must mention.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def example(kind: str) -> dict[str, Any]:
    name = {"TrainingRun": "trainingrun", "ModelDeployment": "modeldeployment", "DriftPolicy": "driftpolicy"}[kind]
    return yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())


@dataclass(frozen=True)
class Case:
    id: str
    kind: str
    # dotted path → value, applied to the kind's example; a value of DELETE removes the key
    changes: tuple[tuple[str, Any], ...]
    field: str  # what the error message must name

    def manifest(self, name: str | None = None) -> dict[str, Any]:
        obj = copy.deepcopy(example(self.kind))
        for path, value in self.changes:
            _set(obj, path, value)
        if name:
            obj["metadata"]["name"] = name
        return obj


DELETE = object()


def _set(obj: Any, path: str, value: Any) -> None:
    parts = [int(p) if p.isdigit() else p for p in path.split(".")]
    for p in parts[:-1]:
        obj = obj[p] if isinstance(p, int) else obj.setdefault(p, {})
    if value is DELETE:
        del obj[parts[-1]]
    else:
        obj[parts[-1]] = value


TR, MD, DP = "TrainingRun", "ModelDeployment", "DriftPolicy"
PIPELINE = {"inline": "pipelineInfo: {name: p}\n"}

SCHEMA_CASES = [
    # TrainingRun
    Case("tr-no-model", TR, (("spec.model", DELETE),), "spec.model"),
    Case("tr-model-not-dns", TR, (("spec.model", "Iris_V1"),), "spec.model"),
    Case("tr-neither-trainer-nor-pipeline", TR, (("spec.trainer", DELETE),), "spec"),
    Case("tr-both-trainer-and-pipeline", TR, (("spec.pipeline", PIPELINE),), "spec"),
    Case("tr-gate-unknown-operator", TR, (("spec.gates.0.operator", "~="),), "spec.gates[0].operator"),
    Case("tr-gate-threshold-not-number", TR, (("spec.gates.0.threshold", "high"),), "spec.gates[0].threshold"),
    Case("tr-gate-no-metric", TR, (("spec.gates.0.metric", DELETE),), "spec.gates[0].metric"),
    Case("tr-negative-backoff", TR, (("spec.backoffLimit", -1),), "spec.backoffLimit"),
    Case("tr-zero-deadline", TR, (("spec.activeDeadlineSeconds", 0),), "spec.activeDeadlineSeconds"),
    Case("tr-one-worker-is-not-distributed", TR, (("spec.distributed", {"workers": 1}),),
         "spec.distributed.workers"),
    Case("tr-coordinator-port-privileged", TR, (("spec.distributed", {"workers": 2, "port": 80}),),
         "spec.distributed.port"),
    Case("tr-estimator-not-dotted", TR, (("spec.trainer.estimator", "RandomForest"),), "spec.trainer.estimator"),
    Case("tr-dataset-bad-uri", TR, (("spec.dataset.uri", "ftp://x/y.csv"),), "spec.dataset.uri"),
    Case("tr-dataset-bad-format", TR, (("spec.dataset.format", "xlsx"),), "spec.dataset.format"),
    Case("tr-pipeline-both-sources", TR, (
        ("spec.trainer", DELETE),
        ("spec.pipeline", {"inline": "x: 1", "configMapKeyRef": {"name": "p", "key": "k"}})), "spec.pipeline"),
    Case("tr-pipeline-inline-too-large", TR, (
        ("spec.trainer", DELETE), ("spec.pipeline", {"inline": "#" * (64 * 1024 + 1)})), "spec.pipeline.inline"),
    Case("tr-env-value-and-valuefrom", TR, (("spec.trainer.env", [
        {"name": "A", "value": "1", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]),),
        "spec.trainer.env[0]"),
    Case("tr-volume-hostpath", TR, (("spec.trainer.volumes", [
        {"name": "host", "mountPath": "/host", "hostPath": {"path": "/"}}]),), "spec.trainer.volumes[0]"),
    Case("tr-bad-quantity", TR, (("spec.trainer.resources", {"limits": {"cpu": "lots"}}),),
         "spec.trainer.resources.limits.cpu"),
    Case("tr-name-too-long", TR, (("metadata.name", "a" * 55),), "metadata.name"),
    Case("tr-toleration-unknown-effect", TR, (("spec.scheduling", {"tolerations": [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedul"}]}),),
        "spec.scheduling.tolerations[0].effect"),
    Case("tr-node-affinity-unknown-operator", TR, (("spec.scheduling", {"affinity": {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [
            {"key": "zone", "operator": "Equals", "values": ["a"]}]}]}}}}),),
        "spec.scheduling.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
        ".nodeSelectorTerms[0].matchExpressions[0].operator"),
    # ModelDeployment
    Case("md-no-model-source", MD, (("spec.model", {}),), "spec.model"),
    Case("md-both-model-sources", MD, (("spec.model.storageUri", "s3://models/iris/v1"),), "spec.model"),
    Case("md-unknown-format", MD, (("spec.model", {"storageUri": "s3://m/iris", "format": "pickle"}),),
         "spec.model.format"),
    Case("md-bad-digest", MD, (("spec.model", {"storageUri": "s3://m/iris", "digest": "md5:abc"}),),
         "spec.model.digest"),
    Case("md-negative-replicas", MD, (("spec.replicas", -1),), "spec.replicas"),
    Case("md-unknown-strategy", MD, (("spec.strategy.type", "Rainbow"),), "spec.strategy.type"),
    Case("md-shadow-percent-zero", MD, (("spec.strategy", {"type": "Shadow", "shadow": {"percent": 0}}),),
         "spec.strategy.shadow.percent"),
    Case("md-canary-weight-over-100", MD, (("spec.strategy", {"type": "Canary", "canary": {"steps": [
        {"weight": 50}, {"weight": 120}]}}),), "spec.strategy.canary.steps[1].weight"),
    Case("md-canary-no-steps", MD, (("spec.strategy", {"type": "Canary", "canary": {"steps": []}}),),
         "spec.strategy.canary.steps"),
    Case("md-success-rate-above-1", MD, (("spec.analysis.successRate", "1.5"),), "spec.analysis.successRate"),
    Case("md-degradation-not-fraction", MD, (("spec.analysis.compareToStable.maxDegradation", "-0.1"),),
         "spec.analysis.compareToStable.maxDegradation"),
    Case("md-zero-interval", MD, (("spec.analysis.intervalSeconds", 0),), "spec.analysis.intervalSeconds"),
    Case("md-name-too-long", MD, (("metadata.name", "a" * 50),), "metadata.name"),
    Case("md-spread-unknown-when", MD, (("spec.runtime", {"scheduling": {"topologySpreadConstraints": [
        {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "Maybe"}]}}),),
        "spec.runtime.scheduling.topologySpreadConstraints[0].whenUnsatisfiable"),
    Case("md-analysis-priority-class-not-dns", MD, (("spec.analysis.scheduling", {"priorityClassName": "High_1"}),),
         "spec.analysis.scheduling.priorityClassName"),
    Case("md-name-starts-with-digit", MD, (("metadata.name", "1iris"),), "metadata.name"),
    # DriftPolicy
    Case("dp-no-target", DP, (("spec.targetRef", DELETE),), "spec.targetRef"),
    Case("dp-drift-share-above-1", DP, (("spec.driftShare", "2"),), "spec.driftShare"),
    Case("dp-unknown-test", DP, (("spec.features.0.test", "ttest"),), "spec.features[0].test"),
    Case("dp-threshold-not-number", DP, (("spec.features.0.threshold", "0.2x"),), "spec.features[0].threshold"),
    Case("dp-unknown-correction", DP, (("spec.correction", "holm"),), "spec.correction"),
    Case("dp-unknown-action", DP, (("spec.action.type", "Page"),), "spec.action.type"),
    Case("dp-interval-too-short", DP, (("spec.intervalSeconds", 1),), "spec.intervalSeconds"),
    Case("dp-template-no-model", DP, (("spec.action.retrain.template.model", DELETE),),
         "spec.action.retrain.template.model"),
    Case("dp-template-both-trainer-and-pipeline", DP, (("spec.action.retrain.template.pipeline", PIPELINE),),
         "spec.action.retrain.template"),
    Case("dp-min-samples-zero", DP, (("spec.window.minSamples", 0),), "spec.window.minSamples"),
    Case("dp-name-too-long", DP, (("metadata.name", "a" * 49),), "metadata.name"),
]

STATUS_CASES = [
    # TrainingRun
    Case("tr-builtin-without-estimator", TR, (("spec.trainer.estimator", DELETE),), "spec.trainer.estimator"),
    Case("tr-builtin-without-dataset", TR, (("spec.dataset", DELETE),), "spec.dataset"),
    Case("tr-distributed-estimator-trains-alone", TR, (("spec.distributed", {"workers": 2}),), "spec.distributed"),
    Case("tr-kubeflow-trainer-without-runtime", TR, (("spec.distributed", {"workers": 2, "engine": "KubeflowTrainer"}),
                                                     ("spec.trainer.command", ["torchrun", "train.py"])),
         "spec.distributed.kubeflowTrainer"),
    Case("tr-distributed-rank-overridden", TR, (("spec.distributed", {"workers": 2}),
                                                ("spec.trainer.estimator", "xgboost.XGBClassifier"),
                                                ("spec.trainer.env", [{"name": "RANK", "value": "0"}])),
         "spec.trainer.env[0].name"),
    Case("tr-reserved-env", TR, (("spec.trainer.env", [{"name": "MLOPS_RUN", "value": "x"}]),),
         "spec.trainer.env[0].name"),
    Case("tr-node-selector-bad-key", TR, (("spec.scheduling", {"nodeSelector": {"gpu type": "a100"}}),),
         "spec.scheduling.nodeSelector"),
    Case("tr-duplicate-env", TR, (("spec.trainer.env", [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]),),
         "spec.trainer.env[1].name"),
    Case("tr-duplicate-volume", TR, (("spec.trainer.volumes", [
        {"name": "d", "mountPath": "/a", "emptyDir": {}}, {"name": "d", "mountPath": "/b", "emptyDir": {}}]),),
        "spec.trainer.volumes"),
    Case("tr-duplicate-mount-path", TR, (("spec.trainer.volumes", [
        {"name": "a", "mountPath": "/d", "emptyDir": {}}, {"name": "b", "mountPath": "/d", "emptyDir": {}}]),),
        "spec.trainer.volumes"),
    Case("tr-duplicate-gate", TR, (("spec.gates", [
        {"metric": "accuracy", "operator": ">=", "threshold": "0.9"},
        {"metric": "accuracy", "operator": ">=", "threshold": "0.8"}]),), "spec.gates"),
    Case("tr-inline-pipeline-multibyte-too-large", TR, (
        ("spec.trainer", DELETE), ("spec.pipeline", {"inline": "é" * (40 * 1024)})), "spec.pipeline.inline"),
    # ModelDeployment
    Case("md-spread-selector-bad-label-value", MD, (("spec.runtime", {"scheduling": {"topologySpreadConstraints": [
        {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway",
         "labelSelector": {"matchLabels": {"app": "not a value"}}}]}}),),
        "spec.runtime.scheduling.topologySpreadConstraints[0].labelSelector.matchLabels[app]"),
    Case("md-digest-with-stream", MD, (("spec.model.digest", "sha256:" + "a" * 64),), "spec.model.digest"),
    Case("md-format-with-stream", MD, (("spec.model.format", "onnx"),), "spec.model.format"),
    Case("md-unsafe-format", MD, (("spec.model", {"storageUri": "s3://m/iris", "format": "joblib"}),),
         "spec.model.format"),
    Case("md-pinned-without-digest", MD, (("spec.model", {"storageUri": "s3://m/iris"}),), "spec.model.digest"),
    Case("md-unverified-with-digest", MD, (("spec.model", {"storageUri": "s3://m/iris", "verify": False,
                                                           "digest": "sha256:" + "a" * 64}),), "spec.model.verify"),
    Case("md-unverified-over-http", MD, (("spec.model", {"storageUri": "http://models.example/iris.tar.gz",
                                                         "verify": False}),), "spec.model.verify"),
    Case("md-unverified-unsafe-format", MD, (("spec.model", {"storageUri": "s3://m/iris", "verify": False,
                                                             "format": "joblib"}),
                                             ("spec.runtime", {"allowUnsafeFormats": True})), "spec.model.verify"),
    Case("md-unverified-stream", MD, (("spec.model.verify", False),), "spec.model.verify"),
    Case("md-prometheus-link-local", MD, (("spec.analysis.prometheus", {"address": "http://169.254.169.254/"}),),
         "spec.analysis.prometheus.address"),
    Case("md-prometheus-outside-the-cluster", MD, (("spec.analysis.prometheus",
                                                   {"address": "http://metadata.google.internal/computeMetadata"}),),
         "spec.analysis.prometheus.address"),
    Case("md-reserved-env", MD, (("spec.runtime", {"env": [{"name": "MLOPS_MODEL", "value": "x"}]}),),
         "spec.runtime.env[0].name"),
    Case("md-canary-without-steps", MD, (("spec.strategy", {"type": "Canary"}),), "spec.strategy.canary"),
    Case("md-canary-with-bluegreen", MD, (("spec.strategy.type", "Canary"),
                                          ("spec.strategy.canary", {"steps": [{"weight": 10}]})),
         "spec.strategy.blueGreen"),
    Case("md-bluegreen-with-canary", MD, (("spec.strategy.canary", {"steps": [{"weight": 10}]}),),
         "spec.strategy.canary"),
    Case("md-bluegreen-with-shadow", MD, (("spec.strategy.shadow", {"percent": 10}),), "spec.strategy.shadow"),
    Case("md-weights-not-ascending", MD, (("spec.strategy", {"type": "Canary", "canary": {"steps": [
        {"weight": 50}, {"weight": 20}]}}),), "spec.strategy.canary.steps[1].weight"),
    Case("md-analysis-outlasts-scale-down", MD, (("spec.analysis.durationSeconds", 600),),
         "spec.analysis.durationSeconds"),
    Case("md-min-requests-without-time", MD, (("spec.analysis.durationSeconds", 0),
                                              ("spec.analysis.minRequests", 100)), "spec.analysis.minRequests"),
    Case("md-interval-longer-than-duration", MD, (("spec.analysis.intervalSeconds", 120),),
         "spec.analysis.intervalSeconds"),
    Case("md-failure-limit-never-fails", MD, (("spec.analysis.failureLimit", 6),), "spec.analysis.failureLimit"),
    Case("md-unknown-compare-metric", MD, (("spec.analysis.compareToStable.metric", "auc"),),
         "spec.analysis.compareToStable.metric"),
    # DriftPolicy
    Case("dp-pvalue-threshold-above-1", DP, (("spec.features.1.threshold", "1.5"),), "spec.features[1].threshold"),
    Case("dp-psi-threshold-zero", DP, (("spec.features.0.threshold", "0"),), "spec.features[0].threshold"),
    Case("dp-prediction-pvalue-threshold", DP, (("spec.prediction", {"test": "chi2", "threshold": "5"}),),
         "spec.prediction.threshold"),
    Case("dp-duplicate-feature", DP, (("spec.features.1.name", "petal_length"),), "spec.features[1].name"),
    Case("dp-max-below-min-samples", DP, (("spec.window.maxSamples", 10),), "spec.window.maxSamples"),
    Case("dp-retrain-missing", DP, (("spec.action.retrain", DELETE),), "spec.action.retrain"),
    Case("dp-retrain-with-alert", DP, (("spec.action.type", "Alert"),), "spec.action.retrain"),
    Case("dp-template-builtin-without-estimator", DP, (("spec.action.retrain.template.trainer.estimator", DELETE),),
         "spec.action.retrain.template.trainer.estimator"),
]

# need the target ModelDeployment of the example to exist (checked against its spec)
TARGET_CASES = [
    Case("dp-template-other-model", DP, (("spec.action.retrain.template.model", "wine"),),
         "spec.action.retrain.template.model"),
]
