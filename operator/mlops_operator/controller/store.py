"""The operator's cache, filled by the informers' watch events (never a list call per reconcile): slim
copies of our objects, children grouped by owner, and a reverse index of references, so that an event of
any object queues exactly the reconciles it concerns."""

from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..api import API_VERSION

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
CHILD_SPEC = {"Deployment": ("replicas",), "Service": ("selector", "ports"), "Job": ("suspend", "completionMode")}


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


