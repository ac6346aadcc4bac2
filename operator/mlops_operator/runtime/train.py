"""`mlops train`: the built-in trainer. Any scikit-learn estimator, given by dotted path, on CSV
or Parquet from s3://, file://, http(s):// or a mounted path, with a seeded held-out split.

Configured by the operator through the environment (MLOPS_ESTIMATOR, MLOPS_DATASET_URI,
MLOPS_TARGET_COLUMN, MLOPS_OUTPUT_URI, MLOPS_PARAMS, MLOPS_SEED, …); flags override for local use.
Reports accuracy/F1/ROC-AUC (classification) or RMSE/MAE/R² (regression) and the model record in
the termination message; on failure the message is the reason, in one line.

XGBoost estimators (`xgboost.XGBClassifier`, `xgboost.XGBRegressor`) are saved in XGBoost's own JSON
format, and train across the workers of a distributed run (WORLD_SIZE > 1): every worker reads the same
split, fits on its share of the training rows inside XGBoost's collective (rank 0 runs the tracker at
MASTER_ADDR:MASTER_PORT), and rank 0 evaluates, writes and reports the one model they trained.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import os
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..api.artifacts import DataCheckReport, DataRecord, Profile, TrainingResult
from . import sdk, storage
from .storage import StorageError


class TrainError(RuntimeError):
    pass


class DataCheckFailed(TrainError):
    """The training set failed spec.dataChecks: nothing was trained."""

    def __init__(self, report: DataCheckReport) -> None:
        super().__init__("data checks failed: " + "; ".join(report.failures))
        self.report = report


def data_checks(df: Any, target: str, checks_json: str | None, reference_uri: str | None) -> DataCheckReport | None:
    """spec.dataChecks (MLOPS_DATA_CHECKS) on the training set; the previous version's profile read from
    MLOPS_REFERENCE_PROFILE. Raises DataCheckFailed when one fails."""
    if not checks_json:
        return None
    from ..api.trainingrun import DataChecks
    from . import datachecks

    try:
        checks = DataChecks.model_validate_json(checks_json)
    except ValueError as exc:
        raise TrainError(f"MLOPS_DATA_CHECKS is not a dataChecks object: {exc}") from None
    previous = None
    if reference_uri:
        try:
            previous = Profile.model_validate_json(storage.read_bytes(reference_uri))
        except ValueError as exc:
            raise TrainError(f"the previous version's profile {reference_uri}: {exc}") from None
    report = datachecks.check(df, checks, target, previous)
    if not report.passed:
        raise DataCheckFailed(report)
    return report


RENDEZVOUS_SECONDS = 300.0  # how long a worker waits for the coordinator's name to resolve


@dataclass(frozen=True)
class Workers:
    """This process's place in a distributed run (rank 0 of 1 when it trains alone)."""

    rank: int = 0
    size: int = 1
    address: str = ""
    port: int = 0

    @classmethod
    def from_env(cls, env: Any) -> Workers:
        size = int(env.get("WORLD_SIZE") or 1)
        if size <= 1:
            return cls()
        return cls(int(env.get("RANK") or 0), size, env.get("MASTER_ADDR", ""), int(env.get("MASTER_PORT") or 0))

    def shard(self, y: Any, classification: bool) -> Any:
        """The training rows this worker fits on: every class in every share (XGBoost's classifier
        needs them all on each worker)."""
        import numpy as np

        values = np.asarray(y)
        if not classification:
            return np.arange(len(values))[self.rank::self.size]
        return np.sort(np.concatenate([np.flatnonzero(values == c)[self.rank::self.size]
                                       for c in np.unique(values)]))

    def resolve(self, deadline: float) -> None:
        """Wait for the coordinator's name (its Pod's DNS record appears once it is scheduled)."""
        while True:
            try:
                socket.getaddrinfo(self.address, self.port)
                return
            except OSError as exc:
                if time.monotonic() > deadline:
                    raise TrainError(f"the coordinator {self.address} did not resolve in "
                                     f"{RENDEZVOUS_SECONDS:.0f} s: {exc}") from None
                time.sleep(0.5)


class Decoded:
    """An XGBoost classifier fitted on encoded labels (0…k-1), answering in the dataset's own labels."""

    def __init__(self, model: Any, classes: Any) -> None:
        self.model, self.classes_ = model, classes

    def predict(self, X: Any) -> Any:
        return self.classes_[self.model.predict(X)]

    def predict_proba(self, X: Any) -> Any:
        return self.model.predict_proba(X)

    def get_booster(self) -> Any:
        return self.model.get_booster()


def _fit_together(model: Any, X: Any, y: Any, workers: Workers) -> None:
    """Fit inside XGBoost's collective: the workers' histograms are all-reduced each round, so every
    worker ends with the same model."""
    from xgboost import collective
    from xgboost.tracker import RabitTracker

    tracker = None
    if workers.rank == 0:
        # ranks by DMLC_TASK_ID, not by host name (the default): rank 0 is the Pod that writes the model
        tracker = RabitTracker(n_workers=workers.size, host_ip="0.0.0.0", port=workers.port,  # nosec B104
                               sortby="task")
        tracker.start()
    workers.resolve(time.monotonic() + RENDEZVOUS_SECONDS)
    with collective.CommunicatorContext(dmlc_tracker_uri=workers.address, dmlc_tracker_port=workers.port,
                                        dmlc_task_id=str(workers.rank), dmlc_retry=60,
                                        dmlc_timeout=int(RENDEZVOUS_SECONDS)):
        print(f"mlops train: worker {collective.get_rank()} of {collective.get_world_size()} joined "
              f"{workers.address}:{workers.port}", file=sys.stderr, flush=True)
        model.fit(X, y)
    if tracker is not None:
        tracker.wait_for()


def load_estimator(path: str, params: dict[str, Any], seed: int) -> Any:
    module_name, _, attr = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise TrainError(f"estimator {path}: module {module_name} cannot be imported") from None
    cls = getattr(module, attr, None)
    if cls is None:
        raise TrainError(f"estimator {path}: {module_name} has no {attr}")
    from sklearn.base import BaseEstimator

    if not (isinstance(cls, type) and issubclass(cls, BaseEstimator)):
        raise TrainError(f"estimator {path} is not a scikit-learn estimator class")
    estimator = cls()
    known = estimator.get_params()
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise TrainError(f"params: {', '.join(unknown)} not accepted by {path} "
                         f"(it takes: {', '.join(sorted(known))})")
    if "random_state" in known and "random_state" not in params:
        params = {**params, "random_state": seed}
    try:
        return estimator.set_params(**params)
    except (TypeError, ValueError) as exc:
        raise TrainError(f"params for {path}: {exc}") from None


CAPTURED = "captured:"  # a dataset argument naming a fromCapture spec (JSON) instead of a URI


def load_dataset(uri: str, fmt: str | None = None) -> tuple[Any, DataRecord]:
    """The table, and the record of what was read (the content digest of its bytes, its rows)."""
    import pandas as pd

    data = storage.read_bytes(uri)
    fmt = fmt or ("parquet" if uri.lower().rsplit("?", 1)[0].endswith((".parquet", ".pq")) else "csv")
    try:
        df = pd.read_parquet(io.BytesIO(data)) if fmt == "parquet" else pd.read_csv(io.BytesIO(data))
    except Exception as exc:  # pandas raises many kinds: all mean "this is not a readable table"
        raise TrainError(f"dataset {uri}: cannot be read as {fmt}: {exc}") from None
    return df, sdk.data_record(uri, data, len(df))


def load_captured(spec: str, target: str) -> tuple[Any, DataRecord]:
    """A training set from captured calls and their labels (MLOPS_DATASET_FROM_CAPTURE, a TrainingRun's
    dataset.fromCapture), with its record: the digest is of the assembled table as CSV (what was trained on),
    and the files and rows it came from."""
    from .quality import QualityError, training_set

    try:
        wanted = json.loads(spec)
        plus = load_dataset(wanted["plus"])[0] if wanted.get("plus") else None
        table, read = training_set(wanted["uri"], time.time() - float(wanted.get("sinceSeconds", 7 * 86400)),
                                   target, plus)
    except (QualityError, KeyError, ValueError) as exc:
        raise TrainError(f"dataset.fromCapture: {exc}") from None
    record = sdk.data_record(wanted["uri"], table.to_csv(index=False).encode(), len(table))
    return table, record.model_copy(update=read)


def metrics_for(task: str, model: Any, X: Any, y: Any) -> dict[str, float]:
    import numpy as np
    from sklearn import metrics as m

    predicted = model.predict(X)
    if task == "classification":
        out = {"accuracy": m.accuracy_score(y, predicted),
               "f1": m.f1_score(y, predicted, average="macro")}
        if hasattr(model, "predict_proba"):
            proba = model.predict_proba(X)
            # a class missing from the held-out split: no ROC-AUC, the rest stands
            with contextlib.suppress(ValueError):
                out["roc_auc"] = (m.roc_auc_score(y, proba[:, 1]) if proba.shape[1] == 2 else
                                  m.roc_auc_score(y, proba, multi_class="ovr", labels=model.classes_))
        return {k: float(v) for k, v in out.items()}
    return {"rmse": float(np.sqrt(m.mean_squared_error(y, predicted))),
            "mae": float(m.mean_absolute_error(y, predicted)),
            "r2": float(m.r2_score(y, predicted))}


def train(estimator_path: str, dataset_uri: str, output_uri: str, *, target: str | None = None,
          fmt: str | None = None, params: dict[str, Any] | None = None, seed: int = 0,
          test_size: float = 0.25, workers: Workers | None = None, checks: str | None = None,
          reference_profile: str | None = None) -> TrainingResult | None:
    """Train, write the model directory and report it; None on the workers other than rank 0 (they
    train with it and report nothing)."""
    import numpy as np
    from sklearn.base import is_classifier
    from sklearn.compose import ColumnTransformer
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    workers = workers or Workers()
    estimator = load_estimator(estimator_path, params or {}, seed)
    xgb = type(estimator).__module__.split(".")[0] == "xgboost"
    if workers.size > 1 and not xgb:
        raise TrainError(f"estimator {estimator_path} trains on one worker; across {workers.size} workers the "
                         "built-in trainer trains xgboost.XGBClassifier or xgboost.XGBRegressor")
    if dataset_uri.startswith(CAPTURED):
        df, record = load_captured(dataset_uri[len(CAPTURED):], target or "label")
        dataset_uri = record.uri
    else:
        df, record = load_dataset(dataset_uri, fmt)
    target = target or str(df.columns[-1])
    if target not in df.columns:
        raise TrainError(f"dataset {dataset_uri}: no column {target!r} (columns: {', '.join(map(str, df.columns))})")
    report = data_checks(df, target, checks, reference_profile)  # before anything is trained
    X, y = df.drop(columns=[target]), df[target]
    if len(df) < 4:
        raise TrainError(f"dataset {dataset_uri}: {len(df)} rows are too few to train and hold out")
    classification = is_classifier(estimator)
    stratify = y if classification and y.value_counts().min() >= 2 else None
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=test_size, random_state=seed,
                                                        stratify=stratify)
    categorical = [c for c in X.columns if X[c].dtype.kind not in "biuf"]
    model = estimator
    if categorical and xgb:
        raise TrainError(f"estimator {estimator_path} is trained on numeric columns; {', '.join(categorical)} "
                         "are not")
    if categorical:
        encode = ColumnTransformer([("categories", OneHotEncoder(handle_unknown="ignore"), categorical)],
                                   remainder="passthrough")
        model = Pipeline([("encode", encode), ("estimator", estimator)])
    labels = y_train
    classes = np.unique(np.asarray(y)) if xgb and classification else None
    if classes is not None:  # XGBoost's classifier takes labels 0…k-1: encoded from every row, as on every worker
        labels = np.searchsorted(classes, np.asarray(y_train))
    share = workers.shard(labels, classification)
    try:
        if workers.size > 1:
            _fit_together(model, X_train.iloc[share], np.asarray(labels)[share], workers)
        else:
            model.fit(X_train, labels)
    except (ValueError, TypeError) as exc:
        raise TrainError(f"training {estimator_path} failed: {exc}") from None
    if workers.rank != 0:
        return None
    if classes is not None:
        model = Decoded(model, classes)
    task = "classification" if classification else "regression"
    metrics = metrics_for(task, model, X_test, y_test)
    saved = "xgboost" if xgb else "sklearn"
    with tempfile.TemporaryDirectory(prefix="mlops-model-") as tmp:
        digest = sdk.save_model(model, X_train, tmp, validation=(X_test, y_test), task=task,
                                target=target, seed=seed, fmt=saved)
        storage.upload_dir(Path(tmp), output_uri)
    return sdk.report(metrics, uri=output_uri, digest=digest, fmt=saved, data=record, data_checks=report)


def main(argv: list[str] | None = None) -> int:
    env = os.environ
    parser = argparse.ArgumentParser(prog="mlops train", description=__doc__)
    parser.add_argument("--estimator", default=env.get("MLOPS_ESTIMATOR"))
    parser.add_argument("--dataset", default=env.get("MLOPS_DATASET_URI"))
    parser.add_argument("--format", default=env.get("MLOPS_DATASET_FORMAT") or None, choices=["csv", "parquet"])
    parser.add_argument("--target", default=env.get("MLOPS_TARGET_COLUMN") or None)
    parser.add_argument("--output", default=env.get("MLOPS_OUTPUT_URI"))
    parser.add_argument("--params", default=env.get("MLOPS_PARAMS", "{}"), help="JSON object")
    parser.add_argument("--seed", type=int, default=int(env.get("MLOPS_SEED", "0")))
    parser.add_argument("--test-size", type=float, default=float(env.get("MLOPS_TEST_SIZE", "0.25")))
    args = parser.parse_args(argv)
    try:
        if not args.dataset and env.get("MLOPS_DATASET_FROM_CAPTURE"):
            args.dataset = CAPTURED + env["MLOPS_DATASET_FROM_CAPTURE"]
        missing = [f"--{n}" for n in ("estimator", "dataset", "output") if not getattr(args, n)]
        if missing:
            raise TrainError(f"missing {', '.join(missing)} (or MLOPS_ESTIMATOR / MLOPS_DATASET_URI / "
                             "MLOPS_OUTPUT_URI)")
        try:
            params = json.loads(args.params)
        except json.JSONDecodeError as exc:
            raise TrainError(f"params are not JSON: {exc.msg}") from None
        if not isinstance(params, dict):
            raise TrainError("params must be a JSON object")
        workers = Workers.from_env(env)
        result = train(args.estimator, args.dataset, args.output, target=args.target, fmt=args.format,
                       params=params, seed=args.seed, test_size=args.test_size, workers=workers,
                       checks=env.get("MLOPS_DATA_CHECKS"), reference_profile=env.get("MLOPS_REFERENCE_PROFILE"))
    except DataCheckFailed as exc:  # the report is the termination message: the operator puts it in status
        print(f"mlops train: {exc}", file=sys.stderr)
        sdk.write_termination_message(json.dumps({"dataChecks": exc.report.model_dump(mode="json")}))
        return 1
    except (TrainError, StorageError) as exc:
        return sdk.fail("mlops train", exc)
    if result is None:
        print(f"mlops train: worker {workers.rank} of {workers.size} done (rank 0 reports the model)")
        return 0
    return sdk.done(result)
