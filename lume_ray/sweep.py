"""[6] Sweep: an experiment -> per-algorithm Ray Tune + Optuna searches -> RUN_DIR/results.parquet.

Input:  an :class:`~lume_ray.experiment.Experiment` (YAML + overrides), a Ray cluster (local or ``--address``).
Output: RUN_DIR (layout in docs/run_dir.md): the base model's evaluation, one row per trial and evaluated
        step in ``results.parquet`` with hyperparameters, every metric, wall time and provenance, and
        the report (``lume-ray report``) at the end.

One trial = one unlearning job (:func:`lume_ray.train.run_unlearning`: Ray Train + DeepSpeed) of one
algorithm with one set of hyperparameters, then the LUME evaluation (:func:`lume_ray.evaluate.evaluate`,
Ray Data) of the model at each of its evaluation points, so the step count is searched without
re-training. Each algorithm gets its own Tune experiment (and Optuna study) under RUN_DIR/tune/<algorithm>,
which is what ``--resume`` restores. Optuna sees each trial's last point; every point is a results row.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from lume_ray.experiment import Experiment, ParamSpec, load_experiment, to_dict
from lume_ray.files import atomic_file, write_json

STEP_DIR = "step_{:06d}"


# ---------------------------------------------------------------------------------------------
# Paths, provenance, Ray


def resolve(exp: Experiment, text: str) -> str:
    """Experiment paths may use {output_dir}; relative paths are relative to the working directory.

    Paths that exist here become absolute, because Tune runs each trial in a directory of its own;
    anything else (a hub id such as ``allenai/OLMo-1B-hf``) is passed on unchanged.
    """
    text = text.replace("{output_dir}", exp.output_dir)
    return str(Path(text).resolve()) if Path(text).exists() else text


def git_commit() -> str:
    if os.environ.get("LUME_RAY_GIT_COMMIT"):
        return os.environ["LUME_RAY_GIT_COMMIT"]
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def versions() -> dict[str, str]:
    import deepspeed
    import optuna
    import ray
    import torch
    import transformers

    import lume_ray

    return {"lume_ray": lume_ray.__version__, "ray": ray.__version__, "torch": torch.__version__,
            "deepspeed": deepspeed.__version__, "transformers": transformers.__version__,
            "optuna": optuna.__version__}


def init_ray(address: str | None) -> bool:
    """Connect to ``address`` or start a local Ray bound to this machine. Returns True if we started it."""
    import ray

    if ray.is_initialized():
        return False
    env = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")}
    os.environ.update(env)  # Train propagates it driver -> controller -> workers
    address = address or os.environ.get("RAY_ADDRESS")  # set inside a Ray job
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        # Logical CPUs above the core count let Tune drivers, Train workers and eval actors coexist.
        from lume_ray.local_ray import start_local

        start_local(num_cpus=max(4, os.cpu_count() or 1), object_store_mb=512)
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    return True


# ---------------------------------------------------------------------------------------------
# Search spaces


def tune_space(space: dict[str, ParamSpec], grid: bool) -> dict[str, Any]:
    """Experiment parameter specs -> a Ray Tune param_space (OptunaSearch converts it for Optuna)."""
    from ray import tune

    out: dict[str, Any] = {}
    for name, spec in space.items():
        if grid:
            values = spec.grid_values()
            out[name] = tune.choice(list(values)) if len(values) > 1 else values[0]
        elif spec.kind == "fixed":
            out[name] = spec.values[0]
        elif spec.kind == "loguniform":
            out[name] = tune.loguniform(*spec.values)
        elif spec.kind == "uniform":
            out[name] = tune.uniform(*spec.values)
        elif spec.kind == "int":
            out[name] = tune.randint(int(spec.values[0]), int(spec.values[1]) + 1)
        else:
            out[name] = tune.choice(list(spec.values))
    return out


def grid_size(space: dict[str, ParamSpec]) -> int:
    return math.prod(len(spec.grid_values()) for spec in space.values())


def make_searcher(exp: Experiment, algorithm: str, search: str) -> Any:
    """OptunaSearch for every strategy, so grid/random/optuna differ only in the sampler (fair comparison)."""
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    from lume_ray.metrics import direction

    seed = exp.seed + sorted(exp.algorithms).index(algorithm)  # distinct, reproducible stream per algorithm
    sampler: optuna.samplers.BaseSampler
    if search == "grid":
        grid = {n: list(s.grid_values()) for n, s in exp.algorithms[algorithm].items() if len(s.grid_values()) > 1}
        sampler = optuna.samplers.GridSampler(grid, seed=seed)
    elif search == "random":
        sampler = optuna.samplers.RandomSampler(seed=seed)
    elif exp.sweep.sampler == "nsga2":
        sampler = optuna.samplers.NSGAIISampler(seed=seed, population_size=max(2, min(exp.sweep.num_samples // 2, 50)))
    else:
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(2, min(10, exp.sweep.num_samples // 3)))
    objectives = list(exp.sweep.objectives)
    return OptunaSearch(metric=objectives, mode=[direction(o) for o in objectives], sampler=sampler)


# ---------------------------------------------------------------------------------------------
# One trial (runs inside a Ray Tune function trainable, on the cluster)


class TrialFailed(RuntimeError):
    """An unlearning job ended in failure (not divergence): Tune retries the trial up to max_failures."""


@dataclass(frozen=True)
class TrialContext:
    """Everything a trial needs, passed explicitly (tune.with_parameters): no globals."""

    exp: Experiment
    algorithm: str
    run_dir: str
    base_utility: float | None
    search: str


def _numeric(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items()
            if isinstance(v, bool | int | float) or v is None and k in _metric_names()}


def _metric_names() -> set[str]:
    from lume_ray.metrics import METRICS

    return set(METRICS)


def run_trial(config: dict[str, Any], ctx: TrialContext) -> None:
    """Tune function trainable: unlearn with ``config``, evaluate every point, report each to Tune."""
    from ray import tune

    from lume_ray.config import UnlearnConfig
    from lume_ray.evaluate import evaluate_many
    from lume_ray.train import run_unlearning

    exp, t0 = ctx.exp, time.time()
    trial_id = tune.get_context().get_trial_id()
    trial_dir = Path(ctx.run_dir) / "trials" / trial_id
    trial_dir.mkdir(parents=True, exist_ok=True)
    params = {k: v for k, v in config.items() if k not in ("lr", "steps")}
    steps = int(config["steps"])
    info: dict[str, Any] = {"trial_id": trial_id, "algorithm": ctx.algorithm, "hp": dict(config),
                            "status": "running", "error": "", "started_at": t0}
    write_json(trial_dir / "trial.json", info)
    cfg = UnlearnConfig(
        model=resolve(exp, exp.target.model), data=resolve(exp, exp.data.path), algorithm=ctx.algorithm,
        params=params, lr=float(config["lr"]), steps=steps, eval_every=max(1, steps // exp.sweep.eval_points),
        batch_size=exp.train.batch_size, workers=exp.train.workers, zero=exp.train.zero,
        offload=exp.train.offload, precision=exp.train.precision, use_gpu=exp.train.gpus_per_worker > 0,
        lora=exp.train.lora, seed=exp.seed, max_length=exp.train.max_length, out=str(trial_dir / "train"),
        trust_remote_code=exp.target.trust_remote_code, cpus_per_worker=exp.train.cpus_per_worker,
    )
    try:
        result = run_unlearning(cfg, storage_path=str(trial_dir / "ray"), run_name=f"train-{trial_id}")
        if result.status == "failed":  # e.g. a worker died
            raise TrialFailed(result.reason or "the unlearning job failed")
    except Exception as e:  # recorded, then re-raised: Tune retries the trial, which resumes its checkpoint
        _record_failure(trial_dir, info, e, t0)
        raise
    provenance = {"trained_steps": result.steps_done, "status": result.status, "error": result.reason or ""}
    # Points saved before a divergence hold finite weights: they are evaluated like any other. All points
    # not yet evaluated (an interrupted attempt keeps the ones it wrote) go through one pipeline.
    todo = [p for p in result.points if not (trial_dir / STEP_DIR.format(p.step) / "metrics.json").is_file()]
    eval_error: Exception | None = None
    if todo:
        try:
            evaluate_many([p.model_dir for p in todo], resolve(exp, exp.data.path), settings=eval_settings(exp),
                          **eval_inputs(exp), reference_utility=ctx.base_utility,
                          out_dirs=[trial_dir / STEP_DIR.format(p.step) for p in todo])
        except Exception as e:  # the points evaluated before the error are still reported
            eval_error = e
    for point in result.points:
        metrics_path = trial_dir / STEP_DIR.format(point.step) / "metrics.json"
        if not metrics_path.is_file():
            continue
        metrics = json.loads(metrics_path.read_text())
        if not exp.sweep.keep_models and Path(point.model_dir).is_dir():
            shutil.rmtree(point.model_dir, ignore_errors=True)
        tune.report({**_numeric(metrics), "step": point.step, **provenance, "wall_s": time.time() - t0,
                     "train_forget_loss": point.forget_loss, "train_retain_loss": point.retain_loss})
    if eval_error is not None:  # recorded, then re-raised: a retry evaluates only the points still missing
        _record_failure(trial_dir, info, eval_error, t0)
        raise eval_error
    info.update(provenance, finished_at=time.time(), wall_s=time.time() - t0)
    write_json(trial_dir / "trial.json", info)
    if result.status != "completed":  # the last word Optuna hears: this setting fails (NaN objectives)
        nan = {name: float("nan") for name in exp.sweep.objectives}
        tune.report({**nan, "step": result.steps_done, **provenance, "wall_s": time.time() - t0})


def _record_failure(trial_dir: Path, info: dict[str, Any], error: BaseException, t0: float) -> None:
    info.update(status="failed", error=f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"[:500],
                finished_at=time.time(), wall_s=time.time() - t0)
    write_json(trial_dir / "trial.json", info)


def eval_settings(exp: Experiment) -> Any:
    from lume_ray.evaluate import EvalSettings

    e = exp.eval
    return EvalSettings(max_new_tokens=e.max_new_tokens, batch_size=e.batch_size, workers=e.workers,
                        cpus_per_actor=e.cpus_per_actor, use_gpu=e.gpus_per_actor > 0,
                        utility_floor=e.utility_floor, limit=e.limit, dtype=e.dtype,
                        trust_remote_code=exp.target.trust_remote_code)


def eval_inputs(exp: Experiment) -> dict[str, Any]:
    """members / nonmembers / utility for evaluate(); None lets it use the data directory's defaults."""
    d = exp.data
    utility = None if d.utility in (None, "auto") else resolve(exp, d.utility)
    out: dict[str, Any] = {"members": d.member and resolve(exp, d.member),
                           "nonmembers": d.nonmember and resolve(exp, d.nonmember)}
    if d.utility != "auto":
        out["utility"] = utility if utility is not None else False
    return out


# ---------------------------------------------------------------------------------------------
# Progress


def _progress_callback(algorithm: str, planned: int, first_objective: str) -> Any:
    from ray.tune import Callback

    from lume_ray.metrics import direction

    sign = 1.0 if direction(first_objective) == "max" else -1.0

    class Progress(Callback):
        def __init__(self) -> None:
            self.done = 0
            self.best: tuple[float, str, int] | None = None

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
            value = result.get(first_objective)
            if not isinstance(value, int | float) or math.isnan(value):
                return
            if self.best is None or sign * value > sign * self.best[0]:
                self.best = (float(value), trial.trial_id, int(result.get("step", 0)))

        def _line(self, trial: Any, what: str) -> None:
            best = (f"best {first_objective} {self.best[0]:.3f} (trial {self.best[1]} step {self.best[2]})"
                    if self.best else "no result yet")
            print(f"[sweep {algorithm}] {self.done}/{planned} trials done; {trial.trial_id} {what}; {best}", flush=True)

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.done += 1
            status = (trial.last_result or {}).get("status", "completed")
            self._line(trial, status)

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.done += 1
            self._line(trial, "FAILED")

    return Progress()


# ---------------------------------------------------------------------------------------------
# The sweep


def max_concurrent(exp: Experiment, driver_cpus: float) -> int:
    """Trials that fit at once in the cluster's resources (Train workers, or eval actors, plus the driver)."""
    import ray

    if exp.sweep.max_concurrent:
        return exp.sweep.max_concurrent
    res = ray.cluster_resources()
    tr, ev = exp.train, exp.eval
    per_trial_cpu = driver_cpus + max(tr.workers * tr.cpus_per_worker, ev.workers * ev.cpus_per_actor)
    fits = int((res.get("CPU", 0) - 0.5) // per_trial_cpu) if per_trial_cpu else 1_000
    if tr.gpus_per_worker:
        fits = min(fits, int(res.get("GPU", 0) // (tr.workers * tr.gpus_per_worker)))
    return max(1, fits)


def run_algorithm(exp: Experiment, algorithm: str, run_dir: Path, base_utility: float | None,
                  search: str, resume: bool) -> Any:
    import ray
    from ray import tune

    storage = run_dir / "tune"
    exp_dir = storage / algorithm
    # Tune drivers sit on the head node when it advertises `tune_driver` (cluster.yaml); else a little CPU.
    resources: dict[str, float] = ({"cpu": 0, "tune_driver": 1} if "tune_driver" in ray.cluster_resources()
                                   else {"cpu": 0.25})
    ctx = TrialContext(exp, algorithm, str(run_dir.resolve()), base_utility, search)
    trainable = tune.with_resources(tune.with_parameters(run_trial, ctx=ctx), resources)
    space = exp.algorithms[algorithm]
    searchable = any(spec.kind != "fixed" for spec in space.values())
    planned = grid_size(space) if search == "grid" else exp.sweep.num_samples if searchable else 1
    callback = _progress_callback(algorithm, planned, exp.sweep.objectives[0])
    if resume and tune.Tuner.can_restore(str(exp_dir)):
        print(f"[sweep {algorithm}] resuming {exp_dir}", flush=True)
        tuner = tune.Tuner.restore(str(exp_dir), trainable=trainable, resume_unfinished=True,
                                   resume_errored=True, restart_errored=False)
    else:
        concurrency = max_concurrent(exp, resources.get("cpu", 0))
        print(f"[sweep {algorithm}] {planned} trials, {search} search, up to {concurrency} at once", flush=True)
        tuner = tune.Tuner(
            trainable,
            param_space=tune_space(space, grid=search == "grid"),
            # Nothing to search (every parameter fixed): one trial, no searcher.
            tune_config=tune.TuneConfig(search_alg=make_searcher(exp, algorithm, search) if searchable else None,
                                        num_samples=planned,
                                        max_concurrent_trials=concurrency),
            run_config=tune.RunConfig(
                name=algorithm, storage_path=str(storage.resolve()), verbose=0, callbacks=[callback],
                failure_config=tune.FailureConfig(max_failures=exp.sweep.max_failures),
            ),
        )
    grid = tuner.fit()
    # After Ctrl-C, Tune's fit() returns normally with unfinished trials: stop the whole sweep here.
    # Our own trial records say what finished (a trial writes "running" when it starts, its end state last).
    states = [json.loads(p.read_text()) for p in (run_dir / "trials").glob("*/trial.json")]
    finished = sum(s["status"] != "running" for s in states if s["algorithm"] == algorithm)
    if finished < planned:
        raise SweepInterrupted(
            f"sweep interrupted during {algorithm} ({finished}/{planned} trials finished); "
            f"continue with: lume-ray sweep ... --resume"
        )
    return grid


class SweepInterrupted(KeyboardInterrupt):
    """The driver was interrupted; everything finished so far is on disk and --resume continues."""


def collect_results(run_dir: Path, exp: Experiment, search: str) -> Any:
    """Every (trial, evaluated step) row from the trial directories -> one DataFrame (no duplicates by design:
    a row is a step directory). A trial without evaluated points gets one row with its status and reason."""
    import pandas as pd

    rows = []
    provenance = {"seed": exp.seed, "workers": exp.train.workers, "zero": exp.train.zero,
                  "git_commit": git_commit(), "search": search}
    for trial_json in sorted((run_dir / "trials").glob("*/trial.json")):
        info = json.loads(trial_json.read_text())
        trial_dir = trial_json.parent
        base = {"algorithm": info["algorithm"], "trial_id": info["trial_id"],
                **{f"hp/{k}": v for k, v in info["hp"].items()},
                "trained_steps": info.get("trained_steps", 0), "finished_at": info.get("finished_at"),
                **provenance}
        status, error = info.get("status", "running"), info.get("error", "")
        for metrics_path in sorted(trial_dir.glob("step_*/metrics.json")):
            metrics = json.loads(metrics_path.read_text())
            rows.append({**base, "step": int(metrics_path.parent.name.split("_")[1]),
                         "status": "ok", "error": "", **_numeric(metrics), "wall_s": info.get("wall_s"),
                         "rows_path": str(metrics_path.parent.relative_to(run_dir) / "rows.parquet")})
        if status != "completed":  # one more row says why the trial ended early (diverged, failed, ...)
            reason = error or "interrupted before it finished"
            rows.append({**base, "step": info.get("trained_steps", 0),
                         "status": "diverged" if status == "diverged" else "failed",
                         "error": reason, "wall_s": info.get("wall_s"), "rows_path": ""})
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame = frame.sort_values(["algorithm", "trial_id", "step"]).reset_index(drop=True)
    return frame


def prepare_inputs(exp: Experiment) -> None:
    """Make the embedded default's data and target when the experiment says how and they are missing."""
    data_path = Path(resolve(exp, exp.data.path))
    if exp.data.synth is not None and not data_path.exists():
        from lume_ray.synth import write_dataset

        print(f"[sweep] writing synthetic LUME data to {data_path}", flush=True)
        write_dataset(data_path, docs_per_task=exp.data.synth.docs_per_task, seed=exp.data.synth.seed)
    model_path = Path(resolve(exp, exp.target.model))
    if exp.target.build is not None:
        from lume_ray.target import build_target

        b = exp.target.build
        print(f"[sweep] building the embedded target at {model_path} (cached when unchanged)", flush=True)
        build_target(model_path, data_path, preset=b.preset, seed=b.seed, epochs=b.epochs)


def run_sweep(exp: Experiment, *, resume: bool = False, address: str | None = None,
              search: str | None = None) -> Path:
    """The whole sweep; returns RUN_DIR. Re-run with ``resume=True`` after an interruption."""
    import ray

    from lume_ray.evaluate import evaluate

    search = search or exp.sweep.search
    exp = replace(exp, output_dir=str(Path(exp.output_dir).resolve()))  # trials run in other directories
    run_dir = Path(exp.output_dir)
    marker = run_dir / "study.json"
    if marker.exists() and not resume:
        raise ValueError(f"{run_dir}: already holds a sweep; pass --resume to continue it, or set another output_dir")
    if resume and not marker.exists():
        raise ValueError(f"{run_dir}: no sweep to resume (no study.json); run without --resume")
    t0 = time.time()
    prepare_inputs(exp)
    run_dir.mkdir(parents=True, exist_ok=True)
    import yaml

    (run_dir / "experiment.yaml").write_text(yaml.safe_dump(to_dict(exp), sort_keys=False))
    from lume_ray.metrics import direction

    study = {
        "name": exp.name, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seed": exp.seed,
        "git_commit": git_commit(), "versions": versions(), "search": search, "sampler": exp.sweep.sampler,
        "objectives": [{"name": o, "direction": direction(o)} for o in exp.sweep.objectives],
        "utility_floor": exp.eval.utility_floor, "algorithms": exp.selected_algorithms(),
        "model": resolve(exp, exp.target.model), "data": resolve(exp, exp.data.path),
        "workers": exp.train.workers, "zero": exp.train.zero, "num_samples": exp.sweep.num_samples,
    }
    if not marker.exists():
        write_json(marker, study)
    started = init_ray(address)
    try:
        base_dir = run_dir / "base"
        if (base_dir / "metrics.json").is_file():
            base = json.loads((base_dir / "metrics.json").read_text())
        else:
            print("[sweep] evaluating the target before unlearning", flush=True)
            base = evaluate(resolve(exp, exp.target.model), resolve(exp, exp.data.path),
                            settings=eval_settings(exp), **eval_inputs(exp), out_dir=base_dir)
        base_utility = base.get("utility")
        print(f"[sweep] base model: final_score {base.get('final_score')}, utility {base_utility}", flush=True)
        for algorithm in exp.selected_algorithms():
            run_algorithm(exp, algorithm, run_dir, base_utility, search, resume)
        frame = collect_results(run_dir, exp, search)
        with atomic_file(run_dir / "results.parquet") as tmp:
            frame.to_parquet(tmp, index=False)
        n_ok = int((frame["status"] == "ok").sum()) if not frame.empty else 0
        print(f"[sweep] {len(frame)} result rows ({n_ok} evaluated points) in {run_dir / 'results.parquet'} "
              f"after {time.time() - t0:.0f} s", flush=True)
        print_table(frame, exp)
    finally:
        if started:
            ray.shutdown()
    if exp.sweep.report:
        from lume_ray.report import build_report

        out = build_report(run_dir)
        print(f"[sweep] report: {out / 'report.html'}", flush=True)
    return run_dir


def print_table(frame: Any, exp: Experiment) -> None:
    if frame.empty:
        print("[sweep] no results")
        return
    hp_cols = [c for c in frame.columns if c.startswith("hp/")]
    cols = ["algorithm", "trial_id", "step", "status", *hp_cols,
            *[c for c in (*exp.sweep.objectives, "mia_score", "final_score") if c in frame.columns]]
    cols = list(dict.fromkeys(cols))
    import pandas as pd

    with pd.option_context("display.max_rows", 200, "display.width", 200, "display.precision", 3):
        print(frame[cols].to_string(index=False))


def cli_main(args: Any) -> int:
    """`lume-ray sweep EXPERIMENT [--resume] [--address URL] [--search S] [--set k=v ...]`."""
    exp = load_experiment(args.experiment, list(args.overrides))
    if args.search:
        exp = replace(exp, sweep=replace(exp.sweep, search=args.search))
    run_sweep(exp, resume=args.resume, address=args.address, search=args.search)
    return 0
