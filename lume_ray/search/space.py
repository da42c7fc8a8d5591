"""[3] Search spaces: an algorithm's :class:`~lume_ray.config.AlgorithmSpace` -> Optuna distributions, the initial
design, and the boundary check of a front.

Input:  the searched parameters (lr and the algorithm's own; ``steps`` is the trajectory, told to the study as
        one more dimension of every observation), the trial budget.
Output: ``distributions`` (what ``study.ask`` samples), ``steps_distribution`` (the dimension every evaluated
        point carries), ``initial_design`` (box corners in log space where the range is log, and the centre),
        ``boundary_warnings`` (front points sitting on an edge of the box).
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Mapping, Sequence
from typing import Any

from lume_ray.config import AlgorithmSpace, ParamSpec


def distribution(spec: ParamSpec) -> Any:
    import optuna.distributions as d  # heavy: optuna

    lo, hi = (spec.values + (None,))[:2] if spec.kind != "choice" else (None, None)
    if spec.kind == "loguniform":
        return d.FloatDistribution(float(lo), float(hi), log=True)
    if spec.kind == "uniform":
        return d.FloatDistribution(float(lo), float(hi))
    if spec.kind == "int":
        return d.IntDistribution(int(lo), int(hi))
    if spec.kind == "choice":
        return d.CategoricalDistribution(list(spec.values))
    return d.CategoricalDistribution([spec.values[0]])  # fixed: one choice, never varies


def distributions(space: AlgorithmSpace, grid: bool = False) -> dict[str, Any]:
    """The searched parameters' distributions. With ``grid``, each parameter is its grid values (categorical),
    which is what Optuna's GridSampler samples from."""
    import optuna.distributions as d  # heavy: optuna

    if grid:
        return {name: d.CategoricalDistribution(list(spec.grid_values())) for name, spec in space.searched().items()}
    return {name: distribution(spec) for name, spec in space.searched().items()}


def searchable(space: AlgorithmSpace) -> dict[str, ParamSpec]:
    """The parameters a sampler searches: ranges and choices of more than one option (not fixed values, not steps)."""
    return {n: s for n, s in space.searched().items() if s.searchable}


def steps_distribution(space: AlgorithmSpace, eval_steps: Sequence[int] = ()) -> Any:
    """The ``steps`` dimension of every observation and proposal. When the trials are evaluated at evenly spaced
    steps (h, 2h, ..., max: ``sweep.eval_points``), only those: a trajectory already trained is then observed at
    every value the sampler can propose for it, and GP (a deterministic objective) sees nothing left to learn there.
    With 1..max, GP re-proposed trained box corners at steps between the evaluated ones (measured: 3 of 16 trials,
    bench_sweep's boundary space), each a second run of the same trajectory. Uneven evaluation steps: 1..max."""
    import optuna.distributions as d  # heavy: optuna

    points = sorted(set(eval_steps))
    h = points[0] if points else 0
    if h > 0 and points == list(range(h, space.steps.max + 1, h)):
        return d.IntDistribution(h, space.steps.max, step=h)
    return d.IntDistribution(1, space.steps.max)


def grid_of(space: AlgorithmSpace) -> dict[str, tuple[Any, ...]]:
    return {name: spec.grid_values() for name, spec in space.searched().items()}


def grid_size(space: AlgorithmSpace) -> int:
    return math.prod(len(v) for v in grid_of(space).values())


# ---------------------------------------------------------------------------------------------
# Initial design: the box's corners and its centre.


def _unit_to_value(spec: ParamSpec, u: float) -> Any:
    """A point of [0, 1] -> the parameter's value (log scale for loguniform; options for choice)."""
    if spec.kind == "choice":
        return spec.values[min(int(u * len(spec.values)), len(spec.values) - 1)]
    lo, hi = float(spec.values[0]), float(spec.values[1])
    if u in (0.0, 1.0):  # the box's edges exactly (exp(log(x)) is not always x)
        value = lo if u == 0.0 else hi
        return int(value) if spec.kind == "int" else value
    if spec.kind == "loguniform":
        return float(math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo))))
    value = lo + u * (hi - lo)
    return int(round(value)) if spec.kind == "int" else float(value)


def design_size(n_params: int, budget: int, setting: str | int = "auto") -> int:
    """Points of the initial design: all 2^d corners + the centre when they fit in half the budget; else half
    the budget (at least 2: the two opposite corners), space-filling over the corners. ``off`` -> 0."""
    if setting == "off" or n_params == 0:
        return 0
    full = 2 ** n_params + 1
    if isinstance(setting, int):
        return min(setting, budget)
    return min(full, max(2, budget // 2), budget)


def initial_design(space: AlgorithmSpace, size: int, inset: float = 0.0) -> list[dict[str, Any]]:
    """``size`` points: corners first, ordered so that any prefix spreads over the box (greedy maximin in the
    unit cube, starting at the corner of the largest lr with every other parameter at its low end: the
    aggressive end of the front, where fixed grids and random samples under-explore), then the centre.
    ``inset`` moves the corners that fraction of each range inwards (0.25: the corners of the middle half)."""
    if not 0.0 <= inset < 0.5:
        raise ValueError(f"initial_design_inset: expected 0 <= inset < 0.5, got {inset}")
    searched = searchable(space)
    if size <= 0 or not searched:
        return []
    names = list(searched)
    corners = [tuple(c) for c in itertools.product((0.0, 1.0), repeat=len(names))]
    first = tuple(1.0 if n == "lr" else 0.0 for n in names)
    chosen = [first]
    rest = [c for c in corners if c != first]
    while rest and len(chosen) < size - 1:
        best = max(rest, key=lambda c: (min(sum((a - b) ** 2 for a, b in zip(c, o, strict=True)) for o in chosen),
                                        -corners.index(c)))
        chosen.append(best)
        rest.remove(best)
    points = [dict(zip(names, c, strict=True)) for c in chosen]
    if len(points) < size:
        points.append(dict.fromkeys(names, 0.5))
    if len(points) < size:  # a design of more than corners + centre: every other corner after the centre
        points += [dict(zip(names, c, strict=True)) for c in rest[: size - len(points)]]
    return [{n: _unit_to_value(searched[n], inset + u * (1.0 - 2.0 * inset)) for n, u in p.items()}
            for p in points[:size]]


# ---------------------------------------------------------------------------------------------
# The boundary check.


def _position(spec: ParamSpec, value: Any) -> float | None:
    """Where ``value`` sits in its range, 0..1 (log scale for loguniform); None for choice/fixed."""
    if spec.kind not in ("loguniform", "uniform", "int") or value is None:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    lo, hi = float(spec.values[0]), float(spec.values[1])
    if hi <= lo or not math.isfinite(v):
        return None
    if spec.kind == "loguniform":
        return (math.log(v) - math.log(lo)) / (math.log(hi) - math.log(lo))
    return (v - lo) / (hi - lo)


def boundary_warnings(space: AlgorithmSpace, front: Sequence[Mapping[str, Any]], algorithm: str, *,
                      tolerance: float = 0.02, min_share: float = 0.5) -> list[str]:
    """"lr at its upper bound in 4 of 5 front points: widen the range" for each searched range parameter
    where at least ``min_share`` of the front points lie within ``tolerance`` of one bound (in the
    parameter's own scale). ``front``: hyperparameters per front point (``{"lr": ..., "alpha": ...}``)."""
    warnings: list[str] = []
    n = len(front)
    if n == 0:
        return warnings
    for name, spec in space.searched().items():
        positions = [_position(spec, p.get(name)) for p in front]
        known = [x for x in positions if x is not None]
        if not known:
            continue
        for side, hit in (("upper", [x for x in known if x >= 1 - tolerance]),
                          ("lower", [x for x in known if x <= tolerance])):
            if len(hit) >= max(1, math.ceil(min_share * n)):
                bound = spec.values[1] if side == "upper" else spec.values[0]
                warnings.append(f"{algorithm}: {name} at its {side} bound ({bound:g}) in {len(hit)} of {n} front "
                                "points: widen the range")
    return warnings


# ---------------------------------------------------------------------------------------------
# Repeats: a proposal on a trajectory already trained.


def _unit(spec: ParamSpec, value: Any) -> float:
    """``value``'s place in [0, 1] (log scale for loguniform; a choice's option index)."""
    if spec.kind == "choice":
        index = spec.values.index(value) if value in spec.values else 0
        return (index + 0.5) / len(spec.values)
    position = _position(spec, value)
    return 0.0 if position is None else min(1.0, max(0.0, position))


def repeats(space: AlgorithmSpace, params: Mapping[str, Any], seen: Sequence[Mapping[str, Any]], *,
            tolerance: float = 0.02) -> bool:
    """Whether ``params`` lies within ``tolerance`` (in every searched parameter's [0, 1] scale) of a setting in
    ``seen``. Batches are a function of (seed, step) and a trial trains to the largest step count, so such a trial
    would retrace a trajectory already trained and evaluated at the same points: no new observation."""
    searched = searchable(space)
    return any(all(abs(_unit(s, params[n]) - _unit(s, other[n])) <= tolerance for n, s in searched.items())
               for other in seen if all(n in other for n in searched))


def away_from_seen(space: AlgorithmSpace, params: Mapping[str, Any], seen: Sequence[Mapping[str, Any]], *,
                   seed: int, radius: float = 0.25, spacing: float = 0.1, candidates: int = 64) -> dict[str, Any]:
    """A repeated proposal moved as little as it takes to train something new: of ``candidates`` seeded draws
    within ``radius`` of it (each parameter's [0, 1] scale, clipped to the box, so a proposal on an edge tends to
    stay on it), the nearest one at least ``spacing`` from every seen setting (else the draw farthest from them).
    The sampler asked for this region; the move keeps it there and buys a trajectory not yet trained."""
    searched = searchable(space)
    names = [n for n, s in searched.items() if s.kind != "choice"]  # a choice keeps the proposed option
    centre = {n: _unit(searched[n], params[n]) for n in names}
    points = [{n: _unit(searched[n], p[n]) for n in names} for p in seen if all(n in p for n in names)]
    rng = random.Random(seed)

    def distance(u: Mapping[str, float], v: Mapping[str, float]) -> float:
        return math.sqrt(sum((u[n] - v[n]) ** 2 for n in names))

    def gap(u: Mapping[str, float]) -> float:
        return min((distance(u, p) for p in points), default=math.inf)

    draws = [{n: min(1.0, max(0.0, centre[n] + rng.uniform(-radius, radius))) for n in names}
             for _ in range(candidates)]
    novel = [u for u in draws if gap(u) >= spacing]
    best = min(novel, key=lambda u: distance(u, centre)) if novel else max(draws, key=gap)
    return {**params, **{n: _unit_to_value(searched[n], u) for n, u in best.items()}}
