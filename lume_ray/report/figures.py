"""[4] Figures: analysed runs -> matplotlib figures, each drawn once.

Input:  :class:`lume_ray.report.analysis.Analysis` (one run) or several labelled ones (a comparison).
Output: :class:`Figure`: saved as PNG for report.md (``figures/<name>.png``) and embedded as inline SVG in
        report.html (no JavaScript, nothing to fetch: the page opens offline and prints as it shows).

One library, matplotlib, through its object-oriented ``Figure`` (rendered by Agg / the SVG backend on save,
never through pyplot's global state). Algorithm colours are matplotlib's tab10, in the order of the sorted
algorithm names, so an algorithm has one colour in every figure of a report.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lume_ray.evaluate.metrics import direction
from lume_ray.report.analysis import Analysis
from lume_ray.report.columns import has_values, num
from lume_ray.report.pareto import pareto_mask

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
           "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
RUN_STYLES = (("-", "o"), ("--", "s"), (":", "^"), ("-.", "D"))  # line and marker per compared run
GREY = "#b0b0b0"


@dataclass
class Figure:
    name: str  # file stem and HTML id
    title: str
    caption: str
    fig: Any  # matplotlib.figure.Figure

    def save_png(self, path: Path) -> None:
        self.fig.savefig(path, format="png", metadata={"Software": None})

    def svg(self) -> str:
        """The figure as an inline <svg> element (text kept as text; ids salted per figure, so several
        figures in one page never share an id)."""
        import matplotlib

        buf = io.StringIO()
        with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": self.name}):
            self.fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
        text = buf.getvalue()
        return text[text.index("<svg"):]


def _new(width: float, height: float) -> Any:
    from matplotlib.figure import Figure as MplFigure

    return MplFigure(figsize=(width, height), dpi=150, layout="constrained")


def colors(algorithms: Sequence[str]) -> dict[str, str]:
    return {alg: PALETTE[i % len(PALETTE)] for i, alg in enumerate(algorithms)}


def axis_label(metric: str) -> str:
    return f"{metric} ({'higher' if direction(metric) == 'max' else 'lower'} is better)"


def tradeoff_axes(a: Analysis) -> tuple[str, str] | None:
    """The two metrics of the main trade-off figure: forget efficacy vs retain score, else the first two
    objectives with values."""
    if has_values(a.table, "forget_efficacy") and has_values(a.table, "retain_score"):
        return "forget_efficacy", "retain_score"
    objs = [o for o in a.objectives if has_values(a.table, o)]
    return (objs[0], objs[1]) if len(objs) >= 2 else None


def _front_2d(xs: np.ndarray, ys: np.ndarray, rows: np.ndarray, dx: str, dy: str) -> np.ndarray:
    """The rows (indices into xs/ys) on the 2-D front of these two metrics, sorted by x."""
    if not len(rows):
        return rows
    on = rows[pareto_mask(np.column_stack([xs[rows], ys[rows]]), [dx, dy])]
    return on[np.argsort(xs[on], kind="stable")]


def _threshold(a: Analysis, base_metrics: Mapping[str, Any], metric: str) -> tuple[float, str] | None:
    base = base_metrics.get(metric)
    base_f = float(base) if isinstance(base, int | float) and not isinstance(base, bool) else None
    if metric == "utility" and a.floors.utility is not None:
        t = a.floors.utility.threshold(base_f)
        return None if t is None else (t, f"utility floor ({a.floors.utility.describe()}) = {t:.3f}")
    if metric in a.floors.relative and base_f is not None:
        t = a.floors.relative[metric] * base_f
        return t, f"{metric} floor {a.floors.relative[metric]:g} × base = {t:.3f}"
    return None


def tradeoff(a: Analysis, base_metrics: Mapping[str, Any], x: str, y: str, name: str, title: str) -> Figure:
    """Every evaluated point in grey; each algorithm's 2-D front (feasible points) as a coloured line."""
    df = a.table
    dx, dy = direction(x), direction(y)
    xs, ys = num(df, x), num(df, y)
    finite = np.isfinite(xs) & np.isfinite(ys)
    feasible = df["feasible"].to_numpy(dtype=bool)
    palette = colors(a.algorithms)
    fig = _new(7.0, 4.8)
    ax = fig.add_subplot()
    for sel, text, marker in ((finite & feasible, "feasible points", "o"),
                              (finite & ~feasible, "infeasible (below a floor)", "x")):
        if sel.any():
            ax.scatter(xs[sel], ys[sel], c=GREY, marker=marker, s=18, label=text, zorder=1)
    for alg in a.algorithms:
        on = _front_2d(xs, ys, np.flatnonzero((df["algorithm"] == alg).to_numpy() & feasible & finite), dx, dy)
        if len(on):
            ax.plot(xs[on], ys[on], "-o", color=palette[alg], lw=1.8, ms=5, label=f"{alg} front", zorder=3)
    bx, by = base_metrics.get(x), base_metrics.get(y)
    if isinstance(bx, int | float) and isinstance(by, int | float):
        ax.scatter([bx], [by], c="black", marker="*", s=140, label="base (before unlearning)", zorder=4)
    for metric, horizontal in ((y, True), (x, False)):
        found = _threshold(a, base_metrics, metric)
        if found is not None:
            (ax.axhline if horizontal else ax.axvline)(found[0], ls="--", c="#555", lw=1, label=found[1])
    ax.set_xlabel(axis_label(x))
    ax.set_ylabel(axis_label(y))
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    caption = (f"Every evaluated point in grey; coloured lines join each algorithm's Pareto front in {x} vs {y} "
               "(feasible points only; directions from the metric registry); the star is the model before "
               "unlearning.")
    return Figure(name, title, caption, fig)


def steps(a: Analysis, base_metrics: Mapping[str, Any]) -> Figure | None:
    """Metrics against the evaluated step for each algorithm's best trial."""
    from matplotlib.ticker import MaxNLocator

    df = a.table
    metrics = [m for m in dict.fromkeys([*a.objectives, "mia_score", "final_score"]) if has_values(df, m)]
    trials = {alg: str(df.loc[i, "trial_id"]) for alg, i in a.best.items() if i is not None}
    if not trials or not metrics:
        return None
    ncols = min(3, len(metrics))
    nrows = math.ceil(len(metrics) / ncols)
    palette = colors(a.algorithms)
    fig = _new(4.0 * ncols, 3.2 * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for k, m in enumerate(metrics):
        ax = axes[k // ncols][k % ncols]
        for alg, tid in trials.items():
            g = df[(df["trial_id"] == tid) & (df["status"] == "ok")].sort_values("step")
            ax.plot(g["step"].to_numpy(dtype=float), num(g, m), "-o", color=palette[alg], ms=4, label=f"{alg} ({tid})")
        base = base_metrics.get(m)
        if isinstance(base, int | float):
            ax.axhline(float(base), ls=":", c="black", lw=1, label="base" if k == 0 else None)
        ax.set_title(axis_label(m), fontsize=9)
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    for k in range(len(metrics), nrows * ncols):
        axes[k // ncols][k % ncols].set_visible(False)
    axes[0][0].legend(fontsize=7)
    title = "Metrics vs step: each algorithm's best trial"
    fig.suptitle(title)
    caption = (f"Best trial per algorithm = the trial of its best feasible point by {a.rank_metric}; "
               "dotted line: the model before unlearning.")
    return Figure("metrics_vs_step", title, caption, fig)


def _hv_axes(ax: Any, xlabel: str) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel(xlabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("hypervolume")
    ax.grid(alpha=0.3)


STEPS_LABEL = "cumulative unlearning steps (trials in finishing order)"


def hypervolume_curve(a: Analysis, history: pd.DataFrame) -> Figure:
    palette = colors(a.algorithms)
    fig = _new(7.0, 4.2)
    ax = fig.add_subplot()
    for scope in ["overall", *a.algorithms]:
        h = history[history["scope"] == scope]
        ax.plot(h["steps"], h["hypervolume"], "-o", drawstyle="steps-post", ms=3,
                color="black" if scope == "overall" else palette[scope], lw=2.5 if scope == "overall" else 1.5,
                label=scope)
    _hv_axes(ax, STEPS_LABEL)
    title = "Hypervolume vs unlearning steps spent"
    ax.set_title(title)
    ax.legend(fontsize=8)
    ref = ", ".join(f"{o}={v:.3g}" for o, v in zip(a.objectives, a.reference, strict=True))
    caption = (f"Hypervolume of the feasible points ({', '.join(a.objectives)}) of the trials finished so far; "
               f"reference point {ref}. Per algorithm, x counts only that algorithm's trials.")
    return Figure("hypervolume_vs_steps", title, caption, fig)


def importance(a: Analysis, imp: pd.DataFrame) -> Figure | None:
    if imp.empty:
        return None
    algs = [alg for alg in a.algorithms if (imp["algorithm"] == alg).any()]
    fig = _new(max(4.5, 3.6 * len(algs)), 3.6)
    axes = fig.subplots(1, len(algs), squeeze=False)[0]
    image = None
    for ax, alg in zip(axes, algs, strict=True):
        sub = imp[imp["algorithm"] == alg]
        hps = list(dict.fromkeys(sub["hyperparameter"]))
        z = sub.pivot(index="hyperparameter", columns="objective", values="spearman").reindex(
            index=hps, columns=a.objectives).to_numpy(dtype=float)  # (hyperparameters, objectives)
        image = ax.imshow(np.ma.masked_invalid(z), cmap="RdBu", vmin=-1, vmax=1, aspect="auto")
        ax.set_xticks(range(len(a.objectives)), a.objectives, rotation=30, ha="right", fontsize=8)
        ax.set_yticks(range(len(hps)), hps, fontsize=8)
        for (i, j), v in np.ndenumerate(z):
            if not math.isnan(v):  # white on the dark ends of RdBu
                ax.text(j, i, f"{v:+.2f}", ha="center", va="center", fontsize=8, color="white" if abs(v) > 0.6 else "black")
        ax.set_title(alg)
    if image is not None:
        fig.colorbar(image, ax=list(axes), label="signed Spearman ρ (+: larger is better)", shrink=0.9)
    title = "Which hyperparameters mattered (Spearman rank correlation)"
    fig.suptitle(title, fontsize=10)
    caption = ("Spearman ρ of each hyperparameter (and the evaluated step) with each objective over the algorithm's "
               "ok points, signed so that + means a larger value goes with a better objective. Points of one trial "
               "share hyperparameters: read small samples with care (n in the table).")
    return Figure("hyperparameters", title, caption, fig)


# ---------------------------------------------------------------------------------------------
# Comparisons of several runs.


def _grid(n: int) -> tuple[int, int]:
    ncols = min(3, n)
    return math.ceil(n / ncols), ncols


def compare_fronts(runs: Sequence[tuple[str, Analysis]], x: str, y: str) -> Figure:
    """Each run's 2-D front in x vs y, overall and per algorithm (one panel each), runs overlaid."""
    dx, dy = direction(x), direction(y)
    algorithms = sorted({alg for _, a in runs for alg in a.algorithms})
    scopes = ["overall", *algorithms]
    nrows, ncols = _grid(len(scopes))
    fig = _new(4.2 * ncols, 3.6 * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for k, scope in enumerate(scopes):
        ax = axes[k // ncols][k % ncols]
        for n, (name, a) in enumerate(runs):
            df = a.table
            xs, ys = num(df, x), num(df, y)
            sel = df["feasible"].to_numpy(dtype=bool) & np.isfinite(xs) & np.isfinite(ys)
            if scope != "overall":
                sel &= (df["algorithm"] == scope).to_numpy()
            ax.scatter(xs[sel], ys[sel], s=8, color=PALETTE[n % len(PALETTE)], alpha=0.25)
            on = _front_2d(xs, ys, np.flatnonzero(sel), dx, dy)
            line, marker = RUN_STYLES[n % len(RUN_STYLES)]
            ax.plot(xs[on], ys[on], linestyle=line, marker=marker, color=PALETTE[n % len(PALETTE)], ms=4, lw=1.6,
                    label=name)
        ax.set_title(scope, fontsize=10)
        ax.set_xlabel(axis_label(x), fontsize=8)
        ax.set_ylabel(axis_label(y), fontsize=8)
        ax.grid(alpha=0.3)
    for k in range(len(scopes), nrows * ncols):
        axes[k // ncols][k % ncols].set_visible(False)
    axes[0][0].legend(fontsize=7)
    title = f"Fronts compared: {x} vs {y}"
    fig.suptitle(title)
    caption = ("Each run's feasible points (faint) and its 2-D Pareto front (line), overall and per algorithm; "
               "each run is judged by its own floor.")
    return Figure("compare_fronts", title, caption, fig)


def compare_hypervolume(runs: Sequence[tuple[str, Analysis]], histories: Sequence[pd.DataFrame]) -> Figure:
    """Each run's hypervolume-vs-steps curve, overall and per algorithm, against the shared reference."""
    algorithms = sorted({alg for _, a in runs for alg in a.algorithms})
    scopes = ["overall", *algorithms]
    nrows, ncols = _grid(len(scopes))
    fig = _new(4.2 * ncols, 3.4 * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for k, scope in enumerate(scopes):
        ax = axes[k // ncols][k % ncols]
        for n, ((name, _), h) in enumerate(zip(runs, histories, strict=True)):
            g = h[h["scope"] == scope]
            if g.empty:
                continue
            line, marker = RUN_STYLES[n % len(RUN_STYLES)]
            ax.plot(g["steps"], g["hypervolume"], linestyle=line, marker=marker, drawstyle="steps-post", ms=3,
                    color=PALETTE[n % len(PALETTE)], label=name)
        ax.set_title(scope, fontsize=10)
        _hv_axes(ax, "cumulative unlearning steps")
    for k in range(len(scopes), nrows * ncols):
        axes[k // ncols][k % ncols].set_visible(False)
    axes[0][0].legend(fontsize=7)
    title = "Hypervolume vs unlearning steps, runs compared"
    fig.suptitle(title)
    ref = ", ".join(f"{o}={v:.3g}" for o, v in zip(runs[0][1].objectives, runs[0][1].reference, strict=True))
    caption = f"One hypervolume reference for every run ({ref}), so the curves are comparable."
    return Figure("compare_hypervolume", title, caption, fig)
