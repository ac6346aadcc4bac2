"""Drift statistics from counts, checked against direct computations and scipy; snapshot
arithmetic checked with property-based tests."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as scipy_stats

from mlops_operator.drift import sketch
from mlops_operator.drift import stats as s
from mlops_operator.runtime.profile import Counts, numeric


def test_psi_equals_the_direct_formula_with_the_epsilon_for_empty_bins() -> None:
    ref, live = [50, 30, 20, 0], [20, 30, 40, 10]
    p = [max(c / 100, 1e-4) for c in ref]
    q = [max(c / 100, 1e-4) for c in live]
    direct = sum((b - a) * math.log(b / a) for a, b in zip(p, q, strict=True))
    assert s.psi(ref, live) == pytest.approx(direct)
    assert s.psi(ref, ref) == 0
    assert s.psi([1, 1], [1, 1]) == 0 and s.psi([0, 0], [1, 0]) > 0


@pytest.mark.parametrize("seed", range(5))
def test_chi2_matches_scipy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    ref, live = rng.integers(0, 300, 12), rng.integers(0, 300, 12)
    ref[3] = live[3] = 0  # a bin empty on both sides is left out, as scipy requires
    keep = (ref + live) > 0
    expected_stat, expected_p, dof, _ = scipy_stats.chi2_contingency(np.vstack([ref[keep], live[keep]]),
                                                                    correction=False)
    stat, p = s.chi2(ref.tolist(), live.tolist())
    assert stat == pytest.approx(expected_stat) and dof == keep.sum() - 1
    assert p == pytest.approx(expected_p, rel=1e-9, abs=1e-300)


@pytest.mark.parametrize("dof", [1, 2, 3, 7, 20, 99])
@pytest.mark.parametrize("x", [0.01, 0.5, 2.0, 9.0, 35.0, 150.0])
def test_chi2_survival_function_matches_scipy(dof: int, x: float) -> None:
    assert s.chi2_sf(x, dof) == pytest.approx(scipy_stats.chi2.sf(x, dof), rel=1e-8, abs=1e-300)


@pytest.mark.parametrize("x", [0.1, 0.4, 0.8, 1.2, 1.9, 3.0])
def test_kolmogorov_distribution_matches_scipy(x: float) -> None:
    assert s.kolmogorov_sf(x) == pytest.approx(scipy_stats.kstwobign.sf(x), abs=1e-9)


@pytest.mark.parametrize("shift", [0.0, 0.05, 0.3, 1.0])
def test_binned_ks_is_close_to_ks_2samp_on_the_raw_samples(shift: float) -> None:
    rng = np.random.default_rng(1)
    reference = rng.normal(size=20_000)
    live = rng.normal(loc=shift, size=5_000)
    dist = numeric("x", reference, bins=20)
    counts = Counts(dist)
    counts.add(live)
    d, p = s.ks(dist.counts, counts.counts)
    raw = scipy_stats.ks_2samp(reference, live)
    # stated tolerance: 20 quantile bins lose at most the distance inside one bin (about 1/20 of the
    # mass); the statistic never exceeds the raw one, and the verdict at 1 % agrees
    assert d <= raw.statistic + 1e-9
    assert raw.statistic - d <= 0.05
    assert (p < 0.01) == (raw.pvalue < 0.01)


@given(st.lists(st.integers(0, 500), min_size=1, max_size=150), st.data())
@settings(max_examples=200, deadline=None)
def test_coarsen_merges_neighbours_keeping_every_count(reference: list[int], data: st.DataObject) -> None:
    live = data.draw(st.lists(st.integers(0, 500), min_size=len(reference), max_size=len(reference)))
    ref_groups, live_groups = s.coarsen(reference, live)
    assert sum(ref_groups) == sum(reference) and sum(live_groups) == sum(live)
    assert len(ref_groups) == len(live_groups) <= s.PSI_GROUPS + 1  # + the bins the reference never saw
    if len(reference) <= s.PSI_GROUPS:
        assert (ref_groups, live_groups) == (reference, live)


def test_coarsen_makes_ten_equal_mass_groups_of_a_hundred_quantile_bins() -> None:
    reference, live = [200] * 100, list(range(100))
    ref_groups, live_groups = s.coarsen(reference, live)
    assert ref_groups == [2000] * 10
    assert live_groups == [sum(range(i, i + 10)) for i in range(0, 100, 10)]


def test_psi_on_a_hundred_bins_keeps_the_noise_floor_of_ten() -> None:
    """PSI's thresholds assume about ten bins: on 100 fine bins, 500 unchanged rows would score about 0.2 (the
    default threshold); grouped, the score is what ten bins give, and a real shift still scores high."""
    rng = np.random.default_rng(3)
    dist = numeric("x", rng.normal(size=20_000), bins=100)
    same, fine = [], []
    for _ in range(40):
        counts = Counts(dist)
        counts.add(rng.normal(size=500))
        fine.append(s.psi(dist.counts, counts.counts))
        same.append(s.psi(*s.coarsen(dist.counts, counts.counts)))
    shifted = Counts(dist)
    shifted.add(rng.normal(loc=0.5, size=500))
    assert float(np.mean(fine)) > 0.15  # what grouping avoids
    assert max(same) < 0.1 and float(np.mean(same)) < 0.03
    assert s.psi(*s.coarsen(dist.counts, shifted.counts)) > 0.2


def test_empty_sides_mean_no_evidence() -> None:
    assert s.ks([0, 0], [1, 2]) == (0.0, 1.0)
    assert s.chi2([5, 0], [0, 0]) == (0.0, 1.0)
    assert s.bonferroni(0.05, 10) == pytest.approx(0.005)


# -- snapshots

BINS = 4


def snapshots(start: float = 1.0) -> st.SearchStrategy[dict]:
    counts = st.lists(st.integers(0, 1000), min_size=BINS, max_size=BINS)
    dist = st.fixed_dictionaries({"counts": counts, "missing": st.integers(0, 50), "other": st.integers(0, 50)})
    return st.fixed_dictionaries({
        "startTime": st.just(start), "profileDigest": st.just("sha256:p"),
        "requests": st.integers(0, 10_000), "errors": st.integers(0, 100), "rows": st.integers(0, 10_000),
        "latency": st.fixed_dictionaries({"buckets": st.just([0.1, 1.0]),
                                          "counts": st.lists(st.integers(0, 100), min_size=3, max_size=3),
                                          "sum": st.integers(0, 100).map(float)}),
        "features": st.tuples(dist, dist).map(lambda ds: [{"name": "a", **ds[0]}, {"name": "b", **ds[1]}]),
        "prediction": dist,
    })


def plus(a: dict, b: dict) -> dict:
    merged = sketch.merge([a, b])
    assert merged is not None
    return {**merged, "startTime": a["startTime"], "profileDigest": a["profileDigest"]}


def strip(x: dict) -> dict:
    return {k: v for k, v in x.items() if k not in ("startTime", "profileDigest")}


@settings(max_examples=60, deadline=None)
@given(snapshots(), snapshots(), snapshots())
def test_merge_is_commutative_and_associative(a: dict, b: dict, c: dict) -> None:
    assert sketch.merge([a, b]) == sketch.merge([b, a])
    assert sketch.merge([plus(a, b), c]) == sketch.merge([a, plus(b, c)]) == sketch.merge([a, b, c])


@settings(max_examples=60, deadline=None)
@given(snapshots(), snapshots())
def test_diff_of_a_later_snapshot_is_what_was_counted_in_between(before: dict, window: dict) -> None:
    after = plus(before, window)
    assert sketch.diff(after, before) == strip(sketch.merge([window]))


@settings(max_examples=30, deadline=None)
@given(snapshots(start=1.0), snapshots(start=2.0))
def test_a_restarted_pod_counts_from_zero(before: dict, after_restart: dict) -> None:
    # the counters went down (a new process): the whole new snapshot is the window, nothing negative
    assert sketch.diff(after_restart, before) == strip(sketch.merge([after_restart]))
    assert sketch.diff(after_restart, None) == strip(sketch.merge([after_restart]))


def test_snapshots_of_different_profiles_do_not_combine() -> None:
    a = {"features": [{"name": "a", "counts": [1, 2], "missing": 0, "other": 0}], "prediction": None}
    b = {"features": [{"name": "a", "counts": [1, 2, 3], "missing": 0, "other": 0}], "prediction": None}
    with pytest.raises(ValueError, match="different reference profiles"):
        sketch.merge([a, b])
