"""Manifest scanners nobody here wrote, as users' pipelines run them: checkov, in a virtual environment of
its own under the cache (its dependencies are many and pinned; they stay out of the project's)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
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
        # the registry is across the network: a failed attempt (a name that did not resolve, seen once in CI)
        # is tried again, with pip's own retries inside each attempt
        for attempt in range(3):
            done = subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "--retries", "10",
                                   f"checkov=={CHECKOV_VERSION}"], timeout=1200)
            if done.returncode == 0:
                break
            time.sleep(30 * (attempt + 1))
        else:
            raise RuntimeError(f"checkov {CHECKOV_VERSION} could not be installed (pip exited {done.returncode})")
    return exe


def failed_checks(manifest: Path) -> list[dict[str, Any]]:
    """checkov's failed Kubernetes checks of one multi-document YAML file: check_id, resource, check_name."""
    out = subprocess.run([str(checkov()), "-f", str(manifest), "--framework", "kubernetes", "-o", "json",
                          "--quiet", "--skip-download"], capture_output=True, text=True, timeout=600)
    assert out.stdout.strip(), out.stderr
    reports = json.loads(out.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    return [f for r in reports for f in (r.get("results") or {}).get("failed_checks") or ()]
