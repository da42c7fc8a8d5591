"""A deleted evaluation point, rebuilt: the trial's trajectory re-run to that step and scored as the sweep did.

Input:  a :class:`~lume_ray.export.select.Selected` point whose model directory the sweep deleted, RUN_DIR's
        experiment.yaml (evaluation settings and inputs), a working directory (removed by the caller).
Output: :class:`Rerun`: the re-run point's model directory (under the working directory), its metrics, and the
        comparison with the recorded metrics.json (:func:`compare`); a mismatch raises :class:`RerunMismatch`.

The job is the trial's own (``trials/<id>/train/config.json``: same model, data, algorithm, parameters, lr, seed,
batch, workers, ZeRO stage, precision), with ``steps`` = the point's step and one evaluation point there. With a
constant learning rate and batches that depend only on (seed, step) a shorter run passes through the same
weights (DESIGN.md section 1), so Ray Train + DeepSpeed reach the point again (:func:`lume_ray.train.run_unlearning`).
It is scored by the sweep's evaluation pool (:mod:`lume_ray.evaluate.pool`: the same actors, batches and
aggregation), against the base model's utility from RUN_DIR/base/metrics.json. On CPU in float32 every metric
comes back identical (tolerance 0); on GPUs or in bfloat16 kernels are not bitwise reproducible and the
comparison allows :data:`GPU_TOLERANCE` (absolute) unless told otherwise.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lume_ray.config import ConfigError, Experiment, UnlearnJob, load_experiment
from lume_ray.export.select import Selected
from lume_ray.run_dir import RunDir

GPU_TOLERANCE = 1e-3  # absolute, per metric, for a re-run on GPUs or in bfloat16


class RerunFailed(RuntimeError):
    """The re-run did not reach the point (its job failed or diverged), or scored it differently."""


class RerunMismatch(RerunFailed):
    """The re-run point's metrics differ from the recorded ones beyond the tolerance."""


@dataclass(frozen=True)
class Rerun:
    model_dir: Path
    metrics: dict[str, Any]
    compared: int  # registered metrics with a value, all equal within the tolerance
    tolerance: float
    wall_s: float

    def sentence(self, point: Selected) -> str:
        within = "equal the recorded ones" if self.tolerance == 0 else f"within {self.tolerance:g} of the recorded ones"
        return f"re-ran trial {point.trial_id} to step {point.step}: {self.compared} metrics {within}"


def trial_job(rd: RunDir, point: Selected, exp: Experiment | None, out: Path) -> UnlearnJob:
    """The trial's unlearning job, trained to ``point.step`` with one evaluation point there, writing to ``out``."""
    config = rd.trial(point.trial_id) / "train" / "config.json"
    if config.is_file():
        raw = json.loads(config.read_text())
    else:  # an older run: the trial's job as the sweep builds it
        if exp is None or point.algorithm not in exp.algorithms:
            raise ConfigError(f"{config} not found, and experiment.yaml has no algorithm {point.algorithm!r}")
        raw = exp.unlearn_job(point.algorithm, point.hp, out).model_dump(mode="json")
    raw.update(steps=point.step, eval_steps=[point.step], wait_steps=[], out=str(out))
    try:
        return UnlearnJob.model_validate(raw)
    except ValueError as e:
        raise ConfigError(f"{config}: the trial's job is not valid here ({str(e).splitlines()[0]})") from None


def tolerance_for(job: UnlearnJob, exp: Experiment, gpus_in_cluster: float) -> float:
    """0 when training and scoring both ran on CPUs in float32 (bitwise reproducible), else GPU_TOLERANCE."""
    eval_gpu = exp.eval.gpus_per_actor if exp.eval.gpus_per_actor is not None else (1.0 if gpus_in_cluster else 0.0)
    cpu_fp32 = (not job.train.use_gpu and job.train.resolved_precision == "fp32" and exp.eval.dtype == "float32"
                and not eval_gpu)
    return 0.0 if cpu_fp32 else GPU_TOLERANCE


def _value(v: Any) -> Any:
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


def compare(recorded: Mapping[str, Any], rerun: Mapping[str, Any], tolerance: float) -> tuple[int, list[str]]:
    """Every registered metric of the two metrics.json: (how many have a value and agree, the differences as
    "metric recorded X, re-run Y"). Numbers agree when ``|a - b| <= tolerance`` (0: exactly equal); flags and
    missing values must be the same."""
    from lume_ray.evaluate.metrics import METRICS

    agree, differ = 0, []
    for name in METRICS:
        a, b = _value(recorded.get(name)), _value(rerun.get(name))
        if a is None and b is None:
            continue
        numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (a, b))
        same = abs(float(a) - float(b)) <= tolerance if numbers else a == b  # type: ignore[arg-type]
        if same:
            agree += 1
        else:
            differ.append(f"{name} recorded {a!r}, re-run {b!r}")
    return agree, differ


def rerun_point(point: Selected, work: Path, *, address: str | None = None, tolerance: float | None = None,
                log: Callable[[str], None] = print) -> Rerun:
    """Re-run ``point``'s trial to its step in ``work`` and score it as the sweep did; raise RerunFailed /
    RerunMismatch unless the scores equal the recorded ones (within the tolerance)."""
    import time

    import ray

    from lume_ray.evaluate.pool import evaluation_pool
    from lume_ray.local_ray import ray_session
    from lume_ray.search.sweep import eval_inputs
    from lume_ray.train import run_unlearning
    from lume_ray.train.job import absolute, preflight

    t0 = time.time()
    rd = RunDir(point.run_dir)
    exp = load_experiment(rd.experiment_path).resolved()
    job = trial_job(rd, point, exp, work / "train")
    preflight(absolute(job))  # the target and the data still there: a one-line error before Ray starts
    base = rd.base_metrics() or {}
    t = job.train
    log(f"[export] re-running trial {point.trial_id} ({job.algorithm}, lr {job.lr:g}"
        + "".join(f", {k} {v}" for k, v in job.params.items())
        + f") to step {job.steps}: seed {job.seed}, batch {t.batch_size}, {t.workers} worker(s), ZeRO {t.zero}, "
          f"{t.resolved_precision}")
    need = t.workers * t.cpus_per_worker + exp.eval.workers * (exp.eval.cpus_per_actor or 1.0) + 1
    with ray_session(address=address, num_cpus=max(math.ceil(need), os.cpu_count() or 1), object_store_mb=512,
                     log_to_driver=True):
        res = run_unlearning(job)
        if res.status != "completed" or res.steps_done != point.step:
            raise RerunFailed(f"re-run of trial {point.trial_id} to step {point.step} {res.status} after "
                              f"{res.steps_done} steps{': ' + res.reason if res.reason else ''}")
        model_dir = Path(res.points[-1].model_dir)
        log(f"[export] step {point.step} reached in {res.wall_s:.0f} s; scoring it with the sweep's evaluation "
            "settings")
        tol = tolerance if tolerance is not None else tolerance_for(job, exp, ray.cluster_resources().get("GPU", 0))
        data, model = exp.path(exp.data.path), exp.path(exp.target.model)
        with evaluation_pool(data=data, settings=exp.eval, base_model=model,
                             trust_remote_code=exp.target.trust_remote_code, **eval_inputs(exp)) as pool:
            metrics = ray.get(pool.evaluate.remote(str(model_dir), str(work / "eval"), base.get("utility")))
    agree, differ = compare(point.metrics, metrics, tol)
    if differ:
        raise RerunMismatch(f"re-run of trial {point.trial_id} to step {point.step} differs from the recorded "
                            f"metrics (tolerance {tol:g}): " + "; ".join(differ))
    return Rerun(model_dir, metrics, agree, tol, time.time() - t0)
