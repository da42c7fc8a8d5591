"""Experiment YAML: every shipped file loads; typos fail at load with the valid choices."""

from __future__ import annotations

from pathlib import Path

import pytest

from lume_ray.experiment import ConfigError, load_experiment

EXPERIMENTS = sorted((Path(__file__).resolve().parents[1] / "experiments").glob("*.yaml"))


def test_experiments_exist() -> None:
    names = {p.stem for p in EXPERIMENTS}
    assert {"quickstart", "lume-1b", "lume-7b"} <= names


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_every_experiment_loads(path: Path) -> None:
    from lume_ray.algorithms import ALGORITHMS

    exp = load_experiment(path)
    assert exp.algorithms and set(exp.algorithms) <= set(ALGORITHMS)
    for space in exp.algorithms.values():
        assert {"lr", "steps"} <= set(space)
    assert exp.train.batch_size % exp.train.workers == 0


def test_quickstart_covers_every_algorithm() -> None:
    from lume_ray.algorithms import ALGORITHMS

    exp = load_experiment(EXPERIMENTS[[p.stem for p in EXPERIMENTS].index("quickstart")])
    assert set(exp.algorithms) == set(ALGORITHMS)


def test_real_model_experiments_use_literature_ranges() -> None:
    for name in ("lume-1b", "lume-7b"):
        exp = load_experiment(EXPERIMENTS[[p.stem for p in EXPERIMENTS].index(name)])
        assert exp.algorithms["npo"]["lr"].values == (5e-6, 1e-4)
        assert exp.algorithms["npo"]["beta"].values == (0.05, 1.0)
        assert exp.algorithms["gd"]["alpha"].values == (0.1, 10.0)
        assert exp.train.gpus_per_worker == 1
    assert load_experiment(EXPERIMENTS[[p.stem for p in EXPERIMENTS].index("lume-7b")]).train.zero == 3


QUICK = EXPERIMENTS[[p.stem for p in EXPERIMENTS].index("quickstart")] if EXPERIMENTS else None


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (("sweep.num_sample", "3"), r"sweep: unknown key 'num_sample' \(valid: search, sampler, num_samples"),
        (("trian.workers", "2"), r"unknown key 'trian' \(valid: name, seed, data"),
        (("algorithms.npo.betta", "{uniform: [0.1, 1]}"), r"algorithms\.npo: unknown parameter 'betta' \(valid: lr, steps"),
        (("algorithms.foo", "{lr: 1, steps: 2}"), r"unknown algorithm 'foo' \(valid: "),
        (("sweep.search", "bayes"), r"sweep\.search: 'bayes' is not one of optuna, random, grid"),
        (("sweep.objectives", "[forget_efficacy, mia_auc]"), r"recorded only, not an objective"),
        (("sweep.objectives", "[accuracy]"), r"unknown metric 'accuracy'"),
        (("train.zero", "1"), r"train\.zero: 1 is not one of 0, 2, 3"),
        (("algorithms.ga.lr", "{loguniform: [0, 1]}"), r"bounds must be > 0"),
        (("train.workers", "two"), r"train\.workers: expected int"),
        (("sweep.algorithms", "[ga, xyz]"), r"'xyz' has no search space here"),
    ],
)
def test_bad_experiments_fail_at_load(override: tuple[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_experiment(QUICK, [override])


def test_overrides_and_output_dir_placeholder() -> None:
    from lume_ray.sweep import resolve

    exp = load_experiment(QUICK, [("output_dir", "/tmp/x"), ("sweep.num_samples", "7"), ("sweep.algorithms", "[ga]")])
    assert exp.sweep.num_samples == 7 and exp.selected_algorithms() == ["ga"]
    assert resolve(exp, exp.data.path) == "/tmp/x/data"


def test_grid_requires_values(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"grid search needs 'grid: \[\.\.\.\]' values"):
        load_experiment(QUICK, [("sweep.search", "grid"), ("algorithms.ga.lr", "{loguniform: [1e-4, 1e-3]}")])
    exp = load_experiment(QUICK, [("sweep.search", "grid")])
    from lume_ray.sweep import grid_size

    assert grid_size(exp.algorithms["ga"]) == 3 * 2


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="experiment file not found"):
        load_experiment(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_experiment(bad)
