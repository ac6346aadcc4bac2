"""The analysis report contract: what `mlops analyze` writes in its termination message and the
operator reads, judges and puts in status (as api/artifacts.py is the trainer's)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from . import artifacts
from .artifacts import _Schema

METRICS = {"classification": ("accuracy", "f1"), "regression": ("rmse", "mae", "r2")}
LOWER_IS_BETTER = frozenset({"rmse", "mae"})
MAX_WINDOWS = 20


class Window(_Schema):
    requests: int
    errors: int
    p99_ms: float | None = Field(None, alias="p99Ms")


class Side(_Schema):
    requests: int
    errors: int
    p50_ms: float | None = Field(None, alias="p50Ms")
    p99_ms: float | None = Field(None, alias="p99Ms")
    metrics: dict[str, float] = Field(default_factory=dict)
    windows: Annotated[list[Window], Field(max_length=MAX_WINDOWS)] = Field(default_factory=list)
    error: str | None = None
    """The first error seen (what a user needs to see why requests failed)."""


class AnalysisReport(_Schema):
    schema_version: Literal[1] = Field(artifacts.SCHEMA_VERSION, alias="schemaVersion")
    task: Literal["classification", "regression"]
    rows: int
    candidate: Side
    stable: Side | None = None

    def to_message(self) -> str:
        text = self.model_dump_json(by_alias=True, exclude_none=True)
        if len(text.encode()) > artifacts.TERMINATION_MESSAGE_LIMIT:  # drop the per-window detail first
            text = self.model_copy(update={
                "candidate": self.candidate.model_copy(update={"windows": []}),
                "stable": self.stable.model_copy(update={"windows": []}) if self.stable else None,
            }).model_dump_json(by_alias=True, exclude_none=True)
        return text


def parse_report(text: str) -> AnalysisReport:
    try:
        return AnalysisReport.model_validate_json(text)
    except ValueError as exc:
        raise artifacts.ArtifactError(f"the analysis report does not follow the contract: {exc}") from None
