"""What the containers the operator creates use, measured under the real node's cgroups while the demo runs.

    python bench/child_resources.py [--state-dir DIR]

Runs `mlops dev demo` (the whole loop: training, storage-init, serving, analysis, the operator Pod) on the
local cluster and samples every container's memory cgroup (`memory.max_usage_in_bytes`, cgroup v1, as the
node's kubelet sets them up) and CPU (`cpuacct.usage`, the busiest second) every 0.25 s. Prints per
container role the peak memory and CPU, and the requests (the peak) and limits (twice the peak) the
operator's defaults derive from (builders/common.py DEFAULT_RESOURCES).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "operator"))

from mlops_operator.dev.node import CGROUP_ROOT, cgroup_name  # noqa: E402
from mlops_operator.dev.tools import tool  # noqa: E402

ROLES = {"trainer": "train", "storage-init": "storage-init", "server": "serve", "analyze": "analyze",
         "operator": "operator"}


class Sampler(threading.Thread):
    def __init__(self, state_dir: Path) -> None:
        super().__init__(daemon=True)
        self.memory = CGROUP_ROOT / "memory" / cgroup_name(state_dir) / "kubepods"
        self.cpu = CGROUP_ROOT / "cpuacct" / cgroup_name(state_dir) / "kubepods"
        self.kubeconfig = state_dir / "kubeconfig"
        self.peak_mem: dict[str, int] = {}
        self.peak_cpu: dict[str, float] = {}
        self.names: dict[str, tuple[str, str]] = {}  # container id → (pod, container)
        self._last: dict[str, tuple[float, int]] = {}
        self.stop = threading.Event()

    def _containers(self, root: Path) -> list[Path]:
        # kubepods/[burstable|besteffort/]pod<uid>/<container id>
        return [c for c in root.glob("**/pod*/*") if c.is_dir() and len(c.name) == 64]

    def _read(self, path: Path) -> int | None:
        try:
            return int(path.read_text())
        except (OSError, ValueError):
            return None

    def _names(self) -> None:
        out = subprocess.run([tool("kubectl"), f"--kubeconfig={self.kubeconfig}", "get", "pods", "-A", "-o", "json"],
                             capture_output=True, text=True, timeout=30)
        if out.returncode != 0:
            return
        for pod in json.loads(out.stdout)["items"]:
            st = pod.get("status") or {}
            for c in (st.get("containerStatuses") or []) + (st.get("initContainerStatuses") or []):
                cid = (c.get("containerID") or "").split("://")[-1]
                if cid:
                    self.names[cid] = (f"{pod['metadata']['namespace']}/{pod['metadata']['name']}", c["name"])

    def run(self) -> None:
        last_names = 0.0
        while not self.stop.is_set():
            now = time.monotonic()
            for c in self._containers(self.memory):
                if (v := self._read(c / "memory.max_usage_in_bytes")) is not None:
                    self.peak_mem[c.name] = max(v, self.peak_mem.get(c.name, 0))
            for c in self._containers(self.cpu):
                if (u := self._read(c / "cpuacct.usage")) is None:
                    continue
                t0, u0 = self._last.setdefault(c.name, (now, u))
                if now - t0 >= 1.0:
                    self.peak_cpu[c.name] = max(self.peak_cpu.get(c.name, 0.0), (u - u0) / 1e9 / (now - t0))
                    self._last[c.name] = (now, u)
            if now - last_names > 2:
                self._names()
                last_names = now
            self.stop.wait(0.25)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--state-dir", default=str(REPO / ".state" / "bench-resources"))
    args = parser.parse_args()
    state_dir = Path(args.state_dir).resolve()
    sampler = Sampler(state_dir)
    sampler.start()
    mlops = str(Path(sys.executable).parent / "mlops")
    try:
        demo = subprocess.run([mlops, "dev", "demo", "--state-dir", str(state_dir)], timeout=3600)
        sampler._names()
    finally:
        sampler.stop.set()
        sampler.join(5)
        subprocess.run([mlops, "dev", "down", "--state-dir", str(state_dir)], timeout=600)
    by_role: dict[str, list[tuple[int, float, str]]] = {}
    for cid, mem in sampler.peak_mem.items():
        pod, container = sampler.names.get(cid, ("?", "?"))
        role = ROLES.get(container)
        if role is not None:
            by_role.setdefault(role, []).append((mem, sampler.peak_cpu.get(cid, 0.0), pod))
    print(f"\ndemo exit code {demo.returncode}; containers measured: {sum(len(v) for v in by_role.values())}")
    print(f"{'role':<14}{'containers':>11}{'peak MiB':>10}{'peak cores':>12}{'request MiB':>13}{'limit MiB':>11}")
    for role, rows in sorted(by_role.items()):
        mem = max(r[0] for r in rows) / 2**20
        cpu = max(r[1] for r in rows)
        print(f"{role:<14}{len(rows):>11}{mem:>10.0f}{cpu:>12.2f}{mem:>13.0f}{2 * mem:>11.0f}")
    return demo.returncode


if __name__ == "__main__":
    raise SystemExit(main())
