"""TrainingRun: one reproducible training of one model version, on a Kubernetes Job."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, JsonValue

from .artifacts import DataCheckReport
from .common import (
    DIGEST,
    ApiModel,
    EnvVar,
    Fraction,
    KeySelector,
    LocalObjectReference,
    Name,
    Params,
    ResourceRequirements,
    StatusBase,
    StorageAccess,
)
from .registry import Register, RegisteredVersion, Registration
from .scheduling import Scheduling

GateOperator = Literal[">", ">=", "<", "<=", "==", "!="]
ESTIMATOR = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$"
# metric names: what trainers report (accuracy, f1, roc_auc, rmse, r2, val/loss, …)
METRIC = r"^[A-Za-z_][A-Za-z0-9_./-]*$"
# inline pipelines live in the object; kopf and kubectl keep copies in annotations (256 KiB in all)
MAX_INLINE_PIPELINE = 64 * 1024


class VolumeSource(ApiModel):
    """The volume types a trainer may mount: no hostPath, nothing that reaches the node."""

    _exactly_one_of = (("empty_dir", "config_map", "secret", "persistent_volume_claim"),)
    empty_dir: dict[str, str] | None = None
    config_map: LocalObjectReference | None = None
    secret: LocalObjectReference | None = None
    persistent_volume_claim: LocalObjectReference | None = None


class Volume(VolumeSource):
    name: Name
    mount_path: Annotated[str, Field(pattern=r"^/.*", max_length=1024)]
    read_only: bool = False


class Trainer(ApiModel):
    """The training container. Without `command`, the runtime's built-in `mlops train` runs."""

    image: Annotated[str, Field(min_length=1, max_length=512)] | None = None
    """Container image (default: the operator's runtime image)."""
    command: list[str] | None = None
    args: list[str] | None = None
    estimator: Annotated[str, Field(pattern=ESTIMATOR, max_length=256)] | None = None
    """Dotted path of a scikit-learn estimator for the built-in trainer."""
    env: list[EnvVar] | None = None
    resources: ResourceRequirements | None = None
    volumes: list[Volume] | None = None


class Pipeline(ApiModel):
    """A Kubeflow Pipelines compiled pipeline (IR YAML), run inside the Job by kfp.local."""

    _exactly_one_of = (("config_map_key_ref", "inline"),)
    config_map_key_ref: KeySelector | None = None
    """ConfigMap key holding the compiled IR YAML (use this for anything large)."""
    inline: Annotated[str, Field(min_length=1, max_length=MAX_INLINE_PIPELINE)] | None = None
    """The compiled IR YAML itself (at most 64 KiB)."""
    arguments: Params | None = None
    """Pipeline parameters."""


class FromCapture(ApiModel):
    """A training set from production: a ModelDeployment's captured calls that received a ground-truth label
    (spec.capture, spec.groundTruth), assembled by the trainer (the operator never reads storage)."""

    uri: Annotated[str, Field(pattern=r"^(s3|file)://.+|^/.+", max_length=2048)]
    """The capture destination: `s3://…` as in spec.capture.destination, or, for a PVC, the path where
    spec.trainer.volumes mounts it."""
    since_seconds: Annotated[int, Field(ge=10, le=366 * 86400)] = 7 * 86400
    """Calls made this long before the trainer started (at least 10 s)."""
    labelled: bool = True
    """Only labelled rows (the label becomes the target column); must be true."""
    plus: Annotated[str, Field(pattern=r"^(s3|file|https?)://.+|^/.+", max_length=2048)] | None = None
    """A base dataset (csv or parquet, the same columns) the captured rows are added to."""


class Dataset(ApiModel):
    _exactly_one_of = (("uri", "from_capture"),)
    uri: Annotated[str, Field(pattern=r"^(s3|file|https?)://.+|^/.+", max_length=2048)] | None = None
    """`s3://`, `file://`, `http(s)://` or a mounted path."""
    from_capture: FromCapture | None = None
    version: Annotated[str, Field(max_length=253)] | None = None
    format: Literal["csv", "parquet"] | None = None
    """Inferred from the file name when not given."""
    target_column: Annotated[str, Field(min_length=1, max_length=253)] | None = None
    """The label column (default: the last column)."""


class Gate(ApiModel):
    metric: Annotated[str, Field(pattern=METRIC, max_length=128)]
    operator: GateOperator
    threshold: Annotated[str, Field(pattern=r"^-?[0-9]+(\.[0-9]+)?$", max_length=32)]
    """A decimal string, e.g. "0.9"."""


class RuntimeRef(ApiModel):
    name: Name
    """The Kubeflow Trainer runtime, e.g. torch-distributed."""
    kind: Literal["ClusterTrainingRuntime", "TrainingRuntime"] = "ClusterTrainingRuntime"


class KubeflowTrainer(ApiModel):
    """Delegation to Kubeflow Trainer: the run becomes a TrainJob of this runtime, which makes the
    workers (a JobSet) and tells them their ranks its own way (torchrun's PET_* variables)."""

    runtime_ref: RuntimeRef
    num_proc_per_node: Annotated[int, Field(ge=1, le=1024)] | None = None


class Distributed(ApiModel):
    """Data-parallel training on several workers, each told its rank, the world size and the
    coordinator's address (rank 0) in the variables PyTorch (RANK, WORLD_SIZE, MASTER_ADDR,
    MASTER_PORT) and XGBoost (DMLC_TASK_ID, DMLC_NUM_WORKER, DMLC_TRACKER_URI, DMLC_TRACKER_PORT)
    read. The run succeeds when every worker succeeds, with rank 0's result; one failed worker
    fails it."""

    workers: Annotated[int, Field(ge=2, le=64)]
    """How many workers (Pods) train together."""
    port: Annotated[int, Field(ge=1024, le=65535)] = 29500
    """The coordinator's port on rank 0 (torch.distributed's and the XGBoost tracker's)."""
    engine: Literal["Jobs", "KubeflowTrainer"] = "Jobs"
    """Jobs: the operator's own Jobs and headless Service. KubeflowTrainer: a Kubeflow Trainer TrainJob
    (trainer.kubeflow.org, which must be installed), whose status becomes the run's."""
    kubeflow_trainer: KubeflowTrainer | None = None
    """With engine KubeflowTrainer: the runtime the TrainJob uses."""


# a parameter's value in a sweep: any JSON value, as in `params`
ParamValue = Annotated[JsonValue, Field(json_schema_extra={"x-kubernetes-preserve-unknown-fields": True})]


class SweepParameter(ApiModel):
    """One hyperparameter of a sweep: its `values`, or a range (`min`, `max`, `log`, `integer`) for random."""

    _exactly_one_of = (("values", "min"),)
    name: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.]*$", max_length=128)]
    values: Annotated[list[ParamValue], Field(min_length=1, max_length=100)] | None = None
    min: float | None = None
    max: float | None = None
    log: bool = False
    """Draw on a log scale (learning rates, regularisation)."""
    integer: bool = False
    """Draw whole numbers (tree counts, depths)."""


class Objective(ApiModel):
    metric: Annotated[str, Field(pattern=METRIC, max_length=128)]
    goal: Literal["maximize", "minimize"] = "maximize"


class Sweep(ApiModel):
    """A hyperparameter search: one owned TrainingRun per trial (this run's spec with the trial's params),
    at most `maxParallel` at once; the best trial that passed its gates, by the objective, is this run's
    version. Random trials come from `seed`: a restarted operator makes the same ones."""

    parameters: Annotated[list[SweepParameter], Field(min_length=1, max_length=16)]
    strategy: Literal["grid", "random"] = "grid"
    trials: Annotated[int, Field(ge=1, le=100)] | None = None
    """How many trials (random: required; grid: at most this many of the grid, in order)."""
    max_parallel: Annotated[int, Field(ge=1, le=100)] = 1
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] | None = None
    """Default: the run's seed."""
    objective: Objective


class TrialRecord(ApiModel):
    name: str
    params: Params | None = None
    state: Literal["Pending", "Running", "Succeeded", "GatesFailed", "Failed"]
    value: float | None = None
    """The objective's metric, once the trial reported it."""


NUMBER = r"^-?[0-9]+(\.[0-9]+)?$"


class ColumnCheck(ApiModel):
    """What one column of the training set must be."""

    name: Annotated[str, Field(min_length=1, max_length=253)]
    type: Literal["numeric", "categorical"] | None = None
    min: Annotated[str, Field(pattern=NUMBER, max_length=32)] | None = None
    """Smallest value allowed (a decimal string)."""
    max: Annotated[str, Field(pattern=NUMBER, max_length=32)] | None = None
    max_missing_share: Fraction | None = None
    """At most this share of the column's values may be missing (default: spec.dataChecks.maxMissingShare)."""
    values: Annotated[list[str], Field(min_length=1, max_length=1000)] | None = None
    """The values allowed (categories)."""


class DataChecks(ApiModel):
    """Checks of the training set the built-in trainer makes before it trains (a pandera schema); a failed one
    ends the run with `Succeeded=False, reason=DataCheckFailed` naming the column and the number. What needs the
    previous version (the newest earlier TrainingRun of the model that passed its gates) uses its profile; without
    one those checks are skipped, said so in the report."""

    min_rows: Annotated[int, Field(ge=1)] | None = None
    max_missing_share: Fraction | None = None
    """At most this share of any column's values may be missing."""
    columns: Annotated[list[ColumnCheck], Field(max_length=1000)] | None = None
    """A declared schema: each named column present, of its type, in its range and values."""
    same_columns_as_previous: bool = False
    """The features and their types equal the previous version's."""
    label_classes: Annotated[list[str], Field(min_length=1, max_length=1000)] | None = None
    """The labels (the target column) allowed."""
    max_psi: Annotated[str, Field(pattern=r"^[0-9]+(\.[0-9]+)?$", max_length=32)] | None = None
    """Largest PSI of a numeric feature against the previous version's profile (e.g. "0.25")."""


class TrainingRunSpec(ApiModel):
    _exactly_one_of = (("trainer", "pipeline"),)

    model: Name
    """The model stream this run produces a version of."""
    trainer: Trainer | None = None
    pipeline: Pipeline | None = None
    dataset: Dataset | None = None
    params: Params | None = None
    """Hyperparameters, given to the trainer as MLOPS_PARAMS (JSON)."""
    output_uri: Annotated[str, Field(pattern=r"^(s3|file)://.+|^/.+", max_length=2048)] | None = None
    """Where the model directory is written (default: the operator's artifact root)."""
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] = 0
    storage: StorageAccess | None = None
    gates: Annotated[list[Gate], Field(max_length=32)] | None = None
    backoff_limit: Annotated[int, Field(ge=0, le=20)] = 1
    active_deadline_seconds: Annotated[int, Field(ge=1)] | None = None
    suspend: bool = False
    scheduling: Scheduling | None = None
    """Where the training Pod runs: nodeSelector, tolerations, affinity, priorityClassName,
    runtimeClassName (GPUs: `nvidia.com/gpu` in `trainer.resources`)."""
    ttl_seconds_after_finished: Annotated[int, Field(ge=0)] | None = None
    sweep: Sweep | None = None
    """A hyperparameter sweep: this run trains nothing itself; its trials do."""
    distributed: Distributed | None = None
    """Train on several workers at once (one Indexed Job where the cluster serves them, else one Job
    per worker), behind a headless Service that gives each worker a stable name."""
    data_checks: DataChecks | None = None
    """Checks of the training set before training (the built-in trainer's)."""
    register_in: Register | None = Field(default=None, alias="register")  # `register` is BaseModel's (ABC)
    """Register the version in a model registry once it passed its gates (of a sweep: the best trial's),
    with its metrics, params, digest tag and run link."""


class ModelRecord(ApiModel):
    uri: str
    digest: Annotated[str, Field(pattern=DIGEST)]
    format: str
    profile_uri: str | None = None


class Reproducibility(ApiModel):
    image: str | None = None
    image_digest: str | None = None
    dataset_uri: str | None = None
    dataset_version: str | None = None
    dataset_digest: str | None = None
    """sha256 of the dataset's bytes as the trainer read them (what `datasetVersion` only names)."""
    dataset_rows: int | None = None
    captured_files: list[str] | None = None
    """A training set from captured calls (dataset.fromCapture): the newest capture files read (at most 8), how
    many there were, the labelled captured rows and the base dataset's rows."""
    captured_file_count: int | None = None
    captured_rows: int | None = None
    base_rows: int | None = None
    reference_profile: str | None = None
    """The previous version's profile the data checks compared the training set with."""
    params: Params | None = None
    seed: int | None = None


class TrainingRunStatus(StatusBase):
    started_generation: int | None = None
    """The generation the Job was built from (later spec changes are reported, not applied)."""
    job_name: str | None = None
    """The training Job (of a distributed run on one Job per worker: rank 0's)."""
    workers: int | None = None
    """A distributed run: how many workers it has, and how many have succeeded."""
    workers_succeeded: int | None = None
    attempts: int | None = None
    start_time: str | None = None
    completion_time: str | None = None
    metrics: dict[str, float] | None = None
    model: ModelRecord | None = None
    reproducibility: Reproducibility | None = None
    failed_gates: list[str] | None = None
    trials: list[TrialRecord] | None = None
    """A sweep's trials, in order: params, state and the objective's value."""
    best_trial: str | None = None
    """A sweep: the trial whose model is this run's version."""
    data_checks: DataCheckReport | None = None
    """What the data checks found (spec.dataChecks)."""
    registered: RegisteredVersion | None = None
    """The version spec.register made of this run's model."""
    registration: Registration | None = None
    """A registration under way, or why the last one failed (it is tried again after a minute)."""
