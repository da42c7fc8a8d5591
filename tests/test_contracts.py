"""Contract suites (optuna-style): every registered algorithm, sampler and metric plugs into one parametrized
suite, so registering one gets it tested here for free. The checks themselves are :mod:`lume_ray.testing`'s, the
same ones ``lume-ray check`` runs on a plugin (tests/test_plugins.py).

- algorithm (``lume_ray.algorithms.ALGORITHMS``): a finite scalar loss whose logs carry forget_nll and retain_nll;
  gradients reach the parameters and a step changes them (the reference stays frozen); a few steps raise the
  forget NLL; determinism under a seed; per-sequence normalization (the whole batch's gradient is the mean of its
  halves', what a 2-worker all-reduce computes). The frozen reference model is given ONLY to an algorithm that
  declares ``needs_ref`` (None otherwise, as the training loop does), and such an algorithm must use it: a wrong
  ``needs_ref`` fails;
- sampler (``lume_ray.search.samplers.SAMPLERS``): built from a :class:`SamplerContext`, an Optuna sampler; in a
  real multi-objective study the same seed gives the same first suggestions, inside their distributions; the grid
  sampler covers its grid; a trial early stopping ends at a rung leaves its points as observations of the study;
- metric (``lume_ray.evaluate.metrics.METRICS``): a valid direction and a description; an objective of a sweep
  exactly when it has a direction; computed from a realistic input (numbers finite, the floor a bool) and written
  to an evaluation's metrics.json.

The ``test_recipe_*`` tests follow the README's recipes literally: one decorated function (+ YAML) registers a new
algorithm, sampler or metric, which then runs through the config, the CLI / searcher / evaluation, and this suite,
and is unregistered afterwards.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from lume_ray import testing
from lume_ray.algorithms import ALGORITHMS, validate_params
from lume_ray.config import ConfigError, experiment_from_dict, load_experiment
from lume_ray.evaluate.metrics import METRICS, run_metrics
from lume_ray.search.samplers import SAMPLERS, SamplerContext
from lume_ray.testing import (
    ALGORITHM_CONTRACT,
    METRIC_CONTRACT,
    check_sampler,
    sampler_space,
    sampler_suggestions,
)

QUICK = Path(__file__).resolve().parents[1] / "experiments" / "quickstart.yaml"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# =============================================================================================
# Algorithms.


@pytest.mark.parametrize("check", ALGORITHM_CONTRACT, ids=lambda c: c.__name__.removeprefix("check_"))
@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_algorithm_contract(name: str, check: Callable[[str, dict[str, Any]], None],
                            unlearning_setup: dict[str, Any]) -> None:
    check(name, unlearning_setup)


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_algorithm_declaration(name: str) -> None:
    """Cited, defaults valid, every parameter searchable from an experiment YAML (the declaration is the space's
    vocabulary): a fixed value at its default loads and reaches the job."""
    alg = ALGORITHMS[name]
    assert alg.cite, f"{name}: cite the paper and equation"
    assert validate_params(name) == dict(alg.params)
    raw = yaml.safe_load(QUICK.read_text())
    raw["algorithms"] = {name: {"lr": 1e-3, "steps": 2, **alg.params}}
    exp = experiment_from_dict(raw)
    assert exp.unlearn_job(name, {"lr": 1e-3, **alg.params}, "out").params == dict(alg.params)


# =============================================================================================
# Samplers.

SPACE = sampler_space()
_suggestions = sampler_suggestions


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_sampler_contract_same_seed_same_suggestions(name: str) -> None:
    check_sampler(name, n=6)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_sampler_contract_a_trial_ended_at_a_rung(name: str, tmp_path: Path) -> None:
    """What early stopping does to the searcher, with every sampler: a trial ended at its first rung (Tune then
    calls on_trial_complete with its last result, as for a trial the scheduler stops) has its points told to the
    study as observations and its proposal closed, and the study goes on proposing settings inside the space.
    (The scheduler's side, a real stop at a rung: tests/test_scheduler.py and tests/test_sweep.py.)"""
    import optuna

    from lume_ray.search.searcher import StudySearcher

    exp = experiment_from_dict({
        "name": "contract", "output_dir": str(tmp_path / "run"),
        "sweep": {"sampler": name, "num_samples": 6, "eval_points": 3, "initial_design": 2,
                  "objectives": ["forget_efficacy", "retain_score"],
                  "early_stop": {"rungs": [10], "keep": 0.5, "keep_front": False}},
        "algorithms": {"gd": {"lr": {"loguniform": [1e-4, 1e-2], "grid": [1e-4, 1e-3, 1e-2]}, "steps": {"max": 30},
                              "alpha": {"loguniform": [1.0, 4.0], "grid": [1.0, 2.0]}}},
    })
    searcher = StudySearcher(exp)
    study = searcher.studies["gd"]
    for k in range(6):
        config = searcher.suggest(f"t{k}")
        assert config["algorithm"] == "gd" and 1e-4 <= config["lr"] <= 1e-2 and 1.0 <= config["alpha"] <= 4.0
        stopped = k % 2 == 1  # every other trial is stopped at rung 10; the others train to 30
        for step in (10,) if stopped else (10, 20, 30):
            result = {"step": step, "status": "ok", "forget_efficacy": config["lr"] * 100 * step / 30,
                      "retain_score": 1 - config["lr"] * 50 / config["alpha"]}
            if step != (10 if stopped else 30):
                searcher.on_trial_result(f"t{k}", result)
        searcher.on_trial_complete(f"t{k}", result)  # the last result: Tune's call when a trial ends or is stopped
        proposal = study.trials[searcher.assigned[f"t{k}"].number]
        assert proposal.state == optuna.trial.TrialState.FAIL, (name, k)  # closed: not an observation
    points = searcher.points("gd")
    assert len(points) == 3 * 1 + 3 * 3  # the stopped trials' rung points are observations too
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in points)


def test_grid_sampler_covers_its_grid() -> None:
    import itertools

    from lume_ray.search.space import grid_of, grid_size

    grid = grid_of(SPACE)
    assert grid == {"lr": (1e-4, pytest.approx(1e-3), 1e-2), "beta": (0.1, 0.55, 1.0), "alpha": (1.0, 2.0)}
    seen = _suggestions("grid", seed=0, n=grid_size(SPACE))
    combos = {tuple(p[k] for k in grid) for p in seen}
    assert len(seen) == len(combos) == 18
    assert combos == set(itertools.product(*grid.values()))


# =============================================================================================
# Metrics.


@pytest.fixture(scope="module")
def evaluated_metrics(tiny_model: Any, tiny_lume: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """metrics.json as an evaluation writes it (the in-process reference runner, a random tiny model, every
    input given: non-members, a utility set, a reference utility)."""
    return testing.evaluated_metrics(tiny_model, tiny_lume, tmp_path_factory.mktemp("metrics_json"))


@pytest.mark.parametrize("check", METRIC_CONTRACT, ids=lambda c: c.__name__.removeprefix("check_"))
@pytest.mark.parametrize("name", list(METRICS))
def test_metric_contract(name: str, check: Callable[[str, dict[str, Any]], None],
                         evaluated_metrics: dict[str, Any]) -> None:
    check(name, evaluated_metrics)


# =============================================================================================
# The README recipes, done literally.


@pytest.mark.usefixtures("no_console")
@pytest.mark.usefixtures("no_input_checks")
def test_recipe_add_an_algorithm(unlearning_setup: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    from lume_ray.algorithms import mean_nll, register_algorithm

    # -- the recipe: one decorated function (in lume_ray/algorithms/losses.py) ----------------------
    # Gradient ascent with a weight. Jang et al. 2023, Eq. 1, scaled: L = -scale * NLL(F).
    @register_algorithm("ga_scaled", {"scale": 1.0}, positive=("scale",), cite="Jang et al. 2023, Eq. 1")
    def ga_scaled(model: Any, forget: Any, retain: Any, ref_model: Any, params: Any) -> tuple[torch.Tensor, dict]:
        forget_nll = mean_nll(model, forget)  # (B,)
        with torch.no_grad():
            retain_nll = mean_nll(model, retain)
        loss = -params["scale"] * forget_nll.mean()
        return loss, {"forget_nll": float(forget_nll.detach().mean()), "retain_nll": float(retain_nll.mean())}

    try:
        # -- + YAML: its search space in an experiment ----------------------------------------------
        raw = yaml.safe_load(QUICK.read_text())
        raw["output_dir"] = str(tmp_path / "run")
        raw["algorithms"] = yaml.safe_load("""
            ga_scaled:
              lr: {loguniform: [3.0e-4, 3.0e-3]}
              steps: {max: 20}
              scale: {uniform: [0.5, 2.0]}
        """)
        exp = experiment_from_dict(raw)
        job = exp.unlearn_job("ga_scaled", {"lr": 1e-3, "scale": 2.0}, tmp_path / "job")
        assert (job.algorithm, job.params, job.eval_steps) == ("ga_scaled", {"scale": 2.0}, (10, 20))
        raw["algorithms"]["ga_scaled"]["scale"] = {"uniform": [-1.0, 2.0]}
        with pytest.raises(ConfigError, match=r"algorithms\.ga_scaled\.scale: ga_scaled parameter scale=-1\.0: must be > 0"):
            experiment_from_dict(raw, "exp.yaml")
        # -- the CLI knows it (its --set parameters too), with nothing listed anywhere else ------------
        import lume_ray.train
        from lume_ray.cli import main
        from lume_ray.train import UnlearnResult

        jobs: list[Any] = []
        monkeypatch.setattr(lume_ray.train, "run_unlearning",
                            lambda j: jobs.append(j) or UnlearnResult("completed", "", [], "log", 0.0, j.steps))
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
        assert main(["unlearn", "--model", "m", "--data", "d", "--algorithm", "ga_scaled", "--set", "scale=3",
                     "--out", str(tmp_path / "o")]) == 0
        assert jobs[-1].params == {"scale": 3.0}
        assert main(["unlearn", "--model", "m", "--data", "d", "--algorithm", "ga_scaled", "--set", "beta=1",
                     "--out", str(tmp_path / "o")]) == 2
        assert "unknown parameter 'beta' (valid: scale)" in capsys.readouterr().err
        # -- and the contract suite, as every registered algorithm ------------------------------------
        for check in ALGORITHM_CONTRACT:
            check("ga_scaled", unlearning_setup)
    finally:
        ALGORITHMS.pop("ga_scaled", None)
    assert "ga_scaled" not in ALGORITHMS


def test_recipe_add_a_sampler(tmp_path: Path) -> None:
    from lume_ray.search.samplers import register_sampler

    # -- the recipe: one decorated function (in lume_ray/search/samplers.py) -------------------------
    @register_sampler("qmc")
    def qmc(ctx: SamplerContext) -> Any:
        """Optuna's quasi-Monte Carlo sampler (scrambled Sobol), seeded."""
        import warnings

        import optuna

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.QMCSampler(seed=ctx.seed, scramble=True, warn_independent_sampling=False)

    try:
        # -- + YAML: sweep.sampler names it (or `lume-ray sweep EXP --sampler qmc`) --------------------
        exp = load_experiment(QUICK, [("sweep.sampler", "qmc"), ("output_dir", str(tmp_path / "run"))])
        assert exp.sweep.sampler == "qmc"
        from lume_ray.search.searcher import StudySearcher

        searcher = StudySearcher(exp)
        configs = [searcher.suggest(f"t{i}") for i in range(len(exp.algorithms) * exp.sweep.num_samples)]
        assert all(c and c["algorithm"] in exp.algorithms and c["lr"] > 0 for c in configs)
        assert {c["algorithm"] for c in configs} == set(exp.algorithms)
        # -- and the contract suite, as every registered sampler --------------------------------------
        first = _suggestions("qmc", seed=7, n=6)
        assert first == _suggestions("qmc", seed=7, n=6) and first != _suggestions("qmc", seed=8, n=6)
    finally:
        SAMPLERS.pop("qmc", None)
    with pytest.raises(ConfigError, match=rf"unknown sampler 'qmc' \(valid: {re.escape(SAMPLERS.choices())}\)"):
        load_experiment(QUICK, [("sweep.sampler", "qmc")])


def test_recipe_add_a_metric(tiny_model: Path, tiny_lume: Path, tmp_path: Path) -> None:
    import json

    from lume_ray.config import EvalConfig
    from lume_ray.evaluate.metrics import MetricInputs, register_metric
    from lume_ray.evaluate.runner import evaluate_reference, summary_lines

    # -- the recipe: one decorated function (in lume_ray/evaluate/metrics.py) ------------------------
    @register_metric("qa_gap", "max", "retain minus forget exact match on qa rows (knowledge kept vs forgotten)")
    def _qa_gap(inp: MetricInputs, done: dict[str, Any]) -> float | None:
        def mean(split: str) -> float | None:
            scores = [float(r["score"]) for r in inp.rows if r["split"] == split and r["kind"] == "qa"]
            return sum(scores) / len(scores) if scores else None

        forget, retain = mean("forget"), mean("retain")
        return None if forget is None or retain is None else retain - forget

    try:
        # -- computed with every other metric, written to metrics.json, shown in the summary -----------
        rows = [{"split": s, "task": "Task1", "kind": "qa", "score": v, "nll": 1.0}
                for s, v in (("forget", 0.0), ("forget", 1.0), ("retain", 1.0))]
        assert run_metrics(MetricInputs(rows=rows))["qa_gap"] == 0.5
        result = evaluate_reference(tiny_model, tiny_lume, EvalConfig(max_new_tokens=4), out_dir=tmp_path / "eval")
        written = json.loads((tmp_path / "eval" / "metrics.json").read_text())
        assert "qa_gap" in written and written["qa_gap"] == result["qa_gap"] and isinstance(result["qa_gap"], float)
        assert any(line.startswith("qa_gap ") for line in summary_lines(result))
        # -- + YAML: an objective of a sweep, its direction from the registry -------------------------
        exp = load_experiment(QUICK, [("sweep.objectives", "[forget_efficacy, qa_gap]")])
        assert exp.sweep.objectives == ("forget_efficacy", "qa_gap")
        for check in METRIC_CONTRACT:  # and the contract suite, as every registered metric
            check("qa_gap", written)
    finally:
        METRICS.pop("qa_gap", None)
    with pytest.raises(ConfigError, match="unknown metric 'qa_gap'"):
        load_experiment(QUICK, [("sweep.objectives", "[qa_gap]")])
