"""The trainer SDK: write a model directory per the artifact contract, and report the result.

    from mlops_operator.runtime import sdk
    digest = sdk.save_model(model, X_train, "out/", validation=(X_test, y_test))
    sdk.report({"accuracy": 0.97}, uri=..., digest=digest)

`save_model` writes the model in a safe format (skops), `profile.json` (reference bins of every
feature and of the predictions), a bounded labelled `validation.json`, and `metadata.json`, and
returns the directory's digest. `report` writes the termination message the operator reads.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ..api import artifacts, times
from ..api.artifacts import MAX_VALIDATION_ROWS, DataCheckReport, DataRecord, ModelMetadata, ModelResult, TrainingResult
from . import formats, profile

TERMINATION_LOG = "/dev/termination-log"


def _column_type(values: Any) -> str:
    kind = getattr(getattr(values, "dtype", None), "kind", "O")
    return "numeric" if kind in "biuf" else "categorical"


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and np.isnan(value):
        return None
    return value


def as_frame(X: Any, names: list[str] | None, what: str) -> Any:
    """A DataFrame of X: given as one, or as a 2-D array or list of rows (named f0… unless named)."""
    import pandas as pd

    if isinstance(X, pd.DataFrame):
        return X
    if isinstance(X, pd.Series | dict | str | bytes) or not hasattr(X, "__len__"):
        raise TypeError(f"{what} must be a pandas DataFrame, a 2-D numpy array or a list of rows, "
                        f"not {type(X).__name__}")
    try:
        array = np.asarray(X)
    except ValueError as exc:  # ragged rows
        raise TypeError(f"{what}: rows of different lengths ({exc})") from None
    if array.ndim != 2:
        raise TypeError(f"{what} must be 2-D (rows x features); this one has shape {array.shape}")
    columns = names or [f"f{i}" for i in range(array.shape[1])]
    if len(columns) != array.shape[1]:
        raise TypeError(f"{what} has {array.shape[1]} features but {len(columns)} names were given")
    if array.dtype == object:  # a list of rows mixing numbers and strings: each column on its own
        return pd.DataFrame({c: pd.Series(list(array[:, j])).infer_objects() for j, c in enumerate(columns)})
    return pd.DataFrame(array, columns=columns)


def _versions() -> dict[str, str]:
    out = {}
    for dist in ("scikit-learn", "skops", "numpy", "pandas", "mlops-operator"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def save_model(
    model: Any,
    reference_X: Any,
    directory: str | Path,
    *,
    validation: tuple[Any, Any] | None = None,
    task: str | None = None,
    target: str | None = None,
    fmt: str = "sklearn",
    bins: int = profile.DEFAULT_BINS,
    seed: int = 0,
    feature_names: list[str] | None = None,
) -> str:
    """Write the model directory and return its digest.

    reference_X (and the validation X): a pandas DataFrame, a 2-D numpy array or a list of rows
    (features named `f0`, `f1`, … unless `feature_names` gives them; a model fitted on arrays is
    then served from arrays with those names). The model must have been fitted on the same layout."""
    from sklearn.base import is_classifier

    given = reference_X  # what the model was fitted on, arrays or a frame: predicted as it is
    reference_X = as_frame(reference_X, feature_names, "reference_X")
    if validation is not None:
        validation = (as_frame(validation[0], list(reference_X.columns), "validation[0]"), validation[1])
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    task = task or ("classification" if is_classifier(model) else "regression")
    names = [str(c) for c in reference_X.columns]
    types = {n: _column_type(reference_X[n]) for n in names}
    predictions = model.predict(given)
    ptype = "categorical" if task == "classification" else "numeric"
    prof = profile.build({n: (types[n], list(reference_X[n])) for n in names},
                         (ptype, [_plain(p) for p in predictions]), bins)
    artifacts.write_json(out / artifacts.PROFILE_FILE, prof)
    if validation is not None:
        X_val, y_val = validation
        n = len(X_val)
        if n > MAX_VALIDATION_ROWS:
            picked = np.sort(np.random.default_rng(seed).choice(n, MAX_VALIDATION_ROWS, replace=False))
            X_val, y_val = X_val.iloc[picked], np.asarray(y_val)[picked]
        rows = [[_plain(v) for v in row] for row in X_val[names].itertuples(index=False)]
        artifacts.write_json(out / artifacts.VALIDATION_FILE, artifacts.ValidationSample(
            features=names, rows=rows, labels=[_plain(v) for v in np.asarray(y_val)]))
    formats.save(model, out, fmt)
    classes = [_plain(c) for c in getattr(model, "classes_", [])] or None
    meta = ModelMetadata(
        format=fmt, model_file=artifacts.MODEL_FILES[fmt], task=task,
        features=[artifacts.Feature(name=n, type=types[n]) for n in names],
        classes=classes, target=target, libraries=_versions(),
        created_at=times.now(),
    )
    return artifacts.finalize(out, meta)


def _termination_log(path: str | None) -> Path:
    """Where Kubernetes reads the termination message (MLOPS_TERMINATION_LOG outside a Pod)."""
    return Path(path or os.environ.get("MLOPS_TERMINATION_LOG", TERMINATION_LOG))


def data_record(uri: str, content: bytes, rows: int) -> DataRecord:
    """What `report(data=…)` records of a dataset: its URI, the sha256 of the bytes read, its rows."""
    return DataRecord(uri=uri, digest="sha256:" + hashlib.sha256(content).hexdigest(), rows=rows)


def report(metrics: dict[str, float], *, uri: str, digest: str, fmt: str = "sklearn",
           profile_uri: str | None = None, path: str | None = None, data: DataRecord | None = None,
           data_checks: DataCheckReport | None = None) -> TrainingResult:
    """Write the termination message (JSON, under 4 KiB) the operator reads from the Pod status; `data`, the
    dataset trained on (`data_record`), goes into the run's reproducibility record."""
    result = TrainingResult(
        metrics={k: float(v) for k, v in metrics.items()},
        model=ModelResult(uri=uri, digest=digest, format=fmt,
                          profile_uri=profile_uri or f"{uri.rstrip('/')}/{artifacts.PROFILE_FILE}"),
        data=data,
        data_checks=data_checks,
    )
    write_termination_message(result.to_message(), path)
    return result


def write_termination_message(text: str, path: str | None = None) -> None:
    _termination_log(path).write_text(text)


def answer(message: str) -> int:
    """End a runtime command with its result: the termination message, and on stdout; exit code 0."""
    write_termination_message(message)
    print(message)
    return 0


def fail(command: str, exc: Exception) -> int:
    """End a runtime command with its reason on stderr and in the termination message; exit code 1."""
    message = f"{command}: {exc}"
    print(message, file=sys.stderr)
    report_error(message)
    return 1


def done(result: TrainingResult) -> int:
    print(json.dumps(result.model_dump(by_alias=True, exclude_none=True)))
    return 0


def report_error(message: str, path: str | None = None) -> None:
    """A failed run's reason, as the termination message (what `kubectl describe` and the status show)."""
    text = message.encode()[: artifacts.TERMINATION_MESSAGE_LIMIT].decode(errors="ignore")
    with contextlib.suppress(OSError):  # not in a Pod: the log has the reason too
        _termination_log(path).write_text(text)
