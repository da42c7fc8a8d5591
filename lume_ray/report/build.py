"""[7] Report: a sweep's run directory -> Pareto fronts, hypervolume, leaderboard and plots.

Input:  RUN_DIR as sweep.py writes it (notes/run_dir.md): results.parquet (one row per trial and evaluated
        step), study.json, experiment.yaml, base/metrics.json + base/rows.parquet, and the per-point
        trials/<trial_id>/step_XXXXXX/rows.parquet files.
Output: RUN_DIR/report/ (or --out), written into a temporary folder and renamed into place:
        results.parquet + pareto.csv   every trial-step row with ``feasible``, ``on_front_overall`` and
                                       ``on_front_algorithm`` (non-dominated within its algorithm);
        report.html                    one self-contained page (plotly.js inline, opens offline);
        report.md + figures/*.png      the same content for papers and pull requests (matplotlib, Agg).

The report never re-runs anything: it reads the stored tables, recomputes the fronts, hypervolumes and
importances from them, re-derives the 12 task scores of the points it shows from their per-row files as a
consistency check, and lists every file it read with its row count.

Conventions (also stated in the report itself):
- Objective directions come from the metric registry (:func:`lume_ray.metrics.direction`), never from files.
- A point is *feasible* when its trial status is "ok" and it passes every floor; a floor ``metric=f`` means
  ``value >= f * base value`` for a "max" metric (``<=`` for a "min" metric), base = the target before
  unlearning (base/metrics.json). Default: ``utility = study.json utility_floor`` (0.75, the SemEval award rule).
- Fronts are computed among feasible points only. Ties and exact duplicates are all kept on the front
  (a point is dominated only by one at least as good in every objective and strictly better in one);
  a point with a NaN objective is never on a front.
- Hypervolume: optuna's exact WFG / 2-D / 3-D implementation (``optuna._hypervolume.compute_hypervolume``,
  the one behind ``optuna.visualization.plot_hypervolume_history``) after turning every objective into a
  minimization. Reference point of the report: per objective, the natural worst value (0 when maximized,
  1 when minimized) for scores that lie in [0, 1], else the worst value among the base model and every
  evaluated point (feasible or not), so all hypervolumes of one report (per algorithm, overall, over compute)
  share one reference and are comparable.
- "Which hyperparameters mattered": Spearman rank correlation, per algorithm, of each numeric hyperparameter
  (and the evaluated step) with each objective over that algorithm's ok points, signed so that a positive
  value means "larger hyperparameter, better objective". fANOVA needs many more trials than a small sweep has.
"""

from __future__ import annotations

import html
import json
import math
import re
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lume_ray.data import KINDS, SPLITS, TASKS
from lume_ray.evaluate.metrics import direction, task_score_name
from lume_ray.files import atomic_dir
from lume_ray.report.pareto import hypervolume, pareto_mask

DEFAULT_OBJECTIVES = ("forget_efficacy", "retain_score", "utility")
DEFAULT_UTILITY_FLOOR = 0.75
TASK_SCORES = tuple(task_score_name(s, t, k) for s in SPLITS for t in TASKS for k in KINDS)
# Algorithm colours shared by the plotly and the matplotlib figures (matplotlib's tab10).
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
           "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
GREY = "#b0b0b0"
_FLOOR_RTOL = 1e-9  # 0.75 * 0.4 is 0.30000000000000004: a point exactly on the floor must pass it


# =============================================================================================
# Pareto fronts, hypervolume, floors (pure functions on arrays / frames).


def apply_floors(df: pd.DataFrame, floors: Mapping[str, float], base_metrics: Mapping[str, Any]) -> pd.Series:
    """Feasibility of every row: status "ok" (when the column exists) and every floor met.

    ``floors[m] = f`` means ``df[m] >= f * base_metrics[m]`` for a "max" metric and ``<=`` for a "min" one
    (equality within a relative 1e-9 passes). NaN values fail. Unknown metric, a metric missing from ``df``
    or from ``base_metrics`` -> ValueError.
    """
    feasible = pd.Series(True, index=df.index, dtype=bool)
    if "status" in df.columns:
        feasible &= (df["status"].astype(str) == "ok").to_numpy()
    for name, fraction in floors.items():
        how = direction(name)
        if not isinstance(fraction, (int, float)) or not math.isfinite(fraction):
            raise ValueError(f"floor {name}={fraction!r}: the fraction must be a finite number, e.g. utility=0.75")
        if name not in df.columns:
            raise ValueError(f"floor metric {name!r} is not a column of the results "
                             f"(metric columns: {', '.join(_metric_columns(df)) or 'none'})")
        base = base_metrics.get(name)
        if not isinstance(base, (int, float)) or not math.isfinite(float(base)):
            raise ValueError(f"floor {name}={fraction} needs the base model's {name!r} in base/metrics.json "
                             f"(found {base!r})")
        threshold = float(fraction) * float(base)
        col = pd.to_numeric(df[name], errors="coerce").to_numpy(dtype=float)
        close = np.isclose(col, threshold, rtol=_FLOOR_RTOL, atol=1e-12)
        ok = (col >= threshold) if how == "max" else (col <= threshold)
        feasible &= ok | close
    return feasible


def _metric_columns(df: pd.DataFrame) -> list[str]:
    from lume_ray.evaluate.metrics import METRICS

    return [c for c in df.columns if c in METRICS]


# =============================================================================================
# PII redaction of sample text.

_PII_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Emails first: their local part may hold digits. LUME escapes underscores ("goldi\_aqua@me.com").
    (re.compile(r"[A-Za-z0-9._%+\\-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"), "[EMAIL]"),
    # Phones: +1 / 1- prefix optional; (555) 201-3344, 555-201-3344, 555.201.3344, 555 201 3344.
    (re.compile(r"(?<![\d-])(?:\+?1[-.\s]?)?(?:\(\d{3}\)\s?|\d{3}[-.\s])\d{3}[-.\s]\d{4}(?!\d)"), "[PHONE]"),
    # SSNs: 900-12-3456, 900 12 3456.
    (re.compile(r"(?<!\d)\d{3}[-\s]\d{2}[-\s]\d{4}(?!\d)"), "[SSN]"),
    # Bare digit runs: 11 digits starting with 1 or 10 digits are phones, 9 digits an SSN.
    (re.compile(r"(?<!\d)1?\d{10}(?!\d)"), "[PHONE]"),
    (re.compile(r"(?<!\d)\d{9}(?!\d)"), "[SSN]"),
)


def redact(text: str) -> str:
    """Replace emails, US phone numbers (incl. 10 bare digits) and SSNs (incl. 9 bare digits) with tags."""
    for pattern, tag in _PII_PATTERNS:
        text = pattern.sub(tag, text)
    return text


_redact = redact  # build_report's ``redact`` flag shadows the function inside it


# =============================================================================================
# Reading a run directory.


@dataclass
class Run:
    """Everything the report reads from RUN_DIR, plus the list of files read (path, rows, note)."""

    run_dir: Path
    results: pd.DataFrame
    study: dict[str, Any]
    experiment_yaml: str
    base_metrics: dict[str, Any]
    base_rows: pd.DataFrame | None
    read: list[tuple[str, int | None, str]] = field(default_factory=list)


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "/"))
        else:
            out[key] = v
    return out


def load_run(run_dir: str | Path) -> Run:
    """Read RUN_DIR; a missing directory or results.parquet -> ValueError naming the path."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ValueError(f"run directory {run_dir} does not exist (expected the output folder of `lume-ray sweep`)")
    results_path = run_dir / "results.parquet"
    if not results_path.is_file():
        raise ValueError(f"{results_path} not found: {run_dir} is not a finished sweep's run directory")
    try:
        results = pd.read_parquet(results_path)
    except Exception as e:  # pyarrow raises several types for a damaged file
        raise ValueError(f"{results_path}: cannot be read as parquet ({type(e).__name__}: {e})") from None
    required = ("algorithm", "trial_id", "step", "status")
    missing = [c for c in required if c not in results.columns]
    if missing:
        raise ValueError(f"{results_path}: missing column(s) {', '.join(missing)} (required: {', '.join(required)})")
    results = results.copy()
    results["trial_id"] = results["trial_id"].astype(str)
    results["algorithm"] = results["algorithm"].astype(str)
    results["status"] = results["status"].astype(str)
    if "error" in results.columns:
        results["error"] = results["error"].fillna("").astype(str)
    results = results.sort_values(["algorithm", "trial_id", "step"], kind="stable").reset_index(drop=True)
    read: list[tuple[str, int | None, str]] = [("results.parquet", len(results), "one row per trial and step")]

    def text(name: str) -> str:
        p = run_dir / name
        if p.is_file():
            read.append((name, None, ""))
            return p.read_text()
        read.append((name, None, "missing"))
        return ""

    study_text = text("study.json")
    try:
        study = json.loads(study_text) if study_text else {}
    except json.JSONDecodeError as e:
        raise ValueError(f"{run_dir / 'study.json'}: not valid JSON ({e})") from None
    experiment_yaml = text("experiment.yaml")
    base_text = text("base/metrics.json")
    try:
        base_metrics = _flatten(json.loads(base_text)) if base_text else {}
    except json.JSONDecodeError as e:
        raise ValueError(f"{run_dir / 'base/metrics.json'}: not valid JSON ({e})") from None
    base_rows = _read_rows(run_dir, "base/rows.parquet", read, "the target before unlearning")
    return Run(run_dir, results, study if isinstance(study, dict) else {}, experiment_yaml, base_metrics,
               base_rows, read)


def _read_rows(run_dir: Path, rel: str, read: list[tuple[str, int | None, str]], note: str) -> pd.DataFrame | None:
    path = run_dir / rel
    if not path.is_file():
        read.append((rel, None, f"missing ({note})"))
        return None
    rows = pd.read_parquet(path)
    if "id" in rows.columns:
        rows["id"] = rows["id"].astype(str)
    read.append((rel, len(rows), note))
    return rows


def task_scores_from_rows(rows: pd.DataFrame) -> dict[str, float]:
    """The LUME task scores re-derived from a per-row table by :func:`lume_ray.metrics.task_scores`."""
    from lume_ray.evaluate.metrics import task_scores

    if not {"split", "task", "kind", "score"} <= set(rows.columns):
        return {}
    records = rows[["split", "task", "kind", "score"]].to_dict("records")
    return {k: v for k, v in task_scores(records).items() if v is not None}


def _check_rows(stored: Mapping[str, Any], rows: pd.DataFrame | None) -> str:
    """A one-phrase consistency check of stored task scores against those re-derived from the rows."""
    if rows is None:
        return ""
    derived = task_scores_from_rows(rows)
    diffs = [abs(derived[k] - float(stored[k])) for k in derived
             if k in stored and isinstance(stored[k], (int, float)) and math.isfinite(float(stored[k]))]
    if not diffs:
        return "task scores not re-derivable"
    worst = max(diffs)
    verdict = "match" if worst <= 1e-6 else "DIFFER from the stored ones"
    return f"{len(diffs)} task scores re-derived from rows {verdict} (max |diff| {worst:.1e})"


# =============================================================================================
# Analysis on the results table.


@dataclass
class Analysis:
    objectives: list[str]
    directions: list[str]
    floors: dict[str, float]
    floor_notes: list[str]
    table: pd.DataFrame  # results + feasible / on_front_overall / on_front_algorithm
    algorithms: list[str]
    rank_metric: str
    reference: list[float]
    hv: dict[str, float]  # "overall" and each algorithm
    best: dict[str, int | None]  # algorithm -> row index of its best feasible point (None: no feasible point)
    best_overall: int | None


def _num(df: pd.DataFrame, col: str) -> np.ndarray:
    return pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float)


def _has_values(df: pd.DataFrame, col: str) -> bool:
    """The column exists and holds a finite number (utility is None throughout when no utility set is given)."""
    return col in df.columns and bool(np.isfinite(_num(df, col)).any())


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
                             f"(metric columns: {', '.join(_metric_columns(df)) or 'none'})")
    if len(set(names)) != len(names):
        raise ValueError(f"objectives repeat a name: {names}")
    return names


def analyze(run: Run, objectives: Sequence[str] | None = None,
            floors: Mapping[str, float] | None = None) -> Analysis:
    df = run.results.copy()
    objs = resolve_objectives(objectives, run.study, df)
    dirs: list[str] = [direction(o) for o in objs]
    notes: list[str] = []
    if floors is None:
        fraction = float(run.study.get("utility_floor", DEFAULT_UTILITY_FLOOR))
        if "utility" in df.columns and isinstance(run.base_metrics.get("utility"), (int, float)):
            floors = {"utility": fraction}
        else:
            floors = {}
            notes.append("default utility floor not applied: no utility column or no base utility")
    floors = dict(floors)
    df["feasible"] = apply_floors(df, floors, run.base_metrics).to_numpy()
    values = np.column_stack([_num(df, o) for o in objs])  # (N, M)
    feasible = df["feasible"].to_numpy(dtype=bool)
    front = np.zeros(len(df), dtype=bool)
    front[feasible] = pareto_mask(values[feasible], dirs)
    df["on_front_overall"] = front
    df["on_front_algorithm"] = False
    algorithms = sorted(df["algorithm"].unique())
    for alg in algorithms:
        sel = np.flatnonzero((df["algorithm"] == alg).to_numpy() & feasible)
        df.loc[sel, "on_front_algorithm"] = pareto_mask(values[sel], dirs)
    df["on_front_algorithm"] = df["on_front_algorithm"].astype(bool)

    # Reference point: per objective, the worst of the base model and every evaluated point.
    signs = np.array([-1.0 if d == "max" else 1.0 for d in dirs])
    base_vals = np.array([float(run.base_metrics.get(o, np.nan)) if isinstance(run.base_metrics.get(o), (int, float))
                          else np.nan for o in objs])
    pool = np.vstack([values, base_vals[None, :]]) * signs
    with np.errstate(all="ignore"):
        worst = np.nanmax(np.where(np.isfinite(pool), pool, np.nan), axis=0) if len(pool) else np.zeros(len(objs))
    worst = np.where(np.isfinite(worst), worst, 0.0) * signs
    # Scores in [0, 1] get their natural worst value (0 to maximize, 1 to minimize) instead: with the
    # observed worst, an objective that no trial moved (e.g. utility) would make every volume zero.
    bounded = np.all((pool * signs >= 0) & (pool * signs <= 1) | ~np.isfinite(pool), axis=0)
    nadir = np.where(signs < 0, 0.0, 1.0)
    reference = [float(n) if b else float(w) for n, w, b in zip(nadir, worst, bounded, strict=True)]
    hv = {"overall": hypervolume(values[feasible], dirs, reference)}
    for alg in algorithms:
        sel = (df["algorithm"] == alg).to_numpy() & feasible
        hv[alg] = hypervolume(values[sel], dirs, reference)

    # final_score when the sweep recorded it (it needs a utility set), else the first objective.
    rank_metric = next((m for m in ("final_score", *objs) if _has_values(df, m)), objs[0])
    rank = _num(df, rank_metric) * (1.0 if direction(rank_metric) == "max" else -1.0)
    ok = (df["status"] == "ok").to_numpy()

    def best_of(mask: np.ndarray) -> int | None:
        cand = np.flatnonzero(mask & np.isfinite(rank))
        return int(cand[np.argmax(rank[cand])]) if len(cand) else None

    best = {alg: best_of((df["algorithm"] == alg).to_numpy() & feasible) for alg in algorithms}
    best_overall = best_of(feasible)
    if best_overall is None:
        best_overall = best_of(ok)
        if best_overall is not None:
            notes.append("no feasible point: samples show the best ok point instead")
    return Analysis(objs, dirs, floors, notes, df, algorithms, rank_metric, reference, hv, best, best_overall)


def hypervolume_history(a: Analysis) -> pd.DataFrame:
    """Hypervolume of the feasible points of the trials finished so far, against cumulative trained steps.

    Trials are taken in ``finished_at`` order (unknown times last); a trial's compute is its
    ``trained_steps`` (else its largest evaluated step), failed trials included, since they cost compute.
    Columns: scope ("overall" or an algorithm), trials, compute, hypervolume.
    """
    df = a.table
    steps_col = "trained_steps" if "trained_steps" in df.columns else "step"
    per_trial = pd.DataFrame({
        "trial_id": df["trial_id"],
        "algorithm": df["algorithm"],
        "finished_at": _num(df, "finished_at") if "finished_at" in df.columns else np.nan,
        "compute": _num(df, steps_col),
    }).groupby("trial_id", sort=False).agg(algorithm=("algorithm", "first"), finished_at=("finished_at", "max"),
                                           compute=("compute", "max")).reset_index()
    per_trial["compute"] = per_trial["compute"].fillna(0.0)
    per_trial = per_trial.sort_values(["finished_at", "trial_id"], na_position="last", kind="stable")
    values = np.column_stack([_num(df, o) for o in a.objectives])
    feasible = df["feasible"].to_numpy(dtype=bool)
    trial_of = df["trial_id"].to_numpy()
    out: list[dict[str, Any]] = []
    for scope in ["overall", *a.algorithms]:
        trials = per_trial if scope == "overall" else per_trial[per_trial["algorithm"] == scope]
        front = values[:0]  # (K, M): the front so far; dominated points never add volume, so keep only it
        total = 0.0
        out.append({"scope": scope, "trials": 0, "compute": 0.0, "hypervolume": 0.0})
        for n, t in enumerate(trials.itertuples(index=False), start=1):
            total += float(t.compute)
            pts = np.vstack([front, values[feasible & (trial_of == t.trial_id)]])
            front = pts[pareto_mask(pts, a.directions)]
            out.append({"scope": scope, "trials": n, "compute": total,
                        "hypervolume": hypervolume(front, a.directions, a.reference)})
    return pd.DataFrame(out)


def hp_importance(a: Analysis) -> pd.DataFrame:
    """Spearman rank correlation of each numeric hyperparameter (and ``step``) with each objective.

    Per algorithm over its ok points with finite values (at least 3 and both sides varying); signed by
    the objective's direction so that > 0 means "larger value, better objective".
    Columns: algorithm, hyperparameter, objective, spearman, n.
    """
    df = a.table[a.table["status"] == "ok"]
    hp_cols = [c for c in df.columns if c.startswith("hp/")]
    out: list[dict[str, Any]] = []
    for alg in a.algorithms:
        sub = df[df["algorithm"] == alg]
        for hp in [*hp_cols, "step"]:
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
    """The long importance frame as one row per (algorithm, hyperparameter) and one column per objective."""
    if imp.empty:
        return imp
    wide = imp.pivot_table(index=["algorithm", "hyperparameter"], columns="objective", values="spearman",
                           sort=False)
    n = imp.groupby(["algorithm", "hyperparameter"], sort=False)["n"].max()
    wide = wide.reindex(columns=[o for o in a.objectives if o in wide.columns])
    wide.columns = [f"ρ {o}" for o in wide.columns]
    return wide.assign(n=n).reset_index()


def leaderboard(run: Run, a: Analysis) -> pd.DataFrame:
    """Best feasible point per algorithm by the rank metric, plus the base model's row."""
    df = a.table
    hp_cols = [c for c in df.columns if c.startswith("hp/")]
    metric_cols = [c for c in [*TASK_SCORES, "task_aggregate", "mia_score", "utility", "final_score"]
                   if c in df.columns or c in run.base_metrics]
    rows: list[dict[str, Any]] = [{"algorithm": "base (before unlearning)", "trial": "", "step": "",
                                   "hyperparameters": "",
                                   **{c: run.base_metrics.get(c, np.nan) for c in metric_cols}}]
    for alg in a.algorithms:
        i = a.best[alg]
        if i is None:
            n = int((df["algorithm"] == alg).sum())
            rows.append({"algorithm": alg, "trial": f"no feasible point ({n} evaluated)", "step": "",
                         "hyperparameters": "", **{c: np.nan for c in metric_cols}})
            continue
        r = df.loc[i]
        rows.append({"algorithm": alg, "trial": r["trial_id"], "step": int(r["step"]),
                     "hyperparameters": _hp_text(r, hp_cols), **{c: r.get(c, np.nan) for c in metric_cols}})
    board = pd.DataFrame(rows)
    empty = [c for c in metric_cols if not _has_values(board, c)]  # e.g. utility without a utility set
    return board.drop(columns=empty)


def _hp_text(row: pd.Series, hp_cols: Sequence[str]) -> str:
    parts = []
    for c in hp_cols:
        v = row.get(c)
        if v is None or (np.isscalar(v) and pd.isna(v)):
            continue  # this algorithm does not have the hyperparameter
        parts.append(f"{c.removeprefix('hp/')}={_fmt(v, hp=True)}")
    return ", ".join(parts)


def failures(a: Analysis) -> pd.DataFrame:
    """One row per trial that has a point with status != "ok": its last such point and the reason."""
    df = a.table
    bad = df[df["status"] != "ok"]
    hp_cols = [c for c in df.columns if c.startswith("hp/")]
    out = []
    for tid, g in bad.groupby("trial_id", sort=True):
        r = g.sort_values("step").iloc[-1]
        out.append({"algorithm": r["algorithm"], "trial": tid, "status": r["status"], "step": r["step"],
                    "reason": str(r.get("error", "") or "(no reason recorded)"), "hyperparameters": _hp_text(r, hp_cols)})
    return pd.DataFrame(out, columns=["algorithm", "trial", "status", "step", "reason", "hyperparameters"])


def sample_ids(base_rows: pd.DataFrame, per_split: int = 3) -> list[str]:
    """A few row ids: per split, one per task (sentence completions first, as they show the most text)."""
    if not {"id", "split", "task"} <= set(base_rows.columns):
        return []
    ids: list[str] = []
    rows = base_rows.assign(_sc=(base_rows.get("kind", pd.Series("", index=base_rows.index)) != "sc"))
    for split in SPLITS:
        part = rows[rows["split"] == split].sort_values(["_sc", "task", "id"], kind="stable")
        picked = part.drop_duplicates("task").head(per_split)
        ids.extend(picked["id"].astype(str))
    return ids


# =============================================================================================
# Formatting helpers.


def _fmt(v: Any, hp: bool = False) -> str:
    if v is None or v == "":
        return "" if v == "" else "—"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        f = float(v)
        if math.isnan(f):
            return "—"
        if hp or (f != 0 and abs(f) < 1e-3) or abs(f) >= 1e5:
            return f"{f:.3g}"
        return f"{f:.3f}"
    return str(v)


def _label(metric: str, how: str | None = None) -> str:
    how = how or direction(metric)
    return f"{metric} ({'higher' if how == 'max' else 'lower'} is better)"


def _html_table(df: pd.DataFrame, cls: str = "") -> str:
    # A zero-width space after each "/" lets long metric names ("forget/Task1/sc") wrap in narrow columns.
    head = "".join(f"<th>{html.escape(str(c)).replace('/', '/&#8203;')}</th>" for c in df.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>"
        for row in df.itertuples(index=False, name=None))
    return f'<div class="scroll"><table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _md_cell(text: str) -> str:
    # Pipes end a cell, newlines end a row, and < > & could turn data into markup in a renderer.
    return html.escape(text, quote=False).replace("|", "\\|").replace("\n", " ").replace("\r", " ")


def _md_table(df: pd.DataFrame) -> str:
    if df.empty:
        return "_(none)_\n"
    lines = ["| " + " | ".join(_md_cell(str(c)) for c in df.columns) + " |",
             "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(_md_cell(_fmt(v)) for v in row) + " |" for row in df.itertuples(index=False, name=None)]
    return "\n".join(lines) + "\n"


def _md_code(text: str) -> str:
    fence = "`" * max(3, 1 + max((len(m) for m in re.findall(r"`+", text)), default=0))
    return f"{fence}text\n{text}\n{fence}\n"


def _colors(algorithms: Sequence[str]) -> dict[str, str]:
    return {alg: PALETTE[i % len(PALETTE)] for i, alg in enumerate(algorithms)}


# =============================================================================================
# Figures: each builder returns (plotly figure for the HTML, matplotlib figure for the PNG).


@dataclass
class Figure:
    name: str
    title: str
    caption: str
    plotly: Any
    mpl: Any


def _mpl(width: float, height: float) -> Any:
    # The object-oriented Figure renders with Agg on savefig and never touches pyplot's global state.
    from matplotlib.figure import Figure as MplFigure

    return MplFigure(figsize=(width, height), dpi=150, layout="constrained")


def _floor_value(run: Run, a: Analysis, metric: str) -> float | None:
    if metric in a.floors and isinstance(run.base_metrics.get(metric), (int, float)):
        return a.floors[metric] * float(run.base_metrics[metric])
    return None


def fig_tradeoff(run: Run, a: Analysis, x: str, y: str, name: str, title: str) -> Figure:
    """All points grey; each algorithm's 2-D front (feasible points, these two metrics) as a coloured line."""
    import plotly.graph_objects as go

    df = a.table
    dx, dy = direction(x), direction(y)
    xs, ys = _num(df, x), _num(df, y)
    ok = np.isfinite(xs) & np.isfinite(ys)
    feasible = df["feasible"].to_numpy(dtype=bool)
    colors = _colors(a.algorithms)
    hover = [f"{r.algorithm} {r.trial_id} step {r.step}" for r in df.itertuples()]
    pf = go.Figure()
    mf = _mpl(7.0, 4.8)
    ax = mf.add_subplot()
    for sel, label, symbol, mk in ((ok & feasible, "feasible points", "circle", "o"),
                                   (ok & ~feasible, "infeasible (below a floor)", "x", "x")):
        if sel.any():
            pf.add_trace(go.Scatter(x=xs[sel], y=ys[sel], mode="markers", name=label,
                                    marker={"color": GREY, "symbol": symbol, "size": 7},
                                    text=[hover[i] for i in np.flatnonzero(sel)], hoverinfo="text+x+y"))
            ax.scatter(xs[sel], ys[sel], c=GREY, marker=mk, s=18, label=label, zorder=1)
    for alg in a.algorithms:
        sel = np.flatnonzero((df["algorithm"] == alg).to_numpy() & feasible & ok)
        if not len(sel):
            continue
        pts = np.column_stack([xs[sel], ys[sel]])
        on = sel[pareto_mask(pts, [dx, dy])]
        on = on[np.argsort(xs[on], kind="stable")]
        pf.add_trace(go.Scatter(x=xs[on], y=ys[on], mode="lines+markers", name=f"{alg} front",
                                line={"color": colors[alg], "width": 2}, marker={"size": 9},
                                text=[hover[i] for i in on], hoverinfo="text+x+y"))
        ax.plot(xs[on], ys[on], "-o", color=colors[alg], lw=1.8, ms=5, label=f"{alg} front", zorder=3)
    bx, by = run.base_metrics.get(x), run.base_metrics.get(y)
    if isinstance(bx, (int, float)) and isinstance(by, (int, float)):
        pf.add_trace(go.Scatter(x=[bx], y=[by], mode="markers", name="base (before unlearning)",
                                marker={"color": "black", "symbol": "star", "size": 14}))
        ax.scatter([bx], [by], c="black", marker="*", s=140, label="base (before unlearning)", zorder=4)
    for metric, horizontal in ((y, True), (x, False)):
        fv = _floor_value(run, a, metric)
        if fv is None:
            continue
        text = f"{metric} floor {a.floors[metric]:g} × base = {fv:.3f}"
        if horizontal:
            pf.add_hline(y=fv, line_dash="dash", line_color="#555", annotation_text=text)
            ax.axhline(fv, ls="--", c="#555", lw=1, label=text)
        else:
            pf.add_vline(x=fv, line_dash="dash", line_color="#555", annotation_text=text)
            ax.axvline(fv, ls="--", c="#555", lw=1, label=text)
    pf.update_layout(title=title, xaxis_title=_label(x), yaxis_title=_label(y), height=520,
                     template="plotly_white", legend={"orientation": "v"})
    ax.set_xlabel(_label(x))
    ax.set_ylabel(_label(y))
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    caption = (f"Every evaluated point in grey; coloured lines join each algorithm's Pareto front in "
               f"{x} vs {y} (feasible points only, both metrics' directions from the registry).")
    return Figure(name, title, caption, pf, mf)


def _step_metrics(a: Analysis) -> list[str]:
    extra = ["mia_score", "final_score"]
    return [m for m in dict.fromkeys([*a.objectives, *extra]) if _has_values(a.table, m)]


def fig_steps(run: Run, a: Analysis) -> Figure | None:
    """Metrics against the evaluated step for each algorithm's best trial."""
    import plotly.graph_objects as go
    from matplotlib.ticker import MaxNLocator
    from plotly.subplots import make_subplots

    df = a.table
    metrics = _step_metrics(a)
    trials = {alg: str(df.loc[i, "trial_id"]) for alg, i in a.best.items() if i is not None}
    if not trials or not metrics:
        return None
    ncols = min(3, len(metrics))
    nrows = math.ceil(len(metrics) / ncols)
    colors = _colors(a.algorithms)
    pf = make_subplots(rows=nrows, cols=ncols, subplot_titles=[_label(m) for m in metrics])
    mf = _mpl(4.0 * ncols, 3.2 * nrows)
    axes = mf.subplots(nrows, ncols, squeeze=False)
    for k, m in enumerate(metrics):
        r, c = divmod(k, ncols)
        ax = axes[r][c]
        for alg, tid in trials.items():
            g = df[df["trial_id"] == tid].sort_values("step")
            steps, vals = g["step"].to_numpy(dtype=float), _num(g, m)
            pf.add_trace(go.Scatter(x=steps, y=vals, mode="lines+markers", name=f"{alg} ({tid})",
                                    line={"color": colors[alg]}, legendgroup=alg, showlegend=k == 0),
                         row=r + 1, col=c + 1)
            ax.plot(steps, vals, "-o", color=colors[alg], ms=4, label=f"{alg} ({tid})")
        base = run.base_metrics.get(m)
        if isinstance(base, (int, float)):
            pf.add_hline(y=float(base), line_dash="dot", line_color="black", row=r + 1, col=c + 1)
            ax.axhline(float(base), ls=":", c="black", lw=1, label="base" if k == 0 else None)
        ax.set_title(_label(m), fontsize=9)
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    for k in range(len(metrics), nrows * ncols):
        axes[k // ncols][k % ncols].set_visible(False)
    axes[0][0].legend(fontsize=7)
    title = "Metrics vs step: each algorithm's best trial"
    pf.update_layout(title=title, height=330 * nrows, template="plotly_white")
    pf.update_xaxes(title_text="step")
    mf.suptitle(title)
    caption = (f"Best trial per algorithm = the trial of its best feasible point by {a.rank_metric}; "
               "dotted line: the base model before unlearning.")
    return Figure("metrics_vs_step", title, caption, pf, mf)


def fig_hypervolume(a: Analysis, history: pd.DataFrame) -> Figure:
    import plotly.graph_objects as go
    from matplotlib.ticker import MaxNLocator

    colors = _colors(a.algorithms)
    pf = go.Figure()
    mf = _mpl(7.0, 4.2)
    ax = mf.add_subplot()
    for scope in ["overall", *a.algorithms]:
        h = history[history["scope"] == scope]
        color = "black" if scope == "overall" else colors[scope]
        pf.add_trace(go.Scatter(x=h["compute"], y=h["hypervolume"], mode="lines+markers", name=scope,
                                line={"color": color, "shape": "hv", "width": 3 if scope == "overall" else 2}))
        ax.plot(h["compute"], h["hypervolume"], "-o", drawstyle="steps-post", color=color, ms=3,
                lw=2.5 if scope == "overall" else 1.5, label=scope)
    title = "Hypervolume vs compute spent"
    xlabel = "cumulative trained steps (trials in finished_at order)"
    ylabel = "hypervolume of feasible points (" + ", ".join(a.objectives) + ")"
    pf.update_layout(title=title, xaxis_title=xlabel, yaxis_title="hypervolume", height=450, template="plotly_white")
    ax.set_xlabel(xlabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("hypervolume")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ref = ", ".join(f"{o}={v:.3g}" for o, v in zip(a.objectives, a.reference, strict=True))
    caption = f"{ylabel}; reference point {ref}. Per algorithm: x counts only that algorithm's trials."
    return Figure("hypervolume_vs_compute", title, caption, pf, mf)


def fig_importance(a: Analysis, imp: pd.DataFrame) -> Figure | None:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    if imp.empty:
        return None
    algs = [alg for alg in a.algorithms if (imp["algorithm"] == alg).any()]
    pf = make_subplots(rows=1, cols=len(algs), subplot_titles=algs, horizontal_spacing=0.12)
    mf = _mpl(max(4.5, 3.6 * len(algs)), 3.6)
    axes = mf.subplots(1, len(algs), squeeze=False)[0]
    image = None
    for k, alg in enumerate(algs):
        sub = imp[imp["algorithm"] == alg]
        hps = list(dict.fromkeys(sub["hyperparameter"]))
        grid = sub.pivot(index="hyperparameter", columns="objective", values="spearman").reindex(
            index=hps, columns=a.objectives)
        z = grid.to_numpy(dtype=float)
        text = [[("" if math.isnan(v) else f"{v:+.2f}") for v in row] for row in z]
        pf.add_trace(go.Heatmap(z=z, x=a.objectives, y=hps, zmin=-1, zmax=1, colorscale="RdBu",
                                text=text, texttemplate="%{text}", showscale=k == len(algs) - 1,
                                colorbar={"title": "ρ (signed)"}), row=1, col=k + 1)
        ax = axes[k]
        image = ax.imshow(np.ma.masked_invalid(z), cmap="RdBu", vmin=-1, vmax=1, aspect="auto")
        ax.set_xticks(range(len(a.objectives)), a.objectives, rotation=30, ha="right", fontsize=8)
        ax.set_yticks(range(len(hps)), hps, fontsize=8)
        for (i, j), v in np.ndenumerate(z):
            if not math.isnan(v):
                ax.text(j, i, f"{v:+.2f}", ha="center", va="center", fontsize=8,
                        color="white" if abs(v) > 0.6 else "black")  # readable on the dark ends of RdBu
        ax.set_title(alg)
    if image is not None:
        mf.colorbar(image, ax=list(axes), label="signed Spearman ρ (+: larger is better)", shrink=0.9)
    title = "Which hyperparameters mattered (Spearman rank correlation)"
    mf.suptitle(title, fontsize=10)
    pf.update_layout(title=title, height=380, template="plotly_white")
    pf.update_yaxes(autorange="reversed")  # first hyperparameter on top, as in the PNG
    caption = ("Spearman ρ of each hyperparameter (and the evaluated step) with each objective over the "
               "algorithm's ok points, signed so that + means a larger value goes with a better objective. "
               "Points of one trial share hyperparameters, so read small samples with care (n in the table).")
    return Figure("hyperparameters", title, caption, pf, mf)


# =============================================================================================
# The report pages.


@dataclass
class Sample:
    split: str
    task: str
    kind: str
    row_id: str
    prompt: str
    reference: str
    before: str
    before_score: float
    after: str
    after_score: float


def load_samples(run: Run, a: Analysis, clean: Any) -> tuple[list[Sample], str]:
    """Sample generations before (base rows) and after (the best point's rows), same ids, text cleaned."""
    if run.base_rows is None:
        return [], "base/rows.parquet is missing: no sample generations."
    if a.best_overall is None:
        return [], "no ok point: no sample generations after unlearning."
    r = a.table.loc[a.best_overall]
    rel = str(r.get("rows_path", "") or "")
    after_rows = _read_rows(run.run_dir, rel, run.read, f"best point: {r['algorithm']} {r['trial_id']} step {r['step']}") \
        if rel else None
    if after_rows is not None:
        note = _check_rows(r.to_dict(), after_rows)
        run.read[-1] = (*run.read[-1][:2], f"{run.read[-1][2]}; {note}")
    where = f"{r['algorithm']} trial {r['trial_id']} at step {r['step']}"
    if after_rows is None or "id" not in after_rows.columns:
        return [], f"rows of the best point ({where}) not found at {rel or '(no rows_path)'}: no samples."
    base = run.base_rows.set_index("id", drop=False)
    after = after_rows.drop_duplicates("id").set_index("id", drop=False)
    out = []
    for rid in sample_ids(run.base_rows):
        if rid not in after.index:
            continue
        b, z = base.loc[rid], after.loc[rid]
        if isinstance(b, pd.DataFrame):
            b = b.iloc[0]
        out.append(Sample(str(b.get("split", "")), str(b.get("task", "")), str(b.get("kind", "")), rid,
                          clean(str(b.get("input", ""))), clean(str(b.get("output", ""))),
                          clean(str(b.get("generation", ""))), float(pd.to_numeric(b.get("score"), errors="coerce")),
                          clean(str(z.get("generation", ""))), float(pd.to_numeric(z.get("score"), errors="coerce"))))
    return out, f"after unlearning = the best feasible point overall by {a.rank_metric}: {where}."


def _setup_rows(run: Run, a: Analysis, redact_on: bool) -> list[tuple[str, str]]:
    s = run.study
    versions = s.get("versions") or {}
    floors = ", ".join(f"{k} ≥ {v:g} × base" if direction(k) == "max" else f"{k} ≤ {v:g} × base"
                       for k, v in a.floors.items()) or "none"
    df = a.table
    n_trials = df["trial_id"].nunique()
    status = df.groupby("trial_id")["status"].agg(lambda x: "ok" if (x == "ok").all() else x[x != "ok"].iloc[0])
    return [
        ("study", str(s.get("name", run.run_dir.name))),
        ("created", str(s.get("created", "—"))),
        ("model", str(s.get("model", "—"))),
        ("data", str(s.get("data", "—"))),
        ("search", f"{s.get('search', '—')} (sampler {s.get('sampler', '—')}), {s.get('num_samples', '—')} samples"),
        ("algorithms", ", ".join(a.algorithms)),
        ("objectives", ", ".join(f"{o} ({d})" for o, d in zip(a.objectives, a.directions, strict=True))),
        ("feasibility floor", floors),
        ("hypervolume reference", ", ".join(f"{o}={v:.4g}" for o, v in zip(a.objectives, a.reference, strict=True))
         + " (0 / 1 for scores in [0, 1]; else the worst of the base model and every point)"),
        ("ranking metric", f"{a.rank_metric} (leaderboard and 'best')"),
        ("seed", str(s.get("seed", "—"))),
        ("workers / ZeRO stage", f"{s.get('workers', '—')} / {s.get('zero', '—')}"),
        ("git commit", str(s.get("git_commit", "—"))),
        ("versions", ", ".join(f"{k} {v}" for k, v in versions.items()) or "—"),
        ("trials", f"{n_trials} ({', '.join(f'{v} {k}' for k, v in status.value_counts().items())})"),
        ("points (trial x step)", f"{len(df)}; feasible {int(df['feasible'].sum())}; on the overall front "
                                  f"{int(df['on_front_overall'].sum())}"),
        ("sample text", "PII redacted (emails, phones, SSNs)" if redact_on else "NOT redacted (--no-redact)"),
    ]


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45} h1{font-size:1.6em} h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;font-size:.85em} td,th{border:1px solid #ddd;padding:.25em .5em;text-align:left;
vertical-align:top} th{background:#f5f5f5} .scroll{overflow-x:auto} .caption{color:#555;font-size:.9em}
.sample{border:1px solid #ddd;border-radius:6px;padding:.5em 1em;margin:1em 0} .sample pre{white-space:pre-wrap;
background:#f8f8f8;padding:.4em;margin:.2em 0 .6em} .warn{color:#a00} nav a{margin-right:1em}
.ba{display:grid;grid-template-columns:1fr 1fr;gap:1em}
"""


def write_html(path: Path, run: Run, a: Analysis, lb: pd.DataFrame, figs: list[Figure], imp: pd.DataFrame,
               samples: list[Sample], samples_note: str, fails: pd.DataFrame, setup: list[tuple[str, str]]) -> None:
    from plotly.offline import get_plotlyjs

    e = html.escape
    title = f"lume-ray report: {setup[0][1]}"
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{e(title)}</title>",
             f"<style>{_CSS}</style><script type='text/javascript'>{get_plotlyjs()}</script></head><body>",
             f"<h1>{e(title)}</h1>",
             "<nav><a href='#setup'>Setup</a><a href='#leaderboard'>Leaderboard</a><a href='#fronts'>Fronts</a>"
             "<a href='#steps'>Steps</a><a href='#hv'>Hypervolume</a><a href='#hp'>Hyperparameters</a>"
             "<a href='#samples'>Samples</a><a href='#failures'>Failures</a></nav>",
             "<h2 id='setup'>Study setup and provenance</h2><table>"]
    parts += [f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in setup]
    parts.append("</table>")
    parts += [f"<p class='warn'>{e(n)}</p>" for n in a.floor_notes]
    parts.append("<h3>Files read</h3>")
    parts.append(_html_table(_read_table(run)))
    if run.experiment_yaml:
        parts.append(f"<details><summary>experiment.yaml</summary><pre>{e(run.experiment_yaml)}</pre></details>")
    parts.append("<h2 id='leaderboard'>Leaderboard: best feasible setting per algorithm</h2>")
    parts.append(f"<p class='caption'>By {e(a.rank_metric)} among points that pass the floor; the base model's "
                 "row is the target before unlearning (forget scores: lower is better).</p>")
    parts.append(_html_table(lb, "leaderboard"))
    parts.append("<h2 id='fronts'>Pareto fronts</h2>")
    parts.append(_html_table(_front_table(a)))
    by_name = {f.name: f for f in figs}
    anchors = {"metrics_vs_step": "steps", "hypervolume_vs_compute": "hv", "hyperparameters": "hp"}
    for f in figs:
        if f.name in anchors:
            heading = {"steps": "Metrics vs step", "hv": "Hypervolume vs compute",
                       "hp": "Which hyperparameters mattered"}[anchors[f.name]]
            parts.append(f"<h2 id='{anchors[f.name]}'>{e(heading)}</h2>")
        parts.append(f.plotly.to_html(full_html=False, include_plotlyjs=False, div_id=f"fig-{f.name}"))
        parts.append(f"<p class='caption'>{e(f.caption)}</p>")
        if f.name == "hyperparameters":
            parts.append(_html_table(importance_table(a, imp)))
    if "hyperparameters" not in by_name:
        parts.append("<h2 id='hp'>Which hyperparameters mattered</h2><p>No numeric hyperparameter varied "
                     "across at least 3 ok points of one algorithm.</p>")
    parts.append("<h2 id='samples'>Sample generations before and after unlearning</h2>")
    parts.append(f"<p class='caption'>{e(samples_note)}</p>")
    for s in samples:
        parts.append(
            f"<div class='sample'><b>{e(s.split)} · {e(s.task)} · {e(s.kind)} · {e(s.row_id)}</b>"
            f"<div>prompt</div><pre>{e(s.prompt)}</pre><div>reference</div><pre>{e(s.reference)}</pre>"
            f"<div class='ba'><div><div>before (base), score {e(_fmt(s.before_score))}</div><pre>{e(s.before)}</pre></div>"
            f"<div><div>after, score {e(_fmt(s.after_score))}</div><pre>{e(s.after)}</pre></div></div></div>")
    parts.append("<h2 id='failures'>Failed and diverged trials</h2>")
    parts.append(_html_table(fails) if not fails.empty else "<p>None.</p>")
    parts.append(f"<p class='caption'>Generated by lume-ray report at {e(time.strftime('%Y-%m-%d %H:%M:%S'))} "
                 "from the stored tables only (nothing re-run).</p></body></html>")
    path.write_text("\n".join(parts), encoding="utf-8")


def write_md(path: Path, run: Run, a: Analysis, lb: pd.DataFrame, figs: list[Figure], imp: pd.DataFrame,
             samples: list[Sample], samples_note: str, fails: pd.DataFrame, setup: list[tuple[str, str]]) -> None:
    out = [f"# lume-ray report: {_md_cell(setup[0][1])}\n", "## Study setup and provenance\n",
           _md_table(pd.DataFrame(setup, columns=["", "value"]))]
    out += [f"> {_md_cell(n)}\n" for n in a.floor_notes]
    out += ["### Files read\n", _md_table(_read_table(run))]
    out += ["## Leaderboard: best feasible setting per algorithm\n",
            f"By {a.rank_metric} among points that pass the floor; first row: the base model before unlearning.\n",
            _md_table(lb), "## Pareto fronts\n", _md_table(_front_table(a))]
    for f in figs:
        out.append(f"### {f.title}\n\n![{f.title}](figures/{f.name}.png)\n\n{_md_cell(f.caption)}\n")
        if f.name == "hyperparameters":
            out.append(_md_table(importance_table(a, imp)))
    out += ["## Sample generations before and after unlearning\n", _md_cell(samples_note) + "\n"]
    for s in samples:
        out.append(f"**{_md_cell(s.split)} · {_md_cell(s.task)} · {_md_cell(s.kind)} · {_md_cell(s.row_id)}**\n")
        out += ["prompt:\n", _md_code(s.prompt), "reference:\n", _md_code(s.reference),
                f"before (base), score {_fmt(s.before_score)}:\n", _md_code(s.before),
                f"after, score {_fmt(s.after_score)}:\n", _md_code(s.after)]
    out += ["## Failed and diverged trials\n", _md_table(fails) if not fails.empty else "None.\n"]
    path.write_text("\n".join(out), encoding="utf-8")


def _read_table(run: Run) -> pd.DataFrame:
    return pd.DataFrame([(p, "" if n is None else n, note) for p, n, note in run.read],
                        columns=["file (relative to RUN_DIR)", "rows", "note"])


def _front_table(a: Analysis) -> pd.DataFrame:
    df = a.table
    rows = [{"scope": "overall", "points": len(df), "feasible": int(df["feasible"].sum()),
             "on front": int(df["on_front_overall"].sum()), "hypervolume": a.hv["overall"]}]
    for alg in a.algorithms:
        g = df[df["algorithm"] == alg]
        rows.append({"scope": alg, "points": len(g), "feasible": int(g["feasible"].sum()),
                     "on front": int(g["on_front_algorithm"].sum()), "hypervolume": a.hv[alg]})
    return pd.DataFrame(rows)


# =============================================================================================
# Entry points.


def _log(msg: str) -> None:
    print(f"[report] {msg}", file=sys.stderr, flush=True)


def build_report(run_dir: str | Path, out_dir: str | Path | None = None, objectives: Sequence[str] | None = None,
                 floors: Mapping[str, float] | None = None, redact: bool = True) -> Path:
    """Write the report for RUN_DIR into ``out_dir`` (default RUN_DIR/report) atomically; return that path.

    ``floors=None`` applies the study's utility floor (default 0.75 of the base utility); ``{}`` applies none.
    """
    t0 = time.time()
    run = load_run(run_dir)
    out = Path(out_dir) if out_dir is not None else run.run_dir / "report"
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a directory")
    _log(f"read {len(run.results)} points from {run.run_dir / 'results.parquet'}")
    a = analyze(run, objectives, floors)
    clean = _redact if redact else (lambda t: t)
    table = a.table.copy()
    if "error" in table.columns:
        table["error"] = table["error"].map(clean)  # error messages may quote data rows
    lb = leaderboard(run, a)
    for alg, i in a.best.items():
        if i is not None:
            r = a.table.loc[i]
            rel = str(r.get("rows_path", "") or "")
            if rel and i != a.best_overall:
                rows = _read_rows(run.run_dir, rel, run.read, f"best {alg} point")
                if rows is not None:
                    run.read[-1] = (*run.read[-1][:2], f"{run.read[-1][2]}; {_check_rows(r.to_dict(), rows)}")
    if run.base_rows is not None:
        idx = [k for k, (p, _, _) in enumerate(run.read) if p == "base/rows.parquet"][0]
        run.read[idx] = (*run.read[idx][:2], f"{run.read[idx][2]}; {_check_rows(run.base_metrics, run.base_rows)}")
    samples, samples_note = load_samples(run, a, clean)
    fails = failures(a)
    fails["reason"] = fails["reason"].map(clean)
    _log("computing hypervolume history and hyperparameter correlations")
    history = hypervolume_history(a)
    imp = hp_importance(a)
    figs: list[Figure] = []
    if _has_values(a.table, "forget_efficacy") and _has_values(a.table, "retain_score"):
        figs.append(fig_tradeoff(run, a, "forget_efficacy", "retain_score", "forget_vs_retain",
                                 "Forget efficacy vs retain score"))
    if _has_values(a.table, "forget_efficacy") and _has_values(a.table, "utility"):
        figs.append(fig_tradeoff(run, a, "forget_efficacy", "utility", "forget_vs_utility",
                                 "Forget efficacy vs utility"))
    figs += [f for f in (fig_steps(run, a), fig_hypervolume(a, history), fig_importance(a, imp)) if f is not None]
    setup = _setup_rows(run, a, redact)

    with atomic_dir(out) as tmp:
        (tmp / "figures").mkdir()
        table.to_parquet(tmp / "results.parquet", index=False)
        table.to_csv(tmp / "pareto.csv", index=False)
        history.to_csv(tmp / "hypervolume.csv", index=False)
        for f in figs:
            _log(f"figure {f.name}")
            f.mpl.savefig(tmp / "figures" / f"{f.name}.png")
        write_html(tmp / "report.html", run, a, lb, figs, imp, samples, samples_note, fails, setup)
        write_md(tmp / "report.md", run, a, lb, figs, imp, samples, samples_note, fails, setup)
    _log(f"wrote {out} in {time.time() - t0:.1f} s")
    return out


def parse_floors(pairs: Sequence[tuple[str, str]] | None) -> dict[str, float] | None:
    """``[("utility", "0.75")]`` -> ``{"utility": 0.75}``; None stays None (the study's default floor)."""
    if pairs is None:
        return None
    floors: dict[str, float] = {}
    for key, value in pairs:
        try:
            floors[key] = float(value)
        except ValueError:
            raise ValueError(f"--floor {key}={value}: not a number (a fraction of the base value, "
                             "e.g. utility=0.75)") from None
        direction(key)  # unknown metric -> ValueError with the valid names
    return floors


