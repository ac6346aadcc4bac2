"""Checks of a compiled Kubeflow pipeline (IR YAML) before it runs offline with kfp.local."""

from __future__ import annotations

import re
from typing import Any

import yaml

# the kfp the runtime image ships (kfp 2.17.3 is not installable here; 2.17.0 is)
RUNTIME_KFP_VERSION = "2.17.0"
_PIP_KFP = re.compile(r"kfp==([0-9][0-9A-Za-z.+-]*)")


def check(text: str, where: str) -> list[str]:
    """Problems that make the pipeline unable to run offline in the runtime image."""
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        return [f"{where}: not YAML: {exc}"]
    if not docs or not isinstance(docs[0], dict) or "pipelineInfo" not in docs[0]:
        return [f"{where}: not a compiled pipeline (no pipelineInfo): compile it with kfp's Compiler"]
    errors = []
    executors: dict[str, Any] = (docs[0].get("deploymentSpec") or {}).get("executors") or {}
    for name, executor in sorted(executors.items()):
        container = executor.get("container") or {}
        text_parts = [*container.get("command", []), *container.get("args", [])]
        for version in sorted({v for part in text_parts for v in _PIP_KFP.findall(str(part))}):
            if version != RUNTIME_KFP_VERSION:
                errors.append(f"{where}: executor {name} would install kfp=={version} at run time, which cannot "
                              f"work offline; compile with kfp=={RUNTIME_KFP_VERSION} (the runtime's)")
    return errors
