"""The real node of `mlops dev up`: kubelet + containerd + runc in the cluster's own network namespace, with
kube-proxy and dnsmasq, and Pods from the images built here (images/Dockerfile, buildah).

One cluster for the module (not the session's process-runner cluster): a model server from the runtime image
under the builders' restricted security context, reached by name and ClusterIP from another Pod, inspected
with the real kubectl (exec, logs); then `down` is checked to leave nothing behind.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from mlops_operator.builders.common import RUN_AS, container_security, pod_security
from mlops_operator.dev import imagebuild, install, netns, node
from mlops_operator.dev.controlplane import ControlPlane
from mlops_operator.dev.tools import tool
from tests.unit.test_server import make_model

from .conftest import HOST_NETNS, wait_for

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    cp = ControlPlane(tmp_path_factory.mktemp("realnode"))
    cp.start(timeout=180)
    try:
        install.apply_crds(str(cp.kubeconfig))
        yield cp
    finally:
        cp.stop()


@pytest.fixture(scope="module")
def core(real: ControlPlane) -> Iterator[client.CoreV1Api]:
    with install.api_client(str(real.kubeconfig)) as api_client:
        yield client.CoreV1Api(api_client)


def kubectl(cp: ControlPlane, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([tool("kubectl"), f"--kubeconfig={cp.kubeconfig}", *args],
                          capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)}: {proc.stdout}{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def namespace(core: client.CoreV1Api) -> str:
    name = f"rn-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": name}})
    # the ServiceAccount admission plugin needs the namespace's default ServiceAccount and its token
    wait_for(lambda: [s for s in core.list_namespaced_secret(name).items
                      if s.type == "kubernetes.io/service-account-token"], 60, "the default ServiceAccount's token")
    return name


def running(core: client.CoreV1Api, namespace: str, name: str) -> Any:
    pod = core.read_namespaced_pod(name, namespace)
    return pod if pod.status.phase == "Running" else None


@pytest.fixture(scope="module")
def model_server(real: ControlPlane, core: client.CoreV1Api, namespace: str,
                 tmp_path_factory: pytest.TempPathFactory) -> str:
    """A model server Pod (runtime image, the builders' security context) behind a Service."""
    model_dir, _, _, digest = make_model(tmp_path_factory.mktemp("model"))
    files = sorted(model_dir.iterdir())
    assert all(p.is_file() for p in files), files
    core.create_namespaced_config_map(namespace, {
        "metadata": {"name": "iris-model"},
        "binaryData": {p.name: base64.b64encode(p.read_bytes()).decode() for p in files}})
    core.create_namespaced_pod(namespace, {
        "metadata": {"name": "iris", "labels": {"app": "iris"}},
        "spec": {
            "securityContext": pod_security(),
            # ConfigMap volumes are symlinks, which the server refuses: copy to an emptyDir as storage-init does
            "initContainers": [{
                "name": "copy", "image": imagebuild.BUSYBOX_IMAGE, "imagePullPolicy": "Never",
                "command": ["sh", "-c", "cp /configmap/* /models/iris/"], "securityContext": container_security(),
                "volumeMounts": [{"name": "configmap", "mountPath": "/configmap"},
                                 {"name": "model", "mountPath": "/models/iris"}]}],
            "containers": [{
                "name": "server", "image": imagebuild.RUNTIME_IMAGE, "imagePullPolicy": "Never",
                "args": ["serve", "--model-dir=/models/iris", "--name=iris", f"--digest={digest}"],
                "ports": [{"name": "http", "containerPort": 8080}, {"name": "monitoring", "containerPort": 8082}],
                "securityContext": container_security(),
                "readinessProbe": {"httpGet": {"path": "/v2/health/ready", "port": "monitoring"},
                                   "periodSeconds": 1},
                "volumeMounts": [{"name": "model", "mountPath": "/models/iris"},
                                 {"name": "tmp", "mountPath": "/tmp"}],
            }],
            "volumes": [{"name": "configmap", "configMap": {"name": "iris-model"}},
                        {"name": "model", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}],
        }})
    core.create_namespaced_service(namespace, {
        "metadata": {"name": "iris"},
        "spec": {"selector": {"app": "iris"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}})

    def ready() -> bool:
        pod = core.read_namespaced_pod("iris", namespace)
        return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or ())
    wait_for(ready, 180, "the model server Pod to be Ready",
             show=lambda: core.read_namespaced_pod("iris", namespace).status.to_dict())
    return "iris"


def test_the_node_is_a_kubelet_on_containerd(real: ControlPlane, core: client.CoreV1Api) -> None:
    info = json.loads(kubectl(real, "get", "node", node.NODE_NAME, "-o", "json").stdout)["status"]["nodeInfo"]
    assert info["containerRuntimeVersion"].startswith("containerd://1.")
    assert info["kubeletVersion"] == "v1.20.2"
    assert info["kubeProxyVersion"] == "v1.20.2"


def test_a_model_server_runs_from_the_runtime_image_as_65532_on_a_read_only_root(
        real: ControlPlane, core: client.CoreV1Api, namespace: str, model_server: str) -> None:
    # the container's log as the kubelet serves it (the runtime's log file can lag the Pod's readiness); the
    # package's other node runs beside this one, each with pod log directories of its own (node.own_pod_logs)
    wait_for(lambda: "serving model iris" in kubectl(real, "logs", "-n", namespace, model_server).stdout, 60,
             "the model server's start-up line in kubectl logs",
             show=lambda: kubectl(real, "logs", "-n", namespace, model_server, check=False).stdout)
    pod = core.read_namespaced_pod(model_server, namespace)
    (status,) = pod.status.container_statuses
    assert status.image_id.startswith("sha256:") or "@sha256:" in status.image_id, status.image_id
    assert pod.status.pod_ip.startswith("10.244.0.")
    ids = kubectl(real, "exec", "-n", namespace, model_server, "--", "python", "-c",
                  "import os; print(os.getuid(), os.getgid(), os.getgroups())").stdout.split(maxsplit=2)
    assert ids[:2] == [str(RUN_AS), str(RUN_AS)]
    touch = kubectl(real, "exec", "-n", namespace, model_server, "--", "python", "-c",
                    "open('/probe', 'w')", check=False)
    assert touch.returncode != 0 and "Read-only file system" in touch.stderr, touch.stderr
    caps = kubectl(real, "exec", "-n", namespace, model_server, "--", "python", "-c",
                   "print([l for l in open('/proc/self/status') if l.startswith('CapEff')][0])").stdout
    assert caps.split()[-1] == "0000000000000000"


CLIENT = """
import json, socket, ssl, sys, urllib.request
service, namespace = sys.argv[1:3]
for name in (f"{service}.{namespace}.svc.cluster.local", service, "kubernetes.default"):
    print("resolved", name, socket.gethostbyname(name))
print("model", urllib.request.urlopen(f"http://{service}/v2/health/ready", timeout=10).status)
sa = "/var/run/secrets/kubernetes.io/serviceaccount"
ctx = ssl.create_default_context(cafile=f"{sa}/ca.crt")
request = urllib.request.Request("https://kubernetes.default/api/v1/namespaces/" + namespace + "/pods",
                                 headers={"Authorization": "Bearer " + open(f"{sa}/token").read()})
try:
    urllib.request.urlopen(request, context=ctx, timeout=10)
except urllib.error.HTTPError as exc:
    print("apiserver", exc.code, json.load(exc)["message"])
"""


def test_pods_resolve_services_and_reach_them_through_the_cluster_ip(
        real: ControlPlane, core: client.CoreV1Api, namespace: str, model_server: str) -> None:
    core.create_namespaced_pod(namespace, {
        "metadata": {"name": "client"},
        "spec": {"restartPolicy": "Never", "securityContext": pod_security(),
                 "containers": [{"name": "c", "image": imagebuild.RUNTIME_IMAGE, "imagePullPolicy": "Never",
                                 "command": ["python", "-c", CLIENT, model_server, namespace],
                                 "securityContext": container_security()}]}})

    def finished() -> Any:
        pod = core.read_namespaced_pod("client", namespace)
        return pod if pod.status.phase in ("Succeeded", "Failed") else None
    pod = wait_for(finished, 120, "the client Pod to finish")
    out = kubectl(real, "logs", "-n", namespace, "client").stdout
    assert pod.status.phase == "Succeeded", out
    svc = core.read_namespaced_service(model_server, namespace)
    assert f"resolved {model_server}.{namespace}.svc.cluster.local {svc.spec.cluster_ip}" in out, out
    assert f"resolved {model_server} {svc.spec.cluster_ip}" in out, out
    assert f"resolved kubernetes.default {node.API_SERVICE_IP}" in out, out
    assert "model 200" in out, out
    # through the kubernetes Service with the Pod's own ServiceAccount token: authenticated, and refused by RBAC
    assert f'apiserver 403 pods is forbidden: User "system:serviceaccount:{namespace}:default"' in out, out


def test_host_traffic_stays_on_loopback(real: ControlPlane, control_plane: ControlPlane) -> None:
    assert real.server.startswith("https://127.0.0.1:")
    # the machine's own namespace (the tests themselves run inside the session cluster's)
    host_addresses = subprocess.run(netns.wrap_path(Path(HOST_NETNS[0]), ["ip", "-o", "addr"]),
                                    capture_output=True, text=True, check=True).stdout
    assert node.NODE_IP not in host_addresses and node.BRIDGE not in host_addresses
    inside = netns.call(real.netns, lambda: subprocess.run(["ip", "-o", "addr"], capture_output=True,
                                                           text=True).stdout)
    assert node.NODE_IP in inside


def test_down_leaves_no_process_namespace_mount_or_cgroup() -> None:
    # not under tmp_path: this test's name and pytest's run counter make it too deep for the node's sockets
    state = Path(tempfile.mkdtemp(prefix="mlops-down-"))
    cp = ControlPlane(state / "cluster")
    cp.start(timeout=180)
    try:
        with install.api_client(str(cp.kubeconfig)) as api_client:
            core = client.CoreV1Api(api_client)
            core.create_namespaced_pod("default", {
                "metadata": {"name": "sleeper"},
                "spec": {"securityContext": pod_security(), "automountServiceAccountToken": False,
                         "containers": [{"name": "c", "image": imagebuild.BUSYBOX_IMAGE, "imagePullPolicy": "Never",
                                         "command": ["sleep", "3600"], "securityContext": container_security(),
                                         "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}]}],
                         "volumes": [{"name": "scratch", "emptyDir": {"medium": "Memory"}}]}})
            wait_for(lambda: running(core, "default", "sleeper"), 120, "the sleeper Pod to run")
        workload = node.cgroup_pids(cp.state_dir)
        sandboxes = node.pod_netns(workload | node.shim_pids(cp.state_dir))
        # the kubelet's volumes, in containerd's mount namespace; its pod logs there too, none on the machine
        mounts = node.mounts_under(cp.state_dir, pid=cp.pids["containerd"])
        assert workload and sandboxes and any("/volumes/" in m for m in mounts)
        assert any(cp.state_dir.glob("logs/pods/default_sleeper_*")) and not list(Path("/var/log/pods").glob(
            "default_sleeper_*"))
        pids = set(cp.pids.values())
        assert cp.stop() == []
        alive = [p for p in pids | workload if os.path.exists(f"/proc/{p}") and not node._zombie(p)]
        assert alive == []
        assert not netns.exists(node.netns_name(cp.state_dir))
        assert not any(s.exists() for s in sandboxes)
        assert node.mounts_under(cp.state_dir) == []
        assert not any((h / node.cgroup_name(cp.state_dir)).exists() for h in node._hierarchies())
        assert node.shim_pids(cp.state_dir) == set()
    finally:  # a failed check must not leave a cluster running
        if cp.pids:
            cp.stop()
        shutil.rmtree(state, ignore_errors=True)
