"""The operator's informers against the real apiserver: list then watch, the label selector applied by
the server, glob namespaces kept by the client, a re-list reporting what vanished meanwhile as deleted,
and a watch resumed from the last version seen after the server ends it."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from mlops_operator.controller.client import CONFIGMAPS
from mlops_operator.controller.informers import Informer, Scope
from mlops_operator.dev.controlplane import ControlPlane

from .conftest import Cluster
from .test_status_writes import _api

LABEL = "app.kubernetes.io/managed-by=mlops-operator"


def configmap(name: str, ours: bool = True, value: str = "1") -> dict[str, Any]:
    labels = {"app.kubernetes.io/managed-by": "mlops-operator"} if ours else {}
    return {"metadata": {"name": name, "labels": labels}, "data": {"v": value}}


async def until(check: Any, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def test_list_then_watch_resumes_and_a_relist_reports_what_vanished(
    cluster: Cluster, control_plane: ControlPlane, sp_namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ns = sp_namespace
    other = f"{ns}-x"  # matches no pattern below
    cluster.core.create_namespace({"metadata": {"name": other}})
    for where in (ns, other):
        cluster.core.create_namespaced_config_map(where, configmap("before"))
    cluster.core.create_namespaced_config_map(ns, configmap("not-ours", ours=False))
    scope = Scope((ns, "no-such-*"))
    assert scope.watched() == [None] and scope.accepts(ns) and not scope.accepts(other)
    events: list[tuple[str, str, str]] = []

    def handle(type_: str, obj: dict[str, Any]) -> None:
        events.append((type_, obj["metadata"]["namespace"], obj["metadata"]["name"]))

    def names() -> set[str]:
        live: set[str] = set()
        for type_, _, name in events:
            (live.discard if type_ == "DELETED" else live.add)(name)
        return live

    async def scenario() -> None:
        api = _api(control_plane.kubeconfig, monkeypatch)
        informer = Informer(api, CONFIGMAPS, "ConfigMap", None, handle, scope.accepts, label_selector=LABEL,
                            server_timeout=2, page=1)
        task = asyncio.create_task(informer.run())
        try:
            await asyncio.wait_for(informer.listed.wait(), 20)
            lists = api.requests["LIST", "configmaps"]
            assert lists >= 2  # a page at a time
            # listed: only ours, only in the namespaces the scope keeps
            assert events == [("ADDED", ns, "before")]
            await asyncio.to_thread(cluster.core.create_namespaced_config_map, ns, configmap("after"))
            await asyncio.to_thread(cluster.core.create_namespaced_config_map, other, configmap("after"))
            await until(lambda: "after" in names(), "the watch to bring a new object")
            # the server ends the watch every 2 s: the informer resumes from where it was, no re-list
            watches = api.requests["WATCH", "configmaps"]
            await until(lambda: api.requests["WATCH", "configmaps"] >= watches + 2, "two resumed watches")
            assert api.requests["LIST", "configmaps"] == lists
            await asyncio.to_thread(cluster.core.patch_namespaced_config_map, "after", ns, {"data": {"v": "2"}})
            await until(lambda: events[-1] == ("MODIFIED", ns, "after"), "a change after a resume")
            # what vanished while the informer was not watching is reported as deleted by the next list
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await asyncio.to_thread(cluster.core.delete_namespaced_config_map, "before", ns)
            await informer.list()
            assert ("DELETED", ns, "before") in events and names() == {"after"}
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await api.close()

    try:
        asyncio.run(scenario())
        assert all(where == ns for _, where, _ in events), events
        assert "not-ours" not in {name for _, _, name in events}
    finally:
        cluster.core.delete_namespace(other)


def test_exact_namespaces_get_a_watch_each() -> None:
    assert Scope(("a", "b")).watched() == ["a", "b"]
    assert Scope(()).watched() == [None] and Scope(()).accepts("anything")
    assert Scope(("team-*",)).accepts("team-a") and not Scope(("team-*",)).accepts("other")
