"""Benchmark: early stopping's two modes, pipelined vs waiting at each rung, on the quickstart target.

The same sweep in each mode (gd, 6 trials, sampler gp, 10 epochs, evaluated at 2.5/5/7.5/10 epochs, successive
halving at 2.5 and 5 epochs keeping a third): ``early_stop.pipelined: true`` scores a rung's point while the job
trains on (a stopped trial has trained past its rung by then); ``false`` holds the job at each rung, alive, until
its point is scored and the trial judged. Prints wall time, steps trained, trials stopped and the steps a stopped
trial trained past its rung, per mode, and writes them to benchmarks/results/early_stop.json.

    python benchmarks/bench_early_stop.py [--out runs/bench_early_stop] [--trials 6] [--modes pipelined wait]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import pandas as pd
from summary import write_summary  # benchmarks/summary.py, beside this script

from lume_ray.config import load_experiment
from lume_ray.data import load_lume
from lume_ray.pipeline import prepare_data, prepare_target
from lume_ray.search.sweep import run_sweep

QUICKSTART = Path(__file__).resolve().parents[1] / "experiments" / "quickstart.yaml"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/bench_early_stop")
    p.add_argument("--trials", type=int, default=6)
    p.add_argument("--modes", nargs="+", choices=["pipelined", "wait"], default=["pipelined", "wait"])
    args = p.parse_args()
    base = load_experiment(QUICKSTART, [("output_dir", "runs/quickstart")]).resolved()
    data = prepare_data(base)
    model = prepare_target(base, data)
    per_epoch = math.ceil(len(load_lume(data).forget) / base.train.batch_size)
    max_steps = 10 * per_epoch
    rungs = [max_steps // 4, max_steps // 2]
    rows = []
    for mode in args.modes:
        pipelined = mode == "pipelined"
        run_dir = Path(args.out) / mode
        space = {"lr": {"loguniform": [3e-4, 3e-3]}, "steps": {"max": max_steps}, "alpha": {"loguniform": [1.0, 5.0]}}
        exp = load_experiment(QUICKSTART, [
            ("output_dir", str(run_dir)), ("sweep.sampler", "gp"), ("sweep.num_samples", str(args.trials)),
            ("sweep.max_concurrent", "2"), ("sweep.algorithms", '["gd"]'), ("sweep.report", "false"),
            ("sweep.eval_steps", json.dumps([round(max_steps * k / 4) for k in (1, 2, 3, 4)])),
            ("sweep.early_stop", json.dumps({"rungs": rungs, "keep": 1 / 3, "pipelined": pipelined})),
            ("data.path", data), ("data.synth", "null"), ("target.model", model), ("target.build", "null"),
            ("algorithms.gd", json.dumps(space)),
        ])
        t0 = time.time()
        if not (run_dir / "results.parquet").exists():
            run_sweep(exp, resume=(run_dir / "study.json").exists())
        wall = time.time() - t0
        frame = pd.read_parquet(run_dir / "results.parquet")
        trials = frame.groupby("trial_id").agg(steps=("trained_steps", "max"), status=("status", "last"))
        stopped = frame[frame.status == "stopped"]
        records = [json.loads(p.read_text()) for p in run_dir.glob("trials/*/trial.json")]
        past = [int(stopped.loc[stopped.trial_id == r["trial_id"], "trained_steps"].max()) - int(r["stopped_at"])
                for r in records if r.get("status") == "stopped"]
        rows.append({"mode": mode, "wall_s": round(wall),
                     "trials": len(trials), "stopped": int((trials.status == "stopped").sum()),
                     "steps_trained": int(trials.steps.sum()), "steps_past_rung": sum(past),
                     "wall_s_from_records": round(sum(r.get("wall_s") or 0 for r in records))})
    print(f"rungs {rungs} of {max_steps} steps; {args.trials} trials each; wall_s is the sweep's (0 when cached)")
    print(pd.DataFrame(rows).to_string(index=False))
    write_summary("early_stop", {"rungs": rungs, "max_steps": max_steps, "trials": args.trials, "modes": rows})


if __name__ == "__main__":
    main()
