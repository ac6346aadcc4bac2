"""The verbs the operator used over the whole suite are exactly what the chart grants it (runs last: it
judges every test before it).

What the operator did is read from outside, from the apiserver's audit log (the control plane's `audit`
option): every request whose user agent is the operator's client (`mlops-operator/…`) or kopf's (`kopf/…`),
from the in-process operator, the operators started as processes and the Helm-installed ones alike, as
(API group, resource[/subresource], verb). What it may do is the rendered chart's rules bound to its
ServiceAccount (`manifests/install.yaml`). A verb used and not granted breaks the chart; one granted and never
used is more than the operator needs (or a path no test takes). Discovery (non-resource URLs) is every
authenticated user's and not the chart's to grant.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from mlops_operator.dev.controlplane import ControlPlane

TOP = Path(__file__).resolve().parents[2]
OPERATOR_AGENTS = ("mlops-operator/", "kopf/")

Grant = tuple[str, str, str]  # (apiGroup, resource[/subresource], verb)


def operator_requests(audit_log: Path) -> Iterator[tuple[Grant, dict[str, Any]]]:
    """Each audited resource request the operator made, as what RBAC judged it by, and the event."""
    with audit_log.open() as lines:
        for line in lines:
            event = json.loads(line)
            ref = event.get("objectRef")
            if not ref or not str(event.get("userAgent", "")).startswith(OPERATOR_AGENTS):
                continue
            resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
            yield (ref.get("apiGroup", ""), resource, event["verb"]), event


def granted(manifests: list[dict[str, Any]]) -> set[Grant]:
    """Every (group, resource, verb) the rules bound to the operator's ServiceAccount allow."""
    roles = {(m["kind"], m["metadata"]["name"]): m for m in manifests if m["kind"] in ("ClusterRole", "Role")}
    out: set[Grant] = set()
    for binding in manifests:
        if binding["kind"] not in ("ClusterRoleBinding", "RoleBinding"):
            continue
        if not any(s["kind"] == "ServiceAccount" and s["name"] == "mlops-operator" for s in binding["subjects"]):
            continue
        role = roles[binding["roleRef"]["kind"], binding["roleRef"]["name"]]
        for rule in role["rules"]:
            out |= {(g, r, v) for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
    return out


def test_the_operator_used_exactly_the_verbs_the_chart_grants(control_plane: ControlPlane) -> None:
    assert control_plane.audit_log.exists(), "the control plane keeps no audit log"
    used: dict[Grant, dict[str, Any]] = {}
    for grant, event in operator_requests(control_plane.audit_log):
        used.setdefault(grant, event)
    manifests = [m for m in yaml.safe_load_all((TOP / "manifests" / "install.yaml").read_text()) if m]
    allowed = granted(manifests)
    assert allowed, "the rendered chart binds no rules to the operator's ServiceAccount"
    not_granted = {g: used[g]["requestURI"] for g in sorted(set(used) - allowed)}
    assert not not_granted, f"requests the chart does not allow (group, resource, verb → one of them): {not_granted}"
    never_used = sorted(allowed - set(used))
    assert not never_used, f"granted and never used over the whole suite: {never_used}"
