"""DriftPolicy reconcile: validate, find the target, evaluate drift when due, retrain when allowed.
Thin: the decisions are drift/decide.py's (over drift/evaluate.py, window.py and retrain.py), the
manifests builders/driftpolicy.py's; this module scrapes the stable revision's pods and writes what was
decided."""

from __future__ import annotations

import datetime
import time
from typing import Any

from ..api import DRIFT_POLICY, TRAINING_RUN
from ..api.artifacts import Profile
from ..api.driftpolicy import RetrainRecord
from ..builders import driftpolicy as build
from ..conditions import FALSE, UNKNOWN, Cond
from ..controller import endpoints
from ..controller.client import CONFIGMAPS, controller_uid, name_conflict
from ..controller.errors import InvalidSpec, Retry
from ..controller.store import Body, Key, RefKey
from ..drift import decide, performance
from ..drift import evaluate as drift_evaluate
from ..drift import retrain as drift_retrain
from ..drift import spec as drift_spec
from ..drift.window import WindowState
from ..metrics import REGISTRY
from . import pods
from .context import Ctx, resource


def refers_to(body: Body) -> set[RefKey]:
    target = ((body.get("spec") or {}).get("targetRef") or {}).get("name")
    return {("ModelDeployment", body["metadata"]["namespace"], target)} if target else set()


async def _state(ctx: Ctx, key: Key, policy: Body) -> WindowState | None:
    if key in ctx.drift.states:
        return ctx.drift.states[key]
    cm = await ctx.api.get(CONFIGMAPS, key[1], build.state_name(policy))
    if cm is not None and controller_uid(cm) != policy["metadata"].get("uid"):
        raise name_conflict(build.window_configmap(policy, ""), cm)  # someone else's ConfigMap: never read
    text = build.window_state(cm)
    if not text:
        return None
    ctx.drift.states[key] = WindowState.model_validate_json(text)
    return ctx.drift.states[key]


async def _save(ctx: Ctx, key: Key, policy: Body, state: WindowState) -> None:
    # a state in memory was saved by this process or read from this policy's own ConfigMap
    await ctx.api.ensure(CONFIGMAPS, build.window_configmap(policy, state.model_dump_json()), key in ctx.drift.states)
    ctx.drift.states[key] = state


async def _scrape(ctx: Ctx, md: Body, revision: str) -> tuple[dict[str, Any], Profile | None]:
    """Every ready pod's monitoring snapshot, and the reference profile they count against."""
    name = md["metadata"]["name"]
    ready = await pods.ready_pods(ctx, md["metadata"]["namespace"], name, revision)
    snapshots = await endpoints.get_json([(p["metadata"]["name"], f"{pods.base_url(p)}/v2/models/{name}/monitoring")
                                          for p in ready])
    digests = {s.get("profileDigest") for s in snapshots.values()} - {None}
    profile = next((ctx.drift.profiles[d] for d in digests if d in ctx.drift.profiles), None)
    if profile is None and snapshots:
        pod = next(p for p in ready if p["metadata"]["name"] in snapshots)
        found = await endpoints.get_json([("profile", f"{pods.base_url(pod)}/v2/models/{name}/profile")],
                                         limit=endpoints.MAX_PROFILE_BYTES)
        if "profile" in found:
            profile = Profile.model_validate(found["profile"])
            for d in digests:
                ctx.drift.profiles[d] = profile
    return snapshots, profile


async def reconcile(ctx: Ctx, key: Key) -> None:
    found = await ctx.validated(DRIFT_POLICY, key, drift_spec.check)
    if found is None:
        REGISTRY.forget(namespace=key[1], name=key[2])
        ctx.drift.forget(key)
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
        raise InvalidSpec(message)
    md_status = target.get("status") or {}
    stable = md_status.get("stable")
    if not stable:
        await ctx.write_status(DRIFT_POLICY, body, [
            Cond("Ready", UNKNOWN, "Pending", f"watching ModelDeployment {spec.target_ref.name}; no version "
                 "serves yet"),
        ])
        return  # the target's status changing is an event of a referenced object
    wait = decide.due(ctx.drift.scraped.get(key), spec.interval_seconds, time.monotonic())
    if wait > 0:
        if ctx.queue is not None:
            ctx.queue.enqueue_after(key, wait)
        return
    ctx.drift.scraped[key] = time.monotonic()
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
        raise InvalidSpec(message)
    before = await _state(ctx, key, body)
    judged = decide.judge(spec, profile, before, stable["revision"], snapshots, status.get("lastEvaluation"), now)
    if judged.state_changed:
        await _save(ctx, key, body, judged.state)
    evaluation = judged.evaluation
    REGISTRY.drift(key[1], key[2], evaluation, spec.per_feature_metrics)

    fields: dict[str, Any] = {"lastEvaluation": evaluation.wire(),
                              "driftedFeatures": ", ".join(decide.drifted_features(evaluation)) or None}
    judged_quality = None
    if spec.performance is not None:
        run = ctx.store.get((TRAINING_RUN.kind, key[1], stable.get("trainingRun") or ""))
        judged_quality = performance.judge(spec.performance, md_status.get("liveQuality"), stable["revision"],
                                           performance.training_metric(run, spec.performance.metric))
        fields["lastPerformance"] = judged_quality.wire()
    degraded = judged_quality is not None and judged_quality.verdict == "Degraded"
    blocked = None
    action = spec.action
    if action is not None and action.type == "Retrain" and action.retrain is not None:
        template = action.retrain.template
        uid = body["metadata"].get("uid")
        owned = {r["metadata"]["name"]: r for r in ctx.store.by_alias(("model", key[1], template.model))
                 if any(o.get("uid") == uid for o in r["metadata"].get("ownerReferences") or ())}
        records = [RetrainRecord.model_validate(r) for r in status.get("retrains") or ()]
        plan = drift_retrain.decide(key[2], action.retrain, records, owned, md_status,
                                    evaluation.verdict == "Drifted" or degraded, now)
        runs = resource(TRAINING_RUN)
        for name in plan.delete:
            await ctx.api.delete(runs, key[1], name)
        if plan.create is not None and plan.create not in owned:
            await ctx.api.create_once(runs, build.retrain_run(body, spec, plan.create, evaluation))
            why = [decide.drifted_condition(evaluation, None).message] if evaluation.verdict == "Drifted" else []
            why += [judged_quality.message] if judged_quality is not None and degraded else []
            await ctx.event(DRIFT_POLICY, body, "Retraining", f"created TrainingRun {plan.create}: "
                            f"{'; '.join(why)}", warning=True)
        blocked = plan.blocked
        fields["retrains"] = [r.wire() for r in plan.records] or None
        fields["nextRetrainPossible"] = plan.next_possible
    conditions = decide.conditions(spec, stable["revision"], len(snapshots), evaluation, blocked)
    if judged_quality is not None:
        conditions.append(performance.condition(judged_quality, blocked if degraded else None))
    try:
        await ctx.write_status(DRIFT_POLICY, body, conditions, fields)
    except Retry:
        ctx.drift.scraped.pop(key, None)  # refused (decided from an older view): evaluate again when retried
        raise
    if ctx.queue is not None:
        ctx.queue.enqueue_after(key, spec.interval_seconds)
