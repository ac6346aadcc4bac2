"""A local node for the dev control plane: Pods bound to it run as local processes.

Like a kubelet, only without containers: it registers a Node (Ready, capacity, a heartbeat Lease
in kube-node-lease) so the real scheduler binds Pods to it, and runs each Pod's init containers
then containers as processes, each in a private mount namespace (`unshare -m`) where the Pod's
volumes (emptyDir, ConfigMap, Secret, PVC) and its termination-message file are bind-mounted at
their mount paths. Every Pod gets its own loopback address (127.1.x.y) as its pod IP, so servers
of different Pods can listen on the same port. Container states, exit codes, restart counts,
termination messages, readiness and liveness (HTTP, TCP and exec probes) go to Pod status;
restartPolicy is honoured with back-off; deletion stops the processes (SIGTERM, then SIGKILL
after the grace period). PVCs are bound by a small provisioner of its own (a directory per claim).

Images: the node runs only what it can map to a local command. The project's runtime image maps
to the installed `mlops` entry point, `python` images to this interpreter; users add their own
(image glob → command prefix) in `<state>/images.yaml` or the file named by MLOPS_LOCAL_IMAGES.
Any other image waits with reason `ImageNotRunnableLocally`, saying which mapping would fix it.

Run as `python -m mlops_operator.dev.localnode --kubeconfig K --state-dir D` (what `mlops dev up`
and the test fixtures do).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import logging
import os
import shutil
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from .images import ImageMap
from .pods import Addresses, PodRunner, container_log, now

__all__ = ["LocalNode", "container_log", "main"]

log = logging.getLogger("mlops_operator.localnode")

NODE_NAME = "mlops-local"
STORAGE_CLASS = "local"
PROVISIONER = "mlops.dev/local-node"
HEARTBEAT_SECONDS = 10
LEASE_SECONDS = 40


def micro_now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LocalNode:
    def __init__(self, kubeconfig: str, state_dir: Path, name: str = NODE_NAME,
                 image_map: Path | None = None) -> None:
        self.name = name
        self.state_dir = state_dir / "node"
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.api = config.new_client_from_config(config_file=kubeconfig)
        self.core = client.CoreV1Api(self.api)
        self.coordination = client.CoordinationV1Api(self.api)
        self.storage = client.StorageV1Api(self.api)
        env_map = os.environ.get("MLOPS_LOCAL_IMAGES")
        self.images = ImageMap(image_map or (Path(env_map) if env_map else state_dir / "images.yaml"))
        self.addresses = Addresses()
        self.stopping = threading.Event()
        self.runners: dict[str, PodRunner] = {}
        self.finished: set[str] = set()
        self._transitions: dict[str, str] = {}
        self._lock = threading.Lock()

    # -- registration and heartbeat
    def register(self) -> None:
        labels = {"kubernetes.io/hostname": self.name, "kubernetes.io/os": "linux",
                  "kubernetes.io/arch": {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, "amd64"),
                  "node.kubernetes.io/instance-type": "mlops-local"}
        try:
            self.core.create_node({"metadata": {"name": self.name, "labels": labels}})
        except ApiException as exc:
            if exc.status != 409:
                raise
        self._heartbeat()
        try:
            self.storage.create_storage_class({
                "metadata": {"name": STORAGE_CLASS,
                             "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
                "provisioner": PROVISIONER, "reclaimPolicy": "Delete", "volumeBindingMode": "Immediate",
            })
        except ApiException as exc:
            if exc.status != 409:
                raise

    def _node_status(self) -> dict[str, Any]:
        cpu = os.cpu_count() or 2
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        # a dev node over-commits CPU (Pods here mostly wait on I/O); memory is the machine's
        capacity = {"cpu": str(cpu * 4), "memory": f"{memory // 1024}Ki", "pods": "250",
                    "ephemeral-storage": f"{shutil.disk_usage(self.state_dir).total // 1024}Ki"}
        stamp = now()
        conditions = [
            ("MemoryPressure", "False", "KubeletHasSufficientMemory"),
            ("DiskPressure", "False", "KubeletHasNoDiskPressure"),
            ("PIDPressure", "False", "KubeletHasSufficientPID"),
            ("Ready", "True", "KubeletReady"),
        ]
        return {
            "capacity": capacity, "allocatable": capacity,
            "conditions": [{"type": t, "status": s, "reason": r, "message": "mlops local node",
                            "lastHeartbeatTime": stamp, "lastTransitionTime": self._since(t, stamp)}
                           for t, s, r in conditions],
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": self.name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
            "nodeInfo": {"machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": os.uname().release,
                         "osImage": "mlops local node", "containerRuntimeVersion": "local://processes",
                         "kubeletVersion": "v1.20.2", "kubeProxyVersion": "v1.20.2",
                         "operatingSystem": "linux", "architecture": "amd64"},
        }

    def _since(self, type_: str, stamp: str) -> str:
        return self._transitions.setdefault(type_, stamp)

    def _heartbeat(self) -> None:
        self.core.patch_node_status(self.name, {"status": self._node_status()})
        lease = {"metadata": {"name": self.name, "namespace": "kube-node-lease"},
                 "spec": {"holderIdentity": self.name, "leaseDurationSeconds": LEASE_SECONDS,
                          "renewTime": micro_now()}}
        try:
            self.coordination.patch_namespaced_lease(self.name, "kube-node-lease", {"spec": lease["spec"]})
        except ApiException as exc:
            if exc.status != 404:
                raise
            self.coordination.create_namespaced_lease("kube-node-lease", lease)

    def _heartbeat_loop(self) -> None:
        while not self.stopping.wait(HEARTBEAT_SECONDS):
            try:
                self._heartbeat()
            except Exception as exc:  # the apiserver may be restarting: try again next beat
                log.warning("heartbeat failed: %s", exc)

    # -- pods
    def _watch_pods(self) -> None:
        selector = f"spec.nodeName={self.name}"
        version = ""
        while not self.stopping.is_set():
            try:
                if not version:
                    pods = self.api.sanitize_for_serialization(
                        self.core.list_pod_for_all_namespaces(field_selector=selector))
                    version = pods["metadata"]["resourceVersion"]
                    for pod in pods["items"]:
                        self._on_pod("ADDED", pod)
                stream = watch.Watch().stream(self.core.list_pod_for_all_namespaces, field_selector=selector,
                                              resource_version=version, timeout_seconds=30,
                                              _request_timeout=40)
                for event in stream:
                    if self.stopping.is_set():
                        break
                    pod = self.api.sanitize_for_serialization(event["object"])
                    if event["type"] == "ERROR":
                        version = ""
                        break
                    version = pod["metadata"].get("resourceVersion", version)
                    self._on_pod(event["type"], pod)
            except ApiException as exc:
                if exc.status == 410:
                    version = ""
                else:
                    log.warning("pod watch: %s", exc.reason)
                    self.stopping.wait(1)
            except Exception as exc:  # connection dropped (apiserver restart): watch again
                log.warning("pod watch: %s", exc)
                self.stopping.wait(1)

    def _on_pod(self, kind: str, pod: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]
        with self._lock:
            runner = self.runners.get(uid)
            if kind == "DELETED":
                if runner is not None:
                    runner.update(pod, gone=True)
                self.finished.discard(uid)
                self.addresses.release(uid)
                shutil.rmtree(self.state_dir / "pods" / pod["metadata"]["namespace"] / pod["metadata"]["name"] / uid,
                              ignore_errors=True)
                return
            if runner is not None:
                runner.update(pod)
                return
            terminal = (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")
            if pod["metadata"].get("deletionTimestamp"):
                threading.Thread(target=self.finalize_deletion, args=(pod,), daemon=True).start()
                return
            if terminal or uid in self.finished:
                return
            runner = PodRunner(self, pod)
            self.runners[uid] = runner
        runner.start()

    def runner_done(self, runner: PodRunner) -> None:
        with self._lock:
            self.runners.pop(runner.uid, None)
            self.finished.add(runner.uid)

    def finalize_deletion(self, pod: dict[str, Any]) -> None:
        """What a kubelet does once a Pod's processes are gone: delete it for good."""
        meta = pod["metadata"]
        with contextlib.suppress(ApiException):
            # the grace period goes in the body: a body without it overrides the query parameter
            self.core.delete_namespaced_pod(meta["name"], meta["namespace"],
                                            body={"gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}})

    # -- PVCs: a directory per claim, a matching PV
    def claim_path(self, namespace: str, claim: str) -> Path | None:
        try:
            pvc = self.core.read_namespaced_persistent_volume_claim(claim, namespace)
        except ApiException:
            return None
        if pvc.status.phase != "Bound" or not pvc.spec.volume_name:
            return None
        pv = self.core.read_persistent_volume(pvc.spec.volume_name)
        if pv.spec.host_path is None:
            return None
        path = Path(pv.spec.host_path.path)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _provision_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                self._provision_once()
            except Exception as exc:  # the apiserver may be restarting: try again shortly
                log.warning("provisioner: %s", exc)
            self.stopping.wait(1)

    def _provision_once(self) -> None:
        for pvc in self.core.list_persistent_volume_claim_for_all_namespaces().items:
            if pvc.spec.volume_name or pvc.spec.storage_class_name != STORAGE_CLASS or pvc.metadata.deletion_timestamp:
                continue
            name = f"pvc-{pvc.metadata.uid}"
            path = self.state_dir / "volumes" / name
            path.mkdir(parents=True, exist_ok=True)
            size = ((pvc.spec.resources.requests or {}) if pvc.spec.resources else {}).get("storage", "1Gi")
            try:
                self.core.create_persistent_volume({
                    "metadata": {"name": name, "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER}},
                    "spec": {
                        "capacity": {"storage": size}, "accessModes": pvc.spec.access_modes or ["ReadWriteOnce"],
                        "persistentVolumeReclaimPolicy": "Delete", "storageClassName": STORAGE_CLASS,
                        "hostPath": {"path": str(path), "type": "DirectoryOrCreate"},
                        "claimRef": {"namespace": pvc.metadata.namespace, "name": pvc.metadata.name,
                                     "uid": pvc.metadata.uid},
                    },
                })
            except ApiException as exc:
                if exc.status != 409:
                    raise
        for pv in self.core.list_persistent_volume().items:
            annotations = pv.metadata.annotations or {}
            if annotations.get("pv.kubernetes.io/provisioned-by") == PROVISIONER and pv.status.phase == "Released":
                with contextlib.suppress(ApiException):
                    self.core.delete_persistent_volume(pv.metadata.name)
                shutil.rmtree(self.state_dir / "volumes" / pv.metadata.name, ignore_errors=True)

    # -- lifecycle
    def run(self) -> None:
        self.register()
        threads = [threading.Thread(target=t, daemon=True, name=t.__name__)
                   for t in (self._heartbeat_loop, self._watch_pods, self._provision_loop)]
        for t in threads:
            t.start()
        self.stopping.wait()
        self.shutdown()

    def shutdown(self) -> None:
        self.stopping.set()
        with self._lock:
            runners = list(self.runners.values())
        for r in runners:
            r.changed.set()
        stoppers = [threading.Thread(target=r._kill_all, args=(5,)) for r in runners]
        for t in stoppers:
            t.start()
        for t in stoppers:
            t.join(15)
        with contextlib.suppress(ApiException):
            self.coordination.delete_namespaced_lease(self.name, "kube-node-lease")
        with contextlib.suppress(ApiException):
            self.core.delete_node(self.name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the mlops local node")
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--state-dir", required=True, type=Path)
    parser.add_argument("--name", default=NODE_NAME)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(threadName)s %(message)s")
    node = LocalNode(args.kubeconfig, args.state_dir, args.name)
    signal.signal(signal.SIGTERM, lambda *_: node.stopping.set())
    signal.signal(signal.SIGINT, lambda *_: node.stopping.set())
    node.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
