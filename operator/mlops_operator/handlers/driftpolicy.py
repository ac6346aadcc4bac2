"""DriftPolicy reconcile: validate, find the target, (later issues) evaluate drift and retrain."""

from __future__ import annotations

import kopf

from ..api import DRIFT_POLICY
from ..conditions import FALSE, UNKNOWN, Cond
from ..drift import spec as drift_spec
from .context import Ctx
from .core import Body, Key, RefKey


def refers_to(body: Body) -> set[RefKey]:
    target = ((body.get("spec") or {}).get("targetRef") or {}).get("name")
    return {("ModelDeployment", body["metadata"]["namespace"], target)} if target else set()


async def reconcile(ctx: Ctx, key: Key) -> None:
    found = await ctx.validated(DRIFT_POLICY, key, drift_spec.check)
    if found is None:
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
    await ctx.write_status(DRIFT_POLICY, body, [
        Cond("Ready", UNKNOWN, "Pending", f"watching ModelDeployment {spec.target_ref.name}; no evaluation yet"),
    ])
