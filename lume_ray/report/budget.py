"""[4] Compute: an analysed run -> hypervolume against steps spent, and each search's budget against a full grid.

Input:  :class:`~lume_ray.report.run.Run` (its search spaces) and its :class:`~lume_ray.report.analysis.Analysis`.
Output: per-trial costs, the hypervolume history (overall and per algorithm), :class:`Budget` per algorithm and
        its table.

Compute is unlearning steps: a trial costs its ``trained_steps`` (failed ones too). A full grid of the same
space costs (product of each searched parameter's grid size) x the algorithm's ``steps.max``, since one
trial trained to ``max`` passes through every evaluated step.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from lume_ray.config import ParamSpec
from lume_ray.report.analysis import Analysis
from lume_ray.report.columns import num
from lume_ray.report.pareto import hypervolume, pareto_mask
from lume_ray.report.run import Run

GRID_POINTS_PER_RANGE = 3  # a range without `grid:` counts as 3 evenly spaced values (log scale when log)


def per_trial(a: Analysis) -> pd.DataFrame:
    """One row per trial: algorithm, finished_at, steps (its trained_steps, else its largest step), origin."""
    df = a.table
    steps = num(df, "trained_steps") if "trained_steps" in df.columns else num(df, "step")
    frame = pd.DataFrame({"trial_id": df["trial_id"], "algorithm": df["algorithm"],
                          "finished_at": num(df, "finished_at"), "steps": np.where(np.isnan(steps), num(df, "step"), steps),
                          "origin": df["origin"].astype(str) if "origin" in df.columns else "sampler"})
    out = frame.groupby("trial_id", sort=False).agg(
        algorithm=("algorithm", "first"), finished_at=("finished_at", "max"), steps=("steps", "max"),
        origin=("origin", "first")).reset_index()
    out["steps"] = out["steps"].fillna(0.0)
    return out.sort_values(["finished_at", "trial_id"], na_position="last", kind="stable").reset_index(drop=True)


def hypervolume_history(a: Analysis) -> pd.DataFrame:
    """Hypervolume of the feasible points of the trials finished so far, against cumulative trained steps.

    Trials in ``finished_at`` order (unknown times last), each costing its trained steps, failed trials
    included. Columns: scope ("overall" or an algorithm), trials, steps, hypervolume.
    """
    trials = per_trial(a)
    values = a.values()
    feasible = a.table["feasible"].to_numpy(dtype=bool)
    trial_of = a.table["trial_id"].to_numpy()
    out: list[dict[str, Any]] = []
    for scope in ["overall", *a.algorithms]:
        mine = trials if scope == "overall" else trials[trials["algorithm"] == scope]
        front = values[:0]  # (K, M): the front so far; dominated points never add volume
        total = 0.0
        out.append({"scope": scope, "trials": 0, "steps": 0.0, "hypervolume": 0.0})
        for n, t in enumerate(mine.itertuples(index=False), start=1):
            total += float(t.steps)
            pts = np.vstack([front, values[feasible & (trial_of == t.trial_id)]])
            front = pts[pareto_mask(pts, a.directions)]
            out.append({"scope": scope, "trials": n, "steps": total,
                        "hypervolume": hypervolume(front, a.directions, a.reference)})
    return pd.DataFrame(out, columns=["scope", "trials", "steps", "hypervolume"])


def grid_count(spec: ParamSpec) -> int:
    """Values a full grid takes of one parameter: its ``grid`` when given, 3 for a range without one, else
    :meth:`ParamSpec.grid_values` (the options of a choice, the integers of an int range, 1 when fixed)."""
    if spec.grid is None and spec.kind in ("loguniform", "uniform"):
        return GRID_POINTS_PER_RANGE
    return len(spec.grid_values())


@dataclass
class Budget:
    """The unlearning steps an algorithm's search spent against a full grid of the same space."""

    algorithm: str
    trials: int
    points: int  # evaluated (ok) points
    design_trials: int  # trials from the initial design
    spent: int  # sum over trials of trained_steps
    steps_max: int | None
    grid_settings: int | None  # product of the searched parameters' grid sizes
    grid_detail: str  # "3 lr × 3 alpha"
    stopped: int = 0  # trials early stopping ended at a rung
    saved: int | None = 0  # the steps those trials did not train: steps_max - trained steps (None: no steps_max)

    @property
    def grid_steps(self) -> int | None:
        return None if self.grid_settings is None or self.steps_max is None else self.grid_settings * self.steps_max

    @property
    def fraction(self) -> float | None:
        return None if not self.grid_steps else self.spent / self.grid_steps

    def sentence(self) -> str:
        stopped = "" if not self.stopped else (
            f"; early stopping stopped {self.stopped} of {self.trials} trials at a rung"
            + (f" and saved {self.saved:,} steps" if self.saved is not None else ""))
        if self.grid_steps is None:
            return (f"{self.spent:,} unlearning steps (no search space in experiment.yaml: no grid to compare with)"
                    + stopped)
        return (f"{self.spent:,} unlearning steps, {self.fraction:.0%} of what a full grid of the same space costs "
                f"({self.grid_detail} = {self.grid_settings} settings × {self.steps_max} steps = "
                f"{self.grid_steps:,} steps){stopped}")


def budgets(run: Run, a: Analysis) -> dict[str, Budget]:
    """Per algorithm: the steps its trials trained, against a full grid, and what early stopping saved (each
    stopped trial's untrained rest of its trajectory)."""
    trials = per_trial(a)
    ok = a.table["status"] == "ok"
    stopped_ids = set(a.table.loc[a.table["status"] == "stopped", "trial_id"])
    out = {}
    for alg in a.algorithms:
        mine = trials[trials["algorithm"] == alg]
        space = run.spaces.get(alg)
        settings, detail, steps_max = None, "", None
        if space is not None:
            counts = {name: grid_count(spec) for name, spec in space.searched().items()}
            settings = math.prod(counts.values())
            detail = " × ".join(f"{c} {n}" for n, c in counts.items() if c > 1) or "1 setting"
            steps_max = space.steps.max
        stopped = mine[mine["trial_id"].isin(stopped_ids)]
        saved = int((steps_max - stopped["steps"]).clip(lower=0).sum()) if steps_max is not None else None
        out[alg] = Budget(alg, len(mine), int((ok & (a.table["algorithm"] == alg)).sum()),
                          int((mine["origin"] == "design").sum()), int(mine["steps"].sum()), steps_max, settings, detail,
                          len(stopped), saved)
    return out


def budget_table(budget: Mapping[str, Budget]) -> pd.DataFrame:
    rows = [{"algorithm": b.algorithm, "trials": b.trials, "evaluated points": b.points,
             "steps spent": b.spent, "grid settings": b.grid_settings if b.grid_settings is not None else "—",
             "grid": b.grid_detail or "—", "steps max": b.steps_max if b.steps_max is not None else "—",
             "grid steps": b.grid_steps if b.grid_steps is not None else "—",
             "share of grid": f"{b.fraction:.0%}" if b.fraction is not None else "—",
             "stopped early": b.stopped, "steps saved": b.saved if b.saved is not None else "—"}
            for b in budget.values()]
    frame = pd.DataFrame(rows)
    if not any(b.stopped for b in budget.values()):  # no early stopping here: no columns about it
        frame = frame.drop(columns=["stopped early", "steps saved"], errors="ignore")
    return frame
