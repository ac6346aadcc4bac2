"""Checks of a TrainingRun spec that a structural schema cannot express."""

from __future__ import annotations

from collections import Counter

from ..api.common import EnvVar
from ..api.scheduling import check as check_scheduling
from ..api.trainingrun import MAX_INLINE_PIPELINE, TrainingRunSpec

# set by the operator for every trainer; a user value would silently lose
RESERVED_ENV = frozenset({
    "MLOPS_RUN", "MLOPS_MODEL", "MLOPS_PARAMS", "MLOPS_DATASET_URI", "MLOPS_DATASET_VERSION",
    "MLOPS_OUTPUT_URI", "MLOPS_SEED", "MLOPS_ESTIMATOR", "MLOPS_TARGET_COLUMN",
})


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
    for gate in sorted(_duplicates([f"{g.metric} {g.operator}" for g in spec.gates or ()])):
        errors.append(f"{prefix}.gates: the gate {gate} is given twice")
    return errors + check_scheduling(spec.scheduling, f"{prefix}.scheduling")
