"""A distributed run's workers seen as one Job, what `decide` reads: one Job per worker, or a Kubeflow
Trainer TrainJob. Pure.

On clusters that serve Indexed Jobs a distributed run is one Job and needs nothing of this; on older ones
(Kubernetes 1.20, as the dev cluster) it is one Job per worker, and the run is:
- missing (None) while any worker's Job is missing: all are (re)made, idempotently;
- failed as soon as one worker's Job failed (that Job stands for the run: its Pods say why);
- complete when every worker's Job completed (rank 0's Job stands for the run: its Pod has the result);
- suspended while any is suspended (a queue admits the workers together); else running.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..api.labels import COMPLETION_INDEX


def job_condition(job: Mapping[str, Any] | None, type_: str) -> Mapping[str, Any] | None:
    """A Job's condition of this type, when it is True."""
    conditions: list[Mapping[str, Any]] = ((job or {}).get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == type_ and c.get("status") == "True"), None)


def _true(job: Mapping[str, Any], type_: str) -> bool:
    return job_condition(job, type_) is not None


def finished_job(job: Mapping[str, Any]) -> bool:
    return _true(job, "Complete") or _true(job, "Failed")


def combine(jobs: Mapping[str, Mapping[str, Any]], names: Sequence[str]) -> Mapping[str, Any] | None:
    """The workers' Jobs (by name; `names` in rank order) as the one Job `decide` follows."""
    workers = [jobs.get(n) for n in names]
    if len(workers) == 1:
        return workers[0]
    present = [j for j in workers if j is not None]
    if len(present) < len(names):
        return None
    failed = next((j for j in present if _true(j, "Failed")), None)
    stands = failed or present[0]
    counts = [(j.get("status") or {}) for j in present]
    status: dict[str, Any] = {
        "active": sum(int(c.get("active") or 0) for c in counts),
        "failed": sum(int(c.get("failed") or 0) for c in counts),
        "succeeded": sum(1 for j in present if _true(j, "Complete")),
        "conditions": [],
    }
    if failed is not None:
        rank = names[workers.index(failed)]
        status["conditions"] = [{**c, "message": f"worker Job {rank}: {c.get('message') or c.get('reason')}"}
                                for c in (failed.get("status") or {}).get("conditions") or ()
                                if c.get("type") == "Failed"]
        status["completionTime"] = (failed.get("status") or {}).get("completionTime")
    elif all(_true(j, "Complete") for j in present):
        status["conditions"] = [{"type": "Complete", "status": "True"}]
        status["completionTime"] = max(str(c.get("completionTime") or "") for c in counts) or None
    return {
        "metadata": stands["metadata"],
        "spec": {"suspend": any((j.get("spec") or {}).get("suspend") for j in present)},
        "status": status,
    }


def rank_zero(pods: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """An Indexed Job's Pods of index 0 (the ones with the result); other Pods as they are."""
    indexed = [p for p in pods if COMPLETION_INDEX in ((p.get("metadata") or {}).get("annotations") or {})]
    if not indexed:
        return list(pods)
    return [p for p in indexed if p["metadata"]["annotations"][COMPLETION_INDEX] == "0"]


def from_train_job(train_job: Mapping[str, Any] | None, workers: int) -> Mapping[str, Any] | None:
    """A Kubeflow Trainer TrainJob as the Job `decide` follows: its Complete and Failed conditions (as its
    controller writes them), suspended while its Suspended condition is True, its child Jobs' failures,
    and every worker succeeded once it is Complete."""
    if train_job is None:
        return None
    status = train_job.get("status") or {}
    conditions = [c for c in status.get("conditions") or () if c.get("type") in ("Complete", "Failed")]
    suspended = bool((train_job.get("spec") or {}).get("suspend")) or any(
        c.get("type") == "Suspended" and c.get("status") == "True" for c in status.get("conditions") or ())
    jobs = status.get("jobsStatus") or ()
    done = next((c.get("lastTransitionTime") for c in conditions if c.get("status") == "True"), None)
    return {
        "metadata": train_job["metadata"],
        "spec": {"suspend": suspended and not conditions},
        "status": {"conditions": conditions, "completionTime": done,
                   "active": sum(int(j.get("active") or 0) for j in jobs),
                   "failed": sum(int(j.get("failed") or 0) for j in jobs),
                   "succeeded": workers if any(c.get("type") == "Complete" and c.get("status") == "True"
                                               for c in conditions) else 0},
    }


TRAINER_JOB = "node"  # the trainer's replicated Job in Kubeflow Trainer's runtimes (torch, deepspeed, mlx)


def train_job_pods_selector(name: str) -> str:
    """The TrainJob's trainer Pods (its JobSet's `node` Job); `rank_zero` picks index 0's."""
    return f"jobset.sigs.k8s.io/jobset-name={name},jobset.sigs.k8s.io/replicatedjob-name={TRAINER_JOB}"
