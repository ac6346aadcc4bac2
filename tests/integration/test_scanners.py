"""checkov on what users deploy: the rendered chart (with its Namespace) and the child manifests the
builders write, against tests/checkov-accepted.yaml (each accepted check with its reason)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from mlops_operator.api.modeldeployment import ModelDeploymentSpec
from mlops_operator.api.trainingrun import TrainingRunSpec
from mlops_operator.builders import modeldeployment as build
from mlops_operator.builders.trainingrun import training_job, training_jobs, workers_service
from mlops_operator.dev.tools import tool
from tests.cases import example
from tests.scanners import failed_checks

TOP = Path(__file__).resolve().parents[2]
ACCEPTED = yaml.safe_load((TOP / "tests" / "checkov-accepted.yaml").read_text())
RUNTIME = "ghcr.io/mlops-dev/mlops-runtime:0.1.0"
DIGEST = "sha256:" + "ab" * 32


def children() -> list[dict[str, Any]]:
    md = example("ModelDeployment")
    md["metadata"].update(namespace="team-a", uid="uid-md")
    spec = ModelDeploymentSpec.model_validate(md["spec"])
    rev = build.revision(spec, DIGEST)
    run = example("TrainingRun")
    run["metadata"].update(namespace="team-a", uid="uid-tr")
    return [build.deployment(md, spec, rev, model_uri="s3://models/x", digest=DIGEST, replicas=2,
                             runtime_image=RUNTIME),
            build.analysis_job(md, spec, rev, model_uri="s3://models/x", digest=DIGEST,
                               candidate=["http://10.0.0.1:8082"], stable=["http://10.0.0.2:8082"],
                               runtime_image=RUNTIME),
            build.service(md, rev), build.service(md, rev, preview=True),
            training_job(run, TrainingRunSpec.model_validate(run["spec"]), runtime_image=RUNTIME,
                         artifact_root="s3://models"),
            *distributed()]


def distributed() -> list[dict[str, Any]]:
    """A distributed run's children in both forms: one Job per worker, and the Indexed Job (Kubernetes 1.21+)."""
    run = example("TrainingRun")
    run["metadata"].update(name="iris-dist", namespace="team-a", uid="uid-dist")
    run["spec"].update(distributed={"workers": 2}, trainer={"estimator": "xgboost.XGBClassifier"})
    spec = TrainingRunSpec.model_validate(run["spec"])
    return [workers_service(run, spec),
            *training_jobs(run, spec, runtime_image=RUNTIME, artifact_root="s3://models"),
            *training_jobs(run, spec, runtime_image=RUNTIME, artifact_root="s3://models", indexed=True)]


def test_every_child_manifest_is_valid_for_kubernetes_1_25_and_the_newest_release() -> None:
    # the apiserver here is 1.20, which drops fields it does not know (completionMode): the published schemas
    # of the oldest release kubernetes-validate has and of the newest judge every field, strictly
    import kubernetes_validate

    for manifest in children():
        for version in ("1.25.0", kubernetes_validate.latest_version()):
            kubernetes_validate.validate(manifest, version, strict=True)


def test_checkov_finds_nothing_but_the_accepted_checks(tmp_path: Path) -> None:
    chart = subprocess.run([tool("helm"), "template", "mlops-operator", str(TOP / "charts" / "mlops-operator"),
                            "--namespace", "mlops-system", "--set", "namespace.create=true"],
                           capture_output=True, text=True, check=True).stdout
    (tmp_path / "chart.yaml").write_text(chart)
    (tmp_path / "children.yaml").write_text(yaml.safe_dump_all(children()))
    failed = failed_checks(tmp_path / "chart.yaml") + failed_checks(tmp_path / "children.yaml")
    unexpected = [(f["check_id"], f["resource"], f["check_name"]) for f in failed
                  if f["check_id"] not in ACCEPTED or not any(
                      f["resource"].startswith(r) for r in ACCEPTED[f["check_id"]]["resources"])]
    assert unexpected == [], unexpected
    stale = sorted(set(ACCEPTED) - {f["check_id"] for f in failed})
    assert stale == [], f"accepted but no longer failing (remove them): {stale}"
    assert all(entry.get("reason") for entry in ACCEPTED.values())
