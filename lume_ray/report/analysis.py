"""[4] Analysis: a :class:`~lume_ray.report.run.Run` -> feasibility, Pareto fronts, hypervolumes, best points, tables.

Input:  a run read by :func:`lume_ray.report.run.load_run`, the objectives, the floors, optionally a shared
        hypervolume reference.
Output: :class:`Analysis` (the results table with ``feasible``, ``on_front_overall``, ``on_front_algorithm``,
        plus hypervolumes and best points) and the tables built from it: leaderboard, fronts, hyperparameter
        importance, the trials that ended early. Plain data that :mod:`lume_ray.report.render` lays out;
        nothing here draws or writes a file.

Conventions (the report states them too):
- Objective directions come from the metric registry (:func:`lume_ray.evaluate.metrics.direction`).
- Feasibility is :mod:`lume_ray.report.floors`'s.
- Fronts are computed among feasible points; ties and duplicates all stay on a front (moocore, keep_weakly).
- Hypervolume (moocore, :mod:`lume_ray.report.pareto`) against one reference point per report: per
  objective the natural worst value (0 when maximized, 1 when minimized) for scores in [0, 1], else the worst
  of the base model and every point. A comparison of several runs computes it once over all of them.
- The *best trade-off* point of an algorithm is its feasible point with the highest ``final_score`` (the
  challenge's ranking), else ``task_aggregate`` (the harmonic mean of forgetting and retention), else the
  first objective, whichever the run recorded.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from lume_ray.config import Floor
from lume_ray.evaluate.metrics import METRICS, direction
from lume_ray.evaluate.protocol import TASK_SCORE_NAMES
from lume_ray.report.columns import finite, has_values, hp_columns, hp_text, metric_columns, num
from lume_ray.report.floors import Floors, feasibility
from lume_ray.report.pareto import hypervolume, pareto_mask
from lume_ray.report.run import Run

DEFAULT_OBJECTIVES = ("forget_efficacy", "retain_score", "utility")
RANK_METRICS = ("final_score", "task_aggregate")  # the best trade-off, in order of preference


def resolve_objectives(objectives: Sequence[str] | None, study: Mapping[str, Any], df: pd.DataFrame) -> list[str]:
    """--objectives, else study.json's objectives, else the defaults; each must be a registered, stored metric."""
    if objectives:
        names = list(objectives)
    else:
        stored = [o.get("name") if isinstance(o, Mapping) else o for o in study.get("objectives") or []]
        names = [str(n) for n in stored if n] or list(DEFAULT_OBJECTIVES)
    for name in names:
        direction(name)  # ValueError listing the valid names for unknown / record-only metrics
        if name not in df.columns:
            raise ValueError(f"objective {name!r} is not a column of results.parquet "
                             f"(metric columns: {', '.join(metric_columns(df)) or 'none'})")
    if len(set(names)) != len(names):
        raise ValueError(f"objectives repeat a name: {names}")
    return names


def reference_point(values: np.ndarray, base: np.ndarray, directions: Sequence[str]) -> list[float]:
    """The hypervolume reference of ``values`` (N, M) and the base model's ``base`` (K, M): per objective, 0
    (maximized) / 1 (minimized) when every value lies in [0, 1], else the worst value seen."""
    signs = np.array([-1.0 if d == "max" else 1.0 for d in directions])  # larger = worse after multiplying
    pool = np.vstack([values.reshape(-1, len(directions)), base.reshape(-1, len(directions))])
    finite = np.isfinite(pool)
    worst = np.array([np.max(pool[finite[:, j], j] * signs[j]) * signs[j] if finite[:, j].any() else 0.0
                      for j in range(len(directions))])
    # With the observed worst, an objective no trial moved (e.g. utility) would make every volume zero.
    bounded = np.all(((pool >= 0) & (pool <= 1)) | ~finite, axis=0)
    natural = np.where(signs < 0, 0.0, 1.0)
    return [float(n) if b else float(w) for n, w, b in zip(natural, worst, bounded, strict=True)]


@dataclass
class Analysis:
    objectives: list[str]
    directions: list[str]
    floors: Floors
    notes: list[str]
    table: pd.DataFrame  # results + feasible / on_front_overall / on_front_algorithm
    algorithms: list[str]
    rank_metric: str
    reference: list[float]
    hv: dict[str, float]  # "overall" and each algorithm
    best: dict[str, int | None]  # algorithm -> row of its best feasible point (None: no feasible point)
    best_overall: int | None

    def values(self, rows: np.ndarray | None = None) -> np.ndarray:
        """The objective values (N, M) of the table (or of ``rows``)."""
        df = self.table if rows is None else self.table.iloc[rows]
        return np.column_stack([num(df, o) for o in self.objectives])


def base_values(run: Run, objectives: Sequence[str]) -> np.ndarray:
    return np.array([finite(run.base_metrics.get(o)) if finite(run.base_metrics.get(o)) is not None else np.nan
                     for o in objectives], dtype=float)


def analyze(run: Run, objectives: Sequence[str] | None = None,
            floors: Floors | Mapping[str, float | Floor] | None = None,
            reference: Sequence[float] | None = None) -> Analysis:
    """Feasibility, fronts, hypervolumes and best points of one run. ``floors=None``: the study's utility floor;
    ``{}``: none. ``reference``: a hypervolume reference shared with other runs (default: this run's own)."""
    df = run.results.copy()
    notes = list(run.notes)
    objs = resolve_objectives(objectives, run.study, df)
    empty = [o for o in objs if not has_values(df, o)] if (df["status"] == "ok").any() else []
    if empty and objectives:
        raise ValueError(f"objective {empty[0]!r} has no value in {run.rd.results_path} (e.g. utility without a "
                         "utility set): leave it out of --objectives")
    if empty and len(empty) < len(objs):  # the study's objectives, one never recorded (no utility set)
        objs = [o for o in objs if o not in empty]
        notes.append(f"{', '.join(empty)}: no value recorded in this run; fronts and hypervolume use "
                     f"{', '.join(objs)}")
    dirs: list[str] = [direction(o) for o in objs]
    if floors is None:
        chosen = Floors.from_study(run.study)
        u = chosen.utility
        if u is not None and not has_values(df, "utility"):
            notes.append(f"utility floor ({'; '.join(chosen.describe(run.base_metrics))}) not applied: the run "
                         "recorded no utility")
            chosen = Floors()
        elif u is not None and u.relative is not None and finite(run.base_metrics.get("utility")) is None:
            notes.append(f"utility floor ({'; '.join(chosen.describe(run.base_metrics))}) not applied: no base "
                         "utility in base/metrics.json")
            chosen = Floors()
    else:
        chosen = Floors.of(floors)
    df["feasible"] = feasibility(df, chosen, run.base_metrics)
    values = np.column_stack([num(df, o) for o in objs])  # (N, M)
    feasible = df["feasible"].to_numpy(dtype=bool)
    front = np.zeros(len(df), dtype=bool)
    front[feasible] = pareto_mask(values[feasible], dirs)
    df["on_front_overall"] = front
    algorithms = sorted(df["algorithm"].unique())
    by_alg = np.zeros(len(df), dtype=bool)
    for alg in algorithms:
        sel = np.flatnonzero((df["algorithm"] == alg).to_numpy() & feasible)
        by_alg[sel] = pareto_mask(values[sel], dirs)
    df["on_front_algorithm"] = by_alg

    ref = list(reference) if reference is not None else reference_point(values, base_values(run, objs), dirs)
    hv = {"overall": hypervolume(values[feasible], dirs, ref)}
    for alg in algorithms:
        hv[alg] = hypervolume(values[(df["algorithm"] == alg).to_numpy() & feasible], dirs, ref)

    rank_metric = next((m for m in (*RANK_METRICS, *objs) if has_values(df, m)), objs[0])
    rank = num(df, rank_metric) * (1.0 if direction(rank_metric) == "max" else -1.0)

    def best_of(mask: np.ndarray) -> int | None:
        cand = np.flatnonzero(mask & np.isfinite(rank))
        return int(cand[np.argmax(rank[cand])]) if len(cand) else None

    best = {alg: best_of((df["algorithm"] == alg).to_numpy() & feasible) for alg in algorithms}
    best_overall = best_of(feasible)
    if best_overall is None and best_of((df["status"] == "ok").to_numpy()) is not None:
        best_overall = best_of((df["status"] == "ok").to_numpy())
        notes.append("no feasible point: the samples show the best ok point instead")
    return Analysis(objs, dirs, chosen, notes, df, algorithms, rank_metric, ref, hv, best, best_overall)


# ---------------------------------------------------------------------------------------------
# Tables: leaderboard, fronts, importance, failures.


def leaderboard(run: Run, a: Analysis) -> pd.DataFrame:
    """Best feasible point per algorithm by the rank metric, after the base model's row."""
    df = a.table
    hp_cols = hp_columns(df)
    headline = [n for n, m in METRICS.items() if m.headline]
    metric_cols = [c for c in [*headline, *TASK_SCORE_NAMES] if c in df.columns or c in run.base_metrics]
    rows: list[dict[str, Any]] = [{"algorithm": "base (before unlearning)", "trial": "", "step": "",
                                   "hyperparameters": "", **{c: run.base_metrics.get(c, np.nan) for c in metric_cols}}]
    for alg in a.algorithms:
        i = a.best[alg]
        if i is None:
            n = int((df["algorithm"] == alg).sum())
            rows.append({"algorithm": alg, "trial": f"no feasible point ({n} evaluated)", "step": "",
                         "hyperparameters": "", **dict.fromkeys(metric_cols, np.nan)})
            continue
        r = df.loc[i]
        rows.append({"algorithm": alg, "trial": r["trial_id"], "step": int(r["step"]),
                     "hyperparameters": hp_text(r, hp_cols), **{c: r.get(c, np.nan) for c in metric_cols}})
    board = pd.DataFrame(rows)
    empty = [c for c in metric_cols if not has_values(board, c)]  # e.g. utility without a utility set
    return board.drop(columns=empty)


def front_table(a: Analysis) -> pd.DataFrame:
    df = a.table
    rows = [{"scope": "overall", "result rows": len(df), "feasible": int(df["feasible"].sum()),
             "on front": int(df["on_front_overall"].sum()), "hypervolume": a.hv["overall"]}]
    for alg in a.algorithms:
        g = df[df["algorithm"] == alg]
        rows.append({"scope": alg, "result rows": len(g), "feasible": int(g["feasible"].sum()),
                     "on front": int(g["on_front_algorithm"].sum()), "hypervolume": a.hv[alg]})
    return pd.DataFrame(rows)


def hp_importance(a: Analysis) -> pd.DataFrame:
    """Spearman rank correlation of each numeric hyperparameter (and ``step``) with each objective, per
    algorithm over its ok points (at least 3, both sides varying), signed so that > 0 means "larger value,
    better objective". Columns: algorithm, hyperparameter, objective, spearman, n."""
    df = a.table[a.table["status"] == "ok"]
    out: list[dict[str, Any]] = []
    for alg in a.algorithms:
        sub = df[df["algorithm"] == alg]
        for hp in [*hp_columns(df), "step"]:
            x = pd.to_numeric(sub[hp], errors="coerce")
            if x.notna().sum() < 3 or x.nunique(dropna=True) < 2:
                continue  # non-numeric, absent for this algorithm, or fixed
            for obj, how in zip(a.objectives, a.directions, strict=True):
                y = pd.to_numeric(sub[obj], errors="coerce")
                both = x.notna() & y.notna()
                if both.sum() < 3 or x[both].nunique() < 2 or y[both].nunique() < 2:
                    continue
                rho = float(x[both].rank().corr(y[both].rank()))
                out.append({"algorithm": alg, "hyperparameter": hp.removeprefix("hp/"), "objective": obj,
                            "spearman": rho if how == "max" else -rho, "n": int(both.sum())})
    return pd.DataFrame(out, columns=["algorithm", "hyperparameter", "objective", "spearman", "n"])


def importance_table(a: Analysis, imp: pd.DataFrame) -> pd.DataFrame:
    """The long importance frame as one row per (algorithm, hyperparameter), one column per objective."""
    if imp.empty:
        return imp
    wide = imp.pivot_table(index=["algorithm", "hyperparameter"], columns="objective", values="spearman", sort=False)
    n = imp.groupby(["algorithm", "hyperparameter"], sort=False)["n"].max()
    wide = wide.reindex(columns=[o for o in a.objectives if o in wide.columns])
    wide.columns = [f"ρ {o}" for o in wide.columns]
    return wide.assign(n=n).reset_index()


def failures(a: Analysis, clean: Callable[[str], str]) -> pd.DataFrame:
    """One row per trial that ended early (failed, diverged, stopped): its last such row and the reason."""
    df = a.table
    bad = df[df["status"] != "ok"]
    out = []
    for tid, g in bad.groupby("trial_id", sort=True):
        r = g.sort_values("step").iloc[-1]
        out.append({"algorithm": r["algorithm"], "trial": tid, "status": r["status"], "step": int(r["step"]),
                    "reason": clean(str(r.get("error", "") or "(no reason recorded)")),
                    "hyperparameters": hp_text(r, hp_columns(df))})
    return pd.DataFrame(out, columns=["algorithm", "trial", "status", "step", "reason", "hyperparameters"])
