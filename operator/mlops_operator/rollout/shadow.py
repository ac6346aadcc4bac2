"""Shadow: the candidate answers copies of live requests that nobody sees. The stable revision's servers mirror
`percent` of their inference calls to the preview Service (runtime/mirror.py: off the request path, their
answers compared row by row with the stable's), for `durationSeconds`; then the candidate is promoted with
blue-green's switch (at full size first) when it agreed on at least `agreement.min` of the compared rows over at
least `minRequests` answered requests (and, with spec.analysis, met its success rate and p99 as the mirror saw
them), else rejected. Every user request is answered by the stable revision until the switch: the active
Service selects it alone. The numbers are in status.lastAnalysis.

Mirroring is turned on by the operator at every reconcile of the window (the plan's `mirror`, posted to the
stable pods, each setting lasting a little longer than the next reconcile: a pod that restarted catches up, and
one the operator never reaches again stops by itself), and off as soon as the window ends.

With the Gateway API (spec.traffic.gateway, and the cluster has HTTPRoute), the HTTPRoute's RequestMirror filter
mirrors instead. A gateway discards the mirror's answers, so there is no row to compare: the candidate is judged
on the Population Stability Index between the two revisions' prediction sketches over the same window (at most
`agreement.maxPsi`), read from every pod's monitoring endpoint, and status.lastAnalysis says so.
"""

from __future__ import annotations

import datetime

from ..api import times
from ..api.modeldeployment import RevisionRef
from ..api.modeldeployment import Shadow as ShadowSpec
from ..conditions import TRUE, Cond
from . import analysis as judge
from .base import EVERY_REVISION, Mirroring, Need, Needed, Rollout
from .strategy import Split

REFRESH_SECONDS = 10.0
"""A shadow window is looked at (and its mirror setting posted again) at least this often."""


def _spec(r: Rollout) -> ShadowSpec:
    return r.strategy.shadow or ShadowSpec()


def _due(r: Rollout) -> datetime.datetime:
    since = times.parse_or_none(r.st.step_since) or r.obs.now
    return since + datetime.timedelta(seconds=_spec(r).duration_seconds)


class Shadow:
    def candidate_replicas(self, r: Rollout) -> int:
        return _spec(r).replicas

    def proceed(self, r: Rollout, cand: RevisionRef) -> None:
        assert r.st.stable is not None
        stable = r.st.stable.revision
        if r.promote_requested:
            r.promote_at_full_size(cand, "promoted by mlops promote (the shadow window was cut short)")
            return
        gateway = r.routed()  # the HTTPRoute mirrors: judged from both revisions' prediction sketches
        counted = EVERY_REVISION if gateway else stable  # whose counters the window needs
        if r.st.current_step is None:  # the window starts at the counters as they are now
            if r.obs.live is None:
                r.plan.needs = Needed(Need.LIVE, counted)
                return
            r.st.current_step, r.st.step_since = 0, r.now
            r.st.baseline = dict(r.obs.live)
        spec, due = _spec(r), _due(r)
        if r.obs.now < due:
            who = "the HTTPRoute's RequestMirror filter copies" if gateway else \
                f"the servers of revision {stable} copy"
            r.progress = Cond("Progressing", TRUE, "Shadowing",
                              f"{who} {spec.percent}% of the requests to candidate {cand.revision}, whose answers "
                              f"nobody sees, until {times.stamp(due)}")
            r.requeue(min(REFRESH_SECONDS, (due - r.obs.now).total_seconds()))
            return
        if r.obs.live is None:
            r.plan.needs = Needed(Need.LIVE, counted)
            return
        if gateway:
            verdict = judge.judge_shadow_sketches(spec, r.spec.analysis, r.st.baseline or {}, r.obs.live, stable,
                                                  cand.revision)
        else:
            verdict = judge.judge_shadow(spec, r.spec.analysis, r.st.baseline or {}, r.obs.live)
        r.record(cand, verdict, "shadow traffic")
        if verdict.passed:
            r.promote_at_full_size(cand, f"shadow traffic agreed ({verdict.message})")
        else:
            r.reject("ShadowFailed", verdict.message)

    def split(self, r: Rollout) -> Split | None:
        return None  # every answer comes from the stable revision

    def previous_kept_seconds(self, r: Rollout) -> float:
        return 0.0  # the candidate was judged before the switch: the old revision goes at once

    def watches_after_promotion(self, r: Rollout) -> bool:
        return False

    def mirror(self, r: Rollout) -> Mirroring | None:
        """On while a shadow window is open; off (percent 0) right after one was (the stored status still says
        so); None otherwise."""
        st, spec = r.st, _spec(r)
        cand = st.candidate
        shadowing = cand is not None and st.stable is not None and st.current_step is not None \
            and not cand.promoting and r.obs.now < _due(r)
        if shadowing:
            assert st.stable is not None
            left = (_due(r) - r.obs.now).total_seconds()
            return Mirroring(st.stable.revision, spec.percent, float(spec.agreement.tolerance),
                             min(left, REFRESH_SECONDS * 3))
        stored = r.md.get("status") or {}
        stable = (stored.get("stable") or {}).get("revision")
        was = stored.get("currentStep") is not None and stored.get("candidate") and \
            not (stored.get("candidate") or {}).get("promoting")
        return Mirroring(stable, 0, 0.0, 0.0) if was and stable else None
