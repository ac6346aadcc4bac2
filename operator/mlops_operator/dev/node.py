"""A real node for the dev cluster, inside the cluster's network namespace: containerd (Debian's) + runc,
the CNI bridge and host-local plugins, kubelet and kube-proxy (iptables mode; both built from the same source
as the control plane), and cluster DNS (dnsmasq fed from Services, dev/clusterdns.py).

Layout in the namespace: the node's address `NODE_IP` on `lo` (kubelet refuses a loopback node IP and the
dummy link type is missing here), the Pods' bridge `mlops0` with `POD_CIDR`, Services in `SERVICE_CIDR`
(`kubernetes` at `API_SERVICE_IP`). Pods resolve names at `NODE_IP`:53 (kubelet's `clusterDNS`).

What `down` must undo is found from this cluster's own marks, never by name alone: processes are the pids
recorded and every process in the cluster's cgroups (`/mlops-<id>` in each v1 hierarchy); mounts are those
under its state directory; Pods' network namespaces are the `cni-*` namespaces the cluster's processes were in;
the sysctls kubelet changes at start are saved before it starts and written back.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from . import netns

NODE_NAME = "mlops-node"
NODE_IP = "10.243.0.1"
POD_CIDR = "10.244.0.0/24"
POD_GATEWAY = "10.244.0.1"
CLUSTER_CIDR = "10.244.0.0/16"
SERVICE_CIDR = "10.96.0.0/12"
API_SERVICE_IP = "10.96.0.1"
BRIDGE = "mlops0"
CGROUP_ROOT = Path("/sys/fs/cgroup")
KUBELET_SYSCTLS = ("kernel/panic", "kernel/panic_on_oops", "vm/overcommit_memory")
NODE_PACKAGES_HINT = "apt-get install containerd containernetworking-plugins runc iptables dnsmasq-base"


def cluster_id(state_dir: Path) -> str:
    return hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:8]


def netns_name(state_dir: Path) -> str:
    return f"mlops-{cluster_id(state_dir)}"


def cgroup_name(state_dir: Path) -> str:
    return f"mlops-{cluster_id(state_dir)}"


def containerd_socket(state_dir: Path) -> Path:
    return state_dir / "containerd" / "containerd.sock"


SOCKET_PATH_MAX = 107  # bytes in a unix socket's path (sun_path holds 108 with its NUL)
# the deepest sockets the node binds under its state directory (the kubelet's pod-resources socket takes a
# random 10-digit name)
_DEEPEST_SOCKETS = ("kubelet/root/pod-resources/0123456789", "kubelet/root/device-plugins/kubelet.sock")


def socket_path_problem(state_dir: Path) -> str | None:
    """Why the node's unix sockets cannot live under `state_dir` (a path too long to bind), if they cannot:
    the kubelet would die at start with `bind: invalid argument`."""
    longest = max((state_dir.resolve() / tail for tail in _DEEPEST_SOCKETS), key=lambda p: len(os.fsencode(p)))
    size = len(os.fsencode(longest))
    if size <= SOCKET_PATH_MAX:
        return None
    return (f"the state directory {state_dir} is too deep for the node's unix sockets: {longest} would be {size} "
            f"bytes, and a socket's path holds {SOCKET_PATH_MAX}; use a shorter state directory")


# -- certificates: one CA for the apiserver's serving certificate and the apiserver's kubelet client


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_certificates(certs: Path) -> None:
    """ca, apiserver (serving: loopback, node IP, the kubernetes Service's names and ClusterIP) and
    kubelet-client (the apiserver's identity at kubelets), all RSA 2048 signed by ca (idempotent)."""
    if (certs / "kubelet-client.crt").exists():
        return
    certs.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(certs / "ca.key"),
             "-out", str(certs / "ca.crt"), "-days", "3650", "-subj", "/CN=mlops-dev-ca")
    sans = ",".join(["IP:127.0.0.1", f"IP:{NODE_IP}", f"IP:{API_SERVICE_IP}", "DNS:localhost", "DNS:kubernetes",
                     "DNS:kubernetes.default", "DNS:kubernetes.default.svc",
                     "DNS:kubernetes.default.svc.cluster.local"])
    for name, subject, ext in (
        ("apiserver", "/CN=kube-apiserver", f"subjectAltName={sans}\nextendedKeyUsage=serverAuth"),
        ("kubelet-client", "/O=system:masters/CN=kube-apiserver-kubelet-client", "extendedKeyUsage=clientAuth"),
    ):
        (certs / f"{name}.ext").write_text(ext + "\n")
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(certs / f"{name}.key"),
                 "-out", str(certs / f"{name}.csr"), "-subj", subject)
        _openssl("x509", "-req", "-in", str(certs / f"{name}.csr"), "-CA", str(certs / "ca.crt"),
                 "-CAkey", str(certs / "ca.key"), "-CAcreateserial", "-days", "3650",
                 "-extfile", str(certs / f"{name}.ext"), "-out", str(certs / f"{name}.crt"))


def kubeconfig_text(server: str, ca: Path, token: str, user: str) -> str:
    return f"""apiVersion: v1
kind: Config
clusters:
- name: mlops-dev
  cluster:
    server: {server}
    certificate-authority: {ca}
users:
- name: {user}
  user:
    token: {token}
contexts:
- name: mlops-dev
  context: {{cluster: mlops-dev, user: {user}, namespace: default}}
current-context: mlops-dev
"""


# -- configuration files


def write_containerd_config(state_dir: Path, pause_image: str) -> Path:
    base = state_dir / "containerd"
    for d in ("root", "state", "opt"):
        (base / d).mkdir(parents=True, exist_ok=True)
    cni = state_dir / "cni"
    (cni / "net.d").mkdir(parents=True, exist_ok=True)
    conflist = {
        "cniVersion": "0.4.0", "name": "mlops",
        "plugins": [{"type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": False, "hairpinMode": True,
                     "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_CIDR, "gateway": POD_GATEWAY}]],
                              "routes": [{"dst": "0.0.0.0/0"}], "dataDir": str(cni / "ipam")}}],
    }
    (cni / "net.d" / "10-mlops.conflist").write_text(json.dumps(conflist, indent=1))
    path = base / "config.toml"
    path.write_text(f"""version = 2
root = "{base / 'root'}"
state = "{base / 'state'}"
oom_score = 0
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",
                    "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = "{containerd_socket(state_dir)}"

[ttrpc]
  address = "{base / 'containerd.sock.ttrpc'}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{base / 'opt'}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause_image}"
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni / 'net.d'}"
""")
    return path


def write_kubelet_config(state_dir: Path, certs: Path) -> Path:
    kubelet = state_dir / "kubelet"
    kubelet.mkdir(parents=True, exist_ok=True)
    (kubelet / "resolv.conf").write_text(f"nameserver {NODE_IP}\n")
    config = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
        "address": NODE_IP, "port": 10250, "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1", "healthzPort": 10248,
        "cgroupDriver": "cgroupfs", "cgroupRoot": f"/{cgroup_name(state_dir)}", "cgroupsPerQOS": True,
        "enforceNodeAllocatable": ["pods"], "failSwapOn": False, "makeIPTablesUtilChains": False,
        "protectKernelDefaults": False, "clusterDNS": [NODE_IP], "clusterDomain": "cluster.local",
        "resolvConf": str(kubelet / "resolv.conf"),
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": False},
                           "x509": {"clientCAFile": str(certs / "ca.crt")}},
        "authorization": {"mode": "AlwaysAllow"},
        # the disk is shared with everything else on the machine: evict only when it is really full
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%",
                         "nodefs.inodesFree": "1%"},
        "imageGCHighThresholdPercent": 100, "serializeImagePulls": False, "maxPods": 110,
        "nodeStatusUpdateFrequency": "10s", "fileCheckFrequency": "20s",
    }
    path = kubelet / "config.json"
    path.write_text(json.dumps(config, indent=1))
    return path


def make_cgroups(state_dir: Path) -> None:
    """The cluster's cgroup root in every v1 hierarchy (kubelet's cgroupRoot must exist)."""
    for hierarchy in _hierarchies():
        (hierarchy / cgroup_name(state_dir)).mkdir(exist_ok=True)


def _hierarchies() -> list[Path]:
    if not CGROUP_ROOT.is_dir():
        return []
    return [p for p in CGROUP_ROOT.iterdir() if p.is_dir() and not p.is_symlink() and (p / "cgroup.procs").exists()]


POD_LOG_DIRS = ("/var/log/pods", "/var/log/containers")  # fixed in kubelet 1.20


def own_pod_logs(state_dir: Path, cmd: list[str]) -> list[str]:
    """cmd (containerd) in a mount namespace of its own where the kubelet's fixed pod log directories are the
    cluster's (`<state>/logs/pods`, `…/containers`). Two nodes on one machine (the tests' cluster beside `mlops
    dev up`'s) would otherwise share them, and each kubelet's garbage collection removes, within a minute, the log
    directories of Pods it does not know: the other node's `kubectl logs` then fails with "no such file". The
    kubelet joins this namespace (`in_mounts_of`), so the volumes it mounts are the ones containerd sees. Mount
    propagation is left as it is (the Pods' network namespaces under /run/netns still reach the machine, where
    `ip netns` and teardown find them), except the mount holding /var/log, made private in the namespace first so
    that the two binds stay in it."""
    own = [str(state_dir / "logs" / Path(d).name) for d in POD_LOG_DIRS]
    script = ('mkdir -p "$1" "$2" "$3" "$4" && mount --make-private "$(findmnt -no TARGET -T "$3")" && '
              'mount --bind "$1" "$3" && mount --bind "$2" "$4" && shift 4 && exec "$@"')
    return ["unshare", "--mount", "--propagation", "unchanged", "--", "sh", "-c", script, "sh", *own,
            *POD_LOG_DIRS, *cmd]


def in_mounts_of(pid: int, cmd: list[str]) -> list[str]:
    """cmd, run in the mount namespace of process `pid` (the kubelet in containerd's: see own_pod_logs)."""
    return ["nsenter", f"--mount=/proc/{pid}/ns/mnt", "--", *cmd]


def commands(state_dir: Path, binaries: dict[str, Path], certs: Path, pause_image: str) -> dict[str, list[str]]:
    """The node's processes, in start order (each run in the cluster's network namespace)."""
    kubelet = state_dir / "kubelet"
    kubeconfig = state_dir / "kubeconfig.node"
    admin = state_dir / "kubeconfig"  # https://127.0.0.1:PORT is the apiserver inside the namespace too
    return {
        "containerd": own_pod_logs(state_dir, ["containerd", "--config",
                                               str(write_containerd_config(state_dir, pause_image))]),
        "kubelet": [
            str(binaries["kubelet"]), f"--config={write_kubelet_config(state_dir, certs)}",
            f"--kubeconfig={kubeconfig}", "--container-runtime=remote",
            f"--container-runtime-endpoint=unix://{containerd_socket(state_dir)}", "--runtime-request-timeout=5m",
            f"--root-dir={kubelet / 'root'}", f"--cert-dir={kubelet / 'pki'}",
            f"--volume-plugin-dir={kubelet / 'plugins'}", f"--hostname-override={NODE_NAME}",
            f"--node-ip={NODE_IP}", f"--pod-infra-container-image={pause_image}", "--v=1",
        ],
        "kube-proxy": [
            str(binaries["kube-proxy"]), f"--kubeconfig={admin}", "--proxy-mode=iptables",
            f"--cluster-cidr={CLUSTER_CIDR}", f"--hostname-override={NODE_NAME}", f"--bind-address={NODE_IP}",
            "--masquerade-all", "--conntrack-max-per-core=0", "--conntrack-min=0",
            "--conntrack-tcp-timeout-established=0", "--conntrack-tcp-timeout-close-wait=0",
            "--metrics-bind-address=127.0.0.1:10249", "--healthz-bind-address=127.0.0.1:10256",
        ],
        "cluster-dns": [
            sys.executable, "-m", "mlops_operator.dev.clusterdns", f"--kubeconfig={admin}", f"--listen={NODE_IP}",
            f"--dir={state_dir / 'dns'}",
        ],
    }


# -- the sysctls kubelet writes at start


def save_sysctls(state_dir: Path) -> None:
    path = state_dir / "sysctls.json"
    if path.exists():
        return
    values = {}
    for key in KUBELET_SYSCTLS:
        with contextlib.suppress(OSError):
            values[key] = (Path("/proc/sys") / key).read_text().strip()
    path.write_text(json.dumps(values))


def restore_sysctls(state_dir: Path) -> None:
    path = state_dir / "sysctls.json"
    if not path.exists():
        return
    for key, value in json.loads(path.read_text()).items():
        with contextlib.suppress(OSError):
            (Path("/proc/sys") / key).write_text(value)
    path.unlink()


# -- what down removes


def cgroup_pids(state_dir: Path) -> set[int]:
    pids: set[int] = set()
    for hierarchy in _hierarchies():
        root = hierarchy / cgroup_name(state_dir)
        if not root.is_dir():
            continue
        for procs in root.rglob("cgroup.procs"):
            with contextlib.suppress(OSError):
                pids.update(int(p) for p in procs.read_text().split())
    return pids


def shim_pids(state_dir: Path) -> set[int]:
    """containerd-shim processes serving this cluster's containerd (they outlive it)."""
    needle = str(containerd_socket(state_dir)).encode()
    found = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdline = (proc / "cmdline").read_bytes()
            if b"containerd-shim" in cmdline and needle in cmdline:
                found.add(int(proc.name))
    return found


def pod_netns(pids: set[int]) -> list[Path]:
    """The `cni-*` network namespaces any of pids is in (the Pods' sandboxes)."""
    inodes = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            inodes.add(os.stat(f"/proc/{pid}/ns/net").st_ino)
    found = []
    if netns.RUN_NETNS.is_dir():
        for entry in netns.RUN_NETNS.glob("cni-*"):
            with contextlib.suppress(OSError):
                if entry.stat().st_ino in inodes:
                    found.append(entry)
    return found


def mounts_under(*roots: Path, pid: int | str = "self") -> list[str]:
    """Mount points under any of roots, deepest first, as process `pid` sees them (/proc/PID/mountinfo: the
    kubelet's volumes are in containerd's mount namespace, see own_pod_logs)."""
    prefixes = [str(r.resolve()) for r in roots]
    points = []
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
            point = line.split()[4].encode().decode("unicode_escape")
            if any(point == p or point.startswith(p + "/") for p in prefixes):
                points.append(point)
    return sorted(set(points), key=lambda p: (-p.count("/"), p))


def kill_all(pids: set[int], grace: float = 5) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            for pid in pids:
                with contextlib.suppress(ChildProcessError, OSError):
                    os.waitpid(pid, os.WNOHANG)
            if not any(Path(f"/proc/{pid}").exists() and not _zombie(pid) for pid in pids):
                return
            time.sleep(0.1)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


def teardown(state_dir: Path) -> list[str]:
    """Remove what the node leaves once its processes are stopped: containers, Pod namespaces, mounts,
    cgroups, the cluster's namespace, the sysctls. Returns what it could not remove (empty when clean)."""
    left: list[str] = []
    workloads = cgroup_pids(state_dir) | shim_pids(state_dir)
    sandboxes = pod_netns(workloads)
    kill_all(workloads)
    for entry in sandboxes:
        subprocess.run(["umount", "-l", str(entry)], capture_output=True)
        with contextlib.suppress(OSError):
            entry.unlink()
    for point in mounts_under(state_dir):
        subprocess.run(["umount", "-l", point], capture_output=True)
    for hierarchy in _hierarchies():
        root = hierarchy / cgroup_name(state_dir)
        if not root.is_dir():
            continue
        for d in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            with contextlib.suppress(OSError):
                d.rmdir()
        try:
            root.rmdir()
        except OSError as exc:
            left.append(f"cgroup {root}: {exc.strerror}")
    netns.delete(netns_name(state_dir))
    restore_sysctls(state_dir)
    left += [f"mount {p}" for p in mounts_under(state_dir)]
    if netns.exists(netns_name(state_dir)):
        left.append(f"network namespace {netns_name(state_dir)}")
    return left


def missing_tools() -> list[str]:
    return [tool for tool in ("containerd", "runc", "nsenter", "unshare", "findmnt", "ip", "iptables", "dnsmasq", "ctr")
            if shutil.which(tool) is None] + [p for p in ("/usr/lib/cni/bridge", "/usr/lib/cni/host-local")
                                              if not Path(p).exists()]
