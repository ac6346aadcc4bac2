"""The Shadow strategy's decisions (rollout/shadow.py), on the same simulated world as test_rollout.py: the stable
revision's pods report what they mirrored; the candidate answers no user."""

from __future__ import annotations

from typing import Any

import pytest

from mlops_operator.api.modeldeployment import MirrorCounters, ModelDeploymentSpec, PodCounters
from mlops_operator.rollout.analysis import counters_from_prometheus, prometheus_queries
from mlops_operator.rollout.spec import check
from tests.unit.test_rollout import ANALYSIS, World, report, run, side, stream


def mirrored(sent: int, rows: int, agreed: int, errors: int = 0, dropped: int = 0,
             start: str = "t0") -> dict[str, PodCounters]:
    return {"iris-s-1": PodCounters(start_time=start, requests=sent, latency=[sent] + [0] * 14,
                                    mirror=MirrorCounters(sent=sent, dropped=dropped, errors=errors, rows=rows,
                                                          agreed=agreed, latency=[sent - errors] + [0] * 14))}


def shadow_world(**shadow: Any) -> World:
    spec = stream(strategy={"type": "Shadow", "shadow": {"percent": 50, "durationSeconds": 60, "minRequests": 100,
                                                         "agreement": {"min": "0.95"}, **shadow}},
                  replicas=3, analysis=dict(ANALYSIS))
    w = World(spec=spec, runs=[run(1)], report=report())
    w.settle()
    w.runs.append(run(2))
    w.report = report(side(), side())
    return w


def open_window(w: World) -> tuple[str, str]:
    """v2 deployed, analysed and shadowing; returns (stable, candidate)."""
    stable = w.status["stable"]["revision"]
    w.live = mirrored(1000, 1000, 1000)
    w.settle(4)
    assert w.cond("Progressing")["reason"] == "Shadowing", w.cond("Progressing")
    return stable, w.status["candidate"]["revision"]


def test_a_candidate_that_agrees_is_promoted_after_the_window_and_never_answered_a_user() -> None:
    w = shadow_world()
    stable, cand = open_window(w)
    plan = w.step(5)
    # every answer from the stable revision at full size; the candidate at its shadow size behind the preview
    assert w.services == {"iris": stable, "iris-preview": cand}
    assert w.status["traffic"] == {"stable": 100, "candidate": 0, "method": "Service"}
    assert (w.deployments[stable]["spec"]["replicas"], w.deployments[cand]["spec"]["replicas"]) == (3, 1)
    assert plan.mirror is not None and (plan.mirror.revision, plan.mirror.percent) == (stable, 50)
    assert 0 < plan.mirror.seconds <= 30 and plan.requeue_after is not None and plan.requeue_after <= 10
    assert w.status["baseline"]["iris-s-1"]["mirror"]["sent"] == 1000
    w.live = mirrored(1300, 1450, 1440, errors=2)  # 300 more mirrored, 298 answered, 440 of 450 rows agreed
    w.step(60)
    last = w.status["lastAnalysis"]
    assert last["verdict"] == "Passed" and last["measurements"]["agreement"] == pytest.approx(440 / 450)
    assert last["measurements"]["mirrored"] == 300 and last["measurements"]["candidateErrors"] == 2
    assert w.cond("Progressing")["reason"] == "Promoting" and w.deployments[cand]["spec"]["replicas"] == 3
    assert w.services["iris"] == stable  # still: the switch waits for full size
    plan = w.step()
    assert w.status["stable"]["revision"] == cand and w.services["iris"] == cand
    assert "shadow traffic agreed" in w.status["history"][-1]["message"]
    assert plan.mirror is None  # it was turned off when the window ended, once


def test_a_candidate_that_disagrees_is_rejected_and_mirroring_turned_off() -> None:
    w = shadow_world()
    stable, cand = open_window(w)
    w.live = mirrored(1200, 1600, 1400)
    plan = w.step(61)
    progress = w.cond("Progressing")
    assert progress["reason"] == "RolledBack" and "agreement 0.6667 < 0.95" in progress["message"]
    assert w.status["lastAnalysis"]["verdict"] == "Failed" and cand in w.status["rejected"]
    assert w.services["iris"] == stable and w.deployments[cand]["spec"]["replicas"] == 0
    assert plan.mirror is not None and (plan.mirror.revision, plan.mirror.percent) == (stable, 0)
    assert w.step(5).mirror is None


def test_too_little_mirrored_traffic_never_passes_and_a_restarted_pod_counts_from_zero() -> None:
    w = shadow_world()
    open_window(w)
    w.live = mirrored(60, 60, 60, start="t1")  # the stable pod restarted: 60 new, not 60 - 1000
    w.step(61)
    message = w.cond("Progressing")["message"]
    assert "60 mirrored requests answered by the candidate < minRequests 100" in message
    assert w.status["lastAnalysis"]["measurements"]["mirrored"] == 60


def test_the_candidates_errors_and_latency_as_the_mirror_saw_them_are_judged_with_spec_analysis() -> None:
    w = shadow_world()
    open_window(w)
    w.live = mirrored(1500, 1500, 1500, errors=100)
    w.step(61)
    assert "candidate success rate 0.8 < 0.99" in w.cond("Progressing")["message"]


def test_promote_cuts_the_window_short_and_abort_rejects() -> None:
    w = shadow_world()
    _, cand = open_window(w)
    w.annotations["mlops.dev/promote"] = f"{cand}@1"
    w.step()
    w.step()
    assert w.status["stable"]["revision"] == cand and "cut short" in w.status["history"][-1]["message"]

    w = shadow_world()
    stable, cand = open_window(w)
    w.annotations["mlops.dev/abort"] = f"{cand}@1"
    plan = w.step()
    assert w.status["history"][-1]["outcome"] == "Aborted" and w.services["iris"] == stable
    assert plan.mirror is not None and plan.mirror.percent == 0


@pytest.mark.parametrize(("strategy", "needle"), [
    ({"type": "Shadow", "canary": {"steps": [{"weight": 10}]}}, "spec.strategy.canary: only applies"),
    ({"type": "Shadow", "blueGreen": {}}, "spec.strategy.blueGreen: only applies"),
    ({"type": "BlueGreen", "shadow": {}}, "spec.strategy.shadow: only applies"),
])
def test_shadow_settings_belong_to_the_shadow_strategy(strategy: dict[str, Any], needle: str) -> None:
    spec = ModelDeploymentSpec.model_validate({"model": {"fromTrainingRuns": {"model": "iris"}},
                                               "strategy": strategy})
    assert any(needle in e for e in check(spec))


def test_mirror_counters_read_from_prometheus() -> None:
    queries = prometheus_queries("ns", "iris-abc")
    assert 'mlops_mirror_agreed_rows_total{namespace="ns",pod=~"iris-abc-.+"}' in queries["mirror.agreed"]

    def vector(value: float, **labels: str) -> dict[str, Any]:
        return {"data": {"result": [{"metric": {"pod": "p", **labels}, "value": [0, str(value)]}]}}

    answers = {"requests": vector(10), "start": vector(5.0), "mirror.sent": vector(7), "mirror.rows": vector(9),
               "mirror.agreed": vector(8), "mirror.buckets": vector(7, le="+Inf")}
    got = counters_from_prometheus(answers)["p"].mirror
    assert got is not None and (got.sent, got.rows, got.agreed, got.errors) == (7, 9, 8, 0)
    assert got.latency is not None and sum(got.latency) == 7


# -- with the Gateway API: the HTTPRoute mirrors, the two revisions' prediction sketches are compared

def sketched(stable: str, cand: str, ours: list[int], theirs: list[int], cand_requests: int) -> dict[str, PodCounters]:
    return {"iris-s-1": PodCounters(start_time="t0", requests=sum(ours), latency=[sum(ours)] + [0] * 14,
                                    revision=stable, prediction=[*ours, 0, 0]),
            "iris-c-1": PodCounters(start_time="t0", requests=cand_requests, latency=[cand_requests] + [0] * 14,
                                    revision=cand, prediction=[*theirs, 0, 0])}


def gateway_world() -> World:
    w = shadow_world()
    w.spec["traffic"] = {"gateway": {"parentRefs": [{"name": "gw"}]}}
    w.gateway_api = True
    return w


@pytest.mark.parametrize(("theirs", "passed"), [([330, 335, 335], True), ([330, 20, 650], False)])
def test_with_a_gateway_the_route_mirrors_and_the_prediction_sketches_are_compared(theirs: list[int],
                                                                                    passed: bool) -> None:
    w = gateway_world()
    stable = w.status["stable"]["revision"]
    w.live = {"iris-s-1": sketched(stable, "", [100, 100, 100], [], 0)["iris-s-1"]}  # the window starts here
    w.settle(4)
    cand = w.status["candidate"]["revision"]  # its pod appears in the window's end only: counted from zero
    plan = w.step()
    assert w.cond("Progressing")["reason"] == "Shadowing" and "RequestMirror" in w.cond("Progressing")["message"]
    assert plan.route == (100, 0) and plan.route_mirror == 50 and plan.mirror is None  # the gateway mirrors
    assert w.status["baseline"]["iris-s-1"]["revision"] == stable
    assert w.status["baseline"]["iris-s-1"]["prediction"] == [100, 100, 100, 0, 0]
    w.live = sketched(stable, cand, [433, 433, 434], theirs, 1000)
    plan = w.step(60)
    last = w.status["lastAnalysis"]
    assert last["verdict"] == ("Passed" if passed else "Failed"), last
    assert "prediction sketches" in last["message"] and last["measurements"]["candidateRequests"] == 1000
    assert (last["measurements"]["predictionPsi"] <= 0.1) is passed
    assert plan.route_mirror is None  # the window is over: no copy any more
    if not passed:
        assert "prediction PSI" in w.cond("Progressing")["message"] and cand in w.status["rejected"]


def test_the_route_carries_the_request_mirror_filter() -> None:
    from mlops_operator.builders.modeldeployment import http_route, route_mirror

    md = {"kind": "ModelDeployment", "metadata": {"name": "iris", "namespace": "ns", "uid": "u"}}
    spec = ModelDeploymentSpec.model_validate({"model": {"fromTrainingRuns": {"model": "iris"}},
                                               "traffic": {"gateway": {"parentRefs": [{"name": "gw"}]}}})
    half = http_route(md, spec, "gateway.networking.k8s.io/v1", (100, 0), mirror=50)
    assert half["spec"]["rules"][0]["filters"] == [{"type": "RequestMirror", "requestMirror": {
        "backendRef": {"name": "iris-preview", "port": 80}, "percent": 50}}]
    every = http_route(md, spec, "gateway.networking.k8s.io/v1", (100, 0), mirror=100)
    assert "percent" not in every["spec"]["rules"][0]["filters"][0]["requestMirror"]  # older gateways: all
    plain = http_route(md, spec, "gateway.networking.k8s.io/v1", (100, 0))
    assert (route_mirror(half), route_mirror(every), route_mirror(plain)) == (50, 100, None)
