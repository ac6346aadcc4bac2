"""Live quality: the contract of `mlops quality`'s answer (the join of ground-truth labels to captured
predictions, runtime/quality.py) and the metrics read from it.

The counters are mergeable: two answers over disjoint windows, or two revisions' answers, add up (a confusion
matrix over the same classes, a count and sums of errors), so a metric over any union of them is exact.
"""

from __future__ import annotations

import math
from typing import Literal

from .artifacts import TERMINATION_MESSAGE_LIMIT, ArtifactError
from .common import ApiModel

LIVE_METRICS = ("accuracy", "rmse", "mae")
"""The metrics a revision's live quality gives: accuracy for a classifier, rmse and mae for a regressor."""
HIGHER_IS_BETTER = {"accuracy": True, "rmse": False, "mae": False}


class RevisionQuality(ApiModel):
    """One revision's labelled rows in the window."""

    revision: str
    task: Literal["classification", "regression"] = "classification"
    predictions: int = 0
    """Rows this revision answered (and captured) in the window."""
    labelled: int = 0
    """Of those, the rows a label was received for."""
    correct: int | None = None
    classes: list[str] | None = None
    confusion: list[list[int]] | None = None
    """[truth][predicted] over `classes` (left out when the answer would not fit a termination message)."""
    sum_error: float | None = None
    sum_abs_error: float | None = None
    sum_squared_error: float | None = None

    def metric(self, name: str) -> float | None:
        """accuracy, rmse or mae over the labelled rows (None when there are none, or it is not this task's)."""
        if not self.labelled:
            return None
        if name == "accuracy" and self.correct is not None:
            return self.correct / self.labelled
        if name == "rmse" and self.sum_squared_error is not None:
            return math.sqrt(self.sum_squared_error / self.labelled)
        if name == "mae" and self.sum_abs_error is not None:
            return self.sum_abs_error / self.labelled
        return None

    def all_metrics(self) -> dict[str, float]:
        return {m: round(v, 6) for m in LIVE_METRICS if (v := self.metric(m)) is not None}


class QualityReport(ApiModel):
    """What `mlops quality` answers."""

    since: float | None = None
    until: float
    labels: int = 0
    """Distinct labels read ((id, row) pairs, the last one for each counted)."""
    duplicate_labels: int = 0
    """Labels superseded by a later label for the same id and row."""
    unknown_labels: int = 0
    """Labels for an id no captured prediction has (sampled out, not captured yet, or never served)."""
    outside_window: int = 0
    """Labels for a prediction made outside the window."""
    files: int = 0
    revisions: list[RevisionQuality] = []

    def to_message(self) -> str:
        text = self.model_dump_json(by_alias=True, exclude_none=True)
        if len(text.encode()) > TERMINATION_MESSAGE_LIMIT:  # the matrices first: the counts that matter stay
            text = self.model_copy(update={"revisions": [r.model_copy(update={"confusion": None, "classes": None})
                                                         for r in self.revisions]}).model_dump_json(
                by_alias=True, exclude_none=True)
        return text


def parse_quality(text: str) -> QualityReport:
    try:
        return QualityReport.model_validate_json(text)
    except ValueError as exc:
        raise ArtifactError(f"the quality report does not follow the contract: {exc}") from None
