"""Overhead of Ray Train + DeepSpeed on one unlearning step: steps/s of `npo` at 1 worker vs a plain loop.

Input:  a LUME directory (default: the real LUME rows in ../shared/lume, else a small generated set), a
        tiny OLMo preset (randomly initialized; a tokenizer trained on the rows), batch size, step counts.
Output: printed figures: steady-state steps/s of (a) a plain single-process PyTorch loop and (b) the
        same job through ``lume_ray.train.run_unlearning`` (Ray Train, 1 worker, DeepSpeed ZeRO-N), on the
        same model, the same sequence of seeded batches, the same thread count; and their ratio. The same
        figures in benchmarks/results/train.json.

Steady state: the first ``--warmup`` steps and everything outside the step loop (Ray start, worker
start, model load, DeepSpeed init, checkpoints) are excluded; for Ray the step times come from the
job's own per-step log. The plain loop runs before and after the Ray job (the machine is shared).

    python benchmarks/bench_train.py [--preset small] [--batch-size 8] [--steps 40] [--zero 0]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from summary import write_summary  # noqa: E402  (benchmarks/summary.py, beside this script)

from lume_ray.config import TrainConfig, UnlearnJob  # noqa: E402  (after the environment above)

SHARED_LUME = Path(__file__).resolve().parents[2] / "shared" / "lume"


def make_data(directory: Path, rows_per_split: int, seed: int) -> Path:
    """A LUME-format subset: ``rows_per_split`` rows of each split (whole documents kept together)."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for split in ("forget", "retain"):
        src = SHARED_LUME / f"{split}.jsonl"
        if src.is_file():
            lines = src.read_text().splitlines()
        else:  # no real data here: synthetic rows of a similar length
            lines = [json.dumps({"id": f"{split}{i}sc0", "task": "Task1",
                                 "input": " ".join(rng.choice(["the", "river", "painter", "town", "blue", "night"])
                                                   for _ in range(40)),
                                 "output": " ".join(rng.choice(["silver", "door", "sang", "bread"]) for _ in range(30))})
                     for i in range(rows_per_split)]
        (directory / f"{split}.jsonl").write_text("\n".join(lines[:rows_per_split]) + "\n")
    return directory


def make_model(directory: Path, data: Path, preset: str, seed: int) -> tuple[Path, int]:
    from lume_ray.data import join_text, load_lume
    from lume_ray.target import PRESETS, tiny_olmo, train_tokenizer

    rows = load_lume(data).rows
    tok = train_tokenizer([join_text(r.input, r.output) for r in rows], PRESETS[preset].vocab_size)
    model = tiny_olmo(tok, PRESETS[preset], seed=seed)
    model.save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory, sum(t.numel() for t in model.parameters())


def plain_loop(cfg: UnlearnJob, threads: int, warmup: int) -> tuple[float, float, int]:
    """The same steps without Ray or DeepSpeed: torch AdamW, grad clipping 1.0, one process."""
    import torch

    from lume_ray.algorithms import get_algorithm
    from lume_ray.data import load_lume
    from lume_ray.model import collate, encode_pair, load_model
    from lume_ray.train.batches import FORGET_STREAM, RETAIN_STREAM, batch_indices

    torch.set_num_threads(threads)
    torch.manual_seed(cfg.seed)
    model, tok = load_model(cfg.model)
    ref, _ = load_model(cfg.model, with_tokenizer=False)
    ref.requires_grad_(False)
    model.train()
    data = load_lume(cfg.data)
    batch = cfg.train.batch_size
    enc = {s: [encode_pair(tok, r.input, r.output, add_eos=True, max_length=cfg.train.max_length)
               for r in data.split(s)]
           for s in ("forget", "retain")}
    alg = get_algorithm(cfg.algorithm)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    times, cpu = [], []
    for step in range(1, cfg.steps + 1):
        f = collate([enc["forget"][i] for i in batch_indices(len(enc["forget"]), batch, step, cfg.seed,
                                                             FORGET_STREAM)], tok.pad_token_id)
        r = collate([enc["retain"][i] for i in batch_indices(len(enc["retain"]), batch, step, cfg.seed,
                                                             RETAIN_STREAM)], tok.pad_token_id)
        loss, _ = alg.fn(model, f, r, ref, cfg.params)
        loss.item()  # the job reads its loss every step too (divergence check, log line)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        times.append(time.perf_counter())
        cpu.append(time.process_time())
    n = cfg.steps - warmup
    return n / (times[-1] - times[warmup - 1]), n / (cpu[-1] - cpu[warmup - 1]), torch.get_num_threads()


def ray_loop(cfg: UnlearnJob, warmup: int) -> tuple[float, float, float]:
    """Steady-state steps per wall second and per worker CPU second (from the job's per-step log), and
    the job's total wall time."""
    from lume_ray.train import run_unlearning

    res = run_unlearning(cfg)
    if res.status != "completed":
        sys.exit(f"ray job {res.status}: {res.reason}")
    log = [json.loads(line) for line in Path(res.log_path).read_text().splitlines()]
    stamps, cpu = [rec["time"] for rec in log], [rec["cpu_s"] for rec in log]
    n = cfg.steps - warmup
    return n / (stamps[-1] - stamps[warmup - 1]), n / (cpu[-1] - cpu[warmup - 1]), res.wall_s


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--preset", default="small", help="tiny OLMo size (see lume_ray.target.PRESETS)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--zero", type=int, default=0, choices=(0, 2, 3))
    p.add_argument("--rows", type=int, default=256, help="rows per split")
    p.add_argument("--threads", type=int, default=1, help="torch threads = CPUs of the Ray worker")
    p.add_argument("--workdir", default=None)
    args = p.parse_args(argv)

    import ray

    from lume_ray.local_ray import start_local

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-train-"))
    data = make_data(work / "data", args.rows, seed=0)
    model, n_params = make_model(work / "model", data, args.preset, seed=0)
    cfg = UnlearnJob(model=str(model), data=str(data), algorithm="npo", out=str(work / f"out-{time.time_ns()}"),
                     lr=1e-5, steps=args.steps, seed=0,  # one evaluation point: the last step (outside the loop)
                     train=TrainConfig(batch_size=args.batch_size, workers=1, zero=args.zero,
                                       max_length=args.max_length, cpus_per_worker=float(args.threads)))
    # The worker's torch uses the CPUs Ray gives it (OMP_NUM_THREADS); the plain loop gets as many.
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    print(f"model: preset {args.preset}, {n_params / 1e6:.2f} M parameters; batch {args.batch_size} forget + "
          f"{args.batch_size} retain rows, max_length {args.max_length}; {args.steps} steps, first {args.warmup} "
          f"excluded; {args.threads} thread(s)", flush=True)

    plain_a = plain_loop(cfg, args.threads, args.warmup)
    print(f"plain PyTorch loop           : {plain_a[0]:7.2f} steps/s wall, {plain_a[1]:7.2f} steps/CPU-s "
          f"({plain_a[2]} torch threads)", flush=True)
    start_local(num_cpus=max(2, args.threads + 1), object_store_mb=256)  # 127.0.0.1 only, no dashboard
    try:
        ray_wall, ray_cpu, job_wall = ray_loop(cfg, args.warmup)
    finally:
        ray.shutdown()
    print(f"Ray Train + DeepSpeed ZeRO-{args.zero} : {ray_wall:7.2f} steps/s wall, {ray_cpu:7.2f} steps/CPU-s "
          f"(job wall {job_wall:.1f} s incl. startup)", flush=True)
    plain_b = plain_loop(cfg, args.threads, args.warmup)
    print(f"plain PyTorch loop (again)   : {plain_b[0]:7.2f} steps/s wall, {plain_b[1]:7.2f} steps/CPU-s", flush=True)
    plain_wall, plain_cpu = (plain_a[0] + plain_b[0]) / 2, (plain_a[1] + plain_b[1]) / 2
    # Time per step under Ray / time per step in the plain loop. Wall time is what a user waits for but
    # moves with the load of a shared machine; CPU time per step is the steadier measure of overhead.
    print(f"ratio Ray/plain time per step: wall {plain_wall / ray_wall:.3f}x, CPU {plain_cpu / ray_cpu:.3f}x "
          f"(target <= 1.15x)")
    write_summary("train", {"preset": args.preset, "parameters": n_params, "batch_size": args.batch_size,
                            "steps": args.steps, "warmup": args.warmup, "zero": args.zero, "threads": args.threads,
                            "plain_steps_per_s": [round(plain_a[0], 3), round(plain_b[0], 3)],
                            "ray_steps_per_s": round(ray_wall, 3), "job_wall_s": round(job_wall, 1),
                            "ratio_wall": round(plain_wall / ray_wall, 3), "ratio_cpu": round(plain_cpu / ray_cpu, 3)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
