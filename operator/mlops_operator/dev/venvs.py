"""Virtual environments of their own for programs whose dependencies conflict with ours: inference
clients the tests drive the server with (tritonclient, kserve, the open-inference-openapi client),
the spec tester (schemathesis), and the benchmark's peer servers. Created once under the cache
(`<cache>/venvs/<name>`), recreated when the package list changes."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from .. import config


def cached_venv(name: str, packages: list[str]) -> Path:
    """The python of a virtual environment holding `packages` (pip requirement strings)."""
    venv = config.cache_dir() / "venvs" / name
    python = venv / "bin" / "python"
    marker = venv / ".installed"
    wanted = "\n".join(packages)
    if marker.exists() and marker.read_text() == wanted and python.exists():
        return python
    shutil.rmtree(venv, ignore_errors=True)
    print(f"# creating the {name} environment ({', '.join(packages)})", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    proc = subprocess.run([str(python), "-m", "pip", "install", "--quiet", *packages], capture_output=True, text=True)
    if proc.returncode != 0:
        shutil.rmtree(venv, ignore_errors=True)
        raise RuntimeError(f"pip could not install {packages} for {name}:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    marker.write_text(wanted)
    return python
