"""Kubernetes Events about our objects: what `kubectl describe` and `kubectl get events` show."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from ..api import times
from .client import EVENTS, Api

logger = logging.getLogger("mlops_operator")
COMPONENT = "mlops-operator"
MESSAGE_LIMIT = 1024


def event(involved: Mapping[str, Any], reason: str, message: str, warning: bool = False,
          stamp: str | None = None) -> dict[str, Any]:
    """A core/v1 Event about `involved` (an object with apiVersion, kind and metadata)."""
    meta = involved["metadata"]
    stamp = stamp or times.now()
    return {
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {"apiVersion": involved["apiVersion"], "kind": involved["kind"], "name": meta["name"],
                           "namespace": meta["namespace"], "uid": meta.get("uid")},
        "reason": reason,
        "message": message[:MESSAGE_LIMIT],
        "type": "Warning" if warning else "Normal",
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


async def post(api: Api, involved: Mapping[str, Any], reason: str, message: str, warning: bool = False) -> None:
    """Post an Event; best effort: a reconcile never fails over one."""
    manifest = event(involved, reason, message, warning)
    try:
        await api.create(EVENTS, manifest["metadata"]["namespace"], manifest)
    except Exception as exc:
        meta = involved["metadata"]
        logger.warning("could not post event %s for %s/%s: %s", reason, meta["namespace"], meta["name"], exc)
