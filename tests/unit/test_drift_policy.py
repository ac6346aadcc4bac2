"""DriftPolicy decisions with plain data: the verdict from counts, the window across restarts, retrains."""

from __future__ import annotations

import datetime
from typing import Any

import numpy as np
import pytest

from mlops_operator.api import times
from mlops_operator.api.artifacts import Profile
from mlops_operator.api.driftpolicy import DriftPolicySpec, Retrain, RetrainRecord
from mlops_operator.drift import evaluate, retrain, window
from mlops_operator.runtime import profile as profiles

T0 = datetime.datetime(2026, 11, 22, 12, 0, tzinfo=datetime.UTC)
RNG = np.random.default_rng(0)
TRAIN = {"x": RNG.normal(0, 1, 5000), "y": RNG.normal(10, 2, 5000)}
COLORS = ["red", "green", "blue"]


def reference() -> Profile:
    colors = list(RNG.choice(COLORS, 5000))
    predictions = [str(v) for v in RNG.integers(0, 2, 5000)]
    return profiles.build({"x": ("numeric", TRAIN["x"]), "y": ("numeric", TRAIN["y"]),
                           "color": ("categorical", colors)}, ("categorical", predictions))


PROFILE = reference()


def counted(x: Any, y: Any, colors: list[Any], predictions: list[str] | None = None) -> dict[str, Any]:
    """A monitoring window as the server counts it (the server's own counting code)."""
    from mlops_operator.runtime.profile import Counts

    features = []
    for d, values in zip(PROFILE.features, (x, y, colors), strict=True):
        c = Counts(d)
        c.add(values)
        features.append({"name": d.name, **c.snapshot()})
    pred = None
    if predictions is not None and PROFILE.prediction is not None:
        p = Counts(PROFILE.prediction)
        p.add(predictions)
        pred = p.snapshot()
    return {"rows": len(colors), "requests": 1, "errors": 0, "features": features, "prediction": pred}


def spec(**extra: Any) -> DriftPolicySpec:
    return DriftPolicySpec.model_validate({"targetRef": {"name": "iris"}, "window": {"minSamples": 100}, **extra})


def verdict(window_counts: dict[str, Any], **extra: Any) -> Any:
    return evaluate.evaluate(spec(**extra), PROFILE, window_counts, "t")


def test_the_training_distribution_does_not_drift_and_a_shift_does() -> None:
    same = counted(RNG.normal(0, 1, 1000), RNG.normal(10, 2, 1000), list(RNG.choice(COLORS, 1000)))
    ev = verdict(same)
    assert ev.verdict == "NotDrifted" and ev.samples == 1000
    assert {(f.name, f.test) for f in ev.features or ()} == {("x", "psi"), ("y", "psi"), ("color", "chi2")}
    shifted = counted(RNG.normal(1.5, 1, 1000), RNG.normal(10, 2, 1000), list(RNG.choice(COLORS, 1000)))
    ev = verdict(shifted)
    assert [f.name for f in ev.features or () if f.drifted] == ["x"] and ev.drifted_share == pytest.approx(1 / 3)
    assert ev.verdict == "NotDrifted"  # one of three is below driftShare 0.5
    assert verdict(shifted, driftShare="0.3").verdict == "Drifted"


@pytest.mark.parametrize("what", ["out of range", "missing", "unseen categories"])
def test_out_of_range_missing_values_and_unseen_categories_count_as_drift(what: str) -> None:
    x, y, colors = RNG.normal(0, 1, 1000), RNG.normal(10, 2, 1000), list(RNG.choice(COLORS, 1000))
    if what == "out of range":
        x = x + 50  # every value beyond the largest training value
    elif what == "missing":
        x = np.where(RNG.random(1000) < 0.5, np.nan, x)
    else:
        colors = ["purple"] * 600 + colors[:400]
    ev = verdict(counted(x, y, colors), driftShare="0.3")
    name = "color" if what == "unseen categories" else "x"
    assert ev.verdict == "Drifted" and [f.name for f in ev.features or () if f.drifted] == [name]


def test_too_few_samples_give_no_verdict() -> None:
    ev = verdict(counted(RNG.normal(0, 1, 50), RNG.normal(10, 2, 50), list(RNG.choice(COLORS, 50))))
    assert ev.verdict == "InsufficientData" and ev.samples == 50 and ev.features is None


def test_tests_thresholds_bonferroni_and_prediction_drift() -> None:
    shifted = counted(RNG.normal(0.3, 1, 1000), RNG.normal(10, 2, 1000), list(RNG.choice(COLORS, 1000)),
                      predictions=["1"] * 900 + ["0"] * 100)
    checks = [{"name": "x", "test": "ks", "threshold": "0.05"}, {"name": "color", "test": "chi2"}]
    plain = verdict(shifted, features=checks, prediction={"test": "chi2"})
    corrected = verdict(shifted, features=checks, prediction={"test": "chi2"}, correction="bonferroni")
    x = next(f for f in plain.features or () if f.name == "x")
    assert x.test == "ks" and x.value < 0.05 and x.drifted
    assert next(f for f in corrected.features or () if f.name == "x").threshold == pytest.approx(0.05 / 3)
    assert plain.prediction is not None and plain.prediction.drifted and plain.verdict == "Drifted"


def test_checks_that_do_not_fit_the_profile_name_the_field() -> None:
    _, errors = evaluate.plan(spec(features=[{"name": "z"}, {"name": "color", "test": "ks"}]), PROFILE)
    assert errors[0].startswith("spec.features[0].name: z is not a feature") and \
        errors[1].startswith("spec.features[1].test: ks needs ordered values; color is categorical")


# -- the window ----------------------------------------------------------------------------------------------

def snapshot(start: str, rows: int, x_counts: list[int]) -> dict[str, Any]:
    return {"startTime": start, "profileDigest": "p", "rows": rows, "requests": rows, "errors": 0,
            "features": [{"name": "x", "counts": x_counts, "missing": 0, "other": 0}], "prediction": None}


def test_the_window_survives_a_restart_without_loss_or_double_count_and_counts_a_restarted_pod() -> None:
    scrapes = [{"a": snapshot("1", 10, [5, 5]), "b": snapshot("1", 4, [4, 0])},
               {"a": snapshot("1", 30, [15, 15]), "b": snapshot("1", 4, [4, 0])},
               {"a": snapshot("2", 6, [0, 6]), "b": snapshot("1", 9, [5, 4])}]  # pod a restarted
    state = None
    for i, s in enumerate(scrapes):
        state = window.advance(state, "rev1", s, T0 + datetime.timedelta(seconds=i))
        if i == 1:  # the operator restarts: the state comes back from its ConfigMap
            state = window.WindowState.model_validate_json(state.model_dump_json())
    assert state is not None and state.counts is not None
    assert state.counts["rows"] == 30 + 9 + 6  # a's 30 before its restart and 6 after; b's 9
    assert state.counts["features"][0]["counts"] == [15 + 5 + 0, 15 + 4 + 6]


def test_a_new_stable_revision_and_a_full_or_old_window_start_again() -> None:
    state = window.advance(None, "rev1", {"a": snapshot("1", 10, [5, 5])}, T0)
    assert window.advance(state, "rev2", {"c": snapshot("1", 3, [3, 0])}, T0).counts["rows"] == 3  # type: ignore[index]
    spec_window = spec(window={"minSamples": 5, "maxSamples": 10}).window
    tumbled = window.after_evaluation(state, spec_window, T0)
    assert tumbled.counts is None and tumbled.pods == state.pods  # the pods' baselines are kept
    aged = spec(window={"minSamples": 5, "maxAgeSeconds": 60}).window
    assert window.after_evaluation(state, aged, T0 + datetime.timedelta(seconds=30)).counts == state.counts
    assert window.after_evaluation(state, aged, T0 + datetime.timedelta(seconds=61)).counts is None


# -- retrains ------------------------------------------------------------------------------------------------

RULES = Retrain.model_validate({"template": {"model": "iris", "trainer": {"estimator": "e.E"}},
                                "cooldownSeconds": 600, "maxPerDay": 2, "historyLimit": 2})


def tr(name: str, minute: int, reason: str = "Completed", gates: str = "True") -> dict[str, Any]:
    return {"metadata": {"name": name, "creationTimestamp": times.stamp(T0 + datetime.timedelta(minutes=minute))},
            "status": {"conditions": [
                {"type": "Succeeded", "status": "True" if reason == "Completed" else "Unknown", "reason": reason},
                {"type": "GatesPassed", "status": gates}]}}


def decide(records: list[RetrainRecord], owned: dict[str, Any], md: dict[str, Any], minute: int) -> Any:
    return retrain.decide("p", RULES, records, owned, md, True, T0 + datetime.timedelta(minutes=minute))


def test_one_retrain_in_flight_then_cooldown_then_the_daily_cap() -> None:
    first = decide([], {}, {}, 0)
    assert first.create == "p-1" and first.records[0].outcome == "Training"
    # its run trains, then waits for the rollout: in flight
    flying = decide(first.records, {"p-1": tr("p-1", 0, reason="Running")}, {}, 30)
    assert flying.create is None and "in flight (Training)" in (flying.blocked or "")
    waiting = decide(first.records, {"p-1": tr("p-1", 0)}, {}, 30)
    assert "in flight (AwaitingRollout)" in (waiting.blocked or "")
    # promoted: no longer in flight; the cooldown (10 min) has passed, so a second one
    md = {"stable": {"trainingRun": "p-1"}}
    second = decide(first.records, {"p-1": tr("p-1", 0)}, md, 30)
    assert second.create == "p-2" and second.records[0].outcome == "Promoted"
    # the second failed its gates: done, but within the cooldown
    owned = {"p-1": tr("p-1", 0), "p-2": tr("p-2", 30, gates="False")}
    cooling = decide(second.records, owned, md, 35)
    assert cooling.blocked == "cooldown after p-2" and cooling.next_possible == "2026-11-22T12:40:00Z"
    capped = decide(second.records, owned, md, 50)
    assert capped.create is None and capped.blocked is not None and "maxPerDay" in capped.blocked
    assert capped.next_possible == "2026-11-23T12:00:00Z"


def test_a_run_created_before_a_restart_is_adopted_and_history_keeps_the_serving_run() -> None:
    adopted = decide([], {"p-1": tr("p-1", 0, reason="Running")}, {}, 1)
    assert adopted.create is None and [r.name for r in adopted.records] == ["p-1"]
    records = [RetrainRecord(name=f"p-{i}", created=f"2026-11-22T1{i}:00:00Z") for i in (1, 2, 3)]
    owned = {r.name: tr(r.name, 60 * (i - 2)) for i, r in enumerate(records, 1)}
    md = {"stable": {"trainingRun": "p-1"}, "history": [{"trainingRun": "p-2", "outcome": "RolledBack"}]}
    plan = retrain.decide("p", RULES, records, owned, md, False, T0 + datetime.timedelta(days=1))
    assert plan.delete == ["p-2"]  # the oldest is the serving one: kept
    assert [(r.name, r.outcome) for r in plan.records] == [("p-1", "Promoted"), ("p-3", "AwaitingRollout")]


def test_service_health_monitors() -> None:
    window = counted(RNG.normal(0, 1, 200), RNG.normal(10, 2, 200), list(RNG.choice(COLORS, 200)))
    window.update(requests=100, errors=5, latency={"counts": [0] * 8 + [90, 10] + [0] * 5})
    ev = verdict(window, health={"maxErrorRate": "0.01", "maxP99LatencyMs": 200})
    assert ev.error_rate == 0.05 and ev.p99_ms == 500.0  # the 0.25-0.5 s bucket holds the 99th percentile
    assert ev.unhealthy == "error rate 0.05 > 0.01 (5 of 100 requests); p99 latency up to 500 ms > 200 ms"
    assert verdict(window, health={"maxErrorRate": "0.1"}).unhealthy is None


def test_metrics_render_as_prometheus_text_and_per_feature_series_only_when_asked() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from mlops_operator.metrics import Registry

    r = Registry()
    window = counted(RNG.normal(1.5, 1, 1000), RNG.normal(10, 2, 1000), list(RNG.choice(COLORS, 1000)))
    ev = verdict(window, driftShare="0.3")
    r.drift("ns", "a", ev, per_feature=True)
    r.drift("ns", "b", verdict(window), per_feature=False)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(r.render()) for s in f.samples}
    assert samples[("mlops_driftpolicy_drifted", (("name", "a"), ("namespace", "ns")))] == 1.0
    assert samples[("mlops_driftpolicy_drifted", (("name", "b"), ("namespace", "ns")))] == 0.0
    assert samples[("mlops_driftpolicy_feature_drifted", (("feature", "x"), ("name", "a"), ("namespace", "ns")))] == 1
    assert not [k for k in samples if k[0] == "mlops_driftpolicy_feature_drifted" and ("name", "b") in k[1]]
    r.drift("ns", "a", ev, per_feature=False)  # asked no more: its feature series go
    r.forget(namespace="ns", name="b")  # a deleted policy's series go
    left = r.render()
    assert "feature=" not in left and 'name="b"' not in left and 'name="a"' in left


def test_judge_evaluates_only_new_rows_and_conditions_compose() -> None:
    from mlops_operator.drift import decide

    s = spec(health={"maxErrorRate": "0.1"})
    live = counted(RNG.normal(3, 1, 300), RNG.normal(20, 2, 300), list(RNG.choice(COLORS, 300)))
    snap = {"startTime": 1.0, "profileDigest": "sha256:p", **live}
    first = decide.judge(s, PROFILE, None, "r1", {"pod-a": snap}, None, T0)
    assert first.state_changed and first.evaluation.verdict == "Drifted" and first.state.evaluated_rows == 300
    # the same snapshot again: no new rows, the last evaluation stands and the window is not written
    again = decide.judge(s, PROFILE, first.state, "r1", {"pod-a": snap}, first.evaluation.wire(),
                         T0 + datetime.timedelta(minutes=1))
    assert not again.state_changed and again.evaluation == first.evaluation
    conds = {c.type: c for c in decide.conditions(s, "r1", 1, first.evaluation, "cooldown after x-1")}
    assert conds["Ready"].reason == "Monitoring" and conds["Drifted"].status == "True"
    message = conds["Drifted"].message
    assert message.startswith("drifted: x, y (300 samples)") and "retrain blocked: cooldown after x-1" in message
    assert conds["ServiceHealthy"].reason == "WithinLimits"
    assert decide.due(None, 30, 1000.0) == 0 and decide.due(990.0, 30, 1000.0) == 20


def test_a_retrain_run_is_the_template_with_the_evaluation_annotated() -> None:
    import json

    from mlops_operator.builders import driftpolicy as build

    s = spec(action={"type": "Retrain", "retrain": {"template": {"model": "iris", "trainer": {
        "image": "ghcr.io/x/trainer:1"}, "dataset": {"uri": "s3://b/d.csv"}}}})
    policy = {"apiVersion": "mlops.dev/v1alpha1", "kind": "DriftPolicy",
              "metadata": {"name": "p", "namespace": "ns", "uid": "u-1"}}
    ev = verdict(counted(RNG.normal(3, 1, 300), RNG.normal(20, 2, 300), list(RNG.choice(COLORS, 300))))
    run = build.retrain_run(policy, s, "p-1", ev)
    assert run["kind"] == "TrainingRun" and run["spec"]["model"] == "iris"
    assert run["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    assert run["metadata"]["labels"]["mlops.dev/driftpolicy"] == "p"
    assert json.loads(run["metadata"]["annotations"]["mlops.dev/drift-evaluation"])["drifted"] == ["x", "y"]
    cm = build.window_configmap(policy, "{}")
    state = json.dumps({"counts": {"rows": 7, "features": [{"name": "x", "counts": [0] * 101}]}})
    cm = build.window_configmap(policy, state)
    assert cm["metadata"]["name"] == "p-window" and list(cm["binaryData"]) == ["window.json.gz"]
    assert build.window_state(cm) == state and len(cm["binaryData"]["window.json.gz"]) < len(state)
    assert build.window_state({"data": {"window.json": state}}) == state  # kept by an operator before
    assert build.window_state(None) is None
