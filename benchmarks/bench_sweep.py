"""Benchmark: hypervolume of the front against unlearning steps spent, each sampler vs the full grid.

On the quickstart data and target, for gd and npo, on two spaces:
  suited    lr 3e-4..3e-3 (log), retain weight alpha 1..5 (log), up to 10 epochs; grid {3e-4,1e-3,3e-3} x {1,2,5}
  boundary  lr 1e-5..5e-5 (log), alpha 1..5 (log), up to 10 epochs; grid {1e-5,2e-5,5e-5} x {1,2,5}
(npo's beta fixed at 0.1 in both). The grid trains its 9 settings per algorithm to 10 epochs and is evaluated
at 5 and 10 epochs, i.e. its 18 (setting, steps) points. Each sampler gets the same budget, 9 trials per
algorithm, every trial trained to 10 epochs and evaluated at 4 evenly spaced points (2.5, 5, 7.5, 10 epochs).
Hypervolume: objectives forget_efficacy, retain_score and utility (all scores in [0, 1], maximized), reference 0,
over every evaluated point of the trials finished so far, trials in the order they finished.

Prints, per space and algorithm, the unlearning steps each search needed to reach the grid's final hypervolume,
as a fraction of the grid's steps: the classic grid, which trains every (setting, steps) pair as its own run
(what a bash grid does: 9 x 5 + 9 x 10 epochs), and lume-ray's grid sampler, which trains each setting once
through its trajectory (9 x 10 epochs); also the steps to reach 99% of it (utility, scored on 64 questions, moves
in steps of 1/64, so one point can be ~1% of the hypervolume). Writes benchmarks/results/sweep.json and
benchmarks/results/sweep.png (the runs stay in RUN).

    python benchmarks/bench_sweep.py [--out runs/bench_sweep] [--spaces suited boundary] [--algorithms gd npo]
                                     [--samplers gp tpe random] [--seeds 0 1] [--no-paired] [--early-stop]

The grid runs at every seed and each search is measured against the grid of its own seed (``--paired``, the
default: the same seed draws the same batch at each step, so a search's trial at a grid setting retraces the
grid's run); with ``--no-paired`` every search is measured against the grid at seed 0, and seed-to-seed noise in
the trained points (the grid's hypervolume moved by 0.06 between seeds) moves the target more than the search does.

A sampler named with "-plain" ("random-plain") runs without the initial design (``sweep.initial_design: off``):
plain random search, the baseline a user would otherwise run; without the suffix every sampler starts with the
same design (the box's corners and centre), so the comparison isolates the sampler. A sampler named with "-inset"
("gp-inset-ev8") moves the design's corners a quarter of each range inside the box
(``sweep.initial_design_inset: 0.25``: lr 5.3e-4 and 1.7e-3, alpha 1.5 and 3.3 on the suited space). A sampler
named with "-evN" ("gp-ev8", "random-plain-ev8") evaluates each trial at N evenly spaced points instead of 4: more
points of each trajectory, the same training steps, N/4 times the evaluations. A sampler named with "-warm"
("gp-warm-ev8") starts each seed's run from an earlier run's points (``--warm-start``; ``--warm-from
SEED=RUN_DIR``, e.g. another seed's run of the same space): prior knowledge of where the front lies, whose steps
the curve does not count; the design points that run holds are left out (another run of the same space holds
them all). ``--es-only`` runs the early-stopping runs (and the grids) without the first sampler's own runs.

``--es-first-exempt`` runs early stopping as it was before provisional verdicts (the first trials to reach a rung
always continue), to measure what they change. ``--early-stop`` adds "SAMPLER+es" runs (``--es-mode wait``, the job held at each rung until judged:
"SAMPLER+es-wait"; ``--es-rules front``: "...-front", with keep_front) of the first sampler: the same sampler with
multi-objective successive halving at rungs of 2.5 and 5 epochs keeping a third, given 3x the trials (``--es-trials``) and cut at the same
budget in steps as the run without early stopping (9 trials x 10 epochs per algorithm). Every run without early
stopping is also replayed through early stopping's rule, with and without ``keep_front`` (its trials were evaluated
to their ends): the trials it would have stopped, the steps saved, and the points of the run's final front it
would have lost.

Every search is also measured against perfect foresight (``foresight`` in sweep.json): the fewest steps any
choice of at most 3 of its trials (each ended at its last step or at early stopping's rungs) needs to reach the
grid, and the share of pairs of its full trials that reach it; and the same over the trials of every search run
at that seed ("all runs"). No search that reaches the grid within 3 of these trials can do it in fewer steps: the
target asks this of a search's first trials, chosen before it has seen any.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from summary import RESULTS, write_summary  # benchmarks/summary.py, beside this script

from lume_ray.config import load_experiment
from lume_ray.data import load_lume
from lume_ray.pipeline import prepare_data, prepare_target
from lume_ray.report.pareto import hypervolume, pareto_mask
from lume_ray.run_dir import RunDir
from lume_ray.search.scheduler import ParetoSuccessiveHalving, judge
from lume_ray.search.sweep import read_warm_start, run_sweep

QUICKSTART = Path(__file__).resolve().parents[1] / "experiments" / "quickstart.yaml"
SPACES = {"suited": [3e-4, 1e-3, 3e-3], "boundary": [1e-5, 2e-5, 5e-5]}
ALPHAS = [1.0, 2.0, 5.0]
OBJECTIVES = ["forget_efficacy", "retain_score", "utility"]
TRIALS = len(SPACES["suited"]) * len(ALPHAS)  # the grid's settings per algorithm: every sampler's budget
DIRECTIONS = ["max"] * len(OBJECTIVES)  # every objective is a score in [0, 1], maximized


def hv(points: np.ndarray) -> float:
    """Hypervolume of ``points`` (N, objectives) against the reference 0."""
    return hypervolume(points, DIRECTIONS, [0.0] * len(OBJECTIVES))


def space(lrs: list[float], max_steps: int, algorithm: str) -> dict[str, Any]:
    out: dict[str, Any] = {"lr": {"loguniform": [min(lrs), max(lrs)], "grid": lrs},
                           "steps": {"max": max_steps}, "alpha": {"loguniform": [1.0, 5.0], "grid": ALPHAS}}
    if algorithm == "npo":
        out["beta"] = 0.1
    return out


def curve(frame: pd.DataFrame, algorithm: str) -> tuple[np.ndarray, np.ndarray]:
    """(cumulative trained steps, hypervolume) after each finished trial of ``algorithm``."""
    sub = frame[frame["algorithm"] == algorithm]
    trials = sub.groupby("trial_id").agg(finished_at=("finished_at", "max"), steps=("trained_steps", "max"))
    trials = trials.sort_values("finished_at")
    ok = sub[sub["status"] == "ok"]
    steps, hvs, spent = [0.0], [0.0], 0.0
    seen: list[str] = []
    for trial_id, row in trials.iterrows():
        spent += float(row["steps"])
        seen.append(str(trial_id))
        pts = ok[ok["trial_id"].isin(seen)][OBJECTIVES].to_numpy(dtype=float)
        steps.append(spent)
        hvs.append(hv(pts))
    return np.array(steps), np.array(hvs)


def replay_early_stop(frame: pd.DataFrame, algorithm: str, rungs: list[int], keep: float,
                      keep_front: bool = False, target: float | None = None) -> dict[str, Any]:
    """Early stopping's rule (:func:`lume_ray.search.scheduler.judge`) replayed on a run without it, whose every
    trial was evaluated to its end: which trials it would have stopped, the steps that saves, and the points of
    the run's final front it would have lost (a front point past its trial's stop). Trials arrive at the rungs in
    the order they finished, each through all its rungs before the next (a serial approximation of ASHA).
    With ``target`` (the grid's final hypervolume): the steps the replayed run spent to reach it, each stopped trial
    costing its rung. An estimate: a live run would also spend the saved steps on further trials, and its sampler
    would see fewer points."""
    sub = frame[(frame["algorithm"] == algorithm) & (frame["status"] == "ok")]
    order = sub.groupby("trial_id")["finished_at"].max().sort_values().index
    tables: dict[int, dict[str, list[float]]] = {r: {} for r in rungs}
    stop_at: dict[str, int] = {}
    for trial_id in order:
        points = sub[sub["trial_id"] == trial_id].set_index("step")
        for rung in rungs:
            if rung not in points.index or rung >= points.index.max():
                continue
            tables[rung][str(trial_id)] = points.loc[rung, OBJECTIVES].to_numpy(dtype=float).tolist()
            if not judge(tables[rung], str(trial_id), keep, DIRECTIONS, keep_front)[0]:
                stop_at[str(trial_id)] = rung
                break
    values = sub[OBJECTIVES].to_numpy(dtype=float)
    front = pareto_mask(values, DIRECTIONS)
    lost = np.array([t in stop_at and s > stop_at[t] for t, s in zip(sub["trial_id"], sub["step"], strict=True)])
    kept_hv = hv(values[~lost])
    full = sub.groupby("trial_id")["step"].max()
    reached = None
    if target is not None:  # the run as early stopping would have left it: points past a stop gone, steps cut there
        replayed = sub[~lost].copy()
        stops = replayed["trial_id"].astype(str).map(stop_at)
        replayed["trained_steps"] = stops.fillna(replayed["trained_steps"])
        reached = reach(target, *curve(replayed, algorithm))
    return {"trials": len(order), "stopped": len(stop_at), "steps_to_reach_grid": reached,
            "steps_saved": int(sum(full[t] - r for t, r in stop_at.items())), "steps": int(full.sum()),
            "front_points": int(front.sum()), "front_lost": int((front & lost).sum()),
            "hv_kept": kept_hv / hv(values)}


def foresight(frame: pd.DataFrame, algorithm: str, target: float, ends: list[int],
              max_trials: int = 3) -> dict[str, Any]:
    """What perfect foresight could have done with the trajectories ``frame`` trained: the fewest steps that any
    choice of at most ``max_trials`` of its trials, each trained only to one of ``ends`` (its last step, or also
    the rungs where early stopping may end it), needs for its points to reach ``target`` (the grid's final
    hypervolume); None when no choice does. Also the share of pairs of trials trained to their ends whose points
    reach it: the chance that a search whose first two trials are two of these trials meets ``target`` in them.
    A lower bound on the steps of a search that reaches the grid within ``max_trials`` of these trials (more,
    shorter trials are not tried): a search knows its trials only after training them."""
    sub = frame[(frame["algorithm"] == algorithm) & (frame["status"] == "ok")]
    prefix: dict[tuple[str, int], np.ndarray] = {}  # (trial, end) -> its points up to that step
    cuts: dict[str, list[tuple[str, int]]] = {}  # trial -> its (trial, end) keys
    for trial_id, points in sub.groupby("trial_id"):
        last = int(points["step"].max())
        for end in sorted({e for e in ends if e < last} | {last}):
            prefix[(str(trial_id), end)] = points[points["step"] <= end][OBJECTIVES].to_numpy(dtype=float)
            cuts.setdefault(str(trial_id), []).append((str(trial_id), end))
    trials = sorted(cuts)
    best: tuple[int, list[tuple[str, int]]] | None = None
    for k in range(1, max_trials + 1):
        for chosen in itertools.combinations(trials, k):
            for cut in itertools.product(*[cuts[t] for t in chosen]):
                cost = sum(end for _, end in cut)
                if best is not None and cost >= best[0]:
                    continue
                if hv(np.concatenate([prefix[key] for key in cut])) >= target - 1e-12:
                    best = (cost, list(cut))
    longest = sub["step"].max()
    full = [points[OBJECTIVES].to_numpy(dtype=float) for _, points in sub.groupby("trial_id")
            if points["step"].max() == longest]  # trained to their ends, not stopped early
    pairs = [hv(np.concatenate([a, b])) >= target - 1e-12
             for a, b in itertools.combinations(full, 2)]
    return {"foresight_steps": None if best is None else best[0],
            "foresight_trials": None if best is None else [f"{t}@{end}" for t, end in best[1]],
            "pairs_reaching": float(np.mean(pairs)) if pairs else None, "pairs": len(pairs)}


def reach(target: float, steps: np.ndarray, hv: np.ndarray) -> float | None:
    hit = np.nonzero(hv >= target - 1e-12)[0]
    return float(steps[hit[0]]) if len(hit) else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/bench_sweep")
    p.add_argument("--spaces", nargs="+", default=list(SPACES), choices=list(SPACES))
    p.add_argument("--algorithms", nargs="+", default=["gd", "npo"])
    p.add_argument("--samplers", nargs="+", default=["gp", "tpe", "random"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--max-concurrent", type=int, default=3)
    p.add_argument("--paired", action=argparse.BooleanOptionalAction, default=True,
                   help="run the grid at every seed and measure each search against its own seed's grid "
                   "(--no-paired: against the grid at seed 0)")
    p.add_argument("--early-stop", action="store_true", help="also run the first sampler with early stopping")
    p.add_argument("--no-run", action="store_true",
                   help="run nothing: summarize what the run directories hold (a cut run's trial directories too)")
    p.add_argument("--es-seeds", nargs="+", type=int, help="seeds of the early-stopping runs (default: --seeds)")
    p.add_argument("--es-trials", type=int, default=3 * TRIALS,
                   help="trials per algorithm with early stopping (the curve is cut at the budget in steps anyway)")
    p.add_argument("--es-mode", choices=["pipelined", "wait"], default="pipelined",
                   help="early stopping's evaluation: while the job trains on (pipelined), or the job held at each "
                   "rung until its point is scored and judged (wait)")
    p.add_argument("--es-rules", nargs="+", choices=["fraction", "front"], default=["fraction"],
                   help="early stopping's rules: the kept fraction, or also every point on a rung's front "
                   "(keep_front; runs named SAMPLER+es...-front)")
    p.add_argument("--es-first-exempt", action="store_true",
                   help="early stopping's rule before provisional verdicts, for comparison: the first trials to "
                   "reach a rung always continue (the scheduler runs in this process)")
    p.add_argument("--warm-from", nargs="+", default=[], metavar="SEED=RUN_DIR",
                   help="the earlier run each seed's '-warm' run starts from (its results.parquet)")
    p.add_argument("--es-only", action="store_true", help="with --early-stop: leave out the first sampler's own runs")
    args = p.parse_args()
    args.es_seeds = args.es_seeds or args.seeds
    try:
        warm_from = {int(k): v for k, _, v in (w.partition("=") for w in args.warm_from)}
    except ValueError:
        p.error(f"--warm-from: expected SEED=RUN_DIR pairs, got {args.warm_from}")
    if args.es_first_exempt:  # the rule before provisional verdicts (commit ea74c5c): never judged again
        ParetoSuccessiveHalving.judged_again = lambda self, algorithm, step, trial_id: True  # type: ignore[method-assign]
    out = Path(args.out)
    base = load_experiment(QUICKSTART, [("output_dir", "runs/quickstart")]).resolved()
    data = prepare_data(base)
    model = prepare_target(base, data)  # the quickstart target (cached)
    per_epoch = math.ceil(len(load_lume(data).forget) / base.train.batch_size)
    max_steps = 10 * per_epoch
    summary: dict[str, Any] = {"steps_per_epoch": per_epoch, "max_steps": max_steps, "objectives": OBJECTIVES,
                               "trials_per_algorithm": TRIALS, "runs": {}}
    curves: dict[tuple[str, str, str, int], tuple[np.ndarray, np.ndarray]] = {}
    replays: dict[tuple[str, str, str, int, bool], dict[str, Any]] = {}
    frames: dict[tuple[str, str, int], pd.DataFrame] = {}  # (space, run name, seed) -> its results
    es_base = f"{args.samplers[0]}+" + ("es" if args.es_mode == "pipelined" else "es-wait")
    es_names = [es_base + ("-front" if rule == "front" else "") for rule in args.es_rules] if args.early_stop else []
    for space_name in args.spaces:
        lrs = SPACES[space_name]
        grid_seeds = sorted({*args.seeds, *(args.es_seeds if args.early_stop else [])}) if args.paired else [0]
        runs = [("grid", s) for s in grid_seeds]
        runs += [] if args.es_only and args.early_stop else [(args.samplers[0], seed) for seed in args.seeds]
        if args.early_stop:  # right after the sampler it is compared with
            runs += [(es_name, seed) for es_name in es_names for seed in args.es_seeds]
        runs += [(s, seed) for s in args.samplers[1:] for seed in args.seeds]
        for name, seed in runs:
            sampler, es = name.split("+")[0], "+" in name
            sampler, _, ev = sampler.partition("-ev")  # "gp-ev8": evaluated at 8 points, not 4
            points = int(ev) if ev else 4
            warm = sampler.endswith("-warm")  # "gp-warm-ev8": started from --warm-from's run for the seed
            sampler = sampler.removesuffix("-warm")
            if warm and seed not in warm_from:
                p.error(f"{name}: no --warm-from for seed {seed} (given: {sorted(warm_from)})")
            plain = sampler.endswith("-plain")  # "random-plain": the sampler alone, no initial design
            inset = sampler.endswith("-inset")  # "gp-inset": the design's corners a quarter of each range inside
            sampler = sampler.removesuffix("-plain").removesuffix("-inset")
            run_dir = out / space_name / ("grid" if name == "grid" and seed == 0 else f"{name}-seed{seed}")
            overrides = [
                ("output_dir", str(run_dir)), ("seed", str(seed)), ("sweep.sampler", sampler),
                ("sweep.num_samples", str(args.es_trials if es else TRIALS)),
                ("sweep.max_concurrent", str(args.max_concurrent)),
                ("sweep.eval_steps", json.dumps([5 * per_epoch, max_steps] if sampler == "grid" else
                                                [round(max_steps * k / points) for k in range(1, points + 1)])),
                ("sweep.objectives", json.dumps(OBJECTIVES)), ("sweep.algorithms", json.dumps(args.algorithms)),
                ("sweep.report", "false"), ("data.path", data), ("data.synth", "null"), ("target.model", model),
                ("target.build", "null"),
            ]
            overrides += [(f"algorithms.{a}", json.dumps(space(lrs, max_steps, a))) for a in args.algorithms]
            if plain:
                overrides.append(("sweep.initial_design", "off"))
            if inset:
                overrides.append(("sweep.initial_design_inset", "0.25"))
            if es:
                overrides.append(("sweep.early_stop", json.dumps({"rungs": [max_steps // 4, max_steps // 2],
                                                                   "keep": 1 / 3,
                                                                   "pipelined": args.es_mode == "pipelined",
                                                                   "keep_front": name.endswith("-front")})))
            if args.no_run and not (run_dir / "trials").is_dir():
                print(f"{space_name} {name} seed {seed}: not run, left out", flush=True)
                continue
            exp = load_experiment(QUICKSTART, overrides)
            t0 = time.time()
            if not (run_dir / "results.parquet").exists() and not args.no_run:
                run_sweep(exp, resume=(run_dir / "study.json").exists(),
                          warm_start=read_warm_start(warm_from[seed]) if warm else ())
            if (run_dir / "results.parquet").exists():
                frame = pd.read_parquet(run_dir / "results.parquet")
            else:  # --no-run on a run that was cut: its trial directories hold every finished point
                frame = RunDir(run_dir).collect_results({})
                frame = frame[frame["finished_at"].notna()]  # the trials that ended; a running one is not counted
            frames[(space_name, name, seed)] = frame.assign(trial_id=name + "/" + frame["trial_id"].astype(str))
            for algo in args.algorithms:
                if not es and name != "grid":  # what early stopping's rules would have cut from this run
                    grid_curve = curves.get((space_name, algo, "grid", seed if args.paired else 0))
                    for keep_front in (False, True):
                        replays[(space_name, algo, name, seed, keep_front)] = replay_early_stop(
                            frame, algo, [max_steps // 4, max_steps // 2], 1 / 3, keep_front,
                            target=None if grid_curve is None else float(grid_curve[1][-1]))
                steps, hv = curve(frame, algo)
                if es:  # the same budget in steps as the run without early stopping
                    keep = steps <= TRIALS * max_steps
                    steps, hv = steps[keep], hv[keep]
                curves[(space_name, algo, name, seed)] = (steps, hv)
            summary["runs"][str(run_dir)] = {"seconds": round(time.time() - t0), "rows": len(frame),
                                             **({"warm_start": warm_from[seed]} if warm else {})}
            print(f"{space_name} {name} seed {seed}: {len(frame)} rows, {time.time() - t0:.0f} s", flush=True)

    table = []
    for space_name in args.spaces:
        for algo in args.algorithms:
            classic = TRIALS * (5 * per_epoch + max_steps)  # each (setting, steps) pair its own run
            trajectory = float(TRIALS * max_steps)  # lume-ray's grid sampler: each setting once, to its last step
            for sampler in [*args.samplers, *es_names]:
                for seed in args.es_seeds if "+" in sampler else args.seeds:
                    if (space_name, algo, sampler, seed) not in curves:  # --no-run: not run
                        continue
                    grid_seed = seed if args.paired else 0
                    if (space_name, algo, "grid", grid_seed) not in curves:  # --no-run: its grid not run
                        continue
                    steps, hv = curves[(space_name, algo, sampler, seed)]
                    target = float(curves[(space_name, algo, "grid", grid_seed)][1][-1])
                    spent = reach(target, steps, hv)
                    near = reach(0.99 * target, steps, hv)  # utility moves in 1/64 steps: one point is ~1% of HV
                    table.append({"space": space_name, "algorithm": algo, "sampler": sampler, "seed": seed,
                                  "grid_seed": grid_seed, "grid_hv": target, "final_hv": float(hv[-1]),
                                  "steps_to_reach": spent,
                                  "of_classic_grid": None if spent is None else spent / classic,
                                  "of_trajectory_grid": None if spent is None else spent / trajectory,
                                  "steps_to_99pct": near, "of_classic_grid_99pct": None if near is None else near / classic,
                                  "classic_grid_steps": classic, "trajectory_grid_steps": trajectory,
                                  "curve": [[float(s), float(h)] for s, h in zip(steps, hv, strict=True)]})
    summary["table"] = table
    summary["foresight"] = foresights(frames, curves, args, max_steps, classic=TRIALS * (5 * per_epoch + max_steps))
    summary["early_stop_replay"] = [{"space": k[0], "algorithm": k[1], "sampler": k[2], "seed": k[3],
                                     "keep_front": k[4], **v} for k, v in replays.items()]
    frame = pd.DataFrame(table)
    print(frame.drop(columns=["curve"]).to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    agg = frame.groupby(["space", "algorithm", "sampler"]).agg(
        reached=("steps_to_reach", lambda s: int(s.notna().sum())), mean_of_classic=("of_classic_grid", "mean"),
        mean_of_trajectory=("of_trajectory_grid", "mean"), mean_of_classic_99pct=("of_classic_grid_99pct", "mean"),
        final_hv=("final_hv", "mean"), grid_hv=("grid_hv", "mean"))
    print(agg.to_string(float_format=lambda x: f"{x:.3f}"))
    if replays:
        print("early stopping's rule replayed on the runs without it (rungs 2.5 and 5 epochs, keeping a third; "
              "keep_front: also every point on the rung's front):")
        rep = pd.DataFrame(summary["early_stop_replay"])
        rep["reach_of_classic_grid"] = rep["steps_to_reach_grid"] / (TRIALS * (5 * per_epoch + max_steps))
        print(rep.to_string(index=False, float_format=lambda x: f"{x:.4f}"))
        tot = rep.groupby(["space", "keep_front"])[["steps_saved", "steps", "front_lost", "front_points"]].sum()
        tot["saved"], tot["lost"] = tot["steps_saved"] / tot["steps"], tot["front_lost"] / tot["front_points"]
        tot["min_hv_kept"] = rep.groupby(["space", "keep_front"])["hv_kept"].min()
        print(tot.to_string(float_format=lambda x: f"{x:.3f}"))
    if summary["foresight"]:
        print("perfect foresight: the fewest steps any choice of at most 3 of a run's trials (ends: each trial's "
              "last step, or also early stopping's rungs) needs to reach the grid; 'all runs': the trials of every "
              "search at the seed, each trained to its end; pairs: share of pairs of full trials that reach it")
        print(pd.DataFrame(summary["foresight"]).to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    write_summary("sweep", summary)
    plot(curves, args, RESULTS / "sweep.png")
    print(f"wrote {RESULTS / 'sweep.png'}")


def foresights(frames: dict[tuple[str, str, int], pd.DataFrame],
               curves: dict[tuple[str, str, str, int], tuple[np.ndarray, np.ndarray]], args: Any,
               max_steps: int, classic: int) -> list[dict[str, Any]]:
    """:func:`foresight` for every search run against its seed's grid: the run's own trials, with early stopping's
    rungs as ends too, and the pool of every search at that seed, each trial trained to its end (``classic``: the
    bash grid's steps, the share's denominator)."""
    rows = []
    rungs = [max_steps // 4, max_steps // 2]
    for space_name in args.spaces:
        for algo in args.algorithms:
            for seed in sorted({seed for (s, _, seed) in frames if s == space_name}):
                grid = curves.get((space_name, algo, "grid", seed if args.paired else 0))
                searches = {name: f for (s, name, sd), f in frames.items()
                            if s == space_name and sd == seed and name != "grid"}
                if grid is None or not searches:
                    continue
                target = float(grid[1][-1])
                pools = {**{name: (f, [*rungs, max_steps]) for name, f in searches.items()},
                         "all runs": (pd.concat(searches.values()), [max_steps])}
                for name, (f, ends) in pools.items():
                    row = foresight(f, algo, target, ends)
                    steps = row["foresight_steps"]
                    rows.append({"space": space_name, "algorithm": algo, "seed": seed, "runs": name,
                                 "trials": int(f[f["algorithm"] == algo]["trial_id"].nunique()), "grid_hv": target,
                                 **row, "of_classic_grid": None if steps is None else steps / classic})
    return rows


def plot(curves: dict[tuple[str, str, str, int], tuple[np.ndarray, np.ndarray]], args: Any, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, cols = len(args.spaces), len(args.algorithms)
    fig, axes = plt.subplots(rows, cols, figsize=(5.5 * cols, 4 * rows), squeeze=False)
    names = list(dict.fromkeys(sampler for _, _, sampler, _ in curves if sampler != "grid"))
    colors = {"grid": "black", **{name: f"C{k % 10}" for k, name in enumerate(names)}}  # one per run name
    for i, space_name in enumerate(args.spaces):
        for j, algo in enumerate(args.algorithms):
            ax = axes[i][j]
            for (s, a, sampler, seed), (steps, hv) in curves.items():
                if s == space_name and a == algo:
                    ax.step(steps, hv, where="post", color=colors[sampler],
                            linestyle="-" if seed == args.seeds[0] or (sampler == "grid" and seed == 0) else "--",
                            label=f"{sampler} seed {seed}")
            ax.set_title(f"{algo}, {space_name} space")
            ax.set_xlabel("unlearning steps spent")
            ax.set_ylabel("hypervolume")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
