"""The run directory (RUN_DIR): the one place that names, writes and reads its files (docs/run_dir.md).

Input:  a path, and what a stage has to record (the study, a trial's state, an evaluation point).
Output: the files, written atomically; readers that return them as plain data; the results table.

RUN_DIR/
  experiment.yaml                the resolved experiment (after --set overrides)
  study.json                     name, seed, sampler, objectives, provenance (git commit, versions)
  base/metrics.json, rows.parquet   the target before unlearning
  trials/<trial_id>/trial.json   algorithm, hyperparameters, status, error, trained steps, times
  trials/<trial_id>/step_XXXXXX/ metrics.json + rows.parquet: one evaluation point
  trials/<trial_id>/train/       the unlearning job (train_log.jsonl, points.jsonl, result.json, ...)
  trials/<trial_id>/train/points/step_XXXXXX/  a point's model (kept per sweep.keep_models)
  trials/<trial_id>/ray/         the job's Ray Train storage: its DeepSpeed checkpoint (removed when the trial ends)
  trials/<trial_id>/rungs.json   early stopping's decision at each rung
  trials/<trial_id>/train/go/    early stopping, not pipelined: the go-ahead past each rung once judged
  tune/                          the Ray Tune run (what --resume restores)
  results.parquet                one row per (trial, evaluated step)
  models.jsonl                   one line per model directory or checkpoint the sweep removed: when and why
  logs/lume-ray.log              Ray, Tune, Ray Data, DeepSpeed, Optuna output kept off the console
  logs/driver.json               the running driver's host and pid (lume-ray status)
  tracking.json, mlruns/         MLflow tracking state and its local store
  report/                        `lume-ray report`'s default output
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lume_ray.files import atomic_file, write_json
from lume_ray.redact import redact_data

STEP_DIR = "step_{:06d}"  # an evaluation point's directory, in a trial and in an unlearning job's points/
TRIAL_STATES = ("running", "completed", "stopped", "diverged", "failed")


def read_json(path: Path) -> Any:
    """A JSON file of RUN_DIR; a file that is not UTF-8 or not JSON -> one-line ValueError naming it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start}); "
                         "the file is damaged") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}); "
                         "the file is damaged") from None

def git_commit() -> str:
    if os.environ.get("LUME_RAY_GIT_COMMIT"):
        return os.environ["LUME_RAY_GIT_COMMIT"]
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def disk_bytes(path: str | os.PathLike[str]) -> int:
    """Bytes a directory tree holds on disk, as ``du`` counts them (allocated blocks; hard links once); files
    that vanish while it walks (a sweep deleting a model) are skipped."""
    total, seen = 0, set()
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            if st.st_nlink > 1:
                if (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
    return total


def fmt_bytes(n: float) -> str:
    """1536 -> "1.5 KiB"."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def versions() -> dict[str, str]:
    """Installed versions of lume-ray and the libraries a result depends on (package metadata, nothing imported)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for key, dist in (("lume_ray", "lume-ray"), ("ray", "ray"), ("torch", "torch"), ("deepspeed", "deepspeed"),
                      ("transformers", "transformers"), ("optuna", "optuna")):
        try:
            out[key] = version(dist)
        except PackageNotFoundError:
            out[key] = "unknown"
    return out


class RunDir:
    """Paths and records of one run directory."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    # -- paths ----------------------------------------------------------------------------------
    @property
    def study_path(self) -> Path:
        return self.root / "study.json"

    @property
    def experiment_path(self) -> Path:
        return self.root / "experiment.yaml"

    @property
    def base(self) -> Path:
        return self.root / "base"

    @property
    def trials(self) -> Path:
        return self.root / "trials"

    @property
    def tune(self) -> Path:
        return self.root / "tune"

    @property
    def results_path(self) -> Path:
        return self.root / "results.parquet"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def report(self) -> Path:
        return self.root / "report"

    def trial(self, trial_id: str) -> Path:
        return self.trials / trial_id

    def point(self, trial_id: str, step: int) -> Path:
        return self.trial(trial_id) / STEP_DIR.format(step)

    def job(self, trial_id: str) -> Path:
        """The trial's unlearning job (its ``out``)."""
        return self.trial(trial_id) / "train"

    def point_model(self, trial_id: str, step: int) -> Path:
        """Where the trial's job saves the model of its point at ``step`` (train/loop.py: ``out/points/...``)."""
        return self.job(trial_id) / "points" / STEP_DIR.format(step)

    def checkpoints(self, trial_id: str) -> Path:
        """The trial's Ray Train storage: the job's DeepSpeed checkpoint, what a retried trial resumes from."""
        return self.trial(trial_id) / "ray"

    @property
    def models_log(self) -> Path:
        return self.root / "models.jsonl"

    # -- study ----------------------------------------------------------------------------------
    def exists(self) -> bool:
        return self.study_path.is_file()

    def read_study(self) -> dict[str, Any]:
        if not self.exists():
            return {}
        study = read_json(self.study_path)
        if not isinstance(study, dict):
            raise ValueError(f"{self.study_path}: expected a JSON object, got {type(study).__name__}; "
                             "the file is damaged")
        return study

    def create(self) -> None:
        """The directory, private to its owner (0700): a resume loads checkpoints from it (DeepSpeed's with
        ``torch.load(weights_only=False)``), so whoever can write here could run code as the user who resumes."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o700)

    def write_study(self, study: Mapping[str, Any], experiment: Mapping[str, Any]) -> None:
        """study.json and experiment.yaml, credentials redacted (a tracking URI's password, a token in a URL)."""
        import yaml

        self.create()
        with atomic_file(self.experiment_path) as tmp:
            tmp.write_text(yaml.safe_dump(redact_data(dict(experiment)), sort_keys=False))
        write_json(self.study_path, redact_data(dict(study)))

    def base_metrics(self) -> dict[str, Any] | None:
        path = self.base / "metrics.json"
        return json.loads(path.read_text()) if path.is_file() else None

    # -- trials ---------------------------------------------------------------------------------
    def write_trial(self, trial_id: str, record: Mapping[str, Any]) -> None:
        if record.get("status") not in TRIAL_STATES:
            raise ValueError(f"trial status {record.get('status')!r} (valid: {', '.join(TRIAL_STATES)})")
        write_json(self.trial(trial_id) / "trial.json", dict(record))

    def read_trial(self, trial_id: str) -> dict[str, Any] | None:
        path = self.trial(trial_id) / "trial.json"
        return read_json(path) if path.is_file() else None

    def trial_records(self) -> list[dict[str, Any]]:
        return [read_json(p) for p in sorted(self.trials.glob("*/trial.json"))]

    def point_metrics(self, trial_id: str) -> dict[int, dict[str, Any]]:
        """Evaluated step -> metrics.json of a trial's points."""
        out = {}
        for path in sorted(self.trial(trial_id).glob("step_*/metrics.json")):
            out[int(path.parent.name.split("_")[1])] = read_json(path)
        return out

    # -- models on disk -------------------------------------------------------------------------
    def models_on_disk(self) -> list[tuple[str, int]]:
        """(trial id, step) of every point whose model directory is on disk, in trial and step order."""
        found = []
        for path in sorted(self.trials.glob("*/train/points/step_*")):
            if path.is_dir() and path.name.split("_")[1].isdigit():
                found.append((path.parents[2].name, int(path.name.split("_")[1])))
        return found

    def models_text(self, limit: int = 12) -> str:
        """"3 (ga-1@20, ga-2@10, npo-1@20)": the points whose model is on disk, as trial@step."""
        on_disk = self.models_on_disk()
        shown = ", ".join(f"{t}@{s}" for t, s in on_disk[:limit])
        more = f", ... {len(on_disk) - limit} more" if len(on_disk) > limit else ""
        return f"{len(on_disk)}" + (f" ({shown}{more})" if on_disk else "")

    def keep_models(self) -> str | None:
        """experiment.yaml's sweep.keep_models (None when it cannot be read)."""
        import yaml

        try:
            sweep = (yaml.safe_load(self.experiment_path.read_text()) or {}).get("sweep") or {}
        except (OSError, yaml.YAMLError, AttributeError):
            return None
        value = sweep.get("keep_models")
        if isinstance(value, bool):  # the older form
            return "all" if value else "none"
        return value if isinstance(value, str) else None

    def record_removal(self, record: Mapping[str, Any]) -> None:
        """One line of models.jsonl (written by the sweep's driver alone: one writer, appends)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with self.models_log.open("a") as f:
            f.write(json.dumps(dict(record), default=str) + "\n")

    def removals(self) -> list[dict[str, Any]]:
        """models.jsonl's records, oldest first."""
        if not self.models_log.is_file():
            return []
        return [json.loads(line) for line in self.models_log.read_text().splitlines() if line.strip()]

    # -- results --------------------------------------------------------------------------------
    def collect_results(self, provenance: Mapping[str, Any]) -> Any:
        """Every (trial, evaluated step) row from the trial directories -> one DataFrame (no duplicates by
        design: a row is a step directory). A trial that ended early (diverged, failed, stopped by the
        scheduler) gets one more row with its status and reason at the step it reached."""
        import pandas as pd  # heavy: pandas, on first use

        from lume_ray.evaluate.metrics import METRICS  # heavy: ~0.15 s, not for `lume-ray status`

        rows = []
        for info in self.trial_records():
            base = {"algorithm": info["algorithm"], "trial_id": info["trial_id"],
                    **{f"hp/{k}": v for k, v in info["hp"].items()},
                    "trained_steps": info.get("trained_steps", 0), "finished_at": info.get("finished_at"),
                    "origin": info.get("origin", "sampler"), **provenance}
            status, error = info.get("status", "running"), info.get("error", "")
            for step, metrics in self.point_metrics(info["trial_id"]).items():
                numeric = {k: v for k, v in metrics.items()
                           if k in METRICS and (v is None or isinstance(v, bool | int | float))}
                rows.append({**base, "step": step, "status": "ok", "error": "", **numeric,
                             "wall_s": info.get("wall_s"),
                             "rows_path": str(self.point(info["trial_id"], step).relative_to(self.root) / "rows.parquet")})
            if status not in ("completed", "stopped"):  # one more row says why the trial ended early
                rows.append({**base, "step": info.get("trained_steps", 0),
                             "status": status if status in ("diverged", "failed") else "failed",
                             "error": error or "interrupted before it finished", "wall_s": info.get("wall_s"),
                             "rows_path": ""})
            elif status == "stopped":  # compute spent: what the job trained before it was stopped
                base["trained_steps"] = max(base["trained_steps"], self.trained_steps(info["trial_id"]))
                rows.append({**base, "step": base["trained_steps"], "status": "stopped",
                             "error": error, "wall_s": info.get("wall_s"), "rows_path": ""})
        frame = pd.DataFrame(rows)
        if not frame.empty:
            frame = frame.sort_values(["algorithm", "trial_id", "step"], kind="stable").reset_index(drop=True)
        return frame

    def trained_steps(self, trial_id: str) -> int:
        """The last step a trial's job logged (train/train_log.jsonl)."""
        log = self.trial(trial_id) / "train" / "train_log.jsonl"
        if not log.is_file():
            return 0
        steps = [json.loads(line).get("step", 0) for line in log.read_text().splitlines() if line.strip()]
        return int(max(steps, default=0))

    def write_results(self, frame: Any) -> None:
        with atomic_file(self.results_path) as tmp:
            frame.to_parquet(tmp, index=False)
