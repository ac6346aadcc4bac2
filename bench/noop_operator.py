"""The peer of bench/scale_bench.py: a kopf operator that watches what mlops-operator watches (its three
kinds and the Jobs, Deployments and Services it owns) in namespace `bench`, and does nothing but
count the objects of the three kinds it has seen. Serves `noop_events_total` on $MLOPS_METRICS_PORT."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import kopf
from aiohttp import web

SEEN: set[str] = set()


def _count(body: kopf.Body, **_: Any) -> None:
    SEEN.add(body["metadata"]["uid"])


for plural in ("trainingruns", "modeldeployments", "driftpolicies"):
    kopf.on.event("mlops.dev", "v1alpha1", plural)(_count)
for group, version, plural in (("batch", "v1", "jobs"), ("apps", "v1", "deployments"), ("", "v1", "services")):
    kopf.on.event(group, version, plural)(lambda **_: None)


@kopf.on.startup()
async def serve_metrics(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.posting.enabled = False

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text=f"# TYPE noop_events counter\nnoop_events_total {len(SEEN)}\n")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", int(os.environ["MLOPS_METRICS_PORT"])).start()


if __name__ == "__main__":
    asyncio.run(kopf.operator(namespaces=["bench"], standalone=True, clusterwide=False))
