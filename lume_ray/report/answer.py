"""[4] The answer: an analysed run + its budgets -> the report's opening, one paragraph per algorithm.

Input:  :class:`~lume_ray.report.run.Run`, its :class:`~lume_ray.report.analysis.Analysis`, the
        :class:`~lume_ray.report.budget.Budget` per algorithm and the boundary warnings (:func:`boundary`).
Output: :class:`Answer`: the overall sentence, a paragraph per algorithm written from the numbers (its best
        trade-off, what it costs against the model before unlearning, the floor, the compute spent), and the
        warnings (searched parameters whose front sits on an edge of the search box, once the search ran trials
        beyond its initial design; before that, a note that the budget is too small to judge the ranges).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lume_ray.evaluate.metrics import direction
from lume_ray.report.analysis import Analysis
from lume_ray.report.budget import Budget
from lume_ray.report.columns import finite, fmt, has_values, hp_columns, hp_text, is_missing, label
from lume_ray.report.run import Run

QUOTED = ("forget_efficacy", "retain_score", "utility")  # what the answer quotes of every best point


def front_hyperparameters(a: Analysis, algorithm: str) -> list[dict[str, Any]]:
    """The hyperparameters of every point on ``algorithm``'s (feasible) front."""
    df = a.table
    front = df[(df["algorithm"] == algorithm) & df["on_front_algorithm"]]
    out = []
    for _, r in front.iterrows():
        out.append({c.removeprefix("hp/"): r[c] for c in hp_columns(df) if not is_missing(r[c])})
    return out


def design_only(a: Analysis) -> list[str]:
    """The algorithms all of whose trials came from the initial design (origin "design"): the box's corners and
    centre that the sweep was told to try, so a corner on the front says only that the corner was tried."""
    df = a.table
    if "origin" not in df.columns:
        return []
    origin = df["origin"].astype(str)
    return [alg for alg in a.algorithms if (df["algorithm"] == alg).any()
            and bool((origin[df["algorithm"] == alg] == "design").all())]


def boundary(run: Run, a: Analysis) -> dict[str, list[str]]:
    """Per algorithm, the searched parameters whose front points sit on an edge of the search box; only where
    the search has had the budget to tell, i.e. it ran trials beyond the initial design (:func:`design_only`
    algorithms get none: :func:`budget_note` says so)."""
    from lume_ray.search.space import boundary_warnings

    unjudged = set(design_only(a))
    return {alg: [] if alg in unjudged else boundary_warnings(run.spaces[alg], front_hyperparameters(a, alg), alg)
            for alg in a.algorithms if alg in run.spaces}


def budget_note(a: Analysis) -> str | None:
    """One line for the algorithms whose ranges the budget could not judge (:func:`design_only`); None if none."""
    algs = design_only(a)
    if not algs:
        return None
    return (f"{', '.join(algs)}: every trial came from the initial design (the box's corners and centre): too few "
            "to judge whether the search ranges are wide enough, so no boundary warning; raise sweep.num_samples "
            "for trials the sampler proposes")


@dataclass
class Answer:
    """The report's opening: one paragraph per algorithm, written from the numbers, and the warnings."""

    overall: str
    paragraphs: dict[str, str]
    warnings: list[str]


def _cost(metric: str, value: float, base: float | None) -> str:
    """"loses 0.270 retain score (0.970 → 0.700, -27.8%)"; for a "min" metric a rise is the loss."""
    if base is None:
        return f"reaches {label(metric)} {value:.3f} (the base model's is unknown)"
    loss = (base - value) if direction(metric) == "max" else (value - base)
    rel = f", {(value - base) / abs(base):+.1%}" if base else ""
    verb = "loses" if loss > 1e-12 else "gains" if loss < -1e-12 else "keeps"
    amount = f" {abs(loss):.3f}" if verb != "keeps" else ""
    return f"{verb}{amount} {label(metric)} ({base:.3f} → {value:.3f}{rel})"


def answer(run: Run, a: Analysis, budget: Mapping[str, Budget], warnings: Mapping[str, list[str]]) -> Answer:
    """The opening of ``run``'s report, from its analysis, budgets and boundary ``warnings`` (per algorithm)."""
    df = a.table
    hp_cols = hp_columns(df)
    quoted = [m for m in dict.fromkeys([*QUOTED, *a.objectives]) if has_values(df, m)]
    floor_text = "; ".join(a.floors.describe(run.base_metrics))
    paragraphs: dict[str, str] = {}
    unjudged = set(design_only(a))
    for alg in a.algorithms:
        mine = df[df["algorithm"] == alg]
        n_trials, n_ok = mine["trial_id"].nunique(), int((mine["status"] == "ok").sum())
        i = a.best[alg]
        parts: list[str] = []
        if i is None:
            ok = mine[mine["status"] == "ok"]
            if ok.empty:
                parts.append("no evaluated point: every trial failed before its first evaluation.")
            else:
                r = ok.loc[ok[a.rank_metric].astype(float).idxmax()] if has_values(ok, a.rank_metric) else ok.iloc[0]
                parts.append(f"no point passes the floor ({floor_text}); its best by {a.rank_metric} is trial "
                             f"{r['trial_id']} at step {int(r['step'])} with "
                             + ", ".join(f"{label(m)} {fmt(r.get(m))}" for m in quoted) + ".")
        else:
            r = df.loc[i]
            hps = hp_text(r, hp_cols)
            parts.append(f"best trade-off (by {a.rank_metric}) is trial {r['trial_id']} at step {int(r['step'])}"
                         + (f" with {hps}" if hps else "") + ": "
                         + ", ".join(f"{label(m)} {fmt(r.get(m))}" for m in quoted) + ".")
            costs = [_cost(m, float(r[m]), finite(run.base_metrics.get(m)))
                     for m in ("retain_score", "utility") if has_values(df, m) and finite(r.get(m)) is not None]
            if costs:
                parts.append("Against the model before unlearning it " + " and ".join(costs) + ".")
            parts.append(f"It passes the floor ({floor_text})." if floor_text else "No floor applied.")
        if alg in unjudged:
            parts.append("Every trial came from the initial design: too few to judge its search ranges.")
        b = budget.get(alg)
        front_n = int(mine["on_front_algorithm"].sum())
        design = f", {b.design_trials} from the initial design" if b is not None and b.design_trials else ""
        parts.append(f"{n_trials} trial{'s' if n_trials != 1 else ''}{design}, {n_ok} evaluated points "
                     f"({int(mine['feasible'].sum())} feasible, {front_n} on its front)"
                     + (f"; {b.sentence()}." if b is not None else "."))
        paragraphs[alg] = " ".join(parts)
    if a.best_overall is not None and bool(df.loc[a.best_overall, "feasible"]):
        r = df.loc[a.best_overall]
        overall = (f"Best trade-off overall by {a.rank_metric}: {r['algorithm']} (trial {r['trial_id']}, step "
                   f"{int(r['step'])}, {a.rank_metric} {fmt(r.get(a.rank_metric))}). The overall front holds "
                   f"{int(df['on_front_overall'].sum())} of {int(df['feasible'].sum())} feasible points, from "
                   + (", ".join(sorted(df.loc[df['on_front_overall'], 'algorithm'].unique())) or "no algorithm")
                   + f"; hypervolume {a.hv['overall']:.4f}.")
    elif not (df["status"] == "ok").any():
        overall = "No evaluated point: every trial ended before its first evaluation (see the trials that ended early)."
    else:
        overall = f"No point passes the floor ({floor_text}): no algorithm gives an acceptable trade-off."
    all_warnings = [w for alg in a.algorithms for w in warnings.get(alg, [])]
    return Answer(overall, paragraphs, all_warnings)
