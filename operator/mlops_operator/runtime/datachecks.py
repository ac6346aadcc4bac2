"""A TrainingRun's data checks (spec.dataChecks, given as MLOPS_DATA_CHECKS), made by the built-in trainer on the
training set before it trains: a pandera schema (a maintained validator, not our own) for the columns, types,
ranges, values, missing shares, labels and row count; the previous version's profile (MLOPS_REFERENCE_PROFILE)
for its columns and the PSI of each numeric feature against its bins (api/binned.py, the DriftPolicy's PSI).

Every failure names the column, what was found and what was allowed; all checks are made (pandera's lazy mode),
so one report says everything that is wrong."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from ..api.artifacts import DataCheckReport, Profile
from ..api.binned import coarsen, psi
from ..api.trainingrun import DataChecks
from . import profile as profiles

MAX_FAILURES = 15  # each at most FAILURE_CHARS: a report stays well under the termination message's 4 KiB
FAILURE_CHARS = 200


def _missing_share(series: Any) -> float:
    return float(series.isna().mean()) if len(series) else 0.0


def _schema(checks: DataChecks, columns: list[str], target: str) -> Any:
    import pandera.pandas as pa

    wanted: dict[str, Any] = {}
    declared = {c.name: c for c in checks.columns or ()}
    for name in dict.fromkeys([*columns, *declared]):
        column = declared.get(name)
        rules = []
        limit = column.max_missing_share if column and column.max_missing_share else checks.max_missing_share
        if limit is not None:
            share = float(Decimal(limit))
            rules.append(pa.Check(lambda s, share=share: _missing_share(s) <= share, ignore_na=False,
                                  error=f"at most {share:.4g} missing"))
        if column is not None and column.type == "numeric":
            rules.append(pa.Check(lambda s: s.dropna().map(lambda v: isinstance(v, int | float)).all()
                                  if s.dtype == object else s.dtype.kind in "biuf", error="numeric values"))
        if column is not None and column.min is not None:
            rules.append(pa.Check.greater_than_or_equal_to(float(column.min), error=f"at least {column.min}"))
        if column is not None and column.max is not None:
            rules.append(pa.Check.less_than_or_equal_to(float(column.max), error=f"at most {column.max}"))
        if column is not None and column.values:
            rules.append(pa.Check(lambda s, allowed=frozenset(column.values): s.dropna().astype(str).isin(allowed),
                                  error=f"one of {', '.join(column.values[:10])}"))
        if name == target and checks.label_classes:
            rules.append(pa.Check(lambda s, allowed=frozenset(checks.label_classes):
                                  s.dropna().astype(str).isin(allowed),
                                  error=f"a label class: {', '.join(checks.label_classes[:10])}"))
        wanted[name] = pa.Column(checks=rules, nullable=True, required=name in declared, coerce=False)
    frame_checks = []
    if checks.min_rows is not None:
        frame_checks.append(pa.Check(lambda df, n=checks.min_rows: len(df) >= n,
                                     error=f"rows: at least {checks.min_rows}"))
    return pa.DataFrameSchema(wanted, checks=frame_checks, strict=False)


def _failures(errors: Any, df: Any) -> list[str]:
    """pandera's failure cases, one line per column and check, with the numbers."""
    out: list[str] = []
    cases = errors.failure_cases
    for (column, check), group in cases.groupby(["column", "check"], dropna=False, sort=False):
        column = "the table" if column is None or column != column or column == df.__class__.__name__ else column
        if check == "column_in_dataframe":
            out.append(f"column {group['failure_case'].iloc[0]}: missing (columns: {', '.join(map(str, df.columns))})")
            continue
        if str(check).endswith(" missing"):
            out.append(f"column {column}: {_missing_share(df[column]):.4g} of the values missing, allowed {check}")
            continue
        if str(check).startswith("rows: "):
            out.append(f"{len(df)} rows, {str(check)[len('rows: '):]} required")
            continue
        found = [str(v) for v in group["failure_case"].dropna().unique()[:5]]
        bad = len(group)
        detail = f" (e.g. {', '.join(found)})" if found and found != ["False"] else ""
        out.append(f"column {column}: {bad if detail else 'its'} value{'s' if bad != 1 else ''} not {check}{detail}"
                   if detail else f"column {column}: not {check}")
    return out


def _against_previous(checks: DataChecks, df: Any, target: str, previous: Profile) -> list[str]:
    out: list[str] = []
    features = {f.name: f for f in previous.features}
    if checks.same_columns_as_previous:
        now = {c: ("numeric" if df[c].dtype.kind in "biuf" else "categorical") for c in df.columns if c != target}
        before = {n: f.type for n, f in features.items()}
        if now != before:
            gone = sorted(set(before) - set(now))
            new = sorted(set(now) - set(before))
            changed = sorted(n for n in set(now) & set(before) if now[n] != before[n])
            parts = [f"missing {', '.join(gone)}" if gone else "", f"new {', '.join(new)}" if new else "",
                     ", ".join(f"{n} {before[n]} before, {now[n]} now" for n in changed)]
            out.append("columns differ from the previous version's: " + "; ".join(p for p in parts if p))
    if checks.max_psi is not None:
        limit = float(Decimal(checks.max_psi))
        for name, dist in features.items():
            if dist.type != "numeric" or name not in df.columns or df[name].dtype.kind not in "biuf":
                continue
            counts = profiles.Counts(dist)
            counts.add(df[name].to_numpy(dtype=float))
            score = psi(*coarsen(list(dist.counts), list(counts.counts)))
            if score > limit:
                out.append(f"column {name}: PSI {score:.4g} against the previous version's profile, allowed {limit:g}")
    return out


def check(df: Any, checks: DataChecks, target: str, previous: Profile | None) -> DataCheckReport:
    """The report of every check on the training set `df` (its label column `target`)."""
    import pandera.errors

    failures: list[str] = []
    try:
        _schema(checks, [str(c) for c in df.columns], target).validate(df, lazy=True)
    except pandera.errors.SchemaErrors as errors:
        failures += _failures(errors, df)
    skipped = []
    if previous is not None:
        failures += _against_previous(checks, df, target, previous)
    elif checks.same_columns_as_previous or checks.max_psi is not None:
        skipped.append("sameColumnsAsPrevious and maxPsi: no earlier version of the model passed its gates")
    return DataCheckReport(passed=not failures, rows=len(df),
                           failures=[f[:FAILURE_CHARS] for f in failures[:MAX_FAILURES]], skipped=skipped)
