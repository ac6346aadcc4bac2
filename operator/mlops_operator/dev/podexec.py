"""The container side of the local node: runs inside a private mount namespace (`unshare -m`).

`python -m mlops_operator.dev.podexec SPEC.json` bind-mounts the Pod's volumes and its
termination-message file at their paths, makes the root filesystem read-only when the container
asks for it, drops to the container's user, and execs the container's command. Mounts are private
to this namespace: the host and the other Pods do not see them.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path


def _mount(*args: str, fds: tuple[int, ...] = ()) -> None:
    proc = subprocess.run(["mount", *args], capture_output=True, text=True, pass_fds=fds)
    if proc.returncode != 0:
        raise SystemExit(f"podexec: mount {' '.join(args)} failed: {proc.stderr.strip()}")


def _bind(fd: int, dst: str) -> None:
    # through the descriptor (the source path may be hidden by an earlier mount by now); not
    # canonicalized, or mount(8) would turn the descriptor back into that path
    _mount("--no-canonicalize", "--bind", f"/proc/self/fd/{fd}", dst, fds=(fd,))


def _under(path: str, mount: str) -> bool:
    mount = mount.rstrip("/") or "/"
    return path == mount or path.startswith(mount + "/")


def _mount_point(is_dir: bool, dst: Path) -> None:
    if dst.exists():
        return
    # created on the host file system (empty); the bind mount itself stays in this namespace
    if is_dir:
        dst.mkdir(parents=True, exist_ok=True)
    else:
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.touch()


def _allowed(st: os.stat_result, uid: int, gid: int, bit: int) -> bool:
    shift = 6 if st.st_uid == uid else 3 if st.st_gid == gid else 0
    return bool(st.st_mode & (bit << shift))


def can_exec(command: str, path_env: str, uid: int, gid: int) -> bool:
    """Whether uid:gid may run `command` here (every directory on the way searchable)."""
    found = shutil.which(command, path=path_env) if "/" not in command else command
    if found is None:
        return True  # let exec report the missing command
    target = Path(found).resolve()
    for d in [*reversed(target.parents), *reversed(Path(found).absolute().parents)]:
        with contextlib.suppress(OSError):
            if not _allowed(d.stat(), uid, gid, 1):
                return False
    return _allowed(target.stat(), uid, gid, 1) and _allowed(target.stat(), uid, gid, 4)


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    mounts = sorted(spec["mounts"], key=lambda m: len(Path(m[1]).parts))  # parents before children
    # a volume mounted over the interpreter, the project or the Pod's own files (say an emptyDir at
    # /tmp while they live under /tmp) would hide them: hold each by a descriptor before mounting
    # anything, mount from the descriptors, and bind what must stay visible back on top
    fds = {src: os.open(src, os.O_PATH) for src, _, _ in mounts}
    hidden = [k for k in spec.get("keep", []) if any(_under(k, dst) for _, dst, _ in mounts)]
    keep_fds = {k: os.open(k, os.O_PATH) for k in hidden}
    for src, dst, read_only in mounts:
        _mount_point(stat.S_ISDIR(os.fstat(fds[src]).st_mode), Path(dst))
        _bind(fds[src], dst)
        if read_only:
            _mount("-o", "remount,bind,ro", dst)
    for keep, fd in keep_fds.items():
        Path(keep).mkdir(parents=True, exist_ok=True)
        _bind(fd, keep)
    for fd in [*fds.values(), *keep_fds.values()]:
        os.close(fd)
    cwd = spec.get("cwd")
    if cwd:
        Path(cwd).mkdir(parents=True, exist_ok=True)
    if spec.get("readOnlyRootFilesystem"):
        _mount("-o", "remount,bind,ro", "/")
    if cwd:
        os.chdir(cwd)
    gid, uid = spec.get("runAsGroup"), spec.get("runAsUser")
    argv = spec["argv"]
    if uid is not None and os.geteuid() == 0 and not can_exec(argv[0], spec["env"].get("PATH", ""), uid, gid or 0):
        # e.g. an interpreter under /root: running it as that user cannot work on this machine
        print(f"podexec: runAsUser {uid} not applied: {argv[0]} cannot be run by uid {uid} on this machine",
              file=sys.stderr, flush=True)
        uid = gid = None
    if os.geteuid() == 0:
        if gid is not None:
            os.setgroups([gid])
            os.setgid(gid)
        if uid is not None:
            os.setuid(uid)
    try:
        os.execvpe(argv[0], argv, spec["env"])
    except OSError as exc:
        # what a runtime reports as a failed start: exit 127/126 with the reason in the log
        print(f"podexec: cannot run {argv[0]!r}: {exc.strerror}", file=sys.stderr, flush=True)
        os._exit(127 if isinstance(exc, FileNotFoundError) else 126)


if __name__ == "__main__":
    main(sys.argv[1])
