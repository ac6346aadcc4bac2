"""Install the CRDs into a cluster and wait until they are served."""

from __future__ import annotations

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
