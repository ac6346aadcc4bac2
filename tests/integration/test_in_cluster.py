"""The operator as users run it: `helm install` of the chart with the image built from images/Dockerfile, the
operator Pod on the real node (its ServiceAccount token, the chart's RBAC, its liveness and metrics ports), and
the leading Pod killed while work is pending and in the middle of a rollout: the standby takes over within
20 s and finishes the work, once, with one status writer throughout."""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from mlops_operator.dev.imagebuild import OPERATOR_IMAGE
from tests.cases import example
from tests.conftest import S3

from .conftest import Cluster, InClusterOperator, wait_for
from .test_driftpolicy import RETRAIN, iris_rows, policy, send
from .test_faults import pinned
from .test_modeldeployment import MD, TR, cond, model_deployment, serving_first_version, status
from .test_retrain_kills import Versions
from .test_trainingrun import iris_data, jobs

__all__ = ["iris_data", "iris_rows"]  # fixtures used here


def deployments_of(cluster: Cluster, ns: str, md: str) -> list[Any]:
    return [d for d in cluster.apps.list_namespaced_deployment(ns).items
            if (d.metadata.labels or {}).get("mlops.dev/modeldeployment") == md]


def test_the_chart_runs_the_operator_pod_which_reconciles_and_survives_being_killed(
    cluster: Cluster, helm_operator: InClusterOperator, sp_namespace: str
) -> None:
    ns, op = sp_namespace, helm_operator
    releases = json.loads(op.helm("list", "-n", ns, "-o", "json").stdout)
    assert [(r["name"], r["status"]) for r in releases] == [(op.release, "deployed")]
    dep = cluster.apps.read_namespaced_deployment(op.release, ns)
    assert any(c.type == "Available" and c.status == "True" for c in dep.status.conditions)

    pod = op.pod()
    (status,) = pod.status.container_statuses
    assert status.image == OPERATOR_IMAGE and "sha256:" in status.image_id, (status.image, status.image_id)
    assert pod.spec.service_account_name == op.release
    who = cluster.kubectl("exec", "-n", ns, pod.metadata.name, "--", "python", "-c",
                          "import os; print(os.getuid(), os.getgid())").stdout.split()
    assert who == ["65532", "65532"]
    write = cluster.kubectl("exec", "-n", ns, pod.metadata.name, "--", "python", "-c", "open('/x', 'w')",
                            check=False)
    assert write.returncode != 0 and "Read-only file system" in write.stderr
    # its liveness and metrics ports, by pod IP (the tests run inside the cluster's network namespace)
    with urllib.request.urlopen(f"http://{pod.status.pod_ip}:8080/healthz", timeout=10) as r:
        assert r.status == 200

    # it reconciles every kind with the chart's RBAC and the token of its ServiceAccount
    run = example("TrainingRun")
    run["spec"]["suspend"] = True
    cluster.create(run, ns)
    cluster.create(pinned("first"), ns)
    cluster.wait_condition("TrainingRun", ns, "iris-v1", "False", "Suspended", timeout=90)
    wait_for(lambda: len(deployments_of(cluster, ns, "first")) == 1, 90, "the first ModelDeployment's Deployment")
    with urllib.request.urlopen(f"http://{pod.status.pod_ip}:9090/metrics", timeout=10) as r:
        names = {f.name for f in text_string_to_metric_families(r.read().decode())}
    assert any(n.startswith("mlops_") for n in names), names

    # two replicas, one leads (the Lease's holder); the standby is ready too, and writes nothing
    assert dep.spec.replicas == 2
    standby = wait_for(lambda: [p for p in op.pods() if p.metadata.name != pod.metadata.name and any(
        c.type == "Ready" and c.status == "True" for c in p.status.conditions or ())], 180, "the ready standby")
    assert len(standby) == 1
    # the leader's Pod deleted without grace (the kubelet still sends SIGTERM with 2 s to go), and work created
    # meanwhile: another Pod takes over within 20 s and does it, once
    names = {p.metadata.uid: p.metadata.name for p in op.pods()}
    old = op.kill_pod()
    killed = time.monotonic()
    cluster.create(pinned("second"), ns)
    # another Pod leads: the standby, or (a SIGTERM hands the Lease over at once) the Deployment's new Pod
    wait_for(lambda: op.leader() not in (None, names.get(old)), 60, "another operator Pod to take the Lease",
             show=lambda: {"leader": op.leader(), "killed": names.get(old)})
    took = time.monotonic() - killed
    assert took <= 20, f"the standby took over after {took:.1f} s"
    new = wait_for(lambda: (p := op.pod()) and p.metadata.uid != old and p, 180, "a new leading operator Pod")
    assert new.metadata.uid != old
    wait_for(lambda: len(deployments_of(cluster, ns, "second")) == 1, 120, "the second ModelDeployment's Deployment")
    assert len(deployments_of(cluster, ns, "first")) == 1 and len(deployments_of(cluster, ns, "second")) == 1
    logs = op.logs()
    assert "Traceback" not in logs and "Forbidden" not in logs, logs[-3000:]


def test_the_leader_killed_mid_rollout_the_standby_finishes_it_once_with_one_status_writer(
    cluster: Cluster, helm_operator: InClusterOperator, sp_namespace: str, s3: S3, iris_data: str,
    iris_rows: list[list[float]]
) -> None:
    ns, op = sp_namespace, helm_operator
    # no replaced revision kept: the old Deployment is deleted once the new one serves
    rev1 = serving_first_version(cluster, ns, s3, model_deployment(revisionHistoryLimit=0))
    pod = next(p for p in cluster.core.list_namespaced_pod(ns, label_selector=f"mlops.dev/revision={rev1}").items
               if p.status.pod_ip)
    leader = op.pod()
    wait_for(lambda: [p.metadata.name for p in op.pods() if p.metadata.name != leader.metadata.name
                      and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or ())],
             180, "a ready standby")
    with Versions(cluster, ns) as versions:
        # drift → a retrain → its version a candidate of the ModelDeployment: the rollout under way
        cluster.create(policy("iris-drift", RETRAIN), ns)
        send(f"http://{pod.status.pod_ip}:8080", [[v * 3 for v in r] for r in iris_rows[2::3] * 2])
        wait_for(lambda: (status(cluster, ns).get("candidate") or {}).get("trainingRun") == "iris-drift-1", 300,
                 "the retrained version to be the candidate", show=lambda: status(cluster, ns), interval=0.3)
        # whichever Pod leads now is killed (the Lease may have moved during the rollout); another takes over:
        # the standby, or (a SIGTERM hands the Lease over at once) the Deployment's new Pod
        names = {p.metadata.uid: p.metadata.name for p in op.pods()}
        old = op.kill_pod()
        killed = time.monotonic()
        assert status(cluster, ns).get("candidate"), "the rollout ended before the leader was killed"
        wait_for(lambda: op.leader() not in (None, names.get(old)), 60, "another operator Pod to take the Lease",
                 show=lambda: {"leader": op.leader(), "killed": names.get(old)})
        took = time.monotonic() - killed
        st = wait_for(lambda: (s := status(cluster, ns)) and (s.get("stable") or {}).get("trainingRun")
                      == "iris-drift-1" and not s.get("candidate") and cond(s, "Available").get("status") == "True"
                      and s, 300, "the standby to promote the retrained version", show=lambda: status(cluster, ns))
        cluster.wait_condition(TR, ns, "iris-drift-1", "True", "Completed", type_="Succeeded", timeout=60)
        versions.caught_up()
    print(f"mid-rollout: the standby took the Lease {took:.1f} s after the leader's Pod was deleted")
    assert took <= 20, f"the standby took over after {took:.1f} s"
    # one retrain, one Job for it, the rollout finished once
    runs = cluster.custom.list_namespaced_custom_object("mlops.dev", "v1alpha1", ns, "trainingruns")["items"]
    assert sorted(r["metadata"]["name"] for r in runs) == ["iris-drift-1", "iris-v1"]
    assert len(jobs(cluster, ns, "iris-drift-1")) == 1
    rev2 = st["stable"]["revision"]
    assert [(h["revision"], h["outcome"]) for h in st["history"]] == [(rev1, "Promoted"), (rev2, "Promoted")]
    # one status writer per object through the takeover: no condition dropped, none moved, no flip-flop
    versions.assert_one_writer({(TR, "iris-drift-1"), (MD, "iris")}, [rev1, rev2])
    wait_for(lambda: [d.metadata.labels["mlops.dev/revision"] for d in deployments_of(cluster, ns, "iris")]
             == [rev2], 60, "the replaced revision's Deployment deleted (revisionHistoryLimit 0)")
    logs = op.logs()
    assert "Traceback" not in logs and "Forbidden" not in logs, logs[-3000:]
