"""The seam between the rollout and its strategies: what a strategy decides, and nothing else.

The rollout (machine.py) does what every strategy shares: commands, which version should serve, the
candidate's Deployment and its champion-vs-challenger analysis before any user traffic, promotion,
rejection, history, the children and status. A strategy decides how a candidate that passed its
analysis reaches traffic: how many pods it runs while it is judged, what it does next (promote, wait
for `mlops promote`, walk traffic steps), how traffic splits while it does, and how long the previous
revision is kept after a promotion to take over again.

A new strategy is one module with a class implementing `Strategy`, registered by its spec name in
machine.py's STRATEGIES (and named in `api.modeldeployment.Strategy.type`): bluegreen.py, canary.py and
shadow.py (which runs the candidate at `candidate_replicas`, has the stable revision's servers mirror
requests to it through `mirror`, promotes in `proceed` when the two agreed, while `split` keeps every
answer on the stable revision).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..api.modeldeployment import RevisionRef
from .base import Mirroring, Rollout


@dataclass(frozen=True)
class Split:
    """How traffic splits while a candidate takes live traffic."""

    stable_replicas: int
    candidate_replicas: int
    candidate_share: int
    """Percent of requests the candidate answers (exact with an HTTPRoute, else the pods' ratio)."""


class Strategy(Protocol):
    def candidate_replicas(self, r: Rollout) -> int:
        """Pods of a candidate being deployed and judged, before it takes traffic."""
        ...

    def proceed(self, r: Rollout, cand: RevisionRef) -> None:
        """The next step for a candidate that is available and passed its analysis (not the first
        version: that one is promoted as soon as it has)."""
        ...

    def split(self, r: Rollout) -> Split | None:
        """The traffic split while the candidate takes live traffic; None while it takes none."""
        ...

    def previous_kept_seconds(self, r: Rollout) -> float:
        """How long the previous revision keeps running after a promotion, ready to take over."""
        ...

    def watches_after_promotion(self, r: Rollout) -> bool:
        """Whether live analysis judges a promoted revision while the previous one is kept."""
        ...

    def mirror(self, r: Rollout) -> Mirroring | None:
        """Shadow traffic the stable revision's servers should send the candidate now (None: nothing to say)."""
        ...
