"""DriftPolicy: continuous monitoring of data and prediction drift that triggers retraining."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from .common import ApiModel, Decimal_, Fraction, LocalObjectReference, StatusBase
from .trainingrun import TrainingRunSpec

# the tests of drift/tests.py's registry (which checks at import that both name the same ones)
DriftTestName = Literal["psi", "ks", "chi2"]


class FeatureCheck(ApiModel):
    name: Annotated[str, Field(min_length=1, max_length=253)]
    """A feature of the model's reference profile."""
    test: DriftTestName | None = None
    """psi or ks for numeric features, chi2 for categorical (default: psi / chi2 by type)."""
    threshold: Decimal_ | None = None
    """psi: score above which the feature drifted (default "0.2"); ks, chi2: p-value below
    which it drifted (default "0.05")."""


class PredictionCheck(ApiModel):
    test: DriftTestName | None = None
    threshold: Decimal_ | None = None


class Window(ApiModel):
    min_samples: Annotated[int, Field(ge=1)] = 500
    """No verdict before this many samples (Drifted=Unknown, InsufficientData)."""
    max_samples: Annotated[int, Field(ge=1)] | None = None
    max_age_seconds: Annotated[int, Field(ge=1)] | None = None


class HealthMonitors(ApiModel):
    max_error_rate: Fraction | None = None
    max_p99_latency_ms: Annotated[int, Field(ge=1)] | None = None


class PerformanceCheck(ApiModel):
    """Concept drift: the stable revision's live quality (its ModelDeployment's status.liveQuality, from
    ground-truth labels joined to captured predictions) judged against a floor, or against its training."""

    _exactly_one_of = (("threshold", "max_drop_from_training"),)
    metric: Literal["accuracy", "rmse", "mae"]
    """accuracy for a classifier (higher is better), rmse or mae for a regressor (lower is better)."""
    threshold: Decimal_ | None = None
    """Degraded when accuracy falls below it (rmse, mae: rise above it)."""
    max_drop_from_training: Decimal_ | None = None
    """Degraded when the live metric is this much worse than the one its TrainingRun measured on held-out
    data (a drop for accuracy, a rise for rmse and mae)."""
    min_labels: Annotated[int, Field(ge=1)] = 100
    """No verdict before this many labelled rows of the stable revision (PerformanceDrifted=Unknown)."""


class Retrain(ApiModel):
    template: TrainingRunSpec
    """The TrainingRun spec created on drift; its model must be the stream the target follows."""
    cooldown_seconds: Annotated[int, Field(ge=0)] = 3600
    max_per_day: Annotated[int, Field(ge=1, le=1000)] = 3
    history_limit: Annotated[int, Field(ge=1, le=100)] = 5


class Action(ApiModel):
    type: Literal["Alert", "Retrain"] = "Alert"
    retrain: Retrain | None = None


class DriftPolicySpec(ApiModel):
    target_ref: LocalObjectReference
    """The ModelDeployment (same namespace) whose stable revision is watched."""
    interval_seconds: Annotated[int, Field(ge=5, le=86400)] = 60
    window: Window | None = None
    features: Annotated[list[FeatureCheck], Field(max_length=10000)] | None = None
    """Default: every feature of the reference profile with its type's default test."""
    prediction: PredictionCheck | None = None
    drift_share: Fraction = "0.5"
    """Fraction of checked features that must drift for the model to count as drifted."""
    correction: Literal["bonferroni", "none"] = "none"
    health: HealthMonitors | None = None
    performance: PerformanceCheck | None = None
    """Retrain on falling live quality too (the same action, cooldown and caps as data drift)."""
    action: Action | None = None
    per_feature_metrics: bool = False
    """Export one gauge per feature on the operator's /metrics (the verdict and the share always are)."""


class FeatureResult(ApiModel):
    name: str
    test: str
    value: float
    threshold: float
    drifted: bool


class Evaluation(ApiModel):
    time: str
    samples: int
    features: list[FeatureResult] | None = None
    prediction: FeatureResult | None = None
    drifted_share: float | None = None
    verdict: Literal["Drifted", "NotDrifted", "InsufficientData"]
    error_rate: float | None = None
    p99_ms: float | None = None
    """Upper bound of the latency bucket holding the window's 99th percentile."""
    unhealthy: str | None = None
    """Which service-health monitor failed, with the numbers (spec.health)."""


class PerformanceResult(ApiModel):
    """The last judgement of live quality (spec.performance)."""

    time: str | None = None
    """When the labels it judged were joined (status.liveQuality.time of the ModelDeployment)."""
    revision: str
    metric: str
    value: float | None = None
    labelled: int = 0
    limit: float | None = None
    """The value past which the revision is degraded (the threshold, or training's metric with the drop)."""
    training: float | None = None
    verdict: Literal["Degraded", "WithinLimits", "InsufficientLabels"]
    message: str = ""


class RetrainRecord(ApiModel):
    name: str
    created: str
    outcome: str | None = None


class DriftPolicyStatus(StatusBase):
    last_evaluation: Evaluation | None = None
    drifted_features: str | None = None
    retrains: list[RetrainRecord] | None = None
    next_retrain_possible: str | None = None
    last_performance: PerformanceResult | None = None
