"""What a reconcile function gets: the API, the cache, settings; and the one way to write status."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..api import API_VERSION, GROUP, VERSION, Kind
from ..conditions import FALSE, Cond, is_warning, merge
from ..config import Settings
from ..controller import events
from ..controller.client import Api, ApiError, Resource
from ..controller.endpoints import Endpoints
from ..controller.errors import InvalidSpec, Retry
from ..controller.queue import WorkQueue
from ..controller.store import Key, Store
from ..drift.decide import Memory as DriftMemory
from ..validation import parse

logger = logging.getLogger("mlops_operator")


def resource(kind: Kind) -> Resource:
    return Resource(GROUP, VERSION, kind.plural)


@dataclass
class Ctx:
    api: Api
    store: Store
    settings: Settings
    queue: WorkQueue | None = None
    post_normal_events: bool = False
    status_writes: int = field(default=0)
    drift: DriftMemory = field(default_factory=DriftMemory)  # DriftPolicy's caches in this process
    endpoints: Endpoints = field(default_factory=Endpoints)
    """What spec.analysis.prometheus.address may name (MLOPS_ANALYSIS_ENDPOINTS)."""

    async def write_status(
        self,
        kind: Kind,
        body: Mapping[str, Any],
        decided: Sequence[Cond],
        fields: Mapping[str, Any] | None = None,
    ) -> bool:
        """Patch status when it differs from what is stored; post Events for condition changes.

        Returns whether anything was written. A reconcile that changes nothing writes nothing.
        """
        meta = body["metadata"]
        status = body.get("status") or {}
        generation = meta.get("generation")
        conditions = merge(status.get("conditions"), decided, generation)
        new: dict[str, Any] = {"observedGeneration": generation, "conditions": conditions, **(fields or {})}
        if all(status.get(k) == v for k, v in new.items()):
            return False
        key = (kind.kind, meta["namespace"], meta["name"])
        version = meta.get("resourceVersion")
        try:
            stored = await self.api.patch_status(resource(kind), meta["namespace"], meta["name"], new, version)
        except ApiError as exc:
            if exc.status != 409:
                raise
            # decided from an older view than the object's (e.g. our own last write has not come
            # back through the watch yet): write nothing, decide again on the newer object
            raise Retry(f"{kind.kind} changed since it was read; deciding again", delay=1) from exc
        if stored is None:
            return False  # gone meanwhile
        self.status_writes += 1
        self._remember(key, version, stored)
        old = {c.get("type"): c for c in status.get("conditions") or ()}
        for c in decided:
            before = old.get(c.type)
            if before is None or before.get("status") != c.status or before.get("reason") != c.reason:
                await self.event(kind, body, c.reason, f"{c.type}={c.status}: {c.message}".rstrip(": "),
                                 is_warning(c))
        return True

    def _remember(self, key: Key, version: str | None, stored: Mapping[str, Any]) -> None:
        """Put what our status write stored into the cache at once, so the next reconcile decides from
        it rather than from the version before (its watch event may still be on the way). Only when
        the cache still holds the version the write was decided from: a watch event processed
        meanwhile is as new or newer."""
        cached = self.store.get(key)
        if cached is None or cached["metadata"].get("resourceVersion") != version:
            return
        for other in self.store.ahead(key[0], stored):
            if other != key and self.queue is not None:
                self.queue.enqueue(other)  # those the watch event would have woken: it will find no change

    async def validated(
        self,
        kind: Kind,
        key: tuple[str, str, str],
        check: Callable[[Any], list[str]],
        invalid_also: Sequence[str] = (),
    ) -> tuple[dict[str, Any], Any] | None:
        """The stored object and its typed spec, or None when it is gone or being deleted.

        An invalid spec (the model's own rules, then `check`) is reported as `Ready=False,
        reason=InvalidSpec` (and the same on the `invalid_also` condition types), with a message
        naming each field; then `InvalidSpec`: nothing is built and nothing retried.
        """
        body = self.store.get(key)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None
        spec, errors = parse(kind.spec, body.get("spec"))
        if spec is not None:
            errors = check(spec)
        if errors:
            message = "; ".join(errors)
            await self.write_status(kind, body, [Cond(t, FALSE, "InvalidSpec", message)
                                                 for t in ("Ready", *invalid_also)])
            raise InvalidSpec(message)
        return body, spec

    async def event(self, kind: Kind, body: Mapping[str, Any], reason: str, message: str,
                    warning: bool = False) -> None:
        """Post a Kubernetes Event (Warnings always; Normal ones unless MLOPS_EVENTS=warnings)."""
        if not warning and not self.post_normal_events:
            return
        await events.post(self.api, {"apiVersion": API_VERSION, "kind": kind.kind, "metadata": body["metadata"]},
                          reason, message, warning, instance=self.settings.instance)
