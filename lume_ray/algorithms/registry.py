"""[3 unlearn] Algorithm registry: name -> a pure loss function, its parameters (with defaults), their constraints and
an optional check against the model.

Input:  ``@register_algorithm(name, params, ...)`` above a loss function (see :mod:`lume_ray.algorithms.losses`).
Output: :data:`ALGORITHMS` (a :class:`lume_ray.registry.Registry`), :func:`get_algorithm`, :func:`validate_params`;
        the declared parameters are the vocabulary of the sweep's search spaces (method parameters kept apart
        from trainer parameters such as lr and steps, which live in the config). ``check(params, model_config)``
        is the algorithm's own test of its parameters against the model it will train (before any worker starts).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from lume_ray.registry import Registry

ParamValue = float | int | str
Batch = dict[str, torch.Tensor]
LossFn = Callable[[Any, Batch, Batch, Any, Mapping[str, Any]], tuple[torch.Tensor, dict[str, float]]]
CheckFn = Callable[[Mapping[str, Any], Any], None]
"""``check(params, model_config)``: raises ValueError when the validated parameters do not fit the model
(``model_config``: its ``transformers`` config, or None when it cannot be read before training)."""


class AlgorithmError(ValueError):
    """Unknown algorithm or bad algorithm parameter; one-line message with the valid choices."""


@dataclass(frozen=True)
class Algorithm:
    """A registered loss: its function, declared parameters (name -> default) and constraints."""

    name: str
    fn: LossFn
    params: Mapping[str, ParamValue]
    choices: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    positive: tuple[str, ...] = ()  # must be > 0
    nonnegative: tuple[str, ...] = ()  # must be >= 0
    needs_ref: bool = False  # the loss reads the frozen reference model (None is passed otherwise)
    cite: str = ""
    check: CheckFn | None = None


ALGORITHMS: Registry[Algorithm] = Registry("algorithm", error=AlgorithmError, sort=True)


def register_algorithm(
    name: str,
    params: Mapping[str, ParamValue],
    *,
    choices: Mapping[str, tuple[str, ...]] | None = None,
    positive: tuple[str, ...] = (),
    nonnegative: tuple[str, ...] = (),
    needs_ref: bool = False,
    cite: str = "",
    check: CheckFn | None = None,
) -> Callable[[LossFn], LossFn]:
    """Register ``fn`` under ``name``; ``params`` maps each parameter to its default (its type too). ``needs_ref``:
    the loss takes the frozen reference model (else it gets None); ``check``: see :data:`CheckFn`."""
    choices = dict(choices or {})
    for key, allowed in choices.items():
        if not isinstance(params.get(key), str) or params[key] not in allowed:
            raise AlgorithmError(f"{name}: default of {key!r} must be one of {', '.join(allowed)}")

    def deco(fn: LossFn) -> LossFn:
        ALGORITHMS.add(name, Algorithm(name, fn, dict(params), choices, positive, nonnegative, needs_ref, cite, check))
        return fn

    return deco


def get_algorithm(name: str) -> Algorithm:
    """The registered algorithm ``name``; unknown -> :class:`AlgorithmError` naming the valid ones."""
    return ALGORITHMS.get(name)


def algorithm_params(name: str) -> dict[str, ParamValue]:
    """The parameters ``name`` declares, with their defaults (the search-space vocabulary)."""
    return dict(get_algorithm(name).params)


def _coerce(alg: Algorithm, key: str, value: Any) -> ParamValue:
    default = alg.params[key]
    where = f"{alg.name} parameter {key}={value!r}"
    if isinstance(default, str):
        text = str(value)
        allowed = alg.choices.get(key)
        if allowed is not None and text not in allowed:
            raise AlgorithmError(f"{where}: must be one of {', '.join(allowed)}")
        return text
    try:
        number = float(value)  # accepts "0.1" from the command line
    except (TypeError, ValueError):
        raise AlgorithmError(f"{where}: expected a number") from None
    if isinstance(value, bool) or not math.isfinite(number):
        raise AlgorithmError(f"{where}: expected a finite number")
    if isinstance(default, int):
        if number != int(number):
            raise AlgorithmError(f"{where}: expected an integer")
        result: ParamValue = int(number)
    else:
        result = number
    if key in alg.positive and number <= 0:
        raise AlgorithmError(f"{where}: must be > 0")
    if key in alg.nonnegative and number < 0:
        raise AlgorithmError(f"{where}: must be >= 0")
    return result


def validate_params(name: str, given: Mapping[str, Any] | None = None) -> dict[str, ParamValue]:
    """``given`` checked against ``name``'s declared parameters, coerced to their types, defaults filled."""
    alg = get_algorithm(name)
    given = dict(given or {})
    unknown = sorted(set(given) - set(alg.params))
    if unknown:
        valid = ", ".join(alg.params) or "none"
        raise AlgorithmError(f"{name}: unknown parameter {unknown[0]!r} (valid: {valid})")
    return {key: _coerce(alg, key, given.get(key, default)) for key, default in alg.params.items()}
