"""Benchmark analysis: the most a search's first trials could reach within a budget of steps, on every seed at once.

A search that starts cold chooses its first trials before it has seen any point, so within a small budget it runs
a fixed design. This enumerates every fixed design within ``--budget`` steps: up to ``--max-trials`` settings that
were trained to their last step at every seed in the given runs, each ended at one of its evaluation points
(early stopping can end a trial at any of them), no trial able to go on to its next point within the budget. It
counts the designs whose points reach the grid's final hypervolume at each seed, and at every seed at once; also
against the mean of the seeds' grids (a target without one grid's luck). A design that reaches every seed's grid
is what a target of the grid's hypervolume within 15% of its 2,700 steps (405) asks a search to pick blind.

Reads bench_sweep.py's run directories (NAME-seedN, the grids as grid-seedN; same space, same target build):

    python benchmarks/design_bound.py runs/bench_seed*/suited/*-seed* [--budgets 405 540] [--max-trials 4]
                                      [--algorithms gd npo] [--json FILE]

Writes benchmarks/results/design_bound.json (or --json FILE).

In a paired benchmark a setting retraces the same trajectory at a seed in every run, so each setting's first
full trial at a seed stands for it. The bound covers these settings only (the designs' points, the grid's
settings, scored at their two step counts or wherever a search trained them through, and every proposal that
recurs at every seed).
"""

from __future__ import annotations

import argparse
import itertools
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from bench_sweep import OBJECTIVES, hv
from summary import write_summary

Trajectory = tuple[np.ndarray, np.ndarray]  # (evaluation steps, points (steps, objectives)), in step order


def load(run_dirs: list[str]) -> tuple[dict[int, pd.DataFrame], dict[int, list[pd.DataFrame]]]:
    """Run directories -> (grid results by seed, search results by seed)."""
    grids: dict[int, pd.DataFrame] = {}
    searches: dict[int, list[pd.DataFrame]] = {}
    for run_dir in map(Path, run_dirs):
        named = re.fullmatch(r"(.+)-seed(\d+)", run_dir.name)
        if named is None or not (run_dir / "results.parquet").exists():
            raise SystemExit(f"{run_dir}: not a finished bench_sweep.py run (NAME-seedN with results.parquet)")
        frame = pd.read_parquet(run_dir / "results.parquet")
        frame = frame[frame["status"] == "ok"]
        if named[1] == "grid":
            grids[int(named[2])] = frame
        else:
            searches.setdefault(int(named[2]), []).append(frame)
    if not grids or set(grids) != set(searches):
        raise SystemExit(f"need a grid and searches at every seed: grids at {sorted(grids)}, "
                         f"searches at {sorted(searches)}")
    return grids, searches


def trajectories(frames: list[pd.DataFrame], algorithm: str) -> dict[tuple[tuple[str, float], ...], Trajectory]:
    """Every setting of ``algorithm`` trained to its run's last step -> its trajectory (the trial with the most
    evaluation points: a grid's trial is scored at two)."""
    out: dict[tuple[tuple[str, float], ...], Trajectory] = {}
    for frame in frames:
        sub = frame[frame["algorithm"] == algorithm]
        hps = sorted(c for c in sub.columns if c.startswith("hp/") and sub[c].notna().all())
        last = sub["step"].max()
        for _, points in sub.groupby("trial_id"):
            if points["step"].max() < last:  # stopped early: its setting is not known to its end
                continue
            key = tuple((c.removeprefix("hp/"), float(f"{points[c].iloc[0]:.6g}")) for c in hps)
            points = points.sort_values("step")
            if len(points) > len(out.get(key, ((), ()))[0]):
                out[key] = (points["step"].to_numpy(), points[OBJECTIVES].to_numpy(dtype=float))
    return out


def designs(steps: list[np.ndarray], budget: int) -> list[tuple[int, ...]]:
    """Every way to end trials with these evaluation ``steps`` within ``budget`` steps in all, none able to go on
    to its next point: tuples of how many points each keeps."""
    out = []
    for kept in itertools.product(*[range(1, len(s) + 1) for s in steps]):
        ends = list(zip(steps, kept, strict=True))
        cost = sum(int(s[k - 1]) for s, k in ends)
        if cost <= budget and all(k == len(s) or cost - s[k - 1] + s[k] > budget for s, k in ends):
            out.append(kept)
    return out


def bound(grids: dict[int, pd.DataFrame], searches: dict[int, list[pd.DataFrame]], algorithm: str,
          budget: int, max_trials: int) -> dict[str, Any]:
    """Fixed designs within ``budget`` over the settings trained at every seed: how many reach each seed's grid."""
    seeds = sorted(grids)
    target = {seed: hv(grids[seed][grids[seed]["algorithm"] == algorithm][OBJECTIVES].to_numpy(dtype=float))
              for seed in seeds}
    mean_target = float(np.mean(list(target.values())))
    per_seed = {seed: trajectories([grids[seed], *searches[seed]], algorithm) for seed in seeds}
    settings = sorted(set.intersection(*(set(t) for t in per_seed.values())))
    tried = 0
    own = dict.fromkeys(seeds, 0)
    reaching_all = reaching_mean = 0
    best: tuple[float, Any] = (-np.inf, None)
    cache: dict[tuple[tuple[int, ...], ...], list[tuple[int, ...]]] = {}
    first = per_seed[seeds[0]]
    for k in range(1, max_trials + 1):
        for chosen in itertools.combinations(settings, k):
            steps = [first[s][0] for s in chosen]
            if any(not np.array_equal(per_seed[seed][s][0], first[s][0]) for seed in seeds for s in chosen):
                continue  # scored at other steps at another seed: not one design
            shape = tuple(tuple(int(x) for x in s) for s in steps)
            for kept in cache.setdefault(shape, designs(steps, budget)):
                ends = list(zip(chosen, kept, strict=True))
                values = {seed: hv(np.concatenate([per_seed[seed][s][1][:n] for s, n in ends])) for seed in seeds}
                tried += 1
                for seed in seeds:
                    own[seed] += values[seed] >= target[seed] - 1e-12
                margin = min(values[seed] - target[seed] for seed in seeds)
                reaching_all += margin >= -1e-12
                reaching_mean += min(values.values()) >= mean_target - 1e-12
                if margin > best[0]:
                    best = (margin, [{**dict(s), "steps": int(shape[i][n - 1])} for i, (s, n) in enumerate(ends)])
    return {"algorithm": algorithm, "budget": budget, "settings": len(settings), "designs": tried,
            "grid_hv": {str(seed): round(target[seed], 4) for seed in seeds}, "grids_mean": round(mean_target, 4),
            "reaching_grid": {str(seed): own[seed] for seed in seeds}, "reaching_every_grid": reaching_all,
            "reaching_grids_mean_at_every_seed": reaching_mean,
            "best_design": best[1], "best_margin": round(float(best[0]), 4)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", help="bench_sweep.py run directories (NAME-seedN), grid-seedN among them")
    p.add_argument("--budgets", nargs="+", type=int, default=[405],
                   help="steps in all, one bound each (default: 405, 15%% of the grid's 2,700)")
    p.add_argument("--max-trials", type=int, default=4)
    p.add_argument("--algorithms", nargs="+", default=["gd", "npo"])
    p.add_argument("--json", help="write the figures here instead of benchmarks/results/design_bound.json")
    args = p.parse_args()
    grids, searches = load(args.runs)
    rows = [bound(grids, searches, algo, budget, args.max_trials)
            for budget in args.budgets for algo in args.algorithms]
    for row in rows:
        print(f"{row['algorithm']}: {row['designs']} fixed designs of up to {args.max_trials} of {row['settings']} "
              f"settings within {row['budget']} steps; reaching each seed's grid {row['reaching_grid']} "
              f"(grids {row['grid_hv']}), every seed's: {row['reaching_every_grid']}; the grids' mean "
              f"{row['grids_mean']} at every seed: {row['reaching_grids_mean_at_every_seed']}; best margin "
              f"{row['best_margin']:+.4f} with {row['best_design']}")
    write_summary("design_bound", rows, args.json)


if __name__ == "__main__":
    main()
