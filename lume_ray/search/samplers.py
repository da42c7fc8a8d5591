"""[3] Samplers: a name -> an Optuna sampler for one algorithm's study.

Input:  :class:`SamplerContext` (seed, the searched parameters, the trial budget, the grid when asked).
Output: an ``optuna.samplers.BaseSampler``. A sampler is one function registered with ``@register_sampler``;
        ``sweep.sampler`` in the experiment names it, and nothing else lists it.

Budgets of 10-50 trials per algorithm are the norm here (a trial is hours of GPUs on the real benchmark):
``gp`` (Optuna's GPSampler: Gaussian process, log expected hypervolume improvement, multi-objective) is the
default; ``tpe``, ``nsga2``, ``random`` and ``grid`` stay for comparison. Every sampler is seeded.
The searcher enqueues an initial design (box corners + centre) before any sampler takes over, so the
samplers' own random start-up is kept short.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lume_ray.registry import Registry


@dataclass(frozen=True)
class SamplerContext:
    seed: int
    budget: int  # trials this study will run
    grid: Mapping[str, Sequence[Any]]  # parameter -> grid values (the grid sampler's space)


SamplerFn = Callable[[SamplerContext], Any]
SAMPLERS: Registry[SamplerFn] = Registry("sampler")  # listed in registration order: the default first


def register_sampler(name: str) -> Callable[[SamplerFn], SamplerFn]:
    """Register ``fn(ctx) -> optuna sampler`` as ``sweep.sampler: name``."""
    return SAMPLERS.register(name)


def make_sampler(name: str, ctx: SamplerContext) -> Any:
    """The sampler ``name`` built for ``ctx``; unknown -> ValueError naming the valid ones."""
    return SAMPLERS.get(name)(ctx)


@register_sampler("gp")
def gp(ctx: SamplerContext) -> Any:
    """Optuna's GPSampler (multi-objective: log EHVI). The initial design replaces its random start-up."""
    import optuna  # heavy: optuna

    with warnings.catch_warnings():  # deterministic_objective is marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.GPSampler(seed=ctx.seed, n_startup_trials=2, deterministic_objective=True,
                                         warn_independent_sampling=False)


@register_sampler("tpe")
def tpe(ctx: SamplerContext) -> Any:
    import optuna  # heavy: optuna

    return optuna.samplers.TPESampler(seed=ctx.seed, n_startup_trials=max(2, min(10, ctx.budget // 3)),
                                      multivariate=True)


@register_sampler("nsga2")
def nsga2(ctx: SamplerContext) -> Any:
    import optuna  # heavy: optuna

    return optuna.samplers.NSGAIISampler(seed=ctx.seed, population_size=max(2, min(ctx.budget // 2, 50)))


@register_sampler("random")
def random(ctx: SamplerContext) -> Any:
    import optuna  # heavy: optuna

    return optuna.samplers.RandomSampler(seed=ctx.seed)


@register_sampler("grid")
def grid(ctx: SamplerContext) -> Any:
    """Every combination of the grid values, in a seeded order (the budget is the grid's size)."""
    import optuna  # heavy: optuna

    return optuna.samplers.GridSampler({k: list(v) for k, v in ctx.grid.items()}, seed=ctx.seed)
