"""The whole loop, step by step, on any cluster the operator watches: what `mlops dev demo` runs and
what the end-to-end test asserts.

examples/loop/ is applied into a namespace (a TrainingRun, a ModelDeployment following its model,
a DriftPolicy that retrains). Traffic goes through `dev.proxy` to the Service, first drawn from
the training distribution, then shifted (a new sensor reads lengths larger); the newest labelled
data, shifted too, is written where the retrain template reads it, as a data pipeline would. Each
step waits for what the operator does, with a deadline, and prints it: trained → served → drift
detected → retrained → gates → candidate → analysis → promoted → all traffic on the new revision
→ drift gone. Then a deliberately bad version (passes a lax gate, fails the comparison with the
serving one) is rolled back while the serving one keeps every request.
"""

from __future__ import annotations

import collections
import csv
import io
import json
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from ..api import BY_KIND, GROUP, VERSION, times
from .proxy import Proxy, Resolver

COLUMNS = ("sepal_length", "sepal_width", "petal_length", "petal_width")
SHIFT = (1.0, 0.0, 1.5, 0.8)  # the new sensor: three of the four lengths read larger
RECENT = 30  # answers looked at to say where traffic goes
ORDER = ("trainingrun.yaml", "modeldeployment.yaml", "driftpolicy.yaml")
Row = list[float]


class LoopFailed(RuntimeError):
    """A step did not happen in time, or went the wrong way: the message says which and why."""


def examples_dir() -> Path:
    return Path(__file__).resolve().parents[3] / "examples" / "loop"


def iris_rows() -> tuple[list[Row], list[str]]:
    from sklearn.datasets import load_iris

    data = load_iris()
    return [[float(v) for v in r] for r in data.data], [str(data.target_names[t]) for t in data.target]


def shifted(rows: list[Row]) -> list[Row]:
    return [[round(v + s, 2) for v, s in zip(r, SHIFT, strict=True)] for r in rows]


def to_csv(rows: list[Row], labels: list[str]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*COLUMNS, "species"])
    writer.writerows([*r, label] for r, label in zip(rows, labels, strict=True))
    return out.getvalue().encode()


class Traffic(threading.Thread):
    """Steady V2 inference traffic through the proxy: batches of rows drawn from `rows`, which the
    loop switches; counts answers by the revision that gave them."""

    def __init__(self, url: str, model: str, rows: list[Row], batch: int = 10, pause: float = 0.15) -> None:
        super().__init__(name="mlops-demo-traffic", daemon=True)
        self.url = f"{url}/v2/models/{model}/infer"
        self.rows, self.batch, self.pause = rows, batch, pause
        self.by_revision: collections.Counter[str] = collections.Counter()
        self.errors = 0
        self.last: list[str] = []
        self._halt = threading.Event()
        self._random = random.Random(7)
        self._lock = threading.Lock()

    def send(self, rows: list[Row]) -> tuple[int, str, dict[str, Any]]:
        body = json.dumps({"inputs": [{"name": "x", "shape": [len(rows), len(COLUMNS)], "datatype": "FP64",
                                       "data": rows}]}).encode()
        request = urllib.request.Request(self.url, data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:
                return int(resp.status), resp.headers.get("x-mlops-revision", ""), json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.headers.get("x-mlops-revision", ""), {}
        except OSError:
            return 0, "", {}

    def run(self) -> None:
        while not self._halt.is_set():
            rows = [self._random.choice(self.rows) for _ in range(self.batch)]
            status, revision, _ = self.send(rows)
            with self._lock:
                if status == 200:
                    self.by_revision[revision] += 1
                    self.last = [*self.last[-(RECENT - 1):], revision]
                else:
                    self.errors += 1
            self._halt.wait(self.pause)

    def recent(self) -> list[str]:
        with self._lock:
            return list(self.last)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=15)


@dataclass
class Facts:
    """What the loop observed, for whoever ran it to check."""

    first_revision: str = ""
    first_answer: list[Any] = field(default_factory=list)
    baseline_verdict: str = ""
    drifted_features: list[str] = field(default_factory=list)
    retrain: str = ""
    retrain_metrics: dict[str, float] = field(default_factory=dict)
    analysis: dict[str, Any] = field(default_factory=dict)
    new_revision: str = ""
    share_on_new: float = 0.0
    verdict_after: str = ""
    bad_revision: str = ""
    bad_message: str = ""
    share_on_stable_during_bad: float = 0.0
    errors: int = 0
    seconds: float = 0.0


class Loop:
    def __init__(self, api_client: Any, namespace: str, out: Callable[[str], None] = print,
                 step_timeout: float = 240) -> None:
        self.api_client, self.namespace, self.out = api_client, namespace, out
        self.custom = client.CustomObjectsApi(api_client)
        self.step_timeout = step_timeout
        self.started = time.monotonic()
        self._seen: set[tuple[str, str, str, str, str]] = set()

    # ---- reading and printing the cluster --------------------------------------------------------
    def get(self, kind: str, name: str) -> dict[str, Any]:
        try:
            obj: dict[str, Any] = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, BY_KIND[kind].plural, name)
        except ApiException as exc:
            if exc.status == 404:
                return {}
            raise
        return obj

    def status(self, kind: str, name: str) -> dict[str, Any]:
        return dict(self.get(kind, name).get("status") or {})

    def condition(self, kind: str, name: str, type_: str) -> dict[str, Any]:
        return next((dict(c) for c in self.status(kind, name).get("conditions") or () if c["type"] == type_), {})

    def say(self, text: str) -> None:
        self.out(f"[{time.monotonic() - self.started:6.1f}s] {text}")

    def poll(self) -> None:
        """Print each condition change of the namespace's mlops resources once, as it happens."""
        for kind in ("TrainingRun", "ModelDeployment", "DriftPolicy"):
            items = self.custom.list_namespaced_custom_object(GROUP, VERSION, self.namespace,
                                                              BY_KIND[kind].plural)["items"]
            for obj in items:
                for c in (obj.get("status") or {}).get("conditions") or ():
                    key = (kind, obj["metadata"]["name"], c["type"], c["status"], c.get("reason", ""))
                    if key not in self._seen:
                        self._seen.add(key)
                        message = f": {c['message']}" if c.get("message") else ""
                        self.say(f"  {kind}/{key[1]} {c['type']}={c['status']} ({key[4]}){message}")
                    if c.get("reason") == "InvalidSpec":
                        raise LoopFailed(f"{kind}/{key[1]} was refused: {c.get('message', '')}")

    def wait(self, what: str, check: Callable[[], Any], timeout: float | None = None) -> Any:
        """Poll (printing the timeline) until `check` returns something truthy, or fail saying what."""
        deadline = time.monotonic() + (timeout or self.step_timeout)
        while True:
            self.poll()
            result = check()
            if result:
                self.poll()  # the condition changes that made it so come before the line saying so
                return result
            if time.monotonic() > deadline:
                raise LoopFailed(f"timed out after {timeout or self.step_timeout:.0f}s waiting for {what}")
            time.sleep(0.5)

    # ---- the steps ---------------------------------------------------------------------------------
    def apply(self, obj: dict[str, Any]) -> None:
        """Create, or replace what is there (the demo's `kubectl apply`)."""
        plural = BY_KIND[obj["kind"]].plural
        name = obj["metadata"]["name"]
        try:
            self.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, plural, obj)
        except ApiException as exc:
            if exc.status != 409:
                raise
            current = self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, plural, name)
            obj["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            self.custom.replace_namespaced_custom_object(GROUP, VERSION, self.namespace, plural, name, obj)
        self.say(f"applied {obj['kind']}/{name}")

    def trained(self, run: str) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            succeeded = self.condition("TrainingRun", run, "Succeeded")
            if succeeded.get("status") == "False":
                raise LoopFailed(f"TrainingRun {run} failed: {succeeded.get('message', '')}")
            gates = self.condition("TrainingRun", run, "GatesPassed")
            if gates.get("status") == "False" and succeeded.get("status") == "True":
                raise LoopFailed(f"TrainingRun {run} did not pass its gates: {gates.get('message', '')}")
            status = self.status("TrainingRun", run)
            return status if gates.get("status") == "True" and status.get("model") else None

        status: dict[str, Any] = self.wait(f"TrainingRun {run} to train and pass its gates", done)
        metrics = ", ".join(f"{k} {v:.3f}" for k, v in sorted((status.get("metrics") or {}).items()))
        self.say(f"trained {run}: {metrics}; gates passed; version {status['model']['digest'][:19]}…")
        return status

    def serving(self, md: str, run: str) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            status = self.status("ModelDeployment", md)
            if any(h.get("trainingRun") == run and h.get("outcome") == "RolledBack"
                   for h in status.get("history") or ()):
                raise LoopFailed(f"the version of {run} was rolled back: "
                                 f"{self.condition('ModelDeployment', md, 'Progressing').get('message', '')}")
            available = self.condition("ModelDeployment", md, "Available").get("status") == "True"
            return status if available and (status.get("stable") or {}).get("trainingRun") == run else None

        return dict(self.wait(f"ModelDeployment {md} to serve the version of {run}", done))

    def evaluation(self, policy: str, verdict: str, after: str = "") -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            last = self.status("DriftPolicy", policy).get("lastEvaluation") or {}
            return last if last.get("verdict") == verdict and last.get("time", "") > after else None

        found: dict[str, Any] = self.wait(f"DriftPolicy {policy} to evaluate {verdict}", done)
        scores = ", ".join(f"{f['name']} {f['test']} {f['value']:.3f}{' DRIFTED' if f['drifted'] else ''}"
                           for f in found.get("features") or ())
        self.say(f"drift evaluation over {found['samples']} rows: {verdict} (share "
                 f"{found.get('driftedShare') or 0:.2f}); {scores}")
        return found

    def share_on(self, traffic: Traffic, revision: str, what: str, wanted: float = 1.0) -> float:
        """Wait until the last RECENT answers came from `revision` in at least the `wanted` share."""
        def done() -> float | None:
            recent = traffic.recent()
            share = recent.count(revision) / len(recent) if len(recent) >= RECENT else 0.0
            return share if share >= wanted else None

        share: float = self.wait(what, done, timeout=60)
        self.say(f"traffic: {share:.0%} of the last {RECENT} answers through the proxy came from revision {revision}")
        return share


def run_loop(api_client: Any, namespace: str, s3: Any, out: Callable[[str], None] = print,
             bad_candidate: bool = True, step_timeout: float = 240, via_api: bool = False) -> Facts:
    """Run the loop in `namespace` (a Secret `s3-credentials` there, buckets `datasets` and `models`
    reachable with `s3`, the operator watching it). Returns what it saw; raises LoopFailed. With
    `via_api` the traffic reaches the pods through the apiserver's pod proxy (a kind cluster)."""
    loop = Loop(api_client, namespace, out, step_timeout)
    facts = Facts()
    folder = examples_dir()
    objects = {name: yaml.safe_load((folder / name).read_text()) for name in (*ORDER, "bad-candidate.yaml")}
    run = objects["trainingrun.yaml"]["metadata"]["name"]
    md = objects["modeldeployment.yaml"]["metadata"]["name"]
    policy = objects["driftpolicy.yaml"]["metadata"]["name"]
    model = objects["trainingrun.yaml"]["spec"]["model"]

    rows, labels = iris_rows()
    new_rows = shifted(rows)
    s3.put_object(Bucket="datasets", Key="iris/train.csv", Body=to_csv(rows, labels))
    loop.say(f"data: s3://datasets/iris/train.csv ({len(rows)} labelled rows)")
    for name in ORDER:
        loop.apply(objects[name])

    loop.trained(run)
    status = loop.serving(md, run)
    facts.first_revision = status["stable"]["revision"]
    proxy = Proxy(Resolver(api_client, namespace, md), via_api=via_api).start()
    loop.say(f"serving revision {facts.first_revision}; `mlops dev proxy svc/{md}` forwards {proxy.url}")
    traffic = Traffic(proxy.url, model, rows)
    try:
        code, revision, answer = traffic.send([rows[0]])
        if code != 200:
            raise LoopFailed(f"the first inference through the proxy answered {code}")
        facts.first_answer = answer["outputs"][0]["data"]
        loop.say(f"POST {traffic.url} {rows[0]} → {facts.first_answer} (revision {revision})")
        traffic.start()
        loop.say(f"traffic: {traffic.batch} rows per request every {traffic.pause} s through the proxy, "
                 "drawn from the training distribution")
        facts.baseline_verdict = loop.evaluation(policy, "NotDrifted")["verdict"]

        s3.put_object(Bucket="datasets", Key="iris/latest.csv", Body=to_csv(new_rows, labels))
        traffic.rows = new_rows
        moved = ", ".join(f"{c} +{s}" for c, s in zip(COLUMNS, SHIFT, strict=True) if s)
        loop.say(f"the input distribution shifts (a new sensor: {moved}); "
                 f"the data pipeline writes the newly labelled rows to s3://datasets/iris/latest.csv")
        drifted = loop.evaluation(policy, "Drifted")
        facts.drifted_features = [f["name"] for f in drifted.get("features") or () if f["drifted"]]

        def retrain_created() -> str | None:
            retrains = loop.status("DriftPolicy", policy).get("retrains") or []
            return str(retrains[-1]["name"]) if retrains else None

        facts.retrain = loop.wait("the DriftPolicy to create a retrain TrainingRun", retrain_created)
        loop.say(f"retraining: TrainingRun {facts.retrain} created by the DriftPolicy")
        facts.retrain_metrics = dict(loop.trained(facts.retrain).get("metrics") or {})
        status = loop.serving(md, facts.retrain)
        facts.new_revision = status["stable"]["revision"]
        last = status.get("lastAnalysis") or {}
        facts.analysis = last if last.get("revision") == facts.new_revision else {}
        promotion: dict[str, Any] = next((h for h in reversed(status.get("history") or ())
                                          if h.get("revision") == facts.new_revision
                                          and h.get("outcome") == "Promoted"), {})
        loop.say(f"promoted revision {facts.new_revision}: {promotion.get('message', '')}")
        facts.share_on_new = loop.share_on(traffic, facts.new_revision,
                                           f"all traffic on revision {facts.new_revision}")
        promoted_at = times.now()
        facts.verdict_after = loop.evaluation(policy, "NotDrifted", after=promoted_at)["verdict"]
        loop.say(f"the new version's reference profile matches live traffic: DriftPolicy {policy} "
                 f"Drifted={loop.condition('DriftPolicy', policy, 'Drifted').get('status')}")

        if bad_candidate:
            bad = objects["bad-candidate.yaml"]
            loop.apply(bad)
            loop.trained(bad["metadata"]["name"])

            def rejected() -> dict[str, Any] | None:
                status = loop.status("ModelDeployment", md)
                entry = next((h for h in reversed(status.get("history") or ())
                              if h.get("trainingRun") == bad["metadata"]["name"]), None)
                if entry and entry.get("outcome") == "Promoted":
                    raise LoopFailed(f"the bad version {entry['revision']} was promoted")
                return entry if entry and entry.get("outcome") == "RolledBack" else None

            entry = loop.wait(f"the bad version {bad['metadata']['name']} to be rolled back", rejected)
            facts.bad_revision, facts.bad_message = entry["revision"], entry.get("message", "")
            loop.say(f"rolled back revision {facts.bad_revision}: {facts.bad_message}")
            if (loop.status("ModelDeployment", md).get("stable") or {}).get("revision") != facts.new_revision:
                raise LoopFailed("the serving revision changed while the bad version was rolled back")
            facts.share_on_stable_during_bad = loop.share_on(
                traffic, facts.new_revision, f"traffic to stay on revision {facts.new_revision}")
        loop.poll()
    finally:
        traffic.stop()
        proxy.stop()
    facts.errors = traffic.errors
    facts.seconds = time.monotonic() - loop.started
    loop.say(f"the loop closed: {sum(traffic.by_revision.values())} requests answered "
             f"({dict(traffic.by_revision)}), {traffic.errors} failed")
    return facts
