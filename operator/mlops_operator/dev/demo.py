"""`mlops dev demo`: the product on a Docker-free local control plane.

Today it brings the control plane up, installs the CRDs, applies examples/ (a TrainingRun, a
ModelDeployment following its model, a DriftPolicy watching that deployment) into the
`mlops-demo` namespace, runs the operator, and prints each resource's conditions as the operator
sets them. Training, serving and drift evaluation join as their controllers land.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from ..api import BY_KIND, GROUP, VERSION
from . import controlplane, install
from .runner import OperatorThread

NAMESPACE = "mlops-demo"
EXAMPLES = ("trainingrun.yaml", "modeldeployment.yaml", "driftpolicy.yaml")


def _examples_dir() -> Path:
    top = Path(__file__).resolve().parents[3]
    return top / "examples"


def _apply(custom: Any, obj: dict[str, Any]) -> None:
    plural = BY_KIND[obj["kind"]].plural
    name = obj["metadata"]["name"]
    try:
        current = custom.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, plural, name)
        obj["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        custom.replace_namespaced_custom_object(GROUP, VERSION, NAMESPACE, plural, name, obj)
    except ApiException as exc:
        if exc.status != 404:
            raise
        custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, plural, obj)


def _ready(obj: dict[str, Any]) -> dict[str, Any] | None:
    status = obj.get("status") or {}
    if status.get("observedGeneration") != obj["metadata"]["generation"]:
        return None
    return next((c for c in status.get("conditions") or () if c["type"] == "Ready"), None)


def run(state_dir: Path, down: bool = False, out: Callable[[str], None] = print, timeout: float = 60) -> int:
    examples = _examples_dir()
    if not examples.is_dir():
        out(f"mlops dev demo needs the repository's examples/ folder (looked in {examples})")
        return 1
    cp = controlplane.up(state_dir)
    out(f"control plane up at {cp.server}")
    install.apply_crds(str(cp.kubeconfig))
    out("CRDs installed: trainingruns, modeldeployments, driftpolicies (.mlops.dev)")
    operator = OperatorThread([NAMESPACE], kubeconfig=str(cp.kubeconfig))
    try:
        with install.api_client(str(cp.kubeconfig)) as api:
            core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
            try:
                core.create_namespace({"metadata": {"name": NAMESPACE}})
            except ApiException as exc:
                if exc.status != 409:
                    raise
            operator.start()
            out(f"operator running, watching namespace {NAMESPACE}")
            objects = [yaml.safe_load((examples / name).read_text()) for name in EXAMPLES]
            for obj in objects:
                _apply(custom, obj)
                out(f"applied {obj['kind']}/{obj['metadata']['name']}")
            pending = {(o["kind"], o["metadata"]["name"]) for o in objects}
            deadline = time.monotonic() + timeout
            while pending and time.monotonic() < deadline:
                for kind, name in sorted(pending):
                    obj = custom.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, BY_KIND[kind].plural, name)
                    cond = _ready(obj)
                    if cond is not None:
                        pending.discard((kind, name))
                        out(f"  {kind}/{name}: Ready={cond['status']} reason={cond['reason']}"
                            f"{': ' + cond['message'] if cond.get('message') else ''}")
                time.sleep(0.2)
            if pending:
                out(f"timed out waiting for the operator to report on {sorted(pending)}")
                return 1
    finally:
        operator.stop()
        if down:
            cp.stop()
            out("control plane stopped")
    if not down:
        out(f"the cluster stays up: export KUBECONFIG={cp.kubeconfig}; kubectl get mlops -n {NAMESPACE}")
        out(f"stop it with: mlops dev down --state-dir {state_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(run(Path(".state/dev")))
