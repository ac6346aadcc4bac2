"""DriftPolicy reconcile: validate, find the target, evaluate drift when due, retrain when allowed.
Thin: the statistics are drift/evaluate.py's, the window drift/window.py's, the retrain rules
drift/retrain.py's; this module scrapes the stable revision's pods and writes what was decided."""

from __future__ import annotations

import datetime
import json
import time
from typing import Any, ClassVar

import kopf

from ..api import API_VERSION, DRIFT_POLICY, TRAINING_RUN, times
from ..api import labels as L
from ..api.artifacts import Profile
from ..api.driftpolicy import DriftPolicySpec, Evaluation, RetrainRecord
from ..builders.common import owner_reference
from ..conditions import FALSE, TRUE, UNKNOWN, Cond
from ..drift import evaluate as drift_evaluate
from ..drift import retrain as drift_retrain
from ..drift import spec as drift_spec
from ..drift.window import WindowState, advance, after_evaluation
from ..kube import CONFIGMAPS
from ..metrics import REGISTRY
from . import pods
from .context import Ctx, resource
from .core import Body, Key, RefKey

STATE_KEY = "window.json"
EVALUATION_ANNOTATION = L.DRIFT_EVALUATION


def refers_to(body: Body) -> set[RefKey]:
    target = ((body.get("spec") or {}).get("targetRef") or {}).get("name")
    return {("ModelDeployment", body["metadata"]["namespace"], target)} if target else set()


def state_name(policy: Body) -> str:
    return f"{policy['metadata']['name']}-window"


class Memory:
    """Per-process caches: reference profiles by digest, window states, when each policy last scraped."""

    profiles: ClassVar[dict[str, Profile]] = {}
    states: ClassVar[dict[Key, WindowState]] = {}
    scraped: ClassVar[dict[Key, float]] = {}

    @classmethod
    def forget(cls, key: Key) -> None:
        cls.states.pop(key, None)
        cls.scraped.pop(key, None)


async def _state(ctx: Ctx, key: Key, policy: Body) -> WindowState | None:
    if key in Memory.states:
        return Memory.states[key]
    cm = await ctx.api.get(CONFIGMAPS, key[1], state_name(policy))
    text = ((cm or {}).get("data") or {}).get(STATE_KEY)
    return WindowState.model_validate_json(text) if text else None


async def _save(ctx: Ctx, key: Key, policy: Body, state: WindowState) -> None:
    meta = policy["metadata"]
    await ctx.api.apply(CONFIGMAPS, {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": state_name(policy), "namespace": meta["namespace"],
                     "labels": {**L.MANAGED_BY, L.DRIFT_POLICY: meta["name"]},
                     "ownerReferences": [owner_reference(policy)]},
        "data": {STATE_KEY: state.model_dump_json()},
    })
    Memory.states[key] = state


async def _scrape(ctx: Ctx, md: Body, revision: str) -> tuple[dict[str, Any], Profile | None]:
    """Every ready pod's monitoring snapshot, and the reference profile they count against."""
    name = md["metadata"]["name"]
    ready = await pods.ready_pods(ctx, md["metadata"]["namespace"], name, revision)
    snapshots = await pods.get_json([(p["metadata"]["name"], f"{pods.base_url(p)}/v2/models/{name}/monitoring")
                                     for p in ready])
    digests = {s.get("profileDigest") for s in snapshots.values()} - {None}
    profile = next((Memory.profiles[d] for d in digests if d in Memory.profiles), None)
    if profile is None and snapshots:
        pod = next(p for p in ready if p["metadata"]["name"] in snapshots)
        found = await pods.get_json([("profile", f"{pods.base_url(pod)}/v2/models/{name}/profile")])
        if "profile" in found:
            profile = Profile.model_validate(found["profile"])
            for d in digests:
                Memory.profiles[d] = profile
    return snapshots, profile


def _drifted_condition(evaluation: Evaluation, blocked: str | None) -> Cond:
    if evaluation.verdict == "InsufficientData":
        return Cond("Drifted", UNKNOWN, "InsufficientData",
                    f"{evaluation.samples} samples in the window so far; a verdict needs more")
    names = [f.name for f in evaluation.features or () if f.drifted]
    if evaluation.prediction is not None and evaluation.prediction.drifted:
        names.append("predictions")
    if evaluation.verdict == "Drifted":
        return Cond("Drifted", TRUE, "Drifted", f"drifted: {', '.join(names)} ({evaluation.samples} samples)"
                    + (f"; retrain blocked: {blocked}" if blocked else ""))
    return Cond("Drifted", FALSE, "NotDrifted", f"{evaluation.samples} samples" +
                (f"; drifted below driftShare: {', '.join(names)}" if names else ""))


def _training_run(policy: Body, spec: DriftPolicySpec, name: str, evaluation: Evaluation) -> dict[str, Any]:
    assert spec.action is not None and spec.action.retrain is not None
    meta = policy["metadata"]
    cause = {"time": evaluation.time, "samples": evaluation.samples,
             "drifted": [f.name for f in evaluation.features or () if f.drifted]}
    return {
        "apiVersion": API_VERSION, "kind": TRAINING_RUN.kind,
        "metadata": {"name": name, "namespace": meta["namespace"],
                     "labels": {**L.MANAGED_BY, L.DRIFT_POLICY: meta["name"]},
                     "annotations": {EVALUATION_ANNOTATION: json.dumps(cause)},
                     "ownerReferences": [owner_reference(policy)]},
        "spec": spec.action.retrain.template.wire(),
    }


async def reconcile(ctx: Ctx, key: Key) -> None:
    found = await ctx.validated(DRIFT_POLICY, key, drift_spec.check)
    if found is None:
        REGISTRY.forget(namespace=key[1], name=key[2])
        Memory.forget(key)
        return
    body, spec = found
    target = ctx.store.get(("ModelDeployment", key[1], spec.target_ref.name))
    if target is None or target["metadata"].get("deletionTimestamp"):
        await ctx.write_status(DRIFT_POLICY, body, [
            Cond("Ready", FALSE, "TargetNotFound",
                 f"spec.targetRef.name: ModelDeployment {spec.target_ref.name} does not exist in namespace {key[1]}"),
        ])
        return  # its creation is an event of a referenced object: this policy is reconciled again
    errors = drift_spec.check_target(spec, target)
    if errors:
        message = "; ".join(errors)
        await ctx.write_status(DRIFT_POLICY, body, [Cond("Ready", FALSE, "InvalidSpec", message)])
        raise kopf.PermanentError(message)
    md_status = target.get("status") or {}
    stable = md_status.get("stable")
    if not stable:
        await ctx.write_status(DRIFT_POLICY, body, [
            Cond("Ready", UNKNOWN, "Pending", f"watching ModelDeployment {spec.target_ref.name}; no version "
                 "serves yet"),
        ])
        return  # the target's status changing is an event of a referenced object
    # due? (scheduled in memory: a restarted operator evaluates at once, the window state is stored)
    waited = time.monotonic() - Memory.scraped.get(key, float("-inf"))
    if waited < spec.interval_seconds:
        if ctx.queue is not None:
            ctx.queue.enqueue_after(key, spec.interval_seconds - waited)
        return
    Memory.scraped[key] = time.monotonic()
    now = datetime.datetime.now(datetime.UTC)
    snapshots, profile = await _scrape(ctx, target, stable["revision"])
    status = body.get("status") or {}
    if profile is None:
        await ctx.write_status(DRIFT_POLICY, body, [
            Cond("Ready", UNKNOWN, "NoPodToScrape", f"revision {stable['revision']} has no ready pod that answers"),
        ])
        if ctx.queue is not None:
            ctx.queue.enqueue_after(key, spec.interval_seconds)
        return
    _, misfits = drift_evaluate.plan(spec, profile)
    if misfits:
        message = "; ".join(misfits)
        await ctx.write_status(DRIFT_POLICY, body, [Cond("Ready", FALSE, "InvalidSpec", message)])
        raise kopf.PermanentError(message)
    before = await _state(ctx, key, body)
    state = advance(before, stable["revision"], snapshots, now)
    rows = int((state.counts or {}).get("rows") or 0)
    last = status.get("lastEvaluation")
    if last is None or rows != state.evaluated_rows or before is None or before.revision != state.revision:
        evaluation = drift_evaluate.evaluate(spec, profile, state.counts, times.stamp(now))
        state = after_evaluation(state, spec.window, now)
    else:
        evaluation = Evaluation.model_validate(last)
    if before is None or state != before:
        await _save(ctx, key, body, state)
    REGISTRY.drift(key[1], key[2], evaluation, spec.per_feature_metrics)

    fields: dict[str, Any] = {"lastEvaluation": evaluation.wire(),
                              "driftedFeatures": ", ".join(f.name for f in evaluation.features or () if f.drifted)
                              or None}
    blocked = None
    action = spec.action
    if action is not None and action.type == "Retrain" and action.retrain is not None:
        template = action.retrain.template
        uid = body["metadata"].get("uid")
        owned = {r["metadata"]["name"]: r for r in ctx.store.by_alias(("model", key[1], template.model))
                 if any(o.get("uid") == uid for o in r["metadata"].get("ownerReferences") or ())}
        records = [RetrainRecord.model_validate(r) for r in status.get("retrains") or ()]
        plan = drift_retrain.decide(key[2], action.retrain, records, owned, md_status,
                                    evaluation.verdict == "Drifted", now)
        runs = resource(TRAINING_RUN)
        for name in plan.delete:
            await ctx.api.delete(runs, key[1], name)
        if plan.create is not None:
            await ctx.api.apply(runs, _training_run(body, spec, plan.create, evaluation))
            await ctx.event(DRIFT_POLICY, body, "Retraining", f"created TrainingRun {plan.create}: "
                            f"{_drifted_condition(evaluation, None).message}", warning=True)
        blocked = plan.blocked
        fields["retrains"] = [r.wire() for r in plan.records] or None
        fields["nextRetrainPossible"] = plan.next_possible
    conditions = [
        Cond("Ready", TRUE, "Monitoring", f"revision {stable['revision']}: {len(snapshots)} pod(s) scraped"),
        _drifted_condition(evaluation, blocked),
    ]
    if spec.health is not None and evaluation.verdict != "InsufficientData":
        conditions.append(Cond("ServiceHealthy", FALSE, "MonitorFailed", evaluation.unhealthy)
                          if evaluation.unhealthy else Cond("ServiceHealthy", TRUE, "WithinLimits", ""))
    try:
        await ctx.write_status(DRIFT_POLICY, body, conditions, fields)
    except kopf.TemporaryError:
        Memory.scraped.pop(key, None)  # refused (decided from an older view): evaluate again when retried
        raise
    if ctx.queue is not None:
        ctx.queue.enqueue_after(key, spec.interval_seconds)
