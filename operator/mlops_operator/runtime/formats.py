"""Loading and saving models by format. Safe formats only, unless the user opts in.

scikit-learn models are stored with skops, which never unpickles: it rebuilds only types it
trusts. skops trusts scikit-learn's estimators itself and lists the rest as untrusted; this
project trusts exactly the types in TRUSTED_TYPES on top (never "whatever the file lists").
joblib/pickle files run code when loaded and load only with `allow_unsafe=True`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, get_args

from ..api.artifacts import MODEL_FILES, ONNX_PROVIDER_ENV, UNSAFE_FORMATS, ArtifactError, ModelFormat

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


class Format:
    """One model format: how its file is loaded (and, for the trainer's formats, saved).

    A new format is one subclass registered with `@register(name)`, plus its name and file in
    api/artifacts.py (`ModelFormat`, `MODEL_FILES`; `UNSAFE_FORMATS` if loading it runs code).
    """

    def load(self, path: Path, task: str, classes: list[Any] | None) -> Any:
        """The model behind `predict(X)` (and `predict_proba(X)` if it has one)."""
        raise NotImplementedError

    def save(self, model: Any, path: Path) -> None:
        raise ArtifactError(f"saving {type(self).__name__} models is not supported by the built-in trainer")


FORMATS: dict[str, Format] = {}
F = TypeVar("F", bound=type[Format])


def register(name: str) -> Callable[[F], F]:
    def add(cls: F) -> F:
        FORMATS[name] = cls()
        return cls
    return add


@register("sklearn")
class Skops(Format):
    def load(self, path: Path, task: str, classes: list[Any] | None) -> Any:
        import skops.io as sio

        untrusted = sio.get_untrusted_types(file=path)
        refused = sorted(set(untrusted) - TRUSTED_TYPES)
        if refused:
            raise ArtifactError(f"the model file contains types this server does not trust: {', '.join(refused)}")
        return sio.load(path, trusted=sorted(untrusted))

    def save(self, model: Any, path: Path) -> None:
        import skops.io as sio

        sio.dump(model, path)


@register("joblib")
class Joblib(Format):
    def load(self, path: Path, task: str, classes: list[Any] | None) -> Any:
        import joblib

        return joblib.load(path)

    def save(self, model: Any, path: Path) -> None:
        import joblib

        joblib.dump(model, path)


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


def onnx_providers(wanted: str, available: list[str]) -> tuple[list[str], str | None]:
    """The providers to open a session with, and why the one asked for is not among them (then CPU)."""
    if wanted.upper() == "CUDA":
        if "CUDAExecutionProvider" in available:
            return ["CUDAExecutionProvider", "CPUExecutionProvider"], None
        return ["CPUExecutionProvider"], ("the CUDA execution provider was asked for but this onnxruntime has "
                                          f"only {', '.join(available)} (it needs onnxruntime-gpu, CUDA and a "
                                          "GPU in the Pod): serving on the CPU")
    return ["CPUExecutionProvider"], None


@register("onnx")
class Onnx(Format):
    def load(self, path: Path, task: str, classes: list[Any] | None) -> Any:
        import onnxruntime

        providers, fallback = onnx_providers(os.environ.get(ONNX_PROVIDER_ENV, "CPU"),
                                             list(onnxruntime.get_available_providers()))
        if fallback:
            logging.getLogger("mlops.serve").warning("%s", fallback)
        session = onnxruntime.InferenceSession(str(path), providers=providers)
        logging.getLogger("mlops.serve").info("ONNX execution providers: %s", ", ".join(session.get_providers()))
        return OnnxModel(session)


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


@register("xgboost")
class XGBoost(Format):
    def load(self, path: Path, task: str, classes: list[Any] | None) -> Any:
        import xgboost

        booster = xgboost.Booster()
        booster.load_model(str(path))
        return XGBoostModel(booster, task, classes)

    def save(self, model: Any, path: Path) -> None:
        """The booster in XGBoost's JSON (an sklearn-API model's, or a Booster itself)."""
        booster = model.get_booster() if hasattr(model, "get_booster") else model
        booster.save_model(str(path))


if set(FORMATS) != set(get_args(ModelFormat)):  # every format of the contract has its loader, and no other
    raise ImportError(f"model formats {sorted(FORMATS)} differ from api.artifacts.ModelFormat "
                      f"{sorted(get_args(ModelFormat))}")


def save(model: Any, directory: Path, fmt: str = "sklearn") -> Path:
    if fmt not in FORMATS:
        raise ArtifactError(f"unknown model format {fmt}")
    path = Path(directory) / MODEL_FILES[fmt]
    FORMATS[fmt].save(model, path)
    return path


def load(directory: Path, fmt: str, allow_unsafe: bool = False, task: str = "regression",
         classes: list[Any] | None = None) -> Any:
    """Load the model of a (digest-verified) model directory; unsafe formats only when allowed."""
    if fmt not in FORMATS:
        raise ArtifactError(f"unknown model format {fmt}")
    if fmt in UNSAFE_FORMATS and not allow_unsafe:
        raise ArtifactError(f"{fmt} files are loaded with pickle, which runs code from the file; "
                            "refused unless unsafe formats are allowed (--allow-unsafe-formats)")
    path = Path(directory) / MODEL_FILES[fmt]
    if not path.is_file():
        raise ArtifactError(f"{path.name} is missing from the model directory")
    return FORMATS[fmt].load(path, task, classes)
