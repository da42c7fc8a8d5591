"""[3] The sweep: an experiment -> one Ray Tune run over every algorithm -> RUN_DIR/results.parquet.

Input:  an :class:`~lume_ray.config.Experiment` whose data and target exist; a Ray cluster (local or ``address``).
Output: RUN_DIR (:mod:`lume_ray.run_dir`): study.json, the base model's evaluation, one directory per trial,
        ``results.parquet`` (one row per trial and evaluated step, with hyperparameters, metrics, provenance); the
        points' models that ``sweep.keep_models`` keeps (:mod:`lume_ray.search.keep`, in this driver).

One Tune run holds every algorithm's trials: :class:`~lume_ray.search.searcher.StudySearcher` hands them out
across the algorithms' Optuna studies, so the cluster never idles at the tail of one algorithm's search.
One pool of model actors (:mod:`lume_ray.evaluate.pool`) evaluates every trial's points for the whole sweep.
``resume=True`` restores the Tune run (unfinished and failed trials resume from their checkpoints; the
searcher's studies come back with it); finished trials are never re-run.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import ray
import ray.data
from ray import tune

from lume_ray import console, tracking
from lume_ray.config import ConfigError, Experiment
from lume_ray.evaluate.metrics import direction
from lume_ray.evaluate.pool import evaluation_pool
from lume_ray.local_ray import ray_session
from lume_ray.preflight import check_jobs, check_resources
from lume_ray.report.analysis import analyze
from lume_ray.report.answer import boundary, budget_note
from lume_ray.report.run import load_run
from lume_ray.run_dir import RunDir, git_commit, versions
from lume_ray.search.keep import ModelKeeper
from lume_ray.search.scheduler import ParetoSuccessiveHalving
from lume_ray.search.searcher import StudySearcher
from lume_ray.search.trial import TrialContext, run_trial
from lume_ray.search.view import SweepView, relay
from lume_ray.status import read_driver, write_driver
from lume_ray.tracking import MlflowTracker

TUNE_NAME = "sweep"


class SweepInterrupted(KeyboardInterrupt):
    """The driver was interrupted; everything finished so far is on disk and --resume continues."""


def say(message: str) -> None:
    console.say(message)  # the terminal even while a quiet console holds stdout


def max_concurrent(exp: Experiment, driver_cpus: float) -> int:
    """Trials that fit at once in the cluster's resources: Train workers plus the trial driver, next to the
    evaluation pool's actors (which live for the whole sweep)."""
    if exp.sweep.max_concurrent:
        return exp.sweep.max_concurrent
    res = ray.cluster_resources()
    tr, ev = exp.train, exp.eval
    pool_cpu = ev.workers * (ev.cpus_per_actor or 1.0)
    per_trial_cpu = driver_cpus + tr.workers * tr.cpus_per_worker
    fits = int((res.get("CPU", 0) - pool_cpu) // per_trial_cpu) if per_trial_cpu else 1_000
    if tr.use_gpu:
        fits = min(fits, int(res.get("GPU", 0) // tr.workers))
    return max(1, fits)


def check_cluster(exp: Experiment) -> None:
    """What the experiment asks of the cluster, checked before anything starts."""
    check_resources(ray.cluster_resources(), "the cluster", "experiment", train=exp.train, evaluation=exp.eval)


def study_record(exp: Experiment, data: str, model: str) -> dict[str, Any]:
    """study.json: what the sweep is (objectives, floor, algorithms, the data and model it runs on) and where
    it comes from (git commit, versions)."""
    floor = exp.eval.utility_floor
    return {
        "name": exp.name, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seed": exp.seed,
        "git_commit": git_commit(), "versions": versions(), "sampler": exp.sweep.sampler,
        "objectives": [{"name": o, "direction": direction(o)} for o in exp.sweep.objectives],
        "utility_floor": {"relative": floor.relative, "absolute": floor.absolute},
        "algorithms": exp.selected_algorithms(), "model": model, "data": data,
        "workers": exp.train.workers, "zero": exp.train.zero, "num_samples": exp.sweep.num_samples,
    }


def eval_inputs(exp: Experiment) -> dict[str, Any]:
    """members / nonmembers / utility for the evaluation; None lets it use the data directory's defaults."""
    d = exp.data
    out: dict[str, Any] = {"members": d.member and exp.path(d.member), "nonmembers": d.nonmember and exp.path(d.nonmember)}
    if d.utility != "auto":
        out["utility"] = exp.path(d.utility) if d.utility not in (None, "mmlu") else (d.utility or False)
    return out


def run_sweep(exp: Experiment, *, resume: bool = False, address: str | None = None,
              warm_start: Iterable[Mapping[str, Any]] = (), log: Callable[[str], None] = say,
              data: str | None = None, model: str | None = None) -> RunDir:
    """The whole sweep; returns its RunDir. Re-run with ``resume=True`` after an interruption. ``data`` and
    ``model``: the prepared data directory and target (default: the experiment's paths)."""
    exp = exp.resolved()
    data, model = data or exp.path(exp.data.path), model or exp.path(exp.target.model)
    rd, trackers = open_run_dir(exp, resume, data, model)
    t0 = time.time()
    with start_ray(exp, address):
        with start_evaluation_pool(exp, data, model, log) as pool:
            base = score_base_model(rd, pool, model, log)
            trainable, resources = trial_trainable(exp, rd, pool, base)
            searcher, budget = plan_trials(exp, rd, resume, warm_start, log)
            keeper = ModelKeeper(exp, rd, base.get("utility"), log)  # sweep.keep_models, in this driver
            # The console's live view, the model keeper and the trackers hear Tune's events through a relay
            # (search.view.Relay: a restored Tuner brings back its pickled callbacks, so those must not hold them).
            with relay([SweepView(exp, rd, budget, log), keeper, *trackers]) as hooks:
                tuner = build_tuner(exp, rd, trainable, resources, searcher, hooks, log)
                fit(tuner, trackers)
            check_finished(rd, budget, trackers)
        keeper.reconcile()  # the trials and the pool are gone: what a stopped trial left in its last moment
    return collect_results(exp, rd, t0, trackers, log)


def open_run_dir(exp: Experiment, resume: bool, data: str, model: str) -> tuple[RunDir, list[MlflowTracker]]:
    """RUN_DIR checked against ``resume``, every algorithm's job checked against the data and the model, the
    trackers opened (a bad tracking URI fails before Ray starts), and study.json written for a new sweep."""
    rd = RunDir(exp.output_dir)
    if rd.exists() and not resume:
        raise ConfigError(f"{rd.root}: already holds a sweep; pass --resume to continue it, or set another output_dir")
    if resume and not rd.exists():
        raise ConfigError(f"{rd.root}: no sweep to resume (no study.json); run without --resume")
    check_jobs(exp)
    trackers = [t.open() for t in tracking.trackers(exp, rd.root)]
    if not rd.exists():
        rd.write_study(study_record(exp, data, model), exp.dump())
    return rd, trackers


@contextlib.contextmanager
def start_ray(exp: Experiment, address: str | None) -> Iterator[None]:
    """Ray for the ``with`` block (the connected one, ``address``, or a local one), checked against what the
    experiment asks of it."""
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")  # Train propagates it to its workers
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's configuration box and TensorBoard hint: our view says it
    # Workers' output (DeepSpeed, the step lines) reaches the driver only when a console files it in RUN_DIR/logs.
    from lume_ray.plugins import runtime_env

    with ray_session(address=address, num_cpus=max(4, os.cpu_count() or 1), object_store_mb=512,
                     log_to_driver=console.current() is not None, runtime_env=runtime_env(exp.plugins)):

        ray.data.DataContext.get_current().enable_progress_bars = False
        check_cluster(exp)
        yield


@contextlib.contextmanager
def start_evaluation_pool(exp: Experiment, data: str, model: str, log: Callable[[str], None]) -> Iterator[Any]:
    """The sweep's pool of model actors (:mod:`lume_ray.evaluate.pool`) for the ``with`` block; yields its handle."""
    with evaluation_pool(data=data, settings=exp.eval, base_model=model,
                         trust_remote_code=exp.target.trust_remote_code, plugins=exp.plugins,
                         **eval_inputs(exp)) as pool:
        log(f"[sweep] evaluation pool: {ray.get(pool.describe.remote())}")
        yield pool


def score_base_model(rd: RunDir, pool: Any, model: str, log: Callable[[str], None]) -> dict[str, Any]:
    """The target's metrics before unlearning: RUN_DIR/base's (a resumed sweep), else evaluated by the pool now."""
    base = rd.base_metrics()
    if base is None:
        log("[sweep] evaluating the target before unlearning")
        base = ray.get(pool.evaluate.remote(model, str(rd.base), None))
    log(f"[sweep] base model: final_score {_fmt(base.get('final_score'))}, utility {_fmt(base.get('utility'))}, "
        f"forget_efficacy {_fmt(base.get('forget_efficacy'))}, retain_score {_fmt(base.get('retain_score'))}")
    return base


def trial_trainable(exp: Experiment, rd: RunDir, pool: Any, base: Mapping[str, Any]) -> tuple[Any, dict[str, float]]:
    """Tune's trainable (:func:`~lume_ray.search.trial.run_trial` with its context) and a trial driver's resources."""
    ctx = TrialContext(exp, str(rd.root), pool, base.get("utility"))
    # Trial drivers sit on the head node when it advertises `tune_driver` (cluster.yaml); else a little CPU.
    resources: dict[str, float] = ({"cpu": 0, "tune_driver": 1} if "tune_driver" in ray.cluster_resources()
                                   else {"cpu": 0.25})
    return tune.with_resources(tune.with_parameters(run_trial, ctx=ctx), resources), resources


def plan_trials(exp: Experiment, rd: RunDir, resume: bool, warm_start: Iterable[Mapping[str, Any]],
                log: Callable[[str], None]) -> tuple[StudySearcher | None, dict[str, int]]:
    """The searcher (None: the Tune run is restored, with its searcher) and the trials planned per algorithm,
    recorded in RUN_DIR's driver file."""
    restoring = resume and tune.Tuner.can_restore(str(rd.tune / TUNE_NAME))
    searcher = None if restoring else StudySearcher(exp, warm_start=warm_start, log=log)
    budget = dict(searcher.budget) if searcher is not None else dict(read_driver(rd).get("planned") or {})
    write_driver(rd, budget)
    return searcher, budget


def build_tuner(exp: Experiment, rd: RunDir, trainable: Any, resources: Mapping[str, float],
                searcher: StudySearcher | None, hooks: Any, log: Callable[[str], None]) -> tune.Tuner:
    """The Tune run restored from RUN_DIR/tune (``searcher`` None), else a new one over ``searcher``'s trials,
    with early stopping when the experiment asks for it and ``hooks`` (the relay) as its callback."""
    exp_dir = rd.tune / TUNE_NAME
    if searcher is None:
        log(f"[sweep] resuming {exp_dir}")
        return tune.Tuner.restore(str(exp_dir), trainable=trainable, resume_unfinished=True,
                                  resume_errored=True, restart_errored=False)
    concurrency = max_concurrent(exp, resources.get("cpu", 0))
    log(f"[sweep] {searcher.total_trials()} trials over {len(exp.selected_algorithms())} algorithm(s), "
        f"up to {concurrency} at once")
    scheduler = None
    if exp.sweep.early_stop is not None:

        scheduler = ParetoSuccessiveHalving(exp, str(rd.root))
        log(f"[sweep] early stopping: {scheduler.debug_string()}")
    # Actors are not reused (Tune's default): a stopped trial's actor dies, and its Train job with it
    # (a job waiting at a rung for a go-ahead would otherwise wait on, holding its CPUs).
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler,
                                    num_samples=searcher.total_trials(), max_concurrent_trials=concurrency),
        run_config=tune.RunConfig(
            name=TUNE_NAME, storage_path=str(rd.tune), verbose=0, callbacks=[hooks],
            failure_config=tune.FailureConfig(max_failures=exp.sweep.max_failures),
        ),
    )


def fit(tuner: tune.Tuner, trackers: list[MlflowTracker]) -> None:
    """Run the trials; a failure or Ctrl-C that escapes Tune ends the trackers' sweep (FAILED / KILLED) first."""
    try:
        tuner.fit()
    except BaseException as e:
        tracking.end_sweep(trackers, "KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
        raise


def check_finished(rd: RunDir, budget: Mapping[str, int], trackers: list[MlflowTracker]) -> None:
    """After Ctrl-C, Tune's fit() returns normally with unfinished trials: stop the whole sweep here
    (:class:`SweepInterrupted`)."""
    records = rd.trial_records()
    planned = sum(budget.values()) or len(records)
    unfinished = [r["trial_id"] for r in records if r["status"] == "running"]
    if unfinished or len(records) < planned:
        tracking.end_sweep(trackers, "KILLED")
        raise SweepInterrupted(f"sweep interrupted ({len(records) - len(unfinished)}/{planned} trials finished); "
                               f"continue with: lume-ray sweep ... --resume")


def collect_results(exp: Experiment, rd: RunDir, t0: float, trackers: list[MlflowTracker],
                    log: Callable[[str], None]) -> RunDir:
    """Every trial's points -> RUN_DIR/results.parquet (with provenance), the boundary warnings (or the line that
    says the budget is too small to judge the ranges), the trackers' sweep ended as FINISHED."""

    frame = rd.collect_results({"seed": exp.seed, "workers": exp.train.workers, "zero": exp.train.zero,
                                "git_commit": git_commit(), "sampler": exp.sweep.sampler})
    rd.write_results(frame)
    n_ok = int((frame["status"] == "ok").sum()) if not frame.empty else 0
    log(f"[sweep] {len(frame)} result rows ({n_ok} evaluated points) in {rd.results_path} after "
        f"{time.time() - t0:.0f} s")
    warnings, note = boundary_warnings(rd) if n_ok else ([], None)
    for warning in warnings:
        log(f"[sweep] warning: {warning}")
    if note:
        log(f"[sweep] {note}")
    tracking.end_sweep(trackers, "FINISHED")
    return rd


def boundary_warnings(rd: RunDir) -> tuple[list[str], str | None]:
    """Per algorithm, the searched parameters whose front points (those that pass the floor) sit on an edge of
    the box, where the search ran trials beyond its initial design; and one line naming the algorithms whose
    budget was too small to tell (None: none). The report's own analysis, so the sweep and the report agree."""

    run = load_run(rd.root)
    a = analyze(run)
    return [w for warnings in boundary(run, a).values() for w in warnings], budget_note(a)


def read_warm_start(run_dir: str | Path) -> list[dict[str, Any]]:
    """The points of an earlier sweep (its results.parquet) for ``--warm-start``."""
    import pandas as pd

    path = Path(run_dir) / "results.parquet"
    if not path.is_file():
        raise ConfigError(f"--warm-start {run_dir}: no results.parquet there (the run directory of a finished sweep)")
    return pd.read_parquet(path).to_dict(orient="records")


def _fmt(value: Any) -> str:
    return "null" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)
