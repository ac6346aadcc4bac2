"""`mlops train-pipeline`: run a compiled Kubeflow pipeline (IR YAML) offline with kfp.local.

The pipeline comes from MLOPS_PIPELINE_FILE (a mounted ConfigMap key) or MLOPS_PIPELINE (inline),
its arguments from MLOPS_PIPELINE_ARGUMENTS (JSON). Its Model output must be a model directory
written with `mlops_operator.runtime.sdk.save_model` (so it has a profile and a validation sample)
and its Metrics output's metrics become the run's metrics. The model is uploaded to
MLOPS_OUTPUT_URI and reported in the termination message like the built-in trainer's.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from ..api import artifacts
from . import sdk, storage
from .storage import StorageError


class PipelineError(RuntimeError):
    pass


def run(pipeline_file: Path, arguments: dict[str, Any], output_uri: str, work: Path) -> artifacts.TrainingResult:
    try:
        import kfp.components
        import kfp.local
    except ImportError:
        raise PipelineError("kfp is not installed in this image (install mlops-operator[kfp])") from None
    kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=False), pipeline_root=str(work / "root"))
    try:
        component = kfp.components.load_component_from_file(str(pipeline_file))
    except Exception as exc:  # kfp raises many kinds for a bad file: all mean "not a loadable pipeline"
        raise PipelineError(f"the pipeline cannot be loaded: {exc}") from None
    try:
        task = component(**arguments)
    except Exception as exc:  # a failed step: kfp.local raises with the step's error
        raise PipelineError(f"the pipeline failed: {exc}") from None
    outputs = dict(getattr(task, "outputs", {}) or {})
    models = [a for a in outputs.values() if type(a).__name__ == "Model"]
    metrics = [a for a in outputs.values() if type(a).__name__ == "Metrics"]
    if len(models) != 1:
        raise PipelineError(f"the pipeline must output exactly one Model (it outputs {len(models)}: "
                            f"{', '.join(outputs) or 'nothing'})")
    model_dir = Path(models[0].path)
    if not (model_dir / artifacts.METADATA_FILE).is_file():
        raise PipelineError("the pipeline's Model output is not a model directory written by "
                            "mlops_operator.runtime.sdk.save_model (no metadata.json)")
    meta = artifacts.read_metadata(model_dir)
    digest = artifacts.digest(model_dir)
    values: dict[str, float] = {}
    for m in metrics:
        values.update({k: float(v) for k, v in (m.metadata or {}).items() if isinstance(v, int | float)})
    storage.upload_dir(model_dir, output_uri)
    return sdk.report(values, uri=output_uri, digest=digest, fmt=meta.format)


def main(argv: list[str] | None = None) -> int:
    env = os.environ
    parser = argparse.ArgumentParser(prog="mlops train-pipeline", description=__doc__)
    parser.add_argument("--pipeline", default=env.get("MLOPS_PIPELINE_FILE"), help="compiled IR YAML file")
    parser.add_argument("--arguments", default=env.get("MLOPS_PIPELINE_ARGUMENTS", "{}"), help="JSON object")
    parser.add_argument("--output", default=env.get("MLOPS_OUTPUT_URI"))
    args = parser.parse_args(argv)
    try:
        if not args.output:
            raise PipelineError("missing --output (or MLOPS_OUTPUT_URI)")
        arguments = json.loads(args.arguments)
        with tempfile.TemporaryDirectory(prefix="mlops-pipeline-") as tmp:
            work = Path(tmp)
            path = Path(args.pipeline) if args.pipeline else None
            if path is None:
                inline = env.get("MLOPS_PIPELINE")
                if not inline:
                    raise PipelineError("no pipeline: set MLOPS_PIPELINE_FILE or MLOPS_PIPELINE, or pass --pipeline")
                path = work / "pipeline.yaml"
                path.write_text(inline)
            result = run(path, arguments, args.output, work)
    except (PipelineError, StorageError, artifacts.ArtifactError, json.JSONDecodeError) as exc:
        return sdk.fail("mlops train-pipeline", exc)
    return sdk.done(result)
