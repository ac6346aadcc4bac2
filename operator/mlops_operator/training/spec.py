"""Checks of a TrainingRun spec that a structural schema cannot express."""

from __future__ import annotations

from collections import Counter

from ..api.common import EnvVar
from ..api.scheduling import check as check_scheduling
from ..api.trainingrun import MAX_INLINE_PIPELINE, TrainingRunSpec
from .sweep import check as check_sweep

# set by the operator for every trainer; a user value would silently lose
RESERVED_ENV = frozenset({
    "MLOPS_RUN", "MLOPS_MODEL", "MLOPS_PARAMS", "MLOPS_DATASET_URI", "MLOPS_DATASET_VERSION",
    "MLOPS_OUTPUT_URI", "MLOPS_SEED", "MLOPS_ESTIMATOR", "MLOPS_TARGET_COLUMN",
})

# set for every worker of a distributed run (what torch.distributed's env:// and XGBoost's collective read)
DISTRIBUTED_ENV = frozenset({
    "RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
    "DMLC_TASK_ID", "DMLC_NUM_WORKER", "DMLC_TRACKER_URI", "DMLC_TRACKER_PORT",
})
# the built-in trainer trains these across workers (XGBoost's collective); other estimators train on one
DISTRIBUTED_ESTIMATORS = ("xgboost.XGBClassifier", "xgboost.XGBRegressor", "xgboost.sklearn.XGBClassifier",
                          "xgboost.sklearn.XGBRegressor")


def check_env(env: list[EnvVar] | None, path: str) -> list[str]:
    errors = []
    seen: set[str] = set()
    for i, var in enumerate(env or ()):
        if var.name in RESERVED_ENV:
            errors.append(f"{path}[{i}].name: {var.name} is set by the operator and cannot be overridden")
        if var.name in seen:
            errors.append(f"{path}[{i}].name: {var.name} is given twice")
        seen.add(var.name)
    return errors


def _duplicates(values: list[str]) -> set[str]:
    return {v for v, n in Counter(values).items() if n > 1}


def check(spec: TrainingRunSpec, prefix: str = "spec") -> list[str]:
    errors: list[str] = []
    trainer = spec.trainer
    if trainer is not None:
        if trainer.command is None:
            if not trainer.estimator:
                errors.append(f"{prefix}.trainer.estimator: required by the built-in trainer "
                              "(no command given), e.g. sklearn.ensemble.RandomForestClassifier")
            if spec.dataset is None:
                errors.append(f"{prefix}.dataset: required by the built-in trainer (no command given)")
        errors += check_env(trainer.env, f"{prefix}.trainer.env")
        volumes = trainer.volumes or []
        for name in sorted(_duplicates([v.name for v in volumes])):
            errors.append(f"{prefix}.trainer.volumes: the name {name} is used twice")
        for path in sorted(_duplicates([v.mount_path for v in volumes])):
            errors.append(f"{prefix}.trainer.volumes: the mountPath {path} is used twice")
    if spec.pipeline is not None and spec.pipeline.inline is not None:
        size = len(spec.pipeline.inline.encode())
        if size > MAX_INLINE_PIPELINE:
            errors.append(f"{prefix}.pipeline.inline: {size} bytes is too large to keep in the object "
                          f"(at most {MAX_INLINE_PIPELINE}); put the pipeline in a ConfigMap and use configMapKeyRef")
    capture = spec.dataset.from_capture if spec.dataset is not None else None
    if capture is not None and not capture.labelled:
        errors.append(f"{prefix}.dataset.fromCapture.labelled: must be true (a row is trained on with its label)")
    if capture is not None and spec.dataset is not None and spec.dataset.format is not None:
        errors.append(f"{prefix}.dataset.format: applies to dataset.uri (captured files name their own format)")
    errors += _check_distributed(spec, prefix)
    if spec.sweep is not None:
        errors += check_sweep(spec.sweep, f"{prefix}.sweep")
    for gate in sorted(_duplicates([f"{g.metric} {g.operator}" for g in spec.gates or ()])):
        errors.append(f"{prefix}.gates: the gate {gate} is given twice")
    return errors + check_scheduling(spec.scheduling, f"{prefix}.scheduling")


def _check_distributed(spec: TrainingRunSpec, prefix: str) -> list[str]:
    if spec.distributed is None:
        return []
    errors = []
    if spec.pipeline is not None:
        errors.append(f"{prefix}.distributed: a pipeline runs in one Pod; distributed training needs a trainer")
    trainer = spec.trainer
    kubeflow = spec.distributed.engine == "KubeflowTrainer"
    if kubeflow and spec.distributed.kubeflow_trainer is None:
        errors.append(f"{prefix}.distributed.kubeflowTrainer: required by engine KubeflowTrainer (the runtime, "
                      "e.g. {runtimeRef: {name: torch-distributed}})")
    if not kubeflow and spec.distributed.kubeflow_trainer is not None:
        errors.append(f"{prefix}.distributed.kubeflowTrainer: only for engine KubeflowTrainer")
    if kubeflow and trainer is not None and trainer.command is None:
        errors.append(f"{prefix}.trainer.command: required by engine KubeflowTrainer (the runtime starts the "
                      "workers its own way, e.g. torchrun with PET_* variables; the built-in trainer does not "
                      "speak it)")
    if kubeflow and trainer is not None and trainer.volumes:
        errors.append(f"{prefix}.trainer.volumes: a TrainJob's trainer takes no volumes (its runtime mounts them)")
    if not kubeflow and trainer is not None and trainer.command is None and \
            trainer.estimator not in DISTRIBUTED_ESTIMATORS:
        errors.append(f"{prefix}.distributed: the built-in trainer trains {trainer.estimator} on one worker only; "
                      f"across workers it trains {' or '.join(DISTRIBUTED_ESTIMATORS[:2])} (or give "
                      "trainer.command: a trainer that reads RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT)")
    for i, var in enumerate((trainer.env if trainer else None) or ()):
        if var.name in DISTRIBUTED_ENV:
            errors.append(f"{prefix}.trainer.env[{i}].name: {var.name} is set for each worker of a distributed run "
                          "and cannot be overridden")
    return errors
