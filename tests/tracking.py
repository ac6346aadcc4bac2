"""A real MLflow tracking server for the tests (`mlflow server`, SQLite backend, in a virtual environment of its
own under the cache), and MLflow's own client to read back what the operator's registry Jobs wrote."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mlops_operator.dev.venvs import cached_venv

MLFLOW = ["mlflow==3.17.2"]  # 3.18.0's mlflow-tracing 3.18.0 is not published
# MLflow's usage telemetry off: the tests' traffic stays on the machine
QUIET = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}


def mlflow_python() -> Path:
    """The Python of MLflow's virtual environment (made once, from PyPI: outside the cluster's namespace)."""
    return cached_venv("mlflow", MLFLOW)


@contextlib.contextmanager
def tracking_server(root: Path, host: str, port: int) -> Iterator[str]:
    """`mlflow server` on host:port until the block ends; its URL once /health answers."""
    python = mlflow_python()
    log = (root / "server.log").open("w")
    server = subprocess.Popen([str(python.parent / "mlflow"), "server", "--backend-store-uri",
                               f"sqlite:///{root / 'db.sqlite'}", "--default-artifact-root", str(root / "artifacts"),
                               "--host", host, "--port", str(port), "--workers", "1"],
                              stdout=log, stderr=subprocess.STDOUT, env=QUIET)
    url = f"http://{host}:{port}"
    deadline = time.monotonic() + 120
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("mlflow server did not answer /health:\n"
                                     + (root / "server.log").read_text()[-3000:])
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def mlflow_client(tracking: str, script: str) -> Any:
    """What MLflow's own client reads (`client`, bound to the server): the script's last line printed, as JSON."""
    proc = subprocess.run([str(mlflow_python()), "-c", f"import json\nfrom mlflow import MlflowClient\n"
                           f"client = MlflowClient({tracking!r})\n{script}"], capture_output=True, text=True,
                          timeout=120, env=QUIET)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])
