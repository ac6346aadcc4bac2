"""One Pod on the local node: volumes, init containers, containers as processes, probes,
restarts with back-off, status written back as a kubelet would, deletion."""

from __future__ import annotations

import base64
import contextlib
import datetime
import json
import logging
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubernetes.client.rest import ApiException

if TYPE_CHECKING:
    from .localnode import LocalNode

log = logging.getLogger("mlops_operator.localnode")

# what the processes of every Pod need to see whatever is mounted where: this interpreter, its
# environment and the project
KEEP_VISIBLE = sorted({os.path.realpath(p) for p in (sys.prefix, sys.base_prefix,
                                                      str(Path(__file__).resolve().parents[2]))})
MAX_BACKOFF = 60.0
TERMINATION_MESSAGE_LIMIT = 4096
FALLBACK_LOG_LIMIT = 2048
WAITING = "ContainerCreating"


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Addresses:
    """Loopback pod IPs in 127.1.0.0/16, one per Pod, handed out round-robin."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._used: dict[str, str] = {}
        # start anywhere: a restarted node should not hand out the addresses whose sockets a
        # previous run left in TIME_WAIT
        self._next = random.randint(2, 60_000)

    def claim(self, uid: str, wanted: str | None = None) -> str:
        with self._lock:
            if uid in self._used:
                return self._used[uid]
            taken = set(self._used.values())
            if wanted and wanted.startswith("127.1.") and wanted not in taken:
                self._used[uid] = wanted
                return wanted
            for _ in range(65_000):
                n = self._next
                self._next = 2 if self._next >= 65_000 else self._next + 1
                ip = f"127.1.{n // 256}.{n % 256}"
                if n % 256 not in (0, 255) and ip not in taken:
                    self._used[uid] = ip
                    return ip
            raise RuntimeError("no free loopback pod address")

    def release(self, uid: str) -> None:
        with self._lock:
            self._used.pop(uid, None)




@dataclass
class Container:
    spec: dict[str, Any]
    init: bool = False
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    state: dict[str, Any] = field(default_factory=lambda: {"waiting": {"reason": WAITING}})
    last_state: dict[str, Any] = field(default_factory=dict)
    ready: bool = False
    started: bool = False
    started_mono: float = 0.0
    next_start: float = 0.0
    backoff: float = 0.0
    next_probe: dict[str, float] = field(default_factory=dict)
    probe_ok: dict[str, int] = field(default_factory=dict)
    probe_fail: dict[str, int] = field(default_factory=dict)
    done: bool = False  # terminated and will not restart

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    def status(self, image_id: str) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name, "image": self.spec.get("image", ""), "imageID": image_id,
            "ready": self.ready, "restartCount": self.restarts, "state": self.state,
            "lastState": self.last_state,
        }
        if not self.init:
            out["started"] = self.started
        if self.proc is not None:
            out["containerID"] = f"local://{self.proc.pid}"
        return out


class PodRunner(threading.Thread):
    """Runs one Pod: volumes, init containers, containers, probes, restarts, status, deletion."""

    def __init__(self, node: LocalNode, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        super().__init__(name=f"pod-{meta['namespace']}/{meta['name']}", daemon=True)
        self.node = node
        self.pod = pod
        self.uid: str = meta["uid"]
        self.ns: str = meta["namespace"]
        self.pod_name: str = meta["name"]
        self.dir = node.state_dir / "pods" / self.ns / self.pod_name / self.uid
        self.changed = threading.Event()
        self.gone = False  # the Pod object was deleted from the API
        self.ip = ""
        self.started_at = now()
        self.conditions: dict[str, dict[str, Any]] = {}
        self.phase = "Pending"
        self.reason: str | None = None
        self.message: str | None = None
        self.last_written: dict[str, Any] | None = None
        self.init_containers = [Container(c, init=True) for c in pod["spec"].get("initContainers") or []]
        self.containers = [Container(c) for c in pod["spec"]["containers"]]
        self.mounts: dict[str, Path] = {}

    # -- events from the node's watch
    def update(self, pod: dict[str, Any], gone: bool = False) -> None:
        self.pod = pod
        self.gone = self.gone or gone
        self.changed.set()

    @property
    def deleting(self) -> bool:
        return self.gone or bool(self.pod["metadata"].get("deletionTimestamp")) or self.node.stopping.is_set()

    def run(self) -> None:
        try:
            self._run()
        except Exception:
            log.exception("pod %s/%s: runner failed", self.ns, self.pod_name)
            self._kill_all(0)
        finally:
            if self.gone:
                self._kill_all(0)
            elif self.pod["metadata"].get("deletionTimestamp") and not self.node.stopping.is_set():
                self._kill_all(self._grace())
                self.node.finalize_deletion(self.pod)
            self.node.runner_done(self)

    # -- the life of a Pod
    def _run(self) -> None:
        status = self.pod.get("status") or {}
        self.ip = self.node.addresses.claim(self.uid, status.get("podIP"))
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "logs").mkdir(exist_ok=True)
        (self.dir / "termination").mkdir(exist_ok=True)
        self._condition("PodScheduled", "True")
        self._condition("Initialized", "False", "ContainersNotInitialized")
        self._condition("ContainersReady", "False", "ContainersNotReady")
        self._condition("Ready", "False", "ContainersNotReady")
        self._write()
        if not self._wait_for_volumes():
            return
        if not self._check_images():
            return
        for c in self.init_containers:
            if not self._run_init(c):
                return
        self._condition("Initialized", "True")
        self._main_loop()

    def _wait_for_volumes(self) -> bool:
        while not self.deleting:
            problem = self._prepare_volumes()
            if problem is None:
                return True
            for c in self.init_containers + self.containers:
                c.state = {"waiting": {"reason": WAITING, "message": problem}}
            self._write()
            self.changed.wait(2)
            self.changed.clear()
        return False

    def _prepare_volumes(self) -> str | None:
        """Make every volume a local directory; the reason it cannot be done yet, or None."""
        volumes = self.dir / "volumes"
        for vol in self.pod["spec"].get("volumes") or []:
            name = vol["name"]
            path = volumes / name
            if "emptyDir" in vol:
                path.mkdir(parents=True, exist_ok=True)
            elif "configMap" in vol or "secret" in vol:
                problem = self._project_keys(vol, path)
                if problem:
                    return problem
            elif "persistentVolumeClaim" in vol:
                claim = vol["persistentVolumeClaim"]["claimName"]
                found = self.node.claim_path(self.ns, claim)
                if found is None:
                    return f"persistentVolumeClaim {claim} is not bound yet"
                path = found
            elif "downwardAPI" in vol:
                path.mkdir(parents=True, exist_ok=True)
                for item in vol["downwardAPI"].get("items") or []:
                    value = self._field(item.get("fieldRef", {}).get("fieldPath", ""))
                    (path / item["path"]).write_text(value)
            else:
                kind = next((k for k in vol if k != "name"), "unknown")
                return f"volume {name}: type {kind} is not supported by the local node"
            self.mounts[name] = path
        return None

    def _project_keys(self, vol: dict[str, Any], path: Path) -> str | None:
        is_secret = "secret" in vol
        src = vol["secret"] if is_secret else vol["configMap"]
        ref = src.get("secretName") if is_secret else src.get("name")
        try:
            if is_secret:
                obj = self.node.core.read_namespaced_secret(ref, self.ns)
                data = {k: base64.b64decode(v) for k, v in (obj.data or {}).items()}
            else:
                obj = self.node.core.read_namespaced_config_map(ref, self.ns)
                data = {k: v.encode() for k, v in (obj.data or {}).items()}
                data.update({k: base64.b64decode(v) for k, v in (obj.binary_data or {}).items()})
        except ApiException as exc:
            if exc.status == 404:
                if src.get("optional"):
                    path.mkdir(parents=True, exist_ok=True)
                    return None
                return f"{'secret' if is_secret else 'configmap'} {ref} not found"
            raise
        path.mkdir(parents=True, exist_ok=True)
        items = src.get("items")
        for key, value in data.items():
            targets = [i["path"] for i in items if i["key"] == key] if items else [key]
            for rel in targets:
                target = path / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(value)
                target.chmod(0o644 if not is_secret else 0o640)
        return None

    def _check_images(self) -> bool:
        """Every container's image must map to a local command; otherwise wait, saying why."""
        while not self.deleting:
            missing = [c for c in self.init_containers + self.containers
                       if self.node.images.argv(c.spec.get("image", ""), c.spec.get("command"), c.spec.get("args"))
                       is None]
            if not missing:
                return True
            for c in missing:
                c.state = {"waiting": {"reason": "ImageNotRunnableLocally",
                                       "message": self.node.images.explain(c.spec.get("image", ""))}}
            self._write()
            # the mapping file may be edited meanwhile: look again now and then
            self.changed.wait(5)
            self.changed.clear()
        return False

    def _run_init(self, c: Container) -> bool:
        policy = self.pod["spec"].get("restartPolicy", "Always")
        while not self.deleting:
            if time.monotonic() < c.next_start:
                self._sleep(c.next_start - time.monotonic())
                continue
            self._start(c)
            self._write()
            while c.proc is not None and c.proc.poll() is None and not self.deleting:
                self._sleep(0.2)
            if self.deleting:
                return False
            code = self._reap(c)
            self._write()
            if code == 0:
                return True
            if policy == "Never":
                self._finish("Failed", "Init container failed")
                return False
            self._back_off(c)
        return False

    def _main_loop(self) -> None:
        policy = self.pod["spec"].get("restartPolicy", "Always")
        deadline = self.pod["spec"].get("activeDeadlineSeconds")
        started = time.monotonic()
        while not self.deleting:
            now_m = time.monotonic()
            if deadline and now_m - started > deadline:
                self._kill_all(0)
                self._finish("Failed", "DeadlineExceeded",
                             f"Pod was active on the node longer than the specified deadline ({deadline}s)")
                return
            for c in self.containers:
                if c.done:
                    continue
                if c.proc is None:
                    if now_m >= c.next_start:
                        self._start(c)
                    continue
                code = c.proc.poll()
                if code is not None:
                    self._reap(c)
                    restart = policy == "Always" or (policy == "OnFailure" and code != 0)
                    if restart:
                        self._back_off(c)
                    else:
                        c.done = True
                    continue
                self._probe(c, now_m)
            self._update_phase(policy)
            self._write()
            if self.phase in ("Succeeded", "Failed"):
                return
            self._sleep(0.2)

    # -- processes
    def _env(self, c: Container) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "HOME": str(self.dir / "home"),
            "HOSTNAME": self.pod_name,
            "LANG": "C.UTF-8",
        }
        (self.dir / "home").mkdir(exist_ok=True)
        for src in c.spec.get("envFrom") or []:
            prefix = src.get("prefix", "")
            if "configMapRef" in src:
                with contextlib.suppress(ApiException):
                    cm = self.node.core.read_namespaced_config_map(src["configMapRef"]["name"], self.ns)
                    env.update({prefix + k: v for k, v in (cm.data or {}).items()})
            if "secretRef" in src:
                with contextlib.suppress(ApiException):
                    sec = self.node.core.read_namespaced_secret(src["secretRef"]["name"], self.ns)
                    env.update({prefix + k: base64.b64decode(v).decode() for k, v in (sec.data or {}).items()})
        for var in c.spec.get("env") or []:
            if "valueFrom" in var:
                env[var["name"]] = self._value_from(var["valueFrom"])
            else:
                env[var["name"]] = expand(var.get("value", ""), env)
        return env

    def _value_from(self, src: dict[str, Any]) -> str:
        if "fieldRef" in src:
            return self._field(src["fieldRef"]["fieldPath"])
        try:
            if "configMapKeyRef" in src:
                ref = src["configMapKeyRef"]
                cm = self.node.core.read_namespaced_config_map(ref["name"], self.ns)
                return str((cm.data or {}).get(ref["key"], ""))
            if "secretKeyRef" in src:
                ref = src["secretKeyRef"]
                sec = self.node.core.read_namespaced_secret(ref["name"], self.ns)
                return base64.b64decode((sec.data or {}).get(ref["key"], "")).decode()
        except ApiException:
            return ""
        return ""

    def _field(self, path: str) -> str:
        meta = self.pod["metadata"]
        simple: dict[str, str] = {
            "metadata.name": self.pod_name, "metadata.namespace": self.ns, "metadata.uid": self.uid,
            "status.podIP": self.ip, "status.hostIP": "127.0.0.1", "spec.nodeName": self.node.name,
            "spec.serviceAccountName": self.pod["spec"].get("serviceAccountName", "default"),
        }
        if path in simple:
            return simple[path]
        match = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
        if match:
            return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
        if path in ("metadata.labels", "metadata.annotations"):
            items = meta.get(path.split(".")[1]) or {}
            return "\n".join(f'{k}="{v}"' for k, v in sorted(items.items()))
        return ""

    def _security(self, c: Container) -> dict[str, Any]:
        pod_sc = self.pod["spec"].get("securityContext") or {}
        sc = c.spec.get("securityContext") or {}
        return {
            "runAsUser": sc.get("runAsUser", pod_sc.get("runAsUser")),
            "runAsGroup": sc.get("runAsGroup", pod_sc.get("runAsGroup", pod_sc.get("fsGroup"))),
            "readOnlyRootFilesystem": bool(sc.get("readOnlyRootFilesystem")),
        }

    def _start(self, c: Container) -> None:
        env = self._env(c)
        command = [expand(a, env) for a in c.spec.get("command") or []]
        args = [expand(a, env) for a in c.spec.get("args") or []]
        argv = self.node.images.argv(c.spec.get("image", ""), command or None, args)
        assert argv is not None  # checked before any container starts
        term = self.dir / "termination" / c.name
        term.write_bytes(b"")
        mounts = [[str(term), c.spec.get("terminationMessagePath", "/dev/termination-log"), False]]
        for m in c.spec.get("volumeMounts") or []:
            src = self.mounts.get(m["name"])
            if src is None:
                continue
            if m.get("subPath"):
                src = src / m["subPath"]
                src.mkdir(parents=True, exist_ok=True)
            mounts.append([str(src), m["mountPath"], bool(m.get("readOnly"))])
        security = self._security(c)
        if security["runAsUser"] is not None and os.geteuid() == 0:
            uid, gid = security["runAsUser"], security["runAsGroup"] or 0
            for path in [self.dir / "home", term, *(Path(m[0]) for m in mounts[1:])]:
                with contextlib.suppress(OSError):
                    os.chown(path, uid, gid)
                    if path.is_dir():
                        for sub in path.rglob("*"):
                            os.chown(sub, uid, gid)
        spec = {"mounts": mounts, "argv": argv, "env": env, "cwd": c.spec.get("workingDir"), **security,
                "keep": KEEP_VISIBLE}
        spec_path = self.dir / f"{c.name}.exec.json"
        spec_path.write_text(json.dumps(spec))
        log_path = self.dir / "logs" / f"{c.name}.log"
        if c.restarts and log_path.exists():
            log_path.replace(self.dir / "logs" / f"{c.name}.previous.log")
        unshare = ["unshare", "--mount", "--propagation", "private"]
        if os.geteuid() != 0:
            unshare.insert(1, "--map-root-user")
        with log_path.open("ab") as out:
            c.proc = subprocess.Popen(
                [*unshare, sys.executable, "-m", "mlops_operator.dev.podexec", str(spec_path)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )
        c.started_mono = time.monotonic()
        c.state = {"running": {"startedAt": now()}}
        c.next_probe = {}
        c.probe_ok, c.probe_fail = {}, {}
        c.ready = not c.init and "readinessProbe" not in c.spec
        c.started = "startupProbe" not in c.spec

    def _reap(self, c: Container) -> int:
        assert c.proc is not None
        code = c.proc.wait()
        if code < 0:
            code = 128 - code  # killed by a signal: what a runtime reports (137 for SIGKILL)
        message = self._termination_message(c, code)
        c.state = {"terminated": {
            "exitCode": code, "reason": "Completed" if code == 0 else "Error",
            "startedAt": c.state.get("running", {}).get("startedAt", now()), "finishedAt": now(),
            "containerID": f"local://{c.proc.pid}",
            **({"message": message} if message else {}),
        }}
        c.proc = None
        c.ready = False
        return code

    def _termination_message(self, c: Container, code: int) -> str:
        raw = (self.dir / "termination" / c.name).read_bytes()[:TERMINATION_MESSAGE_LIMIT]
        message: str = raw.decode(errors="replace")
        if not message and code != 0 and c.spec.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            tail = (self.dir / "logs" / f"{c.name}.log").read_bytes()[-FALLBACK_LOG_LIMIT:]
            message = tail.decode(errors="replace")
        return message

    def _back_off(self, c: Container) -> None:
        c.last_state = c.state
        c.restarts += 1
        c.backoff = min(MAX_BACKOFF, c.backoff * 2 if c.backoff else 1.0)
        c.next_start = time.monotonic() + c.backoff
        c.state = {"waiting": {"reason": "CrashLoopBackOff",
                               "message": f"back-off {c.backoff:.0f}s restarting failed container {c.name}"}}

    def _kill_all(self, grace: float) -> None:
        procs = [c.proc for c in self.init_containers + self.containers if c.proc is not None]
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for p in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(max(0.0, deadline - time.monotonic()))
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(5)

    def _grace(self) -> float:
        meta = self.pod["metadata"]
        grace = meta.get("deletionGracePeriodSeconds")
        if grace is None:
            grace = self.pod["spec"].get("terminationGracePeriodSeconds", 30)
        return float(grace)

    # -- probes
    def _probe(self, c: Container, now_m: float) -> None:
        for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            probe = c.spec.get(kind)
            if not probe:
                continue
            if kind != "startupProbe" and not c.started:
                continue
            if kind == "startupProbe" and c.started:
                continue
            due = c.next_probe.get(kind, c.started_mono + probe.get("initialDelaySeconds", 0))
            if now_m < due:
                continue
            c.next_probe[kind] = now_m + probe.get("periodSeconds", 10)
            ok = self._probe_once(c, probe)
            if ok:
                c.probe_ok[kind] = c.probe_ok.get(kind, 0) + 1
                c.probe_fail[kind] = 0
            else:
                c.probe_fail[kind] = c.probe_fail.get(kind, 0) + 1
                c.probe_ok[kind] = 0
            if kind == "readinessProbe":
                if ok and c.probe_ok[kind] >= probe.get("successThreshold", 1):
                    c.ready = True
                elif not ok and c.probe_fail[kind] >= probe.get("failureThreshold", 3):
                    c.ready = False
            elif ok and kind == "startupProbe":
                c.started = True
            elif not ok and c.probe_fail[kind] >= probe.get("failureThreshold", 3):
                log.info("pod %s/%s container %s failed its %s: restarting", self.ns, self.pod_name, c.name, kind)
                assert c.proc is not None
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(c.proc.pid, signal.SIGKILL)

    def _probe_once(self, c: Container, probe: dict[str, Any]) -> bool:
        timeout = float(probe.get("timeoutSeconds", 1))
        if "httpGet" in probe:
            get = probe["httpGet"]
            port = self._port(c, get["port"])
            host = get.get("host") or self.ip
            url = f"{get.get('scheme', 'HTTP').lower()}://{host}:{port}{get.get('path', '/')}"
            headers = {h["name"]: h["value"] for h in get.get("httpHeaders") or []}
            try:
                with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as r:
                    return 200 <= int(r.status) < 400
            except urllib.error.HTTPError as exc:
                return 200 <= exc.code < 400
            except (OSError, urllib.error.URLError):
                return False
        if "tcpSocket" in probe:
            port = self._port(c, probe["tcpSocket"]["port"])
            try:
                with socket.create_connection((probe["tcpSocket"].get("host") or self.ip, port), timeout):
                    return True
            except OSError:
                return False
        if "exec" in probe:
            argv = self.node.images.argv(c.spec.get("image", ""), probe["exec"]["command"], [])
            if argv is None:
                return False
            try:
                return subprocess.run(argv, capture_output=True, timeout=timeout, env=self._env(c)).returncode == 0
            except (OSError, subprocess.TimeoutExpired):
                return False
        return True

    @staticmethod
    def _port(c: Container, port: int | str) -> int:
        if isinstance(port, int) or str(port).isdigit():
            return int(port)
        for p in c.spec.get("ports") or []:
            if p.get("name") == port:
                return int(p["containerPort"])
        raise ValueError(f"container {c.name} has no port named {port}")

    # -- status
    def _condition(self, type_: str, status: str, reason: str | None = None) -> None:
        old = self.conditions.get(type_)
        if old and old["status"] == status:
            return
        cond = {"type": type_, "status": status, "lastProbeTime": None, "lastTransitionTime": now()}
        if reason:
            cond["reason"] = reason
        self.conditions[type_] = cond

    def _update_phase(self, policy: str) -> None:
        running = any(c.proc is not None for c in self.containers)
        terminated = [c.state.get("terminated") for c in self.containers]
        if all(c.done for c in self.containers):
            failed = any(t and t["exitCode"] != 0 for t in terminated)
            self._finish("Failed" if failed else "Succeeded")
            return
        if running or any(c.restarts for c in self.containers):
            self.phase = "Running"
        ready = all(c.ready for c in self.containers)
        self._condition("ContainersReady", "True" if ready else "False", None if ready else "ContainersNotReady")
        self._condition("Ready", "True" if ready else "False", None if ready else "ContainersNotReady")

    def _finish(self, phase: str, reason: str | None = None, message: str | None = None) -> None:
        self.phase, self.reason, self.message = phase, reason, message
        for c in self.containers:
            c.ready = False
        self._condition("ContainersReady", "False", "PodCompleted")
        self._condition("Ready", "False", "PodCompleted")
        self._write()

    def _write(self) -> None:
        image_id = "local://"
        status: dict[str, Any] = {
            "phase": self.phase,
            "hostIP": "127.0.0.1",
            "podIP": self.ip,
            "podIPs": [{"ip": self.ip}],
            "startTime": self.started_at,
            "conditions": list(self.conditions.values()),
            "containerStatuses": [c.status(image_id + c.spec.get("image", "")) for c in self.containers],
        }
        if self.init_containers:
            status["initContainerStatuses"] = [c.status(image_id + c.spec.get("image", ""))
                                               for c in self.init_containers]
        if self.reason:
            status["reason"] = self.reason
        if self.message:
            status["message"] = self.message
        if status == self.last_written:
            return
        try:
            self.node.core.patch_namespaced_pod_status(self.pod_name, self.ns, {"status": status})
            self.last_written = status
        except ApiException as exc:
            if exc.status != 404:
                log.warning("pod %s/%s: status update failed: %s", self.ns, self.pod_name, exc.reason)

    def _sleep(self, seconds: float) -> None:
        if self.changed.wait(max(0.0, seconds)):
            self.changed.clear()


_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: known variables replaced, $$ escapes, unknown ones kept."""
    return _VAR.sub(lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), value)


def container_log(state_dir: Path, namespace: str, pod: str, container: str | None = None,
                  previous: bool = False) -> str:
    """The log of a container of a Pod that ran on the local node (its newest incarnation)."""
    pod_dir = state_dir / "node" / "pods" / namespace / pod
    runs = sorted(pod_dir.glob("*/logs"), key=lambda p: p.stat().st_mtime) if pod_dir.exists() else []
    if not runs:
        raise LookupError(f"no Pod {namespace}/{pod} has run on the local node of {state_dir}")
    logs = runs[-1]
    names = sorted({p.name.split(".")[0] for p in logs.glob("*.log")})
    name = container or (names[0] if names else "")
    if name not in names:
        raise LookupError(f"Pod {namespace}/{pod} has no container {name!r} with a log (it has: {', '.join(names)})")
    path = logs / (f"{name}.previous.log" if previous else f"{name}.log")
    if not path.exists():
        raise LookupError(f"container {name} of Pod {namespace}/{pod} has no previous run")
    return path.read_text(errors="replace")
