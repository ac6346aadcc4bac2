"""`mlops dev demo`: the product on a Docker-free local cluster.

It brings up the control plane and the local node, starts a local S3 (a moto server on loopback)
holding the iris data set, installs the CRDs, runs the operator, applies examples/ (a TrainingRun,
a ModelDeployment following its model, a DriftPolicy watching that deployment) into the
`mlops-demo` namespace, and prints a timeline of what the operator does: the model trained for
real on the local node, its metrics, the gate verdict and the recorded version; the deployment
rolling that version out (its server pods, the champion-vs-challenger analysis, the promotion);
the drift policy watching it. Ends with one V2 inference answered by the serving pod. Exits 0
when the version serves, non-zero with the reason otherwise.
"""

from __future__ import annotations

import io
import logging
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from ..api import BY_KIND, GROUP, VERSION
from . import controlplane, install
from .runner import OperatorThread

NAMESPACE = "mlops-demo"
EXAMPLES = ("trainingrun.yaml", "modeldeployment.yaml", "driftpolicy.yaml")
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "demo", "AWS_SECRET_ACCESS_KEY": "demo", "AWS_DEFAULT_REGION": "us-east-1"}


def _examples_dir() -> Path:
    return Path(__file__).resolve().parents[3] / "examples"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _local_s3(out: Callable[[str], None]) -> tuple[Any, str]:
    """A moto S3 server with the iris data set where examples/trainingrun.yaml reads it."""
    import boto3
    from moto.server import ThreadedMotoServer
    from sklearn.datasets import load_iris

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per S3 request otherwise
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                      aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1")
    for bucket in ("datasets", "models"):
        s3.create_bucket(Bucket=bucket)
    frame = load_iris(as_frame=True).frame
    frame.columns = ["sepal_length", "sepal_width", "petal_length", "petal_width", "species"]  # as examples/ say
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False)
    for key in ("iris/train.csv", "iris/latest.csv"):  # latest: what the drift policy retrains on
        s3.put_object(Bucket="datasets", Key=key, Body=buffer.getvalue().encode())
    out(f"local S3 at {endpoint}: s3://datasets/iris/train.csv ({len(frame)} rows), models go to s3://models")
    return server, endpoint


def _apply(custom: Any, obj: dict[str, Any]) -> None:
    plural = BY_KIND[obj["kind"]].plural
    name = obj["metadata"]["name"]
    try:
        current = custom.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, plural, name)
        obj["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        custom.replace_namespaced_custom_object(GROUP, VERSION, NAMESPACE, plural, name, obj)
    except ApiException as exc:
        if exc.status != 404:
            raise
        custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, plural, obj)


class Timeline:
    """Prints each condition change of the demo's resources once, as it happens."""

    def __init__(self, custom: Any, out: Callable[[str], None]) -> None:
        self.custom, self.out = custom, out
        self.seen: set[tuple[str, str, str, str, str]] = set()
        self.started = time.monotonic()

    def get(self, kind: str, name: str) -> dict[str, Any]:
        obj: dict[str, Any] = self.custom.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE,
                                                                       BY_KIND[kind].plural, name)
        return obj

    def poll(self, objects: list[tuple[str, str]]) -> None:
        for kind, name in objects:
            for c in (self.get(kind, name).get("status") or {}).get("conditions") or ():
                key = (kind, name, c["type"], c["status"], c.get("reason", ""))
                if key not in self.seen:
                    self.seen.add(key)
                    message = f": {c['message']}" if c.get("message") else ""
                    self.out(f"[{time.monotonic() - self.started:6.1f}s] {kind}/{name} {c['type']}={c['status']} "
                             f"({c.get('reason', '')}){message}")

    def condition(self, kind: str, name: str, type_: str) -> dict[str, Any] | None:
        for c in (self.get(kind, name).get("status") or {}).get("conditions") or ():
            if c["type"] == type_:
                return dict(c)
        return None


def _serve_once(cp: Any, md: dict[str, Any]) -> str:
    """One V2 inference from the stable revision's pod (the local node has no Service proxy)."""
    import json
    import urllib.request

    from kubernetes import client, config

    stable = md["status"]["stable"]
    api = client.CoreV1Api(config.new_client_from_config(str(cp.kubeconfig)))
    pods = api.list_namespaced_pod(NAMESPACE, label_selector=f"mlops.dev/revision={stable['revision']}").items
    pod = next(p for p in pods if p.status.pod_ip)
    body = json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64",
                                   "data": [[5.1, 3.5, 1.4, 0.2]]}]}).encode()  # one row of the training set
    url = f"http://{pod.status.pod_ip}:8080/v2/models/{md['metadata']['name']}/infer"
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        answer = json.loads(resp.read())
    return (f"serving: revision {stable['revision']} ({md['status'].get('url')}); POST {url} → "
            f"{answer['outputs'][0]['data']} from model_version {answer.get('model_version', '')[:19]}…")


def run(state_dir: Path, down: bool = False, out: Callable[[str], None] = print, timeout: float = 240) -> int:
    examples = _examples_dir()
    if not examples.is_dir():
        out(f"mlops dev demo needs the repository's examples/ folder (looked in {examples})")
        return 1
    cp = controlplane.up(state_dir)
    out(f"control plane and local node up at {cp.server}")
    install.apply_crds(str(cp.kubeconfig))
    out("CRDs installed: trainingruns, modeldeployments, driftpolicies (.mlops.dev)")
    s3_server, endpoint = _local_s3(out)
    os.environ["MLOPS_ARTIFACT_ROOT"] = "s3://models"
    operator = OperatorThread([NAMESPACE], kubeconfig=str(cp.kubeconfig))
    try:
        with install.api_client(str(cp.kubeconfig)) as api:
            core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
            try:
                core.create_namespace({"metadata": {"name": NAMESPACE}})
            except ApiException as exc:
                if exc.status != 409:
                    raise
            secret = {"metadata": {"name": "s3-credentials"},
                      "stringData": {**CREDENTIALS, "AWS_ENDPOINT_URL": endpoint}}
            try:
                core.create_namespaced_secret(NAMESPACE, secret)
            except ApiException as exc:
                if exc.status != 409:
                    raise
                core.replace_namespaced_secret("s3-credentials", NAMESPACE, secret)
            operator.start()
            out(f"operator running, watching namespace {NAMESPACE}")
            objects = [yaml.safe_load((examples / name).read_text()) for name in EXAMPLES]
            for obj in objects:
                _apply(custom, obj)
                out(f"applied {obj['kind']}/{obj['metadata']['name']}")
            names = [(o["kind"], o["metadata"]["name"]) for o in objects]
            run_name = next(n for k, n in names if k == "TrainingRun")
            deployment = next(n for k, n in names if k == "ModelDeployment")
            policy = next((n for k, n in names if k == "DriftPolicy"), None)
            timeline = Timeline(custom, out)
            deadline = time.monotonic() + timeout
            result = None
            while time.monotonic() < deadline:
                timeline.poll(names)
                finished = timeline.condition("TrainingRun", run_name, "Succeeded")
                found = timeline.condition("ModelDeployment", deployment, "Ready")
                if finished and finished["status"] == "False":
                    result = f"training failed: {finished.get('message', '')}"
                    break
                gates = timeline.condition("TrainingRun", run_name, "GatesPassed")
                if gates and gates["status"] == "False" and finished and finished["status"] == "True":
                    result = f"the model did not pass its gates: {gates.get('message', '')}"
                    break
                available = timeline.condition("ModelDeployment", deployment, "Available")
                watching = policy is None or timeline.condition("DriftPolicy", policy, "Drifted")
                if gates and gates["status"] == "True" and available and available["status"] == "True" and watching:
                    break
                progressing = timeline.condition("ModelDeployment", deployment, "Progressing")
                if progressing and progressing.get("reason") == "RolledBack" and found and \
                        found["status"] == "False":
                    result = f"the version was rejected: {progressing.get('message', '')}"
                    break
                time.sleep(0.5)
            else:
                result = f"timed out after {timeout:.0f}s"
            timeline.poll(names)
            status = timeline.get("TrainingRun", run_name).get("status") or {}
            if status.get("metrics"):
                metrics = ", ".join(f"{k} {v:.3f}" for k, v in sorted(status["metrics"].items()))
                out(f"trained: {metrics}")
            if status.get("model"):
                out(f"model version: {status['model']['uri']} {status['model']['digest']}")
            if result is None:
                out(_serve_once(cp, timeline.get("ModelDeployment", deployment)))
    finally:
        operator.stop()
        s3_server.stop()
        if down:
            cp.stop()
            out("control plane stopped")
    if result is not None:
        out(f"demo failed: {result}")
        return 1
    out("the loop so far: trained on the local node → gates passed → version recorded → analysed → serving")
    if not down:
        out(f"the cluster stays up: export KUBECONFIG={cp.kubeconfig}; kubectl get mlops -n {NAMESPACE}")
        out(f"stop it with: mlops dev down --state-dir {state_dir}")
    return 0
