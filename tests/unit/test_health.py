"""The Argo CD health checks on statuses as the operator writes them (the integration tests also run
them on live objects)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.health import argocd_health


def obj(kind: str, *conditions: tuple[str, str, str], generation: int = 1, observed: int | None = 1) -> dict[str, Any]:
    status: dict[str, Any] = {"conditions": [{"type": t, "status": s, "reason": r, "message": f"{r} says"}
                                             for t, s, r in conditions]}
    if observed is not None:
        status["observedGeneration"] = observed
    return {"kind": kind, "metadata": {"name": "x", "generation": generation}, "status": status}


MD, TR, DP = "ModelDeployment", "TrainingRun", "DriftPolicy"


@pytest.mark.parametrize("resource,expected", [
    (obj(MD, ("Ready", "True", "Ready"), ("Available", "True", "Serving"), ("Progressing", "False", "Complete"),
         ("Degraded", "False", "AsExpected")), "Healthy"),
    # a rolled-back candidate while the stable version serves: Healthy, not stuck in Degraded
    (obj(MD, ("Ready", "True", "Ready"), ("Available", "True", "Serving"), ("Progressing", "False", "RolledBack"),
         ("Degraded", "False", "AsExpected")), "Healthy"),
    (obj(MD, ("Available", "True", "Serving"), ("Progressing", "True", "Analysing")), "Progressing"),
    (obj(MD, ("Available", "False", "PinnedVersionRejected"), ("Degraded", "True", "PinnedVersionRejected")),
     "Degraded"),
    (obj(MD, ("Ready", "False", "InvalidSpec"), ("Available", "False", "InvalidSpec")), "Degraded"),
    (obj(MD, ("Ready", "False", "NoModelVersion"), ("Available", "False", "NoModelVersion")), "Progressing"),
    (obj(MD, ("Available", "True", "Serving"), generation=2, observed=1), "Progressing"),
    (obj(TR, ("Succeeded", "True", "Completed"), ("GatesPassed", "True", "Passed"), ("Ready", "True", "Succeeded")),
     "Healthy"),
    (obj(TR, ("Succeeded", "True", "Completed"), ("GatesPassed", "False", "GatesFailed"),
         ("Ready", "False", "GatesFailed")), "Degraded"),
    (obj(TR, ("Succeeded", "False", "BackoffLimitExceeded"), ("Ready", "False", "BackoffLimitExceeded")), "Degraded"),
    (obj(TR, ("Succeeded", "Unknown", "Running"), ("Ready", "Unknown", "Training")), "Progressing"),
    (obj(TR, ("Succeeded", "Unknown", "Suspended"), ("Ready", "False", "Suspended")), "Suspended"),
    (obj(TR, ("Ready", "False", "InvalidSpec")), "Degraded"),
    (obj(DP, ("Ready", "True", "Ready"), ("Drifted", "True", "Drifted")), "Healthy"),
    (obj(DP, ("Ready", "False", "TargetNotFound")), "Degraded"),
    (obj(DP, ("Ready", "Unknown", "Pending")), "Progressing"),
    ({"kind": DP, "metadata": {"name": "x", "generation": 1}}, "Progressing"),
])
def test_health(resource: dict[str, Any], expected: str) -> None:
    status, message = argocd_health(resource)
    assert status == expected
    if resource.get("status", {}).get("observedGeneration") == resource["metadata"]["generation"] and status in (
            "Degraded", "Suspended"):
        assert "says" in message  # the condition's message reaches Argo CD


def test_falling_live_quality_is_the_policy_working_and_argo_cd_says_why() -> None:
    policy = obj(DP, ("Ready", "True", "Monitoring"), ("Drifted", "False", "NotDrifted"),
                 ("PerformanceDrifted", "True", "Degraded"))
    status, message = argocd_health(policy)
    assert status == "Healthy" and message.startswith("Live quality degraded: ") and "says" in message
