"""Drift benchmark: evaluating a window from sketches vs from raw data, on the same data.

    python bench/drift_bench.py [--features 100] [--reference 100000] [--window 1000000] [--shifted 10]
                                [--power-trials 200]

Data: `--features` numeric features, a reference of `--reference` rows from N(0, 1), a live window
of `--window` rows of which `--shifted` features moved by +0.5 standard deviations. Measured side
by side in one run:

  * counting the window into sketches, as the server does per request (reported per row);
  * one DriftPolicy evaluation from sketches, as the operator does it: four pods' cumulative
    snapshots diffed against the previous scrape and merged, then every feature tested (PSI, and
    the p-value tests chi2 and binned KS, each on all features), median of repeated runs;
  * scipy.stats.ks_2samp on the raw reference and window, every feature;
  * Evidently's data-drift report with PSI on the raw data (from its own virtual environment under
    $MLOPS_BENCH_VENVS/evidently: `pip install evidently==0.7.23 'pandas<2.3'`; skipped when absent).

Prints the times, the ratios, and which features each method called drifted (they should be the
shifted ones); the memory a Pod's counters take and the bytes a monitoring snapshot and a DriftPolicy's kept
window take per Pod; and a power table: how often (of `--power-trials` windows, 20,000 rows a side, one feature,
alpha 0.05) the binned KS test finds subtle shifts at the old 10 bins and at the profile's DEFAULT_BINS, against
scipy's ks_2samp on the raw samples (the goal: within 5 points of it everywhere, no more false alarms).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))

from mlops_operator.api.driftpolicy import DriftPolicySpec
from mlops_operator.drift import evaluate, sketch
from mlops_operator.runtime import profile as profiles

VENVS = Path(os.environ.get("MLOPS_BENCH_VENVS", Path.home() / ".cache/mlops-operator/bench-venvs"))
SHIFT = 0.5

EVIDENTLY = textwrap.dedent('''
    import json, sys, time
    import numpy as np, pandas as pd
    from evidently import Report
    from evidently.presets import DataDriftPreset
    data = np.load(sys.argv[1])
    cols = [f"f{i}" for i in range(data["reference"].shape[1])]
    ref, cur = pd.DataFrame(data["reference"], columns=cols), pd.DataFrame(data["window"], columns=cols)
    started = time.perf_counter()
    result = Report([DataDriftPreset(method="psi")]).run(cur, ref)
    took = time.perf_counter() - started
    found = [m["config"]["column"] for m in result.dict()["metrics"]
             if (m.get("config") or {}).get("type", "").endswith("ValueDrift")
             and m["value"] >= m["config"]["threshold"]]
    print(json.dumps({"seconds": took, "drifted": sorted(found, key=lambda c: int(c[1:]))}))
''')


def counted(window: np.ndarray, reference_profile: Any) -> dict[str, Any]:
    features = []
    for j, d in enumerate(reference_profile.features):
        c = profiles.Counts(d)
        c.add(window[:, j])
        features.append({"name": d.name, **c.snapshot()})
    return {"rows": len(window), "requests": len(window), "errors": 0, "features": features, "prediction": None,
            "latency": {"buckets": [], "counts": [], "sum": 0.0}}


def pods(window: np.ndarray, earlier: np.ndarray,
         reference_profile: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Four pods' previous and current cumulative snapshots, whose differences are the window."""
    previous, current = [], []
    for i, (q, e) in enumerate(zip(np.array_split(window, 4), np.array_split(earlier, 4), strict=True)):
        before = counted(e, reference_profile)  # what each pod had counted at the last scrape
        after = sketch.merge([before, counted(q, reference_profile)])
        assert after is not None
        for snap in (before, after):
            snap["startTime"], snap["profileDigest"] = f"pod{i}", "p"
        previous.append(before)
        current.append(after)
    return previous, current


POWER_GRID = [("no shift", 0.0, 1.0), ("mean +0.02 sd", 0.02, 1.0), ("mean +0.05 sd", 0.05, 1.0),
              ("mean +0.1 sd", 0.1, 1.0), ("scale x1.05", 0.0, 1.05), ("scale x1.1", 0.0, 1.1)]
POWER_ROWS = 20_000
POWER_ALPHA = 0.05


def power(trials: int) -> float:
    """The power table; returns the largest shortfall of the DEFAULT_BINS binned KS against raw KS, in points."""
    from scipy import stats as scipy_stats

    from mlops_operator.drift import stats

    rng = np.random.default_rng(7)
    resolutions = sorted({10, profiles.DEFAULT_BINS})
    print(f"power: share of {trials} windows found drifted (KS, alpha {POWER_ALPHA}, {POWER_ROWS:,} rows a side)")
    print(f"  {'shift':14} {'raw ks_2samp':>12} " + " ".join(f"{f'{b} bins':>9}" for b in resolutions)
          + f" {'gap at ' + str(profiles.DEFAULT_BINS):>10}")
    worst = 0.0
    for name, shift, scale in POWER_GRID:
        found = {"raw": 0, **{b: 0 for b in resolutions}}
        for _ in range(trials):
            reference, live = rng.normal(0, 1, POWER_ROWS), rng.normal(shift, scale, POWER_ROWS)
            found["raw"] += scipy_stats.ks_2samp(reference, live).pvalue < POWER_ALPHA
            for bins in resolutions:
                dist = profiles.numeric("x", reference, bins)
                counts = profiles.Counts(dist)
                counts.add(live)
                found[bins] += stats.ks(dist.counts, counts.counts)[1] < POWER_ALPHA
        share = {k: 100.0 * v / trials for k, v in found.items()}
        gap = share["raw"] - share[profiles.DEFAULT_BINS] if shift or scale != 1.0 else \
            share[profiles.DEFAULT_BINS] - share["raw"]  # no shift: more false alarms would be the shortfall
        worst = max(worst, gap)
        print(f"  {name:14} {share['raw']:>11.1f}% " + " ".join(f"{share[b]:>8.1f}%" for b in resolutions)
              + f" {gap:>+9.1f}")
    return worst


def footprint(reference_profile: Any, snapshot: dict[str, Any]) -> None:
    """What a Pod's counters take in memory, and a snapshot's bytes on the wire and in the kept window."""
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    kept = [profiles.Counts(d) for d in reference_profile.features]
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    held = sum(s.size_diff for s in after.compare_to(before, "filename"))
    wire = len(json.dumps(snapshot).encode())
    packed = len(gzip.compress(json.dumps(snapshot).encode(), mtime=0))
    print(f"a Pod's counters for {len(kept)} features of {profiles.DEFAULT_BINS} bins: {held / 1024:.0f} KiB; "
          f"its monitoring snapshot {wire / 1024:.0f} KiB of JSON, {packed / 1024:.0f} KiB gzipped in the "
          "DriftPolicy's window ConfigMap (1 MiB: room for about "
          f"{int((1 << 20) * 3 / 4 / packed) - 1} Pods' snapshots, base64)")


def drifted_names(ev: Any) -> list[str]:
    return [f.name for f in ev.features or () if f.drifted]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", type=int, default=100)
    parser.add_argument("--reference", type=int, default=100_000)
    parser.add_argument("--window", type=int, default=1_000_000)
    parser.add_argument("--shifted", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--power-trials", type=int, default=200, help="windows per shift in the power table")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    reference = rng.normal(0, 1, (args.reference, args.features))
    window = rng.normal(0, 1, (args.window, args.features))
    window[:, : args.shifted] += SHIFT
    truth = [f"f{i}" for i in range(args.shifted)]
    print(f"{args.features} features, reference {args.reference:,} rows, window {args.window:,} rows, "
          f"{args.shifted} features shifted by {SHIFT} sd")

    started = time.perf_counter()
    ref_profile = profiles.build({f"f{i}": ("numeric", reference[:, i]) for i in range(args.features)}, None)
    print(f"reference profile (bins from training quantiles): {time.perf_counter() - started:.2f} s, once per model")

    started = time.perf_counter()
    counted(window[:100_000], ref_profile)
    per_row = (time.perf_counter() - started) / 100_000 * 1e6
    print(f"counting into sketches (numpy batches of 100,000 rows): {per_row:.2f} µs per row of "
          f"{args.features} features")

    previous, current = pods(window, rng.normal(0, 1, (40_000, args.features)), ref_profile)
    base = {"targetRef": {"name": "m"}, "window": {"minSamples": 1}, "driftShare": "0.05"}
    specs = {test: DriftPolicySpec.model_validate({
        **base, "features": [{"name": f"f{i}", "test": test} for i in range(args.features)],
        "correction": "bonferroni"}) for test in ("psi", "chi2", "ks")}
    timings: dict[str, float] = {}
    verdicts: dict[str, list[str]] = {}
    for test, spec in specs.items():
        runs = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            merged = sketch.merge(sketch.diff(c, p) for c, p in zip(current, previous, strict=True))
            ev = evaluate.evaluate(spec, ref_profile, merged, "t")
            runs.append(time.perf_counter() - started)
        timings[test] = statistics.median(runs) * 1000
        verdicts[test] = drifted_names(ev)
        assert merged is not None and merged["rows"] == args.window
    total = sum(timings.values())
    print(f"evaluation from sketches (4 pods diffed and merged, {args.features} features): "
          + ", ".join(f"{t} {ms:.2f} ms" for t, ms in timings.items()) + f"; all three tests {total:.2f} ms")

    from scipy import stats as scipy_stats

    started = time.perf_counter()
    alpha = 0.05 / args.features
    scipy_drifted = [f"f{i}" for i in range(args.features)
                     if scipy_stats.ks_2samp(reference[:, i], window[:, i]).pvalue < alpha]
    scipy_seconds = time.perf_counter() - started
    print(f"scipy ks_2samp on the raw data: {scipy_seconds:.2f} s "
          f"({scipy_seconds * 1000 / timings['ks']:.0f}x the sketch KS evaluation)")

    evidently = VENVS / "evidently" / "bin" / "python"
    evidently_result: dict[str, Any] | None = None
    if evidently.exists():
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp) / "data.npz"
            np.savez(data, reference=reference, window=window)
            script = Path(tmp) / "ev.py"
            script.write_text(EVIDENTLY)
            proc = subprocess.run([str(evidently), str(script), str(data)], capture_output=True, text=True)
            if proc.returncode == 0:
                evidently_result = json.loads(proc.stdout.strip().splitlines()[-1])
                print(f"Evidently data-drift report (PSI) on the raw data: {evidently_result['seconds']:.1f} s "
                      f"({evidently_result['seconds'] * 1000 / total:.0f}x all three sketch evaluations)")
            else:
                print(f"Evidently failed: {proc.stderr.strip()[-500:]}")
    else:
        print(f"Evidently: skipped ({evidently} not found; python -m venv {evidently.parent.parent} && "
              f"{evidently.parent}/pip install evidently==0.7.23 'pandas<2.3')")

    footprint(ref_profile, current[0])
    print("features called drifted (expected: " + ", ".join(truth) + "):")
    rows = [(f"sketch {t}", v) for t, v in verdicts.items()] + [("scipy ks_2samp", scipy_drifted)]
    if evidently_result is not None:
        rows.append(("Evidently PSI", evidently_result["drifted"]))
    for name, found in rows:
        print(f"  {name:16} {'agrees' if found == truth else 'differs'}: {', '.join(found) or '-'}")
    worst = power(args.power_trials)
    print(f"largest shortfall of the binned KS at {profiles.DEFAULT_BINS} bins against raw KS: {worst:.1f} points "
          f"(goal: at most 5); evaluation per test {max(timings.values()):.2f} ms over {args.features} features "
          "(goal: under 5 ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
