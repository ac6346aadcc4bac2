"""When a drifted model may be retrained, and what became of earlier retrains. Pure.

At most one retrain is in flight: from the TrainingRun's creation until it failed (or failed its
gates), or the ModelDeployment promoted or rejected the version it produced. Then `cooldownSeconds`
since the last one and at most `maxPerDay` in any 24 hours. A blocked retrain is reported with its
reason and the time it becomes possible.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..api import times
from ..api.driftpolicy import Retrain, RetrainRecord
from ..conditions import find

DAY = datetime.timedelta(days=1)
FINISHED = ("Completed", "InvalidResult", "BackoffLimitExceeded", "DeadlineExceeded", "Failed")


def outcome(run: Mapping[str, Any] | None, md_status: Mapping[str, Any]) -> str:
    """Training, GatesFailed, Failed, AwaitingRollout, Promoted, RolledBack, Superseded or Deleted."""
    if run is None:
        return "Deleted"
    name = run["metadata"]["name"]
    conditions = (run.get("status") or {}).get("conditions")
    done = find(conditions, "Succeeded")
    if done is None or done.get("reason") not in FINISHED:
        return "Training"
    if done.get("status") != "True":
        return "Failed"
    gates = find(conditions, "GatesPassed")
    if gates is None or gates.get("status") != "True":
        return "GatesFailed"
    if (md_status.get("stable") or {}).get("trainingRun") == name:
        return "Promoted"
    for h in reversed(md_status.get("history") or ()):
        if h.get("trainingRun") == name:
            return {"Promoted": "Promoted", "Superseded": "Superseded"}.get(h.get("outcome", ""), "RolledBack")
    created = run["metadata"].get("creationTimestamp", "")
    if ((md_status.get("stable") or {}).get("runCreated") or "") > created:
        return "Superseded"
    return "AwaitingRollout"


IN_FLIGHT = ("Training", "AwaitingRollout")


@dataclass
class RetrainPlan:
    records: list[RetrainRecord]
    create: str | None = None
    blocked: str | None = None
    next_possible: str | None = None
    delete: list[str] = field(default_factory=list)


def _number(name: str, policy: str) -> int:
    tail = name[len(policy) + 1:]
    return int(tail) if name.startswith(policy + "-") and tail.isdigit() else 0


def decide(policy: str, retrain: Retrain, records: Sequence[RetrainRecord], owned: Mapping[str, Mapping[str, Any]],
           md_status: Mapping[str, Any], drifted: bool, now: datetime.datetime) -> RetrainPlan:
    """`owned`: the policy's TrainingRuns by name (a run created just before a restart is adopted)."""
    known = {r.name: r for r in records}
    for name, run in owned.items():
        if name not in known:
            known[name] = RetrainRecord(name=name, created=run["metadata"].get("creationTimestamp") or times.stamp(now))
    ordered = sorted(known.values(), key=lambda r: (r.created, _number(r.name, policy)))
    ordered = [r.model_copy(update={"outcome": outcome(owned.get(r.name), md_status)}) for r in ordered]
    plan = RetrainPlan(records=ordered)
    # history: the oldest beyond historyLimit go, never the run behind the version that serves
    serving = (md_status.get("stable") or {}).get("trainingRun")
    excess = len(ordered) - retrain.history_limit
    for r in ordered:
        if excess <= 0:
            break
        if r.name != serving and r.outcome not in IN_FLIGHT:
            plan.delete.append(r.name)
            excess -= 1
    plan.records = [r for r in ordered if r.name not in plan.delete]
    if not drifted:
        return plan
    flying = next((r for r in ordered if r.outcome in IN_FLIGHT), None)
    if flying is not None:
        plan.blocked = f"retrain {flying.name} is in flight ({flying.outcome})"
        return plan
    if ordered:
        due = times.parse(ordered[-1].created) + datetime.timedelta(seconds=retrain.cooldown_seconds)
        if now < due:
            plan.blocked, plan.next_possible = f"cooldown after {ordered[-1].name}", times.stamp(due)
            return plan
    today = [r for r in ordered if times.parse(r.created) > now - DAY]
    if len(today) >= retrain.max_per_day:
        plan.blocked = f"maxPerDay: {len(today)} retrains in the last 24 hours"
        plan.next_possible = times.stamp(times.parse(today[-retrain.max_per_day].created) + DAY)
        return plan
    number = max((_number(r.name, policy) for r in ordered), default=0) + 1
    plan.create = f"{policy}-{number}"
    plan.records = [*plan.records, RetrainRecord(name=plan.create, created=times.stamp(now), outcome="Training")]
    return plan
