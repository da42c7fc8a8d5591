"""Experiment tracking: a sweep in MLflow, next to the user's other runs.

Input:  the experiment's ``tracking`` section (``mlflow: {uri, experiment}``; off by default) and RUN_DIR.
Output: one MLflow parent run per sweep and one child run per trial (``mlflow.parentRunId``): the trial's
        parameters, every registered metric at every evaluated step (``step=``), its status (the run's status,
        and the ``lume_ray.status`` / ``lume_ray.error`` tags); the report's files as the parent's artifacts.
        ``RUN_DIR/tracking.json`` remembers the run ids and the steps already logged, so ``--resume`` continues
        the same runs and never logs a point twice.

With no ``uri`` the store is ``sqlite:///RUN_DIR/mlruns/mlflow.db`` (artifacts in RUN_DIR/mlruns/artifacts):
MLflow 3's default backend is a SQLite file, and its ``./mlruns`` file store refuses to open unless
``MLFLOW_ALLOW_FILE_STORE=true``. Look at it with ``mlflow ui --backend-store-uri sqlite:///RUN_DIR/mlruns/mlflow.db``
(the UI needs the full ``mlflow`` package; the ``tracking`` extra installs ``mlflow-skinny``, the client).

The tracker is a ``ray.tune.Callback`` (registered through :class:`lume_ray.console.Relay`): it logs each point
when the trial reports it; at the start and the end of a sweep it also syncs from RUN_DIR, which holds every
point whatever happened to the driver in between. MLflow's client API only (``MlflowClient``). Tracking never
stops a sweep: an MLflow error is one console line, and the next sync catches up.

A URI's credentials (``user:password@``, ``?token=``...) are used to connect and never written or shown:
tracking.json, the console lines and the error messages hold the URI redacted (:mod:`lume_ray.redact`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ray.tune import Callback

from lume_ray import console
from lume_ray.config import ConfigError, Experiment
from lume_ray.evaluate.metrics import METRICS
from lume_ray.files import write_json
from lume_ray.redact import redact_secrets, redact_url
from lume_ray.run_dir import RunDir, git_commit

STATE_NAME = "tracking.json"
STORE_DIR = "mlruns"
# A trial's final state -> the MLflow run status (its exact state is the lume_ray.status tag).
RUN_STATUS = {"completed": "FINISHED", "stopped": "FINISHED", "diverged": "FINISHED", "failed": "FAILED"}


def local_uri(run_dir: str | Path) -> str:
    return f"sqlite:///{(Path(run_dir) / STORE_DIR / 'mlflow.db').resolve()}"


def numeric_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The registered metrics of an evaluated point as MLflow logs them (floats; booleans as 0/1)."""
    return {k: float(v) for k, v in metrics.items()
            if k in METRICS and isinstance(v, bool | int | float)}


def _say(message: str) -> None:
    console.say(message)


class MlflowTracker(Callback):
    """One sweep's MLflow runs. Every method is idempotent: what ``tracking.json`` says is logged is skipped."""

    def __init__(self, exp: Experiment, run_dir: str | Path, log: Callable[[str], None] = _say) -> None:
        cfg = exp.tracking.mlflow
        if cfg is None:
            raise ValueError("tracking.mlflow is not set")
        self.exp = exp
        self.rd = RunDir(run_dir)
        self.local = not cfg.uri
        self.uri = cfg.uri or local_uri(self.rd.root)  # the real URI: only MlflowClient sees it
        self.shown_uri = str(redact_url(self.uri))  # what tracking.json and the console hold
        self.experiment_name = cfg.experiment or exp.name
        self.log = log
        self.state_path = self.rd.root / STATE_NAME
        self.state: dict[str, Any] = {}
        self.client: Any = None
        self._warned = False

    # -- state ----------------------------------------------------------------------------------
    def _load_state(self) -> dict[str, Any]:
        if self.state_path.is_file():
            saved = json.loads(self.state_path.read_text()).get("mlflow", {})
            if saved.get("tracking_uri") in (self.shown_uri, self.uri):
                return {**saved, "tracking_uri": self.shown_uri}
        return {"tracking_uri": self.shown_uri, "runs": {}}

    def _save(self) -> None:
        write_json(self.state_path, {"mlflow": self.state})

    @property
    def parent_run_id(self) -> str | None:
        return self.state.get("parent_run_id")

    # -- the runs -------------------------------------------------------------------------------
    def open(self, *, reopen: bool = True) -> MlflowTracker:
        """Connect, find or create the experiment and the sweep's parent run (reused, and marked running again
        when ``reopen``, on resume)."""
        from mlflow import MlflowClient  # heavy: mlflow, only when tracking is on
        from mlflow.exceptions import MlflowException

        if self.client is not None:
            return self
        if self.local:
            (self.rd.root / STORE_DIR).mkdir(parents=True, exist_ok=True)
        self.state = self._load_state()
        try:
            self.client = MlflowClient(tracking_uri=self.uri)
            found = self.client.get_experiment_by_name(self.experiment_name)
            if found is not None:
                experiment_id = found.experiment_id
            else:
                location = (self.rd.root / STORE_DIR / "artifacts").resolve().as_uri() if self.local else None
                experiment_id = self.client.create_experiment(self.experiment_name, artifact_location=location)
            self.state["experiment_id"] = experiment_id
            if self.parent_run_id and reopen:
                self.client.update_run(self.parent_run_id, status="RUNNING")
            elif not self.parent_run_id:
                commit = self.rd.read_study().get("git_commit") or git_commit()
                run = self.client.create_run(experiment_id, run_name=self.exp.name, tags={
                    "lume_ray.run_dir": str(self.rd.root), "lume_ray.git_commit": str(commit), "lume_ray.kind": "sweep"})
                self.state["parent_run_id"] = run.info.run_id
                self._save()
                sw = self.exp.sweep
                self._params(run.info.run_id, {
                    "sampler": sw.sampler, "num_samples": sw.num_samples, "objectives": ",".join(sw.objectives),
                    "algorithms": ",".join(self.exp.selected_algorithms()), "seed": self.exp.seed,
                    "model": self.exp.target.model, "data": self.exp.data.path, "workers": self.exp.train.workers,
                    "zero": self.exp.train.zero})
        except MlflowException as e:
            raise ConfigError(redact_secrets(f"tracking.mlflow: {self.uri}: {str(e).splitlines()[0]}")) from None
        self._save()
        return self

    def _params(self, run_id: str, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param  # heavy: mlflow, as in open()

        self.client.log_batch(run_id, params=[Param(str(k), redact_secrets(str(v))) for k, v in params.items()])

    def _trial_run(self, trial_id: str, algorithm: str, hp: Mapping[str, Any], origin: str = "") -> dict[str, Any]:
        """The trial's child run, created (with its parameters) the first time the trial is seen."""
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID  # heavy: mlflow

        runs = self.state.setdefault("runs", {})
        if trial_id not in runs:
            run = self.client.create_run(self.state["experiment_id"], run_name=f"{algorithm}-{trial_id}", tags={
                MLFLOW_PARENT_RUN_ID: self.parent_run_id, "lume_ray.trial_id": trial_id,
                "lume_ray.algorithm": algorithm, "lume_ray.status": "running"})
            runs[trial_id] = {"run_id": run.info.run_id, "steps": [], "ended": None}
            self._save()
            self._params(run.info.run_id, {"algorithm": algorithm, **({"origin": origin} if origin else {}),
                                           **{k: v for k, v in hp.items()}})
        return dict(runs[trial_id])

    def log_point(self, trial_id: str, algorithm: str, hp: Mapping[str, Any], step: int,
                  metrics: Mapping[str, Any], origin: str = "") -> bool:
        """Every registered metric of one evaluated point at ``step``; False if it was logged before."""
        from mlflow.entities import Metric  # heavy: mlflow

        run = self._trial_run(trial_id, algorithm, hp, origin)
        if step in run["steps"]:
            return False
        now = int(time.time() * 1000)
        values = numeric_metrics(metrics)
        items = list(values.items())
        for first in range(0, len(items), 900):  # MLflow takes at most 1000 metrics per batch
            self.client.log_batch(run["run_id"], metrics=[Metric(k, v, now, int(step)) for k, v in
                                                          items[first:first + 900]])
        self.state["runs"][trial_id]["steps"] = sorted({*run["steps"], int(step)})
        self._save()
        return True

    def end_trial(self, trial_id: str, status: str, error: str = "") -> None:
        run = self.state.get("runs", {}).get(trial_id)
        if run is None or run.get("ended") == status:
            return
        self.client.set_tag(run["run_id"], "lume_ray.status", status)
        if error:
            self.client.set_tag(run["run_id"], "lume_ray.error", error[:5000])
        if status in RUN_STATUS:
            self.client.set_terminated(run["run_id"], status=RUN_STATUS[status])
        self.state["runs"][trial_id]["ended"] = status
        self._save()

    def sync(self) -> int:
        """Log from RUN_DIR every point and final state not logged yet; returns how many points it logged."""
        logged = 0
        for rec in self.rd.trial_records():
            trial_id = rec["trial_id"]
            for step, metrics in self.rd.point_metrics(trial_id).items():
                logged += self.log_point(trial_id, rec["algorithm"], rec.get("hp", {}), step, metrics,
                                         rec.get("origin", ""))
            if rec.get("status") != "running":
                self._trial_run(trial_id, rec["algorithm"], rec.get("hp", {}), rec.get("origin", ""))
                self.end_trial(trial_id, rec["status"], rec.get("error", ""))
        return logged

    def end_sweep(self, status: str) -> None:
        """The parent run's end: FINISHED, KILLED (interrupted; --resume reopens it) or FAILED."""
        if self.client is None or not self.parent_run_id:
            return
        for trial_id, run in self.state.get("runs", {}).items():
            if run.get("ended") is None and status != "FINISHED":
                self.client.set_terminated(run["run_id"], status="KILLED")
                self.state["runs"][trial_id]["ended"] = "interrupted"
        self._save()
        self.client.set_terminated(self.parent_run_id, status=status)

    def log_report(self, report_dir: str | Path) -> None:
        """The report's files as the parent run's artifacts (under ``report/``)."""
        self.open(reopen=False)
        self.client.log_artifacts(self.parent_run_id, str(report_dir), artifact_path="report")

    # -- Tune's events (never raise: tracking must not stop a sweep) ------------------------------
    def _guard(self, what: str, fn: Callable[[], Any]) -> None:
        try:
            fn()
        except Exception as e:  # noqa: BLE001
            if not self._warned:
                self._warned = True
                self.log(redact_secrets(f"[tracking] MLflow {what} failed ({type(e).__name__}: "
                                        f"{str(e).splitlines()[0][:200]}); the sweep goes on and the runs are "
                                        "synced at its end"))

    def setup(self, stop: Any = None, num_samples: int | None = None, total_num_samples: int | None = None,
              **info: Any) -> None:
        self.open()
        self._guard("sync", self.sync)
        self.log(f"[tracking] MLflow {self.shown_uri}, experiment {self.experiment_name!r}, parent run "
                 f"{self.parent_run_id}")

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        config = dict(trial.config)
        self._guard("run", lambda: self._trial_run(
            trial.trial_id, str(config.pop("algorithm", "?")), {k: v for k, v in config.items() if k != "origin"},
            str(config.get("origin", ""))))

    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any],
                        **info: Any) -> None:
        if result.get("status") != "ok" or "step" not in result:
            return
        config = dict(trial.config)
        algorithm = str(config.pop("algorithm", "?"))
        origin = str(config.pop("origin", ""))
        self._guard("log", lambda: self.log_point(trial.trial_id, algorithm, config, int(result["step"]), result,
                                                  origin))

    def _ended(self, trial: Any, fallback: str) -> None:
        rec = self.rd.read_trial(trial.trial_id) or {}
        status = rec.get("status") if rec.get("status") not in (None, "running") else fallback
        self._guard("end", lambda: self.end_trial(trial.trial_id, str(status), rec.get("error", "")))

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._ended(trial, "completed")

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._ended(trial, "failed")

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        self._guard("sync", self.sync)


def trackers(exp: Experiment, run_dir: str | Path) -> list[MlflowTracker]:
    """The experiment's trackers for a sweep in ``run_dir`` (none unless ``tracking`` says so)."""
    return [MlflowTracker(exp, run_dir)] if exp.tracking.mlflow is not None else []


def end_sweep(active: list[MlflowTracker], status: str) -> None:
    """After the sweep: a last sync from RUN_DIR, then the parent run's end status."""
    for t in active:
        if t.client is not None:
            t._guard("sync", t.sync)
            t._guard("end", lambda t=t: t.end_sweep(status))  # type: ignore[misc]


def log_report(exp: Experiment, run_dir: str | Path, report_dir: str | Path) -> None:
    """The report's files as artifacts of the sweep's parent run (when tracking is on)."""
    if exp.tracking.mlflow is not None:
        MlflowTracker(exp, run_dir).log_report(report_dir)
