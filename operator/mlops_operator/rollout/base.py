"""What every rollout strategy shares: the observed world, the plan, and the decision under construction
with its helpers (events, history, promotion, rejection, analysis records). Pure.

machine.py runs the decision (commands, which version should serve, pre-rollout analysis, the children
and status from the decided state); a strategy (bluegreen.py, canary.py, behind strategy.py's protocol)
decides how a candidate that passed its analysis reaches traffic.
"""

from __future__ import annotations

import datetime
import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..api import times
from ..api.artifacts import ArtifactError
from ..api.modeldeployment import (
    AnalysisResult,
    HistoryEntry,
    LiveQuality,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    PodCounters,
    RevisionRef,
)
from ..api.modeldeployment import Strategy as StrategySpec
from ..api.registry import RegistryStatus
from ..api.reports import AnalysisReport
from ..conditions import FALSE, TRUE, Cond
from . import analysis as judge

HISTORY_LIMIT = 10
REJECTED_LIMIT = 20
TRANSIENT = {"since", "rollback", "promoting"}  # what a history entry does not keep of a revision


class Need(enum.Enum):
    """What a decision cannot be made without, fetched by the handler (machine.resolve) before deciding
    again: each at most once per reconcile."""

    REPORT = "report"
    """The candidate's analysis Job's report (its termination message)."""
    URLS = "urls"
    """Every revision's ready pods' base URLs (to start an analysis Job)."""
    LIVE = "live"
    """The named revision's pods' cumulative counters (live analysis); of every revision's pods, with their
    prediction sketches, for EVERY_REVISION."""


EVERY_REVISION = "*"


@dataclass(frozen=True)
class Needed:
    what: Need
    revision: str


@dataclass
class Observed:
    deployments: Mapping[str, Mapping[str, Any]]
    """This ModelDeployment's Deployments, by revision."""
    jobs: Mapping[str, Mapping[str, Any]]
    """Its analysis Jobs, by revision."""
    runs: Sequence[Mapping[str, Any]]
    now: datetime.datetime
    report: AnalysisReport | ArtifactError | None = None
    urls: Mapping[str, list[str]] | None = None
    """Ready pods' base URLs, by revision (fetched when the plan needs "urls")."""
    live: Mapping[str, PodCounters] | None = None
    """The candidate pods' cumulative counters, by pod (fetched when the plan needs "live")."""
    gateway_api: bool = False
    """Whether the Gateway API's HTTPRoute kind exists in the cluster (found through discovery)."""
    registry: RegistryStatus | None = None
    """What the model registry said of a models:/ storageUri (rollout/registry.py, this reconcile)."""
    live_quality: LiveQuality | None = None
    """The last join of ground-truth labels to captured predictions (rollout/quality.py, this reconcile)."""


@dataclass(frozen=True)
class Mirroring:
    """What the stable revision's servers are told of shadow traffic (POST /v2/models/NAME/mirror to each ready
    pod): the share of their calls to mirror to the preview Service, for how long; percent 0 turns it off."""

    revision: str
    percent: int
    tolerance: float
    seconds: float


@dataclass
class Plan:
    conditions: list[Cond]
    status: dict[str, Any]
    replicas: dict[str, tuple[RevisionRef, int]] = field(default_factory=dict)
    """Deployments to keep, by revision: the version it serves and its replicas."""
    delete: list[str] = field(default_factory=list)
    """Revisions whose Deployment goes."""
    active: str | None = None
    """What the active Service selects: a revision, or "*" (every revision: canary by replica ratio)."""
    preview: str | None = None
    """What the preview Service selects (None: nothing)."""
    preview_wanted: bool = False
    """Whether the preview Service must exist: a candidate beside a stable revision (a rollout users may preview,
    a shadow mirrors to, a canary's HTTPRoute weights), or an HTTPRoute naming it. A first version needs none;
    one that exists is kept up to date either way."""
    analysis_job: tuple[RevisionRef, list[str], list[str]] | None = None
    """(candidate, its pods' URLs, the stable pods' URLs) for the analysis Job to create."""
    delete_jobs: list[str] = field(default_factory=list)
    route: tuple[int, int] | None = None
    """HTTPRoute backend weights (active Service, preview Service); None: no HTTPRoute."""
    route_mirror: int | None = None
    """Percent of the HTTPRoute's requests its RequestMirror filter copies to the preview Service (a shadow)."""
    events: list[tuple[str, str, bool]] = field(default_factory=list)
    requeue_after: float | None = None
    needs: Needed | None = None
    """What the handler must fetch before deciding again (see `Need`)."""
    mirror: Mirroring | None = None
    """Shadow traffic to turn on (again) or off on the stable revision's pods; None: nothing to say."""


def available(dep: Mapping[str, Any] | None, wanted: int) -> bool:
    if dep is None:
        return False
    st = dep.get("status") or {}
    if (st.get("observedGeneration") or 0) < (dep["metadata"].get("generation") or 0):
        return False
    return int(st.get("availableReplicas") or 0) >= max(1, wanted) and int(st.get("updatedReplicas") or 0) >= 1


def progress_failed(dep: Mapping[str, Any] | None) -> str | None:
    """The Deployment controller's verdict that the rollout stalled (progressDeadlineSeconds)."""
    for c in ((dep or {}).get("status") or {}).get("conditions") or ():
        if c.get("type") == "Progressing" and c.get("reason") == "ProgressDeadlineExceeded":
            return str(c.get("message") or c.get("reason"))
    return None


def job_finished(job: Mapping[str, Any]) -> bool:
    return any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
               for c in (job.get("status") or {}).get("conditions") or ())


class Rollout:
    """The decision under construction: status fields as typed values, plus what to do."""

    def __init__(self, md: Mapping[str, Any], spec: ModelDeploymentSpec, obs: Observed) -> None:
        self.md, self.spec, self.obs = md, spec, obs
        raw = dict(md.get("status") or {})
        raw.pop("conditions", None)
        raw.pop("observedGeneration", None)
        self.st = ModelDeploymentStatus.model_validate(raw)
        self.strategy = spec.strategy or StrategySpec()
        self.now = times.stamp(obs.now)
        self.plan = Plan(conditions=[], status={})
        self.progress: Cond | None = None
        self.requested_route_missing = False
        self.promote_requested = False  # `mlops promote` named the candidate
        self.source: tuple[str, str] | None = None
        """(reason, message) why a models:/ storageUri gives no version to serve now."""

    # -- helpers
    def event(self, reason: str, message: str, warning: bool = False) -> None:
        self.plan.events.append((reason, message, warning))

    def requeue(self, seconds: float) -> None:
        seconds = max(1.0, seconds)
        r = self.plan.requeue_after
        self.plan.requeue_after = seconds if r is None else min(r, seconds)

    def history(self, ref: RevisionRef, outcome: str, message: str | None = None) -> None:
        entry = HistoryEntry(**ref.model_dump(exclude=TRANSIENT), since=self.now, outcome=outcome,
                             message=message[:300] if message else None)
        self.st.history = [*(self.st.history or []), entry][-HISTORY_LIMIT:]

    def reject_revision(self, rev: str) -> None:
        """Remember `rev` as rejected (newest last, at most REJECTED_LIMIT)."""
        kept = [r for r in self.st.rejected or [] if r != rev][-(REJECTED_LIMIT - 1):]
        self.st.rejected = [*kept, rev]

    def reject(self, reason: str, message: str, outcome: str = "RolledBack") -> None:
        cand = self.st.candidate
        assert cand is not None
        self.reject_revision(cand.revision)
        self.history(cand, outcome, message)
        self.clear_candidate()
        target = f"revision {self.st.stable.revision}" if self.st.stable else "no revision (none passed yet)"
        self.progress = Cond("Progressing", FALSE, "RolledBack",
                             f"candidate {cand.revision} rejected ({reason}): {message}; traffic stays on {target}")
        self.event("RolledBack", f"candidate {cand.revision} rejected ({reason}): {message}", True)

    def promote(self, why: str) -> None:
        cand = self.st.candidate
        assert cand is not None
        if self.st.stable is not None and self.st.stable.revision != cand.revision:
            self.st.previous = self.st.stable.model_copy(update={"since": self.now})
        self.st.stable = cand.model_copy(update={"since": self.now, "rollback": None, "promoting": None})
        self.history(cand, "Promoted", why)
        self.clear_candidate()
        self.progress = Cond("Progressing", FALSE, "Promoted", f"revision {cand.revision} promoted: {why}")
        self.event("Promoted", f"revision {cand.revision} ({cand.model_uri}) promoted: {why}")

    def promote_at_full_size(self, cand: RevisionRef, why: str) -> None:
        """Traffic moves only once the candidate runs as many pods as the stable revision should."""
        if self.spec.replicas == 0 or available(self.obs.deployments.get(cand.revision), self.spec.replicas):
            self.promote(why)
            return
        self.st.candidate = cand.model_copy(update={"promoting": why})
        self.progress = Cond("Progressing", TRUE, "Promoting",
                             f"candidate {cand.revision}: {why}; scaling up to {self.spec.replicas} replicas "
                             "before traffic moves")

    def clear_candidate(self) -> None:
        self.st.candidate = None
        self.st.current_step = self.st.step_since = self.st.analysis_failures = None
        self.st.baseline = None

    def record(self, cand: RevisionRef, verdict: judge.Verdict, what: str) -> None:
        self.st.last_analysis = AnalysisResult(
            revision=cand.revision, verdict="Passed" if verdict.passed else "Failed", time=self.now,
            message=verdict.message[:1000], measurements=verdict.measurements or None)
        self.event("AnalysisPassed" if verdict.passed else "AnalysisFailed",
                   f"{what} of candidate {cand.revision}: {verdict.message}", not verdict.passed)

    def routed(self) -> bool:
        return self.spec.traffic is not None and self.spec.traffic.gateway is not None and self.obs.gateway_api

    def promote_passed(self, cand: RevisionRef) -> None:
        """Promote a candidate whose analysis passed (or that has none to pass)."""
        last = self.st.last_analysis
        numbers = f" ({last.message})" if last and last.revision == cand.revision and last.message else ""
        self.promote_at_full_size(cand, f"analysis passed{numbers}" if self.spec.analysis
                                  else "available (no analysis configured)")
