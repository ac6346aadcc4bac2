"""Payload capture and ground-truth labels: what the server answered, and what the truth turned out to be,
written where `mlops quality` (runtime/quality.py) joins them.

Layout under the destination (`file://DIR`, a mounted PVC, or `s3://BUCKET/PREFIX`):

    revisions/REVISION.json                     the model behind a revision: name, task, classes, features
    predictions/REVISION/POD-STAMP-SEQ.jsonl    one line per row served: id, row, time, revision, the
                                                features (by name), predict   (or .parquet, the same columns)
    labels/POD-STAMP-SEQ.jsonl                  one line per label received: id, label, time

A request's id is the OIP `id`, or one the server assigns and returns in the answer when the client gave none
(only while capture is on). A request of N rows gives N records `row` 0…N-1; a label is a value for row 0 or a
list of N values, one per row. Names the records use for themselves (id, row, time, revision, predict) are
never a feature's: such a feature is written as `input.NAME`. Only the model's inputs and outputs are written:
no header, token or address.

Never on the request path: `offer` puts references to the request's arrays in a bounded queue (dropped and
counted in /metrics when it is full), encoded later by the event loop between other events and written by a
thread (see `Capture`). Files are written aside
(`.NAME.partial`) and renamed, or uploaded to S3, once closed: rotated by size and by age, and at SIGTERM
(`close`), so a reader only ever sees whole files. An upload that fails is kept on local disk and tried
again at the next rotation.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import os
import queue
import random
import socket
import threading
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import orjson
from prometheus_client import CollectorRegistry, Counter

log = logging.getLogger("mlops.capture")
META = ("id", "row", "time", "revision", "predict")
PREDICTIONS, LABELS, REVISIONS = "predictions", "labels", "revisions"
FORMATS = ("jsonl", "parquet")
LABEL_TYPES = (str, int, float, bool)
CHUNK = 64
ENCODE_DELAY = 0.01
"""How long after a first call waiting the event loop encodes: the calls of the next 10 ms are encoded with it."""
DRAIN_SECONDS = 0.2
"""How often the writer thread writes what was encoded: waking per chunk would have it take the GIL from the
event loop hundreds of times a second."""
"""Calls encoded by one event-loop callback (about 0.3 ms of JSON for one-row calls), the other events between."""


class CaptureError(ValueError):
    pass


def column_of(feature: str) -> str:
    """A feature's column in the captured records."""
    return f"input.{feature}" if feature in META else feature


_ID_PREFIX = os.urandom(8).hex()  # this process's: ids are unique across Pods and restarts
_ID_COUNTER = itertools.count(1)


def new_id() -> str:
    """An id for a call whose client gave none: this process's random prefix and a counter (a tenth of a uuid4's
    cost on the request path)."""
    return f"{_ID_PREFIX}-{next(_ID_COUNTER):x}"


def check_labels(body: Any) -> list[tuple[str, Any]]:
    """A feedback body `{id: label}` (a label: a string, number or bool, or a list of them, one per row),
    as (id, label) pairs; a clear error for anything else."""
    if not isinstance(body, dict) or not body:
        raise CaptureError('the body must be a JSON object of request ids and their labels: {"ID": LABEL, …}')
    for rid, label in body.items():
        values = label if isinstance(label, list) else [label]
        if not values or not all(isinstance(v, LABEL_TYPES) for v in values):
            raise CaptureError(f"the label of {rid!r} must be a string, number or boolean, or a non-empty list "
                               "of them (one per row)")
    return list(body.items())


@dataclass(frozen=True)
class Destination:
    """Where captured files go: a local directory (file://, a mounted PVC) or an S3 prefix, with a local spool."""

    uri: str
    local: Path  # the directory files are written in (the destination itself, or the spool for S3)
    bucket: str | None = None
    prefix: str = ""

    @classmethod
    def parse(cls, uri: str, spool: Path | None = None) -> Destination:
        parsed = urllib.parse.urlparse(uri)
        if parsed.scheme in ("", "file"):
            return cls(uri, Path(urllib.parse.unquote(parsed.path)))
        if parsed.scheme == "s3":
            if not parsed.netloc:
                raise CaptureError(f"{uri}: no bucket")
            return cls(uri, Path(spool or os.environ.get("TMPDIR", "/tmp")) / "capture", parsed.netloc,
                       parsed.path.strip("/"))
        raise CaptureError(f"{uri}: capture to file://, a mounted path or s3://, not {parsed.scheme}://")

    def key(self, rel: str) -> str:
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def publish(self, path: Path, rel: str) -> None:
        """A closed file into place: renamed where readers look, or uploaded then removed."""
        if self.bucket is None:
            os.replace(path, self.local / rel)
            return
        from .storage import upload_file

        upload_file(path, f"s3://{self.bucket}/{self.key(rel)}")
        path.unlink()


class _File:
    """One open capture file, written aside until it is published."""

    def __init__(self, dest: Destination, rel: str, fmt: str, schema: Any = None) -> None:
        self.rel, self.opened = rel, time.monotonic()
        final = dest.local / rel
        final.parent.mkdir(parents=True, exist_ok=True)
        self.path = final.parent / f".{final.name}.partial"
        self.out: IO[bytes] = open(self.path, "wb")  # noqa: SIM115  # closed by close()
        self.parquet: Any = None
        if fmt == "parquet":
            import pyarrow.parquet as pq

            self.parquet = pq.ParquetWriter(self.out, schema, compression="zstd")

    @property
    def size(self) -> int:
        return self.out.tell()

    def close(self) -> None:
        if self.parquet is not None:
            self.parquet.close()
        self.out.close()


@dataclass
class _Served:
    """One request's rows, as they wait to be encoded (references: nothing is copied on the request path)."""

    rid: str
    when: float
    columns: Mapping[str, Any]  # feature → 1-D array or list
    predict: np.ndarray


class Capture:
    """The capture of one server process (see the module's docstring).

    Two stages, so neither holds up an answer: `offer` appends to a bounded deque; the event loop encodes it
    (JSON Lines bytes, or an Arrow table) CHUNK calls at a time in callbacks of their own, between the other
    events; a writer thread writes, rotates and publishes. Encoding in a thread instead had the two threads
    take turns on the GIL: bench/serve_bench.py's iris row at saturation lost 10 % of its throughput and
    gained 42 % on its p99 (JSON encoding is Python work; only the writes give the GIL back).
    """

    def __init__(self, uri: str, *, model: str, revision: str, features: Sequence[str], task: str,
                 classes: Sequence[Any] | None, predict_type: str, registry: CollectorRegistry,
                 fmt: str = "jsonl", sample_rate: float = 1.0, capacity: int = 10_000,
                 max_bytes: int = 64 * 1024 * 1024, max_age: float = 60.0, pod: str | None = None,
                 spool: Path | None = None) -> None:
        if fmt not in FORMATS:
            raise CaptureError(f"capture format {fmt!r}: jsonl or parquet")
        if not 0.0 <= sample_rate <= 1.0:
            raise CaptureError(f"capture sample rate {sample_rate}: within [0, 1]")
        self.dest = Destination.parse(uri, spool)
        self.model, self.revision, self.features, self.fmt = model, revision, list(features), fmt
        self.sample_rate, self.max_bytes, self.max_age = sample_rate, max_bytes, max_age
        self.pod = pod or socket.gethostname()
        self.columns = [column_of(f) for f in self.features]
        self.about = {"model": model, "revision": revision, "task": task,
                      "classes": list(classes) if classes is not None else None, "features": self.features,
                      "columns": self.columns, "predict": predict_type}
        self._predict_type = predict_type
        self.capacity = capacity
        self._pending: collections.deque[_Served] = collections.deque()
        self._pending_rows = 0
        self._encoding = False
        # encoded, waiting for the writer: as many calls again as the deque holds, at most
        self._encoded: queue.Queue[tuple[str, Any, int]] = queue.Queue()
        self._encoded_calls = 0  # calls encoded and not written yet: with the deque's, at most `capacity`
        self._count_lock = threading.Lock()
        # labels apart: a flood of predictions never refuses them (feedback calls, each its own entry)
        self._labels: queue.Queue[tuple[str, Any, int]] = queue.Queue(capacity)
        self._files: dict[str, _File] = {}
        self._unpublished: list[tuple[Path, str]] = []
        self._seq = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._schema_cache: Any = None
        self.sampled = self._sampler()
        self.records = Counter("mlops_capture_records", "Rows captured and written, by kind (prediction, label).",
                               ["model", "kind"], registry=registry)
        self.dropped = Counter("mlops_capture_dropped", "Rows not captured because the capture queue was full, "
                               "by kind (labels are refused with a 503 instead, and counted here).",
                               ["model", "kind"], registry=registry)
        self.files = Counter("mlops_capture_files", "Capture files closed and published, by kind.",
                             ["model", "kind"], registry=registry)
        self.failures = Counter("mlops_capture_write_errors", "Capture files that could not be written or "
                                "published (kept and retried when it is a publication).", ["model"], registry=registry)

    def _sampler(self) -> Any:
        rate = self.sample_rate
        if rate >= 1.0:
            return lambda: True
        if rate <= 0.0:
            return lambda: False
        draw = random.Random().random
        return lambda: draw() < rate

    # -- the request path
    def offer(self, rid: str, columns: Mapping[str, Any], predict: np.ndarray, rows: int) -> None:
        """A served request's rows (if sampled): queued, or dropped and counted when the queue is full."""
        if len(self._pending) + self._encoded_calls >= self.capacity:
            self.dropped.labels(self.model, "prediction").inc(rows)
            return
        self._pending.append(_Served(rid, time.time(), columns, predict))
        if not self._encoding:
            self._encoding = True
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no event loop (a direct call): now
                self._encode(None)
                return
            loop.call_later(ENCODE_DELAY, self._encode, loop)  # the answer first, and the calls that follow

    def feedback(self, labels: list[tuple[str, Any]]) -> bool:
        """Labels received: queued (True), or refused when the queue is full (False: the client retries)."""
        when = time.time()
        body = b"".join(orjson.dumps({"id": rid, "label": label, "time": when}, option=orjson.OPT_APPEND_NEWLINE)
                        for rid, label in labels)
        try:
            self._labels.put_nowait((LABELS, body, len(labels)))
        except queue.Full:
            self.dropped.labels(self.model, "label").inc(len(labels))
            return False
        return True

    # -- the event loop's encoding, a chunk at a time
    def _encode(self, loop: asyncio.AbstractEventLoop | None) -> None:
        while self._pending:
            chunk = [self._pending.popleft() for _ in range(min(CHUNK, len(self._pending)))]
            item, rows = self._encode_predictions(chunk)
            with self._count_lock:
                self._encoded_calls += len(chunk)
            self._encoded.put_nowait((PREDICTIONS, (item, len(chunk)), rows))
            if loop is not None and self._pending:
                loop.call_soon(self._encode, loop)  # the other events first
                return
        self._encoding = False

    def _table(self, served: list[_Served]) -> dict[str, Any]:
        """The rows of the served requests, column by column."""
        counts = [len(s.predict) for s in served]
        out: dict[str, Any] = {
            "id": [s.rid for s, n in zip(served, counts, strict=True) for _ in range(n)],
            "row": [r for n in counts for r in range(n)],
            "time": [s.when for s, n in zip(served, counts, strict=True) for _ in range(n)],
            "revision": [self.revision] * sum(counts),
        }
        for feature, column in zip(self.features, self.columns, strict=True):
            parts = [s.columns[feature] for s in served]
            out[column] = np.concatenate(parts) if isinstance(parts[0], np.ndarray) else \
                [v for p in parts for v in p]
        out["predict"] = np.concatenate([s.predict for s in served])
        return out

    def _schema(self, table: dict[str, Any]) -> Any:
        if self._schema_cache is None:
            import pyarrow as pa

            numeric = {"FP64": pa.float64(), "INT64": pa.int64()}
            fields = [("id", pa.string()), ("row", pa.int32()), ("time", pa.float64()), ("revision", pa.string())]
            fields += [(c, pa.string() if isinstance(table[c], list) else pa.float64()) for c in self.columns]
            fields.append(("predict", numeric.get(self._predict_type, pa.string())))
            self._schema_cache = pa.schema(fields)
        return self._schema_cache

    def _encode_predictions(self, served: list[_Served]) -> tuple[Any, int]:
        """JSON Lines bytes, or an Arrow table, and the rows they hold."""
        table = self._table(served)
        rows = len(table["id"])
        if self.fmt == "parquet":
            import pyarrow as pa

            columns = {k: (v.tolist() if k == "predict" and self._predict_type == "BYTES" else v)
                       for k, v in table.items()}
            return pa.table(columns, schema=self._schema(table)), rows
        names = list(table)
        values = [v.tolist() if isinstance(v, np.ndarray) else v for v in table.values()]
        # one orjson call per row through map (a third of a Python-level loop's cost)
        return b"\n".join(map(orjson.dumps, [dict(zip(names, row, strict=True))
                                             for row in zip(*values, strict=True)])) + b"\n", rows

    # -- the writer thread
    def start(self) -> None:
        self._write_about()
        self._thread = threading.Thread(target=self._run, name="capture", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 20.0) -> None:
        """Encode and write what is queued, close and publish every file (at SIGTERM, once nothing is served)."""
        if self._pending:
            self._encode(None)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _write_about(self) -> None:
        rel = f"{REVISIONS}/{self.revision}.json"
        tmp = self.dest.local / f"{REVISIONS}/.{self.revision}.json.partial"
        tmp.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(orjson.dumps(self.about))
        self._unpublished.append((tmp, rel))  # published by the writer thread, retried like any file

    def _run(self) -> None:
        while True:
            stopping = self._stop.wait(timeout=min(DRAIN_SECONDS, self.max_age))
            try:
                self._drain()
                self._rotate(everything=stopping)
            except Exception:  # a full disk, an unreachable S3: counted, logged, the server keeps serving
                self.failures.labels(self.model).inc()
                log.exception("capture: writing to %s failed", self.dest.uri)
            if stopping:
                return

    def _drain(self) -> None:
        """Write what was encoded and the labels received, each kind in one write (one Parquet row group)."""
        for kind, q in ((LABELS, self._labels), (PREDICTIONS, self._encoded)):
            items: list[tuple[str, Any, int]] = []
            while True:
                try:
                    items.append(q.get_nowait())
                except queue.Empty:
                    break
            if not items:
                continue
            rows = sum(n for _, _, n in items)
            if kind == PREDICTIONS:  # (encoded, calls)
                with self._count_lock:
                    self._encoded_calls -= sum(calls for _, (_, calls), _ in items)
                items = [(k, data, n) for k, (data, _), n in items]
            f = self._file(kind, "jsonl" if kind == LABELS else self.fmt, items[0][1])
            if f.parquet is not None:
                import pyarrow as pa

                f.parquet.write_table(pa.concat_tables([data for _, data, _ in items]))
            else:
                f.out.write(b"".join(data for _, data, _ in items))
            self.records.labels(self.model, kind[:-1]).inc(rows)

    def _file(self, kind: str, fmt: str, data: Any) -> _File:
        f = self._files.get(kind)
        if f is None:
            self._seq += 1
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            where = f"{PREDICTIONS}/{self.revision}" if kind == PREDICTIONS else LABELS
            rel = f"{where}/{self.pod}-{stamp}-{self._seq:06d}.{fmt}"
            f = self._files[kind] = _File(self.dest, rel, fmt, data.schema if fmt == "parquet" else None)
        return f

    def _rotate(self, everything: bool) -> None:
        now = time.monotonic()
        for kind, f in list(self._files.items()):
            if everything or f.size >= self.max_bytes or now - f.opened >= self.max_age:
                f.close()
                del self._files[kind]
                self._unpublished.append((f.path, f.rel))
                self.files.labels(self.model, kind[:-1]).inc()
        kept = []
        for path, rel in self._unpublished:
            try:
                self.dest.publish(path, rel)
            except Exception as exc:
                self.failures.labels(self.model).inc()
                log.warning("capture: %s not published (kept, tried again later): %s", rel, exc)
                kept.append((path, rel))
        self._unpublished = kept
