"""The gRPC messages kept in runtime/oip are what grpcio-tools generates from the vendored .proto."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
OIP = Path(__file__).resolve().parents[2] / "operator/mlops_operator/runtime/oip"


def test_generated_stubs_are_fresh(tmp_path: Path) -> None:
    shutil.copy(OIP / "open_inference_grpc.proto", tmp_path)
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I.", "--python_out=.", "--pyi_out=.",
                    "open_inference_grpc.proto"], cwd=tmp_path, check=True)
    for name in ("open_inference_grpc_pb2.py", "open_inference_grpc_pb2.pyi"):
        assert (tmp_path / name).read_text() == (OIP / name).read_text(), \
            f"{name} is stale: regenerate it as runtime/oip/README.md says"


def test_the_vendored_proto_is_the_published_service() -> None:
    text = (OIP / "open_inference_grpc.proto").read_text()
    assert "package inference;" in text and "service GRPCInferenceService" in text
    for rpc in ("ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer"):
        assert f"rpc {rpc}(" in text
