"""The model artifact contract shared by the trainer, the storage initializer and the server.

A model directory holds:

    model.<ext>        the model in its format's file (see MODEL_FILES)
    metadata.json      ModelMetadata: format, model file, features, task, library versions,
                       and the sha256 of every other file
    profile.json       Profile: the reference distribution of every feature and of the
                       predictions, as bins and counts (what drift is measured against)
    validation.json    ValidationSample: a bounded labelled held-out sample (what the
                       champion-vs-challenger analysis replays)

The digest of a model directory is `sha256:` + the sha256 of its manifest: one line
`<sha256 of the file>  <path relative to the directory>\n` per regular file, sorted by path.
It covers every file, metadata.json included, so no file can change without changing the
digest. The digest travels TrainingRun status → ModelDeployment status → `--digest` of the
storage initializer and the server, which refuse a mismatch: a digest read from the same
directory it is meant to check proves nothing.

This module never imports kopf or the kubernetes client (the runtime image stays small).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

SCHEMA_VERSION: Literal[1] = 1
METADATA_FILE = "metadata.json"
PROFILE_FILE = "profile.json"
VALIDATION_FILE = "validation.json"
# the model formats (runtime/formats.py has a loader registered for each, checked at import)
ModelFormat = Literal["sklearn", "onnx", "xgboost", "joblib"]
MODEL_FILES: dict[str, str] = {
    "sklearn": "model.skops",
    "onnx": "model.onnx",
    "xgboost": "model.json",
    "joblib": "model.joblib",  # pickle underneath: loaded only when the user opts in
}
UNSAFE_FORMATS = frozenset({"joblib"})
# Kubernetes keeps at most 4096 bytes of a container's termination message
TERMINATION_MESSAGE_LIMIT = 4096
MAX_VALIDATION_ROWS = 2000
# the server's latency histogram (seconds), as the monitoring endpoint reports it
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_CHUNK = 1 << 20


class ArtifactError(ValueError):
    """A model directory or message that breaks the contract."""


class DigestMismatch(ArtifactError):
    def __init__(self, expected: str, actual: str) -> None:
        super().__init__(f"model digest mismatch: expected {expected}, found {actual}")
        self.expected, self.actual = expected, actual


class _Schema(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Feature(_Schema):
    name: str
    type: Literal["numeric", "categorical"]


class ModelMetadata(_Schema):
    schema_version: Literal[1] = Field(SCHEMA_VERSION, alias="schemaVersion")
    format: ModelFormat
    model_file: str = Field(alias="modelFile")
    task: Literal["classification", "regression"]
    features: list[Feature]
    classes: list[str | int] | None = None
    target: str | None = None
    libraries: dict[str, str] = Field(default_factory=dict)
    created_at: str | None = Field(None, alias="createdAt")
    files: dict[str, str] = Field(default_factory=dict)
    """sha256 of every file of the directory except metadata.json itself."""

    @model_validator(mode="after")
    def _model_file_matches_format(self) -> ModelMetadata:
        if self.model_file != MODEL_FILES[self.format]:
            raise ValueError(f"modelFile must be {MODEL_FILES[self.format]} for format {self.format}")
        return self


class Distribution(_Schema):
    """One reference distribution: numeric bins or categories.

    Numeric: `edges` are the inner bin edges (ascending); bin i holds values in
    [edges[i-1], edges[i]); the first bin is open below and the last open above, so
    `counts` has len(edges) + 1 entries. `missing` counts absent/NaN values.
    Categorical: `categories` with `counts` of the same length, plus `other` for values
    not seen in training, plus `missing`.
    """

    name: str
    type: Literal["numeric", "categorical"]
    edges: list[float] | None = None
    categories: list[str] | None = None
    counts: list[Annotated[int, Field(ge=0)]]
    missing: Annotated[int, Field(ge=0)] = 0
    other: Annotated[int, Field(ge=0)] = 0

    @model_validator(mode="after")
    def _consistent(self) -> Distribution:
        if self.type == "numeric":
            if self.edges is None or self.categories is not None:
                raise ValueError(f"{self.name}: a numeric distribution has edges and no categories")
            if any(not math.isfinite(e) for e in self.edges) or any(
                b <= a for a, b in zip(self.edges, self.edges[1:], strict=False)
            ):
                raise ValueError(f"{self.name}: edges must be finite and strictly ascending")
            if len(self.counts) != len(self.edges) + 1:
                raise ValueError(f"{self.name}: counts must have len(edges) + 1 entries")
        else:
            if self.categories is None or self.edges is not None:
                raise ValueError(f"{self.name}: a categorical distribution has categories and no edges")
            if len(self.counts) != len(self.categories):
                raise ValueError(f"{self.name}: counts must have one entry per category")
        return self


class Profile(_Schema):
    schema_version: Literal[1] = Field(SCHEMA_VERSION, alias="schemaVersion")
    rows: Annotated[int, Field(ge=0)]
    features: list[Distribution]
    prediction: Distribution | None = None


class ValidationSample(_Schema):
    schema_version: Literal[1] = Field(SCHEMA_VERSION, alias="schemaVersion")
    features: list[str]
    rows: Annotated[list[list[Any]], Field(max_length=MAX_VALIDATION_ROWS)]
    labels: list[Any]

    @model_validator(mode="after")
    def _shape(self) -> ValidationSample:
        if len(self.rows) != len(self.labels):
            raise ValueError("rows and labels must have the same length")
        if any(len(r) != len(self.features) for r in self.rows):
            raise ValueError("every row must have one value per feature")
        return self


class ModelResult(_Schema):
    uri: str
    digest: Annotated[str, Field(pattern=r"^sha256:[a-f0-9]{64}$")]
    format: ModelFormat
    profile_uri: str | None = Field(None, alias="profileUri")


class DataRecord(_Schema):
    """The data a version was trained on: its content digest (sha256 of the bytes read) and its rows."""

    uri: str
    digest: Annotated[str, Field(pattern=r"^sha256:[a-f0-9]{64}$")]
    rows: Annotated[int, Field(ge=0)]
    captured_files: list[str] | None = Field(None, alias="capturedFiles", max_length=8)
    """A training set assembled from captured calls: the newest of the capture files it read (at most 8)."""
    captured_file_count: int | None = Field(None, alias="capturedFileCount")
    captured_rows: int | None = Field(None, alias="capturedRows")
    """… the labelled captured rows in it, and the rows of the base dataset (`plus`)."""
    base_rows: int | None = Field(None, alias="baseRows")


class DataCheckReport(_Schema):
    """What a trainer's data checks found (spec.dataChecks): in its result, or alone as the termination message of
    a run they stopped (`{"dataChecks": …}`)."""

    passed: bool
    rows: Annotated[int, Field(ge=0)]
    failures: list[str] = Field(default_factory=list)
    """Each failed check: the column, what was found, what was allowed."""
    skipped: list[str] = Field(default_factory=list)
    """Checks that could not be made (no previous version to compare with)."""


def parse_data_check_failure(text: str) -> DataCheckReport | None:
    """The report in a failed trainer's termination message, when data checks stopped it (None otherwise)."""
    try:
        data = json.loads(text)
        return DataCheckReport.model_validate(data["dataChecks"]) if isinstance(data, dict) else None
    except (ValueError, KeyError):
        return None


class TrainingResult(_Schema):
    """What a trainer writes to /dev/termination-log (JSON, under 4 KiB)."""

    schema_version: Literal[1] = Field(SCHEMA_VERSION, alias="schemaVersion")
    metrics: dict[str, float]
    model: ModelResult
    data: DataRecord | None = None
    """The dataset it trained on (the built-in trainer reports it; `sdk.report(data=…)` for others)."""
    data_checks: DataCheckReport | None = Field(None, alias="dataChecks")

    def to_message(self) -> str:
        text = self.model_dump_json(by_alias=True, exclude_none=True)
        if len(text.encode()) > TERMINATION_MESSAGE_LIMIT:
            raise ArtifactError(
                f"termination message is {len(text.encode())} bytes, over the "
                f"{TERMINATION_MESSAGE_LIMIT}-byte limit: report fewer metrics"
            )
        return text


def parse_termination_message(text: str) -> TrainingResult:
    """Parse a trainer's termination message, with a clear error for each way it can be wrong."""
    if len(text.encode()) > TERMINATION_MESSAGE_LIMIT:
        raise ArtifactError(f"termination message is over {TERMINATION_MESSAGE_LIMIT} bytes")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"termination message is not JSON: {exc.msg} at position {exc.pos}") from None
    try:
        return TrainingResult.model_validate(data)
    except ValueError as exc:
        raise ArtifactError(f"termination message does not follow the contract: {exc}") from None


def join(uri: str, *parts: str) -> str:
    """A location under a storage URI (`s3://bucket/root`, `file:///models`): one slash between parts."""
    return "/".join([uri.rstrip("/"), *(p.strip("/") for p in parts)])


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def manifest(directory: Path) -> list[tuple[str, str]]:
    """(relative path, sha256) of every regular file, sorted by path. Symlinks are refused."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ArtifactError(f"{directory} is not a directory")
    entries = []
    for path in directory.rglob("*"):
        if path.is_symlink():
            raise ArtifactError(f"{path.relative_to(directory)} is a symlink: model directories hold regular files")
        if path.is_file():
            entries.append((path.relative_to(directory).as_posix(), file_sha256(path)))
    return sorted(entries)


def digest_of_manifest(entries: list[tuple[str, str]]) -> str:
    text = "".join(f"{sha}  {rel}\n" for rel, sha in sorted(entries))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def digest(directory: Path) -> str:
    return digest_of_manifest(manifest(directory))


def verify(directory: Path, expected: str) -> str:
    """Check the directory against a digest given by the caller; return it, or raise DigestMismatch."""
    actual = digest(directory)
    if actual != expected:
        raise DigestMismatch(expected, actual)
    return actual


def write_json(path: Path, model: BaseModel) -> None:
    path.write_text(model.model_dump_json(by_alias=True, exclude_none=True, indent=1) + "\n")


def finalize(directory: Path, metadata: ModelMetadata) -> str:
    """Write metadata.json with the sha256 of every other file, and return the directory's digest."""
    directory = Path(directory)
    if not (directory / metadata.model_file).is_file():
        raise ArtifactError(f"{metadata.model_file} is missing from {directory}")
    files = {rel: sha for rel, sha in manifest(directory) if rel != METADATA_FILE}
    write_json(directory / METADATA_FILE, metadata.model_copy(update={"files": files}))
    return digest(directory)


S = TypeVar("S", bound=BaseModel)


def _read(directory: Path, name: str, schema: type[S]) -> S:
    path = Path(directory) / name
    try:
        return schema.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        raise ArtifactError(f"{name} is missing from {directory}") from None
    except ValueError as exc:
        raise ArtifactError(f"{path}: {exc}") from None


def read_metadata(directory: Path) -> ModelMetadata:
    return _read(directory, METADATA_FILE, ModelMetadata)


def read_profile(directory: Path) -> Profile:
    return _read(directory, PROFILE_FILE, Profile)


def read_validation(directory: Path) -> ValidationSample:
    return _read(directory, VALIDATION_FILE, ValidationSample)

ONNX_PROVIDER_ENV = "MLOPS_ONNX_EXECUTION_PROVIDER"
"""CPU (default) or CUDA: the execution provider an ONNX model is served with (spec.runtime.onnxExecutionProvider)."""
