"""The floor under bench/scale_bench.py's operator: the operator's own API client, informers, cache and work queue
(`main.informers`, `main.make_store`, `WorkQueue`, the echo of each write waking its ModelDeployment again, as in
the operator), with every decision taken out. Its reconcile of a ModelDeployment without a status writes, once,
what the operator wrote for it: the Deployment and the active Service its builders make (created), then the status
the operator wrote (a merge patch on the version read, put in the cache ahead of its echo); one with a status
is done. What it costs beyond the bare client is what any controller built on this client and cache costs; what
the operator costs beyond it is its decisions.

    python bench/floor_client.py SERVER TOKEN NAMESPACE STATUS_JSON MODELS

prints `ready` once its informers have listed.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import uvloop

TOP = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TOP / "operator"))
sys.path.insert(0, str(TOP / "bench"))

from scale_bench import raw_children  # noqa: E402

from mlops_operator.api import MODEL_DEPLOYMENT  # noqa: E402
from mlops_operator.cli import _quiet_collector  # noqa: E402
from mlops_operator.config import Settings  # noqa: E402
from mlops_operator.controller.client import DEPLOYMENTS, SERVICES, Api, Resource  # noqa: E402
from mlops_operator.controller.informers import Scope  # noqa: E402
from mlops_operator.controller.queue import WorkQueue  # noqa: E402
from mlops_operator.controller.store import Key  # noqa: E402
from mlops_operator.handlers.context import Ctx, resource  # noqa: E402
from mlops_operator.main import informers, make_store  # noqa: E402


async def main(server: str, token: str, namespace: str, status_file: str, models: int) -> None:
    status = json.loads(Path(status_file).read_text())
    made = raw_children(models, namespace)  # per ModelDeployment i: its Deployment, active and preview Service
    api = Api(server, token=token, insecure=True)
    ctx = Ctx(api=api, store=make_store(), settings=Settings.from_env())

    async def write(key: Key, res: Resource, kind: str, body: dict[str, object]) -> None:
        ctx.store.upsert_child(key, kind, await api.create(res, key[1], body))

    async def reconcile(key: Key) -> None:
        md = ctx.store.get(key)
        if md is None or md.get("status"):
            return
        i = int(key[2].removeprefix("m"))
        (_, deployment), (_, service) = made[3 * i], made[3 * i + 1]
        await asyncio.gather(write(key, DEPLOYMENTS, "Deployment", deployment),
                             write(key, SERVICES, "Service", service))
        stored = await api.patch_status(resource(MODEL_DEPLOYMENT), key[1], key[2], status,
                                        md["metadata"]["resourceVersion"])
        if stored is not None:
            ctx.store.ahead(key[0], stored)

    async def nothing(_: Key) -> None:
        return None

    ctx.queue = WorkQueue({"ModelDeployment": reconcile, "TrainingRun": nothing, "DriftPolicy": nothing})
    watches = informers(ctx, Scope((namespace,)))
    watches.start()
    await watches.listed()
    ctx.queue.open.set()
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    _quiet_collector()
    server, token, namespace, status_file, models = sys.argv[1:6]
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main(server, token, namespace, status_file, int(models)))
