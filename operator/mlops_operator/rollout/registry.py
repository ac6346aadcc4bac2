"""A ModelDeployment's model registry: resolving `storageUri: models:/…` and moving `promoteAlias` to the
version a promotion made stable. Pure.

Each call to the registry is an owned Job (builders/registry.py) named by what it is for and when it was
started (`status.registry.attempt`, or the alias move's `attempt`): a restarted operator finds the Job it
started, and a Job that answered is read once (its answer goes to status) and deleted. An alias is resolved
again every RESOLVE_EVERY_SECONDS; a failed call is made again after RETRY_SECONDS, while a version resolved
before goes on serving.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..api import times
from ..api.artifacts import ArtifactError
from ..api.modeldeployment import ModelDeploymentSpec, RevisionRef
from ..api.registry import (
    RESOLVE_EVERY_SECONDS,
    RETRY_SECONDS,
    AliasMove,
    Answer,
    Calls,
    RegistryStatus,
    ResolvedVersion,
    is_registry_uri,
    job_name,
    parse_uri,
    purpose_of,
    until,
)


@dataclass
class Registry(Calls):
    """The calls decided, and the ModelDeployment's registry status they leave."""

    status: RegistryStatus = field(default_factory=RegistryStatus)

    def wire(self) -> dict[str, Any] | None:
        return self.status.wire() or None


def resolve_name(md: Mapping[str, Any], spec: ModelDeploymentSpec, attempt: str) -> str:
    assert spec.model.mlflow is not None and spec.model.storage_uri is not None
    return job_name(md["metadata"]["name"], "resolve", spec.model.storage_uri, spec.model.mlflow.tracking_uri,
                    attempt)


def alias_job(md: Mapping[str, Any], move: AliasMove) -> str:
    return job_name(md["metadata"]["name"], "set-alias", move.alias, move.name, move.version, move.attempt)


def current(spec: ModelDeploymentSpec, status: RegistryStatus | None) -> ResolvedVersion | None:
    """The resolution of the URI and tracking server the spec names now (None: not resolved yet)."""
    found = status.resolved if status is not None else None
    mlflow = spec.model.mlflow
    if found is None or mlflow is None or found.uri != spec.model.storage_uri or \
            found.tracking_uri != mlflow.tracking_uri:
        return None
    return found


def registry_status(md: Mapping[str, Any]) -> RegistryStatus:
    raw = (md.get("status") or {}).get("registry")
    return RegistryStatus.model_validate(raw) if raw else RegistryStatus()


def resolve(md: Mapping[str, Any], spec: ModelDeploymentSpec, jobs: Mapping[str, Mapping[str, Any]],
            answers: Mapping[str, Answer], now: datetime.datetime) -> Registry:
    """Resolve spec.model.storageUri when it is a models:/ URI: the first time, when the URI or the server
    changed, every RESOLVE_EVERY_SECONDS for an alias, RETRY_SECONDS after a failure."""
    st = registry_status(md)
    calls = Registry(status=st)
    resolving = [n for n, j in jobs.items() if purpose_of(j) == "resolve"]
    uri, mlflow = spec.model.storage_uri, spec.model.mlflow
    if uri is None or mlflow is None or not is_registry_uri(uri):
        st.resolved = st.attempt = st.job = st.answered = st.message = None
        calls.delete = resolving
        return calls
    same = st.attempt is not None and st.job == resolve_name(md, spec, st.attempt)  # the spec names what it did
    pending = st.job is not None and st.answered != st.attempt
    answer = answers.get(st.job) if pending and st.job is not None else None
    if answer is not None:
        if isinstance(answer, ArtifactError):
            st.message = f"mlops mlflow resolve {uri}: {answer}"[:1000]
            calls.events.append(("ResolveFailed", st.message, True))
        else:
            before = current(spec, st)
            st.message = None
            st.resolved = ResolvedVersion(uri=uri, tracking_uri=mlflow.tracking_uri, name=answer.name,
                                          version=answer.version, source=answer.source or "", digest=answer.digest,
                                          run_id=answer.run_id, time=times.stamp(now))
            if before is None or before.version != answer.version:
                calls.events.append(("Resolved", f"{uri} is version {answer.version} ({answer.source})", False))
        st.answered, pending = st.attempt, False
    if pending and same:
        assert st.job is not None
        if st.job not in jobs:  # started just now (not seen yet), or deleted by someone: (re)made by name
            calls.start.append((st.job, "resolve", [uri]))
        calls.requeue(RETRY_SECONDS)
    else:
        found = current(spec, st)
        failed = same and st.message is not None
        if failed:
            wait: float | None = until(st.attempt, RETRY_SECONDS, now)
        elif found is None:
            wait = 0.0
        elif parse_uri(uri)[2] is not None:  # an alias: looked up again
            wait = until(found.time, RESOLVE_EVERY_SECONDS, now)
        else:
            wait = None  # a version number names one version for good
        if wait is not None and wait <= 0:
            st.attempt = times.stamp(now)
            st.job = resolve_name(md, spec, st.attempt)
            if not same:
                st.message = None
            calls.start.append((st.job, "resolve", [uri]))
            calls.requeue(RETRY_SECONDS)
        elif wait is not None:
            calls.requeue(wait)
    calls.delete = [n for n in resolving if n != st.job or st.answered == st.attempt]
    return calls


def registered_version(stable: RevisionRef, runs: Sequence[Mapping[str, Any]]) -> str | None:
    """The registry version (models:/NAME/VERSION) the stable revision serves: resolved from storageUri, or
    registered by its TrainingRun (spec.register)."""
    if stable.registry_version:
        return stable.registry_version
    run = next((r for r in runs if stable.training_run and r["metadata"]["name"] == stable.training_run), None)
    return (((run or {}).get("status") or {}).get("registered") or {}).get("uri")


def move_alias(md: Mapping[str, Any], spec: ModelDeploymentSpec, stable: RevisionRef | None,
               runs: Sequence[Mapping[str, Any]], jobs: Mapping[str, Mapping[str, Any]],
               answers: Mapping[str, Answer], now: datetime.datetime, calls: Registry) -> None:
    """Point spec.model.mlflow.promoteAlias at the stable revision's registry version, once per promotion;
    a failed move is made again after RETRY_SECONDS."""
    st = calls.status
    alias = spec.model.mlflow.promote_alias if spec.model.mlflow is not None else None
    moving = [n for n, j in jobs.items() if purpose_of(j) == "set-alias"]
    move = st.alias
    if move is not None and move.state == "Moving":
        answer = answers.get(alias_job(md, move))
        if isinstance(answer, ArtifactError):
            move.state, move.message = "Failed", f"mlops mlflow set-alias: {answer}"[:1000]
            calls.events.append(("AliasMoveFailed", f"alias {move.alias} of {move.name}: {move.message}", True))
        elif answer is not None:
            move.state, move.message = "Moved", None
            calls.events.append(("AliasMoved", f"alias {move.alias} of {move.name} now points at version "
                                 f"{move.version}", False))
    version = registered_version(stable, runs) if stable is not None else None
    if alias is not None and version is not None:
        name, number, _ = parse_uri(version)
        assert number is not None
        stamp = times.stamp(now)
        if move is None or (move.alias, move.name, move.version) != (alias, name, number):
            move = st.alias = AliasMove(alias=alias, name=name, version=number, state="Moving", attempt=stamp)
        elif move.state == "Failed":
            wait = until(move.attempt, RETRY_SECONDS, now)
            if wait <= 0:
                move.state, move.attempt = "Moving", stamp
            else:
                calls.requeue(wait)
        if move.state == "Moving":
            job = alias_job(md, move)
            if job not in jobs:
                calls.start.append((job, "set-alias", ["--name", move.name, "--version", move.version,
                                                       "--alias", move.alias]))
            calls.requeue(RETRY_SECONDS)
    keep = alias_job(md, move) if move is not None and move.state == "Moving" else None
    calls.delete += [n for n in moving if n != keep]
