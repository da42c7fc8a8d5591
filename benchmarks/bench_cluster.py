"""Quickstart sweep on a local Ray cluster of 1 node vs 2 nodes -> wall seconds of each and their ratio.

Input:  an experiment (default experiments/quickstart.yaml) and --set overrides (a small budget by default).
Output: printed figures: cluster start, job wall time (submit -> SUCCEEDED) per node count, the ratio;
        the same in benchmarks/results/cluster.json.

Each run starts its own cluster on 127.0.0.1 (`ray start` processes held by pid, stopped by pid; never
`ray stop`), submits the sweep through the same code as `lume-ray submit`, and waits for it. Nodes are
logical: on one machine, 2 nodes x N CPUs double the slots Tune can fill, not the cores, so the ratio
here measures scheduling headroom (concurrent trials) rather than a real second machine.

    python benchmarks/bench_cluster.py --cpus-per-node 2 --set sweep.num_samples=2 "sweep.algorithms=[ga,npo]"
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from lume_ray.cluster.jobs import build_submission, connect, log_tail, submit, wait

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the local cluster is a test helper (tests/local_cluster.py), not in the package
from summary import write_summary  # noqa: E402  (benchmarks/summary.py, beside this script)

from tests.local_cluster import LocalRayCluster  # noqa: E402


def run(nodes: int, cpus: int, experiment: Path, overrides: list[tuple[str, str]], out_root: Path,
        timeout_s: float) -> tuple[float, float, str]:
    t0 = time.perf_counter()
    cluster = LocalRayCluster(workers=nodes - 1, cpus_per_node=cpus, env={"RAY_AUTH_MODE": "disabled"})
    try:
        cluster.start()
        started = time.perf_counter() - t0
        run_dir = out_root / f"nodes{nodes}"
        sub = build_submission(experiment, [*overrides, ("output_dir", str(run_dir))])
        client = connect(cluster.address)
        t1 = time.perf_counter()
        job = submit(client, sub)
        state = wait(client, job, timeout_s=timeout_s, poll_s=2.0)
        wall = time.perf_counter() - t1
        if state != "SUCCEEDED":
            print(f"[bench] {nodes} node(s): job {job} ended {state}; last log lines:\n{log_tail(client, job)}")
        elif not (run_dir / "results.parquet").is_file():
            state = "NO-RESULTS"
        return started, wall, state
    finally:
        cluster.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experiment", default=str(ROOT / "experiments" / "quickstart.yaml"))
    ap.add_argument("--cpus-per-node", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds per job")
    ap.add_argument("--set", dest="overrides", nargs="+", default=["sweep.num_samples=2", "sweep.algorithms=[ga,npo]"],
                    metavar="KEY=VALUE")
    args = ap.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    overrides = [tuple(kv.split("=", 1)) for kv in args.overrides]
    out_root = Path(tempfile.mkdtemp(prefix="bench_cluster_"))
    print(f"[bench] {args.experiment} {' '.join(args.overrides)}; {args.cpus_per_node} CPUs per node; "
          f"machine has {os.cpu_count()} cores; runs in {out_root}")
    results = {}
    for nodes in (1, 2):
        started, wall, state = run(nodes, args.cpus_per_node, Path(args.experiment), overrides,  # type: ignore[arg-type]
                                   out_root, args.timeout)
        results[nodes] = wall
        print(f"[bench] {nodes} node(s): cluster up in {started:.1f} s, sweep job {state} in {wall:.1f} s")
    print(f"[bench] wall-time ratio 1 node / 2 nodes: {results[1] / results[2]:.2f}")
    write_summary("cluster", {"cpus_per_node": args.cpus_per_node, "overrides": args.overrides,
                              "wall_s": {f"{n}_node": round(w, 1) for n, w in results.items()},
                              "ratio_1_over_2": round(results[1] / results[2], 2)})


if __name__ == "__main__":
    main()
