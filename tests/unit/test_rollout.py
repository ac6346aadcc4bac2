"""The rollout state machine with plain dicts: every transition, and a restart at each step.

A small world holds what the API server would: the ModelDeployment (spec, annotations, status), its
Deployments and analysis Jobs, the stream's TrainingRuns. `World.step` runs one reconcile: decide,
fetch what the decision asks for (from what the test says the pods would answer), decide again,
apply the plan to the world (Deployments, Services, Jobs), write status."""

from __future__ import annotations

import asyncio
import copy
import datetime
from dataclasses import dataclass, field
from typing import Any

import pytest

from mlops_operator.api import times
from mlops_operator.api.artifacts import ArtifactError
from mlops_operator.api.modeldeployment import ModelDeploymentSpec, PodCounters
from mlops_operator.api.reports import AnalysisReport, Side, Window
from mlops_operator.conditions import Cond, is_warning
from mlops_operator.rollout import machine
from mlops_operator.rollout.spec import check

T0 = datetime.datetime(2026, 11, 22, 12, 0, tzinfo=datetime.UTC)
DIGEST = {n: "sha256:" + str(n) * 64 for n in range(1, 6)}
ANALYSIS = {"intervalSeconds": 1, "durationSeconds": 2, "successRate": "0.99", "maxP99LatencyMs": 200,
            "compareToStable": {"metric": "accuracy", "maxDegradation": "0.02"}}


def run(n: int, passed: bool = True, minute: int | None = None) -> dict[str, Any]:
    created = times.stamp(T0 + datetime.timedelta(minutes=n if minute is None else minute))
    return {"metadata": {"name": f"iris-v{n}", "creationTimestamp": created},
            "status": {"conditions": [{"type": "GatesPassed", "status": "True" if passed else "False"}],
                       "model": {"uri": f"s3://models/iris-v{n}", "digest": DIGEST[n], "format": "sklearn"}}}


def side(requests: int = 76, errors: int = 0, p99: float = 5.0, accuracy: float = 0.95) -> Side:
    return Side(requests=requests, errors=errors, p50_ms=2.0, p99_ms=p99, metrics={"accuracy": accuracy, "f1": 0.9},
                windows=[Window(requests=requests // 2, errors=errors // 2, p99_ms=p99),
                         Window(requests=requests - requests // 2, errors=errors - errors // 2, p99_ms=p99)])


def report(candidate: Side | None = None, stable: Side | None = None) -> AnalysisReport:
    return AnalysisReport(task="classification", rows=38, candidate=candidate or side(), stable=stable)


@dataclass
class _Fetch:
    """The handler's fetches, answered from the world (and recorded in the order asked)."""

    world: World

    async def urls(self) -> dict[str, list[str]]:
        self.world.needs_seen.append("urls")
        deps = self.world.deployments
        return {r: [f"http://10.0.0.{i}:8080"] for i, r in enumerate(deps) if deps[r]["spec"]["replicas"]}

    async def report(self, revision: str) -> AnalysisReport | ArtifactError:
        self.world.needs_seen.append("report")
        assert self.world.report is not None, "the report is asked for only once the Job finished"
        return self.world.report

    async def live(self, revision: str) -> dict[str, PodCounters]:
        self.world.needs_seen.append("live")
        return dict(self.world.live)


@dataclass
class World:
    spec: dict[str, Any]
    runs: list[dict[str, Any]] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    deployments: dict[str, dict[str, Any]] = field(default_factory=dict)
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    services: dict[str, str | None] = field(default_factory=dict)
    now: datetime.datetime = T0
    ready: bool = True
    """Whether Deployments become available at once."""
    report: AnalysisReport | ArtifactError | None = None
    live: dict[str, PodCounters] = field(default_factory=dict)
    events: list[tuple[str, str, bool]] = field(default_factory=list)
    needs_seen: list[str] = field(default_factory=list)
    gateway_api: bool = False

    def md(self) -> dict[str, Any]:
        return {"metadata": {"name": "iris", "namespace": "ns", "generation": 1, "annotations": dict(self.annotations)},
                "spec": self.spec, "status": copy.deepcopy(self.status)}

    def observed(self) -> machine.Observed:
        return machine.Observed(deployments=copy.deepcopy(self.deployments), jobs=copy.deepcopy(self.jobs),
                                runs=copy.deepcopy(self.runs), now=self.now, gateway_api=self.gateway_api)

    def decide(self) -> machine.Plan:
        spec = ModelDeploymentSpec.model_validate(self.spec)
        assert check(spec) == []
        plan = asyncio.run(machine.resolve(self.md(), spec, self.observed(), _Fetch(self)))
        assert plan.needs is None, plan.needs  # nothing moved while it looked: every need is met at once
        return plan

    def step(self, seconds: float = 1, write_status: bool = True) -> machine.Plan:
        self.now += datetime.timedelta(seconds=seconds)
        for dep in self.deployments.values():  # the Deployment controller did its work meanwhile
            replicas = dep["spec"]["replicas"]
            dep["status"] = {**dep["status"], "observedGeneration": 1, "replicas": replicas,
                             "updatedReplicas": replicas, "availableReplicas": replicas if self.ready else 0}
        plan = self.decide()
        for rev, (_, replicas) in plan.replicas.items():
            dep = self.deployments.setdefault(rev, {
                "metadata": {"name": f"iris-{rev}", "generation": 1,
                             "creationTimestamp": times.stamp(self.now)},
                "spec": {"replicas": replicas}, "status": {}})
            dep["spec"]["replicas"] = replicas
        for rev in plan.delete:
            del self.deployments[rev]
        self.services = {"iris": plan.active, "iris-preview": plan.preview}
        if plan.analysis_job is not None:
            self.jobs[plan.analysis_job[0].revision] = {"metadata": {"name": "job"}, "status": {}}
        for rev in plan.delete_jobs:
            del self.jobs[rev]
        if write_status:
            self.status = {k: v for k, v in plan.status.items() if v is not None}
            self.status["conditions"] = [{"type": c.type, "status": c.status, "reason": c.reason,
                                          "message": c.message} for c in plan.conditions]
            self.events += plan.events
        return plan

    def finish_job(self, rev: str | None = None) -> None:
        rev = rev or self.status["candidate"]["revision"]
        self.jobs[rev]["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}

    def cond(self, type_: str) -> dict[str, Any]:
        return next(c for c in self.status["conditions"] if c["type"] == type_)

    def settle(self, steps: int = 6) -> None:
        """Run reconciles until nothing changes (the analysis Job finishing as soon as it exists)."""
        for _ in range(steps):
            for rev, job in self.jobs.items():
                if not job["status"]:
                    self.finish_job(rev)
            self.step()


def stream(**extra: Any) -> dict[str, Any]:
    return {"model": {"fromTrainingRuns": {"model": "iris"}}, "replicas": 2, "analysis": copy.deepcopy(ANALYSIS),
            "strategy": {"type": "BlueGreen", "blueGreen": {"previewReplicas": 1, "scaleDownDelaySeconds": 30}},
            **extra}


def promoted_world(**extra: Any) -> World:
    w = World(spec=stream(**extra), runs=[run(1)], report=report())
    w.settle()
    assert w.status["stable"]["trainingRun"] == "iris-v1"
    return w


def deploying_v2() -> tuple[World, str]:
    """v1 serves; v2 passed its gates and its candidate is starting (not available yet)."""
    w = promoted_world()
    w.runs.append(run(2))
    w.ready = False
    w.step()
    return w, w.status["candidate"]["revision"]


def v2_promoted() -> tuple[World, str]:
    """v1 served, then v2 passed its analysis against it and was promoted; returns v1's revision."""
    w = promoted_world()
    old = w.status["stable"]["revision"]
    w.runs.append(run(2))
    w.report = report(side(), side())
    w.settle()
    return w, old


# -- the first version ---------------------------------------------------------------------------------

def test_first_version_deploys_analyzes_with_absolute_checks_and_promotes() -> None:
    w = World(spec=stream(), runs=[run(1)], report=report(), ready=False)
    plan = w.step()
    cand = w.status["candidate"]
    assert cand["trainingRun"] == "iris-v1" and cand["digest"] == DIGEST[1]
    assert plan.replicas[cand["revision"]][1] == 2  # the first version starts at full size: no traffic yet
    assert w.services == {"iris": None, "iris-preview": cand["revision"]}
    assert w.cond("Progressing")["reason"] == "Deploying" and w.cond("Available")["reason"] == "NoStableVersion"
    w.ready = True
    w.step()  # available: the analysis Job is created with the pods' URLs
    assert w.needs_seen == ["urls"] and w.cond("Progressing")["reason"] == "Analyzing"
    assert w.status["lastAnalysis"]["verdict"] == "Running" and cand["revision"] in w.jobs
    w.step()  # still running: nothing moves
    assert w.cond("Progressing")["reason"] == "Analyzing"
    w.finish_job()
    w.step()
    assert w.needs_seen[-1] == "report"
    assert w.status["stable"]["revision"] == cand["revision"] and "candidate" not in w.status
    assert w.services["iris"] == cand["revision"] and w.jobs == {}
    assert w.cond("Available")["status"] == "True" and w.cond("Ready")["status"] == "True"
    assert w.cond("Progressing") == {"type": "Progressing", "status": "False", "reason": "Promoted",
                                     "message": f"revision {cand['revision']} promoted: analysis passed "
                                     f"({w.status['lastAnalysis']['message']})"}
    assert "accuracy" in w.status["lastAnalysis"]["message"]
    assert [h["outcome"] for h in w.status["history"]] == ["Promoted"]
    assert w.status["traffic"] == {"stable": 100, "candidate": 0, "method": "Service"}


def test_first_version_without_analysis_is_promoted_when_available() -> None:
    spec = stream()
    del spec["analysis"]
    w = World(spec=spec, runs=[run(1)])
    w.step()
    w.step()
    assert w.status["stable"]["trainingRun"] == "iris-v1" and w.jobs == {} and "urls" not in w.needs_seen


def test_a_rejected_first_version_leaves_nothing_serving_and_is_degraded() -> None:
    w = World(spec=stream(), runs=[run(1)], report=report(side(errors=76, requests=76)))
    w.settle()
    assert "stable" not in w.status and w.status["rejected"] == [w.status["history"][0]["revision"]]
    assert w.cond("Degraded")["reason"] == "NoVersionServes" and w.cond("Ready")["status"] == "False"
    assert "every one of 76 requests failed" in w.cond("Progressing")["message"]


# -- champion vs challenger ---------------------------------------------------------------------------

@pytest.mark.parametrize("candidate,stable_side,needle", [
    (side(accuracy=0.80), side(accuracy=0.95), "accuracy 0.8 is worse than the stable revision's 0.95"),
    (side(errors=4), side(), "success rate"),
    (side(p99=450.0), side(), "p99 latency 450 ms > 200 ms"),
    (Side(requests=0, errors=0), side(), "no request was answered"),
])
def test_a_worse_candidate_is_rolled_back_with_its_numbers(candidate: Side, stable_side: Side, needle: str) -> None:
    w = promoted_world()
    stable = w.status["stable"]["revision"]
    w.runs.append(run(2))
    w.report = report(candidate, stable_side)
    w.step()
    cand = w.status["candidate"]["revision"]
    assert w.deployments[cand]["spec"]["replicas"] == 1  # previewReplicas
    w.settle()
    assert w.status["stable"]["revision"] == stable and "candidate" not in w.status
    assert w.status["rejected"] == [cand] and w.deployments[cand]["spec"]["replicas"] == 0
    progressing = w.cond("Progressing")
    assert progressing["reason"] == "RolledBack" and needle in progressing["message"]
    assert w.status["lastAnalysis"]["verdict"] == "Failed" and w.status["lastAnalysis"]["measurements"]
    assert w.cond("Available")["status"] == "True" and w.cond("Degraded")["status"] == "False"
    assert w.services["iris"] == stable
    assert any(r == "RolledBack" and warning for r, _, warning in w.events)
    # the same version is not retried on later reconciles
    w.settle()
    assert "candidate" not in w.status and w.status["rejected"] == [cand]


def test_a_failure_within_the_failure_limit_passes() -> None:
    spec_extra = {"analysis": {**ANALYSIS, "failureLimit": 1}}
    w = promoted_world(**spec_extra)
    w.runs.append(run(2))
    bad_window = side()
    bad_window.windows[0] = Window(requests=38, errors=5, p99_ms=5.0)
    w.report = report(bad_window, side())
    w.settle()
    assert w.status["stable"]["trainingRun"] == "iris-v2"


def test_a_report_that_cannot_be_read_rejects_the_candidate() -> None:
    w = promoted_world()
    w.runs.append(run(2))
    w.report = ArtifactError("mlops analyze: validation.json is missing")
    w.settle()
    assert "validation.json is missing" in w.cond("Progressing")["message"]
    assert w.status["stable"]["trainingRun"] == "iris-v1"


def test_a_candidate_that_never_becomes_available_is_rejected_at_the_deadline() -> None:
    w, cand = deploying_v2()
    w.deployments[cand]["status"]["conditions"] = [
        {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
         "message": 'ReplicaSet "iris-x" has timed out progressing.'}]
    w.step()
    assert w.cond("Progressing")["reason"] == "RolledBack" and "timed out" in w.cond("Progressing")["message"]


# -- the stream only moves forward ---------------------------------------------------------------------

def test_new_passing_run_rolls_out_and_the_old_revision_scales_down_after_the_delay() -> None:
    w, old = v2_promoted()
    assert w.status["stable"]["trainingRun"] == "iris-v2" and w.status["previous"]["revision"] == old
    assert w.deployments[old]["spec"]["replicas"] == 2  # kept to return to
    plan = w.step(20)
    assert plan.requeue_after is not None and plan.requeue_after <= 10
    assert w.deployments[old]["spec"]["replicas"] == 2
    w.step(10)
    assert w.deployments[old]["spec"]["replicas"] == 0 and "previous" not in w.status


def test_failed_runs_older_runs_and_a_deleted_stable_run_change_nothing() -> None:
    w = promoted_world()
    stable = copy.deepcopy(w.status["stable"])
    w.runs.append(run(2, passed=False))
    w.runs.append(run(3, minute=-5))  # created before the stable's run, passing later
    w.settle()
    assert w.status["stable"] == stable and "candidate" not in w.status
    w.runs = [r for r in w.runs if r["metadata"]["name"] != "iris-v1"]
    w.settle()
    assert w.status["stable"] == stable and w.cond("Available")["status"] == "True"


def test_a_newer_run_supersedes_the_candidate_in_flight() -> None:
    w, first = deploying_v2()
    w.runs.append(run(3))
    w.step()
    assert w.status["candidate"]["trainingRun"] == "iris-v3"
    assert w.status["history"][-1]["outcome"] == "Superseded" and w.status["history"][-1]["revision"] == first
    assert w.deployments[first]["spec"]["replicas"] == 0


def test_a_runtime_change_rolls_out_the_same_model_as_a_new_revision_but_replicas_do_not() -> None:
    w = promoted_world()
    stable = w.status["stable"]["revision"]
    w.spec = {**w.spec, "replicas": 3}
    w.settle()
    assert w.status["stable"]["revision"] == stable and w.deployments[stable]["spec"]["replicas"] == 3
    w.spec = {**w.spec, "runtime": {"args": ["--max-body-bytes", "1000"]}}
    w.report = report(side(), side())
    w.settle()
    assert w.status["stable"]["revision"] != stable and w.status["stable"]["digest"] == DIGEST[1]


def test_revisions_beyond_the_history_limit_are_deleted() -> None:
    w = promoted_world(revisionHistoryLimit=1)
    w.report = report(side(), side())
    for n in (2, 3, 4):
        w.runs.append(run(n))
        w.settle()
        w.step(60)
    assert w.status["stable"]["trainingRun"] == "iris-v4"
    assert len(w.deployments) == 2  # the stable one and one scaled-down revision of history


# -- pinned versions -----------------------------------------------------------------------------------

def test_a_rejected_pinned_version_is_degraded_while_the_stable_serves() -> None:
    pinned = stream(model={"storageUri": "s3://models/iris-v1", "digest": DIGEST[1]})
    w = World(spec=pinned, report=report())
    w.settle()
    stable = w.status["stable"]["revision"]
    assert w.status["stable"]["modelUri"] == "s3://models/iris-v1"
    w.spec = {**pinned, "model": {"storageUri": "s3://models/iris-v2", "digest": DIGEST[2]}}
    w.report = report(side(accuracy=0.5), side())
    w.settle()
    assert w.status["stable"]["revision"] == stable
    assert w.cond("Degraded")["reason"] == "PinnedVersionRejected" and w.cond("Ready")["status"] == "False"
    assert w.cond("Available")["status"] == "True"


def test_a_pinned_version_served_unverified_says_so_in_its_verified_condition() -> None:
    w = World(spec=stream(model={"storageUri": "s3://models/iris-v1", "digest": DIGEST[1]}), report=report())
    w.settle()
    assert w.cond("Verified")["status"] == "True" and DIGEST[1] in w.cond("Verified")["message"]
    w.spec = stream(model={"storageUri": "s3://models/iris-v1", "verify": False})
    w.settle()
    verified = w.cond("Verified")
    assert (verified["status"], verified["reason"]) == ("False", "VerificationDisabled")
    assert "s3://models/iris-v1" in verified["message"] and "without checking its digest" in verified["message"]
    assert is_warning(Cond("Verified", verified["status"], verified["reason"]))
    assert promoted_world().cond("Verified")["reason"] == "DigestFromTrainingRun"


# -- commands ------------------------------------------------------------------------------------------

def test_manual_promotion_waits_for_a_promote_naming_the_candidate_and_a_leftover_approves_nothing() -> None:
    w = promoted_world(strategy={"type": "BlueGreen", "blueGreen": {"autoPromotion": False,
                                                                     "scaleDownDelaySeconds": 30}})
    w.runs.append(run(2))
    w.report = report(side(), side())
    w.settle()
    cand = w.status["candidate"]["revision"]
    assert w.cond("Progressing")["reason"] == "AwaitingPromotion" and w.services["iris"] != cand
    w.annotations["mlops.dev/promote"] = "0000dead@1"  # names another revision: ignored
    w.settle()
    assert w.status["candidate"]["revision"] == cand
    assert any(r == "CommandIgnored" for r, _, _ in w.events)
    w.annotations["mlops.dev/promote"] = f"{cand}@2"
    w.step()  # first up to full size (the stable revision's 2 replicas), with traffic where it was
    assert w.cond("Progressing")["reason"] == "Promoting" and w.deployments[cand]["spec"]["replicas"] == 2
    assert w.services["iris"] != cand
    w.step()
    assert w.status["stable"]["revision"] == cand and w.services["iris"] == cand
    assert f"promote={cand}@2" in w.status["handledCommands"]
    # the annotation stays in Git/the object: the next candidate still waits
    w.runs.append(run(3))
    w.settle()
    assert w.status["candidate"]["trainingRun"] == "iris-v3"
    assert w.cond("Progressing")["reason"] == "AwaitingPromotion"


def test_abort_rejects_the_candidate_and_retry_rolls_it_out_again() -> None:
    w, cand = deploying_v2()
    w.annotations["mlops.dev/abort"] = f"{cand}@1"
    w.step()
    assert w.status["rejected"] == [cand] and w.status["history"][-1]["outcome"] == "Aborted"
    assert w.cond("Progressing")["reason"] == "RolledBack"
    w.ready = True
    w.settle()
    assert "candidate" not in w.status
    w.annotations["mlops.dev/retry"] = f"{cand}@2"
    w.report = report(side(), side())
    w.settle()
    assert w.status["stable"]["revision"] == cand and not w.status.get("rejected")


def test_rollback_returns_to_a_revision_that_served_without_analysis_and_stays() -> None:
    w, first = v2_promoted()
    second = w.status["stable"]["revision"]
    w.step(60)  # the old revision scaled down
    assert w.deployments[first]["spec"]["replicas"] == 0
    jobs_before = len(w.needs_seen)
    w.annotations["mlops.dev/rollback"] = f"{first}@1"
    w.step()
    assert w.status["candidate"]["rollback"] is True and w.deployments[first]["spec"]["replicas"] == 2
    w.step()
    assert w.status["stable"]["revision"] == first and w.services["iris"] == first
    assert "report" not in w.needs_seen[jobs_before:]
    assert second in w.status["rejected"]  # the stream does not move forward to it again by itself
    w.settle()
    assert w.status["stable"]["revision"] == first and "candidate" not in w.status
    w.annotations["mlops.dev/rollback"] = "ffffffff@2"
    w.step()
    assert w.events[-1][0] == "CommandIgnored"


# -- canary ---------------------------------------------------------------------------------------------

def counters(requests: int, errors: int = 0, start: str = "t0") -> dict[str, PodCounters]:
    return {"iris-c-1": PodCounters(start_time=start, requests=requests, errors=errors,
                                    latency=[requests - errors, errors] + [0] * 13)}


def canary_world(**analysis: Any) -> World:
    spec = stream(strategy={"type": "Canary", "canary": {"steps": [{"weight": 25, "pauseSeconds": 10},
                                                                    {"weight": 50, "pauseSeconds": 10}]}},
                  replicas=4, analysis={**ANALYSIS, **analysis})
    w = World(spec=spec, runs=[run(1)], report=report())
    w.settle()
    w.runs.append(run(2))
    w.report = report(side(), side())
    return w


def test_canary_walks_the_steps_by_replica_ratio_with_live_analysis_then_promotes() -> None:
    w = canary_world(minRequests=10)
    stable = w.status["stable"]["revision"]
    w.live = counters(100)
    w.settle(4)
    cand = w.status["candidate"]["revision"]
    assert w.status["currentStep"] == 0 and w.services["iris"] == "*"
    assert w.status["traffic"] == {"stable": 75, "candidate": 25, "method": "ReplicaRatio"}
    assert (w.deployments[stable]["spec"]["replicas"], w.deployments[cand]["spec"]["replicas"]) == (3, 1)
    assert w.status["baseline"]["iris-c-1"]["requests"] == 100
    plan = w.step(5)  # within the pause: no measurement
    assert w.status["currentStep"] == 0 and plan.requeue_after == pytest.approx(5, abs=1)
    w.live = counters(160)
    w.step(5)
    assert w.status["currentStep"] == 1 and w.status["lastAnalysis"]["measurements"]["requests"] == 60
    assert w.status["traffic"]["candidate"] == 50
    w.live = counters(250)
    w.step(10)
    assert w.cond("Progressing")["reason"] == "Promoting" and w.deployments[cand]["spec"]["replicas"] == 4
    w.step()
    assert w.status["stable"]["revision"] == cand and w.services["iris"] == cand
    assert w.cond("Progressing")["message"].endswith("all 2 canary steps passed")


def test_canary_with_errors_in_live_traffic_is_rolled_back_to_full_stable() -> None:
    w = canary_world(minRequests=10)
    stable = w.status["stable"]["revision"]
    w.live = counters(0)
    w.settle(4)
    cand = w.status["candidate"]["revision"]
    w.live = counters(50, errors=10)
    w.step(10)
    assert w.cond("Progressing")["reason"] == "RolledBack" and "success rate 0.8" in w.cond("Progressing")["message"]
    assert w.services["iris"] == stable and w.deployments[cand]["spec"]["replicas"] == 0
    assert w.deployments[stable]["spec"]["replicas"] == 4


def test_canary_counts_a_restarted_pod_from_zero_and_too_few_requests_fail() -> None:
    w = canary_world(minRequests=10, failureLimit=1)
    w.live = counters(500, start="t0")
    w.settle(4)
    w.live = counters(30, start="t1")  # the pod restarted: its 30 requests are all new
    w.step(10)
    assert w.status["lastAnalysis"]["measurements"]["requests"] == 30 and w.status["currentStep"] == 1
    w.step(10)  # no new request: a failed measurement, within the failure limit: the step is measured again
    assert w.status["analysisFailures"] == 1 and w.status["currentStep"] == 1
    w.step(10)
    assert w.cond("Progressing")["reason"] == "RolledBack"


# -- a restart at every step ------------------------------------------------------------------------------

def scenario(crash_at: int | None) -> World:
    """Blue-green from v1 to v2; with `crash_at`, the operator dies at that reconcile after writing the
    children and before writing status (the worst moment), and a new one reconciles from what is stored."""
    w = World(spec=stream(), runs=[run(1)], report=report())
    w.settle()
    w.runs.append(run(2))
    w.report = report(side(), side())
    for i in range(8):
        for rev, job in w.jobs.items():
            if not job["status"]:
                w.finish_job(rev)
        before = w.services.get("iris")
        w.step(write_status=i != crash_at)
        after = w.services.get("iris")
        assert before == after or after == w.md()["status"].get("candidate", {}).get("revision") or \
            after == (w.status.get("stable") or {}).get("revision")
    return w


@pytest.mark.parametrize("crash_at", range(6))
def test_an_operator_restarted_at_any_step_reaches_the_same_end_without_flip_flop(crash_at: int) -> None:
    clean, crashed = scenario(None), scenario(crash_at)
    assert crashed.status["stable"]["revision"] == clean.status["stable"]["revision"]
    assert crashed.services == clean.services
    assert sorted(crashed.deployments) == sorted(clean.deployments)  # no duplicate children
    assert [h["outcome"] for h in crashed.status["history"]] == ["Promoted", "Promoted"]


def test_the_decision_is_a_function_of_its_inputs() -> None:
    w = canary_world()
    w.live = counters(10)
    for _ in range(6):
        a, b = w.decide(), w.decide()
        assert (a.status, a.replicas, a.active, a.preview, a.conditions) == \
            (b.status, b.replicas, b.active, b.preview, b.conditions)
        w.step(10)


def test_counters_from_a_monitoring_snapshot() -> None:
    from mlops_operator.rollout.analysis import counters as from_snapshot

    c = from_snapshot({"startTime": 1795366157.9154475, "requests": 3, "errors": 1,
                       "latency": {"buckets": [0.001], "counts": [2, 1], "sum": 0.01}})
    assert c == PodCounters(start_time="1795366157.9154475", requests=3, errors=1, latency=[2, 1])


def test_a_candidate_whose_runs_are_not_seen_goes_on() -> None:
    """After a restart the cache may not hold the TrainingRuns yet (or the run was deleted): the
    candidate recorded in status goes on; it is not dropped and rebuilt."""
    w, cand = deploying_v2()
    w.runs = []
    w.ready = True
    w.report = report(side(), side())
    w.settle()
    assert w.status["stable"]["revision"] == cand
    assert [h["outcome"] for h in w.status["history"]] == ["Promoted", "Promoted"]


# -- Gateway API ------------------------------------------------------------------------------------------



@pytest.mark.parametrize("gateway_api", [True, False])
def test_canary_weights_go_through_an_httproute_when_the_kind_exists(gateway_api: bool) -> None:
    w = canary_world()
    w.spec["traffic"] = {"gateway": {"parentRefs": [{"name": "gw"}]}}
    w.gateway_api = gateway_api
    w.settle(4)
    stable, cand = w.status["stable"]["revision"], w.status["candidate"]["revision"]
    plan = w.step()
    if gateway_api:  # exact weights; the stable keeps its size; each Service selects one revision
        assert w.status["traffic"] == {"stable": 75, "candidate": 25, "method": "HTTPRoute"}
        assert plan.route == (75, 25) and plan.active == stable and plan.preview == cand
        assert (plan.replicas[stable][1], plan.replicas[cand][1]) == (4, 1)
    else:  # said in status and in the Available condition
        assert w.status["traffic"]["method"] == "ReplicaRatio" and plan.route is None and plan.active == "*"
        assert "no Gateway API HTTPRoute kind" in w.cond("Available")["message"]


def test_http_route_builder() -> None:
    from mlops_operator.builders.modeldeployment import http_route, route_weights

    spec = ModelDeploymentSpec.model_validate({**stream(), "traffic": {"gateway": {"parentRefs": [
        {"name": "gw", "namespace": "infra", "sectionName": "http"}]}}})
    md = {"kind": "ModelDeployment", "metadata": {"name": "iris", "namespace": "ns", "uid": "u1",
                                                  "labels": {"argocd.argoproj.io/instance": "x"}}}
    route = http_route(md, spec, "gateway.networking.k8s.io/v1", (90, 10))
    assert route["spec"]["parentRefs"] == [{"name": "gw", "namespace": "infra", "sectionName": "http"}]
    assert route["spec"]["rules"][0]["backendRefs"] == [{"name": "iris", "port": 80, "weight": 90},
                                                        {"name": "iris-preview", "port": 80, "weight": 10}]
    assert "argocd.argoproj.io/instance" not in route["metadata"]["labels"]
    assert route_weights(route) == (90, 10) and route_weights(None) is None


# -- live analysis after a blue-green promotion -------------------------------------------------------------

def test_live_traffic_after_a_promotion_failing_returns_to_the_previous_revision() -> None:
    w, old = v2_promoted()
    new = w.status["stable"]["revision"]
    w.live = counters(100)
    w.step()  # the first look after the promotion: the window starts
    assert w.status["baseline"]["iris-c-1"]["requests"] == 100 and w.status["stepSince"]
    w.live = counters(150, errors=20)
    w.step()  # one interval later: 20 errors in 50 requests
    assert w.status["stable"]["revision"] == old and "previous" not in w.status
    assert w.services["iris"] == old and w.deployments[new]["spec"]["replicas"] == 0
    assert w.deployments[old]["spec"]["replicas"] == 2
    assert new in w.status["rejected"] and w.status["history"][-1]["outcome"] == "RolledBack"
    progressing = w.cond("Progressing")
    assert progressing["reason"] == "RolledBack" and "after its promotion" in progressing["message"]
    assert "success rate 0.6" in progressing["message"]
    assert w.cond("Available")["status"] == "True" and w.cond("Degraded")["status"] == "False"
    w.settle()  # and it stays there: the stream does not roll the rejected version out again
    assert w.status["stable"]["revision"] == old and "candidate" not in w.status


def test_healthy_or_thin_traffic_after_a_promotion_keeps_it_and_the_watch_ends_with_the_delay() -> None:
    w, old = v2_promoted()
    new = w.status["stable"]["revision"]
    w.live = counters(10)
    w.step()
    w.live = counters(10)  # no traffic: nothing to judge, the window goes on
    w.step()
    assert w.status["baseline"]["iris-c-1"]["requests"] == 10
    w.live = counters(60)
    w.step()
    assert w.status["lastAnalysis"]["revision"] == new and w.status["lastAnalysis"]["verdict"] == "Passed"
    assert w.status["lastAnalysis"]["measurements"]["requests"] == 50
    w.step(60)  # past scaleDownDelaySeconds: the old revision goes down and the watch ends
    assert w.status["stable"]["revision"] == new and "previous" not in w.status and "baseline" not in w.status
    assert w.deployments[old]["spec"]["replicas"] == 0
    seen = len(w.needs_seen)
    w.settle()
    assert "live" not in w.needs_seen[seen:]


def test_counters_from_prometheus_answers() -> None:
    from mlops_operator.rollout.analysis import counters_from_prometheus, prometheus_queries

    queries = prometheus_queries("ns", "iris-abc")
    assert queries["requests"] == \
        'sum by (pod) (mlops_requests_total{namespace="ns",pod=~"iris-abc-.+",code!~"4.."})'

    def vector(*rows: tuple[dict[str, str], float]) -> dict[str, Any]:
        return {"status": "success", "data": {"resultType": "vector",
                                              "result": [{"metric": m, "value": [1.0, str(v)]} for m, v in rows]}}

    pod = {"pod": "iris-abc-1"}
    buckets = [({**pod, "le": le}, n) for le, n in (("0.0005", 2), ("0.001", 5), ("+Inf", 7))]
    got = counters_from_prometheus({"start": vector((pod, 1700000000.5)), "requests": vector((pod, 7)),
                                    "errors": vector((pod, 1)), "buckets": vector(*buckets)})
    assert got["iris-abc-1"].requests == 7 and got["iris-abc-1"].errors == 1
    assert got["iris-abc-1"].start_time == "1700000000.5"
    latency = got["iris-abc-1"].latency or []
    assert latency[:2] == [2, 3] and latency[-1] == 2 and sum(latency) == 7
