"""The node stays Ready for ten minutes of a real run (runs last: it spans the whole session).

The node-lifecycle controller marks a node NotReady 40 s after its last heartbeat and then evicts
its Pods, so this watches the Node, its Lease and the Pods from the start of the control plane
until ten minutes have passed (MLOPS_NODE_SOAK_SECONDS shortens it for local runs).
"""

from __future__ import annotations

import datetime
import os
import time

from kubernetes import client

from mlops_operator.dev.controlplane import ControlPlane
from mlops_operator.dev.node import NODE_NAME

from .conftest import Cluster

SOAK_SECONDS = float(os.environ.get("MLOPS_NODE_SOAK_SECONDS", "600"))
POLL_SECONDS = 5.0


def test_node_stays_ready_through_a_ten_minute_run(cluster: Cluster, control_plane: ControlPlane) -> None:
    leases = client.CoordinationV1Api(cluster.api_client)
    renewals: set[str] = set()
    checks = 0
    while True:
        node = cluster.core.read_node(NODE_NAME)
        ready = next(c for c in node.status.conditions if c.type == "Ready")
        assert ready.status == "True", ready
        assert not node.spec.taints, node.spec.taints
        lease = leases.read_namespaced_lease(NODE_NAME, "kube-node-lease")
        age = datetime.datetime.now(datetime.UTC) - lease.spec.renew_time
        assert age.total_seconds() < 40, f"the lease was last renewed {age} ago"
        renewals.add(str(lease.spec.renew_time))
        evicted = [p.metadata.name for p in cluster.core.list_pod_for_all_namespaces().items
                   if p.status.reason == "Evicted"]
        assert not evicted, evicted
        checks += 1
        if time.monotonic() - control_plane.started_at >= SOAK_SECONDS:
            break
        time.sleep(POLL_SECONDS)
    # it really ran for the whole time, renewing its lease all along (every 10 s, polled every 5 s:
    # at least half of the renewals the polled span should have seen)
    assert len(renewals) >= max(1, int(checks * POLL_SECONDS / 10 / 2)), (len(renewals), checks)
