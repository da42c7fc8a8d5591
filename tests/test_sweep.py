"""Sweeps on the local Ray cluster: results rows, one Tune run for every algorithm, the evaluation pool,
divergence, resume, worker death, warm start.

Real parts throughout: Ray Tune + the Optuna study searcher, Ray Train + DeepSpeed trials, the sweep's pool of
model actors, on the tiny OLMo fixture. Each sweep here is a handful of trials of a few steps.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from lume_ray.config import experiment_from_dict
from lume_ray.search.sweep import read_warm_start, run_sweep
from tests.helpers import small_experiment, wait_for

pytestmark = [pytest.mark.ray]


def test_results_have_one_row_per_trial_and_point(finished_sweep: Path) -> None:
    frame = pd.read_parquet(finished_sweep / "results.parquet")
    assert set(frame["algorithm"]) == {"ga", "npo"}
    assert frame.groupby("algorithm")["trial_id"].nunique().to_dict() == {"ga": 1, "npo": 1}
    assert (frame["status"] == "ok").all()
    # 4 steps, 2 evaluation points -> steps 2 and 4 for every trial, no duplicates
    assert sorted(frame.groupby("trial_id")["step"].apply(tuple).unique()) == [(2, 4)]
    assert not frame.duplicated(["trial_id", "step"]).any()
    assert "hp/steps" not in frame.columns  # steps is the trajectory: the `step` column
    for col in ("hp/lr", "origin", "sampler", "forget/Task1/sc", "retain/Task2/qa", "task_aggregate", "forget_efficacy",
                "retain_score", "final_score", "wall_s", "seed", "git_commit", "workers", "zero"):
        assert col in frame.columns, col
    assert frame.loc[frame.algorithm == "npo", "hp/beta"].notna().all()
    assert frame["forget_efficacy"].between(0, 1).all()
    for rel in frame["rows_path"]:
        rows = pd.read_parquet(finished_sweep / rel)
        assert {"id", "generation", "score", "nll"} <= set(rows.columns)
    study = json.loads((finished_sweep / "study.json").read_text())
    assert study["objectives"][0] == {"name": "forget_efficacy", "direction": "max"}
    assert (finished_sweep / "base" / "metrics.json").is_file()
    # Every point was scored by the sweep's pool of model actors, not a pipeline of its own.
    for metrics in finished_sweep.glob("trials/*/step_*/metrics.json"):
        assert json.loads(metrics.read_text())["settings"]["runner"] == "pool"


def test_one_tune_run_holds_every_algorithm(finished_sweep: Path) -> None:
    """The algorithms' trials share the cluster: one Tune experiment, and trials of ga and npo overlap in time."""
    assert [p.name for p in (finished_sweep / "tune").iterdir() if p.is_dir()] == ["sweep"]
    records = [json.loads(p.read_text()) for p in finished_sweep.glob("trials/*/trial.json")]
    assert all(r["status"] == "completed" for r in records)
    spans = {a: [(r["started_at"], r["finished_at"]) for r in records if r["algorithm"] == a] for a in ("ga", "npo")}
    overlap = any(s1 < e2 and s2 < e1 for s1, e1 in spans["ga"] for s2, e2 in spans["npo"])
    assert overlap, spans
    # Both algorithms' first trials are their initial design's points.
    assert {r["origin"] for r in records} <= {"design", "sampler"}
    assert sum(r["origin"] == "design" for r in records) >= 2


def test_rerun_without_resume_refuses(finished_sweep: Path, tiny_lume: Path, tiny_model: Path) -> None:
    raw = yaml.safe_load((finished_sweep / "experiment.yaml").read_text())
    with pytest.raises(ValueError, match="already holds a sweep; pass --resume"):
        run_sweep(experiment_from_dict(raw))


def test_warm_start_reads_an_earlier_sweep(finished_sweep: Path, tmp_path: Path) -> None:
    from lume_ray.search.searcher import StudySearcher

    rows = read_warm_start(finished_sweep)
    raw = yaml.safe_load((finished_sweep / "experiment.yaml").read_text())
    raw["output_dir"] = str(tmp_path / "widened")
    raw["algorithms"]["ga"]["lr"] = {"loguniform": [1e-5, 1e-2]}  # a widened range
    searcher = StudySearcher(experiment_from_dict(raw), warm_start=rows)
    frame = pd.read_parquet(finished_sweep / "results.parquet")
    assert searcher.warm == frame[frame.status == "ok"].groupby("algorithm").size().to_dict()
    with pytest.raises(ValueError, match="no results.parquet"):
        read_warm_start(tmp_path)


@pytest.mark.slow
def test_trial_whose_worker_dies_is_retried_from_its_checkpoint(
        tmp_path: Path, tiny_lume: Path, tiny_model: Path, ray_local) -> None:
    """SIGKILL the Train worker (by its pid) after the first checkpoint; the retry resumes from it. In the same
    sweep a trial whose loss diverges (lr 1e6) is recorded as "diverged" with its reason, and the sweep goes on."""
    import threading

    raw = small_experiment(tmp_path, tiny_lume, tiny_model, num_samples=1, eval_points=3, max_failures=1)
    raw["algorithms"] = {"gd": {"lr": 1e6, "steps": {"max": 3}}, "ga": {"lr": 1e-4, "steps": {"max": 60}}}
    run_dir = Path(raw["output_dir"])
    killed: list[int] = []

    def killer() -> None:
        deadline = time.time() + 400
        while time.time() < deadline and not killed:
            for log in run_dir.glob("trials/*/train/train_log.jsonl"):
                steps = [json.loads(line).get("step", 0) for line in log.read_text().splitlines() if line.strip()]
                pid_file = log.parent / "workers" / "rank0.json"
                # step 35, not just past the step-20 checkpoint: Train's controller registers a reported
                # checkpoint when it next polls the worker, and a worker killed before that restarts from 0
                if steps and max(steps) >= 35 and pid_file.is_file():
                    pid = json.loads(pid_file.read_text())["pid"]
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    return
            time.sleep(0.1)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    run_sweep(experiment_from_dict(raw))
    thread.join(timeout=5)
    assert killed, "the worker was never killed (the job finished before step 35?)"
    frame = pd.read_parquet(run_dir / "results.parquet")
    ga, gd = (frame[frame["algorithm"] == a] for a in ("ga", "gd"))
    assert list(ga["status"]) == ["ok", "ok", "ok"] and list(ga["step"]) == [20, 40, 60]
    ga_trial = ga["trial_id"].iloc[0]
    result = json.loads((run_dir / "trials" / ga_trial / "train" / "result.json").read_text())
    assert result["status"] == "completed" and result["resumed_from"] in (20, 40)
    assert gd["status"].iloc[-1] == "diverged" and "non-finite loss" in gd["error"].iloc[-1]
    assert (gd["status"].iloc[:-1] == "ok").all()  # points evaluated before the loss went non-finite are kept


def test_report_from_a_real_sweep(finished_sweep: Path, tmp_path: Path, tiny_lume: Path) -> None:
    """The report of a real sweep: its files, the front recomputed by hand, and no raw PII anywhere."""
    import numpy as np

    from lume_ray.data import load_lume
    from lume_ray.report import build_report, pareto_mask

    out = build_report(finished_sweep, tmp_path / "report")
    for name in ("report.html", "report.md", "pareto.csv", "results.parquet"):
        assert (out / name).is_file(), name
    assert list((out / "figures").glob("*.png"))
    table = pd.read_parquet(out / "results.parquet")
    values = table[["forget_efficacy", "retain_score"]].to_numpy(dtype=float)
    expected = pareto_mask(values[table["feasible"].to_numpy()], ["max", "max"])
    assert table.loc[table["feasible"], "on_front_overall"].tolist() == expected.tolist()
    assert expected.any()
    # Every SSN, phone number and e-mail address in the data is redacted in every file of the report.
    import re

    text = " ".join(r.input + " " + r.output for r in load_lume(tiny_lume).rows)
    pii = set(re.findall(r"\b\d{3}-\d{2}-\d{4}\b|\b\d{3}-\d{3}-\d{4}\b|[\w.]+@[\w.]+\.\w+", text))
    pii |= {p.replace("-", "") for p in pii if "@" not in p}
    assert len(pii) >= 6
    for name in ("report.html", "report.md", "pareto.csv"):
        content = (out / name).read_text()
        leaked = sorted(p for p in pii if p in content)
        assert not leaked, f"{name} shows {leaked}"
    assert np.isfinite(values).all()


@pytest.fixture(scope="module")
def memorized_model(tmp_path_factory: pytest.TempPathFactory, tiny_lume: Path) -> Path:
    """The target build's "test" preset on the tiny LUME rows (~15 s): a model that memorized them, so that a
    larger learning rate does more damage, which the early-stopping test relies on."""
    from lume_ray.target import build_target

    out = tmp_path_factory.mktemp("memorized") / "target"
    build_target(out, tiny_lume, preset="test", seed=0, progress=False)
    return out


@pytest.mark.parametrize("pipelined", [True, False], ids=["pipelined", "waits-at-rungs"])
def test_early_stopping_stops_a_dominated_trial_at_its_rung(
        tmp_path: Path, tiny_lume: Path, memorized_model: Path, ray_local, pipelined: bool) -> None:
    """Two trials in the initial design's order (largest lr, then the centre), one at a time, on a memorized
    target, judged on (forget_efficacy, forget_nll): gradient ascent forgets more at a larger lr, so the first
    trial dominates the second at rung 2, and keeping half, the second is stopped there while the first, alone
    at the rung when it reached it, continues to its last step (asynchronous successive halving)."""
    raw = small_experiment(tmp_path, tiny_lume, memorized_model, num_samples=2, initial_design=2, eval_points=1,
                           objectives=["forget_efficacy", "forget_nll"],
                           early_stop={"rungs": [2], "keep": 0.5, "pipelined": pipelined})
    # Pipelined, 200 steps (~10 s here, longer than scoring the rung's point): the stopped trial's job is still
    # training when Tune stops it (checked below), and its Train workers' CPUs must come back (checked at the end).
    steps = 200 if pipelined else 40
    raw["algorithms"] = {"ga": {"lr": {"loguniform": [1e-5, 1e-2]}, "steps": {"max": steps}}}
    run_dir = run_sweep(experiment_from_dict(raw)).root
    records = {r["hp"]["lr"]: r for r in (json.loads(p.read_text()) for p in run_dir.glob("trials/*/trial.json"))}
    assert sorted(records) == pytest.approx([10 ** -3.5, 1e-2])
    assert records[1e-2]["status"] == "completed"
    frame = pd.read_parquet(run_dir / "results.parquet")
    for lr in records:
        if lr == 1e-2:
            continue
        record = records[lr]
        assert record["status"] == "stopped" and record["stopped_at"] == 2, record
        decisions = json.loads((run_dir / "trials" / record["trial_id"] / "rungs.json").read_text())
        assert decisions["2"]["decision"] == "stop" and "keeping 1" in decisions["2"]["reason"]
        mine = frame[frame.trial_id == record["trial_id"]]
        assert mine["status"].iloc[-1] == "stopped" and mine["step"].iloc[0] == 2
        if pipelined:  # training went on while the rung's point was scored: what it reached is kept and counted
            assert (mine["status"].iloc[:-1] == "ok").all() and mine["trained_steps"].max() <= steps
            log = run_dir / "trials" / record["trial_id"] / "train" / "train_log.jsonl"
            trained = [json.loads(line)["step"] for line in log.read_text().splitlines() if line.strip()]
            assert 2 < max(trained) < steps, "the stopped trial's job should have been killed mid-run"
        else:  # the job waited at the rung, alive, and was ended there: it never trained past it
            assert list(mine["status"]) == ["ok", "stopped"] and mine["trained_steps"].max() == 2
            log = run_dir / "trials" / record["trial_id"] / "train" / "train_log.jsonl"
            assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1, 2]
            go = run_dir / "trials" / record["trial_id"] / "train" / "go"
            assert (go / "step_000002.waiting").is_file() and not (go / "step_000002").exists()
    # The report counts the stopped trial and the rest of its trajectory it did not train, per algorithm.
    from lume_ray.report import build_report

    stopped = frame[frame.trial_id == next(r["trial_id"] for lr, r in records.items() if lr != 1e-2)]
    budget = pd.read_csv(build_report(run_dir) / "budget.csv").set_index("algorithm")
    assert budget.loc["ga", "stopped early"] == 1
    assert budget.loc["ga", "steps saved"] == steps - stopped["trained_steps"].max() > 0
    if not pipelined:  # held at its rung and ended there: the rest of its 40 steps
        assert budget.loc["ga", "steps saved"] == 38
    if not pipelined:  # the kept trial was let through its rung once judged, in one job (never restarted)
        kept = run_dir / "trials" / records[1e-2]["trial_id"] / "train"
        assert (kept / "go" / "step_000002").is_file()
        assert json.loads((kept / "result.json").read_text())["resumed_from"] == 0
    # Nothing outlives the sweep: the evaluation pool and the stopped trials' Train workers gave their CPUs back.
    # Tune stops a trial by killing its actor mid-job (training on, or waiting at its rung): the Train controller
    # dies with it, and Ray Train's placement-group cleaner, which asks Ray's state API (served by the local head's
    # dashboard, on the loopback), must free the workers' placement group. Without it a sweep with early stopping
    # deadlocked with every CPU reserved by the workers of stopped trials.
    wait_for(lambda: ray_local.available_resources().get("CPU", 0) == ray_local.cluster_resources()["CPU"], 60,
              "every CPU to be free again after the sweep")


def test_a_parameter_the_model_cannot_take_fails_before_the_sweep(tmp_path: Path, tiny_lume: Path,
                                                                   tiny_model: Path) -> None:
    """rmu's layer beyond the model's depth can only be checked once the target exists: a one-line error before
    any trial (and before study.json), not a failed trial."""
    from lume_ray.config import ConfigError

    raw = small_experiment(tmp_path, tiny_lume, tiny_model)
    raw["algorithms"] = {"rmu": {"lr": 1e-3, "steps": {"max": 2}, "layer": {"int": [1, 9]}}}
    with pytest.raises(ConfigError, match=r"algorithms\.rmu: rmu parameter layer=9: the model has 2 layers"):
        run_sweep(experiment_from_dict(raw))
    assert not (tmp_path / "run" / "study.json").exists()
