"""Config sections: the settings of each stage (data, target, training, evaluation) -> frozen, validated models.

Input:  the ``data``, ``target``, ``train`` and ``eval`` mappings of an experiment YAML, or a command's flags.
Output: :class:`DataConfig` (+ :class:`SynthConfig`), :class:`TargetConfig` (+ :class:`BuildConfig`),
        :class:`TrainConfig` (+ :class:`LoraConfig`), :class:`EvalConfig` (with its :class:`Floor`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from lume_ray.config.base import Section, located
from lume_ray.evaluate.protocol import Floor
from lume_ray.target.presets import PRESETS


class SynthConfig(Section):
    """How `lume-ray data synth` writes the embedded default's data when ``data.path`` does not exist."""

    docs_per_task: int = Field(32, ge=2, description="documents per task (split 1:1 forget/retain)")
    seed: int = Field(0, ge=0)


class DataConfig(Section):
    path: str = Field("data", description="LUME directory (forget/retain .jsonl or .parquet) or a HF dataset id")
    synth: SynthConfig | None = Field(None, description="write synthetic data at path when it is missing")
    member: str | None = Field(None, description="MIA member documents ({id, document} jsonl); default: "
                               "DATA/mia/member.jsonl, DATA/member.jsonl, else the forget documents")
    nonmember: str | None = Field(None, description="MIA non-member documents; default: DATA/mia/nonmember.jsonl, "
                                  "DATA/nonmember.jsonl, else none (MIA null)")
    utility: str | None = Field("auto", description="auto (DATA/utility.jsonl), mmlu, a multiple-choice file or "
                                "a directory in MMLU's layout, or null (none)")


class BuildConfig(Section):
    """How `lume-ray target build` makes the embedded target when ``target.model`` does not exist."""

    preset: str = Field("tiny", description="model size preset")
    seed: int = Field(0, ge=0)
    epochs: int | None = Field(None, ge=1, description="override the preset's epoch count")

    @field_validator("preset")
    @classmethod
    def _preset(cls, value: str) -> str:
        if value not in PRESETS:
            raise ValueError(f"unknown preset {value!r} (valid: {', '.join(PRESETS)})")
        return value


class TargetConfig(Section):
    model: str = Field("target", description="the model before unlearning: a directory or a hub id")
    build: BuildConfig | None = Field(None, description="build the embedded target at model when it is missing")
    trust_remote_code: bool = Field(False, description="run the model repository's own code (off unless asked)")


class LoraConfig(Section):
    """A LoRA adapter (PEFT) trained instead of the full weights; merged into every saved point."""

    r: int = Field(8, ge=1, description="rank")
    alpha: float = Field(16.0, ge=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: str = Field("all-linear", description="'all-linear' or comma-separated module names")


class TrainConfig(Section):
    """How one unlearning job runs: Ray Train workers, DeepSpeed ZeRO, precision, batch."""

    workers: int = Field(1, ge=1, description="Ray Train workers (one DeepSpeed rank each)")
    placement: Literal["PACK", "SPREAD"] = Field(
        "PACK", description="how the workers' resource bundles are placed on the cluster's nodes: PACK onto as few "
        "nodes as fit (fast intra-node communication), SPREAD over as many as possible (best effort)")
    cpus_per_worker: float = Field(1.0, gt=0)
    gpus_per_worker: Literal[0, 1] = Field(0, description="0 (CPU, gloo) or 1 (one GPU per rank, NCCL); "
                                           "more GPUs means more workers")
    zero: Literal[0, 2, 3] = Field(0, description="DeepSpeed ZeRO stage")
    offload: bool = Field(False, description="ZeRO-3 parameter + optimizer offload to CPU")
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto: bf16 on GPU, fp32 on CPU")
    batch_size: int = Field(8, ge=1, description="global batch: forget (and retain) rows per step")
    max_length: int = Field(512, ge=8, description="tokens per training sequence")
    lora: LoraConfig | None = None

    @model_validator(mode="after")
    def _combinations(self) -> TrainConfig:
        if self.offload and self.zero != 3:
            raise located(["offload"], f"CPU offload needs zero: 3 (got zero: {self.zero})", self.offload)
        if self.batch_size % self.workers:
            raise located(["batch_size"], f"{self.batch_size} is not a multiple of workers={self.workers} "
                          "(every rank takes an equal micro-batch)", self.batch_size)
        return self

    @property
    def use_gpu(self) -> bool:
        return self.gpus_per_worker > 0

    @property
    def micro_batch(self) -> int:
        return self.batch_size // self.workers

    @property
    def resolved_precision(self) -> str:
        """fp32 or bf16: "auto" is bf16 on GPU and fp32 on CPU (CPU bf16 is slow; fp16 fails on CPU)."""
        if self.precision == "auto":
            return "bf16" if self.use_gpu else "fp32"
        return self.precision


class EvalConfig(Section):
    """How to evaluate. The defaults reproduce the challenge's scorer (docs/protocol.md section 2)."""

    max_new_tokens: int = Field(256, ge=1, description="greedy tokens per generation (the challenge: 256)")
    batch_size: int = Field(16, ge=1, description="items per model batch")
    workers: int = Field(1, ge=1, description="model actors")
    cpus_per_actor: float | None = Field(None, gt=0, description="CPUs per actor (default: leave one CPU free)")
    gpus_per_actor: float | None = Field(0.0, ge=0, description="GPUs per actor (null: one when the cluster has any)")
    utility_floor: Floor = Field(Floor(), description="a number (fraction of the base utility), "
                                 "{relative: r}, {absolute: a} or both")
    limit: int | None = Field(None, ge=1, description="evaluate only the first N rows per split (smoke runs)")
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="weights' dtype (the challenge ran bfloat16 on GPU; float32 is exact on CPU)")
    exact: bool = Field(False, description="one prompt at a time, no padding, in every actor: the challenge's "
                        "procedure to the bit in any dtype (slower)")
    mia_k: float = Field(0.2, gt=0, le=1, description="fraction of tokens for Min-K% / Min-K%++")
    utility_style: Literal["auto", "letter", "option", "open-instruct"] = Field(
        "auto", description="auto: open-instruct for MMLU (the challenge's procedure: k-shot, next token among "
        "' A'..' D'), option for a utility file; letter: lm-eval's zero-shot MMLU (summed log-likelihood)")
    mmlu_shots: int = Field(5, ge=0, description="MMLU dev-split examples per prompt (open-instruct's --ntrain "
                            "default, 5)")
    mmlu_max_tokens: int = Field(2048, ge=1, description="drop MMLU examples one at a time until the prompt "
                                 "has at most this many tokens (open-instruct: 2048)")

    @field_validator("utility_floor", mode="before")
    @classmethod
    def _floor(cls, value: Any) -> Any:
        if value is None:
            return Floor(relative=None, absolute=None)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return _utility_floor(Floor(relative=float(value)))
        if isinstance(value, Mapping):
            unknown = sorted(set(value) - {"relative", "absolute"})
            if unknown:
                raise ValueError(f"unknown key {unknown[0]!r} (valid: relative, absolute)")
            return _utility_floor(Floor(relative=value.get("relative"), absolute=value.get("absolute")))
        return value


def _utility_floor(floor: Floor) -> Floor:
    """The utility floor's relative part is a fraction of the base model's utility: in (0, 1]."""
    if floor.relative is not None and not 0 < floor.relative <= 1:
        raise ValueError(f"relative={floor.relative!r}: a fraction of the base model's utility, in (0, 1] "
                         "(for a utility value, give absolute)")
    return floor
