"""Pareto masks, hypervolumes and floors on hand-made points with hand-computed answers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from lume_ray.config import Floor
from lume_ray.report import apply_floors, hypervolume, pareto_mask, parse_floors
from lume_ray.report.floors import Floors

NAN = float("nan")


def test_two_objectives_max_with_duplicates_and_dominated():
    pts = np.array([[1, 3], [2, 2], [3, 1], [1, 1], [2, 2], [0.5, 2.5]], dtype=float)
    # (1,1) is dominated by (2,2); (0.5,2.5) by (1,3); the two copies of (2,2) both stay.
    assert pareto_mask(pts, ["max", "max"]).tolist() == [True, True, True, False, True, False]


def test_ties_in_one_objective():
    # Equal in x, better in y: dominates. Equal in everything: neither dominates.
    assert pareto_mask(np.array([[1.0, 3.0], [1.0, 2.0]]), ["max", "max"]).tolist() == [True, False]
    assert pareto_mask(np.array([[1.0, 3.0], [1.0, 3.0], [1.0, 3.0]]), ["max", "max"]).tolist() == [True] * 3
    # A tie in one objective with a trade-off in the other two keeps both.
    assert pareto_mask(np.array([[1.0, 2.0, 1.0], [1.0, 1.0, 2.0]]), ["max"] * 3).tolist() == [True, True]


def test_mixed_directions():
    # forget score (min) vs retain score (max).
    pts = np.array([[0.1, 0.9], [0.2, 0.95], [0.3, 0.8], [0.1, 0.85]])
    assert pareto_mask(pts, ["min", "max"]).tolist() == [True, True, False, False]
    # Read as max/min instead, (0.3, 0.8) is best in both and dominates every other point.
    assert pareto_mask(pts, ["max", "min"]).tolist() == [False, False, True, False]


def test_three_objectives():
    pts = np.array([
        [0.4, 0.85, 0.39],  # front
        [0.7, 0.70, 0.36],  # front
        [0.3, 0.80, 0.38],  # dominated by row 0
        [0.75, 0.72, 0.35],  # front: better in the first two than row 1, worse in the third
        [0.7, 0.70, 0.35],  # dominated by row 1 (equal, equal, worse)
    ])
    assert pareto_mask(pts, ["max", "max", "max"]).tolist() == [True, True, False, True, False]


def test_nan_rows_never_on_front_and_never_dominate():
    pts = np.array([[NAN, 10.0], [1.0, 1.0], [10.0, NAN], [0.5, 0.5]])
    assert pareto_mask(pts, ["max", "max"]).tolist() == [False, True, False, False]
    assert pareto_mask(np.full((3, 2), NAN), ["max", "min"]).tolist() == [False] * 3
    assert pareto_mask(np.empty((0, 2)), ["max", "min"]).tolist() == []


def test_bad_directions():
    with pytest.raises(ValueError, match="valid: max, min"):
        pareto_mask(np.ones((2, 2)), ["max", "up"])
    with pytest.raises(ValueError, match="2 directions for 3 objectives"):
        pareto_mask(np.ones((2, 3)), ["max", "max"])


def test_hypervolume_2d_staircase():
    # Union of [0,1]x[0,3], [0,2]x[0,2], [0,3]x[0,1] = 3 + 2 + 1.
    pts = np.array([[1, 3], [2, 2], [3, 1]], dtype=float)
    assert hypervolume(pts, ["max", "max"], [0, 0]) == pytest.approx(6.0)
    # Duplicates, dominated points and NaN rows add nothing.
    more = np.vstack([pts, np.array([[2, 2], [1, 1], [NAN, 9]])])
    assert hypervolume(more, ["max", "max"], [0, 0]) == pytest.approx(6.0)
    # The same as minimization: negate the points and the reference.
    assert hypervolume(-pts, ["min", "min"], [0, 0]) == pytest.approx(6.0)


def test_hypervolume_mixed_directions():
    # forget (min) vs retain (max), reference forget=1, retain=0:
    # [0.2,1]x[0,0.8] = 0.64, [0.5,1]x[0,0.9] = 0.45, overlap [0.5,1]x[0,0.8] = 0.4 -> 0.69.
    pts = np.array([[0.2, 0.8], [0.5, 0.9]])
    assert hypervolume(pts, ["min", "max"], [1.0, 0.0]) == pytest.approx(0.69)


def test_hypervolume_3d_and_4d():
    # Three unit slabs of the cube [0,2]^3 (minimization): the cube minus the corner [0,1]^3 = 8 - 1.
    pts = np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0]], dtype=float)
    assert hypervolume(pts, ["min"] * 3, [2, 2, 2]) == pytest.approx(7.0)
    # 4-D: 2 + 2 - 1 (the overlap of the two boxes).
    pts4 = np.array([[2, 1, 1, 1], [1, 2, 1, 1]], dtype=float)
    assert hypervolume(pts4, ["max"] * 4, [0, 0, 0, 0]) == pytest.approx(3.0)


def test_hypervolume_reference_rules():
    pts = np.array([[1, 3], [2, 2], [3, 1]], dtype=float)
    # Default reference: the worst observed value per objective, (1, 1): only (2,2) adds a 1x1 box.
    assert hypervolume(pts, ["max", "max"]) == pytest.approx(1.0)
    # A point worse than the reference in one objective adds nothing (and does not raise).
    assert hypervolume(np.vstack([pts, [[10, -1]]]), ["max", "max"], [0, 0]) == pytest.approx(6.0)
    assert hypervolume(np.empty((0, 2)), ["max", "max"], [0, 0]) == 0.0
    assert hypervolume(np.array([[NAN, 1.0]]), ["max", "max"]) == 0.0
    with pytest.raises(ValueError, match="reference must be 2 finite numbers"):
        hypervolume(pts, ["max", "max"], [0, NAN])


def _points() -> pd.DataFrame:
    return pd.DataFrame({
        "status": ["ok", "ok", "ok", "ok", "failed", "ok"],
        "forget_efficacy": [0.95, 0.60, 0.30, 0.50, NAN, 0.20],
        "retain_score": [0.10, 0.50, 0.80, 0.40, NAN, 0.70],
        "utility": [0.20, 0.30, 0.38, 0.35, NAN, NAN],
        "forget/Task1/sc": [0.1, 0.3, 0.5, 0.41, NAN, 0.2],
    })


def test_floors_max_metric_exact_threshold_nan_and_status():
    df = _points()
    base = {"utility": 0.40, "forget/Task1/sc": 0.8}
    # 0.75 * 0.40 = 0.30000000000000004 in floats: 0.30 must still pass.
    assert apply_floors(df, {"utility": 0.75}, base).tolist() == [False, True, True, True, False, False]
    # No floors: only the status filter.
    assert apply_floors(df, {}, base).tolist() == [True, True, True, True, False, True]


def test_floor_on_min_metric_is_a_ceiling():
    df = _points()
    # forget/Task1/sc is "min": feasible when <= 0.5 * 0.8 = 0.4.
    got = apply_floors(df, {"forget/Task1/sc": 0.5}, {"forget/Task1/sc": 0.8}).tolist()
    assert got == [True, True, False, False, False, True]


def test_floor_then_front():
    df = _points()
    feasible = apply_floors(df, {"utility": 0.75}, {"utility": 0.40}).to_numpy()
    values = df[["forget_efficacy", "retain_score", "utility"]].to_numpy()
    # Without the floor row 0 (highest forget efficacy) is on the front; with it, it is excluded, and
    # among rows 1-3, row 3 (0.50, 0.40, 0.35) is dominated by nobody: 1 has less utility, 2 less forgetting.
    assert pareto_mask(values, ["max"] * 3).tolist() == [True, True, True, True, False, False]
    front = np.zeros(len(df), dtype=bool)
    front[feasible] = pareto_mask(values[feasible], ["max"] * 3)
    assert front.tolist() == [False, True, True, True, False, False]
    hv = hypervolume(values[feasible], ["max"] * 3, [0.0, 0.0, 0.3])
    # Boxes above the reference: (0.6*0.5*0) + (0.3*0.8*0.08) + (0.5*0.4*0.05), overlap of the last two:
    # min(0.3,0.5)*min(0.8,0.4)*min(0.08,0.05) = 0.3*0.4*0.05.
    assert hv == pytest.approx(0.3 * 0.8 * 0.08 + 0.5 * 0.4 * 0.05 - 0.3 * 0.4 * 0.05)
    assert math.isfinite(hv)


def test_floor_errors():
    df = _points()
    with pytest.raises(ValueError, match="unknown metric 'utlity'.*valid:"):
        apply_floors(df, {"utlity": 0.75}, {"utility": 0.4})
    with pytest.raises(ValueError, match="needs the base model's 'utility'"):
        apply_floors(df, {"utility": 0.75}, {})
    with pytest.raises(ValueError, match="'mia_score' is not a column"):
        apply_floors(df, {"mia_score": 0.5}, {"mia_score": 0.4})


UTILITIES = [0.20, 0.29999999999, 0.30, 0.3000000001, 0.33, 0.36, 0.40, NAN]


@pytest.mark.parametrize(("floor", "expected"), [
    # 0.75 x 0.40 = 0.30000000000000004; Floor.met's tolerance of 1e-9 lets 0.29999999999 and 0.30 pass.
    (Floor(), [False, True, True, True, True, True, True, False]),
    (Floor(relative=0.9, absolute=None), [False, False, False, False, False, True, True, False]),  # >= 0.36
    (Floor(relative=None, absolute=0.33), [False, False, False, False, True, True, True, False]),
    (Floor(relative=0.5, absolute=0.36), [False, False, False, False, False, True, True, False]),  # max(0.2, 0.36)
    (Floor(relative=None, absolute=None), [True, True, True, True, True, True, True, False]),  # NaN never passes
])
def test_feasibility_is_floor_met(floor, expected):
    """The report's feasibility of a point is exactly Floor.met (the sweep's utility_floor_met), relative or absolute."""
    df = pd.DataFrame({"status": ["ok"] * len(UTILITIES), "utility": UTILITIES})
    got = apply_floors(df, {"utility": floor}, {"utility": 0.40}).tolist()
    assert got == expected
    assert got == [floor.met(None if math.isnan(u) else u, 0.40) is True for u in UTILITIES]


def test_absolute_floor_needs_no_base():
    df = pd.DataFrame({"status": ["ok", "ok", "failed"], "utility": [0.30, 0.40, 0.50]})
    assert apply_floors(df, {"utility": Floor(relative=None, absolute=0.35)}, {}).tolist() == [False, True, False]


def test_parse_floors():
    assert parse_floors(None) is None
    assert parse_floors([]) == Floors()
    assert parse_floors([("utility", "0.75")]) == Floors(Floor(relative=0.75, absolute=None))
    assert parse_floors([("utility.absolute", "0.371")]) == Floors(Floor(relative=None, absolute=0.371))
    both = parse_floors([("utility.relative", "0.5"), ("utility.absolute", "0.371"), ("mia_score", "0.8")])
    assert both == Floors(Floor(relative=0.5, absolute=0.371), {"mia_score": 0.8})
    with pytest.raises(ValueError, match="not a number"):
        parse_floors([("utility", "high")])
    with pytest.raises(ValueError, match="unknown metric 'utlity'"):
        parse_floors([("utlity", "0.75")])
    with pytest.raises(ValueError, match="only utility has relative/absolute parts"):
        parse_floors([("mia_score.absolute", "0.5")])
