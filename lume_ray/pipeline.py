"""The spine: a study, stage by stage, on one page.

Input:  an :class:`~lume_ray.config.Experiment` (validated once, at load).
Output: RUN_DIR with the sweep's results and the Pareto report: a :class:`Study` naming both.

    [0] preflight preflight.check_experiment  every input checked (paths, model, data, resources, address)
    [1] data      synth.write_dataset         LUME-format forget/retain + MIA documents + utility set
    [2] target    target.build_target         tiny OLMo that memorized it (cached by input hash)
    [3] search    search.sweep.run_sweep      one Ray Tune run over every algorithm; each trial:
          unlearn     train.run_unlearning      Ray Train + DeepSpeed ZeRO, evaluation points along the way
          evaluate    evaluate.pool             every point scored by the sweep's pool of model actors
    [4] report    report.build_report         Pareto fronts, leaderboard, figures

Each module's docstring opens with its stage: ``[1]`` .. ``[4]``, or ``[3 unlearn]`` / ``[3 evaluate]`` for
the two parts of a trial. Re-running the same study resumes it (finished trials are not re-run) and rebuilds
the report.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from lume_ray import tracking
from lume_ray.config import Experiment
from lume_ray.console import STUDY, quiet, say
from lume_ray.preflight import check_experiment
from lume_ray.report import build_report
from lume_ray.run_dir import RunDir
from lume_ray.search.sweep import read_warm_start, run_sweep
from lume_ray.synth import write_dataset
from lume_ray.target.build import build_target


@dataclass(frozen=True)
class Study:
    """What a study left: its run directory, and its report's folder (None when ``sweep.report`` is off)."""
    run_dir: Path
    report_dir: Path | None


def prepare_data(exp: Experiment) -> str:
    """[1] The experiment's data: written by the synthetic generator when it says how and it is missing."""
    path = exp.path(exp.data.path)
    if exp.data.synth is not None and not Path(path).exists():
        say(f"[1/4] data: writing synthetic LUME data to {path}")
        write_dataset(path, docs_per_task=exp.data.synth.docs_per_task, seed=exp.data.synth.seed)
    return exp.path(exp.data.path)  # absolute now that it exists


def prepare_target(exp: Experiment, data: str) -> str:
    """[2] The model before unlearning: built (cached by its inputs) when the experiment says how."""
    path = exp.path(exp.target.model)
    if exp.target.build is not None:
        b = exp.target.build
        say(f"[2/4] target: the embedded target at {path} (cached when unchanged)")
        build_target(path, data, preset=b.preset, seed=b.seed, epochs=b.epochs)
    return exp.path(exp.target.model)  # absolute now that it exists


def run_study(exp: Experiment, *, resume: bool | None = None, address: str | None = None,
              warm_start: str | None = None, verbose: bool = False, source: str = "experiment") -> Study:
    """[0] preflight -> data -> target -> search (trials: unlearn -> evaluate) -> report. The preflight
    (:func:`lume_ray.preflight.check_experiment`) checks every input before anything is written; its errors name
    ``source`` (the experiment's file). ``resume=None``: resume when RUN_DIR already holds this study. Ray's, Tune's,
    DeepSpeed's and Optuna's output goes to RUN_DIR/logs/ (``verbose``: shown as well)."""
    t0 = time.time()
    check_experiment(exp, source, address=address, resume=resume)
    exp = exp.resolved()
    with quiet(RunDir(exp.output_dir).logs, verbose=verbose, passthrough=STUDY):
        data = prepare_data(exp)
        model = prepare_target(exp, data)
        if resume is None:
            resume = RunDir(exp.output_dir).exists()
        say(f"[3/4] search: {', '.join(exp.selected_algorithms())} with {exp.sweep.sampler} -> {exp.output_dir}")
        run = run_sweep(exp, resume=resume, address=address, data=data, model=model,
                        warm_start=read_warm_start(warm_start) if warm_start else ())
        if not exp.sweep.report:
            return Study(run.root, None)
        say("[4/4] report")
        out = build_report(run.root)
        tracking.log_report(exp, run.root, out)
        say(f"done in {time.time() - t0:.0f} s. Report: {out / 'report.html'} (also report.md, pareto.csv)")
    return Study(run.root, out)
