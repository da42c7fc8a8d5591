"""Configs: command-line arguments or sweep dictionaries -> frozen, validated dataclasses.

Input:  keyword values (from the sweep) or an argparse Namespace (``lume-ray unlearn``).
Output: :class:`UnlearnConfig`, checked once in ``__post_init__`` so every later stage can trust it;
        bad input raises :class:`ConfigError` (a ``ValueError``) naming the key, the value and the valid
        choices.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from lume_ray.algorithms import ParamValue, validate_params


class ConfigError(ValueError):
    """An invalid configuration value; one-line message naming the key and the valid choices."""


ZERO_STAGES = (0, 2, 3)
PRECISIONS = ("auto", "fp32", "bf16")
# LoRA keys -> defaults. target_modules: "all-linear" (peft's shortcut) or comma-separated module names.
LORA_DEFAULTS: dict[str, Any] = {"r": 8, "alpha": 16.0, "dropout": 0.0, "target_modules": "all-linear"}


def _lora(value: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if value is None:
        return None
    unknown = sorted(set(value) - set(LORA_DEFAULTS))
    if unknown:
        raise ConfigError(f"lora: unknown key {unknown[0]!r} (valid: {', '.join(LORA_DEFAULTS)})")
    out = dict(LORA_DEFAULTS)
    for key, raw in value.items():
        try:
            if key == "r":
                number = float(raw)
                if number != int(number) or number < 1:
                    raise ValueError
                out[key] = int(number)
            elif key in ("alpha", "dropout"):
                out[key] = float(raw)
                if not math.isfinite(out[key]) or out[key] < 0 or (key == "dropout" and out[key] >= 1):
                    raise ValueError
            else:
                out[key] = str(raw).strip()
                if not out[key]:
                    raise ValueError
        except (TypeError, ValueError):
            rule = {"r": "an integer >= 1", "alpha": "a number >= 0", "dropout": "a number in [0, 1)",
                    "target_modules": "'all-linear' or comma-separated module names"}[key]
            raise ConfigError(f"lora: {key}={raw!r} must be {rule}") from None
    return out


@dataclass(frozen=True)
class UnlearnConfig:
    """One unlearning job: which model/data/algorithm, trainer settings, parallelism, output.

    ``batch_size`` is the global batch (forget rows per step, and as many retain rows); each of the
    ``workers`` gets ``batch_size // workers``. ``eval_every`` K marks evaluation points at steps K, 2K, ...
    and always at the last step (0: only at the end). ``precision`` "auto" is bf16 on GPU, fp32 on CPU.
    """

    model: str
    data: str
    algorithm: str
    out: str
    params: dict[str, ParamValue] = field(default_factory=dict)
    lr: float = 1e-5
    steps: int = 60
    eval_every: int = 0
    batch_size: int = 8
    workers: int = 1
    zero: int = 0
    offload: bool = False
    precision: str = "auto"
    use_gpu: bool = False
    lora: dict[str, Any] | None = None
    seed: int = 0
    max_length: int = 512
    trust_remote_code: bool = False
    cpus_per_worker: float = 1.0

    def __post_init__(self) -> None:
        def fail(key: str, value: Any, rule: str) -> None:
            raise ConfigError(f"{key}={value!r}: {rule}")

        for key in ("model", "data", "out"):
            value = getattr(self, key)
            if not isinstance(value, str) or not value.strip():
                fail(key, value, "must be a non-empty path or id")
        # validate_params raises for an unknown algorithm (naming the registered ones) or parameter.
        try:
            object.__setattr__(self, "params", validate_params(self.algorithm, self.params))
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            fail("lr", self.lr, "must be a finite number > 0")
        object.__setattr__(self, "lr", float(self.lr))
        for key, low in (("steps", 1), ("eval_every", 0), ("batch_size", 1), ("workers", 1), ("max_length", 8),
                         ("seed", 0)):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                fail(key, value, f"must be an integer >= {low}")
        if self.batch_size % self.workers:
            fail("batch_size", self.batch_size,
                 f"the global batch must be divisible by workers={self.workers} (equal micro-batches)")
        if self.zero not in ZERO_STAGES:
            fail("zero", self.zero, f"valid: {', '.join(map(str, ZERO_STAGES))}")
        if self.offload and self.zero != 3:
            fail("offload", self.offload, "CPU offload needs zero=3")
        if self.precision not in PRECISIONS:
            fail("precision", self.precision, f"valid: {', '.join(PRECISIONS)} (fp16 does not run on CPU)")
        if not (isinstance(self.cpus_per_worker, (int, float)) and self.cpus_per_worker > 0):
            fail("cpus_per_worker", self.cpus_per_worker, "must be a number > 0")
        object.__setattr__(self, "cpus_per_worker", float(self.cpus_per_worker))
        object.__setattr__(self, "lora", _lora(self.lora))

    @property
    def micro_batch(self) -> int:
        return self.batch_size // self.workers

    @property
    def resolved_precision(self) -> str:
        """fp32 or bf16: "auto" is bf16 on GPU and fp32 on CPU (CPU bf16 is slow; fp16 fails on CPU)."""
        if self.precision == "auto":
            return "bf16" if self.use_gpu else "fp32"
        return self.precision

    def eval_steps(self) -> list[int]:
        """Steps at which the job saves a model and reports: every ``eval_every`` and the last."""
        every = self.eval_every or self.steps
        return sorted({*range(every, self.steps + 1, every), self.steps})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> UnlearnConfig:
        unknown = sorted(set(values) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConfigError(f"unknown unlearn key {unknown[0]!r} (valid: {', '.join(cls.__dataclass_fields__)})")
        return cls(**values)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> UnlearnConfig:
        """From ``lume-ray unlearn`` arguments (``--set k=v`` -> params, ``--lora [k=v ...]`` -> lora)."""
        params = dict(args.params or [])
        lora = None if args.lora is None else dict(args.lora)
        return cls(
            model=args.model, data=args.data, algorithm=args.algorithm, out=args.out, params=params,
            lr=args.lr, steps=args.steps, eval_every=args.eval_every, batch_size=args.batch_size,
            workers=args.workers, zero=args.zero, offload=args.offload, precision=args.precision,
            use_gpu=args.gpu, lora=lora, seed=args.seed, max_length=args.max_length,
            trust_remote_code=args.trust_remote_code,
        )
