"""ZeRO memory plan: which DeepSpeed ZeRO stage (and offload) fits a model on N GPUs.

Input:  ``lume-ray plan --model 1b|7b|DIR --gpus N [--gpus-per-node 8] [--gpu-mem 80] [--lora] [--json]``, or
        ``lume-ray plan EXPERIMENT [--model ...] [--gpus N]``.
Output: a per-GPU memory table of every ZeRO option and the cheapest one that fits (:func:`plan`, as a dict
        by :func:`plan_dict`, as the lines the command prints by :func:`plan_lines`; exit 1 when none fits);
        for an experiment, the disk its run directory holds at peak under each ``sweep.keep_models``
        (:func:`disk_plan`, :func:`disk_lines`).

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
    import transformers  # heavy: as in _lora_params

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
    return config_size(config, name, lora_rank, what=f"--model {model!r}")


def config_size(config: Any, name: str, lora_rank: int = LORA_RANK, what: str = "the model") -> ModelSize:
    """Parameter counts of a transformers config, from a meta-device build."""
    import torch  # heavy: as in _lora_params
    import transformers

    try:
        with torch.device("meta"):  # shapes only: a 7B model costs no memory and under a second
            net = transformers.AutoModelForCausalLM.from_config(config)
    except ValueError as e:
        raise ClusterError(f"{what}: transformers cannot build a causal LM from this config "
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


# ---------------------------------------------------------------------------------------------
# Disk: what a sweep's run directory holds at its peak, per sweep.keep_models.

# The LUME challenge's published targets (hub ids) and the OLMo shapes they have.
KNOWN_TARGETS = {
    "llmunlearningsemeval2025organization/olmo-finetuned-semeval25-unlearning": "7b",
    "llmunlearningsemeval2025organization/olmo-1B-model-semeval25-unlearning": "1b",
}
# Assumed share of an algorithm's points on its front: with three objectives most points of one trajectory are
# mutually non-dominated (benchmarks/bench_disk.py: 13 of 16 in a 4-trial sweep); more trials dominate more of them.
# `lume-ray status RUN_DIR` shows the real count.
FRONT_SHARE = 0.5
ADAM_BYTES = 12  # per trained parameter in a DeepSpeed checkpoint: fp32 master copy + Adam's two moments


@dataclass(frozen=True)
class DiskPlan:
    """The peak bytes of a sweep's run directory under each ``keep_models`` mode (:func:`disk_plan`)."""

    experiment: str
    size: ModelSize
    source: str  # where the model's shape came from
    model_key: str | None  # what model_size takes for it (the ZeRO table); None: an embedded target not built yet
    dtype: str
    model_bytes: int  # one point's model directory: parameters x dtype bytes
    trials: dict[str, int]  # algorithm -> trials
    points_per_trial: dict[str, int]  # algorithm -> evaluation points of one trial
    concurrency: int
    concurrency_source: str
    checkpoint_bytes: int  # one trial's DeepSpeed checkpoint
    held: dict[str, tuple[int, str]] = field(default_factory=dict)  # mode -> (models held at peak, how)

    @property
    def all_points(self) -> int:
        return sum(self.trials[a] * self.points_per_trial[a] for a in self.trials)

    @property
    def checkpoints_peak(self) -> int:
        """One checkpoint per running trial, two while the next one is written (Ray Train keeps 1)."""
        return 2 * self.concurrency * self.checkpoint_bytes

    def peak(self, mode: str) -> int:
        return self.held[mode][0] * self.model_bytes + self.checkpoints_peak


def experiment_model(exp: Any, model: str | None = None) -> tuple[ModelSize, str, str | None]:
    """The size of an experiment's target, where it came from, and what :func:`model_size` takes for it (None: an
    embedded target not built yet): ``model`` (1b, 7b, a directory), else target.model when it is a directory, a
    known LUME target, or an embedded target still to be built (its preset's shape)."""
    import transformers  # heavy: as in _lora_params

    if model:
        return model_size(model), f"--model {model}", model
    target = exp.path(exp.target.model)
    if (Path(target) / "config.json").is_file():
        return model_size(target), f"target.model {target}", target
    if target in KNOWN_TARGETS:
        key = KNOWN_TARGETS[target]
        return model_size(key), f"target.model {target} (OLMo-{key.upper()})", key
    if exp.target.build is not None:
        from lume_ray.target.presets import get_preset

        p = get_preset(exp.target.build.preset)
        config = transformers.OlmoConfig(vocab_size=p.vocab_size, hidden_size=p.hidden_size,
                                         num_hidden_layers=p.num_hidden_layers,
                                         num_attention_heads=p.num_attention_heads,
                                         intermediate_size=p.intermediate_size,
                                         max_position_embeddings=p.max_position_embeddings, tie_word_embeddings=False,
                                         pad_token_id=0, eos_token_id=p.vocab_size - 1)
        return (config_size(config, f"embedded target ({exp.target.build.preset} preset)"),
                f"target.build preset {exp.target.build.preset} (not built yet: {target})", None)
    raise ClusterError(f"target.model {exp.target.model!r}: not a model directory here, nor a known LUME target "
                       f"({', '.join(KNOWN_TARGETS)}): give its shape with --model 1b|7b|DIR")


def disk_plan(exp: Any, model: str | None = None, gpus: int | None = None) -> DiskPlan:
    """Peak bytes of ``exp``'s run directory: model bytes (parameters x dtype bytes) x the points whose model is
    held at once, plus the running trials' DeepSpeed checkpoints. Held at peak: all, every point of every trial;
    front, the fronts' points plus those being scored; none, those being scored. A running trial has at most
    its evaluation points unscored at once (when scoring lags training), typically one."""
    size, source, key = experiment_model(exp, model)
    precision = exp.train.resolved_precision
    dtype_bytes = 4 if precision == "fp32" else 2
    lora = exp.train.lora is not None
    trained = size.lora_params if lora else size.total_params
    # DeepSpeed's checkpoint: the module's weights (the frozen base too, under LoRA) + the optimizer's state.
    optimizer = (8 if precision == "fp32" and not lora else ADAM_BYTES) * trained  # fp32: the weights are the master
    checkpoint = dtype_bytes * size.total_params + optimizer
    algos = exp.selected_algorithms()
    trials = {a: _trials(exp, a) for a in algos}
    per_trial = {a: len(exp.eval_steps(a)) for a in algos}
    if exp.sweep.max_concurrent:
        concurrency, how = exp.sweep.max_concurrent, "sweep.max_concurrent"
    elif gpus and exp.train.use_gpu:
        concurrency = max(1, gpus // (exp.train.workers * max(1, exp.train.gpus_per_worker)))
        how = f"--gpus {gpus} / {exp.train.workers * max(1, exp.train.gpus_per_worker)} GPUs per trial"
    else:
        concurrency, how = 1, "assumed (set sweep.max_concurrent, or give --gpus)"
    concurrency = min(concurrency, sum(trials.values()))
    flight = concurrency * max(per_trial.values())
    front = sum(min(trials[a] * per_trial[a], max(1, round(FRONT_SHARE * trials[a] * per_trial[a]))) for a in algos)
    every = sum(trials[a] * per_trial[a] for a in algos)
    held = {
        "all": (every, "every point of every trial"),
        "front": (min(every, front + flight), f"the fronts (~{front}: {FRONT_SHARE:.0%} of each algorithm's points, "
                  f"assumed) + up to {flight} being scored"),
        "none": (min(every, flight), f"being scored: up to {flight} ({concurrency} running trial(s) x "
                 f"{max(per_trial.values())} points), typically {concurrency}"),
    }
    return DiskPlan(str(exp.name), size, source, key, precision, dtype_bytes * size.total_params, trials, per_trial,
                    concurrency, how, checkpoint, held)


def _trials(exp: Any, algorithm: str) -> int:
    """Trials of one algorithm, as the sweep plans them: its full grid (the grid sampler), sweep.num_samples, or
    one when nothing is searched."""
    from lume_ray.search import space as sp

    space = exp.algorithms[algorithm]
    if exp.sweep.sampler == "grid":
        return sp.grid_size(space)
    return int(exp.sweep.num_samples) if sp.searchable(space) else 1


def disk_dict(p: DiskPlan) -> dict[str, Any]:
    return {"experiment": p.experiment, "model": p.size.name, "model_source": p.source,
            "total_params": p.size.total_params, "dtype": p.dtype, "model_bytes": p.model_bytes,
            "trials": p.trials, "points_per_trial": p.points_per_trial, "points": p.all_points,
            "concurrency": p.concurrency, "checkpoint_bytes": p.checkpoint_bytes,
            "checkpoints_peak_bytes": p.checkpoints_peak,
            "keep_models": {m: {"models_held": n, "how": how, "peak_bytes": p.peak(m)} for m, (n, how) in p.held.items()}}


def disk_lines(p: DiskPlan) -> list[str]:
    """The lines of ``lume-ray plan EXPERIMENT``: the arithmetic, then one line per keep_models mode."""
    def gib(n: float) -> str:
        return f"{n / GIB:.1f} GiB" if n >= GIB / 10 else f"{n / 2**20:.1f} MiB"

    n_trials = sum(p.trials.values())
    per = sorted(set(p.points_per_trial.values()))
    return [
        f"{p.experiment}: {p.size.name}, {p.size.total_params / 1e6:,.1f}M parameters ({p.source})",
        f"a point's model: {p.size.total_params / 1e6:,.1f}M x {p.model_bytes // p.size.total_params} bytes "
        f"({p.dtype}) = {gib(p.model_bytes)}",
        f"points: {n_trials} trials ({', '.join(f'{a} {n}' for a, n in p.trials.items())}) x "
        f"{'/'.join(map(str, per))} evaluation points = {p.all_points}; {p.concurrency} trial(s) at once "
        f"({p.concurrency_source})",
        f"checkpoints: {gib(p.checkpoint_bytes)} per running trial (weights + fp32 master and Adam moments), x2 while "
        f"the next is written: {gib(p.checkpoints_peak)}; removed when a trial ends",
        f"{'keep_models':<12} {'models held':>11} {'models':>10} {'+ checkpoints':>14} {'= peak':>10}  held",
        *(f"{m:<12} {n:>11} {gib(n * p.model_bytes):>10} {gib(p.checkpoints_peak):>14} {gib(p.peak(m)):>10}  {how}"
          for m, (n, how) in p.held.items()),
        "(the run directory also holds each point's scored rows and the logs: small beside the models)",
    ]


__all__ = ["KNOWN_TARGETS", "DiskPlan", "ModelSize", "Plan", "PlanOption", "config_size", "disk_dict", "disk_lines",
           "disk_plan", "estimate_option", "experiment_model", "model_size", "plan", "plan_dict", "plan_lines"]
