"""Integration harness: one real control plane per test run, a namespace per test, the operator
in-process (kopf in a thread) and as a subprocess, and waiting with deadlines."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from mlops_operator.api import BY_KIND, GROUP, VERSION
from mlops_operator.dev import install, netns
from mlops_operator.dev.controlplane import ControlPlane
from mlops_operator.dev.node import NODE_IP
from mlops_operator.dev.runner import OperatorThread
from mlops_operator.dev.tools import tool
from tests.conftest import S3
from tests.scanners import checkov
from tests.tracking import mlflow_python

IN_PROCESS_PREFIX = "it-"  # namespaces the in-process operator watches
SUBPROCESS_PREFIX = "sp-"  # namespaces left to operators started as subprocesses
RESYNC_SECONDS = 2
ARTIFACT_ROOT = "s3://models"  # on the tests' local S3


def wait_for(check: Callable[[], Any], timeout: float = 30, what: str = "condition",
              show: Callable[[], Any] | None = None, interval: float = 0.1) -> Any:
    """Poll `check` until it returns something truthy; on timeout fail showing the object."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except (ApiException, KeyError, IndexError, TypeError) as exc:
            last_exc = exc
        time.sleep(interval)
    shown = ""
    if show is not None:
        try:
            shown = yaml.safe_dump(show(), sort_keys=False)
        except Exception as exc:  # the object may be gone: say so instead of hiding the timeout
            shown = f"<could not show the object: {exc}>"
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last error: {last_exc}\n{shown}")


TESTS_AGENT = "mlops-operator-tests"
"""The User-Agent of the tests' own uses of the operator's client (an informer, an elector, a status writer
driven by a test), so that the apiserver's audit log tells them from the operator's (test_zz_rbac)."""

HOST_NETNS: list[str] = []  # a path to the machine's own network namespace, while the tests run outside it


@pytest.fixture(scope="package")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """The integration tests' cluster: the control plane and a real node (kubelet + containerd, images built
    here) in a network namespace of its own, as `mlops dev up` makes it. The tests run inside that namespace:
    this process's main thread enters it, and the threads and processes it starts afterwards (the in-process
    operator, operators as subprocesses, the S3 server, Prometheus) are born there, so Pod IPs, ClusterIPs and
    S3 are the same addresses for the tests, the operator and the Pods. The apiserver listens on the port of
    its host forwarder, so the kubeconfig is the same on both sides. When the package is done the main thread
    goes back to the host's namespace (the unit tests reach PyPI for their clients' environments)."""
    for name in ("kubectl", "helm"):
        tool(name)  # fetched while the way out is open
    checkov()  # installed from PyPI while the way out is open (inside the namespace no name resolves)
    mlflow_python()  # the same for MLflow's tracking server (test_mlflow)
    cp = ControlPlane(tmp_path_factory.mktemp("controlplane"), audit=True)  # test_zz_rbac reads its log
    cp.start(timeout=300)
    try:
        with netns.inside(cp.netns) as host:
            HOST_NETNS[:] = [host]
            install.apply_crds(str(cp.kubeconfig))
            os.environ["KUBECONFIG"] = str(cp.kubeconfig)
            yield cp
    finally:
        cp.stop()


@pytest.fixture(scope="package")
def s3(control_plane: ControlPlane) -> Iterator[S3]:
    """The tests' S3 (moto), inside the cluster's namespace on the node's address: where Pods reach it."""
    from moto.server import ThreadedMotoServer

    with socket.socket() as sock:
        sock.bind((NODE_IP, 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address=NODE_IP, port=port, verbose=False)
    server.start()
    endpoint = f"http://{NODE_IP}:{port}"
    yield S3(endpoint, {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint})
    server.stop()


@pytest.fixture(scope="package")
def api(control_plane: ControlPlane) -> Iterator[client.ApiClient]:
    with install.api_client(str(control_plane.kubeconfig)) as api_client:
        yield api_client


class Cluster:
    """Small helpers over the real API for tests."""

    def __init__(self, api_client: client.ApiClient, kubeconfig: Path) -> None:
        self.api_client = api_client
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.kubeconfig = kubeconfig

    def create(self, obj: dict[str, Any], namespace: str) -> dict[str, Any]:
        kind = BY_KIND[obj["kind"]]
        return self.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, kind.plural, obj)

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        return self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, BY_KIND[kind].plural, name)

    def patch(self, kind: str, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return self.custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, BY_KIND[kind].plural, name,
                                                          patch)

    def patch_status(self, kind: str, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        return self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, BY_KIND[kind].plural, name, {"status": status})

    def condition(self, kind: str, namespace: str, name: str, type_: str = "Ready") -> dict[str, Any] | None:
        obj = self.get(kind, namespace, name)
        for c in (obj.get("status") or {}).get("conditions") or ():
            if c["type"] == type_:
                return c
        return None

    def wait_condition(self, kind: str, namespace: str, name: str, status: str, reason: str | None = None,
                       type_: str = "Ready", timeout: float = 30) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            c = self.condition(kind, namespace, name, type_)
            if c and c["status"] == status and (reason is None or c["reason"] == reason):
                return c
            return None
        return wait_for(check, timeout, f"{kind} {namespace}/{name} {type_}={status} {reason or ''}",
                        show=lambda: self.get(kind, namespace, name))

    def kubectl(self, *args: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([tool("kubectl"), f"--kubeconfig={self.kubeconfig}", *args],
                              capture_output=True, text=True, input=stdin, timeout=120)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {proc.stderr}")
        return proc

    def children(self, namespace: str) -> list[str]:
        """Every object in the namespace that the operator could have created."""
        names = [f"Job/{j.metadata.name}" for j in self.batch.list_namespaced_job(namespace).items]
        names += [f"Deployment/{d.metadata.name}" for d in self.apps.list_namespaced_deployment(namespace).items]
        names += [f"Service/{s.metadata.name}" for s in self.core.list_namespaced_service(namespace).items]
        names += [f"Pod/{p.metadata.name}" for p in self.core.list_namespaced_pod(namespace).items]
        names += [f"ConfigMap/{c.metadata.name}" for c in self.core.list_namespaced_config_map(namespace).items
                  if c.metadata.name != "kube-root-ca.crt"]
        for kind in BY_KIND.values():
            names += [f"{kind.kind}/{o['metadata']['name']}" for o in self.custom.list_namespaced_custom_object(
                GROUP, VERSION, namespace, kind.plural)["items"]
                if any(r.get("apiVersion", "").startswith(GROUP) for r in o["metadata"].get("ownerReferences", []))]
        return names

    def events(self, namespace: str, name: str) -> list[Any]:
        return [e for e in self.core.list_namespaced_event(namespace).items if e.involved_object.name == name]


@pytest.fixture(scope="package")
def cluster(api: client.ApiClient, control_plane: ControlPlane) -> Cluster:
    return Cluster(api, control_plane.kubeconfig)


def _namespace(cluster: Cluster, prefix: str) -> Iterator[str]:
    name = f"{prefix}{uuid.uuid4().hex[:8]}"
    cluster.core.create_namespace({"metadata": {"name": name}})
    yield name
    with contextlib.suppress(ApiException):
        cluster.core.delete_namespace(name)


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    """A namespace for this test, watched by the in-process operator."""
    yield from _namespace(cluster, IN_PROCESS_PREFIX)


@pytest.fixture
def sp_namespace(cluster: Cluster) -> Iterator[str]:
    """A namespace for this test that only operators started as subprocesses watch."""
    yield from _namespace(cluster, SUBPROCESS_PREFIX)


METRICS_PORT: list[int] = []


@pytest.fixture(scope="package")
def operator(control_plane: ControlPlane) -> Iterator[OperatorThread]:
    os.environ["MLOPS_RESYNC_SECONDS"] = str(RESYNC_SECONDS)
    os.environ["MLOPS_ARTIFACT_ROOT"] = ARTIFACT_ROOT
    # the tests' own Prometheus listens on loopback; the apiserver there stays refused
    os.environ["MLOPS_ANALYSIS_ENDPOINTS"] = "*.svc,*.svc.cluster.local,127.0.0.1/32"
    with socket.socket() as s:  # the operator's /metrics, read by the tests
        s.bind(("127.0.0.1", 0))
        METRICS_PORT.append(s.getsockname()[1])
    os.environ["MLOPS_METRICS_PORT"] = str(METRICS_PORT[0])
    op = OperatorThread([f"{IN_PROCESS_PREFIX}*"])
    try:
        op.start()
    finally:  # read once at start-up: other operators the tests start must not take the port
        del os.environ["MLOPS_METRICS_PORT"]
    yield op
    op.stop()
    assert op.error is None, f"the operator crashed: {op.error!r}"


def operator_metrics() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The in-process operator's /metrics, parsed with prometheus_client: (name, labels) → value."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{METRICS_PORT[0]}/metrics", timeout=10) as r:
        text = r.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


class OperatorProcess:
    """`mlops run -n NAMESPACE` as a real process, killable."""

    def __init__(self, kubeconfig: Path, namespace: str, log: Path, env: dict[str, str] | None = None) -> None:
        self.cmd = [sys.executable, "-m", "mlops_operator.cli", "run", "-n", namespace]
        self.env = {**os.environ, "KUBECONFIG": str(kubeconfig), **(env or {})}
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.terminate()
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def operator_process(control_plane: ControlPlane, sp_namespace: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    op = OperatorProcess(control_plane.kubeconfig, sp_namespace, tmp_path / "operator.log",
                         env={"MLOPS_RESYNC_SECONDS": "5", "MLOPS_ARTIFACT_ROOT": ARTIFACT_ROOT})
    yield op
    op.stop()


class InClusterOperator:
    """The operator as users run it: the chart installed by the real helm into a namespace of its own, the
    operator Pod from the image built here, watching that namespace (the CRDs left to the session)."""

    def __init__(self, cluster: Cluster, namespace: str) -> None:
        self.cluster, self.namespace = cluster, namespace
        self.release = f"mlops-{namespace[-8:]}"

    def helm(self, *args: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([tool("helm"), f"--kubeconfig={self.cluster.kubeconfig}", *args],
                              capture_output=True, text=True, timeout=400)
        assert proc.returncode == 0, f"helm {' '.join(args)}: {proc.stderr}"
        return proc

    def install(self) -> None:
        install.helm_install_operator(str(self.cluster.kubeconfig), [self.namespace], out=lambda _: None,
                                      namespace=self.namespace, release=self.release,
                                      extra=("--set", "aggregateToUserRoles=false",
                                             "--set", f"artifactRoot={ARTIFACT_ROOT}"))

    def pods(self) -> list[Any]:
        return [p for p in self.cluster.core.list_namespaced_pod(
            self.namespace, label_selector="app.kubernetes.io/name=mlops-operator").items
            if not p.metadata.deletion_timestamp]

    def leader(self) -> str | None:
        """The name of the operator Pod holding the release's Lease, if any."""
        try:
            lease = client.CoordinationV1Api(self.cluster.api_client).read_namespaced_lease(self.release,
                                                                                            self.namespace)
        except ApiException:
            return None
        return lease.spec.holder_identity or None

    def pod(self) -> Any:
        """The running, ready operator Pod that leads (holds the Lease; waits for it)."""
        def ready() -> Any:
            leader = self.leader()
            pods = [p for p in self.pods() if p.metadata.name == leader and any(
                c.type == "Ready" and c.status == "True" for c in p.status.conditions or ())]
            return pods[0] if pods else None
        return wait_for(ready, 180, "the leading operator Pod to be Ready")

    def kill_pod(self) -> str:
        """Delete the leading operator Pod at once (no grace, no Lease handed over): a standby takes over,
        its Deployment makes a new one. Returns the old uid."""
        pod = self.pod()
        self.cluster.core.delete_namespaced_pod(pod.metadata.name, self.namespace, grace_period_seconds=0)
        return str(pod.metadata.uid)

    def logs(self) -> str:
        """Every operator Pod's log (leader and standbys)."""
        return self.cluster.kubectl("logs", "-n", self.namespace, "-l", "app.kubernetes.io/name=mlops-operator",
                                    "--tail=-1", "--prefix", check=False).stdout

    def uninstall(self) -> None:
        subprocess.run([tool("helm"), f"--kubeconfig={self.cluster.kubeconfig}", "uninstall", self.release,
                        "--namespace", self.namespace, "--wait", "--timeout=120s"], capture_output=True, timeout=200)


@pytest.fixture
def helm_operator(cluster: Cluster, sp_namespace: str) -> Iterator[InClusterOperator]:
    """The chart installed into the test's sp- namespace (no in-process operator watches it)."""
    op = InClusterOperator(cluster, sp_namespace)
    op.install()
    yield op
    op.uninstall()
