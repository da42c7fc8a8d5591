"""Which evaluation point to export: ``TRIAL_ID@STEP``, or an algorithm's best point as the report picks it.

Input:  RUN_DIR (read by the report's own :func:`~lume_ray.report.load_run` / :func:`~lume_ray.report.analyze`),
        and ``--point TRIAL_ID@STEP`` or ``--best ALGORITHM`` [``--by OBJECTIVE``] [``--floor ...``].
Output: a :class:`Selected` point (trial, step, algorithm, hyperparameters, its recorded metrics.json, where its
        model directory is or was); bad input is a one-line :class:`~lume_ray.config.ConfigError` naming the
        valid choices (the trials and their evaluated steps, the nearest trial id, the floor nothing passes).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lume_ray.config import ConfigError
from lume_ray.run_dir import STEP_DIR

LISTED = 8  # trials listed by name in an error; beyond that, the nearest ones by edit distance


@dataclass(frozen=True)
class Selected:
    """One evaluation point of a sweep, chosen for export."""

    run_dir: Path
    trial_id: str
    step: int
    algorithm: str
    hp: dict[str, Any]  # lr and the algorithm's parameters (trial.json)
    metrics: dict[str, Any]  # the point's recorded metrics.json
    model_dir: Path  # where its model directory is, or was before the sweep deleted it
    how: str  # why this point: "--point ...", or the report's answer for --best
    floor: str = ""  # the floors it passes (--best), as the report words them

    @property
    def kept(self) -> bool:
        """Whether the point's model directory is still on disk (``sweep.keep_models``)."""
        d = self.model_dir
        return (d / "config.json").is_file() and any(d.glob("*.safetensors"))

    @property
    def label(self) -> str:
        return f"{self.trial_id}@{self.step}"


def evaluated(results: Any) -> dict[str, list[int]]:
    """Trial id -> its evaluated steps (the status "ok" rows of results.parquet), in order."""
    ok = results[results["status"] == "ok"]
    out: dict[str, list[int]] = {}
    for trial_id, step in zip(ok["trial_id"].astype(str), ok["step"].astype(int), strict=True):
        out.setdefault(trial_id, []).append(int(step))
    return {t: sorted(set(s)) for t, s in sorted(out.items())}


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance: insertions, deletions and substitutions that turn ``a`` into ``b``."""
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def _steps(steps: Sequence[int]) -> str:
    return ", ".join(str(s) for s in steps)


def parse_point(text: str, points: Mapping[str, Sequence[int]]) -> tuple[str, int]:
    """``TRIAL_ID@STEP`` -> (trial id, step), checked against the evaluated points."""
    trial_id, at, step_text = text.rpartition("@")
    if not at or not trial_id:
        raise ConfigError(f"--point {text}: expected TRIAL_ID@STEP, e.g. "
                          f"{next(iter(points), 'abc123')}@{next(iter(points.values()), [20])[-1]}")
    if trial_id not in points:
        valid = [f"{t}@{s}" for t, steps in points.items() for s in steps]
        if len(points) <= LISTED:
            raise ConfigError(f"--point {text}: no trial {trial_id!r} in this run (valid: {', '.join(valid)})")
        near = sorted(points, key=lambda t: (edit_distance(trial_id, t), t))[:3]
        raise ConfigError(f"--point {text}: no trial {trial_id!r} in this run ({len(points)} trials; nearest: "
                          + ", ".join(f"{t} (steps {_steps(points[t])})" for t in near) + ")")
    try:
        step = int(step_text.removeprefix("step_"))
    except ValueError:
        raise ConfigError(f"--point {text}: step {step_text!r} is not a number (trial {trial_id} was evaluated at "
                          f"steps {_steps(points[trial_id])})") from None
    if step not in points[trial_id]:
        raise ConfigError(f"--point {text}: trial {trial_id} was not evaluated at step {step} (its evaluated steps: "
                          f"{_steps(points[trial_id])})")
    return trial_id, step


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(float(value))


def best_point(run: Any, algorithm: str, by: str | None, floors: Any) -> tuple[str, int, str, str]:
    """The report's answer for ``algorithm``: its best feasible point by the report's rank metric (final_score
    when recorded), or by ``by`` in the metric's registered direction. Returns (trial, step, how, floor text)."""
    import numpy as np

    from lume_ray.evaluate.metrics import direction
    from lume_ray.report import analyze

    a = analyze(run, floors=floors)
    if algorithm not in a.algorithms:
        raise ConfigError(f"--best {algorithm}: no trial of {algorithm!r} in this run "
                          f"(algorithms: {', '.join(a.algorithms) or 'none'})")
    df = a.table
    floor = "; ".join(a.floors.describe(run.base_metrics))
    metric = by or a.rank_metric
    sign = 1.0 if direction(metric) == "max" else -1.0  # unknown or record-only -> ValueError naming the valid ones
    if metric not in df.columns:
        raise ConfigError(f"--by {metric}: not recorded in this run's results.parquet")
    values = df[metric].to_numpy(dtype=float, na_value=np.nan)
    mine = (df["algorithm"] == algorithm).to_numpy()
    feasible = mine & df["feasible"].to_numpy(dtype=bool) & np.isfinite(values)
    if not feasible.any():
        ok = mine & (df["status"] == "ok").to_numpy() & np.isfinite(values)
        if not ok.any():
            raise ConfigError(f"--best {algorithm}: no evaluated point with a {metric} value (every trial of "
                              f"{algorithm} ended before its first evaluation, or {metric} was never recorded)")
        i = int(np.flatnonzero(ok)[np.argmax(sign * values[ok])])
        r = df.loc[i]
        raise ConfigError(f"--best {algorithm}: no feasible point (floor: {floor or 'none'}); its best by {metric} is "
                          f"trial {r['trial_id']} at step {int(r['step'])} ({metric} {float(r[metric]):.4g}"
                          + (f", utility {float(r['utility']):.4g}" if "utility" in df.columns
                             and _finite(r.get("utility")) else "")
                          + f"): export it with --point {r['trial_id']}@{int(r['step'])}, or lower the floor with "
                            "--floor")
    if by is None and a.best.get(algorithm) is not None:  # exactly the report's answer
        i = int(a.best[algorithm])  # type: ignore[arg-type]
    else:
        i = int(np.flatnonzero(feasible)[np.argmax(sign * values[feasible])])
    r = df.loc[i]
    how = f"the best feasible point of {algorithm} by {metric} ({float(r[metric]):.4g}, {direction(metric)}imized)"
    return str(r["trial_id"]), int(r["step"]), how, floor


def select(run_dir: str | Path, *, point: str | None = None, best: str | None = None, by: str | None = None,
           floors: Any = None) -> Selected:
    """The point to export (exactly one of ``point`` and ``best``); a one-line ConfigError on bad input."""
    from lume_ray.report import load_run
    from lume_ray.train.job import read_points

    if (point is None) == (best is None):
        raise ConfigError("give exactly one of --point TRIAL_ID@STEP and --best ALGORITHM")
    if point is not None and (by is not None or floors is not None):
        raise ConfigError("--by and --floor choose the point of --best ALGORITHM; --point names it already")
    run = load_run(run_dir)  # no results.parquet -> ValueError naming it
    points = evaluated(run.results)
    if not points:
        raise ConfigError(f"{run.rd.results_path}: no evaluated point (every trial ended before its first "
                          "evaluation): nothing to export")
    floor = ""
    if point is not None:
        trial_id, step = parse_point(point, points)
        how = f"--point {trial_id}@{step}"
    else:
        assert best is not None
        trial_id, step, how, floor = best_point(run, best, by, floors)
    rd = run.rd
    info = rd.read_trial(trial_id)
    if info is None:
        raise ConfigError(f"{rd.trial(trial_id) / 'trial.json'} not found: the run directory is incomplete")
    metrics_path = rd.point(trial_id, step) / "metrics.json"
    if not metrics_path.is_file():
        raise ConfigError(f"{metrics_path} not found: the run directory is incomplete")
    metrics = json.loads(metrics_path.read_text())
    train = rd.trial(trial_id) / "train"
    recorded = {p.step: Path(p.model_dir) for p in read_points(train)}
    model_dir = recorded.get(step, train / "points" / STEP_DIR.format(step))
    if not model_dir.is_dir():  # the run directory was moved since the sweep: the same place under it
        model_dir = train / "points" / STEP_DIR.format(step)
    return Selected(rd.root, trial_id, step, str(info["algorithm"]), dict(info.get("hp") or {}), metrics, model_dir,
                    how, floor)


def check_out(out: str | Path) -> Path:
    """``--out`` must not exist, or be an empty directory (nothing is ever written into a user's files)."""
    path = Path(out)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ConfigError(f"--out {out}: exists and is not an empty directory (give a new directory)")
    return path
