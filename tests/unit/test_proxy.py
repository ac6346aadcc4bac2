"""The dev proxy's choice of backend: HTTPRoute weights exactly, pods in turn, none for an empty Service."""

from __future__ import annotations

import collections

import pytest

from mlops_operator.dev.proxy import Backend, choose, parse_target


def pods(revision: str, n: int) -> list[Backend]:
    return [Backend(f"127.1.0.{i}", 8080, f"{revision}-{i}", revision) for i in range(n)]


def test_weights_are_honoured_exactly_and_pods_take_turns() -> None:
    groups = [(90, pods("stable", 2)), (10, pods("canary", 1))]
    picked = [choose(groups, n) for n in range(1000)]
    assert all(b is not None for b in picked)
    by_revision = collections.Counter(b.revision for b in picked if b)
    assert by_revision == {"stable": 900, "canary": 100}
    by_pod = collections.Counter(b.pod for b in picked if b and b.revision == "stable")
    assert by_pod == {"stable-0": 450, "stable-1": 450}


def test_a_service_without_ready_pods_or_weight_gets_nothing() -> None:
    assert {choose([(50, pods("a", 1)), (50, [])], n).revision for n in range(10)} == {"a"}  # type: ignore[union-attr]
    assert {choose([(0, pods("a", 1)), (1, pods("b", 3))], n).revision for n in range(10)} == {"b"}  # type: ignore[union-attr]
    assert choose([(100, [])], 0) is None
    assert choose([], 3) is None


def test_targets_name_a_service() -> None:
    assert parse_target("svc/iris") == parse_target("service/iris") == parse_target("iris") == "iris"
    with pytest.raises(ValueError, match="forwards to a Service"):
        parse_target("deploy/iris")
