"""Blue-green: the candidate runs beside the stable revision behind the preview Service, takes no user
traffic until it is promoted (automatically once its analysis passed, or by `mlops promote`), then takes
all of it at once; the previous revision keeps running for `scaleDownDelaySeconds`, while live analysis
judges the promoted one and hands traffic back if it fails."""

from __future__ import annotations

from ..api.modeldeployment import BlueGreen as BlueGreenSpec
from ..api.modeldeployment import RevisionRef
from ..conditions import TRUE, Cond
from .base import Mirroring, Rollout
from .strategy import Split


def _spec(r: Rollout) -> BlueGreenSpec:
    return r.strategy.blue_green or BlueGreenSpec()


class BlueGreen:
    def candidate_replicas(self, r: Rollout) -> int:
        return _spec(r).preview_replicas

    def proceed(self, r: Rollout, cand: RevisionRef) -> None:
        if r.promote_requested:
            r.promote_at_full_size(cand, "promoted by mlops promote")
        elif _spec(r).auto_promotion:
            r.promote_passed(cand)
        else:
            r.progress = Cond("Progressing", TRUE, "AwaitingPromotion",
                              f"candidate {cand.revision} passed analysis; run `mlops promote "
                              f"{r.md['metadata']['name']}` to switch traffic")

    def split(self, r: Rollout) -> Split | None:
        return None  # all or nothing: the active Service selects one revision

    def previous_kept_seconds(self, r: Rollout) -> float:
        return float(_spec(r).scale_down_delay_seconds)

    def watches_after_promotion(self, r: Rollout) -> bool:
        return r.spec.analysis is not None

    def mirror(self, r: Rollout) -> Mirroring | None:
        return None  # the candidate's own traffic judges it: nothing is mirrored
