"""Live quality on the real cluster and node: a ModelDeployment captures its live calls to S3 (moto), takes
ground-truth labels on its feedback endpoint, and its owned `mlops quality` Job joins them; the accuracy in
status equals the one computed here from the labels sent, and the captured files read back equal the calls; an
operator killed while a join runs neither loses nor double-counts a label."""

from __future__ import annotations

import contextlib
import io
import json
import urllib.request
from typing import Any

import pandas as pd

from mlops_operator.api import times
from mlops_operator.dev.runner import OperatorThread
from tests.conftest import S3

from .conftest import Cluster, OperatorProcess, wait_for
from .test_driftpolicy import DP, RETRAIN, policy
from .test_modeldeployment import cond, model_deployment, serving_first_version, status, train, wait_status
from .test_trainingrun import iris_data, training_run

__all__ = ["iris_data"]  # a fixture used here


def post(url: str, body: Any) -> Any:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={
        "Content-Type": "application/json", "Authorization": "Bearer not-for-the-capture"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        return json.loads(resp.read())


def serve_with_capture(cluster: Cluster, ns: str, s3: S3) -> tuple[str, str]:
    """The first version serving with capture to S3 and joins every 10 s: its revision and inference URL."""
    client = s3.client()
    with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
        client.create_bucket(Bucket="captures")
    md = model_deployment(capture={"destination": f"s3://captures/{ns}", "maxFileAgeSeconds": 2},
                          groundTruth={"joinEverySeconds": 10, "windowSeconds": 3600})
    rev = serving_first_version(cluster, ns, s3, md)
    def ready() -> Any:  # a Pod of the revision that answers (promotion needs only some of them ready)
        return next((p for p in cluster.core.list_namespaced_pod(ns, label_selector=f"mlops.dev/revision={rev}").items
                     if p.status.pod_ip and not p.metadata.deletion_timestamp and any(
                         c.type == "Ready" and c.status == "True" for c in p.status.conditions or ())), None)
    pod = wait_for(ready, 60, f"a ready Pod of revision {rev}")
    return rev, f"http://{pod.status.pod_ip}:8080/v2/models/iris"


def traffic(url: str) -> tuple[dict[str, tuple[list[list[float]], list[int]]], dict[str, list[int]]]:
    """30 calls of 1 or 2 iris rows (half with the client's own id) and their labels sent back, a third of them
    wrong (a model in trouble), plus one for an id never served: the calls (rows, answers) and labels by id."""
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True)
    sent: dict[str, tuple[list[list[float]], list[int]]] = {}
    truth: dict[str, list[int]] = {}
    for i in range(0, 60, 2):
        rows = X[i:i + 1 + i % 4 // 2].tolist()
        body: dict[str, Any] = {"inputs": [{"name": "x", "shape": [len(rows), 4], "datatype": "FP64", "data": rows}]}
        if i % 4 == 0:
            body["id"] = f"call-{i}"
        answer = post(f"{url}/infer", body)
        sent[answer["id"]] = (rows, answer["outputs"][0]["data"])
        truth[answer["id"]] = [int(v) for v in y[i:i + len(rows)]]
    for n, rid in enumerate(sorted(truth)):
        if n % 3 == 0:
            truth[rid] = [(t + 1) % 3 for t in truth[rid]]
    labels: dict[str, Any] = {rid: t if len(t) > 1 else t[0] for rid, t in truth.items()}
    assert post(f"{url}/feedback", labels | {"never-served": 1}) == {"accepted": len(labels) + 1}
    return sent, truth


def joined(cluster: Cluster, ns: str, rev: str, rows: int) -> dict[str, Any]:
    """status.liveQuality once the revision's `rows` are all labelled."""
    st = wait_status(cluster, ns, lambda s: s if any(
        r["revision"] == rev and r["labelled"] == rows for r in (s.get("liveQuality") or {}).get("revisions")
        or ()) else None, "every label joined in status.liveQuality", timeout=180)
    return dict(st["liveQuality"])


def test_captured_calls_and_feedback_labels_give_live_accuracy_in_status(
    cluster: Cluster, operator: OperatorThread, namespace: str, s3: S3, iris_data: str
) -> None:
    ns = namespace
    rev, url = serve_with_capture(cluster, ns, s3)
    sent, truth = traffic(url)
    rows_sent = sum(len(r) for r, _ in sent.values())
    correct = sum(int(t == p) for rid, (_, pred) in sent.items() for t, p in zip(truth[rid], pred, strict=True))
    live = joined(cluster, ns, rev, rows_sent)
    [mine] = [r for r in live["revisions"] if r["revision"] == rev]
    assert mine["metrics"]["accuracy"] == round(correct / rows_sent, 6) and mine["correct"] == correct
    assert mine["predictions"] == rows_sent and sum(map(sum, mine["confusion"])) == rows_sent
    assert live["unknownLabels"] == 1 and live["windowSeconds"] == 3600

    # the captured files, read back from S3: the calls as sent and answered, nothing else
    client = s3.client()
    keys = [o["Key"] for o in client.list_objects_v2(Bucket="captures", Prefix=f"{ns}/predictions/")["Contents"]]
    captured = pd.concat([pd.read_json(io.BytesIO(client.get_object(Bucket="captures", Key=k)["Body"].read()),
                                       lines=True, dtype={"id": str, "revision": str}, precise_float=True)
                          for k in keys])
    assert set(captured.columns) == {"id", "row", "time", "revision", "predict",
                                     "sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"}
    assert len(captured) == rows_sent and set(captured["revision"]) == {rev}
    for rid, (rows, predicted) in sent.items():
        mine_rows = captured[captured["id"] == rid].sort_values("row")
        assert mine_rows.iloc[:, 4:8].to_numpy().tolist() == rows and mine_rows["predict"].tolist() == predicted
    # answered joins are deleted; at most the one under way remains
    wait_for(lambda: len(cluster.batch.list_namespaced_job(ns, label_selector="mlops.dev/quality").items) <= 1, 60,
             "answered quality Jobs to be deleted")

    # production data to train on: the labelled captured rows after the base dataset, read by the trainer
    cluster.create(training_run("iris-from-capture", model="iris", gates=[], dataset={
        "fromCapture": {"uri": f"s3://captures/{ns}", "sinceSeconds": 3600, "plus": "s3://data/iris.csv"},
        "targetColumn": "target"}), ns)
    cluster.wait_condition("TrainingRun", ns, "iris-from-capture", "True", type_="Succeeded", timeout=240)
    record = cluster.get("TrainingRun", ns, "iris-from-capture")["status"]["reproducibility"]
    assert (record["capturedRows"], record["baseRows"], record["datasetRows"]) == (rows_sent, 150, 150 + rows_sent)
    assert record["datasetUri"] == f"s3://captures/{ns}" and record["capturedFileCount"] == len(keys)
    assert all(f.startswith(f"predictions/{rev}/") for f in record["capturedFiles"])


def test_an_operator_killed_while_a_join_runs_counts_every_label_once(
    cluster: Cluster, operator_process: OperatorProcess, sp_namespace: str, s3: S3, iris_data: str
) -> None:
    ns = sp_namespace
    operator_process.start()
    rev, url = serve_with_capture(cluster, ns, s3)
    sent, truth = traffic(url)
    rows_sent = sum(len(r) for r, _ in sent.values())
    posted = times.now()
    # a join started after the labels went in, killed before its answer is read; the Job finishes meanwhile
    started = wait_status(cluster, ns, lambda s: s if ((s.get("liveQuality") or {}).get("job") and
                                                       s["liveQuality"]["attempt"] >= posted) else None,
                          "a join started after the labels", timeout=60)["liveQuality"]
    operator_process.kill()
    wait_for(lambda: cluster.batch.read_namespaced_job(started["job"], ns).status.succeeded, 120,
             "the join Job to finish while no operator runs")
    operator_process.start()
    live = joined(cluster, ns, rev, rows_sent)
    # every label once: none lost with the killed operator, none added twice by the one after it
    assert (live["labels"], live["duplicateLabels"], live["unknownLabels"]) == (rows_sent + 1, 0, 1)
    correct = sum(int(t == p) for rid, (_, pred) in sent.items() for t, p in zip(truth[rid], pred, strict=True))
    [mine] = [r for r in live["revisions"] if r["revision"] == rev]
    assert mine["correct"] == correct and mine["labelled"] == rows_sent == mine["predictions"]
    # a client retrying the same labels: each still counts once (the repeats are reported)
    labels = {rid: t if len(t) > 1 else t[0] for rid, t in truth.items()}
    assert post(f"{url}/feedback", labels)["accepted"] == len(labels)
    again = wait_status(cluster, ns, lambda s: s if (s.get("liveQuality") or {}).get("duplicateLabels") == rows_sent
                        else None, "the repeated labels joined", timeout=120)["liveQuality"]
    [mine] = [r for r in again["revisions"] if r["revision"] == rev]
    assert again["labels"] == rows_sent + 1 and mine["correct"] == correct


def test_falling_live_accuracy_makes_the_drift_policy_retrain(
    cluster: Cluster, operator: OperatorThread, namespace: str, s3: S3, iris_data: str
) -> None:
    ns = namespace
    rev, url = serve_with_capture(cluster, ns, s3)
    dp = policy("iris-quality", RETRAIN)
    dp["spec"]["performance"] = {"metric": "accuracy", "threshold": "0.9", "minLabels": 20}
    cluster.create(dp, ns)
    wait_for(lambda: cond(cluster.get(DP, ns, "iris-quality").get("status") or {}, "PerformanceDrifted").get("reason")
             == "InsufficientLabels", 60, "no verdict before any label")
    sent, truth = traffic(url)  # a third of the labels disagree with the model: the concept moved
    rows = sum(len(r) for r, _ in sent.values())
    correct = sum(int(t == p) for rid, (_, pred) in sent.items() for t, p in zip(truth[rid], pred, strict=True))
    def degraded() -> Any:
        p = cluster.get(DP, ns, "iris-quality")
        return p if cond(p.get("status") or {}, "PerformanceDrifted").get("status") == "True" else None

    found = wait_for(degraded, 180, "the policy to find the live accuracy degraded",
                     show=lambda: cluster.get(DP, ns, "iris-quality").get("status"))
    perf = found["status"]["lastPerformance"]
    assert perf["revision"] == rev and perf["labelled"] == rows and perf["verdict"] == "Degraded"
    assert perf["value"] == round(correct / rows, 6) < 0.9 and perf["limit"] == 0.9
    assert "live accuracy" in cond(found["status"], "PerformanceDrifted")["message"]
    # the same Retrain action as data drift: one TrainingRun of the stream, owned by the policy
    run = wait_for(lambda: next(iter(cluster.custom.list_namespaced_custom_object(
        "mlops.dev", "v1alpha1", ns, "trainingruns", label_selector="mlops.dev/driftpolicy=iris-quality")["items"]),
        None), 60, "the retrain TrainingRun")
    assert run["metadata"]["name"] == "iris-quality-1" and run["spec"]["model"] == "iris"
    assert [r["name"] for r in found["status"].get("retrains") or cluster.get(DP, ns, "iris-quality")["status"]
            ["retrains"]] == ["iris-quality-1"]


def test_a_canary_is_judged_on_live_labels_promoted_when_it_holds_rolled_back_when_worse(
    cluster: Cluster, operator: OperatorThread, namespace: str, s3: S3, iris_data: str
) -> None:
    from sklearn.datasets import load_iris

    ns = namespace
    client = s3.client()
    with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
        client.create_bucket(Bucket="captures")
    analysis = {"intervalSeconds": 1, "durationSeconds": 2, "successRate": "0.9",
                "liveQuality": {"metric": "accuracy", "minLabels": 20, "maxDegradation": "0.1",
                                "maxWaitSeconds": 120}}
    md = model_deployment(replicas=2, analysis=analysis, capture={
        "destination": f"s3://captures/{ns}", "maxFileAgeSeconds": 1}, groundTruth={"joinEverySeconds": 10},
        strategy={"type": "Canary", "canary": {"steps": [{"weight": 50, "pauseSeconds": 5}]}})
    rev1 = serving_first_version(cluster, ns, s3, md)
    X, y = load_iris(return_X_y=True)

    def labelled_traffic(rev: str, wrong_for: str | None) -> Any:
        """Calls to every pod of both revisions, and their labels (all wrong for `wrong_for`'s answers),
        until the canary step is decided."""
        pods = [p for p in cluster.core.list_namespaced_pod(ns, label_selector="mlops.dev/modeldeployment=iris")
                .items if p.status.pod_ip and not p.metadata.deletion_timestamp and any(
                    c.type == "Ready" and c.status == "True" for c in p.status.conditions or ())]
        for i in range(0, 150, 5):
            for p in pods:
                revision = p.metadata.labels["mlops.dev/revision"]
                try:  # a Pod may go while this runs (a promotion scales the other revision down)
                    answer = post(f"http://{p.status.pod_ip}:8080/v2/models/iris/infer", {"inputs": [
                        {"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [X[i].tolist()]}]})
                    truth = int(y[i]) if revision != wrong_for else (answer["outputs"][0]["data"][0] + 1) % 3
                    post(f"http://{p.status.pod_ip}:8080/v2/models/iris/feedback", {answer["id"]: truth})
                except OSError:
                    continue
        s = status(cluster, ns)
        return s if (s.get("stable") or {}).get("revision") == rev or any(
            h.get("revision") == rev and h.get("outcome") == "RolledBack" for h in s.get("history") or ()) else None

    train(cluster, ns, "iris-v2", params={"n_estimators": 30})
    st = wait_status(cluster, ns, lambda s: s if s.get("currentStep") == 0 else None, "the canary step")
    rev2 = st["candidate"]["revision"]
    st = wait_for(lambda: labelled_traffic(rev2, None), 240, "the canary judged on its labels",
                  show=lambda: status(cluster, ns).get("conditions"))
    assert st["stable"]["revision"] == rev2, st.get("history")
    measured = st["lastAnalysis"]["measurements"]
    assert measured["liveLabels"] >= 20 and measured["live_accuracy"] >= measured["live_accuracy_stable"] - 0.1
    assert "live accuracy" in st["lastAnalysis"]["message"]

    train(cluster, ns, "iris-v3", params={"n_estimators": 40})
    st = wait_status(cluster, ns, lambda s: s if s.get("currentStep") == 0 and s["candidate"]["revision"] != rev2
                     else None, "the next canary step")
    rev3 = st["candidate"]["revision"]
    st = wait_for(lambda: labelled_traffic(rev3, rev3), 240, "the worse canary judged on its labels",
                  show=lambda: status(cluster, ns).get("conditions"))
    assert st["stable"]["revision"] == rev2 and rev1 != rev2
    rolled = next(h for h in st["history"] if h.get("revision") == rev3)
    assert rolled["outcome"] == "RolledBack" and "live accuracy 0 over" in rolled["message"]
