"""The generated CRDs on the real apiserver: examples accepted, every schema rule enforced."""

from __future__ import annotations

import re

import pytest
from kubernetes.client.rest import ApiException

from tests.cases import EXAMPLES, SCHEMA_CASES

from .conftest import Cluster


def test_crds_serve_short_names_category_and_columns(cluster: Cluster, sp_namespace: str) -> None:
    cluster.kubectl("apply", "-n", sp_namespace, "-f", str(EXAMPLES))
    out = cluster.kubectl("get", "tr,md,dp", "-n", sp_namespace).stdout
    for line in ("iris-v1", "iris", "iris-drift"):
        assert line in out
    assert "MODEL" in out and "STABLE" in out and "CANDIDATE" in out and "TRAFFIC" in out
    assert "DRIFTED" in out and "GATES" in out and "READY" in out and "REASON" in out
    by_category = cluster.kubectl("get", "mlops", "-n", sp_namespace, "-o", "name").stdout.split()
    assert sorted(by_category) == sorted([
        "trainingrun.mlops.dev/iris-v1", "modeldeployment.mlops.dev/iris", "driftpolicy.mlops.dev/iris-drift"])
    # applying the same YAML again changes nothing
    again = cluster.kubectl("apply", "-n", sp_namespace, "-f", str(EXAMPLES)).stdout
    assert again.count("unchanged") == 3, again


@pytest.mark.parametrize("case", SCHEMA_CASES, ids=lambda c: c.id)
def test_schema_rejects_invalid_manifest_naming_the_field(cluster: Cluster, sp_namespace: str, case) -> None:
    manifest = case.manifest()
    with pytest.raises(ApiException) as err:
        cluster.create(manifest, sp_namespace)
    assert err.value.status == 422, err.value.body
    # the 1.20 apiserver names list items without their index (spec.gates.operator)
    assert re.sub(r"\[\d+\]", "", case.field) in err.value.body, err.value.body
    with pytest.raises(ApiException) as missing:
        cluster.get(case.kind, sp_namespace, manifest["metadata"]["name"])
    assert missing.value.status == 404


def test_kubectl_shows_the_field_to_the_user(cluster: Cluster, sp_namespace: str) -> None:
    from tests.cases import DELETE, Case

    bad = Case("x", "ModelDeployment", (("spec.model", {"storageUri": "s3://m/x", "format": "pickle"}),
                                        ("spec.analysis", DELETE)), "spec.model.format")
    import yaml

    proc = cluster.kubectl("apply", "-n", sp_namespace, "-f", "-", stdin=yaml.safe_dump(bad.manifest()), check=False)
    assert proc.returncode != 0 and "spec.model.format" in proc.stderr, proc.stderr
