"""Shadow traffic: a share of this server's live inference calls also sent to a challenger, whose answers
nobody sees, and compared with ours row by row.

The operator turns mirroring on for a Shadow rollout by posting `{percent, tolerance, seconds}` to the
monitoring port's `/v2/models/NAME/mirror` (again at every reconcile: a restarted pod catches up, and it
stops by itself `seconds` later if the operator never says so). The target is not a setting anyone can
post: it is the ModelDeployment's own preview Service, `<name>-preview` in this Pod's namespace (`--mirror-host`),
on its monitoring port, where the candidate's calls are counted as replayed ones (timed, never captured nor
counted into its drift sketches: the user's capture keeps one prediction per id).

Never on the request path: `offer` draws the share and puts references to the call's input tensors and our
`predict` in a bounded queue (a full queue drops the call, counted); worker threads encode, send, wait and
compare. The counters are cumulative and mergeable over pods (`snapshot`, and /metrics): mirrored calls sent,
dropped, failed by the candidate, rows compared, rows on which both agree (the same class; a regressor's
values within `tolerance`), the candidate's latency.

Why threads and the standard library's http.client rather than a maintained async client: the data plane
imports no aiohttp (an architecture rule), granian has no client, and one keep-alive connection per worker
to one Service is all this needs; threads keep the candidate's latency off the serving event loop.
"""

from __future__ import annotations

import http.client
import logging
import queue
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from prometheus_client import CollectorRegistry, Counter, Histogram

from ..api.artifacts import LATENCY_BUCKETS

log = logging.getLogger("mlops.serve")
MAX_SECONDS = 2 * 86400
TIMEOUT = 10.0


class MirrorError(ValueError):
    pass


@dataclass(frozen=True)
class Setting:
    percent: float = 0.0
    tolerance: float = 0.0
    until: float = 0.0  # time.time() after which mirroring is off

    def on(self, now: float) -> bool:
        return self.percent > 0 and now < self.until


def parse_setting(body: Any, now: float) -> Setting:
    """`{percent, tolerance, seconds}` as posted (percent 0 turns mirroring off)."""
    if not isinstance(body, dict):
        raise MirrorError("the body must be an object {percent, tolerance, seconds}")
    unknown = sorted(set(body) - {"percent", "tolerance", "seconds"})
    if unknown:
        raise MirrorError(f"unknown field(s) {', '.join(unknown)}: only percent, tolerance and seconds")

    def number(key: str, low: float, high: float, default: float) -> float:
        value = body.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
            raise MirrorError(f"{key} must be a number within [{low:g}, {high:g}], not {value!r}")
        return float(value)

    percent = number("percent", 0, 100, 0)
    tolerance = number("tolerance", 0, float("inf"), 0)
    seconds = number("seconds", 0, MAX_SECONDS, 60)
    return Setting(percent, tolerance, now + seconds)


def _tensor_json(name: str, datatype: str, array: np.ndarray) -> dict[str, Any]:
    flat = array.reshape(-1)
    if datatype == "BYTES":
        data: list[Any] = [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in flat.tolist()]
    else:
        data = flat.tolist()
    return {"name": name, "datatype": datatype, "shape": list(array.shape), "data": data}


def agreeing(ours: Sequence[Any], theirs: Sequence[Any], tolerance: float, regression: bool) -> int:
    """Rows on which two `predict` outputs agree: the same class, or values within `tolerance`."""
    if regression:
        return sum(1 for a, b in zip(ours, theirs, strict=True)
                   if a is not None and b is not None and abs(float(a) - float(b)) <= tolerance)
    return sum(1 for a, b in zip(ours, theirs, strict=True) if str(a) == str(b))


class Mirror:
    def __init__(self, model: str, host: str, port: int, registry: CollectorRegistry, *, regression: bool,
                 capacity: int = 1000, workers: int = 2) -> None:
        self.model, self.host, self.port, self.regression = model, host, port, regression
        self.path = f"/v2/models/{model}/infer"
        self.setting = Setting()
        self._queue: queue.Queue[tuple[list[tuple[str, str, np.ndarray]], np.ndarray, Setting] | None] = \
            queue.Queue(capacity)
        self._workers = workers
        self._threads: list[threading.Thread] = []

        self._counters: dict[str, Counter] = {}

        def counter(name: str, text: str) -> Any:
            self._counters[name] = Counter(name, text, ["model"], registry=registry)
            return self._counters[name].labels(model)

        self.sent = counter("mlops_mirror_sent", "Inference calls mirrored to the shadow candidate.")
        self.dropped = counter("mlops_mirror_dropped", "Inference calls not mirrored: the mirror's queue was full.")
        self.errors = counter("mlops_mirror_errors", "Mirrored calls the candidate failed (no answer, or an error).")
        self.rows = counter("mlops_mirror_rows", "Rows of the candidate's answers compared with this server's.")
        self.agreed = counter("mlops_mirror_agreed_rows", "Compared rows on which the candidate agreed.")
        self._latency_metric = Histogram("mlops_mirror_duration_seconds", "Latency of the candidate's answers.",
                                         ["model"], buckets=LATENCY_BUCKETS, registry=registry)
        self.latency = self._latency_metric.labels(model)

    # -- the request path
    def active(self) -> bool:
        return self.setting.on(time.time())

    def offer(self, inputs: Sequence[Any], predict: np.ndarray | None) -> None:
        """A live call answered with `predict`: mirrored with the configured probability, never waited for."""
        setting = self.setting
        if predict is None or not setting.on(time.time()) or random.random() * 100 >= setting.percent:
            return
        try:
            self._queue.put_nowait(([(t.name, t.datatype, t.array) for t in inputs], predict, setting))
        except queue.Full:
            self.dropped.inc()

    # -- control
    def configure(self, setting: Setting) -> None:
        self.setting = setting
        if setting.percent > 0 and not self._threads:
            self._threads = [threading.Thread(target=self._run, name=f"mirror-{i}", daemon=True)
                             for i in range(self._workers)]
            for t in self._threads:
                t.start()

    def state(self) -> dict[str, Any]:
        s = self.setting
        return {"percent": s.percent if s.on(time.time()) else 0.0, "tolerance": s.tolerance,
                "until": s.until if s.on(time.time()) else None, "target": f"http://{self.host}:{self.port}{self.path}"}

    def snapshot(self) -> dict[str, Any]:
        cumulative = [int(x.value) for f in self._latency_metric.collect() for x in f.samples
                      if x.name.endswith("_bucket")]
        counts = [b - a for a, b in zip([0, *cumulative], cumulative, strict=False)]
        totals = {key: sum(int(x.value) for f in self._counters[name].collect() for x in f.samples
                           if x.name == f"{name}_total")
                  for key, name in (("sent", "mlops_mirror_sent"), ("dropped", "mlops_mirror_dropped"),
                                    ("errors", "mlops_mirror_errors"), ("rows", "mlops_mirror_rows"),
                                    ("agreed", "mlops_mirror_agreed_rows"))}
        return {**self.state(), **totals, "latency": {"counts": counts}}

    # -- the workers
    def _run(self) -> None:
        conn: http.client.HTTPConnection | None = None
        while True:
            item = self._queue.get()
            if item is None:
                return
            inputs, ours, setting = item
            body = orjson.dumps({"inputs": [_tensor_json(n, d, a) for n, d, a in inputs]},
                                option=orjson.OPT_SERIALIZE_NUMPY)
            self.sent.inc()
            started = time.perf_counter()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(self.host, self.port, timeout=TIMEOUT)
                conn.request("POST", self.path, body, {"content-type": "application/json"})
                resp = conn.getresponse()
                answer = resp.read()
                status = resp.status
            except (OSError, http.client.HTTPException) as exc:
                if conn is not None:
                    conn.close()
                conn = None
                self.errors.inc()
                log.debug("mirror to %s:%d failed: %s", self.host, self.port, exc)
                continue
            self.latency.observe(time.perf_counter() - started)
            theirs = self._predict(answer) if status == 200 else None
            ours_list = ours.reshape(-1).tolist()
            if theirs is None or len(theirs) != len(ours_list):
                self.errors.inc()
                continue
            self.rows.inc(len(ours_list))
            self.agreed.inc(agreeing(ours_list, theirs, setting.tolerance, self.regression))

    @staticmethod
    def _predict(answer: bytes) -> list[Any] | None:
        try:
            outputs = orjson.loads(answer).get("outputs") or []
        except (orjson.JSONDecodeError, AttributeError):
            return None
        for o in outputs:
            if isinstance(o, dict) and o.get("name") == "predict" and isinstance(o.get("data"), list):
                return list(o["data"])
        return None

    def close(self) -> None:
        for _ in self._threads:
            try:
                self._queue.put_nowait(None)
            except queue.Full:
                break
