"""The operator process: kopf runs it (`mlops run`, or `kopf run -m mlops_operator.main` with
MLOPS_NAMESPACES), logs in, starts and cleans up; the operator's own informers (controller/informers.py) feed
the cache and queue reconciles (controller/store.py, queue.py): no kopf progress annotations, no
finalizers, no per-object timers or tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import kopf
import yaml
from aiohttp import web

from . import metrics
from .api import BY_KIND, DRIFT_POLICY, KINDS, MODEL_DEPLOYMENT, TRAINING_RUN
from .api import labels as L
from .conditions import FALSE, Cond
from .config import Settings
from .controller import endpoints
from .controller.client import DEPLOYMENTS, JOBS, SERVICES, Api
from .controller.election import Elector
from .controller.errors import NameConflict, Retry
from .controller.informers import Informer, Informers, Scope
from .controller.queue import WorkQueue
from .controller.store import Key, Store, owner_of
from .handlers import driftpolicy, modeldeployment, trainingrun
from .handlers.context import Ctx, resource

logger = logging.getLogger("mlops_operator")
MANAGED_BY_SELECTOR = L.selector(L.MANAGED_BY)  # the children's watches
NAME_CONFLICT_RECHECK_SECONDS = 30
# the child kinds whose events reconcile their owner
CHILD_KINDS = ((JOBS, "Job"), (DEPLOYMENTS, "Deployment"), (SERVICES, "Service"))
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
    ready: web.AppRunner | None = None
    elector: Elector | None = None
    watchdog: asyncio.Task[None] | None = None
    informers: Informers | None = None
    namespaces: tuple[str, ...] | None = None
    """What `mlops run -n` (or the in-process runner) was given; None: MLOPS_NAMESPACES."""


def make_store() -> Store:
    return Store(
        known_as={
            TRAINING_RUN.kind: trainingrun.known_as,
            MODEL_DEPLOYMENT.kind: modeldeployment.known_as,
        },
        refers_to={
            TRAINING_RUN.kind: trainingrun.refers_to,
            MODEL_DEPLOYMENT.kind: modeldeployment.refers_to,
            DRIFT_POLICY.kind: driftpolicy.refers_to,
        },
    )


SERVICE_ACCOUNT_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"


def _kubeconfig_token_file() -> str | None:
    """The current context's user's `tokenFile` in the first KUBECONFIG file (kopf's own kubeconfig login
    reads `token` only)."""
    path = (os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")).split(os.pathsep)[0]
    try:
        config = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError):
        return None
    contexts = {c.get("name"): c.get("context") or {} for c in config.get("contexts") or ()}
    users = {u.get("name"): u.get("user") or {} for u in config.get("users") or ()}
    user = users.get(contexts.get(config.get("current-context"), {}).get("user"), {})
    token_file = user.get("tokenFile")
    return str(Path(path).parent / token_file) if token_file else None


def _credentials(settings: kopf.OperatorSettings) -> tuple[Any, str | None]:
    """kopf's ConnectionInfo, and the file its token comes from (read again as it rotates), if any."""
    if (info := kopf.login_with_service_account(settings=settings)) is not None:
        return info, SERVICE_ACCOUNT_TOKEN
    info = kopf.login_with_kubeconfig(settings=settings)
    token_file = _kubeconfig_token_file() if info is not None and not info.token else None
    if info is not None and token_file:
        with contextlib.suppress(OSError):
            info = dataclasses.replace(info, token=Path(token_file).read_text().strip())
    return info, token_file


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    config = Settings.from_env()
    logging.getLogger("mlops_operator").setLevel(config.log_level)
    # kopf's liveness endpoint logs every probe (one line every 10 s in `kubectl logs`): only its problems
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    info, token_path = _credentials(settings)
    if info is None:
        raise kopf.PermanentError("no credentials: neither a service account nor a kubeconfig was found")
    api = Api.from_connection_info(info, token_path)
    try:
        rules = endpoints.Endpoints.parse(config.analysis_endpoints,
                                          endpoints.apiserver_addresses(api.server, config.kubernetes_service))
    except ValueError as exc:
        raise kopf.PermanentError(str(exc)) from None
    ctx = Ctx(api=api, store=make_store(), settings=config, post_normal_events=config.normal_events,
              endpoints=rules)
    ctx.queue = WorkQueue({kind: _bind(fn, ctx) for kind, fn in RECONCILERS.items()}, workers=config.workers)
    Runtime.ctx = ctx
    namespaces = Runtime.namespaces if Runtime.namespaces is not None else config.namespaces
    Runtime.informers = informers(ctx, Scope(tuple(namespaces)))
    Runtime.informers.start()
    if config.leader_election:
        Runtime.elector = Elector(api, *config.lease, identity=config.instance)
        Runtime.elector.start()
        Runtime.watchdog = asyncio.create_task(_exit_when_lost(Runtime.elector))
    Runtime.resync = asyncio.create_task(_open_then_resync(ctx, Runtime.informers, config.resync_seconds,
                                                           Runtime.elector))
    if config.metrics_port:
        Runtime.metrics = await metrics.serve(ctx, config.metrics_port)
    if config.ready_port:
        Runtime.ready = await _serve_readiness(config.ready_port)


async def _serve_readiness(port: int) -> web.AppRunner:
    """`/readyz` on a port of its own (the kubelet's readiness probe): 200 while every informer lists and
    watches, 503 naming the ones that do not."""
    async def ready(_: web.Request) -> web.Response:
        watches = Runtime.informers
        unready = watches.unready(time.monotonic()) if watches is not None else ["not started"]
        return web.json_response({"ready": not unready, "problems": unready}, status=503 if unready else 200)

    app = web.Application()
    app.router.add_get("/readyz", ready)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port).start()
    return runner


def run_in(namespaces: list[str] | tuple[str, ...]) -> None:
    """Say which namespaces the operator watches (before kopf starts it); none: the whole cluster.
    Glob patterns (`team-*`) watch the cluster and keep what matches."""
    Runtime.namespaces = tuple(namespaces)


def _bind(fn: Callable[[Ctx, Key], Coroutine[Any, Any, None]], ctx: Ctx) -> Callable[[Key], Coroutine[Any, Any, None]]:
    async def run(key: Key) -> None:
        try:
            await fn(ctx, key)
        except NameConflict as exc:
            # a child's name is someone else's object: said in status, looked at again now and then
            # (the other object's deletion is no event the operator sees)
            body = ctx.store.get(key)
            if body is not None:
                await ctx.write_status(BY_KIND[key[0]], body, [Cond("Ready", FALSE, "NameConflict", str(exc))])
            raise Retry(str(exc), delay=NAME_CONFLICT_RECHECK_SECONDS) from exc
    return run


async def _exit_when_lost(elector: Elector) -> None:
    """A leader that lost its Lease stops at once, mid-reconcile or not: another replica holds it (or will
    within seconds), and two writers are what leader election is for. The kubelet starts it again, as a
    standby."""
    await elector.lost.wait()
    logging.getLogger("mlops_operator").critical("lost leadership: exiting")
    logging.shutdown()
    os._exit(1)


async def _open_then_resync(ctx: Ctx, watches: Informers, every: int, elector: Elector | None = None) -> None:
    """Open the queue once everything was listed into the cache (a standby keeps listing and watching, and
    opens it when it leads); then the slow periodic resync: every object is reconciled again (writes only
    what changed)."""
    assert ctx.queue is not None
    await watches.listed()
    if elector is not None:
        await elector.leading.wait()
    ctx.queue.open.set()
    while True:
        await asyncio.sleep(every)
        assert ctx.queue is not None
        for kind in KINDS:
            for key in ctx.store.keys(kind.kind):
                ctx.queue.enqueue(key)


@kopf.on.probe(id="informers", errors=kopf.ErrorsMode.PERMANENT)
def informers_probe(**_: Any) -> dict[str, Any]:
    """The liveness endpoint's view of the informers: it fails (500, and the kubelet restarts the
    operator) when one stopped or has failed to list and watch for minutes."""
    watches = Runtime.informers
    if watches is None:
        return {"started": False}
    problems = watches.problems(time.monotonic())
    if problems:
        raise kopf.PermanentError("; ".join(problems))
    return {"informers": len(watches.informers), "listed": all(i.listed.is_set() for i in watches.informers)}


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
    for task in (Runtime.resync, Runtime.watchdog):
        if task is not None:
            task.cancel()
    if Runtime.informers is not None:
        await Runtime.informers.stop()
    for server in (Runtime.metrics, Runtime.ready):
        if server is not None:
            await server.cleanup()
    Runtime.metrics = Runtime.ready = None
    if Runtime.ctx is not None:
        if Runtime.ctx.queue is not None:
            await Runtime.ctx.queue.close()
        if Runtime.elector is not None:  # nothing reconciles any more: hand the Lease over
            await Runtime.elector.release()
        await Runtime.ctx.api.close()
    Runtime.ctx = Runtime.resync = Runtime.informers = Runtime.elector = Runtime.watchdog = None


@kopf.on.login()
def login(settings: kopf.OperatorSettings, **_: Any) -> Any:
    """kopf's own credentials, called again after a 401: the token file is read each time."""
    return _credentials(settings)[0]


def on_own_event(ctx: Ctx, kind: str) -> Callable[[str, dict[str, Any]], None]:
    """Our kinds' events: the cache, and a reconcile of the object and of whoever refers to it."""
    assert ctx.queue is not None
    queue = ctx.queue

    def handle(type_: str, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        if type_ == "DELETED":
            affected = ctx.store.delete(kind, meta.get("namespace", ""), meta["name"])
        else:
            affected = ctx.store.upsert(kind, body)
        for key in affected:
            queue.enqueue(key)
    return handle


def on_child_event(ctx: Ctx, child_kind: str) -> Callable[[str, dict[str, Any]], None]:
    """A child's events: the cache of its owner's children, and a reconcile of the owner."""
    assert ctx.queue is not None
    queue = ctx.queue

    def handle(type_: str, body: dict[str, Any]) -> None:
        owner = owner_of(body, RECONCILERS)
        if owner is None:
            return
        if type_ == "DELETED":
            ctx.store.delete_child(owner, child_kind, body["metadata"]["name"])
        else:
            ctx.store.upsert_child(owner, child_kind, body)
        queue.enqueue(owner)
    return handle


def informers(ctx: Ctx, scope: Scope, server_timeout: int = 300) -> Informers:
    """Our three kinds and their three child kinds (only the operator's own, by label), in every
    watched namespace."""
    out = []
    for namespace in scope.watched():
        for kind in KINDS:
            out.append(Informer(ctx.api, resource(kind), kind.kind, namespace, on_own_event(ctx, kind.kind),
                                scope.accepts, server_timeout=server_timeout))
        for res, child in CHILD_KINDS:
            out.append(Informer(ctx.api, res, child, namespace,
                                on_child_event(ctx, child), scope.accepts, label_selector=MANAGED_BY_SELECTOR,
                                server_timeout=server_timeout))
    return Informers(out)
