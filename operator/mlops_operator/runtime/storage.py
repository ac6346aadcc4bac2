"""Reading datasets and moving model directories: `s3://`, `file://`, `http(s)://`, mounted paths.

S3 goes through boto3 with credentials from the environment (AWS_ACCESS_KEY_ID, … as given by
the Secret named in a resource's spec) and the endpoint from AWS_ENDPOINT_URL or
MLOPS_S3_ENDPOINT (MinIO, moto, …). Errors say which URI and what is wrong.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


class StorageError(RuntimeError):
    pass


def _split(uri: str) -> tuple[str, str]:
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme in ("", "file"):
        return "file", urllib.parse.unquote(parsed.path if parsed.scheme else uri)
    if parsed.scheme in ("s3", "http", "https"):
        return parsed.scheme, uri
    raise StorageError(f"{uri}: unsupported scheme {parsed.scheme!r} (use s3://, file://, http(s):// or a path)")


def _s3() -> Any:
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise StorageError("s3:// needs boto3: install mlops-operator[s3]") from None
    endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("MLOPS_S3_ENDPOINT") or None
    return boto3.client("s3", endpoint_url=endpoint,
                        config=Config(retries={"max_attempts": 3}, connect_timeout=10, read_timeout=60))


def _bucket_key(uri: str) -> tuple[str, str]:
    parsed = urllib.parse.urlparse(uri)
    if not parsed.netloc:
        raise StorageError(f"{uri}: no bucket")
    return parsed.netloc, parsed.path.lstrip("/")


def _s3_error(uri: str, exc: Exception) -> StorageError:
    from botocore.exceptions import ClientError, NoCredentialsError

    if isinstance(exc, NoCredentialsError):
        return StorageError(f"{uri}: no S3 credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, e.g. "
                            "from the Secret named in spec.storage.secretRef)")
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("NoSuchKey", "404", "NotFound"):
            return StorageError(f"{uri}: not found")
        if code == "NoSuchBucket":
            return StorageError(f"{uri}: bucket does not exist")
        if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return StorageError(f"{uri}: access denied ({code})")
        return StorageError(f"{uri}: {code or exc}")
    return StorageError(f"{uri}: {exc}")


def inside(dest: Path, rel: str, uri: str) -> Path:
    """`dest / rel`, refused when `rel` would land outside `dest` (an absolute key such as
    `prefix//etc/x`, a `..` segment): a file the model's digest does not cover is never written."""
    root = dest.resolve()
    target = (root / rel).resolve()
    if rel.startswith("/") or not target.is_relative_to(root) or target == root:
        raise StorageError(f"{uri}: object {rel!r} would be written outside the model directory")
    return target


@contextlib.contextmanager
def open_stream(uri: str) -> Iterator[IO[bytes]]:
    """A file-like stream of one http(s):// object, read as it arrives (never whole in memory)."""
    try:
        with urllib.request.urlopen(uri, timeout=60) as resp:
            yield resp
    except urllib.error.HTTPError as exc:
        raise StorageError(f"{uri}: HTTP {exc.code}") from None
    except (OSError, urllib.error.URLError) as exc:
        raise StorageError(f"{uri}: {exc}") from None


def read_bytes(uri: str) -> bytes:
    scheme, where = _split(uri)
    if scheme == "file":
        try:
            return Path(where).read_bytes()
        except FileNotFoundError:
            raise StorageError(f"{uri}: not found") from None
        except OSError as exc:
            raise StorageError(f"{uri}: {exc.strerror}") from None
    if scheme == "s3":
        bucket, key = _bucket_key(uri)
        try:
            body: bytes = _s3().get_object(Bucket=bucket, Key=key)["Body"].read()
            return body
        except Exception as exc:
            raise _s3_error(uri, exc) from None
    with open_stream(uri) as resp:
        try:
            return resp.read()
        except OSError as exc:
            raise StorageError(f"{uri}: {exc}") from None


def upload_dir(local: Path, uri: str) -> None:
    """Copy every file of `local` under `uri` (a directory URI)."""
    scheme, where = _split(uri)
    files = sorted(p for p in Path(local).rglob("*") if p.is_file())
    if scheme == "file":
        dest = Path(where)
        dest.mkdir(parents=True, exist_ok=True)
        for f in files:
            target = dest / f.relative_to(local)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, target)
        return
    if scheme != "s3":
        raise StorageError(f"{uri}: models can be written to s3:// or file:// only")
    bucket, prefix = _bucket_key(uri)
    s3 = _s3()
    try:
        for f in files:
            s3.upload_file(str(f), bucket, f"{prefix.rstrip('/')}/{f.relative_to(local).as_posix()}")
    except Exception as exc:
        raise _s3_error(uri, exc) from None


def upload_file(local: Path, uri: str) -> None:
    """Copy one file to `uri` (an s3:// object)."""
    bucket, key = _bucket_key(uri)
    try:
        _s3().upload_file(str(local), bucket, key)
    except Exception as exc:
        raise _s3_error(uri, exc) from None


def download_dir(uri: str, dest: Path) -> list[str]:
    """Copy the directory at `uri` into `dest`; return the relative paths copied."""
    scheme, where = _split(uri)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    copied: list[str] = []
    if scheme == "file":
        src = Path(where)
        if not src.is_dir():
            raise StorageError(f"{uri}: not found (no such directory)")
        for f in sorted(p for p in src.rglob("*") if p.is_file() and not p.is_symlink()):
            rel = f.relative_to(src)
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, dest / rel)
            copied.append(rel.as_posix())
        return copied
    if scheme == "s3":
        bucket, prefix = _bucket_key(uri)
        prefix = prefix.rstrip("/") + "/"
        s3 = _s3()
        try:
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                for obj in page.get("Contents", []):
                    rel = obj["Key"][len(prefix):]
                    if not rel or rel.endswith("/"):
                        continue  # a "directory" marker
                    target = inside(dest, rel, uri)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    s3.download_file(bucket, obj["Key"], str(target))
                    copied.append(rel)
        except StorageError:
            raise
        except Exception as exc:
            raise _s3_error(uri, exc) from None
        if not copied:
            raise StorageError(f"{uri}: not found (no objects under this prefix)")
        return copied
    raise StorageError(f"{uri}: download a model directory from s3:// or file://, or serve it from a mounted path")


def list_files(uri: str) -> list[str]:
    """The URIs of the files under a directory URI (s3:// prefix, file:// or a path), sorted; none when it
    does not exist yet. Files whose name starts with a dot (written aside, not yet published) are left out."""
    scheme, where = _split(uri)
    if scheme == "file":
        root = Path(where)
        if root.is_file():
            return [str(root)]
        return sorted(str(p) for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
    if scheme != "s3":
        raise StorageError(f"{uri}: list files under s3://, file:// or a path")
    bucket, prefix = _bucket_key(uri)
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    found: list[str] = []
    try:
        for page in _s3().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            found += [f"s3://{bucket}/{o['Key']}" for o in page.get("Contents", [])
                      if not o["Key"].endswith("/") and not o["Key"].rsplit("/", 1)[-1].startswith(".")]
        if not found and prefix:  # the URI may name one object
            _s3().head_object(Bucket=bucket, Key=prefix.rstrip("/"))
            found = [uri]
    except Exception as exc:
        error = _s3_error(uri, exc)
        if "not found" in str(error):
            return []
        raise error from None
    return sorted(found)
