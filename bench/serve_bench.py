"""Model-server benchmark, every peer measured in the same run, one worker each, the server pinned to
CPU 0 and the load generator to CPU 1, over loopback:

  rest    the iris model (KServe's own example: an SVC, predict about 0.2 ms), one 1x4 FP64 JSON row:
          mlops serve with and without monitoring, without batching and with every call captured (JSON
          Lines files, and whether any was dropped), KServe's ModelServer, MLServer,
          a bare Starlette + uvicorn endpoint, and granian itself answering a fixed body (the HTTP ceiling); wrk.
  binary  a 30-feature model (scikit-learn's breast-cancer data, logistic regression) with binary
          tensors (Inference-Header-Content-Length) of 1x30, 100x30 and 1000x30 FP32: mlops vs KServe.
  grpc    the iris row as ModelInfer (raw_input_contents): mlops, KServe, MLServer, and a no-op grpcio
          servicer (the generator's ceiling); throughput by h2load (Debian nghttp2-client) with a
          prebuilt gRPC frame, p99 by a paced grpcio client.
  ceiling the same decode -> predict -> encode -> count as mlops serve, called in a loop in-process
          (no network), one call at a time: the server's req/s as a fraction of it. Batching (calls that
          wait together share one predict) lets the server pass it; the unbatched server is printed too.

    python bench/serve_bench.py [--duration 10] [--connections 8] [--repeat 3] [--only rest binary grpc]

The peers' virtual environments are created once in the cache (mlops_operator/dev/venvs.py).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlops_operator.dev.venvs import cached_venv

ROW = [5.1, 3.5, 1.4, 0.2]
PAYLOAD = {"id": "1", "inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": [ROW]}]}

KSERVE_SERVER = '''
import sys, joblib, numpy as np
from kserve import Model, ModelServer, InferRequest, InferResponse, InferOutput

class M(Model):
    def __init__(self, name, path):
        super().__init__(name)
        self.model = joblib.load(path)
        self.ready = True

    def predict(self, payload: InferRequest, headers=None, response_headers=None):
        x = payload.inputs[0].as_numpy()
        result = self.model.predict(x)
        out = InferOutput(name="predict", shape=list(result.shape), datatype="INT64")
        out.set_data_from_numpy(result.astype(np.int64), binary_data=bool(headers and
                                "inference-header-content-length" in {k.lower() for k in headers}))
        return InferResponse(model_name=self.name, infer_outputs=[out], response_id=payload.id)

if __name__ == "__main__":
    ModelServer(http_port=int(sys.argv[3]), grpc_port=int(sys.argv[4]), workers=1,
                enable_grpc=True).start([M(sys.argv[1], sys.argv[2])])
'''

BARE_SERVER = '''
import sys, joblib, numpy as np, orjson, uvicorn
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

model = joblib.load(sys.argv[1])

async def infer(request):
    body = orjson.loads(await request.body())
    t = body["inputs"][0]
    x = np.asarray(t["data"], dtype=float).reshape(t["shape"])
    result = model.predict(x)
    return Response(orjson.dumps({"model_name": "iris", "outputs": [{"name": "predict", "datatype": "INT64",
                    "shape": [len(result)], "data": result.tolist()}]}), media_type="application/json")

async def ready(request):
    return Response(b"{}", media_type="application/json")

app = Starlette(routes=[Route("/v2/models/iris/infer", infer, methods=["POST"]),
                        Route("/v2/health/ready", ready)])
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), workers=1, access_log=False, log_level="warning",
            loop="uvloop", http="httptools")
'''

# granian answering a fixed body: what the HTTP layer alone costs (runs in our own environment)
GRANIAN_NOOP = '''
import sys, uvloop
from granian.constants import Interfaces
from granian.server.embed import Server

BODY = b'{"model_name":"iris","outputs":[{"name":"predict","datatype":"INT64","shape":[1],"data":[0]}]}'

class App:
    async def __rsgi__(self, scope, proto):
        await proto()
        proto.response_bytes(200, [("content-type", "application/json")], BODY)

uvloop.run(Server(App(), address="127.0.0.1", port=int(sys.argv[1]), interface=Interfaces.RSGI,
                  log_enabled=False).serve())
'''

# a grpcio servicer answering a fixed ModelInferResponse: the gRPC generator's ceiling
GRPC_NOOP = '''
import asyncio, sys, grpc
from mlops_operator.runtime.oip import open_inference_grpc_pb2 as pb

RESPONSE = pb.ModelInferResponse(model_name="iris").SerializeToString()

async def infer(request, context):
    return RESPONSE

async def main():
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("inference.GRPCInferenceService", {
        "ModelInfer": grpc.unary_unary_rpc_method_handler(infer, request_deserializer=lambda b: b,
                                                          response_serializer=lambda b: b)}),))
    server.add_insecure_port(f"127.0.0.1:{sys.argv[1]}")
    await server.start()
    await server.wait_for_termination()

asyncio.run(main())
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sklearn_version() -> str:
    import sklearn

    return str(sklearn.__version__)


def make_model(work: Path) -> tuple[Path, Path]:
    """The iris model: a model directory for mlops serve and the same model as joblib for the peers."""
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.svm import SVC

    from mlops_operator.runtime import sdk

    X, y = load_iris(return_X_y=True, as_frame=True)
    model = SVC().fit(X, y)
    model_dir = work / "model"
    sdk.save_model(model, X, model_dir, validation=(X, y))
    pickled = work / "model.joblib"
    joblib.dump(model, pickled)
    mls = work / "mlserver"
    mls.mkdir()
    shutil.copy(pickled, mls / "model.joblib")
    (mls / "model-settings.json").write_text(json.dumps({
        "name": "iris", "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib", "version": "v1"}}))
    return model_dir, pickled


def make_wide_model(work: Path) -> tuple[Path, Path, Any]:
    """The breast-cancer model (30 features): model directory, joblib file, its data."""
    import joblib
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression

    from mlops_operator.runtime import sdk

    X, y = load_breast_cancer(return_X_y=True)
    model = LogisticRegression(max_iter=5000).fit(X, y)
    model_dir = work / "wide"
    sdk.save_model(model, X, model_dir)
    pickled = work / "wide.joblib"
    joblib.dump(model, pickled)
    return model_dir, pickled, X


def start(cmd: list[str], port: int, ready_path: str, log: Path, cpu: int = 0, env: dict[str, str] | None = None,
          cwd: Path | None = None) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        proc = subprocess.Popen(["taskset", "-c", str(cpu), *cmd], stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})}, cwd=cwd)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{cmd[0]} exited: {log.read_text()[-3000:]}")
        if ready_path.startswith("tcp:"):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return proc
        else:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{ready_path}", timeout=2) as r:
                    if r.status == 200:
                        return proc
            except OSError:
                pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"{cmd} did not become ready: {log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([0-9.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(url: str, body: bytes, headers: dict[str, str], work: Path, duration: int, connections: int,
        cpu: int = 1) -> dict[str, float]:
    data = work / "body.bin"
    data.write_bytes(body)
    script = work / "post.lua"
    lines = [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
    script.write_text(textwrap.dedent(f'''
        local f = io.open("{data}", "rb")
        wrk.body = f:read("*all")
        f:close()
        wrk.method = "POST"
    ''') + "\n".join(lines) + "\n")
    subprocess.run(["taskset", "-c", str(cpu), "wrk", "-t1", f"-c{connections}", "-d2s", "-s", str(script), url],
                   capture_output=True, check=True)  # warm-up
    out = subprocess.run(["taskset", "-c", str(cpu), "wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency",
                          "-s", str(script), url], capture_output=True, text=True, check=True).stdout
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"{errors.group(1)} error responses during the run:\n{out}")
    return {"rps": float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1)),  # type: ignore[union-attr]
            "p50": _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1)),  # type: ignore[union-attr]
            "p99": _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))}  # type: ignore[union-attr]


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    req = urllib.request.Request(url, data=body, headers=headers)
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.read(), {k.lower(): v for k, v in r.headers.items()}


def predictions_of(body: bytes, headers: dict[str, str]) -> list[Any]:
    if "inference-header-content-length" in headers:
        n = int(headers["inference-header-content-length"])
        out = json.loads(body[:n])["outputs"][0]
        if "data" in out:
            return list(out["data"])
        import numpy as np

        return np.frombuffer(body[n:n + out["parameters"]["binary_data_size"]], "<i8").tolist()
    return list(json.loads(body)["outputs"][0]["data"])


def binary_body(rows: Any) -> tuple[bytes, dict[str, str]]:
    import numpy as np

    raw = np.asarray(rows, dtype="<f4").tobytes()
    head = json.dumps({"id": "1", "inputs": [{"name": "input-0", "shape": list(np.shape(rows)), "datatype": "FP32",
                                   "parameters": {"binary_data_size": len(raw)}}],
                       "outputs": [{"name": "predict", "parameters": {"binary_data": True}}]}).encode()
    return head + raw, {"Inference-Header-Content-Length": str(len(head)), "Content-Type": "application/octet-stream"}


def grpc_request(model: str, rows: list[list[float]]) -> bytes:
    import numpy as np

    from mlops_operator.runtime.oip import open_inference_grpc_pb2 as pb

    req = pb.ModelInferRequest(model_name=model, id="1")
    req.inputs.add(name="input-0", datatype="FP64", shape=[len(rows), len(rows[0])])
    req.raw_input_contents.append(np.asarray(rows, dtype="<f8").tobytes())
    return req.SerializeToString()


def grpc_check(port: int, request: bytes) -> list[int]:
    import grpc
    import numpy as np

    from mlops_operator.runtime.oip import open_inference_grpc_pb2 as pb

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer", request_serializer=lambda b: b,
                                   response_deserializer=pb.ModelInferResponse.FromString)
        resp = call(request, timeout=10)
    if resp.raw_output_contents:
        return list(np.frombuffer(resp.raw_output_contents[0], "<i8").tolist())
    return list(resp.outputs[0].contents.int64_contents)


def h2load(port: int, request: bytes, work: Path, duration: int, connections: int, cpu: int = 1) -> float:
    frame = work / "frame.bin"
    frame.write_bytes(b"\0" + struct.pack(">I", len(request)) + request)
    cmd = ["taskset", "-c", str(cpu), "h2load", "-c", str(connections), "-m", "8", "-D", str(duration),
           "--warm-up-time", "2", "-H", "content-type: application/grpc", "-H", "te: trailers", "-d", str(frame),
           f"http://127.0.0.1:{port}/inference.GRPCInferenceService/ModelInfer"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    ok = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed", out)
    if ok is None or int(ok.group(2)):
        raise RuntimeError(f"h2load reported failures:\n{out}")
    return float(re.search(r"finished in [0-9.]+\w+, ([0-9.]+) req/s", out).group(1))  # type: ignore[union-attr]


def paced_grpc_p99(port: int, request: bytes, seconds: float = 5, rate: float = 300) -> float:
    """p99 (ms) of unary calls sent at a steady rate from one grpcio client (on CPU 1)."""
    import grpc

    os.sched_setaffinity(0, {1})
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                                       request_serializer=lambda b: b, response_deserializer=lambda b: b)
            latencies, start = [], time.perf_counter()
            n = int(seconds * rate)
            for i in range(n):
                due = start + i / rate
                if (wait := due - time.perf_counter()) > 0:
                    time.sleep(wait)
                t = time.perf_counter()
                call(request, timeout=10)
                latencies.append((time.perf_counter() - t) * 1000)
    finally:
        os.sched_setaffinity(0, set(range(os.cpu_count() or 2)))
    return statistics.quantiles(latencies, n=100)[98]


def ceiling(model_dir: Path, body: bytes, header_length: int | None, n: int = 5000) -> float:
    """Requests/s of mlops serve's own per-request work, in-process: decode, predict, encode, count."""
    from mlops_operator.runtime.inference import LoadedModel, Monitor, Served, encode_json, parse_json

    model = LoadedModel.load("m", model_dir, None)
    served = Served("m", model, None, Monitor(model))
    os.sched_setaffinity(0, {0})
    try:
        for _ in range(200):  # warm-up
            request = parse_json(body, header_length)
            m, outputs = served.infer(request)
            encode_json(m, request, outputs)
        started = time.perf_counter()
        for _ in range(n):
            t = time.perf_counter()
            request = parse_json(body, header_length)
            m, outputs = served.infer(request)
            encode_json(m, request, outputs)
            served.monitor.observe(time.perf_counter() - t, 200)
        return n / (time.perf_counter() - started)
    finally:
        os.sched_setaffinity(0, set(range(os.cpu_count() or 2)))


def capture_counts(port: int, timeout: float = 60) -> tuple[float, float, float]:
    """Calls answered, rows captured and rows dropped, once every answered call is written or dropped."""
    from prometheus_client.parser import text_string_to_metric_families

    deadline = time.monotonic() + timeout
    while True:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            values: dict[str, float] = {}
            for family in text_string_to_metric_families(r.read().decode()):
                for sample in family.samples:
                    key = sample.name + "/" + sample.labels.get("kind", "")
                    values[key] = values.get(key, 0.0) + sample.value
        answered = values.get("mlops_requests_total/", 0.0)
        written = values.get("mlops_capture_records_total/prediction", 0.0)
        dropped = values.get("mlops_capture_dropped_total/prediction", 0.0)
        if written + dropped >= answered or time.monotonic() > deadline:
            return answered, written, dropped
        time.sleep(0.2)


def mlops_cmd(model_dir: Path, name: str, port: int, grpc_port: int = 0, *extra: str) -> list[str]:
    return [sys.executable, "-m", "mlops_operator.cli", "serve", "--model-dir", str(model_dir), "--name", name,
            "--host", "127.0.0.1", "--port", str(port), "--grpc-port", str(grpc_port), "--monitoring-port", "0",
            *extra]


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3, help="rounds over all servers; medians are printed")
    parser.add_argument("--servers", nargs="*", metavar="PREFIX",
                        help="REST: only the servers whose name starts with one of these (e.g. 'mlops (')")
    parser.add_argument("--only", nargs="*", choices=("rest", "binary", "grpc"), default=("rest", "binary", "grpc"))
    args = parser.parse_args()
    for tool, package in (("wrk", "wrk"), ("h2load", "nghttp2-client")):
        if shutil.which(tool) is None:
            print(f"{tool} is needed: apt-get install {package}", file=sys.stderr)
            return 1
    sk = f"scikit-learn=={sklearn_version()}"
    kserve_py = cached_venv("bench-kserve", ["kserve==0.21.0", "pandas<3", sk, "joblib"])
    mlserver_bin = cached_venv("bench-mlserver", ["mlserver==1.7.1", "mlserver-sklearn==1.7.1", sk, "joblib"]).parent
    bare_py = cached_venv("bench-bare", ["starlette", "uvicorn[standard]", "orjson", "numpy", sk, "joblib"])
    work = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    (work / "kserve_server.py").write_text(KSERVE_SERVER)
    (work / "bare_server.py").write_text(BARE_SERVER)
    (work / "granian_noop.py").write_text(GRANIAN_NOOP)
    (work / "grpc_noop.py").write_text(GRPC_NOOP)
    model_dir, pickled = make_model(work)
    capture_monitoring = free_port()
    json_body = json.dumps(PAYLOAD).encode()
    json_headers = {"Content-Type": "application/json"}
    print(f"# wrk -t1 -c{args.connections} -d{args.duration}s and h2load -c{args.connections} -m8, server on CPU 0, "
          f"generator on CPU 1; medians of {args.repeat} rounds", flush=True)

    def mlserver(port: int, grpc_port: int) -> tuple[list[str], dict[str, str], Path]:
        return ([str(mlserver_bin / "mlserver"), "start", str(work / "mlserver")],
                {"MLSERVER_HTTP_PORT": str(port), "MLSERVER_GRPC_PORT": str(grpc_port),
                 "MLSERVER_METRICS_PORT": str(free_port()), "MLSERVER_PARALLEL_WORKERS": "0",
                 "MLSERVER_LOGGING_LEVEL": "WARNING"}, work)

    if "rest" in args.only:
        servers: dict[str, Callable[[int], tuple[list[str], str, dict[str, str] | None]]] = {
            "mlops (monitoring)": lambda p: (mlops_cmd(model_dir, "iris", p), "/v2/health/ready", None),
            "mlops (no monitoring)": lambda p: (mlops_cmd(model_dir, "iris", p, 0, "--no-monitoring"),
                                                "/v2/health/ready", None),
            "mlops (no batching)": lambda p: (mlops_cmd(model_dir, "iris", p, 0, "--max-batch-rows", "0"),
                                              "/v2/health/ready", None),
            "mlops (capture 100 %)": lambda p: (mlops_cmd(model_dir, "iris", p, 0, "--capture-to",
                                                          str(work / "capture"), "--monitoring-port",
                                                          str(capture_monitoring)), "/v2/health/ready", None),
            "mlops (capture parquet)": lambda p: (mlops_cmd(model_dir, "iris", p, 0, "--capture-to",
                                                            str(work / "capture"), "--capture-format", "parquet",
                                                            "--monitoring-port", str(capture_monitoring)),
                                                  "/v2/health/ready", None),
            "kserve": lambda p: ([str(kserve_py), str(work / "kserve_server.py"), "iris", str(pickled), str(p),
                                  str(free_port())], "/v2/health/ready", None),
            "mlserver": lambda p: (lambda cmd, env, _: (cmd, "/v2/health/ready", env))(*mlserver(p, free_port())),
            "bare starlette": lambda p: ([str(bare_py), str(work / "bare_server.py"), str(pickled), str(p)],
                                         "/v2/health/ready", None),
            "granian, fixed answer": lambda p: ([sys.executable, str(work / "granian_noop.py"), str(p)], "tcp:", None),
        }
        if args.servers:
            servers = {n: m for n, m in servers.items() if n.startswith(tuple(args.servers))}
        runs: dict[str, list[dict[str, float]]] = {}
        captured: list[tuple[str, float, float, float]] = []  # per run: answered, captured, dropped
        expected = None
        for round_ in range(args.repeat):
            for name, make in servers.items():
                port = free_port()
                cmd, ready, env = make(port)
                proc = start(cmd, port, ready, work / f"{name.split()[0]}.log", env=env, cwd=work)
                try:
                    url = f"http://127.0.0.1:{port}/v2/models/iris/infer"
                    if not name.startswith("granian"):
                        answer = predictions_of(*post(url, json_body, json_headers))
                        expected = expected or answer
                        if answer != expected:
                            raise RuntimeError(f"{name} answered {answer}, not {expected}")
                    r = wrk(url, json_body, json_headers, work, args.duration, args.connections)
                    if "capture" in name:
                        captured.append((name, *capture_counts(capture_monitoring)))
                finally:
                    stop(proc)
                runs.setdefault(name, []).append(r)
                print(f"# rest round {round_ + 1}: {name:24s} {r['rps']:8.0f} req/s  p50 {r['p50']:6.2f} ms  "
                      f"p99 {r['p99']:6.2f} ms", flush=True)
        res = {name: median_of(rs) for name, rs in runs.items()}
        top = ceiling(model_dir, json_body, None)
        print("\nREST, 1x4 FP64 JSON (iris SVC)")
        for name, r in res.items():
            print(f"  {name:24s} {r['rps']:8.0f} req/s   p50 {r['p50']:6.2f} ms   p99 {r['p99']:6.2f} ms")
        ours = res.get("mlops (monitoring)")
        print(f"  in-process ceiling       {top:8.0f} req/s (decode, predict, encode, count; no network)")
        if ours and "mlops (no batching)" in res:
            print(f"  mlops (monitoring) = {ours['rps'] / top:.2f} of the ceiling; without batching "
                  f"{res['mlops (no batching)']['rps'] / top:.2f}")
        for peer in ("kserve", "mlserver", "bare starlette"):
            if ours and peer in res:
                p = res[peer]
                print(f"  mlops vs {peer:15s} throughput {ours['rps'] / p['rps']:5.2f}x   "
                      f"p99 {ours['p99'] / p['p99']:5.2f}x")
        if ours and "mlops (no monitoring)" in res:
            off = res["mlops (no monitoring)"]
            print(f"  monitoring on vs off: throughput {100 * (ours['rps'] / off['rps'] - 1):+.1f} %")
        for name in ("mlops (capture 100 %)", "mlops (capture parquet)"):
            if ours and name in res:
                cap = res[name]
                print(f"  {name[7:-1]:13s} vs off: throughput {100 * (cap['rps'] / ours['rps'] - 1):+.1f} %   "
                      f"p99 {100 * (cap['p99'] / ours['p99'] - 1):+.1f} %   (goal: within 5 %)")
        for name, answered, written, dropped in captured:
            print(f"  {name[7:-1]}: {answered:.0f} calls answered, {written:.0f} rows written, "
                  f"{dropped:.0f} dropped (queue of 10,000 calls)")

    if "binary" in args.only:
        wide_dir, wide_pickled, X = make_wide_model(work)
        sizes = (1, 100, 1000)
        bruns: dict[tuple[str, int], list[dict[str, float]]] = {}
        for round_ in range(args.repeat):
            for name in ("mlops", "kserve"):
                port = free_port()
                cmd = mlops_cmd(wide_dir, "wide", port) if name == "mlops" else \
                    [str(kserve_py), str(work / "kserve_server.py"), "wide", str(wide_pickled), str(port),
                     str(free_port())]
                proc = start(cmd, port, "/v2/health/ready", work / f"wide-{name}.log", cwd=work)
                try:
                    url = f"http://127.0.0.1:{port}/v2/models/wide/infer"
                    for n in sizes:
                        rows = X[:n] if n <= len(X) else X[[i % len(X) for i in range(n)]]
                        body, headers = binary_body(rows)
                        got = predictions_of(*post(url, body, headers))
                        if len(got) != n:
                            raise RuntimeError(f"{name} answered {len(got)} predictions for {n} rows")
                        r = wrk(url, body, headers, work, args.duration, args.connections)
                        bruns.setdefault((name, n), []).append(r)
                        print(f"# binary round {round_ + 1}: {name:7s} {n:5d}x30 {r['rps']:8.0f} req/s  "
                              f"p99 {r['p99']:7.2f} ms", flush=True)
                finally:
                    stop(proc)
        bres = {k: median_of(v) for k, v in bruns.items()}
        print("\nbinary tensors, breast-cancer logistic regression, FP32 in, INT64 out")
        for n in sizes:
            body, headers = binary_body(X[:n] if n <= len(X) else X[[i % len(X) for i in range(n)]])
            top = ceiling(wide_dir, body, int(headers["Inference-Header-Content-Length"]), n=2000)
            m, k = bres[("mlops", n)], bres[("kserve", n)]
            print(f"  {n:5d}x30: mlops {m['rps']:7.0f} req/s (p99 {m['p99']:6.2f} ms)   kserve {k['rps']:7.0f} req/s "
                  f"(p99 {k['p99']:6.2f} ms)   ratio {m['rps'] / k['rps']:5.2f}x   mlops = {m['rps'] / top:.2f} of "
                  f"its ceiling ({top:.0f} req/s)")

    if "grpc" in args.only:
        request_iris = grpc_request("iris", [ROW])
        grpc_servers: dict[str, Callable[[int, int], tuple[list[str], dict[str, str] | None, int]]] = {
            "no-op servicer": lambda hp, gp: ([sys.executable, str(work / "grpc_noop.py"), str(gp)], None, gp),
            "mlops": lambda hp, gp: (mlops_cmd(model_dir, "iris", hp, gp), None, hp),
            "kserve": lambda hp, gp: ([str(kserve_py), str(work / "kserve_server.py"), "iris", str(pickled),
                                       str(hp), str(gp)], None, hp),
            "mlserver": lambda hp, gp: (*mlserver(hp, gp)[:2], hp),
        }
        gruns: dict[str, list[dict[str, float]]] = {}
        for round_ in range(args.repeat):
            for name, make in grpc_servers.items():
                http_port, grpc_port = free_port(), free_port()
                cmd, env, ready_port = make(http_port, grpc_port)
                ready = "tcp:" if name == "no-op servicer" else "/v2/health/ready"
                proc = start(cmd, ready_port, ready, work / f"grpc-{name.split()[0]}.log", env=env, cwd=work)
                try:
                    if ready == "tcp:":
                        time.sleep(0.5)  # the servicer listens a moment before it answers; no health to poll
                    else:
                        deadline = time.monotonic() + 30
                        while True:  # the gRPC port may open after the REST one
                            try:
                                grpc_check(grpc_port, request_iris)
                                break
                            except Exception:
                                if time.monotonic() > deadline:
                                    raise
                                time.sleep(0.2)
                    rps = h2load(grpc_port, request_iris, work, args.duration, args.connections)
                    p99 = paced_grpc_p99(grpc_port, request_iris)
                finally:
                    stop(proc)
                gruns.setdefault(name, []).append({"rps": rps, "p99": p99})
                print(f"# grpc round {round_ + 1}: {name:16s} {rps:8.0f} req/s  paced p99 {p99:6.2f} ms", flush=True)
        gres = {k: median_of(v) for k, v in gruns.items()}
        generator = gres["no-op servicer"]["rps"]
        print("\ngRPC ModelInfer, 1x4 FP64 raw_input_contents (iris SVC)")
        for name, r in gres.items():
            bound = "  (within 80 % of the generator's ceiling: generator-bound)" \
                if name != "no-op servicer" and r["rps"] >= 0.8 * generator else ""
            print(f"  {name:16s} {r['rps']:8.0f} req/s   paced p99 {r['p99']:6.2f} ms{bound}")
        ours = gres["mlops"]
        for peer in ("kserve", "mlserver"):
            print(f"  mlops vs {peer:9s} throughput {ours['rps'] / gres[peer]['rps']:5.2f}x   "
                  f"p99 {ours['p99'] / gres[peer]['p99']:5.2f}x")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
