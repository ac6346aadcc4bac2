"""Which images the local node can run, and as what local command.

The project's runtime image maps to the installed `mlops` entry point, `python` images to this
interpreter, `busybox` to the host's `sh`; users add their own (image glob → command prefix) in
`<state>/images.yaml` or the file named by MLOPS_LOCAL_IMAGES. The prefix is the entrypoint used
when a container has no `command`; a container's own command runs with `python`/`mlops` mapped
to this interpreter and anything else looked up on the host.
"""

from __future__ import annotations

import fnmatch
import sys
from pathlib import Path

import yaml

INTERPRETER = {
    "python": [sys.executable], "python3": [sys.executable],
    "mlops": [sys.executable, "-m", "mlops_operator.cli"],
    "kubectl-mlops": [sys.executable, "-m", "mlops_operator.cli"],
}
BUILTIN_IMAGES: list[tuple[str, list[str]]] = [
    ("*mlops-runtime*", INTERPRETER["mlops"]),
    ("python", [sys.executable]), ("python:*", [sys.executable]), ("*/python:*", [sys.executable]),
    ("busybox", ["sh"]), ("busybox:*", ["sh"]), ("*/busybox:*", ["sh"]),
]



class ImageMap:
    """image glob → local command prefix (used as the entrypoint when a container has no command)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def entries(self) -> list[tuple[str, list[str]]]:
        user: list[tuple[str, list[str]]] = []
        if self.path is not None and self.path.exists():
            data = yaml.safe_load(self.path.read_text()) or {}
            for pattern, prefix in data.items():
                user.append((str(pattern), [str(p) for p in (prefix if isinstance(prefix, list) else [prefix])]))
        return user + BUILTIN_IMAGES

    def argv(self, image: str, command: list[str] | None, args: list[str] | None) -> list[str] | None:
        for pattern, prefix in self.entries():
            if fnmatch.fnmatchcase(image, pattern):
                if command:
                    return INTERPRETER.get(command[0], [command[0]]) + command[1:] + (args or [])
                return prefix + (args or [])
        return None

    def explain(self, image: str) -> str:
        where = self.path or "<state-dir>/images.yaml"
        return (f"the local node cannot run image {image}: it runs the mlops runtime image, python and busybox "
                f"images, and the images mapped in {where}. Add a line mapping this image to a local "
                f"command prefix, e.g. '{image}: [/path/to/venv/bin/python, /path/to/entrypoint.py]'")
