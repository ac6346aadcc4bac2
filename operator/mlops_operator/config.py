"""Configuration from `MLOPS_*` environment variables, read in this one module."""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def cache_dir() -> Path:
    """MLOPS_CACHE_DIR, else $XDG_CACHE_HOME/mlops-operator, else ~/.cache/mlops-operator."""
    if env := os.environ.get("MLOPS_CACHE_DIR"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mlops-operator"


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"{name} must be an integer, not {raw!r}") from None


CHILD_ROLES = ("train", "serve", "storage-init", "analyze", "registry", "quality")


def _child_resources(raw: str) -> dict[str, Any]:
    """MLOPS_CHILD_RESOURCES, checked at start-up: a wrong one stops the operator with the reason."""
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise SystemExit(f"MLOPS_CHILD_RESOURCES is not JSON: {exc}") from None
    if not isinstance(value, dict) or not all(k in CHILD_ROLES and isinstance(v, dict) and set(v) <= {
            "requests", "limits"} for k, v in value.items()):
        raise SystemExit(f"MLOPS_CHILD_RESOURCES must map roles ({', '.join(CHILD_ROLES)}) to "
                         f"{{requests, limits}}, not {raw!r}")
    return value


def _kubernetes_service() -> str:
    host = os.environ.get("KUBERNETES_SERVICE_HOST")
    return f"{host}:{os.environ.get('KUBERNETES_SERVICE_PORT') or 443}" if host else ""


@dataclass(frozen=True)
class Settings:
    """Operator settings. Read once at start-up (`Settings.from_env()`)."""

    runtime_image: str
    artifact_root: str
    resync_seconds: int
    workers: int
    namespaces: tuple[str, ...]
    log_level: str
    copy_labels: tuple[str, ...] = ()
    normal_events: bool = True
    metrics_port: int = 0
    """Serve the operator's Prometheus metrics on this port (0: not at all)."""
    child_resources: dict[str, Any] = field(default_factory=dict)
    """MLOPS_CHILD_RESOURCES: a JSON object of container role (train, serve, storage-init, analyze, registry) →
    ResourceRequirements, replacing that role's default (builders/common.py DEFAULT_RESOURCES)."""
    leader_election: bool = False
    """MLOPS_LEADER_ELECTION=true: reconcile only while holding the Lease (controller/election.py)."""
    lease: tuple[str, str] = ("", "mlops-operator")
    """(namespace, name) of the Lease: MLOPS_LEASE_NAMESPACE (else POD_NAMESPACE), MLOPS_LEASE_NAME."""
    ready_port: int = 0
    """Serve the readiness probe's /readyz on this port (0: not at all)."""
    analysis_endpoints: str = ""
    """MLOPS_ANALYSIS_ENDPOINTS: the hosts and CIDRs spec.analysis.prometheus.address may name
    (controller/endpoints.py; empty: `*.svc`, `*.svc.cluster.local`)."""
    instance: str = ""
    """Which replica this process is: POD_NAME (the chart sets it from the downward API), else the host name."""
    kubernetes_service: str = ""
    """host:port of the apiserver's in-cluster Service (KUBERNETES_SERVICE_HOST/PORT), never read as an endpoint."""

    @classmethod
    def from_env(cls) -> Settings:
        namespaces = tuple(n for n in os.environ.get("MLOPS_NAMESPACES", "").split(",") if n.strip())
        return cls(
            runtime_image=os.environ.get("MLOPS_RUNTIME_IMAGE", "ghcr.io/mlops-dev/mlops-runtime:0.1.0"),
            artifact_root=os.environ.get("MLOPS_ARTIFACT_ROOT", "file:///var/lib/mlops/artifacts"),
            resync_seconds=_int("MLOPS_RESYNC_SECONDS", 300),
            workers=_int("MLOPS_WORKERS", 16),
            namespaces=tuple(n.strip() for n in namespaces),
            log_level=os.environ.get("MLOPS_LOG_LEVEL", "INFO").upper(),
            # Events on every condition transition; MLOPS_EVENTS=warnings keeps only the Warnings
            normal_events=os.environ.get("MLOPS_EVENTS", "all") != "warnings",
            copy_labels=tuple(k.strip() for k in os.environ.get("MLOPS_COPY_LABELS", "").split(",") if k.strip()),
            metrics_port=_int("MLOPS_METRICS_PORT", 0),
            ready_port=_int("MLOPS_READY_PORT", 0),
            leader_election=os.environ.get("MLOPS_LEADER_ELECTION", "false").lower() == "true",
            lease=(os.environ.get("MLOPS_LEASE_NAMESPACE") or os.environ.get("POD_NAMESPACE") or "default",
                   os.environ.get("MLOPS_LEASE_NAME") or "mlops-operator"),
            child_resources=_child_resources(os.environ.get("MLOPS_CHILD_RESOURCES", "")),
            analysis_endpoints=os.environ.get("MLOPS_ANALYSIS_ENDPOINTS", ""),
            kubernetes_service=_kubernetes_service(),
            instance=os.environ.get("POD_NAME") or socket.gethostname(),
        )
