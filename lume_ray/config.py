"""Config: the one typed model of lume-ray. An experiment YAML (+ ``--set`` overrides), or a command's flags,
-> frozen, validated pydantic models that every stage takes as they are.

Input:  ``experiments/<name>.yaml`` (every key, with comments, in experiments/quickstart.yaml) and
        ``key.path=value`` overrides (values parsed as YAML: ``sweep.algorithms=[ga,npo]``); or the flags of
        ``lume-ray unlearn`` / ``lume-ray eval``, which :mod:`lume_ray.cli` generates from these models.
Output: :class:`Experiment` (a study), :class:`UnlearnJob` (one unlearning job), :class:`EvalConfig` (how to
        evaluate). Everything is checked here, once: unknown keys at any depth, types, ranges, choices,
        combinations (``offload`` needs ZeRO-3), algorithm names and parameter values, metric names,
        sampler names. A failure is :class:`ConfigError`, one line naming the file, the key, the value and the
        valid choices; nothing that passed can fail later as a config error.

A search space is per algorithm: ``lr`` and ``steps`` (trainer parameters) plus the algorithm's own
parameters (declared by each algorithm in :mod:`lume_ray.algorithms`). A parameter is a distribution
``{loguniform: [lo, hi]}``, ``{uniform: [lo, hi]}``, ``{int: [lo, hi]}``, ``{choice: [a, b, ...]}`` or a plain
value (fixed); ``grid: [...]`` beside a range gives the values the grid sampler uses. ``steps`` is a
trajectory, not a sampled parameter: ``{max: N}`` (evaluated at ``sweep.eval_points`` evenly spaced steps,
or at ``sweep.eval_steps``), or a list of steps (trained to the largest, evaluated at each).
"""

from __future__ import annotations

import copy
import math
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from lume_ray.evaluate.metrics import Floor


class ConfigError(ValueError):
    """An invalid configuration value; one line naming the file or flag, the key, the value and the valid choices."""


def located(loc: Sequence[str | int], message: str, value: Any = None) -> ValidationError:
    """A validation error at ``loc`` (relative to the model being validated). Raised inside a validator, pydantic
    prefixes the enclosing field's path, so the one-line error names the full key (``train.offload``,
    ``algorithms.npo.beta``) rather than the section or "(top level)"."""
    return ValidationError.from_exception_data("config", [
        {"type": "value_error", "loc": tuple(loc), "input": value, "ctx": {"error": ValueError(message)}}])


def _relocated(prefix: Sequence[str | int], error: ValidationError, *, flatten: str = "") -> ValidationError:
    """``error`` with every location under ``prefix``, and a leading ``flatten`` level dropped (``params.beta``
    -> ``beta``: an algorithm's parameters sit beside lr and steps in the YAML)."""
    def loc(where: tuple[str | int, ...]) -> tuple[str | int, ...]:
        return (*prefix, *(where[1:] if flatten and where[:1] == (flatten,) else where))

    details: list[Any] = [{"type": e["type"], "loc": loc(e["loc"]), "input": e["input"],
                           **({"ctx": e["ctx"]} if "ctx" in e else {})} for e in error.errors()]
    return ValidationError.from_exception_data("config", details)


class Section(BaseModel):
    """Every config section: unknown keys are errors, values are frozen once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


ParamValue = float | int | str
TRAINER_PARAMS = ("lr", "steps")
DISTRIBUTIONS = ("loguniform", "uniform", "int", "choice")


# =============================================================================================
# Stage settings.


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
        from lume_ray.target import PRESETS

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
    """How to evaluate. The defaults reproduce the challenge's scorer (DESIGN.md section 3)."""

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
            return Floor(relative=float(value))
        if isinstance(value, Mapping):
            unknown = sorted(set(value) - {"relative", "absolute"})
            if unknown:
                raise ValueError(f"unknown key {unknown[0]!r} (valid: relative, absolute)")
            return Floor(relative=value.get("relative"), absolute=value.get("absolute"))
        return value


# =============================================================================================
# One unlearning job (`lume-ray unlearn`, and each sweep trial).


class UnlearnJob(Section):
    """One unlearning job: which model, data and algorithm, its parameters, the trainer settings, the output.

    The job trains ``steps`` steps and stops at each of ``eval_steps`` (always including the last) to save
    a Hugging Face model directory and a resumable checkpoint; at each of ``wait_steps`` it then waits for its
    driver's go-ahead (a sweep's early stopping; the last step never waits).
    """

    model: str = Field(..., min_length=1, description="the model before unlearning: a directory or a hub id")
    data: str = Field(..., min_length=1, description="LUME directory or HF dataset id")
    algorithm: str = Field(..., description="a registered algorithm")
    params: dict[str, ParamValue] = Field(default_factory=dict, description="the algorithm's parameters")
    lr: float = Field(1e-5, gt=0, description="learning rate (constant: a run passes through every shorter one)")
    steps: int = Field(60, ge=1, description="steps to train")
    eval_steps: tuple[int, ...] = Field((), description="steps that save an evaluation point (the last always does)")
    wait_steps: tuple[int, ...] = Field(
        (), description="evaluation points at which the job, once the point is saved, waits (alive) until its driver "
        "writes out/go/step_KKKKKK: early stopping's rungs, so the trial is judged before it trains a step further")
    out: str = Field(..., min_length=1, description="output directory (the same one resumes)")
    seed: int = Field(0, ge=0)
    train: TrainConfig = TrainConfig()
    trust_remote_code: bool = False

    @field_validator("algorithm")
    @classmethod
    def _algorithm(cls, value: str) -> str:
        from lume_ray.algorithms import get_algorithm

        get_algorithm(value)  # names the registered ones
        return value

    @field_validator("lr")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("must be a finite number > 0")
        return value

    @model_validator(mode="after")
    def _check(self) -> UnlearnJob:
        from lume_ray.algorithms import validate_params

        try:
            object.__setattr__(self, "params", validate_params(self.algorithm, self.params))
        except ValueError as e:
            raise located(["params"], str(e), dict(self.params)) from None
        bad = [s for s in self.eval_steps if not 1 <= s <= self.steps]
        if bad:
            raise located(["eval_steps"], f"{bad[0]} is outside 1..steps={self.steps}", list(self.eval_steps))
        object.__setattr__(self, "eval_steps", tuple(sorted({*self.eval_steps, self.steps})))
        bad = [s for s in self.wait_steps if s not in self.eval_steps]
        if bad:
            raise located(["wait_steps"], f"{bad[0]} is not an evaluation point (eval_steps: "
                          f"{list(self.eval_steps)})", list(self.wait_steps))
        return self


# =============================================================================================
# Search spaces.


class ParamSpec(Section):
    """One hyperparameter: a distribution to search, or a fixed value (``kind == "fixed"``)."""

    kind: Literal["fixed", "loguniform", "uniform", "int", "choice"]
    values: tuple[Any, ...]  # (lo, hi) for ranges, the options for choice, (value,) for fixed
    grid: tuple[Any, ...] | None = None

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, raw: Any) -> Any:
        if isinstance(raw, ParamSpec):
            return raw
        if not isinstance(raw, Mapping):
            return {"kind": "fixed", "values": (_num(raw),)}
        if "kind" in raw:
            return raw
        raw = {k: [_num(v) for v in vs] if isinstance(vs, list) else vs for k, vs in raw.items()}
        dists = [k for k in raw if k != "grid"]
        if len(dists) != 1 or dists[0] not in DISTRIBUTIONS:
            raise ValueError(f"expected one of {', '.join(DISTRIBUTIONS)} (optionally with grid), got {sorted(raw)}")
        kind, values = dists[0], raw[dists[0]]
        if not isinstance(values, list) or not values:
            raise ValueError(f"{kind}: expected a non-empty list, got {values!r}")
        if kind != "choice":
            if len(values) != 2 or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
                raise ValueError(f"{kind}: expected [low, high] numbers, got {values}")
            if values[0] > values[1]:
                raise ValueError(f"{kind}: low {values[0]} > high {values[1]}")
            if kind == "loguniform" and values[0] <= 0:
                raise ValueError(f"loguniform: bounds must be > 0, got {values}")
        grid = raw.get("grid")
        if grid is not None and (not isinstance(grid, list) or not grid):
            raise ValueError(f"grid: expected a non-empty list, got {grid!r}")
        return {"kind": kind, "values": tuple(values), "grid": tuple(grid) if grid is not None else None}

    @model_serializer
    def _dump(self) -> Any:
        """Back to the YAML form (experiment.yaml is loadable as an experiment)."""
        if self.kind == "fixed":
            return self.values[0]
        return {self.kind: list(self.values), **({"grid": list(self.grid)} if self.grid is not None else {})}

    @property
    def searchable(self) -> bool:
        return self.kind != "fixed" and not (self.kind == "choice" and len(self.values) == 1)

    def concrete_values(self) -> tuple[Any, ...]:
        """Every value this spec can produce at its edges (endpoints, options, grid values)."""
        return tuple(self.values) + tuple(self.grid or ())

    def grid_values(self) -> tuple[Any, ...]:
        """The values the grid sampler uses: ``grid`` when given; the options of a choice; else the range's
        low end, middle (geometric for loguniform) and high end."""
        if self.grid is not None:
            return self.grid
        if self.kind in ("choice", "fixed"):
            return self.values
        lo, hi = self.values
        if self.kind == "int":
            values = range(int(lo), int(hi) + 1)
            return tuple(values) if len(values) <= 3 else (int(lo), int(round((lo + hi) / 2)), int(hi))
        mid = math.sqrt(lo * hi) if self.kind == "loguniform" else (lo + hi) / 2
        return (float(lo), float(mid), float(hi)) if lo < hi else (float(lo),)


class StepsSpec(Section):
    """The step trajectory of an algorithm's trials: train to ``max``; ``points``, when given, are the steps
    evaluated (else ``sweep.eval_steps`` or ``sweep.eval_points`` evenly spaced)."""

    max: int = Field(..., ge=1)
    points: tuple[int, ...] | None = None

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, raw: Any) -> Any:
        if isinstance(raw, int | float | str) and not isinstance(raw, bool):
            value = _num(raw)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"expected an integer >= 1, {{max: N}} or a list of steps, got {raw!r}")
            return {"max": value}
        if isinstance(raw, Mapping) and "choice" in raw and len(raw) == 1:
            raw = raw["choice"]  # the earlier format: steps to evaluate
        if isinstance(raw, list | tuple):
            steps = [_num(v) for v in raw]
            if not steps or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in steps):
                raise ValueError(f"expected a non-empty list of integers >= 1, got {raw!r}")
            return {"max": max(steps), "points": tuple(sorted(set(steps)))}
        return raw

    @model_serializer
    def _dump(self) -> Any:
        return {"max": self.max, **({"points": list(self.points)} if self.points is not None else {})}


def _num(value: Any) -> Any:
    """YAML 1.1 reads ``1e-4`` (no dot) as a string: take numeric strings as numbers."""
    if isinstance(value, str):
        try:
            return int(value) if value.strip().lstrip("-").isdigit() else float(value)
        except ValueError:
            return value
    return value


class AlgorithmSpace(Section):
    """An algorithm's search space: ``lr``, ``steps`` and its own parameters (names checked against the
    algorithm's declaration, every concrete value against its constraints)."""

    lr: ParamSpec
    steps: StepsSpec
    params: dict[str, ParamSpec] = Field(default_factory=dict)

    @model_serializer
    def _dump(self) -> dict[str, Any]:
        """Back to the YAML form: lr, steps and the parameters side by side."""
        return {"lr": self.lr, "steps": self.steps, **self.params}

    def searched(self) -> dict[str, ParamSpec]:
        """lr and the algorithm's parameters: everything the sampler chooses (steps is the trajectory)."""
        return {"lr": self.lr, **self.params}


def _algorithm_space(algo: str, raw: Any) -> AlgorithmSpace:
    """``algorithms.<algo>`` -> its space; every error located at its key (``algorithms.npo.beta``)."""
    from lume_ray.algorithms import algorithm_params, get_algorithm, validate_params

    try:
        get_algorithm(algo)
    except ValueError as e:
        raise located([algo], str(e), raw) from None
    if not isinstance(raw, Mapping):
        raise located([algo], "expected a mapping of parameter -> distribution", raw)
    valid = [*TRAINER_PARAMS, *algorithm_params(algo)]
    for name in raw:
        if name not in valid:
            raise located([algo, name], f"unknown key (valid: {', '.join(valid)})", raw[name])
    for name in TRAINER_PARAMS:
        if name not in raw:
            raise located([algo, name], f"missing (every algorithm needs {' and '.join(TRAINER_PARAMS)})", raw)
    try:
        space = AlgorithmSpace(lr=raw["lr"], steps=raw["steps"],
                               params={k: v for k, v in raw.items() if k not in TRAINER_PARAMS})
    except ValidationError as e:
        raise _relocated([algo], e, flatten="params") from None
    for value in space.lr.concrete_values():
        if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0 or not math.isfinite(value):
            raise located([algo, "lr"], f"must be a finite number > 0 (got {value!r})", value)
    for name, spec in space.params.items():
        default = algorithm_params(algo)[name]
        if isinstance(default, int) and not isinstance(default, bool) and spec.kind in ("uniform", "loguniform"):
            # a float range would hand a trial layer=1.37: an integer parameter samples integers
            raise located([algo, name], f"an integer parameter takes {{int: [lo, hi]}}, {{choice: [...]}} or a "
                          f"number (got {spec.kind})", list(spec.values))
        for value in spec.concrete_values():
            try:
                validate_params(algo, {name: value})
            except ValueError as e:  # AlgorithmError names the constraint
                raise located([algo, name], str(e), value) from None
    return space


# =============================================================================================
# The experiment (a study).


MAX_RUNGS = 16  # an ASHA ladder longer than this is a typo (a factor near 1), not a plan


class EarlyStopConfig(Section):
    """Multi-objective successive halving: at each rung, stop a trial whose point is outside the kept
    fraction of the points seen at that rung (by Pareto rank, ties by hypervolume contribution).

    The rungs are given as steps (``rungs``) or as ASHA's geometric ladder (Tune's ASHAScheduler names):
    ``grace_period`` is the first rung and each next one is 1/keep (``reduction_factor``) times the last, rounded
    half up, below the longest trajectory; the experiment fills ``rungs`` from them. ``reduction_factor: 3`` is
    ``keep: 1/3``; once validated the config holds ``keep`` (and experiment.yaml the rungs and keep)."""

    rungs: tuple[int, ...] = Field((), description="steps at which trials are compared; or give grace_period")
    grace_period: int | None = Field(None, ge=1, description="the first rung when rungs is not given; the next "
                                     "ones are 1/keep times the last, below the longest trajectory")
    keep: float = Field(1 / 3, gt=0, le=1, description="fraction kept at each rung (or reduction_factor)")
    reduction_factor: float | None = Field(None, gt=1, description="ASHA's eta: keep 1/reduction_factor at each "
                                           "rung; with grace_period, also the ratio of one rung to the next")
    keep_front: bool = Field(
        True, description="also keep every trial whose point is on the rung's front (non-dominated there): "
        "fewer steps saved, far fewer final-front points lost (benchmarks/bench_sweep.py replays both rules); "
        "false: the kept fraction alone")
    pipelined: bool | Literal["auto"] = Field(
        "auto", description="true: score a rung's point while the job trains on; false: the job waits at each rung "
        "(alive, its workers and model loaded) until its point is scored and the trial judged; auto: true when the "
        "job trains on GPUs (idle GPUs cost more than steps past a rung), false on CPU (benchmarks/bench_sweep.py: "
        "where scoring a point outlasts training to the next rung, pipelining saves no steps)")

    @field_validator("pipelined", mode="before")
    @classmethod
    def _pipelined(cls, value: Any) -> Any:
        if not isinstance(value, bool) and value != "auto":
            raise ValueError(f"expected true, false or auto, got {value!r}")
        return value

    def resolved_pipelined(self, train: TrainConfig) -> bool:
        """``pipelined`` with "auto" resolved from the job's hardware."""
        return train.use_gpu if self.pipelined == "auto" else self.pipelined

    @field_validator("keep", mode="before")
    @classmethod
    def _fraction(cls, value: Any) -> Any:
        if isinstance(value, str) and "/" in value:
            num, _, den = value.partition("/")
            return float(num) / float(den)
        return value

    @field_validator("rungs")
    @classmethod
    def _rungs(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(r < 1 for r in value) or list(value) != sorted(set(value)):
            raise ValueError(f"expected increasing steps >= 1, got {list(value)}")
        return value

    @model_validator(mode="after")
    def _one_way_each(self) -> EarlyStopConfig:
        if not self.rungs and self.grace_period is None:
            raise located(["rungs"], "give the rungs (steps at which trials are compared), or grace_period (the "
                          "first rung; the next ones 1/keep, i.e. reduction_factor, times the last)")
        if self.rungs and self.grace_period is not None:
            raise located(["grace_period"], f"give rungs ({list(self.rungs)}) or grace_period "
                          f"({self.grace_period}), not both", self.grace_period)
        if self.reduction_factor is not None:
            eta = self.reduction_factor
            if "keep" in self.model_fields_set and not math.isclose(self.keep, 1 / eta, rel_tol=1e-6):
                raise located(["keep"], f"{self.keep:g} disagrees with reduction_factor {eta:g} (keeps "
                              f"1/{eta:g} = {1 / eta:g}): give one of them", self.keep)
            object.__setattr__(self, "keep", 1 / eta)  # one way to say it from here on
            object.__setattr__(self, "reduction_factor", None)
        if self.grace_period is not None and self.keep >= 1:
            raise located(["keep"], "1 keeps every trial, so a grace_period has no next rung: give keep < 1 or "
                          "reduction_factor > 1", self.keep)
        return self

    def ladder(self, grace_period: int, longest: int) -> tuple[int, ...]:
        """ASHA's rungs grace_period x (1/keep)^k, rounded half up, below ``longest``. More than :data:`MAX_RUNGS`
        is an error (each rung is an evaluation of every trial that reaches it)."""
        eta, rung, steps = 1 / self.keep, float(grace_period), set()
        while math.floor(rung + 0.5) < longest:
            steps.add(math.floor(rung + 0.5))
            if len(steps) > MAX_RUNGS:
                raise located(["sweep", "early_stop"], f"keep {self.keep:.6g} (reduction_factor {eta:.6g}) with "
                              f"grace_period {grace_period} makes more than {MAX_RUNGS} rungs below {longest} "
                              "steps: raise grace_period or the factor (lower keep)", self.model_dump())
            rung *= eta
        return tuple(sorted(steps))


class SweepConfig(Section):
    sampler: str = Field("gp", description="gp | tpe | nsga2 | random | grid (registered samplers)")
    num_samples: int = Field(8, ge=1, description="trials per algorithm (a grid runs its full grid)")
    max_concurrent: int | None = Field(None, ge=1, description="trials at once (default: what the cluster fits)")
    eval_points: int = Field(2, ge=1, description="evaluations per trial, evenly spaced over its trajectory")
    eval_steps: tuple[int, ...] | None = Field(None, description="explicit evaluation steps (overrides eval_points)")
    objectives: tuple[str, ...] = Field(("forget_efficacy", "retain_score", "utility"), min_length=1,
                                        description="registered metrics (directions from the registry)")
    initial_design: Literal["auto", "off"] | int = Field(
        "auto", description="box corners + centre enqueued first: auto (sized from budget and parameters), off, "
        "or a number of points; a point a --warm-start already holds is left out")
    initial_design_inset: float = Field(
        0.0, ge=0.0, lt=0.5, description="how far inside the box the design's corners sit, as a fraction of each "
        "parameter's range (log scale where the range is log): 0 = the box's corners, 0.25 = the corners of its "
        "middle half")
    max_failures: int = Field(1, ge=0, description="retries of a failed trial (resumed from its checkpoint)")
    algorithms: tuple[str, ...] | None = Field(None, description="subset of the experiment's algorithms to run")
    keep_models: bool = Field(False, description="keep every evaluation point's model directory")
    early_stop: EarlyStopConfig | None = None
    report: bool = Field(True, description="write RUN_DIR/report at the end")

    @field_validator("sampler")
    @classmethod
    def _sampler(cls, value: str) -> str:
        from lume_ray.search.samplers import SAMPLERS

        if value not in SAMPLERS:
            raise ValueError(f"unknown sampler {value!r} (valid: {', '.join(SAMPLERS)})")
        return value

    @field_validator("objectives")
    @classmethod
    def _objectives(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from lume_ray.evaluate.metrics import direction

        for name in value:
            direction(name)
        if len(set(value)) != len(value):
            raise ValueError(f"objectives repeat a name: {list(value)}")
        return value

    @field_validator("eval_steps")
    @classmethod
    def _eval_steps(cls, value: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if value is not None and (not value or any(s < 1 for s in value)):
            raise ValueError(f"expected a non-empty list of steps >= 1, got {value}")
        return None if value is None else tuple(sorted(set(value)))

    @field_validator("initial_design")
    @classmethod
    def _initial(cls, value: Any) -> Any:
        if isinstance(value, int) and value < 0:
            raise ValueError(f"expected auto, off or a number >= 0, got {value}")
        return value


class MlflowConfig(Section):
    uri: str | None = Field(None, description="tracking URI (default: a local store under RUN_DIR/mlruns)")
    experiment: str | None = Field(None, description="MLflow experiment name (default: the study's name)")


class TrackingConfig(Section):
    mlflow: MlflowConfig | None = None


class Experiment(Section):
    """A study: data -> target -> one sweep over every algorithm's space -> report."""

    name: str = Field(..., min_length=1)
    seed: int = Field(0, ge=0)
    output_dir: str = Field("", description="RUN_DIR (default: runs/<name>); paths may use {output_dir}")
    data: DataConfig = DataConfig()
    target: TargetConfig = TargetConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    sweep: SweepConfig = SweepConfig()
    tracking: TrackingConfig = TrackingConfig()
    algorithms: dict[str, AlgorithmSpace] = Field(..., min_length=1)

    @field_validator("algorithms", mode="before")
    @classmethod
    def _spaces(cls, raw: Any) -> Any:
        if not isinstance(raw, Mapping) or not raw:
            from lume_ray.algorithms import ALGORITHMS

            raise ValueError(f"expected a mapping of algorithm name -> search space (valid: {', '.join(ALGORITHMS)})")
        return {algo: space if isinstance(space, AlgorithmSpace) else _algorithm_space(algo, space or {})
                for algo, space in raw.items()}

    @model_validator(mode="after")
    def _check(self) -> Experiment:
        if not self.output_dir:
            object.__setattr__(self, "output_dir", f"runs/{self.name}")
        out = Path(self.output_dir)
        if out.exists() and not out.is_dir():
            raise located(["output_dir"], f"{self.output_dir!r} exists and is not a directory", self.output_dir)
        sw = self.sweep
        for algo in sw.algorithms or ():
            if algo not in self.algorithms:
                raise located(["sweep", "algorithms"], f"{algo!r} has no search space here "
                              f"(valid: {', '.join(self.algorithms)})", list(sw.algorithms or ()))
        if sw.eval_steps is not None:  # each algorithm evaluates the steps within its trajectory; none: a typo
            longest = max(self.algorithms[a].steps.max for a in self.selected_algorithms())
            beyond = [s for s in sw.eval_steps if s > longest]
            if beyond:
                raise located(["sweep", "eval_steps"], f"{beyond[0]} is beyond every algorithm's steps "
                              f"(largest max: {longest})", beyond[0])
        if sw.early_stop is not None:
            longest = max(self.algorithms[a].steps.max for a in self.selected_algorithms())
            es = sw.early_stop
            if es.grace_period is not None:  # ASHA's ladder, resolved here once (experiment.yaml keeps the rungs)
                if es.grace_period >= longest:
                    raise located(["sweep", "early_stop", "grace_period"], f"{es.grace_period} is not before any "
                                  f"algorithm's last step (largest max: {longest})", es.grace_period)
                # A new config, not the given one changed (it may serve another experiment, of other lengths).
                es = es.model_copy(update={"rungs": es.ladder(es.grace_period, longest), "grace_period": None})
                object.__setattr__(self, "sweep", sw.model_copy(update={"early_stop": es}))
            if es.rungs[-1] > longest:
                raise located(["sweep", "early_stop", "rungs"], f"{es.rungs[-1]} is beyond every "
                              f"algorithm's steps (largest max: {longest})", list(es.rungs))
        return self

    # -- derived values, one place each ------------------------------------------------------

    def selected_algorithms(self) -> list[str]:
        return list(self.sweep.algorithms or self.algorithms)

    def eval_steps(self, algorithm: str) -> tuple[int, ...]:
        """The steps at which a trial of ``algorithm`` is evaluated (the last is always its max)."""
        steps = self.algorithms[algorithm].steps
        if steps.points is not None:
            points = steps.points
        elif self.sweep.eval_steps is not None:
            points = tuple(p for p in self.sweep.eval_steps if p <= steps.max)
        else:
            n = self.sweep.eval_points
            points = tuple(round(steps.max * k / n) for k in range(1, n + 1))
        if self.sweep.early_stop is not None:  # every rung is evaluated: the scheduler decides there
            points = (*points, *(r for r in self.sweep.early_stop.rungs if r <= steps.max))
        return tuple(sorted({p for p in points if p >= 1} | {steps.max}))

    def path(self, text: str) -> str:
        """An experiment path: ``{output_dir}`` substituted; made absolute when it exists here (trials run in
        directories of their own); anything else (a hub id such as ``allenai/OLMo-1B-hf``) is unchanged."""
        text = text.replace("{output_dir}", self.output_dir)
        return str(Path(text).resolve()) if Path(text).exists() else text

    def resolved(self) -> Experiment:
        """The experiment with an absolute output_dir (trials run in directories of their own)."""
        return self.model_copy(update={"output_dir": str(Path(self.output_dir).resolve())})

    def unlearn_job(self, algorithm: str, hp: Mapping[str, Any], out: str | Path, steps: int | None = None) -> UnlearnJob:
        """The unlearning job of one trial: ``hp`` holds lr and the algorithm's parameters. With early stopping not
        pipelined, the job waits at each rung before its last step until the trial has been judged there."""
        space = self.algorithms[algorithm]
        steps = steps or space.steps.max
        es = self.sweep.early_stop
        waits = () if es is None or es.resolved_pipelined(self.train) else tuple(r for r in es.rungs if r < steps)
        return UnlearnJob(
            model=self.path(self.target.model), data=self.path(self.data.path), algorithm=algorithm,
            params={k: v for k, v in hp.items() if k != "lr"}, lr=float(hp["lr"]), steps=steps,
            eval_steps=tuple(s for s in self.eval_steps(algorithm) if s <= steps), wait_steps=waits, out=str(out),
            seed=self.seed, train=self.train, trust_remote_code=self.target.trust_remote_code,
        )

    def dump(self) -> dict[str, Any]:
        """The resolved experiment as plain data (RUN_DIR/experiment.yaml)."""
        return self.model_dump(mode="json")


# =============================================================================================
# Loading, overrides, one-line errors.


def apply_overrides(raw: dict[str, Any], overrides: Sequence[tuple[str, str]], source: str = "--set") -> dict[str, Any]:
    """``a.b.c=value`` overrides (values parsed as YAML) applied to a copy of the raw mapping."""
    out = copy.deepcopy(raw)
    for key, text in overrides:
        try:
            value = yaml.safe_load(text) if text != "" else None
        except yaml.YAMLError:
            raise ConfigError(f"{source} {key}={text}: value is not valid YAML") from None
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            if node.get(part) is None:
                node[part] = {}
            if not isinstance(node[part], dict):
                raise ConfigError(f"{source} {key}: {part!r} is not a mapping")
            node = node[part]
        node[parts[-1]] = value
    return out


def _fields_at(model: type[BaseModel], loc: Sequence[Any]) -> list[str] | None:
    """The valid keys of the model found at ``loc`` (for "unknown key" errors)."""
    current: Any = model
    for part in loc:
        if isinstance(current, _Keyed):  # a key of a dict[str, Model] field (algorithms.npo)
            current = current.model
        elif isinstance(current, type) and issubclass(current, BaseModel) and part in current.model_fields:
            annotation = current.model_fields[part].annotation
            is_dict = typing.get_origin(annotation) is dict
            current = _Keyed(_model_in(typing.get_args(annotation)[1])) if is_dict else _model_in(annotation)
        else:
            return None
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return None


class _Keyed(typing.NamedTuple):
    model: Any


def _model_in(annotation: Any) -> Any:
    for arg in getattr(annotation, "__args__", ()) or ():
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return annotation


def one_line(error: ValidationError, model: type[BaseModel], source: str) -> ConfigError:
    """The first pydantic error as ``SOURCE: key.path: what is wrong (got VALUE; valid: ...)``."""
    err = error.errors(include_url=False)[0]
    loc = [str(p) for p in err["loc"]]
    where = ".".join(loc) or "(top level)"
    msg = str(err["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    value = err.get("input")
    if err["type"] == "extra_forbidden":
        valid = _fields_at(model, loc[:-1])
        extra = f" (valid: {', '.join(valid)})" if valid else ""
        return ConfigError(f"{source}: {where}: unknown key{extra}")
    if err["type"] == "missing":
        return ConfigError(f"{source}: {where}: missing (required)")
    got = "" if isinstance(value, Mapping) or err["type"].startswith("value_error") else f" (got {value!r})"
    return ConfigError(f"{source}: {where}: {msg}{got}")


def validate(model: type[Section], raw: Mapping[str, Any], source: str) -> Any:
    """``model`` from ``raw``; any problem -> one-line :class:`ConfigError` naming ``source``."""
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        raise one_line(e, model, source) from None


def load_experiment(path: str | Path, overrides: Sequence[tuple[str, str]] = ()) -> Experiment:
    """Read, override and validate an experiment YAML: the only place an experiment is checked."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: experiment file not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return experiment_from_dict(apply_overrides(raw, overrides), str(path))


def experiment_from_dict(raw: Mapping[str, Any], source: str = "<dict>") -> Experiment:
    return validate(Experiment, raw, source)  # type: ignore[no-any-return]
