"""TrainingRun reconcile: validate, build and follow the training Job, record the result. Thin:
the decisions are training/run.py's, the Job is builders/trainingrun.py's."""

from __future__ import annotations

import datetime
from typing import Any

from ..api import TRAINING_RUN
from ..api import labels as L
from ..api.trainingrun import TrainingRunSpec
from ..builders.trainingrun import (
    TRAINER_GROUP,
    job_names,
    train_job,
    training_jobs,
    trial_run,
    workers_name,
    workers_service,
)
from ..conditions import FALSE, Cond
from ..controller.client import CONFIGMAPS, JOBS, SERVICES, Resource
from ..controller.store import Body, Key, RefKey
from ..training import pipeline, sweep
from ..training import spec as training_spec
from ..training.register import Registering, register
from ..training.run import decide, finished, reference_for, start_record, with_job
from ..training.workers import combine, finished_job, from_train_job, train_job_pods_selector
from . import pods
from . import registry as calls_of
from .context import Ctx, resource

PIPELINE_RECHECK_SECONDS = 10
ENGINE_RECHECK_SECONDS = 60  # a run waiting for Kubeflow Trainer to be installed
TRAIN_JOB_POLL_SECONDS = 10  # a running TrainJob is read this often (TrainJobs are not watched)


def _sweep_owner(body: Body) -> str | None:
    return next((r["name"] for r in body["metadata"].get("ownerReferences") or ()
                 if r.get("kind") == TRAINING_RUN.kind and r.get("controller")), None)


def known_as(body: Body) -> set[RefKey]:
    """A TrainingRun is known by its model stream: ModelDeployments following it depend on it. A sweep's
    trial is known only to its sweep: the sweep offers the best trial, ModelDeployments never see the rest."""
    ns, sweep = body["metadata"]["namespace"], _sweep_owner(body)
    if sweep is not None:
        return {("sweep", ns, sweep)}
    model = (body.get("spec") or {}).get("model")
    return {("model", ns, model)} if model else set()


def refers_to(body: Body) -> set[RefKey]:
    """A sweep depends on its trials."""
    if not (body.get("spec") or {}).get("sweep"):
        return set()
    return {("sweep", body["metadata"]["namespace"], body["metadata"]["name"])}


async def _registration(ctx: Ctx, key: Key, body: Body, spec: TrainingRunSpec,
                        now: datetime.datetime) -> tuple[Registering, dict[str, Body]]:
    """What spec.register asks for now (from the stored status and the registry Jobs' answers), and those Jobs."""
    jobs = calls_of.registry_jobs(ctx.store.children.get(key, {}))
    return register(body, spec, jobs, await calls_of.answers(ctx, key[1], jobs), now), jobs


async def _write(ctx: Ctx, key: Key, body: Body, spec: TrainingRunSpec, conditions: list[Cond],
                 status: dict[str, Any], reg: Registering, requeue: float | None) -> None:
    """Status with the registration's part; then the registry Jobs started and deleted, and the next look."""
    if reg.start:
        assert spec.register_in is not None
        await calls_of.start(ctx, key, body, reg.start, spec.register_in.mlflow, spec.scheduling)
    await ctx.write_status(TRAINING_RUN, body, conditions + ([reg.condition] if reg.condition else []),
                           {**status, **reg.status})
    await calls_of.delete(ctx, key, reg.delete)
    for reason, message, warning in reg.events:
        await ctx.event(TRAINING_RUN, body, reason, message, warning)
    requeue = min((r for r in (requeue, reg.requeue_after) if r is not None), default=None)
    if requeue is not None and ctx.queue is not None:
        ctx.queue.enqueue_after(key, requeue)


async def _sweep(ctx: Ctx, key: Key, body: Body, spec: TrainingRunSpec) -> None:
    """A sweep trains nothing itself: it starts its trials in order and, once all finished, offers the best."""
    assert spec.sweep is not None
    now = datetime.datetime.now(datetime.UTC)
    reg, _ = await _registration(ctx, key, body, spec, now)
    if finished(body.get("status") or {}):
        await _write(ctx, key, body, spec, [], {}, reg, None)
        return
    owned = sweep.owned_trials(body, ctx.store.by_alias(("sweep", key[1], key[2])))
    decision = sweep.decide(body, spec, owned, now)
    table = decision.status["trials"]  # each trial's name and params, as decided
    for i in decision.start:
        await ctx.api.create_once(resource(TRAINING_RUN), trial_run(
            body, table[i]["name"], sweep.trial_spec(spec, table[i]["params"]), ctx.settings.copy_labels))
    await _write(ctx, key, body, spec, decision.conditions, decision.status, reg, None)


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


async def _train_job(ctx: Ctx, key: Key, body: Body, spec: TrainingRunSpec) -> tuple[Resource, Body | None] | None:
    """A run delegated to Kubeflow Trainer: the TrainJob resource the cluster serves and the run's TrainJob
    (read by name: TrainJobs are not watched, a running one is polled); None, said in status, when the
    cluster serves no TrainJobs."""
    version = await ctx.api.preferred_version(TRAINER_GROUP, "trainjobs")
    if version is None:
        await ctx.write_status(TRAINING_RUN, body, [Cond(
            "Ready", FALSE, "EngineNotInstalled", f"spec.distributed.engine: KubeflowTrainer, but the cluster "
            f"serves no trainjobs.{TRAINER_GROUP} (install Kubeflow Trainer, or use engine Jobs)")])
        if ctx.queue is not None:
            ctx.queue.enqueue_after(key, ENGINE_RECHECK_SECONDS)
        return None
    res = Resource(TRAINER_GROUP, version.split("/", 1)[1], "trainjobs")
    if finished(body.get("status") or {}) and spec.ttl_seconds_after_finished is None:
        return res, None
    return res, await ctx.api.get(res, key[1], workers_name(body))


async def reconcile(ctx: Ctx, key: Key) -> None:
    found = await ctx.validated(TRAINING_RUN, key, training_spec.check)
    if found is None:
        return
    body, spec = found
    if spec.sweep is not None:
        await _sweep(ctx, key, body, spec)
        return
    status = body.get("status") or {}
    children = ctx.store.children.get(key, {})
    now = datetime.datetime.now(datetime.UTC)
    reg, registry_jobs = await _registration(ctx, key, body, spec, now)
    jobs = {n: j for n, j in children.get("Job", {}).items() if n not in registry_jobs}
    s = ctx.settings
    delegated = spec.distributed is not None and spec.distributed.engine == "KubeflowTrainer"
    indexed = False
    names: list[str] = []  # the Jobs' names (this operator's own Jobs; a TrainJob's are the trainer's)
    if delegated:
        assert spec.distributed is not None
        followed = await _train_job(ctx, key, body, spec)
        if followed is None:
            return
        res, train = followed
        job = from_train_job(train, spec.distributed.workers)
    else:
        res = JOBS
        indexed = await _indexed(ctx, spec, jobs)
        names = job_names(body, spec, indexed)
        job = combine(jobs, names)
    if job is None and not status.get("startedGeneration"):
        problem = await _pipeline_problem(ctx, key[1], spec)
        if problem is not None:
            await ctx.write_status(TRAINING_RUN, body, [problem])
            if problem.reason == "PipelineNotFound" and ctx.queue is not None:
                ctx.queue.enqueue_after(key, PIPELINE_RECHECK_SECONDS)
            return
    reference = reference_for(body, spec, ctx.store.by_alias(("model", key[1], spec.model)))
    decision = decide(body, spec, job, None, now, reference)
    if decision.needs_pods:
        assert job is not None
        found_pods = await pods.pods(ctx, key[1], train_job_pods_selector(job["metadata"]["name"])) if delegated \
            else await pods.job_pods(ctx, key[1], job)
        decision = decide(body, spec, job, found_pods, now, reference)
    if decision.apply_job:
        if spec.distributed is not None and not delegated:  # the workers' names first: rank 0 is found by its name
            service = workers_service(body, spec, s.copy_labels)
            if service["metadata"]["name"] not in children.get("Service", {}):
                ctx.store.upsert_child(key, "Service", await ctx.api.create_once(SERVICES, service))
        recorded = start_record(decision.status)
        wanted = [train_job(body, spec, api_version=f"{res.group}/{res.version}", runtime_image=s.runtime_image,
                            artifact_root=s.artifact_root, copy_labels=s.copy_labels, defaults=s.child_resources,
                            record=recorded)
                  ] if delegated else training_jobs(body, spec, runtime_image=s.runtime_image,
                                                    artifact_root=s.artifact_root, copy_labels=s.copy_labels,
                                                    defaults=s.child_resources, indexed=indexed,
                                                    record=recorded)
        for manifest in wanted:
            if manifest["metadata"]["name"] not in jobs:
                made = await ctx.api.create_once(res, manifest)
                if not delegated:
                    ctx.store.upsert_child(key, "Job", made)
                    jobs[made["metadata"]["name"]] = made
        created = combine(jobs, names) if names else None
        if created is not None:  # one status write for the create and the Job it made
            decision = with_job(body, spec, decision, created, now, reference)
    if delegated and decision.delete_job and job is not None:
        await ctx.api.delete(res, key[1], job["metadata"]["name"])
    stop = [n for n, j in jobs.items() if decision.delete_job or (decision.stop_workers and not finished_job(j))]
    for name in stop:
        await ctx.api.delete(JOBS, key[1], name)
        ctx.store.delete_child(key, "Job", name)
    requeue = decision.requeue_after
    if delegated and not finished(status) and not decision.final:
        requeue = min(requeue or TRAIN_JOB_POLL_SECONDS, TRAIN_JOB_POLL_SECONDS)
    await _write(ctx, key, body, spec, decision.conditions, decision.status, reg, requeue)
