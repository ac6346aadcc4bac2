"""Registering a TrainingRun's version in a model registry (spec.register_in.mlflow). Pure.

Once the run has finished and passed its gates (a sweep: its best trial's model), an owned Job runs
`mlops mlflow register` with the run's model, digest, metrics and params; its answer becomes
`status.registered` and the `Registered` condition. The Job is named from the registry, the model name and
the attempt's time (`status.registration.attempt`): a restarted operator finds it, a failed registration is
made again after RETRY_SECONDS, and the command itself finds the version a first run of it registered.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..api import times
from ..api.artifacts import ArtifactError
from ..api.registry import (
    RETRY_SECONDS,
    Answer,
    Calls,
    MlflowSink,
    RegisteredVersion,
    Registration,
    job_name,
    purpose_of,
    until,
    version_uri,
)
from ..api.trainingrun import TrainingRunSpec
from ..conditions import FALSE, TRUE, UNKNOWN, Cond, is_true
from .run import finished


@dataclass
class Registering(Calls):
    """The calls decided, the Registered condition and the status fields they change."""

    condition: Cond | None = None
    status: dict[str, Any] = field(default_factory=dict)


def register_job(run: Mapping[str, Any], sink: MlflowSink, attempt: str) -> str:
    return job_name(run["metadata"]["name"], "register", sink.tracking_uri, sink.name, attempt)


def arguments(run: Mapping[str, Any], spec: TrainingRunSpec, sink: MlflowSink) -> list[str]:
    meta, status = run["metadata"], run.get("status") or {}
    model = status["model"]
    params = (status.get("reproducibility") or {}).get("params") or spec.params or {}
    args = ["--name", sink.name, "--source", model["uri"], "--digest", model["digest"],
            "--experiment", sink.experiment or f"{meta['namespace']}/{spec.model}", "--run-name", meta["name"],
            "--trainingrun", f"{meta['namespace']}/{meta['name']}", "--uid", str(meta.get("uid") or ""),
            "--metrics", json.dumps(status.get("metrics") or {}, sort_keys=True),
            "--params", json.dumps(params, sort_keys=True)]
    for alias in sink.aliases or ():
        args += ["--alias", alias]
    return args


def register(run: Mapping[str, Any], spec: TrainingRunSpec, jobs: Mapping[str, Mapping[str, Any]],
             answers: Mapping[str, Answer], now: datetime.datetime) -> Registering:
    status = run.get("status") or {}
    out = Registering()
    registering = [n for n, j in jobs.items() if purpose_of(j) == "register"]
    sink = spec.register_in.mlflow if spec.register_in is not None else None
    if sink is None:
        out.delete = registering
        return out
    if not finished(status):
        out.condition = Cond("Registered", UNKNOWN, "NotFinished",
                             f"the version is registered as {sink.name} once the run has passed its gates")
        return out
    if not is_true(status.get("conditions"), "GatesPassed") or not (status.get("model") or {}).get("digest"):
        out.condition = Cond("Registered", FALSE, "GatesNotPassed", "only a version that passed its gates is "
                             "registered")
        out.delete = registering
        return out
    done = status.get("registered")
    raw = status.get("registration")
    attempt = Registration.model_validate(raw) if raw else None
    pending = attempt is not None and attempt.message is None
    if done is None and pending:
        assert attempt is not None
        mine = register_job(run, sink, attempt.attempt)
        answer = answers.get(mine)
        if isinstance(answer, ArtifactError):
            attempt.message = f"mlops mlflow register: {answer}"[:1000]
            out.events.append(("RegistrationFailed", attempt.message, True))
            out.status["registration"] = attempt.wire()
        elif answer is not None:
            done = RegisteredVersion(name=answer.name, version=answer.version,
                                     uri=version_uri(answer.name, answer.version), run_id=answer.run_id).wire()
            out.status.update(registered=done, registration=None)
            out.events.append(("Registered", f"registered as {done['uri']} (MLflow run {answer.run_id})", False))
        else:  # under way; a Job not seen was started just now, or deleted by someone: (re)made by name
            return _registering(out, mine, mine not in jobs, arguments(run, spec, sink), sink, registering)
    if done is not None:
        out.condition = Cond("Registered", TRUE, "Registered", f"{done['uri']} in {sink.tracking_uri}")
        out.delete = registering
        return out
    wait = until(attempt.attempt, RETRY_SECONDS, now) if attempt is not None else 0.0
    if wait > 0:
        assert attempt is not None
        out.requeue(wait)
        out.condition = Cond("Registered", FALSE, "RegistrationFailed", str(attempt.message))
        out.delete = registering
        return out
    stamp = times.stamp(now)
    out.status["registration"] = Registration(attempt=stamp).wire()
    return _registering(out, register_job(run, sink, stamp), True, arguments(run, spec, sink), sink, registering)


def _registering(out: Registering, job: str, start: bool, args: list[str], sink: MlflowSink,
                 registering: list[str]) -> Registering:
    """A registration under way in `job` (started now when `start`); any other register Job goes."""
    if start:
        out.start.append((job, "register", args))
    out.requeue(RETRY_SECONDS)
    out.condition = Cond("Registered", FALSE, "Registering", f"registering the version as {sink.name} in "
                         f"{sink.tracking_uri}")
    out.delete = [n for n in registering if n != job]
    return out
