"""A hyperparameter sweep: its trials, and what the sweeping TrainingRun should look like from its trials'
TrainingRuns. Pure.

The trials are a function of the spec alone (grid order, or `random.Random(seed)` draws), so a restarted
operator makes the same trials with the same names; which trials run is a function of what the trial runs
say (at most `maxParallel` unfinished at once, started in order). The sweep's version is the best trial
that passed its gates, by the objective; with none, the sweep offers nothing.
"""

from __future__ import annotations

import datetime
import itertools
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..api import times
from ..api.trainingrun import Sweep, TrainingRunSpec
from ..conditions import FALSE, TRUE, UNKNOWN, Cond, find, is_true

MAX_TRIALS = 100


def check(sweep: Sweep, prefix: str) -> list[str]:
    errors = []
    names = [p.name for p in sweep.parameters]
    for name in sorted({n for n in names if names.count(n) > 1}):
        errors.append(f"{prefix}.parameters: {name} is given twice")
    for i, p in enumerate(sweep.parameters):
        at = f"{prefix}.parameters[{i}]"
        if p.values is None:
            if p.max is None or p.min is None:
                errors.append(f"{at}: a range needs min and max")
            elif p.max < p.min:
                errors.append(f"{at}.max: {p.max} is below min {p.min}")
            elif p.log and p.min <= 0:
                errors.append(f"{at}.min: a log range starts above 0, not at {p.min}")
            if sweep.strategy == "grid":
                errors.append(f"{at}: a grid takes values, not a range (use strategy: random)")
        elif p.min is not None or p.max is not None or p.log or p.integer:
            errors.append(f"{at}: values and a range (min, max, log, integer) do not go together")
    if sweep.strategy == "random" and sweep.trials is None:
        errors.append(f"{prefix}.trials: required by strategy random")
    if sweep.strategy == "grid" and not errors:
        size = math.prod(len(p.values or ()) for p in sweep.parameters)
        if size > MAX_TRIALS and (sweep.trials is None or sweep.trials > MAX_TRIALS):
            errors.append(f"{prefix}.parameters: the grid has {size} trials, more than {MAX_TRIALS} "
                          f"(set trials to run the first ones)")
    return errors


def _draw(rng: random.Random, p: Any) -> Any:
    if p.values is not None:
        return p.values[rng.randrange(len(p.values))]
    low, high = (math.log(p.min), math.log(p.max)) if p.log else (p.min, p.max)
    value = rng.uniform(low, high)
    value = math.exp(value) if p.log else value
    return round(value) if p.integer else float(f"{value:.6g}")


def trials(sweep: Sweep, seed: int) -> list[dict[str, Any]]:
    """The trials' parameters, in order: the grid's product (parameters in the order given), or draws."""
    if sweep.strategy == "grid":
        grid = itertools.product(*(p.values or () for p in sweep.parameters))
        names = [p.name for p in sweep.parameters]
        return [dict(zip(names, combo, strict=True)) for combo in
                itertools.islice(grid, sweep.trials or MAX_TRIALS)]
    rng = random.Random(sweep.seed if sweep.seed is not None else seed)
    assert sweep.trials is not None
    return [{p.name: _draw(rng, p) for p in sweep.parameters} for _ in range(sweep.trials)]


def trial_name(run_name: str, index: int) -> str:
    return f"{run_name}-{index + 1}"


def trial_spec(spec: TrainingRunSpec, params: Mapping[str, Any]) -> dict[str, Any]:
    """A trial's spec: the sweep's, without the sweep, its params overridden by the trial's."""
    out = spec.wire()
    out.pop("sweep", None)
    out.pop("register", None)  # the sweep registers its best trial, not every one
    out["params"] = {**(out.get("params") or {}), **params}
    return out


def _state(run: Mapping[str, Any] | None) -> str:
    if run is None:
        return "Pending"
    conditions = (run.get("status") or {}).get("conditions")
    succeeded = find(conditions, "Succeeded")
    if succeeded is None or succeeded.get("status") == UNKNOWN:
        return "Running"
    if succeeded.get("status") == FALSE:
        return "Failed"
    return "Succeeded" if is_true(conditions, "GatesPassed") else "GatesFailed"


@dataclass
class SweepDecision:
    conditions: list[Cond]
    status: dict[str, Any] = field(default_factory=dict)
    start: list[int] = field(default_factory=list)
    """The trials to create now (indexes, in order)."""


def decide(run: Mapping[str, Any], spec: TrainingRunSpec, children: Mapping[str, Mapping[str, Any]],
           now: datetime.datetime) -> SweepDecision:
    """The sweep's conditions and status from its trials' TrainingRuns (by name), and which to start."""
    assert spec.sweep is not None
    sweep = spec.sweep
    status = run.get("status") or {}
    planned = trials(sweep, spec.seed)
    names = [trial_name(run["metadata"]["name"], i) for i in range(len(planned))]
    states = [_state(children.get(n)) for n in names]
    values = [((children.get(n) or {}).get("status") or {}).get("metrics", {}).get(sweep.objective.metric)
              for n in names]
    table = [{"name": n, "params": p, "state": s, **({"value": v} if v is not None else {})}
             for n, p, s, v in zip(names, planned, states, values, strict=True)]
    common = {"trials": table, "startTime": status.get("startTime") or times.stamp(now),
              "startedGeneration": status.get("startedGeneration") or run["metadata"].get("generation")}
    running = states.count("Running")
    pending = [i for i, s in enumerate(states) if s == "Pending"]
    if spec.suspend and (pending or running):
        return SweepDecision([Cond("Succeeded", UNKNOWN, "Suspended", "spec.suspend is true: no trial starts"),
                              Cond("Ready", FALSE, "Suspended", "spec.suspend is true")], common)
    if pending or running:
        start = pending[:max(sweep.max_parallel - running, 0)]
        done = len(planned) - len(pending) - running
        return SweepDecision([
            Cond("Succeeded", UNKNOWN, "Running", f"{done} of {len(planned)} trials finished, "
                 f"{running + len(start)} running (at most {sweep.max_parallel} at once)"),
            Cond("Ready", UNKNOWN, "Training", "the sweep has not finished"),
        ], common, start)
    passing = [(v, i) for i, (s, v) in enumerate(zip(states, values, strict=True))
               if s == "Succeeded" and isinstance(v, int | float)]
    finished = {**common, "completionTime": times.stamp(now)}
    counts = ", ".join(f"{states.count(s)} {s.lower()}" for s in ("Succeeded", "GatesFailed", "Failed")
                       if states.count(s))
    if not passing:
        reason = f"no trial passed its gates and reported {sweep.objective.metric} ({counts})"
        return SweepDecision([
            Cond("Succeeded", TRUE, "Completed", f"{len(planned)} trials: {counts}"),
            Cond("GatesPassed", FALSE, "NoPassingTrial", reason),
            Cond("Ready", FALSE, "NoPassingTrial", reason),
        ], finished)
    pick = max if sweep.objective.goal == "maximize" else min
    value, best = pick(passing, key=lambda vi: (vi[0], -vi[1]) if pick is max else (vi[0], vi[1]))
    winner = children[names[best]].get("status") or {}
    said = f"trial {names[best]}: {sweep.objective.metric} {value:g} ({sweep.objective.goal})"
    return SweepDecision([
        Cond("Succeeded", TRUE, "Completed", f"{len(planned)} trials: {counts}"),
        Cond("GatesPassed", TRUE, "Passed", said),
        Cond("Ready", TRUE, "Succeeded", f"{said}, model {(winner.get('model') or {}).get('digest')}"),
    ], {**finished, "bestTrial": names[best], "model": winner.get("model"), "metrics": winner.get("metrics"),
        "reproducibility": winner.get("reproducibility")})


def owned_trials(sweep_run: Mapping[str, Any], children: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The sweep's trial TrainingRuns by name (the ones it owns)."""
    uid = sweep_run["metadata"].get("uid")
    return {c["metadata"]["name"]: c for c in children
            if any(r.get("uid") == uid and r.get("kind") == "TrainingRun"
                   for r in c["metadata"].get("ownerReferences") or ())}
