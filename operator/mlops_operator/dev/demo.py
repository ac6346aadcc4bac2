"""`mlops dev demo`: the whole loop on a Docker-free local cluster.

It brings up the cluster of `mlops dev up` (control plane and a real node: kubelet + containerd in a network
namespace of its own, the images built here from images/Dockerfile), installs the CRDs, then works from
inside that namespace: a local S3 (a moto server on the node's address, where Pods reach it), the operator
installed by Helm from the chart and running in-cluster as its Pod (its ServiceAccount, the chart's RBAC),
and `dev.loop` in the `mlops-demo` namespace: the
first version trained for real on the node and rolled out, traffic through the Service
proxy, the input distribution shifting, drift detected, a retrain on the newest labelled data,
its gates, the blue-green analysis, the promotion, all traffic on the new revision and drift gone;
then a bad version rolled back while the good one keeps serving. A readable timeline as it
happens. Exits 0 when the loop closed, non-zero with the reason otherwise.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from . import controlplane, install, netns
from .loop import LoopFailed, examples_dir, run_loop
from .node import NODE_IP, NODE_NAME
from .tools import tool

NAMESPACE = "mlops-demo"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "demo", "AWS_SECRET_ACCESS_KEY": "demo", "AWS_DEFAULT_REGION": "us-east-1"}


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _local_s3(out: Callable[[str], None]) -> tuple[Any, Any, str]:
    """A moto S3 server with the buckets examples/loop/ uses, on the node's address (this process is in the
    cluster's namespace)."""
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per S3 request otherwise
    port = _free_port(NODE_IP)
    server = ThreadedMotoServer(ip_address=NODE_IP, port=port, verbose=False)
    server.start()
    endpoint = f"http://{NODE_IP}:{port}"
    s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                      aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1")
    for bucket in ("datasets", "models"):
        s3.create_bucket(Bucket=bucket)
    out(f"local S3 at {endpoint}: buckets s3://datasets (training data) and s3://models (versions)")
    return server, s3, endpoint


def _namespace_with_credentials(core: Any, endpoint: str, out: Callable[[str], None]) -> None:
    """A fresh demo namespace (a previous run's is deleted first: the loop starts from nothing)."""
    try:
        core.delete_namespace(NAMESPACE)
        out(f"deleting the previous run's namespace {NAMESPACE}")
    except ApiException as exc:
        if exc.status != 404:
            raise
    deadline = time.monotonic() + 180
    while True:
        try:
            core.read_namespace(NAMESPACE)
        except ApiException as exc:
            if exc.status == 404:
                break
            raise
        if time.monotonic() > deadline:
            raise controlplane.ControlPlaneError(f"namespace {NAMESPACE} was not deleted within 180 s")
        time.sleep(0.5)
    try:
        core.create_namespace({"metadata": {"name": NAMESPACE}})
    except ApiException as exc:
        if exc.status != 409:
            raise
    secret = {"metadata": {"name": "s3-credentials"}, "stringData": {**CREDENTIALS, "AWS_ENDPOINT_URL": endpoint}}
    try:
        core.create_namespaced_secret(NAMESPACE, secret)
    except ApiException as exc:
        if exc.status != 409:
            raise
        core.replace_namespaced_secret("s3-credentials", NAMESPACE, secret)


def _operator_log(kubeconfig: str) -> str:
    import subprocess

    proc = subprocess.run([tool("kubectl"), f"--kubeconfig={kubeconfig}", "logs", "-n", install.OPERATOR_NAMESPACE,
                           f"deployment/{install.RELEASE}", "--tail=40"], capture_output=True, text=True, timeout=60)
    return proc.stdout + proc.stderr


def run(state_dir: Path, down: bool = False, out: Callable[[str], None] = print, step_timeout: float = 240,
        bad_candidate: bool = True) -> int:
    if not examples_dir().is_dir():
        out(f"mlops dev demo needs the repository's examples/loop folder (looked in {examples_dir()})")
        return 1
    for name in ("kubectl", "helm"):
        tool(name)  # fetched before entering the cluster's namespace, which has no way out
    cp = controlplane.up(state_dir)
    out(f"cluster up at {cp.server}: node {NODE_NAME} (kubelet + containerd) in network namespace {cp.netns}")
    install.apply_crds(str(cp.kubeconfig))
    out("CRDs installed: trainingruns, modeldeployments, driftpolicies (.mlops.dev)")
    result: str | None = None
    try:
        with netns.inside(cp.netns), install.api_client(str(cp.kubeconfig)) as api:
            # S3, the traffic and the proxy live where the Pods are
            s3_server, s3, endpoint = _local_s3(out)
            try:
                _namespace_with_credentials(client.CoreV1Api(api), endpoint, out)
                install.helm_install_operator(str(cp.kubeconfig), [NAMESPACE], out,
                                              extra=("--set", "artifactRoot=s3://models"))
                out(f"operator running in-cluster: Deployment {install.OPERATOR_NAMESPACE}/{install.RELEASE} "
                    f"Available, watching namespace {NAMESPACE}")
                facts = run_loop(api, NAMESPACE, s3, out, bad_candidate=bad_candidate, step_timeout=step_timeout)
            except LoopFailed as exc:
                result = str(exc)
                out("the operator's last log lines:\n" + _operator_log(str(cp.kubeconfig)))
            finally:
                s3_server.stop()
    finally:
        if down:
            cp.stop()
            out("control plane stopped")
    if result is not None:
        out(f"demo failed: {result}")
        return 1
    drifted = ", ".join(facts.drifted_features)
    before, degraded = facts.performance_before.get("value") or 0, facts.performance_degraded.get("value") or 0
    out(f"the loop closed in {facts.seconds:.0f} s: trained → served → drift detected ({drifted})"
        f" → retrained ({facts.retrain}) → gates → analysed → promoted ({facts.new_revision}) → "
        f"{facts.share_on_new:.0%} of traffic on it → drift gone" +
        (f" → bad version {facts.bad_revision} rolled back" if facts.bad_revision else "") +
        f" → the concept shifted: live accuracy {before:.2f} → {degraded:.2f} → retrained on captured labelled "
        f"calls ({facts.concept_retrain}) → data checks → canary judged on live labels → promoted "
        f"({facts.concept_revision}) → a run on corrupted data stopped by its data checks")
    if not down:
        out(f"the cluster stays up: export KUBECONFIG={cp.kubeconfig}; kubectl get mlops -n {NAMESPACE}")
        out(f"stop it with: mlops dev down --state-dir {state_dir}")
    return 0
