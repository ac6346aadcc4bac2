"""TrainingRun reconcile: validate, build and follow the training Job, record the result. Thin:
the decisions are training/run.py's, the Job is builders/trainingrun.py's."""

from __future__ import annotations

import datetime

from ..api import TRAINING_RUN
from ..api import labels as L
from ..api.trainingrun import TrainingRunSpec
from ..builders.trainingrun import training_jobs, workers_service
from ..conditions import FALSE, Cond
from ..controller.client import CONFIGMAPS, JOBS, SERVICES
from ..controller.store import Body, Key, RefKey
from ..training import pipeline
from ..training import spec as training_spec
from ..training.run import decide
from ..training.workers import combine, finished_job
from . import pods
from .context import Ctx

PIPELINE_RECHECK_SECONDS = 10


def known_as(body: Body) -> set[RefKey]:
    """A TrainingRun is known by its model stream: ModelDeployments following it depend on it."""
    model = (body.get("spec") or {}).get("model")
    return {("model", body["metadata"]["namespace"], model)} if model else set()


async def _pipeline_problem(ctx: Ctx, namespace: str, spec: TrainingRunSpec) -> Cond | None:
    """A pipeline that cannot run: its ConfigMap missing (recovers), or not runnable offline (invalid)."""
    p = spec.pipeline
    if p is None:
        return None
    if p.inline is not None:
        errors = pipeline.check(p.inline, "spec.pipeline.inline")
    else:
        assert p.config_map_key_ref is not None
        ref = p.config_map_key_ref
        cm = await ctx.api.get(CONFIGMAPS, namespace, ref.name)
        text = ((cm or {}).get("data") or {}).get(ref.key)
        if text is None:
            missing = f"ConfigMap {ref.name}" if cm is None else f"key {ref.key} of ConfigMap {ref.name}"
            return Cond("Ready", FALSE, "PipelineNotFound",
                        f"spec.pipeline.configMapKeyRef: {missing} does not exist in namespace {namespace}")
        errors = pipeline.check(text, f"spec.pipeline.configMapKeyRef ({ref.name}/{ref.key})")
    return Cond("Ready", FALSE, "InvalidSpec", "; ".join(errors)) if errors else None


async def _indexed(ctx: Ctx, spec: TrainingRunSpec, jobs: dict[str, Body]) -> bool:
    """A distributed run's form: the one its Jobs already have, else an Indexed Job where the cluster
    serves completionMode (found by discovery), else one Job per worker."""
    if spec.distributed is None:
        return False
    if jobs:
        return not any(L.RANK in (j["metadata"].get("labels") or {}) for j in jobs.values())
    return await ctx.api.serves_field("batch/v1", "io.k8s.api.batch.v1.JobSpec", "completionMode")


async def reconcile(ctx: Ctx, key: Key) -> None:
    found = await ctx.validated(TRAINING_RUN, key, training_spec.check)
    if found is None:
        return
    body, spec = found
    status = body.get("status") or {}
    children = ctx.store.children.get(key, {})
    jobs = dict(children.get("Job", {}))
    s = ctx.settings
    wanted = training_jobs(body, spec, runtime_image=s.runtime_image, artifact_root=s.artifact_root,
                           copy_labels=s.copy_labels, defaults=s.child_resources,
                           indexed=await _indexed(ctx, spec, jobs))
    job = combine(jobs, [j["metadata"]["name"] for j in wanted])
    if job is None and not status.get("startedGeneration"):
        problem = await _pipeline_problem(ctx, key[1], spec)
        if problem is not None:
            await ctx.write_status(TRAINING_RUN, body, [problem])
            if problem.reason == "PipelineNotFound" and ctx.queue is not None:
                ctx.queue.enqueue_after(key, PIPELINE_RECHECK_SECONDS)
            return
    now = datetime.datetime.now(datetime.UTC)
    decision = decide(body, spec, job, None, now)
    if decision.needs_pods:
        assert job is not None
        decision = decide(body, spec, job, await pods.job_pods(ctx, key[1], job), now)
    if decision.apply_job:
        if spec.distributed is not None:  # the workers' names first: rank 0 is found by its name
            service = workers_service(body, spec, s.copy_labels)
            if service["metadata"]["name"] not in children.get("Service", {}):
                ctx.store.upsert_child(key, "Service", await ctx.api.create_once(SERVICES, service))
        for manifest in wanted:
            if manifest["metadata"]["name"] not in jobs:
                ctx.store.upsert_child(key, "Job", await ctx.api.create_once(JOBS, manifest))
    stop = [n for n, j in jobs.items() if decision.delete_job or (decision.stop_workers and not finished_job(j))]
    for name in stop:
        await ctx.api.delete(JOBS, key[1], name)
        ctx.store.delete_child(key, "Job", name)
    await ctx.write_status(TRAINING_RUN, body, decision.conditions, decision.status)
    if decision.requeue_after is not None and ctx.queue is not None:
        ctx.queue.enqueue_after(key, decision.requeue_after)
