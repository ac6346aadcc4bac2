"""Leader election on a real Lease (controller/election.py): one replica leads, never two; a standby takes
over within 20 s of the leader's death; a leader that stops cleanly hands over at once."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import yaml

from mlops_operator.controller.client import Api
from mlops_operator.controller.election import LEASES, Elector
from mlops_operator.dev.controlplane import ControlPlane

from .conftest import TESTS_AGENT


def _api(control_plane: ControlPlane) -> Api:
    cluster = yaml.safe_load(control_plane.kubeconfig.read_text())["clusters"][0]["cluster"]
    return Api(control_plane.server, token=control_plane.token, ca_path=cluster.get("certificate-authority"),
               user_agent=TESTS_AGENT)


async def _until(event: asyncio.Event, timeout: float) -> float:
    started = time.monotonic()
    await asyncio.wait_for(event.wait(), timeout)
    return time.monotonic() - started


def test_one_replica_leads_and_a_standby_takes_over_within_20_s_of_its_death(
    control_plane: ControlPlane, sp_namespace: str
) -> None:
    async def run() -> dict[str, Any]:
        apis = [_api(control_plane) for _ in range(3)]
        a, b = (Elector(api, sp_namespace, "mlops-operator", who) for api, who in zip(apis, "ab", strict=False))
        try:
            a.start()
            await _until(a.leading, 10)
            b.start()
            both = False
            for _ in range(30):  # 6 s: b renews its view, a renews its Lease; never both
                await asyncio.sleep(0.2)
                both = both or (a.leading.is_set() and b.leading.is_set())
            assert not both and a.leading.is_set() and not b.leading.is_set()
            assert a._task is not None
            a._task.cancel()  # the leader dies: no release, its Lease simply stops being renewed
            took = await _until(b.leading, 25)
            lease = await apis[2].get(LEASES, sp_namespace, "mlops-operator")
            assert lease is not None
            # a clean stop hands over at once: the holder cleared, a new candidate leads within a retry or two
            await b.release()
            c = Elector(apis[2], sp_namespace, "mlops-operator", "c")
            c.start()
            handover = await _until(c.leading, 10)
            await c.release()
            return {"took": took, "handover": handover, "spec": lease["spec"]}
        finally:
            for api in apis:
                await api.close()

    found = asyncio.run(run())
    assert found["took"] <= 20, found
    assert found["spec"]["holderIdentity"] == "b" and found["spec"]["leaseTransitions"] == 1
    assert found["spec"]["leaseDurationSeconds"] == 15
    assert found["handover"] <= 5, found
