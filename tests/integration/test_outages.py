"""Faults a cluster throws, on a control plane of its own: the apiserver restarted and etcd frozen
while objects reconcile. The operator (a process) rides both out: every object reaches its verdict,
none is lost, no child is made twice, the operator never crashes."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import config

from mlops_operator.dev import install
from mlops_operator.dev.controlplane import ControlPlane

from .conftest import Cluster, OperatorProcess, wait_for
from .test_api_budget import objects, settled

NS = "outages"


@pytest.fixture
def own_control_plane(tmp_path: Path) -> Iterator[ControlPlane]:
    cp = ControlPlane(tmp_path / "cp", with_controllers=False, with_node=False)
    cp.start()
    try:
        install.apply_crds(str(cp.kubeconfig))
        yield cp
    finally:
        cp.stop()


def test_an_apiserver_restart_and_an_etcd_freeze_lose_nothing(own_control_plane: ControlPlane, tmp_path: Path) -> None:
    cp = own_control_plane
    cluster = Cluster(config.new_client_from_config(str(cp.kubeconfig)), cp.kubeconfig)
    cluster.core.create_namespace({"metadata": {"name": NS}})
    operator = OperatorProcess(cp.kubeconfig, NS, tmp_path / "operator.log", env={"MLOPS_RESYNC_SECONDS": "5"})
    operator.start()
    try:
        def create(first: int, last: int) -> None:
            for i in range(first, last):
                for obj in objects(i):
                    cluster.create(obj, NS)

        create(0, 5)
        wait_for(lambda: settled(cluster, NS, 5), 90, "the first objects to settle")

        # the apiserver goes away while new objects wait to be reconciled
        create(5, 10)
        cp.restart("kube-apiserver")
        wait_for(lambda: settled(cluster, NS, 10), 120, "every object to settle after the apiserver restart")

        # etcd freezes: the apiserver cannot store anything until it thaws
        etcd = cp.pids["etcd"]
        create(10, 15)
        os.kill(etcd, signal.SIGSTOP)
        try:
            wait_for(lambda: cp._get("/readyz") not in (200,), 60, "the apiserver to notice etcd is gone")
        finally:
            os.kill(etcd, signal.SIGCONT)
        wait_for(lambda: settled(cluster, NS, 15), 120, "every object to settle after the etcd freeze")

        # nothing lost, nothing twice
        deployments = cluster.apps.list_namespaced_deployment(NS).items
        services = cluster.core.list_namespaced_service(NS).items
        assert len(deployments) == 15 and len(services) == 15, (len(deployments), len(services))  # no preview yet
        assert len({d.metadata.owner_references[0].name for d in deployments}) == 15
        # (its log has the retried requests of the outages, with their tracebacks: retried, not crashed)
        assert operator.proc is not None and operator.proc.poll() is None, operator.output()[-5000:]
        assert "retry" in operator.output()  # it did see the outages
    finally:
        operator.stop()
        cluster.api_client.close()
