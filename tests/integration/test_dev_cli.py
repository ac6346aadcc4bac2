"""`mlops dev up` / `mlops dev down` as a user runs them: a cluster kubectl can use, with a real node, idempotent,
nothing left running afterwards; a clear message when the binaries cannot be had; the demo, with the operator
installed by Helm."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

from mlops_operator.dev import netns
from mlops_operator.dev.controlplane import _pid_alive
from mlops_operator.dev.imagebuild import BUSYBOX_IMAGE
from mlops_operator.dev.node import NODE_IP, NODE_NAME
from mlops_operator.dev.tools import tool

from .conftest import wait_for


def mlops(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mlops_operator.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_dev_up_kubectl_exec_logs_idempotent_down(tmp_path: Path) -> None:
    state = tmp_path / "dev"
    try:
        up = mlops("dev", "up", "--state-dir", str(state))
        assert up.returncode == 0, up.stderr
        assert up.stdout.strip() == f"export KUBECONFIG={state.resolve() / 'kubeconfig'}"
        for step in ("[up] network namespace", "[up] etcd, kube-apiserver", "[up] containerd", "[up] kubelet"):
            assert step in up.stderr, up.stderr
        kubeconfig = up.stdout.strip().split("=", 1)[1]
        env = {**os.environ, "KUBECONFIG": kubeconfig}
        kubectl = [tool("kubectl")]
        out = subprocess.run([*kubectl, "get", "crd,ns"], capture_output=True, text=True, env=env, timeout=60)
        assert out.returncode == 0, out.stderr
        for name in ("trainingruns.mlops.dev", "modeldeployments.mlops.dev", "driftpolicies.mlops.dev",
                     "namespace/default"):
            assert name in out.stdout
        first = json.loads((state / "state.json").read_text())
        assert set(first["pids"]) == {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler",
                                      "apiserver-forwarder", "containerd", "kubelet", "kube-proxy", "cluster-dns"}
        # a Pod runs in a container on the node, from an image built here
        subprocess.run([*kubectl, "run", "hello", f"--image={BUSYBOX_IMAGE}", "--image-pull-policy=Never",
                        "--restart=Never", "--command", "--", "sh", "-c", "echo hello from $(hostname); sleep 3600"],
                       check=True, env=env, capture_output=True)

        def running() -> bool:
            got = subprocess.run([*kubectl, "get", "pod", "hello", "-o", "jsonpath={.status.phase}"],
                                 env=env, capture_output=True, text=True)
            return got.stdout == "Running"

        wait_for(running, 120, "the hello Pod to run")
        nodes = subprocess.run([*kubectl, "get", "nodes", "-o", "wide"], env=env, capture_output=True, text=True).stdout
        assert NODE_NAME in nodes and " Ready " in nodes and "containerd://" in nodes, nodes
        logs = wait_for(lambda: mlops("dev", "logs", "--state-dir", str(state), "hello").stdout, 30, "the Pod's log")
        assert logs == "hello from hello\n"
        inside = mlops("dev", "exec", "--state-dir", str(state), "--", "ip", "-o", "addr")
        assert inside.returncode == 0 and NODE_IP in inside.stdout, inside.stderr

        # a Service from the host's loopback: `mlops dev proxy` (listens here, forwards from inside the namespace)
        subprocess.run([*kubectl, "run", "web", f"--image={BUSYBOX_IMAGE}", "--image-pull-policy=Never",
                        "--labels=app=web", "--port=8080", "--command", "--", "sh", "-c",
                        "mkdir -p /tmp/www && echo served by $(hostname) > /tmp/www/index.html && "
                        "exec httpd -f -p 8080 -h /tmp/www"], check=True, env=env, capture_output=True)
        subprocess.run([*kubectl, "expose", "pod", "web", "--port=80", "--target-port=8080"], check=True, env=env,
                       capture_output=True)
        no_kubeconfig = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        proxy = subprocess.Popen([sys.executable, "-m", "mlops_operator.cli", "dev", "proxy", "svc/web", "--port", "0",
                                  "--state-dir", str(state)], stdout=subprocess.PIPE, text=True, env=no_kubeconfig)
        try:
            assert proxy.stdout is not None
            url = proxy.stdout.readline().split()[1]
            assert url.startswith("http://127.0.0.1:")

            def fetch() -> str | None:
                try:
                    with urllib.request.urlopen(url + "/index.html", timeout=5) as r:
                        return r.read().decode()
                except OSError:
                    return None
            assert wait_for(fetch, 60, "the web Pod through mlops dev proxy") == "served by web\n"
        finally:
            proxy.terminate()
            proxy.wait(30)

        again = mlops("dev", "up", "--state-dir", str(state))
        assert again.returncode == 0, again.stderr
        assert "already up" in again.stderr
        assert json.loads((state / "state.json").read_text())["pids"] == first["pids"]

        down = mlops("dev", "down", "--state-dir", str(state))
        assert down.returncode == 0, down.stdout + down.stderr
        assert "left behind" not in down.stderr
        assert not any(_pid_alive(p) for p in first["pids"].values())
        assert not netns.exists(first["netns"])
        assert not listening(first["ports"]["apiserver"])
        assert "no control plane" in mlops("dev", "down", "--state-dir", str(state)).stdout
    finally:  # a failed check must not leave a cluster running
        if (state / "state.json").exists():
            mlops("dev", "down", "--state-dir", str(state))


def test_dev_up_says_what_is_missing_and_how_to_get_it(tmp_path: Path) -> None:
    env = {"PATH": str(Path(sys.executable).parent), "HOME": str(tmp_path), "MLOPS_CACHE_DIR": str(tmp_path / "c")}
    proc = mlops("dev", "up", "--state-dir", str(tmp_path / "dev"), env=env)
    assert proc.returncode == 1
    assert "kube-apiserver" in proc.stderr and "KUBEBUILDER_ASSETS" in proc.stderr
    assert str(tmp_path / "c") in proc.stderr
    assert not (tmp_path / "dev" / "state.json").exists()


def test_demo_closes_the_loop(tmp_path: Path) -> None:
    """The README's first command, as a user runs it (here with its own control plane)."""
    # the whole loop took 269-330 s on this 2-core machine: each of its steps has its own deadline (240 s), which
    # says which step hung; this cap only catches a demo that hangs outside them
    proc = mlops("dev", "demo", "--state-dir", str(tmp_path / "demo"), "--down", timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    out = proc.stdout
    steps = [  # in this order
        "TrainingRun/iris-v1 GatesPassed=True (Passed)",
        "trained iris-v1: accuracy 0.9",
        "ModelDeployment/iris Progressing=True (Analyzing)",
        "ModelDeployment/iris Available=True (Serving)",
        "/v2/models/iris/infer [5.1, 3.5, 1.4, 0.2] → ['setosa']",
        ": NotDrifted (share 0.00)",
        "the input distribution shifts",
        ": Drifted (share",
        "retraining: TrainingRun iris-drift-1 created by the DriftPolicy",
        "trained iris-drift-1: accuracy 0.9",
        "promoted revision",
        "traffic: 100% of the last 30 answers through the proxy came from revision",
        "DriftPolicy iris-drift Drifted=False",
        "trained iris-stump: accuracy 0.6",
        "rolled back revision",
        "the loop closed in",
    ]
    positions = [out.find(step) for step in steps]
    assert all(p >= 0 for p in positions), [s for s, p in zip(steps, positions, strict=True) if p < 0]
    assert positions == sorted(positions), out
    assert ", 0 failed" in out
    assert "control plane stopped" in out
    # nothing it started is left: no process mentions its state directory
    left = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if str(tmp_path / "demo").encode() in cmdline.read_bytes():
                left.append(cmdline.parent.name)
        except OSError:
            continue
    assert left == []
