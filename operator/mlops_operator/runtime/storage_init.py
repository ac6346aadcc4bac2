"""`mlops storage-init --uri URI --dest DIR [--digest D]`: the init container of inference Pods.

Copies a model directory from s3:// (boto3; endpoint and credentials from the environment),
file:// or a mounted path, or unpacks a .tar.gz from http(s)://, into DIR; with --digest, verifies
the copy against the digest given by the caller (the TrainingRun's record) and refuses a mismatch.
"""

from __future__ import annotations

import argparse
import shutil
import tarfile
from pathlib import Path

from ..api import artifacts
from . import sdk, storage
from .storage import StorageError


def fetch(uri: str, dest: Path) -> None:
    if uri.startswith(("http://", "https://")):
        if not uri.split("?", 1)[0].endswith((".tar.gz", ".tgz")):
            raise StorageError(f"{uri}: an http(s) model URI must point to a .tar.gz of the model directory")
        with storage.open_stream(uri) as stream:
            try:  # streamed ("r|gz"): a model of any size passes through a buffer of one block
                with tarfile.open(fileobj=stream, mode="r|gz") as tar:
                    tar.extractall(dest, filter="data")
            except (tarfile.TarError, OSError, EOFError) as exc:
                raise StorageError(f"{uri}: not a readable .tar.gz: {exc}") from None
        return
    storage.download_dir(uri, dest)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlops storage-init", description=__doc__)
    parser.add_argument("--uri", required=True)
    parser.add_argument("--dest", required=True)
    parser.add_argument("--digest", help="expected digest (sha256:…) of the model directory")
    args = parser.parse_args(argv)
    dest = Path(args.dest)
    dest.mkdir(parents=True, exist_ok=True)
    try:
        fetch(args.uri, dest)
        if args.digest:
            artifacts.verify(dest, args.digest)
    except (StorageError, artifacts.ArtifactError) as exc:
        for child in dest.iterdir():  # leave nothing a server could mistake for the model
            shutil.rmtree(child) if child.is_dir() else child.unlink()
        return sdk.fail("mlops storage-init", exc)
    print(f"model {args.uri} → {dest}" + (f" (digest {args.digest} verified)" if args.digest else ""))
    return 0
