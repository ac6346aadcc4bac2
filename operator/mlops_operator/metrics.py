"""The operator's own Prometheus metrics (`MLOPS_METRICS_PORT`, path /metrics), through prometheus-client
(a registry of the operator's own; the work queue's and the API client's counters are read when scraped):

* mlops_driftpolicy_drifted{namespace,name}: 1 drifted, 0 not, -1 not enough data yet
* mlops_driftpolicy_drifted_share{namespace,name}: share of the checked features that drifted
* mlops_driftpolicy_feature_drifted{namespace,name,feature}: only for policies that ask for it
  (`spec.perFeatureMetrics`): a thousand models with a hundred features each are too many series
* mlops_modeldeployment_rollouts_total{namespace,name,outcome}: Promoted or RolledBack (an abort
  too), since the operator started
* mlops_reconciles_total{kind}, mlops_reconcile_errors_total{kind} (retried with backoff),
  mlops_api_requests_total{verb,resource}

The model server's own series (every serving pod's /metrics): mlops_requests_total,
mlops_request_errors_total, mlops_request_duration_seconds (histogram), mlops_model_info,
mlops_start_time_seconds. charts/mlops-operator/dashboards/mlops-loop.json draws both.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

logger = logging.getLogger("mlops_operator")
VERDICT = {"Drifted": 1.0, "NotDrifted": 0.0, "InsufficientData": -1.0}
disable_created_metrics()  # type: ignore[no-untyped-call]  # no `_created` series: counters start with the process
WHO = ["namespace", "name"]
CONTENT_TYPE = "text/plain; version=0.0.4"


# the counters kept elsewhere: name → (help, labels)
ELSEWHERE = {"mlops_api_requests": ("Kubernetes API requests made, by verb and resource", ["verb", "resource"]),
             "mlops_reconciles": ("Reconciles run, by kind", ["kind"]),
             "mlops_reconcile_errors": ("Reconciles that failed and were retried, by kind", ["kind"])}


class _Elsewhere(Collector):
    """The counters the work queue and the API client keep, read at each scrape."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx

    def collect(self) -> Iterator[Metric]:
        queue = self.ctx.queue
        queued: dict[str, Any] = queue.reconciles_by_kind if queue is not None else {}
        failed: dict[str, Any] = queue.errors_by_kind if queue is not None else {}
        sources: dict[str, dict[tuple[str, ...], int]] = {
            "mlops_api_requests": {(str(v), str(r)): n for (v, r), n in self.ctx.api.requests.items()},
            "mlops_reconciles": {(k,): n for k, n in queued.items()},
            "mlops_reconcile_errors": {(k,): n for k, n in failed.items()}}
        for name, (documentation, labels) in ELSEWHERE.items():
            family = CounterMetricFamily(name, documentation, labels=labels)
            for values, n in sorted(sources[name].items()):
                family.add_metric(list(values), float(n))
            yield family


class Registry:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.drifted = Gauge("mlops_driftpolicy_drifted", "1 when the policy's model drifted, 0 when not, -1 before "
                             "enough data", WHO, registry=r)
        self.drifted_share = Gauge("mlops_driftpolicy_drifted_share", "Share of the policy's checked features that "
                                   "drifted", WHO, registry=r)
        self.feature_drifted = Gauge("mlops_driftpolicy_feature_drifted", "1 when the feature drifted "
                                     "(spec.perFeatureMetrics)", [*WHO, "feature"], registry=r)
        self.rollouts = Counter("mlops_modeldeployment_rollouts", "Rollouts ended, by outcome", [*WHO, "outcome"],
                                registry=r)
        self._elsewhere: _Elsewhere | None = None
        # each metric's label names, in order (a child is removed by its label values)
        self._labels: dict[Gauge | Counter, list[str]] = {
            self.drifted: WHO, self.drifted_share: WHO, self.feature_drifted: [*WHO, "feature"],
            self.rollouts: [*WHO, "outcome"]}

    @property
    def help(self) -> dict[str, str]:
        """Every series name this registry exports (the queue's and client's too), with its help."""
        names = {f"{name}_total": documentation for name, (documentation, _) in ELSEWHERE.items()}
        for metric in self._labels:
            for family in metric.describe():
                suffix = "_total" if family.type == "counter" else ""
                names[family.name + suffix] = family.documentation
        return names

    def read_counters_of(self, ctx: Any) -> None:
        """Export the work queue's and the API client's counters of this operator."""
        if self._elsewhere is not None:
            self.registry.unregister(self._elsewhere)
        self._elsewhere = _Elsewhere(ctx)
        self.registry.register(self._elsewhere)

    def rollout(self, namespace: str, name: str, outcome: str) -> None:
        self.rollouts.labels(namespace, name, outcome).inc()

    def _drop(self, metric: Gauge | Counter, **match: str) -> None:
        names = self._labels[metric]
        for family in metric.collect():
            for sample in family.samples:
                if all(sample.labels.get(k) == v for k, v in match.items()):
                    with contextlib.suppress(KeyError):  # removed already (another sample of the same child)
                        metric.remove(*(sample.labels[n] for n in names))

    def forget(self, **match: str) -> None:
        """Drop every series whose labels include `match` (a deleted policy's)."""
        for metric in self._labels:
            self._drop(metric, **match)

    def drift(self, namespace: str, name: str, evaluation: Any, per_feature: bool) -> None:
        self.drifted.labels(namespace, name).set(VERDICT[evaluation.verdict])
        self.drifted_share.labels(namespace, name).set(float(evaluation.drifted_share or 0.0))
        self._drop(self.feature_drifted, namespace=namespace, name=name)
        if per_feature:
            for f in evaluation.features or ():
                self.feature_drifted.labels(namespace, name, f.name).set(1.0 if f.drifted else 0.0)

    def render(self) -> str:
        return generate_latest(self.registry).decode()


REGISTRY = Registry()


async def serve(ctx: Any, port: int) -> web.AppRunner:
    REGISTRY.read_counters_of(ctx)

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=REGISTRY.render().encode(), headers={"Content-Type": CONTENT_TYPE})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port).start()
    logger.info("metrics on :%d/metrics", port)
    return runner
