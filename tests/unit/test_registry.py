"""`mlops mlflow` against a real MLflow tracking server (`mlflow server`, SQLite backend, in a virtual
environment of its own under the cache), and what it wrote read back with MLflow's own client."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlops_operator.api.registry import parse_result, parse_uri
from tests.tracking import mlflow_client, tracking_server

DIGEST = "sha256:" + "ab" * 32


@pytest.fixture(scope="module")
def tracking(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tracking_server(tmp_path_factory.mktemp("mlflow"), "127.0.0.1", port) as url:
        yield url


def mlops(tracking: str, tmp_path: Path, *args: str) -> tuple[int, str]:
    """`mlops mlflow …` as a registry Job runs it: (exit code, its termination message)."""
    term = tmp_path / "termination-log"
    term.unlink(missing_ok=True)
    proc = subprocess.run([sys.executable, "-m", "mlops_operator.cli", "mlflow", *args], capture_output=True,
                          text=True, timeout=120, env={"MLFLOW_TRACKING_URI": tracking, "MLOPS_TERMINATION_LOG":
                                                       str(term), "PATH": "/usr/bin:/bin"})
    return proc.returncode, term.read_text() if term.exists() else proc.stderr


def register(tracking: str, tmp_path: Path, uid: str, source: str, *aliases: str) -> tuple[int, str]:
    return mlops(tracking, tmp_path, "register", "--name", "iris", "--source", source, "--digest", DIGEST,
                 "--experiment", "team-a/iris", "--run-name", f"iris-{uid}", "--trainingrun", f"team-a/iris-{uid}",
                 "--uid", uid, "--metrics", json.dumps({"accuracy": 0.95, "f1": 0.94}),
                 "--params", json.dumps({"n_estimators": 30, "max_depth": 4}),
                 *(a for alias in aliases for a in ("--alias", alias)))


def test_a_registered_version_carries_its_digest_metrics_and_run_and_a_second_job_makes_no_second(
        tracking: str, tmp_path: Path) -> None:
    code, message = register(tracking, tmp_path, "u1", "s3://models/team-a/iris/iris-v1", "candidate")
    assert code == 0, message
    first = parse_result(message)
    assert (first.name, first.version, first.digest) == ("iris", "1", DIGEST)
    # the Job run again (a retried Pod): the same run and version, no second
    code, message = register(tracking, tmp_path, "u1", "s3://models/team-a/iris/iris-v1", "candidate")
    assert code == 0 and parse_result(message) == first, message
    seen = mlflow_client(tracking, """
v = client.get_model_version_by_alias("iris", "candidate")
run = client.get_run(v.run_id)
print(json.dumps({"version": v.version, "source": v.source, "tags": v.tags, "run_id": v.run_id,
                  "link": v.run_link, "metrics": run.data.metrics, "params": run.data.params,
                  "status": run.info.status, "versions": len(client.search_model_versions("name='iris'"))}))
""")
    assert seen["version"] == "1" and seen["versions"] == 1 and seen["run_id"] == first.run_id
    assert seen["source"] == "s3://models/team-a/iris/iris-v1"
    assert seen["tags"] == {"mlops.dev/digest": DIGEST, "mlops.dev/trainingrun": "team-a/iris-u1"}
    assert seen["metrics"] == {"accuracy": 0.95, "f1": 0.94} and seen["status"] == "FINISHED"
    assert seen["params"] == {"n_estimators": "30", "max_depth": "4"}
    assert seen["link"].startswith(tracking) and first.run_id in seen["link"]


def test_an_alias_resolves_to_its_version_and_moves(tracking: str, tmp_path: Path) -> None:
    assert register(tracking, tmp_path, "u2", "s3://models/team-a/iris/iris-v2")[0] == 0
    code, message = mlops(tracking, tmp_path, "set-alias", "--name", "iris", "--version", "2", "--alias", "champion")
    assert code == 0 and parse_result(message).alias == "champion", message
    code, message = mlops(tracking, tmp_path, "resolve", "models:/iris@champion")
    resolved = parse_result(message)
    assert code == 0 and (resolved.version, resolved.source, resolved.digest) == (
        "2", "s3://models/team-a/iris/iris-v2", DIGEST), message
    assert mlflow_client(tracking, 'print(json.dumps(client.get_model_version_by_alias("iris", "champion").version))'
                         ) == "2"
    code, message = mlops(tracking, tmp_path, "resolve", "models:/iris/1")
    assert code == 0 and parse_result(message).source == "s3://models/team-a/iris/iris-v1", message


def test_what_cannot_be_served_is_refused_with_the_reason(tracking: str, tmp_path: Path) -> None:
    code, message = mlops(tracking, tmp_path, "resolve", "models:/iris/99")
    assert code == 1 and "registered model iris has no version 99" in message, message
    code, message = mlops(tracking, tmp_path, "resolve", "models:/iris@nobody")
    assert code == 1 and "alias nobody not found" in message, message  # MLflow's own words (a 400)
    # a version registered by another tool whose source storage-init cannot copy, and with no digest tag
    mlflow_client(tracking, 'client.create_registered_model("other")\n'
                            'print(json.dumps(client.create_model_version("other", "gs://bucket/other/model").version))')
    code, message = mlops(tracking, tmp_path, "resolve", "models:/other/1")
    assert code == 1 and "'gs://bucket/other/model' is not a location the model server copies" in message, message
    code, message = mlops(tracking, tmp_path, "resolve", "models:/iris@v1@x")
    assert code == 1 and "is not models:/<name>/<version> or models:/<name>@<alias>" in message, message
    code, message = mlops("http://127.0.0.1:9", tmp_path, "resolve", "models:/iris/1")
    assert code == 1 and "cannot be reached" in message, message


def test_registry_uris_parse() -> None:
    assert parse_uri("models:/iris/3") == ("iris", "3", None)
    assert parse_uri("models:/fraud.v2@champion") == ("fraud.v2", None, "champion")
    for wrong in ("models:/iris", "models:/iris/0", "models:/iris/latest", "s3://b/k", "models:/a/b/3"):
        with pytest.raises(ValueError):
            parse_uri(wrong)
