"""The operator killed with SIGKILL at random points of a retrain (drift seen → TrainingRun → training
Job → gates → candidate → analysis → promotion), and at the first sight of every step of it: the
retrain happens once, every child exists once, every object converges, and each object's status has
one writer throughout: no version of it, as a watch sees them all, drops a condition an earlier one
had or moves a condition's transition time without a transition."""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import watch

from tests.conftest import S3

from .conftest import Cluster, OperatorProcess, wait_for
from .test_driftpolicy import DP, RETRAIN, iris_rows, policy, send
from .test_modeldeployment import MD, TR, cond, serving_first_version, status
from .test_trainingrun import iris_data, jobs

__all__ = ["iris_data", "iris_rows"]  # fixtures used here
PLURALS = {"trainingruns": TR, "modeldeployments": MD, "driftpolicies": DP}


class Versions:
    """Every version of every mlops object in a namespace, as watches deliver them."""

    def __init__(self, cluster: Cluster, ns: str) -> None:
        self.cluster, self.ns = cluster, ns
        self.seen: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.stopped = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._watch, args=(plural,), daemon=True) for plural in PLURALS]

    def __enter__(self) -> Versions:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.stopped.set()
        for t in self.threads:
            t.join(15)

    def _watch(self, plural: str) -> None:
        version = ""
        while not self.stopped.is_set():
            w = watch.Watch()
            for event in w.stream(self.cluster.custom.list_namespaced_custom_object, "mlops.dev", "v1alpha1",
                                  self.ns, plural, resource_version=version, timeout_seconds=2):
                obj = event["object"]
                version = obj["metadata"]["resourceVersion"]
                with self.lock:
                    history = self.seen.setdefault((PLURALS[plural], obj["metadata"]["name"]), [])
                    if not history or history[-1]["metadata"]["resourceVersion"] != version:
                        history.append(obj)
                if self.stopped.is_set():
                    w.stop()

    def histories(self) -> dict[tuple[str, str], list[dict[str, Any]]]:
        with self.lock:
            return {k: list(v) for k, v in self.seen.items()}

    def caught_up(self) -> None:
        """Wait until the watches have seen every object as it is now."""
        now = {(kind, name): self.cluster.get(kind, self.ns, name)["metadata"]["resourceVersion"]
               for kind, name in self.histories()}
        wait_for(lambda: all(rv in {o["metadata"]["resourceVersion"] for o in self.histories()[key]}
                             for key, rv in now.items()), 30, "the watches to see every object as it is now")

    def assert_one_writer(self, kinds_names: set[tuple[str, str]], stables: list[str]) -> None:
        """Each object's status had one writer throughout, and the ModelDeployment `iris`'s stable revision
        went through `stables` in that order, never back."""
        histories = self.histories()
        assert kinds_names <= set(histories)
        faults = {f"{kind}/{name}": f for (kind, name), h in histories.items() if (f := one_writer_faults(h))}
        assert not faults, faults
        seen = [r for obj in histories[(MD, "iris")] if (r := ((obj.get("status") or {}).get("stable") or {})
                                                         .get("revision"))]
        assert [r for i, r in enumerate(seen) if i == 0 or seen[i - 1] != r] == stables  # no flip-flop


def one_writer_faults(history: list[dict[str, Any]]) -> list[str]:
    """What, in the versions of one object, shows two writers overwriting each other's status."""
    faults: list[str] = []
    before: dict[str, dict[str, Any]] = {}
    for obj in history:
        rv = obj["metadata"]["resourceVersion"]
        now = {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or ()}
        if lost := sorted(set(before) - set(now)):
            faults.append(f"version {rv} dropped conditions {lost}")
        for t, c in now.items():
            old = before.get(t)
            if old and old["status"] == c["status"] and old["lastTransitionTime"] != c["lastTransitionTime"]:
                faults.append(f"version {rv} moved {t}'s lastTransitionTime without a transition")
        before = now
    writers = {m.get("manager") for obj in history for m in obj["metadata"].get("managedFields") or ()
               if "f:status" in (m.get("fieldsV1") or {})}
    if len(writers) > 1:
        faults.append(f"status written by {sorted(writers)}")
    return faults


@pytest.fixture
def seed() -> Iterator[int]:
    value = int(os.environ.get("MLOPS_TEST_SEED") or time.time())
    print(f"random kill points: MLOPS_TEST_SEED={value}")
    yield value


def test_operator_killed_at_random_points_of_a_retrain(
    cluster: Cluster, operator_process: OperatorProcess, sp_namespace: str, s3: S3, iris_data: str,
    iris_rows: list[list[float]], seed: int
) -> None:
    ns = sp_namespace
    operator_process.start()
    rev1 = serving_first_version(cluster, ns, s3)
    pod = next(p for p in cluster.core.list_namespaced_pod(ns, label_selector=f"mlops.dev/revision={rev1}").items
               if p.status.pod_ip)
    rng = random.Random(seed)
    kills: list[str] = []
    steps: set[str] = set()

    def step_names() -> set[str]:
        """Every step of the retrain visible so far, by kind and condition."""
        names = set()
        for plural, kind in PLURALS.items():
            for obj in cluster.custom.list_namespaced_custom_object("mlops.dev", "v1alpha1", ns, plural)["items"]:
                for c in (obj.get("status") or {}).get("conditions") or ():
                    names.add(f"{kind}/{obj['metadata']['name']} {c['type']}={c['status']} {c['reason']}")
        names.update(f"Job/{j.metadata.name}" for j in jobs(cluster, ns, "iris-drift-1"))
        return names

    with Versions(cluster, ns) as versions:
        cluster.create(policy("iris-drift", RETRAIN), ns)
        send(f"http://{pod.status.pod_ip}:8080", [[v * 3 for v in r] for r in iris_rows[2::3] * 2])
        next_kill = time.monotonic() + rng.uniform(0.5, 3.0)

        def kill_along_the_way() -> Any:
            nonlocal next_kill
            st = status(cluster, ns)
            if (st.get("stable") or {}).get("trainingRun") == "iris-drift-1" and not st.get("candidate") \
                    and cond(st, "Available").get("status") == "True":
                return st
            new = step_names() - steps
            steps.update(new)
            if len(kills) < 16 and (new or time.monotonic() >= next_kill):
                operator_process.kill()
                kills.append(sorted(new)[0] if new else f"at random after {len(steps)} steps")
                operator_process.start()
                next_kill = time.monotonic() + rng.uniform(0.5, 3.0)
            return None

        st = wait_for(kill_along_the_way, 300, "the retrained version promoted through the kills",
                      show=lambda: {"kills": kills, "md": status(cluster, ns),
                                    "log": operator_process.output()[-3000:]}, interval=0.3)
        # converged: the policy still sees drift (its retrain is in cooldown), the run succeeded
        cluster.wait_condition(DP, ns, "iris-drift", "True", type_="Ready", timeout=60)
        cluster.wait_condition(TR, ns, "iris-drift-1", "True", "Completed", type_="Succeeded", timeout=60)
        versions.caught_up()

    print(f"{len(kills)} kills: {kills}")
    assert len(kills) >= 6, kills
    # the retrain happened once, every child once
    runs = cluster.custom.list_namespaced_custom_object("mlops.dev", "v1alpha1", ns, "trainingruns")["items"]
    assert sorted(r["metadata"]["name"] for r in runs) == ["iris-drift-1", "iris-v1"]
    assert [r["name"] for r in cluster.get(DP, ns, "iris-drift")["status"]["retrains"]] == ["iris-drift-1"]
    assert len(jobs(cluster, ns, "iris-drift-1")) == 1
    rev2 = st["stable"]["revision"]
    assert [(h["revision"], h["outcome"]) for h in st["history"]] == [(rev1, "Promoted"), (rev2, "Promoted")]
    assert sorted(d.metadata.labels["mlops.dev/revision"] for d in cluster.apps.list_namespaced_deployment(
        ns).items) == sorted({rev1, rev2})
    assert not [j.metadata.name for j in cluster.batch.list_namespaced_job(ns).items
                if j.metadata.name.endswith("-an")]  # the analysis Job is cleaned up
    # one status writer per object, through every kill
    versions.assert_one_writer({(DP, "iris-drift"), (TR, "iris-drift-1"), (MD, "iris")}, [rev1, rev2])
    assert "Traceback" not in operator_process.output()
