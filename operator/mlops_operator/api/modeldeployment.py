"""ModelDeployment: an Open Inference Protocol V2 server, rolled out blue-green or canary."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from .artifacts import ModelFormat
from .common import (
    ApiModel,
    Decimal_,
    Digest,
    EnvVar,
    Fraction,
    LocalObjectReference,
    Name,
    ResourceRequirements,
    StatusBase,
    StorageAccess,
)
from .quality import RevisionQuality
from .registry import REGISTRY_URI, MlflowSource, RegistryStatus
from .scheduling import Scheduling, ServingScheduling

ANALYSIS_METRIC = r"^[A-Za-z_][A-Za-z0-9_./-]*$"


class FromTrainingRuns(ApiModel):
    model: Name
    """Follow the newest TrainingRun of this model (same namespace) that passed its gates."""


class ModelSource(ApiModel):
    _exactly_one_of = (("storage_uri", "from_training_runs"),)
    storage_uri: Annotated[str, Field(pattern=r"^(s3|file|https?)://.+|^/.+|" + REGISTRY_URI,
                                      max_length=2048)] | None = None
    """A pinned model directory, or a version in an MLflow model registry: `models:/<name>/<version>` or
    `models:/<name>@<alias>` (with `mlflow`; an alias is resolved again every 5 minutes, and a moved alias
    is rolled out as a new version)."""
    digest: Digest | None = None
    """Expected digest of the pinned model directory (sha256:…); verified before serving. Required for a
    pinned storageUri unless `verify` is false; a registry version brings its own (its `mlops.dev/digest`
    tag, written when a TrainingRun registered it), and without the tag this rule holds."""
    verify: bool = True
    """Verify the pinned model against `digest` before serving it (the default). `false` serves it
    unverified, said so in the `Verified` condition and a Warning Event; refused over plain http:// and
    with `spec.runtime.allowUnsafeFormats`."""
    format: ModelFormat | None = None
    """Model file format (default: read from the model's metadata.json)."""
    from_training_runs: FromTrainingRuns | None = None
    mlflow: MlflowSource | None = None
    """The MLflow tracking server a `models:/` storageUri is resolved in, and the alias a promotion moves
    (also for a TrainingRun stream whose runs register their versions)."""


class ServerAuth(ApiModel):
    secret_ref: LocalObjectReference
    """A Secret in the same namespace whose key `tokens` holds the bearer tokens (one a line) that REST and
    gRPC inference require (`Authorization: Bearer …`); health paths and the monitoring port need none."""


class ServerTLS(ApiModel):
    secret_ref: LocalObjectReference
    """A kubernetes.io/tls Secret in the same namespace (`tls.crt`, `tls.key` as PKCS#8) the inference ports
    serve TLS with; the monitoring port stays plain HTTP on the pod IP."""


class Runtime(ApiModel):
    image: Annotated[str, Field(min_length=1, max_length=512)] | None = None
    """Server image (default: the operator's runtime image)."""
    args: list[str] | None = None
    env: list[EnvVar] | None = None
    resources: ResourceRequirements | None = None
    """The model server container (default: the operator's for that role)."""
    init_resources: ResourceRequirements | None = None
    """The storage-init container that copies and verifies the model (default: the operator's)."""
    allow_unsafe_formats: bool = False
    """Allow joblib/pickle model files (they can run arbitrary code when loaded)."""
    auth: ServerAuth | None = None
    tls: ServerTLS | None = None
    scheduling: ServingScheduling | None = None
    """Where the serving Pods run (part of the revision: a change is rolled out like any other)."""
    onnx_execution_provider: Literal["CPU", "CUDA"] | None = None
    """An ONNX model on a GPU: CUDA (an image with onnxruntime-gpu and `nvidia.com/gpu` in `resources`);
    without the provider the server says so in its log and serves on the CPU. Default CPU."""


class BlueGreen(ApiModel):
    auto_promotion: bool = True
    """Promote as soon as analysis passes; off: wait for `mlops promote`."""
    preview_replicas: Annotated[int, Field(ge=1, le=100)] = 1
    scale_down_delay_seconds: Annotated[int, Field(ge=0, le=86400)] = 300
    """How long the old revision keeps running after promotion (to return to)."""


class CanaryStep(ApiModel):
    weight: Annotated[int, Field(ge=0, le=100)]
    """Percent of traffic on the candidate during this step."""
    pause_seconds: Annotated[int, Field(ge=0, le=86400)] = 60


class Canary(ApiModel):
    steps: Annotated[list[CanaryStep], Field(min_length=1, max_length=20)]
    """Weights must ascend; 100 % is implied after the last step."""


class Agreement(ApiModel):
    """When a shadow candidate agrees with the stable revision on the same requests."""

    min: Fraction = "0.95"
    """Share of the compared rows on which the candidate's `predict` must agree with the stable revision's
    (the same class; for a regressor, within `tolerance`)."""
    tolerance: Decimal_ = "0"
    """A regressor's values agree when they differ by at most this much."""
    max_psi: Decimal_ = "0.1"
    """With the Gateway API, whose RequestMirror filter mirrors instead and discards the candidate's answers (there
    is no row to compare), the most the Population Stability Index between the two revisions' prediction sketches
    over the shadow window may be."""


class Shadow(ApiModel):
    percent: Annotated[int, Field(ge=1, le=100)] = 100
    """Share of the stable revision's inference requests also sent to the candidate, whose answers nobody sees."""
    duration_seconds: Annotated[int, Field(ge=10, le=86400)] = 300
    """How long the candidate is judged on mirrored traffic before it is promoted or rejected."""
    min_requests: Annotated[int, Field(ge=1)] = 100
    """Mirrored requests the candidate must have answered (compared rows, with the server mirroring) for a
    verdict; fewer at the end rejects it (too little evidence never passes)."""
    replicas: Annotated[int, Field(ge=1, le=100)] = 1
    """Pods of the candidate while it is judged (the promotion scales it to spec.replicas first)."""
    agreement: Agreement = Field(default_factory=Agreement)


class Strategy(ApiModel):
    type: Literal["BlueGreen", "Canary", "Shadow"] = "BlueGreen"
    blue_green: BlueGreen | None = None
    canary: Canary | None = None
    shadow: Shadow | None = None
    """Mirror live traffic to the candidate (its answers discarded), then promote it with blue-green's switch
    if it agreed with the stable revision."""


class CompareToStable(ApiModel):
    metric: Annotated[str, Field(pattern=ANALYSIS_METRIC, max_length=128)]
    """Model metric replayed on the validation sample: accuracy or f1 (classification); rmse, mae or
    r2 (regression)."""
    higher_is_better: bool | None = None
    """Default: known per metric (rmse and mae are lower-is-better)."""
    max_degradation: Fraction = "0"
    """How much worse than the stable revision the candidate may be."""


class LiveQualityAnalysis(ApiModel):
    """Judge a canary on labelled live traffic: the candidate against the stable revision over the same window
    (since the candidate started), from the joins of spec.groundTruth."""

    metric: Literal["accuracy", "rmse", "mae"]
    min_labels: Annotated[int, Field(ge=1)] = 100
    """Labelled rows of the candidate needed for a verdict (the stable revision's too); fewer waits."""
    max_degradation: Fraction = "0"
    """How much worse than the stable revision the candidate may be (accuracy lower, rmse or mae higher)."""
    max_wait_seconds: Annotated[int, Field(ge=0, le=86400)] = 600
    """Still too few labels this long after a step's pause ended: the step fails (it never passes by default)."""


class Prometheus(ApiModel):
    address: Annotated[str, Field(pattern=r"^https?://.+", max_length=2048)]


class Analysis(ApiModel):
    interval_seconds: Annotated[int, Field(ge=1, le=3600)] = 10
    duration_seconds: Annotated[int, Field(ge=0, le=86400)] = 60
    failure_limit: Annotated[int, Field(ge=0, le=100)] = 0
    """Failed measurements tolerated before the candidate is rejected."""
    min_requests: Annotated[int, Field(ge=0)] = 0
    success_rate: Fraction | None = None
    """Minimum fraction of successful requests, e.g. "0.99"."""
    max_p99_latency_ms: Annotated[int, Field(ge=1, le=600000)] | None = None
    compare_to_stable: CompareToStable | None = None
    live_quality: LiveQualityAnalysis | None = None
    """A canary's steps judged on live quality too (needs spec.groundTruth)."""
    prometheus: Prometheus | None = None
    """Read live traffic's counters from this Prometheus (which scrapes the pods' /metrics, labelling
    series with namespace and pod) instead of scraping the pods' monitoring endpoints directly."""
    resources: ResourceRequirements | None = None
    """The analysis Job's `analyze` container (default: the operator's for that role)."""
    scheduling: Scheduling | None = None
    """Where the analysis Job's Pod runs (default: `runtime.scheduling` without its spread constraints)."""


class ParentRef(ApiModel):
    name: Name
    namespace: Name | None = None
    section_name: Name | None = None


class Gateway(ApiModel):
    parent_refs: Annotated[list[ParentRef], Field(min_length=1, max_length=16)]


class Traffic(ApiModel):
    gateway: Gateway | None = None
    """Route traffic with a Gateway API HTTPRoute (when the kind exists in the cluster)."""


CAPTURE_URI = r"^(s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?|pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?(/.*)?)$"


class PayloadCapture(ApiModel):
    """Capture of live inference calls (their inputs and the answers), and where feedback labels go."""

    destination: Annotated[str, Field(pattern=CAPTURE_URI, max_length=2048)]
    """`s3://BUCKET/PREFIX` (with spec.storage's credentials) or `pvc://CLAIM/PATH` (a PersistentVolumeClaim of
    this namespace, ReadWriteMany when there is more than one Pod). Laid out as `revisions/`, `predictions/REV/`
    (one record per row served: id, row, time, revision, the features, predict) and `labels/`."""
    sample_rate: Fraction = "1"
    """The share of inference calls captured (labels are always kept)."""
    format: Literal["jsonl", "parquet"] = "jsonl"
    """Predictions as JSON Lines or Parquet (labels are JSON Lines)."""
    max_file_bytes: Annotated[int, Field(ge=1024, le=1024**3)] = 64 * 1024 * 1024
    """A file is closed and published past this size…"""
    max_file_age_seconds: Annotated[int, Field(ge=1, le=3600)] = 60
    """… or this long after it was opened (a label can be joined once the prediction's file is published)."""
    queue: Annotated[int, Field(ge=1, le=1_000_000)] = 10_000
    """Calls waiting to be written, per Pod; more are dropped and counted (`mlops_capture_dropped_total`)."""


class GroundTruth(ApiModel):
    """The truth for captured predictions, joined to them per revision by an owned Job (`mlops quality`)."""

    uri: Annotated[str, Field(pattern=CAPTURE_URI, max_length=2048)] | None = None
    """More labels besides the feedback endpoint's (`POST /v2/models/NAME/feedback`): a file or a prefix of
    files with columns `id`, `label` (`.jsonl`, `.csv`, `.parquet`)."""
    join_every_seconds: Annotated[int, Field(ge=10, le=86400)] = 60
    """How often the labels are joined to the predictions (status.liveQuality)."""
    window_seconds: Annotated[int, Field(ge=10, le=30 * 86400)] = 3600
    """Predictions made this long before each join are counted."""


class ModelDeploymentSpec(ApiModel):
    model: ModelSource
    runtime: Runtime | None = None
    replicas: Annotated[int, Field(ge=0, le=1000, json_schema_extra={"x-mlops-server-default": True})] = 1
    """Pods of the serving revision (an HPA may own this field, through the scale subresource)."""
    strategy: Strategy | None = None
    analysis: Analysis | None = None
    traffic: Traffic | None = None
    storage: StorageAccess | None = None
    revision_history_limit: Annotated[int, Field(ge=0, le=50)] = 2
    capture: PayloadCapture | None = None
    ground_truth: GroundTruth | None = None
    """Join ground-truth labels to captured predictions (needs `capture`): live quality per revision in
    status.liveQuality."""


class RevisionRef(ApiModel):
    revision: str
    model_uri: str | None = None
    digest: str | None = None
    format: str | None = None
    training_run: str | None = None
    registry_version: str | None = None
    """The version in the model registry (models:/<name>/<version>)."""
    run_created: str | None = None
    """creationTimestamp of the source TrainingRun: the deployment only moves to newer ones."""
    since: str | None = None
    rollback: bool | None = None
    """A return to a revision that served before (`mlops rollback`): promoted without analysis."""
    promoting: str | None = None
    """Why the candidate is being promoted, while it scales up to full size before traffic moves."""


class HistoryEntry(RevisionRef):
    outcome: Literal["Promoted", "RolledBack", "Aborted", "Superseded", "RolledBackTo"] | None = None
    message: str | None = None


class MirrorCounters(ApiModel):
    """What a stable pod's server saw of the requests it mirrored to a shadow candidate (cumulative)."""

    sent: int = 0
    dropped: int = 0
    """Not sent: the mirror's queue was full (the user's answer never waits for the candidate)."""
    errors: int = 0
    """Sent, and the candidate failed them (no answer, or an error status)."""
    rows: int = 0
    """Rows of the candidate's answers compared with the stable revision's."""
    agreed: int = 0
    latency: list[int] | None = None
    """The candidate's answers' latency, by bucket (artifacts.LATENCY_BUCKETS)."""


class PodCounters(ApiModel):
    start_time: str | None = None
    requests: int = 0
    errors: int = 0
    latency: list[int] | None = None
    mirror: MirrorCounters | None = None
    revision: str | None = None
    """The pod's revision (when the counters of several revisions are read together)."""
    prediction: list[int] | None = None
    """The pod's prediction sketch: its bins' counts, then missing and other (read for a shadow judged by a
    gateway's mirroring)."""


class TrafficSplit(ApiModel):
    stable: int = 100
    candidate: int = 0
    method: Literal["Service", "HTTPRoute", "ReplicaRatio"] | None = None


class AnalysisResult(ApiModel):
    revision: str
    verdict: Literal["Passed", "Failed", "Running", "Inconclusive"]
    time: str | None = None
    message: str | None = None
    measurements: dict[str, float] | None = None


class RevisionLiveQuality(RevisionQuality):
    """One revision's labelled rows in the joined window (the join's mergeable counters), with its metrics."""

    metrics: dict[str, float] | None = None
    """accuracy (classifiers), rmse and mae (regressors), over the labelled rows."""


class LiveQuality(ApiModel):
    """The last join of ground-truth labels to captured predictions (spec.groundTruth)."""

    time: str | None = None
    """When the joined window ended."""
    window_seconds: int | None = None
    since: str | None = None
    """Where the joined window began: windowSeconds before `time`, or when the canary's candidate started (both
    revisions are then judged on the same window)."""
    labels: int | None = None
    unknown_labels: int | None = None
    """Labels for an id no captured prediction has."""
    duplicate_labels: int | None = None
    outside_window: int | None = None
    revisions: list[RevisionLiveQuality] | None = None
    attempt: str | None = None
    """When the join under way (or the last one) was started: its Job's name is made from it."""
    job: str | None = None
    message: str | None = None
    """Why the last join failed (it is tried again at the next interval)."""


class ModelDeploymentStatus(StatusBase):
    stable: RevisionRef | None = None
    candidate: RevisionRef | None = None
    previous: RevisionRef | None = None
    """The revision replaced by the last promotion (kept up until scaleDownDelaySeconds)."""
    traffic: TrafficSplit | None = None
    traffic_summary: str | None = None
    current_step: int | None = None
    step_since: str | None = None
    analysis_failures: int | None = None
    baseline: dict[str, PodCounters] | None = None
    """Each candidate pod's cumulative counters when the current live-analysis window began."""
    last_analysis: AnalysisResult | None = None
    history: list[HistoryEntry] | None = None
    rejected: list[str] | None = None
    handled_commands: list[str] | None = None
    registry: RegistryStatus | None = None
    """The model registry: the version spec.model.storageUri (models:/…) resolved to, and the promotion's
    alias move."""
    live_quality: LiveQuality | None = None
    url: str | None = None
    replicas: int | None = None
    """Pods of the stable revision (the scale subresource's status, for an HPA)."""
    selector: str | None = None
    """Label selector of the stable revision's pods (the scale subresource's, for an HPA)."""
