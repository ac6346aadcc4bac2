"""Kubeflow pipelines compiled by the kfp SDK, for the tests."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

PIPELINE_SOURCE = textwrap.dedent('''
    from typing import NamedTuple
    from kfp import compiler, dsl
    from kfp.dsl import Metrics, Model, Output

    @dsl.component(base_image="python:3.11")
    def train(n_estimators: int, model: Output[Model], metrics: Output[Metrics]):
        from sklearn.datasets import load_wine
        from sklearn.ensemble import RandomForestClassifier
        from sklearn.model_selection import train_test_split
        from mlops_operator.runtime import sdk
        X, y = load_wine(return_X_y=True, as_frame=True)
        X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0)
        m = RandomForestClassifier(n_estimators=n_estimators, random_state=0).fit(X_train, y_train)
        sdk.save_model(m, X_train, model.path, validation=(X_test, y_test))
        metrics.log_metric("accuracy", float(m.score(X_test, y_test)))

    @dsl.pipeline(name="wine")
    def wine(n_estimators: int = 10) -> NamedTuple("Outputs", model=Model, metrics=Metrics):
        step = train(n_estimators=n_estimators)
        Outputs = NamedTuple("Outputs", model=Model, metrics=Metrics)
        return Outputs(model=step.outputs["model"], metrics=step.outputs["metrics"])

    compiler.Compiler().compile(wine, PATH)
''')


def run_source(code: str, path: Path) -> None:
    # kfp reads components' source code: it must come from a file
    script = path.with_suffix(".py")
    script.write_text(code.replace("PATH", repr(str(path))))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def compile_pipeline(path: Path) -> str:
    run_source(PIPELINE_SOURCE, path)
    return path.read_text()
