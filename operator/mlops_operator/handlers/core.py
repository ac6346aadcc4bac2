"""Level-based reconcile plumbing shared by the three kinds.

A watch event says that *one* object changed. The design wants more: each kind has one
reconcile function, called for its own events, for events of its children (mapped to the owner
through ownerReferences), for events of objects it refers to (mapped through a reverse index),
and by a slow periodic resync. So:

* `Store` is the operator's cache, filled by watch events (watching.py; never a list call per reconcile):
  slim copies of our objects, children grouped by owner, and a reverse index of references.
* `WorkQueue` runs reconciles: a key queued several times runs once; a key never runs twice at
  the same time (a change during a run queues it again); `kopf.TemporaryError(delay=…)` requeues
  after the delay, `kopf.PermanentError` does not requeue, any other error requeues with
  exponential backoff. The operator never crashes on a bad object.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import sys
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf

from ..api import API_VERSION

logger = logging.getLogger("mlops_operator")

Key = tuple[str, str, str]  # (kind, namespace, name)
RefKey = tuple[str, str, str]  # (what it is known as, namespace, name)
Body = dict[str, Any]

# what is kept of each object: enough to reconcile, nothing more (memory at 1,000s of objects)
_KEEP_META = ("name", "namespace", "uid", "generation", "labels", "annotations", "ownerReferences",
              "creationTimestamp", "deletionTimestamp", "resourceVersion")


def shared(value: Any) -> Any:
    """`value` with its keys and short strings shared (interned): thousands of cached objects repeat the
    same keys, label values, condition types, reasons and timestamps, and each JSON decode makes a copy
    of every one of them (about a third of the cache's memory)."""
    if isinstance(value, dict):
        return {sys.intern(k): shared(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shared(v) for v in value]
    if isinstance(value, str) and len(value) <= 64:
        return sys.intern(value)
    return value


def slim(body: Mapping[str, Any]) -> Body:
    meta = body.get("metadata", {})
    out: Body = {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": {k: meta[k] for k in _KEEP_META if k in meta},
    }
    for part in ("spec", "status"):
        if part in body:
            out[part] = body[part]
    return out


# of a child, the spec fields a reconcile reads (a Deployment's pod template is most of its size,
# and a thousand models have thousands of children)
CHILD_SPEC = {"Deployment": ("replicas",), "Service": ("selector",), "Job": ()}


def slim_child(kind: str, body: Mapping[str, Any]) -> Body:
    out = slim(body)
    keep = CHILD_SPEC.get(kind)
    if keep is not None and "spec" in out:
        out["spec"] = {k: out["spec"][k] for k in keep if k in out["spec"]}
    return out


def owner_of(body: Mapping[str, Any], kinds: Iterable[str]) -> Key | None:
    """The (kind, namespace, name) of the mlops.dev owner of a child object, if any."""
    wanted = set(kinds)
    meta = body.get("metadata", {})
    for ref in meta.get("ownerReferences") or ():
        if ref.get("apiVersion") == API_VERSION and ref.get("kind") in wanted and ref.get("controller", True):
            return (ref["kind"], meta.get("namespace", ""), ref["name"])
    return None


@dataclass
class Store:
    """The operator's view of the cluster, built from watch events."""

    # kind → how an object of that kind is known to others, and what it refers to
    known_as: dict[str, Callable[[Body], set[RefKey]]] = field(default_factory=dict)
    refers_to: dict[str, Callable[[Body], set[RefKey]]] = field(default_factory=dict)
    objects: dict[str, dict[tuple[str, str], Body]] = field(default_factory=lambda: defaultdict(dict))
    children: dict[Key, dict[str, dict[str, Body]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(dict)))
    _dependents: dict[RefKey, set[Key]] = field(default_factory=lambda: defaultdict(set))
    _refs: dict[Key, set[RefKey]] = field(default_factory=dict)
    _aliases: dict[RefKey, set[Key]] = field(default_factory=lambda: defaultdict(set))
    # resourceVersions our own status writes produced and put in the cache ahead of the watch,
    # oldest first, until the watch brings them back
    _ahead: dict[Key, list[str]] = field(default_factory=dict)

    def get(self, key: Key) -> Body | None:
        return self.objects[key[0]].get((key[1], key[2]))

    def keys(self, kind: str) -> list[Key]:
        return [(kind, ns, name) for ns, name in self.objects[kind]]

    def by_alias(self, ref: RefKey) -> list[Body]:
        """Objects known under `ref` (e.g. the TrainingRuns of one model in one namespace)."""
        out = []
        for key in self._aliases.get(ref, ()):
            obj = self.get(key)
            if obj is not None:
                out.append(obj)
        return out

    def upsert(self, kind: str, body: Mapping[str, Any]) -> set[Key]:
        """Store an object (from a watch event); return the keys of the objects that must be reconciled
        because of it. The watch brings versions in order, but the cache may be ahead of it with what
        our own writes stored: an event of an earlier write of ours is then the past and is skipped."""
        meta = body["metadata"]
        key: Key = (kind, meta.get("namespace", ""), meta["name"])
        ahead = self._ahead.get(key)
        if ahead:
            version = meta.get("resourceVersion")
            if version in ahead:
                del ahead[:ahead.index(version) + 1]
                if ahead:
                    return set()  # a later write of ours is already cached
            del self._ahead[key]  # caught up (or someone else wrote after us)
        return self._put(kind, key, body)

    def ahead(self, kind: str, body: Mapping[str, Any]) -> set[Key]:
        """Store what one of our writes stored, ahead of its watch event."""
        meta = body["metadata"]
        key: Key = (kind, meta.get("namespace", ""), meta["name"])
        self._ahead.setdefault(key, []).append(meta.get("resourceVersion", ""))
        return self._put(kind, key, body)

    def _put(self, kind: str, key: Key, body: Mapping[str, Any]) -> set[Key]:
        old = self.get(key)
        new = shared(slim(body))
        self.objects[kind][(key[1], key[2])] = new
        affected = {key}
        affected |= self._reindex(key, old, new)
        return affected

    def delete(self, kind: str, namespace: str, name: str) -> set[Key]:
        key: Key = (kind, namespace, name)
        self._ahead.pop(key, None)
        old = self.objects[kind].pop((namespace, name), None)
        self.children.pop(key, None)
        affected = self._reindex(key, old, None)
        for ref in self._refs.pop(key, set()):
            self._dependents[ref].discard(key)
        return affected

    def _reindex(self, key: Key, old: Body | None, new: Body | None) -> set[Key]:
        kind = key[0]
        names = self.known_as.get(kind)
        old_aliases = names(old) if names and old else set()
        new_aliases = names(new) if names and new else set()
        for a in old_aliases - new_aliases:
            self._aliases[a].discard(key)
        for a in new_aliases:
            self._aliases[a].add(key)
        refs = self.refers_to.get(kind)
        if refs is not None:
            new_refs = refs(new) if new else set()
            for r in self._refs.get(key, set()) - new_refs:
                self._dependents[r].discard(key)
            for r in new_refs:
                self._dependents[r].add(key)
            self._refs[key] = new_refs
        affected: set[Key] = set()
        changed = old is None or new is None or old.get("spec") != new.get("spec") or \
            old.get("status") != new.get("status") or old["metadata"].get("labels") != new["metadata"].get("labels")
        if changed:
            for a in old_aliases | new_aliases:
                affected |= self._dependents.get(a, set())
        affected.discard(key)
        return affected

    def upsert_child(self, owner: Key, child_kind: str, body: Mapping[str, Any]) -> None:
        self.children[owner][child_kind][body["metadata"]["name"]] = shared(slim_child(child_kind, body))

    def delete_child(self, owner: Key, child_kind: str, name: str) -> None:
        self.children.get(owner, {}).get(child_kind, {}).pop(name, None)


Reconcile = Callable[[Key], Awaitable[None]]


class WorkQueue:
    """Deduplicating, per-key serialized reconcile queue with retries and delayed requeues."""

    def __init__(self, reconcilers: Mapping[str, Reconcile], workers: int = 16,
                 max_backoff: float = 300.0) -> None:
        self._reconcilers = dict(reconcilers)
        self._queue: asyncio.Queue[Key] = asyncio.Queue()
        self._queued: set[Key] = set()
        self._running: set[Key] = set()
        self._dirty: set[Key] = set()
        self._timers: dict[Key, tuple[float, asyncio.TimerHandle]] = {}
        self._failures: dict[Key, int] = {}
        self._max_backoff = max_backoff
        self.open = asyncio.Event()
        """Set once the cache holds every object (no decision on a half-filled cache after a restart)."""
        self._workers = [asyncio.create_task(self._work(i)) for i in range(workers)]
        self.reconciles = 0
        self.reconciles_by_kind: collections.Counter[str] = collections.Counter()
        self.errors_by_kind: collections.Counter[str] = collections.Counter()
        self.reconciles_by_namespace: collections.Counter[tuple[str, str]] = collections.Counter()

    def enqueue(self, key: Key) -> None:
        if key in self._running:
            self._dirty.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._queue.put_nowait(key)

    def enqueue_after(self, key: Key, delay: float) -> None:
        due = time.monotonic() + delay
        existing = self._timers.get(key)
        if existing and existing[0] <= due:
            return
        if existing:
            existing[1].cancel()
        handle = asyncio.get_running_loop().call_later(delay, self._fire, key)
        self._timers[key] = (due, handle)

    def _fire(self, key: Key) -> None:
        self._timers.pop(key, None)
        self.enqueue(key)

    def idle(self) -> bool:
        return not self._queued and not self._running

    async def _work(self, n: int) -> None:
        await self.open.wait()
        while True:
            key = await self._queue.get()
            self._queued.discard(key)
            self._running.add(key)
            try:
                await self._run(key)
            finally:
                self._running.discard(key)
                if key in self._dirty:
                    self._dirty.discard(key)
                    self.enqueue(key)

    async def _run(self, key: Key) -> None:
        self.reconciles += 1
        self.reconciles_by_kind[key[0]] += 1
        self.reconciles_by_namespace[key[0], key[1]] += 1
        try:
            await self._reconcilers[key[0]](key)
        except kopf.PermanentError as exc:
            logger.info("%s %s/%s: %s (not retried)", *key, exc)
            self._failures.pop(key, None)
        except kopf.TemporaryError as exc:
            self._failures.pop(key, None)
            self.enqueue_after(key, float(exc.delay or 10))
        except asyncio.CancelledError:
            raise
        except Exception:
            failures = self._failures.get(key, 0) + 1
            self._failures[key] = failures
            self.errors_by_kind[key[0]] += 1
            delay = min(self._max_backoff, 0.5 * 2 ** (failures - 1))
            logger.exception("%s %s/%s: reconcile failed (attempt %d); retrying in %.1fs", *key, failures, delay)
            self.enqueue_after(key, delay)
        else:
            self._failures.pop(key, None)

    async def close(self) -> None:
        for _, handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        for w in self._workers:
            w.cancel()
        for w in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await w
