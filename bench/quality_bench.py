"""Live-quality join benchmark: `mlops quality` joining ground-truth labels to captured predictions.

    python bench/quality_bench.py [--labels 1000000] [--files 20] [--rounds 3]

Data, in capture.py's layout in a temporary directory: `--labels` captured rows of an iris-like classifier
(4 features, 3 classes, one row a request, two revisions, in `--files` JSON Lines files) and a label for each,
plus 1 % duplicates (a corrected label) and 1 % for ids never captured, in `--files` labels files. Measured
side by side, pinned to one core (and pyarrow to one thread):

  * runtime/quality.py's `join` (what the Job runs): pyarrow reads the predictions, orjson the labels,
    pandas joins, numpy counts;
  * a peer: the obvious pandas code (`pd.read_json(lines=True)` of every file, `merge`, `crosstab`).

Prints the median time of each, the ratio, and checks that both count the same (the goal: under 10 s for
1,000,000 labels on one core); then runs the Job's command itself as a process, for its peak memory.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson

from mlops_operator.runtime.quality import join

FEATURES = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]


def make(root: Path, n: int, files: int, seed: int = 0) -> dict[str, int]:
    rng = np.random.default_rng(seed)
    (root / "revisions").mkdir(parents=True)
    for rev in ("r1", "r2"):
        (root / "revisions" / f"{rev}.json").write_bytes(orjson.dumps(
            {"revision": rev, "task": "classification", "classes": [0, 1, 2], "features": FEATURES,
             "predict": "INT64"}))
    x = rng.normal(5, 1, (n, 4)).round(2)
    predict = rng.integers(0, 3, n)
    truth = np.where(rng.random(n) < 0.9, predict, rng.integers(0, 3, n))
    revision = np.where(np.arange(n) % 2 == 0, "r1", "r2")
    t0 = time.time() - 3600
    per = -(-n // files)
    for f in range(files):
        lo, hi = f * per, min(n, (f + 1) * per)
        for rev in ("r1", "r2"):
            out = root / "predictions" / rev
            out.mkdir(parents=True, exist_ok=True)
            lines = [orjson.dumps({"id": f"q{i:08d}", "row": 0, "time": t0 + i * 1e-3, "revision": rev,
                                   **dict(zip(FEATURES, x[i].tolist(), strict=True)), "predict": int(predict[i])})
                     for i in range(lo, hi) if revision[i] == rev]
            (out / f"pod-{f:03d}.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    labels = [(f"q{i:08d}", int(truth[i])) for i in range(n)]
    extra = max(1, n // 100)
    labels += [(f"q{i:08d}", int(truth[i])) for i in rng.integers(0, n, extra)]  # the same label again
    labels += [(f"nobody{i}", 0) for i in range(extra)]
    (root / "labels").mkdir()
    per = -(-len(labels) // files)
    for f in range(files):
        part = labels[f * per:(f + 1) * per]
        (root / "labels" / f"pod-{f:03d}.jsonl").write_bytes(b"".join(
            orjson.dumps({"id": i, "label": v, "time": t0}, option=orjson.OPT_APPEND_NEWLINE) for i, v in part))
    correct = int((truth == predict).sum())
    return {"labelled": n, "correct": correct, "unknown": extra}


def peer(root: Path) -> dict[str, int]:
    import pandas as pd

    preds = pd.concat([pd.read_json(f, lines=True, dtype={"id": str})
                       for f in sorted((root / "predictions").rglob("*.jsonl"))], ignore_index=True)
    labels = pd.concat([pd.read_json(f, lines=True, dtype={"id": str})
                        for f in sorted((root / "labels").glob("*.jsonl"))], ignore_index=True)
    labels = labels.drop_duplicates("id", keep="last")
    joined = labels.merge(preds, on="id")
    table = pd.crosstab(joined["label"], joined["predict"])
    return {"labelled": len(joined), "correct": int(np.trace(table.to_numpy())),
            "unknown": len(labels) - len(joined)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--labels", type=int, default=1_000_000)
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    import pyarrow as pa

    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        made = time.perf_counter()
        expected = make(root, args.labels, args.files)
        size = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
        print(f"data: {args.labels:,} captured rows and {args.labels + 2 * expected['unknown']:,} labels in "
              f"{2 * args.files} + {args.files} files, {size / 2**20:.0f} MiB (made in "
              f"{time.perf_counter() - made:.1f} s)")
        ours, theirs = [], []
        for _ in range(args.rounds):
            t = time.perf_counter()
            report = join(str(root), [], None, time.time())
            ours.append(time.perf_counter() - t)
            t = time.perf_counter()
            counted = peer(root)
            theirs.append(time.perf_counter() - t)
        labelled = sum(r.labelled for r in report.revisions)
        correct = sum(r.correct or 0 for r in report.revisions)
        assert (labelled, correct, report.unknown_labels) == \
            (expected["labelled"], expected["correct"], expected["unknown"]), report
        assert counted == expected, counted
        a, b = statistics.median(ours), statistics.median(theirs)
        print(f"{'join (one core)':<34}{'median s':>10}{'labels/s':>14}")
        print(f"{'mlops quality (pyarrow, pandas)':<34}{a:>10.2f}{args.labels / a:>14,.0f}")
        print(f"{'peer: pd.read_json + merge':<34}{b:>10.2f}{args.labels / b:>14,.0f}")
        print(f"ratio (peer / ours): {b / a:.2f}x; accuracy {correct / labelled:.4f} from both; "
              f"goal < 10 s: {'met' if a < 10 else 'NOT met'}")
        # the Job's own command, as a process: its peak memory sizes the quality role's defaults
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "mlops_operator.cli", "quality", "--captured", str(root)],
                       check=True, capture_output=True)
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(f"mlops quality as a process: {time.perf_counter() - t:.2f} s with its imports, peak RSS {peak:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
