"""Every invalid case is rejected by the typed models, naming the field; the examples are valid."""

from __future__ import annotations

import pytest

from mlops_operator.api import BY_KIND
from mlops_operator.controller.endpoints import Endpoints
from mlops_operator.drift.spec import check as check_dp
from mlops_operator.drift.spec import check_target
from mlops_operator.rollout.spec import check as check_md
from mlops_operator.rollout.spec import check_endpoints
from mlops_operator.training.spec import check as check_tr
from mlops_operator.validation import parse
from tests.cases import SCHEMA_CASES, STATUS_CASES, TARGET_CASES, example

CHECKS = {"TrainingRun": check_tr, "DriftPolicy": check_dp,
          # with the operator's default MLOPS_ANALYSIS_ENDPOINTS
          "ModelDeployment": lambda spec: check_md(spec) + check_endpoints(spec, Endpoints())}


def errors_of(manifest: dict) -> list[str]:
    kind = BY_KIND[manifest["kind"]]
    name = manifest["metadata"]["name"]
    if len(name) > kind.max_name_length:
        return [f"metadata.name: longer than {kind.max_name_length}"]
    if not name[0].isalpha():
        return ["metadata.name: must start with a letter"]
    spec, errors = parse(kind.spec, manifest.get("spec"))
    if spec is None:
        return errors
    return CHECKS[kind.kind](spec)  # type: ignore[operator]


@pytest.mark.parametrize("kind", ["TrainingRun", "ModelDeployment", "DriftPolicy"])
def test_examples_are_valid(kind: str) -> None:
    assert errors_of(example(kind)) == []


@pytest.mark.parametrize("case", SCHEMA_CASES + STATUS_CASES, ids=lambda c: c.id)
def test_invalid_case_is_rejected_naming_the_field(case) -> None:
    errors = errors_of(case.manifest())
    assert errors, f"{case.id} was accepted"
    assert any(case.field in e for e in errors), errors


@pytest.mark.parametrize("case", STATUS_CASES, ids=lambda c: c.id)
def test_status_cases_pass_the_schema_level_model(case) -> None:
    # these must reach the operator: the typed model (mirror of the CRD schema) accepts them
    kind = BY_KIND[case.kind]
    spec, errors = parse(kind.spec, case.manifest()["spec"])
    assert spec is not None, errors


@pytest.mark.parametrize("case", TARGET_CASES, ids=lambda c: c.id)
def test_target_cases(case) -> None:
    spec, errors = parse(BY_KIND["DriftPolicy"].spec, case.manifest()["spec"])
    assert spec is not None and not check_dp(spec), errors
    errors = check_target(spec, example("ModelDeployment"))
    assert any(case.field in e for e in errors), errors
    # the example's own template matches the target's stream
    good, _ = parse(BY_KIND["DriftPolicy"].spec, example("DriftPolicy")["spec"])
    assert check_target(good, example("ModelDeployment")) == []


def test_retrain_needs_a_stream_target() -> None:
    good, _ = parse(BY_KIND["DriftPolicy"].spec, example("DriftPolicy")["spec"])
    pinned = example("ModelDeployment")
    pinned["spec"]["model"] = {"storageUri": "s3://m/iris"}
    errors = check_target(good, pinned)
    assert errors and "pinned storageUri" in errors[0]


def test_exactly_one_of_message_names_both_fields() -> None:
    spec = example("TrainingRun")["spec"]
    del spec["trainer"]
    _, errors = parse(BY_KIND["TrainingRun"].spec, spec)
    assert errors == ["spec: exactly one of trainer, pipeline must be set"]
