"""The one place that installs system packages: what it checks, what it says, and who calls it."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mlops_operator.dev import system

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


def test_a_package_is_present_by_what_it_provides() -> None:
    assert system.Package("x", "python:venv,json", "", system.BOTH).present()
    assert not system.Package("x", "python:venv,no_such_module_here", "", system.BOTH).present()
    assert system.Package("x", Path(sys.executable).name, "", system.BOTH).present() == bool(
        shutil.which(Path(sys.executable).name))
    assert not system.Package("x", "no-such-command-mlops", "", system.BOTH).present()


def test_envtest_assets_count_for_etcd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "no-such-command-mlops"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    pkg = system.Package("x", fake.name, "", system.BOTH)
    assert not pkg.present()
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(tmp_path))
    assert pkg.present()


def test_what_cannot_be_installed_is_named_with_the_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(system, "PACKAGES", (system.Package("nosuchpkg", "no-such-command-mlops", "a reason",
                                                            frozenset({"test"})),))
    monkeypatch.setattr(system, "can_install", lambda: "this is not root")
    out = io.StringIO()
    assert system.ensure("test", out) == 1
    text = out.getvalue()
    assert "missing: nosuchpkg (a reason)" in text
    assert "this is not root" in text and "apt-get install -y nosuchpkg" in text
    # the demo does not need it
    assert system.ensure("demo", io.StringIO()) == 0


def test_the_tests_binaries_are_listed_for_make_test() -> None:
    provided = {p.provides for p in system.PACKAGES if "test" in p.needed_for}
    # every system binary a test or the control plane runs
    assert {"etcd", "openssl", "prometheus"} <= provided


def test_runs_as_a_script_with_the_system_python_and_is_quick_when_present() -> None:
    """Before .venv exists, `make` runs the file with plain python3: stdlib only."""
    script = ROOT / "operator/mlops_operator/dev/system.py"
    proc = subprocess.run([sys.executable, "-S", "-I", str(script), "bogus"], capture_output=True, text=True)
    assert proc.returncode == 2 and "usage" in proc.stderr


def test_make_test_and_demo_install_and_ci_does_nothing_else() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^test: system-test ", makefile, re.M) and re.search(r"^demo: system-demo ", makefile, re.M)
    assert "dev/system.py" in makefile
    ci = (ROOT / ".ci/run").read_text()
    assert "apt-get" not in ci and "make test" in ci
