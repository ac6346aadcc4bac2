"""The children of a ModelDeployment: one Deployment per revision, the active and preview Services.

A revision is a short hash of what makes a different server: the model's digest, the runtime
image the user chose, the server args, env and resources. Not replicas (scaling is not a
rollout), and not a default the operator chose (an operator upgrade must not roll out every
model: a new default image reaches the revision's Deployment in place).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..api.modeldeployment import ModelDeploymentSpec
from .common import TMP_VOLUME, container_security, env_list, labels, owner_reference, pod_security, short_hash

PORT = 8080
MODEL_DIR = "/mnt/models"
MODEL_VOLUME = "model"
SERVER = "server"


def revision(spec: ModelDeploymentSpec, model_digest: str) -> str:
    runtime = spec.runtime.wire() if spec.runtime is not None else {}
    chosen = {k: runtime.get(k) for k in ("image", "args", "env", "resources", "allowUnsafeFormats")}
    return short_hash(model_digest, json.dumps(chosen, sort_keys=True))


def deployment_name(md: Mapping[str, Any], rev: str) -> str:
    return f"{md['metadata']['name']}-{rev}"


def revision_labels(md: Mapping[str, Any], rev: str) -> dict[str, str]:
    return {"mlops.dev/modeldeployment": md["metadata"]["name"], "mlops.dev/revision": rev}


def deployment(md: Mapping[str, Any], spec: ModelDeploymentSpec, rev: str, *, model_uri: str, digest: str,
               replicas: int, runtime_image: str, copy_labels: tuple[str, ...] = ()) -> dict[str, Any]:
    meta = md["metadata"]
    runtime = spec.runtime
    image = (runtime.image if runtime and runtime.image else None) or runtime_image
    own = revision_labels(md, rev)
    storage = spec.storage
    env_from = [{"secretRef": {"name": storage.secret_ref.name}}] if storage and storage.secret_ref else []
    args = ["serve", "--model-dir", MODEL_DIR, "--name", meta["name"], "--digest", digest,
            "--host", "$(POD_IP)", "--port", str(PORT)]
    if runtime is not None and runtime.allow_unsafe_formats:
        args.append("--allow-unsafe-formats")
    args += list(runtime.args or []) if runtime is not None else []
    mounts = [{"name": MODEL_VOLUME, "mountPath": MODEL_DIR}, {"name": TMP_VOLUME, "mountPath": "/tmp"}]
    server: dict[str, Any] = {
        "name": SERVER, "image": image, "command": ["mlops"], "args": args,
        "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                *env_list(runtime.env if runtime else None)],
        "ports": [{"name": "http", "containerPort": PORT}],
        "readinessProbe": {"httpGet": {"path": "/v2/health/ready", "port": "http"}, "periodSeconds": 2,
                           "failureThreshold": 3},
        "livenessProbe": {"httpGet": {"path": "/v2/health/live", "port": "http"}, "periodSeconds": 10,
                          "initialDelaySeconds": 10, "failureThreshold": 3},
        "volumeMounts": [{**mounts[0], "readOnly": True}, mounts[1]],
        "securityContext": container_security(),
    }
    if runtime is not None and runtime.resources is not None:
        server["resources"] = runtime.resources.wire()
    init = {
        "name": "storage-init", "image": image, "command": ["mlops"],
        "args": ["storage-init", "--uri", model_uri, "--dest", MODEL_DIR, "--digest", digest],
        "volumeMounts": mounts, "securityContext": container_security(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if env_from:
        init["envFrom"] = env_from
    pod_spec: dict[str, Any] = {
        "enableServiceLinks": False,
        "automountServiceAccountToken": bool(storage and storage.service_account_name),
        "securityContext": pod_security(),
        "initContainers": [init],
        "containers": [server],
        "volumes": [{"name": MODEL_VOLUME, "emptyDir": {}}, {"name": TMP_VOLUME, "emptyDir": {}}],
        "terminationGracePeriodSeconds": 30,
    }
    if storage is not None and storage.service_account_name:
        pod_spec["serviceAccountName"] = storage.service_account_name
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": deployment_name(md, rev), "namespace": meta["namespace"],
                     "labels": labels(md, own, copy_labels), "ownerReferences": [owner_reference(md)]},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": own},
            "template": {"metadata": {"labels": labels(md, own, copy_labels)}, "spec": pod_spec},
        },
    }


def service(md: Mapping[str, Any], rev: str | None, preview: bool = False,
            copy_labels: tuple[str, ...] = ()) -> dict[str, Any]:
    """`<name>` selects the stable revision; `<name>-preview` the candidate."""
    meta = md["metadata"]
    name = f"{meta['name']}-preview" if preview else meta["name"]
    selector = revision_labels(md, rev) if rev else {"mlops.dev/modeldeployment": meta["name"],
                                                     "mlops.dev/revision": "none"}
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": meta["namespace"],
                     "labels": labels(md, {"mlops.dev/modeldeployment": meta["name"]}, copy_labels),
                     "ownerReferences": [owner_reference(md)]},
        "spec": {"selector": selector, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
    }
