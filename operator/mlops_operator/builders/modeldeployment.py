"""The children of a ModelDeployment: one Deployment per revision, the active and preview Services.

A revision is a short hash of what makes a different server: the model's digest, the runtime
image the user chose, the server args, env and resources. Not replicas (scaling is not a
rollout), and not a default the operator chose (an operator upgrade must not roll out every
model: a new default image reaches the revision's Deployment in place).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import orjson

from ..api import labels as L
from ..api.artifacts import ONNX_PROVIDER_ENV
from ..api.modeldeployment import ModelDeploymentSpec
from .common import (
    MODEL_SIZE_LIMIT,
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
    without_spread,
)

PORT, GRPC_PORT, MONITORING_PORT = 8080, 8081, 8082  # REST, gRPC (both routed), monitoring (pod IP only)
MODEL_DIR = "/mnt/models"
AUTH_DIR, TLS_DIR = "/etc/mlops/auth", "/etc/mlops/tls"
MODEL_VOLUME = "model"
CAPTURE_DIR, CAPTURE_VOLUME = "/mnt/capture", "capture"
SERVER = "server"


def revision(spec: ModelDeploymentSpec, model_digest: str) -> str:
    runtime = spec.runtime.wire() if spec.runtime is not None else {}
    chosen = {k: runtime.get(k) for k in ("image", "args", "env", "resources", "allowUnsafeFormats")}
    if runtime.get("initResources") is not None:  # only when set: the revisions of specs without it stay
        chosen["initResources"] = runtime["initResources"]
    chosen |= {k: runtime[k] for k in ("auth", "tls", "scheduling", "onnxExecutionProvider")
               if runtime.get(k)}  # absent: revisions as before
    return short_hash(model_digest, json.dumps(chosen, sort_keys=True))


def deployment_name(md: Mapping[str, Any], rev: str) -> str:
    return f"{md['metadata']['name']}-{rev}"


def revision_labels(md: Mapping[str, Any], rev: str) -> dict[str, str]:
    return {L.MODEL_DEPLOYMENT: md["metadata"]["name"], L.REVISION: rev}


def analysis_job_name(md: Mapping[str, Any], rev: str) -> str:
    return f"{md['metadata']['name']}-{rev}-an"


TEMPLATE_HASH = L.TEMPLATE_HASH


def template_hash(pod_template: Mapping[str, Any]) -> str:
    """What the operator last wrote into a Deployment's pod template: applied again only on change.

    The hash is of the standard encoder's text (the one written on every Deployment: a new text would be a new
    hash, and every model's Deployment written again on upgrade), remembered by a digest of orjson's sorted text
    of the same template: every reconcile builds the template to compare hashes, and the standard encoder took 28
    of the builder's 40 µs, orjson and the digest 6. Equal orjson texts are equal templates (what is hashed came
    from JSON: no NaN, whose text would be null's)."""
    try:
        key = hashlib.blake2b(orjson.dumps(pod_template, option=orjson.OPT_SORT_KEYS), digest_size=16).digest()
    except TypeError:  # beyond what orjson encodes (an integer past 64 bits): hashed every time
        return short_hash(json.dumps(pod_template, sort_keys=True))
    found = _TEMPLATE_HASHES.get(key)
    if found is None:
        found = short_hash(json.dumps(pod_template, sort_keys=True))
        if len(_TEMPLATE_HASHES) >= TEMPLATE_HASHES_KEPT:
            del _TEMPLATE_HASHES[next(iter(_TEMPLATE_HASHES))]  # the oldest
        _TEMPLATE_HASHES[key] = found
    return found


TEMPLATE_HASHES_KEPT = 8192  # a revision each of thousands of models; about 100 bytes each
_TEMPLATE_HASHES: dict[bytes, str] = {}


def _model_pod(spec: ModelDeploymentSpec, model_uri: str, digest: str | None, image: str,
               main: dict[str, Any], defaults: Mapping[str, Mapping[str, Any]] | None,
               placement: dict[str, Any]) -> dict[str, Any]:
    """A Pod spec whose `main` container finds the verified model directory at MODEL_DIR, placed by
    `placement` (scheduling fields)."""
    storage = spec.storage
    mounts = [{"name": MODEL_VOLUME, "mountPath": MODEL_DIR}, {"name": TMP_VOLUME, "mountPath": "/tmp"}]
    init = {
        "name": "storage-init", "image": image, "command": ["mlops"],
        "args": ["storage-init", "--uri", model_uri, "--dest", MODEL_DIR, *(["--digest", digest] if digest else [])],
        "volumeMounts": mounts, "securityContext": container_security(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "resources": resources("storage-init", spec.runtime.init_resources if spec.runtime else None, defaults),
    }
    if storage and storage.secret_ref:
        init["envFrom"] = [{"secretRef": {"name": storage.secret_ref.name}}]
    main = {**main, "volumeMounts": [{**mounts[0], "readOnly": True}, mounts[1]],
            "securityContext": container_security()}
    pod_spec: dict[str, Any] = {
        "enableServiceLinks": False,
        "automountServiceAccountToken": bool(storage and storage.service_account_name),
        "securityContext": pod_security(),
        "initContainers": [init],
        "containers": [main],
        "volumes": [{"name": MODEL_VOLUME, "emptyDir": {"sizeLimit": MODEL_SIZE_LIMIT}},
                    {"name": TMP_VOLUME, "emptyDir": {"sizeLimit": TMP_SIZE_LIMIT}}],
        **placement,
    }
    if storage is not None and storage.service_account_name:
        pod_spec["serviceAccountName"] = storage.service_account_name
    return pod_spec


def claim_uri(uri: str, mount: str, volume: str) -> tuple[str, list[tuple[dict[str, Any], dict[str, Any]]]]:
    """A capture or labels URI as the runtime reads it: `pvc://CLAIM/PATH` becomes `file://MOUNT/PATH` with the
    claim mounted there (a mount and its volume); any other URI is itself."""
    if not uri.startswith("pvc://"):
        return uri, []
    claim, _, path = uri[len("pvc://"):].partition("/")
    return f"file://{mount}/{path}".rstrip("/"), [({"name": volume, "mountPath": mount},
                                                  {"name": volume, "persistentVolumeClaim": {"claimName": claim}})]


def _capture(spec: ModelDeploymentSpec, args: list[str],
             rev: str) -> tuple[list[dict[str, Any]], list[tuple[dict[str, Any], dict[str, Any]]]]:
    """The server's capture arguments (appended to `args`), its environment and the volumes it writes to: the
    destination's claim, or for S3 the spool in /tmp and spec.storage's credentials (the caller's envFrom)."""
    capture = spec.capture
    if capture is None:
        return [], []
    uri, volumes = claim_uri(capture.destination, CAPTURE_DIR, CAPTURE_VOLUME)
    args += ["--revision", rev, "--capture-to", uri, "--capture-format", capture.format,
             "--capture-sample-rate", capture.sample_rate, "--capture-queue", str(capture.queue),
             "--capture-max-bytes", str(capture.max_file_bytes),
             "--capture-max-age", str(capture.max_file_age_seconds)]
    return [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}], volumes


def server_image(spec: ModelDeploymentSpec, runtime_image: str) -> str:
    """The runtime image a ModelDeployment's Pods and Jobs run: spec.runtime.image, else the operator's."""
    return (spec.runtime.image if spec.runtime and spec.runtime.image else None) or runtime_image


def deployment(md: Mapping[str, Any], spec: ModelDeploymentSpec, rev: str, *, model_uri: str,
               digest: str | None, replicas: int | None, runtime_image: str,
               copy_labels: tuple[str, ...] = (),
               defaults: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """The revision's Deployment; `replicas` None leaves the field to whoever owns it (an autoscaler)."""
    meta = md["metadata"]
    runtime = spec.runtime
    own = revision_labels(md, rev)
    args = ["serve", "--model-dir", MODEL_DIR, "--name", meta["name"], *(["--digest", digest] if digest else []),
            "--host", "$(POD_IP)", "--port", str(PORT), "--grpc-port", str(GRPC_PORT),
            "--monitoring-port", str(MONITORING_PORT)]
    if runtime is not None and runtime.allow_unsafe_formats:
        args.append("--allow-unsafe-formats")
    secrets: list[tuple[str, str, str]] = []  # (volume, Secret, mount path)
    if runtime is not None and runtime.auth is not None:
        secrets.append(("auth", runtime.auth.secret_ref.name, AUTH_DIR))
        args += ["--auth-tokens-file", f"{AUTH_DIR}/tokens"]
    if runtime is not None and runtime.tls is not None:
        secrets.append(("tls", runtime.tls.secret_ref.name, TLS_DIR))
        args += ["--tls-cert", f"{TLS_DIR}/tls.crt", "--tls-key", f"{TLS_DIR}/tls.key"]
    capture_env, capture_volumes = _capture(spec, args, rev)
    args += list(runtime.args or []) if runtime is not None else []
    image = server_image(spec, runtime_image)
    server: dict[str, Any] = {
        "name": SERVER, "image": image, "command": ["mlops"], "args": args,
        "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                *([{"name": ONNX_PROVIDER_ENV, "value": runtime.onnx_execution_provider}]
                  if runtime and runtime.onnx_execution_provider else []),
                *capture_env, *env_list(runtime.env if runtime else None)],
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"},
                  {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
                  {"name": "monitoring", "containerPort": MONITORING_PORT, "protocol": "TCP"}],
        # probes on the monitoring port: plain HTTP and no token, whatever the inference ports require
        "readinessProbe": {"httpGet": {"path": "/v2/health/ready", "port": "monitoring"}, "periodSeconds": 2,
                           "failureThreshold": 3},
        "livenessProbe": {"httpGet": {"path": "/v2/health/live", "port": "monitoring"}, "periodSeconds": 10,
                          "initialDelaySeconds": 10, "failureThreshold": 3},
    }
    server["resources"] = resources("serve", runtime.resources if runtime else None, defaults)
    placement = scheduling(runtime.scheduling if runtime else None, {L.MODEL_DEPLOYMENT: meta["name"]})
    pod_spec = {**_model_pod(spec, model_uri, digest, image, server, defaults, placement),
                "terminationGracePeriodSeconds": 30}
    if secrets:
        main = pod_spec["containers"][0]
        main["volumeMounts"] = [*main["volumeMounts"],
                                *({"name": v, "mountPath": path, "readOnly": True} for v, _, path in secrets)]
        pod_spec["volumes"] = [*pod_spec["volumes"],
                               *({"name": v, "secret": {"secretName": name, "defaultMode": 0o440}}
                                 for v, name, _ in secrets)]
    main = pod_spec["containers"][0]
    main["volumeMounts"] = [*main["volumeMounts"], *(m for m, _ in capture_volumes)]
    pod_spec["volumes"] = [*pod_spec["volumes"], *(v for _, v in capture_volumes)]
    if spec.capture is not None and spec.capture.destination.startswith("s3://") and spec.storage is not None \
            and spec.storage.secret_ref is not None:  # the server writes to S3 with the namespace's credentials
        main["envFrom"] = [{"secretRef": {"name": spec.storage.secret_ref.name}}]
    template = {"metadata": {"labels": labels(md, own, copy_labels)}, "spec": pod_spec}
    body: dict[str, Any] = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": deployment_name(md, rev), "namespace": meta["namespace"],
                     "labels": labels(md, own, copy_labels), "ownerReferences": [owner_reference(md)],
                     "annotations": {TEMPLATE_HASH: template_hash(template)}},
        "spec": {"selector": {"matchLabels": own}, "template": template},
    }
    if replicas is not None:
        body["spec"]["replicas"] = replicas
    return body


def analysis_job(md: Mapping[str, Any], spec: ModelDeploymentSpec, rev: str, *, model_uri: str, digest: str | None,
                 candidate: list[str], stable: list[str], runtime_image: str,
                 copy_labels: tuple[str, ...] = (),
                 defaults: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """`mlops analyze` replaying the candidate's validation sample against both revisions' pods.

    It reaches them by the pod URLs given as arguments and reads no API: it mounts no token (unless
    spec.storage names a ServiceAccount, for the storage initializer's credentials)."""
    meta = md["metadata"]
    analysis = spec.analysis
    duration = analysis.duration_seconds if analysis else 0
    windows = max(1, duration // analysis.interval_seconds) if analysis and duration else 1
    image = server_image(spec, runtime_image)
    args = ["analyze", "--model-dir", MODEL_DIR, "--name", meta["name"], "--candidate", ",".join(candidate),
            "--duration-seconds", str(duration), "--windows", str(windows)]
    if stable:
        args += ["--stable", ",".join(stable)]
    main = {"name": "analyze", "image": image, "command": ["mlops"], "args": args,
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "resources": resources("analyze", analysis.resources if analysis else None, defaults)}
    # not the revision's labels: the analysis Pod must never be selected by a Service or taken for a server
    own = {L.ANALYSIS_OF: meta["name"], L.ANALYSIS: rev}
    chosen = analysis.scheduling if analysis and analysis.scheduling else \
        without_spread(spec.runtime.scheduling if spec.runtime else None)
    pod_spec = {**_model_pod(spec, model_uri, digest, image, main, defaults, scheduling(chosen)),
                "restartPolicy": "Never"}
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": analysis_job_name(md, rev), "namespace": meta["namespace"],
                     "labels": labels(md, own, copy_labels), "ownerReferences": [owner_reference(md)]},
        "spec": {"backoffLimit": 0, "activeDeadlineSeconds": duration + 300,
                 "template": {"metadata": {"labels": labels(md, own, copy_labels)}, "spec": pod_spec}},
    }


def service(md: Mapping[str, Any], rev: str | None, preview: bool = False,
            copy_labels: tuple[str, ...] = ()) -> dict[str, Any]:
    """`<name>` selects the stable revision; `<name>-preview` the candidate. `rev` "*" selects every
    revision (a canary by replica ratio); None selects nothing."""
    meta = md["metadata"]
    name = f"{meta['name']}-preview" if preview else meta["name"]
    selector = {L.MODEL_DEPLOYMENT: meta["name"]} if rev == "*" else revision_labels(md, rev or "none")
    ports = [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"},
             {"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc", "protocol": "TCP",
              "appProtocol": "kubernetes.io/h2c"}]
    if preview:  # where the stable revision's servers mirror shadow traffic (calls counted as replayed, never
        # captured); no HTTPRoute routes this port, and the pods' IPs reach it anyway
        ports.append({"name": "monitoring", "port": MONITORING_PORT, "targetPort": "monitoring", "protocol": "TCP"})
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": meta["namespace"],
                     "labels": labels(md, {L.MODEL_DEPLOYMENT: meta["name"]}, copy_labels),
                     "ownerReferences": [owner_reference(md)]},
        "spec": {"selector": selector, "ports": ports},
    }


def http_route(md: Mapping[str, Any], spec: ModelDeploymentSpec, api_version: str, weights: tuple[int, int],
               copy_labels: tuple[str, ...] = (), mirror: int | None = None) -> dict[str, Any]:
    """Gateway API HTTPRoute `<name>`: the active Service and the preview Service, weighted; with `mirror`, a
    RequestMirror filter copying that percent of the requests to the preview Service (a shadow: the gateway
    discards its answers). `percent` is left out at 100, for gateways older than its GEP-3171."""
    meta = md["metadata"]
    assert spec.traffic is not None and spec.traffic.gateway is not None
    parents = [p.wire() for p in spec.traffic.gateway.parent_refs]
    backends = [{"name": meta["name"], "port": 80, "weight": weights[0]},
                {"name": f"{meta['name']}-preview", "port": 80, "weight": weights[1]}]
    rule: dict[str, Any] = {"matches": route_matches(meta["name"]), "backendRefs": backends}
    if mirror:
        rule["filters"] = [{"type": "RequestMirror", "requestMirror": {
            "backendRef": {"name": f"{meta['name']}-preview", "port": 80},
            **({"percent": mirror} if mirror < 100 else {})}}]
    return {
        "apiVersion": api_version, "kind": "HTTPRoute",
        "metadata": {"name": meta["name"], "namespace": meta["namespace"],
                     "labels": labels(md, {L.MODEL_DEPLOYMENT: meta["name"]}, copy_labels),
                     "ownerReferences": [owner_reference(md)]},
        # only the inference and health paths (the monitoring endpoints are not on these ports anyway)
        "spec": {"parentRefs": parents, "rules": [rule]},
    }


def route_matches(name: str) -> list[dict[str, Any]]:
    return [{"path": {"type": "PathPrefix", "value": "/v2/health"}},
            {"path": {"type": "Exact", "value": "/v2"}},
            {"path": {"type": "PathPrefix", "value": f"/v2/models/{name}"}}]


def owned_by(child: Mapping[str, Any], md: Mapping[str, Any]) -> bool:
    return any(r.get("uid") == md["metadata"].get("uid") for r in child["metadata"].get("ownerReferences") or ())


def route_mirror(route: Mapping[str, Any] | None) -> int | None:
    """The percent an observed HTTPRoute's RequestMirror filter copies (None: no such filter)."""
    rules = ((route or {}).get("spec") or {}).get("rules") or [{}]
    for f in rules[0].get("filters") or ():
        if f.get("type") == "RequestMirror":
            return int((f.get("requestMirror") or {}).get("percent", 100))
    return None


def route_weights(route: Mapping[str, Any] | None) -> tuple[int, ...] | None:
    """The weights an observed HTTPRoute sends to its backends (None when there is none)."""
    if route is None:
        return None
    rules = (route.get("spec") or {}).get("rules") or [{}]
    return tuple(int(b.get("weight", 1)) for b in rules[0].get("backendRefs") or ())
