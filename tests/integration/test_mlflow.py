"""The MLflow model registry in and out, for real: a TrainingRun registers its version in a real MLflow tracking
server (`mlflow server`, SQLite backend, on the node's address, where Pods reach it) through an owned Job; a
ModelDeployment that names it `models:/<name>@<alias>` resolves it through another, serves it verified against the
digest the registration tagged, and its promotion moves the `champion` alias, read back with MLflow's own client."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest

from mlops_operator.dev.node import NODE_IP
from mlops_operator.dev.runner import OperatorThread
from tests.conftest import S3
from tests.tracking import mlflow_client, tracking_server

from .conftest import Cluster, ControlPlane, wait_for
from .test_modeldeployment import cond, model_deployment, wait_status
from .test_trainingrun import credentials, iris_data, training_run

__all__ = ["iris_data"]  # a fixture used here
TR = "TrainingRun"


@pytest.fixture(scope="module")
def tracking(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with socket.socket() as sock:
        sock.bind((NODE_IP, 0))
        port = sock.getsockname()[1]
    with tracking_server(tmp_path_factory.mktemp("mlflow"), NODE_IP, port) as url:
        yield url


def registry_jobs(cluster: Cluster, ns: str) -> list[Any]:
    return cluster.batch.list_namespaced_job(ns, label_selector="mlops.dev/registry").items


def test_a_registered_version_is_served_by_its_models_uri_and_a_promotion_moves_the_alias(
    cluster: Cluster, operator: OperatorThread, namespace: str, s3: S3, iris_data: str, tracking: str
) -> None:
    ns = namespace
    credentials(cluster, ns, s3)
    name = f"iris-{ns}"  # a registered model of its own on the module's server
    cluster.create(training_run("iris-v1", model="iris", register={"mlflow": {
        "trackingUri": tracking, "name": name, "aliases": ["challenger"]}}), ns)
    cluster.wait_condition(TR, ns, "iris-v1", "True", type_="Registered", timeout=300)
    run = cluster.get(TR, ns, "iris-v1")["status"]
    assert run["registered"]["uri"] == f"models:/{name}/1" and run["registered"]["version"] == "1"
    seen = mlflow_client(tracking, f"""
v = client.get_model_version_by_alias({name!r}, "challenger")
r = client.get_run(v.run_id)
print(json.dumps({{"version": v.version, "source": v.source, "tags": v.tags, "metrics": r.data.metrics,
                  "params": r.data.params, "run_tags": r.data.tags}}))""")
    assert seen["version"] == "1" and seen["source"] == run["model"]["uri"]
    assert seen["tags"]["mlops.dev/digest"] == run["model"]["digest"]
    assert seen["tags"]["mlops.dev/trainingrun"] == f"{ns}/iris-v1"
    assert seen["metrics"]["accuracy"] == pytest.approx(run["metrics"]["accuracy"])
    assert seen["params"]["n_estimators"] == "20" and seen["run_tags"]["mlops.dev/trainingrun"] == f"{ns}/iris-v1"

    cluster.create(model_deployment(model={"storageUri": f"models:/{name}@challenger", "mlflow": {
        "trackingUri": tracking, "promoteAlias": "champion"}}), ns)
    st = wait_status(cluster, ns, lambda s: s if (s.get("stable") or {}).get("registryVersion") == f"models:/{name}/1"
                     and cond(s, "Available").get("status") == "True" else None, "the registered version to serve",
                     timeout=300)
    assert (st["stable"]["modelUri"], st["stable"]["digest"]) == (run["model"]["uri"], run["model"]["digest"])
    assert cond(st, "Verified")["reason"] == "DigestFromRegistry"
    assert st["registry"]["resolved"]["version"] == "1"
    wait_status(cluster, ns, lambda s: s if ((s.get("registry") or {}).get("alias") or {}).get("state") == "Moved"
                else None, "the champion alias to move", timeout=180)
    assert mlflow_client(tracking, f'print(json.dumps(client.get_model_version_by_alias({name!r}, "champion")'
                                   '.version))') == "1"
    wait_for(lambda: not registry_jobs(cluster, ns), 60, "the answered registry Jobs to be deleted",
             show=lambda: [j.metadata.name for j in registry_jobs(cluster, ns)])


def test_an_alias_the_registry_does_not_know_says_so_and_serves_nothing(
    cluster: Cluster, operator: OperatorThread, namespace: str, tracking: str
) -> None:
    ns = namespace
    cluster.create(model_deployment(model={"storageUri": "models:/nobody@champion", "mlflow": {
        "trackingUri": tracking}}), ns)
    st = wait_status(cluster, ns, lambda s: s if cond(s, "Ready").get("reason") == "ResolveFailed" else None,
                     "the failed resolution in Ready", timeout=180)
    assert "nobody" in cond(st, "Ready")["message"] and cond(st, "Ready")["status"] == "False"
    assert "stable" not in st and not cluster.apps.list_namespaced_deployment(ns).items
