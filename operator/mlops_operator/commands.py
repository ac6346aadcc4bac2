"""`mlops promote|abort|retry|rollback`: act on a rollout through annotations naming a revision.

An annotation `mlops.dev/<verb>: <revision>@<time>` is what the operator reads; status records
the values it handled, so an annotation left on the object (or in Git) never approves the next
candidate, and the same command given again gets a new time. Never through spec. The API is
reached with kubectl (this is also `kubectl mlops …`), so the user's kubeconfig and context apply.
"""

from __future__ import annotations

import datetime
import json
import shutil
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

from .api import BY_KIND, GROUP, KINDS

VERBS = {
    "promote": "promote the candidate now (blue-green awaiting promotion, or skip the remaining canary steps)",
    "abort": "reject the candidate: traffic stays on the stable revision",
    "retry": "roll a rejected revision out again",
    "rollback": "return to a revision that served before (see status.history)",
}


class CommandError(Exception):
    pass


def kubectl() -> str:
    found = shutil.which("kubectl")
    if found:
        return found
    from .dev.tools import tool

    return tool("kubectl")


def _run(args: Sequence[str]) -> str:
    proc = subprocess.run([kubectl(), *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise CommandError(proc.stderr.strip() or f"kubectl {' '.join(args)} failed")
    return proc.stdout


def which_revision(verb: str, status: dict[str, Any], given: str | None) -> str:
    """The revision a command applies to: the one given, else the obvious one from status."""
    if given:
        return given
    if verb in ("promote", "abort"):
        cand = (status.get("candidate") or {}).get("revision")
        if not cand:
            raise CommandError(f"there is no candidate to {verb}")
        return str(cand)
    if verb == "retry":
        rejected = status.get("rejected") or []
        if not rejected:
            raise CommandError("no revision was rejected")
        return str(rejected[-1])
    raise CommandError("mlops rollback needs --to REVISION (see status.history)")


def run(verb: str, name: str, namespace: str | None, revision: str | None) -> int:
    scope = ["-n", namespace] if namespace else []
    try:
        md = json.loads(_run(["get", "modeldeployments.mlops.dev", name, "-o", "json", *scope]))
        rev = which_revision(verb, md.get("status") or {}, revision)
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        _run(["annotate", "--overwrite", "modeldeployments.mlops.dev", name, f"mlops.dev/{verb}={rev}@{stamp}", *scope])
    except CommandError as exc:
        print(f"mlops {verb}: {exc}", file=sys.stderr)
        return 1
    print(f"modeldeployment/{name}: {verb} {rev} requested")
    return 0


SHORT_NAMES = {kind.short_names[0]: kind.kind for kind in KINDS}


def _list(kind: str, scope: Sequence[str]) -> list[dict[str, Any]]:
    resource = f"{BY_KIND[kind].plural}.{GROUP}"
    return list(json.loads(_run(["get", resource, "-o", "json", *scope])).get("items") or [])


def get(what: str, namespace: str | None, all_namespaces: bool) -> int:
    """`mlops get [tr|md|dp|all]`: one table per kind."""
    from .views import get_table

    scope = ["--all-namespaces"] if all_namespaces else (["-n", namespace] if namespace else [])
    kinds = list(SHORT_NAMES.values()) if what == "all" else [SHORT_NAMES[what]]
    now = datetime.datetime.now(datetime.UTC)
    try:
        tables = [(kind, _list(kind, scope)) for kind in kinds]
    except CommandError as exc:
        print(f"mlops get: {exc}", file=sys.stderr)
        return 1
    shown = [f"{kind}s:\n{get_table(kind, items, now)}" if len(kinds) > 1 else get_table(kind, items, now)
             for kind, items in tables if items or len(kinds) == 1]
    print("\n\n".join(shown) if shown else "no mlops resources found")
    return 0


def status(target: str, namespace: str | None) -> int:
    """`mlops status md/NAME`: the loop of one model as a tree."""
    from .views import status_tree

    kind, _, name = target.partition("/")
    if not name or kind not in ("md", "modeldeployment", "modeldeployments"):
        print(f"mlops status: {target}: name a ModelDeployment (md/NAME)", file=sys.stderr)
        return 2
    scope = ["-n", namespace] if namespace else []
    try:
        md = json.loads(_run(["get", "modeldeployments.mlops.dev", name, "-o", "json", *scope]))
        scope = ["-n", md["metadata"]["namespace"]]
        print(status_tree(md, _list("TrainingRun", scope), _list("DriftPolicy", scope)))
    except CommandError as exc:
        print(f"mlops status: {exc}", file=sys.stderr)
        return 1
    return 0
