"""Shadow traffic: a share of this server's live inference calls also sent to a challenger, whose answers
nobody sees, and compared with ours row by row.

The operator turns mirroring on for a Shadow rollout by posting `{percent, tolerance, seconds}` to the
monitoring port's `/v2/models/NAME/mirror` (again at every reconcile: a restarted pod catches up, and it
stops by itself `seconds` later if the operator never says so). The target is not a setting anyone can
post: it is the ModelDeployment's own preview Service, `<name>-preview` in this Pod's namespace (`--mirror-host`),
on its monitoring port, where the candidate's calls are counted as replayed ones (timed, never captured nor
counted into its drift sketches: the user's capture keeps one prediction per id).

Never on the request path: `offer` draws the share and puts references to the call's input tensors and our
`predict` in a bounded queue (a full queue drops the call, counted); worker tasks on the serving loop encode,
send, wait and compare. The counters are cumulative and mergeable over pods (`snapshot`, and /metrics): mirrored
calls sent, dropped (a full queue), failed by the candidate, rows compared, rows on which both agree (the same
class; a regressor's values within `tolerance`), the candidate's latency.

Why a few lines of HTTP/1.1 on asyncio streams rather than a maintained client: the data plane imports no
aiohttp (an architecture rule), granian has no client, and the other side is always `mlops serve` (Content-Length
framed answers on a keep-alive connection). And why not threads with the standard library's http.client, the
first version: on bench/mirror_bench.py (every call mirrored, the server on one core), the threads' GIL hand-offs
made the user's p99 at 200 calls/s 1.49x what it was without mirroring (0.58 -> 0.86 ms) and wrk's req/s 0.54x;
these tasks: 0.89x (1.00 -> 0.89 ms: no slower) and 0.75x (the copies' own encoding and parsing, on that core).
"""

from __future__ import annotations

import asyncio
import logging
import random
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


def per_bucket(histogram: Histogram) -> tuple[list[int], float]:
    """A prometheus-client histogram read back: its count per bucket (in bucket order, +Inf last) and its sum."""
    cumulative, total = [], 0.0
    for x in (x for f in histogram.collect() for x in f.samples):
        if x.name.endswith("_bucket"):
            cumulative.append(int(x.value))
        elif x.name.endswith("_sum"):
            total = x.value
    return [b - a for a, b in zip([0, *cumulative], cumulative, strict=False)], total


class Mirror:
    def __init__(self, model: str, host: str, port: int, registry: CollectorRegistry, *, regression: bool,
                 capacity: int = 1000, workers: int = 2) -> None:
        self.model, self.host, self.port, self.regression = model, host, port, regression
        self.path = f"/v2/models/{model}/infer"
        self.setting = Setting()
        self._capacity, self._workers = capacity, workers
        self._queue: asyncio.Queue[tuple[list[tuple[str, str, np.ndarray]], np.ndarray, Setting]] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task[None]] = []
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
        head = f"POST {self.path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        self._head = head.encode()

    # -- the request path
    def active(self) -> bool:
        return self.setting.on(time.time())

    def offer(self, inputs: Sequence[Any], predict: np.ndarray | None) -> None:
        """A live call answered with `predict`: mirrored with the configured probability, never waited for."""
        setting = self.setting
        if predict is None or not setting.on(time.time()) or random.random() * 100 >= setting.percent:
            return
        item = ([(t.name, t.datatype, t.array) for t in inputs], predict, setting)
        if self._loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._put(item)
        else:  # a call answered off the serving loop (a thread): queued by the loop
            self._loop.call_soon_threadsafe(self._put, item)

    def _put(self, item: tuple[list[tuple[str, str, np.ndarray]], np.ndarray, Setting]) -> None:
        assert self._queue is not None
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self.dropped.inc()

    # -- control
    def configure(self, setting: Setting) -> None:
        """Called on the serving loop (the monitoring port's handler): the workers start there, once."""
        self.setting = setting
        if setting.percent > 0 and not self._tasks:
            self._loop = asyncio.get_running_loop()
            self._queue = asyncio.Queue(self._capacity)
            self._tasks = [self._loop.create_task(self._run()) for _ in range(self._workers)]

    def state(self) -> dict[str, Any]:
        s = self.setting
        return {"percent": s.percent if s.on(time.time()) else 0.0, "tolerance": s.tolerance,
                "until": s.until if s.on(time.time()) else None, "target": f"http://{self.host}:{self.port}{self.path}"}

    def snapshot(self) -> dict[str, Any]:
        counts, _ = per_bucket(self._latency_metric)
        totals = {key: sum(int(x.value) for f in self._counters[name].collect() for x in f.samples
                           if x.name == f"{name}_total")
                  for key, name in (("sent", "mlops_mirror_sent"), ("dropped", "mlops_mirror_dropped"),
                                    ("errors", "mlops_mirror_errors"), ("rows", "mlops_mirror_rows"),
                                    ("agreed", "mlops_mirror_agreed_rows"))}
        return {**self.state(), **totals, "latency": {"counts": counts}}

    # -- the workers: tasks on the serving loop, one keep-alive connection each
    async def _run(self) -> None:
        assert self._queue is not None
        conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        while True:
            inputs, ours, setting = await self._queue.get()
            body = orjson.dumps({"inputs": [_tensor_json(n, d, a) for n, d, a in inputs]},
                                option=orjson.OPT_SERIALIZE_NUMPY)
            self.sent.inc()
            started = time.perf_counter()
            try:
                async with asyncio.timeout(TIMEOUT):
                    if conn is None:
                        conn = await asyncio.open_connection(self.host, self.port)
                    status, answer = await self._exchange(conn, body)
            except (OSError, TimeoutError, MirrorError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
                if conn is not None:
                    conn[1].close()
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

    async def _exchange(self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter], body: bytes) -> tuple[int,
                                                                                                          bytes]:
        """One HTTP/1.1 exchange on a keep-alive connection: the status and the body (Content-Length framed, as
        `mlops serve` answers; anything else ends the connection)."""
        reader, writer = conn
        writer.write(self._head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        try:
            status = int(lines[0].split(" ", 2)[1])
            length = next(int(v) for k, _, v in (line.partition(":") for line in lines[1:])
                          if k.strip().lower() == "content-length")
        except (IndexError, ValueError, StopIteration):
            raise MirrorError(f"an answer without a status or a Content-Length: {lines[0]!r}") from None
        return status, await reader.readexactly(length)

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()

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
