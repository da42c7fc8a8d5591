"""Early stopping (multi-objective successive halving): the ordering by hand, the asynchronous rule, a real Tune
run on the local cluster stopping a dominated trial at its rung, and the decisions kept across a resume."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from lume_ray.config import experiment_from_dict
from lume_ray.run_dir import RunDir
from lume_ray.search.scheduler import ParetoSuccessiveHalving, keep_order


def experiment(tmp_path: Path, keep: float = 0.5, keep_front: bool = False) -> Any:
    return experiment_from_dict({
        "name": "es-test", "output_dir": str(tmp_path / "run"),
        "sweep": {"objectives": ["forget_efficacy", "retain_score"],
                  "early_stop": {"rungs": [10, 20], "keep": keep, "keep_front": keep_front}},
        "algorithms": {"ga": {"lr": {"loguniform": [1e-4, 1e-1]}, "steps": {"max": 30}}},
    })


def test_keep_order_is_pareto_rank_then_hypervolume_contribution() -> None:
    # (forget, retain), both maximized: a and b are the front, c is dominated by b, d by everyone.
    values = np.array([[0.9, 0.2],   # a: front, extreme point
                       [0.6, 0.7],   # b: front, the larger contribution (it fills the middle)
                       [0.5, 0.6],   # c: rank 1
                       [0.1, 0.1]])  # d: rank 2
    order = list(keep_order(values, ["max", "max"]))
    assert order[2:] == [2, 3]
    # Reference: worst - 10% of the range = (0.02, 0.04). Exclusive contributions within the front:
    # a: (0.9 - 0.6) * (0.2 - 0.04) = 0.048; b: (0.6 - 0.02) * (0.7 - 0.2) = 0.29.
    assert order[:2] == [1, 0]
    assert list(keep_order(np.array([[0.5, 0.5], [np.nan, 0.9]]), ["max", "max"])) == [0, 1]  # NaN last


@pytest.mark.parametrize(("pipelined", "gpus", "expected"), [
    ("auto", 0, False), ("auto", 1, True), (True, 0, True), (False, 1, False)])
def test_pipelined_auto_follows_the_jobs_hardware(tmp_path: Path, pipelined: Any, gpus: int, expected: bool) -> None:
    # auto: the job waits at each rung on CPU (scoring a point outlasts training to the next rung), pipelined on GPUs
    exp = experiment_from_dict({
        "name": "es-test", "output_dir": str(tmp_path / "run"), "train": {"gpus_per_worker": gpus},
        "sweep": {"early_stop": {"rungs": [10], "pipelined": pipelined}},
        "algorithms": {"ga": {"lr": 1e-3, "steps": {"max": 30}}},
    })
    assert exp.sweep.early_stop.resolved_pipelined(exp.train) is expected
    assert ("trains on" in ParetoSuccessiveHalving(exp, str(tmp_path / "run")).debug_string()) is expected


def test_pipelined_rejects_other_words(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="pipelined"):
        experiment_from_dict({"name": "x", "output_dir": str(tmp_path), "sweep": {"early_stop": {
            "rungs": [10], "pipelined": "sometimes"}}, "algorithms": {"ga": {"lr": 1e-3, "steps": {"max": 30}}}})


def _early_stop(tmp_path: Path, early_stop: dict[str, Any], longest: int = 850) -> Any:
    return experiment_from_dict({
        "name": "es-test", "output_dir": str(tmp_path / "run"), "sweep": {"early_stop": early_stop},
        "algorithms": {"ga": {"lr": 1e-3, "steps": {"max": longest}}, "gd": {"lr": 1e-3, "steps": {"max": 100}}},
    })


@pytest.mark.parametrize(("given", "rungs", "keep"), [
    ({"grace_period": 85, "reduction_factor": 3}, (85, 255, 765), 1 / 3),  # ASHA's ladder below the longest (850)
    ({"grace_period": 85, "keep": "1/3"}, (85, 255, 765), 1 / 3),           # the same from the kept fraction
    ({"grace_period": 100, "reduction_factor": 2}, (100, 200, 400, 800), 0.5),
    ({"grace_period": 2, "reduction_factor": 2.5}, (2, 5, 13, 31, 78, 195, 488), 0.4),  # rounded half up (12.5: 13)
    ({"rungs": [85, 255], "reduction_factor": 4}, (85, 255), 0.25),           # a factor instead of a fraction
    ({"rungs": [85, 255], "keep": 0.25, "reduction_factor": 4}, (85, 255), 0.25),  # both, agreeing
])
def test_rungs_and_fraction_from_asha_names(tmp_path: Path, given: dict[str, Any], rungs: tuple[int, ...],
                                            keep: float) -> None:
    exp = _early_stop(tmp_path, given)
    es = exp.sweep.early_stop
    assert es.rungs == rungs and es.keep == pytest.approx(keep)
    again = experiment_from_dict(exp.dump())  # RUN_DIR/experiment.yaml holds the resolved rungs: loads the same
    assert again.sweep.early_stop == es and set(rungs) <= set(again.eval_steps("ga"))  # every rung is evaluated
    assert f"rungs {list(rungs)}" in ParetoSuccessiveHalving(exp, str(tmp_path / "run")).debug_string()
    assert exp.dump()["sweep"]["early_stop"]["reduction_factor"] is None  # one way to say it: keep


def test_a_ladder_is_resolved_per_experiment_not_in_the_given_config(tmp_path: Path) -> None:
    """One EarlyStopConfig (Python API) in two experiments of different lengths: each gets its own ladder."""
    from lume_ray.config import EarlyStopConfig, Experiment, SweepConfig

    sweep = SweepConfig(early_stop=EarlyStopConfig(grace_period=10, reduction_factor=2))
    short, long = (Experiment(name=f"n{m}", output_dir=str(tmp_path / f"r{m}"), sweep=sweep,
                              algorithms={"ga": {"lr": 1e-3, "steps": {"max": m}}}) for m in (50, 500))
    assert short.sweep.early_stop.rungs == (10, 20, 40)
    assert long.sweep.early_stop.rungs == (10, 20, 40, 80, 160, 320)
    assert sweep.early_stop.rungs == () and sweep.early_stop.grace_period == 10


@pytest.mark.parametrize(("given", "key", "words"), [
    ({"keep": 0.5}, "sweep.early_stop.rungs", "grace_period"),
    ({"rungs": [10], "grace_period": 5}, "sweep.early_stop.grace_period", "not both"),
    ({"rungs": [10], "keep": 0.5, "reduction_factor": 3}, "sweep.early_stop.keep", "disagrees with reduction_factor 3"),
    ({"grace_period": 850}, "sweep.early_stop.grace_period", "largest max: 850"),
    ({"grace_period": 10, "keep": 1}, "sweep.early_stop.keep", "no next rung"),
    ({"rungs": [10], "reduction_factor": 1}, "sweep.early_stop.reduction_factor", "greater than 1"),
    ({"grace_period": 10, "reduction_factor": 1.000001}, "sweep.early_stop", "more than 16 rungs below 850"),
])
def test_early_stop_settings_that_cannot_work_name_their_key(tmp_path: Path, given: dict[str, Any], key: str,
                                                             words: str) -> None:
    from lume_ray.config import ConfigError

    with pytest.raises(ConfigError) as err:
        _early_stop(tmp_path, given)
    assert key in str(err.value) and words in str(err.value) and len(str(err.value).splitlines()) == 1


def test_asynchronous_rule(tmp_path: Path) -> None:
    s = ParetoSuccessiveHalving(experiment(tmp_path, keep=0.5), str(tmp_path / "run"))
    assert s.supports_buffered_results is False  # Tune hands over every point as it comes, none batched
    assert s.decide("ga", 10, "t1", [0.5, 0.5])[0::2] == (True, True)  # the first continues, provisionally
    keep, reason, provisional = s.decide("ga", 10, "t2", [0.4, 0.4])  # dominated: 2 points, 1 kept
    assert not keep and not provisional and "position 2 of 2" in reason and "keeping 1" in reason
    assert s.decide("ga", 10, "t3", [0.9, 0.1])[0] is False  # 3 points, keeps 1: t1 has the larger contribution
    assert s.decide("ga", 10, "t4", [0.95, 0.95])[0]  # dominates everyone
    assert s.decide("ga", 20, "t5", [0.0, 0.0])[0]  # another rung: its own table


def test_a_provisional_continue_is_judged_again_once_the_rung_has_enough_points(tmp_path: Path) -> None:
    # keep a third: a rung needs 3 points before its verdicts are final. t1 arrives first and weak, so it
    # continues only provisionally; at its next point (step 20) the rung holds 3 points and t1 is the worst.
    s = ParetoSuccessiveHalving(experiment(tmp_path, keep=1 / 3), str(tmp_path / "run"))
    rd = RunDir(tmp_path / "run")
    assert s.verdict("ga", 10, "t1", [0.2, 0.2])
    assert s.judged_again("ga", 15, "t1")  # still alone at rung 10: nothing to judge it against
    assert s.verdict("ga", 10, "t2", [0.9, 0.9])  # better than t1: provisional too (2 points)
    assert s.verdict("ga", 10, "t3", [0.8, 0.85]) is False  # 3 points, 1 kept: t2; a stop is final at once
    first = json.loads((rd.trial("t1") / "rungs.json").read_text())["10"]
    assert first["decision"] == "continue" and first["provisional"] and "provisional" in first["reason"]
    # Held at each rung (not pipelined), t1 is judged again at its next rung, not at a point between rungs.
    assert s.on_trial_result(None, SimpleNamespace(trial_id="t1", config={"algorithm": "ga"}),
                             {"step": 15, "status": "ok", "forget_efficacy": 0.1, "retain_score": 0.1}) == "CONTINUE"
    assert json.loads((rd.trial("t1") / "rungs.json").read_text())["10"]["provisional"]
    assert s.judged_again("ga", 20, "t1") is False
    decision = json.loads((rd.trial("t1") / "rungs.json").read_text())["10"]
    assert decision["decision"] == "stop" and not decision["provisional"]
    assert "position 3 of 3" in decision["reason"] and "judged again at step 20" in decision["reason"]
    record = rd.read_trial("t1")
    assert record is not None and record["status"] == "stopped" and record["stopped_at"] == 20
    assert record["trained_steps"] == 20  # the results take the larger of this and the steps the job logged
    assert s.judged_again("ga", 20, "t2")  # the best of the 3: its verdict at rung 10 is now final
    assert json.loads((rd.trial("t2") / "rungs.json").read_text())["10"]["provisional"] is False
    # After a driver interrupt the final verdicts stand, whatever the table now says.
    again = ParetoSuccessiveHalving(experiment(tmp_path, keep=1 / 3), str(tmp_path / "run"))
    again.seen[("ga", 10)] = {"t2": [0.0, 0.0], "t4": [1.0, 1.0], "t5": [0.9, 0.9]}
    assert again.judged_again("ga", 25, "t2")


def test_pipelined_a_provisional_continue_is_judged_again_at_any_later_point(tmp_path: Path) -> None:
    # pipelined, the job never waits: a stop between rungs saves the steps after it, so every point is a chance
    exp = experiment_from_dict({
        "name": "es-test", "output_dir": str(tmp_path / "run"),
        "sweep": {"objectives": ["forget_efficacy", "retain_score"],
                  "early_stop": {"rungs": [10, 20], "keep": 1 / 3, "keep_front": False, "pipelined": True}},
        "algorithms": {"ga": {"lr": {"loguniform": [1e-4, 1e-1]}, "steps": {"max": 30}}},
    })
    s = ParetoSuccessiveHalving(exp, str(tmp_path / "run"))
    assert s.verdict("ga", 10, "t1", [0.2, 0.2])  # provisional
    assert s.verdict("ga", 10, "t2", [0.9, 0.9]) and s.verdict("ga", 10, "t3", [0.8, 0.85]) is False
    trial = SimpleNamespace(trial_id="t1", config={"algorithm": "ga"})
    point = {"step": 15, "status": "ok", "forget_efficacy": 0.1, "retain_score": 0.1}
    assert s.on_trial_result(None, trial, point) == "STOP"  # at step 15, between the rungs
    record = RunDir(tmp_path / "run").read_trial("t1")
    assert record is not None and record["stopped_at"] == 15 and "judged again at step 15" in record["error"]


def test_keep_front_keeps_every_point_on_the_rungs_front(tmp_path: Path) -> None:
    plain = ParetoSuccessiveHalving(experiment(tmp_path), str(tmp_path / "run"))
    front = ParetoSuccessiveHalving(experiment(tmp_path, keep_front=True), str(tmp_path / "run"))
    assert "front" in front.debug_string() and "front" not in plain.debug_string()
    for s in (plain, front):
        assert s.decide("ga", 10, "t1", [0.5, 0.5])[0]
        assert s.decide("ga", 10, "t2", [0.4, 0.4])[0] is False  # dominated: stopped under either rule
    # t3 trades retain for forgetting: on the front with t1, but not the 1 point of 3 kept by contribution
    assert plain.decide("ga", 10, "t3", [0.9, 0.1])[0] is False
    keep, reason, _ = front.decide("ga", 10, "t3", [0.9, 0.1])
    assert keep and "position 2 of 3" in reason and "keeping 2" in reason


def toy_trial(config: dict[str, Any]) -> None:
    """Three points (steps 10, 20, 30); quality falls with lr, so a larger lr is dominated at every rung."""
    from ray import tune

    quality = {1e-4: 0.9, 1e-2: 0.3}[config["lr"]]
    for step in (10, 20, 30):
        tune.report({"step": step, "status": "ok", "forget_efficacy": quality * step / 30,
                     "retain_score": quality})


@pytest.mark.ray
def test_a_dominated_trial_is_stopped_at_its_first_rung(tmp_path: Path, ray_local: Any) -> None:
    from ray import tune

    exp = experiment(tmp_path)
    rd = RunDir(tmp_path / "run")
    scheduler = ParetoSuccessiveHalving(exp, str(rd.root))
    tuner = tune.Tuner(
        tune.with_resources(toy_trial, {"cpu": 0.25}),
        param_space={"algorithm": "ga", "lr": tune.grid_search([1e-4, 1e-2])},
        tune_config=tune.TuneConfig(scheduler=scheduler, max_concurrent_trials=1),
        run_config=tune.RunConfig(name="es", storage_path=str(tmp_path / "tune"), verbose=0),
    )
    results = {r.config["lr"]: r for r in tuner.fit()}
    assert results[1e-4].metrics["step"] == 30  # non-dominated: runs to its end
    assert results[1e-2].metrics["step"] == 10  # dominated at rung 10: stopped there
    stopped = results[1e-2].metrics["trial_id"]
    record = rd.read_trial(stopped)
    assert record is not None and record["status"] == "stopped" and record["stopped_at"] == 10
    assert "stopped at rung 10: position 2 of 2" in record["error"]
    decisions = json.loads((rd.trial(stopped) / "rungs.json").read_text())
    assert decisions["10"]["decision"] == "stop"
    kept = json.loads((rd.trial(results[1e-4].metrics["trial_id"]) / "rungs.json").read_text())
    assert kept["10"]["decision"] == "continue" and kept["20"]["decision"] == "continue"

    # After a driver interrupt, a new scheduler on the same run dir gives the same verdicts at the same rungs,
    # even where its own table would now decide otherwise (the stopped trial's point now the best one).
    again = ParetoSuccessiveHalving(exp, str(rd.root))
    assert again.verdict("ga", 10, stopped, [0.99, 0.99]) is False
    assert again.verdict("ga", 10, results[1e-4].metrics["trial_id"], [0.0, 0.0]) is True
