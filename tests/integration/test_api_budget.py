"""What the operator costs the apiserver, counted (not timed): a bounded number of writes to bring
each object to its steady state, none at all when a resync finds nothing to change, and no list
call in steady state. The in-process operator counts every request per namespace."""

from __future__ import annotations

import collections
import copy
import time
from typing import Any

from mlops_operator.dev.runner import OperatorThread
from tests.cases import example

from .conftest import RESYNC_SECONDS, Cluster, wait_for

N = 5
WRITES = ("POST", "PUT", "PATCH", "DELETE")
# writes that bring one object from created to settled (children, then status), Events apart
BUDGET = {"ModelDeployment": 6, "TrainingRun": 2, "DriftPolicy": 2}


def objects(i: int) -> list[dict[str, Any]]:
    run = example("TrainingRun")
    run["metadata"]["name"] = f"run-{i}"
    run["spec"]["suspend"] = True
    md = example("ModelDeployment")
    md["metadata"]["name"] = f"model-{i}"
    md["spec"].update({"replicas": 0, "model": {"storageUri": f"s3://models/pinned/{i}",
                                                "digest": "sha256:" + f"{i:x}" * 64}})
    del md["spec"]["analysis"]
    policy = copy.deepcopy(example("DriftPolicy"))
    policy["metadata"]["name"] = f"drift-{i}"
    policy["spec"]["targetRef"]["name"] = f"model-{i}"
    policy["spec"]["intervalSeconds"] = 3600
    policy["spec"]["action"] = {"type": "Alert"}
    return [run, md, policy]


def settled(cluster: Cluster, ns: str, count: int = N) -> bool:
    """Each object has its first verdict: the run suspended, the deployment rolling its pinned version
    out (no pod runs: replicas 0), the policy waiting for a version to serve."""
    for i in range(count):
        run = cluster.condition("TrainingRun", ns, f"run-{i}")
        md = cluster.condition("ModelDeployment", ns, f"model-{i}", "Progressing")
        dp = cluster.condition("DriftPolicy", ns, f"drift-{i}")
        if not (run and run["reason"] == "Suspended" and md and dp and dp["reason"] == "Pending"):
            return False
    return True


def test_bounded_writes_to_settle_none_on_resync_and_no_list_calls(
    cluster: Cluster, operator: OperatorThread, namespace: str
) -> None:
    ns = namespace
    api, queue = operator.ctx.api, operator.ctx.queue

    def spent() -> collections.Counter[tuple[str, str]]:
        return collections.Counter({(verb, resource): n for (where, verb, resource), n in api.by_namespace.items()
                                    if where == ns})

    def reconciles() -> int:
        return sum(n for (_, where), n in queue.reconciles_by_namespace.items() if where == ns)

    for i in range(N):
        for obj in objects(i):
            cluster.create(obj, ns)
    wait_for(lambda: settled(cluster, ns), 90, "every object to settle", show=lambda: {
        kind: (cluster.get(kind, ns, f"{prefix}-0").get("status") or {}).get("conditions")
        for kind, prefix in (("TrainingRun", "run"), ("ModelDeployment", "model"), ("DriftPolicy", "drift"))})
    # settled: nothing more is written (the last status write's own event reconciles once more):
    # no request for a resync and a half
    last = (spent(), time.monotonic())

    def quiet() -> bool:
        nonlocal last
        now = spent()
        if now != last[0]:
            last = (now, time.monotonic())
            return False
        return time.monotonic() - last[1] >= RESYNC_SECONDS * 1.5

    wait_for(quiet, 60, "the writes to stop", interval=0.5)
    creation = last[0]
    writes = {r: n for (v, r), n in creation.items() if v in WRITES and r != "events"}
    # a first version: its Deployment and the active Service (no preview Service before a rollout needs one)
    assert writes.get("deployments", 0) <= N and writes.get("services", 0) <= N, writes
    assert writes.get("modeldeployments", 0) + writes.get("deployments", 0) + writes.get("services", 0) \
        <= BUDGET["ModelDeployment"] * N, writes
    assert writes.get("trainingruns", 0) <= BUDGET["TrainingRun"] * N, writes
    assert writes.get("driftpolicies", 0) <= BUDGET["DriftPolicy"] * N, writes
    assert set(writes) <= {"modeldeployments", "deployments", "services", "trainingruns", "driftpolicies"}, writes

    # steady state: resyncs reconcile every object again and again, and cost nothing
    start = reconciles()
    wait_for(lambda: reconciles() >= start + 3 * 3 * N, 60, "three resyncs of every object",
             interval=RESYNC_SECONDS / 2)
    extra = spent() - creation
    assert not extra, f"a resync that found nothing to change made requests: {dict(extra)}"
