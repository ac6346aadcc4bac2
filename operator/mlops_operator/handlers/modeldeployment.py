"""ModelDeployment reconcile: validate, resolve the model version, (later issues) roll it out."""

from __future__ import annotations

from ..api import MODEL_DEPLOYMENT
from ..conditions import FALSE, UNKNOWN, Cond
from ..rollout import spec as rollout_spec
from .context import Ctx
from .core import Body, Key, RefKey

# how long to wait before looking again for something that may appear without an event
NO_VERSION_RECHECK = 300


def refers_to(body: Body) -> set[RefKey]:
    stream = ((body.get("spec") or {}).get("model") or {}).get("fromTrainingRuns", {}).get("model")
    return {("model", body["metadata"]["namespace"], stream)} if stream else set()


def known_as(body: Body) -> set[RefKey]:
    return {("ModelDeployment", body["metadata"]["namespace"], body["metadata"]["name"])}


async def reconcile(ctx: Ctx, key: Key) -> None:
    found = await ctx.validated(MODEL_DEPLOYMENT, key, rollout_spec.check, invalid_also=("Available",))
    if found is None:
        return
    body, spec = found
    stream = spec.model.from_training_runs
    if stream is not None:
        runs = ctx.store.by_alias(("model", key[1], stream.model))
        if rollout_spec.newest_passing_run(runs) is None:
            message = (f"no TrainingRun of model {stream.model} in namespace {key[1]} has passed its "
                       "gates yet")
            await ctx.write_status(MODEL_DEPLOYMENT, body, [
                Cond("Ready", FALSE, "NoModelVersion", message),
                Cond("Available", FALSE, "NoModelVersion", message),
            ])
            return
    await ctx.write_status(MODEL_DEPLOYMENT, body, [
        Cond("Ready", UNKNOWN, "Pending", "the spec is valid and a model version is known; not rolled out yet"),
    ])
