"""The whole loop end to end, as `mlops dev demo` runs it (the same code, `dev.loop`), on the real
control plane and node: the operator installed by Helm and running as its Pod, training and serving in
containers from the runtime image: the first version serves
and answers through the Service proxy; shifted traffic drifts; exactly one retrain; the new version
passes its gates and its analysis and takes all the traffic; drift goes away; a bad version that
passed a lax gate is rolled back while the good one keeps serving. Then the concept shifts (the labels
posted to the feedback endpoint move, the inputs do not): live accuracy falls, the quality policy retrains
on the captured labelled calls after their data checks, and the canary is promoted on live labels; a run
on a corrupted export is stopped by its data checks."""

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

    # exactly one data-drift retrain, owned by the policy; it beat the version it replaced on the shifted data
    def owned_by(policy: str) -> list[str]:
        uid = cluster.get("DriftPolicy", ns, policy)["metadata"]["uid"]
        runs = cluster.custom.list_namespaced_custom_object("mlops.dev", "v1alpha1", ns, "trainingruns")["items"]
        return [r["metadata"]["name"] for r in runs
                if any(o["uid"] == uid for o in r["metadata"].get("ownerReferences") or ())]

    assert owned_by("iris-drift") == [facts.retrain], text
    assert facts.retrain_metrics["accuracy"] >= 0.9
    assert facts.new_revision != facts.first_revision
    md = cluster.get("ModelDeployment", ns, "iris")["status"]
    promoted = {h["revision"]: h for h in md["history"] if h["outcome"] == "Promoted"}
    assert promoted[facts.new_revision]["trainingRun"] == facts.retrain, md["history"]
    assert "accuracy" in promoted[facts.new_revision]["message"], md["history"]
    numbers = facts.analysis["measurements"]
    assert facts.analysis["verdict"] == "Passed" and numbers["candidate.accuracy"] > numbers["stable.accuracy"], numbers
    assert facts.share_on_new == 1.0
    assert facts.verdict_after == "NotDrifted"

    # the bad version passed its gate, failed its comparison with the serving one, and was rolled back
    stump = cluster.get("TrainingRun", ns, "iris-stump")["status"]
    assert next(c for c in stump["conditions"] if c["type"] == "GatesPassed")["status"] == "True"
    assert facts.bad_revision in md["rejected"]
    assert "accuracy" in facts.bad_message, facts.bad_message
    assert facts.share_on_stable_during_bad == 1.0

    # the concept shift: live accuracy from the labels sent fell below the floor on the same inputs
    before, degraded = facts.performance_before, facts.performance_degraded
    assert before["revision"] == degraded["revision"] == facts.new_revision, (before, degraded)
    assert before["labelled"] >= 100 and before["value"] > before["limit"] == 0.7, before
    assert degraded["labelled"] >= 100 and degraded["value"] < 0.7 and degraded["verdict"] == "Degraded", degraded
    assert facts.labelled > 0 and facts.feedback_errors == 0 and facts.without_id == 0, text
    # one retrain, owned by the quality policy, trained on the captured labelled calls after its data checks
    assert owned_by("iris-quality") == [facts.concept_retrain], text
    run = cluster.get("TrainingRun", ns, facts.concept_retrain)
    assert run["spec"]["dataset"]["fromCapture"]["uri"] == "s3://datasets/capture/iris"
    checks, record = facts.concept_run["dataChecks"], facts.concept_run["reproducibility"]
    assert checks["passed"] and not checks["failures"] and checks["rows"] >= 200, checks
    assert record["capturedRows"] == checks["rows"] and record["capturedFileCount"] >= 1, record
    assert record["datasetDigest"].startswith("sha256:"), record
    assert facts.concept_run["metrics"]["accuracy"] >= 0.9
    # rolled out as a canary and promoted because it beat the serving version on the labels of the same calls
    live = facts.concept_analysis["measurements"]
    assert facts.concept_analysis["verdict"] == "Passed", facts.concept_analysis
    assert live["liveLabels"] >= 100 and live["live_accuracy"] > live["live_accuracy_stable"], live
    assert "live accuracy" in facts.concept_analysis["message"]
    assert promoted[facts.concept_revision]["trainingRun"] == facts.concept_retrain, md["history"]
    assert facts.share_on_concept == 1.0
    after = facts.performance_after
    assert after["revision"] == facts.concept_revision and after["value"] > 0.7, after

    # a run on a corrupted export stopped before training, naming the column; what serves did not change
    stopped = facts.corrupted
    assert stopped["reason"] == "DataCheckFailed" and "petal_width" in stopped["message"], stopped
    corrupted = cluster.get("TrainingRun", ns, "iris-corrupted")["status"]
    assert corrupted["dataChecks"]["passed"] is False and "model" not in corrupted, corrupted
    assert facts.stable_after_corrupted == md["stable"]["revision"] == facts.concept_revision
    assert md["stable"]["trainingRun"] == facts.concept_retrain
    assert facts.errors == 0, text

    # every container of the loop that ran, ran from an image containerd holds; the model server the operator
    # built runs as the image's user 65532 on a read-only root filesystem, enforced by runc
    pods = cluster.core.list_namespaced_pod(ns).items
    ran = [(p.metadata.name, c.image_id) for p in pods for c in p.status.container_statuses or () if c.container_id]
    assert all("sha256:" in (image or "") for _, image in ran), ran
    # which finished Pods are still there varies (Jobs' Pods go with their Jobs): the operator's and the serving
    # revision's containers are always among those that ran
    names = {name for name, _ in ran}
    assert any(n.startswith("mlops-") for n in names) and \
        any(n.startswith(f"iris-{facts.concept_revision}-") for n in names), ran
    server = next(p for p in pods if p.status.phase == "Running"
                  and (p.metadata.labels or {}).get("mlops.dev/revision") == facts.concept_revision)
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
    assert dict(headers)["x-mlops-revision"] == facts.concept_revision
    assert status == 200, (status, body)

    # what a user runs: `mlops dev proxy svc/iris -n NS`
    proc = subprocess.Popen([sys.executable, "-m", "mlops_operator.cli", "dev", "proxy", "svc/iris", "-n", ns,
                             "--port", "0"], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig)})
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().split()[1]
        code, revision, answer = Traffic(url, "iris", []).send(iris_rows()[0][:2])
        assert (code, revision) == (200, facts.concept_revision), answer
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
    assert f"stable    {facts.concept_revision}  {facts.concept_retrain}" in tree, tree
    assert re.search(rf"{facts.concept_retrain}  Completed  gates Passed  .*accuracy (0\.9\d\d|1\.000).*← serving",
                     tree), tree
    assert re.search(rf"{facts.retrain}  Completed  gates Passed  .*accuracy 0\.9\d\d", tree), tree
    assert re.search(r"iris-stump  Completed  gates Passed  .*accuracy 0\.6\d\d.*\(rejected by analysis\)", tree), tree
    assert "iris-corrupted  DataCheckFailed  gates NoResult" in tree, tree
    # the loop's traffic stopped when it closed: once its last window has gone by, the policy has too few
    # samples for a verdict (InsufficientData, Drifted=Unknown), never a drift
    assert re.search(r"DriftPolicy iris-drift: Drifted=(False|Unknown)", tree), tree
    assert re.search(r"DriftPolicy iris-quality: Drifted=(False|Unknown) .*, PerformanceDrifted=(False|Unknown)",
                     tree), tree
    assert f"retrain {facts.retrain} created" in tree, tree
    assert re.search(rf"retrain {facts.concept_retrain} created .*: Promoted", tree), tree
    tables = cli("get", "-n", ns)
    for row in (r"iris-v1\s+iris\s+Completed\s+Passed", rf"iris\s+{facts.concept_revision}\s+-\s+",
                r"iris-drift\s+iris\s+(NotDrifted|InsufficientData)\s+-\s+1\s"):
        assert re.search(row, tables), (row, tables)

    # Argo CD's view of the same objects (the chart's Lua health checks): a stream whose last candidate
    # was rolled back while the stable version serves is Healthy, and so is everything else here
    for kind, name in (("ModelDeployment", "iris"), ("DriftPolicy", "iris-drift"), ("DriftPolicy", "iris-quality"),
                       ("TrainingRun", "iris-v1"), ("TrainingRun", facts.retrain), ("TrainingRun", "iris-stump"),
                       ("TrainingRun", facts.concept_retrain)):
        assert argocd_health(cluster.get(kind, ns, name))[0] == "Healthy", (kind, name)
    assert argocd_health(cluster.get("TrainingRun", ns, "iris-corrupted"))[0] == "Degraded"
