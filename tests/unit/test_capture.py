"""Payload capture, feedback labels and their join (`mlops quality`): a real server process, files read back
with pandas and pyarrow, the join's numbers against an independent computation."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from mlops_operator.runtime.capture import Capture
from mlops_operator.runtime.quality import join
from tests.unit.test_server import Served, make_model, tensor


def metric(server: Served, name: str, **labels: str) -> float:
    status, text = server.request("GET", "/metrics", port=server.monitoring_port)
    assert status == 200
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


def wait_for(what: str, check: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def grpc_infer(port: int, rows: list[list[float]], rid: str = "") -> Any:
    import grpc

    from mlops_operator.runtime.oip import open_inference_grpc_pb2 as pb

    request = pb.ModelInferRequest(model_name="iris", id=rid)
    t = request.inputs.add(name="input-0", datatype="FP64", shape=[len(rows), 4])
    t.contents.fp64_contents.extend([v for r in rows for v in r])
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                                   request_serializer=pb.ModelInferRequest.SerializeToString,
                                   response_deserializer=pb.ModelInferResponse.FromString)
        return call(request, timeout=30)


def test_capture_feedback_and_the_join_read_back(tmp_path: Path, iris: tuple[Path, Any, Any, str]) -> None:
    model_dir, model, X, digest = iris
    dest = tmp_path / "capture"
    server = Served(model_dir, "iris", "--digest", digest, "--capture-to", f"file://{dest}", "--revision", "r1",
                    "--capture-max-age", "1")
    try:
        sent: dict[str, list[list[float]]] = {}
        answered: dict[str, list[int]] = {}
        rng = np.random.default_rng(3)
        for i in range(40):
            rows = X.sample(int(rng.integers(1, 4)), random_state=i).to_numpy().tolist()
            body: dict[str, Any] = {"inputs": [tensor(rows)]}
            if i % 2:
                body["id"] = f"req-{i}"
            status, out = server.infer(body)
            assert status == 200
            rid = out["id"]  # given, or assigned by the server and returned
            assert rid == body["id"] if "id" in body else rid not in sent and len(rid) > 16
            sent[rid], answered[rid] = rows, out["outputs"][0]["data"]
        reply = grpc_infer(server.grpc_port, sent["req-1"][:1])
        assert reply.id and reply.id not in sent  # gRPC answers carry the id assigned too
        sent[reply.id], answered[reply.id] = sent["req-1"][:1], model.predict(
            pd.DataFrame(sent["req-1"][:1], columns=X.columns)).tolist()
        # replayed validation rows (the monitoring port) are not live traffic: never captured
        assert server.request("POST", "/v2/models/iris/infer", {"id": "replay", "inputs": [tensor(sent["req-1"])]},
                              port=server.monitoring_port)[0] == 200

        ids = sorted(sent)
        truth = {rid: [int(v) for v in rng.integers(0, 3, len(sent[rid]))] for rid in ids}
        first = {rid: ([(t + 1) % 3 for t in truth[rid]] if len(truth[rid]) > 1 else (truth[rid][0] + 1) % 3)
                 for rid in ids[:5]}
        assert server.request("POST", "/v2/models/iris/feedback", first) == (200, {"accepted": 5})
        # the last label for an id counts: the first five are corrected; one label is for an id never served
        later = {rid: (t if len(t) > 1 else t[0]) for rid, t in truth.items()} | {"nobody": 1}
        assert server.request("POST", "/v2/models/iris/feedback", later) == (200, {"accepted": len(ids) + 1})
        assert server.request("POST", "/v2/models/iris/feedback", [1, 2])[0] == 400
        status, err = server.request("POST", "/v2/models/iris/feedback", {"x": {"a": 1}})
        assert status == 400 and "'x'" in err["error"]
        assert server.request("GET", "/v2/models/iris/feedback")[0] == 405

        n_rows = sum(len(r) for r in sent.values())
        wait_for("the rows written", lambda: metric(server, "mlops_capture_records_total", kind="prediction")
                 == n_rows and metric(server, "mlops_capture_records_total", kind="label") == 5 + len(ids) + 1)
        assert metric(server, "mlops_capture_dropped_total", kind="prediction") == 0
    finally:
        assert server.stop() == 0  # SIGTERM: the open files are closed and published

    assert not list(dest.rglob(".*.partial"))
    captured = pd.concat([pd.read_json(f, lines=True, dtype={"id": str}, precise_float=True)
                          for f in sorted((dest / "predictions" / "r1").glob("*.jsonl"))])
    assert len(captured) == n_rows and set(captured["revision"]) == {"r1"}
    for rid, rows in sent.items():
        mine = captured[captured["id"] == rid].sort_values("row")
        assert mine["row"].tolist() == list(range(len(rows)))
        assert mine[list(X.columns)].to_numpy().tolist() == rows
        assert mine["predict"].tolist() == answered[rid]
    about = json.loads((dest / "revisions" / "r1.json").read_text())
    assert about["task"] == "classification" and about["features"] == list(X.columns)
    labels = pd.concat([pd.read_json(f, lines=True, dtype={"id": str}) for f in sorted((dest / "labels").glob("*"))])
    assert len(labels) == 5 + len(ids) + 1

    # the join, as the Job runs it, against an independent count
    out = subprocess.run([sys.executable, "-m", "mlops_operator.cli", "quality", "--captured", f"file://{dest}"],
                         capture_output=True, text=True, check=True)
    report = json.loads(out.stdout)
    [rev] = report["revisions"]
    correct = sum(int(t == p) for rid in ids for t, p in zip(truth[rid], answered[rid], strict=True))
    assert rev["revision"] == "r1" and rev["labelled"] == n_rows == rev["predictions"]
    assert rev["correct"] == correct and sum(map(sum, rev["confusion"])) == n_rows
    assert report["unknownLabels"] == 1 and report["duplicateLabels"] == sum(len(truth[r]) for r in ids[:5])
    # a window that ends before the first request: every label is outside it
    early = join(f"file://{dest}", [], None, float(captured["time"].min()))
    assert early.revisions == [] and early.outside_window == n_rows and early.unknown_labels == 1


def test_parquet_capture_of_categorical_inputs(tmp_path: Path) -> None:
    model_dir, model, X, digest = make_model(tmp_path, categorical=True)
    dest = tmp_path / "capture"
    server = Served(model_dir, "cat", "--digest", digest, "--capture-to", str(dest), "--capture-format", "parquet",
                    "--revision", "r2")
    rows = X.head(7)
    inputs = [{"name": c, "shape": [7], "datatype": "BYTES" if c == "size" else "FP64", "data": rows[c].tolist()}
              for c in X.columns]
    try:
        status, out = server.infer({"id": "p-1", "inputs": inputs}, name="cat")
        assert status == 200
    finally:
        assert server.stop() == 0
    [file] = list((dest / "predictions" / "r2").glob("*.parquet"))
    table = pq.read_table(file).to_pandas()
    assert table["id"].tolist() == ["p-1"] * 7 and table["row"].tolist() == list(range(7))
    pd.testing.assert_frame_equal(table[list(X.columns)], rows.reset_index(drop=True), check_dtype=False)
    assert table["predict"].tolist() == out["outputs"][0]["data"] == model.predict(rows).tolist()


def test_a_full_queue_drops_and_counts_and_refuses_labels(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    capture = Capture(f"file://{tmp_path}", model="m", revision="r", features=["a"], task="regression",
                      classes=None, predict_type="FP64", registry=registry, capacity=2, pod="p")
    for i in range(3):
        capture.offer(f"id-{i}", {"a": np.asarray([float(i)])}, np.asarray([i * 2.0]), 1)
    assert registry.get_sample_value("mlops_capture_dropped_total", {"model": "m", "kind": "prediction"}) == 1
    assert capture.feedback([("id-0", 1.0)]) and capture.feedback([("id-1", 2.0)])
    assert not capture.feedback([("id-2", 3.0)])  # the client is told to retry (503), nothing is lost silently
    capture.start()
    capture.close()
    written = pd.read_json(next((tmp_path / "predictions" / "r").glob("*.jsonl")), lines=True)
    assert written["id"].tolist() == ["id-0", "id-1"] and written["predict"].tolist() == [0.0, 2.0]
    report = join(str(tmp_path), [], None, time.time() + 1)
    [rev] = report.revisions
    assert rev.task == "regression" and rev.labelled == 2 and rev.sum_squared_error == pytest.approx(1.0 + 0.0)
    assert rev.metric("rmse") == pytest.approx((1 / 2) ** 0.5) and rev.metric("mae") == pytest.approx(0.5)
    # labels from elsewhere (spec.groundTruth.uri), read after the capture's: the later label for id-1 counts
    (tmp_path / "truth.csv").write_text("id,label\nid-1,4.0\nid-9,1.0\n")
    report = join(str(tmp_path), [str(tmp_path / "truth.csv")], None, time.time() + 1)
    [rev] = report.revisions
    assert rev.sum_squared_error == pytest.approx(1.0 + 4.0) and rev.sum_error == pytest.approx(-3.0)
    assert (report.labels, report.duplicate_labels, report.unknown_labels) == (3, 1, 1)


def test_feedback_without_capture_is_refused_with_the_reason(server: Served) -> None:
    status, body = server.request("POST", "/v2/models/iris/feedback", {"a": 1})
    assert status == 404 and "spec.capture" in body["error"]


def test_a_training_set_from_labelled_captured_rows_and_a_base(tmp_path: Path, iris: tuple[Path, Any, Any, str]
                                                                ) -> None:
    """`mlops train` with dataset.fromCapture: the labelled captured rows (the last label counting), after the
    base dataset, recorded with the files read and the rows from each."""
    from sklearn.datasets import load_iris

    frame = load_iris(as_frame=True).frame
    features = list(frame.columns[:-1])
    dest = tmp_path / "capture"
    capture = Capture(f"file://{dest}", model="iris", revision="r1", features=features, task="classification",
                      classes=[0, 1, 2], predict_type="INT64", registry=CollectorRegistry(), pod="p")
    capture.start()
    for i in range(0, 150, 3):  # 50 calls of one row; labels for 40 of them, 5 of those corrected later
        row = frame.iloc[i]
        capture.offer(f"c{i}", {f: np.asarray([row[f]]) for f in features}, np.asarray([0]), 1)
    assert capture.feedback([(f"c{i}", 2) for i in range(0, 120, 3)])
    assert capture.feedback([(f"c{i}", int(frame["target"][i])) for i in range(0, 120, 3)])
    capture.close()
    base = tmp_path / "base.csv"
    frame.iloc[1::3].to_csv(base, index=False)
    out = subprocess.run([sys.executable, "-m", "mlops_operator.cli", "train"], capture_output=True, text=True, env={
        **os.environ, "MLOPS_ESTIMATOR": "sklearn.tree.DecisionTreeClassifier", "MLOPS_TARGET_COLUMN": "target",
        "MLOPS_OUTPUT_URI": f"file://{tmp_path / 'model'}", "MLOPS_DATASET_FROM_CAPTURE": json.dumps(
            {"uri": f"file://{dest}", "sinceSeconds": 3600, "plus": str(base)})})
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)["data"]
    assert (data["rows"], data["capturedRows"], data["baseRows"]) == (50 + 40, 40, 50)
    assert data["capturedFileCount"] == 1 and data["capturedFiles"][0].startswith("predictions/r1/p-")
    # the digest is of the table trained on: the base rows, then the captured ones with their last labels
    expected = pd.concat([frame.iloc[1::3], frame.iloc[0:120:3]], ignore_index=True)
    assert data["digest"] == "sha256:" + hashlib.sha256(expected.to_csv(index=False).encode()).hexdigest()
    # a window before the calls: nothing to train on, said so
    out = subprocess.run([sys.executable, "-m", "mlops_operator.cli", "train"], capture_output=True, text=True, env={
        **os.environ, "MLOPS_ESTIMATOR": "sklearn.tree.DecisionTreeClassifier", "MLOPS_TARGET_COLUMN": "target",
        "MLOPS_OUTPUT_URI": f"file://{tmp_path / 'model2'}", "MLOPS_DATASET_FROM_CAPTURE": json.dumps(
            {"uri": f"file://{tmp_path / 'nothing'}"})})
    assert out.returncode == 1 and "dataset.fromCapture" in out.stderr and "no captured predictions" in out.stderr


def test_an_unwritable_destination_turns_capture_off_and_serving_goes_on(tmp_path: Path,
                                                                          iris: tuple[Path, Any, Any, str]) -> None:
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the destination's directory would be")
    server = Served(iris[0], "iris", "--digest", iris[3], "--capture-to", f"file://{blocked}/capture")
    try:
        status, body = server.infer({"inputs": [tensor([[5.1, 3.5, 1.4, 0.2]])]})
        assert status == 200 and "id" not in body  # no capture: no id assigned
        assert server.request("POST", "/v2/models/iris/feedback", {"a": 1})[0] == 404
    finally:
        assert server.stop() == 0
    assert "capture to file://" in server.log.read_text() and "is off" in server.log.read_text()
