"""The whole loop end to end, as `mlops dev demo` runs it (the same code, `dev.loop`), on the real
control plane and node: the operator installed by Helm and running as its Pod, training and serving in
containers from the runtime image: the first version serves
and answers through the Service proxy; shifted traffic drifts; exactly one retrain; the new version
passes its gates and its analysis and takes all the traffic; drift goes away; a bad version that
passed a lax gate is rolled back while the good one keeps serving."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys

import pytest

from mlops_operator.dev.loop import LoopFailed, Traffic, iris_rows, run_loop
from mlops_operator.dev.proxy import Proxy, Resolver
from tests.conftest import S3
from tests.health import argocd_health

from .conftest import Cluster, InClusterOperator
from .test_modeldeployment import mlops
from .test_trainingrun import credentials


def test_drift_retrain_gate_rollout_and_a_bad_version_rolled_back(
    cluster: Cluster, helm_operator: InClusterOperator, sp_namespace: str, s3: S3
) -> None:
    ns = sp_namespace
    storage = s3.client()
    for bucket in ("datasets", "models"):
        with contextlib.suppress(storage.exceptions.BucketAlreadyOwnedByYou):
            storage.create_bucket(Bucket=bucket)
    credentials(cluster, ns, s3)
    timeline: list[str] = []
    try:
        facts = run_loop(cluster.api_client, ns, storage, out=timeline.append, step_timeout=240)
    except LoopFailed as exc:
        pytest.fail(f"{exc}\n" + "\n".join(timeline) + "\nthe operator's log:\n" + helm_operator.logs()[-4000:])
    text = "\n".join(timeline)

    assert facts.first_answer and len(facts.first_answer) == 1, text
    assert facts.baseline_verdict == "NotDrifted", text
    assert {"sepal_length", "petal_length", "petal_width"} <= set(facts.drifted_features), text
    assert "sepal_width" not in facts.drifted_features, text

    # exactly one retrain, owned by the policy, and it is what serves now
    policy_uid = cluster.get("DriftPolicy", ns, "iris-drift")["metadata"]["uid"]
    runs = cluster.custom.list_namespaced_custom_object("mlops.dev", "v1alpha1", ns, "trainingruns")["items"]
    owned = [r["metadata"]["name"] for r in runs
             if any(o["uid"] == policy_uid for o in r["metadata"].get("ownerReferences") or ())]
    assert owned == [facts.retrain], text
    assert facts.retrain_metrics["accuracy"] >= 0.9
    md = cluster.get("ModelDeployment", ns, "iris")["status"]
    assert md["stable"]["trainingRun"] == facts.retrain
    assert md["stable"]["revision"] == facts.new_revision != facts.first_revision
    promoted = [h for h in md["history"] if h["revision"] == facts.new_revision and h["outcome"] == "Promoted"]
    assert promoted and "accuracy" in promoted[0]["message"], md["history"]
    # on the shifted data the retrained version beats the one it replaced
    numbers = facts.analysis["measurements"]
    assert facts.analysis["verdict"] == "Passed" and numbers["candidate.accuracy"] > numbers["stable.accuracy"], numbers
    assert facts.share_on_new == 1.0
    assert facts.verdict_after == "NotDrifted"
    drifted = next(c for c in cluster.get("DriftPolicy", ns, "iris-drift")["status"]["conditions"]
                   if c["type"] == "Drifted")
    assert drifted["status"] == "False", drifted

    # the bad version passed its gate, failed its comparison with the serving one, and was rolled back
    stump = cluster.get("TrainingRun", ns, "iris-stump")["status"]
    assert next(c for c in stump["conditions"] if c["type"] == "GatesPassed")["status"] == "True"
    assert facts.bad_revision in md["rejected"]
    assert "accuracy" in facts.bad_message, facts.bad_message
    assert facts.share_on_stable_during_bad == 1.0
    assert facts.errors == 0, text

    # every Pod of the loop ran in a container from an image containerd holds; the model server the operator
    # built runs as the image's user 65532 on a read-only root filesystem, enforced by runc
    pods = cluster.core.list_namespaced_pod(ns).items
    assert pods and all("sha256:" in (c.image_id or "") for p in pods for c in p.status.container_statuses or ()), [
        (p.metadata.name, [c.image_id for c in p.status.container_statuses or ()]) for p in pods]
    server = next(p for p in pods if p.status.phase == "Running"
                  and (p.metadata.labels or {}).get("mlops.dev/revision") == facts.new_revision)
    who = cluster.kubectl("exec", "-n", ns, server.metadata.name, "-c", server.spec.containers[0].name, "--",
                          "python", "-c", "import os; print(os.getuid(), os.getgid())").stdout.split()
    assert who == ["65532", "65532"]
    write = cluster.kubectl("exec", "-n", ns, server.metadata.name, "-c", server.spec.containers[0].name, "--",
                            "python", "-c", "open('/x', 'w')", check=False)
    assert write.returncode != 0 and "Read-only file system" in write.stderr, write.stderr

    # the kind path's proxy mode: through the apiserver's pod proxy with the kubeconfig's credentials
    proxy = Proxy(Resolver(cluster.api_client, ns, "iris"), via_api=True)
    try:
        status, headers, body = proxy.forward("GET", "/v2/health/ready", None, {})
    finally:
        proxy.server.server_close()
    assert dict(headers)["x-mlops-revision"] == facts.new_revision
    assert status == 200, (status, body)

    # what a user runs: `mlops dev proxy svc/iris -n NS`
    proc = subprocess.Popen([sys.executable, "-m", "mlops_operator.cli", "dev", "proxy", "svc/iris", "-n", ns,
                             "--port", "0"], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig)})
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().split()[1]
        code, revision, answer = Traffic(url, "iris", []).send(iris_rows()[0][:2])
        assert (code, revision) == (200, facts.new_revision), answer
        assert len(answer["outputs"][0]["data"]) == 2
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    # the loop as a user reads it: `mlops status md/iris` and `mlops get`
    def cli(*args: str) -> str:
        done = mlops(cluster, *args)
        assert done.returncode == 0, done.stderr
        return done.stdout

    tree = cli("status", "md/iris", "-n", ns)
    assert f"stable    {facts.new_revision}  {facts.retrain}" in tree, tree
    assert re.search(rf"{facts.retrain}  Completed  gates Passed  .*accuracy 0\.9\d\d.*← serving", tree), tree
    assert re.search(r"iris-stump  Completed  gates Passed  .*accuracy 0\.6\d\d.*\(rejected by analysis\)", tree), tree
    # the loop's traffic stopped when it closed: once its last window has gone by, the policy has too few
    # samples for a verdict (InsufficientData, Drifted=Unknown), never a drift
    assert re.search(r"DriftPolicy iris-drift: Drifted=(False|Unknown)", tree), tree
    assert f"retrain {facts.retrain} created" in tree, tree
    tables = cli("get", "-n", ns)
    for row in (r"iris-v1\s+iris\s+Completed\s+Passed", rf"iris\s+{facts.new_revision}\s+-\s+",
                r"iris-drift\s+iris\s+(NotDrifted|InsufficientData)\s+-\s+1\s"):
        assert re.search(row, tables), (row, tables)

    # Argo CD's view of the same objects (the chart's Lua health checks): a stream whose last candidate
    # was rolled back while the stable version serves is Healthy, and so is everything else here
    for kind, name in (("ModelDeployment", "iris"), ("DriftPolicy", "iris-drift"), ("TrainingRun", "iris-v1"),
                       ("TrainingRun", facts.retrain), ("TrainingRun", "iris-stump")):
        assert argocd_health(cluster.get(kind, ns, name))[0] == "Healthy", (kind, name)
