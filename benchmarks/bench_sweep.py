"""Benchmark: hypervolume of the Pareto front against unlearning steps spent, Optuna vs a full grid.

Grid (issue 5): lr {1e-5, 2e-5, 5e-5} x steps {5, 10 epochs' worth} x retain weight {1, 2, 5}, for gd and
npo, on the quickstart data and target. Optuna (TPE, multi-objective) searches the same ranges with the same
budget (as many trials as the grid). Both evaluate every trial at 2 points, so a 10-epoch trial also yields
its 5-epoch point. Hypervolume uses a fixed reference of 0 for each objective (all are scores in [0, 1] to
maximize), so the two curves are comparable. Prints how many steps Optuna needs to reach the grid's final
hypervolume, as a fraction of the grid's total (target <= 25%).

    python benchmarks/bench_sweep.py [--out runs/bench_sweep] [--lrs 1e-5 2e-5 5e-5] [--algorithms gd npo]
                                     [--searches optuna random nsga2]   # each compared with the grid
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

from lume_ray.data import load_lume
from lume_ray.experiment import load_experiment
from lume_ray.report import analyze, hypervolume_history, load_run
from lume_ray.sweep import prepare_inputs, resolve, run_sweep

QUICKSTART = Path(__file__).resolve().parents[1] / "experiments" / "quickstart.yaml"


def space(lrs: list[float], steps: list[int], algorithm: str, grid: bool) -> str:
    lr = {"loguniform": [min(lrs), max(lrs)], **({"grid": lrs} if grid else {})}
    alpha = {"loguniform": [1.0, 5.0], **({"grid": [1.0, 2.0, 5.0]} if grid else {})}
    out = {"lr": lr, "steps": {"choice": steps}, "alpha": alpha}
    if algorithm == "npo":
        out["beta"] = 0.1
    return json.dumps(out)


def history(run_dir: Path, objectives: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per scope ("overall" and each algorithm): cumulative trained steps and hypervolume after each trial."""
    run = load_run(run_dir)
    a = analyze(run, objectives)
    a.reference = [0.0] * len(objectives)  # scores in [0, 1], all maximized: a fixed, shared reference
    h = hypervolume_history(a)
    return {scope: (g["compute"].to_numpy(), g["hypervolume"].to_numpy()) for scope, g in h.groupby("scope", sort=False)}


def steps_to_reach(grid: tuple[np.ndarray, np.ndarray], other: tuple[np.ndarray, np.ndarray]) -> str:
    """One line: the steps another search spent until its hypervolume reached the grid's final one."""
    (g_compute, g_hv), (o_compute, o_hv) = grid, other
    target = g_hv[-1]
    reached = np.nonzero(o_hv >= target - 1e-12)[0]
    if not len(reached):
        return (f"did not reach the grid's final hypervolume {target:.4f} (best {o_hv.max():.4f}) within the "
                f"same budget ({o_compute[-1]:.0f} steps)")
    spent = o_compute[reached[0]]
    return (f"reached the grid's final hypervolume {target:.4f} after {spent:.0f} steps = "
            f"{spent / g_compute[-1]:.1%} of the grid's {g_compute[-1]:.0f} steps (target <= 25%)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/bench_sweep")
    p.add_argument("--lrs", type=float, nargs="+", default=[1e-5, 2e-5, 5e-5])
    p.add_argument("--algorithms", nargs="+", default=["gd", "npo"])
    p.add_argument("--searches", nargs="+", default=["optuna"], choices=("optuna", "random", "nsga2"),
                   help="searches to compare with the grid (optuna: TPE; nsga2: Optuna's NSGA-II)")
    args = p.parse_args()
    base = load_experiment(QUICKSTART, [("output_dir", "runs/quickstart")])
    prepare_inputs(base)  # the quickstart data and target (cached)
    data = load_lume(resolve(base, base.data.path))
    per_epoch = math.ceil(len(data.forget) / base.train.batch_size)
    steps = [5 * per_epoch, 10 * per_epoch]
    objectives = list(base.sweep.objectives)
    n_grid = len(args.lrs) * len(steps) * 3
    curves = {}
    for search in ("grid", *args.searches):
        kind = "optuna" if search == "nsga2" else search
        overrides = [
            ("output_dir", f"{args.out}/{search}"), ("sweep.search", kind), ("sweep.num_samples", str(n_grid)),
            ("sweep.sampler", "nsga2" if search == "nsga2" else "tpe"),
            ("sweep.eval_points", "2"), ("sweep.algorithms", json.dumps(args.algorithms)), ("sweep.report", "false"),
            ("data.path", resolve(base, base.data.path)), ("target.model", resolve(base, base.target.model)),
        ]
        overrides += [(f"algorithms.{a}", space(args.lrs, steps, a, search == "grid")) for a in args.algorithms]
        exp = load_experiment(QUICKSTART, overrides)
        t0 = time.time()
        run_dir = Path(exp.output_dir)
        if not (run_dir / "results.parquet").exists():
            run_sweep(exp, resume=(run_dir / "study.json").exists())
        curves[search] = history(run_dir, objectives)
        compute, hv = curves[search]["overall"]
        print(f"{search}: {n_grid} trials per algorithm, {time.time() - t0:.0f} s, "
              f"total steps {compute[-1]:.0f}, final hypervolume {hv[-1]:.4f}", flush=True)
    print(f"steps per epoch {per_epoch}; step choices {steps}; objectives {objectives}")
    for scope in ["overall", *args.algorithms]:
        for search in (*args.searches, "grid"):
            compute, hv = curves[search][scope]
            print(f"{scope} {search} hypervolume vs steps: "
                  + ", ".join(f"{c:.0f}:{h:.4f}" for c, h in zip(compute, hv, strict=True)))
        for search in args.searches:
            print(f"{scope}: {search} {steps_to_reach(curves['grid'][scope], curves[search][scope])}")


if __name__ == "__main__":
    main()
