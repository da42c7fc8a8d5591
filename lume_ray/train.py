"""[4] Train: UnlearnConfig -> an unlearning job on Ray Train workers running DeepSpeed ZeRO.

Input:  :class:`lume_ray.config.UnlearnConfig` (model, LUME data, algorithm + params, trainer settings).
Output: under ``cfg.out``: ``points/step_KKKKKK/`` (a Hugging Face model dir at every evaluation point,
        ZeRO-3 weights gathered, LoRA merged, tokenizer copied), ``points.jsonl`` (step, forget/retain
        loss, model dir), ``train_log.jsonl`` (one line per step), ``result.json``; resumable DeepSpeed
        checkpoints under ``storage_path`` (default ``cfg.out/ray``). Returns :class:`UnlearnResult`.

Flow of one job, top to bottom:
  driver  validate data/model/DeepSpeed config -> TorchTrainer(train_loop, N workers) -> fit() -> result
  worker  load model (+ frozen reference) -> deepspeed.initialize -> resume from Ray's checkpoint ->
          for each step: paired seeded forget/retain micro-batch -> algorithm loss -> all-reduced loss
          check (NaN/inf: every rank stops together) -> backward/step -> log line;
          at each evaluation point: forget/retain loss on a fixed subset, save HF dir (rank 0),
          DeepSpeed checkpoint (all ranks) + ray.train.report.
Re-running with the same ``out`` (same Ray run name and storage) resumes from the last checkpoint.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from lume_ray.config import ConfigError, UnlearnConfig
from lume_ray.local_ray import ray_session

DEEPSPEED_DIR = Path(__file__).resolve().parent / "deepspeed"
POINT_DIR = "step_{:06d}"
EVAL_ROWS = 64  # rows per split in the fixed subset whose mean losses each evaluation point reports
LOG_NAME, POINTS_NAME, RESULT_NAME, STATE_NAME = "train_log.jsonl", "points.jsonl", "result.json", "state.json"
CONFIG_NAME = "config.json"
# Settings a resumed run may change: how long it trains and where it evaluates. Anything else would
# continue one trajectory with another job's settings, so a different value in the same `out` is an error.
RESUMABLE_CHANGES = frozenset({"steps", "eval_every"})
CKPT_TAG = "ckpt"

# Top-level DeepSpeed keys a template may use; DeepSpeed itself silently ignores unknown ones, so a typo
# would otherwise be lost. zero_optimization is checked key by key by DeepSpeed's own pydantic model.
DS_KEYS = frozenset({
    "train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "gradient_clipping",
    "optimizer", "scheduler", "bf16", "fp16", "zero_optimization", "steps_per_print", "wall_clock_breakdown",
    "zero_allow_untested_optimizer", "zero_force_ds_cpu_optimizer", "prescale_gradients",
    "gradient_predivide_factor", "communication_data_type", "activation_checkpointing", "flops_profiler",
})


class DeepSpeedConfigError(ConfigError):
    """A DeepSpeed JSON template is malformed; the message names the file and the key."""


# ---------------------------------------------------------------------------------------------
# Results.


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


# ---------------------------------------------------------------------------------------------
# DeepSpeed config: JSON template + values from the UnlearnConfig.


def ds_template_path(zero: int, offload: bool) -> Path:
    return DEEPSPEED_DIR / ("zero3_offload.json" if offload else f"zero{zero}.json")


def load_ds_config(cfg: UnlearnConfig, path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The DeepSpeed config for ``cfg``: the template's "auto" values filled, every key validated."""
    path = Path(path) if path is not None else ds_template_path(cfg.zero, cfg.offload)
    try:
        ds = json.loads(path.read_text())
    except FileNotFoundError:
        raise DeepSpeedConfigError(f"{path}: DeepSpeed config not found") from None
    except json.JSONDecodeError as e:
        raise DeepSpeedConfigError(f"{path}: malformed JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(ds, dict):
        raise DeepSpeedConfigError(f"{path}: expected a JSON object")
    unknown = sorted(set(ds) - DS_KEYS)
    if unknown:
        raise DeepSpeedConfigError(f"{path}: unknown key {unknown[0]!r} (valid: {', '.join(sorted(DS_KEYS))})")
    bf16 = cfg.resolved_precision == "bf16"
    fill = {
        ("train_batch_size",): cfg.batch_size,
        ("train_micro_batch_size_per_gpu",): cfg.micro_batch,
        ("optimizer", "params", "lr"): cfg.lr,
        # torch's AdamW avoids DeepSpeed's JIT op builds (~50 s for FusedAdam on CPU; nvcc on GPUs). Only
        # GPU training with CPU offload gets DeepSpeedCPUAdam, which the offloaded optimizer step needs.
        ("optimizer", "params", "torch_adam"): not (cfg.use_gpu and cfg.offload),
        ("bf16", "enabled"): bf16,
        ("zero_optimization", "offload_param", "pin_memory"): cfg.use_gpu,
        ("zero_optimization", "offload_optimizer", "pin_memory"): cfg.use_gpu,
    }
    for keys, value in fill.items():
        node = ds
        for k in keys[:-1]:
            node = node.get(k, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict) and node.get(keys[-1]) == "auto":
            node[keys[-1]] = value

    def leftover(node: Any, where: str) -> str | None:
        if node == "auto":
            return where
        if isinstance(node, dict):
            for k, v in node.items():
                found = leftover(v, f"{where}.{k}" if where else k)
                if found:
                    return found
        return None

    auto = leftover(ds, "")
    if auto:
        raise DeepSpeedConfigError(f"{path}: {auto}='auto' has no value to fill it from")
    if ds.get("fp16", {}).get("enabled"):
        raise DeepSpeedConfigError(f"{path}: fp16 is not supported (use bf16; fp16 fails on CPU)")
    if ds.get("gradient_accumulation_steps", 1) != 1:
        raise DeepSpeedConfigError(f"{path}: gradient_accumulation_steps must be 1 (micro-batch = global / workers)")
    if ds.get("train_batch_size") != cfg.batch_size or ds.get("train_micro_batch_size_per_gpu") != cfg.micro_batch:
        raise DeepSpeedConfigError(f"{path}: batch sizes must be 'auto' (filled from batch_size and workers)")
    zero = ds.get("zero_optimization", {"stage": 0})
    if zero.get("stage", 0) != cfg.zero:
        raise DeepSpeedConfigError(f"{path}: zero_optimization.stage={zero.get('stage')} but zero={cfg.zero}")
    from deepspeed.runtime.zero.config import DeepSpeedZeroConfig

    try:
        DeepSpeedZeroConfig(**zero)
    except Exception as e:  # pydantic ValidationError: unknown or ill-typed zero_optimization key
        first = " ".join(str(e).split("\n")[1:3]).strip()
        raise DeepSpeedConfigError(f"{path}: zero_optimization: {first}") from None
    return ds


def reference_ds_config(ds: dict[str, Any]) -> dict[str, Any]:
    """An inference-only DeepSpeed config for the frozen reference (ZeRO-3 sharded, no optimizer)."""
    zero = {k: v for k, v in ds["zero_optimization"].items() if k in ("stage", "offload_param",
                                                                        "stage3_param_persistence_threshold",
                                                                        "stage3_prefetch_bucket_size")}
    return {"train_batch_size": ds["train_batch_size"],
            "train_micro_batch_size_per_gpu": ds["train_micro_batch_size_per_gpu"],
            "bf16": dict(ds.get("bf16", {"enabled": False})), "zero_optimization": zero,
            "steps_per_print": ds.get("steps_per_print", 1000000)}


# ---------------------------------------------------------------------------------------------
# Paired, seeded batches. A pure function of (seed, step): resuming needs no sampler state, and the
# global batch is the same whatever the number of workers (each takes a contiguous slice of it).

FORGET_STREAM, RETAIN_STREAM, EVAL_STREAM = 0, 1, 2


@lru_cache(maxsize=64)
def _permutation(n: int, seed: int, stream: int, epoch: int) -> tuple[int, ...]:
    import torch

    gen = torch.Generator().manual_seed(seed * 1_000_003 + stream * 10_007 + epoch)
    return tuple(torch.randperm(n, generator=gen).tolist())


def batch_indices(n: int, batch: int, step: int, seed: int, stream: int) -> list[int]:
    """Row indices of the global batch at ``step`` (1-based): epoch after epoch of seeded permutations."""
    out = []
    for pos in range((step - 1) * batch, step * batch):
        epoch, i = divmod(pos, n)
        out.append(_permutation(n, seed, stream, epoch)[i])
    return out


def worker_slice(indices: Sequence[int], rank: int, world: int) -> list[int]:
    micro = len(indices) // world
    return list(indices[rank * micro:(rank + 1) * micro])


# ---------------------------------------------------------------------------------------------
# LoRA helpers.


def merge_lora_state_dict(state: dict[str, Any], scaling: float, adapter: str = "default",
                          fan_in_fan_out: frozenset[str] = frozenset()) -> dict[str, Any]:
    """A PEFT LoRA model's state dict -> the base model's, with W + scaling * (B @ A) folded in.

    Works on a plain (gathered) state dict, so it serves ZeRO-3 too, where the live modules are shards.
    ``fan_in_fan_out``: the LoRA modules (state-dict stems) whose base weight is stored (in, out), like
    GPT-2's Conv1D (see :func:`lora_fan_in_fan_out`); their delta is transposed.
    """
    stems = {key.split(".base_layer.")[0] for key in state if ".base_layer." in key}
    if not fan_in_fan_out <= stems:  # a name that matched nothing would merge a square layer untransposed
        raise ValueError(f"fan_in_fan_out module {sorted(fan_in_fan_out - stems)[0]!r} has no LoRA base layer "
                         "in the state dict")
    out: dict[str, Any] = {}
    for key, value in state.items():
        if ".lora_" in key:
            continue
        name = key.removeprefix("base_model.model.")
        if ".base_layer." in key:
            stem, leaf = key.split(".base_layer.")
            name = name.replace(".base_layer.", ".")
            if leaf == "weight":
                a = state[f"{stem}.lora_A.{adapter}.weight"].float()  # (r, in)
                b = state[f"{stem}.lora_B.{adapter}.weight"].float()  # (out, r)
                delta = (b @ a).T if stem in fan_in_fan_out else b @ a
                value = (value.float() + scaling * delta).to(value.dtype)
        out[name] = value
    return out


def lora_fan_in_fan_out(peft_model: Any) -> frozenset[str]:
    """Names of the LoRA modules of ``peft_model`` whose base weight is (in, out) (PEFT sets fan_in_fan_out)."""
    return frozenset(name for name, m in peft_model.named_modules() if getattr(m, "fan_in_fan_out", False))


def _apply_lora(model: Any, lora: dict[str, Any]) -> Any:
    from peft import LoraConfig, get_peft_model

    targets = lora["target_modules"]
    target_modules: str | list[str] = targets if targets == "all-linear" else [t.strip() for t in targets.split(",")]
    config = LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
                        target_modules=target_modules, task_type="CAUSAL_LM")
    try:
        return get_peft_model(model, config)
    except ValueError as e:
        raise ConfigError(f"lora: target_modules={targets!r}: {str(e).splitlines()[0]}") from None


class AdapterOffReference:
    """The frozen reference under LoRA: the same (possibly ZeRO-3 sharded) model with its adapter
    switched off, so the target before unlearning costs no second copy of the weights."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def __call__(self, **inputs: Any) -> Any:
        import torch

        with torch.no_grad(), self.engine.module.disable_adapter():
            return self.engine(**inputs)


# ---------------------------------------------------------------------------------------------
# The worker loop (runs in every Ray Train worker; sees only train_loop_config).


def _jsonl_truncate(path: Path, keep_through: int) -> None:
    """Drop lines of a per-step jsonl whose step is beyond ``keep_through`` (resume after a crash)."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= keep_through]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    tmp.replace(path)


def _say(message: str) -> None:
    """A progress line from a worker. Ray Train patches ``print`` into its logger, which the driver then
    shows twice; writing to the stream shows it once."""
    sys.stdout.write(message + "\n")
    sys.stdout.flush()


def _append_jsonl(path: Path, record: dict[str, Any]) -> None:
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")


def train_loop(loop_config: dict[str, Any]) -> None:
    """Ray Train worker function: everything it needs arrives in ``loop_config``."""
    import deepspeed
    import ray.train
    import torch

    from lume_ray.algorithms import get_algorithm, mean_nll
    from lume_ray.data import load_lume
    from lume_ray.model import collate, encode_pair, load_tokenizer

    cfg = UnlearnConfig.from_dict(loop_config["cfg"])
    ds_config: dict[str, Any] = loop_config["ds_config"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    is_main = rank == 0
    out = Path(cfg.out)
    # Which process runs each rank: for operators (py-spy, kill) and the worker-death tests.
    (out / "workers").mkdir(parents=True, exist_ok=True)
    (out / "workers" / f"rank{rank}.json").write_text(json.dumps({"pid": os.getpid(), "world_size": world}))
    alg = get_algorithm(cfg.algorithm)
    bf16 = cfg.resolved_precision == "bf16"
    device = torch.device("cpu")
    if cfg.use_gpu:
        import ray.train.torch

        device = ray.train.torch.get_device()
    deepspeed.init_distributed(dist_backend="nccl" if cfg.use_gpu else "gloo")  # wraps Ray's process group
    torch.manual_seed(cfg.seed)  # LoRA init and dropout

    # -- data: tokenized once; the batch of a step is a pure function of (seed, step) -------------
    tokenizer = load_tokenizer(cfg.model, trust_remote_code=cfg.trust_remote_code)
    data = load_lume(cfg.data)
    enc = {split: [encode_pair(tokenizer, r.input, r.output, add_eos=True, max_length=cfg.max_length)
                   for r in data.split(split)] for split in ("forget", "retain")}
    pad = tokenizer.pad_token_id

    def make_batch(split: str, idx: Sequence[int]) -> dict[str, torch.Tensor]:
        return {k: v.to(device) for k, v in collate([enc[split][i] for i in idx], pad).items()}

    # -- model (+ reference) as DeepSpeed engines -------------------------------------------------
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if bf16 else torch.float32
    hf_ds = None
    if cfg.zero == 3:
        # Keeps transformers' from_pretrained inside deepspeed.zero.Init: the weights are sharded as they
        # load, so no worker ever holds the whole model (what makes 7B fit).
        from transformers.integrations import HfDeepSpeedConfig

        hf_ds = HfDeepSpeedConfig(ds_config)  # noqa: F841 (must stay alive while models load)

    def load(name: str) -> Any:
        return AutoModelForCausalLM.from_pretrained(name, dtype=dtype, trust_remote_code=cfg.trust_remote_code)

    model = load(cfg.model)
    if cfg.lora is not None:
        model = _apply_lora(model, cfg.lora)
    trainable = [p for p in model.parameters() if p.requires_grad]
    engine, *_ = deepspeed.initialize(model=model, model_parameters=trainable, config=ds_config)
    ref: Any = None
    if alg.needs_ref:
        if cfg.lora is not None:
            ref = AdapterOffReference(engine)
        elif cfg.zero == 3:
            ref, *_ = deepspeed.initialize(model=load(cfg.model), config=reference_ds_config(ds_config))
            ref.eval()
        else:
            ref = load(cfg.model).to(device).eval().requires_grad_(False)

    def all_mean(values: Sequence[float]) -> list[float]:
        t = torch.tensor(list(values), dtype=torch.float64, device=device)
        torch.distributed.all_reduce(t)  # SUM; NaN anywhere -> NaN everywhere, so all ranks agree
        return (t / world).tolist()

    # -- resume -----------------------------------------------------------------------------------
    start, status, reason = 0, "running", ""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            state = json.loads((Path(d) / STATE_NAME).read_text())
            start, status, reason = int(state["step"]), state["status"], state.get("reason", "")
            if status != "diverged":
                engine.load_checkpoint(d, tag=CKPT_TAG)
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "points").mkdir(exist_ok=True)
        for name in (LOG_NAME, POINTS_NAME):  # lines past the checkpoint belong to a lost attempt
            _jsonl_truncate(out / name, start)
        if checkpoint is not None:
            _say(f"[unlearn] resumed from step {start} ({status})")
    resumed_from = start
    if status == "diverged":  # re-running a diverged job gives its verdict again, not a new attempt
        _report_marker(cfg, start, status, reason, resumed_from, is_main)
        return

    # -- evaluation subset: fixed rows, sharded so every rank runs the same number of forwards -----
    def eval_losses() -> tuple[float, float]:
        engine.eval()
        sums = []
        with torch.no_grad():
            for split, stream in (("forget", FORGET_STREAM), ("retain", RETAIN_STREAM)):
                n = len(enc[split])
                rows = list(_permutation(n, cfg.seed, EVAL_STREAM + stream, 0)[:EVAL_ROWS])
                mine = rows[rank::world]
                n_batches = math.ceil(math.ceil(len(rows) / world) / cfg.micro_batch)
                total, count = 0.0, 0.0
                for b in range(n_batches):
                    chunk = mine[b * cfg.micro_batch:(b + 1) * cfg.micro_batch]
                    batch = make_batch(split, chunk or rows[:1])  # an empty shard still joins the forward
                    nll = mean_nll(engine, batch)
                    if chunk:
                        total, count = total + float(nll.sum()), count + len(chunk)
                sums += [total, count]
        engine.train()
        s = all_mean(sums)
        return s[0] / max(s[1], 1e-9), s[2] / max(s[3], 1e-9)

    # -- the loop ---------------------------------------------------------------------------------
    eval_steps = set(cfg.eval_steps())
    engine.train()
    t_start = time.time()
    for step in range(start + 1, cfg.steps + 1):
        t0 = time.time()
        f_idx = worker_slice(batch_indices(len(enc["forget"]), cfg.batch_size, step, cfg.seed, FORGET_STREAM),
                             rank, world)
        r_idx = worker_slice(batch_indices(len(enc["retain"]), cfg.batch_size, step, cfg.seed, RETAIN_STREAM),
                             rank, world)
        loss, logs = alg.fn(engine, make_batch("forget", f_idx), make_batch("retain", r_idx), ref, cfg.params)
        loss_v, forget_v, retain_v = all_mean([float(loss.detach()), logs["forget_nll"], logs["retain_nll"]])
        if not math.isfinite(loss_v):
            # Checked before backward, on the all-reduced value: every rank sees the same NaN and stops
            # at the same step (no rank left waiting in a collective, no traceback from each worker).
            reason = f"non-finite loss ({loss_v}) at step {step}"
            if is_main:
                _append_jsonl(out / LOG_NAME, {"step": step, "loss": loss_v, "status": "diverged"})
                _say(f"[unlearn] diverged: {reason}")
            _report_marker(cfg, step - 1, "diverged", reason, resumed_from, is_main)
            return
        engine.backward(loss)
        engine.step()
        now = time.time()
        if is_main:
            record = {"step": step, "loss": loss_v, "forget_loss": forget_v, "retain_loss": retain_v,
                      "lr": engine.get_lr()[0], "step_s": now - t0, "wall_s": now - t_start, "time": now,
                      "cpu_s": time.process_time(),  # this worker's CPU seconds: overhead on a busy machine
                      **{k: v for k, v in logs.items() if k not in ("forget_nll", "retain_nll")}}
            _append_jsonl(out / LOG_NAME, record)
            _say(f"[unlearn] step {step}/{cfg.steps} loss {loss_v:.4f} forget {forget_v:.4f} "
                 f"retain {retain_v:.4f} ({now - t0:.2f} s/step)")
        if step in eval_steps:
            _eval_point(cfg, engine, tokenizer, step, eval_losses(), resumed_from, is_main)
    if start >= cfg.steps:  # already past the requested steps: report where it stands again
        _eval_point(cfg, engine, tokenizer, start, eval_losses(), resumed_from, is_main)


def _report_marker(cfg: UnlearnConfig, step: int, status: str, reason: str, resumed_from: int,
                   is_main: bool) -> None:
    """End a diverged run: every rank reports (a barrier); rank 0 attaches a small state checkpoint so
    the driver reads the status from Result.metrics (Train V2 keeps only checkpointed metrics)."""
    import ray.train

    metrics = {"step": step, "status": status, "reason": reason, "resumed_from": resumed_from}
    if not is_main:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory(prefix="lume-marker-") as d:
        (Path(d) / STATE_NAME).write_text(json.dumps(metrics))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d),
                         checkpoint_dir_name=f"checkpoint_{status}_{step:06d}")


def _eval_point(cfg: UnlearnConfig, engine: Any, tokenizer: Any, step: int, losses: tuple[float, float],
                resumed_from: int, is_main: bool) -> None:
    """Save the HF model dir (rank 0), a DeepSpeed checkpoint (all ranks) and report both."""
    import ray.train

    out = Path(cfg.out)
    model_dir = out / "points" / POINT_DIR.format(step)
    # Gathering ZeRO-3 shards is a collective: every rank takes part, rank 0 receives the full weights.
    state = engine._zero3_consolidated_16bit_state_dict() if cfg.zero == 3 else (
        engine.module.state_dict() if is_main else None)
    if is_main and state is not None:
        _save_hf(engine.module, state, tokenizer, model_dir, cfg)
    forget_loss, retain_loss = losses
    status = "completed" if step >= cfg.steps else "running"
    metrics = {"step": step, "status": status, "reason": "", "forget_loss": forget_loss, "retain_loss": retain_loss,
               "model_dir": str(model_dir), "resumed_from": resumed_from}
    with tempfile.TemporaryDirectory(prefix="lume-ckpt-") as d:
        engine.save_checkpoint(d, tag=CKPT_TAG)
        if is_main:
            (Path(d) / STATE_NAME).write_text(json.dumps(metrics))
            _append_jsonl(out / POINTS_NAME, {k: metrics[k] for k in ("step", "forget_loss", "retain_loss",
                                                                       "model_dir")})
            _say(f"[unlearn] point step {step}: forget loss {forget_loss:.4f} retain loss {retain_loss:.4f} "
                 f"-> {model_dir}")
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d),
                         checkpoint_dir_name=f"checkpoint_step_{step:06d}")


def _save_hf(module: Any, state: dict[str, Any], tokenizer: Any, model_dir: Path, cfg: UnlearnConfig) -> None:
    """Write a loadable HF model dir atomically (temp dir, then rename); LoRA weights merged in."""
    base = module
    if cfg.lora is not None:
        base = module.get_base_model()
        state = merge_lora_state_dict(state, scaling=cfg.lora["alpha"] / cfg.lora["r"],
                                      fan_in_fan_out=lora_fan_in_fan_out(module))
    state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    tmp = model_dir.with_name(f".{model_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    base.save_pretrained(tmp, state_dict=state)
    tokenizer.save_pretrained(tmp)
    if model_dir.exists():  # left by an attempt that crashed after writing it
        shutil.rmtree(model_dir)
    tmp.rename(model_dir)


# ---------------------------------------------------------------------------------------------
# Driver side.


def default_run_name(out: str | os.PathLike[str]) -> str:
    """A stable Ray Train run name for an output dir: the same ``--out`` resumes the same run."""
    return "unlearn-" + hashlib.sha1(str(Path(out).resolve()).encode()).hexdigest()[:12]


def _absolute(cfg: UnlearnConfig) -> UnlearnConfig:
    """Workers chdir into Ray's run dir: hand them absolute paths (hub ids stay as they are)."""
    def fix(p: str) -> str:
        return str(Path(p).resolve()) if Path(p).exists() else p

    return replace(cfg, model=fix(cfg.model), data=fix(cfg.data), out=str(Path(cfg.out).resolve()))


def _preflight(cfg: UnlearnConfig) -> None:
    """Fail in the driver, with a one-line message, on what would otherwise fail in every worker."""
    from transformers import AutoConfig

    from lume_ray.data import load_lume
    from lume_ray.model import ModelError, _check_source

    data = load_lume(cfg.data)
    if not data.forget or not data.retain:
        raise ConfigError(f"data={cfg.data!r}: forget and retain must both have rows")
    _check_source(cfg.model)
    try:
        mc = AutoConfig.from_pretrained(cfg.model, trust_remote_code=cfg.trust_remote_code)
    except Exception as e:
        raise ModelError(f"{cfg.model}: could not load model config ({type(e).__name__})") from None
    layers = getattr(mc, "num_hidden_layers", None)
    if cfg.algorithm == "rmu" and layers is not None and int(cfg.params["layer"]) > layers:
        raise ConfigError(f"rmu parameter layer={cfg.params['layer']}: the model has {layers} layers "
                          f"(valid: 0..{layers})")


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


def _check_same_job(cfg: UnlearnConfig) -> None:
    """Record the job's config in ``out``; refuse to resume a different job there."""
    path = Path(cfg.out) / CONFIG_NAME
    current = cfg.to_dict()
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


def _finished(cfg: UnlearnConfig) -> UnlearnResult | None:
    """The stored result of an earlier run on the same ``out`` that needs no more training."""
    path = Path(cfg.out) / RESULT_NAME
    if not path.exists():
        return None
    rec = json.loads(path.read_text())
    if rec["status"] == "diverged" or (rec["status"] == "completed" and rec["steps_done"] >= cfg.steps):
        rec["points"] = [EvalPoint(**p) for p in rec["points"]]
        return UnlearnResult(**{**rec, "wall_s": 0.0})
    return None


def worker_env(cfg: UnlearnConfig) -> dict[str, str]:
    env = {"TOKENIZERS_PARALLELISM": "false",
           "TORCH_EXTENSIONS_DIR": os.environ.get("TORCH_EXTENSIONS_DIR",
                                                  str(Path.home() / ".cache" / "torch_extensions"))}
    if not cfg.use_gpu:
        env["DS_ACCELERATOR"] = "cpu"
    return env


def _trainer(cfg: UnlearnConfig, ds_config: dict[str, Any], name: str, storage: str,
             extra_callbacks: Sequence[Any]) -> Any:
    """The TorchTrainer of one job: cfg.workers workers (gloo on CPU, nccl on GPU), no Train-level retries
    (a failed job is retried, and resumed from its checkpoint, by the sweep's Tune trial)."""
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    resources = {"CPU": cfg.cpus_per_worker, **({"GPU": 1.0} if cfg.use_gpu else {})}
    return TorchTrainer(
        train_loop,
        train_loop_config={"cfg": cfg.to_dict(), "ds_config": ds_config},
        scaling_config=ray.train.ScalingConfig(num_workers=cfg.workers, use_gpu=cfg.use_gpu,
                                               resources_per_worker=resources),
        torch_config=TorchConfig(backend="nccl" if cfg.use_gpu else "gloo"),
        run_config=ray.train.RunConfig(  # type: ignore[call-arg]  # mypy sees the V1 class; V2 has these
            name=name, storage_path=storage,
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),  # DeepSpeed checkpoints are big
            failure_config=ray.train.FailureConfig(max_failures=0),
            callbacks=list(extra_callbacks), worker_runtime_env={"env_vars": worker_env(cfg)},
        ),
    )


def run_unlearning(cfg: UnlearnConfig, *, storage_path: str | None = None, run_name: str | None = None,
                   extra_callbacks: Sequence[Any] = ()) -> UnlearnResult:
    """Run (or resume) one unlearning job as a Ray Train TorchTrainer and wait for it.

    Uses the Ray already initialized (inside a Tune trial or after ``ray.init(address=...)``); otherwise
    starts a local one on 127.0.0.1 for the job and shuts it down afterwards.
    """
    t0 = time.time()
    cfg = _absolute(cfg)
    out = Path(cfg.out)
    _preflight(cfg)
    ds_config = load_ds_config(cfg)
    _check_same_job(cfg)
    done = _finished(cfg)
    if done is not None:
        return done
    storage = str(Path(storage_path).resolve()) if storage_path else str(out / "ray")
    name = run_name or default_run_name(out)

    status, reason, steps_done, resumed_from = "failed", "", 0, 0
    need = math.ceil(cfg.workers * cfg.cpus_per_worker) + 1
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
        reason = f"{type(error).__name__}: {_first_line(error)}"
        log = _read_jsonl(out / LOG_NAME)
        steps_done = max((r["step"] for r in log if "forget_loss" in r), default=0)
    res = UnlearnResult(status=status, reason=reason, points=read_points(out, through=steps_done),
                        log_path=str(out / LOG_NAME), wall_s=time.time() - t0, steps_done=steps_done,
                        resumed_from=resumed_from, run_dir=str(Path(storage) / name))
    _write_result(out, res)
    return res


def _first_line(e: BaseException) -> str:
    """The most telling line of a (possibly wrapped, multi-line) worker error."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    errors = [ln for ln in lines if "Error" in ln.split(":")[0] or ln.startswith("ValueError")]
    return (errors[-1] if errors else lines[0] if lines else type(e).__name__)[:300]


def cli_main(args: argparse.Namespace) -> int:
    """``lume-ray unlearn``: run one job (local Ray on 127.0.0.1, or ``--address``), print a summary."""
    import ray

    cfg = UnlearnConfig.from_args(args)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
    print(f"[unlearn] {cfg.algorithm} {cfg.params} lr={cfg.lr} steps={cfg.steps} batch={cfg.batch_size} "
          f"workers={cfg.workers} zero={cfg.zero} precision={cfg.resolved_precision} -> {cfg.out}", flush=True)
    started = False
    if args.address and not ray.is_initialized() and _finished(_absolute(cfg)) is None:
        _preflight(_absolute(cfg))  # bad input fails here, before connecting
        ray.init(address=args.address)
        started = True
    try:
        res = run_unlearning(cfg)
    finally:
        if started:
            ray.shutdown()
    print(f"[unlearn] {res.status}{': ' + res.reason if res.reason else ''} after {res.steps_done} steps "
          f"in {res.wall_s:.1f} s (resumed from step {res.resumed_from})")
    for p in res.points:
        print(f"  step {p.step:>6}  forget loss {p.forget_loss:.4f}  retain loss {p.retain_loss:.4f}  {p.model_dir}")
    print(f"  log: {res.log_path}")
    if res.status == "failed":
        print(f"lume-ray: error: unlearning failed: {res.reason}", file=sys.stderr)
        return 1
    return 0

