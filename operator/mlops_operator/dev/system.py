"""The system packages the demo and the tests need, installed in one place.

    python3 operator/mlops_operator/dev/system.py [demo|test]    (before the virtual environment exists)
    mlops dev system [demo|test]                                  (the same, from the CLI)

`make demo` and `make test` run it first. Each package is checked by what it provides (a command on PATH,
or a Python module for python3-venv); what is missing is installed with apt-get when this runs as root on
Debian or Ubuntu, and otherwise named with the command that installs it. When everything is there it
only looks (a few milliseconds) and says so. Standard library only: it runs before the virtual
environment exists, with the system's python3.

The control plane binaries are not here: `mlops dev binaries` builds them (and installs its own build
tools) once into the cache.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Package:
    debian: str  # the Debian package name
    provides: str  # a command on PATH, an absolute path, or "python:MODULE" for a module of the system's python3
    why: str
    needed_for: frozenset[str]

    def present(self) -> bool:
        if self.provides.startswith("python:"):
            return all(importlib.util.find_spec(m) is not None for m in self.provides[7:].split(","))
        if self.provides.startswith("/"):
            return os.access(self.provides, os.X_OK)
        if shutil.which(self.provides):
            return True
        # envtest's binaries (etcd among them) count where KUBEBUILDER_ASSETS points
        assets = os.environ.get("KUBEBUILDER_ASSETS")
        return assets is not None and os.access(Path(assets) / self.provides, os.X_OK)


BOTH = frozenset({"demo", "test"})
PACKAGES = (
    Package("python3-venv", "python:venv,ensurepip", "the project's virtual environment (.venv)", BOTH),
    Package("openssl", "openssl", "the control plane's service-account key pair", BOTH),
    Package("etcd-server", "etcd", "the control plane's store", BOTH),
    # the real node (dev/node.py) and the images it runs (dev/imagebuild.py)
    Package("containerd", "containerd", "the node's container runtime (with runc)", BOTH),
    Package("runc", "runc", "the node's OCI runtime", BOTH),
    Package("containernetworking-plugins", "/usr/lib/cni/bridge", "the Pods' network (bridge, host-local)", BOTH),
    Package("iptables", "iptables", "kube-proxy's Services", BOTH),
    Package("iproute2", "ip", "the cluster's network namespace", BOTH),
    Package("dnsmasq-base", "dnsmasq", "cluster DNS", BOTH),
    Package("buildah", "buildah", "building images/Dockerfile without Docker", BOTH),
    Package("debootstrap", "debootstrap", "the images' Debian base where no registry is reachable", BOTH),
    Package("busybox-static", "busybox", "the Pods' sandbox (pause) image", BOTH),
    Package("prometheus", "prometheus", "the canary analysis that reads a real Prometheus", frozenset({"test"})),
)


def missing(purpose: str) -> list[Package]:
    return [p for p in PACKAGES if purpose in p.needed_for and not p.present()]


def can_install() -> str | None:
    """None when apt-get can install here, else why not."""
    if not shutil.which("apt-get"):
        return "this is not Debian or Ubuntu (no apt-get)"
    if os.geteuid() != 0:
        return "this is not root"
    return None


def ensure(purpose: str, out: object = sys.stderr) -> int:
    """Install what `purpose` (demo or test) needs and is missing; 0 when everything is there after."""

    def say(msg: str) -> None:
        print(f"[system] {msg}", file=out, flush=True)  # type: ignore[call-overload]

    wanted = [p for p in PACKAGES if purpose in p.needed_for]
    todo = missing(purpose)
    if not todo:
        say(f"{purpose}: all present ({', '.join(p.debian for p in wanted)})")
        return 0
    for p in todo:
        say(f"missing: {p.debian} ({p.why})")
    names = [p.debian for p in todo]
    if (why := can_install()) is not None:
        say(f"cannot install them: {why}. Install them yourself, e.g. `sudo apt-get install -y {' '.join(names)}` "
            "(or your system's packages of the same names), then run this again.")
        return 1
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "--no-install-recommends", *names]):
        say("$ " + " ".join(cmd))
        proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if proc.returncode != 0:
            say(f"failed ({proc.returncode}):\n" + "\n".join(proc.stdout.strip().splitlines()[-20:]))
            return 1
    still = missing(purpose)
    if still:
        say(f"installed, but still missing: {', '.join(f'{p.debian} ({p.provides})' for p in still)}")
        return 1
    say(f"{purpose}: installed {', '.join(names)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    purpose = args[0] if args else "test"
    if purpose not in ("demo", "test"):
        print(f"usage: system.py [demo|test] (not {purpose!r})", file=sys.stderr)
        return 2
    return ensure(purpose)


if __name__ == "__main__":
    sys.exit(main())
