"""What `mlops get` and `mlops status` print (also `kubectl mlops …`): pure functions of the objects
as the API returns them, so what a user reads is tested on recorded statuses.

`mlops status md/NAME` is the loop of one model as a tree: the ModelDeployment's stable and
candidate revisions, traffic and last analysis; the TrainingRuns of its model with metrics and gate
verdicts (which one serves, which were rejected); the DriftPolicies watching it with their last
evaluation and retrains.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .api import times

Obj = Mapping[str, Any]


def _cond(obj: Obj, type_: str) -> Mapping[str, Any]:
    return next((c for c in (obj.get("status") or {}).get("conditions") or () if c.get("type") == type_), {})


def _age(stamp: str | None, now: datetime.datetime) -> str:
    if not stamp:
        return "-"
    then = times.parse(stamp)
    seconds = int((now - then).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size * (2 if unit != "m" else 1):
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def _state(obj: Obj, *types: str) -> str:
    """`True/False (Reason)` of the first of `types` the object has."""
    for t in types:
        c = _cond(obj, t)
        if c:
            return f"{c.get('reason') or c.get('status')}"
    return "-"


def _metrics(status: Obj, limit: int = 3) -> str:
    metrics = status.get("metrics") or {}
    return ", ".join(f"{k} {v:.3f}" for k, v in sorted(metrics.items())[:limit]) or "-"


def table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def _trials(run: Obj) -> str:
    """A sweep's trials table: each trial's params, state and objective value; the best one marked."""
    s = run.get("status") or {}
    objective = ((run.get("spec") or {}).get("sweep") or {}).get("objective") or {}
    rows = [["TRIAL", "PARAMS", "STATE", str(objective.get("metric", "VALUE")).upper(), ""]]
    for t in s.get("trials") or ():
        params = ", ".join(f"{k}={v}" for k, v in (t.get("params") or {}).items()) or "-"
        value = t.get("value")
        rows.append([t["name"], params, t["state"], "-" if value is None else f"{value:.4g}",
                     "best" if t["name"] == s.get("bestTrial") else ""])
    return f"sweep {run['metadata']['name']} ({objective.get('goal', 'maximize')} {objective.get('metric')}):\n" + \
        table(rows)


def get_table(kind: str, items: Iterable[Obj], now: datetime.datetime) -> str:
    """`kubectl get`-like table of one kind, with the columns that say where the loop is."""
    rows: list[list[str]]
    if kind == "TrainingRun":
        rows = [["NAME", "MODEL", "STATE", "GATES", "METRICS", "AGE"]]
        items = list(items)
        for o in items:
            s = o.get("status") or {}
            rows.append([o["metadata"]["name"], str((o.get("spec") or {}).get("model", "-")),
                         _state(o, "Succeeded", "Ready"), _state(o, "GatesPassed"), _metrics(s),
                         _age(o["metadata"].get("creationTimestamp"), now)])
        # a sweep's trials, below the runs
        return "\n\n".join([table(rows), *(_trials(o) for o in items if (o.get("status") or {}).get("trials"))])
    elif kind == "ModelDeployment":
        rows = [["NAME", "STABLE", "CANDIDATE", "TRAFFIC", "STATE", "AGE"]]
        for o in items:
            s = o.get("status") or {}
            rows.append([o["metadata"]["name"], (s.get("stable") or {}).get("revision", "-"),
                         (s.get("candidate") or {}).get("revision", "-"), str(s.get("trafficSummary") or "-"),
                         _state(o, "Progressing", "Ready"), _age(o["metadata"].get("creationTimestamp"), now)])
    else:
        rows = [["NAME", "TARGET", "VERDICT", "DRIFTED", "RETRAINS", "AGE"]]
        for o in items:
            s = o.get("status") or {}
            rows.append([o["metadata"]["name"], str(((o.get("spec") or {}).get("targetRef") or {}).get("name", "-")),
                         str((s.get("lastEvaluation") or {}).get("verdict", _state(o, "Ready"))),
                         str(s.get("driftedFeatures") or "-"), str(len(s.get("retrains") or ())),
                         _age(o["metadata"].get("creationTimestamp"), now)])
    return table(rows)


def _tree(lines: list[tuple[int, str]]) -> str:
    """Indented (depth, text) lines drawn as a tree."""
    out = []
    for i, (depth, text) in enumerate(lines):
        if depth == 0:
            out.append(text)
            continue
        last = _closed(lines, i, depth)
        prefix = "".join("   " if _closed(lines, i, d) else "│  " for d in range(1, depth))
        out.append(f"{prefix}{'└─' if last else '├─'} {text}")
    return "\n".join(out)


def _until_shallower(rest: Sequence[tuple[int, str]], depth: int) -> list[tuple[int, str]]:
    taken = []
    for d, t in rest:
        if d < depth:
            break
        taken.append((d, t))
    return taken


def _closed(lines: Sequence[tuple[int, str]], i: int, depth: int) -> bool:
    """Whether the branch at `depth` that line i hangs under has no more siblings below it."""
    return not any(d == depth for d, _ in _until_shallower(lines[i + 1:], depth))


def status_tree(md: Obj, runs: Iterable[Obj], policies: Iterable[Obj]) -> str:
    """One model's loop: deployment, its versions, the drift policies watching it."""
    s = md.get("status") or {}
    name, ns = md["metadata"]["name"], md["metadata"].get("namespace", "")
    lines: list[tuple[int, str]] = [(0, f"ModelDeployment {ns}/{name}: " + ", ".join(
        f"{t}={_cond(md, t).get('status', '?')}" for t in ("Ready", "Available", "Progressing", "Degraded")))]
    progressing = _cond(md, "Progressing")
    if progressing.get("message"):
        lines.append((1, f"{progressing.get('reason')}: {progressing['message']}"))
    for role in ("stable", "candidate", "previous"):
        ref = s.get(role)
        if ref:
            lines.append((1, f"{role:9} {ref['revision']}  {ref.get('trainingRun') or ref.get('modelUri', '')}"
                          f"  since {ref.get('since', '-')}"))
    if s.get("trafficSummary"):
        lines.append((1, f"traffic   {s['trafficSummary']}"))
    last = s.get("lastAnalysis")
    if last:
        lines.append((1, f"analysis  {last['revision']} {last['verdict']}: {last.get('message', '')}"))
    live = s.get("liveQuality") or {}
    if live.get("revisions") or live.get("message"):
        lines.append((1, f"live quality at {live.get('time', '-')}: {live.get('labels', 0)} labels, "
                      f"{live.get('unknownLabels', 0)} for unknown ids"
                      + (f"; last join failed: {live['message']}" if live.get("message") else "")))
        for r in live.get("revisions") or ():
            metrics = ", ".join(f"{k} {v:.3f}" for k, v in (r.get("metrics") or {}).items()) or "no labels"
            lines.append((2, f"{r['revision']}  {metrics}  ({r.get('labelled', 0)} of {r.get('predictions', 0)} "
                          "rows labelled)"))
    stream = ((md.get("spec") or {}).get("model") or {}).get("fromTrainingRuns") or {}
    serving = (s.get("stable") or {}).get("trainingRun")
    rejected_runs = {h.get("trainingRun") for h in s.get("history") or () if h.get("outcome") in
                     ("RolledBack", "Aborted")}
    mine = sorted((r for r in runs if (r.get("spec") or {}).get("model") == stream.get("model")),
                  key=lambda r: r["metadata"].get("creationTimestamp", ""))
    if stream:
        lines.append((1, f"TrainingRuns of model {stream.get('model')}"))
        for r in mine:
            rn = r["metadata"]["name"]
            mark = "  ← serving" if rn == serving else "  (rejected by analysis)" if rn in rejected_runs else ""
            lines.append((2, f"{rn}  {_state(r, 'Succeeded', 'Ready')}  gates {_state(r, 'GatesPassed')}  "
                          f"{_metrics(r.get('status') or {})}{mark}"))
    for p in policies:
        if ((p.get("spec") or {}).get("targetRef") or {}).get("name") != name:
            continue
        ps = p.get("status") or {}
        said = [f"{t}={c.get('status', '?')} ({c.get('reason', '-')})" for t in ("Drifted", "PerformanceDrifted")
                if (c := _cond(p, t)) or t == "Drifted"]
        lines.append((1, f"DriftPolicy {p['metadata']['name']}: {', '.join(said)}"))
        perf = ps.get("lastPerformance")
        if perf:
            value = "-" if perf.get("value") is None else f"{perf['value']:.3f}"
            lines.append((2, f"live {perf.get('metric')} of {perf.get('revision')} at {perf.get('time', '-')}: {value} "
                          f"over {perf.get('labelled', 0)} labelled rows (limit {perf.get('limit', '-')}): "
                          f"{perf.get('verdict')}"))
        ev = ps.get("lastEvaluation")
        if ev:
            lines.append((2, f"last evaluation {ev.get('time')}: {ev.get('verdict')} over {ev.get('samples')} rows"))
            for f in ev.get("features") or ():
                lines.append((3, f"{f['name']}  {f['test']} {f['value']:.3f} (threshold {f['threshold']})"
                              f"{'  DRIFTED' if f.get('drifted') else ''}"))
        for rec in ps.get("retrains") or ():
            lines.append((2, f"retrain {rec['name']} created {rec.get('created')}: {rec.get('outcome') or 'running'}"))
    return _tree(lines)
