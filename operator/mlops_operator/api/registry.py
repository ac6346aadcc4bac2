"""A model registry (MLflow) as a source and a sink of model versions: its URIs, the tags the operator writes,
and the contract of the registry commands' termination messages.

The operator reads no Secrets: every call to the tracking server is made by `mlops mlflow …`
(runtime/registry.py), run in a Job with the namespace's credentials, which reports in its termination message."""

from __future__ import annotations

import json
import re
from typing import Annotated

from pydantic import Field

from .artifacts import TERMINATION_MESSAGE_LIMIT, ArtifactError
from .common import DIGEST, ApiModel

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
