"""[7] Analysis: a sweep's run directory -> feasibility, Pareto fronts, hypervolumes, the answer, tables.

Input:  RUN_DIR, read through :class:`lume_ray.run_dir.RunDir` (docs/run_dir.md): results.parquet (one row
        per trial and evaluated step), study.json, experiment.yaml, base/metrics.json + base/rows.parquet,
        and the per-point rows.parquet files of the points the report shows.
Output: plain data (frames, dataclasses, sentences) that :mod:`lume_ray.report.render` lays out; nothing
        here draws or writes a file.

Conventions (the report states them too):
- Objective directions come from the metric registry (:func:`lume_ray.evaluate.metrics.direction`).
- A point is *feasible* when its status is "ok" and it passes every floor. The utility floor is
  :class:`lume_ray.evaluate.metrics.Floor` (relative to the base model's utility and/or absolute), decided by
  ``Floor.met``: the same call that wrote ``utility_floor_met`` into metrics.json, so the two never disagree.
  ``--floor metric=f`` for any other metric is relative: ``value >= f x base`` ("max"), ``<= f x base`` ("min").
- Fronts are computed among feasible points; ties and duplicates all stay on a front (moocore, keep_weakly).
- Hypervolume (moocore, :mod:`lume_ray.report.pareto`) against one reference point per report: per
  objective the natural worst value (0 when maximized, 1 when minimized) for scores in [0, 1], else the worst
  of the base model and every point. A comparison of several runs computes it once over all of them.
- The *best trade-off* point of an algorithm is its feasible point with the highest ``final_score`` (the
  challenge's ranking), else ``task_aggregate`` (the harmonic mean of forgetting and retention), else the
  first objective, whichever the run recorded.
- Compute is unlearning steps: a trial costs its ``trained_steps`` (failed ones too). A full grid of the same
  space costs (product of each searched parameter's grid size) x the algorithm's ``steps.max``, since one
  trial trained to ``max`` passes through every evaluated step.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lume_ray.config import AlgorithmSpace, Floor, ParamSpec
from lume_ray.data import SPLITS
from lume_ray.evaluate.metrics import METRICS, direction
from lume_ray.evaluate.protocol import TASK_SCORE_NAMES
from lume_ray.report.pareto import hypervolume, pareto_mask
from lume_ray.run_dir import RunDir

DEFAULT_OBJECTIVES = ("forget_efficacy", "retain_score", "utility")
QUOTED = ("forget_efficacy", "retain_score", "utility")  # what the answer quotes of every best point
RANK_METRICS = ("final_score", "task_aggregate")  # the best trade-off, in order of preference
GRID_POINTS_PER_RANGE = 3  # a range without `grid:` counts as 3 evenly spaced values (log scale when log)
REQUIRED = ("algorithm", "trial_id", "step", "status")

ReadLog = list[tuple[str, int | None, str]]  # (path relative to RUN_DIR, rows or None, note)


# =============================================================================================
# Reading a run directory.


@dataclass
class Run:
    """Everything the report reads from one RUN_DIR, plus the list of files read."""

    rd: RunDir
    results: pd.DataFrame
    study: dict[str, Any]
    experiment_yaml: str
    spaces: dict[str, AlgorithmSpace]  # algorithm -> search space from experiment.yaml ({} when unknown)
    base_metrics: dict[str, Any]
    base_rows: pd.DataFrame | None
    read: ReadLog = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def run_dir(self) -> Path:
        return self.rd.root

    @property
    def name(self) -> str:
        return str(self.study.get("name") or self.run_dir.name)


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = v
    return out


def read_spaces(raw: Any) -> dict[str, AlgorithmSpace]:
    """The algorithms' search spaces of an experiment.yaml, either as `lume-ray sweep` dumps it
    (``{lr: {kind, values, grid}, steps: {max, points}, params: {...}}``) or as a user writes it."""
    from lume_ray.config import Experiment

    if not isinstance(raw, Mapping) or not isinstance(raw.get("algorithms"), Mapping):
        return {}
    algorithms = raw["algorithms"]
    try:
        return {algo: AlgorithmSpace.model_validate(space) for algo, space in algorithms.items()}
    except ValueError:  # pydantic's ValidationError is a ValueError: read the YAML format (lr, steps, params side by side)
        return dict(Experiment.model_validate({"name": str(raw.get("name") or "run"), "algorithms": algorithms}).algorithms)


def load_run(run_dir: str | Path) -> Run:
    """Read RUN_DIR; a missing directory, results table or column -> ValueError naming the path."""
    rd = RunDir(run_dir)
    if not rd.root.is_dir():
        raise ValueError(f"run directory {rd.root} does not exist (expected the output folder of `lume-ray sweep`)")
    path = rd.results_path
    if not path.is_file():
        raise ValueError(f"{path} not found: {rd.root} is not a finished sweep's run directory")
    try:
        results = pd.read_parquet(path)
    except Exception as e:  # pyarrow raises several types for a damaged file
        raise ValueError(f"{path}: cannot be read as parquet ({type(e).__name__}: {e})") from None
    missing = [c for c in REQUIRED if c not in results.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)} (required: {', '.join(REQUIRED)})")
    results = results.copy()
    for col in ("trial_id", "algorithm", "status"):
        results[col] = results[col].astype(str)
    results["error"] = results["error"].fillna("").astype(str) if "error" in results.columns else ""
    results = results.sort_values(["algorithm", "trial_id", "step"], kind="stable").reset_index(drop=True)
    read: ReadLog = [(path.name, len(results), "one row per trial and evaluated step")]
    notes: list[str] = []

    try:
        study = rd.read_study()
    except json.JSONDecodeError as e:
        raise ValueError(f"{rd.study_path}: not valid JSON ({e})") from None
    read.append((rd.study_path.name, None, "" if rd.exists() else "missing"))

    experiment_yaml, spaces = "", {}
    if rd.experiment_path.is_file():
        import yaml

        experiment_yaml = rd.experiment_path.read_text()
        try:
            spaces = read_spaces(yaml.safe_load(experiment_yaml))
            read.append((rd.experiment_path.name, None, f"search spaces of {', '.join(spaces) or 'no algorithm'}"))
        except (ValueError, yaml.YAMLError) as e:
            first = str(e).splitlines()[0]
            read.append((rd.experiment_path.name, None, f"search spaces unreadable ({first})"))
            notes.append(f"experiment.yaml: search spaces unreadable ({first}): no grid budget, no boundary check")
    else:
        read.append((rd.experiment_path.name, None, "missing: no grid budget, no boundary check"))

    try:
        base = rd.base_metrics()
    except json.JSONDecodeError as e:
        raise ValueError(f"{rd.base / 'metrics.json'}: not valid JSON ({e})") from None
    read.append(("base/metrics.json", None, "" if base is not None else "missing"))
    base_rows = read_rows(rd, "base/rows.parquet", read, "the target before unlearning")
    return Run(rd, results, study if isinstance(study, dict) else {}, experiment_yaml, spaces,
               _flatten(base or {}), base_rows, read, notes)


def read_rows(rd: RunDir, rel: str, read: ReadLog, note: str) -> pd.DataFrame | None:
    """A per-row table (rows.parquet) of the run, logged in ``read``; None when it is missing."""
    path = rd.root / rel
    if not rel or not path.is_file():
        read.append((rel or "(no rows_path)", None, f"missing ({note})"))
        return None
    rows = pd.read_parquet(path)
    if "id" in rows.columns:
        rows["id"] = rows["id"].astype(str)
    read.append((rel, len(rows), note))
    return rows


def check_rows(stored: Mapping[str, Any], rows: pd.DataFrame | None) -> str:
    """A one-phrase consistency check of stored task scores against those re-derived from the rows."""
    from lume_ray.evaluate.protocol import task_scores

    if rows is None or not {"split", "task", "kind", "score"} <= set(rows.columns):
        return "task scores not re-derivable"
    derived = {k: v for k, v in task_scores(rows[["split", "task", "kind", "score"]].to_dict("records")).items()
               if v is not None}
    diffs = [abs(derived[k] - float(stored[k])) for k in derived
             if isinstance(stored.get(k), int | float) and math.isfinite(float(stored[k]))]
    if not diffs:
        return "task scores not re-derivable"
    worst = max(diffs)
    verdict = "match" if worst <= 1e-6 else "DIFFER from the stored ones"
    return f"{len(diffs)} task scores re-derived from rows {verdict} (max |diff| {worst:.1e})"


# =============================================================================================
# Floors: which points are feasible.


@dataclass(frozen=True)
class Floors:
    """The floors a point must pass: ``utility`` (a :class:`Floor`, relative and/or absolute; None: no utility
    floor) and relative floors on other metrics (``metric -> fraction of the base model's value``)."""

    utility: Floor | None = None
    relative: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, floors: Floors | Mapping[str, float | Floor]) -> Floors:
        """``{"utility": 0.75}`` or ``{"utility": Floor(...), "mia_score": 0.5}`` -> Floors."""
        if isinstance(floors, Floors):
            return floors
        relative: dict[str, float] = {}
        utility = None
        for name, value in floors.items():
            direction(name)  # unknown or record-only metric -> ValueError with the valid names
            if name == "utility":
                utility = value if isinstance(value, Floor) else Floor(relative=_fraction(name, value), absolute=None)
            elif isinstance(value, Floor):
                raise ValueError(f"floor {name}: only utility takes an absolute floor; give a fraction, e.g. {name}=0.5")
            else:
                relative[name] = _fraction(name, value)
        return cls(utility, relative)

    @classmethod
    def from_study(cls, study: Mapping[str, Any]) -> Floors:
        """study.json's ``utility_floor`` (``{"relative", "absolute"}``; a bare number is relative; absent: 0.75)."""
        raw = study.get("utility_floor", {"relative": 0.75})
        if raw is None:
            return cls()
        if isinstance(raw, Mapping):
            floor = Floor(relative=raw.get("relative"), absolute=raw.get("absolute"))
        else:
            floor = Floor(relative=float(raw), absolute=None)
        return cls(None if floor.relative is None and floor.absolute is None else floor)

    def describe(self, base_metrics: Mapping[str, Any]) -> list[str]:
        out = []
        u, base_utility = self.utility, _number(base_metrics.get("utility"))
        if u is not None:
            parts = [f"utility ≥ {u.absolute:g}"] if u.absolute is not None else []
            if u.relative is not None:
                parts.append(f"utility ≥ {u.relative:g} × base"
                             + (f" = {u.relative * base_utility:.3f}" if base_utility is not None else ""))
            out.append(" and ".join(parts) or "none")
        for name, f in self.relative.items():
            sign = "≥" if direction(name) == "max" else "≤"
            base = _number(base_metrics.get(name))
            out.append(f"{name} {sign} {f:g} × base" + (f" = {f * base:.3f}" if base is not None else ""))
        return out


def _fraction(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"floor {name}={value!r}: the fraction must be a finite number, e.g. utility=0.75")
    return float(value)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def parse_floors(pairs: Sequence[tuple[str, str]] | None) -> Floors | None:
    """``--floor`` pairs -> Floors; None stays None (the study's own floor).

    ``utility=0.75`` / ``utility.relative=0.75``: utility >= 0.75 x base; ``utility.absolute=0.371``: utility
    >= 0.371 (both may be given); ``metric=f`` for any other registered metric: relative to the base model.
    The floors given replace the study's.
    """
    if pairs is None:
        return None
    parts: dict[str, float | None] = {}
    relative: dict[str, float] = {}
    for key, text in pairs:
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"--floor {key}={text}: not a number (a fraction of the base value, "
                             "e.g. utility=0.75, or utility.absolute=0.371)") from None
        name, _, part = key.partition(".")
        direction(name)  # unknown metric -> ValueError with the valid names
        if name == "utility":
            if part not in ("", "relative", "absolute"):
                raise ValueError(f"--floor {key}: unknown part {part!r} (valid: utility, utility.relative, "
                                 "utility.absolute)")
            parts[part or "relative"] = value
        elif part:
            raise ValueError(f"--floor {key}: only utility has relative/absolute parts; use {name}=FRACTION")
        else:
            relative[name] = _fraction(name, value)
    utility = Floor(relative=parts.get("relative"), absolute=parts.get("absolute")) if parts else None
    return Floors(utility, relative)


def feasibility(df: pd.DataFrame, floors: Floors | Mapping[str, float | Floor],
                base_metrics: Mapping[str, Any]) -> np.ndarray:
    """Per row: status "ok" (when the column exists) and every floor met. NaN values fail a floor.
    A floor on a metric that is not a column, or a relative floor without the base model's value -> ValueError."""
    floors = Floors.of(floors)
    ok = np.ones(len(df), dtype=bool)
    if "status" in df.columns:
        ok &= (df["status"].astype(str) == "ok").to_numpy()
    checks: list[tuple[str, Callable[[float | None, float | None], bool | None]]] = []
    if floors.utility is not None:
        checks.append(("utility", floors.utility.met))
    for name, f in floors.relative.items():
        checks.append((name, _relative_check(name, f)))
    for name, met in checks:
        if name not in df.columns:
            raise ValueError(f"floor metric {name!r} is not a column of the results "
                             f"(metric columns: {', '.join(metric_columns(df)) or 'none'})")
        base = _number(base_metrics.get(name))
        needs_base = name != "utility" or (floors.utility is not None and floors.utility.relative is not None)
        if needs_base and base is None:
            raise ValueError(f"floor on {name!r} needs the base model's {name!r} in base/metrics.json "
                             f"(found {base_metrics.get(name)!r})")
        col = num(df, name)
        ok &= np.array([met(None if math.isnan(v) else float(v), base) is True for v in col], dtype=bool)
    return ok


def _relative_check(name: str, fraction: float) -> Callable[[float | None, float | None], bool | None]:
    """A relative floor on any metric: a "max" metric is exactly a relative :class:`Floor`; a "min" one the
    mirror image (a ceiling), with the same tolerance."""
    if direction(name) == "max":
        return Floor(relative=fraction, absolute=None).met

    def ceiling(value: float | None, base: float | None) -> bool | None:
        if value is None or base is None or not math.isfinite(value):
            return None
        threshold = fraction * base
        return bool(value <= threshold + 1e-9 * max(1.0, abs(threshold)))

    return ceiling


def apply_floors(df: pd.DataFrame, floors: Floors | Mapping[str, float | Floor],
                 base_metrics: Mapping[str, Any]) -> pd.Series:
    """:func:`feasibility` as a boolean Series on ``df``'s index."""
    return pd.Series(feasibility(df, floors, base_metrics), index=df.index, dtype=bool)


# =============================================================================================
# The analysis of one run.


def num(df: pd.DataFrame, col: str) -> np.ndarray:
    """A column as floats (NaN for missing / non-numeric values)."""
    if col not in df.columns:
        return np.full(len(df), np.nan)
    return pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float)


def has_values(df: pd.DataFrame, col: str) -> bool:
    """The column exists and holds a finite number (utility is None throughout without a utility set)."""
    return col in df.columns and bool(np.isfinite(num(df, col)).any())


def metric_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if c in METRICS]


def hp_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if c.startswith("hp/")]


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
    return np.array([_number(run.base_metrics.get(o)) if _number(run.base_metrics.get(o)) is not None else np.nan
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
        elif u is not None and u.relative is not None and _number(run.base_metrics.get("utility")) is None:
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


# =============================================================================================
# Compute: hypervolume against steps spent, and the grid's budget.


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


# =============================================================================================
# The boundary check, the best points and the answer.


def front_hyperparameters(a: Analysis, algorithm: str) -> list[dict[str, Any]]:
    """The hyperparameters of every point on ``algorithm``'s (feasible) front."""
    df = a.table
    front = df[(df["algorithm"] == algorithm) & df["on_front_algorithm"]]
    out = []
    for _, r in front.iterrows():
        out.append({c.removeprefix("hp/"): r[c] for c in hp_columns(df) if not _missing(r[c])})
    return out


def _missing(v: Any) -> bool:
    return v is None or (np.isscalar(v) and bool(pd.isna(v)))


def boundary(run: Run, a: Analysis) -> dict[str, list[str]]:
    """Per algorithm, the searched parameters whose front points sit on an edge of the search box."""
    from lume_ray.search.space import boundary_warnings

    return {alg: boundary_warnings(run.spaces[alg], front_hyperparameters(a, alg), alg)
            for alg in a.algorithms if alg in run.spaces}


def hp_text(row: pd.Series | Mapping[str, Any], hp_cols: Sequence[str]) -> str:
    parts = [f"{c.removeprefix('hp/')}={fmt(row.get(c), hp=True)}" for c in hp_cols if not _missing(row.get(c))]
    return ", ".join(parts)


def fmt(v: Any, hp: bool = False) -> str:
    """A table cell: 3 decimals for scores, 3 significant digits for hyperparameters and tiny values."""
    if v is None or v is pd.NA:
        return "—"
    if isinstance(v, bool | np.bool_):
        return "yes" if v else "no"
    if isinstance(v, int | np.integer):
        return str(int(v))
    if isinstance(v, float | np.floating):
        f = float(v)
        if math.isnan(f):
            return "—"
        if hp or (f != 0 and abs(f) < 1e-3) or abs(f) >= 1e5:
            return f"{f:.3g}"
        return f"{f:.3f}"
    return str(v)


def label(metric: str) -> str:
    return metric.replace("_", " ")


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
    df = a.table
    hp_cols = hp_columns(df)
    quoted = [m for m in dict.fromkeys([*QUOTED, *a.objectives]) if has_values(df, m)]
    floor_text = "; ".join(a.floors.describe(run.base_metrics))
    paragraphs: dict[str, str] = {}
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
            costs = [_cost(m, float(r[m]), _number(run.base_metrics.get(m)))
                     for m in ("retain_score", "utility") if has_values(df, m) and _number(r.get(m)) is not None]
            if costs:
                parts.append("Against the model before unlearning it " + " and ".join(costs) + ".")
            parts.append(f"It passes the floor ({floor_text})." if floor_text else "No floor applied.")
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


# =============================================================================================
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


# =============================================================================================
# Sample generations and provenance.


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


def sample_ids(base_rows: pd.DataFrame, per_split: int = 3) -> list[str]:
    """A few row ids: per split, one per task (sentence completions first, as they show the most text)."""
    if not {"id", "split", "task"} <= set(base_rows.columns):
        return []
    ids: list[str] = []
    kind = base_rows["kind"] if "kind" in base_rows.columns else pd.Series("", index=base_rows.index)
    rows = base_rows.assign(_qa=(kind != "sc"))
    for split in SPLITS:
        part = rows[rows["split"] == split].sort_values(["_qa", "task", "id"], kind="stable")
        ids.extend(part.drop_duplicates("task").head(per_split)["id"].astype(str))
    return ids


def load_samples(run: Run, a: Analysis, clean: Callable[[str], str]) -> tuple[list[Sample], str]:
    """Sample generations before (base rows) and after (the best point's rows), same ids, text cleaned."""
    if run.base_rows is None:
        return [], "base/rows.parquet is missing: no sample generations."
    if a.best_overall is None:
        return [], "no ok point: no sample generations after unlearning."
    r = a.table.loc[a.best_overall]
    rel = str(r.get("rows_path", "") or "")
    where = f"{r['algorithm']} trial {r['trial_id']} at step {int(r['step'])}"
    after_rows = read_rows(run.rd, rel, run.read, f"best point: {where}")
    if after_rows is not None:
        run.read[-1] = (*run.read[-1][:2], f"{run.read[-1][2]}; {check_rows(r.to_dict(), after_rows)}")
    if after_rows is None or "id" not in after_rows.columns:
        return [], f"rows of the best point ({where}) not found at {rel or '(no rows_path)'}: no samples."
    base = run.base_rows.drop_duplicates("id").set_index("id", drop=False)
    after = after_rows.drop_duplicates("id").set_index("id", drop=False)
    out = []
    for rid in sample_ids(run.base_rows):
        if rid not in after.index:
            continue
        b, z = base.loc[rid], after.loc[rid]
        out.append(Sample(str(b.get("split", "")), str(b.get("task", "")), str(b.get("kind", "")), rid,
                          clean(str(b.get("input", ""))), clean(str(b.get("output", ""))),
                          clean(str(b.get("generation", ""))), float(pd.to_numeric(b.get("score"), errors="coerce")),
                          clean(str(z.get("generation", ""))), float(pd.to_numeric(z.get("score"), errors="coerce"))))
    return out, f"after unlearning = the best feasible point overall by {a.rank_metric}: {where}."


def check_best_rows(run: Run, a: Analysis) -> None:
    """Re-derive the task scores of the base model and of each algorithm's best point from their rows."""
    if run.base_rows is not None:
        k = next(k for k, (p, _, _) in enumerate(run.read) if p == "base/rows.parquet")
        run.read[k] = (*run.read[k][:2], f"{run.read[k][2]}; {check_rows(run.base_metrics, run.base_rows)}")
    for alg, i in a.best.items():
        if i is None or i == a.best_overall:
            continue  # the overall best is read (and checked) with the samples
        r = a.table.loc[i]
        rows = read_rows(run.rd, str(r.get("rows_path", "") or ""), run.read, f"best {alg} point")
        if rows is not None:
            run.read[-1] = (*run.read[-1][:2], f"{run.read[-1][2]}; {check_rows(r.to_dict(), rows)}")


def provenance(run: Run, a: Analysis, redacted: bool) -> list[tuple[str, str]]:
    s = run.study
    versions = s.get("versions") or {}
    df = a.table
    status = df.groupby("trial_id")["status"].agg(lambda x: "ok" if (x == "ok").all() else x[x != "ok"].iloc[-1])
    return [
        ("study", run.name),
        ("run directory", str(run.run_dir)),
        ("created", str(s.get("created", "—"))),
        ("model", str(s.get("model", "—"))),
        ("data", str(s.get("data", "—"))),
        ("sampler", f"{s.get('sampler', '—')}, {s.get('num_samples', '—')} trials per algorithm"),
        ("algorithms", ", ".join(a.algorithms)),
        ("objectives", ", ".join(f"{o} ({d})" for o, d in zip(a.objectives, a.directions, strict=True))),
        ("feasibility floor", "; ".join(a.floors.describe(run.base_metrics)) or "none"),
        ("hypervolume reference", ", ".join(f"{o}={v:.4g}" for o, v in zip(a.objectives, a.reference, strict=True))
         + " (0 / 1 for scores in [0, 1]; else the worst of the base model and every point)"),
        ("best trade-off metric", f"{a.rank_metric} (answer, leaderboard, samples)"),
        ("seed", str(s.get("seed", "—"))),
        ("workers / ZeRO stage", f"{s.get('workers', '—')} / {s.get('zero', '—')}"),
        ("git commit", str(s.get("git_commit", "—"))),
        ("versions", ", ".join(f"{k} {v}" for k, v in versions.items()) or "—"),
        ("trials", f"{df['trial_id'].nunique()} ({', '.join(f'{v} {k}' for k, v in status.value_counts().items())})"),
        ("points (trial × step)", f"{len(df)}; feasible {int(df['feasible'].sum())}; on the overall front "
                                  f"{int(df['on_front_overall'].sum())}"),
        ("sample text", "PII redacted (emails, phones, SSNs)" if redacted else "NOT redacted (--no-redact)"),
    ]


def read_table(run: Run) -> pd.DataFrame:
    return pd.DataFrame([(p, "" if n is None else n, note) for p, n, note in run.read],
                        columns=["file (relative to RUN_DIR)", "rows", "note"])
