"""The local node against the real control plane: the real scheduler binds Pods to it, the real
Job and Deployment controllers drive them, and the Pods run as local processes."""

from __future__ import annotations

import os
import sys
import textwrap
import urllib.request
from typing import Any

import pytest

from mlops_operator.dev.controlplane import ControlPlane, _pid_alive
from mlops_operator.dev.localnode import container_log

from .conftest import Cluster, wait_for

PY = "python:3.11"
POD_IP_ENV = [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]


def script(code: str) -> list[str]:
    return ["python", "-c", textwrap.dedent(code)]


def job(name: str, command: list[str], backoff: int = 0, **pod: Any) -> dict[str, Any]:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"backoffLimit": backoff, "template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "main", "image": PY, "command": command, "env": POD_IP_ENV}],
                **pod}}}}


def job_condition(cluster: Cluster, ns: str, name: str, type_: str) -> Any:
    status = cluster.batch.read_namespaced_job(name, ns).status
    return next((c for c in status.conditions or [] if c.type == type_ and c.status == "True"), None)


def pods(cluster: Cluster, ns: str, selector: str = "") -> list[Any]:
    return cluster.core.list_namespaced_pod(ns, label_selector=selector).items


def container_pid(pod: Any) -> int:
    cid = pod.status.container_statuses[0].container_id
    return int(cid.removeprefix("local://"))


def test_job_runs_a_python_command_with_downward_api_and_termination_message(cluster: Cluster, namespace: str) -> None:
    cluster.batch.create_namespaced_job(namespace, job("hello", script("""
        import os, socket
        ip = os.environ["POD_IP"]
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((ip, 8080))  # the downward-API address is the Pod's own
        open("/dev/termination-log", "w").write(f"bound {ip}:8080 in {os.environ['HOSTNAME']}")
        print("done")
    """)))
    wait_for(lambda: job_condition(cluster, namespace, "hello", "Complete"), 60, "Job hello Complete",
             show=lambda: cluster.batch.read_namespaced_job("hello", namespace).to_dict())
    (pod,) = pods(cluster, namespace, "job-name=hello")
    assert pod.status.phase == "Succeeded" and pod.spec.node_name == "mlops-local"
    assert pod.status.pod_ip.startswith("127.1.")
    terminated = pod.status.container_statuses[0].state.terminated
    assert terminated.exit_code == 0
    assert terminated.message == f"bound {pod.status.pod_ip}:8080 in {pod.metadata.name}"


def test_failing_job_is_retried_per_backoff_limit_then_fails(cluster: Cluster, namespace: str) -> None:
    cluster.batch.create_namespaced_job(namespace, job("fails", script("import sys; sys.exit(3)"), backoff=1))
    failed = wait_for(lambda: job_condition(cluster, namespace, "fails", "Failed"), 120, "Job fails Failed",
                      show=lambda: cluster.batch.read_namespaced_job("fails", namespace).to_dict())
    assert failed.reason == "BackoffLimitExceeded"
    runs = pods(cluster, namespace, "job-name=fails")
    assert len(runs) == 2  # the first attempt and one retry
    assert all(p.status.phase == "Failed" for p in runs)
    assert all(p.status.container_statuses[0].state.terminated.exit_code == 3 for p in runs)


def test_termination_message_falls_back_to_the_log_on_error(cluster: Cluster, namespace: str) -> None:
    spec = job("crash", script("import sys; print('the reason it failed'); sys.exit(2)"))
    spec["spec"]["template"]["spec"]["containers"][0]["terminationMessagePolicy"] = "FallbackToLogsOnError"
    cluster.batch.create_namespaced_job(namespace, spec)
    wait_for(lambda: job_condition(cluster, namespace, "crash", "Failed"), 60, "Job crash Failed")
    (pod,) = pods(cluster, namespace, "job-name=crash")
    assert "the reason it failed" in pod.status.container_statuses[0].state.terminated.message


def web_deployment(name: str, replicas: int) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name}, "spec": {
        "replicas": replicas, "selector": {"matchLabels": {"app": name}},
        "strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
        "template": {"metadata": {"labels": {"app": name}}, "spec": {
            "terminationGracePeriodSeconds": 5,
            "containers": [{
                "name": "web", "image": PY, "env": [*POD_IP_ENV, {"name": "VERSION", "value": "1"}],
                "command": ["python", "-m", "http.server", "8080", "--bind", "$(POD_IP)"],
                "ports": [{"name": "http", "containerPort": 8080}],
                "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1},
            }]}}}}


def ready_pods(cluster: Cluster, ns: str, app: str) -> list[Any]:
    return [p for p in pods(cluster, ns, f"app={app}") if not p.metadata.deletion_timestamp
            and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])]


def available(cluster: Cluster, ns: str, name: str, replicas: int) -> bool:
    d = cluster.apps.read_namespaced_deployment(name, ns)
    conds = {c.type: c.status for c in d.status.conditions or []}
    return (conds.get("Available") == "True" and d.status.available_replicas == replicas
            and d.status.updated_replicas == replicas and (d.status.replicas or 0) == replicas)


def test_deployment_becomes_available_scales_and_rolls(cluster: Cluster, namespace: str) -> None:
    ns = namespace
    cluster.apps.create_namespaced_deployment(ns, web_deployment("web", 2))
    show = lambda: cluster.apps.read_namespaced_deployment("web", ns).to_dict()  # noqa: E731
    wait_for(lambda: available(cluster, ns, "web", 2), 60, "web available with 2 replicas", show=show)
    two = ready_pods(cluster, ns, "web")
    ips = {p.status.pod_ip for p in two}
    assert len(ips) == 2  # two servers on the same port, each on its own loopback address
    for ip in ips:
        with urllib.request.urlopen(f"http://{ip}:8080/", timeout=5) as resp:
            assert resp.status == 200

    cluster.apps.patch_namespaced_deployment_scale("web", ns, {"spec": {"replicas": 3}})
    wait_for(lambda: available(cluster, ns, "web", 3), 60, "scaled up to 3", show=show)
    cluster.apps.patch_namespaced_deployment_scale("web", ns, {"spec": {"replicas": 1}})
    wait_for(lambda: available(cluster, ns, "web", 1) and len(pods(cluster, ns, "app=web")) == 1, 60,
             "scaled down to 1", show=show)
    (survivor,) = pods(cluster, ns, "app=web")
    gone = [p for p in [*two, survivor] if p.metadata.name != survivor.metadata.name]
    assert not any(_pid_alive(container_pid(p)) for p in gone if p.status.container_statuses)

    old_hash = survivor.metadata.labels["pod-template-hash"]
    cluster.apps.patch_namespaced_deployment("web", ns, {"spec": {"template": {"spec": {"containers": [
        {"name": "web", "env": [*POD_IP_ENV, {"name": "VERSION", "value": "2"}]}]}}}})

    def rolled() -> bool:
        current = pods(cluster, ns, "app=web")
        return (available(cluster, ns, "web", 1) and len(current) == 1
                and current[0].metadata.labels["pod-template-hash"] != old_hash)

    wait_for(rolled, 90, "the rolling update to replace the Pod", show=show)
    assert not _pid_alive(container_pid(survivor))


def test_liveness_failure_restarts_the_container(cluster: Cluster, namespace: str) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "sick"}, "spec": {"containers": [{
        "name": "main", "image": PY, "command": ["python", "-c", "import time; time.sleep(3600)"],
        "livenessProbe": {"tcpSocket": {"port": 9}, "periodSeconds": 1, "failureThreshold": 2}}]}}
    cluster.core.create_namespaced_pod(namespace, pod)

    def restarted() -> bool:
        s = cluster.core.read_namespaced_pod("sick", namespace).status.container_statuses
        return bool(s) and s[0].restart_count >= 1 and s[0].last_state.terminated.exit_code == 137

    wait_for(restarted, 60, "a liveness restart",
             show=lambda: cluster.core.read_namespaced_pod("sick", namespace).status.to_dict())


def test_pvc_directory_survives_restarts_and_pods(cluster: Cluster, namespace: str) -> None:
    cluster.core.create_namespaced_persistent_volume_claim(namespace, {
        "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Mi"}}}})
    writer = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "writer"}, "spec": {
        "restartPolicy": "OnFailure",
        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}],
        "containers": [{"name": "main", "image": PY, "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                        # first run writes and fails; the restarted container must find the file
                        "command": script("""
                            import os, sys
                            if os.path.exists("/data/seen"):
                                sys.exit(0)
                            open("/data/seen", "w").write("kept")
                            sys.exit(1)
                        """)}]}}
    cluster.core.create_namespaced_pod(namespace, writer)
    done = wait_for(lambda: (p := cluster.core.read_namespaced_pod("writer", namespace)).status.phase == "Succeeded"
                    and p, 90, "writer Succeeded",
                    show=lambda: cluster.core.read_namespaced_pod("writer", namespace).status.to_dict())
    assert done.status.container_statuses[0].restart_count == 1
    reader = {**writer, "metadata": {"name": "reader"}}
    reader["spec"] = {**writer["spec"], "restartPolicy": "Never", "containers": [{
        **writer["spec"]["containers"][0],
        "command": script("import sys; sys.exit(0 if open('/data/seen').read() == 'kept' else 4)")}]}
    cluster.core.create_namespaced_pod(namespace, reader)
    wait_for(lambda: cluster.core.read_namespaced_pod("reader", namespace).status.phase == "Succeeded", 60,
             "reader Succeeded", show=lambda: cluster.core.read_namespaced_pod("reader", namespace).status.to_dict())


def finished(cluster: Cluster, ns: str, name: str) -> Any:
    return wait_for(lambda: (p := cluster.core.read_namespaced_pod(name, ns)).status.phase
                    in ("Succeeded", "Failed") and p.status, 60, f"Pod {name} finished",
                    show=lambda: cluster.core.read_namespaced_pod(name, ns).status.to_dict())


def test_configmap_secret_volumes_and_env(cluster: Cluster, namespace: str) -> None:
    cluster.core.create_namespaced_config_map(namespace, {"metadata": {"name": "cfg"}, "data": {"mode": "fast"}})
    cluster.core.create_namespaced_secret(namespace, {"metadata": {"name": "creds"},
                                                      "stringData": {"AWS_ACCESS_KEY_ID": "abc"}})
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "conf", "labels": {"team": "ml"}}, "spec": {
        "restartPolicy": "Never",
        "volumes": [{"name": "cfg", "configMap": {"name": "cfg"}},
                    {"name": "creds", "secret": {"secretName": "creds"}}],
        "containers": [{
            "name": "main", "image": PY,
            "envFrom": [{"secretRef": {"name": "creds"}}],
            "env": [{"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "mode"}}},
                    {"name": "TEAM", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['team']"}}},
                    {"name": "GREETING", "value": "$(TEAM) runs $(MODE)"}],
            "volumeMounts": [{"name": "cfg", "mountPath": "/etc/cfg", "readOnly": True},
                             {"name": "creds", "mountPath": "/etc/creds", "readOnly": True}],
            "command": script("""
                import os
                assert open("/etc/cfg/mode").read() == "fast"
                assert open("/etc/creds/AWS_ACCESS_KEY_ID").read() == "abc"
                assert os.environ["AWS_ACCESS_KEY_ID"] == "abc" and os.environ["MODE"] == "fast"
                assert os.environ["GREETING"] == "ml runs fast", os.environ["GREETING"]
                assert not os.path.exists("/var/run/secrets/kubernetes.io/serviceaccount/token")
                try:
                    open("/etc/cfg/other", "w")
                except OSError:
                    pass
                else:
                    raise SystemExit("a readOnly mount is writable")
            """),
        }]}}
    cluster.core.create_namespaced_pod(namespace, pod)
    status = finished(cluster, namespace, "conf")
    assert status.phase == "Succeeded", container_log(cluster.kubeconfig.parent, namespace, "conf")


def test_restricted_security_context_is_enforced(cluster: Cluster, namespace: str) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "restricted"}, "spec": {
        "restartPolicy": "Never",
        "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000},
        "volumes": [{"name": "scratch", "emptyDir": {}}],
        "containers": [{
            "name": "main", "image": "busybox:1.36",
            "securityContext": {"readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
                                "capabilities": {"drop": ["ALL"]}},
            "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
            "command": ["sh", "-c", "test \"$(id -u)\" = 1000 || exit 11; "
                        "echo ok > /scratch/ok || exit 12; "
                        "if echo x > /var/tmp/escape-$$; then exit 13; fi; exit 0"],
        }]}}
    cluster.core.create_namespaced_pod(namespace, pod)
    status = finished(cluster, namespace, "restricted")
    log = container_log(cluster.kubeconfig.parent, namespace, "restricted")
    assert status.phase == "Succeeded", (status.container_statuses[0].state.terminated.exit_code, log)


def test_unmapped_image_waits_with_a_clear_reason(cluster: Cluster, namespace: str) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "nginx"},
           "spec": {"containers": [{"name": "web", "image": "nginx:1.25"}]}}
    cluster.core.create_namespaced_pod(namespace, pod)

    def waiting() -> Any:
        statuses = cluster.core.read_namespaced_pod("nginx", namespace).status.container_statuses or []
        w = statuses[0].state.waiting if statuses else None
        return w if w and w.reason == "ImageNotRunnableLocally" else None

    reason = wait_for(waiting, 30, "the waiting reason")
    assert "nginx:1.25" in reason.message and "images.yaml" in reason.message
    # nothing else breaks: another Pod runs, and the stuck one deletes
    cluster.batch.create_namespaced_job(namespace, job("fine", script("print('ok')")))
    wait_for(lambda: job_condition(cluster, namespace, "fine", "Complete"), 60, "Job fine Complete")
    cluster.core.delete_namespaced_pod("nginx", namespace)
    wait_for(lambda: "nginx" not in [p.metadata.name for p in pods(cluster, namespace)], 30, "nginx deleted")


def test_user_image_mapping_and_logs(cluster: Cluster, control_plane: ControlPlane, namespace: str) -> None:
    images = control_plane.state_dir / "images.yaml"
    images.write_text(f'"registry.example.com/echo:*": ["{sys.executable}", "-c", '
                      '"import sys; print(\'echo\', *sys.argv[1:])"]\n')
    try:
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "echo"}, "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "echo", "image": "registry.example.com/echo:1", "args": ["hello", "node"]}]}}
        cluster.core.create_namespaced_pod(namespace, pod)
        wait_for(lambda: cluster.core.read_namespaced_pod("echo", namespace).status.phase == "Succeeded", 60,
                 "echo Succeeded", show=lambda: cluster.core.read_namespaced_pod("echo", namespace).status.to_dict())
    finally:
        images.unlink()
    assert container_log(control_plane.state_dir, namespace, "echo", "echo") == "echo hello node\n"
    proc = __import__("subprocess").run(
        [sys.executable, "-m", "mlops_operator.cli", "dev", "logs", "echo", "-n", namespace,
         "--state-dir", str(control_plane.state_dir)], capture_output=True, text=True, env=dict(os.environ))
    assert proc.returncode == 0 and proc.stdout == "echo hello node\n", proc.stderr


@pytest.mark.parametrize("grace", [0, 30])
def test_deleting_a_pod_stops_its_processes(cluster: Cluster, namespace: str, grace: int) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "sleeper"}, "spec": {
        "terminationGracePeriodSeconds": grace,
        "containers": [{"name": "main", "image": PY, "command": ["python", "-c", "import time; time.sleep(3600)"]}]}}
    cluster.core.create_namespaced_pod(namespace, pod)
    running = wait_for(lambda: (p := cluster.core.read_namespaced_pod("sleeper", namespace)).status.phase == "Running"
                       and p, 60, "sleeper Running")
    pid = container_pid(running)
    assert _pid_alive(pid)
    cluster.core.delete_namespaced_pod("sleeper", namespace)
    wait_for(lambda: "sleeper" not in [p.metadata.name for p in pods(cluster, namespace)], 60, "sleeper deleted")
    # with a grace period of 0 the API object goes at once; the process follows (as with a kubelet)
    wait_for(lambda: not _pid_alive(pid), 10, f"process {pid} to exit")
