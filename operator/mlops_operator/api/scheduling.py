"""Where a Pod the operator creates may run: the Kubernetes core/v1 scheduling fields, typed (the same names
and meaning as a Pod spec's), so a misspelt operator or effect is refused at admission rather than by the
apiserver when the operator creates the child."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field

from .common import ApiModel, Name

LABEL_KEY = r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
LabelKey = Annotated[str, Field(min_length=1, max_length=317, pattern=LABEL_KEY)]
LabelValue = Annotated[str, Field(max_length=63, pattern=LABEL_VALUE)]
Weight = Annotated[int, Field(ge=1, le=100)]


class Toleration(ApiModel):
    key: LabelKey | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: LabelValue | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None
    """NoExecute only: how long the Pod stays bound after the taint appears."""


class NodeSelectorRequirement(ApiModel):
    key: LabelKey
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"]
    values: Annotated[list[LabelValue], Field(max_length=64)] | None = None


class NodeSelectorTerm(ApiModel):
    match_expressions: Annotated[list[NodeSelectorRequirement], Field(max_length=32)] | None = None
    match_fields: Annotated[list[NodeSelectorRequirement], Field(max_length=32)] | None = None


class NodeSelector(ApiModel):
    node_selector_terms: Annotated[list[NodeSelectorTerm], Field(min_length=1, max_length=32)]


class PreferredSchedulingTerm(ApiModel):
    weight: Weight
    preference: NodeSelectorTerm


class NodeAffinity(ApiModel):
    required_during_scheduling_ignored_during_execution: NodeSelector | None = None
    preferred_during_scheduling_ignored_during_execution: Annotated[
        list[PreferredSchedulingTerm], Field(max_length=32)] | None = None


class LabelSelectorRequirement(ApiModel):
    key: LabelKey
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: Annotated[list[LabelValue], Field(max_length=64)] | None = None


class LabelSelector(ApiModel):
    match_labels: dict[str, str] | None = None
    match_expressions: Annotated[list[LabelSelectorRequirement], Field(max_length=32)] | None = None


class PodAffinityTerm(ApiModel):
    label_selector: LabelSelector | None = None
    namespaces: Annotated[list[Name], Field(max_length=32)] | None = None
    topology_key: LabelKey


class WeightedPodAffinityTerm(ApiModel):
    weight: Weight
    pod_affinity_term: PodAffinityTerm


class PodAffinity(ApiModel):
    required_during_scheduling_ignored_during_execution: Annotated[
        list[PodAffinityTerm], Field(max_length=32)] | None = None
    preferred_during_scheduling_ignored_during_execution: Annotated[
        list[WeightedPodAffinityTerm], Field(max_length=32)] | None = None


class Affinity(ApiModel):
    node_affinity: NodeAffinity | None = None
    pod_affinity: PodAffinity | None = None
    pod_anti_affinity: PodAffinity | None = None


class TopologySpreadConstraint(ApiModel):
    max_skew: Annotated[int, Field(ge=1)]
    topology_key: LabelKey
    when_unsatisfiable: Literal["DoNotSchedule", "ScheduleAnyway"]
    label_selector: LabelSelector | None = None
    """Default: this ModelDeployment's serving Pods (its `mlops.dev/modeldeployment` label)."""


class Scheduling(ApiModel):
    """The scheduling fields of the Pods this applies to, as in a Pod spec. Extended resources (e.g.
    `nvidia.com/gpu`) are requested in that container's `resources`."""

    node_selector: dict[str, str] | None = None
    tolerations: Annotated[list[Toleration], Field(max_length=64)] | None = None
    affinity: Affinity | None = None
    priority_class_name: Annotated[str, Field(min_length=1, max_length=253,
                                              pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")] | None = None
    runtime_class_name: Annotated[str, Field(min_length=1, max_length=253,
                                             pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")] | None = None


class ServingScheduling(Scheduling):
    topology_spread_constraints: Annotated[list[TopologySpreadConstraint], Field(max_length=16)] | None = None
    """How the serving revision's replicas spread (over zones, nodes)."""


def _label_problems(value: dict[str, str] | None, path: str) -> list[str]:
    out = []
    for key, v in (value or {}).items():
        if len(key) > 317 or not re.match(LABEL_KEY, key):
            out.append(f"{path}: {key!r} is not a label key (an optional DNS prefix/ and a name)")
        elif len(v) > 63 or not re.match(LABEL_VALUE, v):
            out.append(f"{path}[{key}]: {v!r} is not a label value (at most 63 of A-Za-z0-9-_.)")
    return out


def _matched(selector: LabelSelector | None) -> dict[str, str] | None:
    return selector.match_labels if selector is not None else None


def check(chosen: Scheduling | None, path: str) -> list[str]:
    """What the CRD schema cannot say (a map's keys): every label key and value in `chosen`."""
    if chosen is None:
        return []
    out = _label_problems(chosen.node_selector, f"{path}.nodeSelector")
    affinity = chosen.affinity
    for name, terms in (("podAffinity", affinity and affinity.pod_affinity),
                        ("podAntiAffinity", affinity and affinity.pod_anti_affinity)):
        if not terms:
            continue
        for i, term in enumerate(terms.required_during_scheduling_ignored_during_execution or ()):
            out += _label_problems(_matched(term.label_selector),
                                   f"{path}.affinity.{name}.requiredDuringSchedulingIgnoredDuringExecution[{i}]"
                                   ".labelSelector.matchLabels")
        for i, weighted in enumerate(terms.preferred_during_scheduling_ignored_during_execution or ()):
            selector = weighted.pod_affinity_term.label_selector
            out += _label_problems(_matched(selector),
                                   f"{path}.affinity.{name}.preferredDuringSchedulingIgnoredDuringExecution[{i}]"
                                   ".podAffinityTerm.labelSelector.matchLabels")
    if isinstance(chosen, ServingScheduling):
        for i, constraint in enumerate(chosen.topology_spread_constraints or ()):
            selector = constraint.label_selector
            out += _label_problems(_matched(selector),
                                   f"{path}.topologySpreadConstraints[{i}].labelSelector.matchLabels")
    return out
