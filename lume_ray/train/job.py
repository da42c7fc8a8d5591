"""[3 unlearn] Unlearning job: an :class:`~lume_ray.config.UnlearnJob` -> a Ray Train TorchTrainer of DeepSpeed workers.

Input:  the job (model, LUME data, algorithm + params, lr, steps, evaluation steps, trainer settings, out).
Output: :class:`UnlearnResult` (status, reason, evaluation points, steps done) and, under ``job.out``, what the
        workers write (:mod:`lume_ray.train.loop`) plus ``config.json`` and ``result.json``; resumable DeepSpeed
        checkpoints under ``storage_path`` (default ``job.out/ray``).

Driver flow: check data, model and DeepSpeed config here (one-line errors, before any worker starts) ->
TorchTrainer(train_loop, N workers: gloo on CPU, NCCL on GPUs) -> fit() -> result. Re-running with the same
``out`` (same Ray run name and storage) resumes from the last checkpoint, and may train more steps.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lume_ray.config import ConfigError, UnlearnJob
from lume_ray.data import load_lume
from lume_ray.local_ray import ray_session
from lume_ray.train.ds_config import load_ds_config
from lume_ray.train.loop import LOG_NAME, POINTS_NAME, train_loop

RESULT_NAME, CONFIG_NAME = "result.json", "config.json"
# Settings a resumed run may change: how long it trains, where it evaluates and where it waits. Anything else
# would continue one trajectory with another job's settings, so a different value in the same `out` is an error.
RESUMABLE_CHANGES = frozenset({"steps", "eval_steps", "wait_steps"})



@dataclass(frozen=True)
class EvalPoint:
    """One evaluation point: the model after ``step`` steps and its mean forget/retain NLL."""

    step: int
    model_dir: str
    forget_loss: float
    retain_loss: float


@dataclass(frozen=True)
class UnlearnResult:
    status: str  # "completed" | "diverged" | "failed"
    reason: str
    points: list[EvalPoint]
    log_path: str
    wall_s: float
    steps_done: int
    resumed_from: int = 0
    run_dir: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)



def default_run_name(out: str | os.PathLike[str]) -> str:
    """A stable Ray Train run name for an output dir: the same ``--out`` resumes the same run."""
    return "unlearn-" + hashlib.sha1(str(Path(out).resolve()).encode()).hexdigest()[:12]


def absolute(cfg: UnlearnJob) -> UnlearnJob:
    """Workers chdir into Ray's run dir: hand them absolute paths (hub ids stay as they are)."""
    def fix(p: str) -> str:
        return str(Path(p).resolve()) if Path(p).exists() else p

    return cfg.model_copy(update={"model": fix(cfg.model), "data": fix(cfg.data), "out": str(Path(cfg.out).resolve())})


def preflight(cfg: UnlearnJob) -> None:
    """Fail in the driver, with a one-line message, on what would otherwise fail in every worker."""
    from transformers import AutoConfig  # heavy: transformers

    from lume_ray.algorithms import get_algorithm  # heavy: torch
    from lume_ray.model import ModelError, check_source  # heavy: torch, transformers

    data = load_lume(cfg.data)
    if not data.forget or not data.retain:
        raise ConfigError(f"data={cfg.data!r}: forget and retain must both have rows")
    check_source(cfg.model)
    try:
        mc = AutoConfig.from_pretrained(cfg.model, trust_remote_code=cfg.trust_remote_code)
    except Exception as e:
        raise ModelError(f"{cfg.model}: could not load model config ({type(e).__name__})") from None
    check = get_algorithm(cfg.algorithm).check  # the algorithm's own test of its parameters against the model
    if check is not None:
        try:
            check(cfg.params, mc)
        except ValueError as e:
            raise ConfigError(str(e)) from None


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_points(out: str | os.PathLike[str], through: int | None = None) -> list[EvalPoint]:
    """Evaluation points recorded under ``out`` (the latest record per step), in step order."""
    by_step = {rec["step"]: rec for rec in _read_jsonl(Path(out) / POINTS_NAME)}
    return [EvalPoint(int(r["step"]), r["model_dir"], float(r["forget_loss"]), float(r["retain_loss"]))
            for s, r in sorted(by_step.items()) if through is None or s <= through]


def _write_result(out: Path, result: UnlearnResult) -> None:
    tmp = out / (RESULT_NAME + ".tmp")
    tmp.write_text(json.dumps(result.to_dict(), indent=2))
    tmp.replace(out / RESULT_NAME)


def _check_same_job(cfg: UnlearnJob) -> None:
    """Record the job's config in ``out``; refuse to resume a different job there."""
    path = Path(cfg.out) / CONFIG_NAME
    current = cfg.model_dump(mode="json")
    if path.exists():
        before = json.loads(path.read_text())
        for key, value in current.items():
            if key not in RESUMABLE_CHANGES and key in before and before[key] != value:
                raise ConfigError(f"{cfg.out} holds a job with {key}={before[key]!r}, not {value!r}: use another "
                                  f"out (only {', '.join(sorted(RESUMABLE_CHANGES))} may change on resume)")
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(current, indent=2))
    tmp.replace(path)


def _finished(cfg: UnlearnJob) -> UnlearnResult | None:
    """The stored result of an earlier run on the same ``out`` that needs no more training."""
    path = Path(cfg.out) / RESULT_NAME
    if not path.exists():
        return None
    rec = json.loads(path.read_text())
    if rec["status"] == "diverged" or (rec["status"] == "completed" and rec["steps_done"] >= cfg.steps):
        rec["points"] = [EvalPoint(**p) for p in rec["points"]]
        return UnlearnResult(**{**rec, "wall_s": 0.0})
    return None


def worker_env(cfg: UnlearnJob) -> dict[str, str]:
    env = {"TOKENIZERS_PARALLELISM": "false",
           "TORCH_EXTENSIONS_DIR": os.environ.get("TORCH_EXTENSIONS_DIR",
                                                  str(Path.home() / ".cache" / "torch_extensions"))}
    if not cfg.train.use_gpu:
        env["DS_ACCELERATOR"] = "cpu"
    return env


def _trainer(cfg: UnlearnJob, ds_config: dict[str, Any], name: str, storage: str,
             extra_callbacks: Sequence[Any]) -> Any:
    """The TorchTrainer of one job: cfg.train.workers workers (gloo on CPU, nccl on GPU), no Train-level retries
    (a failed job is retried, and resumed from its checkpoint, by the sweep's Tune trial)."""
    import ray.train  # heavy: ray
    from ray.train.torch import TorchConfig, TorchTrainer  # heavy: ray

    resources = {"CPU": cfg.train.cpus_per_worker, **({"GPU": 1.0} if cfg.train.use_gpu else {})}
    return TorchTrainer(
        train_loop,
        train_loop_config={"job": cfg.model_dump(mode="json"), "ds_config": ds_config},
        scaling_config=ray.train.ScalingConfig(num_workers=cfg.train.workers, use_gpu=cfg.train.use_gpu,
                                               resources_per_worker=resources,
                                               placement_strategy=cfg.train.placement),
        torch_config=TorchConfig(backend="nccl" if cfg.train.use_gpu else "gloo"),
        run_config=ray.train.RunConfig(  # type: ignore[call-arg]  # mypy sees the V1 class; V2 has these
            name=name, storage_path=storage,
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),  # DeepSpeed checkpoints are big
            failure_config=ray.train.FailureConfig(max_failures=0),
            callbacks=list(extra_callbacks), worker_runtime_env={"env_vars": worker_env(cfg)},
        ),
    )


def run_unlearning(cfg: UnlearnJob, *, storage_path: str | None = None, run_name: str | None = None,
                   extra_callbacks: Sequence[Any] = ()) -> UnlearnResult:
    """Run (or resume) one unlearning job as a Ray Train TorchTrainer and wait for it.

    Uses the Ray already initialized (inside a Tune trial or after ``ray.init(address=...)``); otherwise
    starts a local one on 127.0.0.1 for the job and shuts it down afterwards.
    """
    t0 = time.time()
    cfg = absolute(cfg)
    out = Path(cfg.out)
    preflight(cfg)
    ds_config = load_ds_config(cfg)
    _check_same_job(cfg)
    done = _finished(cfg)
    if done is not None:
        return done
    storage = str(Path(storage_path).resolve()) if storage_path else str(out / "ray")
    name = run_name or default_run_name(out)

    status, reason, steps_done, resumed_from = "failed", "", 0, 0
    need = math.ceil(cfg.train.workers * cfg.train.cpus_per_worker) + 1
    # Starting Ray and building the trainer raise as they are (a setup error is not a failed job).
    with ray_session(num_cpus=max(need, os.cpu_count() or 1), object_store_mb=256, log_to_driver=True):
        trainer = _trainer(cfg, ds_config, name, storage, extra_callbacks)
        try:
            result: Any = trainer.fit()
            error: Exception | None = None
        except Exception as e:  # ray.train.TrainingFailedError: a worker raised
            result, error = None, e
    if error is None:
        metrics = result.metrics or {}
        status = metrics.get("status", "failed")
        reason = metrics.get("reason", "") or ("" if metrics else "the job reported no checkpoint")
        steps_done = int(metrics.get("step", 0))
        resumed_from = int(metrics.get("resumed_from", 0))
        if status == "running":  # cannot happen unless the loop ended early
            status, reason = "failed", f"stopped at step {steps_done} of {cfg.steps}"
    else:
        status = "failed"
        reason = _reason(error)
        log = _read_jsonl(out / LOG_NAME)
        steps_done = max((r["step"] for r in log if "forget_loss" in r), default=0)
    res = UnlearnResult(status=status, reason=reason, points=read_points(out, through=steps_done),
                        log_path=str(out / LOG_NAME), wall_s=time.time() - t0, steps_done=steps_done,
                        resumed_from=resumed_from, run_dir=str(Path(storage) / name))
    _write_result(out, res)
    return res


def _reason(error: BaseException) -> str:
    """Why a job failed, in one line. A worker process that died (killed, out of memory, crashed) fails Ray Train's
    health check: its WorkerGroupError's text is only a "[Rank 0 Error Snippet]" header, the cause is kept apart."""
    for rank, failure in sorted((getattr(error, "worker_failures", None) or {}).items()):
        cause = getattr(failure, "health_check_failure", None)
        if cause is not None:
            return f"worker rank {rank} died ({type(cause).__name__}: {_first_line(cause)})"[:300]
    return f"{type(error).__name__}: {_first_line(error)}"


def _first_line(e: BaseException) -> str:
    """The most telling line of a (possibly wrapped, multi-line) worker error."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    errors = [ln for ln in lines if "Error" in ln.split(":")[0] or ln.startswith("ValueError")]
    return (errors[-1] if errors else lines[0] if lines else type(e).__name__)[:300]

