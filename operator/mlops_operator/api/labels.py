"""The label and annotation keys the operator writes on children and reads back: one place, since users
select by them (`kubectl get pods -l mlops.dev/revision=…`) and the informers watch by them."""

from __future__ import annotations

from .common import GROUP

MANAGED_BY = {"app.kubernetes.io/managed-by": "mlops-operator"}
MODEL_DEPLOYMENT = f"{GROUP}/modeldeployment"
REVISION = f"{GROUP}/revision"
ANALYSIS = f"{GROUP}/analysis"  # an analysis Job: the revision it judges
ANALYSIS_OF = f"{GROUP}/analysis-of"  # an analysis Job: its ModelDeployment
TRAINING_RUN = f"{GROUP}/trainingrun"
MODEL = f"{GROUP}/model"
WORKER_OF = f"{GROUP}/workers"  # a distributed run's worker Pods: their headless Service (its selector)
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"  # the Job controller's, on an Indexed Job's Pods
RANK = f"{GROUP}/rank"  # a distributed run on one Job per worker: the worker's rank, on its Job and Pod
REGISTRY = f"{GROUP}/registry"  # a registry Job: its call (resolve, register, set-alias)
QUALITY = f"{GROUP}/quality"  # a quality Job (mlops quality): the ModelDeployment whose capture it joins
REGISTRY_OF = f"{GROUP}/registry-of"  # a registry Job: the TrainingRun or ModelDeployment it calls for
DRIFT_POLICY = f"{GROUP}/driftpolicy"
TEMPLATE_HASH = f"{GROUP}/template-hash"  # annotation: the pod template the operator last wrote
STARTED = f"{GROUP}/started"  # annotation on a training Job: the run's start record it was made from (JSON)
DRIFT_EVALUATION = f"{GROUP}/drift-evaluation"  # annotation on a retrain TrainingRun: the evaluation behind it
COMMAND_PREFIX = f"{GROUP}/"  # annotations `mlops.dev/<verb>=<revision>@<time>`: `mlops promote`, abort, …


def selector(labels: dict[str, str]) -> str:
    """A label selector matching these labels exactly."""
    return ",".join(f"{k}={v}" for k, v in labels.items())
KUEUE_QUEUE = "kueue.x-k8s.io/queue-name"
"""Kueue's queue label: on a TrainingRun, passed to its Job (Kueue admits Jobs by it, suspending them until then)."""
