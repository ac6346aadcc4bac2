"""What every child manifest shares: names, labels, ownership, the restricted security profile."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

from ..api import API_VERSION
from ..api.labels import MANAGED_BY
from ..api.scheduling import Scheduling, ServingScheduling
from ..config import CHILD_ROLES

# labels copied from a resource to its children; never a GitOps tool's tracking label
# (Argo CD's app.kubernetes.io/instance, Flux's kustomize.toolkit.fluxcd.io/*): it would prune them
COPIED_LABELS = frozenset({"app.kubernetes.io/name", "app.kubernetes.io/part-of", "app.kubernetes.io/version",
                           "app.kubernetes.io/component"})
RUN_AS = 65532  # the user of the runtime image (images/Dockerfile)
TMP_VOLUME = "tmp"
# emptyDir sizes: the kubelet evicts a Pod past them instead of letting it fill the node's disk
TMP_SIZE_LIMIT = "1Gi"
MODEL_SIZE_LIMIT = "10Gi"  # a model directory (storage-init copies it there)
EMPTY_DIR_SIZE_LIMIT = "10Gi"  # a trainer's emptyDir volume that names no sizeLimit of its own

# Every child container's requests and limits unless the resource names its own (then all of its own),
# per role; MLOPS_CHILD_RESOURCES (the chart's childResources) replaces a role's default. Measured by
# `python bench/child_resources.py` on the demo's containers under the real node's cgroups (v1
# memory.max_usage_in_bytes; cpuacct over the busiest second), 2026-12-01:
#   role          peak memory  peak CPU   → memory request / limit     CPU request / limit
#   train         167 MiB      1.14       192Mi / 1Gi                  500m / 2500m
#   serve         144 MiB      0.99       160Mi / 512Mi                250m / 2
#   storage-init   58 MiB      0.93        64Mi / 256Mi                100m / 2
#   analyze        28 MiB      0.53        32Mi / 128Mi                100m / 1100m
#   registry       (not measured: a urllib client like analyze without its sample; analyze's numbers)
#   quality        692 MiB, 1 core at 1,000,000 labels and predictions (bench/quality_bench.py: `mlops quality`'s
#                  peak RSS; it grows with the window) → 256Mi / 1536Mi, 250m / 1
# Memory: the request is the peak; the limit at least twice it, more where a role's use grows with what it
# is given (a pipeline's components, a larger model or sample, batches under load). CPU: the peak is
# start-up (imports), so the request is what a steady container needs and the limit twice the peak (a
# limit keeps a namespace with a compute ResourceQuota admitting the Pods). Real training data needs more:
# spec.trainer.resources.
DEFAULT_RESOURCES: dict[str, dict[str, dict[str, str]]] = {
    "train": {"requests": {"cpu": "500m", "memory": "192Mi"}, "limits": {"cpu": "2500m", "memory": "1Gi"}},
    "serve": {"requests": {"cpu": "250m", "memory": "160Mi"}, "limits": {"cpu": "2", "memory": "512Mi"}},
    "storage-init": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "2", "memory": "256Mi"}},
    "analyze": {"requests": {"cpu": "100m", "memory": "32Mi"}, "limits": {"cpu": "1100m", "memory": "128Mi"}},
    "registry": {"requests": {"cpu": "100m", "memory": "32Mi"}, "limits": {"cpu": "1100m", "memory": "128Mi"}},
    "quality": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "1536Mi"}},
}
if tuple(DEFAULT_RESOURCES) != CHILD_ROLES:  # the roles MLOPS_CHILD_RESOURCES may name
    raise ImportError(f"DEFAULT_RESOURCES has roles {tuple(DEFAULT_RESOURCES)}, not {CHILD_ROLES}")


def scheduling(chosen: Scheduling | None, spread_selector: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The Pod spec fields of `chosen`, as written; a spread constraint without a labelSelector spreads the
    Pods `spread_selector` selects (the ModelDeployment's serving Pods)."""
    if chosen is None:
        return {}
    fields = chosen.wire()
    for constraint in fields.get("topologySpreadConstraints") or ():
        if "labelSelector" not in constraint and spread_selector:
            constraint["labelSelector"] = {"matchLabels": dict(spread_selector)}
    return fields


def without_spread(chosen: ServingScheduling | None) -> Scheduling | None:
    """Serving scheduling for a Pod that is no serving replica (the analysis Job's)."""
    if chosen is None:
        return None
    return Scheduling.model_validate(chosen.model_dump(exclude={"topology_spread_constraints"}))


def short_hash(*parts: str, length: int = 8) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:length]


def labels(parent: Mapping[str, Any], extra: Mapping[str, str], copy: Iterable[str] = ()) -> dict[str, str]:
    allowed = COPIED_LABELS | set(copy)
    own = parent["metadata"].get("labels") or {}
    return {**{k: v for k, v in own.items() if k in allowed}, **MANAGED_BY, **extra}


def owner_reference(parent: Mapping[str, Any]) -> dict[str, Any]:
    meta = parent["metadata"]
    return {"apiVersion": API_VERSION, "kind": parent["kind"], "name": meta["name"], "uid": meta["uid"],
            "controller": True, "blockOwnerDeletion": True}


def pod_security() -> dict[str, Any]:
    """The restricted Pod Security Standard, whatever the spec says."""
    return {"runAsNonRoot": True, "runAsUser": RUN_AS, "runAsGroup": RUN_AS, "fsGroup": RUN_AS,
            "seccompProfile": {"type": "RuntimeDefault"}}


def container_security() -> dict[str, Any]:
    return {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}


def resources(role: str, chosen: Any | None, defaults: Mapping[str, Mapping[str, Any]] | None = None,
              ) -> dict[str, Any]:
    """A container's resources: the spec's `chosen` ResourceRequirements as a whole, else the role's
    default (`defaults`, the operator's settings, over DEFAULT_RESOURCES)."""
    if chosen is not None:
        return dict(chosen.wire())
    role_default = (defaults or {}).get(role) or DEFAULT_RESOURCES[role]
    return {k: dict(v) for k, v in role_default.items()}


def env_list(env: Iterable[Any] | None) -> list[dict[str, Any]]:
    """The spec's EnvVar models as Kubernetes EnvVar dicts."""
    return [e.wire() for e in env or ()]


def call_job(parent: Mapping[str, Any], name: str, own: Mapping[str, str], container: dict[str, Any], *,
             placement: dict[str, Any], copy_labels: tuple[str, ...] = (),
             volumes: Iterable[dict[str, Any]] = (), service_account: str | None = None,
             deadline_seconds: int = 300) -> dict[str, Any]:
    """A Job that makes one call for the operator and answers in its termination message (a registry call, a
    quality join): restricted, /tmp its only writable path besides `volumes`, no API token unless it runs as
    `service_account` (workload identity), tried twice, deleted by the operator once its answer is read."""
    meta = parent["metadata"]
    container = {**container, "volumeMounts": [{"name": TMP_VOLUME, "mountPath": "/tmp"},
                                               *container.get("volumeMounts", ())],
                 "securityContext": container_security(), "terminationMessagePolicy": "FallbackToLogsOnError"}
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never", "enableServiceLinks": False, "automountServiceAccountToken": bool(service_account),
        "securityContext": pod_security(), "containers": [container],
        "volumes": [{"name": TMP_VOLUME, "emptyDir": {"sizeLimit": TMP_SIZE_LIMIT}}, *volumes],
        **placement,
    }
    if service_account:
        pod_spec["serviceAccountName"] = service_account
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": meta["namespace"], "labels": labels(parent, own, copy_labels),
                     "ownerReferences": [owner_reference(parent)]},
        "spec": {"backoffLimit": 1, "activeDeadlineSeconds": deadline_seconds,
                 "template": {"metadata": {"labels": labels(parent, own, copy_labels)}, "spec": pod_spec}},
    }
