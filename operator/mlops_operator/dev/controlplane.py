"""A real Kubernetes cluster for development (`mlops dev up/down`) and for the tests: etcd +
kube-apiserver + kube-controller-manager + kube-scheduler and a real node (dev/node.py: kubelet +
containerd + runc, kube-proxy, cluster DNS), all in a network namespace of the cluster's own (dev/netns.py),
the apiserver reached from the host through a loopback forwarder. Without a node (`with_node=False`, for
tests and benchmarks of the API alone) the control plane runs on the host's loopback instead.

Binaries are found, in order, in `KUBEBUILDER_ASSETS` (what controller-runtime's setup-envtest
gives), in the cache (`<cache>/k8s-1.20.2/bin`, etcd also on PATH), or built once from Debian's
`kubernetes` source package (about 5 minutes on 2 cores; needs root for apt).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .. import config
from . import netns, node, system

K8S_VERSION = "1.20.2"
COMPONENTS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
NODE_COMPONENTS = ("kubelet", "kube-proxy")
Progress = Callable[[str], None]


class ControlPlaneError(RuntimeError):
    pass


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def bin_cache() -> Path:
    return config.cache_dir() / f"k8s-{K8S_VERSION}" / "bin"


def find_binaries() -> dict[str, Path] | None:
    """Paths of etcd and the three components, or None when any is missing."""
    dirs = []
    if assets := os.environ.get("KUBEBUILDER_ASSETS"):
        dirs.append(Path(assets))
    dirs.append(bin_cache())
    found: dict[str, Path] = {}
    for name in ("etcd", *COMPONENTS):
        for d in dirs:
            if (d / name).is_file() and os.access(d / name, os.X_OK):
                found[name] = d / name
                break
        else:
            if name == "etcd" and (which := shutil.which("etcd")):
                found[name] = Path(which)
    return found if len(found) == 1 + len(COMPONENTS) else None


def _run(cmd: list[str], progress: Progress, **kw: object) -> None:
    progress("  $ " + " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)  # type: ignore[call-overload]
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
        raise ControlPlaneError(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{tail}")


def find_node_binaries() -> dict[str, Path] | None:
    """Paths of kubelet and kube-proxy (built from the same source), or None when either is missing."""
    found = {name: bin_cache() / name for name in NODE_COMPONENTS}
    return found if all(p.is_file() and os.access(p, os.X_OK) for p in found.values()) else None


def build_binaries(progress: Progress = _stderr, components: tuple[str, ...] = COMPONENTS) -> dict[str, Path]:
    """Build components (the control plane by default) from Debian's `kubernetes` source package into the cache."""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise ControlPlaneError(
            "kube-apiserver, kube-controller-manager and kube-scheduler were not found in "
            f"$KUBEBUILDER_ASSETS or {bin_cache()}, and they can only be built here on Debian as root "
            "(apt-get). Either run `mlops dev up` as root on Debian/Ubuntu, or download envtest "
            "binaries (`setup-envtest use 1.20.2 -p path`) and set KUBEBUILDER_ASSETS to that directory "
            "(etcd from there or on PATH)."
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    progress("[1/5] enabling Debian source lists")
    src_list = Path("/etc/apt/sources.list.d/mlops-operator-src.sources")
    debian_sources = Path("/etc/apt/sources.list.d/debian.sources")
    if not src_list.exists() and debian_sources.exists():
        text = debian_sources.read_text().replace("Types: deb\n", "Types: deb-src\n")
        src_list.write_text(text)
    _run(["apt-get", "update", "-q"], progress, env=env)
    progress("[2/5] installing Go, etcd and build tools from Debian")
    _run(["apt-get", "install", "-y", "-q", "golang-go", "etcd-server", "rsync", "jq", "openssl",
          "golang-github-modern-go-reflect2-dev"], progress, env=env)
    with tempfile.TemporaryDirectory(prefix="mlops-k8s-build-") as tmp:
        work = Path(tmp)
        progress("[3/5] downloading and unpacking Debian's kubernetes source package")
        _run(["apt-get", "source", "--download-only", "kubernetes"], progress, cwd=work, env=env)
        orig = next(work.glob("kubernetes_*.orig.tar.gz"), None)
        if orig is None:
            raise ControlPlaneError("apt-get source kubernetes did not produce an .orig.tar.gz")
        src = work / "src"
        src.mkdir()
        with tarfile.open(orig) as tar:
            for member in tar.getmembers():
                parts = member.name.split("/", 1)
                if len(parts) == 2 and parts[1]:
                    member.name = parts[1]
                    tar.extract(member, src, filter="tar")
        progress("[4/5] replacing vendored modern-go/reflect2 1.0.1 (crashes under Go >= 1.18) with 1.0.2")
        vendored = src / "vendor/github.com/modern-go/reflect2"
        shutil.rmtree(vendored)
        shutil.copytree("/usr/share/gocode/src/github.com/modern-go/reflect2", vendored, symlinks=False)
        (vendored / "go.mod").unlink(missing_ok=True)
        gopath = src / ".go"
        (gopath / "src/k8s.io").mkdir(parents=True)
        (gopath / "src/k8s.io/kubernetes").symlink_to("../../..")
        progress(f"[5/5] compiling {', '.join(components)} (about 5 min)")
        home = work / "home"
        home.mkdir()
        _run(["make", f"WHAT={' '.join('cmd/' + c for c in components)}"], progress, cwd=src,
             env={**env, "GOPATH": str(gopath), "CGO_ENABLED": "0", "HOME": str(home)})
        out = src / "_output/local/bin/linux" / _goarch()
        dest = bin_cache()
        dest.mkdir(parents=True, exist_ok=True)
        for name in components:
            shutil.copy2(out / name, dest / f".{name}.tmp")
            (dest / f".{name}.tmp").replace(dest / name)
    missing = [name for name in components if not (bin_cache() / name).is_file()]
    if missing:
        raise ControlPlaneError(f"the build finished but {', '.join(missing)} are still missing from {bin_cache()}")
    progress(f"{', '.join(components)} cached in {bin_cache()}")
    return {name: bin_cache() / name for name in components}


def _goarch() -> str:
    machine = os.uname().machine
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def ensure_binaries(progress: Progress = _stderr, with_node: bool = False) -> dict[str, Path]:
    """etcd and the control plane (and kubelet + kube-proxy with_node), building what is missing in one go."""
    found = find_binaries()
    node_found = find_node_binaries() if with_node else {}
    if found is not None and node_found is not None:
        return found | node_found
    if shutil.which("etcd") is None and system.can_install() is None:
        system.ensure("demo")  # etcd and the rest the control plane needs, from Debian
        found = find_binaries()
    missing: tuple[str, ...] = () if found is not None else COMPONENTS
    if with_node and node_found is None:
        missing += NODE_COMPONENTS
    if missing:
        build_binaries(progress, missing)
    found = find_binaries()
    node_found = find_node_binaries() if with_node else {}
    if found is None or node_found is None:
        raise ControlPlaneError(f"the build finished but etcd or a component is still missing from {bin_cache()}")
    return found | node_found


def free_ports(n: int) -> list[int]:
    """`n` distinct free loopback ports: bound together, so the kernel cannot hand the same one out twice (picked
    one at a time and released, a test's REST and gRPC ports once came out equal)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]


def free_port() -> int:
    return free_ports(1)[0]


AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: None
    userGroups: ["system:nodes", "system:serviceaccounts:kube-system"]
  - level: None
    nonResourceURLs: ["/healthz*", "/readyz*", "/livez*", "/version", "/api", "/api/*", "/apis", "/apis/*",
                      "/openapi/*"]
  - level: Metadata
"""


@dataclass
class ControlPlane:
    """The processes of one control plane, their ports and state directory."""

    state_dir: Path
    with_controllers: bool = True
    with_node: bool = True  # a real node (kubelet + containerd) and the cluster's own network namespace
    audit: bool = False  # the apiserver's audit log (Metadata level) in logs/audit.log: who made which request
    netns: str = ""
    pids: dict[str, int] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    token: str = ""
    started_at: float = 0.0

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def audit_log(self) -> Path:
        return self.state_dir / "logs" / "audit.log"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports['apiserver']}"

    # -- persisted state (so `mlops dev down` in another process finds what `up` started)
    def _apiserver_port(self) -> int:
        """The port this state directory's apiserver had before, when it is free: etcd keeps the `kubernetes`
        Service's endpoints (NODE_IP:port), which 1.20's apiserver did not correct when a restart moved the
        port, so every Pod's connection to kubernetes.default.svc was refused (a second `mlops dev demo`)."""
        path = self.state_dir / "apiserver.port"
        with contextlib.suppress(OSError, ValueError), socket.socket() as s:
            before = int(path.read_text())
            s.bind(("127.0.0.1", before))
            return before
        port = free_port()
        path.write_text(str(port))
        return port

    def _save(self) -> None:
        state = {"pids": self.pids, "ports": self.ports, "token": self.token, "with_node": self.with_node,
                 "netns": self.netns}
        (self.state_dir / "state.json").write_text(json.dumps(state))

    @classmethod
    def load(cls, state_dir: Path) -> ControlPlane | None:
        path = Path(state_dir) / "state.json"
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        return cls(Path(state_dir), pids=data["pids"], ports=data["ports"], token=data["token"],
                   with_node=data.get("with_node", False), netns=data.get("netns", ""))

    def alive(self) -> dict[str, bool]:
        return {name: _pid_alive(pid) for name, pid in self.pids.items()}

    def healthy(self) -> bool:
        if not self.pids or not all(self.alive().values()):
            return False
        return self._get("/readyz") == 200

    def _get(self, path: str) -> int:
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        req = urllib.request.Request(self.server + path, headers={"Authorization": f"Bearer {self.token}"})
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=5) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except (OSError, urllib.error.URLError):
            return 0

    # -- start / stop
    def start(self, progress: Progress = _stderr, timeout: float = 90) -> None:
        if self.with_node and (problem := node.socket_path_problem(self.state_dir)):
            raise ControlPlaneError(problem)  # before anything is built or started
        binaries = ensure_binaries(progress, self.with_node)
        self.started_at = time.monotonic()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        logs = self.state_dir / "logs"
        logs.mkdir(exist_ok=True)
        certs = self.state_dir / "certs"
        certs.mkdir(exist_ok=True)
        self.token = secrets.token_hex(16)
        tokens = f'{self.token},admin,admin,"system:masters"\n'
        if self.with_node:
            node_token = secrets.token_hex(16)
            tokens += f'{node_token},system:node:{node.NODE_NAME},kubelet,"system:nodes"\n'
        (self.state_dir / "tokens.csv").write_text(tokens)
        self._service_account_keys(certs)
        if self.with_node:
            missing = node.missing_tools()
            if missing:
                raise ControlPlaneError(f"the real node needs {', '.join(missing)} ({node.NODE_PACKAGES_HINT})")
            progress(f"[up] network namespace {node.netns_name(self.state_dir)} (node {node.NODE_IP}, "
                     f"pods {node.POD_CIDR}, services {node.SERVICE_CIDR})")
            self.netns = node.netns_name(self.state_dir)
            netns.create(self.netns, (f"{node.NODE_IP}/32",))
            node.make_certificates(certs)
            # inside the namespace the ports are the usual ones, but for the apiserver's: it listens on the port
            # its loopback forwarder has on the host, so one kubeconfig (https://127.0.0.1:PORT) serves both sides
            self.ports = {"etcd": 2379, "etcd-peer": 2380, "kcm": 10257, "scheduler": 10259,
                          "apiserver": self._apiserver_port()}
        else:
            names = ("etcd", "etcd-peer", "apiserver", "kcm", "scheduler")
            self.ports = dict(zip(names, free_ports(len(names)), strict=True))
        self._save()
        try:
            progress("[up] etcd, kube-apiserver")
            self._spawn("etcd", [
                str(binaries["etcd"]), "--data-dir", str(self.state_dir / "etcd"),
                "--listen-client-urls", f"http://127.0.0.1:{self.ports['etcd']}",
                "--advertise-client-urls", f"http://127.0.0.1:{self.ports['etcd']}",
                "--listen-peer-urls", f"http://127.0.0.1:{self.ports['etcd-peer']}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{self.ports['etcd-peer']}",
                "--initial-cluster", f"default=http://127.0.0.1:{self.ports['etcd-peer']}",
                "--quota-backend-bytes", str(4 * 1024**3),
            ], logs)
            self._spawn("kube-apiserver", [
                str(binaries["kube-apiserver"]),
                f"--etcd-servers=http://127.0.0.1:{self.ports['etcd']}",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--service-account-key-file={certs / 'sa.pub'}",
                f"--service-account-signing-key-file={certs / 'sa.key'}",
                f"--token-auth-file={self.state_dir / 'tokens.csv'}",
                f"--service-cluster-ip-range={node.SERVICE_CIDR}", "--allow-privileged=true",
                *self._apiserver_flags(certs), *self._audit_flags(),
            ], logs)
            if self.with_node:
                self._spawn("apiserver-forwarder", [
                    sys.executable, "-m", "mlops_operator.dev.netns", "forward", f"--netns={self.netns}",
                    f"{self.ports['apiserver']}=127.0.0.1:{self.ports['apiserver']}"], logs, in_netns=False)
                self._write_node_kubeconfig(certs, node_token)
            self._write_kubeconfig()
            self._wait(lambda: self._get("/readyz") == 200, timeout, "kube-apiserver /readyz", logs)
            if self.with_controllers or self.with_node:
                progress("[up] kube-controller-manager, kube-scheduler")
                kc = str(self.kubeconfig)
                self._spawn("kube-controller-manager", [
                    str(binaries["kube-controller-manager"]), f"--kubeconfig={kc}",
                    f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}",
                    "--leader-elect=false", "--bind-address=127.0.0.1", "--port=0",
                    f"--secure-port={self.ports['kcm']}",
                    f"--service-account-private-key-file={certs / 'sa.key'}",
                    "--use-service-account-credentials=false",
                    *([f"--root-ca-file={certs / 'ca.crt'}", "--controllers=*,-nodeipam"] if self.with_node
                      else ["--controllers=*,-nodeipam,-serviceaccount-token"]),
                ], logs)
                self._spawn("kube-scheduler", [
                    str(binaries["kube-scheduler"]), f"--kubeconfig={kc}",
                    f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}",
                    "--leader-elect=false", "--bind-address=127.0.0.1", "--port=0",
                    f"--secure-port={self.ports['scheduler']}",
                ], logs)
                for name, port in (("kube-controller-manager", self.ports["kcm"]),
                                   ("kube-scheduler", self.ports["scheduler"])):
                    check = functools.partial(_https_ok, port, "/healthz")
                    if self.netns:
                        check = functools.partial(netns.call, self.netns, check)
                    self._wait(check, timeout, f"{name} /healthz", logs)
            if self.with_node:
                self._start_node(binaries, certs, progress, timeout)
        except BaseException:
            self.stop()
            raise

    def _apiserver_flags(self, certs: Path) -> list[str]:
        if not self.with_node:
            return [f"--cert-dir={certs}", f"--secure-port={self.ports['apiserver']}",
                    "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", "--authorization-mode=RBAC",
                    "--disable-admission-plugins=ServiceAccount", "--endpoint-reconciler-type=none"]
        return [f"--secure-port={self.ports['apiserver']}", "--bind-address=0.0.0.0",
                f"--advertise-address={node.NODE_IP}",
                f"--tls-cert-file={certs / 'apiserver.crt'}", f"--tls-private-key-file={certs / 'apiserver.key'}",
                f"--client-ca-file={certs / 'ca.crt'}",
                f"--kubelet-client-certificate={certs / 'kubelet-client.crt'}",
                f"--kubelet-client-key={certs / 'kubelet-client.key'}",
                "--kubelet-preferred-address-types=InternalIP,Hostname",
                "--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction"]

    def _audit_flags(self) -> list[str]:
        """Every request's metadata (user, user agent, verb, resource, subresource, namespace; no bodies) but
        the node's and the controllers' own, once when answered (a watch also when it starts)."""
        if not self.audit:
            return []
        policy = self.state_dir / "audit-policy.yaml"
        policy.write_text(AUDIT_POLICY)
        return [f"--audit-policy-file={policy}", f"--audit-log-path={self.audit_log}", "--audit-log-format=json"]

    def _write_node_kubeconfig(self, certs: Path, node_token: str) -> None:
        path = self.state_dir / "kubeconfig.node"
        user = f"system:node:{node.NODE_NAME}"
        path.write_text(node.kubeconfig_text(self.server, certs / "ca.crt", node_token, user))
        path.chmod(0o600)

    def _start_node(self, binaries: dict[str, Path], certs: Path, progress: Progress, timeout: float) -> None:
        from . import imagebuild
        logs = self.state_dir / "logs"
        node.save_sysctls(self.state_dir)
        node.make_cgroups(self.state_dir)
        cmds = node.commands(self.state_dir, binaries, certs, imagebuild.PAUSE_IMAGE)
        progress("[up] containerd")
        self._spawn("containerd", cmds["containerd"], logs)
        self._wait(lambda: node.containerd_socket(self.state_dir).exists(), timeout, "containerd's socket", logs)
        imagebuild.ensure(progress, imagebuild.Containerd(node.containerd_socket(self.state_dir)))
        progress(f"[up] kubelet (node {node.NODE_NAME} at {node.NODE_IP}), kube-proxy, cluster DNS")
        cmds["kubelet"] = node.in_mounts_of(self.pids["containerd"], cmds["kubelet"])  # its pod log directories
        for name in ("kubelet", "kube-proxy", "cluster-dns"):
            self._spawn(name, cmds[name], logs)
        self._wait(self._node_ready, timeout, f"node {node.NODE_NAME} to be Ready", logs)

    def _node_ready(self) -> bool:
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        req = urllib.request.Request(f"{self.server}/api/v1/nodes/{node.NODE_NAME}",
                                     headers={"Authorization": f"Bearer {self.token}"})
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=5) as resp:
                obj = json.loads(resp.read())
        except (OSError, urllib.error.URLError, ValueError):
            return False
        ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                    for c in obj.get("status", {}).get("conditions", []))
        # the node-lifecycle controller taints a new node not-ready until it has seen it Ready
        return ready and not obj.get("spec", {}).get("taints")

    def _service_account_keys(self, certs: Path) -> None:
        if (certs / "sa.pub").exists():
            return
        if shutil.which("openssl") is None:
            raise ControlPlaneError("openssl is needed to make the service-account key pair (apt-get install openssl)")
        subprocess.run(["openssl", "genrsa", "-out", str(certs / "sa.key"), "2048"], check=True, capture_output=True)
        subprocess.run(["openssl", "rsa", "-in", str(certs / "sa.key"), "-pubout", "-out", str(certs / "sa.pub")],
                       check=True, capture_output=True)

    def _write_kubeconfig(self) -> None:
        certs = self.state_dir / "certs"
        ca = certs / ("ca.crt" if self.with_node else "apiserver.crt")
        tmp = self.kubeconfig.with_suffix(".tmp")
        tmp.write_text(node.kubeconfig_text(self.server, ca, self.token, "admin"))
        tmp.chmod(0o600)
        tmp.replace(self.kubeconfig)

    def _spawn(self, name: str, cmd: list[str], logs: Path, in_netns: bool = True) -> None:
        if self.netns and in_netns:
            cmd = netns.wrap(self.netns, cmd)
        with (logs / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        self.pids[name] = proc.pid
        self._save()

    def _wait(self, ok: Callable[[], bool], timeout: float, what: str, logs: Path) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dead = [n for n, alive in self.alive().items() if not alive]
            if dead:
                tail = (logs / f"{dead[0]}.log").read_text(errors="replace").splitlines()[-20:]
                raise ControlPlaneError(f"{dead[0]} exited while waiting for {what}:\n" + "\n".join(tail))
            if ok():
                return
            time.sleep(0.2)
        raise ControlPlaneError(f"timed out after {timeout:.0f}s waiting for {what} (logs in {logs})")

    def restart(self, name: str, timeout: float = 90) -> None:
        """Stop one component and start it again with the same command line (a fault to ride out)."""
        pid = self.pids[name]
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
        _terminate(pid, 15)
        self._spawn(name, [c.decode() for c in cmd], self.state_dir / "logs", in_netns=name != "apiserver-forwarder")
        if name == "kube-apiserver":
            self._wait(lambda: self._get("/readyz") == 200, timeout, "kube-apiserver /readyz", self.state_dir / "logs")

    def stop(self, grace: float = 15) -> list[str]:
        """Stop every process this control plane started: the node, controllers, apiserver, then etcd; for a
        real node also its containers, mounts, cgroups and network namespace. Returns what is left behind."""
        order = ["kubelet", "kube-proxy", "cluster-dns", "kube-scheduler", "kube-controller-manager",
                 "kube-apiserver", "etcd", "containerd", "apiserver-forwarder"]
        for name in sorted(self.pids, key=lambda n: order.index(n) if n in order else -1):
            _terminate(self.pids[name], grace)
        self.pids = {}
        left = node.teardown(self.state_dir) if self.with_node else []
        with contextlib.suppress(FileNotFoundError):
            (self.state_dir / "state.json").unlink()
        return left


def _https_ok(port: int, path: str) -> bool:
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    try:
        with urllib.request.urlopen(f"https://127.0.0.1:{port}{path}", context=ctx, timeout=2) as resp:
            return int(resp.status) == 200
    except (OSError, urllib.error.URLError):
        return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours counts as gone
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _terminate(pid: int, grace: float) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        _reap(pid)
        if not _pid_alive(pid):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _pid_alive(pid):
        _reap(pid)
        time.sleep(0.05)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def up(state_dir: Path, progress: Progress = _stderr) -> ControlPlane:
    """Start a control plane in state_dir, or return the one already running there (idempotent)."""
    state_dir = Path(state_dir).resolve()
    existing = ControlPlane.load(state_dir)
    if existing is not None:
        if existing.healthy():
            progress(f"[up] the cluster in {state_dir} is already up")
            return existing
        progress(f"a previous control plane in {state_dir} is not healthy: stopping what is left of it")
        existing.stop()
    cp = ControlPlane(state_dir)
    cp.start(progress)
    return cp


def down(state_dir: Path) -> list[str] | None:
    """Stop the control plane of state_dir: None when nothing was running there, else what is left behind."""
    cp = ControlPlane.load(Path(state_dir).resolve())
    if cp is None:
        return None
    return cp.stop()
