"""`mlops train`: the built-in trainer. Any scikit-learn estimator, given by dotted path, on CSV
or Parquet from s3://, file://, http(s):// or a mounted path, with a seeded held-out split.

Configured by the operator through the environment (MLOPS_ESTIMATOR, MLOPS_DATASET_URI,
MLOPS_TARGET_COLUMN, MLOPS_OUTPUT_URI, MLOPS_PARAMS, MLOPS_SEED, …); flags override for local use.
Reports accuracy/F1/ROC-AUC (classification) or RMSE/MAE/R² (regression) and the model record in
the termination message; on failure the message is the reason, in one line.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from ..api.artifacts import TrainingResult
from . import sdk, storage
from .storage import StorageError


class TrainError(RuntimeError):
    pass


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


def load_dataset(uri: str, fmt: str | None = None) -> Any:
    import pandas as pd

    data = storage.read_bytes(uri)
    fmt = fmt or ("parquet" if uri.lower().rsplit("?", 1)[0].endswith((".parquet", ".pq")) else "csv")
    try:
        if fmt == "parquet":
            return pd.read_parquet(io.BytesIO(data))
        return pd.read_csv(io.BytesIO(data))
    except Exception as exc:  # pandas raises many kinds: all mean "this is not a readable table"
        raise TrainError(f"dataset {uri}: cannot be read as {fmt}: {exc}") from None


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
          test_size: float = 0.25) -> TrainingResult:
    from sklearn.base import is_classifier
    from sklearn.compose import ColumnTransformer
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    estimator = load_estimator(estimator_path, params or {}, seed)
    df = load_dataset(dataset_uri, fmt)
    target = target or str(df.columns[-1])
    if target not in df.columns:
        raise TrainError(f"dataset {dataset_uri}: no column {target!r} (columns: {', '.join(map(str, df.columns))})")
    X, y = df.drop(columns=[target]), df[target]
    if len(df) < 4:
        raise TrainError(f"dataset {dataset_uri}: {len(df)} rows are too few to train and hold out")
    classification = is_classifier(estimator)
    stratify = y if classification and y.value_counts().min() >= 2 else None
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=test_size, random_state=seed,
                                                        stratify=stratify)
    categorical = [c for c in X.columns if X[c].dtype.kind not in "biuf"]
    model = estimator
    if categorical:
        encode = ColumnTransformer([("categories", OneHotEncoder(handle_unknown="ignore"), categorical)],
                                   remainder="passthrough")
        model = Pipeline([("encode", encode), ("estimator", estimator)])
    try:
        model.fit(X_train, y_train)
    except (ValueError, TypeError) as exc:
        raise TrainError(f"training {estimator_path} failed: {exc}") from None
    task = "classification" if classification else "regression"
    metrics = metrics_for(task, model, X_test, y_test)
    with tempfile.TemporaryDirectory(prefix="mlops-model-") as tmp:
        digest = sdk.save_model(model, X_train, tmp, validation=(X_test, y_test), task=task,
                                target=target, seed=seed)
        storage.upload_dir(Path(tmp), output_uri)
    return sdk.report(metrics, uri=output_uri, digest=digest)


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
        result = train(args.estimator, args.dataset, args.output, target=args.target, fmt=args.format,
                       params=params, seed=args.seed, test_size=args.test_size)
    except (TrainError, StorageError) as exc:
        return sdk.fail("mlops train", exc)
    return sdk.done(result)
