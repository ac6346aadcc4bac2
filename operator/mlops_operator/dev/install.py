"""Install the CRDs into a cluster and wait until they are served."""

from __future__ import annotations

import json
import time
from typing import Any

from kubernetes import client, config
from kubernetes.client.rest import ApiException

from ..api import KINDS
from ..crdgen import crd


def api_client(kubeconfig: str) -> Any:
    return config.new_client_from_config(config_file=kubeconfig)


def apply_crds(kubeconfig: str, timeout: float = 60) -> None:
    """Create or update the three CRDs and wait for them to be Established."""
    with api_client(kubeconfig) as api:
        ext = client.ApiextensionsV1Api(api)
        for kind in KINDS:
            body = crd(kind)
            try:
                ext.create_custom_resource_definition(body)
            except ApiException as exc:
                if exc.status != 409:
                    raise
                current = ext.read_custom_resource_definition(body["metadata"]["name"])
                body["metadata"]["resourceVersion"] = current.metadata.resource_version
                ext.replace_custom_resource_definition(body["metadata"]["name"], body)
        deadline = time.monotonic() + timeout
        for kind in KINDS:
            name = crd(kind)["metadata"]["name"]
            while True:
                got = ext.read_custom_resource_definition(name)
                conds = {c.type: c.status for c in (got.status.conditions or [])}
                if conds.get("Established") == "True":
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"CRD {name} not Established after {timeout}s: {conds}")
                time.sleep(0.1)


OPERATOR_NAMESPACE = "mlops-system"
RELEASE = "mlops-operator"


def helm_install_operator(kubeconfig: str, watch: list[str], out: Any = print, timeout: float = 300,
                          extra: tuple[str, ...] = (), namespace: str = OPERATOR_NAMESPACE,
                          release: str = RELEASE) -> None:
    """The chart, with real helm, into `namespace`: the operator from the locally built image, watching
    `watch`, with the CRDs left alone (already installed). `helm upgrade --install --wait`: returns once the
    operator Deployment is Available, raises with helm's message otherwise."""
    import subprocess
    from pathlib import Path

    from .tools import tool

    chart = Path(__file__).resolve().parents[3] / "charts" / "mlops-operator"
    cmd = [tool("helm"), f"--kubeconfig={kubeconfig}", "upgrade", "--install", release, str(chart),
           "--namespace", namespace, "--create-namespace", "--wait", f"--timeout={int(timeout)}s",
           "--set", "crds.install=false", "--set", "image.pullPolicy=Never",
           "--set-json", "watchNamespaces=" + json.dumps(watch), *extra]
    out(f"$ helm upgrade --install {release} charts/mlops-operator -n {namespace} --wait ...")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 60)
    if proc.returncode != 0:
        raise RuntimeError(f"helm install of the operator failed: {proc.stderr.strip() or proc.stdout.strip()}")
