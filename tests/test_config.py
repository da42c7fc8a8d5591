"""The config model: every shipped experiment loads; every bad input is one line at load, through the real CLI,
with exit status 2 and nothing written; nothing that passed the check fails later as a config error.
"""

from __future__ import annotations

import itertools
import math
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from lume_ray.cli import main
from lume_ray.config import ConfigError, Experiment, UnlearnJob, load_experiment, validate
from lume_ray.search.samplers import SAMPLERS

VALID_SAMPLERS = re.escape(SAMPLERS.choices())  # "gp, tpe, ...": every registered sampler, in the registry's order

EXPERIMENTS_DIR = Path(__file__).resolve().parents[1] / "experiments"
EXPERIMENTS = sorted(EXPERIMENTS_DIR.glob("*.yaml"))
QUICK = EXPERIMENTS_DIR / "quickstart.yaml"


def _experiment(name: str) -> Experiment:
    return load_experiment(EXPERIMENTS_DIR / f"{name}.yaml")


# -- every shipped YAML ---------------------------------------------------------------------------


def test_experiments_exist() -> None:
    assert {"quickstart", "lume-1b", "lume-7b"} <= {p.stem for p in EXPERIMENTS}


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_every_experiment_loads(path: Path) -> None:
    from lume_ray.algorithms import ALGORITHMS

    exp = load_experiment(path)
    assert exp.algorithms and set(exp.algorithms) <= set(ALGORITHMS)
    for algo, space in exp.algorithms.items():
        assert space.lr.concrete_values() and space.steps.max >= 1
        assert exp.eval_steps(algo)[-1] == space.steps.max
    assert exp.train.batch_size % exp.train.workers == 0
    assert exp.output_dir and exp.name == path.stem
    # The resolved experiment (RUN_DIR/experiment.yaml) loads back to the same experiment.
    assert Experiment.model_validate(exp.dump()) == exp


def test_quickstart_covers_every_algorithm() -> None:
    from lume_ray.algorithms import ALGORITHMS

    assert set(_experiment("quickstart").algorithms) == set(ALGORITHMS)


def test_real_model_experiments_use_literature_ranges() -> None:
    for name in ("lume-1b", "lume-7b"):
        exp = _experiment(name)
        assert exp.algorithms["npo"].lr.values == (5e-6, 1e-4)
        assert exp.algorithms["npo"].params["beta"].values == (0.05, 1.0)
        assert exp.algorithms["gd"].params["alpha"].values == (0.1, 10.0)
        assert exp.train.gpus_per_worker == 1
    assert _experiment("lume-7b").train.zero == 3
    assert _experiment("lume-7b").eval.utility_floor.absolute == 0.371
    seven = _experiment("lume-7b")  # early stopping at 1 and 3 epochs, scored while the GPU job trains on
    assert seven.sweep.early_stop is not None and seven.sweep.early_stop.resolved_pipelined(seven.train)
    assert {85, 255} <= set(seven.eval_steps("npo"))


def _concrete_hps(exp: Experiment, algo: str) -> list[dict[str, Any]]:
    """Hyperparameters a trial of ``algo`` can be handed: every range end, option, grid value, the grid sampler's
    values and the middle of each range, one parameter varied at a time, plus all lows and all highs."""
    searched = exp.algorithms[algo].searched()
    values: dict[str, list[Any]] = {}
    for name, spec in searched.items():
        vals = list(spec.concrete_values()) + list(spec.grid_values())
        if spec.kind in ("uniform", "loguniform", "int"):
            lo, hi = spec.values
            mid = math.sqrt(lo * hi) if spec.kind == "loguniform" else (lo + hi) / 2
            vals.append(int(mid) if spec.kind == "int" else mid)
        values[name] = vals
    base = {name: vals[0] for name, vals in values.items()}
    hps = [base, {name: vals[-1] for name, vals in values.items()}]
    for name, vals in values.items():
        hps += [{**base, name: v} for v in vals]
    return hps


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_nothing_that_passed_the_check_fails_later(path: Path, tmp_path: Path) -> None:
    """Every algorithm of every shipped experiment: each concrete hyperparameter value builds its UnlearnJob, its
    DeepSpeed config and its LoRA config; the sampler and its distributions build too."""
    from lume_ray.search.samplers import SamplerContext, make_sampler
    from lume_ray.search.space import distributions, grid_of
    from lume_ray.train.ds_config import load_ds_config

    exp = load_experiment(path)
    for algo in exp.selected_algorithms():
        space = exp.algorithms[algo]
        hps = _concrete_hps(exp, algo)
        assert hps
        for hp, steps in itertools.product(hps, sorted({space.steps.max, *exp.eval_steps(algo)})):
            job = exp.unlearn_job(algo, hp, tmp_path / "job", steps=steps)
            assert job.steps == steps and job.eval_steps[-1] == steps and job.lr == float(hp["lr"])
            ds = load_ds_config(job)
            assert ds["zero_optimization"]["stage"] == exp.train.zero
            if job.train.lora is not None:
                from lume_ray.train.lora import peft_config

                peft_config(job.train.lora)
        assert distributions(space) and distributions(space, grid=True)
        make_sampler(exp.sweep.sampler, SamplerContext(seed=exp.seed, budget=exp.sweep.num_samples, grid=grid_of(space)))
    assert not list(tmp_path.iterdir())  # building jobs writes nothing


def test_overrides_and_output_dir_placeholder() -> None:
    exp = load_experiment(QUICK, [("output_dir", "/tmp/x"), ("sweep.num_samples", "7"), ("sweep.algorithms", "[ga]")])
    assert exp.sweep.num_samples == 7 and exp.selected_algorithms() == ["ga"]
    assert exp.path(exp.data.path) == "/tmp/x/data"
    job = exp.unlearn_job("ga", {"lr": 1e-3}, "/tmp/x/t")
    assert (job.model, job.data, job.steps, job.eval_steps) == ("/tmp/x/target", "/tmp/x/data", 20, (10, 20))


def test_steps_trajectory_and_floor_forms() -> None:
    exp = load_experiment(QUICK, [("algorithms.ga.steps", "[5, 15, 10]"), ("eval.utility_floor", "0.5")])
    assert exp.algorithms["ga"].steps.max == 15 and exp.eval_steps("ga") == (5, 10, 15)
    assert (exp.eval.utility_floor.relative, exp.eval.utility_floor.absolute) == (0.5, None)
    exp = load_experiment(QUICK, [("eval.utility_floor", "{absolute: 0.3}")])
    assert (exp.eval.utility_floor.relative, exp.eval.utility_floor.absolute) == (None, 0.3)


def test_grid_sampler_uses_grid_values_or_range_points() -> None:
    from lume_ray.search.space import grid_size

    exp = load_experiment(QUICK, [("sweep.sampler", "grid")])
    assert grid_size(exp.algorithms["ga"]) == 3  # lr grid: [3e-4, 1e-3, 3e-3]
    assert grid_size(exp.algorithms["npo"]) == 3 * 2 * 3


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="experiment file not found"):
        load_experiment(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_experiment(bad)


# -- bad input: one line at load, exit 2, nothing written ------------------------------------------

# (key, YAML value, pattern the error must match after "FILE: "). Each names the key, the value and what is valid.
BAD_EXPERIMENT = [
    # an unknown key at any depth
    ("trian", "{workers: 2}", r"trian: unknown key \(valid: name, seed, output_dir, data, target, train, eval, sweep"),
    ("sweep.num_sample", "3", r"sweep\.num_sample: unknown key \(valid: sampler, num_samples"),
    ("train.lora.rank", "8", r"train\.lora\.rank: unknown key \(valid: r, alpha, dropout, target_modules\)"),
    ("algorithms.npo.betta", "{uniform: [0.1, 1]}", r"algorithms\.npo\.betta: unknown key \(valid: lr, steps, beta, alpha"),
    ("algorithms.npo.steps", "{max: 10, every: 2}", r"algorithms\.npo\.steps\.every: unknown key \(valid: max, points\)"),
    ("eval.utility_floor", "{rel: 0.5}", r"eval\.utility_floor: unknown key 'rel' \(valid: relative, absolute\)"),
    ("tracking.mlflow.url", "x", r"tracking\.mlflow\.url: unknown key \(valid: uri, experiment\)"),
    ("algorithms.foo", "{lr: 1, steps: 2}", r"algorithms\.foo: unknown algorithm 'foo' \(valid: ga, gd, kl, npo"),
    # a negative or zero lr: a fixed value, a range endpoint, a grid value
    ("algorithms.ga.lr", "-1.0e-4", r"algorithms\.ga\.lr: must be a finite number > 0 \(got -0\.0001\)"),
    ("algorithms.ga.lr", "0", r"algorithms\.ga\.lr: must be a finite number > 0 \(got 0\)"),
    ("algorithms.ga.lr", "{uniform: [0, 1.0e-3]}", r"algorithms\.ga\.lr: must be a finite number > 0 \(got 0\)"),
    ("algorithms.ga.lr", "{loguniform: [-1.0e-4, 1.0e-3]}", r"algorithms\.ga\.lr: loguniform: bounds must be > 0, got \[-0\.0001"),
    ("algorithms.ga.lr", "{loguniform: [1.0e-4, 1.0e-3], grid: [0]}", r"algorithms\.ga\.lr: must be a finite number > 0 \(got 0\)"),
    # steps: 0
    ("algorithms.ga.steps", "0", r"algorithms\.ga\.steps: expected an integer >= 1, \{max: N\} or a list of steps, got 0"),
    ("algorithms.ga.steps", "{max: 0}", r"algorithms\.ga\.steps\.max: Input should be greater than or equal to 1 \(got 0\)"),
    ("algorithms.ga.steps", "[0, 10]", r"algorithms\.ga\.steps: expected a non-empty list of integers >= 1, got \[0, 10\]"),
    # offload without ZeRO-3
    ("train", "{offload: true, zero: 2}", r"train\.offload: CPU offload needs zero: 3 \(got zero: 2\)"),
    # not a LoRA key
    ("train.lora", "{rank: 8}", r"train\.lora\.rank: unknown key \(valid: r, alpha, dropout, target_modules\)"),
    # more than one GPU per worker (more GPUs means more workers)
    ("train.gpus_per_worker", "2", r"train\.gpus_per_worker: Input should be 0 or 1 \(got 2\)"),
    ("train", "{workers: 3, batch_size: 8}", r"train\.batch_size: 8 is not a multiple of workers=3"),
    ("train.zero", "1", r"train\.zero: Input should be 0, 2 or 3 \(got 1\)"),
    # a range with min > max
    ("algorithms.npo.beta", "{uniform: [1.0, 0.5]}", r"algorithms\.npo\.beta: uniform: low 1\.0 > high 0\.5"),
    ("algorithms.ga.lr", "{loguniform: [1.0e-3, 1.0e-4]}", r"algorithms\.ga\.lr: loguniform: low 0\.001 > high 0\.0001"),
    # an algorithm parameter out of its range, or of the wrong kind
    ("algorithms.npo.beta", "{uniform: [-1, 1]}", r"algorithms\.npo\.beta: npo parameter beta=-1: must be > 0"),
    ("algorithms.npo.retain_loss", "{choice: [nll, mse]}", r"algorithms\.npo\.retain_loss: .*retain_loss='mse': must be one of nll, kl"),
    ("algorithms.rmu.layer", "{uniform: [0, 3]}", r"algorithms\.rmu\.layer: an integer parameter takes \{int: \[lo, hi\]\}"),
    # an objective that is not a registered metric (or one recorded only)
    ("sweep.objectives", "[forget_efficacy, accuracy]", r"sweep\.objectives: unknown metric 'accuracy' \(valid: .*retain_score"),
    ("sweep.objectives", "[mia_auc]", r"sweep\.objectives: metric 'mia_auc' is recorded only, not an objective \(valid: "),
    # a sampler name typo
    ("sweep.sampler", "tpee", rf"sweep\.sampler: unknown sampler 'tpee' \(valid: {VALID_SAMPLERS}\)"),
    # and more combinations
    ("sweep.algorithms", "[ga, xyz]", r"sweep\.algorithms: 'xyz' has no search space here \(valid: ga, gd"),
    ("sweep.eval_steps", "[30]", r"sweep\.eval_steps: 30 is beyond every algorithm's steps \(largest max: 20\)"),
    ("train.workers", "two", r"train\.workers: Input should be a valid integer.*\(got 'two'\)"),
    ("seed", "-1", r"seed: Input should be greater than or equal to 0 \(got -1\)"),
]


def _set(raw: dict[str, Any], key: str, value: Any) -> None:
    node = raw
    *parents, leaf = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def _quickstart(tmp_path: Path) -> dict[str, Any]:
    raw = yaml.safe_load(QUICK.read_text())
    raw["output_dir"] = str(tmp_path / "run")
    return raw


def _run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own errors
        code = int(e.code or 0)
    captured = capsys.readouterr()
    assert captured.out == ""
    return code, captured.err


def _one_line_error(err: str, source: str, pattern: str) -> None:
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith(f"lume-ray: error: {source}: "), err
    import re

    assert re.search(pattern, err), err


@pytest.mark.parametrize(("key", "value", "pattern"), BAD_EXPERIMENT, ids=[f"{k}={v}" for k, v, _ in BAD_EXPERIMENT])
def test_bad_experiment_yaml_is_one_line_at_load(key: str, value: str, pattern: str, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    raw = _quickstart(tmp_path)
    _set(raw, key, yaml.safe_load(value))
    exp_file = tmp_path / "exp.yaml"
    exp_file.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError):  # checked first: a case that loaded would start a real sweep below
        load_experiment(exp_file)
    code, err = _run_cli(["sweep", str(exp_file)], capsys)
    assert code == 2
    _one_line_error(err, str(exp_file), pattern)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp.yaml"]  # nothing written: no run dir


@pytest.mark.parametrize(("key", "value", "pattern"), BAD_EXPERIMENT, ids=[f"{k}={v}" for k, v, _ in BAD_EXPERIMENT])
def test_bad_set_override_is_one_line_at_load(key: str, value: str, pattern: str, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    exp_file = tmp_path / "exp.yaml"
    exp_file.write_text(yaml.safe_dump(_quickstart(tmp_path)))
    with pytest.raises(ConfigError):  # checked first: a case that loaded would start a real sweep below
        load_experiment(exp_file, [(key, value)])
    code, err = _run_cli(["sweep", str(exp_file), "--set", f"{key}={value}"], capsys)
    assert code == 2
    _one_line_error(err, str(exp_file), pattern)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp.yaml"]


def test_output_dir_that_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    exp_file = tmp_path / "exp.yaml"
    exp_file.write_text(yaml.safe_dump(_quickstart(tmp_path)))
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep")
    for argv in (["--out", str(a_file)], ["--set", f"output_dir={a_file}"]):
        code, err = _run_cli(["sweep", str(exp_file), *argv], capsys)
        assert code == 2
        _one_line_error(err, str(exp_file), rf"output_dir: '{a_file}' exists and is not a directory$")
    assert a_file.read_text() == "keep" and sorted(p.name for p in tmp_path.iterdir()) == ["exp.yaml", "notes.txt"]


def test_sampler_flag_typo_and_set_syntax(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    exp_file = tmp_path / "exp.yaml"
    exp_file.write_text(yaml.safe_dump(_quickstart(tmp_path)))
    code, err = _run_cli(["sweep", str(exp_file), "--sampler", "optuna"], capsys)
    assert code == 2
    _one_line_error(err, str(exp_file), rf"sweep\.sampler: unknown sampler 'optuna' \(valid: {VALID_SAMPLERS}\)")
    code, err = _run_cli(["sweep", str(exp_file), "--set", "sweep.num_samples"], capsys)
    assert code == 2 and err.count("\n") == 1 and "expected KEY=VALUE, got 'sweep.num_samples'" in err
    code, err = _run_cli(["sweep", str(exp_file), "--set", "sweep=[1"], capsys)
    assert code == 2 and err.count("\n") == 1 and "sweep=[1: value is not valid YAML" in err
    code, err = _run_cli(["sweep", str(tmp_path / "missing.yaml")], capsys)
    assert code == 2 and "missing.yaml: experiment file not found" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp.yaml"]


def test_a_subprocess_gets_the_same_one_line_error(tmp_path: Path) -> None:
    """The installed entry point, as a user runs it: exit status 2, one line on stderr, nothing on stdout."""
    import subprocess
    import sys

    raw = _quickstart(tmp_path)
    exp_file = tmp_path / "exp.yaml"
    exp_file.write_text(yaml.safe_dump(raw))
    proc = subprocess.run([sys.executable, "-m", "lume_ray.cli", "sweep", str(exp_file), "--set", "train.lora.rank=8"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == (f"lume-ray: error: {exp_file}: train.lora.rank: unknown key "
                           "(valid: r, alpha, dropout, target_modules)\n")
    assert not Path(raw["output_dir"]).exists()


# -- one unlearning job: `lume-ray unlearn` flags ------------------------------------------------------

BAD_UNLEARN = [
    (["--workers", "0"], r"--workers: Input should be greater than or equal to 1 \(got '0'\)"),
    (["--zero", "1"], r"--zero: Input should be 0, 2 or 3 \(got 1\)"),
    (["--precision", "fp16"], r"--precision: Input should be 'auto', 'fp32' or 'bf16' \(got 'fp16'\)"),
    (["--lr", "0"], r"--lr: Input should be greater than 0 \(got '0'\)"),
    (["--lr=-1e-4"], r"--lr: Input should be greater than 0 \(got '-1e-4'\)"),
    (["--steps", "0"], r"--steps: Input should be greater than or equal to 1 \(got '0'\)"),
    (["--offload", "--zero", "2"], r"--offload: CPU offload needs zero: 3 \(got zero: 2\)"),
    (["--gpus-per-worker", "2"], r"--gpus-per-worker: Input should be 0 or 1 \(got 2\)"),
    (["--batch-size", "6", "--workers", "4"], r"--batch-size: 6 is not a multiple of workers=4"),
    (["--lora", "rank=8"], r"--lora rank: unknown key \(valid: r, alpha, dropout, target_modules\)"),
    (["--lora", "r=0"], r"--lora r: Input should be greater than or equal to 1 \(got '0'\)"),
    (["--set", "gamma=1"], r"--set: npo: unknown parameter 'gamma' \(valid: beta, alpha, retain_loss\)"),
    (["--set", "beta=-1"], r"--set: npo parameter beta='-1': must be > 0"),
    (["--set", "retain_loss=mse"], r"--set: npo parameter retain_loss='mse': must be one of nll, kl"),
    (["--algorithm", "sgd"], r"--algorithm: unknown algorithm 'sgd' \(valid: ga, gd, kl, npo"),
    (["--eval-every", "0"], r"--eval-every: must be >= 1 \(got 0\)"),
    (["--eval-steps", "[0]"], r"--eval-steps: 0 is outside 1\.\.steps=60"),
    (["--workers", "two"], r"--workers: Input should be a valid integer.*\(got 'two'\)"),
]


@pytest.mark.parametrize(("flags", "pattern"), BAD_UNLEARN, ids=[" ".join(f) for f, _ in BAD_UNLEARN])
def test_bad_unlearn_flags_are_one_line_naming_the_flag(flags: list[str], pattern: str, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    argv = ["unlearn", "--model", "m", "--data", "d", "--algorithm", "npo", "--out", str(out), *flags]
    code, err = _run_cli(argv, capsys)
    assert code == 2
    _one_line_error(err, "lume-ray unlearn", pattern)
    assert not out.exists()


def test_argparse_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    for argv, expected in ((["unlearn", "--model", "m"], "the following arguments are required: --data"),
                           (["unlearn", "--model", "m", "--data", "d", "--algorithm", "ga", "--out", "o", "--bogus", "1"],
                            "unrecognized arguments: --bogus 1"),
                           (["sweep"], "the following arguments are required: experiment")):
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and err.startswith("lume-ray: error: ") and err.count("\n") == 1, err
        assert expected in err


def test_unlearn_job_model_errors_name_the_key() -> None:
    base = {"model": "m", "data": "d", "algorithm": "npo", "out": "o"}
    for extra, message in (({"beta": 1}, r"SRC: beta: unknown key \(valid: model, data, algorithm, params, lr"),
                           ({"params": {"gamma": 1}}, r"SRC: params: npo: unknown parameter 'gamma'"),
                           ({"eval_steps": [11], "steps": 10}, r"SRC: eval_steps: 11 is outside 1\.\.steps=10"),
                           ({"lr": float("inf")}, r"SRC: lr: must be a finite number > 0"),
                           ({"train": {"lora": {"dropout": 1}}}, r"SRC: train\.lora\.dropout: Input should be less than 1")):
        with pytest.raises(ConfigError, match=message):
            validate(UnlearnJob, {**base, **extra}, "SRC")
