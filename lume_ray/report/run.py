"""[4] Reading a run: RUN_DIR -> :class:`Run` (results, study, search spaces, the base model) and the files read.

Input:  RUN_DIR, read through :class:`lume_ray.run_dir.RunDir` (docs/run_dir.md): results.parquet (one row
        per trial and evaluated step), study.json, experiment.yaml, base/metrics.json + base/rows.parquet,
        and the per-point rows.parquet files of the points the report shows.
Output: :class:`Run` (plain data), its log of every file read with a note (:func:`read_table`), and a
        consistency check of stored task scores against those re-derived from the rows (:func:`check_rows`).
        A missing directory, results table or column -> ValueError naming the path.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from lume_ray.config import AlgorithmSpace, Experiment
from lume_ray.evaluate.protocol import task_scores
from lume_ray.run_dir import RunDir

REQUIRED = ("algorithm", "trial_id", "step", "status")
ReadLog = list[tuple[str, int | None, str]]  # (path relative to RUN_DIR, rows or None, note)


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
    if not isinstance(raw, Mapping) or not isinstance(raw.get("algorithms"), Mapping):
        return {}
    algorithms = raw["algorithms"]
    try:
        return {algo: AlgorithmSpace.model_validate(space) for algo, space in algorithms.items()}
    except ValueError:  # pydantic's ValidationError is a ValueError: read the YAML format (lr, steps, params side by side)
        return dict(Experiment.model_validate({"name": str(raw.get("name") or "run"), "algorithms": algorithms}).algorithms)


def load_run_plugins(raw: Any, notes: list[str]) -> None:
    """The sweep's plugins (experiment.yaml's ``plugins``) imported here too: their metrics are columns and
    objectives of the report as the built-in ones are. One that cannot be imported is a note, not an error."""
    plugins = raw.get("plugins") if isinstance(raw, Mapping) else None
    if not plugins:
        return
    from lume_ray.plugins import PluginError, load_plugins

    try:
        load_plugins([str(p) for p in plugins])
    except PluginError as e:
        notes.append(f"experiment.yaml: {e}: the metrics it registers are not shown")


def load_run(run_dir: str | Path) -> Run:
    """Read RUN_DIR; a missing directory, results table or column -> ValueError naming the path."""
    rd = RunDir(run_dir)
    if not rd.root.is_dir():
        what = "is a file, not a directory" if rd.root.exists() else "does not exist"
        raise ValueError(f"run directory {rd.root} {what} (expected the output folder of `lume-ray sweep`)")
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
        from lume_ray.config import parse_yaml

        experiment_yaml = rd.experiment_path.read_text(encoding="utf-8", errors="replace")
        try:
            raw = parse_yaml(experiment_yaml, str(rd.experiment_path))
            load_run_plugins(raw, notes)
            spaces = read_spaces(raw)
            read.append((rd.experiment_path.name, None, f"search spaces of {', '.join(spaces) or 'no algorithm'}"))
        except ValueError as e:
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


def read_table(run: Run) -> pd.DataFrame:
    return pd.DataFrame([(p, "" if n is None else n, note) for p, n, note in run.read],
                        columns=["file (relative to RUN_DIR)", "rows", "note"])
