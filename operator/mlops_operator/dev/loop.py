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
LATER = ("bad-candidate.yaml", "canary.yaml", "qualitypolicy.yaml", "corrupted.yaml")
SWAPPED = {"versicolor": "virginica", "virginica": "versicolor"}  # the concept shift: two labels trade places
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


def to_csv(rows: list[Row], labels: list[str], columns: tuple[str, ...] = COLUMNS) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*columns, "species"])
    writer.writerows([*r, label] for r, label in zip(rows, labels, strict=True))
    return out.getvalue().encode()


class Traffic(threading.Thread):
    """Steady V2 inference traffic through the proxy: batches of rows drawn from `rows`, which the
    loop switches; counts answers by the revision that gave them. With `labels` (each row's true label)
    it is also the labeller: every answer's id gets its rows' ground truth, as `concept` now says it,
    posted to the model's feedback endpoint."""

    def __init__(self, url: str, model: str, rows: list[Row], labels: list[str] | None = None, batch: int = 10,
                 pause: float = 0.15) -> None:
        super().__init__(name="mlops-demo-traffic", daemon=True)
        self.url = f"{url}/v2/models/{model}/infer"
        self.feedback_url = f"{url}/v2/models/{model}/feedback"
        self.rows, self.labels, self.batch, self.pause = rows, labels, batch, pause
        self.concept: Callable[[str], str] = str  # the truth of a row with this label (the concept shifts)
        self.by_revision: collections.Counter[str] = collections.Counter()
        self.errors = 0
        self.labelled = 0
        self.feedback_errors = 0
        self.without_id: collections.Counter[str] = collections.Counter()  # answers no label can name, by revision
        self.last: list[str] = []
        self._halt = threading.Event()
        self._random = random.Random(7)
        self._lock = threading.Lock()

    @staticmethod
    def post(url: str, payload: dict[str, Any]) -> tuple[int, str, dict[str, Any]]:
        request = urllib.request.Request(url, data=json.dumps(payload).encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:
                return int(resp.status), resp.headers.get("x-mlops-revision", ""), json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.headers.get("x-mlops-revision", ""), {}
        except OSError:
            return 0, "", {}

    def send(self, rows: list[Row]) -> tuple[int, str, dict[str, Any]]:
        return self.post(self.url, {"inputs": [{"name": "x", "shape": [len(rows), len(COLUMNS)], "datatype": "FP64",
                                                "data": rows}]})

    def label(self, id_: str, truth: list[str], attempts: int = 5) -> int:
        """Post the ground truth of an answer's rows: the number of rows labelled, or -1 when every attempt
        was refused (a labelling pipeline retries: a Pod going away, or a full label queue's 503)."""
        for _ in range(attempts):
            done, _, _ = self.post(self.feedback_url, {id_: truth})
            if done == 200:
                return len(truth)
            self._halt.wait(0.5)
        return -1

    def run(self) -> None:
        while not self._halt.is_set():
            rows, labels, concept = self.rows, self.labels, self.concept
            picked = [self._random.randrange(len(rows)) for _ in range(self.batch)]
            status, revision, answer = self.send([rows[i] for i in picked])
            labelled = 0
            if status == 200 and labels is not None:
                if answer.get("id"):
                    labelled = self.label(answer["id"], [concept(labels[i]) for i in picked])
                else:
                    self.without_id[revision] += 1
            with self._lock:
                if status == 200:
                    self.by_revision[revision] += 1
                    self.last = [*self.last[-(RECENT - 1):], revision]
                else:
                    self.errors += 1
                if labelled < 0:
                    self.feedback_errors += 1
                else:
                    self.labelled += labelled
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
    # the concept shift: live quality from the labels, a retrain on captured data, a canary judged on labels
    performance_before: dict[str, Any] = field(default_factory=dict)
    performance_degraded: dict[str, Any] = field(default_factory=dict)
    concept_retrain: str = ""
    concept_run: dict[str, Any] = field(default_factory=dict)
    concept_revision: str = ""
    concept_analysis: dict[str, Any] = field(default_factory=dict)
    share_on_concept: float = 0.0
    performance_after: dict[str, Any] = field(default_factory=dict)
    corrupted: dict[str, Any] = field(default_factory=dict)
    stable_after_corrupted: str = ""
    labelled: int = 0
    feedback_errors: int = 0
    without_id: int = 0
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
                live = f"; live quality: {json.dumps(status['liveQuality'])}" if status.get("liveQuality") else ""
                raise LoopFailed(f"the version of {run} was rolled back: "
                                 f"{self.condition('ModelDeployment', md, 'Progressing').get('message', '')}{live}")
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

    def patch(self, kind: str, name: str, body: dict[str, Any]) -> None:
        """A merge patch (the demo's `kubectl patch --type merge`): null removes a field."""
        self.custom.patch_namespaced_custom_object(GROUP, VERSION, self.namespace, BY_KIND[kind].plural, name, body)
        self.say(f"patched {kind}/{name}: {', '.join(sorted(body.get('spec') or {}))}")

    def performance(self, policy: str, verdict: str, revision: str = "") -> dict[str, Any]:
        """Wait for the policy's judgement of live quality to be `verdict` (of `revision`, when given)."""
        def done() -> dict[str, Any] | None:
            last = self.status("DriftPolicy", policy).get("lastPerformance") or {}
            return last if last.get("verdict") == verdict and last.get("revision", "") == (
                revision or last.get("revision", "")) else None

        found: dict[str, Any] = self.wait(f"DriftPolicy {policy} to judge live quality {verdict}", done)
        value = found.get("value")
        self.say(f"live {found['metric']} of revision {found['revision']}: "
                 f"{'-' if value is None else f'{value:.3f}'} over {found.get('labelled', 0)} labelled rows "
                 f"(floor {found.get('limit')}): {verdict}")
        return found

    def retrain_of(self, policy: str, after: int = 0) -> str:
        """The name of the policy's retrain number `after + 1`, once it has created it."""
        def created() -> str | None:
            retrains = self.status("DriftPolicy", policy).get("retrains") or []
            return str(retrains[after]["name"]) if len(retrains) > after else None

        name: str = self.wait(f"the DriftPolicy {policy} to create a retrain TrainingRun", created)
        self.say(f"retraining: TrainingRun {name} created by the DriftPolicy {policy}")
        return name


def run_loop(api_client: Any, namespace: str, s3: Any, out: Callable[[str], None] = print,
             bad_candidate: bool = True, step_timeout: float = 240, via_api: bool = False) -> Facts:
    """Run the loop in `namespace` (a Secret `s3-credentials` there, buckets `datasets` and `models`
    reachable with `s3`, the operator watching it). Returns what it saw; raises LoopFailed. With
    `via_api` the traffic reaches the pods through the apiserver's pod proxy (a kind cluster)."""
    loop = Loop(api_client, namespace, out, step_timeout)
    facts = Facts()
    folder = examples_dir()
    objects = {name: yaml.safe_load((folder / name).read_text()) for name in (*ORDER, *LATER)}
    run = objects["trainingrun.yaml"]["metadata"]["name"]
    md = objects["modeldeployment.yaml"]["metadata"]["name"]
    model = objects["trainingrun.yaml"]["spec"]["model"]

    rows, labels = iris_rows()
    s3.put_object(Bucket="datasets", Key="iris/train.csv", Body=to_csv(rows, labels))
    loop.say(f"data: s3://datasets/iris/train.csv ({len(rows)} labelled rows)")
    for name in ORDER:
        loop.apply(objects[name])

    loop.trained(run)
    status = loop.serving(md, run)
    facts.first_revision = status["stable"]["revision"]
    proxy = Proxy(Resolver(api_client, namespace, md), via_api=via_api).start()
    loop.say(f"serving revision {facts.first_revision}; `mlops dev proxy svc/{md}` forwards {proxy.url}")
    traffic = Traffic(proxy.url, model, rows, labels)
    try:
        code, revision, answer = traffic.send([rows[0]])
        if code != 200:
            raise LoopFailed(f"the first inference through the proxy answered {code}")
        facts.first_answer = answer["outputs"][0]["data"]
        loop.say(f"POST {traffic.url} {rows[0]} → {facts.first_answer} (revision {revision}, id {answer.get('id')})")
        traffic.start()
        loop.say(f"traffic: {traffic.batch} rows per request every {traffic.pause} s through the proxy, "
                 f"drawn from the training distribution; each answer's id gets its rows' true species at "
                 f"{traffic.feedback_url.removeprefix(proxy.url)}, as a labelling pipeline would")
        _data_drift(loop, traffic, objects, facts, s3)
        if bad_candidate:
            _bad_candidate(loop, traffic, objects, facts)
        _concept_drift(loop, traffic, objects, facts)
        _corrupted(loop, objects, facts, s3)
        loop.poll()
    finally:
        traffic.stop()
        proxy.stop()
    facts.errors, facts.labelled, facts.feedback_errors = traffic.errors, traffic.labelled, traffic.feedback_errors
    facts.without_id = sum(traffic.without_id.values())
    facts.seconds = time.monotonic() - loop.started
    loop.say(f"the loop closed: {sum(traffic.by_revision.values())} requests answered "
             f"({dict(traffic.by_revision)}), {traffic.errors} failed; {traffic.labelled} rows labelled, "
             f"{traffic.feedback_errors} labels refused, {sum(traffic.without_id.values())} answers without an id "
             f"({dict(traffic.without_id)})")
    return facts


def _data_drift(loop: Loop, traffic: Traffic, objects: dict[str, Any], facts: Facts, s3: Any) -> None:
    """The inputs shift: drift found, one retrain on the newest labelled data, analysed, promoted."""
    md = objects["modeldeployment.yaml"]["metadata"]["name"]
    policy = objects["driftpolicy.yaml"]["metadata"]["name"]
    facts.baseline_verdict = loop.evaluation(policy, "NotDrifted")["verdict"]
    new_rows = shifted(traffic.rows)
    s3.put_object(Bucket="datasets", Key="iris/latest.csv", Body=to_csv(new_rows, traffic.labels or []))
    traffic.rows = new_rows
    moved = ", ".join(f"{c} +{s}" for c, s in zip(COLUMNS, SHIFT, strict=True) if s)
    loop.say(f"the input distribution shifts (a new sensor: {moved}); "
             f"the data pipeline writes the newly labelled rows to s3://datasets/iris/latest.csv")
    drifted = loop.evaluation(policy, "Drifted")
    facts.drifted_features = [f["name"] for f in drifted.get("features") or () if f["drifted"]]
    facts.retrain = loop.retrain_of(policy)
    facts.retrain_metrics = dict(loop.trained(facts.retrain).get("metrics") or {})
    status = loop.serving(md, facts.retrain)
    facts.new_revision = status["stable"]["revision"]
    last = status.get("lastAnalysis") or {}
    facts.analysis = last if last.get("revision") == facts.new_revision else {}
    loop.say(f"promoted revision {facts.new_revision}: {_promotion(status, facts.new_revision)}")
    facts.share_on_new = loop.share_on(traffic, facts.new_revision, f"all traffic on revision {facts.new_revision}")
    promoted_at = times.now()
    facts.verdict_after = loop.evaluation(policy, "NotDrifted", after=promoted_at)["verdict"]
    loop.say(f"the new version's reference profile matches live traffic: DriftPolicy {policy} "
             f"Drifted={loop.condition('DriftPolicy', policy, 'Drifted').get('status')}")


def _bad_candidate(loop: Loop, traffic: Traffic, objects: dict[str, Any], facts: Facts) -> None:
    """A version that passed a lax gate fails its comparison with the serving one and is rolled back."""
    md = objects["modeldeployment.yaml"]["metadata"]["name"]
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
    facts.share_on_stable_during_bad = loop.share_on(traffic, facts.new_revision,
                                                     f"traffic to stay on revision {facts.new_revision}")


def _concept_drift(loop: Loop, traffic: Traffic, objects: dict[str, Any], facts: Facts) -> None:
    """The labels move while the inputs do not: live accuracy falls, the quality policy retrains on the
    captured labelled calls (checked first), and the new version, a canary, is promoted on live labels."""
    md = objects["modeldeployment.yaml"]["metadata"]["name"]
    policy = objects["qualitypolicy.yaml"]["metadata"]["name"]
    serving = (loop.status("ModelDeployment", md).get("stable") or {}).get("revision", "")
    loop.patch("ModelDeployment", md, objects["canary.yaml"])
    loop.apply(objects["qualitypolicy.yaml"])
    facts.performance_before = loop.performance(policy, "WithinLimits", serving)
    traffic.concept = lambda label: SWAPPED.get(label, label)
    loop.say("the concept shifts: the inputs stay as they are, but what the labellers now call versicolor the "
             "model calls virginica and the other way round; the labels posted from now on say so")
    facts.performance_degraded = loop.performance(policy, "Degraded", serving)
    facts.concept_retrain = loop.retrain_of(policy)
    facts.concept_run = loop.trained(facts.concept_retrain)
    checks = facts.concept_run.get("dataChecks") or {}
    record = facts.concept_run.get("reproducibility") or {}
    loop.say(f"the training set was {record.get('capturedRows')} labelled calls captured in production "
             f"({record.get('capturedFileCount')} files, digest {str(record.get('datasetDigest', ''))[:19]}…); "
             f"data checks {'passed' if checks.get('passed') else 'did not pass'} over {checks.get('rows')} rows")

    def canary() -> dict[str, Any] | None:
        status = loop.status("ModelDeployment", md)
        return status if status.get("candidate") and status.get("currentStep") is not None else None

    step = loop.wait(f"the version of {facts.concept_retrain} to take its canary step", canary)
    candidate = step["candidate"]["revision"]
    loop.say(f"canary: revision {candidate} takes {step.get('trafficSummary') or 'its share'}; "
             "both revisions are judged on the labels of the same calls")
    loop.share_on(traffic, candidate, f"the proxy to send part of the traffic to revision {candidate}", wanted=0.2)
    status = loop.serving(md, facts.concept_retrain)
    facts.concept_revision = status["stable"]["revision"]
    last = status.get("lastAnalysis") or {}
    facts.concept_analysis = last if last.get("revision") == facts.concept_revision else {}
    loop.say(f"promoted revision {facts.concept_revision}: {_promotion(status, facts.concept_revision)}: "
             f"{facts.concept_analysis.get('message', '')}")
    facts.share_on_concept = loop.share_on(traffic, facts.concept_revision,
                                           f"all traffic on revision {facts.concept_revision}")
    facts.performance_after = loop.performance(policy, "WithinLimits", facts.concept_revision)


def _corrupted(loop: Loop, objects: dict[str, Any], facts: Facts, s3: Any) -> None:
    """A run on a broken export (a column missing) is stopped by its data checks before training."""
    md = objects["modeldeployment.yaml"]["metadata"]["name"]
    run = objects["corrupted.yaml"]
    name = run["metadata"]["name"]
    rows, labels = iris_rows()
    broken = [r[:-1] for r in rows]  # petal_width lost by the export
    s3.put_object(Bucket="datasets", Key="iris/corrupted.csv", Body=to_csv(broken, labels, COLUMNS[:-1]))
    loop.say("a broken export writes s3://datasets/iris/corrupted.csv without its petal_width column")
    loop.apply(run)

    def stopped() -> dict[str, Any] | None:
        succeeded = loop.condition("TrainingRun", name, "Succeeded")
        if succeeded.get("status") == "True":
            raise LoopFailed(f"TrainingRun {name} trained on the corrupted data")
        return succeeded if succeeded.get("status") == "False" else None

    facts.corrupted = loop.wait(f"the data checks to stop TrainingRun {name}", stopped)
    loop.say(f"stopped before training: {name} {facts.corrupted.get('reason')}: {facts.corrupted.get('message')}")
    facts.stable_after_corrupted = (loop.status("ModelDeployment", md).get("stable") or {}).get("revision", "")


def _promotion(status: dict[str, Any], revision: str) -> str:
    """The message of the revision's promotion in the deployment's history."""
    found: dict[str, Any] = next((h for h in reversed(status.get("history") or ()) if h.get("revision") == revision
                                  and h.get("outcome") == "Promoted"), {})
    return str(found.get("message", ""))
