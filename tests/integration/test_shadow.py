"""Shadow rollouts on the real control plane and node: the stable revision's server mirrors live traffic to the
candidate through the `<name>-preview` Service (cluster DNS, kube-proxy), the operator judges the candidate on
how often it agreed, and no user request is ever answered by a candidate."""

from __future__ import annotations

import contextlib
import json
import random
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from mlops_operator.api import times
from mlops_operator.dev.proxy import Proxy, Resolver
from mlops_operator.dev.runner import OperatorThread
from tests.conftest import S3

from .conftest import Cluster, wait_for
from .test_modeldeployment import (
    HTTPROUTE_CRD,
    cond,
    model_deployment,
    promoted,
    serving_first_version,
    status,
    train,
    wait_status,
)
from .test_trainingrun import iris_data

__all__ = ["iris_data"]  # a fixture used here
SHADOW = {"percent": 100, "durationSeconds": 15, "minRequests": 30, "agreement": {"min": "0.9"}}


class Users:
    """Users of the `iris` Service through the dev proxy (what a Gateway does: a ready pod of the Service, by the
    HTTPRoute's weights when there is one): when each answer arrived, its model version (the digest of the model
    that answered) and the revision of the pod that answered."""

    def __init__(self, url: str, rows: list[list[float]]) -> None:
        self.url, self.rows = url, rows
        self.answers: list[tuple[float, str]] = []
        self.revisions: set[str] = set()
        self.failures: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        rng = random.Random(5)
        while not self.stop.is_set():
            rows = rng.sample(self.rows, 3)
            body = json.dumps({"inputs": [{"name": "x", "shape": [3, 4], "datatype": "FP64", "data": rows}]})
            request = urllib.request.Request(f"{self.url}/v2/models/iris/infer", data=body.encode(),
                                             headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=10) as resp:
                    self.answers.append((time.time(), json.loads(resp.read())["model_version"]))
                    self.revisions.add(resp.headers["x-mlops-revision"])
            except (urllib.error.URLError, OSError) as exc:
                self.failures.append(str(exc))
            self.stop.wait(0.02)  # a paced user, about 40 calls a second

    def versions_between(self, start: float, end: float) -> set[str]:
        return {v for t, v in self.answers if start <= t <= end}


@pytest.fixture()
def iris_rows(tmp_path: Path) -> list[list[float]]:
    from sklearn.datasets import load_iris

    return [[float(v) for v in r] for r in load_iris().data]


def swapped_data(s3: S3, tmp_path: Path) -> str:
    """Iris with the labels of versicolor and virginica traded: a model of it disagrees on those two classes."""
    from sklearn.datasets import load_iris

    frame = load_iris(as_frame=True).frame
    frame["target"] = frame["target"].map({0: 0, 1: 2, 2: 1})
    path = tmp_path / "swapped.csv"
    frame.to_csv(path, index=False)
    s3.client().upload_file(str(path), "data", "iris-swapped.csv")
    return "s3://data/iris-swapped.csv"


def shadowing(cluster: Cluster, ns: str) -> dict[str, Any]:
    return wait_status(cluster, ns, lambda s: s if cond(s, "Progressing").get("reason") == "Shadowing" else None,
                       "the candidate to take shadow traffic")


def test_a_shadow_candidate_that_agrees_is_promoted_one_that_does_not_is_rejected_and_neither_answers_a_user(
    cluster: Cluster, operator: OperatorThread, namespace: str, s3: S3, iris_data: str, iris_rows: list[list[float]],
    tmp_path: Path
) -> None:
    ns = namespace
    md = model_deployment(replicas=1, analysis=None, strategy={"type": "Shadow", "shadow": SHADOW})
    serving_first_version(cluster, ns, s3, md)
    v1 = status(cluster, ns)["stable"]["digest"]
    proxy = Proxy(Resolver(cluster.api_client, ns, "iris")).start()
    users = Users(proxy.url, iris_rows)
    users.thread.start()
    try:
        wait_for(lambda: len(users.answers) > 20, 60, "the users' first answers through the Service",
                 show=lambda: users.failures[-3:])
        started = time.time()

        # v2, the same data and another forest: it agrees with v1 on (nearly) every row
        train(cluster, ns, "iris-v2", params={"n_estimators": 30})
        st = shadowing(cluster, ns)
        v2 = st["candidate"]["digest"]
        preview = cluster.core.read_namespaced_service("iris-preview", ns)
        assert preview.spec.selector["mlops.dev/revision"] == st["candidate"]["revision"]
        assert {p.name: p.port for p in preview.spec.ports}["monitoring"] == 8082
        assert st["traffic"]["candidate"] == 0
        st = promoted(cluster, ns, "iris-v2")
        last = st["lastAnalysis"]
        assert last["verdict"] == "Passed" and last["revision"] == st["stable"]["revision"], last
        m = last["measurements"]
        assert m["mirrored"] >= SHADOW["minRequests"] and m["agreement"] >= 0.9, m
        assert m["comparedRows"] == 3 * (m["mirrored"] - m["candidateErrors"])  # every answered call, row by row
        switched = times.parse(st["history"][-1]["since"]).timestamp()
        # before the switch every user was answered by v1; the candidate answered only mirrored copies
        assert users.versions_between(started, switched - 1) == {v1}
        assert v2 not in {v for t, v in users.answers if t < switched}
        wait_for(lambda: users.versions_between(time.time() - 2, time.time()) == {v2}, 60, "users answered by v2")

        # v3 learned swapped labels: it disagrees on about two rows in three, and is rejected
        train(cluster, ns, "iris-v3", dataset={"uri": swapped_data(s3, tmp_path), "targetColumn": "target"})
        st = shadowing(cluster, ns)
        v3, rev3 = st["candidate"]["digest"], st["candidate"]["revision"]
        opened = time.time()
        st = wait_status(cluster, ns, lambda s: s if rev3 in (s.get("rejected") or ()) else None,
                         "the disagreeing candidate to be rejected", timeout=120)
        closed = time.time()
        last = st["lastAnalysis"]
        assert last["verdict"] == "Failed" and "agreement" in last["message"], last
        assert last["measurements"]["agreement"] < 0.9 and last["measurements"]["mirrored"] >= SHADOW["minRequests"]
        progress = cond(st, "Progressing")
        assert progress["reason"] == "RolledBack" and "ShadowFailed" in progress["message"]
        assert st["stable"]["trainingRun"] == "iris-v2" and cond(st, "Available")["status"] == "True"
        assert users.versions_between(opened, closed) == {v2}
        assert v3 not in {v for _, v in users.answers}
        # the stable pod stopped mirroring when the window closed
        pod = next(p for p in cluster.core.list_namespaced_pod(
            ns, label_selector=f"mlops.dev/revision={st['stable']['revision']}").items if p.status.pod_ip)

        def mirror_off() -> bool:
            url = f"http://{pod.status.pod_ip}:8082/v2/models/iris/mirror"
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=5) as r:
                return bool(json.loads(r.read())["percent"] == 0)
            return False

        wait_for(mirror_off, 30, "mirroring turned off on the stable pod")
    finally:
        users.stop.set()
        users.thread.join(15)
        proxy.stop()
    assert not users.failures, users.failures[:5]
    assert rev3 not in users.revisions


def test_with_the_gateway_api_the_routes_request_mirror_copies_and_the_prediction_sketches_judge(
    cluster: Cluster, operator: OperatorThread, namespace: str, s3: S3, iris_data: str, iris_rows: list[list[float]]
) -> None:
    """The HTTPRoute's RequestMirror filter mirrors (the dev proxy is the gateway: it copies the requests and
    discards the answers); the candidate is judged on its prediction sketch against the stable revision's."""
    ns = namespace
    cluster.kubectl("apply", "-f", "-", stdin=json.dumps(HTTPROUTE_CRD))
    cluster.kubectl("wait", "--for=condition=Established", "crd/httproutes.gateway.networking.k8s.io")
    md = model_deployment(replicas=1, analysis=None, strategy={"type": "Shadow", "shadow": SHADOW},
                          traffic={"gateway": {"parentRefs": [{"name": "gw"}]}})
    serving_first_version(cluster, ns, s3, md)
    v1 = status(cluster, ns)["stable"]["digest"]
    proxy = Proxy(Resolver(cluster.api_client, ns, "iris")).start()
    users = Users(proxy.url, iris_rows)
    users.thread.start()

    def rule() -> dict[str, Any]:
        route = cluster.custom.get_namespaced_custom_object("gateway.networking.k8s.io", "v1", ns, "httproutes",
                                                            "iris")
        return dict(route["spec"]["rules"][0])

    try:
        train(cluster, ns, "iris-v2", params={"n_estimators": 30})
        st = shadowing(cluster, ns)
        assert "RequestMirror" in cond(st, "Progressing")["message"]
        mirrored = wait_for(lambda: rule().get("filters"), 30, "the route's RequestMirror filter")
        assert mirrored == [{"type": "RequestMirror", "requestMirror": {
            "backendRef": {"name": "iris-preview", "port": 80}}}]  # 100 %: no percent, for older gateways too
        assert [b["weight"] for b in rule()["backendRefs"]] == [100, 0]
        st = promoted(cluster, ns, "iris-v2")
        last = st["lastAnalysis"]
        assert last["verdict"] == "Passed" and "prediction sketches" in last["message"], last
        m = last["measurements"]
        assert m["candidateRequests"] >= SHADOW["minRequests"] and m["predictionPsi"] <= 0.1, m
        switched = times.parse(st["history"][-1]["since"]).timestamp()
        assert {v for t, v in users.answers if t < switched} == {v1}  # the candidate answered no user before
        wait_for(lambda: "filters" not in rule(), 30, "the RequestMirror filter removed")
    finally:
        users.stop.set()
        users.thread.join(15)
        proxy.stop()
    assert not users.failures, users.failures[:5]
