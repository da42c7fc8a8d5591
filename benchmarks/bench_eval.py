"""Benchmark: LUME evaluation through Ray Data (batched, actor pool) vs the challenge's one-prompt-at-a-time loop.

Input:  a LUME-format directory (default: ``lume-ray data synth`` output, ~400 rows with member /
        non-member documents and a utility set) and a tiny target (default: ``lume-ray target build``
        on that data, cached), sizes in rows.
Output: the floor (seconds for an actor pool that only loads the model: the least any call costs), then
        a table on stdout: rows, items, models per call, seconds of :func:`lume_ray.evaluate.runner.evaluate_many`
        (Ray Data, one pipeline for all the models) and of :func:`lume_ray.evaluate.runner.evaluate_reference` (once
        per model), the speed ratio, and how many generations differ (float near-ties under batching); in float32,
        or with ``--exact`` in any dtype, it asserts identical row scores and metrics for every model at every size.
        The same figures in benchmarks/results/eval.json.

    python benchmarks/bench_eval.py                      # synth 40 docs/task, preset tiny, 100/200/400 rows
    python benchmarks/bench_eval.py --workers 1          # 1 actor vs the 1-thread reference
    python benchmarks/bench_eval.py --points 1 4         # 1 model per call, and 4 (a trial's evaluation points)
    python benchmarks/bench_eval.py --dtype bfloat16 --exact   # the challenge's procedure, distributed

``--points K`` evaluates K models per call, as a sweep trial evaluates its K evaluation points: the target and
K-1 copies with noise added to the weights (noise std 1%, 2%, ... of each tensor's std: stand-ins for
checkpoints along an unlearning run); for the random model, K random initializations.

``--workers N`` model actors of one thread each (Ray sets that); the reference runs with
``--ref-threads`` torch threads (default 1: on a shared 2-core box two OpenMP threads were measured
up to 17x slower than one for these tiny models, which would inflate the ratio). Ray is started once,
before timing (a sweep shares one cluster); its start-up is printed apart. Each evaluate() call
includes starting its actor pool and loading the model in each actor.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path
from typing import Any

from summary import write_summary  # benchmarks/summary.py, beside this script

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def _same(ray_res: dict[str, Any], ref_res: dict[str, Any], ray_rows: Any, ref_rows: Any, strict: bool = True) -> int:
    """Identical row scores and metrics (NLL-derived ones up to float noise from padding); returns how
    many generations differ at all (a batched float near-tie can flip one token late in a long babble).
    ``strict`` False: only count the differing generations."""
    if not strict:
        return int((ray_rows["generation"] != ref_rows["generation"]).sum())
    assert ray_rows["score"].tolist() == ref_rows["score"].tolist(), "row scores differ"
    for key, value in ref_res.items():
        if key in ("settings", "seconds", "notes", "counts"):
            continue
        got = ray_res[key]
        if isinstance(value, float) and isinstance(got, float):
            assert math.isclose(got, value, rel_tol=1e-4, abs_tol=1e-5), (key, got, value)
        else:
            assert got == value, (key, got, value)
    return int((ray_rows["generation"] != ref_rows["generation"]).sum())


def random_copy(model: Path, out: Path, seed: int = 0) -> Path:
    """The target's architecture and tokenizer with fresh random weights: it never emits eos, so every
    row generates all max_new_tokens, like an unlearned model that babbles (the expensive case)."""
    if (out / "config.json").is_file():
        return out
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from lume_ray.model import save_model, save_tokenizer

    torch.manual_seed(seed)
    save_model(AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model)), out)
    save_tokenizer(AutoTokenizer.from_pretrained(model), out)
    return out


def perturbed_copy(model: Path, out: Path, noise: float, seed: int) -> Path:
    """``model`` with N(0, noise * std(w)) added to each weight tensor: a distinct checkpoint of the same shape."""
    if (out / "config.json").is_file():
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    m = AutoModelForCausalLM.from_pretrained(model)
    with torch.no_grad():
        for w in m.parameters():
            if w.numel() > 1:
                w.add_(torch.randn_like(w) * noise * w.std())
    from lume_ray.model import save_model, save_tokenizer

    save_model(m, out)
    save_tokenizer(AutoTokenizer.from_pretrained(model), out)
    return out


def family(name: str, model: Path, work: Path, k: int) -> list[Path]:
    """K distinct models: the target and noisy copies, or K random initializations."""
    if name == "target":
        return [model] + [perturbed_copy(model, work / f"target_noise{i}", 0.01 * i, i) for i in range(1, k)]
    return [random_copy(model, work / "random")] + [random_copy(model, work / f"random{i}", seed=i) for i in range(1, k)]


class _LoadOnly:
    """A model actor that only starts: imports torch + transformers and loads the model, then echoes rows."""

    def __init__(self, path: str) -> None:
        from lume_ray.model import load_model

        self.model = load_model(path)

    def __call__(self, batch: Any) -> Any:
        return batch


def pool_floor(model: Path, workers: int) -> float:
    """Seconds for a Ray Data actor pool of ``workers`` actors that load the model and do nothing else: the
    least any actor-pool evaluation costs per call on this machine, however few rows it scores."""
    import ray.data

    t = time.perf_counter()
    ray.data.from_items([{"i": i} for i in range(workers)], override_num_blocks=workers).map_batches(
        _LoadOnly, fn_constructor_kwargs={"path": str(model)}, batch_size=1, num_cpus=1,
        compute=ray.data.ActorPoolStrategy(size=workers, max_tasks_in_flight_per_actor=1)).take_all()
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--work", default="runs/bench_eval", help="where synthetic data and the target are cached")
    p.add_argument("--data", default=None, help="LUME directory (default: synthesize into WORK/data)")
    p.add_argument("--docs-per-task", type=int, default=40)
    p.add_argument("--target", default=None, help="model directory (default: build into WORK/target)")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--rows", type=int, nargs="+", default=[100, 200, 400], help="total rows (half per split)")
    p.add_argument("--workers", type=int, default=2, help="model actors (default: this machine's 2 cores)")
    p.add_argument("--ref-threads", type=int, default=1, help="torch threads of the reference loop")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    p.add_argument("--exact", action="store_true", help="actors score one item at a time, unpadded (eval --exact)")
    p.add_argument("--points", type=int, nargs="+", default=[1], help="models per call (a trial's evaluation points)")
    p.add_argument("--models", nargs="+", default=["target", "random"], choices=("target", "random"),
                   help="target: the memorized model (stops at eos); random: same shape, random weights")
    args = p.parse_args()

    import pandas as pd
    import torch

    work = Path(args.work)
    data = Path(args.data) if args.data else work / "data"
    if args.data is None and not (data / "forget.jsonl").is_file():
        from lume_ray.synth import write_dataset

        write_dataset(data, docs_per_task=args.docs_per_task, seed=0)
    model = Path(args.target) if args.target else work / "target"
    if args.target is None:
        from lume_ray.target import build_target

        build_target(model, data, preset=args.preset, progress=True)  # a cache hit after the first run

    import ray

    t0 = time.perf_counter()
    # workers + 1 logical CPUs: one per actor and one for Ray Data's own tasks (docs/ray.md section 4).
    ray.init(num_cpus=args.workers + 1, include_dashboard=False, log_to_driver=False)
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    ray_start = time.perf_counter() - t0

    from lume_ray.config import EvalConfig
    from lume_ray.evaluate.runner import evaluate_many, evaluate_reference

    print(f"target {model}  data {data}  workers {args.workers}  reference threads {args.ref_threads}  batch {args.batch_size}  "
          f"max_new_tokens {args.max_new_tokens}  dtype {args.dtype}{'  exact' if args.exact else ''}  "
          f"(ray.init {ray_start:.1f} s, not in the table)")
    floor = pool_floor(model, args.workers)
    print(f"floor: a pool of {args.workers} actors that only load the model takes {floor:.1f} s per call")
    print(f"{'model':<7} {'rows':>5} {'items':>6} {'K':>3} {'ray_s':>8} {'reference_s':>12} {'ratio':>6}  "
          "gen_diff  task_aggregate  mia_auc  utility")
    torch.set_num_threads(args.ref_threads)
    table: list[dict[str, object]] = []
    for name, n, k in ((m, n, k) for m in args.models for n in args.rows for k in args.points):
        models = family(name, model, work, k)
        settings = EvalConfig(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, workers=args.workers,
                              limit=max(1, n // 2), dtype=args.dtype, exact=args.exact)
        out = work / f"out_{name}_{n}_{k}"
        t = time.perf_counter()
        results = evaluate_many(models, data, settings, out_dirs=[out / f"ray{i}" for i in range(k)], progress=False)
        ray_s = time.perf_counter() - t
        t = time.perf_counter()
        refs = [evaluate_reference(m, data, settings, out_dir=out / f"reference{i}") for i, m in enumerate(models)]
        ref_s = time.perf_counter() - t
        strict = args.exact or args.dtype == "float32"  # batched bfloat16 may change rows: counted, not asserted
        diff = sum(_same(res, ref, pd.read_parquet(out / f"ray{i}" / "rows.parquet"),
                         pd.read_parquet(out / f"reference{i}" / "rows.parquet"), strict)
                   for i, (res, ref) in enumerate(zip(results, refs, strict=True)))
        res = results[0]
        items = sum(res["counts"]["rows"].values()) + res["counts"]["members"] + res["counts"]["nonmembers"] \
            + (1 if res["settings"]["utility_style"] == "open-instruct" else 4) * res["counts"]["utility_questions"]
        rows = sum(res["counts"]["rows"].values())
        print(f"{name:<7} {rows:>5} {items:>6} {k:>3} {ray_s:>8.1f} {ref_s:>12.1f} {ref_s / ray_s:>6.2f} {diff:>9}  "
              f"{res['task_aggregate']:.4f}          {res['mia_auc']:.4f}   {res['utility']:.4f}", flush=True)
        table.append({"model": name, "rows": rows, "items": items, "points": k, "ray_s": round(ray_s, 1),
                      "reference_s": round(ref_s, 1), "ratio": round(ref_s / ray_s, 2), "gen_diff": diff,
                      "task_aggregate": res["task_aggregate"], "mia_auc": res["mia_auc"], "utility": res["utility"]})
    ray.shutdown()
    write_summary("eval", {"workers": args.workers, "dtype": args.dtype, "exact": args.exact,
                           "max_new_tokens": args.max_new_tokens, "floor_s": round(floor, 1), "table": table})


if __name__ == "__main__":
    main()
