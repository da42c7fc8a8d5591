"""What a sweep keeps on disk (search/keep.py): sweep.keep_models front / none / all, checkpoints of ended trials.

The keeper is driven here as Tune drives it in the sweep's driver (on_trial_result, on_trial_complete, setup) over
synthetic points in a hand-made run directory, so every removal and its timing is known by hand; one assertion
reads the session's real sweep (finished_sweep), which runs with the default, front.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest

from lume_ray.config import ConfigError, experiment_from_dict
from lume_ray.report.pareto import pareto_mask
from lume_ray.run_dir import RunDir
from lume_ray.search.keep import ModelKeeper

BASE_UTILITY = 0.40  # the floor: utility >= 0.75 x 0.40 = 0.30


def _experiment(root: Path, keep_models: Any = "front") -> Any:
    return experiment_from_dict({
        "name": "keep", "output_dir": str(root),
        "sweep": {"objectives": ["forget_efficacy", "retain_score"], "keep_models": keep_models},
        "algorithms": {"ga": {"lr": {"loguniform": [1e-5, 1e-4]}, "steps": {"max": 4}},
                       "npo": {"lr": {"loguniform": [1e-5, 1e-4]}, "steps": {"max": 4}}},
    })


def _trial(rd: RunDir, trial_id: str, algorithm: str, status: str = "running") -> None:
    rd.write_trial(trial_id, {"trial_id": trial_id, "algorithm": algorithm, "hp": {"lr": 1e-5}, "status": status})
    ckpt = rd.checkpoints(trial_id) / f"train-{trial_id}" / "checkpoint_step_000002"
    ckpt.mkdir(parents=True, exist_ok=True)
    (ckpt / "mp_rank_00_model_states.pt").write_bytes(b"\0" * 4096)


def _point(rd: RunDir, trial_id: str, step: int, fe: float, rs: float, ut: float, scored: bool = True) -> dict:
    """A point as the job and the pool leave it: the model directory, and (scored) metrics.json."""
    model = rd.point_model(trial_id, step)
    model.mkdir(parents=True, exist_ok=True)
    (model / "model.safetensors").write_bytes(b"\0" * 8192)
    metrics = {"forget_efficacy": fe, "retain_score": rs, "utility": ut}
    if scored:
        rd.point(trial_id, step).mkdir(parents=True, exist_ok=True)
        (rd.point(trial_id, step) / "metrics.json").write_text(json.dumps(metrics))
    return metrics


def _report(keeper: ModelKeeper, trial_id: str, algorithm: str, step: int, metrics: dict) -> None:
    """What Tune does in the driver when a trial reports a scored point."""
    trial = SimpleNamespace(trial_id=trial_id, config={"algorithm": algorithm, "lr": 1e-5})
    keeper.on_trial_result(0, [], trial, {**metrics, "step": step, "status": "ok"})


def _complete(keeper: ModelKeeper, rd: RunDir, trial_id: str, status: str = "completed") -> None:
    rec = rd.read_trial(trial_id) or {}
    rd.write_trial(trial_id, {**rec, "status": status})
    keeper.on_trial_complete(0, [], SimpleNamespace(trial_id=trial_id, config={}))


def _on_disk(rd: RunDir) -> set[tuple[str, int]]:
    return set(rd.models_on_disk())


def test_front_keeps_the_front_and_removes_a_dominated_point_while_its_trial_runs(tmp_path: Path) -> None:
    rd = RunDir(tmp_path / "run")
    keeper = ModelKeeper(_experiment(rd.root), rd, BASE_UTILITY)
    keeper.setup()
    for tid, alg in (("t1", "ga"), ("t2", "ga"), ("t3", "ga"), ("n1", "npo")):
        _trial(rd, tid, alg)
    seq = [("t1", "ga", 2, 0.30, 0.80, 0.38), ("t1", "ga", 4, 0.60, 0.50, 0.33),
           ("t2", "ga", 2, 0.25, 0.75, 0.37),  # dominated by t1@2 when scored: removed at once
           ("t2", "ga", 4, 0.70, 0.90, 0.35),  # dominates t1@2 and t1@4: both removed, t1 still running
           ("t3", "ga", 2, 0.99, 0.99, 0.10),  # infeasible (0.10 < 0.30): never on the front, dominates nothing
           ("n1", "npo", 2, 0.10, 0.10, 0.39)]  # dominated by ga's points, but on npo's own front
    metrics = {}
    for tid, _, step, fe, rs, ut in seq:
        metrics[(tid, step)] = _point(rd, tid, step, fe, rs, ut)
    _report(keeper, "t1", "ga", 2, metrics[("t1", 2)])
    _report(keeper, "t1", "ga", 4, metrics[("t1", 4)])
    assert _on_disk(rd) == {("t1", 2), ("t1", 4), ("t2", 2), ("t2", 4), ("t3", 2), ("n1", 2)}
    _report(keeper, "t2", "ga", 2, metrics[("t2", 2)])
    assert ("t2", 2) not in _on_disk(rd)
    _report(keeper, "t2", "ga", 4, metrics[("t2", 4)])
    # t1's points are gone while t1 still runs (its record says so): removed when dominated, not at its end.
    assert rd.read_trial("t1")["status"] == "running"
    assert not rd.point_model("t1", 2).exists() and not rd.point_model("t1", 4).exists()
    _report(keeper, "t3", "ga", 2, metrics[("t3", 2)])
    _report(keeper, "n1", "npo", 2, metrics[("n1", 2)])
    assert _on_disk(rd) == {("t2", 4), ("n1", 2)}
    # ... exactly each algorithm's front by the report's rule (pareto_mask over the feasible points).
    for alg in ("ga", "npo"):
        keys = [(t, s) for t, a, s, _, _, ut in seq if a == alg and ut >= 0.30]
        mask = pareto_mask(np.array([[metrics[k]["forget_efficacy"], metrics[k]["retain_score"]] for k in keys]),
                           ["max", "max"])
        assert {k for k, on in zip(keys, mask, strict=True) if on} == {k for k in _on_disk(rd) if k in keys}
    why = {(r["trial_id"], r["step"]): r["reason"] for r in rd.removals() if r["what"] == "model"}
    assert why == {("t2", 2): "scored off the front", ("t1", 2): "dominated by t2@4",
                   ("t1", 4): "dominated by t2@4", ("t3", 2): "below the utility floor"}
    assert all(r["bytes"] >= 8192 for r in rd.removals())
    # Checkpoints: kept while a trial runs and when it failed (its retry resumes from it); removed once it ended.
    _complete(keeper, rd, "t1")
    _complete(keeper, rd, "t3", "stopped")
    rec = rd.read_trial("n1") or {}
    rd.write_trial("n1", {**rec, "status": "failed"})
    assert not rd.checkpoints("t1").exists() and not rd.checkpoints("t3").exists()
    assert rd.checkpoints("t2").exists() and rd.checkpoints("n1").exists()
    assert {r["trial_id"] for r in rd.removals() if r["what"] == "checkpoint"} == {"t1", "t3"}


@pytest.mark.parametrize("mode", ["none", "all"])
def test_none_removes_each_model_once_scored_and_all_keeps_every_one(tmp_path: Path, mode: str) -> None:
    rd = RunDir(tmp_path / "run")
    keeper = ModelKeeper(_experiment(rd.root, mode), rd, BASE_UTILITY)
    _trial(rd, "t1", "ga")
    first = _point(rd, "t1", 2, 0.3, 0.8, 0.38)
    second = _point(rd, "t1", 4, 0.6, 0.5, 0.33, scored=False)  # still being scored
    _report(keeper, "t1", "ga", 2, first)
    assert _on_disk(rd) == ({("t1", 4)} if mode == "none" else {("t1", 2), ("t1", 4)})
    _report(keeper, "t1", "ga", 4, second)
    _complete(keeper, rd, "t1")
    assert _on_disk(rd) == (set() if mode == "none" else {("t1", 2), ("t1", 4)})
    assert not rd.checkpoints("t1").exists()  # in every mode


def test_reconcile_rebuilds_the_front_from_the_run_directory(tmp_path: Path) -> None:
    """A resumed sweep (or the sweep's end): the rule applied from RUN_DIR alone. An ended trial's point that
    was never scored goes; a running trial's unscored point stays (its trial scores it when it resumes)."""
    rd = RunDir(tmp_path / "run")
    _trial(rd, "t1", "ga", "completed")
    _trial(rd, "t2", "ga", "stopped")
    _trial(rd, "t3", "ga", "running")
    _point(rd, "t1", 2, 0.3, 0.8, 0.38)  # dominated by t1@4
    _point(rd, "t1", 4, 0.6, 0.9, 0.38)
    _point(rd, "t2", 2, 0.9, 0.1, 0.38)  # on the front (a trade-off)
    _point(rd, "t2", 4, 0.9, 0.2, 0.38, scored=False)  # saved in the moment before the stopped trial died
    _point(rd, "t3", 2, 0.1, 0.1, 0.38, scored=False)
    ModelKeeper(_experiment(rd.root), rd, BASE_UTILITY).setup()
    assert _on_disk(rd) == {("t1", 4), ("t2", 2), ("t3", 2)}
    assert not rd.checkpoints("t1").exists() and not rd.checkpoints("t2").exists() and rd.checkpoints("t3").exists()


def test_keep_models_accepts_the_older_booleans_and_names_the_choices(tmp_path: Path) -> None:
    assert _experiment(tmp_path, True).sweep.keep_models == "all"
    assert _experiment(tmp_path, False).sweep.keep_models == "none"
    assert experiment_from_dict({"name": "x", "output_dir": str(tmp_path), "algorithms": {
        "ga": {"lr": 1e-4, "steps": {"max": 2}}}}).sweep.keep_models == "front"
    with pytest.raises(ConfigError, match=r"sweep\.keep_models: expected one of front, none, all .*got 'best'"):
        _experiment(tmp_path, "best")


@pytest.mark.ray
def test_the_session_sweep_keeps_exactly_each_algorithms_front(finished_sweep: Path) -> None:
    """The session's sweep runs with the default (front): the models left on disk are each algorithm's front as
    the report computes it, and no trial's checkpoint is left (every trial completed)."""
    from lume_ray.report.analysis import analyze
    from lume_ray.report.run import load_run

    rd = RunDir(finished_sweep)
    table = analyze(load_run(finished_sweep)).table
    front = {(r.trial_id, int(r.step)) for r in table[table["on_front_algorithm"]].itertuples()}
    assert front and set(rd.models_on_disk()) == front
    assert not list(rd.trials.glob("*/ray/*/checkpoint_*"))
    removed = {(r["trial_id"], r["step"]) for r in rd.removals() if r["what"] == "model"}
    results = pd.read_parquet(rd.results_path)
    everything = {(r.trial_id, int(r.step)) for r in results.itertuples()}
    assert removed == everything - front


def test_status_and_report_say_which_models_are_on_disk(tmp_path: Path) -> None:
    from lume_ray.report.analysis import analyze
    from lume_ray.report.run import load_run
    from lume_ray.report.samples import provenance
    from lume_ray.status import run_status, status_lines
    from tests.helpers import make_run_dir

    rd = RunDir(make_run_dir(tmp_path))
    for tid, step in (("gd-1", 30), ("npo-2", 20)):
        _point(rd, tid, step, 0.5, 0.5, 0.5, scored=False)  # make_run_dir wrote the metrics; the models here
    st = run_status(rd.root)
    assert st.models == [("gd-1", 30), ("npo-2", 20)] and st.disk_bytes > 2 * 8192
    line = next(x for x in status_lines(st) if x.startswith("models on disk"))
    assert line.startswith("models on disk: 2 (gd-1@30, npo-2@20); the run directory holds ")
    run = load_run(rd.root)
    rows = dict(provenance(run, analyze(run), True))
    assert rows["models on disk"] == "2 (gd-1@30, npo-2@20) (trial@step; keep_models: unknown)"
    assert rows["run directory size"].endswith(" on disk")


def test_plan_gives_the_peak_disk_of_an_experiment_per_mode(capsys: pytest.CaptureFixture[str]) -> None:
    """`lume-ray plan EXPERIMENT`: model bytes x models held at peak + two checkpoints per running trial."""
    from lume_ray import cli

    root = Path(__file__).resolve().parents[1] / "experiments"
    assert cli.main(["plan", str(root / "lume-7b.yaml"), "--gpus", "32", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    disk = got["disk"]
    assert disk["total_params"] == 6_888_095_744 and disk["model_bytes"] == 2 * 6_888_095_744  # bf16
    assert disk["concurrency"] == 4  # 32 GPUs / 8 per trial
    assert disk["checkpoint_bytes"] == 14 * 6_888_095_744  # bf16 weights + fp32 master + Adam's 2 moments
    assert disk["points"] == sum(12 * n for n in disk["points_per_trial"].values())
    modes = disk["keep_models"]
    assert modes["all"]["models_held"] == disk["points"]
    assert modes["none"]["models_held"] == 4 * max(disk["points_per_trial"].values())
    assert modes["none"]["models_held"] < modes["front"]["models_held"] < modes["all"]["models_held"]
    for m in modes.values():
        assert m["peak_bytes"] == m["models_held"] * disk["model_bytes"] + 2 * 4 * disk["checkpoint_bytes"]
    assert got["zero"]["recommended"] == "zero2"
    assert cli.main(["plan", str(root / "quickstart.yaml")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "(fp32) = " in lines[1] and lines[4].split()[:2] == ["keep_models", "models"]
    assert [ln.split()[0] for ln in lines[5:8]] == ["all", "front", "none"]
