"""[3 unlearn] DeepSpeed config: a JSON template (train/deepspeed/*.json) + an :class:`UnlearnJob` -> a validated dict.

Input:  the job (ZeRO stage, offload, batch, workers, lr, precision, GPU or not).
Output: the DeepSpeed config for the trained model, and an inference-only one for the frozen reference.
Every "auto" value is filled from the job, every key checked (DeepSpeed itself ignores unknown top-level
keys, so a typo would be lost; ``zero_optimization`` is checked by DeepSpeed's own pydantic model).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from lume_ray.config import ConfigError, UnlearnJob

DEEPSPEED_DIR = Path(__file__).resolve().parent / "deepspeed"

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



def ds_template_path(zero: int, offload: bool) -> Path:
    return DEEPSPEED_DIR / ("zero3_offload.json" if offload else f"zero{zero}.json")


def load_ds_config(cfg: UnlearnJob, path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The DeepSpeed config for ``cfg``: the template's "auto" values filled, every key validated."""
    path = Path(path) if path is not None else ds_template_path(cfg.train.zero, cfg.train.offload)
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
    bf16 = cfg.train.resolved_precision == "bf16"
    fill = {
        ("train_batch_size",): cfg.train.batch_size,
        ("train_micro_batch_size_per_gpu",): cfg.train.micro_batch,
        ("optimizer", "params", "lr"): cfg.lr,
        # torch's AdamW avoids DeepSpeed's JIT op builds (~50 s for FusedAdam on CPU; nvcc on GPUs). Only
        # GPU training with CPU offload gets DeepSpeedCPUAdam, which the offloaded optimizer step needs.
        ("optimizer", "params", "torch_adam"): not (cfg.train.use_gpu and cfg.train.offload),
        ("bf16", "enabled"): bf16,
        ("zero_optimization", "offload_param", "pin_memory"): cfg.train.use_gpu,
        ("zero_optimization", "offload_optimizer", "pin_memory"): cfg.train.use_gpu,
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
    if ds.get("train_batch_size") != cfg.train.batch_size or ds.get("train_micro_batch_size_per_gpu") != cfg.train.micro_batch:
        raise DeepSpeedConfigError(f"{path}: batch sizes must be 'auto' (filled from batch_size and workers)")
    zero = ds.get("zero_optimization", {"stage": 0})
    if zero.get("stage", 0) != cfg.train.zero:
        raise DeepSpeedConfigError(f"{path}: zero_optimization.stage={zero.get('stage')} but zero={cfg.train.zero}")
    from deepspeed.runtime.zero.config import DeepSpeedZeroConfig  # heavy: deepspeed

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
