from __future__ import annotations

import pytest

from mlops_operator.conditions import FALSE, TRUE, UNKNOWN, Cond, find, is_true, is_warning, merge


def test_new_condition_gets_time_and_generation() -> None:
    out = merge(None, [Cond("Ready", FALSE, "InvalidSpec", "spec.x: bad")], 3, at="T1")
    assert out == [{"type": "Ready", "status": "False", "reason": "InvalidSpec", "message": "spec.x: bad",
                    "lastTransitionTime": "T1", "observedGeneration": 3}]


def test_same_status_keeps_transition_time_but_updates_reason_message_generation() -> None:
    first = merge(None, [Cond("Ready", FALSE, "InvalidSpec", "a")], 1, at="T1")
    second = merge(first, [Cond("Ready", FALSE, "NoModelVersion", "b")], 2, at="T2")
    assert second[0]["lastTransitionTime"] == "T1"
    assert (second[0]["reason"], second[0]["message"], second[0]["observedGeneration"]) == \
        ("NoModelVersion", "b", 2)


def test_empty_message_is_left_out() -> None:
    assert "message" not in merge(None, [Cond("Ready", TRUE, "Ready")], 1, at="T1")[0]


def test_status_change_is_a_transition() -> None:
    first = merge(None, [Cond("Ready", FALSE, "InvalidSpec", "a")], 1, at="T1")
    second = merge(first, [Cond("Ready", TRUE, "Ready")], 2, at="T2")
    assert second[0]["lastTransitionTime"] == "T2"


def test_unmentioned_conditions_are_kept_and_order_is_stable() -> None:
    first = merge(None, [Cond("Succeeded", TRUE, "Completed"), Cond("Ready", UNKNOWN, "Pending")], 1, at="T1")
    second = merge(first, [Cond("Ready", TRUE, "Ready"), Cond("GatesPassed", TRUE, "NoGates")], 1, at="T2")
    assert [c["type"] for c in second] == ["Succeeded", "Ready", "GatesPassed"]
    assert second[0] == first[0]
    assert is_true(second, "GatesPassed") and not is_true(second, "Missing")
    assert find(second, "Missing") is None


def test_rerun_is_identical() -> None:
    decided = [Cond("Ready", FALSE, "InvalidSpec", "a")]
    first = merge(None, decided, 1, at="T1")
    assert merge(first, decided, 1, at="T9") == first


@pytest.mark.parametrize("bad", [("Ready", "Yes", "Fine"), ("Ready", TRUE, "not camel"), ("Ready", TRUE, "")])
def test_condition_values_are_checked(bad) -> None:
    with pytest.raises(ValueError):
        Cond(*bad)


def test_warnings_are_for_what_is_wrong_not_for_the_way_to_a_first_version() -> None:
    assert is_warning(Cond("Ready", FALSE, "GatesFailed", "accuracy 0.5 < 0.9"))
    assert is_warning(Cond("Available", FALSE, "Unavailable", "no available pod"))
    assert is_warning(Cond("Degraded", TRUE, "RolledBack")) and is_warning(Cond("Drifted", TRUE, "Drifted"))
    # a new ModelDeployment before its first promotion, or one scaled to zero, is not a problem
    assert not is_warning(Cond("Available", FALSE, "NoStableVersion", "no version has been promoted yet"))
    assert not is_warning(Cond("Ready", FALSE, "NoModelVersion"))
    assert not is_warning(Cond("Available", FALSE, "ScaledToZero"))
    assert not is_warning(Cond("Ready", FALSE, "Suspended"))
    assert not is_warning(Cond("Succeeded", UNKNOWN, "Running")) and not is_warning(Cond("Degraded", FALSE, "Healthy"))
    assert not is_warning(Cond("Progressing", FALSE, "RolledBack"))
