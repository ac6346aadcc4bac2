"""Registry calls for a TrainingRun or a ModelDeployment: the owned Jobs that make them (started and deleted as
rollout/registry.py and training/register.py decide) and their answers, read from the Pods' termination
messages once a Job has finished."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ..api import labels as L
from ..api.artifacts import ArtifactError
from ..api.registry import MlflowAccess, RegistryResult, parse_result
from ..api.scheduling import Scheduling
from ..builders.registry import CONTAINER, registry_job
from ..controller.client import JOBS
from ..controller.store import Body, Key
from ..rollout.base import job_finished
from . import pods
from .context import Ctx


def registry_jobs(children: Mapping[str, Mapping[str, Body]]) -> dict[str, Body]:
    """A parent's registry Jobs, by name."""
    return {n: j for n, j in children.get("Job", {}).items() if L.REGISTRY in (j["metadata"].get("labels") or {})}


async def answers(ctx: Ctx, namespace: str, jobs: Mapping[str, Body]) -> dict[str, RegistryResult | ArtifactError]:
    """The answers of the registry Jobs that have finished (a Pod list each: only once, they are then deleted)."""
    return {name: await pods.answer(ctx, namespace, job, CONTAINER, parse_result, "the registry Job finished "
                                    "without an answer (its Pod is gone or never ran; see its Events)")
            for name, job in jobs.items() if job_finished(job)}


async def start(ctx: Ctx, key: Key, parent: Body, calls: Iterable[tuple[str, str, list[str]]], access: MlflowAccess,
                placement: Scheduling | None) -> None:
    s = ctx.settings
    for name, purpose, args in calls:
        job = registry_job(parent, name, purpose, args, access, runtime_image=s.runtime_image, placement=placement,
                           copy_labels=s.copy_labels, defaults=s.child_resources)
        ctx.store.upsert_child(key, "Job", await ctx.api.create_once(JOBS, job))


async def delete(ctx: Ctx, key: Key, names: Iterable[str]) -> None:
    for name in names:
        await ctx.api.delete(JOBS, key[1], name)
        ctx.store.delete_child(key, "Job", name)
