"""The unlearning job: one ``lume-ray unlearn`` run (or one sweep trial) -> a frozen, validated :class:`UnlearnJob`.

Input:  model, data, a registered algorithm and its parameters, the trainer settings, the output directory.
Output: :class:`UnlearnJob`, its parameters checked against the algorithm's declaration (defaults filled) and its
        evaluation and waiting steps resolved.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import Field, field_validator, model_validator

from lume_ray.config.base import ParamValue, Section, located
from lume_ray.config.sections import TrainConfig


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
    lr: float = Field(1e-5, gt=0, allow_inf_nan=True,  # refused by _finite, with a message of its own
                      description="learning rate (constant: a run passes through every shorter one)")
    steps: int = Field(60, ge=1, description="steps to train")
    eval_steps: tuple[int, ...] = Field((), description="steps that save an evaluation point (the last always does)")
    wait_steps: tuple[int, ...] = Field(
        (), description="evaluation points at which the job, once the point is saved, waits (alive) until its driver "
        "writes out/go/step_KKKKKK: early stopping's rungs, so the trial is judged before it trains a step further")
    out: str = Field(..., min_length=1, description="output directory (the same one resumes)")
    seed: int = Field(0, ge=0)
    train: TrainConfig = TrainConfig()
    trust_remote_code: bool = False
    plugins: tuple[str, ...] = Field(
        (), description="the user's own modules (.py files or module names) imported before the algorithm is looked "
        "up: their @register_algorithm functions are algorithms here (lume_ray.plugins)")

    @model_validator(mode="before")
    @classmethod
    def _load_plugins(cls, raw: Any) -> Any:
        """The plugins imported before any field is validated (``algorithm`` may name one of theirs); paths
        relative to the current directory (a flag's), stored absolute (a Train worker imports them from there)."""
        if not isinstance(raw, Mapping) or not raw.get("plugins"):
            return raw
        plugins = raw["plugins"]
        if isinstance(plugins, str) or not isinstance(plugins, Sequence) or not all(isinstance(p, str) for p in plugins):
            raise located(["plugins"], "expected a list of .py files or module names", plugins)
        from lume_ray.plugins import PluginError, load_plugins, resolve  # heavy: torch

        resolved = resolve(plugins, ".")
        try:
            load_plugins(resolved)
        except PluginError as e:
            raise located(["plugins"], str(e), list(plugins)) from None
        return {**raw, "plugins": list(resolved)}

    @field_validator("algorithm")
    @classmethod
    def _algorithm(cls, value: str) -> str:
        from lume_ray.algorithms import get_algorithm  # heavy: torch

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
        from lume_ray.algorithms import validate_params  # heavy: torch

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
