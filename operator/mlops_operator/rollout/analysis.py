"""Verdicts of the analysis: the champion-vs-challenger report of `mlops analyze`, and live counters
scraped from the candidate's pods (diffed against the counters when the window began). Pure."""

from __future__ import annotations

import datetime
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from ..api import times
from ..api.artifacts import LATENCY_BUCKETS
from ..api.binned import coarsen, psi
from ..api.modeldeployment import Analysis, LiveQuality, LiveQualityAnalysis, MirrorCounters, PodCounters, Shadow
from ..api.quality import HIGHER_IS_BETTER
from ..api.reports import LOWER_IS_BETTER, AnalysisReport


@dataclass
class Verdict:
    passed: bool
    message: str
    measurements: dict[str, float] = field(default_factory=dict)


def _num(value: Decimal | float) -> str:
    return f"{float(value):.4g}"


def higher_is_better(analysis: Analysis) -> bool:
    compare = analysis.compare_to_stable
    assert compare is not None
    if compare.higher_is_better is not None:
        return compare.higher_is_better
    return compare.metric not in LOWER_IS_BETTER


def _rate_and_latency(analysis: Analysis, requests: int, errors: int, p99_ms: float | None,
                      where: str) -> list[str]:
    failed = []
    if analysis.success_rate is not None and requests:
        rate = Decimal(requests - errors) / Decimal(requests)
        if rate < Decimal(analysis.success_rate):
            failed.append(f"{where}success rate {_num(rate)} < {analysis.success_rate} "
                          f"({errors} errors in {requests} requests)")
    if analysis.max_p99_latency_ms is not None and p99_ms is not None and p99_ms > analysis.max_p99_latency_ms:
        failed.append(f"{where}p99 latency {_num(p99_ms)} ms > {analysis.max_p99_latency_ms} ms")
    return failed


def _judge(analysis: Analysis, failed_windows: list[str], windows: int, hard: list[str],
           measurements: dict[str, float], summary: str) -> Verdict:
    failures = []  # the service checks first, then the model's
    if len(failed_windows) > analysis.failure_limit:
        failures.append(f"{len(failed_windows)} of {windows} measurements failed (failureLimit "
                        f"{analysis.failure_limit}): {failed_windows[0]}")
    failures += hard
    if failures:
        return Verdict(False, "; ".join(failures) + f" [{summary}]", measurements)
    return Verdict(True, summary, measurements)


def judge_report(report: AnalysisReport, analysis: Analysis) -> Verdict:
    """The champion-vs-challenger verdict (absolute checks only when there is no champion)."""
    cand, stable = report.candidate, report.stable
    m: dict[str, float] = {"candidateRequests": cand.requests, "candidateErrors": cand.errors}
    if cand.p99_ms is not None:
        m["candidateP99Ms"] = cand.p99_ms
    for k, v in cand.metrics.items():
        m[f"candidate.{k}"] = v
    if stable is not None:
        m.update({"stableRequests": stable.requests, "stableErrors": stable.errors})
        if stable.p99_ms is not None:
            m["stableP99Ms"] = stable.p99_ms
        for k, v in stable.metrics.items():
            m[f"stable.{k}"] = v
    hard = []
    if cand.requests < analysis.min_requests:
        hard.append(f"{cand.requests} requests < minRequests {analysis.min_requests}")
    if not cand.requests:
        hard.append(f"no request was answered: {cand.error or 'the replay sent nothing'}")
    elif cand.errors == cand.requests:
        hard.append(f"every one of {cand.requests} requests failed: {cand.error or 'no answer'}")
    windows = cand.windows or []
    failed_windows = [f"window {i + 1}: " + "; ".join(f) for i, w in enumerate(windows)
                      if (f := _rate_and_latency(analysis, w.requests, w.errors, w.p99_ms, ""))]
    if not windows:  # the detail was dropped to fit the message: judge the totals as one window
        failed_windows = _rate_and_latency(analysis, cand.requests, cand.errors, cand.p99_ms, "")
    summary = f"candidate: {cand.requests} requests, {cand.errors} errors, p99 {_num(cand.p99_ms or 0)} ms"
    compare = analysis.compare_to_stable
    if compare is not None:
        metric = compare.metric
        value = cand.metrics.get(metric)
        if value is None:
            hard.append(f"the candidate's {metric} could not be measured ({report.task} models report "
                        f"{', '.join(sorted(cand.metrics)) or 'nothing when every request fails'})")
        else:
            summary += f", {metric} {_num(value)}"
            champion = stable.metrics.get(metric) if stable is not None else None
            if champion is not None:
                worse = Decimal(repr(champion)) - Decimal(repr(value)) if higher_is_better(analysis) \
                    else Decimal(repr(value)) - Decimal(repr(champion))
                m["degradation"] = float(worse)
                summary += f" vs stable {_num(champion)}"
                if worse > Decimal(compare.max_degradation):
                    hard.append(f"{metric} {_num(value)} is worse than the stable revision's {_num(champion)} by "
                                f"{_num(worse)} (maxDegradation {compare.max_degradation})")
            elif stable is None:
                summary += " (first version: no champion to compare with)"
    return _judge(analysis, failed_windows, max(1, len(windows)), hard, m, summary)


# -- live traffic: the monitoring endpoint's cumulative counters, per pod

def counters(snapshot: Mapping[str, Any], revision: str | None = None, sketch: bool = False) -> PodCounters:
    """A pod's monitoring snapshot as counters (with `sketch`, its prediction sketch too)."""
    latency = snapshot.get("latency") or {}
    started = snapshot.get("startTime")
    mirrored = snapshot.get("mirror")
    mirror = None
    if isinstance(mirrored, Mapping):
        mirror = MirrorCounters(**{k: int(mirrored.get(k) or 0) for k in ("sent", "dropped", "errors", "rows",
                                                                           "agreed")},
                                latency=list((mirrored.get("latency") or {}).get("counts") or []))
    prediction = snapshot.get("prediction") if sketch else None
    return PodCounters(start_time=None if started is None else str(started),
                       requests=int(snapshot.get("requests") or 0), errors=int(snapshot.get("errors") or 0),
                       latency=list(latency.get("counts") or []), mirror=mirror, revision=revision,
                       prediction=[*map(int, prediction.get("counts") or []), int(prediction.get("missing") or 0),
                                   int(prediction.get("other") or 0)] if isinstance(prediction, Mapping) else None)


def window_totals(baseline: Mapping[str, PodCounters], now: Mapping[str, PodCounters]) -> tuple[int, int, list[int]]:
    """Requests, errors and latency bucket counts since the baseline, summed over pods. A pod that
    restarted (another start time) or appeared counts from zero; a pod that went away adds nothing."""
    requests = errors = 0
    buckets = [0] * (len(LATENCY_BUCKETS) + 1)
    for pod, c in now.items():
        base = baseline.get(pod)
        if base is None or base.start_time != c.start_time or base.requests > c.requests:
            base = PodCounters(start_time=c.start_time)
        requests += c.requests - base.requests
        errors += c.errors - base.errors
        before = base.latency or [0] * len(buckets)
        for i, n in enumerate((c.latency or [])[: len(buckets)]):
            buckets[i] += n - (before[i] if i < len(before) else 0)
    return requests, errors, buckets


MIRROR_COUNTS = ("sent", "dropped", "errors", "rows", "agreed")


def mirror_totals(baseline: Mapping[str, PodCounters], now: Mapping[str, PodCounters]) -> tuple[dict[str, int],
                                                                                              list[int]]:
    """What the pods mirrored since the baseline (MIRROR_COUNTS and the candidate's latency buckets), summed
    over pods as `window_totals` sums theirs."""
    totals = dict.fromkeys(MIRROR_COUNTS, 0)
    buckets = [0] * (len(LATENCY_BUCKETS) + 1)
    for pod, c in now.items():
        m = c.mirror or MirrorCounters()
        base = baseline.get(pod)
        before = base.mirror if base is not None and base.start_time == c.start_time and base.mirror else None
        if before is None or before.sent > m.sent:
            before = MirrorCounters()
        for k in MIRROR_COUNTS:
            totals[k] += getattr(m, k) - getattr(before, k)
        for i, n in enumerate((m.latency or [])[: len(buckets)]):
            buckets[i] += n - ((before.latency or [])[i] if i < len(before.latency or []) else 0)
    return totals, buckets


def judge_shadow(shadow: Shadow, analysis: Analysis | None, baseline: Mapping[str, PodCounters],
                 now: Mapping[str, PodCounters]) -> Verdict:
    """A shadow candidate, from the stable pods' mirror counters over the shadow window: enough answered
    mirrored requests, agreement with the stable revision's answers on at least `agreement.min` of the compared
    rows, and (with spec.analysis) the candidate's success rate and p99 as seen by the mirror."""
    t, buckets = mirror_totals(baseline, now)
    answered = t["sent"] - t["errors"]
    p99 = p99_from_buckets(buckets)
    share = Decimal(t["agreed"]) / Decimal(t["rows"]) if t["rows"] else None
    m: dict[str, float] = {"mirrored": t["sent"], "mirrorDropped": t["dropped"], "candidateErrors": t["errors"],
                           "comparedRows": t["rows"], "agreedRows": t["agreed"]}
    if share is not None:
        m["agreement"] = float(share)
    if p99 is not None:
        m["candidateP99Ms"] = p99
    summary = (f"shadow: {t['sent']} requests mirrored ({t['dropped']} dropped), {t['errors']} failed by the "
               f"candidate; it agreed on {t['agreed']} of {t['rows']} rows"
               + (f" ({_num(share)}, at least {shadow.agreement.min})" if share is not None else ""))
    failed = []
    if answered < shadow.min_requests:
        failed.append(f"{answered} mirrored requests answered by the candidate < minRequests {shadow.min_requests}")
    if share is not None and share < Decimal(shadow.agreement.min):
        failed.append(f"agreement {_num(share)} < {shadow.agreement.min}")
    if analysis is not None:
        failed += _rate_and_latency(analysis, t["sent"], t["errors"], p99, "candidate ")
    if failed:
        return Verdict(False, "; ".join(failed) + f" [{summary}]", m)
    return Verdict(True, summary, m)


def _sketch_totals(baseline: Mapping[str, PodCounters], now: Mapping[str, PodCounters]) -> list[int]:
    """The prediction sketch's counts since the baseline, summed over pods (a restarted pod from zero)."""
    total: list[int] = []
    for pod, c in now.items():
        counts = c.prediction or []
        base = baseline.get(pod)
        before = base.prediction if base is not None and base.start_time == c.start_time and base.prediction and \
            len(base.prediction) == len(counts) else None
        window = [n - (before[i] if before else 0) for i, n in enumerate(counts)]
        total = [a + b for a, b in zip(total, window, strict=True)] if total and len(total) == len(window) else \
            (total or window)
    return total


def judge_shadow_sketches(shadow: Shadow, analysis: Analysis | None, baseline: Mapping[str, PodCounters],
                          now: Mapping[str, PodCounters], stable: str, candidate: str) -> Verdict:
    """A shadow candidate whose traffic a gateway mirrored (HTTPRoute RequestMirror: the answers are discarded,
    none can be compared with the stable's): enough requests answered, and the Population Stability Index between
    the two revisions' prediction sketches over the same window at most `agreement.maxPsi` (and, with
    spec.analysis, the candidate's own success rate and p99)."""
    def window(rev: str) -> tuple[int, int, list[int], list[int]]:
        pods = {p: c for p, c in now.items() if c.revision == rev}
        before = {p: c for p, c in baseline.items() if c.revision == rev}
        requests, errors, buckets = window_totals(before, pods)
        return requests, errors, buckets, _sketch_totals(before, pods)

    requests, errors, buckets, theirs = window(candidate)
    stable_requests, _, _, ours = window(stable)
    p99 = p99_from_buckets(buckets)
    m: dict[str, float] = {"candidateRequests": requests, "candidateErrors": errors, "stableRequests": stable_requests}
    if p99 is not None:
        m["candidateP99Ms"] = p99
    score = None
    if sum(ours) and sum(theirs) and len(ours) == len(theirs):
        score = psi(*coarsen(ours, theirs))
        m["predictionPsi"] = score
    summary = (f"shadow mirrored by the HTTPRoute (the gateway discards the candidate's answers: agreement is "
               f"judged from the two revisions' prediction sketches): the candidate answered {requests - errors} of "
               f"{requests} requests, the stable revision {stable_requests}"
               + (f"; prediction PSI {_num(score)} (at most {shadow.agreement.max_psi})" if score is not None else ""))
    failed = []
    if requests - errors < shadow.min_requests:
        failed.append(f"{requests - errors} mirrored requests answered by the candidate < minRequests "
                      f"{shadow.min_requests}")
    if score is None:
        failed.append("no prediction sketch of both revisions over the window to compare")
    elif score > float(Decimal(shadow.agreement.max_psi)):
        failed.append(f"prediction PSI {_num(score)} > maxPsi {shadow.agreement.max_psi}")
    if analysis is not None:
        failed += _rate_and_latency(analysis, requests, errors, p99, "candidate ")
    if failed:
        return Verdict(False, "; ".join(failed) + f" [{summary}]", m)
    return Verdict(True, summary, m)


def p99_from_buckets(buckets: list[int]) -> float | None:
    """The upper bound (ms) of the bucket holding the 99th percentile (None without requests;
    the last bucket is open: its lower bound is reported)."""
    total = sum(buckets)
    if not total:
        return None
    seen = 0
    for i, n in enumerate(buckets):
        seen += n
        if seen >= 0.99 * total:
            bound = LATENCY_BUCKETS[min(i, len(LATENCY_BUCKETS) - 1)]
            return bound * 1000
    return LATENCY_BUCKETS[-1] * 1000


def judge_live(analysis: Analysis, baseline: Mapping[str, PodCounters], now: Mapping[str, PodCounters]) -> Verdict:
    requests, errors, buckets = window_totals(baseline, now)
    p99 = p99_from_buckets(buckets)
    m: dict[str, float] = {"requests": requests, "errors": errors}
    if p99 is not None:
        m["p99Ms"] = p99
    failed = _rate_and_latency(analysis, requests, errors, p99, "")
    if requests < analysis.min_requests:
        failed.append(f"{requests} requests < minRequests {analysis.min_requests}")
    source = "Prometheus" if analysis.prometheus is not None else "pods"
    summary = f"live ({source}): {requests} requests, {errors} errors" + \
        (f", p99 ≤ {_num(p99)} ms" if p99 is not None else "")
    if failed:
        return Verdict(False, "; ".join(failed) + f" [{summary}]", m)
    return Verdict(True, summary, m)


# -- the same counters from Prometheus (analysis.prometheus), which scraped the pods' /metrics

def prometheus_queries(namespace: str, deployment: str) -> dict[str, str]:
    """Instant queries for every pod of one revision's Deployment (Prometheus adds `namespace` and
    `pod` to what it scrapes from Kubernetes pods, as kubernetes_sd relabeling usually does)."""
    match = f'namespace="{namespace}",pod=~"{deployment}-.+"'
    return {
        "start": f"max by (pod) (mlops_start_time_seconds{{{match}}})",
        # calls that were not a client's mistake (4xx): nothing a client sends can fail a good version
        "requests": f'sum by (pod) (mlops_requests_total{{{match},code!~"4.."}})',
        "errors": f"sum by (pod) (mlops_request_errors_total{{{match}}})",
        "buckets": f"sum by (pod, le) (mlops_request_duration_seconds_bucket{{{match}}})",
        # what the pods mirrored to a shadow candidate (runtime/mirror.py)
        **{f"mirror.{k}": f"sum by (pod) (mlops_mirror_{name}_total{{{match}}})" for k, name in MIRROR_SERIES.items()},
        "mirror.buckets": f"sum by (pod, le) (mlops_mirror_duration_seconds_bucket{{{match}}})",
    }


MIRROR_SERIES = {"sent": "sent", "dropped": "dropped", "errors": "errors", "rows": "rows", "agreed": "agreed_rows"}


def _per_bucket(by_bound: Mapping[float, float]) -> list[int]:
    """Cumulative buckets (le) back into per-bucket counts; a bound Prometheus did not return holds what the one
    below it holds."""
    running: list[int] = []
    for b in [*LATENCY_BUCKETS, float("inf")]:
        held = by_bound.get(b)
        running.append(int(held) if held is not None else (running[-1] if running else 0))
    return [running[0]] + [max(0, b - a) for a, b in itertools.pairwise(running)]


def counters_from_prometheus(answers: Mapping[str, Any]) -> dict[str, PodCounters]:
    """Per-pod counters from the answers (Prometheus HTTP API JSON) to `prometheus_queries`."""
    def vector(name: str) -> list[tuple[dict[str, str], float]]:
        data = (answers.get(name) or {}).get("data") or {}
        return [(r.get("metric") or {}, float(r["value"][1])) for r in data.get("result") or ()]

    out: dict[str, PodCounters] = {}
    for labels, value in vector("requests"):
        out[labels["pod"]] = PodCounters(requests=int(value))
    for labels, value in vector("start"):
        if labels.get("pod") in out:
            out[labels["pod"]].start_time = repr(value)
    for labels, value in vector("errors"):
        if labels.get("pod") in out:
            out[labels["pod"]].errors = int(value)
    def buckets(name: str) -> dict[str, list[int]]:
        cumulative: dict[str, dict[float, float]] = {}
        for labels, value in vector(name):
            if labels.get("pod") in out:
                cumulative.setdefault(labels["pod"], {})[float(labels["le"])] = value
        return {pod: _per_bucket(by_bound) for pod, by_bound in cumulative.items()}

    for pod, counts in buckets("buckets").items():
        out[pod].latency = counts
    for k in MIRROR_SERIES:
        for labels, value in vector(f"mirror.{k}"):
            if labels.get("pod") in out:
                mirror = out[labels["pod"]].mirror = out[labels["pod"]].mirror or MirrorCounters()
                setattr(mirror, k, int(value))
    for pod, counts in buckets("mirror.buckets").items():
        if out[pod].mirror is not None:
            out[pod].mirror.latency = counts  # type: ignore[union-attr]
    return out


# -- live quality (analysis.liveQuality): the joins of ground-truth labels, candidate against stable

def judge_quality(check: LiveQualityAnalysis, live: LiveQuality | None, candidate: str, stable: str | None,
                  due: datetime.datetime, now: datetime.datetime) -> Verdict | None:
    """The candidate's live quality against the stable revision's over the same window, from a join made after
    the step ended (`due`); None to wait for one, or for `minLabels`, until `maxWaitSeconds` past `due`: then the
    step fails (too few labels never passes)."""
    give_up = due + datetime.timedelta(seconds=check.max_wait_seconds)
    joined = times.parse_or_none(live.time) if live is not None else None
    if live is None or joined is None or joined < due:
        if now < give_up:
            return None
        return Verdict(False, f"live quality: no join of the labels since the step ended ({check.max_wait_seconds} s "
                              "ago; see status.liveQuality)")
    revisions = {r.revision: r for r in live.revisions or ()}
    mine, theirs = revisions.get(candidate), revisions.get(stable) if stable else None
    short = [f"{who} has {r.labelled if r else 0} labelled rows" for who, r in (("candidate", mine),
                                                                               ("stable", theirs))
             if (who == "candidate" or stable) and (r is None or r.labelled < check.min_labels)]
    if short:
        if now < give_up:
            return None
        return Verdict(False, f"live quality: {' and '.join(short)} after {check.max_wait_seconds} s, fewer "
                              f"than minLabels {check.min_labels}",
                       {"liveLabels": float(mine.labelled if mine else 0)})
    assert mine is not None
    metric = check.metric
    ours = (mine.metrics or {}).get(metric)
    if ours is None:
        return Verdict(False, f"live quality: the candidate's labels give no {metric} "
                              f"({', '.join(mine.metrics or {}) or 'none'})")
    m = {"liveLabels": float(mine.labelled), f"live_{metric}": ours}
    if theirs is None:
        return Verdict(True, f"live {metric} {_num(ours)} over {mine.labelled} labels", m)
    base = (theirs.metrics or {}).get(metric)
    if base is None:
        return Verdict(False, f"live quality: the stable revision's labels give no {metric}")
    m[f"live_{metric}_stable"] = base
    worse = (base - ours) if HIGHER_IS_BETTER[metric] else (ours - base)
    allowed = float(Decimal(check.max_degradation))
    text = (f"live {metric} {_num(ours)} over {mine.labelled} labels against the stable revision's {_num(base)} "
            f"over {theirs.labelled} (at most {_num(allowed)} worse)")
    return Verdict(worse <= allowed + 1e-12, text, m)


def both(first: Verdict, second: Verdict) -> Verdict:
    """Two verdicts of one step: passed when both passed, the failures' messages first."""
    failed = [v.message for v in (first, second) if not v.passed]
    return Verdict(not failed, "; ".join(failed or [first.message, second.message]),
                   {**first.measurements, **second.measurements})
