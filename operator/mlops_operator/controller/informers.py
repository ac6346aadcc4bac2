"""The operator's own list+watch of the six kinds it reacts to (its three and their three child kinds).

Why not kopf's watching: kopf runs every watch event through a task per object, cause detection,
logging adapters and the handler machinery, about a millisecond of CPU per event, while all the
operator needs of an event is "put it in the cache, queue whom it concerns" (controller/store.py),
a tenth of that. At 1,000 models a rollout of everything is tens of thousands of events, and that
millisecond was most of the operator's CPU. So kopf runs the process (login, start-up, clean-up,
liveness, signals) and these informers feed the cache:

* a list first (paged), so the cache holds everything before any reconcile runs (the queue opens
  only once every informer has listed: a restarted operator never decides on a half-filled cache);
* then a watch from the list's resourceVersion, with bookmarks, resumed from the last version seen
  when the server ends it or the connection drops, and a fresh list when that version is too old
  (410 Gone): objects missing from the new list are delivered as deleted;
* server-side label selectors for children (only the operator's own), and a namespace filter for
  glob patterns (`it-*`), which watch the whole cluster and keep what matches.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .client import Api, ApiError, Resource

logger = logging.getLogger("mlops_operator")

Handler = Callable[[str, dict[str, Any]], None]  # (event type, object)
FAILING_TOO_LONG = 300.0  # seconds of failed lists and watches in a row before the liveness probe fails
NOT_READY_AFTER = 10.0  # … and before the readiness probe does (an informer refused 403 is not ready within 30 s)


class Gone(Exception):
    """The version to resume from is too old (410): list again."""


@dataclass
class Scope:
    """Where to watch: exact namespaces get a watch each; glob patterns (or none: everything) one
    cluster-wide watch whose events are kept when their namespace matches."""

    namespaces: tuple[str, ...] = ()
    patterns: tuple[str, ...] = field(init=False)
    """The glob patterns among `namespaces` (asked on every watch event: found once)."""

    def __post_init__(self) -> None:
        self.patterns = tuple(n for n in self.namespaces if any(c in n for c in "*?["))

    def watched(self) -> list[str | None]:
        """The namespaces to open watches in (None: cluster-wide)."""
        if not self.namespaces or self.patterns:
            return [None]
        return list(self.namespaces)

    def accepts(self, namespace: str) -> bool:
        return not self.patterns or any(fnmatch.fnmatchcase(namespace, n) for n in self.namespaces)


@dataclass
class Informer:
    api: Api
    resource: Resource
    kind: str
    namespace: str | None
    handler: Handler
    accepts: Callable[[str], bool] = lambda _ns: True
    label_selector: str | None = None
    server_timeout: int = 300
    page: int = 500
    # (namespace, name) → the metadata last seen: what a re-list must report as deleted
    known: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    listed: asyncio.Event = field(default_factory=asyncio.Event)
    failing_since: float | None = None
    """Monotonic time of the first of the failures in a row (None: the last list or watch worked)."""

    def _params(self, **extra: str) -> dict[str, str]:
        params = {**extra}
        if self.label_selector:
            params["labelSelector"] = self.label_selector
        return params

    async def list(self) -> str:
        """List everything (in pages); deliver each as ADDED or MODIFIED, and what vanished since the
        last list as DELETED. Returns the list's resourceVersion."""
        seen: set[tuple[str, str]] = set()
        token, version = "", ""
        while True:
            result = await self.api.list(self.resource, self.namespace, label_selector=self.label_selector,
                                         limit=self.page, continue_token=token or None)
            api_version = result.get("apiVersion", "")
            for item in result.get("items") or ():
                item.setdefault("apiVersion", api_version)
                item.setdefault("kind", self.kind)
                meta = item["metadata"]
                seen.add((meta.get("namespace", ""), meta["name"]))
                self._deliver("ADDED", item)
            version = str(result["metadata"].get("resourceVersion", ""))
            token = result["metadata"].get("continue") or ""
            if not token:
                break
        for key in [k for k in self.known if k not in seen]:
            self._deliver("DELETED", {"apiVersion": "", "kind": self.kind, "metadata": self.known[key]})
        self.listed.set()
        return version

    def _deliver(self, kind: str, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        ns = meta.get("namespace", "")
        if not self.accepts(ns):
            return
        key = (ns, meta["name"])
        if kind == "DELETED":
            self.known.pop(key, None)
        else:
            self.known[key] = {k: meta[k] for k in ("name", "namespace", "ownerReferences") if k in meta}
        try:
            self.handler(kind, obj)
        except Exception:  # a bad object must not stop the stream of every other one
            logger.exception("%s %s/%s: could not handle a %s event", self.kind, ns, meta["name"], kind)

    async def watch(self, version: str) -> str:
        """One watch request from `version` until the server ends it; the last version seen."""
        params = self._params(watch="1", resourceVersion=version, allowWatchBookmarks="true",
                              timeoutSeconds=str(self.server_timeout))
        try:
            async for event in self.api.stream(self.resource.path(self.namespace), params,
                                               read_timeout=self.server_timeout + 30):
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    raise ApiError(int(obj.get("code") or 500), "WATCH", self.resource.plural, json.dumps(obj))
                version = obj.get("metadata", {}).get("resourceVersion") or version
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    self._deliver(kind, obj)
        except ApiError as exc:  # as an event in the stream, or as the answer to the request
            if exc.status == 410:
                raise Gone(exc.message) from exc
            raise
        return version

    async def run(self) -> None:
        """List, then watch for ever; survives the apiserver going away and coming back."""
        version, failures = "", 0
        while True:
            try:
                if not version:
                    version = await self.list()
                    self.failing_since = None
                version = await self.watch(version)
                failures, self.failing_since = 0, None
            except asyncio.CancelledError:
                raise
            except Gone as exc:
                logger.info("watch of %s%s: %s; listing again", self.resource.plural,
                            f" in {self.namespace}" if self.namespace else "", exc)
                version = ""
            except Exception as exc:
                failures += 1
                if self.failing_since is None:
                    self.failing_since = time.monotonic()
                delay = min(10.0, 0.25 * 2 ** min(failures, 6))
                log = logger.warning if failures < 5 or failures % 20 == 0 else logger.debug
                log("watch of %s%s failed (%s); again in %.1fs", self.resource.plural,
                    f" in {self.namespace}" if self.namespace else "", exc or type(exc).__name__, delay)
                await asyncio.sleep(delay)


class Informers:
    """The informers of every kind in every watched namespace, as tasks."""

    def __init__(self, informers: list[Informer]) -> None:
        self.informers = informers
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self.tasks = [asyncio.create_task(i.run(), name=f"watch-{i.resource.plural}-{i.namespace or '*'}")
                      for i in self.informers]

    async def listed(self) -> None:
        """Return once every informer has listed once."""
        await asyncio.gather(*(i.listed.wait() for i in self.informers))

    def problems(self, now: float, failing_for: float = FAILING_TOO_LONG) -> list[str]:
        """What the liveness probe reports: informers that stopped, or whose lists and watches have
        failed for longer than `failing_for` seconds (a restart may help: new connections, new
        credentials); an apiserver that is briefly away is not a problem."""
        out = []
        for informer, task in zip(self.informers, self.tasks, strict=False):
            where = f"{informer.resource.plural}" + (f" in {informer.namespace}" if informer.namespace else "")
            if task.done():
                out.append(f"the informer of {where} stopped")
            elif informer.failing_since is not None and now - informer.failing_since > failing_for:
                out.append(f"the informer of {where} has failed for {now - informer.failing_since:.0f} s")
        return out

    def unready(self, now: float, failing_for: float = NOT_READY_AFTER) -> list[str]:
        """What the readiness probe reports: informers not listed yet, or failing for `failing_for` seconds
        (a 403, an apiserver away): the cache is not being kept current, so neither are decisions."""
        waiting = [f"the informer of {i.resource.plural}" + (f" in {i.namespace}" if i.namespace else "") +
                   " has not listed yet" for i in self.informers if not i.listed.is_set()]
        return waiting + self.problems(now, failing_for)

    async def stop(self) -> None:
        for t in self.tasks:
            t.cancel()
        for t in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
