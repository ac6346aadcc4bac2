"""Children changed behind the operator's back: deleted or edited by hand, each is restored to what
the ModelDeployment says, with no duplicate."""

from __future__ import annotations

from typing import Any

from mlops_operator.dev.runner import OperatorThread
from tests.cases import example

from .conftest import Cluster, wait_for


def pinned(name: str) -> dict[str, Any]:
    md = example("ModelDeployment")
    md["metadata"]["name"] = name
    md["spec"].update({"replicas": 0, "model": {"storageUri": "s3://models/pinned/x", "digest": "sha256:" + "1" * 64}})
    del md["spec"]["analysis"]
    return md


def test_children_deleted_or_edited_by_hand_are_restored(
    cluster: Cluster, operator: OperatorThread, namespace: str
) -> None:
    ns = namespace
    cluster.create(pinned("iris"), ns)

    def children() -> tuple[dict[str, Any], dict[str, Any]] | None:
        deps = {d.metadata.name: d for d in cluster.apps.list_namespaced_deployment(ns).items}
        svcs = {s.metadata.name: s for s in cluster.core.list_namespaced_service(ns).items}
        return (deps, svcs) if len(deps) == 1 and "iris" in svcs else None

    deps, svcs = wait_for(children, 60, "the Deployment and the Service")
    (dep_name, dep), = deps.items()
    selector = dict(svcs["iris"].spec.selector)

    # deleted by hand: created again, once
    cluster.apps.delete_namespaced_deployment(dep_name, ns)
    restored = wait_for(lambda: next((d for d in cluster.apps.list_namespaced_deployment(ns).items
                                      if d.metadata.uid != dep.metadata.uid), None), 60, "the Deployment back")
    assert restored.metadata.name == dep_name and restored.spec.replicas == dep.spec.replicas
    assert len(cluster.apps.list_namespaced_deployment(ns).items) == 1

    # edited by hand: the selector that decides where traffic goes, and the size, are put back
    cluster.core.patch_namespaced_service("iris", ns, {"spec": {"selector": {"app": "somewhere-else"}}})
    cluster.apps.patch_namespaced_deployment(dep_name, ns, {"spec": {"replicas": 3}})
    wait_for(lambda: cluster.core.read_namespaced_service("iris", ns).spec.selector == selector, 60,
             "the Service's selector restored")
    wait_for(lambda: cluster.apps.read_namespaced_deployment(dep_name, ns).spec.replicas == dep.spec.replicas, 60,
             "the Deployment's size restored")
    deps, svcs = children() or ({}, {})
    assert len(deps) == 1 and sorted(svcs) == ["iris"]  # a first version needs no preview Service
