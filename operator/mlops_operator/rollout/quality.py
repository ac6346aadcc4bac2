"""A ModelDeployment's live quality: when to join its ground-truth labels to its captured predictions, and what
the join's answer leaves in status.liveQuality. Pure.

Each join is an owned Job (builders/quality.py) named from when it was started (`status.liveQuality.attempt`):
its window, `[attempt - windowSeconds, attempt)`, is a function of the name, so a restarted operator that finds
the Job, or makes it again, counts the same rows. The join recomputes its counters from the files every time:
nothing is added to what status held, so no label is counted twice and none is lost across restarts. A Job
that answered is read once and deleted; the next starts `joinEverySeconds` after the last one started, and a
failed one is tried again at that interval (its reason in `message`, the last counts kept).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..api import labels as L
from ..api import times
from ..api.artifacts import ArtifactError
from ..api.modeldeployment import LiveQuality, ModelDeploymentSpec, RevisionLiveQuality
from ..api.quality import QualityReport, RevisionQuality
from ..api.registry import Calls, until
from ..builders.common import short_hash

RETRY_SECONDS = 30  # a Job started but not seen yet: looked at again
Answer = QualityReport | ArtifactError


@dataclass
class Quality(Calls):
    """The joins decided, and the status they leave (None: the ModelDeployment does not join)."""

    status: LiveQuality | None = field(default=None)

    def wire(self) -> dict[str, Any] | None:
        return self.status.wire() or None if self.status is not None else None


def job_name(md: Mapping[str, Any], attempt: str) -> str:
    return f"{md['metadata']['name'][:45]}-q-{short_hash(attempt)[:10]}"


def is_quality_job(job: Mapping[str, Any]) -> bool:
    return L.QUALITY in (job["metadata"].get("labels") or {})


def window(spec: ModelDeploymentSpec, attempt: str, candidate_since: str | None = None) -> tuple[float, float]:
    """The [since, until) of the predictions a join started at `attempt` counts (epoch seconds): windowSeconds,
    or from when a canary's candidate started, so that both revisions are judged on the same window."""
    assert spec.ground_truth is not None
    end = times.parse(attempt).timestamp()
    start = end - spec.ground_truth.window_seconds
    started = times.parse_or_none(candidate_since)
    return (max(start, started.timestamp()) if started is not None and started.timestamp() < end else start), end


def revision_quality(q: RevisionQuality) -> RevisionLiveQuality:
    return RevisionLiveQuality(**dict(q), metrics=q.all_metrics() or None)


def decide(md: Mapping[str, Any], spec: ModelDeploymentSpec, jobs: Mapping[str, Mapping[str, Any]],
           answers: Mapping[str, Answer], now: datetime.datetime) -> Quality:
    raw = (md.get("status") or {}).get("liveQuality")
    if spec.capture is None or spec.ground_truth is None:
        return Quality(delete=list(jobs))
    st = LiveQuality.model_validate(raw) if raw else LiveQuality()
    calls = Quality(status=st)
    strategy = spec.strategy.type if spec.strategy is not None else "BlueGreen"
    canary = (md.get("status") or {}).get("candidate") if strategy == "Canary" else None
    candidate_since = (canary or {}).get("since")
    every = spec.ground_truth.join_every_seconds
    answer = answers.get(st.job) if st.job is not None else None
    if isinstance(answer, ArtifactError):
        st.message = f"mlops quality: {answer}"[:1000]
        calls.events.append(("QualityJoinFailed", st.message, True))
    elif answer is not None:
        assert st.attempt is not None
        st.time, st.window_seconds, st.message = st.attempt, spec.ground_truth.window_seconds, None
        st.since = times.stamp(datetime.datetime.fromtimestamp(answer.since, datetime.UTC)) \
            if answer.since is not None else None
        st.labels, st.unknown_labels = answer.labels, answer.unknown_labels
        st.duplicate_labels, st.outside_window = answer.duplicate_labels, answer.outside_window
        st.revisions = [revision_quality(q) for q in answer.revisions]
    if answer is not None:
        st.job = None  # answered: read once
    if st.job is not None:
        if st.job not in jobs:  # started just now (not seen yet), or deleted by someone: made again by name
            calls.start.append((st.job, "quality", [str(x) for x in window(spec, st.attempt or times.stamp(now),
                                                                            candidate_since)]))
        calls.requeue(RETRY_SECONDS)
    else:
        wait = until(st.attempt, every, now)
        if wait <= 0:
            st.attempt = times.stamp(now)
            st.job = job_name(md, st.attempt)
            calls.start.append((st.job, "quality", [str(x) for x in window(spec, st.attempt, candidate_since)]))
            calls.requeue(RETRY_SECONDS)
        else:
            calls.requeue(wait)
    calls.delete = [n for n in jobs if n != st.job]
    return calls
