"""The model server as a real process on a loopback port, spoken to over HTTP (no cluster)."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlops_operator.api import artifacts
from mlops_operator.dev.controlplane import free_port, free_ports
from mlops_operator.runtime import sdk
from mlops_operator.runtime.profile import Counts
from tests.conftest import S3


class Served:
    def __init__(self, model_dir: Path, name: str, *extra: str) -> None:
        self.port, self.grpc_port, self.monitoring_port = free_ports(3)
        self.log = model_dir.parent / f"serve-{self.port}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mlops_operator.cli", "serve", "--model-dir", str(model_dir), "--name", name,
                 "--host", "127.0.0.1", "--port", str(self.port), "--grpc-port", str(self.grpc_port),
                 "--monitoring-port", str(self.monitoring_port), *extra], stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            try:
                self.request("GET", "/v2/health/live", port=self.monitoring_port)
                break
            except OSError:
                assert self.proc.poll() is None, self.log.read_text()
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.05)

    def request(self, method: str, path: str, body: Any = None, raw: bytes | None = None,
                headers: dict[str, str] | None = None, port: int | None = None) -> tuple[int, Any]:
        return self.exchange(method, path, body, raw, headers, port)[:2]

    def exchange(self, method: str, path: str, body: Any = None, raw: bytes | None = None,
                 headers: dict[str, str] | None = None, port: int | None = None) -> tuple[int, Any, dict[str, str]]:
        """status, body (JSON decoded when JSON), response headers (lower-case names)."""
        conn = http.client.HTTPConnection("127.0.0.1", port or self.port, timeout=30)
        try:
            data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
            conn.request(method, path, body=data, headers=headers or {})
            resp = conn.getresponse()
            payload = resp.read()
            ctype = resp.getheader("content-type", "")
            answer = (json.loads(payload) if payload else "") if "json" in ctype else \
                payload if "octet" in ctype else payload.decode()
            return resp.status, answer, {k.lower(): v for k, v in resp.getheaders()}
        finally:
            conn.close()

    def infer(self, body: Any, name: str = "iris") -> tuple[int, Any]:
        return self.request("POST", f"/v2/models/{name}/infer", body)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)


def make_model(tmp: Path, categorical: bool = False) -> tuple[Path, Any, Any, str]:
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    X, y = load_iris(return_X_y=True, as_frame=True)
    model: Any = RandomForestClassifier(n_estimators=10, random_state=0)
    if categorical:
        X = X.assign(size=pd.Series(np.where(X["petal length (cm)"] > 4, "big", "small"), index=X.index))
        model = Pipeline([("enc", ColumnTransformer([("c", OneHotEncoder(handle_unknown="ignore"), ["size"])],
                                                    remainder="passthrough")), ("m", model)])
    model.fit(X, y)
    out = tmp / ("model-cat" if categorical else "model")
    digest = sdk.save_model(model, X, out, validation=(X.head(20), y.head(20)))
    return out, model, X, digest


def tensor(rows: list[list[float]], name: str = "input-0", datatype: str = "FP64") -> dict[str, Any]:
    return {"name": name, "shape": [len(rows), len(rows[0]) if rows else 4], "datatype": datatype, "data": rows}


def test_health_metadata_and_ready(server: Served, iris: tuple[Path, Any, Any, str]) -> None:
    assert server.request("GET", "/v2/health/live") == (200, {"live": True})
    assert server.request("GET", "/v2/health/ready")[0] == 200
    assert server.request("GET", "/v2/models/iris/ready")[0] == 200
    status, meta = server.request("GET", "/v2")
    assert status == 200 and meta["name"] == "mlops-serve" and "monitoring" in meta["extensions"]
    status, model = server.request("GET", "/v2/models/iris")
    assert status == 200 and model["name"] == "iris" and model["versions"] == [iris[3]]
    assert [i["name"] for i in model["inputs"]] == list(iris[2].columns)
    status, profile = server.request("GET", "/v2/models/iris/profile", port=server.monitoring_port)
    assert status == 200 and profile == json.loads((iris[0] / "profile.json").read_text())


def test_predictions_equal_the_models_own(server: Served, iris: tuple[Path, Any, Any, str]) -> None:
    _, model, X, _ = iris
    rows = X.sample(25, random_state=1).to_numpy().tolist()
    status, body = server.infer({"id": "req-1", "parameters": {"trace": True}, "inputs": [tensor(rows)]})
    assert status == 200 and body["id"] == "req-1" and body["model_name"] == "iris"
    # every output the model has when the request names none (the protocol's default): predict first
    assert [o["name"] for o in body["outputs"]] == ["predict", "probabilities"]
    out = body["outputs"][0]
    assert out["datatype"] == "INT64" and out["shape"] == [25]
    assert out["data"] == model.predict(np.asarray(rows)).tolist()
    # flattened row-major data and one tensor per feature mean the same
    flat = {"name": "x", "shape": [25, 4], "datatype": "FP32", "data": [v for r in rows for v in r]}
    assert server.infer({"inputs": [flat]})[1]["outputs"][0]["data"] == out["data"]
    per_feature = [{"name": f, "shape": [25], "datatype": "FP64", "data": [r[j] for r in rows]}
                   for j, f in enumerate(X.columns)]
    assert server.infer({"inputs": per_feature[::-1]})[1]["outputs"][0]["data"] == out["data"]


BAD_REQUESTS: list[tuple[str, Any, int, str]] = [
    ("not json", b"{inputs: [", 400, "not valid JSON"),
    ("json array", [1, 2], 400, "JSON object"),
    ("no inputs", {"id": "x"}, 400, "inputs must be a non-empty list"),
    ("empty inputs", {"inputs": []}, 400, "non-empty list"),
    ("input not object", {"inputs": ["x"]}, 400, "inputs[0] must be an object"),
    ("missing datatype", {"inputs": [{"name": "a", "shape": [1, 4], "data": [1, 2, 3, 4]}]}, 400,
     "inputs[0].datatype is missing"),
    ("missing data", {"inputs": [{"name": "a", "shape": [1, 4], "datatype": "FP64"}]}, 400,
     "inputs[0].data is missing"),
    ("unknown datatype", {"inputs": [tensor([[1, 2, 3, 4]], datatype="FLOAT")]}, 400, "'FLOAT' is not a V2 datatype"),
    ("negative shape", {"inputs": [{"name": "a", "shape": [-1, 4], "datatype": "FP64", "data": []}]}, 400,
     "non-negative integers"),
    ("shape mismatch", {"inputs": [{"name": "a", "shape": [2, 4], "datatype": "FP64", "data": [1, 2, 3, 4]}]}, 400,
     "holds 8 values but data has 4"),
    ("wrong feature count", {"inputs": [tensor([[1, 2, 3]])]}, 400, "has 3 features per row; the model takes 4"),
    ("string in FP64", {"inputs": [tensor([[1, "a", 3, 4]])]}, 400, "'a' is not a number"),
    ("bytes for numeric model", {"inputs": [tensor([["1", "2", "3", "4"]], datatype="BYTES")]}, 400,
     "features are all numeric"),
    ("unknown feature", {"inputs": [{"name": "colour", "shape": [1], "datatype": "FP64", "data": [1]}]}, 400,
     "'colour' is not a feature"),
    ("missing features", {"inputs": [{"name": "sepal length (cm)", "shape": [1], "datatype": "FP64", "data": [1]}]},
     400, "features missing from the request: sepal width (cm)"),
    ("duplicate feature",
     {"inputs": [{"name": "sepal length (cm)", "shape": [1], "datatype": "FP64", "data": [1]}] * 2},
     400, "given twice"),
    ("infinity", b'{"inputs":[{"name":"a","shape":[1,4],"datatype":"FP64","data":[1e400,2,3,4]}]}', 400,
     "number is infinity"),
    ("too large for the model", {"inputs": [tensor([[1e308, 2, 3, 4]])]}, 400, "cannot take these inputs"),
    ("parameters not object", {"inputs": [tensor([[1, 2, 3, 4]])], "parameters": [1]}, 400,
     "parameters must be an object"),
    ("too many rows", {"inputs": [{"name": "a", "shape": [200000, 4], "datatype": "FP64", "data": []}]}, 413,
     "at most 100000"),
    ("oversized body", {"inputs": [tensor([[1.0, 2.0, 3.0, 4.0]] * 10000)]}, 413, "--max-body-bytes"),
]


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_bad_input_gets_a_clear_4xx_and_the_server_keeps_serving(server: Served, case: Any) -> None:
    _, body, status, message = case
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    got, answer = server.request("POST", "/v2/models/iris/infer", raw=raw)
    assert got == status and message in answer["error"], answer
    ok, _ = server.infer({"inputs": [tensor([[5.1, 3.5, 1.4, 0.2]])]})
    assert ok == 200


@pytest.mark.parametrize("method,path,status,message", [
    ("POST", "/v2/models/wine/infer", 404, "unknown model 'wine'"),
    ("GET", "/v2/models/iris/infer", 405, "GET is not allowed"),
    ("GET", "/v3/anything", 404, "no such endpoint"),
])
def test_routing_errors(server: Served, method: str, path: str, status: int, message: str) -> None:
    got, answer = server.request(method, path, {"inputs": []} if method == "POST" else None)
    assert got == status and message in answer["error"]


def monitoring(server: Served) -> dict[str, Any]:
    status, snap = server.request("GET", "/v2/models/iris/monitoring", port=server.monitoring_port)
    assert status == 200
    return snap


def test_monitoring_counts_equal_an_independent_count(tmp_path: Path, iris: tuple[Path, Any, Any, str]) -> None:
    model_dir, model, X, digest = iris
    s = Served(model_dir, "iris", "--digest", digest)
    try:
        rng = np.random.default_rng(7)
        batches = [X.sample(int(rng.integers(1, 30)), random_state=i).to_numpy() for i in range(12)]
        batches.append(np.array([[np.nan, 100.0, -100.0, 0.0]]))  # missing, above and below the training range
        for b in batches:
            rows = [[None if np.isnan(v) else float(v) for v in r] for r in b]
            assert s.infer({"inputs": [tensor(rows)]})[0] == 200
        # a client's mistake is counted apart: not a request served, not an error of the model, not data
        assert s.infer({"inputs": [tensor([[1, 2, 3]])]})[0] == 400
        snap = monitoring(s)
        everything = np.vstack(batches)
        profile = artifacts.read_profile(model_dir)
        for j, dist in enumerate(profile.features):
            expected = Counts(dist)
            col = everything[:, j]
            finite = col[~np.isnan(col)]
            counts = np.zeros(len(dist.counts), dtype=int)
            for v in finite:  # the documented rule, counted the slow way
                counts[sum(1 for e in dist.edges or [] if v >= e)] += 1
            expected.add(col)
            got = next(f for f in snap["features"] if f["name"] == dist.name)
            assert got["counts"] == counts.tolist() == expected.snapshot()["counts"]
            assert got["missing"] == int(np.isnan(col).sum())
        assert snap["requests"] == len(batches) and snap["errors"] == 0 and snap["clientErrors"] == 1
        assert snap["rows"] == len(everything)
        predictions = model.predict(np.nan_to_num(everything[:-1])).tolist()
        pred_counts = {c: predictions.count(int(c)) for c in profile.prediction.categories}
        assert sum(snap["prediction"]["counts"]) == len(everything)
        assert all(snap["prediction"]["counts"][i] >= pred_counts[c] for i, c in
                   enumerate(profile.prediction.categories))
        assert sum(snap["latency"]["counts"]) == snap["requests"] and snap["digest"] == digest
        assert snap["profileDigest"].startswith("sha256:")
        # /metrics is valid Prometheus text with the same numbers
        from prometheus_client.parser import text_string_to_metric_families

        _, text = s.request("GET", "/metrics", port=s.monitoring_port)
        families = {f.name: f for f in text_string_to_metric_families(text)}
        by_code = {x.labels["code"]: x.value for x in families["mlops_requests"].samples
                   if x.name == "mlops_requests_total"}
        assert by_code == {"200": snap["requests"], "400": 1}
        assert families["mlops_request_client_errors"].samples[0].value == 1
        assert families["mlops_request_errors"].samples[0].value == 0
        info = families["mlops_model_info"].samples[0].labels
        assert info == {"model": "iris", "digest": digest, "format": "sklearn"}
        hist = [x for x in families["mlops_request_duration_seconds"].samples if x.name.endswith("_count")]
        assert hist[0].value == snap["requests"]
    finally:
        s.stop()


def test_two_servers_sketches_add_up_to_the_sketch_of_all_requests(tmp_path: Path,
                                                                   iris: tuple[Path, Any, Any, str]) -> None:
    model_dir, _, X, _ = iris
    a, b, both = (Served(model_dir, "iris") for _ in range(3))
    try:
        rows = X.sample(60, random_state=3).to_numpy().tolist()
        for i, r in enumerate(rows):
            (a if i % 3 else b).infer({"inputs": [tensor([r])]})
            both.infer({"inputs": [tensor([r])]})
        sa, sb, sboth = monitoring(a), monitoring(b), monitoring(both)
        for fa, fb, fall in zip(sa["features"], sb["features"], sboth["features"], strict=True):
            assert [x + y for x, y in zip(fa["counts"], fb["counts"], strict=True)] == fall["counts"]
        assert [x + y for x, y in zip(sa["prediction"]["counts"], sb["prediction"]["counts"], strict=True)] == \
            sboth["prediction"]["counts"]
        assert sa["rows"] + sb["rows"] == sboth["rows"] == 60
    finally:
        for s in (a, b, both):
            s.stop()


def test_categorical_features_and_unseen_categories(tmp_path: Path) -> None:
    model_dir, model, X, digest = make_model(tmp_path, categorical=True)
    s = Served(model_dir, "iris", "--digest", digest)
    try:
        rows = X.head(5)
        inputs = [{"name": f, "shape": [5], "datatype": "BYTES" if f == "size" else "FP64",
                   "data": rows[f].tolist()} for f in X.columns]
        status, body = s.infer({"inputs": inputs})
        assert status == 200 and body["outputs"][0]["data"] == model.predict(rows).tolist()
        inputs[-1] = {"name": "size", "shape": [5], "datatype": "BYTES", "data": ["huge", None, "big", "big", "x"]}
        assert s.infer({"inputs": inputs})[0] == 200
        size = next(f for f in monitoring(s)["features"] if f["name"] == "size")
        assert size["other"] == 2 and size["missing"] == 1 and sum(size["counts"]) == 7
        bad = [*inputs[:-1], {**inputs[-1], "datatype": "FP64", "data": [1, 2, 3, 4, 5]}]
        status, answer = s.infer({"inputs": bad})
        assert status == 400 and "categorical: use datatype BYTES" in answer["error"]
    finally:
        s.stop()


def test_digest_mismatch_is_live_but_never_ready(iris: tuple[Path, Any, Any, str]) -> None:
    s = Served(iris[0], "iris", "--digest", "sha256:" + "0" * 64)
    try:
        status, body = s.request("GET", "/v2/models/iris/ready")
        assert status == 503 and "digest mismatch" in body["error"]
        assert s.request("GET", "/v2/health/ready")[0] == 503
        assert s.request("GET", "/v2/health/live")[0] == 200
        status, body = s.infer({"inputs": [tensor([[1, 2, 3, 4]])]})
        assert status == 503 and "not ready" in body["error"]
    finally:
        s.stop()
    assert "digest mismatch" in s.log.read_text()


def test_pickle_needs_an_explicit_opt_in(tmp_path: Path, iris: tuple[Path, Any, Any, str]) -> None:
    import joblib

    _, model, X, _ = iris
    d = tmp_path / "pickled"
    d.mkdir()
    joblib.dump(model, d / "model.joblib")
    meta = artifacts.ModelMetadata(format="joblib", model_file="model.joblib", task="classification",
                                   features=[artifacts.Feature(name=c, type="numeric") for c in X.columns])
    digest = artifacts.finalize(d, meta)
    refused = Served(d, "iris", "--digest", digest)
    try:
        status, body = refused.request("GET", "/v2/models/iris/ready")
        assert status == 503 and "--allow-unsafe-formats" in body["error"]
    finally:
        refused.stop()
    allowed = Served(d, "iris", "--digest", digest, "--allow-unsafe-formats")
    try:
        assert allowed.infer({"inputs": [tensor([[5.1, 3.5, 1.4, 0.2]])]})[0] == 200
    finally:
        allowed.stop()


def test_sigterm_lets_a_request_in_flight_finish(iris: tuple[Path, Any, Any, str]) -> None:
    s = Served(iris[0], "iris")
    big = {"inputs": [tensor([[5.1, 3.5, 1.4, 0.2]] * 50000)]}
    raw = json.dumps(big).encode()
    conn = socket.create_connection(("127.0.0.1", s.port))
    head = (f"POST /v2/models/iris/infer HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            f"content-length: {len(raw)}\r\n\r\n").encode()
    conn.sendall(head + raw[: len(raw) // 2])  # a request half sent
    s.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)  # let the signal land while the request is in flight: the point of this test
    conn.sendall(raw[len(raw) // 2:])
    answer = b""
    conn.settimeout(30)
    while b"\r\n\r\n" not in answer or len(answer.split(b"\r\n\r\n", 1)[1]) < int(
            answer.split(b"content-length: ")[1].split(b"\r\n")[0]):
        chunk = conn.recv(65536)
        if not chunk:
            break
        answer += chunk
    assert answer.startswith(b"HTTP/1.1 200")
    assert s.proc.wait(30) == 0


def test_storage_init_file_s3_http_and_digest(tmp_path: Path, iris: tuple[Path, Any, Any, str], s3: S3) -> None:
    model_dir, _, _, digest = iris

    def init(uri: str, dest: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mlops_operator.cli", "storage-init", "--uri", uri,
                               "--dest", str(dest), *extra], capture_output=True, text=True, timeout=120,
                              env={**os.environ, "MLOPS_TERMINATION_LOG": str(tmp_path / "term"), **(env or {})})

    ok = init(f"file://{model_dir}", tmp_path / "a", "--digest", digest)
    assert ok.returncode == 0, ok.stderr
    assert artifacts.verify(tmp_path / "a", digest)
    assert init(str(model_dir), tmp_path / "mounted", "--digest", digest).returncode == 0
    bad = init(f"file://{model_dir}", tmp_path / "b", "--digest", "sha256:" + "1" * 64)
    assert bad.returncode == 1 and "digest mismatch" in bad.stderr and list((tmp_path / "b").iterdir()) == []
    assert "digest mismatch" in (tmp_path / "term").read_text()
    missing = init("file:///no/such/model", tmp_path / "c")
    assert missing.returncode == 1 and "/no/such/model: not found" in missing.stderr

    client = s3.client()
    client.create_bucket(Bucket="serving")
    for f in model_dir.iterdir():
        client.upload_file(str(f), "serving", f"iris/v1/{f.name}")
    assert init("s3://serving/iris/v1", tmp_path / "d", "--digest", digest, env=s3.env).returncode == 0
    gone = init("s3://serving/iris/v9", tmp_path / "e", env=s3.env)
    assert gone.returncode == 1 and "s3://serving/iris/v9: not found" in gone.stderr
    no_creds = init("s3://serving/iris/v1", tmp_path / "f",
                    env={"AWS_ENDPOINT_URL": s3.endpoint, "AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "",
                         "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent", "AWS_CONFIG_FILE": "/nonexistent"})
    assert no_creds.returncode == 1 and "s3://serving/iris/v1" in no_creds.stderr

    # http(s): a .tar.gz of the directory
    archive = tmp_path / "www" / "iris.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        for f in model_dir.iterdir():
            tar.add(f, arcname=f.name)
    port = free_port()
    www = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                            "--directory", str(archive.parent)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 1).close()
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert init(f"http://127.0.0.1:{port}/iris.tar.gz", tmp_path / "g", "--digest", digest).returncode == 0
        notfound = init(f"http://127.0.0.1:{port}/nope.tar.gz", tmp_path / "h")
        assert notfound.returncode == 1 and "HTTP 404" in notfound.stderr
    finally:
        www.terminate()
        www.wait()


def model_dir_for(tmp: Path, fmt: str, write: Any, X: Any, predictions: Any, task: str,
                  classes: list[Any] | None) -> tuple[Path, str]:
    """A model directory in another format, with the profile and metadata of the contract."""
    from mlops_operator.runtime import profile as profiles

    d = tmp / fmt
    d.mkdir()
    write(d / artifacts.MODEL_FILES[fmt])
    prof = profiles.build({c: ("numeric", X[c].tolist()) for c in X.columns},
                          ("categorical", [str(p) for p in predictions]))
    artifacts.write_json(d / artifacts.PROFILE_FILE, prof)
    meta = artifacts.ModelMetadata(format=fmt, model_file=artifacts.MODEL_FILES[fmt], task=task, classes=classes,
                                   features=[artifacts.Feature(name=c, type="numeric") for c in X.columns])
    return d, artifacts.finalize(d, meta)


def test_onnx_and_xgboost_models_serve_the_same_predictions(tmp_path: Path) -> None:
    import xgboost
    from skl2onnx import to_onnx
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    X, y = load_iris(return_X_y=True, as_frame=True)
    rows = X.sample(30, random_state=2)
    logistic = LogisticRegression(max_iter=500).fit(X, y)
    onnx_model = to_onnx(logistic, X.to_numpy()[:1].astype(np.float32), options={"zipmap": False})
    booster = xgboost.XGBClassifier(n_estimators=10, max_depth=3).fit(X, y)
    cases = [
        ("onnx", lambda p: p.write_bytes(onnx_model.SerializeToString()), logistic.predict(rows)),
        ("xgboost", lambda p: booster.save_model(str(p)), booster.predict(rows)),
    ]
    for fmt, write, expected in cases:
        d, digest = model_dir_for(tmp_path, fmt, write, X, y, "classification", [0, 1, 2])
        s = Served(d, "iris", "--digest", digest)
        try:
            status, body = s.infer({"inputs": [tensor(rows.to_numpy().tolist())]})
            assert status == 200, body
            assert body["outputs"][0]["data"] == expected.tolist(), fmt
            assert monitoring(s)["rows"] == 30
        finally:
            s.stop()


def test_an_onnx_model_asking_for_cuda_without_it_says_so_and_serves_on_the_cpu(tmp_path: Path,
                                                                                monkeypatch: pytest.MonkeyPatch,
                                                                                ) -> None:
    import onnxruntime
    from skl2onnx import to_onnx
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    from mlops_operator.runtime.formats import onnx_providers

    assert onnx_providers("CUDA", ["CUDAExecutionProvider", "CPUExecutionProvider"]) == (
        ["CUDAExecutionProvider", "CPUExecutionProvider"], None)
    assert onnx_providers("CPU", ["CUDAExecutionProvider", "CPUExecutionProvider"]) == (["CPUExecutionProvider"], None)
    assert "CUDAExecutionProvider" not in onnxruntime.get_available_providers()  # this machine's: CPU only
    X, y = load_iris(return_X_y=True, as_frame=True)
    logistic = LogisticRegression(max_iter=500).fit(X, y)
    onnx_model = to_onnx(logistic, X.to_numpy()[:1].astype(np.float32), options={"zipmap": False})
    d, digest = model_dir_for(tmp_path, "onnx", lambda p: p.write_bytes(onnx_model.SerializeToString()), X, y,
                              "classification", [0, 1, 2])
    monkeypatch.setenv("MLOPS_ONNX_EXECUTION_PROVIDER", "CUDA")  # as the builder sets it from the spec
    s = Served(d, "iris", "--digest", digest)
    try:
        status, body = s.infer({"inputs": [tensor(X.to_numpy()[:5].tolist())]})
        assert status == 200 and body["outputs"][0]["data"] == logistic.predict(X[:5]).tolist()
    finally:
        s.stop()
    log = s.log.read_text()
    assert "the CUDA execution provider was asked for" in log and "serving on the CPU" in log, log
    assert "ONNX execution providers: CPUExecutionProvider" in log


def test_storage_init_refuses_an_s3_key_outside_the_model_directory(tmp_path: Path,
                                                                    iris: tuple[Path, Any, Any, str],
                                                                    s3: S3) -> None:
    """`prefix//abs/path` is a valid S3 key: joined to --dest it names an absolute path the digest
    does not cover. storage-init refuses it and writes nothing outside --dest."""
    model_dir, _, _, digest = iris
    client = s3.client()
    client.create_bucket(Bucket="escape")
    for f in model_dir.iterdir():
        client.upload_file(str(f), "escape", f"iris/v1/{f.name}")
    outside = tmp_path / "outside" / "planted.txt"
    client.put_object(Bucket="escape", Key=f"iris/v1/{outside}", Body=b"not part of the model")
    client.put_object(Bucket="escape", Key="iris/v1/sub/../../up.txt", Body=b"up")
    dest = tmp_path / "dest"
    done = subprocess.run([sys.executable, "-m", "mlops_operator.cli", "storage-init", "--uri", "s3://escape/iris/v1",
                           "--dest", str(dest), "--digest", digest], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "MLOPS_TERMINATION_LOG": str(tmp_path / "term"), **s3.env})
    assert done.returncode == 1
    assert "would be written outside the model directory" in done.stderr
    assert not outside.exists() and not (tmp_path / "up.txt").exists()
    assert list(dest.iterdir()) == []
