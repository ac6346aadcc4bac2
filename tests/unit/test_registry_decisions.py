"""The model registry's decisions with plain dicts: a ModelDeployment resolving `models:/…` (first time, an
alias moved, a failure, a version without a digest tag) and moving `promoteAlias` on promotion; a TrainingRun
registering its version once it passed its gates. The registry Jobs answer from a small registry held by the test
(what `mlops mlflow` would say; the command itself is tested against a real MLflow server in test_registry.py)."""

from __future__ import annotations

import asyncio
import datetime
from dataclasses import dataclass, field
from typing import Any

from mlops_operator.api import labels as L
from mlops_operator.api.artifacts import ArtifactError
from mlops_operator.api.modeldeployment import ModelDeploymentSpec, RevisionRef
from mlops_operator.api.registry import Answer, RegistryResult
from mlops_operator.api.trainingrun import TrainingRunSpec
from mlops_operator.builders.registry import registry_job
from mlops_operator.rollout import machine
from mlops_operator.rollout import registry as rollout_registry
from mlops_operator.rollout.spec import check
from mlops_operator.training.register import register
from mlops_operator.training.sweep import trial_spec
from tests.unit.test_rollout import DIGEST, T0, World, _Fetch, report, run, side, stream

TRACKING = "http://mlflow.mlflow.svc:5000"


@dataclass
class RegistryWorld(World):
    """The rollout world with an MLflow registry: versions by number, aliases, and the registry Jobs."""

    versions: dict[str, RegistryResult] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    registry_jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    down: bool = False
    """The tracking server does not answer (every Job fails)."""
    started: list[tuple[str, list[str]]] = field(default_factory=list)

    def answers(self) -> dict[str, Answer]:
        return {n: j["answer"] for n, j in self.registry_jobs.items() if "answer" in j}

    def decide(self) -> machine.Plan:
        md, spec = self.md(), ModelDeploymentSpec.model_validate(self.spec)
        assert check(spec) == []
        answers = self.answers()
        calls = rollout_registry.resolve(md, spec, self.registry_jobs, answers, self.now)
        obs = self.observed()
        obs.registry = calls.status
        plan = asyncio.run(machine.resolve(md, spec, obs, _Fetch(self)))
        stable = plan.status.get("stable")
        rollout_registry.move_alias(md, spec, RevisionRef.model_validate(stable) if stable else None, self.runs,
                                    self.registry_jobs, answers, self.now, calls)
        plan.status["registry"] = calls.wire()
        for name, purpose, args in calls.start:
            self.started.append((purpose, args))
            self.registry_jobs[name] = {"metadata": {"name": name, "labels": {L.REGISTRY: purpose}},
                                        "purpose": purpose, "args": args}
        for name in calls.delete:
            self.registry_jobs.pop(name, None)
        plan.events += calls.events
        if calls.requeue_after is not None:
            plan.requeue_after = min(plan.requeue_after or calls.requeue_after, calls.requeue_after)
        return plan

    def run_registry_jobs(self) -> None:
        """Every registry Job not yet finished runs now against the registry."""
        for job in self.registry_jobs.values():
            if "answer" in job:
                continue
            if self.down:
                job["answer"] = ArtifactError("cannot reach the tracking server: Connection refused")
            elif job["purpose"] == "resolve":
                uri = job["args"][0]
                name, number = uri[len("models:/"):].split("@")[0].split("/")[0], None
                number = self.aliases.get(uri.split("@")[1]) if "@" in uri else uri.rsplit("/", 1)[1]
                job["answer"] = self.versions[number] if number in self.versions else \
                    ArtifactError(f"{name}: no such version or alias")
            else:
                args = job["args"]
                self.aliases[args[args.index("--alias") + 1]] = args[args.index("--version") + 1]
                job["answer"] = RegistryResult(name=args[1], version=args[3], alias=args[5])

    def settle(self, steps: int = 8) -> None:
        for _ in range(steps):
            self.run_registry_jobs()
            for rev, job in self.jobs.items():
                if not job["status"]:
                    self.finish_job(rev)
            self.step()


def version(n: int, digest: bool = True) -> RegistryResult:
    return RegistryResult(name="iris", version=str(n), source=f"s3://models/iris-v{n}",
                          digest=DIGEST[n] if digest else None, run_id=f"run{n}")


def from_registry(uri: str = "models:/iris@challenger", **mlflow: Any) -> dict[str, Any]:
    return stream(model={"storageUri": uri, "mlflow": {"trackingUri": TRACKING, **mlflow}})


def serving_challenger(**mlflow: Any) -> RegistryWorld:
    w = RegistryWorld(spec=from_registry(**mlflow), report=report(), versions={"1": version(1)},
                      aliases={"challenger": "1"})
    w.step()
    assert w.cond("Ready")["reason"] == "Resolving" and w.cond("Progressing")["reason"] == "Resolving"
    assert [p for p, _ in w.started] == ["resolve"]
    w.settle()
    assert w.status["stable"]["registryVersion"] == "models:/iris/1"
    return w


def test_an_alias_is_resolved_served_with_the_registered_digest_and_resolved_again_every_five_minutes() -> None:
    w = serving_challenger()
    stable = w.status["stable"]
    assert (stable["modelUri"], stable["digest"]) == ("s3://models/iris-v1", DIGEST[1])
    assert w.cond("Ready")["status"] == "True"
    verified = w.cond("Verified")
    assert verified["reason"] == "DigestFromRegistry" and DIGEST[1] in verified["message"]
    assert w.status["registry"]["resolved"]["version"] == "1" and not w.registry_jobs  # answered, deleted
    assert any(r == "Resolved" for r, _, _ in w.events)
    w.step(200)
    assert len(w.started) == 1  # not due yet
    w.versions["2"] = version(2)
    w.aliases["challenger"] = "2"
    w.report = report(side(), side())
    w.step(100)
    assert [p for p, _ in w.started] == ["resolve", "resolve"]
    w.settle()
    assert w.status["stable"]["registryVersion"] == "models:/iris/2"
    assert w.status["stable"]["revision"] != stable["revision"]  # a moved alias is a new version
    assert [h["outcome"] for h in w.status["history"]] == ["Promoted", "Promoted"]


def test_a_version_number_is_resolved_once() -> None:
    w = RegistryWorld(spec=from_registry("models:/iris/1"), report=report(), versions={"1": version(1)})
    w.settle()
    assert w.status["stable"]["registryVersion"] == "models:/iris/1"
    w.step(3600)
    assert len(w.started) == 1


def test_a_failed_resolve_says_why_is_tried_again_after_a_minute_and_a_resolved_version_serves_on() -> None:
    w = RegistryWorld(spec=from_registry(), report=report(), versions={"1": version(1)},
                      aliases={"challenger": "1"}, down=True)
    w.settle(3)
    ready = w.cond("Ready")
    assert (ready["status"], ready["reason"]) == ("False", "ResolveFailed")
    assert "Connection refused" in ready["message"] and "Connection refused" in w.status["registry"]["message"]
    assert len(w.started) == 1 and any(r == "ResolveFailed" and warn for r, _, warn in w.events)
    w.step(61)
    assert len(w.started) == 2
    w.down = False
    w.settle()
    assert w.cond("Ready")["status"] == "True" and "message" not in w.status["registry"]
    w.down = True
    w.step(300)
    w.settle(3)
    assert w.cond("Ready")["status"] == "True"  # the version resolved before goes on serving
    assert "Connection refused" in w.status["registry"]["message"]


def test_a_version_without_a_digest_tag_follows_the_pinned_version_rule() -> None:
    w = RegistryWorld(spec=from_registry(), report=report(), versions={"1": version(1, digest=False)},
                      aliases={"challenger": "1"})
    w.settle()
    ready = w.cond("Ready")
    assert (ready["status"], ready["reason"]) == ("False", "DigestMissing")
    assert "mlops.dev/digest" in ready["message"] and "stable" not in w.status
    w.spec["model"]["digest"] = DIGEST[1]
    w.settle()
    assert w.cond("Ready")["status"] == "True" and w.cond("Verified")["reason"] == "DigestVerified"
    served = w.status["stable"]["revision"]
    w.versions["1"] = version(1)  # the tag written later: the same digest, the same revision
    w.step(300)
    w.settle()
    assert w.status["stable"]["revision"] == served and w.cond("Verified")["reason"] == "DigestFromRegistry"
    del w.spec["model"]["digest"]
    w.spec["model"]["verify"] = False
    w.settle()
    assert w.cond("Verified")["reason"] == "VerificationDisabled" and "digest" not in w.status["stable"]


def test_a_digest_tag_that_differs_from_the_spec_is_refused() -> None:
    w = RegistryWorld(spec=from_registry(), report=report(), versions={"1": version(1)}, aliases={"challenger": "1"})
    w.spec["model"]["digest"] = DIGEST[2]
    w.settle()
    ready = w.cond("Ready")
    assert (ready["status"], ready["reason"]) == ("False", "DigestMismatch")
    assert DIGEST[1] in ready["message"] and DIGEST[2] in ready["message"] and "stable" not in w.status
    del w.spec["model"]["digest"]
    w.settle()
    served = w.status["stable"]["revision"]
    w.spec["model"]["digest"] = DIGEST[2]  # a spec digest that the serving version's tag contradicts
    w.step(300)
    w.settle()
    degraded = w.cond("Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "DigestMismatch")
    assert w.status["stable"]["revision"] == served and w.cond("Available")["status"] == "True"


def test_a_promotion_moves_the_alias_once_and_a_failed_move_is_made_again() -> None:
    w = serving_challenger(promoteAlias="champion")
    moves = [a for p, a in w.started if p == "set-alias"]
    assert moves == [["--name", "iris", "--version", "1", "--alias", "champion"]]
    assert w.aliases["champion"] == "1" and w.status["registry"]["alias"]["state"] == "Moved"
    assert any(r == "AliasMoved" for r, _, _ in w.events)
    w.step(30)
    assert len([p for p, _ in w.started if p == "set-alias"]) == 1 and not w.registry_jobs
    w.versions["2"] = version(2)
    w.aliases["challenger"] = "2"
    w.report = report(side(), side())
    w.step(300)
    w.run_registry_jobs()
    w.step()
    w.down = True  # the tracking server goes away before the promotion's move
    w.settle()
    assert w.status["stable"]["registryVersion"] == "models:/iris/2"
    move = w.status["registry"]["alias"]
    assert (move["version"], move["state"]) == ("2", "Failed") and "Connection refused" in move["message"]
    assert w.aliases["champion"] == "1"
    tries = len([p for p, _ in w.started if p == "set-alias"])
    w.down = False
    w.step(61)
    w.settle()
    assert len([p for p, _ in w.started if p == "set-alias"]) == tries + 1
    assert w.aliases["champion"] == "2" and w.status["registry"]["alias"]["state"] == "Moved"


def test_a_stream_moves_the_alias_to_the_version_its_training_run_registered() -> None:
    spec = stream(model={"fromTrainingRuns": {"model": "iris"}, "mlflow": {"trackingUri": TRACKING,
                                                                            "promoteAlias": "champion"}})
    registered = run(1)
    registered["status"]["registered"] = {"name": "iris", "version": "7", "uri": "models:/iris/7"}
    w = RegistryWorld(spec=spec, runs=[registered], report=report())
    w.settle()
    assert [a for p, a in w.started] == [["--name", "iris", "--version", "7", "--alias", "champion"]]
    assert w.aliases == {"champion": "7"}


def test_spec_checks_of_the_registry_fields() -> None:
    def errors(model: dict[str, Any]) -> str:
        return "; ".join(check(ModelDeploymentSpec.model_validate({"model": model})))

    assert "spec.model.mlflow: required for a models:/ storageUri" in errors({"storageUri": "models:/iris@x"})
    assert "spec.model.mlflow: only applies to a models:/ storageUri" in errors(
        {"storageUri": "s3://m/iris", "digest": DIGEST[1], "mlflow": {"trackingUri": TRACKING}})
    assert errors({"storageUri": "models:/iris/3", "mlflow": {"trackingUri": TRACKING}}) == ""  # digest: its tag
    assert "spec.model.digest: required" in errors({"storageUri": "s3://m/iris"})


# -- a TrainingRun registering its version -----------------------------------------------------------------

SINK = {"mlflow": {"trackingUri": TRACKING, "name": "iris", "aliases": ["challenger"],
                   "secretRef": {"name": "mlflow-auth"}}}


def training_run(finished: bool = True, passed: bool = True, **status: Any) -> dict[str, Any]:
    conditions = [{"type": "Succeeded", "status": "True", "reason": "Completed"},
                  {"type": "GatesPassed", "status": "True" if passed else "False"}] if finished else []
    return {"metadata": {"name": "iris-v1", "namespace": "ml", "uid": "u-1"},
            "status": {"conditions": conditions, "metrics": {"accuracy": 0.95},
                       "model": {"uri": "s3://models/iris-v1", "digest": DIGEST[1], "format": "sklearn"},
                       "reproducibility": {"params": {"n_estimators": 20}, "seed": 0}, **status}}


def tr_spec(**extra: Any) -> TrainingRunSpec:
    return TrainingRunSpec.model_validate({"model": "iris", "trainer": {}, "register": SINK, **extra})


def test_a_training_run_registers_its_version_once_it_passed_its_gates() -> None:
    spec = tr_spec()
    assert register(training_run(finished=False), spec, {}, {}, T0).condition.reason == "NotFinished"  # type: ignore
    failed = register(training_run(passed=False), spec, {}, {}, T0)
    assert failed.condition is not None and failed.condition.reason == "GatesNotPassed" and not failed.start
    first = register(training_run(), spec, {}, {}, T0)
    assert first.condition is not None and first.condition.reason == "Registering"
    [(name, purpose, args)] = first.start
    assert purpose == "register" and name.startswith("iris-v1-rg-")
    assert args[args.index("--source") + 1] == "s3://models/iris-v1" and args[args.index("--digest") + 1] == DIGEST[1]
    assert args[args.index("--experiment") + 1] == "ml/iris" and args[args.index("--alias") + 1] == "challenger"
    assert args[args.index("--metrics") + 1] == '{"accuracy": 0.95}' and args[args.index("--uid") + 1] == "u-1"
    run_ = training_run(registration=first.status["registration"])
    job = {"metadata": {"name": name, "labels": {L.REGISTRY: "register"}}}
    again = register(run_, spec, {name: job}, {}, T0 + datetime.timedelta(seconds=5))
    assert not again.start and again.condition is not None and again.condition.reason == "Registering"
    done = register(run_, spec, {name: job}, {name: RegistryResult(name="iris", version="3", run_id="r")}, T0)
    assert done.status == {"registered": {"name": "iris", "version": "3", "uri": "models:/iris/3", "runId": "r"},
                           "registration": None}
    assert done.condition is not None and done.condition.status == "True" and done.delete == [name]
    after = register(training_run(registered=done.status["registered"]), spec, {}, {}, T0)
    assert after.condition is not None and after.condition.status == "True" and not after.start


def test_a_failed_registration_says_why_and_is_made_again_after_a_minute() -> None:
    spec = tr_spec()
    first = register(training_run(), spec, {}, {}, T0)
    [(name, _, _)] = first.start
    run_ = training_run(registration=first.status["registration"])
    job = {"metadata": {"name": name, "labels": {L.REGISTRY: "register"}}}
    failed = register(run_, spec, {name: job}, {name: ArtifactError("HTTP 403: PERMISSION_DENIED")}, T0)
    assert failed.condition is not None and failed.condition.reason == "RegistrationFailed"
    assert "PERMISSION_DENIED" in failed.condition.message and failed.delete == [name]
    run_ = training_run(registration=failed.status["registration"])
    assert not register(run_, spec, {}, {}, T0 + datetime.timedelta(seconds=30)).start
    retry = register(run_, spec, {}, {}, T0 + datetime.timedelta(seconds=61))
    assert len(retry.start) == 1 and retry.start[0][0] != name


def test_a_sweep_registers_its_best_trial_not_each_trial() -> None:
    spec = tr_spec(sweep={"parameters": [{"name": "n", "values": [1, 2]}], "objective": {"metric": "accuracy"}})
    assert "register" not in trial_spec(spec, {"n": 1})


def test_the_registry_job_is_restricted_and_reads_its_credentials_from_the_secret() -> None:
    parent = {"kind": "TrainingRun", "metadata": {"name": "iris-v1", "namespace": "ml", "uid": "u-1"}}
    spec = tr_spec()
    assert spec.register_in is not None
    job = registry_job(parent, "iris-v1-rg-x", "register", ["--name", "iris"], spec.register_in.mlflow,
                       runtime_image="img")
    pod = job["spec"]["template"]["spec"]
    [c] = pod["containers"]
    assert c["args"] == ["mlflow", "register", "--name", "iris"]
    assert c["envFrom"] == [{"secretRef": {"name": "mlflow-auth"}}]
    assert {"name": "MLFLOW_TRACKING_URI", "value": TRACKING} in c["env"]
    assert pod["automountServiceAccountToken"] is False and pod["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["readOnlyRootFilesystem"] is True and c["resources"]["limits"]["memory"]
    assert job["metadata"]["labels"][L.REGISTRY] == "register" and L.TRAINING_RUN not in job["metadata"]["labels"]
