"""ModelDeployment reconcile: validate, resolve the model version, roll it out. Thin: the decisions
are rollout/machine.py's, the manifests builders/modeldeployment.py's; this module reads what the
decision asks for (the analysis report, ready pods, live counters) and applies what it decided."""

from __future__ import annotations

import asyncio
import datetime
import urllib.parse
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

from ..api import MODEL_DEPLOYMENT
from ..api import labels as L
from ..api.artifacts import ArtifactError
from ..api.modeldeployment import ModelDeploymentSpec, PodCounters, RevisionRef
from ..api.quality import parse_quality
from ..api.reports import AnalysisReport, parse_report
from ..builders import modeldeployment as build
from ..builders.common import without_spread
from ..builders.quality import CONTAINER as QUALITY_CONTAINER
from ..builders.quality import quality_job
from ..conditions import FALSE, Cond
from ..controller import endpoints
from ..controller.client import DEPLOYMENTS, JOBS, SERVICES, Resource, name_conflict
from ..controller.errors import Retry
from ..controller.store import Body, Key, RefKey
from ..metrics import REGISTRY
from ..rollout import analysis as rollout_analysis
from ..rollout import machine
from ..rollout import quality as rollout_quality
from ..rollout import registry as rollout_registry
from ..rollout import spec as rollout_spec
from ..rollout.base import job_finished
from . import pods
from . import registry as calls_of
from .context import Ctx

GATEWAY_GROUP = "gateway.networking.k8s.io"
ROLLOUT_OUTCOMES = ("Promoted", "RolledBack")  # the events that end a rollout (an abort is a RolledBack)


def refers_to(body: Body) -> set[RefKey]:
    stream = ((body.get("spec") or {}).get("model") or {}).get("fromTrainingRuns", {}).get("model")
    return {("model", body["metadata"]["namespace"], stream)} if stream else set()


def known_as(body: Body) -> set[RefKey]:
    return {("ModelDeployment", body["metadata"]["namespace"], body["metadata"]["name"])}


def _by_label(children: dict[str, Body], label: str) -> dict[str, Body]:
    return {c["metadata"].get("labels", {}).get(label): c for c in children.values()
            if c["metadata"].get("labels", {}).get(label)}


async def _ready_urls(ctx: Ctx, md: Body) -> dict[str, list[str]]:
    """Ready pods' base URLs by revision (read when an analysis starts, never in steady state)."""
    meta = md["metadata"]
    urls: dict[str, list[str]] = {}
    for pod in await pods.pods(ctx, meta["namespace"], L.selector({L.MODEL_DEPLOYMENT: meta["name"]})):
        rev = pod["metadata"].get("labels", {}).get(L.REVISION)
        if rev and pods.ready(pod):
            urls.setdefault(rev, []).append(pods.base_url(pod))
    return {rev: sorted(u) for rev, u in urls.items()}


async def _report(ctx: Ctx, namespace: str, job: Body) -> AnalysisReport | ArtifactError:
    """The analysis Job's report, from its Pod's termination message (as a TrainingRun's result)."""
    return await pods.answer(ctx, namespace, job, "analyze", parse_report,
                             "the analysis Job finished without a report (its Pod is gone or never ran)")


async def _live(ctx: Ctx, md: Body, spec: ModelDeploymentSpec, rev: str) -> dict[str, PodCounters]:
    """A revision's pods' cumulative counters: from their monitoring endpoints, or from Prometheus. For
    machine.EVERY_REVISION, every revision's pods' with their prediction sketches: from the pods (the sketches
    are not in /metrics)."""
    name = md["metadata"]["name"]
    every = rev == machine.EVERY_REVISION
    prometheus = spec.analysis.prometheus if spec.analysis is not None else None
    if prometheus is not None and not every:
        queries = rollout_analysis.prometheus_queries(md["metadata"]["namespace"], build.deployment_name(md, rev))
        base = prometheus.address.rstrip("/") + "/api/v1/query?query="
        answers = await endpoints.get_json([(k, base + urllib.parse.quote(q)) for k, q in queries.items()],
                                           ctx.endpoints)
        if len(answers) < len(queries):
            raise Retry(f"spec.analysis.prometheus: {prometheus.address} did not answer", delay=5)
        return rollout_analysis.counters_from_prometheus(answers)
    ready = await pods.ready_pods(ctx, md["metadata"]["namespace"], name, None if every else rev)
    revisions = {p["metadata"]["name"]: p["metadata"].get("labels", {}).get(L.REVISION) for p in ready}
    found = await endpoints.get_json([(p["metadata"]["name"], f"{pods.base_url(p)}/v2/models/{name}/monitoring")
                                      for p in ready])
    return {pod: rollout_analysis.counters(snapshot, revisions[pod] if every else None, sketch=every)
            for pod, snapshot in found.items()}


async def _mirror(ctx: Ctx, md: Body, mirroring: machine.Mirroring) -> None:
    """Shadow traffic on (again) or off on the revision's ready pods (runtime/mirror.py). A pod that does not answer
    is told at the next reconcile; one never told again stops by itself when the setting's seconds run out."""
    name = md["metadata"]["name"]
    ready = await pods.ready_pods(ctx, md["metadata"]["namespace"], name, mirroring.revision)
    setting = {"percent": mirroring.percent, "tolerance": mirroring.tolerance, "seconds": mirroring.seconds}
    await endpoints.get_json([(p["metadata"]["name"], f"{pods.base_url(p)}/v2/models/{name}/mirror") for p in ready],
                             post=setting)


async def _together(writes: list[Coroutine[Any, Any, None]]) -> None:
    """Independent writes at once; one alone awaited as it is (most reconciles write nothing: a task each was
    a tenth of a reconcile that found nothing to change)."""
    if len(writes) == 1:
        await writes[0]
    else:
        await asyncio.gather(*writes)


async def _apply(ctx: Ctx, key: Key, md: Body, spec: ModelDeploymentSpec, plan: machine.Plan,
                 deployments: dict[str, Body], services: dict[str, Body], jobs: dict[str, Body],
                 route_version: str | None) -> None:
    s = ctx.settings

    async def revision(rev: str, version: RevisionRef, replicas: int) -> None:
        observed = deployments.get(rev)
        # a revision's pod template is written from the spec only while the spec still describes it
        # (the same hash): the stable revision keeps the runtime it was analysed with, whatever the
        # candidate's spec says; its size is all that changes
        described = version.model_uri is not None and \
            build.revision(spec, version.digest or version.model_uri) == rev
        if (observed is not None and not described) or version.model_uri is None or \
                (observed is not None and replicas == 0):
            if observed is not None and (observed.get("spec") or {}).get("replicas") != replicas:
                patched = await ctx.api.patch(DEPLOYMENTS, key[1], observed["metadata"]["name"],
                                              {"spec": {"replicas": replicas}})
                if patched:
                    ctx.store.upsert_child(key, "Deployment", patched)
            return
        desired = build.deployment(md, spec, rev, model_uri=version.model_uri, digest=version.digest,
                                   replicas=replicas, runtime_image=s.runtime_image, copy_labels=s.copy_labels,
                                   defaults=s.child_resources)
        if observed is not None and (observed.get("spec") or {}).get("replicas") == replicas and \
                observed["metadata"].get("annotations", {}).get(build.TEMPLATE_HASH) == \
                desired["metadata"]["annotations"][build.TEMPLATE_HASH]:
            return
        ctx.store.upsert_child(key, "Deployment", await ctx.api.ensure(DEPLOYMENTS, desired, observed is not None))

    async def traffic(preview: bool, selected: str | None) -> None:
        desired = build.service(md, selected, preview, copy_labels=s.copy_labels)
        observed = services.get(desired["metadata"]["name"])
        wanted = desired["spec"]["selector"]
        ports = {p["name"] for p in desired["spec"]["ports"]}
        if observed is None or (observed.get("spec") or {}).get("selector") != wanted or \
                {p.get("name") for p in (observed.get("spec") or {}).get("ports") or ()} != ports:
            applied = await ctx.api.ensure(SERVICES, desired, observed is not None)
            if (applied.get("spec") or {}).get("selector") != wanted:
                # keys someone else added (kubectl edit) are not the operator's to drop by an apply:
                # the selector decides where traffic goes, so it is replaced as a whole
                applied = await ctx.api.patch(SERVICES, key[1], desired["metadata"]["name"],
                                              [{"op": "replace", "path": "/spec/selector", "value": wanted}],
                                              patch_type="json") or applied
            ctx.store.upsert_child(key, "Service", applied)

    # independent writes go together (one round trip, not one per child); revisions before traffic
    await _together([revision(rev, version, replicas) for rev, (version, replicas) in plan.replicas.items()])
    for rev in plan.delete:
        name = deployments[rev]["metadata"]["name"]
        await ctx.api.delete(DEPLOYMENTS, key[1], name)
        ctx.store.delete_child(key, "Deployment", name)
    preview = plan.preview_wanted or f"{md['metadata']['name']}-preview" in services  # made when first needed
    await _together([traffic(False, plan.active), *([traffic(True, plan.preview)] if preview else [])])
    if plan.mirror is not None:
        await _mirror(ctx, md, plan.mirror)
    if plan.analysis_job is not None and plan.analysis_job[0].revision not in jobs:
        cand, urls, stable_urls = plan.analysis_job
        assert cand.model_uri is not None
        job = build.analysis_job(md, spec, cand.revision, model_uri=cand.model_uri, digest=cand.digest,
                                 candidate=urls, stable=stable_urls, runtime_image=s.runtime_image,
                                 copy_labels=s.copy_labels, defaults=s.child_resources)
        ctx.store.upsert_child(key, "Job", await ctx.api.create_once(JOBS, job))
    for rev in plan.delete_jobs:
        name = jobs[rev]["metadata"]["name"]
        await ctx.api.delete(JOBS, key[1], name)
        ctx.store.delete_child(key, "Job", name)
    if route_version is not None:
        routes = Resource(GATEWAY_GROUP, route_version.split("/", 1)[1], "httproutes")
        observed = await ctx.api.get(routes, key[1], md["metadata"]["name"])  # a GET: routes are not watched
        if plan.route is None:
            if observed is not None and build.owned_by(observed, md):
                await ctx.api.delete(routes, key[1], md["metadata"]["name"])
        elif build.route_weights(observed) != plan.route or build.route_mirror(observed) != plan.route_mirror:
            route = build.http_route(md, spec, route_version, plan.route, copy_labels=s.copy_labels,
                                     mirror=plan.route_mirror)
            if observed is not None and not build.owned_by(observed, md):
                raise name_conflict(route, observed)
            await ctx.api.ensure(routes, route, observed is not None)


async def _quality(ctx: Ctx, key: Key, md: Body, spec: ModelDeploymentSpec, children: Mapping[str, Mapping[str, Body]],
                   now: datetime.datetime) -> rollout_quality.Quality:
    """The live-quality joins decided, from the answers of the quality Jobs that finished."""
    found = {n: j for n, j in children.get("Job", {}).items() if rollout_quality.is_quality_job(j)}
    answers = {n: await pods.answer(ctx, key[1], j, QUALITY_CONTAINER, parse_quality, "the quality Job finished "
                                    "without an answer (its Pod is gone or never ran; see its Events)")
               for n, j in found.items() if job_finished(j)}
    return rollout_quality.decide(md, spec, found, answers, now)


@dataclass
class _Fetch:
    """What the rollout decision may ask for (machine.Need), read from the cluster and the pods."""

    ctx: Ctx
    md: Body
    spec: ModelDeploymentSpec
    jobs: dict[str, Body]

    async def urls(self) -> dict[str, list[str]]:
        return await _ready_urls(self.ctx, self.md)

    async def report(self, revision: str) -> AnalysisReport | ArtifactError:
        return await _report(self.ctx, self.md["metadata"]["namespace"], self.jobs[revision])

    async def live(self, revision: str) -> dict[str, PodCounters]:
        return await _live(self.ctx, self.md, self.spec, revision)


async def reconcile(ctx: Ctx, key: Key) -> None:
    def check(spec: ModelDeploymentSpec) -> list[str]:
        return rollout_spec.check(spec) + rollout_spec.check_endpoints(spec, ctx.endpoints)

    found = await ctx.validated(MODEL_DEPLOYMENT, key, check, invalid_also=("Available",))
    if found is None:
        return
    md, spec = found
    stream = spec.model.from_training_runs
    runs = ctx.store.by_alias(("model", key[1], stream.model)) if stream is not None else []
    rolling = (md.get("status") or {}).get("stable") or (md.get("status") or {}).get("candidate")
    if stream is not None and not rolling and rollout_spec.newest_passing_run(runs) is None:
        message = f"no TrainingRun of model {stream.model} in namespace {key[1]} has passed its gates yet"
        await ctx.write_status(MODEL_DEPLOYMENT, md, [
            Cond("Ready", FALSE, "NoModelVersion", message),
            Cond("Available", FALSE, "NoModelVersion", message),
        ])
        return
    children = ctx.store.children.get(key, {})
    deployments = _by_label(children.get("Deployment", {}), L.REVISION)
    jobs = _by_label(children.get("Job", {}), L.ANALYSIS)
    registry_jobs = calls_of.registry_jobs(children)
    answers = await calls_of.answers(ctx, key[1], registry_jobs)
    services = dict(children.get("Service", {}))
    # the Gateway API is looked up only for a ModelDeployment that asks for it (cached discovery)
    routed = ((md.get("status") or {}).get("traffic") or {}).get("method") == "HTTPRoute"
    wants_route = spec.traffic is not None and spec.traffic.gateway is not None
    route_version = await ctx.api.preferred_version(GATEWAY_GROUP, "httproutes") if wants_route or routed else None
    now = datetime.datetime.now(datetime.UTC)
    calls = rollout_registry.resolve(md, spec, registry_jobs, answers, now)
    quality = await _quality(ctx, key, md, spec, children, now)
    obs = machine.Observed(deployments=deployments, jobs=jobs, runs=runs, now=now,
                           gateway_api=wants_route and route_version is not None, registry=calls.status,
                           live_quality=quality.status)
    plan = await machine.resolve(md, spec, obs, _Fetch(ctx, md, spec, jobs))
    if plan.needs is not None:  # the world moved while we looked: look again shortly
        raise Retry(f"still waiting for the {plan.needs.what.value} of revision "
                                  f"{plan.needs.revision}", delay=2)
    stable = plan.status.get("stable")
    rollout_registry.move_alias(md, spec, RevisionRef.model_validate(stable) if stable else None, runs,
                                registry_jobs, answers, now, calls)
    plan.status["registry"] = calls.wire()
    plan.status["liveQuality"] = quality.wire()
    await _apply(ctx, key, md, spec, plan, deployments, services, jobs, route_version)
    if calls.start:
        assert spec.model.mlflow is not None
        await calls_of.start(ctx, key, md, calls.start, spec.model.mlflow,
                             without_spread(spec.runtime.scheduling if spec.runtime else None))
    s = ctx.settings
    for name, _, (since, until) in quality.start:
        job = quality_job(md, spec, name, float(since), float(until), runtime_image=s.runtime_image,
                          copy_labels=s.copy_labels, defaults=s.child_resources)
        ctx.store.upsert_child(key, "Job", await ctx.api.create_once(JOBS, job))
    await ctx.write_status(MODEL_DEPLOYMENT, md, plan.conditions, plan.status)
    await calls_of.delete(ctx, key, calls.delete + quality.delete)  # answers are in status now
    for reason, message, warning in plan.events + calls.events + quality.events:
        if reason in ROLLOUT_OUTCOMES:
            REGISTRY.rollout(key[1], key[2], reason)
        await ctx.event(MODEL_DEPLOYMENT, md, reason, message, warning)
    requeue = min((r for r in (plan.requeue_after, calls.requeue_after, quality.requeue_after) if r is not None),
                  default=None)
    if requeue is not None and ctx.queue is not None:
        ctx.queue.enqueue_after(key, requeue)
