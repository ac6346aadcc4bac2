"""Loading and saving models by format. Safe formats only, unless the user opts in.

scikit-learn models are stored with skops, which never unpickles: it rebuilds only types it
trusts. skops trusts scikit-learn's estimators itself and lists the rest as untrusted; this
project trusts exactly the types in TRUSTED_TYPES on top (never "whatever the file lists").
joblib/pickle files run code when loaded and load only with `allow_unsafe=True`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .artifacts import MODEL_FILES, UNSAFE_FORMATS, ArtifactError

# types skops lists as untrusted that plain scikit-learn models need (tree-based models)
TRUSTED_TYPES = frozenset({
    "sklearn.tree._tree.Tree",
    "sklearn._loss.link.Interval",
    "sklearn._loss.link.IdentityLink",
    "sklearn._loss.link.LogitLink",
    "sklearn._loss.link.MultinomialLogit",
    "sklearn._loss.loss.HalfSquaredError",
    "sklearn._loss.loss.HalfBinomialLoss",
    "sklearn._loss.loss.HalfMultinomialLoss",
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "collections.OrderedDict",
})


def save(model: Any, directory: Path, fmt: str = "sklearn") -> Path:
    path = Path(directory) / MODEL_FILES[fmt]
    if fmt == "sklearn":
        import skops.io as sio

        sio.dump(model, path)
    elif fmt == "joblib":
        import joblib

        joblib.dump(model, path)
    else:
        raise ArtifactError(f"saving format {fmt} is not supported by the built-in trainer")
    return path


class OnnxModel:
    """An ONNX model behind the same `predict(X)` as scikit-learn's: the first output, float32 input."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.input = session.get_inputs()[0].name
        self.output = session.get_outputs()[0].name

    def predict(self, X: Any) -> Any:
        import numpy as np

        result = self.session.run([self.output], {self.input: np.asarray(X, dtype=np.float32)})[0]
        return result.ravel() if result.ndim == 2 and result.shape[1] == 1 else result


class XGBoostModel:
    """An XGBoost JSON model behind `predict(X)`: classes for classifiers, values for regressors."""

    def __init__(self, booster: Any, task: str, classes: list[Any] | None) -> None:
        self.booster, self.task, self.classes = booster, task, classes

    def predict(self, X: Any) -> Any:
        import numpy as np
        import xgboost

        raw = self.booster.predict(xgboost.DMatrix(np.asarray(X, dtype=float),
                                                   feature_names=self.booster.feature_names))
        if self.task != "classification":
            return raw
        index = raw.argmax(axis=1) if raw.ndim == 2 else (raw > 0.5).astype(int)
        return np.asarray(self.classes)[index] if self.classes else index


def load(directory: Path, fmt: str, allow_unsafe: bool = False, task: str = "regression",
         classes: list[Any] | None = None) -> Any:
    """Load the model of a (digest-verified) model directory."""
    path = Path(directory) / MODEL_FILES[fmt]
    if fmt in UNSAFE_FORMATS and not allow_unsafe:
        raise ArtifactError(f"{fmt} files are loaded with pickle, which runs code from the file; "
                            "refused unless unsafe formats are allowed (--allow-unsafe-formats)")
    if not path.is_file():
        raise ArtifactError(f"{path.name} is missing from the model directory")
    if fmt == "sklearn":
        import skops.io as sio

        untrusted = sio.get_untrusted_types(file=path)
        refused = sorted(set(untrusted) - TRUSTED_TYPES)
        if refused:
            raise ArtifactError(f"the model file contains types this server does not trust: {', '.join(refused)}")
        return sio.load(path, trusted=sorted(untrusted))
    if fmt == "joblib":
        import joblib

        return joblib.load(path)
    if fmt == "onnx":
        import onnxruntime

        return OnnxModel(onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"]))
    if fmt == "xgboost":
        import xgboost

        booster = xgboost.Booster()
        booster.load_model(str(path))
        return XGBoostModel(booster, task, classes)
    raise ArtifactError(f"unknown model format {fmt}")
