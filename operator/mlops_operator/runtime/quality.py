"""`mlops quality`: ground-truth labels joined to captured predictions, per revision, as mergeable counters.

    mlops quality --captured URI [--labels URI …] [--since EPOCH] [--until EPOCH]

`--captured` is a ModelDeployment's capture destination (capture.py's layout: `revisions/`, `predictions/`,
`labels/` — the feedback endpoint's labels); each `--labels` is more labels: a file or a prefix of files
(`.jsonl`: `{"id": …, "label": …}` a line; `.csv` or `.parquet`: columns `id`, `label`). A label is for row 0
of its request, or a list of one per row. Labels are read in order (the capture's by time, then each
`--labels` in the order given, files by name); the last label for an id and row counts, once. Labels for an id
no captured prediction has are counted (`unknownLabels`), as are the labels of predictions made outside the
window (`outsideWindow`, by the prediction's time). The answer (api/quality.py's QualityReport) goes to the
termination message: the operator reads it and never the storage.

Run in a Job with the namespace's storage credentials. Recomputed from the files each time, so a Job that
runs twice, or an operator that restarts between two, counts every label once. Vectorised (pyarrow reads,
pandas joins, numpy counts): bench/quality_bench.py joins 1,000,000 labels in the figure it prints.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from typing import Any

import numpy as np
import orjson

from ..api.quality import QualityReport, RevisionQuality
from . import storage
from .capture import LABELS, PREDICTIONS, REVISIONS

MAX_REVISIONS = 8  # the newest revisions labelled in the window: a termination message holds 4 KiB


class QualityError(ValueError):
    pass


def _ext(uri: str) -> str:
    name = uri.rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[-1].lower() if "." in name else ""


def _table_of(uri: str, raw: bytes, columns: list[str] | None = None, schema: Any = None) -> Any:
    """One predictions file (`.parquet` or `.jsonl`) as a DataFrame: `columns` only when given (a JSON Lines file
    read with `schema`, the other fields ignored), else all of them."""
    import pyarrow as pa
    import pyarrow.json as pj
    import pyarrow.parquet as pq

    try:
        if _ext(uri) == "parquet":
            table = pq.read_table(io.BytesIO(raw), columns=columns)
        else:
            options = pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore") \
                if schema is not None else None
            table = pj.read_json(io.BytesIO(raw), parse_options=options)
    except pa.ArrowInvalid as exc:
        raise QualityError(f"{uri}: {exc}") from None
    return (table.select(columns) if columns else table).to_pandas()


def read_predictions(uris: list[str], types: dict[str, str]) -> Any:
    """The captured rows' id, row, time, revision and predict (a DataFrame), in file order."""
    import pandas as pd
    import pyarrow as pa

    columns = ["id", "row", "time", "revision", "predict"]
    frames = []
    for uri in (u for u in uris if _ext(u) in ("jsonl", "parquet")):
        revision = uri.rstrip("/").rsplit("/", 2)[-2]
        predict = {"FP64": pa.float64(), "INT64": pa.int64()}.get(types.get(revision, ""), pa.string())
        schema = pa.schema([("id", pa.string()), ("row", pa.int64()), ("time", pa.float64()),
                            ("revision", pa.string()), ("predict", predict)])
        frames.append(_table_of(uri, storage.read_bytes(uri), columns, schema))
    if not frames:
        return pd.DataFrame({c: [] for c in columns})
    return pd.concat(frames, ignore_index=True)


def _label_frame(items: list[tuple[Any, Any]]) -> Any:
    """(id, label) pairs as (id, row, label) rows: a list label spread over its rows, a value for row 0."""
    import pandas as pd

    ids: list[str] = []
    rows: list[int] = []
    values: list[Any] = []
    for rid, label in items:
        if isinstance(label, list):
            ids.extend([str(rid)] * len(label))
            rows.extend(range(len(label)))
            values.extend(label)
        else:
            ids.append(str(rid))
            rows.append(0)
            values.append(label)
    return pd.DataFrame({"id": ids, "row": np.asarray(rows, dtype=np.int64), "label": values})


def _jsonl_labels(raw: bytes, uri: str) -> Any:
    """A JSON Lines labels file as (id, row, label) columns: pyarrow's reader when every label has one type,
    else line by line (a file mixing strings and numbers, or scalars and lists)."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.json as pj

    try:
        table = pj.read_json(io.BytesIO(raw))
    except pa.ArrowInvalid:
        table = None
    if table is not None and "id" in table.column_names and "label" in table.column_names:
        ids, label = pc.cast(table["id"], pa.string()).combine_chunks(), table["label"].combine_chunks()
        if pa.types.is_list(label.type):
            parents = pc.list_parent_indices(label)
            lengths = pc.list_value_length(label).to_numpy(zero_copy_only=False)
            starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
            return pd.DataFrame({"id": ids.take(parents).to_pandas(),
                                 "row": np.arange(len(parents), dtype=np.int64) - starts,
                                 "label": pc.list_flatten(label).to_pandas()})
        return pd.DataFrame({"id": ids.to_pandas(), "row": np.zeros(len(ids), dtype=np.int64),
                             "label": label.to_pandas()})
    try:
        lines = [orjson.loads(line) for line in raw.splitlines() if line.strip()]
    except orjson.JSONDecodeError as exc:
        raise QualityError(f"{uri}: not JSON Lines: {exc}") from None
    return _label_frame([(d["id"], d["label"]) for d in lines if isinstance(d, dict) and "id" in d and "label" in d])


def read_labels(uris: list[str]) -> Any:
    """Every label in order (id, row, label), a list label spread over its rows."""
    import pandas as pd

    frames = []
    for uri in uris:
        ext = _ext(uri)
        if ext in ("jsonl", "json"):
            frames.append(_jsonl_labels(storage.read_bytes(uri), uri))
        elif ext in ("csv", "parquet"):
            raw = storage.read_bytes(uri)
            frame = pd.read_csv(io.BytesIO(raw), dtype={"id": str}) if ext == "csv" else \
                pd.read_parquet(io.BytesIO(raw))
            if "id" not in frame or "label" not in frame:
                raise QualityError(f"{uri}: a labels file has columns id and label (it has {', '.join(frame)})")
            frames.append(_label_frame(list(zip(frame["id"].astype(str), frame["label"], strict=True))))
    if not frames:
        return pd.DataFrame({"id": [], "row": np.asarray([], dtype=np.int64), "label": []})
    # object columns: labels of different files may have different types (compared as text later)
    return pd.concat([f.astype({"id": str, "label": object}) for f in frames], ignore_index=True)


def _canonical(values: Any) -> Any:
    """Class labels compared as text, whatever JSON made of them (1, 1.0, "1" → "1"; True → "True"): each
    distinct value once (there are few), then spread by its codes."""
    import pandas as pd

    codes, uniques = pd.factorize(np.asarray(values, dtype=object), use_na_sentinel=False)
    text = np.asarray([str(int(v)) if isinstance(v, float) and v.is_integer() else str(v) for v in uniques],
                      dtype=object)
    return pd.Series(text[codes] if len(text) else np.asarray([], dtype=object), dtype=object)


def revision_quality(rev: str, about: dict[str, Any], predictions: int, truth: Any, predicted: Any) -> RevisionQuality:
    task = about.get("task", "classification")
    q = RevisionQuality(revision=rev, task=task, predictions=predictions, labelled=len(truth))
    if task == "regression":
        try:
            err = np.asarray(predicted, dtype=np.float64) - np.asarray(truth, dtype=np.float64)
        except (TypeError, ValueError):
            raise QualityError(f"revision {rev} is a regressor: its labels must be numbers") from None
        q.sum_error, q.sum_abs_error = float(err.sum()), float(np.abs(err).sum())
        q.sum_squared_error = float((err * err).sum())
        return q
    t, p = _canonical(truth), _canonical(predicted)
    known = [str(c) for c in about.get("classes") or []]
    classes = known + sorted((set(t.unique()) | set(p.unique())) - set(known))
    index = {c: i for i, c in enumerate(classes)}
    k = len(classes)
    ti = t.map(index).to_numpy(dtype=np.int64)
    pi = p.map(index).to_numpy(dtype=np.int64)
    matrix = np.bincount(ti * k + pi, minlength=k * k).reshape(k, k)
    q.correct, q.classes, q.confusion = int(np.trace(matrix)), classes, matrix.tolist()
    return q


def join(captured: str, extra_labels: list[str], since: float | None, until: float) -> QualityReport:
    base = captured.rstrip("/")
    abouts: dict[str, dict[str, Any]] = {}
    for uri in storage.list_files(f"{base}/{REVISIONS}"):
        if uri.endswith(".json"):
            about = orjson.loads(storage.read_bytes(uri))
            abouts[str(about.get("revision") or uri.rsplit("/", 1)[-1][:-5])] = about
    prediction_files = storage.list_files(f"{base}/{PREDICTIONS}")
    label_files = storage.list_files(f"{base}/{LABELS}")
    for uri in extra_labels:
        label_files += storage.list_files(uri)
    types = {rev: str(a.get("predict", "")) for rev, a in abouts.items()}
    preds = read_predictions(prediction_files, types)
    labels = read_labels(label_files)
    report = QualityReport(since=since, until=until, files=len(prediction_files) + len(label_files))
    preds = preds.drop_duplicates(["id", "row"], keep="last")
    before = len(labels)
    labels = labels.drop_duplicates(["id", "row"], keep="last")
    report.labels, report.duplicate_labels = len(labels), before - len(labels)
    joined = labels.merge(preds, on=["id", "row"], how="inner")
    report.unknown_labels = len(labels) - len(joined)
    times = preds["time"].to_numpy(dtype=np.float64)
    in_window = (times < until) & (times >= since if since is not None else True)
    windowed = preds[in_window]
    jt = joined["time"].to_numpy(dtype=np.float64)
    joined = joined[(jt < until) & (jt >= since if since is not None else True)]
    report.outside_window = len(labels) - report.unknown_labels - len(joined)
    served = windowed.groupby("revision")["time"].agg(["size", "max"])
    newest = served.sort_values("max", ascending=False).index[:MAX_REVISIONS]
    by_rev = {rev: group for rev, group in joined.groupby("revision")}
    for rev in sorted(newest):
        group = by_rev.get(rev)
        truth = group["label"].to_numpy() if group is not None else np.asarray([])
        predicted = group["predict"].to_numpy() if group is not None else np.asarray([])
        report.revisions.append(revision_quality(str(rev), abouts.get(str(rev), {}), int(served.loc[rev, "size"]),
                                                 truth, predicted))
    return report


def training_set(captured: str, since: float, target: str, plus: Any = None) -> tuple[Any, dict[str, Any]]:
    """The labelled captured rows of calls made since `since` (epoch seconds) as a training table: the features
    (by name, in the newest revision's order) and `target` (the label); `plus`, a base DataFrame with the same
    columns, goes first. With what was read: files (the newest 8 named), captured rows, base rows."""
    import pandas as pd

    base = captured.rstrip("/")
    abouts = sorted((orjson.loads(storage.read_bytes(u)) for u in storage.list_files(f"{base}/{REVISIONS}")
                     if u.endswith(".json")), key=lambda a: str(a.get("revision")))
    files = [u for u in storage.list_files(f"{base}/{PREDICTIONS}") if _ext(u) in ("jsonl", "parquet")]
    label_files = storage.list_files(f"{base}/{LABELS}")
    frames = [_table_of(u, storage.read_bytes(u)) for u in files]
    if not frames or not abouts:
        raise QualityError(f"{captured}: no captured predictions (predictions/ and revisions/ under it)")
    rows = pd.concat(frames, ignore_index=True)
    rows = rows[rows["time"] >= since].drop_duplicates(["id", "row"], keep="last")
    labels = read_labels(label_files).drop_duplicates(["id", "row"], keep="last")
    joined = rows.merge(labels, on=["id", "row"], how="inner")
    newest = max(abouts, key=lambda a: float(rows[rows["revision"] == a.get("revision")]["time"].max()
                                             if (rows["revision"] == a.get("revision")).any() else -1.0))
    features, columns = list(newest["features"]), list(newest.get("columns") or newest["features"])
    for c in columns:
        if c not in joined:
            joined[c] = np.nan  # a revision with fewer features: missing, for the data checks to judge
    table = joined[columns].set_axis(features, axis=1)
    table[target] = joined["label"].to_numpy()
    if plus is not None:
        missing = [c for c in [*features, target] if c not in plus.columns]
        if missing:
            raise QualityError(f"the base dataset has no column {', '.join(map(repr, missing))} "
                               f"(the captured rows have {', '.join([*features, target])})")
        table = pd.concat([plus[[*features, target]], table], ignore_index=True)
    table = table.infer_objects()
    names = [f"{PREDICTIONS}/" + u.rsplit(f"/{PREDICTIONS}/", 1)[-1] for u in files]
    return table, {"captured_files": names[-8:], "captured_file_count": len(files), "captured_rows": len(joined),
                   "base_rows": len(plus) if plus is not None else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlops quality", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--captured", required=True, help="the capture destination (file://, a path, s3://)")
    parser.add_argument("--labels", action="append", default=[], help="more labels: a file or a prefix")
    parser.add_argument("--since", type=float, help="count predictions made at or after this time (epoch seconds)")
    parser.add_argument("--until", type=float, help="… and before this one (default: now)")
    args = parser.parse_args(argv)
    from . import sdk

    try:
        report = join(args.captured, args.labels, args.since, args.until if args.until is not None else time.time())
    except (QualityError, storage.StorageError, KeyError) as exc:
        return sdk.fail("mlops quality", exc)
    return sdk.answer(report.to_message())


if __name__ == "__main__":
    sys.exit(main())
