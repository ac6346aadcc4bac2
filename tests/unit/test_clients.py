"""The model server as users reach it: inference clients nobody here wrote (tritonclient, kserve's REST and
gRPC clients, the generated open-inference-openapi client), and the protocol's published REST spec under
schemathesis. Each runs from a virtual environment of its own (their pins conflict with ours), created
once in the cache by the fixture, in CI too."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import numpy as np
import pytest
import yaml

from mlops_operator.dev.venvs import cached_venv
from tests.unit.test_server import Served, monitoring

CLIENTS = Path(__file__).resolve().parents[1] / "clients"
SPEC = Path(__file__).resolve().parents[1] / "specs" / "open_inference_rest.yaml"
TRITON = ["tritonclient[http,grpc]==2.73.0"]
KSERVE = ["kserve==0.21.0", "pandas<3"]
OIP = ["open-inference-openapi==2.0.0.1"]
SCHEMATHESIS = ["schemathesis==4.32.5"]


def run(venv: list[str], name: str, script: str, *args: str) -> dict[str, Any]:
    python = cached_venv(name, venv)
    proc = subprocess.run([str(python), str(CLIENTS / script), *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def rows_of(X: Any, n: int, seed: int) -> list[list[float]]:
    return [[float(v) for v in r] for r in X.sample(n, random_state=seed).to_numpy()]


def test_tritonclient_http_and_grpc_json_and_binary(server: Served, iris: tuple[Path, Any, Any, str]) -> None:
    _, model, X, digest = iris
    rows = rows_of(X, 12, 5)
    X32 = np.asarray(rows, dtype=np.float32)
    expected, probabilities = model.predict(X32).tolist(), model.predict_proba(X32)
    before = monitoring(server)
    got = run(TRITON, "tritonclient", "triton_client.py", f"127.0.0.1:{server.port}",
              f"127.0.0.1:{server.grpc_port}", "iris", digest, json.dumps(rows))
    assert got["http"] == {"live": True, "ready": True, "model_ready": True, "version_ready": True,
                           "other_version_ready": False, "versions": [digest]}
    for key in ("http_binary=True_version=False", "http_binary=True_version=True",
                "http_binary=False_version=False", "http_binary=False_version=True"):
        assert got[key]["predict"] == expected and got[key]["id"] == "t1", key
        assert np.allclose(got[key]["probabilities"], probabilities), key
    assert got["http_default"] == expected
    assert got["grpc"] == {"live": True, "ready": True, "model_ready": True, "version_ready": True,
                           "versions": [digest], "outputs": ["INT64", "FP64"]}
    assert got["grpc_infer"]["predict"] == expected and np.allclose(got["grpc_infer"]["probabilities"],
                                                                    probabilities)
    assert "unknown model 'wine'" in got["grpc_unknown"]
    # six inferences (five REST, one gRPC), all counted as this model's calls and live rows
    after = monitoring(server)
    assert after["requests"] - before["requests"] == 6 and after["rows"] - before["rows"] == 6 * len(rows)


def test_kserve_rest_and_grpc_clients(server: Served, iris: tuple[Path, Any, Any, str]) -> None:
    _, model, X, _ = iris
    rows = rows_of(X, 9, 6)
    X32 = np.asarray(rows, dtype=np.float32)
    expected = model.predict(X32).tolist()
    got = run(KSERVE, "kserve-client", "kserve_client.py", f"http://127.0.0.1:{server.port}",
              f"127.0.0.1:{server.grpc_port}", "iris", json.dumps(rows))
    assert got["live"] and got["model_ready"] and got["grpc_live"] and got["grpc_model_ready"]
    for key in ("rest_binary=True", "rest_binary=False", "grpc"):
        assert got[key]["predict"] == expected, key
        assert np.allclose(got[key]["probabilities"], model.predict_proba(X32)), key


def test_open_inference_openapi_client(server: Served, iris: tuple[Path, Any, Any, str]) -> None:
    _, model, X, digest = iris
    rows = rows_of(X, 7, 8)
    got = run(OIP, "open-inference-openapi", "oip_client.py", f"http://127.0.0.1:{server.port}", "iris", digest,
              json.dumps(rows))
    assert got["server"]["name"] == "mlops-serve"
    assert got["model"]["versions"] == [digest] == got["version_model"]["versions"]
    for key in ("infer", "version_infer"):
        assert got[key]["id"] == "o1" and got[key]["model_version"] == digest
        predict = got[key]["outputs"]["predict"]
        assert predict["datatype"] == "INT64" and predict["shape"] == [len(rows)]
        # the generated client parses tensor data as JSON numbers (floats): compare values
        assert predict["data"] == pytest.approx(model.predict(np.asarray(rows)).tolist())


def test_the_published_rest_spec_under_schemathesis(server: Served, iris: tuple[Path, Any, Any, str],
                                                    tmp_path: Path) -> None:
    """The vendored spec stays as published; its copy here has `${X}` as `{X}` (OpenAPI's template
    syntax) and the model's name and version pinned, so every example reaches the served model."""
    digest = iris[3]
    text = SPEC.read_text().replace("${MODEL_NAME}", "{MODEL_NAME}").replace("${MODEL_VERSION}", "{MODEL_VERSION}")
    spec = yaml.safe_load(text)
    pinned = {"MODEL_NAME": "iris", "MODEL_VERSION": digest}
    for item in spec["paths"].values():
        for p in item.get("parameters", []):
            p["schema"] = {"type": "string", "enum": [pinned[p["name"]]]}
    local = tmp_path / "open_inference_rest.yaml"
    local.write_text(yaml.safe_dump(spec))
    python = cached_venv("schemathesis", SCHEMATHESIS)
    cassette = tmp_path / "cassette.yaml"
    proc = subprocess.run(
        [str(python.parent / "st"), "run", str(local), "--url", f"http://127.0.0.1:{server.port}",
         "--checks", "not_a_server_error,response_schema_conformance", "--max-examples", "300", "--max-time", "180",
         "--report", "vcr", "--report-vcr-path", str(cassette), "--seed", "1"],
        capture_output=True, text=True, timeout=400, cwd=tmp_path)  # its cache goes there, not into the checkout
    assert proc.returncode == 0, proc.stdout[-5000:]
    interactions = yaml.safe_load(cassette.read_text())["http_interactions"]
    seen: dict[tuple[str, str], set[int]] = {}
    for i in interactions:
        url = unquote(i["request"]["uri"].split("?", 1)[0].removeprefix(f"http://127.0.0.1:{server.port}"))
        seen.setdefault((i["request"]["method"], url), set()).add(int(i["response"]["status"]["code"]))
    operations = {(m.upper(), path.replace("${MODEL_NAME}", "iris").replace("${MODEL_VERSION}", digest))
                  for path, item in yaml.safe_load(SPEC.read_text())["paths"].items() for m in item
                  if m != "parameters"}
    for op in operations:
        codes = seen.get(op, set())
        assert codes & {200, 400}, f"{op}: no 200 or 400 among {sorted(codes)}"
    assert 500 not in {c for codes in seen.values() for c in codes}
