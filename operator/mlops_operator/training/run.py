"""What a TrainingRun should look like, from its spec, its Job and that Job's Pods. Pure.

The decision depends only on (the run as stored, its spec, the observed Job and Pods, the time):
a restarted operator decides the same, and a reconcile that finds nothing new writes nothing.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ..api import times
from ..api.artifacts import ArtifactError, DataRecord, parse_data_check_failure, parse_termination_message
from ..api.labels import KUEUE_QUEUE, STARTED
from ..api.trainingrun import TrainingRunSpec
from ..conditions import FALSE, TRUE, UNKNOWN, Cond, find, is_true
from .gates import evaluate
from .workers import job_condition, rank_zero

FINAL_REASONS = ("Completed", "InvalidResult", "BackoffLimitExceeded", "DeadlineExceeded", "Failed", "DataCheckFailed")
MESSAGE_LIMIT = 1024


@dataclass
class Decision:
    conditions: list[Cond]
    status: dict[str, Any] = field(default_factory=dict)
    apply_job: bool = False
    delete_job: bool = False
    requeue_after: float | None = None
    needs_pods: bool = False
    stop_workers: bool = False
    """A distributed run failed: its other workers' Jobs are stopped (they would wait for the lost one)."""

    @property
    def final(self) -> bool:
        """This decision concludes the run (its Succeeded condition is final)."""
        return any(c.type == "Succeeded" and c.status in (TRUE, FALSE) and c.reason in FINAL_REASONS
                   for c in self.conditions)


def with_job(run: Mapping[str, Any], spec: TrainingRunSpec, first: Decision, job: Mapping[str, Any],
             now: datetime.datetime, reference: str | None = None) -> Decision:
    """The decision once the Job that `first` asked for exists (`job`, as its create returned it): written in one
    status patch with what `first` recorded (startTime, startedGeneration, reproducibility, SpecApplied), where
    the run's status was written twice before, once for the create and again for the Job's own watch event,
    which now finds nothing to change. `first` itself when the Job asks for more (its Pods, another Job)."""
    settled = {**run, "status": {**(run.get("status") or {}), **first.status}}
    after = decide(settled, spec, job, None, now, reference)
    if after.apply_job or after.needs_pods:
        return first
    applied = [c for c in first.conditions if c.type == "SpecApplied"]
    return replace(after, conditions=[c for c in after.conditions if c.type != "SpecApplied"] + applied,
                   status={**first.status, **after.status})


def _terminated(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    for s in (pod.get("status") or {}).get("containerStatuses") or ():
        state = s.get("state") or {}
        if "terminated" in state:
            return {**state["terminated"], "imageID": s.get("imageID"), "image": s.get("image")}
    return {}


def _data_checks_stopped(status: Mapping[str, Any], spec: TrainingRunSpec, ordered: Sequence[Mapping[str, Any]],
                         done: dict[str, Any], spec_conditions: list[Cond]) -> Decision | None:
    """The run ended by the trainer's data checks (a failed Pod's termination message is their report), with
    the Job stopped; None when no Pod says so. Checks of the same data fail again: the Job is not left to
    retry up to its backoffLimit."""
    for pod in reversed(ordered):
        said = _terminated(pod).get("message", "")
        checked = parse_data_check_failure(said) if said else None
        if checked is None:
            continue
        why = _truncate("data checks failed: " + "; ".join(checked.failures))
        return Decision(conditions=[
            Cond("Succeeded", FALSE, "DataCheckFailed", why),
            Cond("GatesPassed", FALSE, "NoResult", "the data checks stopped the run before training"),
            Cond("Ready", FALSE, "DataCheckFailed", why),
            *spec_conditions,
        ], status={**done, "dataChecks": checked.model_dump(mode="json"),
                   "reproducibility": _reproducibility(status, spec, pod)}, stop_workers=True)
    return None


def _oldest_first(pods: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp", ""))


def finished(status: Mapping[str, Any]) -> bool:
    c = find(status.get("conditions"), "Succeeded")
    return c is not None and c.get("status") in (TRUE, FALSE) and c.get("reason") in FINAL_REASONS


def _inputs(spec: TrainingRunSpec, reference: str | None = None) -> dict[str, Any]:
    """What the Job is built from: recorded when it starts, so later spec edits do not rewrite it."""
    record: dict[str, Any] = {"params": spec.params or {}, "seed": spec.seed}
    if reference:
        record["referenceProfile"] = reference
    if spec.dataset is not None:
        record["datasetUri"] = spec.dataset.uri or (spec.dataset.from_capture.uri if spec.dataset.from_capture
                                                    else None)
        if spec.dataset.version:
            record["datasetVersion"] = spec.dataset.version
    return record


def _reproducibility(status: Mapping[str, Any], spec: TrainingRunSpec,
                     pod: Mapping[str, Any] | None, data: DataRecord | None = None) -> dict[str, Any]:
    record = dict(status.get("reproducibility") or _inputs(spec))
    if data is not None:  # what the trainer read: the content behind the URI (and version) the spec names
        record.update(datasetDigest=data.digest, datasetRows=data.rows)
        record.update({k: v for k, v in data.model_dump(by_alias=True, include={
            "captured_files", "captured_file_count", "captured_rows", "base_rows"}).items() if v is not None})
    if pod is not None:
        term = _terminated(pod)
        if term.get("image"):
            record["image"] = term["image"]
        if term.get("imageID"):
            record["imageDigest"] = term["imageID"]
    return record


def _truncate(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MESSAGE_LIMIT else "…" + text[-MESSAGE_LIMIT:]


def _ttl(spec: TrainingRunSpec, status: Mapping[str, Any], job: Mapping[str, Any] | None,
         now: datetime.datetime) -> tuple[bool, float | None]:
    """(delete the Job now, or requeue after seconds) for ttlSecondsAfterFinished."""
    done = times.parse_or_none(status.get("completionTime"))
    if spec.ttl_seconds_after_finished is None or done is None or job is None:
        return False, None
    due = done + datetime.timedelta(seconds=spec.ttl_seconds_after_finished)
    if now >= due:
        return True, None
    return False, (due - now).total_seconds()


def previous_profile(run: Mapping[str, Any], runs: Sequence[Mapping[str, Any]]) -> str | None:
    """The profile of the model's previous version: the newest earlier TrainingRun that passed its gates."""
    mine = (run["metadata"].get("creationTimestamp", ""), run["metadata"]["name"])
    passed = [r for r in runs if (r["metadata"].get("creationTimestamp", ""), r["metadata"]["name"]) < mine
              and is_true((r.get("status") or {}).get("conditions"), "GatesPassed")
              and ((r.get("status") or {}).get("model") or {}).get("profileUri")]
    if not passed:
        return None
    newest = max(passed, key=lambda r: (r["metadata"].get("creationTimestamp", ""), r["metadata"]["name"]))
    return str(newest["status"]["model"]["profileUri"])


def reference_for(run: Mapping[str, Any], spec: TrainingRunSpec, runs: Sequence[Mapping[str, Any]]) -> str | None:
    """The profile the data checks compare with: the one recorded when the Job was first made, else the previous
    version's (only when a check needs it)."""
    recorded = ((run.get("status") or {}).get("reproducibility") or {}).get("referenceProfile")
    checks = spec.data_checks
    if recorded or checks is None or not (checks.same_columns_as_previous or checks.max_psi is not None):
        return recorded
    return previous_profile(run, runs)


START_RECORD = ("startTime", "startedGeneration", "reproducibility")
"""What the status records when the run's Job is made; the Job carries it too (`builders.trainingrun._started`)."""


def start_record(status: Mapping[str, Any]) -> dict[str, Any]:
    """The start record in a decision's status (empty when the decision makes no Job)."""
    return {k: status[k] for k in START_RECORD if status.get(k) is not None}


def recorded_by(job: Mapping[str, Any] | None) -> dict[str, Any]:
    """The start record a Job carries; empty when it has none (made before Jobs carried it) or it is unreadable."""
    said = (((job or {}).get("metadata") or {}).get("annotations") or {}).get(STARTED)
    try:
        record = json.loads(said) if said else {}
    except ValueError:
        return {}
    return start_record(record) if isinstance(record, dict) else {}


def decide(run: Mapping[str, Any], spec: TrainingRunSpec, job: Mapping[str, Any] | None,
           pods: Sequence[Mapping[str, Any]] | None, now: datetime.datetime,
           reference: str | None = None) -> Decision:
    status = run.get("status") or {}
    lost = recorded_by(job) if status.get("startedGeneration") is None else {}
    if lost:  # the status write that recorded the start was refused: the Job made then says what it was
        decision = decide({**run, "status": {**status, **lost}}, spec, job, pods, now, reference)
        return decision if decision.needs_pods else replace(decision, status={**lost, **decision.status})
    generation = run["metadata"].get("generation")
    started_generation = status.get("startedGeneration")
    stamp = times.stamp(now)
    spec_conditions = []
    if started_generation is not None and generation != started_generation:
        spec_conditions.append(Cond(
            "SpecApplied", FALSE, "ChangedAfterStart",
            f"the spec changed after the run started (generation {started_generation}); the change is "
            "ignored: a new model version is a new TrainingRun"))
    elif started_generation is not None:
        spec_conditions.append(Cond("SpecApplied", TRUE, "Started", f"generation {started_generation}"))

    # 1. finished: the record stands; only the Job's time to live is left to honour
    if finished(status):
        delete, requeue = _ttl(spec, status, job, now)
        return Decision(conditions=spec_conditions, delete_job=delete, requeue_after=requeue)

    # 2. suspended: no Job
    if spec.suspend:
        return Decision(conditions=[
            Cond("Succeeded", UNKNOWN, "Suspended", "spec.suspend is true: no training Job runs"),
            Cond("Ready", FALSE, "Suspended", "spec.suspend is true"),
        ], delete_job=job is not None)

    # 3. no Job yet (or deleted, by hand or by a suspension, before it finished): create it. The Job is made
    # from the spec as it is, so a spec edited while no Job ran is accepted, and the record names it
    if job is None:
        renewed = started_generation is not None and generation != started_generation
        accepted = started_generation if started_generation is not None and not renewed else generation
        applied = Cond("SpecApplied", TRUE, "Restarted", f"generation {accepted}: the spec changed while no Job "
                       f"ran (it was generation {started_generation}); the new Job and the record follow it") \
            if renewed else Cond("SpecApplied", TRUE, "Started", f"generation {accepted}")
        return Decision(conditions=[
            Cond("Succeeded", UNKNOWN, "Pending", "the training Job is being created"),
            Cond("Ready", UNKNOWN, "Training", "training has not finished"),
            applied,
        ], status={"startTime": status.get("startTime") or stamp, "startedGeneration": accepted,
                   "reproducibility": (None if renewed else status.get("reproducibility")) or _inputs(spec, reference)},
            apply_job=True)

    job_status = job.get("status") or {}
    failures = int(job_status.get("failed") or 0)
    attempts = failures + int(job_status.get("succeeded") or 0) + int(job_status.get("active") or 0)
    common: dict[str, Any] = {"jobName": job["metadata"]["name"], "attempts": attempts}
    if spec.distributed is not None:  # the workers train together: an attempt is all of them, failures add one
        common.update(attempts=failures + 1, workers=spec.distributed.workers,
                      workersSucceeded=min(int(job_status.get("succeeded") or 0), spec.distributed.workers))
    complete, failed = job_condition(job, "Complete"), job_condition(job, "Failed")
    if not complete and not failed and (job.get("spec") or {}).get("suspend"):
        # suspended by a queue (Kueue admits a Job by un-suspending it): waiting, not failing
        queue = (job["metadata"].get("labels") or {}).get(KUEUE_QUEUE)
        return Decision(conditions=[
            Cond("Succeeded", UNKNOWN, "Queued", "the training Job is suspended until it is admitted"
                 + (f" (Kueue queue {queue})" if queue else "")),
            Cond("Ready", UNKNOWN, "Queued", "training has not started"),
            *spec_conditions,
        ], status=common)
    if not complete and not failed:
        if failures and spec.data_checks is not None:  # the same data fails the same checks: no retry
            if pods is None:
                return Decision(conditions=[], needs_pods=True)
            stopped = _data_checks_stopped(status, spec, _oldest_first(pods), {**common, "completionTime": stamp},
                                           spec_conditions)
            if stopped is not None:
                return stopped
        return Decision(conditions=[
            Cond("Succeeded", UNKNOWN, "Running",
                 f"attempt {max(common['attempts'], 1)} of {spec.backoff_limit + 1}"),
            Cond("Ready", UNKNOWN, "Training", "training has not finished"),
            *spec_conditions,
        ], status=common)

    # 4. the Job finished: its Pods say how
    if pods is None:
        return Decision(conditions=[], needs_pods=True)
    ordered = _oldest_first(pods)
    done = {**common, "completionTime": job_status.get("completionTime") or stamp}
    if complete:  # a distributed run's result is rank 0's
        winner = next((p for p in reversed(rank_zero(ordered))
                       if (p.get("status") or {}).get("phase") == "Succeeded"), None)
        message = _terminated(winner).get("message", "") if winner else ""
        try:
            result = parse_termination_message(message)
        except ArtifactError as exc:
            reason = f"the trainer succeeded but its result is unusable: {exc}"
            return Decision(conditions=[
                Cond("Succeeded", FALSE, "InvalidResult", _truncate(reason)),
                Cond("GatesPassed", FALSE, "NoResult", "there is no result to check"),
                Cond("Ready", FALSE, "InvalidResult", _truncate(reason)),
                *spec_conditions,
            ], status={**done, "reproducibility": _reproducibility(status, spec, winner)})
        failed_gates = evaluate(spec.gates or [], result.metrics)
        model = result.model.model_dump(by_alias=True, exclude_none=True)
        if not spec.gates:
            gate = Cond("GatesPassed", TRUE, "NoGates", "the run has no gates")
        elif failed_gates:
            gate = Cond("GatesPassed", FALSE, "GatesFailed", _truncate("; ".join(failed_gates)))
        else:
            gate = Cond("GatesPassed", TRUE, "Passed", f"{len(spec.gates)} gates passed")
        ready = Cond("Ready", TRUE, "Succeeded", f"model {result.model.digest}") if gate.status == TRUE else \
            Cond("Ready", FALSE, "GatesFailed", gate.message)
        return Decision(conditions=[
            Cond("Succeeded", TRUE, "Completed", f"trained in {attempts} attempt(s)"), gate, ready,
            *spec_conditions,
        ], status={**done, "metrics": result.metrics, "model": model, "failedGates": failed_gates or None,
                   "reproducibility": _reproducibility(status, spec, winner, result.data),
                   "dataChecks": result.data_checks.model_dump(mode="json") if result.data_checks else None})
    last = ordered[-1] if ordered else None
    reason = str(failed.get("reason") or "Failed") if failed else "Failed"
    if reason not in FINAL_REASONS:
        reason = "Failed"
    said = _terminated(last).get("message", "") if last else ""
    stopped = _data_checks_stopped(status, spec, ordered, done, spec_conditions)
    if stopped is not None:
        return stopped
    detail = f"{failed.get('message', '') if failed else ''}" + (f": {said}" if said else "")
    return Decision(conditions=[
        Cond("Succeeded", FALSE, reason, _truncate(detail or reason)),
        Cond("GatesPassed", FALSE, "NoResult", "training failed"),
        Cond("Ready", FALSE, reason, _truncate(detail or reason)),
        *spec_conditions,
    ], status={**done, "reproducibility": _reproducibility(status, spec, last)},
        stop_workers=spec.distributed is not None)
