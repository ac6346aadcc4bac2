"""Canary: the candidate takes a growing share of live traffic, step by step (`steps[i].weight` percent
for `pauseSeconds`); with analysis configured, live analysis judges each step at the end of its pause
from the candidate's own counters since the step began (a failed step is measured again, up to
`failureLimit`, then the rollout is rolled back); after the last step it is promoted. The share is exact
with an HTTPRoute, else the ratio of the two revisions' pods behind the active Service."""

from __future__ import annotations

import datetime

from ..api import times
from ..api.modeldeployment import RevisionRef
from ..conditions import TRUE, Cond
from . import analysis as judge
from .base import Mirroring, Need, Needed, Rollout
from .strategy import Split


class Canary:
    def candidate_replicas(self, r: Rollout) -> int:
        return 1

    def proceed(self, r: Rollout, cand: RevisionRef) -> None:
        assert r.strategy.canary is not None
        steps = r.strategy.canary.steps
        analysis = r.spec.analysis
        if r.st.current_step is None:  # enter step 0
            if analysis is not None and r.obs.live is None:
                r.plan.needs = Needed(Need.LIVE, cand.revision)
                return
            self.enter_step(r, 0)
            return
        i = r.st.current_step
        step = steps[min(i, len(steps) - 1)]
        since = times.parse_or_none(r.st.step_since) or r.obs.now
        due = since + datetime.timedelta(seconds=step.pause_seconds)
        if r.promote_requested:
            r.promote_at_full_size(cand, "promoted by mlops promote (remaining steps skipped)")
            return
        if r.obs.now < due:
            r.progress = Cond("Progressing", TRUE, "CanaryStep",
                              f"step {i + 1} of {len(steps)}: {step.weight}% to candidate {cand.revision}")
            r.requeue((due - r.obs.now).total_seconds())
            return
        if analysis is not None:
            quality = None
            if analysis.live_quality is not None:
                stable = r.st.stable.revision if r.st.stable is not None else None
                quality = judge.judge_quality(analysis.live_quality, r.obs.live_quality, cand.revision, stable, due,
                                              r.obs.now)
                if quality is None:  # a join after the step, or enough labels: waited for
                    give_up = due + datetime.timedelta(seconds=analysis.live_quality.max_wait_seconds)
                    r.progress = Cond("Progressing", TRUE, "WaitingForLabels",
                                      f"step {i + 1} of {len(steps)}: waiting for {analysis.live_quality.min_labels} "
                                      f"labelled rows of candidate {cand.revision} (until {times.stamp(give_up)})")
                    r.requeue(5)
                    return
            if r.obs.live is None:
                r.plan.needs = Needed(Need.LIVE, cand.revision)
                return
            verdict = judge.judge_live(analysis, r.st.baseline or {}, r.obs.live)
            if quality is not None:
                verdict = judge.both(verdict, quality)
            r.record(cand, verdict, f"step {i + 1}")
            if not verdict.passed:
                failures = (r.st.analysis_failures or 0) + 1
                if failures > analysis.failure_limit:
                    r.reject("AnalysisFailed", f"step {i + 1} ({step.weight}%): {verdict.message}")
                    return
                r.st.analysis_failures = failures
                self.enter_step(r, i)  # measure the same step again
                return
        if i + 1 >= len(steps):
            r.promote_at_full_size(cand, f"all {len(steps)} canary steps passed")
            return
        self.enter_step(r, i + 1)

    def enter_step(self, r: Rollout, i: int) -> None:
        assert r.strategy.canary is not None
        steps = r.strategy.canary.steps
        r.st.current_step, r.st.step_since = i, r.now
        r.st.baseline = dict(r.obs.live) if r.obs.live is not None else None
        r.progress = Cond("Progressing", TRUE, "CanaryStep",
                          f"step {i + 1} of {len(steps)}: {steps[i].weight}% to the candidate")
        r.requeue(steps[i].pause_seconds)

    def split(self, r: Rollout) -> Split | None:
        """The stable's and the candidate's replicas and the candidate's share. With an HTTPRoute the
        share is the step's weight exactly and the stable keeps its size; by replica ratio the share is
        what the pod counts make of it (say 1 of 2 pods for a 10 % step on 2 replicas: 50 %)."""
        assert r.strategy.canary is not None
        if r.st.candidate is None or r.st.current_step is None:
            return None  # no step entered yet: the candidate takes no traffic
        weight = r.strategy.canary.steps[r.st.current_step].weight
        total = max(1, r.spec.replicas)
        cand = max(1, round(total * weight / 100)) if weight else 0
        if r.routed():
            return Split(total, max(cand, 1), weight)
        stable = max(1, total - cand) if weight < 100 else 0
        share = round(100 * cand / (cand + stable)) if cand + stable else 0
        return Split(stable, cand, share)

    def previous_kept_seconds(self, r: Rollout) -> float:
        return 0.0  # traffic moved step by step: the old revision goes at once

    def watches_after_promotion(self, r: Rollout) -> bool:
        return False  # the last step was judged on live traffic already

    def mirror(self, r: Rollout) -> Mirroring | None:
        return None  # the candidate's own traffic judges it: nothing is mirrored
