"""Run the chart's Argo CD health checks (Lua) the way Argo CD does: `obj` global, a returned table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlops_operator.dev.manifests import health_script

HEALTH = Path(__file__).resolve().parents[1] / "charts" / "mlops-operator" / "health"


def argocd_health(obj: dict[str, Any]) -> tuple[str, str]:
    from lupa import LuaRuntime

    lua = LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(health_script(HEALTH, obj["kind"]))
    return str(result["status"]), str(result["message"] or "")
