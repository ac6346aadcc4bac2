"""Reading a revision's Pods: who is ready, at which address, and what their endpoints say.

A labelled list call, made only when a decision needs it (an analysis starting, a live-analysis
window closing, a drift evaluation falling due), never on a steady-state resync."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from ..api import labels as L
from ..api.artifacts import ArtifactError
from ..builders.modeldeployment import MONITORING_PORT
from ..controller.client import PODS
from .context import Ctx

T = TypeVar("T")


async def pods(ctx: Ctx, namespace: str, selector: str) -> list[dict[str, Any]]:
    """The Pods a label selector matches (Pods are not cached: one list call, when a decision needs it)."""
    return await ctx.api.items(PODS, namespace, selector)


async def job_pods(ctx: Ctx, namespace: str, job: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The Pods of a Job (by the controller-uid label the Job controller sets)."""
    return await pods(ctx, namespace, f"controller-uid={job['metadata'].get('uid', '')}")


async def answer(ctx: Ctx, namespace: str, job: Mapping[str, Any], container: str, parse: Callable[[str], T],
                 missing: str) -> T | ArtifactError:
    """What a finished Job's `container` answered in its termination message, parsed by `parse` (its successful
    run if it has one, else its last); an ArtifactError saying why there is no answer: the message of a failed run,
    a message that does not parse, or `missing` when no Pod of the Job says (gone, or never ran)."""
    found: list[tuple[str, int, str]] = []
    for pod in await job_pods(ctx, namespace, job):
        for s in (pod.get("status") or {}).get("containerStatuses") or ():
            term = (s.get("state") or {}).get("terminated")
            if s.get("name") == container and term:
                found.append((str(term.get("finishedAt") or ""), int(term.get("exitCode") or 0),
                              str(term.get("message") or "")))
    if not found:
        return ArtifactError(missing)
    _, code, message = max([f for f in found if f[1] == 0] or found)
    if code != 0:
        return ArtifactError(" ".join(message.split())[:500] or f"exit code {code}")
    try:
        return parse(message)
    except ArtifactError as exc:
        return exc


def ready(pod: dict[str, Any]) -> bool:
    st = pod.get("status") or {}
    return bool(st.get("podIP")) and not pod["metadata"].get("deletionTimestamp") and any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in st.get("conditions") or ())


def base_url(pod: dict[str, Any]) -> str:
    """The pod's monitoring port (monitoring, profile, metrics, replayed inference): no Service exposes it."""
    return f"http://{pod['status']['podIP']}:{MONITORING_PORT}"


async def ready_pods(ctx: Ctx, namespace: str, md_name: str, revision: str | None) -> list[dict[str, Any]]:
    """The ready pods of one revision (None: of every revision)."""
    selector = L.selector({L.MODEL_DEPLOYMENT: md_name, **({L.REVISION: revision} if revision else {})})
    return [p for p in await pods(ctx, namespace, selector) if ready(p)]
