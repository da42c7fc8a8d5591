"""Issue 11, "across nodes": one unlearning job whose two Ray Train workers sit on two nodes of a real local
multi-node cluster (placement SPREAD, ZeRO-3) logs the same losses as the same job on one node (the session's
``two_worker_run``, on the one-node cluster of ``ray_local``); its checkpoints and evaluation points land under
the run's directory (storage path inside it), and a re-run with more steps resumes from the checkpoint there.

The two-node jobs run in a driver process of their own, connected to the two-node cluster: this session's Ray
stays untouched. The same cluster then takes a job submitted through `lume-ray submit` (its Jobs API, the job's
working dir and env vars on both nodes, logs and exit codes): one two-node cluster for the module.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from lume_ray import cli
from lume_ray.cluster.jobs import build_submission, connect
from tests.local_cluster import LocalRayCluster

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "experiments" / "quickstart.yaml"

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


@pytest.fixture(scope="module")
def two_node_cluster() -> Iterator[LocalRayCluster]:
    """A real two-node local Ray cluster (2 CPUs each, 127.0.0.1 only) for this module's tests; stopping it ends
    every process it started and nobody else's."""
    cluster = LocalRayCluster(workers=1, cpus_per_node=2, env={"RAY_AUTH_MODE": "disabled"})
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
    assert cluster.alive_pids() == []


@pytest.mark.ray
@pytest.mark.slow
def test_one_job_across_two_nodes(two_node_cluster: LocalRayCluster, tiny_model: Path, tiny_lume: Path, tmp_path: Path,
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
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    drv = subprocess.run([sys.executable, "-c", DRIVER, two_node_cluster.gcs_address, str(spec), str(result)],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=1500)
    assert drv.returncode == 0, (drv.stdout + drv.stderr)[-4000:]

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


# The multi-node test submits the real quickstart sweep once every stage it runs exists; until then a
# stand-in job that writes a file. Flip this one line to force either.
# The two-node job runs the real quickstart sweep with LUME_RAY_SUBMIT_SWEEP=1 (about 4 minutes here); by default a
# stand-in entrypoint checks what the submission carries (both nodes, the working dir, the env vars): the sweep
# itself is tested in test_sweep.py, two-node training in test_multinode.py.
SWEEP_READY = os.environ.get("LUME_RAY_SUBMIT_SWEEP") == "1"


# -- a real local multi-node cluster ---------------------------------------------------------------

# The quickstart cut to a test budget: 4 documents per task, a 3-epoch target, one 2-step GA trial.
SMALL_SWEEP = ["sweep.num_samples=1", "sweep.algorithms=[ga]", "sweep.eval_points=1", "algorithms.ga.steps=2",
               "data.synth.docs_per_task=4", "target.build.preset=test", "target.build.epochs=3",
               "eval.max_new_tokens=8"]

STAND_IN = """
import json, os, sys, ray
ray.init(address="auto")
nodes = [n for n in ray.nodes() if n["Alive"]]
out = {"nodes": len(nodes), "cpus": ray.cluster_resources().get("CPU"),
       "shipped": os.path.isfile("lume_ray/cluster/jobs.py"), "argv": sys.argv[1:],
       "poll": os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S")}
tmp = sys.argv[1] + ".tmp"
with open(tmp, "w") as f:
    json.dump(out, f)
os.replace(tmp, sys.argv[1])
print("stand-in wrote", sys.argv[1])
"""


def _job_id(text: str) -> str:
    m = re.search(r"job (\S+) submitted", text)
    assert m, text
    return m.group(1)


@pytest.mark.ray
@pytest.mark.slow
def test_submit_to_a_local_two_node_cluster(two_node_cluster: LocalRayCluster, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LUME_RAY_DEBUG", raising=False)  # cli.main must answer with exit codes, not tracebacks
    addr = two_node_cluster.address
    assert addr.startswith("http://127.0.0.1:")
    if SWEEP_READY:
        run_dir = tmp_path / "run"
        t0 = time.monotonic()
        rc = cli.main(["submit", str(QUICKSTART), "--address", addr, "--set", f"output_dir={run_dir}",
                       *SMALL_SWEEP])
        out = capsys.readouterr().out
        assert rc == 0, out[-3000:]
        with capsys.disabled():
            print(f"\n[two-node] the quickstart sweep job ran in {time.monotonic() - t0:.0f} s")
        job = _job_id(out)
        assert (run_dir / "results.parquet").is_file()
        assert (run_dir / "report" / "report.html").is_file()
    else:
        result = tmp_path / "stand_in.json"
        (tmp_path / "stand_in.py").write_text(STAND_IN)
        sub = build_submission(QUICKSTART)
        sub = replace(sub, entrypoint=f"python {tmp_path / 'stand_in.py'} {result}")
        client = connect(addr)
        job = client.submit_job(entrypoint=sub.entrypoint, runtime_env=sub.runtime_env,
                                metadata=sub.metadata, submission_id=sub.submission_id)
        assert cli.main(["jobs", "logs", job, "--follow", "--address", addr]) == 0
        assert "stand-in wrote" in capsys.readouterr().out
        got = json.loads(result.read_text())
        assert got["nodes"] == 2 and got["cpus"] == 4.0  # both nodes joined the job's cluster
        # working dir and env vars reached the job (the submitting shell's value is forwarded, else the default)
        assert got["shipped"] and got["poll"] == os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
    assert cli.main(["jobs", "status", job, "--address", addr]) == 0
    assert "SUCCEEDED" in capsys.readouterr().out
    assert cli.main(["jobs", "list", "--address", addr]) == 0
    assert job in capsys.readouterr().out
    assert cli.main(["jobs", "status", "no-such-job", "--address", addr]) == 2
    assert "no job 'no-such-job'" in capsys.readouterr().err

    # A failing job: non-zero exit and the tail of its logs.
    client = connect(addr)
    bad = client.submit_job(entrypoint="python -c \"print('boom-marker'); raise SystemExit(3)\"")
    assert cli.main(["jobs", "logs", bad, "--follow", "--address", addr]) == 1
    captured = capsys.readouterr()
    assert "boom-marker" in captured.out and f"job {bad} FAILED" in captured.err
    assert "exit code 3" in captured.err
