"""The project's images, built here from images/Dockerfile with buildah and imported into containerd:
no Docker engine, no registry.

- **base**: the Dockerfile's `BASE` build argument defaults to `python:3.11-slim` (for everyone with a
  registry). These machines reach Debian and PyPI but no image registry, so here the base is built once from
  `debootstrap --variant=minbase bookworm` with Debian's python3 + python3-venv (3.11, the minor version of
  python:3.11-slim) and the image's user 65532, then cached in buildah's storage under a tag that is a hash of
  its inputs (suite, mirror, packages, this recipe's version): rebuilt only when they change.
- **busybox**: busybox-static from Debian in an image of its own; with an entrypoint that sleeps until TERM it is
  the Pods' sandbox (pause) image, and without one the tests' tool image (nslookup, wget, id).
- **operator** and **runtime**: `buildah bud --layers` of the Dockerfile's targets with that base, under the
  names the chart and the operator's defaults use (config.RUNTIME_IMAGE's default, the chart's `image`), so a
  Pod spec written for a real cluster runs here unchanged.

Images go to containerd as OCI archives (`buildah push … oci-archive:` then `ctr images import`); an image is
imported again only when its buildah image id changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .. import config

Progress = Callable[[str], None]

OPERATOR_IMAGE = "ghcr.io/mlops-dev/mlops-operator:0.1.0"
RUNTIME_IMAGE = "ghcr.io/mlops-dev/mlops-runtime:0.1.0"
PAUSE_IMAGE = "localhost/mlops-pause:1"
BUSYBOX_IMAGE = "localhost/mlops-busybox:1"
BASE_REPO = "localhost/mlops-base"
RECIPE_VERSION = "2"
SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
IMAGE_USER = 65532
REPO_ROOT = Path(__file__).resolve().parents[3]


class ImageBuildError(RuntimeError):
    pass


def storage_root() -> Path:
    return config.cache_dir() / "buildah"


def buildah_cmd(*args: str) -> list[str]:
    root = storage_root()
    return ["buildah", "--root", str(root / "storage"), "--runroot", str(root / "run"),
            "--storage-driver", "overlay", *args]


def _run(cmd: list[str], progress: Progress | None = None, **kw: object) -> str:
    if progress:
        progress("  $ " + " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)  # type: ignore[call-overload]
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-30:])
        raise ImageBuildError(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{tail}")
    return str(proc.stdout)


def image_id(name: str) -> str | None:
    """buildah's id of a local image, or None."""
    proc = subprocess.run(buildah_cmd("inspect", "--type", "image", "--format", "{{.FromImageID}}", name),
                          capture_output=True, text=True)
    return proc.stdout.strip() or None if proc.returncode == 0 else None


def debian_mirror() -> str:
    """The Debian mirror apt already uses (deb822 or one-line sources), else deb.debian.org."""
    for path in (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list")):
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            words = line.split()
            if line.startswith("URIs:") and len(words) > 1 and "security" not in words[1]:
                return words[1]
            if words[:1] == ["deb"] and len(words) > 2 and "security" not in line:
                return next(w for w in words[1:] if w.startswith("http"))
    return "http://deb.debian.org/debian"


def base_tag() -> str:
    inputs = json.dumps([RECIPE_VERSION, SUITE, debian_mirror(), BASE_PACKAGES, IMAGE_USER])
    return f"{BASE_REPO}:{SUITE}-{hashlib.sha256(inputs.encode()).hexdigest()[:12]}"


def build_base(progress: Progress) -> str:
    """The local python:3.11-slim stand-in (cached by the hash of its inputs); returns its name."""
    tag = base_tag()
    if image_id(tag):
        return tag
    if shutil.which("debootstrap") is None:
        raise ImageBuildError("debootstrap is needed to build the base image (apt-get install debootstrap)")
    progress(f"[images] building the base {tag} from debootstrap {SUITE} (about 3 minutes, once)")
    with tempfile.TemporaryDirectory(prefix="mlops-base-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        _run(["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", SUITE, str(rootfs),
              debian_mirror()], progress)
        _run(["chroot", str(rootfs), "useradd", "--uid", str(IMAGE_USER), "--user-group", "--no-create-home",
              "--shell", "/usr/sbin/nologin", "mlops"], progress)
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists", "var/log"):
            for child in (rootfs / junk).glob("*"):
                if child.is_file():
                    child.unlink()
        ctr = _run(buildah_cmd("from", "scratch")).strip()
        try:
            _run(buildah_cmd("copy", ctr, f"{rootfs}/", "/"))
            _run(buildah_cmd("config", "--env", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                             "--env", "LANG=C.UTF-8", "--cmd", "/bin/bash", ctr))
            _run(buildah_cmd("commit", "--rm", ctr, tag))
        except BaseException:
            subprocess.run(buildah_cmd("rm", ctr), capture_output=True)
            raise
    return tag


def build_busybox(progress: Progress) -> None:
    """The sandbox (pause) image and the tests' tool image, both busybox-static."""
    busybox = shutil.which("busybox")
    if busybox is None:
        raise ImageBuildError("busybox is needed for the pause image (apt-get install busybox-static)")
    digest = hashlib.sha256(Path(busybox).read_bytes() + RECIPE_VERSION.encode()).hexdigest()[:12]
    for name, entrypoint in (
        (BUSYBOX_IMAGE, None),
        (PAUSE_IMAGE, ["/bin/sh", "-c", 'trap "exit 0" TERM INT; while :; do sleep 3600 & wait; done']),
    ):
        if _label(name, "dev.mlops.busybox") == digest:
            continue
        progress(f"[images] building {name} from {busybox}")
        ctr = _run(buildah_cmd("from", "scratch")).strip()
        try:
            _run(buildah_cmd("copy", ctr, busybox, "/bin/busybox"))
            _run(buildah_cmd("run", "--isolation", "chroot", ctr, "/bin/busybox", "--install", "-s", "/bin"))
            _run(buildah_cmd("run", "--isolation", "chroot", ctr, "/bin/busybox", "mkdir", "-m", "1777", "/tmp"))
            args = ["--label", f"dev.mlops.busybox={digest}", "--env", "PATH=/bin", "--user", f"{IMAGE_USER}"]
            args += ["--entrypoint", json.dumps(entrypoint)] if entrypoint else ["--cmd", "/bin/sh"]
            _run(buildah_cmd("config", *args, ctr))
            _run(buildah_cmd("commit", "--rm", ctr, name))
        except BaseException:
            subprocess.run(buildah_cmd("rm", ctr), capture_output=True)
            raise


def _label(name: str, key: str) -> str | None:
    template = f'{{{{index .OCIv1.Config.Labels "{key}"}}}}'
    proc = subprocess.run(buildah_cmd("inspect", "--type", "image", "--format", template, name),
                          capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else None


def context_hash(base: str) -> str:
    """A hash of everything the build reads: the Dockerfile, the base, and the context .dockerignore lets in."""
    digest = hashlib.sha256(f"{RECIPE_VERSION}\0{base}\0".encode())
    files = [REPO_ROOT / "images/Dockerfile", REPO_ROOT / "pyproject.toml", REPO_ROOT / "README.md",
             *sorted((REPO_ROOT / "constraints").rglob("*")), *sorted((REPO_ROOT / "images/requirements").rglob("*")),
             *sorted((REPO_ROOT / "operator").rglob("*"))]
    for path in files:
        skipped = "__pycache__" in path.parts or ".egg-info" in str(path) or path.suffix == ".pyc"
        if path.is_file() and not skipped:
            digest.update(str(path.relative_to(REPO_ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def build_project(progress: Progress, targets: tuple[str, ...] = ("operator", "runtime")) -> None:
    """`buildah bud` of the Dockerfile's targets with the local base (layers cached); skipped for an image whose
    `dev.mlops.source` label says it was built from exactly these inputs."""
    base = build_base(progress)
    source = context_hash(base)
    names = {"operator": OPERATOR_IMAGE, "runtime": RUNTIME_IMAGE}
    for target in targets:
        if _label(names[target], "dev.mlops.source") == source:
            continue
        progress(f"[images] building {names[target]} (images/Dockerfile, target {target})")
        secret = ["--secret", f"id=pip-ca,src={ca}"] if (ca := _pip_ca()) else []
        _run(buildah_cmd("bud", "--layers", "--isolation", "chroot", "--network", "host", *secret,
                         "-f", str(REPO_ROOT / "images/Dockerfile"), "--target", target,
                         "--build-arg", f"BASE={base}", "--label", f"dev.mlops.source={source}",
                         "-t", names[target], str(REPO_ROOT)), progress)


def _pip_ca() -> str | None:
    """The CA bundle pip uses on this machine (PIP_CERT, else the system bundle), handed to the build as a
    secret: where a TLS-intercepting proxy stands between this machine and PyPI, pip in the build needs it."""
    for candidate in (os.environ.get("PIP_CERT"), os.environ.get("REQUESTS_CA_BUNDLE"),
                      "/etc/ssl/certs/ca-certificates.crt"):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


@dataclass
class Containerd:
    """How to reach one containerd (its socket) for `ctr`."""

    address: Path
    namespace: str = "k8s.io"

    def ctr(self, *args: str) -> list[str]:
        return ["ctr", "--address", str(self.address), "--namespace", self.namespace, *args]

    def imported(self, name: str) -> str | None:
        """The `dev.mlops.buildah-id` recorded when name was imported, if containerd still has it."""
        proc = subprocess.run(self.ctr("images", "ls", f"name=={name}"), capture_output=True, text=True)
        if proc.returncode != 0 or name not in proc.stdout:
            return None
        marker = self.address.parent / "imported" / hashlib.sha256(name.encode()).hexdigest()[:16]
        return marker.read_text() if marker.exists() else None

    def import_image(self, name: str, progress: Progress) -> None:
        built = image_id(name)
        if built is None:
            raise ImageBuildError(f"{name} is not in buildah's storage ({storage_root()})")
        if self.imported(name) == built:
            return
        progress(f"[images] importing {name} into containerd")
        with tempfile.TemporaryDirectory(prefix="mlops-oci-") as tmp:
            archive = Path(tmp) / "image.tar"
            _run(buildah_cmd("push", "--quiet", name, f"oci-archive:{archive}:{name}"))
            _run(self.ctr("images", "import", "--no-unpack", "--all-platforms", str(archive)))
        marker = self.address.parent / "imported" / hashlib.sha256(name.encode()).hexdigest()[:16]
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(built)


def ensure(progress: Progress, containerd: Containerd | None = None,
           targets: tuple[str, ...] = ("operator", "runtime")) -> None:
    """Build what is missing or stale and, given a containerd, import what it does not have."""
    if shutil.which("buildah") is None:
        raise ImageBuildError("buildah is needed to build images here (apt-get install buildah)")
    os.makedirs(storage_root(), exist_ok=True)
    build_busybox(progress)
    build_project(progress, targets)
    if containerd is not None:
        names = [PAUSE_IMAGE, BUSYBOX_IMAGE] + [{"operator": OPERATOR_IMAGE, "runtime": RUNTIME_IMAGE}[t]
                                                for t in targets]
        for name in names:
            containerd.import_image(name, progress)
