"""A drift verdict from a window of live counts against the model's reference profile. Pure.

Every feature's live counts are compared bin by bin with the reference (the bins the trainer chose
from training quantiles, or its categories). Missing values and unseen categories are two more
bins, so a feature that starts arriving empty, or with categories never seen in training, drifts;
values outside the training range land in the open outer bins. Tests (tests.py's registry): PSI (a
score; drifted above the threshold, default 0.2), chi² and binned KS (p-values; drifted below the
threshold, default 0.05, divided by the number of p-value tests under `correction: bonferroni`). The model counts as
drifted when at least `driftShare` of the checked features drifted, or its predictions did.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from ..api.artifacts import Distribution, Profile
from ..api.driftpolicy import DriftPolicySpec, Evaluation, FeatureResult
from ..rollout.analysis import p99_from_buckets
from . import stats
from .tests import TESTS, default_test

PREDICTION = "(prediction)"


@dataclass(frozen=True)
class Check:
    name: str
    test: str
    threshold: Decimal
    reference: Distribution


def plan(spec: DriftPolicySpec, profile: Profile) -> tuple[list[Check], list[str]]:
    """The checks to run, and what in the spec does not fit the profile (fields named)."""
    by_name = {d.name: d for d in profile.features}
    errors: list[str] = []
    wanted = spec.features if spec.features is not None else None
    checks: list[Check] = []
    items = [(f"spec.features[{i}]", f.name, f.test, f.threshold) for i, f in enumerate(wanted)] if wanted \
        else [(None, d.name, None, None) for d in profile.features]
    for path, name, named, threshold in items:
        ref = by_name.get(name)
        if ref is None:
            errors.append(f"{path}.name: {name} is not a feature of the model's reference profile "
                          f"({', '.join(sorted(by_name))})")
            continue
        test = named or default_test(ref.type)
        if ref.type == "categorical" and TESTS[test].ordered:
            unordered = " or ".join(t for t, d in TESTS.items() if not d.ordered)
            errors.append(f"{path}.test: {test} needs ordered values; {name} is categorical (use {unordered})")
            continue
        checks.append(Check(name, test, Decimal(threshold) if threshold else TESTS[test].default_threshold, ref))
    if spec.prediction is not None and profile.prediction is not None:
        ref = profile.prediction
        predicted: str = spec.prediction.test or default_test(ref.type)
        if ref.type == "categorical" and TESTS[predicted].ordered:
            errors.append(f"spec.prediction.test: {predicted} needs ordered values; the predictions are categorical")
        else:
            threshold = spec.prediction.threshold
            checks.append(Check(PREDICTION, predicted,
                                Decimal(threshold) if threshold else TESTS[predicted].default_threshold, ref))
    elif spec.prediction is not None:
        errors.append("spec.prediction: the model's reference profile has no prediction distribution")
    return checks, errors


def _bins(d: Mapping[str, Any] | Distribution | None, size: int) -> list[float]:
    if d is None:
        return [0] * (size + 2)
    if isinstance(d, Distribution):
        return [*d.counts, d.missing, d.other]
    counts = list(d.get("counts") or [0] * size)
    return [*counts, int(d.get("missing") or 0), int(d.get("other") or 0)]


def evaluate(spec: DriftPolicySpec, profile: Profile, window: Mapping[str, Any] | None, time: str) -> Evaluation:
    """The verdict on one window (a merged, diffed monitoring snapshot)."""
    checks, _ = plan(spec, profile)
    samples = int((window or {}).get("rows") or 0)
    min_samples = spec.window.min_samples if spec.window is not None else 500
    if window is None or samples < min_samples:
        return Evaluation(time=time, samples=samples, verdict="InsufficientData")
    live = {f["name"]: f for f in window.get("features") or ()}
    p_tests = sum(1 for c in checks if TESTS[c.test].kind == "p-value")
    results: list[FeatureResult] = []
    prediction: FeatureResult | None = None
    for c in checks:
        observed = window.get("prediction") if c.name == PREDICTION else live.get(c.name)
        ref, cur = _bins(c.reference, len(c.reference.counts)), _bins(observed, len(c.reference.counts))
        test = TESTS[c.test]
        if test.coarse and c.reference.type == "numeric":  # the ordered bins grouped; missing, other as they are
            grouped = stats.coarsen(ref[:-2], cur[:-2])
            ref, cur = [*grouped[0], *ref[-2:]], [*grouped[1], *cur[-2:]]
        value = test.value(ref, cur)
        threshold = float(c.threshold)
        if test.kind == "p-value" and spec.correction == "bonferroni":
            threshold = stats.bonferroni(threshold, p_tests)
        drifted = test.drifted(value, threshold)
        result = FeatureResult(name=c.name, test=c.test, value=round(value, 6), threshold=round(threshold, 8),
                               drifted=drifted)
        if c.name == PREDICTION:
            prediction = result
        else:
            results.append(result)
    share = sum(r.drifted for r in results) / len(results) if results else 0.0
    health = service_health(spec, window)
    drifted = (bool(results) and share > 0 and Decimal(repr(share)) >= Decimal(spec.drift_share)) or \
        (prediction is not None and prediction.drifted)
    return Evaluation(time=time, samples=samples, features=results, prediction=prediction,
                      drifted_share=round(share, 6), verdict="Drifted" if drifted else "NotDrifted", **health)


def service_health(spec: DriftPolicySpec, window: Mapping[str, Any]) -> dict[str, Any]:
    """The window's error rate and p99 latency, and which `spec.health` monitor they fail."""
    requests, errors = int(window.get("requests") or 0), int(window.get("errors") or 0)
    error_rate = errors / requests if requests else None
    p99 = p99_from_buckets(list((window.get("latency") or {}).get("counts") or []))
    failed = []
    monitors = spec.health
    if monitors is not None and monitors.max_error_rate is not None and error_rate is not None and \
            Decimal(repr(error_rate)) > Decimal(monitors.max_error_rate):
        failed.append(f"error rate {error_rate:.4g} > {monitors.max_error_rate} ({errors} of {requests} requests)")
    if monitors is not None and monitors.max_p99_latency_ms is not None and p99 is not None and \
            p99 > monitors.max_p99_latency_ms:
        failed.append(f"p99 latency up to {p99:.4g} ms > {monitors.max_p99_latency_ms} ms")
    return {"error_rate": None if error_rate is None else round(error_rate, 6), "p99_ms": p99,
            "unhealthy": "; ".join(failed) or None}
