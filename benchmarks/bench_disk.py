"""Benchmark: the disk a sweep's run directory holds at peak under each ``sweep.keep_models`` (all, front, none).

The same small sweep on the quickstart's embedded target (its data and target built once, into OUT/shared) runs
once per mode; a background thread measures RUN_DIR every 0.5 s (bytes on disk as ``du`` counts them, split into
the points' models, the trials' DeepSpeed checkpoints and the rest) and the peaks are kept. Prints a table, beside
what ``lume-ray plan`` predicts for the same experiment, and writes benchmarks/results/disk.json.

    python benchmarks/bench_disk.py [--out runs/bench_disk] [--algorithms ga npo] [--trials 2] [--points 4]
                                    [--steps 8] [--docs-per-task 32] [--preset tiny] [--modes all front none]
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from lume_ray.cluster.plan import disk_plan
from lume_ray.config import load_experiment
from lume_ray.pipeline import prepare_data, prepare_target
from lume_ray.run_dir import RunDir, fmt_bytes
from lume_ray.search.sweep import run_sweep

QUICKSTART = Path(__file__).resolve().parents[1] / "experiments" / "quickstart.yaml"
RESULTS = Path(__file__).resolve().parent / "results" / "disk.json"
PARTS = ("models", "checkpoints", "other")


def measure(root: Path) -> dict[str, int]:
    """Bytes on disk under ``root`` (du's allocated blocks), by part: points' models, checkpoints, the rest."""
    out = dict.fromkeys(PARTS, 0)
    for dirpath, _, filenames in os.walk(root):
        rel = Path(dirpath).relative_to(root).parts
        part = ("models" if rel[:1] == ("trials",) and rel[2:4] == ("train", "points") else
                "checkpoints" if rel[:1] == ("trials",) and rel[2:3] == ("ray",) else "other")
        for name in filenames:
            try:
                out[part] += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
            except OSError:  # removed while we looked
                continue
    return out


class Sampler(threading.Thread):
    """Samples ``root`` every ``period`` seconds until stopped; keeps the peak of the total and of each part."""

    def __init__(self, root: Path, period: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.root, self.period, self.done = root, period, threading.Event()
        self.peak: dict[str, int] = dict.fromkeys((*PARTS, "total"), 0)
        self.peak_models = 0
        self.samples = 0

    def run(self) -> None:
        while not self.done.is_set():
            if self.root.is_dir():
                now = measure(self.root)
                now["total"] = sum(now.values())
                self.peak = {k: max(v, now[k]) for k, v in self.peak.items()}
                self.peak_models = max(self.peak_models, len(RunDir(self.root).models_on_disk()))
                self.samples += 1
            self.done.wait(self.period)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/bench_disk")
    p.add_argument("--algorithms", nargs="+", default=["ga", "npo"])
    p.add_argument("--trials", type=int, default=2, help="trials per algorithm")
    p.add_argument("--points", type=int, default=4, help="evaluation points per trial")
    p.add_argument("--steps", type=int, default=8, help="steps per trial")
    p.add_argument("--concurrent", type=int, default=2, help="trials at once")
    p.add_argument("--docs-per-task", type=int, default=32, help="synthetic documents per task (quickstart: 32)")
    p.add_argument("--preset", default="tiny", help="the embedded target's size preset (quickstart: tiny)")
    p.add_argument("--modes", nargs="+", choices=["all", "front", "none"], default=["all", "front", "none"])
    args = p.parse_args()
    out = Path(args.out).resolve()
    shared = [("output_dir", str(out / "shared")), ("data.synth.docs_per_task", str(args.docs_per_task)),
              ("target.build.preset", args.preset)]
    base = load_experiment(QUICKSTART, shared).resolved()
    data = prepare_data(base)
    model = prepare_target(base, data)
    rows: list[dict[str, Any]] = []
    for mode in args.modes:
        run_dir = out / mode
        exp = load_experiment(QUICKSTART, [
            ("output_dir", str(run_dir)), ("sweep.keep_models", mode), ("sweep.num_samples", str(args.trials)),
            ("sweep.eval_points", str(args.points)), ("sweep.max_concurrent", str(args.concurrent)),
            ("sweep.algorithms", json.dumps(args.algorithms)), ("sweep.report", "false"),
            ("data.path", data), ("data.synth", "null"), ("target.model", model), ("target.build", "null"),
            *((f"algorithms.{a}.steps", json.dumps({"max": args.steps})) for a in args.algorithms),
        ])
        if (run_dir / "results.parquet").exists():
            print(f"[bench_disk] {mode}: {run_dir} holds a finished sweep; remove it to measure again")
            continue
        sampler = Sampler(run_dir)
        sampler.start()
        t0 = time.time()
        run_sweep(exp, resume=(run_dir / "study.json").exists())
        wall = time.time() - t0
        sampler.done.set()
        sampler.join()
        rd = RunDir(run_dir)
        plan = disk_plan(exp)
        end = measure(run_dir)
        rows.append({"mode": mode, "wall_s": round(wall), "samples": sampler.samples,
                     "points": plan.all_points, "models_peak": sampler.peak_models,
                     "models_end": len(rd.models_on_disk()), "peak_bytes": sampler.peak["total"],
                     "peak_model_bytes": sampler.peak["models"], "peak_checkpoint_bytes": sampler.peak["checkpoints"],
                     "end_bytes": sum(end.values()), "end_model_bytes": end["models"],
                     "end_checkpoint_bytes": end["checkpoints"], "model_bytes_plan": plan.model_bytes,
                     "models_held_plan": plan.held[mode][0], "peak_bytes_plan": plan.peak(mode)})
    if not rows:
        return
    setup = {"algorithms": args.algorithms, "trials_per_algorithm": args.trials, "points_per_trial": args.points,
             "steps": args.steps, "concurrent": args.concurrent, "docs_per_task": args.docs_per_task,
             "preset": args.preset, "cpus": os.cpu_count()}
    print(f"{len(args.algorithms)} algorithms x {args.trials} trials x {args.points} points, {args.steps} steps, "
          f"{args.concurrent} trials at once; target preset {args.preset}")
    print(f"{'keep_models':<11} {'models peak':>11} {'at end':>6} {'peak':>10} {'models':>10} {'checkpoints':>11} "
          f"{'at end':>10} {'plan: models':>12} {'plan: peak':>10} {'wall':>6}")
    for r in rows:
        print(f"{r['mode']:<11} {r['models_peak']:>11} {r['models_end']:>6} {fmt_bytes(r['peak_bytes']):>10} "
              f"{fmt_bytes(r['peak_model_bytes']):>10} {fmt_bytes(r['peak_checkpoint_bytes']):>11} "
              f"{fmt_bytes(r['end_bytes']):>10} {r['models_held_plan']:>12} {fmt_bytes(r['peak_bytes_plan']):>10} "
              f"{r['wall_s']:>5}s")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"setup": setup, "rows": rows}, indent=2) + "\n")
    print(f"[bench_disk] wrote {RESULTS}")


if __name__ == "__main__":
    main()
