"""The images' hash-pinned requirements: the checked-in files agree with the tested constraints, every pin
carries hashes, and the Dockerfile installs nothing that is not hash-checked."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from mlops_operator.dev import lock

TOP = Path(__file__).resolve().parents[2]


def test_the_checked_in_locks_agree_with_the_constraints() -> None:
    assert lock.lock_problems(TOP) == []
    runtime = lock.pins((TOP / lock.LOCK_DIR / "runtime.txt").read_text())
    operator = lock.pins((TOP / lock.LOCK_DIR / "operator.txt").read_text())
    # the runtime has the data plane (the extras), the operator image does not
    assert {"scikit-learn", "granian", "grpcio", "boto3", "onnxruntime"} <= set(runtime)
    assert "kopf" in operator and "scikit-learn" not in operator and "granian" not in operator
    assert "setuptools" in lock.pins((TOP / lock.LOCK_DIR / "build.txt").read_text())


def _copy(tmp_path: Path) -> Path:
    (tmp_path / "constraints").mkdir()
    shutil.copy(TOP / "constraints" / "dev.txt", tmp_path / "constraints" / "dev.txt")
    shutil.copytree(TOP / lock.LOCK_DIR, tmp_path / lock.LOCK_DIR)
    return tmp_path


def test_a_version_other_than_the_constraints_or_a_pin_without_hashes_is_reported(tmp_path: Path) -> None:
    top = _copy(tmp_path)
    runtime = top / lock.LOCK_DIR / "runtime.txt"
    tested = lock.pins(runtime.read_text())["numpy"]
    runtime.write_text(runtime.read_text().replace(f"numpy=={tested} \\", "numpy==1.0.0 \\"))
    build = top / lock.LOCK_DIR / "build.txt"
    build.write_text(build.read_text() + "left-pad==1.0\n")
    (top / lock.LOCK_DIR / "operator.txt").unlink()
    problems = lock.lock_problems(top)
    assert any("runtime.txt: numpy==1.0.0" in p and tested in p for p in problems), problems
    assert any("build.txt: left-pad has no hash" in p for p in problems), problems
    assert any("operator.txt is missing" in p for p in problems), problems


def test_the_dockerfile_installs_only_hash_checked_or_local_distributions() -> None:
    dockerfile = (TOP / "images" / "Dockerfile").read_text().replace("\\\n", " ")
    installs = [line for line in dockerfile.splitlines()
                if not line.lstrip().startswith("#") and re.search(r"\bpip (install|wheel)\b", line)]
    assert len(installs) >= 5, installs
    for line in installs:
        checked = "--require-hashes -r /etc/mlops/requirements/" in line
        local = "--no-index" in line and "--no-deps" in line
        assert checked or local, f"an unchecked install in images/Dockerfile: {line.strip()}"
    for name in ("build", "operator", "runtime"):
        assert f"--require-hashes -r /etc/mlops/requirements/{name}.txt" in dockerfile
    assert "!images/requirements/" in (TOP / ".dockerignore").read_text().splitlines()
