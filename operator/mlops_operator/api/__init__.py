"""The typed API: the single source of truth for the three kinds (CRDs are generated from it)."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel

from .common import API_VERSION, GROUP, VERSION
from .driftpolicy import DriftPolicySpec, DriftPolicyStatus
from .modeldeployment import ModelDeploymentSpec, ModelDeploymentStatus
from .trainingrun import TrainingRunSpec, TrainingRunStatus

READY = '.status.conditions[?(@.type=="Ready")].status'
REASON = '.status.conditions[?(@.type=="Ready")].reason'


@dataclass(frozen=True)
class Kind:
    kind: str
    plural: str
    short_names: tuple[str, ...]
    spec: type[BaseModel]
    status: type[BaseModel]
    # the longest suffix any child (or grandchild) name appends to the resource's name; the
    # name is capped so that every derived name stays a 63-character DNS label
    child_suffix: int
    columns: tuple[tuple[str, str, str], ...]  # (name, type, jsonPath)
    # a scale subresource (spec.replicas, status.replicas, status.selector): what an HPA targets
    scale: bool = False

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def max_name_length(self) -> int:
        return 63 - self.child_suffix


TRAINING_RUN = Kind(
    "TrainingRun", "trainingruns", ("tr",), TrainingRunSpec, TrainingRunStatus,
    # Job "<name>-<8 hex>" (the Job controller copies the Job name into a 63-char label)
    child_suffix=9,
    columns=(
        ("Model", "string", ".spec.model"),
        ("Succeeded", "string", '.status.conditions[?(@.type=="Succeeded")].status'),
        ("Gates", "string", '.status.conditions[?(@.type=="GatesPassed")].status'),
        ("Ready", "string", READY),
        ("Reason", "string", REASON),
    ),
)
MODEL_DEPLOYMENT = Kind(
    "ModelDeployment", "modeldeployments", ("md",), ModelDeploymentSpec, ModelDeploymentStatus,
    # Deployment "<name>-<8 hex revision>", analysis Job "<name>-<revision>-an",
    # Service "<name>-preview"
    child_suffix=14,
    scale=True,
    columns=(
        ("Model", "string", ".status.stable.modelUri"),
        ("Stable", "string", ".status.stable.revision"),
        ("Candidate", "string", ".status.candidate.revision"),
        ("Traffic", "string", ".status.trafficSummary"),
        ("Ready", "string", READY),
        ("Reason", "string", REASON),
    ),
)
DRIFT_POLICY = Kind(
    "DriftPolicy", "driftpolicies", ("dp",), DriftPolicySpec, DriftPolicyStatus,
    # retrain TrainingRuns "<name>-<n up to 5 digits>", whose own children add 9 more
    child_suffix=6 + 9,
    columns=(
        ("Target", "string", ".spec.targetRef.name"),
        ("Drifted", "string", '.status.conditions[?(@.type=="Drifted")].status'),
        ("Features", "string", ".status.driftedFeatures"),
        ("Ready", "string", READY),
        ("Reason", "string", REASON),
    ),
)
KINDS: tuple[Kind, ...] = (TRAINING_RUN, MODEL_DEPLOYMENT, DRIFT_POLICY)
BY_KIND = {k.kind: k for k in KINDS}

__all__ = [
    "API_VERSION",
    "BY_KIND",
    "DRIFT_POLICY",
    "GROUP",
    "KINDS",
    "MODEL_DEPLOYMENT",
    "TRAINING_RUN",
    "VERSION",
    "Kind",
]
