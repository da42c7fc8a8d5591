"""[4] Pareto maths: points (N, M) + per-objective directions -> front masks, Pareto ranks, hypervolume.

Input:  a 2-D array of objective values and a direction ("max" / "min") per column, from the metric registry.
Output: the non-dominated mask, Pareto ranks, hypervolume and per-point hypervolume contributions, all
        computed by moocore (exact algorithms, C implementation): nothing hand-written here but the
        handling of NaN rows and the orientation of the objectives.

Conventions: row a dominates row b when a is at least as good in every objective and strictly better in one;
ties and exact duplicates never dominate each other, so every copy of a front point stays on the front.
A row with a NaN never is on a front and never dominates another.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _check(values: np.ndarray | Sequence[Sequence[float]], directions: Sequence[str]) -> tuple[np.ndarray, list[bool]]:
    arr = np.asarray(values, dtype=float)
    if arr.ndim == 1 and arr.size == 0:
        arr = arr.reshape(0, len(directions))
    if arr.ndim != 2:
        raise ValueError(f"values must be a 2-D array (points x objectives), got shape {arr.shape}")
    if len(directions) != arr.shape[1] or arr.shape[1] == 0:
        raise ValueError(f"got {len(directions)} directions for {arr.shape[1]} objectives (need one per column)")
    bad = [d for d in directions if d not in ("max", "min")]
    if bad:
        raise ValueError(f"direction {bad[0]!r} is not valid (valid: max, min)")
    return arr, [d == "max" for d in directions]


def pareto_mask(values: np.ndarray | Sequence[Sequence[float]], directions: Sequence[str]) -> np.ndarray:
    """True for the non-dominated rows of ``values`` (N, M) under per-column ``directions``."""
    import moocore

    arr, maximise = _check(values, directions)
    mask = np.zeros(len(arr), dtype=bool)
    valid = np.flatnonzero(~np.isnan(arr).any(axis=1))
    if len(valid):
        mask[valid] = moocore.is_nondominated(arr[valid], maximise=maximise, keep_weakly=True)
    return mask


def pareto_rank(values: np.ndarray | Sequence[Sequence[float]], directions: Sequence[str]) -> np.ndarray:
    """Pareto rank of every row (0: the front; 1: the front once rank 0 is removed; ...). NaN rows: -1."""
    import moocore

    arr, maximise = _check(values, directions)
    ranks = np.full(len(arr), -1, dtype=int)
    valid = np.flatnonzero(~np.isnan(arr).any(axis=1))
    if len(valid):
        ranks[valid] = moocore.pareto_rank(arr[valid], maximise=maximise)
    return ranks


def _usable(arr: np.ndarray, maximise: list[bool], reference: np.ndarray) -> np.ndarray:
    """Rows that are finite and strictly better than the reference in every objective (the others add no volume)."""
    finite = np.isfinite(arr).all(axis=1)
    better = np.where(maximise, arr > reference, arr < reference).all(axis=1)
    return finite & better


def hypervolume(values: np.ndarray | Sequence[Sequence[float]], directions: Sequence[str],
                reference: Sequence[float] | np.ndarray | None = None) -> float:
    """Hypervolume dominated by ``values`` (N, M) up to ``reference`` (M,), in the objectives' own units.

    ``reference=None`` uses the worst observed value of each objective. Rows with a NaN/inf, and rows not
    better than the reference in every objective, add no volume; no rows -> 0.0.
    """
    import moocore

    arr, maximise = _check(values, directions)
    finite = arr[np.isfinite(arr).all(axis=1)]
    if reference is None:
        if len(finite) == 0:
            return 0.0
        ref = np.where(maximise, finite.min(axis=0), finite.max(axis=0))
    else:
        ref = np.asarray(reference, dtype=float).reshape(-1)
        if ref.shape != (arr.shape[1],) or not np.isfinite(ref).all():
            raise ValueError(f"reference must be {arr.shape[1]} finite numbers, got {list(np.asarray(reference))}")
    pts = arr[_usable(arr, maximise, ref)]
    if len(pts) == 0:
        return 0.0
    return float(moocore.hypervolume(pts, ref=ref, maximise=maximise))


def hv_contributions(values: np.ndarray | Sequence[Sequence[float]], directions: Sequence[str],
                     reference: Sequence[float] | np.ndarray) -> np.ndarray:
    """Each row's exclusive hypervolume contribution (0 for dominated, NaN or beyond-reference rows)."""
    import moocore

    arr, maximise = _check(values, directions)
    ref = np.asarray(reference, dtype=float).reshape(-1)
    out = np.zeros(len(arr))
    use = np.flatnonzero(_usable(arr, maximise, ref))
    if len(use):
        out[use] = moocore.hv_contributions(arr[use], ref=ref, maximise=maximise)
    return out
