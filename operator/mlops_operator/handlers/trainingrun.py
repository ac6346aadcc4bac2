"""TrainingRun reconcile: validate, then (later issues) build and follow the training Job."""

from __future__ import annotations

from ..api import TRAINING_RUN
from ..conditions import UNKNOWN, Cond
from ..training import spec as training_spec
from .context import Ctx
from .core import Body, Key, RefKey


def known_as(body: Body) -> set[RefKey]:
    """A TrainingRun is known by its model stream: ModelDeployments following it depend on it."""
    model = (body.get("spec") or {}).get("model")
    return {("model", body["metadata"]["namespace"], model)} if model else set()


async def reconcile(ctx: Ctx, key: Key) -> None:
    found = await ctx.validated(TRAINING_RUN, key, training_spec.check)
    if found is None:
        return
    body, _spec = found
    await ctx.write_status(TRAINING_RUN, body, [
        Cond("Ready", UNKNOWN, "Pending", "the spec is valid; the run has not started"),
    ])
