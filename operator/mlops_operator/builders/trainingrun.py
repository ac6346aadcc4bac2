"""The training Job of a TrainingRun."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..api import labels as L
from ..api.artifacts import join
from ..api.trainingrun import TrainingRunSpec, Volume
from .common import (
    EMPTY_DIR_SIZE_LIMIT,
    TMP_SIZE_LIMIT,
    TMP_VOLUME,
    container_security,
    env_list,
    labels,
    owner_reference,
    pod_security,
    resources,
    scheduling,
    short_hash,
)

PIPELINE_MOUNT = "/etc/mlops/pipeline"
TRAINER = "trainer"


def _volume(v: Volume) -> dict[str, Any]:
    if v.config_map is not None:
        return {"name": v.name, "configMap": {"name": v.config_map.name}}
    if v.secret is not None:
        return {"name": v.name, "secret": {"secretName": v.secret.name}}
    if v.persistent_volume_claim is not None:
        return {"name": v.name, "persistentVolumeClaim": {"claimName": v.persistent_volume_claim.name}}
    return {"name": v.name, "emptyDir": {"sizeLimit": EMPTY_DIR_SIZE_LIMIT, **(v.empty_dir or {})}}


def job_name(run: Mapping[str, Any]) -> str:
    """Deterministic per object: a restarted operator finds the Job instead of making a second one."""
    meta = run["metadata"]
    return f"{meta['name']}-{short_hash(meta['uid'])}"


def output_uri(run: Mapping[str, Any], spec: TrainingRunSpec, artifact_root: str) -> str:
    meta = run["metadata"]
    return spec.output_uri or join(artifact_root, meta["namespace"], spec.model, meta["name"])


def training_job(run: Mapping[str, Any], spec: TrainingRunSpec, *, runtime_image: str, artifact_root: str,
                 copy_labels: tuple[str, ...] = (),
                 defaults: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    meta = run["metadata"]
    own = {L.TRAINING_RUN: meta["name"], L.MODEL: spec.model}
    env: list[dict[str, Any]] = [
        {"name": "MLOPS_RUN", "value": meta["name"]},
        {"name": "MLOPS_MODEL", "value": spec.model},
        {"name": "MLOPS_PARAMS", "value": json.dumps(spec.params or {}, sort_keys=True)},
        {"name": "MLOPS_OUTPUT_URI", "value": output_uri(run, spec, artifact_root)},
        {"name": "MLOPS_SEED", "value": str(spec.seed)},
    ]
    if spec.dataset is not None:
        env.append({"name": "MLOPS_DATASET_URI", "value": spec.dataset.uri})
        if spec.dataset.version:
            env.append({"name": "MLOPS_DATASET_VERSION", "value": spec.dataset.version})
        if spec.dataset.format:
            env.append({"name": "MLOPS_DATASET_FORMAT", "value": spec.dataset.format})
        if spec.dataset.target_column:
            env.append({"name": "MLOPS_TARGET_COLUMN", "value": spec.dataset.target_column})
    volumes: list[dict[str, Any]] = [{"name": TMP_VOLUME, "emptyDir": {"sizeLimit": TMP_SIZE_LIMIT}}]
    mounts: list[dict[str, Any]] = [{"name": TMP_VOLUME, "mountPath": "/tmp"}]
    container: dict[str, Any] = {"name": TRAINER}
    if spec.trainer is not None:
        t = spec.trainer
        container["image"] = t.image or runtime_image
        container["command"] = t.command or ["mlops", "train"]
        if t.args:
            container["args"] = t.args
        if t.estimator:
            env.append({"name": "MLOPS_ESTIMATOR", "value": t.estimator})
        env += env_list(t.env)
        for v in t.volumes or ():
            mounts.append({"name": v.name, "mountPath": v.mount_path, "readOnly": v.read_only})
            volumes.append(_volume(v))
    else:
        assert spec.pipeline is not None
        p = spec.pipeline
        container["image"] = runtime_image
        container["command"] = ["mlops", "train-pipeline"]
        env.append({"name": "MLOPS_PIPELINE_ARGUMENTS", "value": json.dumps(p.arguments or {}, sort_keys=True)})
        if p.config_map_key_ref is not None:
            volumes.append({"name": "pipeline", "configMap": {
                "name": p.config_map_key_ref.name,
                "items": [{"key": p.config_map_key_ref.key, "path": "pipeline.yaml"}]}})
            mounts.append({"name": "pipeline", "mountPath": PIPELINE_MOUNT, "readOnly": True})
            env.append({"name": "MLOPS_PIPELINE_FILE", "value": f"{PIPELINE_MOUNT}/pipeline.yaml"})
        else:
            env.append({"name": "MLOPS_PIPELINE", "value": p.inline})
    container["resources"] = resources("train", spec.trainer.resources if spec.trainer else None, defaults)
    storage = spec.storage
    if storage is not None and storage.secret_ref is not None:
        container["envFrom"] = [{"secretRef": {"name": storage.secret_ref.name}}]
    container.update({
        "env": env,
        "volumeMounts": mounts,
        "securityContext": container_security(),
        # a crash's last lines become the reason in status when the trainer could not say it
        "terminationMessagePolicy": "FallbackToLogsOnError",
    })
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "enableServiceLinks": False,
        "securityContext": pod_security(),
        "containers": [container],
        "volumes": volumes,
        "automountServiceAccountToken": bool(storage and storage.service_account_name),
        **scheduling(spec.scheduling),
    }
    if storage is not None and storage.service_account_name:
        pod_spec["serviceAccountName"] = storage.service_account_name
    job_spec: dict[str, Any] = {
        "backoffLimit": spec.backoff_limit,
        "template": {"metadata": {"labels": labels(run, own, copy_labels)}, "spec": pod_spec},
    }
    if spec.active_deadline_seconds:
        job_spec["activeDeadlineSeconds"] = spec.active_deadline_seconds
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": job_name(run), "namespace": meta["namespace"],
                     "labels": labels(run, own, (*copy_labels, L.KUEUE_QUEUE)),
                     "ownerReferences": [owner_reference(run)]},
        "spec": job_spec,
    }
