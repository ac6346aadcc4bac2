"""A model registry (MLflow) as a source and a sink of model versions: its URIs, the tags the operator writes,
and the contract of the registry commands' termination messages.

The operator reads no Secrets: every call to the tracking server is made by `mlops mlflow …`
(runtime/registry.py), run in a Job with the namespace's credentials, which reports in its termination message."""

from __future__ import annotations

import datetime
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import Field

from . import labels as L
from . import times
from .artifacts import TERMINATION_MESSAGE_LIMIT, ArtifactError
from .common import DIGEST, ApiModel, LocalObjectReference

DIGEST_TAG = "mlops.dev/digest"
"""The model version tag holding the digest of its model directory (written on registration)."""
TRAINING_RUN_TAG = "mlops.dev/trainingrun"
"""The model version and MLflow run tag naming the TrainingRun that produced it (`namespace/name`)."""
TRAINING_RUN_UID_TAG = "mlops.dev/trainingrun-uid"
"""The MLflow run tag holding the TrainingRun's uid: a registration Job run twice finds its run again."""

# models:/<name>/<version> or models:/<name>@<alias>: the name a Kubernetes-friendly subset of MLflow's, the
# alias an identifier (MLflow also reserves `latest` and `v<digits>`: its answer says so). An RE2 pattern
# (a CRD schema's): no look-around
REGISTRY_URI = r"^models:/[A-Za-z0-9][A-Za-z0-9_.-]*(/[1-9][0-9]*|@[A-Za-z_][A-Za-z0-9_-]*)$"
MODEL_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
ALIAS = r"^[A-Za-z_][A-Za-z0-9_-]*$"
RESOLVE_EVERY_SECONDS = 300
"""How often an alias (models:/NAME@ALIAS) is resolved again: a moved alias is a new version."""
RETRY_SECONDS = 60
"""How long after a failed registry call it is made again."""

Alias = Annotated[str, Field(pattern=ALIAS, max_length=255)]


class MlflowAccess(ApiModel):
    """An MLflow tracking server, reached from an owned Job with the namespace's credentials."""

    tracking_uri: Annotated[str, Field(pattern=r"^https?://.+", max_length=2048)]
    """The tracking server (MLFLOW_TRACKING_URI), e.g. http://mlflow.mlflow.svc:5000."""
    secret_ref: LocalObjectReference | None = None
    """A Secret in the same namespace whose keys become the registry Job's environment: MLflow's own
    variables (MLFLOW_TRACKING_TOKEN, or MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD,
    MLFLOW_TRACKING_SERVER_CERT_PATH, MLFLOW_TRACKING_INSECURE_TLS). The operator never reads it."""


class MlflowSource(MlflowAccess):
    """Where `spec.model.storageUri: models:/…` is resolved, and the alias a promotion moves."""

    promote_alias: Alias | None = None
    """Move this alias (e.g. `champion`) to the version a promotion made stable."""


class MlflowSink(MlflowAccess):
    """Register each version that passed its gates in this MLflow model registry."""

    name: Annotated[str, Field(pattern=MODEL_NAME, max_length=255)]
    """The registered model."""
    aliases: Annotated[list[Alias], Field(max_length=10)] | None = None
    """Aliases moved to each new version (e.g. `challenger`)."""
    experiment: Annotated[str, Field(min_length=1, max_length=500)] | None = None
    """The experiment of the MLflow run holding the version's metrics and params (default
    `<namespace>/<spec.model>`)."""


class Register(ApiModel):
    mlflow: MlflowSink


class ResolvedVersion(ApiModel):
    """What a models:/ URI named when it was last resolved."""

    uri: str
    tracking_uri: str
    name: str
    version: str
    source: str
    digest: str | None = None
    run_id: str | None = None
    time: str


class AliasMove(ApiModel):
    """The promotion's alias move: which version it points the alias at, and how it went."""

    alias: str
    name: str
    version: str
    state: Literal["Moving", "Moved", "Failed"]
    attempt: str
    message: str | None = None


class RegistryStatus(ApiModel):
    """A ModelDeployment's dealings with its registry."""

    resolved: ResolvedVersion | None = None
    attempt: str | None = None
    """When the last resolve Job was started."""
    job: str | None = None
    """The last resolve Job (named from the URI, the server and `attempt`)."""
    answered: str | None = None
    """The attempt whose Job has answered (equal to `attempt` when none is under way)."""
    message: str | None = None
    """Why the last resolve failed (it is tried again after a minute; a version resolved before goes on)."""
    alias: AliasMove | None = None


class RegisteredVersion(ApiModel):
    """A TrainingRun's version in the registry (status.registered)."""

    name: str
    version: str
    uri: str
    run_id: str | None = None


class Registration(ApiModel):
    """A TrainingRun's registration under way or failed (status.registration)."""

    attempt: str
    message: str | None = None


class RegistryResult(ApiModel):
    """A registry Job's termination message (`mlops mlflow resolve | register | set-alias`)."""

    name: str
    version: Annotated[str, Field(pattern=r"^[1-9][0-9]*$")]
    source: str | None = None
    digest: Annotated[str, Field(pattern=DIGEST)] | None = None
    run_id: str | None = None
    alias: str | None = None

    def to_message(self) -> str:
        return json.dumps(self.wire(), separators=(",", ":"))


def version_uri(name: str, version: str) -> str:
    return f"models:/{name}/{version}"


def parse_uri(uri: str) -> tuple[str, str | None, str | None]:
    """(name, version, alias) of a models:/ URI: exactly one of version and alias."""
    if re.fullmatch(REGISTRY_URI, uri) is None:
        raise ValueError(f"{uri!r} is not models:/<name>/<version> or models:/<name>@<alias>")
    rest = uri[len("models:/"):]
    if "@" in rest:
        name, alias = rest.split("@", 1)
        return name, None, alias
    name, version = rest.split("/", 1)
    return name, version, None


def is_registry_uri(uri: str | None) -> bool:
    return bool(uri) and str(uri).startswith("models:/")


def parse_result(text: str) -> RegistryResult:
    """A registry Job's termination message, with a clear error for each way it can be wrong."""
    if len(text.encode()) > TERMINATION_MESSAGE_LIMIT:
        raise ArtifactError(f"termination message is over {TERMINATION_MESSAGE_LIMIT} bytes")
    try:
        return RegistryResult.model_validate(json.loads(text))
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"termination message is not JSON: {exc.msg} at position {exc.pos}") from None
    except ValueError as exc:
        raise ArtifactError(f"termination message does not follow the contract: {exc}") from None


PURPOSES = {"resolve": "rs", "register": "rg", "set-alias": "al"}
"""The registry Jobs' calls (`mlops mlflow <purpose>`) and the infix of their names."""


def job_name(parent: str, purpose: str, *parts: str) -> str:
    """`<parent>-<rs|rg|al>-<hash of what the call is for and when it was started>` (at most 57 characters)."""
    digest = hashlib.sha256("\0".join((purpose, *parts)).encode()).hexdigest()[:10]
    return f"{parent[:43]}-{PURPOSES[purpose]}-{digest}"


def purpose_of(job: Mapping[str, Any]) -> str | None:
    """A registry Job's call (its `mlops.dev/registry` label); None for any other Job."""
    return (job["metadata"].get("labels") or {}).get(L.REGISTRY)


def until(stamp: str | None, seconds: float, now: datetime.datetime) -> float:
    """Seconds from now until `seconds` after `stamp` (≤ 0: due)."""
    then = times.parse_or_none(stamp)
    return 0.0 if then is None else (then + datetime.timedelta(seconds=seconds) - now).total_seconds()


Answer = RegistryResult | ArtifactError


@dataclass
class Calls:
    """Registry calls decided: Jobs to start (name, purpose, args), Jobs done with, Events, when to look again."""

    start: list[tuple[str, str, list[str]]] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)
    events: list[tuple[str, str, bool]] = field(default_factory=list)
    requeue_after: float | None = None

    def requeue(self, seconds: float) -> None:
        seconds = max(1.0, seconds)
        self.requeue_after = seconds if self.requeue_after is None else min(self.requeue_after, seconds)
