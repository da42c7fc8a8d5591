"""Search spaces: ``algorithms.<name>`` of an experiment -> an :class:`AlgorithmSpace` per algorithm.

Input:  per algorithm, ``lr`` and ``steps`` (trainer parameters) plus the algorithm's own parameters (declared by
        each algorithm in :mod:`lume_ray.algorithms`). A parameter is a distribution ``{loguniform: [lo, hi]}``,
        ``{uniform: [lo, hi]}``, ``{int: [lo, hi]}``, ``{choice: [a, b, ...]}`` or a plain value (fixed);
        ``grid: [...]`` beside a range gives the values the grid sampler uses. ``steps`` is a trajectory, not a
        sampled parameter: ``{max: N}`` or a list of steps (trained to the largest, evaluated at each).
Output: :class:`ParamSpec` per parameter, :class:`StepsSpec`, :class:`AlgorithmSpace`; every concrete value checked
        against the algorithm's constraints, every error located at its key (``algorithms.npo.beta``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import Field, ValidationError, model_serializer, model_validator

from lume_ray.config.base import Section, located

TRAINER_PARAMS = ("lr", "steps")
DISTRIBUTIONS = ("loguniform", "uniform", "int", "choice")


def _num(value: Any) -> Any:
    """YAML 1.1 reads ``1e-4`` (no dot) as a string: take numeric strings as numbers."""
    if isinstance(value, str):
        try:
            return int(value) if value.strip().lstrip("-").isdigit() else float(value)
        except ValueError:
            return value
    return value


def _relocated(prefix: Sequence[str | int], error: ValidationError, *, flatten: str = "") -> ValidationError:
    """``error`` with every location under ``prefix``, and a leading ``flatten`` level dropped (``params.beta``
    -> ``beta``: an algorithm's parameters sit beside lr and steps in the YAML)."""
    def loc(where: tuple[str | int, ...]) -> tuple[str | int, ...]:
        return (*prefix, *(where[1:] if flatten and where[:1] == (flatten,) else where))

    details: list[Any] = [{"type": e["type"], "loc": loc(e["loc"]), "input": e["input"],
                           **({"ctx": e["ctx"]} if "ctx" in e else {})} for e in error.errors()]
    return ValidationError.from_exception_data("config", details)


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
    from lume_ray.algorithms import algorithm_params, get_algorithm, validate_params  # heavy: torch

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
