"""`mlops dev up` / `mlops dev down` as a user runs them: a cluster kubectl can use, idempotent,
nothing left running afterwards; a clear message when the binaries cannot be had."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from mlops_operator.dev.controlplane import _pid_alive
from mlops_operator.dev.tools import tool

from .conftest import wait_for


def mlops(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mlops_operator.cli", *args], capture_output=True, text=True,
                          timeout=300, env=env)


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_dev_up_kubectl_idempotent_down(tmp_path: Path) -> None:
    state = tmp_path / "dev"
    up = mlops("dev", "up", "--state-dir", str(state))
    assert up.returncode == 0, up.stderr
    assert up.stdout.strip() == f"export KUBECONFIG={state.resolve() / 'kubeconfig'}"
    kubeconfig = up.stdout.strip().split("=", 1)[1]
    out = subprocess.run([tool("kubectl"), "get", "crd,ns"], capture_output=True, text=True,
                         env={**os.environ, "KUBECONFIG": kubeconfig}, timeout=60)
    assert out.returncode == 0, out.stderr
    for name in ("trainingruns.mlops.dev", "modeldeployments.mlops.dev", "driftpolicies.mlops.dev",
                 "namespace/default"):
        assert name in out.stdout
    first = json.loads((state / "state.json").read_text())
    assert set(first["pids"]) == {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler",
                                  "local-node"}
    # a Pod runs on the local node as a process
    env = {**os.environ, "KUBECONFIG": kubeconfig}
    kubectl = [tool("kubectl")]
    subprocess.run([*kubectl, "run", "sleeper", "--image=python:3.11", "--restart=Never", "--command", "--",
                    "python", "-c", "import time; time.sleep(3600)"], check=True, env=env, capture_output=True)

    def pid() -> int | None:
        out = subprocess.run([*kubectl, "get", "pod", "sleeper", "-o",
                              "jsonpath={.status.containerStatuses[0].containerID}"],
                             env=env, capture_output=True, text=True).stdout
        return int(out.removeprefix("local://")) if out.startswith("local://") else None

    sleeper = wait_for(pid, 60, "the sleeper Pod to run")
    assert _pid_alive(sleeper)
    nodes = subprocess.run([*kubectl, "get", "nodes"], env=env, capture_output=True, text=True).stdout
    assert "mlops-local" in nodes and " Ready " in nodes, nodes

    again = mlops("dev", "up", "--state-dir", str(state))
    assert again.returncode == 0, again.stderr
    assert json.loads((state / "state.json").read_text())["pids"] == first["pids"]

    # the node deregisters when it stops (first thing `down` does)
    os.kill(first["pids"]["local-node"], signal.SIGTERM)

    def node_gone() -> bool:
        got = subprocess.run([*kubectl, "get", "node", "mlops-local"], env=env, capture_output=True, text=True)
        return got.returncode != 0 and "NotFound" in got.stderr

    wait_for(node_gone, 60, "the Node to be deleted when the local node stops")
    wait_for(lambda: not _pid_alive(sleeper), 30, "the Pod's process to stop with the node")
    down = mlops("dev", "down", "--state-dir", str(state))
    assert down.returncode == 0, down.stderr
    wait_for(lambda: not any(_pid_alive(p) for p in [*first["pids"].values(), sleeper]), 30,
             "every process to exit, the Pod's too")
    assert not any(listening(p) for p in first["ports"].values())
    assert "no control plane" in mlops("dev", "down", "--state-dir", str(state)).stdout


def test_dev_up_says_what_is_missing_and_how_to_get_it(tmp_path: Path) -> None:
    env = {"PATH": str(Path(sys.executable).parent), "HOME": str(tmp_path), "MLOPS_CACHE_DIR": str(tmp_path / "c")}
    proc = mlops("dev", "up", "--state-dir", str(tmp_path / "dev"), env=env)
    assert proc.returncode == 1
    assert "kube-apiserver" in proc.stderr and "KUBEBUILDER_ASSETS" in proc.stderr
    assert str(tmp_path / "c") in proc.stderr
    assert not (tmp_path / "dev" / "state.json").exists()


def test_demo_closes_the_loop(tmp_path: Path) -> None:
    """The README's first command, as a user runs it (here with its own control plane)."""
    proc = mlops("dev", "demo", "--state-dir", str(tmp_path / "demo"), "--down")
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
