"""[3] One trial: a config from the searcher -> an unlearning job whose points are evaluated as it trains.

Input:  ``{"algorithm", "lr", <algorithm parameters>}`` (Tune's trial config) and a :class:`TrialContext`
        (the experiment, RUN_DIR, the evaluation pool, the base utility), passed with ``tune.with_parameters``.
Output: ``RUN_DIR/trials/<trial_id>/``: ``trial.json`` (always ends in a terminal state with its reason),
        ``train/`` (the job; its points' models under ``train/points/``, which the sweep's driver keeps or removes:
        :mod:`lume_ray.search.keep`), ``ray/`` (the job's checkpoint), ``step_XXXXXX/`` (each point's metrics.json
        and rows.parquet); one ``tune.report`` per evaluated point (the searcher tells its study each one).

The job trains in a thread while this function watches its evaluation points appear (rank 0 writes
``points.jsonl`` after each model directory) and sends each to the sweep's evaluation pool at once: point k
is evaluated while training goes on to point k+1. With early stopping not pipelined (``early_stop.pipelined``,
"auto": on CPU jobs) the job instead waits at each rung, alive, until that point is scored and reported: Tune's
``report`` returns only once the scheduler has let the trial continue, and then this function writes the job's
go-ahead file; a stopped trial ends with its job there, before it trains a step further. A failure is recorded
as "failed" with its reason and re-raised, so Tune retries the trial, which resumes its job from the last
checkpoint and evaluates only what is missing.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lume_ray.config import Experiment, UnlearnJob
from lume_ray.run_dir import RunDir


class TrialFailed(RuntimeError):
    """An unlearning job ended in failure (not divergence): Tune retries the trial up to max_failures."""


@dataclass(frozen=True)
class TrialContext:
    """Everything a trial needs, passed explicitly (tune.with_parameters): no globals."""

    exp: Experiment
    run_dir: str
    pool: Any  # the EvalPool actor handle
    base_utility: float | None


def _first_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:500]


def _numeric(metrics: dict[str, Any]) -> dict[str, Any]:
    from lume_ray.evaluate.metrics import METRICS

    return {k: v for k, v in metrics.items() if k in METRICS and (v is None or isinstance(v, bool | int | float))}


def run_trial(config: dict[str, Any], ctx: TrialContext) -> None:
    """Tune function trainable: unlearn with ``config``, evaluate every point as it appears, report each."""
    from ray import tune

    from lume_ray.plugins import load_plugins

    load_plugins(ctx.exp.plugins)  # before any name is looked up in this process (the job's algorithm, metrics)
    exp, rd, t0 = ctx.exp, RunDir(ctx.run_dir), time.time()
    trial_id = tune.get_context().get_trial_id()
    algorithm = str(config["algorithm"])
    hp = {k: v for k, v in config.items() if k not in ("algorithm", "origin")}
    earlier = rd.read_trial(trial_id) or {}
    info: dict[str, Any] = {"trial_id": trial_id, "algorithm": algorithm, "hp": hp, "status": "running", "error": "",
                            "started_at": earlier.get("started_at", t0), "attempts": earlier.get("attempts", 0) + 1,
                            "origin": config.get("origin", earlier.get("origin", ""))}
    # One job to the trajectory's end; its points are evaluated while it trains on (pipelined, GPU jobs by
    # default), or it waits at each rung until the scheduler has judged the trial there (CPU jobs by default).
    job = exp.unlearn_job(algorithm, hp, rd.job(trial_id))
    rd.write_trial(trial_id, info)
    try:
        result = _train_and_evaluate(job, ctx, rd, trial_id, t0)
    except Exception as e:  # recorded, then re-raised: Tune retries the trial, which resumes its checkpoint
        _end(rd, info, "failed", _first_line(e), t0)
        raise
    info["trained_steps"] = result.steps_done
    if result.status == "failed":  # e.g. a worker died: Tune retries the trial, which resumes its checkpoint
        _end(rd, info, "failed", result.reason or "the unlearning job failed", t0)
        raise TrialFailed(result.reason or "the unlearning job failed")
    # The points' models and the job's checkpoint are the driver's to remove (search/keep.py: sweep.keep_models).
    _end(rd, info, result.status, result.reason or "", t0)
    if result.status != "completed":  # the last word Tune hears: this setting diverged
        tune.report({**dict.fromkeys(exp.sweep.objectives, float("nan")), "step": result.steps_done,
                     "status": result.status, "error": result.reason or "", "wall_s": time.time() - t0})


def _train_and_evaluate(job: UnlearnJob, ctx: TrialContext, rd: RunDir, trial_id: str, t0: float) -> Any:
    """Run ``job`` in a thread; send each evaluation point to the pool as soon as it is written; report the
    scored points in step order, and give a job waiting at a point its go-ahead once that point is reported.
    Returns the job's UnlearnResult; raises the first training or evaluation error."""
    import ray

    from lume_ray.train import read_points, run_unlearning
    from lume_ray.train.loop import go_path

    box: dict[str, Any] = {}

    def train() -> None:
        try:
            box["result"] = run_unlearning(job, storage_path=str(rd.checkpoints(trial_id)),
                                           run_name=f"train-{trial_id}")
        except BaseException as e:  # noqa: BLE001  (re-raised in the trial's thread below)
            box["error"] = e

    thread = threading.Thread(target=train, name=f"train-{trial_id}", daemon=True)
    thread.start()
    pending: dict[int, Any] = {}  # step -> ObjectRef of its metrics
    done = set(rd.point_metrics(trial_id))  # points evaluated before (an earlier attempt)
    reported: set[int] = set()
    eval_error: BaseException | None = None
    while True:
        alive = thread.is_alive()
        for point in read_points(job.out):
            if point.step in done or point.step in pending or not Path(point.model_dir).is_dir():
                continue
            pending[point.step] = ctx.pool.evaluate.remote(point.model_dir, str(rd.point(trial_id, point.step)),
                                                           ctx.base_utility)
        ready, _ = ray.wait(list(pending.values()), num_returns=len(pending), timeout=0.5) if pending else ([], [])
        for step, ref in sorted(pending.items()):
            if ref in ready:
                try:
                    ray.get(ref)
                    done.add(step)
                except Exception as e:  # the points evaluated before the error are still reported
                    eval_error = eval_error or e
                del pending[step]
        for step in sorted(done - reported):  # in step order: once every earlier point is reported
            if any(s < step for s in pending):
                break
            _report_point(rd, trial_id, step, t0, ctx.exp, ctx)  # returns once the scheduler lets the trial go on
            reported.add(step)
            if step in job.wait_steps:
                go = go_path(job.out, step)
                go.parent.mkdir(parents=True, exist_ok=True)
                go.touch()
        if not alive and not pending:
            break
        if eval_error is not None and job.wait_steps and not pending:  # the job may wait for a point never scored
            raise eval_error
        if not pending:
            time.sleep(0.5)
    thread.join()
    error = box.get("error") or eval_error
    if error is not None:
        raise error
    return box["result"]


def _report_point(rd: RunDir, trial_id: str, step: int, t0: float, exp: Experiment, ctx: TrialContext) -> None:
    from ray import tune

    metrics = json.loads((rd.point(trial_id, step) / "metrics.json").read_text())
    tune.report({**_numeric(metrics), "step": step, "status": "ok", "wall_s": time.time() - t0})


def _end(rd: RunDir, info: dict[str, Any], status: str, error: str, t0: float) -> None:
    current = rd.read_trial(info["trial_id"]) or {}
    if current.get("status") == "stopped":  # the scheduler's verdict stands (it wrote the record)
        return
    now = time.time()
    info.update(status=status, error=error, finished_at=now, wall_s=now - info.get("started_at", t0))
    rd.write_trial(info["trial_id"], info)
