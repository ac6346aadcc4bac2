"""The cache and the work queue that make reconciles level-based (no cluster needed)."""

from __future__ import annotations

import asyncio

from mlops_operator.controller.errors import InvalidSpec, Retry
from mlops_operator.controller.queue import WorkQueue
from mlops_operator.controller.store import Store, owner_of, slim
from mlops_operator.main import make_store


def obj(kind: str, name: str, spec: dict, ns: str = "ns", status: dict | None = None) -> dict:
    body = {"apiVersion": "mlops.dev/v1alpha1", "kind": kind,
            "metadata": {"name": name, "namespace": ns, "uid": f"uid-{name}", "managedFields": [{"x": 1}]},
            "spec": spec}
    if status is not None:
        body["status"] = status
    return body


def test_slim_keeps_what_reconciles_need_only() -> None:
    body = obj("TrainingRun", "a", {"model": "m"})
    out = slim(body)
    assert "managedFields" not in out["metadata"] and out["spec"] == {"model": "m"}
    from mlops_operator.builders.modeldeployment import deployment, service
    from mlops_operator.controller.store import slim_child

    from .test_modeldeployment_builders import md as md_and_spec

    md, spec = md_and_spec()
    dep = deployment(md, spec, "r1", model_uri="s3://m/1", digest="sha256:" + "0" * 64, replicas=3,
                     runtime_image="img")
    kept = slim_child("Deployment", {**dep, "status": {"availableReplicas": 3}})
    assert kept["spec"] == {"replicas": 3} and kept["status"] == {"availableReplicas": 3}
    assert kept["metadata"]["annotations"] == dep["metadata"]["annotations"]  # the template hash stays
    svc = service(md, "r1")
    assert slim_child("Service", svc)["spec"] == {"selector": svc["spec"]["selector"], "ports": svc["spec"]["ports"]}


def test_referenced_objects_trigger_their_dependents() -> None:
    store = make_store()
    md = obj("ModelDeployment", "iris", {"model": {"fromTrainingRuns": {"model": "iris"}}})
    dp = obj("DriftPolicy", "watch", {"targetRef": {"name": "iris"}})
    other_ns_dp = obj("DriftPolicy", "watch", {"targetRef": {"name": "iris"}}, ns="other")
    assert store.upsert("DriftPolicy", dp) == {("DriftPolicy", "ns", "watch")}
    store.upsert("DriftPolicy", other_ns_dp)
    # the target appearing reconciles the policy that waits for it (same namespace only)
    assert store.upsert("ModelDeployment", md) == {("ModelDeployment", "ns", "iris"), ("DriftPolicy", "ns", "watch")}
    # a TrainingRun of the followed model reconciles the deployment; another model does not
    tr = obj("TrainingRun", "iris-1", {"model": "iris"})
    assert store.upsert("TrainingRun", tr) == {("TrainingRun", "ns", "iris-1"), ("ModelDeployment", "ns", "iris")}
    assert store.upsert("TrainingRun", obj("TrainingRun", "wine-1", {"model": "wine"})) == \
        {("TrainingRun", "ns", "wine-1")}
    assert [b["metadata"]["name"] for b in store.by_alias(("model", "ns", "iris"))] == ["iris-1"]
    # an unchanged object (a resync re-list) does not fan out
    assert store.upsert("TrainingRun", tr) == {("TrainingRun", "ns", "iris-1")}
    # deletion reconciles dependents and forgets the object
    assert store.delete("TrainingRun", "ns", "iris-1") == {("ModelDeployment", "ns", "iris")}
    assert store.by_alias(("model", "ns", "iris")) == []
    # a policy retargeted stops depending on the old target
    store.upsert("DriftPolicy", obj("DriftPolicy", "watch", {"targetRef": {"name": "wine"}}))
    assert store.upsert("ModelDeployment", {**md, "spec": {"replicas": 3}}) == {("ModelDeployment", "ns", "iris")}


def test_children_map_to_their_mlops_owner() -> None:
    job = {"metadata": {"name": "iris-1-abc", "namespace": "ns", "ownerReferences": [
        {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "x", "controller": False},
        {"apiVersion": "mlops.dev/v1alpha1", "kind": "TrainingRun", "name": "iris-1", "controller": True}]}}
    assert owner_of(job, ["TrainingRun"]) == ("TrainingRun", "ns", "iris-1")
    assert owner_of(job, ["ModelDeployment"]) is None
    store = Store()
    store.upsert_child(("TrainingRun", "ns", "iris-1"), "Job", job)
    assert list(store.children[("TrainingRun", "ns", "iris-1")]["Job"]) == ["iris-1-abc"]
    store.delete("TrainingRun", "ns", "iris-1")
    assert ("TrainingRun", "ns", "iris-1") not in store.children


async def wait_until(cond, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


def test_queue_deduplicates_and_serializes_per_key() -> None:
    async def scenario() -> None:
        running: set = set()
        overlaps, calls = [], []
        gate = asyncio.Event()

        async def reconcile(key) -> None:
            if key in running:
                overlaps.append(key)
            running.add(key)
            calls.append(key)
            await gate.wait()
            running.discard(key)

        q = WorkQueue({"K": reconcile}, workers=4)

        q.open.set()  # the operator opens it once its cache is warm
        key = ("K", "ns", "a")
        q.enqueue(key)
        await wait_until(lambda: calls == [key])
        for _ in range(5):  # changes while running: one more run afterwards, never concurrent
            q.enqueue(key)
        gate.set()
        await wait_until(lambda: len(calls) == 2 and q.idle())
        assert overlaps == []
        await q.close()

    asyncio.run(scenario())


def test_queue_retries_errors_and_honours_kopf_errors() -> None:
    async def scenario() -> None:
        calls: dict = {"temp": 0, "perm": 0, "boom": 0}

        async def reconcile(key) -> None:
            calls[key[2]] += 1
            if key[2] == "temp" and calls["temp"] == 1:
                raise Retry("wait", delay=0.05)
            if key[2] == "perm":
                raise InvalidSpec("invalid")
            if key[2] == "boom" and calls["boom"] < 3:
                raise RuntimeError("transient")

        q = WorkQueue({"K": reconcile}, workers=2, max_backoff=0.01)

        q.open.set()  # the operator opens it once its cache is warm
        for name in calls:
            q.enqueue(("K", "ns", name))
        await wait_until(lambda: calls["temp"] == 2 and calls["boom"] == 3 and q.idle())
        assert calls["perm"] == 1  # a permanent error is not retried
        await q.close()

    asyncio.run(scenario())


def test_delayed_requeue_keeps_the_earliest_due_time() -> None:
    async def scenario() -> None:
        calls = []

        async def reconcile(key) -> None:
            calls.append(asyncio.get_running_loop().time())

        q = WorkQueue({"K": reconcile}, workers=1)

        q.open.set()  # the operator opens it once its cache is warm
        start = asyncio.get_running_loop().time()
        q.enqueue_after(("K", "ns", "a"), 0.05)
        q.enqueue_after(("K", "ns", "a"), 10)  # later: ignored
        await wait_until(lambda: len(calls) == 1)
        assert calls[0] - start < 5
        await q.close()

    asyncio.run(scenario())


def test_requests_are_counted_by_verb_and_resource() -> None:
    from mlops_operator.controller.client import _verb_and_resource

    assert _verb_and_resource("GET", "/api/v1/namespaces/ns/pods") == ("LIST", "pods")
    assert _verb_and_resource("GET", "/api/v1/namespaces/ns/configmaps/cm") == ("GET", "configmaps")
    assert _verb_and_resource("PATCH", "/apis/mlops.dev/v1alpha1/namespaces/ns/trainingruns/a/status") == \
        ("PATCH", "trainingruns")
    assert _verb_and_resource("POST", "/api/v1/namespaces/ns/events") == ("POST", "events")
    assert _verb_and_resource("GET", "/apis/gateway.networking.k8s.io/v1") == ("GET", "v1")
    assert _verb_and_resource("GET", "/api/v1/configmaps") == ("LIST", "configmaps")  # cluster-wide
    assert _verb_and_resource("GET", "/apis/apps/v1/deployments") == ("LIST", "deployments")
    from mlops_operator.controller.client import _namespace

    assert _namespace("/api/v1/namespaces/ns/pods?labelSelector=a") == "ns"
    assert _namespace("/apis/mlops.dev/v1alpha1/namespaces/team-a/trainingruns/x/status") == "team-a"
    assert _namespace("/api/v1/namespaces") == _namespace("/apis/gateway.networking.k8s.io") == ""


def test_the_operator_imports_no_numeric_library() -> None:
    """Memory at scale: the operator process loads neither numpy nor scipy nor scikit-learn
    (the statistics are pure Python; the data-plane modules import them only when run)."""
    import subprocess
    import sys

    code = ("import sys, mlops_operator.main, mlops_operator.cli; "
            "print(sorted(m for m in ('numpy', 'scipy', 'sklearn', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_cache_stays_ahead_of_the_watch_with_our_own_writes() -> None:
    store = make_store()

    def version(rv: str, reason: str) -> dict:
        body = obj("TrainingRun", "a", {"model": "m"}, status={"conditions": [{"type": "Ready", "reason": reason}]})
        body["metadata"]["resourceVersion"] = rv
        return body

    key = ("TrainingRun", "ns", "a")
    store.upsert("TrainingRun", version("1", "Created"))
    store.ahead("TrainingRun", version("2", "First"))  # two writes of ours, before the watch says anything
    store.ahead("TrainingRun", version("3", "Second"))
    assert store.upsert("TrainingRun", version("2", "First")) == set()  # its past: skipped
    assert store.get(key)["status"]["conditions"][0]["reason"] == "Second"
    assert store.upsert("TrainingRun", version("3", "Second")) == {key}  # caught up
    assert store.upsert("TrainingRun", version("4", "Edited")) == {key}  # someone else's, after ours
    assert store.get(key)["status"]["conditions"][0]["reason"] == "Edited"


def test_the_liveness_probe_fails_for_an_informer_that_stopped_or_fails_for_minutes() -> None:
    from mlops_operator.controller.client import JOBS, SERVICES, Api
    from mlops_operator.controller.informers import Informer, Informers

    async def scenario() -> tuple[list[str], list[str], list[str]]:
        api = Api("http://127.0.0.1:1")
        jobs = Informer(api, JOBS, "Job", "ns", lambda *_: None)
        services = Informer(api, SERVICES, "Service", None, lambda *_: None)
        watches = Informers([jobs, services])
        watches.tasks = [asyncio.create_task(asyncio.sleep(0)), asyncio.create_task(asyncio.sleep(60))]
        await watches.tasks[0]  # the first task has finished: that informer stopped
        stopped = watches.problems(now=1000.0)
        watches.tasks[0] = asyncio.create_task(asyncio.sleep(60))
        services.failing_since = 950.0  # failing for 50 s: the apiserver is away for a while
        briefly = watches.problems(now=1000.0)
        long = watches.problems(now=1400.0)
        for t in watches.tasks:
            t.cancel()
        await api.close()
        return stopped, briefly, long

    stopped, briefly, long = asyncio.run(scenario())
    assert stopped == ["the informer of jobs in ns stopped"]
    assert briefly == []
    assert long == ["the informer of services has failed for 450 s"]


def test_the_operators_metrics_export_the_queues_and_the_clients_counters() -> None:
    import collections
    from types import SimpleNamespace

    from prometheus_client.parser import text_string_to_metric_families

    from mlops_operator.metrics import Registry

    r = Registry()
    ctx = SimpleNamespace(api=SimpleNamespace(requests=collections.Counter({("GET", "pods"): 3})),
                          queue=SimpleNamespace(reconciles_by_kind=collections.Counter({"DriftPolicy": 2}),
                                                errors_by_kind=collections.Counter({"DriftPolicy": 1})))
    r.read_counters_of(ctx)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(r.render()) for s in f.samples}
    assert samples[("mlops_api_requests_total", (("resource", "pods"), ("verb", "GET")))] == 3
    assert samples[("mlops_reconciles_total", (("kind", "DriftPolicy"),))] == 2
    assert samples[("mlops_reconcile_errors_total", (("kind", "DriftPolicy"),))] == 1
    assert {name for name, _ in samples} <= set(r.help)
