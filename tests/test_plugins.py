"""Plugins: the user's own algorithm, metric and sampler in a file OUTSIDE the repository (pytest's tmp_path),
named by an experiment's ``plugins`` key, ``lume-ray unlearn --plugin``, ``lume-ray check``; searched in a real
sweep (Tune trials, Train workers and the evaluation pool import it) and shipped to a submitted job through Ray's
runtime_env; bad plugins are one line, exit 2, nothing written.
"""

from __future__ import annotations

import json
import shlex
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from lume_ray import cli, plugins, testing
from lume_ray.algorithms import ALGORITHMS
from lume_ray.config import ConfigError, load_experiment
from lume_ray.evaluate.metrics import METRICS
from lume_ray.search.samplers import SAMPLERS

ROOT = Path(__file__).resolve().parents[1]

GOOD = '''
"""My own unlearning loss, metric and sampler (a plugin: nothing in lume_ray is edited)."""
from lume_ray.algorithms import mean_nll, register_algorithm
from lume_ray.evaluate.metrics import register_metric
from lume_ray.search.samplers import register_sampler


# Gradient ascent on the forget set plus the retain NLL, scaled.
@register_algorithm("mine", {"scale": 1.0}, positive=("scale",), cite="a plugin's own loss")
def mine(model, forget, retain, ref_model, params):
    forget_nll = mean_nll(model, forget)  # (B,)
    retain_nll = mean_nll(model, retain)
    loss = -params["scale"] * forget_nll.mean() + retain_nll.mean()
    return loss, {"forget_nll": float(forget_nll.detach().mean()), "retain_nll": float(retain_nll.detach().mean())}


@register_metric("nll_gap", "max", "forget NLL minus retain NLL (a plugin's metric)")
def nll_gap(inputs, done):
    f, r = done.get("forget_nll"), done.get("retain_nll")
    return None if f is None or r is None else float(f - r)


@register_sampler("plugin_random")
def plugin_random(ctx):
    import optuna

    return optuna.samplers.RandomSampler(seed=ctx.seed)
'''

# Sums over the batch (the per-sequence check fails) and logs no retain_nll (the logs check fails).
BROKEN = '''
from lume_ray.algorithms import mean_nll, register_algorithm


@register_algorithm("summed", {}, cite="a plugin that breaks the contract")
def summed(model, forget, retain, ref_model, params):
    forget_nll = mean_nll(model, forget)
    return -forget_nll.sum(), {"forget_nll": float(forget_nll.detach().mean())}
'''


def write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def unload() -> Iterator[None]:
    """Whatever plugins a test loads are unregistered and forgotten after it (so other tests see the built-ins)."""
    before = dict(plugins._loaded)
    yield
    for spec in [s for s in plugins._loaded if s not in before]:
        plugins.unload(spec)
    assert "mine" not in ALGORITHMS and "nll_gap" not in METRICS and "plugin_random" not in SAMPLERS


def experiment_yaml(directory: Path, plugin_spec: str, **extra: Any) -> Path:
    raw = {"name": "plug", "output_dir": str(directory / "run"), "plugins": [plugin_spec],
           "algorithms": {"mine": {"lr": 1e-3, "steps": 2, "scale": {"uniform": [0.5, 2.0]}},
                          "ga": {"lr": 1e-3, "steps": 2}}, **extra}
    path = directory / "exp.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


# -- loading --------------------------------------------------------------------------------------


@pytest.mark.usefixtures("unload")
def test_experiment_plugin_file_registers_its_names(tmp_path: Path) -> None:
    plugin = write(tmp_path / "elsewhere", "my_losses.py", GOOD)
    exp_dir = tmp_path / "study"
    exp_dir.mkdir()
    exp = load_experiment(experiment_yaml(exp_dir, "../elsewhere/my_losses.py"),
                          [("sweep.objectives", "[forget_efficacy, nll_gap]"), ("sweep.sampler", "plugin_random")])
    assert exp.plugins == (str(plugin.resolve()),)  # relative to the experiment file, stored absolute
    assert list(exp.algorithms) == ["mine", "ga"] and exp.sweep.objectives == ("forget_efficacy", "nll_gap")
    assert ALGORITHMS.source("mine") == str(plugin.resolve()) and ALGORITHMS.source("ga") == "lume_ray"
    job = exp.unlearn_job("mine", {"lr": 1e-3, "scale": 2.0}, tmp_path / "job")
    assert job.plugins == exp.plugins and job.params == {"scale": 2.0}  # what every Train worker re-validates
    with pytest.raises(ConfigError, match=r"algorithms\.mine\.scale: mine parameter scale=-1\.0: must be > 0"):
        load_experiment(experiment_yaml(exp_dir, "../elsewhere/my_losses.py"),
                        [("algorithms.mine.scale", "{uniform: [-1.0, 2.0]}")])
    assert len(plugins._loaded) >= 1 and plugins.load_plugin(exp.plugins[0]) is plugins.load_plugin(exp.plugins[0])


@pytest.mark.usefixtures("unload")
def test_a_module_name_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "site", "team_losses.py", GOOD)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    exp = load_experiment(experiment_yaml(tmp_path, "team_losses"))
    assert exp.plugins == ("team_losses",) and "mine" in exp.algorithms
    assert ALGORITHMS.source("mine") == "team_losses"


# -- bad plugins: one line naming the file, exit 2, nothing written ---------------------------------

BAD = {
    "missing": (None, r"plugins: plugin \S*/missing\.py: file not found$"),
    "import_error": ("import math\nraise RuntimeError('no GPU here')\n",
                     r"plugins: plugin \S*/bad\.py: import failed \(RuntimeError: no GPU here\)$"),
    "syntax_error": ("def broken(:\n", r"plugins: plugin \S*/bad\.py: import failed \(SyntaxError: "),
    "duplicate": ("from lume_ray.algorithms import register_algorithm\n"
                  "@register_algorithm('mine', {})\ndef a(m, f, r, ref, p): ...\n"
                  "@register_algorithm('ga', {})\ndef b(m, f, r, ref, p): ...\n",
                  r"plugins: plugin \S*/bad\.py: algorithm 'ga' is already registered \(built in\); "
                  "choose another name$"),
    "contract": ("from lume_ray.algorithms import register_algorithm\n"
                 "@register_algorithm('mine', {'beta': [1, 2]})\ndef a(model, forget, retain, ref, params): ...\n",
                 r"plugins: plugin \S*/bad\.py: algorithm 'mine': parameter 'beta' default \[1, 2\] must be a "
                 "number or a string$"),
    "signature": ("from lume_ray.algorithms import register_algorithm\n"
                  "@register_algorithm('mine', {})\ndef a(model, forget): ...\n",
                  r"plugins: plugin \S*/bad\.py: algorithm 'mine': the loss must take \(model, forget, retain, "
                  r"ref_model, params\)$"),
    "nothing": ("X = 1\n", r"plugins: plugin \S*/bad\.py: registers no algorithm, metric or sampler"),
}


@pytest.mark.usefixtures("unload", "no_console")
@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_plugin_is_one_line_and_nothing_is_written(case: str, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import re

    monkeypatch.delenv("LUME_RAY_DEBUG", raising=False)
    text, pattern = BAD[case]
    name = "missing.py" if text is None else "bad.py"
    if text is not None:
        write(tmp_path, name, text)
    exp = experiment_yaml(tmp_path, name)
    assert cli.main(["sweep", str(exp)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"lume-ray: error: {exp}: "), err
    assert re.search(pattern, err), err
    assert str(tmp_path / name) in err  # the file named
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted({"exp.yaml", name} - ({name} if text is None
                                                                                       else set()))
    assert "mine" not in ALGORITHMS  # nothing a failed plugin registered stays registered
    # the same one line from `lume-ray unlearn --plugin`, named by the flag
    assert cli.main(["unlearn", "--plugin", str(tmp_path / name), "--model", "m", "--data", "d",
                     "--algorithm", "mine", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lume-ray: error: lume-ray unlearn: --plugin: plugin ") and str(tmp_path / name) in err
    assert not (tmp_path / "o").exists()


@pytest.mark.usefixtures("unload")
def test_a_plugin_name_taken_by_another_plugin(tmp_path: Path) -> None:
    first = write(tmp_path / "a", "first.py", GOOD)
    second = write(tmp_path / "b", "second.py", GOOD)
    plugins.load_plugin(str(first))
    with pytest.raises(plugins.PluginError) as e:
        plugins.load_plugin(str(second))
    assert str(e.value) == (f"plugin {second}: algorithm 'mine' is already registered (by {first}); "
                            "choose another name")
    assert ALGORITHMS.source("mine") == str(first)


# -- lume-ray unlearn --plugin --------------------------------------------------------------------


@pytest.mark.usefixtures("unload", "no_console", "no_input_checks")
def test_unlearn_runs_a_plugin_algorithm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import lume_ray.train
    from lume_ray.train import UnlearnResult

    plugin = write(tmp_path / "mine", "my_losses.py", GOOD)
    jobs: list[Any] = []
    monkeypatch.setattr(lume_ray.train, "run_unlearning",
                        lambda j: jobs.append(j) or UnlearnResult("completed", "", [], "log", 0.0, j.steps))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["unlearn", "--plugin", "mine/my_losses.py", "--model", "m", "--data", "d", "--algorithm",
                     "mine", "--set", "scale=3", "--out", str(tmp_path / "o")]) == 0
    assert jobs[-1].algorithm == "mine" and jobs[-1].params == {"scale": 3.0}
    assert jobs[-1].plugins == (str(plugin.resolve()),)  # absolute: the Train workers import it from there


# -- lume-ray check: the built-in contract, on a plugin -------------------------------------------


@pytest.mark.slow
@pytest.mark.usefixtures("unload", "one_torch_thread")
def test_check_passes_a_good_plugin_and_fails_a_broken_one(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                          unlearning_setup: dict[str, Any]) -> None:
    good = write(tmp_path / "good", "good_plugin.py", GOOD)
    assert cli.main(["check", str(good)]) == 0
    lines = capsys.readouterr().out.splitlines()
    checks = [f"ok   algorithm mine: {c.__name__.removeprefix('check_')}" for c in testing.ALGORITHM_CONTRACT]
    checks += [f"ok   metric nll_gap: {c.__name__.removeprefix('check_')}" for c in testing.METRIC_CONTRACT]
    checks += ["ok   sampler plugin_random: same_seed_same_suggestions"]
    assert [ln for ln in lines if not ln.startswith("[check]")] == checks
    assert lines[-1] == "[check] all checks passed"

    broken = write(tmp_path / "broken", "broken_plugin.py", BROKEN)
    assert cli.main(["check", str(broken)]) == 1
    lines = capsys.readouterr().out.splitlines()
    failed = [ln for ln in lines if ln.startswith("FAIL")]
    # the same one-line messages a built-in algorithm would get from tests/test_contracts.py's checks
    expected = []
    for check in (testing.check_finite_loss_and_logs, testing.check_per_sequence_normalization):
        with pytest.raises(AssertionError) as e:
            check("summed", unlearning_setup)
        expected.append(f"FAIL algorithm summed: {check.__name__.removeprefix('check_')}: {str(e.value).splitlines()[0]}")
    assert failed == expected
    assert lines[-1] == "[check] 2 check(s) failed"
    # a file that cannot be a plugin: one line, exit 2, before any model is built
    assert cli.main(["check", str(tmp_path / "nope.py")]) == 2
    out = capsys.readouterr()
    assert out.out == "" and out.err.strip() == f"lume-ray: error: plugin {tmp_path / 'nope.py'}: file not found"


# -- searched in a real sweep -----------------------------------------------------------------------


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.usefixtures("unload")
def test_a_plugin_algorithm_is_searched_in_a_sweep(tmp_path: Path, tiny_lume: Path, tiny_model: Path,
                                                   ray_local: Any) -> None:
    """One built-in + the plugin's algorithm in one Tune run: the trial processes, the Train workers and the
    evaluation pool's actors import the plugin (a file outside the repository, on nobody's sys.path)."""
    from lume_ray.search.sweep import run_sweep
    from tests.helpers import small_experiment

    write(tmp_path / "plugins", "sweep_losses.py", GOOD)
    raw = small_experiment(tmp_path, tiny_lume, tiny_model, num_samples=1, max_concurrent=2)
    raw["plugins"] = ["plugins/sweep_losses.py"]
    raw["algorithms"] = {"ga": raw["algorithms"]["ga"],
                         "mine": {"lr": {"loguniform": [1e-4, 1e-3], "grid": [1e-3]}, "steps": {"max": 4},
                                  "scale": {"uniform": [0.5, 2.0], "grid": [1.0]}}}
    raw["sweep"]["objectives"] = ["forget_efficacy", "nll_gap"]  # the plugin's metric is an objective
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(raw))
    rd = run_sweep(load_experiment(tmp_path / "exp.yaml"))
    df = pd.read_parquet(rd.results_path)
    ok = df[df["status"] == "ok"]
    assert set(ok["algorithm"]) == {"ga", "mine"}, df[["algorithm", "status", "error"]].to_string()
    mine = ok[ok["algorithm"] == "mine"]
    assert len(mine) == 2 and sorted(mine["step"]) == [2, 4]  # both of its points trained and scored
    assert mine["nll_gap"].notna().all() and ok["nll_gap"].notna().all()  # computed by the pool's actors
    saved = yaml.safe_load((rd.root / "experiment.yaml").read_text())
    assert saved["plugins"] == [str((tmp_path / "plugins" / "sweep_losses.py").resolve())]
    # `lume-ray report RUN_DIR` in another process: the run's plugins come back with it (its metric is a column)
    from lume_ray.report.columns import metric_columns
    from lume_ray.report.run import load_run

    plugins.unload(saved["plugins"][0])
    assert "nll_gap" not in METRICS
    run = load_run(rd.root)
    assert "nll_gap" in METRICS and "nll_gap" in metric_columns(run.results)
    assert not [n for n in run.notes if "plugin" in n], run.notes


# -- shipped to a submitted job ---------------------------------------------------------------------


INNER = """
from lume_ray.algorithms import mean_nll, register_algorithm


@register_algorithm("inner", {}, cite="a plugin inside the working directory")
def inner(model, forget, retain, ref_model, params):
    forget_nll = mean_nll(model, forget)
    return -forget_nll.mean(), {"forget_nll": float(forget_nll.detach().mean()), "retain_nll": 0.0}
"""


def submit_layout(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(working dir, experiment, package plugin): a package directory outside the shipped working dir and a file
    plugin inside it, both named relative to the experiment file."""
    package = write(tmp_path / "outside" / "ship_losses", "__init__.py", GOOD).parent
    proj = tmp_path / "proj"
    write(proj, "pyproject.toml", "")  # the project root `lume-ray submit` ships
    write(proj / "plugins", "inner_losses.py", INNER)
    exp = experiment_yaml(proj, "../outside/ship_losses", output_dir="/tmp/unused")
    raw = yaml.safe_load(exp.read_text())
    raw["plugins"].append("plugins/inner_losses.py")
    raw["algorithms"]["inner"] = {"lr": 1e-3, "steps": 2}
    exp.write_text(yaml.safe_dump(raw, sort_keys=False))
    return proj, exp, package


@pytest.mark.usefixtures("unload")
def test_submission_ships_the_plugins(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lume_ray.cluster.jobs import build_submission

    proj, exp, package = submit_layout(tmp_path)
    sub = build_submission(exp, root=proj)
    assert sub.runtime_env["py_modules"] == [str(package)] and sub.runtime_env["working_dir"] == str(proj)
    # on the cluster: the package by its name (py_modules), the file by its path in the working dir
    assert "'plugins=[ship_losses, plugins/inner_losses.py]'" in sub.entrypoint
    # a single file outside the working dir cannot travel (the Jobs API ships py_modules directories only)
    write(tmp_path / "outside", "loose.py", INNER.replace('"inner"', '"loose"'))
    assert cli.main(["submit", str(exp), "--working-dir", str(proj), "--address", "http://127.0.0.1:9", "--set",
                     f"plugins=[{tmp_path / 'outside' / 'loose.py'}]"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"lume-ray: error: plugin {tmp_path / 'outside' / 'loose.py'}: outside the working "
                          "directory") and "package directory" in err and len(err.splitlines()) == 1


STAND_IN = '''
import json, sys
import ray
from lume_ray.config import load_experiment

result, rel, *rest = sys.argv[1:]
sets = rest[rest.index("--set") + 1:] if "--set" in rest else []
exp = load_experiment(rel, [tuple(s.split("=", 1)) for s in sets])  # what `lume-ray sweep` loads on the cluster
ray.init(address="auto")


@ray.remote
def lookup(plugins):
    from lume_ray.plugins import load_plugins
    load_plugins(plugins)  # what a trial, a Train worker and the evaluation pool do first
    from lume_ray.algorithms import ALGORITHMS
    import ship_losses
    return [ALGORITHMS.source(n) for n in ("mine", "inner")], ship_losses.__file__


sources, where = ray.get(lookup.remote(list(exp.plugins)))
with open(result, "w") as f:
    json.dump({"plugins": list(exp.plugins), "algorithms": list(exp.algorithms), "sources": sources,
               "file": where}, f)
print("stand-in wrote", result)
'''


@pytest.mark.ray
@pytest.mark.slow
def test_a_submitted_job_gets_the_plugin_through_its_runtime_env(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """`lume-ray submit`'s submission on a real `ray start --head`: the job loads the experiment as the sweep would
    and a remote task finds each plugin's algorithm. Both plugins live outside the repository; the package outside
    the shipped working dir is on no sys.path there and can only come as the runtime_env's py_modules, the file
    inside it with the runtime_env's working_dir."""
    from lume_ray.cluster.jobs import build_submission, connect
    from tests.local_cluster import LocalRayCluster

    proj, exp, package = submit_layout(tmp_path)
    try:
        sub = build_submission(exp, root=proj)
    finally:
        plugins.unload(str(package))
        plugins.unload(str(proj / "plugins" / "inner_losses.py"))
    stand_in = write(tmp_path / "driver", "stand_in.py", STAND_IN)
    result = tmp_path / "result.json"
    prefix = "python -m lume_ray.cli sweep"
    assert sub.entrypoint.startswith(prefix)
    tail = sub.entrypoint[len(prefix):]  # the experiment and its --set, as the sweep would get them
    sub = replace(sub, entrypoint=f"{sys.executable} {stand_in} {shlex.quote(str(result))}{tail}")
    cluster = LocalRayCluster(workers=0, cpus_per_node=2, env={"RAY_AUTH_MODE": "disabled"})
    try:
        cluster.start()
        client = connect(cluster.address)
        job = client.submit_job(entrypoint=sub.entrypoint, runtime_env=sub.runtime_env, metadata=sub.metadata,
                                submission_id=sub.submission_id)
        assert cli.main(["jobs", "logs", job, "--follow", "--address", cluster.address]) == 0, \
            capsys.readouterr().out[-3000:]
    finally:
        cluster.stop()
    got = json.loads(result.read_text())
    assert got["algorithms"] == ["mine", "ga", "inner"]  # the experiment validated on the cluster
    # the package came as py_modules (the runtime_env's copy, not the directory on this machine); the file in the
    # working dir, its path resolved there (not in this machine's tmp_path either)
    assert got["plugins"][0] == "ship_losses" and not got["file"].startswith(str(tmp_path))
    inner = got["plugins"][1]
    assert inner.endswith("/plugins/inner_losses.py") and not inner.startswith(str(tmp_path))
    assert got["sources"] == got["plugins"]  # a remote task registered each name from its plugin
