"""Status writes against the real apiserver: a decision made from an older view of the object is
never written over a newer one (the cause of a rollout's `rejected` list losing its order when a
reconcile ran between our own write and its watch event), and a write is cached at once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import kopf
import pytest

from mlops_operator.api import TRAINING_RUN
from mlops_operator.conditions import FALSE, Cond
from mlops_operator.config import Settings
from mlops_operator.controller.client import Api
from mlops_operator.controller.errors import Retry
from mlops_operator.controller.queue import WorkQueue
from mlops_operator.controller.store import Store
from mlops_operator.dev.controlplane import ControlPlane
from mlops_operator.handlers.context import Ctx
from tests.cases import example

from .conftest import TESTS_AGENT, Cluster


def _api(kubeconfig: Path, monkeypatch: pytest.MonkeyPatch) -> Api:
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    info = kopf.login_with_kubeconfig(settings=kopf.OperatorSettings())
    assert info is not None
    return Api.from_connection_info(info, user_agent=TESTS_AGENT)


def test_a_status_decided_from_an_older_version_is_refused_and_a_write_is_cached_at_once(
    cluster: Cluster, control_plane: ControlPlane, sp_namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ns = sp_namespace  # no operator watches it: this test is the only writer
    run = example("TrainingRun")
    run["spec"]["suspend"] = True
    cluster.create(run, ns)
    key = (TRAINING_RUN.kind, ns, "iris-v1")

    async def scenario() -> None:
        api = _api(control_plane.kubeconfig, monkeypatch)
        queue = WorkQueue({})
        ctx = Ctx(api=api, store=Store(), settings=Settings.from_env(), queue=queue)
        try:
            ctx.store.upsert(key[0], cluster.get("TrainingRun", ns, "iris-v1"))
            old_view = ctx.store.get(key)
            assert old_view is not None
            assert await ctx.write_status(TRAINING_RUN, old_view, [Cond("Ready", FALSE, "First", "one")])
            cached = ctx.store.get(key)
            assert cached is not None
            # the cache holds what was written before any watch event could bring it
            assert [c["reason"] for c in cached["status"]["conditions"]] == ["First"]
            assert cached["metadata"]["resourceVersion"] != old_view["metadata"]["resourceVersion"]
            # a reconcile still holding the view from before that write decides something else
            with pytest.raises(Retry, match="changed since it was read"):
                await ctx.write_status(TRAINING_RUN, old_view, [Cond("Ready", FALSE, "Stale", "older view")])
            # …and deciding again from the cached object writes
            assert await ctx.write_status(TRAINING_RUN, cached, [Cond("Ready", FALSE, "Second", "two")])
            # a watch event handled while a write was in flight is as new or newer: kept
            seen = ctx.store.get(key)
            assert seen is not None
            ctx._remember(key, old_view["metadata"]["resourceVersion"], cached)
            assert ctx.store.get(key) == seen
        finally:
            await queue.close()
            await api.close()

    asyncio.run(scenario())
    stored = cluster.get("TrainingRun", ns, "iris-v1")
    assert [c["reason"] for c in stored["status"]["conditions"]] == ["Second"]
