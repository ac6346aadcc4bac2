"""TrainingRun reconcile: validate, then (later issues) build and follow the training Job."""

from __future__ import annotations

import kopf

from ..api import TRAINING_RUN
from ..api.trainingrun import TrainingRunSpec
from ..conditions import FALSE, UNKNOWN, Cond
from ..training import spec as training_spec
from ..validation import parse
from .context import Ctx
from .core import Body, Key, RefKey


def known_as(body: Body) -> set[RefKey]:
    """A TrainingRun is known by its model stream: ModelDeployments following it depend on it."""
    model = (body.get("spec") or {}).get("model")
    return {("model", body["metadata"]["namespace"], model)} if model else set()


def invalid(message: str) -> list[Cond]:
    return [Cond("Ready", FALSE, "InvalidSpec", message)]


async def reconcile(ctx: Ctx, key: Key) -> None:
    body = ctx.store.get(key)
    if body is None or body["metadata"].get("deletionTimestamp"):
        return
    spec, errors = parse(TrainingRunSpec, body.get("spec"))
    if spec is not None:
        errors = training_spec.check(spec)
    if errors:
        await ctx.write_status(TRAINING_RUN, body, invalid("; ".join(errors)))
        raise kopf.PermanentError("; ".join(errors))
    await ctx.write_status(TRAINING_RUN, body, [
        Cond("Ready", UNKNOWN, "Pending", "the spec is valid; the run has not started"),
    ])
