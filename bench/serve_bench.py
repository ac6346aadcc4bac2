"""Model-server benchmark: the same iris scikit-learn model, the same V2 JSON payload, served by

  * mlops serve (this project), with and without monitoring (drift sketches)
  * KServe's Python ModelServer (the kserve package, a small Model subclass)
  * MLServer (mlserver + mlserver-sklearn)
  * a bare Starlette + uvicorn + orjson endpoint doing only the same parse and predict (the
    framework ceiling)

each in its own virtual environment (they conflict), one worker each, the server pinned to CPU 0
and the load generator (wrk, Debian package `wrk`) to CPU 1, over loopback. Prints requests/s,
p50 and p99 for each, and the ratios.

    python bench/serve_bench.py [--duration 10] [--connections 8]

The peers' virtual environments are created once under ~/.cache/mlops-operator/bench-venvs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path
from typing import Any

ROW = [5.1, 3.5, 1.4, 0.2]
PAYLOAD = {"id": "1", "inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": [ROW]}]}
VENVS = Path(os.environ.get("MLOPS_BENCH_VENVS", Path.home() / ".cache/mlops-operator/bench-venvs"))

KSERVE_SERVER = '''
import sys, joblib, numpy as np
from kserve import Model, ModelServer, InferRequest, InferResponse, InferOutput

class Iris(Model):
    def __init__(self, name, path):
        super().__init__(name)
        self.model = joblib.load(path)
        self.ready = True

    def predict(self, payload: InferRequest, headers=None, response_headers=None):
        x = payload.inputs[0].as_numpy()
        result = self.model.predict(x)
        out = InferOutput(name="predict", shape=list(result.shape), datatype="INT64", data=result.tolist())
        return InferResponse(model_name=self.name, infer_outputs=[out], response_id=payload.id)

if __name__ == "__main__":
    ModelServer(http_port=int(sys.argv[2]), grpc_port=int(sys.argv[3]), workers=1,
                enable_grpc=False).start([Iris("iris", sys.argv[1])])
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sklearn_version() -> str:
    import sklearn

    return str(sklearn.__version__)


def peer_venv(name: str, packages: list[str]) -> Path:
    venv = VENVS / name
    python = venv / "bin" / "python"
    marker = venv / ".installed"
    wanted = "\n".join(packages)
    if not marker.exists() or marker.read_text() != wanted:
        shutil.rmtree(venv, ignore_errors=True)
        print(f"# creating the {name} environment ({', '.join(packages)})", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *packages], check=True)
        marker.write_text(wanted)
    return python


def make_model(work: Path) -> tuple[Path, Path]:
    """The iris model: a model directory for mlops serve and the same model as joblib for the peers."""
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.svm import SVC

    from mlops_operator.runtime import sdk

    # KServe's own iris example model; its predict costs about 0.2 ms, so the servers' own costs show
    X, y = load_iris(return_X_y=True, as_frame=True)
    model = SVC().fit(X, y)
    model_dir = work / "model"
    sdk.save_model(model, X, model_dir, validation=(X, y))
    pickled = work / "model.joblib"
    joblib.dump(model, pickled)
    # MLServer's sklearn runtime reads a model-settings.json next to the model
    mls = work / "mlserver"
    mls.mkdir()
    shutil.copy(pickled, mls / "model.joblib")
    (mls / "model-settings.json").write_text(json.dumps({
        "name": "iris", "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib", "version": "v1"}}))
    return model_dir, pickled


def start(cmd: list[str], port: int, ready_path: str, log: Path, cpu: int = 0, env: dict[str, str] | None = None,
          cwd: Path | None = None) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        proc = subprocess.Popen(["taskset", "-c", str(cpu), *cmd], stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})}, cwd=cwd)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{cmd[0]} exited: {log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{ready_path}", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"{cmd} did not become ready: {log.read_text()[-3000:]}")


def check_answer(port: int) -> list[Any]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v2/models/iris/infer", data=json.dumps(PAYLOAD).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        body = json.loads(r.read())
    return list(body["outputs"][0]["data"])


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([0-9.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(port: int, work: Path, duration: int, connections: int, cpu: int = 1) -> dict[str, float]:
    script = work / "post.lua"
    script.write_text(textwrap.dedent(f'''
        wrk.method = "POST"
        wrk.body = {json.dumps(json.dumps(PAYLOAD))}
        wrk.headers["Content-Type"] = "application/json"
    '''))
    url = f"http://127.0.0.1:{port}/v2/models/iris/infer"
    subprocess.run(["taskset", "-c", str(cpu), "wrk", "-t1", f"-c{connections}", "-d2s", "-s", str(script), url],
                   capture_output=True, check=True)  # warm-up
    out = subprocess.run(["taskset", "-c", str(cpu), "wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency",
                          "-s", str(script), url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"{errors.group(1)} error responses during the run:\n{out}")
    return {"rps": rps, "p50": p50, "p99": p99}


def counting_cost(model_dir: Path, n: int = 20000) -> float:
    """Milliseconds that counting one request's features and prediction into the sketches takes."""
    import numpy as np

    from mlops_operator.runtime.inference import LoadedModel, Monitor, decode

    model = LoadedModel.load("iris", model_dir, None)
    monitor = Monitor(model)
    decoded = decode(json.dumps(PAYLOAD).encode(), model)
    predictions = np.asarray([0])
    started = time.perf_counter()
    for _ in range(n):
        monitor.count(decoded, predictions)
    return (time.perf_counter() - started) / n * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3, help="rounds over all servers; medians are printed")
    parser.add_argument("--only", nargs="*", help="run only these servers")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is needed: apt-get install wrk", file=sys.stderr)
        return 1
    sk = f"scikit-learn=={sklearn_version()}"
    work = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    model_dir, pickled = make_model(work)
    servers: dict[str, Any] = {
        "mlops (monitoring)": lambda p: ([sys.executable, "-m", "mlops_operator.cli", "serve", "--model-dir",
                                          str(model_dir), "--name", "iris", "--host", "127.0.0.1", "--port", str(p)],
                                         "/v2/health/ready", None),
        "mlops (no monitoring)": lambda p: ([sys.executable, "-m", "mlops_operator.cli", "serve", "--model-dir",
                                             str(model_dir), "--name", "iris", "--host", "127.0.0.1", "--port",
                                             str(p), "--no-monitoring"], "/v2/health/ready", None),
        "kserve": lambda p: ([str(peer_venv("kserve", ["kserve", "pandas<3", sk, "joblib"])),
                              str(work / "kserve_server.py"), str(pickled), str(p), str(free_port())],
                             "/v2/health/ready", None),
        "mlserver": lambda p: ([str(peer_venv("mlserver", ["mlserver", "mlserver-sklearn", sk, "joblib"]).parent
                                    / "mlserver"), "start", str(work / "mlserver")], "/v2/health/ready",
                               {"MLSERVER_HTTP_PORT": str(p), "MLSERVER_GRPC_PORT": str(free_port()),
                                "MLSERVER_METRICS_PORT": str(free_port()), "MLSERVER_PARALLEL_WORKERS": "0",
                                "MLSERVER_LOGGING_LEVEL": "WARNING"}),
        "bare starlette": lambda p: ([str(peer_venv("bare", ["starlette", "uvicorn[standard]", "orjson", "numpy",
                                                             sk, "joblib"])),
                                      str(work / "bare_server.py"), str(pickled), str(p)], "/v2/health/ready", None),
    }
    (work / "kserve_server.py").write_text(KSERVE_SERVER)
    (work / "bare_server.py").write_text(BARE_SERVER)
    expected = None
    runs: dict[str, list[dict[str, float]]] = {}
    # rounds interleave the servers, so a noisy minute on a shared machine does not favour one of them
    for round_ in range(args.repeat):
        for name, make in servers.items():
            if args.only and name not in args.only:
                continue
            port = free_port()
            cmd, ready, env = make(port)
            proc = start(cmd, port, ready, work / f"{name.replace(' ', '_')}.log", env=env)
            try:
                answer = check_answer(port)
                expected = expected or answer
                if answer != expected:
                    raise RuntimeError(f"{name} answered {answer}, not {expected}")
                r = wrk(port, work, args.duration, args.connections)
            finally:
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
            runs.setdefault(name, []).append(r)
            print(f"# round {round_ + 1}: {name:24s} {r['rps']:8.0f} req/s   p50 {r['p50']:6.2f} ms   "
                  f"p99 {r['p99']:6.2f} ms", flush=True)
    results = {name: {k: statistics.median(r[k] for r in rs) for k in ("rps", "p50", "p99")}
               for name, rs in runs.items()}
    print(f"\nmedians of {args.repeat} rounds:")
    for name, r in results.items():
        print(f"{name:24s} {r['rps']:10.0f} req/s   p50 {r['p50']:7.2f} ms   p99 {r['p99']:7.2f} ms")
    ours, off = results.get("mlops (monitoring)"), results.get("mlops (no monitoring)")
    print(f"\nwrk -t1 -c{args.connections} -d{args.duration}s, server on CPU 0, wrk on CPU 1, payload 1 row x 4 FP64")
    if ours:
        for peer in ("kserve", "mlserver", "bare starlette"):
            if peer in results:
                p = results[peer]
                print(f"mlops vs {peer:15s} throughput {ours['rps'] / p['rps']:5.2f}x   "
                      f"p99 {ours['p99'] / p['p99']:5.2f}x   p50 {ours['p50'] / p['p50']:5.2f}x")
    if ours and off:
        rps, p50 = 100 * (ours["rps"] / off["rps"] - 1), 100 * (ours["p50"] / off["p50"] - 1)
        print(f"monitoring on vs off (end to end, within noise): throughput {rps:+.1f} %, p50 latency {p50:+.1f} %")
        per_request = counting_cost(model_dir)
        service = 1000.0 / off["rps"]  # ms of server time per request at saturation (one worker)
        print(f"monitoring per request (counted in-process): {per_request * 1000:.1f} us = "
              f"{100 * per_request / service:.1f} % of the {service * 1000:.0f} us a request costs the server")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
