"""The model behind the server: loading (digest verified), Open Inference Protocol V2 requests decoded
into model inputs, the model's outputs encoded back, and the monitoring counters. No transport here:
rest.py (HTTP) and grpc.py (gRPC) both call `Served.infer`, so both validate, predict and count alike.

Requests carry either one tensor of shape [N, F] (F = the model's features, in order), or one tensor
per feature named as in the model's metadata, of shape [N] or [N, 1] (BYTES for categorical
features). `null` (or NaN) is a missing value. Outputs: `predict` (class labels or values) and, for
classifiers that give them, `probabilities` [N, classes] in the order of the metadata's `classes`;
a request's `outputs` selects among them. Every client mistake raises `BadRequest` (a 4xx) with a
message that says what is wrong; such a request is never counted as served.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

from ..api import artifacts
from . import formats, tensors
from .capture import Capture, new_id
from .mirror import Mirror, per_bucket
from .profile import Counts

# models fitted on DataFrames get arrays here when every feature is numeric: same columns, same order
warnings.filterwarnings("ignore", message="X does not have valid feature names")
disable_created_metrics()  # type: ignore[no-untyped-call]  # no `_created` series: Prometheus has the start time from mlops_start_time_seconds

MAX_ROWS = 100_000
PREDICT, PROBABILITIES = "predict", "probabilities"


class BadRequest(ValueError):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Output:
    name: str
    datatype: str
    shape: list[int]


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
    outputs: dict[str, Output] = field(default_factory=dict)

    def __post_init__(self) -> None:
        meta = self.metadata
        classes = meta.classes or []
        if meta.task == "classification":
            label = "BYTES" if classes and isinstance(classes[0], str) else "INT64"
        else:
            label = "FP64"
        self.outputs = {PREDICT: Output(PREDICT, label, [-1])}
        if meta.task == "classification" and hasattr(self.model, "predict_proba"):
            self.outputs[PROBABILITIES] = Output(PROBABILITIES, "FP64", [-1, len(classes) or -1])

    @classmethod
    def load(cls, name: str, directory: Path, digest: str | None, allow_unsafe: bool = False) -> LoadedModel:
        directory = Path(directory)
        actual = artifacts.verify(directory, digest) if digest else artifacts.digest(directory)
        meta = artifacts.read_metadata(directory)
        model = formats.load(directory, meta.format, allow_unsafe, task=meta.task, classes=meta.classes)
        profile = profile_digest = None
        if (directory / artifacts.PROFILE_FILE).is_file():
            profile = artifacts.read_profile(directory)
            profile_digest = "sha256:" + hashlib.sha256((directory / artifacts.PROFILE_FILE).read_bytes()).hexdigest()
        return cls(name=name, directory=directory, metadata=meta, model=model, digest=actual, profile=profile,
                   profile_digest=profile_digest, features=[f.name for f in meta.features],
                   categorical=frozenset(f.name for f in meta.features if f.type == "categorical"))

    @property
    def version(self) -> str:
        return self.digest

    def metadata_response(self) -> dict[str, Any]:
        return {
            "name": self.name, "versions": [self.version], "platform": f"mlops-{self.metadata.format}",
            "inputs": [{"name": f, "datatype": "BYTES" if f in self.categorical else "FP64", "shape": [-1]}
                       for f in self.features],
            "outputs": [{"name": o.name, "datatype": o.datatype, "shape": o.shape} for o in self.outputs.values()],
            "parameters": {"digest": self.digest, "task": self.metadata.task, "format": self.metadata.format,
                           **({"classes": list(self.metadata.classes)} if self.metadata.classes else {})},
        }


@dataclass
class Tensor:
    name: str
    datatype: str
    array: np.ndarray


@dataclass
class Request:
    """A V2 inference request, whatever it came in (JSON, binary extension, gRPC)."""

    id: str | None
    inputs: list[Tensor]
    outputs: dict[str, bool] | None = None  # requested output → binary; None: every output
    binary_outputs: bool = False  # the request's `binary_data_output` parameter (every output binary)


@dataclass
class Decoded:
    rows: int
    columns: dict[str, Any]  # feature → 1-D float array, or list of str/None for a categorical feature
    matrix: np.ndarray | None  # [N, F] float when every feature is numeric


def _check_header(spec: Any, i: int) -> tuple[str, list[int], str]:
    where = f"inputs[{i}]"
    if not isinstance(spec, dict):
        raise BadRequest(f"{where} must be an object with name, shape, datatype and data")
    for key in ("name", "shape", "datatype"):
        if key not in spec:
            raise BadRequest(f"{where}.{key} is missing")
    name, datatype = spec["name"], spec["datatype"]
    if not isinstance(name, str):
        raise BadRequest(f"{where}.name must be a string")
    shape = tensors.check_shape(spec["shape"], where)
    if not isinstance(datatype, str) or datatype not in tensors.DATATYPES:
        raise BadRequest(f"{where}.datatype {datatype!r} is not a V2 datatype "
                         f"({', '.join(sorted(tensors.DATATYPES))})")
    if shape and shape[0] > MAX_ROWS:
        raise BadRequest(f"{where}: {shape[0]} rows in one request; at most {MAX_ROWS}", 413)
    params = spec.get("parameters")
    if params is not None and not isinstance(params, dict):
        raise BadRequest(f"{where}.parameters must be an object")
    return name, shape, datatype


def _binary_size(spec: dict[str, Any], i: int) -> int | None:
    size = (spec.get("parameters") or {}).get("binary_data_size")
    if size is None:
        return None
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise BadRequest(f"inputs[{i}].parameters.binary_data_size must be a non-negative integer")
    if "data" in spec:
        raise BadRequest(f"inputs[{i}] has both data and parameters.binary_data_size")
    return size


def _requested_outputs(request: dict[str, Any]) -> dict[str, bool] | None:
    outputs = request.get("outputs")
    if outputs is None:
        return None
    if not isinstance(outputs, list):
        raise BadRequest("outputs must be a list of {name, parameters}")
    wanted: dict[str, bool] = {}
    for i, o in enumerate(outputs):
        if not isinstance(o, dict) or not isinstance(o.get("name"), str):
            raise BadRequest(f"outputs[{i}] must be an object with a name")
        params = o.get("parameters") or {}
        if not isinstance(params, dict):
            raise BadRequest(f"outputs[{i}].parameters must be an object")
        binary = params.get("binary_data", False)
        if not isinstance(binary, bool):
            raise BadRequest(f"outputs[{i}].parameters.binary_data must be true or false")
        wanted[o["name"]] = binary
    return wanted


def parse_json(body: bytes | memoryview, header_length: int | None = None) -> Request:
    """A REST request: JSON, or with `Inference-Header-Content-Length` a JSON head followed by the
    binary data of the inputs that give `parameters.binary_data_size`, in their order."""
    view = memoryview(body)
    if header_length is not None:
        if header_length < 0 or header_length > len(view):
            raise BadRequest(f"Inference-Header-Content-Length {header_length} is outside the body "
                             f"({len(view)} bytes)")
        head, binary = view[:header_length], view[header_length:]
    else:
        head, binary = view, memoryview(b"")
    try:
        request = orjson.loads(head)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None
    if not isinstance(request, dict):
        raise BadRequest("the body must be a JSON object with an inputs list")
    rid = request.get("id")
    if rid is not None and not isinstance(rid, str):
        raise BadRequest(f"id must be a string, not {type(rid).__name__}")
    params = request.get("parameters")
    if params is not None and not isinstance(params, dict):
        raise BadRequest("parameters must be an object")
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise BadRequest("inputs must be a non-empty list of tensors")
    decoded, offset = [], 0
    try:
        for i, spec in enumerate(inputs):
            name, shape, datatype = _check_header(spec, i)
            size = _binary_size(spec, i)
            if size is not None:
                if offset + size > len(binary):
                    raise BadRequest(f"inputs[{i}].parameters.binary_data_size {size} runs past the binary data "
                                     f"({len(binary) - offset} bytes left)")
                array = tensors.from_binary(binary[offset:offset + size], shape, datatype, f"inputs[{i}]")
                offset += size
            elif "data" not in spec:
                raise BadRequest(f"inputs[{i}].data is missing")
            else:
                array = tensors.from_json(spec["data"], shape, datatype, f"inputs[{i}]")
            decoded.append(Tensor(name, datatype, array))
    except tensors.BadTensor as exc:
        raise BadRequest(str(exc)) from None
    if offset != len(binary):
        raise BadRequest(f"{len(binary) - offset} bytes of binary data follow the inputs that claim them")
    binary_outputs = (params or {}).get("binary_data_output", False)
    if not isinstance(binary_outputs, bool):
        raise BadRequest("parameters.binary_data_output must be true or false")
    return Request(rid, decoded, _requested_outputs(request), binary_outputs)


def _strings(values: np.ndarray) -> list[str | None]:
    return [None if v is None else v.decode(errors="replace") if isinstance(v, bytes) else str(v)
            for v in values.tolist()]


def _floats(t: Tensor, where: str) -> np.ndarray:
    if t.datatype == "BYTES":
        raise BadRequest(f"{where}: BYTES for a numeric feature (use a numeric datatype)")
    return t.array.astype(np.float64, copy=False)


def prepare(model: LoadedModel, request: Request) -> Decoded:
    """The model's columns from the request's tensors."""
    n_features = len(model.features)
    tensors_ = request.inputs
    if len(tensors_) == 1 and tensors_[0].array.ndim == 2 and tensors_[0].name not in model.features:
        t = tensors_[0]
        rows, width = t.array.shape
        if width != n_features:
            raise BadRequest(f"inputs[0] has {width} features per row; the model takes {n_features} "
                             f"({', '.join(model.features)})")
        if t.datatype == "BYTES" and not model.categorical:
            raise BadRequest("inputs[0].datatype BYTES: the model's features are all numeric (use FP64)")
        if t.datatype != "BYTES" and not model.categorical:
            matrix = t.array.astype(np.float64, copy=False)
            return Decoded(rows, {f: matrix[:, j] for j, f in enumerate(model.features)}, matrix)
        if t.datatype != "BYTES":
            raise BadRequest(f"inputs[0]: the model has categorical features ({', '.join(sorted(model.categorical))}); "
                             "send a BYTES [N, F] tensor or one tensor per feature")
        columns: dict[str, Any] = {}
        for j, f in enumerate(model.features):
            values = _strings(t.array[:, j])
            if f in model.categorical:
                columns[f] = values
            else:
                try:
                    columns[f] = np.asarray([np.nan if v in (None, "") else float(v) for v in values])
                except ValueError:
                    bad = next(v for v in values if v is not None and not _is_float(v))
                    raise BadRequest(f"feature {f!r}: {bad!r} is not a number") from None
        return Decoded(rows, columns, None)
    columns = {}
    rows = -1
    for i, t in enumerate(tensors_):
        if t.name not in model.features:
            raise BadRequest(f"inputs[{i}].name {t.name!r} is not a feature of the model "
                             f"({', '.join(model.features)})")
        if t.name in columns:
            raise BadRequest(f"inputs[{i}]: feature {t.name!r} is given twice")
        shape = t.array.shape
        if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
            raise BadRequest(f"inputs[{i}].shape must be [N] or [N, 1] for a per-feature tensor")
        if rows not in (-1, shape[0]):
            raise BadRequest(f"inputs[{i}] has {shape[0]} rows, the others {rows}")
        rows = shape[0]
        flat = t.array.reshape(-1)
        if t.name in model.categorical:
            if t.datatype != "BYTES":
                raise BadRequest(f"inputs[{i}]: feature {t.name!r} is categorical: use datatype BYTES")
            columns[t.name] = _strings(flat)
        else:
            columns[t.name] = _floats(Tensor(t.name, t.datatype, flat), f"inputs[{i}]: feature {t.name!r}")
    missing = [f for f in model.features if f not in columns]
    if missing:
        raise BadRequest(f"features missing from the request: {', '.join(missing)} "
                         f"(the model takes {n_features}: {', '.join(model.features)})")
    if model.categorical:
        return Decoded(rows, columns, None)
    return Decoded(rows, columns, np.column_stack([columns[f] for f in model.features]))


def _is_float(v: str) -> bool:
    try:
        float(v)
    except ValueError:
        return False
    return True


def _model_input(model: LoadedModel, decoded: Decoded) -> Any:
    if decoded.matrix is not None:
        return decoded.matrix
    import pandas as pd

    return pd.DataFrame({f: decoded.columns[f] for f in model.features})


def run(model: LoadedModel, decoded: Decoded, wanted: list[str]) -> dict[str, np.ndarray]:
    """The requested outputs, each cast to the datatype the metadata advertises."""
    if decoded.rows == 0:
        return {name: np.zeros((0, *([len(model.metadata.classes or [])] if name == PROBABILITIES else [])),
                               dtype=object if model.outputs[name].datatype == "BYTES" else np.float64)
                for name in wanted}
    X = _model_input(model, decoded)
    out: dict[str, np.ndarray] = {}
    try:
        if PREDICT in wanted:
            out[PREDICT] = np.asarray(model.model.predict(X))
        if PROBABILITIES in wanted:
            out[PROBABILITIES] = np.asarray(model.model.predict_proba(X), dtype=np.float64)
    except ValueError as exc:
        # what the model refuses (NaN or infinity it cannot take, values it cannot encode): the caller's
        raise BadRequest(f"the model cannot take these inputs: {exc}") from None
    if PREDICT in out:
        datatype = model.outputs[PREDICT].datatype
        p = out[PREDICT]
        if datatype == "BYTES":
            out[PREDICT] = np.asarray([str(v) for v in p.tolist()], dtype=object)
        elif datatype == "INT64":
            out[PREDICT] = p.astype(np.int64)
        else:
            out[PREDICT] = p.astype(np.float64)
    return out


def wanted_outputs(model: LoadedModel, request: Request) -> list[str]:
    if request.outputs is None:
        return list(model.outputs)
    unknown = [n for n in request.outputs if n not in model.outputs]
    if unknown:
        raise BadRequest(f"outputs: {', '.join(repr(n) for n in unknown)} is not an output of the model "
                         f"({', '.join(model.outputs)})")
    return list(request.outputs)


def encode_json(model: LoadedModel, request: Request, outputs: dict[str, np.ndarray]) -> tuple[bytes, int | None]:
    """The REST response body, and the JSON head's length when some output is sent binary (the
    binary tensor extension), else None."""
    items, binary = [], []
    for name, array in outputs.items():
        datatype = model.outputs[name].datatype
        item: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        as_binary = request.binary_outputs if request.outputs is None else request.outputs[name]
        if as_binary:
            raw = tensors.to_binary(array, datatype)
            item["parameters"] = {"binary_data_size": len(raw)}
            binary.append(raw)
        else:
            item["data"] = tensors.to_json(array, datatype)
        items.append(item)
    response: dict[str, Any] = {"model_name": model.name, "model_version": model.version, "outputs": items}
    if request.id is not None:
        response["id"] = request.id
    head = orjson.dumps(response)
    if not binary:
        return head, None
    return head + b"".join(binary), len(head)


class Monitor:
    """Cumulative counters since the process started, in a prometheus-client registry of its own:
    this model's inference calls by status code, server errors (5xx) and client errors (4xx) apart,
    latency of the calls that were not a client's mistake, and the drift sketches.

    No window state: a scraper diffs two snapshots for any window; counters of several Pods add up.
    Memory is O(features x bins), whatever the traffic. Only calls to this model's own inference
    endpoints are counted (another model's 404 is nobody's); replayed validation rows (the monitoring
    port) are timed like any call but never counted into the drift sketches.
    """

    def __init__(self, model: LoadedModel | None, enabled: bool = True) -> None:
        self.model, self.enabled = model, enabled
        self.started = time.time()
        self.rows = 0
        self.registry = CollectorRegistry(auto_describe=True)
        name = model.name if model else ""
        reg = self.registry
        Gauge("mlops_start_time_seconds", "When this server process started (a restart resets the counters).",
              ["model"], registry=reg).labels(name).set(self.started)
        self._by_code = Counter("mlops_requests", "Inference calls of this model by status code.", ["model", "code"],
                                registry=reg)
        self._errors = Counter("mlops_request_errors", "Inference calls answered with a server error (5xx).",
                               ["model"], registry=reg).labels(name)
        self._client_errors = Counter("mlops_request_client_errors",
                                      "Inference calls refused as the client's mistake (4xx).", ["model"],
                                      registry=reg).labels(name)
        self._latency_metric = Histogram("mlops_request_duration_seconds",
                                         "Latency of inference calls that were not a client error.", ["model"],
                                         buckets=artifacts.LATENCY_BUCKETS, registry=reg)
        self._latency = self._latency_metric.labels(name)
        self._model_calls = Counter("mlops_model_calls", "Calls of the model's predict: fewer than inference calls "
                                    "when calls were batched.", ["model"], registry=reg).labels(name)
        info = Gauge("mlops_model_info", "The model being served.", ["model", "digest", "format"], registry=reg)
        if model is not None:
            info.labels(name, model.digest, model.metadata.format).set(1)
        self._codes: dict[int, Any] = {}
        self._name = name
        profile = model.profile if model else None
        self.features: dict[str, Counts] = {}
        self.prediction: Counts | None = None
        if profile is not None:
            self.features = {d.name: Counts(d) for d in profile.features}
            self.prediction = Counts(profile.prediction) if profile.prediction else None

    def observe(self, seconds: float, code: int) -> None:
        """One inference call of this model answered with `code` after `seconds`."""
        child = self._codes.get(code)
        if child is None:
            child = self._codes[code] = self._by_code.labels(self._name, str(code))
        child.inc()
        if 400 <= code < 500:
            self._client_errors.inc()
            return
        if code >= 500:
            self._errors.inc()
        self._latency.observe(seconds)

    def model_call(self) -> None:
        """One call of the model's predict (for one inference call or a batch of them)."""
        self._model_calls.inc()

    def count(self, decoded: Decoded, predictions: np.ndarray | None) -> None:
        """Live rows into the drift sketches (after the answer is computed: a refused request never counts)."""
        if not self.enabled or not self.features:
            return
        self.rows += decoded.rows
        for name, counts in self.features.items():
            counts.add(decoded.columns[name])
        if self.prediction is not None and predictions is not None:
            self.prediction.add(predictions)  # categorical values are compared as str(value)

    def snapshot(self) -> dict[str, Any]:
        """The counters read back from the registry (one source for /metrics and /monitoring)."""
        m = self.model
        by_code = {int(x.labels["code"]): int(x.value) for f in self._by_code.collect() for x in f.samples
                   if x.name == "mlops_requests_total"}
        counts, latency_sum = per_bucket(self._latency_metric)
        return {
            "model": m.name if m else None, "digest": m.digest if m else None,
            "profileDigest": m.profile_digest if m else None,
            "startTime": self.started, "requests": sum(n for c, n in by_code.items() if not 400 <= c < 500),
            "errors": sum(n for c, n in by_code.items() if c >= 500),
            "clientErrors": sum(n for c, n in by_code.items() if 400 <= c < 500), "rows": self.rows,
            "latency": {"buckets": list(artifacts.LATENCY_BUCKETS),
                        "counts": counts or [0] * (len(artifacts.LATENCY_BUCKETS) + 1), "sum": latency_sum},
            "features": [{"name": n, **c.snapshot()} for n, c in self.features.items()],
            "prediction": self.prediction.snapshot() if self.prediction else None,
        }


@dataclass
class _Waiting:
    """An inference call waiting for the next batch: its validated rows and where its answer goes."""

    decoded: Decoded
    outputs: list[str]
    replay: bool
    answer: asyncio.Future[dict[str, np.ndarray]]


@dataclass
class Served:
    """What both transports serve: the model (or why there is none) and its monitor.

    `infer_batched` is what the transports call: opportunistic batching, as Triton's dynamic batcher
    with no queue delay. Calls whose rows are validated in the same turn of the event loop are
    predicted in one model call at the next turn, then split back, each counted as its own call;
    nothing waits for a batch to fill, so a lone call is answered as soon as it would be alone. It pays
    because a scikit-learn model's per-call input checks cost far more than a row: the iris SVC's
    `predict` takes about 300 us for one row, of which its libsvm kernel is 8 us; with 8 connections
    the REST server went from 1384-1454 to 2391-2837 req/s (bench/serve_bench.py's iris row, measured
    side by side with --max-batch-rows 0). grpcio's asyncio server hands its calls to the loop one at a
    time, so the gRPC servicer asks a batch to wait (`gather`, 6 ms, `--grpc-batch-window-ms`) while calls
    arrive back to back: under h2load's 64 streams 3 ms made 880-990 calls/s into 1330-1510 (batches of
    6-8) and 6 ms 14 % more again, while a paced client at 300 calls/s never waits. A batch the model
    refuses (one call's NaN for a model that takes none) is predicted again call by call, so only that
    call gets the 400. A regressor's values
    are the model's own up to the last bits BLAS may round differently for a batch of rows.
    `max_batch_rows` 0 or 1 turns batching off.
    """

    name: str
    model: LoadedModel | None
    problem: str | None
    monitor: Monitor
    max_batch_rows: int = 64
    capture: Capture | None = None
    mirror: Mirror | None = None
    _waiting: list[_Waiting] = field(default_factory=list)
    _last_arrival: float = float("-inf")
    _gap: float = 1.0  # seconds between batchable arrivals, a moving average

    def not_ready(self) -> BadRequest:
        return BadRequest(f"model {self.name} is not ready: {self.problem}", 503)

    def _accept(self, request: Request) -> tuple[LoadedModel, list[str], list[str], Decoded]:
        model = self.model
        if model is None:
            raise self.not_ready()
        wanted = wanted_outputs(model, request)
        decoded = prepare(model, request)
        needs_predict = self.monitor.prediction is not None or self.capture is not None or \
            (self.mirror is not None and self.mirror.active())
        counted = wanted if PREDICT in wanted or not needs_predict else [*wanted, PREDICT]
        return model, wanted, counted, decoded

    def snapshot(self) -> dict[str, Any]:
        """The monitoring endpoint's counters: the monitor's, and the mirror's when there is one."""
        snap = self.monitor.snapshot()
        if self.mirror is not None:
            snap["mirror"] = self.mirror.snapshot()
        return snap

    def _after(self, request: Request, decoded: Decoded, outputs: dict[str, np.ndarray], replay: bool) -> None:
        """A live call, answered: mirrored to a shadow candidate (when on); into the capture (when on), its id
        assigned if the client gave none (the answer carries it), its rows queued if sampled."""
        if replay:
            return
        if self.mirror is not None:
            self.mirror.offer(request.inputs, outputs.get(PREDICT))
        if self.capture is None:
            return
        if request.id is None:
            request.id = new_id()
        if self.capture.sampled():
            self.capture.offer(request.id, decoded.columns, outputs[PREDICT], decoded.rows)

    def _answer(self, model: LoadedModel, decoded: Decoded, counted: list[str], replay: bool) -> dict[str, np.ndarray]:
        outputs = run(model, decoded, counted)
        self.monitor.model_call()
        if not replay:
            self.monitor.count(decoded, outputs.get(PREDICT))
        return outputs

    def infer(self, request: Request, replay: bool = False) -> tuple[LoadedModel, dict[str, np.ndarray]]:
        """Validate, predict, count into the sketches (unless replayed). Raises BadRequest."""
        model, wanted, counted, decoded = self._accept(request)
        outputs = self._answer(model, decoded, counted, replay)
        self._after(request, decoded, outputs, replay)
        return model, {k: outputs[k] for k in wanted}

    async def infer_batched(self, request: Request, replay: bool = False,
                            gather: float = 0.0) -> tuple[LoadedModel, dict[str, np.ndarray]]:
        """`infer`, predicted together with the calls that are waiting at the same moment. With
        `gather` (seconds), for a transport that hands its calls over one at a time: a batch waits that
        long for more only while calls arrive so fast that at least three more are due within it (the
        mean gap between arrivals, a moving average, under a third of `gather`); otherwise it never
        waits (a client calling 300 times a second, 3.3 ms apart, never does)."""
        model, wanted, counted, decoded = self._accept(request)
        if decoded.matrix is None or not 0 < decoded.rows < self.max_batch_rows:
            outputs = self._answer(model, decoded, counted, replay)
        else:
            loop = asyncio.get_running_loop()
            waiting = _Waiting(decoded, counted, replay, loop.create_future())
            self._waiting.append(waiting)
            now = loop.time()
            self._gap = 0.8 * self._gap + 0.2 * min(1.0, now - self._last_arrival)
            self._last_arrival = now
            if len(self._waiting) == 1:
                if gather > 0 and 3 * self._gap < gather:
                    loop.call_later(gather, self._predict_waiting, model)
                else:
                    loop.call_soon(self._predict_waiting, model)
            outputs = await waiting.answer
        self._after(request, decoded, outputs, replay)
        return model, {k: outputs[k] for k in wanted}

    def _predict_waiting(self, model: LoadedModel) -> None:
        waiting, self._waiting = self._waiting, []
        try:
            batch: list[_Waiting] = []
            rows = 0
            for w in waiting:
                if batch and rows + w.decoded.rows > self.max_batch_rows:
                    self._predict_batch(model, batch)
                    batch, rows = [], 0
                batch.append(w)
                rows += w.decoded.rows
            if batch:
                self._predict_batch(model, batch)
        except Exception as exc:  # a bug: no call may wait forever; the transports answer 500
            for w in waiting:
                if not w.answer.done():
                    w.answer.set_exception(exc)

    def _predict_batch(self, model: LoadedModel, batch: list[_Waiting]) -> None:
        if len(batch) > 1:
            matrix = np.concatenate([w.decoded.matrix for w in batch if w.decoded.matrix is not None])
            counted = [name for name in model.outputs if any(name in w.outputs for w in batch)]
            try:
                outputs = run(model, Decoded(len(matrix), {}, matrix), counted)
            except Exception:  # some call's rows are refused (or worse): each its own answer
                pass
            else:
                self._deliver(model, batch, matrix, outputs)
                return
        for w in batch:
            if w.answer.done():  # cancelled: its client went away
                continue
            try:
                w.answer.set_result(self._answer(model, w.decoded, w.outputs, w.replay))
            except Exception as exc:  # BadRequest, or a bug the transport answers with 500
                w.answer.set_exception(exc)

    def _deliver(self, model: LoadedModel, batch: list[_Waiting], matrix: np.ndarray,
                 outputs: dict[str, np.ndarray]) -> None:
        """Each call's rows of a batch's outputs; the live calls' rows into the sketches."""
        bounds = np.cumsum([w.decoded.rows for w in batch])[:-1]
        parts = {name: np.split(array, bounds) for name, array in outputs.items()}
        self.monitor.model_call()
        live = [i for i, w in enumerate(batch) if not w.replay]
        if live and self.monitor.features:
            if len(live) < len(batch):
                matrix = np.concatenate([m for i in live if (m := batch[i].decoded.matrix) is not None])
            predictions = outputs.get(PREDICT)
            if predictions is not None and len(live) < len(batch):
                predictions = np.concatenate([parts[PREDICT][i] for i in live])
            self.monitor.count(Decoded(len(matrix), {f: matrix[:, j] for j, f in enumerate(model.features)}, matrix),
                               predictions)
        for i, w in enumerate(batch):
            if not w.answer.done():  # a call whose client went away is cancelled
                w.answer.set_result({name: parts[name][i] for name in w.outputs})
