"""How a ModelDeployment rolls a model version out. Pure.

The decision depends only on (the ModelDeployment as stored: spec, annotations, status; the
observed Deployments and analysis Jobs; the stream's TrainingRuns; what the handler fetched when
asked: the analysis report, the ready pods' URLs, the candidate pods' counters; the time). A
restarted operator decides the same from the same inputs, and a reconcile that finds nothing new
changes nothing.

The states are not a phase string but what status records:

    no candidate                      steady: the stable revision serves
    candidate, Deployment not ready   Deploying
    candidate ready, analysis Job     Analyzing (champion vs challenger on the validation sample)
    blue-green, analysis passed       promoted (autoPromotion) or AwaitingPromotion (`mlops promote`)
    canary, currentStep = i           traffic at steps[i].weight; live analysis at the end of the pause
    shadow, currentStep = 0           the stable's servers mirror to the candidate; judged on agreement
                                      (the strategies: bluegreen.py, canary.py, shadow.py; their seam: strategy.py)
    analysis failed / aborted         RolledBack: traffic stays on stable, the candidate scaled to 0,
                                      its revision in `rejected` until a newer version or `mlops retry`
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any, Protocol, get_args

from ..api import labels as L
from ..api import times
from ..api.artifacts import ArtifactError
from ..api.modeldeployment import (
    AnalysisResult,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    PodCounters,
    RevisionRef,
    TrafficSplit,
)
from ..api.modeldeployment import Strategy as StrategySpec
from ..api.registry import is_registry_uri, version_uri
from ..api.reports import AnalysisReport
from ..conditions import FALSE, TRUE, Cond
from . import analysis as judge
from .base import (
    EVERY_REVISION,
    TRANSIENT,
    Mirroring,
    Need,
    Needed,
    Observed,
    Plan,
    Rollout,
    available,
    job_finished,
    progress_failed,
)
from .bluegreen import BlueGreen
from .canary import Canary
from .registry import current as resolved_version
from .shadow import Shadow
from .spec import newest_passing_run
from .strategy import Strategy

__all__ = ["EVERY_REVISION", "STRATEGIES", "Fetcher", "Mirroring", "Need", "Needed", "Observed", "Plan", "decide",
           "resolve"]
COMMANDS = ("retry", "rollback", "abort", "promote")
ANNOTATION = L.COMMAND_PREFIX
HANDLED_LIMIT = 10
CLEARABLE = tuple(alias for alias in (f.alias or k for k, f in ModelDeploymentStatus.model_fields.items())
                  if alias not in ("conditions", "observedGeneration"))
"""The status fields a decision writes as null when it leaves them out."""


def revision_of(spec: ModelDeploymentSpec, version: RevisionRef) -> str:
    from ..builders.modeldeployment import revision

    return revision(spec, version.digest or version.model_uri or "")


class _Decision(Rollout):
    """The decision, in the order it is made; the strategy decides how a judged candidate reaches traffic."""

    def __init__(self, md: Mapping[str, Any], spec: ModelDeploymentSpec, obs: Observed) -> None:
        super().__init__(md, spec, obs)
        self.kind: Strategy = STRATEGIES[self.strategy.type]

    # -- 1. commands, through annotations naming the revision they apply to
    def commands(self) -> None:
        annotations = self.md["metadata"].get("annotations") or {}
        handled = list(self.st.handled_commands or [])
        for verb in COMMANDS:
            value = annotations.get(ANNOTATION + verb)
            if not value or f"{verb}={value}" in handled:
                continue
            handled = [*handled, f"{verb}={value}"][-HANDLED_LIMIT:]
            rev = value.split("@", 1)[0]
            getattr(self, f"cmd_{verb}")(rev)
        self.st.handled_commands = handled or None

    def cmd_retry(self, rev: str) -> None:
        if rev in (self.st.rejected or []):
            self.st.rejected = [r for r in self.st.rejected or [] if r != rev] or None
            self.event("Retry", f"revision {rev} may be rolled out again (mlops retry)")
        else:
            self.event("CommandIgnored", f"mlops retry {rev}: the revision was not rejected", True)

    def cmd_rollback(self, rev: str) -> None:
        known = [h for h in reversed(self.st.history or []) if h.revision == rev and h.outcome == "Promoted"]
        stable = self.st.stable
        if stable is not None and stable.revision == rev:
            self.event("CommandIgnored", f"mlops rollback --to {rev}: it is the stable revision", True)
            return
        if not known or stable is None:
            self.event("CommandIgnored", f"mlops rollback --to {rev}: not a revision that served before "
                       "(see status.history)", True)
            return
        if self.st.candidate is not None:
            self.history(self.st.candidate, "Aborted", f"rollback to {rev}")
        self.st.rejected = [r for r in self.st.rejected or [] if r != rev]
        self.reject_revision(stable.revision)
        self.clear_candidate()
        self.st.candidate = RevisionRef(**known[0].model_dump(exclude={*TRANSIENT, "outcome", "message"}),
                                        since=self.now, rollback=True)
        self.event("RollingBack", f"rolling back from {stable.revision} to {rev} (mlops rollback)", True)

    def cmd_abort(self, rev: str) -> None:
        cand = self.st.candidate
        if cand is None or cand.revision != rev:
            self.event("CommandIgnored", f"mlops abort {rev}: it is not the candidate", True)
            return
        self.reject("Aborted", "aborted by mlops abort", outcome="Aborted")

    def cmd_promote(self, rev: str) -> None:
        cand = self.st.candidate
        if cand is None or cand.revision != rev:
            self.event("CommandIgnored", f"mlops promote {rev}: it is not the candidate", True)
            return
        self.promote_requested = True

    # -- 2. which version should serve
    def target(self) -> RevisionRef | None:
        model = self.spec.model
        if is_registry_uri(model.storage_uri):
            version = self.registry_target()
            if version is None:
                return self.keep_current()
        elif model.storage_uri is not None:
            version = RevisionRef(revision="", model_uri=model.storage_uri, digest=model.digest, format=model.format)
        else:
            stable = self.st.stable
            floor = (stable.run_created or "", stable.training_run or "") if stable else ("", "")
            newer = [r for r in self.obs.runs
                     if (r["metadata"].get("creationTimestamp", ""), r["metadata"]["name"]) > floor]
            run = newest_passing_run(newer)
            if run is None:
                return self.keep_current()
            m = run["status"]["model"]
            version = RevisionRef(revision="", model_uri=m.get("uri"), digest=m.get("digest"), format=m.get("format"),
                                  training_run=run["metadata"]["name"],
                                  run_created=run["metadata"].get("creationTimestamp"))
        return version.model_copy(update={"revision": revision_of(self.spec, version)})

    def keep_current(self) -> RevisionRef | None:
        """Nothing new to serve: what is rolling out (its source may be gone: it goes on), or the stable."""
        stable, cand = self.st.stable, self.st.candidate
        keep = cand if cand is not None and not cand.rollback else stable
        return keep.model_copy(update={"revision": revision_of(self.spec, keep)}) if keep else None

    def registry_target(self) -> RevisionRef | None:
        """The version a models:/ storageUri resolved to, with the digest it is verified against; None (the
        reason in `self.source`) while it is not resolved or cannot be served as the spec asks."""
        model, registry = self.spec.model, self.obs.registry
        found = resolved_version(self.spec, registry)
        uri = model.storage_uri
        if found is None:
            if registry is not None and registry.message:
                self.source = ("ResolveFailed", registry.message)
            else:
                tracking = model.mlflow.tracking_uri if model.mlflow else "?"
                self.source = ("Resolving", f"resolving {uri} in the MLflow registry at {tracking}")
            return None
        named = f"{uri} is version {found.version} ({found.source})"
        if found.digest and model.digest and found.digest != model.digest:
            self.source = ("DigestMismatch", f"{named}, whose mlops.dev/digest tag {found.digest} differs from "
                           f"spec.model.digest {model.digest}")
            return None
        digest = (found.digest or model.digest) if model.verify else None  # verify: false, as the spec says
        if digest is None and model.verify:
            self.source = ("DigestMissing", f"{named}, which has no mlops.dev/digest tag (no TrainingRun registered "
                           "it): give spec.model.digest, or spec.model.verify: false to serve it unverified")
            return None
        if digest is None and found.source.startswith("http://"):
            self.source = ("DigestMissing", f"{named}: an unverified model is refused over plain http:// (anyone "
                           "on the path could swap it); give spec.model.digest")
            return None
        return RevisionRef(revision="", model_uri=found.source, digest=digest, format=model.format,
                           registry_version=version_uri(found.name, found.version))

    # -- 3. the decision
    def decide(self) -> Plan:
        self.commands()
        target = self.target()
        stable, cand = self.st.stable, self.st.candidate
        rejected = set(self.st.rejected or [])
        if cand is not None and not cand.rollback and (target is None or target.revision != cand.revision):
            why = f"superseded by {target.revision}" if target else "its version is gone"
            if target is None or target.revision in rejected or (stable and target.revision == stable.revision):
                why = "the spec no longer asks for it"
            self.history(cand, "Superseded", why)
            self.event("Superseded", f"candidate {cand.revision}: {why}")
            self.clear_candidate()
            cand = None
        if cand is None and target is not None and target.revision not in rejected and \
                (stable is None or target.revision != stable.revision):
            cand = self.st.candidate = target.model_copy(update={"since": self.now})
            self.event("RolloutStarted", f"candidate {cand.revision}: {cand.model_uri}"
                       + (f" (TrainingRun {cand.training_run})" if cand.training_run else ""))
        if cand is not None:
            self.advance(cand)
            if self.plan.needs:
                return self.plan
            if self.st.candidate is None and self.watching_after_promotion():
                self.requeue(1)  # promoted just now: the first look at its live traffic
        elif self.watching_after_promotion():
            self.watch_stable()
            if self.plan.needs:
                return self.plan
        return self.finish(target)

    # -- live analysis after a blue-green promotion, while the old revision can still take over
    def previous_due(self) -> datetime.datetime:
        prev = self.st.previous
        assert prev is not None
        delay = self.kind.previous_kept_seconds(self)
        return (times.parse_or_none(prev.since) or self.obs.now) + datetime.timedelta(seconds=delay)

    def watching_after_promotion(self) -> bool:
        st = self.st
        return self.kind.watches_after_promotion(self) and st.candidate is None \
            and st.stable is not None and st.previous is not None and st.previous.revision != st.stable.revision \
            and st.previous.revision not in (st.rejected or []) and self.obs.now < self.previous_due()

    def watch_stable(self) -> None:
        """Judge the promoted revision's live traffic every intervalSeconds (windows with fewer than
        minRequests are inconclusive and keep accumulating); past failureLimit, return to the previous
        revision, which is still running until scaleDownDelaySeconds."""
        st, analysis, now = self.st, self.spec.analysis, self.obs.now
        assert analysis is not None and st.stable is not None
        if analysis.live_quality is not None and st.previous is not None:
            # the promoted revision's live labels against those of the one it replaced (in the same join)
            promoted = times.parse_or_none(st.stable.since) or now
            quality = judge.judge_quality(analysis.live_quality, self.obs.live_quality, st.stable.revision,
                                          st.previous.revision, promoted, now)
            if quality is not None and not quality.passed:
                self.record(st.stable, quality, "live quality after the promotion")
                self.return_to_previous(quality.message)
                return
        since = times.parse_or_none(st.step_since)
        due = since + datetime.timedelta(seconds=analysis.interval_seconds) if since else now
        if self.obs.live is None:
            if st.baseline is None or now >= due:
                self.plan.needs = Needed(Need.LIVE, st.stable.revision)
            else:
                self.requeue((due - now).total_seconds())
            return
        live = dict(self.obs.live)
        if st.baseline is None:  # the first look after the promotion: the window starts here
            st.baseline, st.step_since = live, self.now
            self.requeue(analysis.interval_seconds)
            return
        self.requeue(analysis.interval_seconds)
        if judge.window_totals(st.baseline, live)[0] < max(1, analysis.min_requests):
            return  # too little traffic to judge yet: the window goes on
        verdict = judge.judge_live(analysis, st.baseline, live)
        self.record(st.stable, verdict, "live traffic after the promotion")
        st.baseline, st.step_since = live, self.now
        if verdict.passed:
            return
        failures = (st.analysis_failures or 0) + 1
        st.analysis_failures = failures
        if failures > analysis.failure_limit:
            self.return_to_previous(verdict.message)

    def return_to_previous(self, message: str) -> None:
        st = self.st
        failed, prev = st.stable, st.previous
        assert failed is not None and prev is not None
        self.reject_revision(failed.revision)
        self.history(failed, "RolledBack", f"after promotion: {message}")
        st.stable, st.previous = prev.model_copy(update={"since": self.now}), None
        st.step_since = st.baseline = st.analysis_failures = None
        self.progress = Cond("Progressing", FALSE, "RolledBack",
                             f"revision {failed.revision} rolled back after its promotion ({message}); traffic is "
                             f"back on revision {prev.revision}")
        self.event("RolledBack", f"revision {failed.revision} rolled back after its promotion: {message}", True)

    def advance(self, cand: RevisionRef) -> None:
        """Move the candidate on by one step, as far as the observed children allow."""
        obs, spec = self.obs, self.spec
        dep = obs.deployments.get(cand.revision)
        first = self.st.stable is None
        wanted = spec.replicas if first else self.kind.candidate_replicas(self)
        failure = progress_failed(dep)
        if failure:
            self.reject("ProgressDeadlineExceeded", f"the candidate did not become available: {failure}")
            return
        if not available(dep, min(wanted, 1)):
            self.progress = Cond("Progressing", TRUE, "Deploying",
                                 f"candidate {cand.revision} ({cand.model_uri}) is starting")
            return
        if cand.promoting or cand.rollback:
            self.promote_at_full_size(cand, cand.promoting or "rolled back by mlops rollback")
            return
        analysis = spec.analysis
        if self.st.current_step is None and analysis is not None:
            last = self.st.last_analysis
            passed = last is not None and last.revision == cand.revision and last.verdict == "Passed"
            if not passed and not self.analyze(cand):
                return
        if not first:
            self.kind.proceed(self, cand)
        elif self.promote_requested:
            self.promote_at_full_size(cand, "promoted by mlops promote")
        else:  # the first version: nothing serves, so nothing to wait for
            self.promote_passed(cand)

    def analyze(self, cand: RevisionRef) -> bool:
        """The analysis Job's verdict: True when passed (and the rollout may go on)."""
        job = self.obs.jobs.get(cand.revision)
        if job is None:
            if self.obs.urls is None:
                self.plan.needs = Needed(Need.URLS, cand.revision)
                return False
            urls = self.obs.urls.get(cand.revision) or []
            stable = self.st.stable
            stable_urls = (self.obs.urls.get(stable.revision) or []) if stable else []
            if not urls:
                self.progress = Cond("Progressing", TRUE, "Deploying", f"candidate {cand.revision}: no ready pod yet")
                self.requeue(2)
                return False
            self.plan.analysis_job = (cand, urls, stable_urls)
            self.st.last_analysis = AnalysisResult(revision=cand.revision, verdict="Running", time=self.now,
                                                   message="replaying the validation sample")
            self.progress = Cond("Progressing", TRUE, "Analyzing",
                                 f"candidate {cand.revision}: champion-vs-challenger analysis started")
            return False
        if not job_finished(job):
            self.progress = Cond("Progressing", TRUE, "Analyzing",
                                 f"candidate {cand.revision}: champion-vs-challenger analysis running")
            return False
        if self.obs.report is None:
            self.plan.needs = Needed(Need.REPORT, cand.revision)
            return False
        assert self.spec.analysis is not None
        if isinstance(self.obs.report, ArtifactError):
            verdict = judge.Verdict(False, f"the analysis could not run: {self.obs.report}")
        else:
            verdict = judge.judge_report(self.obs.report, self.spec.analysis)
        self.record(cand, verdict, "analysis")
        if not verdict.passed:
            self.reject("AnalysisFailed", verdict.message)
            return False
        return True

    # -- 4. children and status from the decided state
    def finish(self, target: RevisionRef | None) -> Plan:
        st, spec, plan, obs = self.st, self.spec, self.plan, self.obs
        stable, cand = st.stable, st.candidate
        shift = self.kind.split(self) if cand is not None and stable is not None else None
        canary_live = shift is not None
        first = stable is None
        keep: dict[str, tuple[RevisionRef, int]] = {}
        if stable is not None:
            keep[stable.revision] = (stable, spec.replicas)
        split = TrafficSplit(stable=100, candidate=0, method="Service")
        if cand is not None:
            replicas = spec.replicas if first else self.kind.candidate_replicas(self)
            if shift is not None:
                assert stable is not None
                keep[stable.revision] = (stable, shift.stable_replicas)
                replicas = shift.candidate_replicas
                split = TrafficSplit(stable=100 - shift.candidate_share, candidate=shift.candidate_share,
                                     method="HTTPRoute" if self.routed() else "ReplicaRatio")
            if cand.promoting or cand.rollback:
                replicas = spec.replicas
            keep[cand.revision] = (cand, replicas)
        elif first:
            split = TrafficSplit(stable=0, candidate=0, method="Service")
        prev = st.previous
        if prev is not None and stable is not None and prev.revision != stable.revision and \
                prev.revision not in keep:
            due = self.previous_due()
            if obs.now < due and not canary_live:
                keep[prev.revision] = (prev, spec.replicas)
                self.requeue((due - obs.now).total_seconds())
            else:
                st.previous = None
                if cand is None:  # the live analysis after the promotion ends with it
                    st.step_since = st.baseline = st.analysis_failures = None
        # revisions beyond those are scaled to 0, the newest revisionHistoryLimit kept, older deleted
        others = sorted((r for r in obs.deployments if r not in keep),
                        key=lambda r: obs.deployments[r]["metadata"].get("creationTimestamp", ""), reverse=True)
        for i, rev in enumerate(others):
            if i < spec.revision_history_limit:
                keep[rev] = (RevisionRef(revision=rev), 0)
            else:
                plan.delete.append(rev)
        plan.replicas = keep
        plan.active = "*" if canary_live and not self.routed() else (stable.revision if stable else None)
        mirroring = self.kind.mirror(self)
        if self.routed():
            plan.route = (split.stable, split.candidate) if canary_live else (100, 0)
            if not canary_live:
                split = split.model_copy(update={"method": "HTTPRoute"})
            plan.route_mirror = mirroring.percent if mirroring is not None and mirroring.percent else None
        else:
            plan.mirror = mirroring
            if self.spec.traffic is not None and self.spec.traffic.gateway is not None:
                self.requested_route_missing = True
        plan.preview = cand.revision if cand else None
        plan.preview_wanted = (cand is not None and stable is not None) or self.routed()
        plan.delete_jobs = [r for r in obs.jobs if cand is None or r != cand.revision]
        st.traffic = split
        st.traffic_summary = self.summary(split)
        plan.conditions = self.conditions(target)
        meta = self.md["metadata"]
        st.url = f"http://{meta['name']}.{meta['namespace']}.svc.cluster.local"
        plan.status = st.wire()
        for alias in CLEARABLE:  # write removals as nulls (merge patch)
            if alias not in plan.status:
                plan.status[alias] = None
        stable_dep = obs.deployments.get(stable.revision) if stable else None
        plan.status["replicas"] = int(((stable_dep or {}).get("status") or {}).get("replicas") or 0)
        plan.status["selector"] = L.selector({L.MODEL_DEPLOYMENT: meta["name"],
                                              **({L.REVISION: stable.revision} if stable else {})})
        return plan

    def summary(self, split: TrafficSplit) -> str:
        st = self.st
        if st.stable is None:
            return "none (no version promoted yet)"
        if st.candidate is None or not split.candidate:
            return f"100% {st.stable.revision}"
        return f"{split.stable}% {st.stable.revision}, {split.candidate}% {st.candidate.revision}"

    def conditions(self, target: RevisionRef | None) -> list[Cond]:
        st, obs = self.st, self.obs
        stable = st.stable
        rejected = set(st.rejected or [])
        if stable is None:
            avail = Cond("Available", FALSE, "NoStableVersion", "no version has been promoted yet")
        elif self.spec.replicas == 0:
            avail = Cond("Available", FALSE, "ScaledToZero", "spec.replicas is 0")
        elif available(obs.deployments.get(stable.revision), 1):
            avail = Cond("Available", TRUE, "Serving", f"revision {stable.revision} serves {stable.model_uri}" + (
                " (spec.traffic.gateway is set but the cluster has no Gateway API HTTPRoute kind: traffic "
                "moves through the Service)" if self.requested_route_missing else ""))
        else:
            avail = Cond("Available", FALSE, "Unavailable", f"revision {stable.revision} has no available pod")
        degraded = Cond("Degraded", FALSE, "AsExpected", "")
        resolving = self.source is not None and self.source[0] == "Resolving"
        if self.source is not None and not resolving:
            degraded = Cond("Degraded", TRUE, *self.source)
        elif target is not None and target.revision in rejected and \
                (stable is None or stable.revision != target.revision):
            if self.spec.model.storage_uri is not None:
                degraded = Cond("Degraded", TRUE, "PinnedVersionRejected",
                                f"spec.model.storageUri {target.model_uri} (revision {target.revision}) was rejected; "
                                "it does not serve (`mlops retry` to try it again)")
            elif stable is None:
                degraded = Cond("Degraded", TRUE, "NoVersionServes",
                                f"the only version, revision {target.revision}, was rejected")
        progress = self.progress
        if progress is None and resolving:
            assert self.source is not None
            progress = Cond("Progressing", TRUE, *self.source)
        if progress is None:
            old = {c.get("type"): c for c in (self.md.get("status") or {}).get("conditions") or ()}.get("Progressing")
            if old is not None and old.get("status") == FALSE:
                progress = Cond("Progressing", FALSE, str(old.get("reason")), str(old.get("message") or ""))
            else:
                progress = Cond("Progressing", FALSE, "Promoted",
                                f"revision {stable.revision} serves" if stable else "nothing to roll out")
        if degraded.status == TRUE:
            ready = Cond("Ready", FALSE, degraded.reason, degraded.message)
        elif avail.status == TRUE:
            ready = Cond("Ready", TRUE, "Serving", avail.message)
        elif resolving and stable is None:
            assert self.source is not None
            ready = Cond("Ready", FALSE, *self.source)
        else:
            ready = Cond("Ready", FALSE, avail.reason, avail.message)
        return [ready, avail, progress, degraded, self.verified()]

    def verified(self) -> Cond:
        model = self.spec.model
        if not model.verify:
            return Cond("Verified", FALSE, "VerificationDisabled",
                        f"spec.model.verify is false: {model.storage_uri} is served without checking its digest")
        found = resolved_version(self.spec, self.obs.registry)
        if found is not None and found.digest:
            return Cond("Verified", TRUE, "DigestFromRegistry",
                        f"each pod checks the model against the digest registered with version {found.version} "
                        f"(its mlops.dev/digest tag), {found.digest}")
        if model.storage_uri is not None:
            return Cond("Verified", TRUE, "DigestVerified",
                        f"each pod checks the model against {model.digest} before it serves")
        return Cond("Verified", TRUE, "DigestFromTrainingRun",
                    "each pod checks the model against the digest its TrainingRun recorded before it serves")


STRATEGIES: dict[str, Strategy] = {"BlueGreen": BlueGreen(), "Canary": Canary(), "Shadow": Shadow()}
if set(STRATEGIES) != set(get_args(StrategySpec.model_fields["type"].annotation)):  # one per spec.strategy.type
    raise ImportError(f"rollout strategies {sorted(STRATEGIES)} differ from spec.strategy.type's")


def decide(md: Mapping[str, Any], spec: ModelDeploymentSpec, obs: Observed) -> Plan:
    return _Decision(md, spec, obs).decide()


class Fetcher(Protocol):
    """What the handler fetches when a decision asks for it (see `Need`)."""

    async def report(self, revision: str) -> AnalysisReport | ArtifactError: ...

    async def urls(self) -> Mapping[str, list[str]]: ...

    async def live(self, revision: str) -> Mapping[str, PodCounters]: ...


async def resolve(md: Mapping[str, Any], spec: ModelDeploymentSpec, obs: Observed, fetch: Fetcher) -> Plan:
    """Decide; fetch what the decision needs; decide again, each need fetched at most once. A plan that
    still needs something (the world moved while we looked) is returned as it is: the caller retries."""
    plan = decide(md, spec, obs)
    fetched: set[Need] = set()
    while plan.needs is not None and plan.needs.what not in fetched:
        what, rev = plan.needs.what, plan.needs.revision
        fetched.add(what)
        if what is Need.URLS:
            obs.urls = await fetch.urls()
        elif what is Need.REPORT:
            obs.report = await fetch.report(rev)
        else:
            obs.live = await fetch.live(rev)
        plan = decide(md, spec, obs)
    return plan
