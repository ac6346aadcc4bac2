"""Live quality's decisions with plain dicts: when a ModelDeployment's join Job starts, what its answer leaves in
status.liveQuality, a restart in the middle, a failed join; and the manifests capture and the join are built
into (the join itself runs for real in test_capture.py, the whole on the real cluster in test_quality.py)."""

from __future__ import annotations

import datetime
import json
from typing import Any

from mlops_operator.api import labels as L
from mlops_operator.api import times
from mlops_operator.api.artifacts import ArtifactError
from mlops_operator.api.modeldeployment import ModelDeploymentSpec
from mlops_operator.api.quality import QualityReport, RevisionQuality
from mlops_operator.builders import modeldeployment as build
from mlops_operator.builders.quality import quality_job
from mlops_operator.rollout import quality
from mlops_operator.rollout.spec import check

T0 = datetime.datetime(2026, 12, 5, 12, 0, 0, tzinfo=datetime.UTC)
SPEC: dict[str, Any] = {
    "model": {"storageUri": "s3://models/iris/v1", "digest": "sha256:" + "a" * 64},
    "storage": {"secretRef": {"name": "s3-credentials"}},
    "capture": {"destination": "s3://captures/iris", "sampleRate": "0.5"},
    "groundTruth": {"joinEverySeconds": 60, "windowSeconds": 600, "uri": "pvc://labels/truth"},
}


def md(status: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "mlops.dev/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": "iris", "namespace": "ns", "uid": "u-1"}, "spec": {**SPEC, **spec},
            "status": status or {}}


def decide(body: dict[str, Any], jobs: dict[str, Any], answers: dict[str, Any],
           now: datetime.datetime) -> quality.Quality:
    return quality.decide(body, ModelDeploymentSpec.model_validate(body["spec"]), jobs, answers, now)


def job(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": {L.QUALITY: "iris"}}}


def report() -> QualityReport:
    return QualityReport(until=T0.timestamp(), labels=12, unknown_labels=2, duplicate_labels=1, revisions=[
        RevisionQuality(revision="r1", predictions=20, labelled=10, correct=7, classes=["0", "1"],
                        confusion=[[4, 1], [2, 3]])])


def test_a_join_starts_its_answer_lands_in_status_and_the_next_waits_for_the_interval() -> None:
    first = decide(md(), {}, {}, T0)
    [(name, purpose, (since, until))] = first.start
    assert purpose == "quality" and name == quality.job_name(md(), "2026-12-05T12:00:00Z")
    assert (float(since), float(until)) == (T0.timestamp() - 600, T0.timestamp())
    status = {"liveQuality": first.wire()}
    # running: nothing new, looked at again shortly
    running = decide(md(status), {name: job(name)}, {}, T0 + datetime.timedelta(seconds=5))
    assert running.start == [] and running.delete == [] and running.requeue_after == quality.RETRY_SECONDS
    # answered: read once, the Job deleted, the next join at the interval after the first started
    done = decide(md(status), {name: job(name)}, {name: report()}, T0 + datetime.timedelta(seconds=20))
    live = done.wire()
    assert live is not None and done.delete == [name] and done.start == [] and done.requeue_after == 40
    [rev] = live["revisions"]
    assert rev["metrics"] == {"accuracy": 0.7} and rev["confusion"] == [[4, 1], [2, 3]] and rev["labelled"] == 10
    assert (live["labels"], live["unknownLabels"], live["duplicateLabels"]) == (12, 2, 1)
    assert live["time"] == "2026-12-05T12:00:00Z" and live["windowSeconds"] == 600 and "job" not in live
    later = decide(md({"liveQuality": live}), {}, {}, T0 + datetime.timedelta(seconds=61))
    [(second, _, _)] = later.start
    assert second != name and later.wire()["revisions"] == live["revisions"]  # kept until the next answer


def test_a_restart_makes_the_same_job_again_and_a_failure_keeps_the_last_counts() -> None:
    first = decide(md(), {}, {}, T0)
    status = {"liveQuality": first.wire()}
    # the operator restarted before it saw its Job: the same name, the same window (no row counted twice)
    again = decide(md(status), {}, {}, T0 + datetime.timedelta(seconds=3))
    assert again.start == first.start
    name = first.start[0][0]
    answered = decide(md(status), {name: job(name)}, {name: report()}, T0 + datetime.timedelta(seconds=10)).wire()
    second = decide(md({"liveQuality": answered}), {}, {}, T0 + datetime.timedelta(seconds=60))
    name2 = second.start[0][0]
    failed = decide(md({"liveQuality": second.wire()}), {name2: job(name2)},
                    {name2: ArtifactError("s3://captures/iris: access denied (AccessDenied)")},
                    T0 + datetime.timedelta(seconds=70))
    live = failed.wire()
    assert live is not None and "access denied" in live["message"] and failed.delete == [name2]
    assert failed.events == [("QualityJoinFailed", live["message"], True)]
    assert live["revisions"] == answered["revisions"] and live["time"] == answered["time"]  # the last counts kept
    assert failed.requeue_after == 50  # tried again at the interval


def test_without_ground_truth_nothing_is_joined_and_its_jobs_go() -> None:
    body = md()
    del body["spec"]["groundTruth"]
    gone = decide(body, {"iris-q-1": job("iris-q-1")}, {}, T0)
    assert gone.wire() is None and gone.start == [] and gone.delete == ["iris-q-1"]
    body["spec"] = {**SPEC, "capture": None}
    assert check(ModelDeploymentSpec.model_validate(body["spec"])) == [
        "spec.groundTruth: needs spec.capture (the predictions the labels are joined to)"]


def test_the_server_captures_with_the_namespaces_credentials_and_the_join_job_is_restricted() -> None:
    body = md()
    spec = ModelDeploymentSpec.model_validate(body["spec"])
    dep = build.deployment(body, spec, "r1", model_uri="s3://models/iris/v1", digest=spec.model.digest,
                           replicas=1, runtime_image="runtime:1")
    server = dep["spec"]["template"]["spec"]["containers"][0]
    args = server["args"]
    assert args[args.index("--capture-to") + 1] == "s3://captures/iris" and "--revision" in args
    assert args[args.index("--capture-sample-rate") + 1] == "0.5"
    assert server["envFrom"] == [{"secretRef": {"name": "s3-credentials"}}]
    assert {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in server["env"]
    # a claim: mounted where the server writes, the URI made a path in it
    spec = ModelDeploymentSpec.model_validate({**SPEC, "capture": {"destination": "pvc://shared/iris"}})
    dep = build.deployment(body, spec, "r1", model_uri="s3://models/iris/v1", digest=spec.model.digest,
                           replicas=1, runtime_image="runtime:1")
    pod = dep["spec"]["template"]["spec"]
    args = pod["containers"][0]["args"]
    assert args[args.index("--capture-to") + 1] == f"file://{build.CAPTURE_DIR}/iris"
    assert {"name": "capture", "persistentVolumeClaim": {"claimName": "shared"}} in pod["volumes"]
    assert "envFrom" not in pod["containers"][0]

    spec = ModelDeploymentSpec.model_validate(SPEC)
    j = quality_job(body, spec, "iris-q-x", 100.0, 700.0, runtime_image="runtime:1")
    pod = j["spec"]["template"]["spec"]
    [c] = pod["containers"]
    assert c["args"] == ["quality", "--captured", "s3://captures/iris", "--since", "100.000", "--until", "700.000",
                         "--labels", "file:///mnt/labels/truth"]
    assert c["envFrom"] == [{"secretRef": {"name": "s3-credentials"}}]
    assert {"name": "labels", "mountPath": "/mnt/labels", "readOnly": True} in c["volumeMounts"]
    assert c["securityContext"]["readOnlyRootFilesystem"] and not pod["automountServiceAccountToken"]
    assert j["metadata"]["labels"][L.QUALITY] == "iris" and j["metadata"]["ownerReferences"][0]["uid"] == "u-1"


def test_a_training_run_from_capture_tells_the_trainer_and_refuses_unlabelled_rows() -> None:
    from mlops_operator.api.trainingrun import TrainingRunSpec
    from mlops_operator.builders.trainingrun import training_job
    from mlops_operator.training.spec import check as check_run

    raw = {"model": "iris", "trainer": {"estimator": "sklearn.tree.DecisionTreeClassifier"},
           "dataset": {"fromCapture": {"uri": "s3://captures/iris", "sinceSeconds": 86400,
                                       "plus": "s3://data/iris.csv"}, "targetColumn": "target"}}
    spec = TrainingRunSpec.model_validate(raw)
    assert check_run(spec) == []
    run = {"apiVersion": "mlops.dev/v1alpha1", "kind": "TrainingRun",
           "metadata": {"name": "iris-q-1", "namespace": "ns", "uid": "u-2"}, "spec": raw}
    env = {e["name"]: e.get("value") for e in training_job(run, spec, runtime_image="runtime:1",
                                                             artifact_root="s3://models")["spec"]["template"]
           ["spec"]["containers"][0]["env"]}
    assert "MLOPS_DATASET_URI" not in env and env["MLOPS_TARGET_COLUMN"] == "target"
    assert json.loads(env["MLOPS_DATASET_FROM_CAPTURE"]) == {"uri": "s3://captures/iris", "sinceSeconds": 86400,
                                                              "labelled": True, "plus": "s3://data/iris.csv"}
    raw["dataset"]["fromCapture"]["labelled"] = False
    assert check_run(TrainingRunSpec.model_validate(raw)) == [
        "spec.dataset.fromCapture.labelled: must be true (a row is trained on with its label)"]


# -- a canary judged on live quality (analysis.liveQuality) ---------------------------------------------

def quality_canary(strategy: dict[str, Any] | None = None, **live_quality: Any) -> Any:
    from dataclasses import dataclass

    from mlops_operator.api.modeldeployment import LiveQuality
    from tests.unit.test_rollout import ANALYSIS, World, report, run, side, stream

    @dataclass
    class QualityWorld(World):
        joined: dict[str, Any] | None = None
        """status.liveQuality as the join left it."""

        def observed(self) -> Any:
            obs = super().observed()
            obs.live_quality = LiveQuality.model_validate(self.joined) if self.joined else None
            return obs

    spec = stream(strategy=strategy or {"type": "Canary", "canary": {"steps": [{"weight": 50, "pauseSeconds": 10}]}},
                  replicas=2, analysis={**ANALYSIS, "liveQuality": {"metric": "accuracy", "minLabels": 50,
                                                                    "maxDegradation": "0.02", **live_quality}},
                  capture={"destination": "s3://captures/iris"}, groundTruth={"joinEverySeconds": 10})
    w = QualityWorld(spec=spec, runs=[run(1)], report=report())
    w.settle()
    w.runs.append(run(2))
    w.report = report(side(), side())
    return w


def joined_at(w: Any, seconds_after_step: float, cand: tuple[int, float], stable: tuple[int, float]) -> None:
    stamp = times.stamp(times.parse(w.status["stepSince"]) + datetime.timedelta(seconds=seconds_after_step))
    w.joined = {"time": stamp, "revisions": [
        {"revision": w.status["candidate"]["revision"], "labelled": cand[0], "metrics": {"accuracy": cand[1]}},
        {"revision": w.status["stable"]["revision"], "labelled": stable[0], "metrics": {"accuracy": stable[1]}}]}


def test_a_canary_waits_for_labels_then_is_promoted_when_its_live_accuracy_holds() -> None:
    from tests.unit.test_rollout import counters

    w = quality_canary()
    w.live = counters(0)
    w.settle(4)
    assert w.status["currentStep"] == 0
    cand = w.status["candidate"]["revision"]
    joined_at(w, 5, (80, 0.95), (90, 0.90))  # a join from within the pause: not the step's
    w.live = counters(100)
    w.step(11)
    assert w.cond("Progressing")["reason"] == "WaitingForLabels" and "candidate" in w.status
    joined_at(w, 12, (20, 0.95), (90, 0.90))  # after the step, too few labels of the candidate: still waiting
    w.step(2)
    assert w.cond("Progressing")["reason"] == "WaitingForLabels"
    joined_at(w, 14, (60, 0.95), (90, 0.90))
    w.settle(3)
    assert w.status["stable"]["revision"] == cand
    measured = w.status["history"][-1]["message"] + w.status["lastAnalysis"]["message"]
    assert "live accuracy 0.95 over 60 labels against the stable revision's 0.9" in measured
    assert w.status["lastAnalysis"]["measurements"]["live_accuracy"] == 0.95


def test_a_canary_worse_on_live_labels_or_never_labelled_is_rolled_back() -> None:
    from tests.unit.test_rollout import counters

    w = quality_canary()
    w.live = counters(0)
    w.settle(4)
    stable = w.status["stable"]["revision"]
    joined_at(w, 12, (60, 0.80), (90, 0.90))
    w.live = counters(100)
    w.step(13)
    assert w.cond("Progressing")["reason"] == "RolledBack" and w.services["iris"] == stable
    assert "live accuracy 0.8 over 60 labels" in w.cond("Progressing")["message"]

    w = quality_canary(maxWaitSeconds=30)
    w.live = counters(0)
    w.settle(4)
    joined_at(w, 12, (3, 0.99), (90, 0.90))
    w.live = counters(100)
    w.step(20)
    assert w.cond("Progressing")["reason"] == "WaitingForLabels"
    w.step(25)  # 40 s after the step: past maxWaitSeconds with 3 labels: it fails, never passes by default
    assert w.cond("Progressing")["reason"] == "RolledBack"
    assert "candidate has 3 labelled rows after 30 s, fewer than minLabels 50" in w.cond("Progressing")["message"]


def test_a_blue_green_promotion_worse_on_live_labels_than_the_one_it_replaced_goes_back() -> None:
    from tests.unit.test_rollout import counters

    w = quality_canary(strategy={"type": "BlueGreen", "blueGreen": {"previewReplicas": 1,
                                                                     "scaleDownDelaySeconds": 300}})
    w.live = counters(0)
    w.settle(4)
    new, old = w.status["stable"]["revision"], w.status["previous"]["revision"]
    promoted = times.parse(w.status["stable"]["since"])

    def joined(seconds: float, mine: tuple[int, float], theirs: tuple[int, float]) -> None:
        w.joined = {"time": times.stamp(promoted + datetime.timedelta(seconds=seconds)), "revisions": [
            {"revision": new, "labelled": mine[0], "metrics": {"accuracy": mine[1]}},
            {"revision": old, "labelled": theirs[0], "metrics": {"accuracy": theirs[1]}}]}

    joined(5, (60, 0.93), (200, 0.94))  # within maxDegradation: kept
    w.step(6)
    assert w.status["stable"]["revision"] == new and w.status["previous"]["revision"] == old
    joined(20, (120, 0.70), (200, 0.94))  # the promoted one is worse on the labels: traffic goes back
    w.step(15)
    assert w.status["stable"]["revision"] == old and new in w.status["rejected"]
    assert "live accuracy 0.7 over 120 labels" in w.cond("Progressing")["message"]
