"""ModelDeployments for real: TrainingRuns train on the local node, `mlops serve` runs each revision,
`mlops analyze` replays the validation sample against the candidate and the stable revision, and the
operator promotes or rolls back from what they report."""

from __future__ import annotations

import contextlib
import copy
import json
import re
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from mlops_operator.dev.runner import OperatorThread
from tests.cases import example
from tests.conftest import S3
from tests.health import argocd_health

from .conftest import Cluster, OperatorProcess, wait_for
from .test_trainingrun import credentials, iris_data, training_run

__all__ = ["iris_data"]  # a fixture used here
MD, TR = "ModelDeployment", "TrainingRun"
ANALYSIS = {"intervalSeconds": 1, "durationSeconds": 2, "successRate": "0.99", "maxP99LatencyMs": 250,
            "compareToStable": {"metric": "accuracy", "maxDegradation": "0.02"}}


def model_deployment(name: str = "iris", **spec: Any) -> dict[str, Any]:
    md = example(MD)
    md["metadata"]["name"] = name
    md["spec"].update({"replicas": 1, "analysis": copy.deepcopy(ANALYSIS),
                       "strategy": {"type": "BlueGreen", "blueGreen": {"previewReplicas": 1,
                                                                        "scaleDownDelaySeconds": 5}}})
    md["spec"].update(spec)
    return md


def status(cluster: Cluster, ns: str, name: str = "iris") -> dict[str, Any]:
    return cluster.get(MD, ns, name).get("status") or {}


def wait_status(cluster: Cluster, ns: str, check: Any, what: str, name: str = "iris", timeout: float = 180) -> Any:
    return wait_for(lambda: check(status(cluster, ns, name)), timeout, what,
                    show=lambda: json.dumps(status(cluster, ns, name), indent=1)[:3000])


def cond(st: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in st.get("conditions") or () if c["type"] == type_), {})


def deployments(cluster: Cluster, ns: str) -> dict[str, Any]:
    return {d.metadata.labels["mlops.dev/revision"]: d for d in cluster.apps.list_namespaced_deployment(ns).items}


def selector(cluster: Cluster, ns: str, name: str) -> dict[str, str]:
    return dict(cluster.core.read_namespaced_service(name, ns).spec.selector)


def resync_rounds(operator: OperatorThread, rounds: int = 2) -> None:
    """Wait until every object was reconciled again at least `rounds` times (resyncs run every 2 s)."""
    ctx = operator.ctx
    start = ctx.queue.reconciles
    every = sum(len(ctx.store.keys(kind)) for kind in (TR, MD, "DriftPolicy"))
    wait_for(lambda: ctx.queue.reconciles >= start + rounds * every, 30, "resync rounds")


def train(cluster: Cluster, ns: str, name: str, **spec: Any) -> dict[str, Any]:
    cluster.create(training_run(name, model="iris", **spec), ns)
    cluster.wait_condition(TR, ns, name, "True", type_="GatesPassed", timeout=180)
    return dict(cluster.get(TR, ns, name)["status"]["model"])


def serving_first_version(cluster: Cluster, ns: str, s3: S3, md: dict[str, Any] | None = None) -> str:
    """Credentials, the first version trained, the ModelDeployment created and that version promoted:
    the stable revision."""
    credentials(cluster, ns, s3)
    train(cluster, ns, "iris-v1")
    cluster.create(md or model_deployment(), ns)
    return str(promoted(cluster, ns, "iris-v1")["stable"]["revision"])


def infer(url: str, rows: list[list[float]]) -> int:
    body = json.dumps({"inputs": [{"name": "x", "shape": [len(rows), 4], "datatype": "FP64",
                                   "data": rows}]}).encode()
    request = urllib.request.Request(f"{url}/v2/models/iris/infer", data=body,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_first_version_then_a_better_one_are_promoted_with_no_spec_change(
    cluster: Cluster, operator: OperatorThread, namespace: str, s3: S3, iris_data: str
) -> None:
    ns = namespace
    credentials(cluster, ns, s3)
    md = cluster.create(model_deployment(), ns)
    cluster.wait_condition(MD, ns, "iris", "False", "NoModelVersion", timeout=30)
    v1 = train(cluster, ns, "iris-v1")
    st = wait_status(cluster, ns, lambda s: s if cond(s, "Available").get("status") == "True" else None,
                     "the first version to be promoted")
    rev1 = st["stable"]["revision"]
    assert st["stable"]["digest"] == v1["digest"] and st["stable"]["trainingRun"] == "iris-v1"
    assert st["lastAnalysis"]["verdict"] == "Passed" and "stable.accuracy" not in st["lastAnalysis"]["measurements"]
    assert st["lastAnalysis"]["measurements"]["candidate.accuracy"] > 0.8
    assert selector(cluster, ns, "iris")["mlops.dev/revision"] == rev1
    assert cond(st, "Ready")["status"] == "True" and cond(st, "Degraded")["status"] == "False"
    assert argocd_health(cluster.get(MD, ns, "iris"))[0] == "Healthy"
    assert st["url"] == f"http://iris.{ns}.svc.cluster.local"

    v2 = train(cluster, ns, "iris-v2", params={"n_estimators": 30})
    st = wait_status(cluster, ns, lambda s: s if (s.get("stable") or {}).get("trainingRun") == "iris-v2" else None,
                     "the new passing version to be promoted")
    rev2 = st["stable"]["revision"]
    assert rev2 != rev1 and st["stable"]["digest"] == v2["digest"]
    measured = st["lastAnalysis"]["measurements"]
    assert measured["candidateRequests"] >= 38 and measured["stableRequests"] >= 38  # both sides replayed
    assert {"candidate.accuracy", "stable.accuracy", "degradation"} <= set(measured)
    assert selector(cluster, ns, "iris")["mlops.dev/revision"] == rev2
    assert [h["outcome"] for h in st["history"]] == ["Promoted", "Promoted"]
    assert st["previous"]["revision"] == rev1
    # the old revision scales down after scaleDownDelaySeconds, and stays as history
    wait_for(lambda: deployments(cluster, ns)[rev1].spec.replicas == 0, 60, "the old revision to scale down")
    assert deployments(cluster, ns)[rev2].spec.replicas == 1
    final = cluster.get(MD, ns, "iris")
    assert final["spec"] == md["spec"] and final["metadata"]["generation"] == md["metadata"]["generation"]
    reasons = {e.reason for e in cluster.events(ns, "iris")}
    assert {"Promoted", "AnalysisPassed", "RolloutStarted"} <= reasons


def tls_pair() -> tuple[bytes, bytes]:
    """A self-signed certificate and its PKCS#8 key, made here."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "iris")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def test_with_bearer_tokens_and_tls_the_inference_port_is_guarded_and_a_rollout_still_promotes(
    cluster: Cluster, operator: OperatorThread, namespace: str, s3: S3, iris_data: str
) -> None:
    import ssl

    ns = namespace
    cert, key = tls_pair()
    cluster.core.create_namespaced_secret(ns, {"metadata": {"name": "iris-tokens"},
                                               "stringData": {"tokens": "t0ken\n"}})
    cluster.core.create_namespaced_secret(ns, {"metadata": {"name": "iris-tls"}, "type": "kubernetes.io/tls",
                                               "stringData": {"tls.crt": cert.decode(), "tls.key": key.decode()}})
    md = model_deployment()
    md["spec"]["runtime"] = {"auth": {"secretRef": {"name": "iris-tokens"}},
                             "tls": {"secretRef": {"name": "iris-tls"}}}
    rev1 = serving_first_version(cluster, ns, s3, md)
    pod = next(p for p in cluster.core.list_namespaced_pod(ns, label_selector=f"mlops.dev/revision={rev1}").items
               if p.status.pod_ip)
    context = ssl.create_default_context(cadata=cert.decode())
    context.check_hostname = False  # the certificate names no pod IP; it is the one the Secret holds
    body = json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64",
                                   "data": [[5.1, 3.5, 1.4, 0.2]]}]}).encode()

    def https(headers: dict[str, str]) -> int:
        request = urllib.request.Request(f"https://{pod.status.pod_ip}:8080/v2/models/iris/infer", data=body,
                                         headers={"Content-Type": "application/json", **headers})
        try:
            with urllib.request.urlopen(request, timeout=10, context=context) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    assert https({}) == 401 and https({"Authorization": "Bearer wrong"}) == 401
    assert https({"Authorization": "Bearer t0ken"}) == 200
    import http.client

    with pytest.raises((OSError, http.client.HTTPException)):  # plain HTTP on the inference port: a TLS alert
        infer(f"http://{pod.status.pod_ip}:8080", [[5.1, 3.5, 1.4, 0.2]])
    # the analysis replays through the monitoring port: a better version is still judged and promoted
    train(cluster, ns, "iris-v2", params={"n_estimators": 30})
    st = wait_status(cluster, ns, lambda s: s if (s.get("stable") or {}).get("trainingRun") == "iris-v2" else None,
                     "the new version to be promoted with auth and TLS on")
    assert st["stable"]["revision"] != rev1 and st["lastAnalysis"]["verdict"] == "Passed"
    assert st["lastAnalysis"]["measurements"]["candidateRequests"] >= 38


def test_grpc_through_the_service_port_and_the_dev_proxy(
    cluster: Cluster, operator: OperatorThread, namespace: str, s3: S3, iris_data: str
) -> None:
    import grpc
    import numpy as np

    from mlops_operator.dev.proxy import Resolver, TcpForwarder
    from mlops_operator.runtime.oip import open_inference_grpc_pb2 as pb

    ns = namespace
    rev = serving_first_version(cluster, ns, s3)
    svc = cluster.core.read_namespaced_service("iris", ns)
    assert {(p.name, p.target_port, p.app_protocol) for p in svc.spec.ports} == {
        ("http", "http", None), ("grpc", "grpc", "kubernetes.io/h2c")}
    forwarder = TcpForwarder(Resolver(cluster.api_client, ns, "iris", port_name="grpc")).start()
    try:
        with grpc.insecure_channel(forwarder.address) as channel:
            infer_call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                                             request_serializer=pb.ModelInferRequest.SerializeToString,
                                             response_deserializer=pb.ModelInferResponse.FromString)
            req = pb.ModelInferRequest(model_name="iris")
            req.inputs.add(name="x", datatype="FP64", shape=[2, 4]).contents.fp64_contents.extend(
                [5.1, 3.5, 1.4, 0.2, 6.7, 3.0, 5.2, 2.3])
            resp = infer_call(req, timeout=20)
    finally:
        forwarder.stop()
    assert resp.model_name == "iris" and [o.name for o in resp.outputs] == ["predict", "probabilities"]
    raw = resp.raw_output_contents[0]
    if resp.outputs[0].datatype == "BYTES":  # each element: a 4-byte little-endian length, then the bytes
        from mlops_operator.runtime.tensors import split_bytes

        labels: list[Any] = [b.decode() for b in split_bytes(raw, "predict")]
    else:
        labels = np.frombuffer(raw, "<i8").tolist()
    assert len(labels) == 2 and labels[0] != labels[1]  # a setosa and a virginica
    assert status(cluster, ns)["stable"]["revision"] == rev


def test_a_worse_model_is_rolled_back_and_deleting_the_stable_run_changes_nothing(
    cluster: Cluster, operator: OperatorThread, namespace: str, s3: S3, iris_data: str
) -> None:
    ns = namespace
    rev1 = serving_first_version(cluster, ns, s3)
    # a version that passes its own (lax) gates but is much worse than the champion
    train(cluster, ns, "iris-v2", params={"n_estimators": 1, "max_depth": 1},
          gates=[{"metric": "accuracy", "operator": ">=", "threshold": "0.3"}])
    st = wait_status(cluster, ns, lambda s: s if cond(s, "Progressing").get("reason") == "RolledBack" else None,
                     "the worse candidate to be rolled back")
    rejected = st["rejected"][-1]
    assert "accuracy" in cond(st, "Progressing")["message"] and "worse than the stable" in \
        cond(st, "Progressing")["message"]
    assert st["lastAnalysis"]["verdict"] == "Failed"
    assert st["lastAnalysis"]["measurements"]["degradation"] > 0.02
    assert st["stable"]["revision"] == rev1 and "candidate" not in st
    assert cond(st, "Available")["status"] == "True" and cond(st, "Degraded")["status"] == "False"
    assert argocd_health(cluster.get(MD, ns, "iris"))[0] == "Healthy"
    assert selector(cluster, ns, "iris")["mlops.dev/revision"] == rev1
    wait_for(lambda: deployments(cluster, ns)[rejected].spec.replicas == 0, 30, "the candidate to scale down")
    # the Events are posted after the status write the test saw: waited for, not raced
    wait_for(lambda: any(e.reason == "RolledBack" and e.type == "Warning" for e in cluster.events(ns, "iris")),
             15, "the RolledBack Warning Event", show=lambda: [(e.reason, e.type) for e in cluster.events(ns, "iris")])

    # deleting the stable version's TrainingRun changes nothing that serves
    before = cluster.get(MD, ns, "iris")
    cluster.kubectl("delete", "trainingrun", "iris-v1", "-n", ns, "--wait=true")
    cluster.kubectl("delete", "trainingrun", "iris-v2", "-n", ns, "--wait=true")
    resync_rounds(operator)
    after = cluster.get(MD, ns, "iris")
    assert after["status"]["stable"] == before["status"]["stable"]
    assert cond(after["status"], "Available")["status"] == "True"
    assert selector(cluster, ns, "iris")["mlops.dev/revision"] == rev1


def promoted(cluster: Cluster, ns: str, run: str, name: str = "iris") -> dict[str, Any]:
    return wait_status(cluster, ns, lambda s: s if (s.get("stable") or {}).get("trainingRun") == run and
                       cond(s, "Available").get("status") == "True" else None, f"{run} to serve", name)


def rolled_back(cluster: Cluster, ns: str, count: int) -> dict[str, Any]:
    return wait_status(cluster, ns, lambda s: s if len(s.get("rejected") or []) == count and
                       cond(s, "Progressing").get("reason") == "RolledBack" else None, f"rejection number {count}")


def mlops(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    import os
    import sys

    from mlops_operator.dev.tools import tool

    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig),
           "PATH": f"{Path(tool('kubectl')).parent}:{os.environ.get('PATH', '')}"}
    return subprocess.run([sys.executable, "-m", "mlops_operator.cli", *args], capture_output=True, text=True,
                          env=env, timeout=60)


def test_a_server_returning_errors_or_slow_answers_is_rolled_back_and_commands_act_by_revision(
    cluster: Cluster, operator: OperatorThread, namespace: str, s3: S3, iris_data: str
) -> None:
    ns = namespace
    rev1 = serving_first_version(cluster, ns, s3)
    # a runtime change is a new revision of the same model: errors on half the requests
    cluster.patch(MD, ns, "iris", {"spec": {"runtime": {"args": ["--inject-error-rate", "0.5"]}}})
    st = rolled_back(cluster, ns, 1)
    message = cond(st, "Progressing")["message"]
    assert re.search(r"measurements failed \(failureLimit 0\): window \d: success rate 0\.(5\d*|49\d*) < 0\.99",
                     message)
    assert st["lastAnalysis"]["measurements"]["candidateErrors"] * 2 == \
        st["lastAnalysis"]["measurements"]["candidateRequests"]
    assert st["stable"]["revision"] == rev1 and selector(cluster, ns, "iris")["mlops.dev/revision"] == rev1
    # the stable revision kept the runtime it was analysed with: one template, never rolled
    stable_dep = deployments(cluster, ns)[rev1]
    assert "--inject-error-rate" not in stable_dep.spec.template.spec.containers[0].args
    assert stable_dep.metadata.generation == 1
    # slow answers
    cluster.patch(MD, ns, "iris", {"spec": {"runtime": {"args": ["--inject-delay-ms", "400"]}}})
    st = rolled_back(cluster, ns, 2)
    assert "p99 latency" in cond(st, "Progressing")["message"] and "> 250 ms" in cond(st, "Progressing")["message"]
    assert st["lastAnalysis"]["measurements"]["candidateP99Ms"] >= 400
    slow = st["rejected"][-1]
    # `mlops retry` rolls the slow revision out again (and it fails again: the analysis is real)
    proc = mlops(cluster, "retry", "iris", "-n", ns)
    assert proc.returncode == 0, proc.stderr
    assert f"retry {slow} requested" in proc.stdout
    wait_status(cluster, ns, lambda s: any(h["revision"] == slow for h in s["history"][-1:]) and
                len([h for h in s["history"] if h["revision"] == slow]) == 2, "the retried revision's second verdict")
    # a command naming no candidate is refused by the CLI with the reason
    proc = mlops(cluster, "promote", "iris", "-n", ns)
    assert proc.returncode == 1 and "there is no candidate to promote" in proc.stderr
    # the spec asking for the stable revision's runtime again: nothing to roll out, nothing rejected serves
    cluster.patch(MD, ns, "iris", {"spec": {"runtime": None}})
    resync_rounds(operator)
    st = wait_status(cluster, ns, lambda s: s if cond(s, "Available").get("status") == "True" else None,
                     "the stable revision to be available", timeout=60)
    assert st["stable"]["revision"] == rev1 and "candidate" not in st and cond(st, "Degraded")["status"] == "False"


def test_a_flood_of_client_errors_from_a_stranger_does_not_roll_a_good_canary_back(
    cluster: Cluster, operator: OperatorThread, namespace: str, s3: S3, iris_data: str
) -> None:
    """Live analysis judges server errors and latency: 400s and other models' 404s sent to the
    candidate's pods by someone else are client errors, counted apart, and fail nothing."""
    ns = namespace
    analysis = {**ANALYSIS, "minRequests": 5, "intervalSeconds": 1, "durationSeconds": 3}
    serving_first_version(cluster, ns, s3, model_deployment(replicas=2, analysis=analysis, strategy={
        "type": "Canary", "canary": {"steps": [{"weight": 50, "pauseSeconds": 4}]}}))
    train(cluster, ns, "iris-v2", params={"n_estimators": 30})
    st = wait_status(cluster, ns, lambda s: s if s.get("currentStep") == 0 else None, "the first canary step")
    rev2 = st["candidate"]["revision"]
    pod = next(p for p in cluster.core.list_namespaced_pod(ns, label_selector=f"mlops.dev/revision={rev2}").items
               if p.status.pod_ip)
    url = f"http://{pod.status.pod_ip}:8080"
    bad = json.dumps({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}]}).encode()
    refused = {"400": 0, "404": 0}

    def post(path: str, body: bytes) -> int:
        request = urllib.request.Request(url + path, data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    def flood_until_judged() -> Any:
        for _ in range(20):  # ten of each for every good request
            refused["400"] += post("/v2/models/iris/infer", bad) == 400
            refused["404"] += post("/v2/models/wine/infer", bad) == 404
        assert infer(url, [[5.1, 3.5, 1.4, 0.2]]) == 200
        s = status(cluster, ns)
        return s if (s.get("stable") or {}).get("revision") == rev2 or rev2 in (s.get("rejected") or ()) else None

    st = wait_for(flood_until_judged, 120, "the canary judged", show=lambda: status(cluster, ns))
    assert st["lastAnalysis"]["verdict"] == "Passed", st["lastAnalysis"]
    assert (st.get("stable") or {}).get("revision") == rev2
    assert st["lastAnalysis"]["measurements"]["errors"] == 0
    assert refused["400"] >= 100 and refused["404"] >= 100
    # the pod counted the 400s as client errors, the 404s not at all
    snap = json.loads(urllib.request.urlopen(f"http://{pod.status.pod_ip}:8082/v2/models/iris/monitoring",
                                             timeout=10).read())
    assert snap["clientErrors"] == refused["400"] and snap["errors"] == 0


def test_manual_promotion_and_rollback_through_the_cli(
    cluster: Cluster, operator: OperatorThread, namespace: str, s3: S3, iris_data: str
) -> None:
    ns = namespace
    md = model_deployment(strategy={"type": "BlueGreen", "blueGreen": {"autoPromotion": False,
                                                                        "scaleDownDelaySeconds": 5}})
    rev1 = serving_first_version(cluster, ns, s3, md)  # the first version needs no approval
    train(cluster, ns, "iris-v2", params={"n_estimators": 30})
    st = wait_status(cluster, ns, lambda s: s if cond(s, "Progressing").get("reason") == "AwaitingPromotion" else None,
                     "the analysed candidate to wait for approval")
    rev2 = st["candidate"]["revision"]
    assert selector(cluster, ns, "iris")["mlops.dev/revision"] == rev1
    assert selector(cluster, ns, "iris-preview")["mlops.dev/revision"] == rev2
    assert argocd_health(cluster.get(MD, ns, "iris"))[0] == "Progressing"
    proc = mlops(cluster, "promote", "iris", "-n", ns)
    assert proc.returncode == 0, proc.stderr
    st = promoted(cluster, ns, "iris-v2")
    assert selector(cluster, ns, "iris")["mlops.dev/revision"] == rev2
    assert any(c.startswith(f"promote={rev2}@") for c in st["handledCommands"])
    # back to the first revision, which scaled down meanwhile: it comes up, then takes the traffic
    wait_for(lambda: deployments(cluster, ns)[rev1].spec.replicas == 0, 60, "the old revision to scale down")
    proc = mlops(cluster, "rollback", "iris", "--to", rev1, "-n", ns)
    assert proc.returncode == 0, proc.stderr
    st = promoted(cluster, ns, "iris-v1")
    assert selector(cluster, ns, "iris")["mlops.dev/revision"] == rev1 and rev2 in st["rejected"]
    assert [h["outcome"] for h in st["history"]] == ["Promoted", "Promoted", "Promoted"]
    resync_rounds(operator)
    assert status(cluster, ns)["stable"]["revision"] == rev1  # the stream does not move forward to rev2 again


def test_canary_moves_traffic_by_replica_ratio_with_live_analysis(
    cluster: Cluster, operator: OperatorThread, namespace: str, s3: S3, iris_data: str
) -> None:
    ns = namespace
    analysis = {**ANALYSIS, "minRequests": 5, "intervalSeconds": 1, "durationSeconds": 2}
    rev1 = serving_first_version(cluster, ns, s3, model_deployment(replicas=2, analysis=analysis, strategy={
        "type": "Canary", "canary": {"steps": [{"weight": 50, "pauseSeconds": 4}]}}))
    train(cluster, ns, "iris-v2", params={"n_estimators": 30})
    st = wait_status(cluster, ns, lambda s: s if s.get("currentStep") == 0 else None, "the first canary step")
    rev2 = st["candidate"]["revision"]
    assert st["traffic"] == {"stable": 50, "candidate": 50, "method": "ReplicaRatio"}
    assert selector(cluster, ns, "iris") == {"mlops.dev/modeldeployment": "iris"}  # both revisions serve
    assert (deployments(cluster, ns)[rev1].spec.replicas, deployments(cluster, ns)[rev2].spec.replicas) == (1, 1)
    # user traffic reaches the candidate's pods (no kube-proxy on the local node: straight to the pod)
    pod = next(p for p in cluster.core.list_namespaced_pod(ns, label_selector=f"mlops.dev/revision={rev2}").items
               if p.status.pod_ip)

    def traffic_until_promoted() -> Any:
        assert infer(f"http://{pod.status.pod_ip}:8080", [[5.1, 3.5, 1.4, 0.2]]) == 200
        s = status(cluster, ns)
        return s if (s.get("stable") or {}).get("revision") == rev2 else None

    st = wait_for(traffic_until_promoted, 120, "the canary to pass its step and be promoted")
    assert st["lastAnalysis"]["measurements"]["requests"] >= 5 and st["lastAnalysis"]["verdict"] == "Passed"
    assert selector(cluster, ns, "iris")["mlops.dev/revision"] == rev2
    assert deployments(cluster, ns)[rev2].spec.replicas == 2


def test_operator_killed_at_each_step_of_a_rollout_continues_without_duplicates_or_flip_flop(
    cluster: Cluster, operator_process: OperatorProcess, sp_namespace: str, s3: S3, iris_data: str
) -> None:
    ns = sp_namespace
    credentials(cluster, ns, s3)
    operator_process.start()
    train(cluster, ns, "iris-v1")
    cluster.create(model_deployment(), ns)
    seen: set[str] = set()
    selectors: list[str] = []
    kills = 0

    def run_and_kill(target: str) -> Any:
        nonlocal kills
        s = status(cluster, ns)
        with contextlib.suppress(ApiException):
            rev = selector(cluster, ns, "iris").get("mlops.dev/revision", "")
            if not selectors or selectors[-1] != rev:
                selectors.append(rev)
        reason = cond(s, "Progressing").get("reason")
        if reason and reason not in seen:  # a step not seen yet: kill the operator right there
            seen.add(reason)
            operator_process.kill()
            operator_process.start()
            kills += 1
        return s if (s.get("stable") or {}).get("trainingRun") == target and not s.get("candidate") else None

    wait_for(lambda: run_and_kill("iris-v1"), 240, "the first version through restarts")
    seen.clear()
    train(cluster, ns, "iris-v2", params={"n_estimators": 30})
    st = wait_for(lambda: run_and_kill("iris-v2"), 240, "the second version through restarts",
                  show=lambda: operator_process.output()[-3000:])
    assert kills >= 4, seen
    rev1, rev2 = st["history"][0]["revision"], st["stable"]["revision"]
    assert [h["outcome"] for h in st["history"]] == ["Promoted", "Promoted"]
    assert [s for s in selectors if s != "none"] == [rev1, rev2], selectors  # never back and forth
    assert sorted(deployments(cluster, ns)) == sorted({rev1, rev2})
    names = [j.metadata.name for j in cluster.batch.list_namespaced_job(ns).items]
    assert not [n for n in names if n.startswith("iris-") and n.endswith("-an")]  # analysis Jobs cleaned up
    assert "Traceback" not in operator_process.output()


def test_an_hpa_owning_replicas_is_not_fought_and_applying_the_same_yaml_twice_changes_nothing(
    cluster: Cluster, operator: OperatorThread, namespace: str, s3: S3, iris_data: str, tmp_path: Path
) -> None:
    ns = namespace
    credentials(cluster, ns, s3)
    train(cluster, ns, "iris-v1")
    manifest = model_deployment()
    del manifest["spec"]["replicas"]  # GitOps leaves replicas to the autoscaler
    path = tmp_path / "md.yaml"
    path.write_text(json.dumps(manifest))
    assert "created" in cluster.kubectl("apply", "-n", ns, "-f", str(path)).stdout
    rev = promoted(cluster, ns, "iris-v1")["stable"]["revision"]
    before = cluster.get(MD, ns, "iris")
    assert "unchanged" in cluster.kubectl("apply", "-n", ns, "-f", str(path)).stdout
    after = cluster.get(MD, ns, "iris")
    assert after["metadata"]["generation"] == before["metadata"]["generation"] and after["spec"] == before["spec"]
    # the HPA controller scales the ModelDeployment through its scale subresource (below minReplicas:
    # no metrics needed); the operator follows spec.replicas and never writes it back
    cluster.kubectl("apply", "-n", ns, "-f", "-", stdin=json.dumps({
        "apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "iris"},
        "spec": {"scaleTargetRef": {"apiVersion": "mlops.dev/v1alpha1", "kind": "ModelDeployment", "name": "iris"},
                 "minReplicas": 2, "maxReplicas": 3, "targetCPUUtilizationPercentage": 80}}))
    wait_for(lambda: cluster.get(MD, ns, "iris")["spec"].get("replicas") == 2, 60, "the HPA to scale to 2",
             show=lambda: cluster.kubectl("get", "hpa", "-n", ns, "-o", "yaml").stdout)
    wait_for(lambda: deployments(cluster, ns)[rev].spec.replicas == 2, 30, "the revision to follow")
    wait_status(cluster, ns, lambda s: s.get("replicas") == 2, "status.replicas for the scale subresource")
    scale = json.loads(cluster.kubectl("get", "--raw",
                                       f"/apis/mlops.dev/v1alpha1/namespaces/{ns}/modeldeployments/iris/scale").stdout)
    assert scale["status"]["selector"] == f"mlops.dev/modeldeployment=iris,mlops.dev/revision={rev}"
    resync_rounds(operator)
    assert cluster.get(MD, ns, "iris")["spec"]["replicas"] == 2 and deployments(cluster, ns)[rev].spec.replicas == 2
    managers = {m["manager"] for m in cluster.get(MD, ns, "iris")["metadata"]["managedFields"]
                if m.get("subresource") != "status" and "f:spec" in json.dumps(m.get("fieldsV1", {}))}
    assert "mlops-operator" not in managers


# The Gateway API's HTTPRoute kind, as a cluster with a Gateway implementation serves it (the schema
# is left open here: the test is about discovery and the weights the operator writes)
HTTPROUTE_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "httproutes.gateway.networking.k8s.io",
                 "annotations": {"api-approved.kubernetes.io": "https://github.com/kubernetes-sigs/gateway-api/pull/1538"}},
    "spec": {"group": "gateway.networking.k8s.io", "scope": "Namespaced",
             "names": {"kind": "HTTPRoute", "plural": "httproutes", "singular": "httproute",
                       "listKind": "HTTPRouteList"},
             "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                 "type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]},
}


def test_canary_weights_through_a_gateway_api_httproute(
    cluster: Cluster, operator: OperatorThread, namespace: str, s3: S3, iris_data: str
) -> None:
    ns = namespace
    cluster.kubectl("apply", "-f", "-", stdin=json.dumps(HTTPROUTE_CRD))
    cluster.kubectl("wait", "--for=condition=Established", "crd/httproutes.gateway.networking.k8s.io")
    md = model_deployment(replicas=2, traffic={"gateway": {"parentRefs": [{"name": "gw"}]}}, strategy={
        "type": "Canary", "canary": {"steps": [{"weight": 10, "pauseSeconds": 3}]}})

    def route() -> dict[str, Any]:
        return cluster.custom.get_namespaced_custom_object("gateway.networking.k8s.io", "v1", ns, "httproutes", "iris")

    def weights() -> list[tuple[str, int]]:
        with contextlib.suppress(ApiException):
            return [(b["name"], b["weight"]) for b in route()["spec"]["rules"][0]["backendRefs"]]
        return []

    rev1 = serving_first_version(cluster, ns, s3, md)
    wait_for(lambda: weights() == [("iris", 100), ("iris-preview", 0)], 60, "the route to the first version")
    assert route()["spec"]["parentRefs"] == [{"name": "gw"}]
    train(cluster, ns, "iris-v2", params={"n_estimators": 30})
    st = wait_status(cluster, ns, lambda s: s if s.get("currentStep") == 0 else None, "the canary step")
    assert st["traffic"] == {"stable": 90, "candidate": 10, "method": "HTTPRoute"}
    assert weights() == [("iris", 90), ("iris-preview", 10)]  # exact, whatever the replica counts
    assert selector(cluster, ns, "iris")["mlops.dev/revision"] == rev1
    assert selector(cluster, ns, "iris-preview")["mlops.dev/revision"] == st["candidate"]["revision"]
    rev2 = promoted(cluster, ns, "iris-v2")["stable"]["revision"]
    wait_for(lambda: weights() == [("iris", 100), ("iris-preview", 0)], 30, "the route back to the active Service")
    assert selector(cluster, ns, "iris")["mlops.dev/revision"] == rev2
    # the gateway dropped from the spec: the operator deletes its route, the Service carries the traffic
    cluster.patch(MD, ns, "iris", {"spec": {"traffic": None}})
    wait_for(lambda: not weights(), 30, "the HTTPRoute deleted")
    assert selector(cluster, ns, "iris")["mlops.dev/revision"] == rev2


def test_a_version_failing_live_traffic_after_its_promotion_is_rolled_back_to_the_previous(
    cluster: Cluster, operator: OperatorThread, namespace: str, s3: S3, iris_data: str
) -> None:
    ns = namespace
    rev1 = serving_first_version(cluster, ns, s3, model_deployment(
        strategy={"type": "BlueGreen", "blueGreen": {"scaleDownDelaySeconds": 60}}))
    # a server that answers its replay well and half of its live traffic with errors
    cluster.patch(MD, ns, "iris", {"spec": {"runtime": {"args": ["--inject-error-rate", "0.5", "--inject-live-only"]}}})
    st = wait_status(cluster, ns, lambda s: s if (s.get("stable") or {}).get("revision") not in (None, rev1) else None,
                     "the new revision to pass its replay and be promoted")
    rev2 = st["stable"]["revision"]
    assert st["previous"]["revision"] == rev1 and st["lastAnalysis"]["verdict"] == "Passed"
    pod = next(p for p in cluster.core.list_namespaced_pod(ns, label_selector=f"mlops.dev/revision={rev2}").items
               if p.status.pod_ip)

    def live_traffic_until_rolled_back() -> Any:
        s = status(cluster, ns)
        if (s.get("stable") or {}).get("revision") == rev2:
            with contextlib.suppress(OSError):  # rolled back meanwhile: its pod is going away
                infer(f"http://{pod.status.pod_ip}:8080", [[5.1, 3.5, 1.4, 0.2]])
        return s if (s.get("stable") or {}).get("revision") == rev1 else None

    st = wait_for(live_traffic_until_rolled_back, 50, "the live analysis to return to the previous revision",
                  show=lambda: status(cluster, ns))
    progressing = cond(st, "Progressing")
    assert progressing["reason"] == "RolledBack" and "after its promotion" in progressing["message"]
    assert "success rate" in progressing["message"] and rev2 in st["rejected"]
    assert st["history"][-1]["revision"] == rev2 and st["history"][-1]["outcome"] == "RolledBack"
    assert selector(cluster, ns, "iris")["mlops.dev/revision"] == rev1
    assert cond(st, "Available")["status"] == "True" and cond(st, "Degraded")["status"] == "False"
    wait_for(lambda: deployments(cluster, ns)[rev2].spec.replicas == 0, 30, "the failed revision to scale down")


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real Prometheus (Debian's package; `make test` installs it: dev/system.py) scraping the pods the test lists
    in a file_sd targets file, labelled with namespace and pod as Kubernetes service discovery would."""
    import shutil
    import socket

    binary = shutil.which("prometheus")
    assert binary, "the prometheus binary (Debian package prometheus) is missing"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    targets = tmp_path / "targets.json"
    targets.write_text("[]")
    config = tmp_path / "prometheus.yml"
    config.write_text(json.dumps({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "pods", "file_sd_configs": [{"files": [str(targets)],
                                                                      "refresh_interval": "1s"}]}]}))
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
                             f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()[-2000:]
        with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/-/ready", timeout=2) as r:
            return r.status == 200
        return False

    wait_for(ready, 60, "Prometheus to be ready", interval=0.2)
    yield url, targets
    proc.terminate()
    proc.wait(30)
    log.close()


def test_canary_live_analysis_reads_prometheus_when_asked(
    cluster: Cluster, operator: OperatorThread, namespace: str, s3: S3, iris_data: str,
    prometheus: tuple[str, Path]
) -> None:
    ns, (address, targets) = namespace, prometheus
    analysis = {**ANALYSIS, "minRequests": 5, "prometheus": {"address": address}}
    rev1 = serving_first_version(cluster, ns, s3, model_deployment(replicas=2, analysis=analysis, strategy={
        "type": "Canary", "canary": {"steps": [{"weight": 50, "pauseSeconds": 6}]}}))
    train(cluster, ns, "iris-v2", params={"n_estimators": 30})
    rev2 = wait_status(cluster, ns, lambda s: (s.get("candidate") or {}).get("revision"), "the candidate")

    def traffic_until_promoted() -> Any:
        pods = [p for p in cluster.core.list_namespaced_pod(ns, label_selector="mlops.dev/modeldeployment=iris").items
                if p.status.pod_ip]
        targets.write_text(json.dumps([{"targets": [f"{p.status.pod_ip}:8082"],  # the monitoring port
                                        "labels": {"namespace": ns, "pod": p.metadata.name}} for p in pods]))
        for p in pods:
            if p.metadata.labels.get("mlops.dev/revision") == rev2:
                with contextlib.suppress(OSError):
                    infer(f"http://{p.status.pod_ip}:8080", [[5.1, 3.5, 1.4, 0.2]])
        s = status(cluster, ns)
        return s if (s.get("stable") or {}).get("revision") == rev2 else None

    st = wait_for(traffic_until_promoted, 180, "the canary judged from Prometheus and promoted",
                  show=lambda: status(cluster, ns))
    assert rev2 != rev1 and st["lastAnalysis"]["verdict"] == "Passed"
    assert st["lastAnalysis"]["message"].startswith("live (Prometheus): ")
    assert st["lastAnalysis"]["measurements"]["requests"] >= 5


def test_an_analysis_address_naming_the_apiserver_is_refused(
    cluster: Cluster, operator: OperatorThread, namespace: str, control_plane: Any
) -> None:
    """The tests allow 127.0.0.1/32 (their Prometheus listens there); the apiserver listens there too, and
    stays refused: a tenant cannot make the operator send requests to it."""
    md = model_deployment(analysis={**ANALYSIS, "prometheus": {"address": control_plane.server + "/api/v1/query"}})
    cluster.create(md, namespace)
    cond = cluster.wait_condition("ModelDeployment", namespace, "iris", "False", "InvalidSpec", timeout=60)
    assert "spec.analysis.prometheus.address" in cond["message"] and "apiserver" in cond["message"], cond
    assert cluster.children(namespace) == []


def test_a_service_of_the_same_name_is_never_adopted(
    cluster: Cluster, operator: OperatorThread, namespace: str
) -> None:
    """Server-side apply with force would take over an unowned Service `iris` and give it an ownerReference
    (garbage collection then deletes it with the ModelDeployment). The first write is a create: its 409 on
    someone else's object ends in Ready=False, reason=NameConflict, the object untouched."""
    theirs = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "iris", "labels": {"team": "other"}},
              "spec": {"selector": {"app": "theirs"}, "ports": [{"port": 80, "targetPort": 8080}]}}
    cluster.core.create_namespaced_service(namespace, theirs)
    before = cluster.core.read_namespaced_service("iris", namespace)
    md = model_deployment(model={"storageUri": "s3://models/pinned/iris", "digest": "sha256:" + "0" * 64})
    cluster.create(md, namespace)
    cond = cluster.wait_condition("ModelDeployment", namespace, "iris", "False", "NameConflict", timeout=60)
    assert "Service iris already exists" in cond["message"] and "left untouched" in cond["message"], cond
    after = cluster.core.read_namespaced_service("iris", namespace)
    assert after.metadata.resource_version == before.metadata.resource_version
    assert not after.metadata.owner_references and after.spec.selector == {"app": "theirs"}
    wait_for(lambda: any(e.reason == "NameConflict" and e.type == "Warning" for e in cluster.events(namespace, "iris")),
             what="a Warning event NameConflict")
    # written through events.k8s.io/v1, without the deprecated core/v1 fields
    said = [e for e in cluster.custom.list_namespaced_custom_object("events.k8s.io", "v1", namespace, "events")["items"]
            if e.get("reason") == "NameConflict" and e["regarding"]["name"] == "iris"]
    assert said and said[0]["reportingController"] == "mlops.dev/operator" and said[0]["eventTime"], said
    assert said[0]["regarding"]["kind"] == "ModelDeployment" and "Service iris" in said[0]["note"]
    assert not said[0].get("deprecatedCount") and not said[0].get("deprecatedFirstTimestamp"), said[0]
    assert not (said[0].get("deprecatedSource") or {}).get("component"), said[0]
    cluster.custom.delete_namespaced_custom_object("mlops.dev", "v1alpha1", namespace, "modeldeployments", "iris")
    wait_for(lambda: not any(d.metadata.name.startswith("iris-") for d in
                             cluster.apps.list_namespaced_deployment(namespace).items), 60,
             "the ModelDeployment's own children collected")
    assert cluster.core.read_namespaced_service("iris", namespace).spec.selector == {"app": "theirs"}


def untouched(obj: Any) -> None:
    """Written by nobody but its maker and its controller (status): its first generation, no owner, no field of the
    operator's."""
    from mlops_operator.controller.client import FIELD_MANAGER

    assert obj.metadata.generation in (None, 1) and not obj.metadata.owner_references  # a 1.20 Job has none
    assert FIELD_MANAGER not in {m.manager for m in obj.metadata.managed_fields or ()}, obj.metadata.managed_fields


def test_a_deployment_or_a_job_of_the_same_name_is_never_adopted(
    cluster: Cluster, operator: OperatorThread, namespace: str
) -> None:
    """The revision's Deployment and the training Job are created, never applied over an object of that name
    someone else made: both end in NameConflict with the object untouched (the 409 is followed by a read)."""
    from mlops_operator.api.modeldeployment import ModelDeploymentSpec
    from mlops_operator.builders.modeldeployment import revision
    from mlops_operator.builders.trainingrun import job_name

    idle = {"containers": [{"name": "c", "image": "localhost/mlops-busybox:1"}], "restartPolicy": "Never"}
    digest = "sha256:" + "2" * 64
    md = model_deployment(model={"storageUri": "s3://models/pinned/iris", "digest": digest})
    taken = f"iris-{revision(ModelDeploymentSpec.model_validate(md['spec']), digest)}"
    cluster.apps.create_namespaced_deployment(namespace, {
        "metadata": {"name": taken}, "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "theirs"}},
                                              "template": {"metadata": {"labels": {"app": "theirs"}},
                                                           "spec": {**idle, "restartPolicy": "Always"}}}})
    cluster.create(md, namespace)
    cond = cluster.wait_condition("ModelDeployment", namespace, "iris", "False", "NameConflict", timeout=60)
    assert f"Deployment {taken} already exists" in cond["message"], cond
    untouched(cluster.apps.read_namespaced_deployment(taken, namespace))

    run = cluster.create(training_run(suspend=True), namespace)
    job = job_name(run)
    cluster.batch.create_namespaced_job(namespace, {"metadata": {"name": job}, "spec": {
        "parallelism": 0, "template": {"spec": idle}}})
    cluster.patch("TrainingRun", namespace, "iris-v1", {"spec": {"suspend": False}})
    cond = cluster.wait_condition("TrainingRun", namespace, "iris-v1", "False", "NameConflict", timeout=60)
    assert f"Job {job} already exists" in cond["message"], cond
    untouched(cluster.batch.read_namespaced_job(job, namespace))
