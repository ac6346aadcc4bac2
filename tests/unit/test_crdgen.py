"""The generated CRDs are structural, carry the models' rules, and `--check` catches staleness."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import create_model

from mlops_operator import crdgen
from mlops_operator.api import KINDS, MODEL_DEPLOYMENT, TRAINING_RUN, Kind
from mlops_operator.api.common import DNS_1035_LABEL

REPO = Path(__file__).resolve().parents[2]
VALUE_KEYS = {"enum", "pattern", "minimum", "maximum", "minLength", "maxLength", "minItems", "maxItems",
              "required", "exclusiveMinimum", "exclusiveMaximum", "format"}


def walk(node: dict[str, Any], path: str = ""):
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from walk(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}{{}}")


def schema(kind: Kind) -> dict[str, Any]:
    return crdgen.crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_schema_is_structural(kind: Kind) -> None:
    for path, node in walk(schema(kind)):
        assert "$ref" not in node and "title" not in node, path
        assert "default" not in node or path == ".spec.replicas", path
        assert node.get("additionalProperties") is not False, path
        if node.get("x-kubernetes-int-or-string"):
            assert node["anyOf"] == [{"type": "integer"}, {"type": "string"}], path
        else:
            assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields"), path
            assert "anyOf" not in node, path
        # junctors carry only value validations, never types or descriptions
        for junctor in ("oneOf", "allOf", "not"):
            for sub in node.get(junctor, []) if junctor != "not" else [node.get("not", {})]:
                assert set(sub) <= VALUE_KEYS | {"anyOf"}, (path, sub)
        if "exclusiveMinimum" in node:
            assert node["exclusiveMinimum"] is True, path


def test_exactly_one_of_becomes_one_of_required() -> None:
    spec = schema(TRAINING_RUN)["properties"]["spec"]
    assert spec["oneOf"] == [{"required": ["trainer"]}, {"required": ["pipeline"]}]
    model = schema(MODEL_DEPLOYMENT)["properties"]["spec"]["properties"]["model"]
    assert model["oneOf"] == [{"required": ["storageUri"]}, {"required": ["fromTrainingRuns"]}]


def test_at_most_one_of_becomes_not_required() -> None:
    env = schema(TRAINING_RUN)["properties"]["spec"]["properties"]["trainer"]["properties"]["env"]["items"]
    assert env["not"] == {"required": ["value", "valueFrom"]}


def test_defaults_are_documented_and_applied_only_where_another_controller_reads_them() -> None:
    spec = schema(MODEL_DEPLOYMENT)["properties"]["spec"]["properties"]
    # an HPA reads spec.replicas through the scale subresource: the API server must fill it in
    assert spec["replicas"]["default"] == 1 and "Default: 1." in spec["replicas"]["description"]
    limit = spec["revisionHistoryLimit"]
    assert "default" not in limit and "Default: 2." in limit["description"]


def test_conversion_of_numeric_exclusive_bounds_and_const() -> None:
    from typing import Annotated, Literal

    from pydantic import Field

    from mlops_operator.api.common import ApiModel

    class M(ApiModel):
        ratio: Annotated[float, Field(gt=0, lt=1)]
        fixed: Literal["x"]

    out = crdgen.structural(M)["properties"]
    assert out["ratio"] == {"type": "number", "minimum": 0, "exclusiveMinimum": True,
                            "maximum": 1, "exclusiveMaximum": True}
    assert out["fixed"]["enum"] == ["x"]


def test_non_structural_union_is_refused() -> None:
    from mlops_operator.api.common import ApiModel

    class Bad(ApiModel):
        either: int | list[str]

    with pytest.raises(crdgen.SchemaError, match="either"):
        crdgen.structural(Bad)


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_name_cap_keeps_every_child_name_a_dns_label(kind: Kind) -> None:
    name_schema = schema(kind)["properties"]["metadata"]["properties"]["name"]
    assert name_schema == {"type": "string", "maxLength": kind.max_name_length, "pattern": DNS_1035_LABEL}
    longest = "a" * kind.max_name_length
    children = {
        "TrainingRun": [f"{longest}-0123abcd"],
        "ModelDeployment": [f"{longest}-0123abcd", f"{longest}-preview", f"{longest}-0123abcd-an"],
        # retrain runs "<policy>-99999" and their Jobs
        "DriftPolicy": [f"{longest}-99999", f"{longest}-99999-0123abcd"],
    }[kind.kind]
    assert max(len(c) for c in children) <= 63
    if kind.kind == "DriftPolicy":
        assert len(f"{longest}-99999") <= TRAINING_RUN.max_name_length


def test_short_names_category_columns_and_status_subresource() -> None:
    docs = {k.kind: crdgen.crd(k) for k in KINDS}
    assert {k: d["spec"]["names"]["shortNames"] for k, d in docs.items()} == \
        {"TrainingRun": ["tr"], "ModelDeployment": ["md"], "DriftPolicy": ["dp"]}
    for d in docs.values():
        version = d["spec"]["versions"][0]
        assert d["spec"]["names"]["categories"] == ["mlops"]
        assert version["subresources"]["status"] == {}
        # an HPA scales a ModelDeployment (its spec.replicas) through the scale subresource
        assert ("scale" in version["subresources"]) == (d["spec"]["names"]["kind"] == "ModelDeployment")
        columns = [c["name"] for c in version["additionalPrinterColumns"]]
        assert columns[-3:] == ["Ready", "Reason", "Age"]
    md_columns = [c["name"] for c in docs["ModelDeployment"]["spec"]["versions"][0]["additionalPrinterColumns"]]
    assert {"Model", "Stable", "Candidate", "Traffic"} <= set(md_columns)


def test_committed_crds_are_fresh() -> None:
    proc = subprocess.run([sys.executable, "-m", "mlops_operator.cli", "crds", "--check"],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr


def test_check_fails_when_a_model_field_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    crdgen.write(tmp_path)
    assert crdgen.stale(tmp_path) == []
    from mlops_operator.api import trainingrun

    changed = create_model("TrainingRunSpec", __base__=trainingrun.TrainingRunSpec, priority=(int, 0))
    kinds = tuple(k if k is not TRAINING_RUN else Kind(**{**k.__dict__, "spec": changed}) for k in KINDS)
    monkeypatch.setattr(crdgen, "KINDS", kinds)
    assert crdgen.stale(tmp_path) == ["mlops.dev_trainingruns.yaml"]
    crdgen.write(tmp_path)
    assert crdgen.stale(tmp_path) == []


def test_cli_check_exits_nonzero_on_a_stale_file(tmp_path: Path) -> None:
    crdgen.write(tmp_path)
    target = tmp_path / "mlops.dev_driftpolicies.yaml"
    target.write_text(target.read_text().replace("minimum: 5", "minimum: 6"))
    proc = subprocess.run([sys.executable, "-m", "mlops_operator.cli", "crds", "--check", "--dir", str(tmp_path)],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "mlops.dev_driftpolicies.yaml" in proc.stderr
