"""Issue 11, "across nodes": one unlearning job whose two Ray Train workers sit on two nodes of a real local
multi-node cluster (placement SPREAD, ZeRO-3) logs the same losses as the same job on one node (the session's
``two_worker_run``, on the one-node cluster of ``ray_local``); its checkpoints and evaluation points land under
the run's directory (storage path inside it), and a re-run with more steps resumes from the checkpoint there.

The two-node jobs run in a driver process of their own, connected to the two-node cluster: this session's Ray
stays untouched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.local_cluster import LocalRayCluster

ROOT = Path(__file__).resolve().parents[1]

DRIVER = """
import json, sys
from pathlib import Path
import ray
from lume_ray.config import UnlearnJob
from lume_ray.train import run_unlearning

address, spec_path, out_path = sys.argv[1:]
ray.init(address=address, log_to_driver=False)
out = {"nodes": [n["NodeID"] for n in ray.nodes() if n["Alive"]], "runs": []}
for run in json.loads(Path(spec_path).read_text()):
    res = run_unlearning(UnlearnJob.model_validate(run["job"]), storage_path=run["storage"])
    checkpoints = sorted(str(p) for p in Path(run["storage"]).glob("*/checkpoint_step_*"))
    ranks = {p.name: json.loads(p.read_text()) for p in (Path(run["job"]["out"]) / "workers").glob("rank*.json")}
    out["runs"].append({"result": res.to_dict(), "checkpoints": checkpoints, "ranks": ranks})
Path(out_path).write_text(json.dumps(out))
"""


def _job(out: Path, model: Path, data: Path, steps: int) -> dict[str, Any]:
    return {"model": str(model), "data": str(data), "algorithm": "npo", "lr": 1e-3, "steps": steps,
            "eval_steps": [1], "seed": 0, "out": str(out),
            "train": {"workers": 2, "zero": 3, "batch_size": 4, "cpus_per_worker": 1, "placement": "SPREAD"}}


def _losses(out: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (out / "train_log.jsonl").read_text().splitlines()]


@pytest.mark.ray
@pytest.mark.slow
def test_one_job_across_two_nodes(tiny_model: Path, tiny_lume: Path, tmp_path: Path,
                                  two_worker_run: tuple[Any, Any]) -> None:
    spread = tmp_path / "spread"
    reference_job, reference_result = two_worker_run  # the same job on one node, trained straight to step 4
    runs = [
        # Two nodes: rank 0 on one, rank 1 on the other; stops after step 2 (its last checkpoint).
        {"job": _job(spread, tiny_model, tiny_lume, steps=2), "storage": str(spread / "ray")},
        # The two-node job again with one more step: resumes from the checkpoint under its storage path.
        {"job": _job(spread, tiny_model, tiny_lume, steps=3), "storage": str(spread / "ray")},
    ]
    spec, result = tmp_path / "runs.json", tmp_path / "driver_out.json"
    spec.write_text(json.dumps(runs))
    cluster = LocalRayCluster(workers=1, cpus_per_node=2, env={"RAY_AUTH_MODE": "disabled"})
    try:
        cluster.start()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        drv = subprocess.run([sys.executable, "-c", DRIVER, cluster.gcs_address, str(spec), str(result)],
                             capture_output=True, text=True, env=env, cwd=ROOT, timeout=1500)
        assert drv.returncode == 0, (drv.stdout + drv.stderr)[-4000:]
    finally:
        cluster.stop()
    assert cluster.alive_pids() == []

    got = json.loads(result.read_text())
    assert len(got["nodes"]) == 2
    first, resumed = got["runs"]
    for run in got["runs"]:
        assert run["result"]["status"] == "completed", run["result"]["reason"]

    # Where the ranks ran: one on each node (node ids recorded by each worker).
    for run in (first, resumed):
        assert sorted(run["ranks"]) == ["rank0.json", "rank1.json"]
        assert {r["node_id"] for r in run["ranks"].values()} == set(got["nodes"])

    # Same losses as on one node: steps 1-2 from the first two-node run, step 3 from its resumed run.
    assert (first["result"]["steps_done"], resumed["result"]["steps_done"]) == (2, 3)
    assert resumed["result"]["resumed_from"] == 2
    two_nodes, reference = _losses(spread), _losses(Path(reference_job.out))[:3]
    assert len(two_nodes) == len(reference) == 3
    assert two_nodes == pytest.approx(reference, rel=1e-5, abs=1e-6)
    diff = max(abs(a - b) for a, b in zip(two_nodes, reference, strict=True))
    print(f"\n[multinode] losses two nodes {two_nodes}\n[multinode] losses one node  {reference} (max |diff| {diff:.1e})")

    # Checkpoints under the storage path inside the run dir (one kept: num_to_keep=1), points under the run dir.
    storage = spread / "ray"
    assert [Path(c).name for c in first["checkpoints"]] == ["checkpoint_step_000002"]
    assert [Path(c).name for c in resumed["checkpoints"]] == ["checkpoint_step_000003"]
    assert all(Path(c).is_relative_to(storage) for c in first["checkpoints"] + resumed["checkpoints"])
    assert Path(resumed["result"]["run_dir"]).parent == storage
    assert (Path(resumed["checkpoints"][0]) / "state.json").is_file()
    points = resumed["result"]["points"]
    assert [p["step"] for p in points] == [1, 2, 3]
    for p in points:
        model_dir = Path(p["model_dir"])
        assert model_dir.is_relative_to(spread) and (model_dir / "config.json").is_file()
    reference_points = {p.step: p.forget_loss for p in reference_result.points}  # steps 2 and 4
    for p in points:
        if p["step"] in reference_points:  # the evaluated model is the same one too
            assert p["forget_loss"] == pytest.approx(reference_points[p["step"]], rel=1e-5)
