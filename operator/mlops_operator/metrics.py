"""The operator's own Prometheus metrics (`MLOPS_METRICS_PORT`, path /metrics). Plain text, no
client library: a handful of gauges and counters kept in dicts.

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

import logging
from collections.abc import Mapping
from typing import Any

from aiohttp import web

logger = logging.getLogger("mlops_operator")
Labels = tuple[tuple[str, str], ...]
VERDICT = {"Drifted": 1.0, "NotDrifted": 0.0, "InsufficientData": -1.0}


class Registry:
    def __init__(self) -> None:
        self.gauges: dict[str, dict[Labels, float]] = {}
        self.help: dict[str, tuple[str, str]] = {
            "mlops_driftpolicy_drifted": ("gauge", "1 when the policy's model drifted, 0 when not, -1 before "
                                                   "enough data"),
            "mlops_driftpolicy_drifted_share": ("gauge", "Share of the policy's checked features that drifted"),
            "mlops_driftpolicy_feature_drifted": ("gauge", "1 when the feature drifted (spec.perFeatureMetrics)"),
            "mlops_modeldeployment_rollouts_total": ("counter", "Rollouts ended, by outcome"),
            "mlops_reconciles_total": ("counter", "Reconciles run, by kind"),
            "mlops_reconcile_errors_total": ("counter", "Reconciles that failed and were retried, by kind"),
            "mlops_api_requests_total": ("counter", "Kubernetes API requests made, by verb and resource"),
        }

    def set(self, name: str, labels: Mapping[str, str], value: float) -> None:
        self.gauges.setdefault(name, {})[tuple(sorted(labels.items()))] = value

    def inc(self, name: str, labels: Mapping[str, str], by: float = 1.0) -> None:
        series = self.gauges.setdefault(name, {})
        key = tuple(sorted(labels.items()))
        series[key] = series.get(key, 0.0) + by

    def forget(self, **match: str) -> None:
        """Drop every series whose labels include `match` (a deleted policy's)."""
        wanted = set(match.items())
        for series in self.gauges.values():
            for labels in [k for k in series if wanted <= set(k)]:
                del series[labels]

    def drift(self, namespace: str, name: str, evaluation: Any, per_feature: bool) -> None:
        who = {"namespace": namespace, "name": name}
        self.set("mlops_driftpolicy_drifted", who, VERDICT[evaluation.verdict])
        self.set("mlops_driftpolicy_drifted_share", who, float(evaluation.drifted_share or 0.0))
        series = self.gauges.setdefault("mlops_driftpolicy_feature_drifted", {})
        for labels in [k for k in series if set(who.items()) <= set(k)]:
            del series[labels]
        if per_feature:
            for f in evaluation.features or ():
                self.set("mlops_driftpolicy_feature_drifted", {**who, "feature": f.name}, 1.0 if f.drifted else 0.0)

    def render(self, counters: Mapping[str, Mapping[Labels, float]] = {}) -> str:
        lines = []
        for name, series in {**self.gauges, **counters}.items():
            kind, text = self.help.get(name, ("gauge", name))
            lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
            for labels, value in sorted(series.items()):
                rendered = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
                lines.append(f"{name}{{{rendered}}} {value:g}")
        return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


REGISTRY = Registry()


def counters(ctx: Any) -> dict[str, dict[Labels, float]]:
    """The counters kept elsewhere (the work queue's, the API layer's), as series."""
    api: dict[Labels, float] = {(("resource", str(resource)), ("verb", str(verb))): float(n)
                                for (verb, resource), n in ctx.api.requests.items()}
    queue = ctx.queue
    kinds = queue.reconciles_by_kind if queue is not None else {}
    errors = queue.errors_by_kind if queue is not None else {}
    return {"mlops_api_requests_total": api,
            "mlops_reconciles_total": {(("kind", k),): float(n) for k, n in kinds.items()},
            "mlops_reconcile_errors_total": {(("kind", k),): float(n) for k, n in errors.items()}}


async def serve(ctx: Any, port: int) -> web.AppRunner:
    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text=REGISTRY.render(counters(ctx)), content_type="text/plain")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port).start()
    logger.info("metrics on :%d/metrics", port)
    return runner
