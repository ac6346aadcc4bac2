"""`mlops analyze`: champion vs challenger, before any user traffic reaches the challenger.

    mlops analyze --model-dir DIR --name NAME --candidate URL[,URL…] [--stable URL[,URL…]]
                  [--duration-seconds S] [--windows N]

Replays the labelled held-out sample the trainer wrote next to the candidate model
(validation.json, in DIR: the storage initializer fetched and verified it) against the
candidate's and the stable revision's pods, one row per request, round-robin over each side's
pods, both sides at once, for S seconds (at least one full pass). It reports per side: requests,
errors, p50/p99 latency (overall and per window), and the model metrics of the first pass
(classification: accuracy, f1; regression: rmse, mae, r2) as JSON in the termination message,
where the operator reads it, as it reads a trainer's result. It judges nothing: the thresholds
are the operator's. It reads no Kubernetes API and needs no token.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import sys
import threading
import time
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..api import artifacts
from ..api.reports import MAX_WINDOWS, AnalysisReport, Side, Window

REQUEST_TIMEOUT = 10.0


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (None for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def classification_metrics(labels: Sequence[Any], predicted: Sequence[Any]) -> dict[str, float]:
    pairs = [(str(y), str(p)) for y, p in zip(labels, predicted, strict=True)]
    if not pairs:
        return {}
    accuracy = sum(y == p for y, p in pairs) / len(pairs)
    f1s = []
    for c in sorted({y for y, _ in pairs}):
        tp = sum(y == c and p == c for y, p in pairs)
        fp = sum(y != c and p == c for y, p in pairs)
        fn = sum(y == c and p != c for y, p in pairs)
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return {"accuracy": accuracy, "f1": sum(f1s) / len(f1s)}


def regression_metrics(labels: Sequence[Any], predicted: Sequence[Any]) -> dict[str, float]:
    pairs = [(float(y), float(p)) for y, p in zip(labels, predicted, strict=True)]
    if not pairs:
        return {}
    n = len(pairs)
    mse = sum((y - p) ** 2 for y, p in pairs) / n
    mean = sum(y for y, _ in pairs) / n
    total = sum((y - mean) ** 2 for y, _ in pairs)
    out = {"rmse": math.sqrt(mse), "mae": sum(abs(y - p) for y, p in pairs) / n}
    if total > 0:
        out["r2"] = 1 - mse * n / total
    return out


def requests_for(metadata: artifacts.ModelMetadata, sample: artifacts.ValidationSample) -> list[bytes]:
    """One V2 infer body per row, a tensor per feature (BYTES for categorical ones)."""
    types = {f.name: f.type for f in metadata.features}
    missing = [f for f in types if f not in sample.features]
    if missing:
        raise artifacts.ArtifactError(f"validation.json lacks the model's features {', '.join(missing)}")
    index = {name: i for i, name in enumerate(sample.features)}
    bodies = []
    for row in sample.rows:
        inputs = []
        for name, kind in types.items():
            value = row[index[name]]
            if kind == "categorical":
                inputs.append({"name": name, "shape": [1], "datatype": "BYTES",
                               "data": [None if value is None else str(value)]})
            else:
                inputs.append({"name": name, "shape": [1], "datatype": "FP64",
                               "data": [None if value is None else float(value)]})
        # sent to the pods' monitoring port, which counts them as calls but never into the drift sketches
        bodies.append(json.dumps({"inputs": inputs, "outputs": [{"name": "predict"}]}).encode())
    return bodies


class Replayer:
    """One side: round-robin over its pods' URLs, one persistent connection per pod."""

    def __init__(self, urls: Sequence[str], name: str) -> None:
        self.targets = [urllib.parse.urlsplit(u if "://" in u else f"http://{u}") for u in urls]
        self.path = f"/v2/models/{name}/infer"
        self.conns: dict[int, http.client.HTTPConnection] = {}
        self.turn = 0
        self.first_error: str | None = None

    def _conn(self, i: int) -> http.client.HTTPConnection:
        if i not in self.conns:
            t = self.targets[i]
            self.conns[i] = http.client.HTTPConnection(t.hostname or "", t.port or 80, timeout=REQUEST_TIMEOUT)
        return self.conns[i]

    def send(self, body: bytes) -> tuple[bool, Any]:
        i = self.turn % len(self.targets)
        self.turn += 1
        conn = self._conn(i)
        try:
            conn.request("POST", self.path, body, {"Content-Type": "application/json"})
            resp = conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            self.conns.pop(i, None)
            self.first_error = self.first_error or f"{self.targets[i].netloc}: {exc}"
            return False, None
        if resp.status >= 400:
            if self.first_error is None:
                self.first_error = f"{self.targets[i].netloc}: HTTP {resp.status} {data[:200].decode(errors='replace')}"
            return False, None
        try:
            return True, json.loads(data)["outputs"][0]["data"][0]
        except (ValueError, KeyError, IndexError, TypeError):
            self.first_error = self.first_error or f"{self.targets[i].netloc}: an answer without outputs"
            return False, None

    def close(self) -> None:
        for conn in self.conns.values():
            conn.close()


def replay(urls: Sequence[str], name: str, bodies: Sequence[bytes], labels: Sequence[Any], task: str,
           duration: float, windows: int) -> Side:
    side = Replayer(urls, name)
    window_len = duration / windows if duration > 0 else 0.0
    latencies: list[list[float]] = [[] for _ in range(windows)]
    counts = [[0, 0] for _ in range(windows)]
    predicted: list[Any] = []
    truth: list[Any] = []
    start = time.monotonic()
    n = 0
    while True:
        i = n % len(bodies)
        if i == 0 and n > 0 and time.monotonic() - start >= duration:
            break
        sent = time.perf_counter()
        ok, prediction = side.send(bodies[i])
        took = (time.perf_counter() - sent) * 1000
        w = min(windows - 1, int((time.monotonic() - start) / window_len)) if window_len else 0
        counts[w][0] += 1
        if ok:
            latencies[w].append(took)
        else:
            counts[w][1] += 1
        if n < len(bodies) and ok:
            predicted.append(prediction)
            truth.append(labels[i])
        n += 1
    side.close()
    every = [x for w in latencies for x in w]
    metrics = classification_metrics(truth, predicted) if task == "classification" else \
        regression_metrics(truth, predicted)
    return Side(
        requests=sum(c[0] for c in counts), errors=sum(c[1] for c in counts),
        p50_ms=_round(percentile(every, 0.5)), p99_ms=_round(percentile(every, 0.99)),
        metrics={k: round(v, 6) for k, v in metrics.items()},
        windows=[Window(requests=c[0], errors=c[1], p99_ms=_round(percentile(lat, 0.99)))
                 for c, lat in zip(counts, latencies, strict=True) if c[0]],
        error=side.first_error[:300] if side.first_error else None,
    )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def analyze(model_dir: Path, name: str, candidate: Sequence[str], stable: Sequence[str],
            duration: float, windows: int) -> AnalysisReport:
    metadata = artifacts.read_metadata(model_dir)
    sample = artifacts.read_validation(model_dir)
    if not sample.rows:
        raise artifacts.ArtifactError("validation.json holds no rows: there is nothing to replay")
    bodies = requests_for(metadata, sample)
    windows = max(1, min(MAX_WINDOWS, windows))
    results: dict[str, Side] = {}

    def run(which: str, urls: Sequence[str]) -> None:
        results[which] = replay(urls, name, bodies, sample.labels, metadata.task, duration, windows)

    threads = [threading.Thread(target=run, args=(w, u)) for w, u in (("candidate", candidate), ("stable", stable))
               if u]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return AnalysisReport(task=metadata.task, rows=len(sample.rows), candidate=results["candidate"],
                          stable=results.get("stable"))


def _urls(text: str | None) -> list[str]:
    return [u for u in (text or "").split(",") if u]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlops analyze", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", required=True, help="the candidate's model directory (validation.json)")
    parser.add_argument("--name", required=True, help="the model name the servers answer to")
    parser.add_argument("--candidate", required=True, help="comma-separated base URLs of the candidate's pods")
    parser.add_argument("--stable", help="comma-separated base URLs of the stable revision's pods")
    parser.add_argument("--duration-seconds", type=float, default=0.0)
    parser.add_argument("--windows", type=int, default=1)
    args = parser.parse_args(argv)
    if not _urls(args.candidate):
        parser.error("--candidate names no URL")
    from . import sdk  # here: the operator imports this module for the report's schema, not numpy
    try:
        report = analyze(Path(args.model_dir), args.name, _urls(args.candidate), _urls(args.stable),
                         args.duration_seconds, args.windows)
    except artifacts.ArtifactError as exc:
        return sdk.fail("mlops analyze", exc)
    return sdk.answer(report.to_message())


if __name__ == "__main__":
    sys.exit(main())
