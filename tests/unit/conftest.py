"""Fixtures the model-server tests share: one iris model and one server of it per module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_server import Served, make_model


@pytest.fixture(scope="module")
def iris(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, Any, str]:
    return make_model(tmp_path_factory.mktemp("iris"))


@pytest.fixture(scope="module")
def server(iris: tuple[Path, Any, Any, str]) -> Iterator[Served]:
    s = Served(iris[0], "iris", "--digest", iris[3], "--max-body-bytes", "200000")
    yield s
    s.stop()
