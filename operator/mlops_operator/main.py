"""kopf settings and handler registration: `kopf run -m mlops_operator.main` (or `mlops run`).

Every kopf handler here is an event handler that only updates the cache and queues reconciles
(see handlers/core.py): no kopf progress annotations, no finalizers, no per-object timers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import kopf
from aiohttp import web

from . import metrics
from .api import DRIFT_POLICY, GROUP, KINDS, MODEL_DEPLOYMENT, TRAINING_RUN, VERSION
from .config import Settings
from .handlers import driftpolicy, modeldeployment, trainingrun
from .handlers.context import Ctx
from .handlers.core import Key, Store, WorkQueue, owner_of
from .kube import Api

logger = logging.getLogger("mlops_operator")
MANAGED_BY = {"app.kubernetes.io/managed-by": "mlops-operator"}
# the child kinds whose events reconcile their owner: (group, version, plural, kind)
CHILD_KINDS = (
    ("batch", "v1", "jobs", "Job"),
    ("apps", "v1", "deployments", "Deployment"),
    ("", "v1", "services", "Service"),
)
RECONCILERS: dict[str, Callable[[Ctx, Key], Coroutine[Any, Any, None]]] = {
    TRAINING_RUN.kind: trainingrun.reconcile,
    MODEL_DEPLOYMENT.kind: modeldeployment.reconcile,
    DRIFT_POLICY.kind: driftpolicy.reconcile,
}


class Runtime:
    """The operator's process-wide state, created at start-up."""

    ctx: Ctx | None = None
    resync: asyncio.Task[None] | None = None
    metrics: web.AppRunner | None = None


def make_store() -> Store:
    return Store(
        known_as={
            TRAINING_RUN.kind: trainingrun.known_as,
            MODEL_DEPLOYMENT.kind: modeldeployment.known_as,
        },
        refers_to={
            MODEL_DEPLOYMENT.kind: modeldeployment.refers_to,
            DRIFT_POLICY.kind: driftpolicy.refers_to,
        },
    )


def _credentials(settings: kopf.OperatorSettings) -> Any:
    return (kopf.login_with_service_account(settings=settings)
            or kopf.login_with_kubeconfig(settings=settings))


class NoDiffBase(kopf.AnnotationsDiffBaseStorage):
    """No diff base at all. The operator has no create/update handlers (only event and index handlers
    feeding its own queue), yet kopf builds a deep copy of every object on every watch event to diff
    it against the last handled one: the largest CPU cost with thousands of objects."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> Any:
        return None

    def fetch(self, *, body: kopf.Body) -> Any:
        return None


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = NoDiffBase(prefix=GROUP, key="last-handled-configuration")
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    settings.networking.request_timeout = 60
    config = Settings.from_env()
    logging.getLogger("mlops_operator").setLevel(config.log_level)
    if config.log_level != "DEBUG":
        # kopf logs every handled watch event at INFO: thousands of lines a minute at scale
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    info = _credentials(settings)
    if info is None:
        raise kopf.PermanentError("no credentials: neither a service account nor a kubeconfig was found")
    ctx = Ctx(api=Api.from_connection_info(info), store=make_store(), settings=config,
              post_normal_events=config.normal_events)
    ctx.queue = WorkQueue({kind: _bind(fn, ctx) for kind, fn in RECONCILERS.items()}, workers=config.workers)
    Runtime.ctx = ctx
    Runtime.resync = asyncio.create_task(_resync(ctx, config.resync_seconds))
    if config.metrics_port:
        Runtime.metrics = await metrics.serve(ctx, config.metrics_port)


def _bind(fn: Callable[[Ctx, Key], Coroutine[Any, Any, None]], ctx: Ctx) -> Callable[[Key], Coroutine[Any, Any, None]]:
    async def run(key: Key) -> None:
        await fn(ctx, key)
    return run


async def _resync(ctx: Ctx, every: int) -> None:
    """The slow periodic resync: every object is reconciled again (writes only what changed)."""
    while True:
        await asyncio.sleep(every)
        assert ctx.queue is not None
        for kind in KINDS:
            for key in ctx.store.keys(kind.kind):
                ctx.queue.enqueue(key)


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
    if Runtime.resync is not None:
        Runtime.resync.cancel()
    if Runtime.metrics is not None:
        await Runtime.metrics.cleanup()
        Runtime.metrics = None
    if Runtime.ctx is not None:
        if Runtime.ctx.queue is not None:
            await Runtime.ctx.queue.close()
        await Runtime.ctx.api.close()
    Runtime.ctx = Runtime.resync = None


@kopf.on.login()
def login(settings: kopf.OperatorSettings, **_: Any) -> Any:
    return _credentials(settings)


def _on_own_event(kind: str) -> Callable[..., Coroutine[Any, Any, None]]:
    async def handler(event: dict[str, Any], **_: Any) -> None:
        ctx = Runtime.ctx
        if ctx is None or ctx.queue is None:
            return
        ctx.queue.open.set()  # kopf calls event handlers only once every index below is filled
        body = event["object"]
        meta = body.get("metadata", {})
        if event.get("type") == "DELETED":
            affected = ctx.store.delete(kind, meta.get("namespace", ""), meta["name"])
        else:
            affected = ctx.store.upsert(kind, body)
        for key in affected:
            ctx.queue.enqueue(key)
    handler.__name__ = f"on_{kind.lower()}_event"
    return handler


def _on_child_event(child_kind: str) -> Callable[..., Coroutine[Any, Any, None]]:
    async def handler(event: dict[str, Any], **_: Any) -> None:
        ctx = Runtime.ctx
        if ctx is None or ctx.queue is None:
            return
        ctx.queue.open.set()
        body = event["object"]
        owner = owner_of(body, RECONCILERS)
        if owner is None:
            return
        if event.get("type") == "DELETED":
            ctx.store.delete_child(owner, child_kind, body["metadata"]["name"])
        else:
            ctx.store.upsert_child(owner, child_kind, body)
        ctx.queue.enqueue(owner)
    handler.__name__ = f"on_child_{child_kind.lower()}_event"
    return handler


def _warm(kind: str, child: bool) -> Callable[..., None]:
    """A kopf index handler that fills the cache and indexes nothing. kopf lists every indexed resource
    before it calls any event handler, so after a restart no reconcile runs on a half-filled cache
    (a ModelDeployment that had not seen its TrainingRuns yet would drop its candidate)."""
    def warm(body: kopf.Body, **_: Any) -> None:
        ctx = Runtime.ctx
        if ctx is None or ctx.queue is None or ctx.queue.open.is_set():
            return  # after start-up the event handlers keep the cache (and say whom a change affects)
        if not child:
            ctx.store.upsert(kind, body)
        elif (owner := owner_of(body, RECONCILERS)) is not None:
            ctx.store.upsert_child(owner, kind, body)
    warm.__name__ = f"warm_{kind.lower()}"
    return warm


for _kind in KINDS:
    kopf.on.event(GROUP, VERSION, _kind.plural, id=f"{_kind.singular}-events")(_on_own_event(_kind.kind))
    kopf.index(GROUP, VERSION, _kind.plural, id=f"{_kind.singular}-cache")(_warm(_kind.kind, child=False))
for _group, _version, _plural, _child in CHILD_KINDS:
    kopf.on.event(_group, _version, _plural, labels=MANAGED_BY, id=f"{_child.lower()}-events")(
        _on_child_event(_child))
    kopf.index(_group, _version, _plural, labels=MANAGED_BY, id=f"{_child.lower()}-cache")(
        _warm(_child, child=True))
