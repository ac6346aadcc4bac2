"""Manifest scanners nobody here wrote, as users' pipelines run them: checkov, in a virtual environment of
its own under the cache (its dependencies are many and pinned; they stay out of the project's)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from mlops_operator import config

CHECKOV_VERSION = "3.3.30"


def checkov() -> Path:
    """The checkov executable, installed once into the cache."""
    venv = config.cache_dir() / "tools" / f"checkov-{CHECKOV_VERSION}"
    exe = venv / "bin" / "checkov"
    if not exe.exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, timeout=300)
        subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", f"checkov=={CHECKOV_VERSION}"],
                       check=True, timeout=1200)
    return exe


def failed_checks(manifest: Path) -> list[dict[str, Any]]:
    """checkov's failed Kubernetes checks of one multi-document YAML file: check_id, resource, check_name."""
    out = subprocess.run([str(checkov()), "-f", str(manifest), "--framework", "kubernetes", "-o", "json",
                          "--quiet", "--skip-download"], capture_output=True, text=True, timeout=600)
    assert out.stdout.strip(), out.stderr
    reports = json.loads(out.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    return [f for r in reports for f in (r.get("results") or {}).get("failed_checks") or ()]
