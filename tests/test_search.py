"""The searcher: initial design, every evaluated point told to a real Optuna study through a real Tune run,
warm start, resume state, and the boundary warning.

The Tune run here uses a toy trainable (no training): it reports K evaluation points per trial with objectives
computed from the config, which is what the real trial reports (tests/test_sweep.py runs the real thing).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import optuna
import pytest

from lume_ray.config import AlgorithmSpace, experiment_from_dict
from lume_ray.search import space as sp
from lume_ray.search.searcher import ROLE_POINT, ROLE_PROPOSAL, StudySearcher

optuna.logging.set_verbosity(optuna.logging.WARNING)


def experiment(tmp_path: Path, **sweep: Any) -> Any:
    return experiment_from_dict({
        "name": "search-test", "output_dir": str(tmp_path / "run"),
        "sweep": {"sampler": "gp", "num_samples": 4, "eval_points": 3,
                  "objectives": ["forget_efficacy", "retain_score"], **sweep},
        "algorithms": {
            "ga": {"lr": {"loguniform": [1e-4, 1e-2]}, "steps": {"max": 30}},
            "gd": {"lr": {"loguniform": [1e-4, 1e-2]}, "steps": {"max": 30}, "alpha": {"loguniform": [1.0, 4.0]}},
        },
    })


def gd_space() -> AlgorithmSpace:
    return AlgorithmSpace(lr={"loguniform": [1e-4, 1e-2]}, steps={"max": 30}, params={"alpha": {"loguniform": [1.0, 4.0]}})


# -- initial design -------------------------------------------------------------------------------


def test_initial_design_is_the_corners_and_the_centre_in_log_space() -> None:
    space = gd_space()
    assert sp.design_size(2, budget=20) == 5
    points = sp.initial_design(space, 5)
    corners = {(lr, a) for lr in (1e-4, 1e-2) for a in (1.0, 4.0)}
    assert {(p["lr"], p["alpha"]) for p in points[:4]} == corners
    # the first point is the aggressive corner: largest lr, every other parameter at its low end
    assert (points[0]["lr"], points[0]["alpha"]) == (1e-2, 1.0)
    # then the opposite corner (greedy maximin)
    assert (points[1]["lr"], points[1]["alpha"]) == (1e-4, 4.0)
    centre = points[4]
    assert centre["lr"] == pytest.approx(1e-3) and centre["alpha"] == pytest.approx(2.0)  # geometric means


def test_an_inset_design_puts_the_corners_inside_the_box_and_keeps_the_centre() -> None:
    space = gd_space()  # lr 1e-4..1e-2 (log), alpha 1..4 (log)
    points = sp.initial_design(space, 5, inset=0.25)
    lrs, alphas = sorted({p["lr"] for p in points[:4]}), sorted({p["alpha"] for p in points[:4]})
    assert lrs == pytest.approx([10 ** -3.5, 10 ** -2.5])  # a quarter of the log range in from each end
    assert alphas == pytest.approx([4 ** 0.25, 4 ** 0.75])
    assert (points[0]["lr"], points[0]["alpha"]) == pytest.approx((10 ** -2.5, 4 ** 0.25))  # the same order
    assert (points[4]["lr"], points[4]["alpha"]) == pytest.approx((1e-3, 2.0))
    with pytest.raises(ValueError, match="initial_design_inset"):
        sp.initial_design(space, 5, inset=0.5)


def test_design_size_follows_the_budget() -> None:
    assert sp.design_size(2, budget=4) == 2  # half the budget: the two opposite corners
    assert sp.design_size(3, budget=30) == 9  # 2^3 corners + centre
    assert sp.design_size(3, budget=10) == 5
    assert sp.design_size(2, budget=20, setting="off") == 0
    assert sp.design_size(0, budget=20) == 0


def test_searcher_enqueues_the_design_before_the_sampler(tmp_path: Path) -> None:
    searcher = StudySearcher(experiment(tmp_path, num_samples=6))
    configs = [searcher.suggest(f"t{i}") for i in range(8)]
    gd = [c for c in configs if c["algorithm"] == "gd"]
    assert [c["origin"] for c in gd][:3] == ["design"] * 3  # 6 trials -> a design of 3 (half the budget)
    assert (gd[0]["lr"], gd[0]["alpha"]) == (1e-2, 1.0)
    # trials alternate between the algorithms: neither waits for the other
    assert [c["algorithm"] for c in configs[:4]] == ["ga", "gd", "ga", "gd"]


# -- every point is an observation ----------------------------------------------------------------


def toy_trial(config: dict[str, Any]) -> None:
    """Reports 3 points (steps 10, 20, 30): forgetting grows with lr x step, retain falls with it."""
    from ray import tune

    lr, alpha = config["lr"], config.get("alpha", 1.0)
    for step in (10, 20, 30):
        push = math.log10(lr * 1e4) * step / 30  # 0..2
        tune.report({"step": step, "status": "ok", "forget_efficacy": min(1.0, push / 2),
                     "retain_score": max(0.0, 1.0 - push / (2 * alpha))})


@pytest.mark.ray
def test_a_tune_run_tells_every_evaluated_point(tmp_path: Path, ray_local: Any) -> None:
    from ray import tune

    exp = experiment(tmp_path, num_samples=3)
    searcher = StudySearcher(exp)
    tuner = tune.Tuner(
        tune.with_resources(toy_trial, {"cpu": 0.25}),
        tune_config=tune.TuneConfig(search_alg=searcher, num_samples=searcher.total_trials(),
                                    max_concurrent_trials=2),
        run_config=tune.RunConfig(name="toy", storage_path=str(tmp_path / "tune"), verbose=0),
    )
    grid = tuner.fit()
    assert len(grid) == 6 and not grid.errors
    # Tune drives a copy of the searcher: read the studies back from its saved state.
    restored = StudySearcher(exp)
    restored.restore_from_dir(str(tmp_path / "tune" / "toy"))
    for algo in ("ga", "gd"):
        study = restored.studies[algo]
        points = [t for t in study.trials if t.user_attrs.get("role") == ROLE_POINT]
        proposals = [t for t in study.trials if t.user_attrs.get("role") == ROLE_PROPOSAL]
        assert len(proposals) == 3
        assert all(t.state == optuna.trial.TrialState.FAIL for t in proposals)
        assert len(points) == 3 * 3, f"{algo}: every trial's 3 points are observations"
        assert sorted({t.params["steps"] for t in points}) == [10, 20, 30]
        for t in points:
            push = math.log10(t.params["lr"] * 1e4) * t.params["steps"] / 30
            assert t.values[0] == pytest.approx(min(1.0, push / 2))


def test_a_point_is_told_once_even_when_reported_again(tmp_path: Path) -> None:
    searcher = StudySearcher(experiment(tmp_path))
    config = searcher.suggest("t0")
    result = {"step": 10, "status": "ok", "forget_efficacy": 0.5, "retain_score": 0.7}
    searcher.on_trial_result("t0", result)
    searcher.on_trial_result("t0", result)  # a retried trial reports its earlier points again
    searcher.on_trial_result("t0", {**result, "step": 20, "forget_efficacy": float("nan")})  # not an observation
    searcher.on_trial_complete("t0", {**result, "step": 30})
    points = searcher.points(config["algorithm"])
    assert sorted(t.params["steps"] for t in points) == [10, 30]


def test_save_and_restore_keep_the_studies(tmp_path: Path) -> None:
    exp = experiment(tmp_path)
    searcher = StudySearcher(exp)
    searcher.suggest("t0")
    searcher.on_trial_result("t0", {"step": 10, "forget_efficacy": 0.4, "retain_score": 0.9})
    searcher.save(str(tmp_path / "state.pkl"))
    other = StudySearcher(exp)
    other.restore(str(tmp_path / "state.pkl"))
    assert len(other.points("ga")) == 1 and other.started == searcher.started
    assert other.suggest("t0")["algorithm"] == "ga"  # a restored trial gets its config back


# -- warm start -----------------------------------------------------------------------------------


def test_warm_start_tells_the_earlier_points_inside_the_space(tmp_path: Path) -> None:
    rows = [
        {"algorithm": "gd", "trial_id": "a", "step": 10, "status": "ok", "hp/lr": 1e-3, "hp/alpha": 2.0,
         "forget_efficacy": 0.3, "retain_score": 0.9},
        {"algorithm": "gd", "trial_id": "a", "step": 30, "status": "ok", "hp/lr": 1e-3, "hp/alpha": 2.0,
         "forget_efficacy": 0.6, "retain_score": 0.7},
        {"algorithm": "gd", "trial_id": "b", "step": 30, "status": "ok", "hp/lr": 5e-2, "hp/alpha": 2.0,
         "forget_efficacy": 0.9, "retain_score": 0.1},  # lr outside today's range: skipped
        {"algorithm": "gd", "trial_id": "c", "step": 0, "status": "failed", "hp/lr": 1e-3, "hp/alpha": 2.0},
        {"algorithm": "kl", "trial_id": "d", "step": 10, "status": "ok", "hp/lr": 1e-3, "hp/alpha": 2.0,
         "forget_efficacy": 0.3, "retain_score": 0.9},  # no kl study here
    ]
    searcher = StudySearcher(experiment(tmp_path), warm_start=rows)
    points = searcher.points("gd")
    assert searcher.warm == {"gd": 2}
    assert sorted((t.params["steps"], t.values[0]) for t in points) == [(10, 0.3), (30, 0.6)]
    assert all(t.user_attrs["origin"] == "warm-start" for t in points)
    assert searcher.points("ga") == []


def test_a_warm_start_leaves_out_the_design_points_it_holds(tmp_path: Path) -> None:
    def row(lr: float, alpha: float) -> dict[str, Any]:
        return {"algorithm": "gd", "trial_id": f"{lr}-{alpha}", "step": 30, "status": "ok", "hp/lr": lr,
                "hp/alpha": alpha, "forget_efficacy": 0.6, "retain_score": 0.7}

    cold = StudySearcher(experiment(tmp_path))
    assert cold.design == {"ga": 2, "gd": 2}  # gd: the aggressive corner (1e-2, 1) and the centre (1e-3, 2)
    elsewhere = StudySearcher(experiment(tmp_path), warm_start=[row(3e-4, 1.5)])
    assert elsewhere.design == {"ga": 2, "gd": 2}  # a point the design does not hold
    held = StudySearcher(experiment(tmp_path), warm_start=[row(1e-2, 1.0), row(3e-4, 1.5)])
    assert held.design == {"ga": 2, "gd": 1}  # the corner is held: only the centre runs
    runs = [held.suggest(f"t{i}") for i in range(3)]  # ga's design, then gd's
    gd = [r for r in runs if r["algorithm"] == "gd"][0]
    assert gd["origin"] == "design" and (gd["lr"], gd["alpha"]) == pytest.approx((1e-3, 2.0))


# -- the boundary warning -------------------------------------------------------------------------


def test_boundary_warning_fires_on_a_front_at_the_edge_only() -> None:
    space = gd_space()
    edge = [{"lr": 1e-2, "alpha": 2.0}, {"lr": 0.0099, "alpha": 1.5}, {"lr": 9.9e-3, "alpha": 3.0},
            {"lr": 1e-2, "alpha": 2.5}, {"lr": 1e-3, "alpha": 2.0}]
    warnings = sp.boundary_warnings(space, edge, "gd")
    assert warnings == ["gd: lr at its upper bound (0.01) in 4 of 5 front points: widen the range"]
    inside = [{"lr": 1e-3, "alpha": 2.0}, {"lr": 3e-3, "alpha": 1.5}, {"lr": 5e-4, "alpha": 3.0}]
    assert sp.boundary_warnings(space, inside, "gd") == []
    low = [{"lr": 1e-3, "alpha": 1.0}, {"lr": 3e-3, "alpha": 1.01}]
    assert sp.boundary_warnings(space, low, "gd") == ["gd: alpha at its lower bound (1) in 2 of 2 front points: "
                                                      "widen the range"]


def test_the_grid_sampler_covers_its_grid_and_ends(tmp_path: Path) -> None:
    exp = experiment(tmp_path, sampler="grid")
    searcher = StudySearcher(exp)
    configs = []
    while (config := searcher.suggest(f"t{len(configs)}")) != "FINISHED":
        configs.append(config)
        tid = f"t{len(configs) - 1}"
        searcher.on_trial_complete(tid, {"step": 30, "status": "ok", "forget_efficacy": 0.5, "retain_score": 0.5})
    gd = sorted((c["lr"], c["alpha"]) for c in configs if c["algorithm"] == "gd")
    assert gd == sorted((lr, a) for lr in (1e-4, 1e-3, 1e-2) for a in (1.0, 2.0, 4.0)), gd
    assert len([c for c in configs if c["algorithm"] == "ga"]) == 3
    assert all(c["origin"] == "sampler" for c in configs)  # a grid has no initial design


# -- a repeated proposal --------------------------------------------------------------------------


def test_repeats_is_within_tolerance_in_each_parameters_scale() -> None:
    space = gd_space()
    seen = [{"lr": 1e-2, "alpha": 1.0}]
    assert sp.repeats(space, {"lr": 1e-2, "alpha": 1.0}, seen)
    assert sp.repeats(space, {"lr": 1e-2 * 10 ** -0.02, "alpha": 1.0}, seen)  # 1% of the log range away
    assert not sp.repeats(space, {"lr": 1e-2 * 10 ** -0.2, "alpha": 1.0}, seen)  # 10% away
    assert not sp.repeats(space, {"lr": 1e-2, "alpha": 1.5}, seen)


def test_a_repeated_proposal_runs_the_nearest_setting_not_yet_explored(tmp_path: Path) -> None:
    """A sampler proposal on a setting already handed out (its run would retrace the same trajectory, evaluated at
    the same points) runs another setting instead: at least 0.1 (of each range, log scale) from every setting seen,
    within 0.25 of the proposal, recorded in the study, and the same one for the same seed."""

    def run() -> tuple[list[dict[str, Any]], dict[str, Any], Any]:
        searcher = StudySearcher(experiment(tmp_path, num_samples=6))
        configs = [searcher.suggest(f"t{i}") for i in range(6)]  # ga, gd, ga, gd, ga, gd: the designs
        gd = [c for c in configs if c["algorithm"] == "gd"]
        assert [c["origin"] for c in gd] == ["design"] * 3
        # What GP did on the boundary space: propose a setting it had already seen (the first design point).
        searcher.studies["gd"].enqueue_trial({"lr": gd[0]["lr"], "alpha": gd[0]["alpha"]})
        searcher.suggest("t6")  # ga's turn
        moved = searcher.suggest("t7")
        return gd, moved, searcher.studies["gd"]

    gd, moved, study = run()
    assert moved["algorithm"] == "gd" and moved["origin"] == "sampler"
    space = gd_space()
    params = {"lr": moved["lr"], "alpha": moved["alpha"]}
    assert not sp.repeats(space, params, gd)
    def unit(p: dict[str, Any]) -> list[float]:
        return [sp._position(space.searched()[n], p[n]) or 0.0 for n in ("lr", "alpha")]

    assert all(abs(a - b) <= 0.25 + 1e-9 for a, b in zip(unit(params), unit(gd[0]), strict=True))
    assert min(math.dist(unit(params), unit(g)) for g in gd) >= 0.1 - 1e-9
    ran = study.trials[-1]
    assert ran.params["lr"] == moved["lr"] and ran.user_attrs["moved_from"] == {"lr": gd[0]["lr"], "alpha": gd[0]["alpha"]}
    closed = study.trials[-2]
    assert closed.state == optuna.trial.TrialState.FAIL and closed.user_attrs["role"] == ROLE_PROPOSAL
    assert run()[1] == moved  # seeded


def test_the_steps_dimension_is_the_evaluation_steps_when_evenly_spaced(tmp_path: Path) -> None:
    """A trained trajectory is observed at every steps value a proposal can take, so GP sees nothing left to learn
    there; uneven evaluation steps keep 1..max."""
    space = gd_space()
    even = sp.steps_distribution(space, (10, 20, 30))
    assert (even.low, even.high, even.step) == (10, 30, 10)
    uneven = sp.steps_distribution(space, (5, 30))
    assert (uneven.low, uneven.high, uneven.step) == (1, 30, 1)
    searcher = StudySearcher(experiment(tmp_path))  # 3 evaluation points of 30 steps: 10, 20, 30
    for i in range(8):
        searcher.suggest(f"t{i}")
        searcher.on_trial_complete(f"t{i}", {"step": 30, "status": "ok", "forget_efficacy": 0.1 * i,
                                             "retain_score": 1 - 0.1 * i})
    proposals = [t for t in searcher.studies["gd"].trials if t.user_attrs.get("role") == ROLE_PROPOSAL]
    assert proposals and {t.params["steps"] for t in proposals} <= {10, 20, 30}
