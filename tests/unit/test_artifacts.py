"""The model artifact contract: digest rule, verification, metadata/profile schemas, results."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from mlops_operator.api import artifacts as a


def make_model_dir(root: Path) -> Path:
    d = root / "model"
    (d / "extra").mkdir(parents=True)
    (d / "model.skops").write_bytes(b"model-bytes")
    (d / "extra" / "notes.txt").write_text("hello")
    profile = a.Profile(rows=3, features=[
        a.Distribution(name="x", type="numeric", edges=[0.0, 1.0], counts=[1, 1, 1], missing=0),
        a.Distribution(name="c", type="categorical", categories=["a", "b"], counts=[2, 1], other=0),
    ])
    a.write_json(d / a.PROFILE_FILE, profile)
    a.write_json(d / a.VALIDATION_FILE, a.ValidationSample(features=["x", "c"], rows=[[0.5, "a"]], labels=[1]))
    return d


def metadata() -> a.ModelMetadata:
    return a.ModelMetadata(format="sklearn", modelFile="model.skops", task="classification",
                           features=[a.Feature(name="x", type="numeric"), a.Feature(name="c", type="categorical")])


def test_digest_is_sha256_of_the_sorted_manifest(tmp_path: Path) -> None:
    d = make_model_dir(tmp_path)
    digest = a.finalize(d, metadata())
    lines = sorted(
        (p.relative_to(d).as_posix(), hashlib.sha256(p.read_bytes()).hexdigest())
        for p in d.rglob("*") if p.is_file()
    )
    text = "".join(f"{sha}  {rel}\n" for rel, sha in lines)
    assert digest == "sha256:" + hashlib.sha256(text.encode()).hexdigest()
    assert a.verify(d, digest) == digest
    meta = a.read_metadata(d)
    assert set(meta.files) == {"model.skops", "extra/notes.txt", a.PROFILE_FILE, a.VALIDATION_FILE}


@pytest.mark.parametrize("change", ["content", "rename", "add", "metadata"])
def test_any_change_changes_the_digest(tmp_path: Path, change: str) -> None:
    d = make_model_dir(tmp_path)
    digest = a.finalize(d, metadata())
    if change == "content":
        (d / "model.skops").write_bytes(b"model-bytez")
    elif change == "rename":
        (d / "extra" / "notes.txt").rename(d / "extra" / "notes2.txt")
    elif change == "add":
        (d / "new").write_text("")
    else:
        meta = json.loads((d / a.METADATA_FILE).read_text())
        meta["format"], meta["modelFile"] = "joblib", "model.joblib"
        (d / a.METADATA_FILE).write_text(json.dumps(meta))
    with pytest.raises(a.DigestMismatch) as err:
        a.verify(d, digest)
    assert err.value.expected == digest and err.value.actual != digest


def test_symlinks_are_refused(tmp_path: Path) -> None:
    d = make_model_dir(tmp_path)
    (d / "link").symlink_to("/etc/passwd")
    with pytest.raises(a.ArtifactError, match="symlink"):
        a.digest(d)


def test_profile_schema_rejects_inconsistent_bins() -> None:
    with pytest.raises(ValueError, match=r"len\(edges\) \+ 1"):
        a.Distribution(name="x", type="numeric", edges=[0.0, 1.0], counts=[1, 1])
    with pytest.raises(ValueError, match="ascending"):
        a.Distribution(name="x", type="numeric", edges=[1.0, 0.0], counts=[1, 1, 1])
    with pytest.raises(ValueError, match="one entry per category"):
        a.Distribution(name="c", type="categorical", categories=["a"], counts=[1, 2])


def test_metadata_model_file_must_match_format() -> None:
    with pytest.raises(ValueError, match=r"model\.onnx"):
        a.ModelMetadata(format="onnx", modelFile="model.skops", task="regression", features=[])


def test_finalize_requires_the_model_file(tmp_path: Path) -> None:
    d = make_model_dir(tmp_path)
    (d / "model.skops").unlink()
    with pytest.raises(a.ArtifactError, match=r"model\.skops is missing"):
        a.finalize(d, metadata())


def test_termination_message_round_trip_and_errors() -> None:
    result = a.TrainingResult(metrics={"accuracy": 0.96},
                              model=a.ModelResult(uri="s3://m/iris/1", digest="sha256:" + "0" * 64, format="sklearn"))
    assert a.parse_termination_message(result.to_message()) == result
    with pytest.raises(a.ArtifactError, match="not JSON"):
        a.parse_termination_message("Traceback (most recent call last)")
    with pytest.raises(a.ArtifactError, match="contract"):
        a.parse_termination_message('{"metrics": {}}')
    with pytest.raises(a.ArtifactError, match="4096"):
        a.parse_termination_message("{" + " " * 5000 + "}")
    big = a.TrainingResult(metrics={f"m{i}": 0.5 for i in range(400)}, model=result.model)
    with pytest.raises(a.ArtifactError, match="limit"):
        big.to_message()


def test_runtime_does_not_import_kopf_or_kubernetes() -> None:
    import subprocess
    import sys

    code = ("import sys, mlops_operator.api.artifacts; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('kopf', 'kubernetes', 'aiohttp')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
