"""The spine: stages 1-7 in order, on one page.

Input:  an experiment (default: experiments/quickstart.yaml, the embedded default) and an output directory.
Output: RUN_DIR with the data, the target, the sweep's results and the Pareto report; the path printed.

    [1] data     synth.write_dataset        LUME-format forget/retain + member/nonmember + utility
    [2] target   target.build_target        tiny OLMo that memorized it (cached by input hash)
    [3,4] unlearning jobs   train.run_unlearning   (inside every sweep trial: Ray Train + DeepSpeed)
    [5] eval     evaluate.evaluate          Ray Data; the base model first, then every trial's points
    [6] sweep    sweep.run_sweep            Ray Tune + Optuna per algorithm -> results.parquet
    [7] report   report.build_report        Pareto fronts, leaderboard, plots

Re-running the same command resumes an interrupted study (finished trials are not re-run) and rebuilds
the report from the stored tables.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from lume_ray.experiment import ConfigError, Experiment, load_experiment

DEFAULT_EXPERIMENT = Path(__file__).resolve().parents[1] / "experiments" / "quickstart.yaml"


def run_study(exp: Experiment, *, address: str | None = None) -> Path:
    from lume_ray.report import build_report
    from lume_ray.sweep import prepare_inputs, resolve, run_sweep

    t0 = time.time()
    exp = replace(exp, output_dir=str(Path(exp.output_dir).resolve()))
    run_dir = Path(exp.output_dir)
    print(f"[1/4] data + [2/4] target under {run_dir}", flush=True)
    prepare_inputs(exp)  # both cached: instant on a re-run
    print(f"      data {resolve(exp, exp.data.path)}, target {resolve(exp, exp.target.model)} "
          f"({time.time() - t0:.0f} s)", flush=True)
    print("[3/4] sweep: unlearning jobs + evaluations per algorithm", flush=True)
    resume = (run_dir / "study.json").exists()
    run_sweep(replace(exp, sweep=replace(exp.sweep, report=False)), resume=resume, address=address)
    print("[4/4] report", flush=True)
    out = build_report(run_dir)
    print(f"done in {time.time() - t0:.0f} s. Report: {out / 'report.html'} (also report.md, pareto.csv)", flush=True)
    return out


def cli_main(args: Any) -> int:
    """`lume-ray quickstart [--out DIR] [--experiment YAML] [--set k=v ...]`."""
    path = Path(args.experiment) if args.experiment else DEFAULT_EXPERIMENT
    if not path.is_file():
        raise ConfigError(f"{path}: experiment file not found (run from the repository or pass --experiment)")
    exp = load_experiment(path, [("output_dir", args.out), *args.overrides])
    run_study(exp)
    return 0
