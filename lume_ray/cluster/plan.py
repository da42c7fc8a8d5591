"""ZeRO memory plan: which DeepSpeed ZeRO stage (and offload) fits a model on N GPUs.

Input:  ``lume-ray plan --model 1b|7b|DIR --gpus N [--gpus-per-node 8] [--gpu-mem 80] [--lora] [--json]``.
Output: a per-GPU memory table of every ZeRO option and the cheapest one that fits (:func:`plan`, as a dict
        by :func:`plan_dict`, as the lines the command prints by :func:`plan_lines`; exit 1 when none fits).

DeepSpeed's own estimators (ZeRO-2 and ZeRO-3 model states) on parameter counts taken from a model built on
the meta device, plus the frozen bf16 reference model the reference-based losses need. Pure arithmetic: no
GPU, no Ray, no download.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lume_ray.cluster import ClusterError, first_line

OLMO_PRESETS: dict[str, dict[str, Any]] = {
    # OLMo-1B(-0724)-hf shape; weights tied as in OLMo-1B-hf (1,176,764,416 parameters).
    "1b": dict(vocab_size=50304, hidden_size=2048, num_hidden_layers=16, num_attention_heads=16,
               intermediate_size=8192, max_position_embeddings=4096, tie_word_embeddings=True),
    # OLMo-7B(-0724-Instruct)-hf shape, untied (6,888,095,744 parameters).
    "7b": dict(vocab_size=50304, hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
               intermediate_size=11008, max_position_embeddings=4096, tie_word_embeddings=False),
}
LORA_RANK = 16
GIB = 2**30
HEADROOM = 0.25  # of GPU memory kept for activations, CUDA context, fragmentation (estimators cover model states only)


@dataclass(frozen=True)
class ModelSize:
    name: str
    total_params: int  # unique parameters (tied weights counted once), as DeepSpeed's model_to_params
    largest_layer_params: int  # most parameters owned directly by one module (ZeRO-3 gathers one at a time)
    lora_params: int  # trainable parameters of a rank-LORA_RANK adapter on PEFT's default target modules


def _count(model: Any) -> tuple[int, int]:
    # DeepSpeed's model_to_params dedups by data_ptr, which is 0 for every meta tensor; parameters()
    # already yields a tied Parameter once, which is the same count on a real model.
    total = sum(p.numel() for p in model.parameters())
    largest = max((sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules()), default=0)
    return int(total), int(largest)


def _lora_params(model: Any, model_type: str, rank: int) -> int:
    import torch  # heavy: torch, peft, transformers and DeepSpeed, only to plan
    from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as TARGETS

    targets = set(TARGETS.get(model_type) or ("q_proj", "v_proj"))
    n = 0
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Linear) and name.rsplit(".", 1)[-1] in targets:
            n += rank * (m.in_features + m.out_features)  # A: (r, in), B: (out, r)
    return n


def model_size(model: str, lora_rank: int = LORA_RANK) -> ModelSize:
    """Parameter counts of ``1b``, ``7b`` or a model directory / config.json, from a meta-device build."""
    import torch  # heavy: as in _lora_params
    import transformers

    key = model.lower()
    if key in OLMO_PRESETS:
        config: Any = transformers.OlmoConfig(**OLMO_PRESETS[key], pad_token_id=1, eos_token_id=50279)
        name = f"OLMo-{key.upper()}"
    else:
        path = Path(model)
        cfg_dir = path.parent if path.name == "config.json" else path
        if not (cfg_dir / "config.json").is_file():
            raise ClusterError(f"--model {model!r}: expected 1b, 7b, or a model directory with config.json "
                               f"(valid presets: {', '.join(OLMO_PRESETS)})")
        try:
            config = transformers.AutoConfig.from_pretrained(str(cfg_dir), local_files_only=True)
        except (ValueError, OSError, KeyError) as e:
            raise ClusterError(f"--model {model!r}: {cfg_dir / 'config.json'}: cannot read the model config "
                               f"({first_line(e)})") from None
        name = str(cfg_dir)
    try:
        with torch.device("meta"):  # shapes only: a 7B model costs no memory and under a second
            net = transformers.AutoModelForCausalLM.from_config(config)
    except ValueError as e:
        raise ClusterError(f"--model {model!r}: transformers cannot build a causal LM from this config "
                           f"({first_line(e)})") from None
    total, largest = _count(net)
    return ModelSize(name, total, largest, _lora_params(net, config.model_type, lora_rank))


@dataclass(frozen=True)
class PlanOption:
    name: str
    zero: int
    offload_optimizer: bool
    offload_params: bool
    model_states_gpu: int  # bytes per GPU: DeepSpeed's estimate for the trained model
    reference_gpu: int  # bytes per GPU of the frozen bf16 reference model
    cpu_per_node: int  # bytes of host memory per node (DeepSpeed's estimate + offloaded reference)
    fits: bool

    @property
    def gpu_total(self) -> int:
        return self.model_states_gpu + self.reference_gpu


@dataclass(frozen=True)
class Plan:
    size: ModelSize
    gpus: int
    gpus_per_node: int
    num_nodes: int
    gpu_mem_gib: float
    lora: bool
    options: list[PlanOption] = field(default_factory=list)
    recommended: str | None = None
    message: str = ""


# Cheapest first: sharding costs communication, offload costs PCIe traffic and CPU Adam steps.
OPTION_ORDER = [
    ("zero0", 0, False, False), ("zero2", 2, False, False), ("zero3", 3, False, False),
    ("zero2+offload_opt", 2, True, False), ("zero3+offload_opt", 3, True, False),
    ("zero3+offload_all", 3, True, True),
]


def _topology(gpus: int, gpus_per_node: int) -> tuple[int, int]:
    if gpus < 1:
        raise ClusterError(f"--gpus {gpus}: need at least 1")
    if gpus_per_node < 1:
        raise ClusterError(f"--gpus-per-node {gpus_per_node}: need at least 1")
    per_node = min(gpus, gpus_per_node)
    if gpus % per_node:
        raise ClusterError(f"--gpus {gpus} is not a multiple of --gpus-per-node {gpus_per_node}")
    return per_node, gpus // per_node


def estimate_option(size: ModelSize, zero: int, offload_optimizer: bool, offload_params: bool,
                    gpus_per_node: int, num_nodes: int, lora: bool = False) -> tuple[int, int, int]:
    """(model-state bytes per GPU, reference bytes per GPU, host bytes per node) of one setup.

    Full fine-tuning uses DeepSpeed's estimators verbatim (ZeRO-0 = the ZeRO-2 formula on one GPU:
    nothing is sharded). The reference is a frozen bf16 copy: whole on every GPU under ZeRO-0/2,
    sharded under ZeRO-3, on the host when ZeRO-3 offloads parameters. With LoRA the frozen base
    doubles as the reference (adapter disabled) and only the adapter has gradients and Adam state.
    """
    import torch  # heavy: as in _lora_params

    if not torch.cuda.is_available():  # else DeepSpeed's import logs an accelerator warning; pure arithmetic here
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    n_gpus = gpus_per_node * num_nodes
    P, L = size.total_params, size.largest_layer_params
    trained = size.lora_params if lora else P
    if zero == 0:
        cpu, gpu = estimate_zero2_model_states_mem_needs(trained, 1, 1, cpu_offload=False)
    elif zero == 2:
        cpu, gpu = estimate_zero2_model_states_mem_needs(trained, gpus_per_node, num_nodes,
                                                         cpu_offload=offload_optimizer)
    elif zero == 3:
        cpu, gpu, _ = estimate_zero3_model_states_mem_needs(trained, L, gpus_per_node, num_nodes,
                                                            cpu_offload=offload_optimizer,
                                                            cpu_offload_params=offload_params)
    else:
        raise ClusterError(f"ZeRO stage {zero}: valid stages are 0, 2, 3")
    frozen = 2 * P  # bf16 weights: the reference (full) or the frozen base (LoRA)
    if zero == 3 and offload_params:
        ref_gpu, cpu = 0, cpu + int(frozen / num_nodes)
    elif zero == 3:
        ref_gpu = int(frozen / n_gpus)
    else:
        ref_gpu = frozen
    return int(gpu), int(ref_gpu), int(cpu)


def plan(model: str, gpus: int, gpus_per_node: int = 8, gpu_mem_gib: float = 80.0, lora: bool = False,
         headroom: float = HEADROOM, cpu_mem_gib: float | None = None) -> Plan:
    """Every ZeRO option's per-GPU memory and the cheapest one that fits in ``(1 - headroom) * gpu_mem``."""
    if not gpu_mem_gib > 0 or gpu_mem_gib == float("inf"):  # NaN fails the first test
        raise ClusterError(f"--gpu-mem {gpu_mem_gib}: must be a positive, finite number (GiB per GPU)")
    per_node, nodes = _topology(gpus, gpus_per_node)
    size = model_size(model)
    budget = (1 - headroom) * gpu_mem_gib * GIB
    options = []
    for name, zero, off_opt, off_par in OPTION_ORDER:
        gpu, ref, cpu = estimate_option(size, zero, off_opt, off_par, per_node, nodes, lora)
        fits = gpu + ref <= budget and (cpu_mem_gib is None or cpu <= cpu_mem_gib * GIB)
        options.append(PlanOption(name, zero, off_opt, off_par, gpu, ref, cpu, fits))
    best = next((o for o in options if o.fits), None)
    if best:
        message = (f"recommended: {best.name} ({best.gpu_total / GIB:.1f} GiB per GPU of {gpu_mem_gib:g}, "
                   f"{headroom:.0%} kept for activations; host RAM per node >= {best.cpu_per_node / GIB:.0f} GiB)")
    else:
        least = min(options, key=lambda o: o.gpu_total)
        message = (f"nothing fits: even {least.name} needs {least.gpu_total / GIB:.1f} GiB per GPU of "
                   f"{gpu_mem_gib:g} with {headroom:.0%} headroom; use more or larger GPUs"
                   f"{'' if lora else ', or --lora'}")
    return Plan(size, gpus, per_node, nodes, gpu_mem_gib, lora, options, best.name if best else None, message)


def plan_dict(p: Plan) -> dict[str, Any]:
    return {
        "model": p.size.name, "total_params": p.size.total_params,
        "largest_layer_params": p.size.largest_layer_params,
        "trainable_params": p.size.lora_params if p.lora else p.size.total_params, "lora": p.lora,
        "gpus": p.gpus, "gpus_per_node": p.gpus_per_node, "num_nodes": p.num_nodes, "gpu_mem_gib": p.gpu_mem_gib,
        "options": [{"name": o.name, "zero": o.zero, "offload_optimizer": o.offload_optimizer,
                     "offload_params": o.offload_params, "gpu_gib": round(o.gpu_total / GIB, 3),
                     "model_states_gpu_bytes": o.model_states_gpu, "reference_gpu_bytes": o.reference_gpu,
                     "cpu_per_node_gib": round(o.cpu_per_node / GIB, 3), "fits": o.fits} for o in p.options],
        "recommended": p.recommended, "message": p.message,
    }


def plan_lines(p: Plan) -> list[str]:
    """The lines of ``lume-ray plan``: the model and topology, one line per option, the recommendation."""
    s = p.size
    trained = f"LoRA r={LORA_RANK}: {s.lora_params / 1e6:.1f}M trainable" if p.lora else "full fine-tuning"
    ref = "frozen base = reference" if p.lora else "bf16 reference (kl, npo, rmu need it)"
    return [
        f"{s.name}: {s.total_params / 1e9:.3f}B parameters (largest layer {s.largest_layer_params / 1e6:.1f}M), "
        f"{trained}; {p.gpus} GPU(s) = {p.num_nodes} node(s) x {p.gpus_per_node}, {p.gpu_mem_gib:g} GiB each",
        f"{'option':<19} {'GPU GiB':>8} {'model':>8} {'ref':>7} {'host GiB/node':>14}  fits",
        *(f"{o.name:<19} {o.gpu_total / GIB:>8.1f} {o.model_states_gpu / GIB:>8.1f} {o.reference_gpu / GIB:>7.1f} "
          f"{o.cpu_per_node / GIB:>14.1f}  {'yes' if o.fits else 'no'}" for o in p.options),
        f"(model = DeepSpeed's model-state estimate; ref = {ref}; activations not included)",
        p.message,
    ]


__all__ = ["ModelSize", "Plan", "PlanOption", "estimate_option", "model_size", "plan", "plan_dict", "plan_lines"]
