"""Kubernetes Events about our objects: what `kubectl describe` and `kubectl get events` show.

Written through events.k8s.io/v1 (`regarding`, `note`, `eventTime`, the reporting controller and
instance), without the deprecated core/v1 fields (`count`, `firstTimestamp`, `source`); the apiserver
serves the same Event through core/v1 to older readers."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from ..api import times
from .client import EVENTS, Api

logger = logging.getLogger("mlops_operator")
REPORTING_CONTROLLER = "mlops.dev/operator"
MESSAGE_LIMIT = 1024


def event(involved: Mapping[str, Any], reason: str, message: str, warning: bool = False,
          at: str | None = None, instance: str = "") -> dict[str, Any]:
    """An events.k8s.io/v1 Event about `involved` (an object with apiVersion, kind and metadata), said by
    the replica `instance`."""
    meta = involved["metadata"]
    return {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        # named as client-go names them (events.k8s.io/v1 refuses a generateName ending in "."); a name
        # within 253 characters: the object's name is at most 253 too, so it is cut, never the stamp
        "metadata": {"name": f"{meta['name'][:236]}.{time.time_ns():x}", "namespace": meta["namespace"]},
        "regarding": {"apiVersion": involved["apiVersion"], "kind": involved["kind"], "name": meta["name"],
                      "namespace": meta["namespace"], "uid": meta.get("uid")},
        "reason": reason,
        "action": reason,
        "note": message[:MESSAGE_LIMIT],
        "type": "Warning" if warning else "Normal",
        "eventTime": at or times.micro(),
        "reportingController": REPORTING_CONTROLLER,
        "reportingInstance": (instance or REPORTING_CONTROLLER)[:128],
    }


async def post(api: Api, involved: Mapping[str, Any], reason: str, message: str, warning: bool = False,
               instance: str = "") -> None:
    """Post an Event; best effort: a reconcile never fails over one."""
    manifest = event(involved, reason, message, warning, instance=instance)
    try:
        await api.create(EVENTS, manifest["metadata"]["namespace"], manifest)
    except Exception as exc:
        meta = involved["metadata"]
        logger.warning("could not post event %s for %s/%s: %s", reason, meta["namespace"], meta["name"], exc)
