"""[4] Comparing runs: several RUN_DIRs -> their fronts and hypervolume curves side by side, and what differs.

Input:  two or more run directories (1B vs 7B, a widened search vs the first one, before vs after a change).
Output: :class:`Comparison`: each run analysed (:func:`lume_ray.report.analysis.analyze`) against ONE shared
        hypervolume reference, its hypervolume history and grid budget, and the table of differences (per
        algorithm and overall: hypervolume, best point, unlearning steps spent, trials).

Every run keeps its own floor (each relative to its own base model) unless ``floors`` is given; the objectives
are the first run's (or ``objectives``) and every run must have recorded them.
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lume_ray.config import Floor
from lume_ray.evaluate.metrics import direction
from lume_ray.report.analysis import Analysis, analyze, base_values, reference_point, resolve_objectives
from lume_ray.report.answer import QUOTED
from lume_ray.report.budget import Budget, budgets, hypervolume_history
from lume_ray.report.columns import fmt, has_values
from lume_ray.report.floors import Floors
from lume_ray.report.run import Run, load_run


@dataclass
class Comparison:
    labels: list[str]  # "A: <study name>", "B: ...", in the order given
    runs: list[Run]
    analyses: list[Analysis]
    histories: list[pd.DataFrame]
    budgets: list[dict[str, Budget]]
    reference: list[float]
    differences: pd.DataFrame
    summary: list[str]  # one sentence per scope ("overall" first), written from the differences

    @property
    def algorithms(self) -> list[str]:
        return sorted({alg for a in self.analyses for alg in a.algorithms})


def compare(run_dirs: Sequence[str | Path], objectives: Sequence[str] | None = None,
            floors: Floors | Mapping[str, float | Floor] | None = None) -> Comparison:
    if len(run_dirs) < 2:
        raise ValueError(f"comparing runs needs at least two run directories, got {len(run_dirs)}")
    if len(run_dirs) > len(string.ascii_uppercase):
        raise ValueError(f"at most {len(string.ascii_uppercase)} runs can be compared, got {len(run_dirs)}")
    runs = [load_run(p) for p in run_dirs]
    objs = resolve_objectives(objectives, runs[0].study, runs[0].results)
    for run in runs[1:]:
        try:
            resolve_objectives(objs, run.study, run.results)
        except ValueError as e:
            raise ValueError(f"{run.run_dir}: {e}") from None
    if not objectives:  # the study's objectives: keep those every run recorded (utility needs a utility set)
        objs = [o for o in objs if all(has_values(run.results, o) for run in runs)] or objs
    dirs = [direction(o) for o in objs]
    first = [analyze(run, objs, floors) for run in runs]
    # One reference for all: the same rule as one run's, applied to every run's points and base model.
    reference = reference_point(np.vstack([a.values() for a in first]),
                                np.vstack([base_values(run, objs) for run in runs]), dirs)
    analyses = [analyze(run, objs, floors, reference=reference) for run in runs]
    names = [run.name for run in runs]
    labels = [f"{letter}: {run.name}" + (f" ({run.run_dir.name})" if names.count(run.name) > 1 else "")
              for letter, run in zip(string.ascii_uppercase, runs, strict=False)]
    histories = [hypervolume_history(a) for a in analyses]
    spent = [budgets(run, a) for run, a in zip(runs, analyses, strict=True)]
    table = differences(labels, analyses, spent)
    return Comparison(labels, runs, analyses, histories, spent, reference, table, summarize(labels, table))


def _best_text(a: Analysis, i: int | None) -> str:
    if i is None:
        return "no feasible point"
    r = a.table.loc[i]
    quoted = [m for m in dict.fromkeys([*QUOTED, *a.objectives]) if has_values(a.table, m)]
    return (f"{r['algorithm']} {r['trial_id']} step {int(r['step'])}: "
            + " / ".join(fmt(r.get(m)) for m in quoted))


def differences(labels: Sequence[str], analyses: Sequence[Analysis],
                spent: Sequence[Mapping[str, Budget]]) -> pd.DataFrame:
    """One row per (scope, run): trials, steps spent, hypervolume, its change against the first run, the
    best point (by each run's rank metric) and its quoted metrics."""
    algorithms = sorted({alg for a in analyses for alg in a.algorithms})
    rows = []
    for scope in ["overall", *algorithms]:
        hv0 = steps0 = None
        for k, (name, a, b) in enumerate(zip(labels, analyses, spent, strict=True)):
            if scope != "overall" and scope not in a.algorithms:
                rows.append({"scope": scope, "run": name, "trials": 0, "steps spent": 0, "hypervolume": np.nan,
                             "Δ hypervolume vs A": np.nan, "Δ steps vs A": np.nan, "best point": "not run"})
                continue
            mine = a.table if scope == "overall" else a.table[a.table["algorithm"] == scope]
            n_steps = sum(x.spent for alg, x in b.items() if scope in ("overall", alg))
            hv = a.hv[scope]
            if k == 0:
                hv0, steps0 = hv, n_steps
            best = a.best_overall if scope == "overall" else a.best[scope]
            if best is not None and not bool(a.table.loc[best, "feasible"]):
                best = None
            rows.append({"scope": scope, "run": name, "trials": int(mine["trial_id"].nunique()),
                         "steps spent": n_steps, "hypervolume": hv,
                         "Δ hypervolume vs A": np.nan if hv0 is None else hv - hv0,
                         "Δ steps vs A": np.nan if steps0 is None else n_steps - steps0,
                         "best point": _best_text(a, best)})
    table = pd.DataFrame(rows)
    for col in ("trials", "steps spent", "Δ steps vs A"):  # counts stay integers beside the "not run" gaps
        table[col] = table[col].astype("Int64")
    return table


def summarize(labels: Sequence[str], table: pd.DataFrame) -> list[str]:
    """Per scope: how each run's hypervolume and cost compare with the first run's."""
    out = []
    for scope, g in table.groupby("scope", sort=False):
        head = g.iloc[0]
        parts = []
        for _, r in g.iloc[1:].iterrows():
            if pd.isna(r["hypervolume"]) or pd.isna(head["hypervolume"]):
                parts.append(f"{r['run']} vs {head['run']}: one of them did not run {scope}")
                continue
            rel = f" ({r['Δ hypervolume vs A'] / head['hypervolume']:+.0%})" if head["hypervolume"] > 0 else ""
            parts.append(f"{r['run']} reaches hypervolume {r['hypervolume']:.4f} vs {head['hypervolume']:.4f} in "
                         f"{head['run']}{rel}, spending {int(r['steps spent']):,} vs {int(head['steps spent']):,} "
                         f"unlearning steps in {r['trials']} vs {head['trials']} trials")
        out.append(f"{scope}: " + "; ".join(parts) + ".")
    return out
