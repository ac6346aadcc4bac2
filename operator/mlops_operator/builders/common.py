"""What every child manifest shares: names, labels, ownership, the restricted security profile."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

from ..api import API_VERSION
from ..api.labels import MANAGED_BY

# labels copied from a resource to its children; never a GitOps tool's tracking label
# (Argo CD's app.kubernetes.io/instance, Flux's kustomize.toolkit.fluxcd.io/*): it would prune them
COPIED_LABELS = frozenset({"app.kubernetes.io/name", "app.kubernetes.io/part-of", "app.kubernetes.io/version",
                           "app.kubernetes.io/component"})
RUN_AS = 65532  # the user of the runtime image (images/Dockerfile)
TMP_VOLUME = "tmp"


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


def env_list(env: Iterable[Any] | None) -> list[dict[str, Any]]:
    """The spec's EnvVar models as Kubernetes EnvVar dicts."""
    return [e.wire() for e in env or ()]
