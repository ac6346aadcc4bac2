"""The training Job of a TrainingRun."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..api import API_VERSION
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


def trial_run(sweep_run: Mapping[str, Any], name: str, spec: dict[str, Any],
              copy_labels: tuple[str, ...] = ()) -> dict[str, Any]:
    """One trial of a sweep: a TrainingRun the sweep owns, of the same model, with the trial's spec."""
    meta = sweep_run["metadata"]
    return {"apiVersion": API_VERSION, "kind": "TrainingRun",
            "metadata": {"name": name, "namespace": meta["namespace"],
                         "labels": labels(sweep_run, {L.MODEL: spec["model"]}, (*copy_labels, L.KUEUE_QUEUE)),
                         "ownerReferences": [owner_reference(sweep_run)]},
            "spec": spec}


def job_name(run: Mapping[str, Any]) -> str:
    """Deterministic per object: a restarted operator finds the Job instead of making a second one."""
    meta = run["metadata"]
    return f"{meta['name']}-{short_hash(meta['uid'])}"


def output_uri(run: Mapping[str, Any], spec: TrainingRunSpec, artifact_root: str) -> str:
    meta = run["metadata"]
    return spec.output_uri or join(artifact_root, meta["namespace"], spec.model, meta["name"])


def workers_name(run: Mapping[str, Any]) -> str:
    """A distributed run's headless Service (and its Jobs' stem): a DNS label that leaves room for
    the workers' host names `<it>-<rank>` (at most 63 characters)."""
    meta = run["metadata"]
    stem = ("t" if not meta["name"][0].isalpha() else "") + meta["name"]
    return f"{stem[:50].rstrip('-.').replace('.', '-')}-{short_hash(meta['uid'])}"


def worker_host(run: Mapping[str, Any], rank: int) -> str:
    return f"{workers_name(run)}-{rank}"


def coordinator(run: Mapping[str, Any]) -> str:
    """Rank 0's address: its host name under the headless Service (resolved through the search path)."""
    return f"{worker_host(run, 0)}.{workers_name(run)}"


def _distributed_env(run: Mapping[str, Any], spec: TrainingRunSpec, rank: int | None) -> list[dict[str, Any]]:
    """The variables PyTorch's env:// rendezvous and XGBoost's collective read. `rank` None: an Indexed
    Job, whose Pods learn their index from the annotation the Job controller writes."""
    assert spec.distributed is not None
    d = spec.distributed
    rank_var: dict[str, Any] = {"value": str(rank)} if rank is not None else {"valueFrom": {"fieldRef": {
        "fieldPath": f"metadata.annotations['{L.COMPLETION_INDEX}']"}}}
    common = {"WORLD_SIZE": str(d.workers), "MASTER_ADDR": coordinator(run), "MASTER_PORT": str(d.port),
              "DMLC_NUM_WORKER": str(d.workers), "DMLC_TRACKER_URI": coordinator(run),
              "DMLC_TRACKER_PORT": str(d.port)}
    return [{"name": "RANK", **rank_var}, {"name": "DMLC_TASK_ID", **rank_var},
            *({"name": k, "value": v} for k, v in common.items())]


def _contract_env(run: Mapping[str, Any], spec: TrainingRunSpec, artifact_root: str,
                  reference_profile: str | None = None) -> list[dict[str, Any]]:
    """What every trainer is told: the run, the model, its parameters, where to write, the dataset, the data
    checks and the previous version's profile they compare with."""
    env: list[dict[str, Any]] = [
        {"name": "MLOPS_RUN", "value": run["metadata"]["name"]},
        {"name": "MLOPS_MODEL", "value": spec.model},
        {"name": "MLOPS_PARAMS", "value": json.dumps(spec.params or {}, sort_keys=True)},
        {"name": "MLOPS_OUTPUT_URI", "value": output_uri(run, spec, artifact_root)},
        {"name": "MLOPS_SEED", "value": str(spec.seed)},
    ]
    if spec.dataset is not None and spec.dataset.uri is not None:
        env.append({"name": "MLOPS_DATASET_URI", "value": spec.dataset.uri})
    if spec.dataset is not None and spec.dataset.from_capture is not None:
        env.append({"name": "MLOPS_DATASET_FROM_CAPTURE",
                    "value": json.dumps(spec.dataset.from_capture.wire(), sort_keys=True)})
    if spec.dataset is not None:
        if spec.dataset.version:
            env.append({"name": "MLOPS_DATASET_VERSION", "value": spec.dataset.version})
        if spec.dataset.format:
            env.append({"name": "MLOPS_DATASET_FORMAT", "value": spec.dataset.format})
        if spec.dataset.target_column:
            env.append({"name": "MLOPS_TARGET_COLUMN", "value": spec.dataset.target_column})
    if spec.data_checks is not None:
        env.append({"name": "MLOPS_DATA_CHECKS", "value": json.dumps(spec.data_checks.wire(), sort_keys=True)})
        if reference_profile:
            env.append({"name": "MLOPS_REFERENCE_PROFILE", "value": reference_profile})
    return env


def _reference(record: Mapping[str, Any] | None) -> str | None:
    """The previous version's profile the start record names (the data checks compare with it)."""
    return ((record or {}).get("reproducibility") or {}).get("referenceProfile")


STARTED_LIMIT = 64 * 1024
"""The longest start record a Job carries: an object's annotations together may not pass 256 KiB, and a run's
params are the user's; a longer record is left off (the status write that records it then has no fallback)."""


def _started(record: Mapping[str, Any] | None) -> dict[str, Any]:
    """The run's start record (startTime, startedGeneration, reproducibility: what its status records when the
    Job is made) as an annotation on the Job: when that status write is refused (the spec was edited at that
    moment), the next reconcile finds the Job and recovers the record from it."""
    said = json.dumps(dict(record), sort_keys=True) if record else ""
    return {"annotations": {L.STARTED: said}} if said and len(said) <= STARTED_LIMIT else {}


# a TrainJob's trainer takes env, not envFrom: the storage Secret's usual keys, each optional
STORAGE_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION",
                "AWS_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")
TRAINER_GROUP = "trainer.kubeflow.org"


def train_job(run: Mapping[str, Any], spec: TrainingRunSpec, *, api_version: str, runtime_image: str,
              artifact_root: str, copy_labels: tuple[str, ...] = (),
              defaults: Mapping[str, Mapping[str, Any]] | None = None,
              record: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A distributed run delegated to Kubeflow Trainer: one TrainJob of the chosen runtime, `workers`
    nodes, the trainer container and the contract's variables; the runtime makes the workers. `record`:
    the run's start record (see `_started`)."""
    assert spec.distributed is not None and spec.distributed.kubeflow_trainer is not None and spec.trainer
    meta, t, kf = run["metadata"], spec.trainer, spec.distributed.kubeflow_trainer
    own = {L.TRAINING_RUN: meta["name"], L.MODEL: spec.model}
    env = _contract_env(run, spec, artifact_root, _reference(record))
    if t.estimator:
        env.append({"name": "MLOPS_ESTIMATOR", "value": t.estimator})
    env += env_list(t.env)
    if spec.storage is not None and spec.storage.secret_ref is not None:
        env += [{"name": k, "valueFrom": {"secretKeyRef": {"name": spec.storage.secret_ref.name, "key": k,
                                                           "optional": True}}} for k in STORAGE_KEYS]
    trainer: dict[str, Any] = {"image": t.image or runtime_image, "command": t.command or ["mlops", "train"],
                               "env": env, "numNodes": spec.distributed.workers,
                               "resourcesPerNode": resources("train", t.resources, defaults)}
    if t.args:
        trainer["args"] = t.args
    if kf.num_proc_per_node:
        trainer["numProcPerNode"] = kf.num_proc_per_node
    return {
        "apiVersion": api_version,
        "kind": "TrainJob",
        "metadata": {"name": workers_name(run), "namespace": meta["namespace"],
                     "labels": labels(run, own, (*copy_labels, L.KUEUE_QUEUE)), **_started(record),
                     "ownerReferences": [owner_reference(run)]},
        "spec": {"runtimeRef": {"name": kf.runtime_ref.name, "apiGroup": TRAINER_GROUP, "kind": kf.runtime_ref.kind},
                 "trainer": trainer},
    }


def workers_service(run: Mapping[str, Any], spec: TrainingRunSpec,
                    copy_labels: tuple[str, ...] = ()) -> dict[str, Any]:
    """The headless Service that names a distributed run's workers `<worker>.<service>`. Not-ready
    addresses are published: workers find each other while they start."""
    assert spec.distributed is not None
    meta = run["metadata"]
    own = {L.TRAINING_RUN: meta["name"], L.MODEL: spec.model}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": workers_name(run), "namespace": meta["namespace"],
                     "labels": labels(run, own, copy_labels), "ownerReferences": [owner_reference(run)]},
        "spec": {"clusterIP": "None", "publishNotReadyAddresses": True,
                 "selector": {L.TRAINING_RUN: meta["name"], L.WORKER_OF: workers_name(run)},
                 "ports": [{"name": "coordinator", "port": spec.distributed.port, "protocol": "TCP"}]},
    }


def job_names(run: Mapping[str, Any], spec: TrainingRunSpec, indexed: bool = False) -> list[str]:
    """The names `training_jobs` gives its Jobs (rank order), without building them."""
    if spec.distributed is None:
        return [job_name(run)]
    if indexed:
        return [workers_name(run)]
    return [worker_host(run, r) for r in range(spec.distributed.workers)]


def training_jobs(run: Mapping[str, Any], spec: TrainingRunSpec, *, runtime_image: str, artifact_root: str,
                  copy_labels: tuple[str, ...] = (), defaults: Mapping[str, Mapping[str, Any]] | None = None,
                  indexed: bool = False, record: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """A run's Jobs: one, or for a distributed run one Indexed Job (`indexed`: the cluster serves
    completionMode) or one Job per worker (rank order), all with the same Pod template but the rank."""
    def job(rank: int | None) -> dict[str, Any]:
        return training_job(run, spec, runtime_image=runtime_image, artifact_root=artifact_root,
                            copy_labels=copy_labels, defaults=defaults, rank=rank, record=record)
    if spec.distributed is None or indexed:
        return [job(None)]
    return [job(r) for r in range(spec.distributed.workers)]


def training_job(run: Mapping[str, Any], spec: TrainingRunSpec, *, runtime_image: str, artifact_root: str,
                 copy_labels: tuple[str, ...] = (),
                 defaults: Mapping[str, Mapping[str, Any]] | None = None, rank: int | None = None,
                 record: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The training Job; of a distributed run, worker `rank`'s Job, or (rank None) the Indexed Job of all.
    `record`: the run's start record (see `_started`)."""
    meta = run["metadata"]
    own = {L.TRAINING_RUN: meta["name"], L.MODEL: spec.model}
    distributed = spec.distributed
    if distributed is not None:
        own[L.WORKER_OF] = workers_name(run)
        if rank is not None:
            own[L.RANK] = str(rank)
    env = _contract_env(run, spec, artifact_root, _reference(record))
    if distributed is not None:
        env += _distributed_env(run, spec, rank)
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
    if distributed is not None:
        container["ports"] = [{"name": "coordinator", "containerPort": distributed.port, "protocol": "TCP"}]
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
    name = job_name(run)
    if distributed is not None:
        pod_spec["subdomain"] = workers_name(run)
        if rank is None:  # the Job controller names each Pod `<job>-<index>` and annotates its index
            name = workers_name(run)
            job_spec.update({"completionMode": "Indexed", "completions": distributed.workers,
                             "parallelism": distributed.workers})
        else:
            name = pod_spec["hostname"] = worker_host(run, rank)
    if spec.active_deadline_seconds:
        job_spec["activeDeadlineSeconds"] = spec.active_deadline_seconds
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": meta["namespace"],
                     "labels": labels(run, own, (*copy_labels, L.KUEUE_QUEUE)), **_started(record),
                     "ownerReferences": [owner_reference(run)]},
        "spec": job_spec,
    }
