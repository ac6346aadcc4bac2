"""The model behind the server: loading (digest verified), Open Inference Protocol V2 request
decoding and response encoding, and the monitoring counters. No HTTP here (see server.py).

Requests carry either one tensor of shape [N, F] (F = the model's features, in order), or one
tensor per feature named as in the model's metadata, of shape [N] or [N, 1] (BYTES for
categorical features). `null` is a missing value. Every client mistake raises `BadRequest` with a
message that says what is wrong.
"""

from __future__ import annotations

import hashlib
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from . import artifacts, formats
from .profile import Counts

# models fitted on DataFrames get arrays here when every feature is numeric: same columns, same order
warnings.filterwarnings("ignore", message="X does not have valid feature names")

NUMERIC_TYPES = {"BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
                 "FP16", "FP32", "FP64"}
DATATYPES = NUMERIC_TYPES | {"BYTES"}
MAX_ROWS = 100_000


class BadRequest(ValueError):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class LoadedModel:
    name: str
    directory: Path
    metadata: artifacts.ModelMetadata
    model: Any
    digest: str
    profile: artifacts.Profile | None
    profile_digest: str | None
    features: list[str]
    categorical: frozenset[str]

    @classmethod
    def load(cls, name: str, directory: Path, digest: str | None, allow_unsafe: bool = False) -> LoadedModel:
        directory = Path(directory)
        actual = artifacts.verify(directory, digest) if digest else artifacts.digest(directory)
        meta = artifacts.read_metadata(directory)
        if meta.format in artifacts.UNSAFE_FORMATS and not allow_unsafe:
            raise artifacts.ArtifactError(f"the model is in the unsafe format {meta.format}; start the server "
                                          "with --allow-unsafe-formats to load it")
        model = formats.load(directory, meta.format, allow_unsafe, task=meta.task, classes=meta.classes)
        profile = profile_digest = None
        if (directory / artifacts.PROFILE_FILE).is_file():
            profile = artifacts.read_profile(directory)
            profile_digest = "sha256:" + hashlib.sha256((directory / artifacts.PROFILE_FILE).read_bytes()).hexdigest()
        return cls(name=name, directory=directory, metadata=meta, model=model, digest=actual, profile=profile,
                   profile_digest=profile_digest, features=[f.name for f in meta.features],
                   categorical=frozenset(f.name for f in meta.features if f.type == "categorical"))

    def metadata_response(self) -> dict[str, Any]:
        return {
            "name": self.name, "versions": [self.digest], "platform": f"mlops-{self.metadata.format}",
            "inputs": [{"name": f, "datatype": "BYTES" if f in self.categorical else "FP64", "shape": [-1]}
                       for f in self.features],
            "outputs": [{"name": "predict", "datatype": "BYTES" if self.metadata.task == "classification"
                         and isinstance((self.metadata.classes or [0])[0], str) else "FP64", "shape": [-1]}],
            "parameters": {"digest": self.digest, "task": self.metadata.task, "format": self.metadata.format},
        }


@dataclass
class Decoded:
    id: Any
    rows: int
    columns: dict[str, Any]  # feature → 1-D array (float) or list (categorical)
    matrix: np.ndarray | None  # [N, F] float when every feature is numeric
    replay: bool = False
    """A replayed validation row (`parameters: {"mlops.dev/replay": true}`, sent by `mlops analyze`):
    answered and timed like any request, but not counted into the drift sketches."""


def _flat(data: Any, where: str) -> list[Any]:
    if not isinstance(data, list):
        raise BadRequest(f"{where}.data must be a list")
    if data and isinstance(data[0], list):
        out: list[Any] = []
        for row in data:
            if not isinstance(row, list):
                raise BadRequest(f"{where}.data mixes rows and values")
            out.extend(row)
        return out
    return data


def _tensor(spec: Any, i: int) -> tuple[str, list[int], str, list[Any]]:
    where = f"inputs[{i}]"
    if not isinstance(spec, dict):
        raise BadRequest(f"{where} must be an object with name, shape, datatype and data")
    for key in ("name", "shape", "datatype", "data"):
        if key not in spec:
            raise BadRequest(f"{where}.{key} is missing")
    name, shape, datatype = spec["name"], spec["shape"], spec["datatype"]
    if not isinstance(name, str):
        raise BadRequest(f"{where}.name must be a string")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in shape):
        raise BadRequest(f"{where}.shape must be a list of non-negative integers")
    if datatype not in DATATYPES:
        raise BadRequest(f"{where}.datatype {datatype!r} is not a V2 datatype ({', '.join(sorted(DATATYPES))})")
    if shape and shape[0] > MAX_ROWS:
        raise BadRequest(f"{where}: {shape[0]} rows in one request; at most {MAX_ROWS}", 413)
    data = _flat(spec["data"], where)
    if math.prod(shape) != len(data):
        raise BadRequest(f"{where}: shape {shape} holds {math.prod(shape)} values but data has {len(data)}")
    return name, shape, datatype, data


def _numbers(values: list[Any], where: str) -> np.ndarray:
    try:
        return np.asarray(values, dtype=float)  # null → NaN (a missing value)
    except (TypeError, ValueError):
        bad = next((v for v in values if v is not None and not isinstance(v, int | float)), None)
        raise BadRequest(f"{where}: {bad!r} is not a number") from None


def decode(body: bytes, model: LoadedModel) -> Decoded:
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None
    if not isinstance(request, dict):
        raise BadRequest("the body must be a JSON object with an inputs list")
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise BadRequest("inputs must be a non-empty list of tensors")
    if "parameters" in request and not isinstance(request["parameters"], dict):
        raise BadRequest("parameters must be an object")
    tensors = [_tensor(t, i) for i, t in enumerate(inputs)]
    n_features = len(model.features)
    if len(tensors) == 1 and len(tensors[0][1]) == 2 and tensors[0][0] not in model.features:
        name, shape, datatype, data = tensors[0]
        if shape[1] != n_features:
            raise BadRequest(f"inputs[0] has {shape[1]} features per row; the model takes {n_features} "
                             f"({', '.join(model.features)})")
        if datatype == "BYTES" and not model.categorical:
            raise BadRequest("inputs[0].datatype BYTES: the model's features are all numeric (use FP64)")
        rows = shape[0]
        if datatype != "BYTES" and not model.categorical:
            matrix = _numbers(data, "inputs[0].data").reshape(rows, n_features)
            return Decoded(request.get("id"), rows, {f: matrix[:, j] for j, f in enumerate(model.features)}, matrix,
                           _replay(request))
        columns: dict[str, Any] = {f: ([None if v is None else str(v) for v in data[j::n_features]]
                                       if f in model.categorical
                       else data[j::n_features]) for j, f in enumerate(model.features)}
    else:
        columns = {}
        rows = -1
        for i, (name, shape, datatype, data) in enumerate(tensors):
            if name not in model.features:
                raise BadRequest(f"inputs[{i}].name {name!r} is not a feature of the model "
                                 f"({', '.join(model.features)})")
            if name in columns:
                raise BadRequest(f"inputs[{i}]: feature {name!r} is given twice")
            if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
                raise BadRequest(f"inputs[{i}].shape must be [N] or [N, 1] for a per-feature tensor")
            if rows not in (-1, shape[0]):
                raise BadRequest(f"inputs[{i}] has {shape[0]} rows, the others {rows}")
            rows = shape[0]
            if name in model.categorical:
                if datatype != "BYTES":
                    raise BadRequest(f"inputs[{i}]: feature {name!r} is categorical: use datatype BYTES")
                columns[name] = [None if v is None else str(v) for v in data]
            else:
                if datatype == "BYTES":
                    raise BadRequest(f"inputs[{i}]: feature {name!r} is numeric: use a numeric datatype")
                columns[name] = _numbers(data, f"inputs[{i}].data")
        missing = [f for f in model.features if f not in columns]
        if missing:
            raise BadRequest(f"features missing from the request: {', '.join(missing)} "
                             f"(the model takes {n_features}: {', '.join(model.features)})")
    for f in model.features:
        if f not in model.categorical and not isinstance(columns[f], np.ndarray):
            columns[f] = _numbers(list(columns[f]), f"feature {f!r}")
    if not model.categorical:
        return Decoded(request.get("id"), rows, columns, np.column_stack([columns[f] for f in model.features]),
                       _replay(request))
    return Decoded(request.get("id"), rows, columns, None, _replay(request))



def _replay(request: dict[str, Any]) -> bool:
    return (request.get("parameters") or {}).get(artifacts.REPLAY) is True


def predict(model: LoadedModel, decoded: Decoded) -> np.ndarray:
    if decoded.rows == 0:
        return np.asarray([])
    if decoded.matrix is not None:
        X: Any = decoded.matrix
    else:
        import pandas as pd

        X = pd.DataFrame({f: decoded.columns[f] for f in model.features})
    try:
        return np.asarray(model.model.predict(X))
    except ValueError as exc:
        # what the model refuses (NaN or infinity it cannot take, values it cannot encode): the caller's
        raise BadRequest(f"the model cannot take these inputs: {exc}") from None


def encode(model: LoadedModel, decoded: Decoded, predictions: np.ndarray) -> bytes:
    kind = predictions.dtype.kind
    datatype = "INT64" if kind in "iub" else "FP64" if kind == "f" else "BYTES"
    data = predictions.tolist() if kind in "iubf" else [str(p) for p in predictions]
    response: dict[str, Any] = {"model_name": model.name, "model_version": model.digest,
                                "outputs": [{"name": "predict", "datatype": datatype,
                                             "shape": [len(data)], "data": data}]}
    if decoded.id is not None:
        response["id"] = decoded.id
    return orjson.dumps(response)


@dataclass
class Monitor:
    """Cumulative counters since the process started: requests, errors, latency, drift sketches.

    No window state: a scraper diffs two snapshots for any window; counters of several Pods add up.
    Memory is O(features x bins), whatever the traffic.
    """

    model: LoadedModel | None
    enabled: bool = True
    started: float = field(default_factory=time.time)
    requests: int = 0
    errors: int = 0
    rows: int = 0
    latency_counts: list[int] = field(default_factory=lambda: [0] * (len(artifacts.LATENCY_BUCKETS) + 1))
    latency_sum: float = 0.0
    by_code: dict[int, int] = field(default_factory=dict)
    features: dict[str, Counts] = field(default_factory=dict)
    prediction: Counts | None = None

    def __post_init__(self) -> None:
        profile = self.model.profile if self.model else None
        if profile is not None:
            self.features = {d.name: Counts(d) for d in profile.features}
            self.prediction = Counts(profile.prediction) if profile.prediction else None

    def observe(self, seconds: float, code: int) -> None:
        self.requests += 1
        if code >= 400:
            self.errors += 1
        self.by_code[code] = self.by_code.get(code, 0) + 1
        self.latency_sum += seconds
        i = 0
        while i < len(artifacts.LATENCY_BUCKETS) and seconds > artifacts.LATENCY_BUCKETS[i]:
            i += 1
        self.latency_counts[i] += 1

    def count(self, decoded: Decoded, predictions: np.ndarray) -> None:
        if not self.enabled or not self.features or decoded.replay:
            return
        self.rows += decoded.rows
        for name, counts in self.features.items():
            counts.add(decoded.columns[name])
        if self.prediction is not None:
            self.prediction.add(predictions if self.prediction.dist.type == "numeric"
                                else [str(p) for p in predictions.tolist()])

    def snapshot(self) -> dict[str, Any]:
        m = self.model
        return {
            "model": m.name if m else None, "digest": m.digest if m else None,
            "profileDigest": m.profile_digest if m else None,
            "startTime": self.started, "requests": self.requests, "errors": self.errors, "rows": self.rows,
            "latency": {"buckets": list(artifacts.LATENCY_BUCKETS), "counts": list(self.latency_counts),
                        "sum": self.latency_sum},
            "features": [{"name": n, **c.snapshot()} for n, c in self.features.items()],
            "prediction": self.prediction.snapshot() if self.prediction else None,
        }

    def prometheus(self) -> bytes:
        name = self.model.name if self.model else ""
        lines = [
            "# HELP mlops_start_time_seconds When this server process started (a restart resets the counters).",
            "# TYPE mlops_start_time_seconds gauge",
            f'mlops_start_time_seconds{{model="{name}"}} {self.started}',
            "# HELP mlops_requests_total Inference requests by status code.",
            "# TYPE mlops_requests_total counter",
            *(f'mlops_requests_total{{model="{name}",code="{code}"}} {n}' for code, n in sorted(self.by_code.items())),
            "# HELP mlops_request_errors_total Inference requests answered with an error.",
            "# TYPE mlops_request_errors_total counter",
            f'mlops_request_errors_total{{model="{name}"}} {self.errors}',
            "# HELP mlops_request_duration_seconds Inference latency.",
            "# TYPE mlops_request_duration_seconds histogram",
        ]
        cumulative = 0
        for bound, n in zip([*map(str, artifacts.LATENCY_BUCKETS), "+Inf"], self.latency_counts, strict=True):
            cumulative += n
            lines.append(f'mlops_request_duration_seconds_bucket{{model="{name}",le="{bound}"}} {cumulative}')
        lines += [f'mlops_request_duration_seconds_sum{{model="{name}"}} {self.latency_sum}',
                  f'mlops_request_duration_seconds_count{{model="{name}"}} {cumulative}',
                  "# HELP mlops_model_info The model being served.", "# TYPE mlops_model_info gauge"]
        if self.model is not None:
            lines.append(f'mlops_model_info{{model="{name}",digest="{self.model.digest}",'
                         f'format="{self.model.metadata.format}"}} 1')
        return ("\n".join(lines) + "\n").encode()
