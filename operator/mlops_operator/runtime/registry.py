"""`mlops mlflow resolve | register | set-alias`: the calls to an MLflow model registry that the operator
makes through owned Jobs (they need the namespace's credentials, which the operator never reads). Each
reports in its termination message (api/registry.py's RegistryResult) and exits 1 with the reason.

Why our own client and not MLflow's: these are eleven calls of MLflow's documented REST API
(`/api/2.0/mlflow/…`, the one MLflow's own clients speak), and `mlflow-skinny` 3.18, the smallest package
that has MlflowClient, adds 45 distributions and about 125 MB to the runtime image (measured: a fresh venv
with `pip install mlflow-skinny` is 146 MB against 21 MB empty), cloudpickle, GitPython, databricks-sdk,
fastapi and uvicorn among them. The tests run these commands against a real `mlflow server` and read the
results back with MLflow's own client.

Credentials and TLS as MLflow's clients read them: MLFLOW_TRACKING_URI, MLFLOW_TRACKING_TOKEN (bearer) or
MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (basic), MLFLOW_TRACKING_SERVER_CERT_PATH (a CA
bundle), MLFLOW_TRACKING_INSECURE_TLS=true.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from ..api.common import DIGEST as DIGEST_PATTERN
from ..api.registry import (
    DIGEST_TAG,
    TRAINING_RUN_TAG,
    TRAINING_RUN_UID_TAG,
    RegistryResult,
    parse_uri,
)

ANSWER_LIMIT = 1 << 20  # a registry answer is small: a bigger one is refused, not held
TIMEOUT = 30.0
ATTEMPTS = 4  # connection errors, 429 and 5xx are retried (0.5, 1, 2 s apart)
READABLE = re.compile(r"^(s3|file|https?)://.+|^/.+")  # what storage-init copies
DIGEST = re.compile(DIGEST_PATTERN)


class RegistryError(Exception):
    pass


class Client:
    """MLflow's REST API on one tracking server."""

    def __init__(self, tracking_uri: str, env: dict[str, str] | None = None) -> None:
        env = dict(os.environ if env is None else env)
        self.base = tracking_uri.rstrip("/")
        if not re.match(r"^https?://", self.base):
            raise RegistryError(f"tracking URI {tracking_uri!r}: only http:// and https:// servers are reached")
        self.headers = {"Content-Type": "application/json", "User-Agent": "mlops-operator-registry"}
        if env.get("MLFLOW_TRACKING_TOKEN"):
            self.headers["Authorization"] = f"Bearer {env['MLFLOW_TRACKING_TOKEN']}"
        elif env.get("MLFLOW_TRACKING_USERNAME"):
            pair = f"{env['MLFLOW_TRACKING_USERNAME']}:{env.get('MLFLOW_TRACKING_PASSWORD', '')}"
            self.headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        self.context: ssl.SSLContext | None = None
        if self.base.startswith("https://"):
            self.context = ssl.create_default_context(cafile=env.get("MLFLOW_TRACKING_SERVER_CERT_PATH") or None)
            if env.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true":
                self.context.check_hostname = False
                self.context.verify_mode = ssl.CERT_NONE

    def call(self, method: str, path: str, body: dict[str, Any] | None = None,
             missing_ok: bool = False) -> dict[str, Any] | None:
        """One call; None for RESOURCE_DOES_NOT_EXIST when `missing_ok`."""
        url = f"{self.base}/api/2.0/mlflow/{path}"
        data = None
        if method == "GET" and body:
            url += "?" + urllib.parse.urlencode(body)
        elif body is not None:
            data = json.dumps(body).encode()
        for attempt in range(ATTEMPTS):
            request = urllib.request.Request(url, data=data, method=method, headers=self.headers)
            try:
                with urllib.request.urlopen(request, timeout=TIMEOUT, context=self.context) as answer:  # nosec B310
                    return _json(answer.read(ANSWER_LIMIT + 1), url)
            except urllib.error.HTTPError as exc:
                error = _json(exc.read(ANSWER_LIMIT + 1), url, strict=False)
                code = str(error.get("error_code") or "")
                if missing_ok and (exc.code == 404 or code == "RESOURCE_DOES_NOT_EXIST"):
                    return None
                if (exc.code == 429 or exc.code >= 500) and attempt + 1 < ATTEMPTS:
                    time.sleep(0.5 * 2 ** attempt)
                    continue
                what = error.get("message") or exc.reason
                raise RegistryError(f"{method} {path}: {exc.code} {code} {what}".replace("  ", " ")) from None
            except (urllib.error.URLError, OSError) as exc:
                if attempt + 1 < ATTEMPTS:
                    time.sleep(0.5 * 2 ** attempt)
                    continue
                raise RegistryError(f"{self.base} cannot be reached: {getattr(exc, 'reason', exc)}") from None
        raise AssertionError("unreachable")

    def must(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        answer = self.call(method, path, body)
        assert answer is not None
        return answer

    # -- the model registry
    def version(self, name: str, version: str | None, alias: str | None) -> dict[str, Any]:
        if alias is not None:
            found = self.call("GET", "registered-models/alias", {"name": name, "alias": alias}, missing_ok=True)
            if found is None:
                raise RegistryError(f"registered model {name} has no alias {alias!r} (or does not exist)")
        else:
            found = self.call("GET", "model-versions/get", {"name": name, "version": version}, missing_ok=True)
            if found is None:
                raise RegistryError(f"registered model {name} has no version {version}")
        return dict(found["model_version"])

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self.must("POST", "registered-models/alias", {"name": name, "alias": alias, "version": version})

    # -- experiments and runs
    def experiment_id(self, name: str) -> str:
        found = self.call("GET", "experiments/get-by-name", {"experiment_name": name}, missing_ok=True)
        if found is not None:
            return str(found["experiment"]["experiment_id"])
        try:
            return str(self.must("POST", "experiments/create", {"name": name})["experiment_id"])
        except RegistryError:  # made by another Job meanwhile: read it
            return str(self.must("GET", "experiments/get-by-name", {"experiment_name": name})
                       ["experiment"]["experiment_id"])


def _json(raw: bytes, url: str, strict: bool = True) -> dict[str, Any]:
    if len(raw) > ANSWER_LIMIT:
        raise RegistryError(f"{url}: the answer is over {ANSWER_LIMIT} bytes")
    try:
        value = json.loads(raw or b"{}")
    except ValueError:
        if not strict:
            return {}
        raise RegistryError(f"{url}: the answer is not JSON: {raw[:200]!r}") from None
    return value if isinstance(value, dict) else {}


def _tags(version: dict[str, Any]) -> dict[str, str]:
    return {t["key"]: t.get("value", "") for t in version.get("tags") or ()}


def resolve(client: Client, uri: str) -> RegistryResult:
    """The version a models:/ URI names now: its model directory and the digest it was registered with."""
    name, number, alias = parse_uri(uri)
    found = client.version(name, number, alias)
    source = str(found.get("source") or "")
    if not READABLE.match(source):
        raise RegistryError(f"{uri} is version {found.get('version')}, whose source {source!r} is not a location "
                            "the model server copies (s3://, https://, file://)")
    digest = _tags(found).get(DIGEST_TAG) or None
    if digest is not None and not DIGEST.match(digest):
        raise RegistryError(f"{uri} is version {found.get('version')}, whose {DIGEST_TAG} tag {digest!r} is no "
                            "sha256:<64 hex> digest")
    return RegistryResult(name=name, version=str(found["version"]), source=source, digest=digest,
                          run_id=found.get("run_id") or None)


def register(client: Client, *, name: str, source: str, digest: str, experiment: str, run_name: str,
             trainingrun: str, uid: str, metrics: dict[str, float], params: dict[str, Any],
             aliases: list[str]) -> RegistryResult:
    """Register a TrainingRun's model as a version of `name`, with an MLflow run holding its metrics and
    params; run again for the same TrainingRun (uid), it finds what the first time made."""
    experiment_id = client.experiment_id(experiment)
    query = f"tags.`{TRAINING_RUN_UID_TAG}` = '{uid}'"
    runs = client.must("POST", "runs/search", {"experiment_ids": [experiment_id], "filter": query,
                                               "max_results": 1}).get("runs") or []
    if runs:
        run_id = str(runs[0]["info"]["run_id"])
    else:
        now = int(time.time() * 1000)
        tags = [{"key": "mlflow.runName", "value": run_name}, {"key": TRAINING_RUN_TAG, "value": trainingrun},
                {"key": TRAINING_RUN_UID_TAG, "value": uid}, {"key": DIGEST_TAG, "value": digest}]
        run_id = str(client.must("POST", "runs/create", {"experiment_id": experiment_id, "run_name": run_name,
                                                         "start_time": now, "tags": tags})["run"]["info"]["run_id"])
        client.must("POST", "runs/log-batch", {
            "run_id": run_id,
            "metrics": [{"key": k, "value": float(v), "timestamp": now, "step": 0} for k, v in sorted(metrics.items())],
            "params": [{"key": k, "value": v if isinstance(v, str) else json.dumps(v)[:6000]}
                       for k, v in sorted(params.items())]})
        client.must("POST", "runs/update", {"run_id": run_id, "status": "FINISHED", "end_time": now})
    if client.call("GET", "registered-models/get", {"name": name}, missing_ok=True) is None:
        try:
            client.must("POST", "registered-models/create", {"name": name})
        except RegistryError:  # made by another Job meanwhile
            client.must("GET", "registered-models/get", {"name": name})
    search = client.must("GET", "model-versions/search", {"filter": f"name = '{name}' and run_id = '{run_id}'"})
    mine = [v for v in search.get("model_versions") or () if v.get("source") == source]
    if mine:
        version = str(mine[0]["version"])
    else:
        link = f"{client.base}/#/experiments/{experiment_id}/runs/{run_id}"
        made = client.must("POST", "model-versions/create", {
            "name": name, "source": source, "run_id": run_id, "run_link": link,
            "description": f"TrainingRun {trainingrun}",
            "tags": [{"key": DIGEST_TAG, "value": digest}, {"key": TRAINING_RUN_TAG, "value": trainingrun}]})
        version = str(made["model_version"]["version"])
    for alias in aliases:
        client.set_alias(name, alias, version)
    return RegistryResult(name=name, version=version, source=source, digest=digest, run_id=run_id)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlops mlflow", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI"),
                        help="default: MLFLOW_TRACKING_URI")
    sub = parser.add_subparsers(dest="verb", required=True)
    p = sub.add_parser("resolve", help="the version, source and digest a models:/ URI names now")
    p.add_argument("uri", help="models:/<name>/<version> or models:/<name>@<alias>")
    p = sub.add_parser("register", help="register a model directory as a new version, with its MLflow run")
    p.add_argument("--name", required=True)
    p.add_argument("--source", required=True, help="the model directory (s3://, file://, https://)")
    p.add_argument("--digest", required=True)
    p.add_argument("--experiment", required=True)
    p.add_argument("--run-name", required=True)
    p.add_argument("--trainingrun", required=True, help="namespace/name of the TrainingRun")
    p.add_argument("--uid", required=True, help="the TrainingRun's uid (a second run finds the first's work)")
    p.add_argument("--metrics", default="{}", help="JSON object of metric → number")
    p.add_argument("--params", default="{}", help="JSON object of parameter → value")
    p.add_argument("--alias", action="append", default=[])
    p = sub.add_parser("set-alias", help="move an alias to a version")
    p.add_argument("--name", required=True)
    p.add_argument("--version", required=True)
    p.add_argument("--alias", required=True)
    args = parser.parse_args(argv)
    if not args.tracking_uri:
        parser.error("--tracking-uri (or MLFLOW_TRACKING_URI) is required")
    from . import sdk

    command = f"mlops mlflow {args.verb}"
    try:
        client = Client(args.tracking_uri)
        if args.verb == "resolve":
            result = resolve(client, args.uri)
        elif args.verb == "register":
            result = register(client, name=args.name, source=args.source, digest=args.digest,
                              experiment=args.experiment, run_name=args.run_name, trainingrun=args.trainingrun,
                              uid=args.uid, metrics=json.loads(args.metrics), params=json.loads(args.params),
                              aliases=args.alias)
        else:
            client.set_alias(args.name, args.alias, args.version)
            result = RegistryResult(name=args.name, version=args.version, alias=args.alias)
    except (RegistryError, ValueError) as exc:
        return sdk.fail(command, exc)
    return sdk.answer(result.to_message())


if __name__ == "__main__":
    sys.exit(main())
