"""The built-in trainer, the SDK and the pipeline runner as real processes (no cluster)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from mlops_operator.api import artifacts
from mlops_operator.dev.controlplane import free_port
from mlops_operator.runtime import formats, storage
from tests.conftest import S3
from tests.pipelines import compile_pipeline, run_source

Run = tuple[subprocess.CompletedProcess[str], str]


def mlops(args: list[str], tmp: Path, env: dict[str, str] | None = None) -> Run:
    term = tmp / "termination-log"
    term.write_text("")
    proc = subprocess.run([sys.executable, "-m", "mlops_operator.cli", *args], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "MLOPS_TERMINATION_LOG": str(term), **(env or {})})
    return proc, term.read_text()


@pytest.fixture(scope="module")
def iris_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sklearn.datasets import load_iris

    path = tmp_path_factory.mktemp("data") / "iris.csv"
    load_iris(as_frame=True).frame.to_csv(path, index=False)
    return path


def test_builtin_trainer_writes_the_contract_and_a_loadable_model(iris_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "model"
    proc, message = mlops(["train", "--estimator", "sklearn.ensemble.RandomForestClassifier",
                           "--dataset", str(iris_csv), "--output", f"file://{out}",
                           "--params", '{"n_estimators": 30}', "--seed", "1"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = artifacts.parse_termination_message(message)
    assert set(result.metrics) == {"accuracy", "f1", "roc_auc"} and result.metrics["accuracy"] > 0.85
    assert result.model.uri == f"file://{out}" and result.model.profile_uri == f"file://{out}/profile.json"
    assert artifacts.verify(out, result.model.digest) == result.model.digest
    # the data it trained on: the digest of the file's bytes, its rows
    assert result.data is not None and result.data.uri == str(iris_csv)
    assert result.data.digest == "sha256:" + hashlib.sha256(iris_csv.read_bytes()).hexdigest()
    assert result.data.rows == len(iris_csv.read_text().splitlines()) - 1
    meta = artifacts.read_metadata(out)
    assert meta.task == "classification" and meta.target == "target" and len(meta.features) == 4
    assert meta.classes == [0, 1, 2] and "scikit-learn" in meta.libraries
    profile = artifacts.read_profile(out)
    assert all(sum(f.counts) + f.missing == profile.rows for f in profile.features)
    assert profile.prediction is not None and profile.prediction.type == "categorical"
    # open-ended edge bins: the first and the last bin have no bound
    assert all(len(f.counts) == len(f.edges or []) + 1 for f in profile.features)
    sample = artifacts.read_validation(out)
    # the safe loader rebuilds the model; its accuracy on the held-out sample is the reported one
    model = formats.load(out, "sklearn")
    import pandas as pd

    X = pd.DataFrame(sample.rows, columns=sample.features)
    accuracy = float(np.mean(model.predict(X) == np.asarray(sample.labels)))
    assert accuracy == pytest.approx(result.metrics["accuracy"])
    # the same seed trains the same model
    out2 = tmp_path / "again"
    proc, message2 = mlops(["train", "--estimator", "sklearn.ensemble.RandomForestClassifier",
                            "--dataset", f"file://{iris_csv}", "--output", str(out2),
                            "--params", '{"n_estimators": 30}', "--seed", "1"], tmp_path)
    assert proc.returncode == 0 and artifacts.parse_termination_message(message2).metrics == result.metrics


def test_xgboost_trains_across_two_workers_into_one_model_rank_zero_reports(iris_csv: Path, tmp_path: Path) -> None:
    # string labels: XGBoost trains on 0…k-1, the model answers in the dataset's own labels
    import pandas as pd

    frame = pd.read_csv(iris_csv)
    frame["target"] = frame["target"].map({0: "setosa", 1: "versicolor", 2: "virginica"})
    data = tmp_path / "iris-named.csv"
    frame.to_csv(data, index=False)
    port, procs = free_port(), []
    for rank in (0, 1):
        work = tmp_path / f"rank{rank}"
        work.mkdir()
        (work / "termination-log").write_text("")
        env = {**os.environ, "MLOPS_TERMINATION_LOG": str(work / "termination-log"), "WORLD_SIZE": "2",
               "RANK": str(rank), "MASTER_ADDR": "localhost", "MASTER_PORT": str(port)}
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "mlops_operator.cli", "train", "--estimator", "xgboost.XGBClassifier",
             "--dataset", str(data), "--output", f"file://{tmp_path / 'model'}", "--params",
             '{"n_estimators": 10, "max_depth": 3}'], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True))
    outs = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    for rank, (_, err) in enumerate(outs):
        assert f"worker {rank} of 2 joined localhost:{port}" in err, err
    assert "worker 1 of 2 done (rank 0 reports the model)" in outs[1][0]
    assert (tmp_path / "rank1" / "termination-log").read_text() == ""
    result = artifacts.parse_termination_message((tmp_path / "rank0" / "termination-log").read_text())
    assert result.model.format == "xgboost" and result.metrics["accuracy"] > 0.85
    out = tmp_path / "model"
    assert artifacts.verify(out, result.model.digest) == result.model.digest
    meta = artifacts.read_metadata(out)
    assert meta.classes == ["setosa", "versicolor", "virginica"] and meta.model_file == "model.json"
    sample = artifacts.read_validation(out)
    model = formats.load(out, "xgboost", task="classification", classes=meta.classes)
    accuracy = float(np.mean(model.predict(pd.DataFrame(sample.rows, columns=sample.features))
                             == np.asarray(sample.labels)))
    assert accuracy == pytest.approx(result.metrics["accuracy"])


def test_an_estimator_that_cannot_train_across_workers_is_refused(iris_csv: Path, tmp_path: Path) -> None:
    proc, message = mlops(["train", "--estimator", "sklearn.linear_model.LogisticRegression", "--dataset",
                           str(iris_csv), "--output", str(tmp_path / "m")], tmp_path,
                          {"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "localhost", "MASTER_PORT": "1"})
    assert proc.returncode == 1
    assert "trains on one worker; across 2 workers the built-in trainer trains xgboost.XGBClassifier" in message


def test_regression_on_parquet_with_categories_and_missing(tmp_path: Path) -> None:
    from sklearn.datasets import load_diabetes

    df = load_diabetes(as_frame=True).frame
    df["group"] = np.where(df["age"] > 0, "older", "younger")
    df.loc[::17, "bmi"] = np.nan
    data = tmp_path / "diabetes.parquet"
    df.to_parquet(data)
    out = tmp_path / "model"
    proc, message = mlops(["train", "--estimator", "sklearn.ensemble.HistGradientBoostingRegressor",
                           "--dataset", str(data), "--output", str(out), "--params", '{"max_iter": 30}'],
                          tmp_path, env={"MLOPS_TARGET_COLUMN": "target"})
    assert proc.returncode == 0, proc.stderr
    result = artifacts.parse_termination_message(message)
    assert set(result.metrics) == {"rmse", "mae", "r2"}
    profile = artifacts.read_profile(out)
    by_name = {f.name: f for f in profile.features}
    assert by_name["group"].type == "categorical" and set(by_name["group"].categories or []) == {"older", "younger"}
    assert by_name["bmi"].missing > 0
    model = formats.load(out, "sklearn")
    assert len(model.predict(df.drop(columns=["target"]).head(3))) == 3


@pytest.mark.parametrize("args,expected", [
    (["--estimator", "sklearn.ensemble.NoSuchForest"], "sklearn.ensemble has no NoSuchForest"),
    (["--estimator", "nosuchpackage.Model"], "module nosuchpackage cannot be imported"),
    (["--estimator", "os.path.join"], "not a scikit-learn estimator class"),
    (["--params", '{"n_trees": 3}'], "n_trees not accepted by sklearn.ensemble.RandomForestClassifier"),
    (["--dataset", "/nonexistent/iris.csv"], "/nonexistent/iris.csv: not found"),
    (["--target", "species"], "no column 'species'"),
])
def test_trainer_errors_are_clear_and_reach_the_termination_message(
    iris_csv: Path, tmp_path: Path, args: list[str], expected: str
) -> None:
    base = {"--estimator": "sklearn.ensemble.RandomForestClassifier", "--dataset": str(iris_csv),
            "--output": str(tmp_path / "m")}
    base.update(dict(zip(args[::2], args[1::2], strict=True)))
    proc, message = mlops(["train", *[x for kv in base.items() for x in kv]], tmp_path)
    assert proc.returncode == 1
    assert expected in message and message.startswith("mlops train: ")
    assert not (tmp_path / "m").exists()


def test_training_against_s3(iris_csv: Path, tmp_path: Path, s3: S3) -> None:
    client = s3.client()
    client.create_bucket(Bucket="data")
    client.create_bucket(Bucket="models")
    client.upload_file(str(iris_csv), "data", "iris/train.csv")
    proc, message = mlops(["train", "--estimator", "sklearn.linear_model.LogisticRegression",
                           "--params", '{"max_iter": 500}'], tmp_path,
                          env={**s3.env, "MLOPS_DATASET_URI": "s3://data/iris/train.csv",
                               "MLOPS_OUTPUT_URI": "s3://models/ns/iris/run-1"})
    assert proc.returncode == 0, proc.stderr
    result = artifacts.parse_termination_message(message)
    keys = {o["Key"] for o in client.list_objects_v2(Bucket="models", Prefix="ns/iris/run-1/")["Contents"]}
    assert keys == {f"ns/iris/run-1/{f}" for f in ("model.skops", "metadata.json", "profile.json", "validation.json")}
    os.environ.update(s3.env)
    try:
        storage.download_dir("s3://models/ns/iris/run-1", tmp_path / "down")
        with pytest.raises(storage.StorageError, match="not found"):
            storage.read_bytes("s3://data/missing.csv")
    finally:
        for k in s3.env:
            os.environ.pop(k, None)
    assert artifacts.verify(tmp_path / "down", result.model.digest)
    # wrong credentials say so
    proc, message = mlops(["train", "--estimator", "sklearn.linear_model.LogisticRegression",
                           "--dataset", "s3://nobucket/x.csv", "--output", "s3://models/x"], tmp_path, env=s3.env)
    assert proc.returncode == 1 and "s3://nobucket/x.csv" in message


def test_compiled_kfp_pipeline_runs_and_reports_model_and_metrics(tmp_path: Path) -> None:
    from mlops_operator.training.pipeline import check

    text = compile_pipeline(tmp_path / "wine.yaml")
    assert check(text, "x") == []
    out = tmp_path / "out"
    proc, message = mlops(["train-pipeline", "--pipeline", str(tmp_path / "wine.yaml"),
                           "--arguments", '{"n_estimators": 7}', "--output", str(out)], tmp_path,
                          env={"HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = artifacts.parse_termination_message(message)
    assert 0.8 < result.metrics["accuracy"] <= 1.0
    assert artifacts.verify(out, result.model.digest)
    assert artifacts.read_metadata(out).task == "classification"
    # the inline form, from the environment, as the Job passes it
    inline_out = tmp_path / "inline"
    proc, message = mlops(["train-pipeline"], tmp_path, env={
        "MLOPS_PIPELINE": text, "MLOPS_OUTPUT_URI": str(inline_out), "HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert artifacts.verify(inline_out, artifacts.parse_termination_message(message).model.digest)


def test_pipeline_without_a_model_output_is_refused(tmp_path: Path) -> None:
    code = textwrap.dedent('''
        from kfp import compiler, dsl
        @dsl.component(base_image="python:3.11")
        def hello() -> str:
            return "hi"
        @dsl.pipeline(name="nomodel")
        def p():
            hello()
        compiler.Compiler().compile(p, PATH)
    ''')
    run_source(code, tmp_path / "p.yaml")
    proc, message = mlops(["train-pipeline", "--pipeline", str(tmp_path / "p.yaml"), "--output", str(tmp_path / "o")],
                          tmp_path, env={"HOME": str(tmp_path)})
    assert proc.returncode == 1 and "exactly one Model" in message
