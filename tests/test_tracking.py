"""MLflow tracking with the real mlflow package on a local store (SQLite under RUN_DIR/mlruns).

The session's tiny sweep (conftest's ``finished_sweep``, with ``tracking: {mlflow: {}}``) on the local Ray cluster: its runs, read back with
``mlflow.search_runs`` and the client's metric history, hold exactly what results.parquet holds (every trial,
every evaluated step's metrics); a second sync, or a second tracker on the same RUN_DIR (a resume), adds no run
and no point; the report's files become the parent run's artifacts.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

mlflow = pytest.importorskip("mlflow")

from lume_ray.config import experiment_from_dict  # noqa: E402
from lume_ray.evaluate.metrics import METRICS  # noqa: E402
from lume_ray.tracking import STATE_NAME, MlflowTracker, local_uri  # noqa: E402
from tests.helpers import NOISE_PATTERNS, OUR_LINE, make_run, small_experiment, wait_for  # noqa: E402


def _runs(run_dir: Path) -> pd.DataFrame:
    mlflow.set_tracking_uri(local_uri(run_dir))
    return mlflow.search_runs(experiment_names=["test"])


def test_one_run_per_trial_under_a_parent(finished_sweep: Path) -> None:
    runs = _runs(finished_sweep)
    results = pd.read_parquet(finished_sweep / "results.parquet")
    state = json.loads((finished_sweep / STATE_NAME).read_text())["mlflow"]
    parent = runs[runs["run_id"] == state["parent_run_id"]]
    assert len(parent) == 1 and parent["status"].iloc[0] == "FINISHED"
    assert parent["params.sampler"].iloc[0] == "gp"
    children = runs[runs["tags.mlflow.parentRunId"] == state["parent_run_id"]]
    assert len(runs) == 1 + len(children)
    assert sorted(children["tags.lume_ray.trial_id"]) == sorted(results["trial_id"].unique())
    assert set(children["status"]) == {"FINISHED"} and set(children["tags.lume_ray.status"]) == {"completed"}
    for _, child in children.iterrows():
        trial = results[results["trial_id"] == child["tags.lume_ray.trial_id"]]
        assert child["params.algorithm"] == trial["algorithm"].iloc[0]
        assert float(child["params.lr"]) == pytest.approx(float(trial["hp/lr"].iloc[0]))


def test_every_step_of_every_trial_is_logged_as_in_results(finished_sweep: Path) -> None:
    client = mlflow.MlflowClient(tracking_uri=local_uri(finished_sweep))
    results = pd.read_parquet(finished_sweep / "results.parquet")
    results = results[results["status"] == "ok"]
    runs = _runs(finished_sweep).dropna(subset=["tags.lume_ray.trial_id"])
    metric_columns = [c for c in results.columns if c in METRICS]
    assert {"forget_efficacy", "retain_score", "final_score"} <= set(metric_columns)
    compared = 0
    for _, run in runs.iterrows():
        rows = results[results["trial_id"] == run["tags.lume_ray.trial_id"]].set_index("step")
        for column in metric_columns:
            history = {m.step: m.value for m in client.get_metric_history(run["run_id"], column)}
            expected = {int(step): float(v) for step, v in rows[column].items() if v is not None and not pd.isna(v)}
            assert set(history) == set(expected), (column, history, expected)  # each step once: no duplicates
            assert len(client.get_metric_history(run["run_id"], column)) == len(expected)
            for step, value in expected.items():
                assert math.isclose(history[step], value, rel_tol=1e-9, abs_tol=1e-12), (column, step)
                compared += 1
    assert compared >= len(results) * 3


def test_resume_reuses_the_runs(finished_sweep: Path) -> None:
    """A second tracker on the same RUN_DIR (what --resume builds) finds the parent run in tracking.json and
    logs nothing twice."""
    before = _runs(finished_sweep)
    raw = json.loads(json.dumps(__import__("yaml").safe_load((finished_sweep / "experiment.yaml").read_text())))
    tracker = MlflowTracker(experiment_from_dict(raw), finished_sweep, log=lambda line: None)
    tracker.setup()
    assert tracker.sync() == 0
    tracker.end_sweep("FINISHED")
    after = _runs(finished_sweep)
    assert sorted(after["run_id"]) == sorted(before["run_id"])
    client = mlflow.MlflowClient(tracking_uri=local_uri(finished_sweep))
    for run_id in after["run_id"]:
        steps = [m.step for m in client.get_metric_history(run_id, "forget_efficacy")]
        assert len(steps) == len(set(steps))


def test_report_files_are_the_parents_artifacts(finished_sweep: Path, tmp_path: Path) -> None:
    from lume_ray.tracking import log_report

    report = tmp_path / "report"
    report.mkdir()
    (report / "report.md").write_text("# report\n")
    (report / "pareto.csv").write_text("a,b\n1,2\n")
    raw = __import__("yaml").safe_load((finished_sweep / "experiment.yaml").read_text())
    log_report(experiment_from_dict(raw), finished_sweep, report)
    state = json.loads((finished_sweep / STATE_NAME).read_text())["mlflow"]
    client = mlflow.MlflowClient(tracking_uri=local_uri(finished_sweep))
    names = sorted(a.path for a in client.list_artifacts(state["parent_run_id"], "report"))
    assert names == ["report/pareto.csv", "report/report.md"]
    assert client.get_run(state["parent_run_id"]).info.status == "FINISHED"  # not reopened by the upload


@pytest.mark.slow
def test_sync_after_an_interruption_logs_only_what_is_new(tmp_path: Path) -> None:
    """No Ray: a run dir written by hand, synced, given one more point (the resumed trial goes on), synced by a
    new tracker (the resumed command): one run per trial, every point once, the final states as run statuses."""
    from lume_ray.files import write_json

    raw = small_experiment(tmp_path, tmp_path / "data", tmp_path / "model")
    raw["tracking"] = {"mlflow": {}}
    exp = experiment_from_dict(raw)
    rd = make_run(tmp_path / "run")
    first = MlflowTracker(exp, rd.root, log=lambda line: None)
    first.open()
    assert first.sync() == 7  # points: ga_1 2, ga_2 2, ga_4 1, npo_1 1, npo_2 1
    first.end_sweep("KILLED")
    write_json(rd.point("npo_2", 4) / "metrics.json", {"forget_efficacy": 0.8, "retain_score": 0.5})
    rd.write_trial("npo_2", {**(rd.read_trial("npo_2") or {}), "status": "completed"})
    second = MlflowTracker(exp, rd.root, log=lambda line: None)
    second.open()
    assert second.parent_run_id == first.parent_run_id
    assert second.sync() == 1
    second.end_sweep("FINISHED")
    runs = _runs(rd.root)
    children = runs.dropna(subset=["tags.lume_ray.trial_id"]).set_index("tags.lume_ray.trial_id")
    assert sorted(children.index) == ["ga_1", "ga_2", "ga_3", "ga_4", "npo_1", "npo_2"]
    assert children.loc["ga_4", "status"] == "FAILED" and children.loc["ga_3", "tags.lume_ray.status"] == "diverged"
    assert children.loc["npo_2", "status"] == "FINISHED"
    client = mlflow.MlflowClient(tracking_uri=local_uri(rd.root))
    history = client.get_metric_history(children.loc["npo_2", "run_id"], "forget_efficacy")
    assert sorted((m.step, m.value) for m in history) == [(2, 0.4), (4, 0.8)]
    assert client.get_run(first.parent_run_id).info.status == "FINISHED"


def test_a_store_mlflow_refuses_is_a_one_line_error_before_the_sweep(tmp_path: Path) -> None:
    from lume_ray.config import ConfigError
    from lume_ray.tracking import trackers

    raw = small_experiment(tmp_path, tmp_path / "data", tmp_path / "model")
    raw["tracking"] = {"mlflow": {"uri": (tmp_path / "mlruns").as_uri()}}  # MLflow 3's file store: refused
    with pytest.raises(ConfigError, match=r"^tracking\.mlflow: file://.*filesystem tracking backend"):
        [t.open() for t in trackers(experiment_from_dict(raw), tmp_path / "run")]
    raw["tracking"] = {"wandb": {"mode": "offline"}}  # not supported: refused at load, naming what is
    with pytest.raises(ConfigError, match=r"tracking\.wandb: unknown key \(valid: mlflow\)"):
        experiment_from_dict(raw)


@pytest.mark.ray
@pytest.mark.slow
def test_cli_sweep_interrupted_and_resumed(tmp_path: Path, tiny_lume: Path, tiny_model: Path, ray_local: Any) -> None:
    """The real CLI in a subprocess (``sweep EXP --out DIR --mlflow``), Ctrl-C'd after its first trial, then
    ``--resume``d. Both consoles hold lume-ray's lines only (Ray's, Tune's, Optuna's and the workers' output is in
    DIR/logs/); the resumed command completes exactly the planned trials, none twice; its view and tracker hear
    the restored Tune run (through the relay): MLflow holds one run per trial and every point once.

    One test for the three (each a two-minute CLI sweep): the console, the interrupted driver, resumed tracking.
    The interrupted command starts and stops a local head of its own, as a user's would; the resumed one connects
    to the session's cluster (``RAY_ADDRESS``, as inside a Ray job), ~15 CPU-s less than a second head."""
    import os
    import re
    import signal
    import subprocess
    import sys

    import yaml


    raw = small_experiment(tmp_path, tiny_lume, tiny_model, num_samples=2)
    raw["algorithms"] = {"ga": raw["algorithms"]["ga"]}
    exp_file = tmp_path / "exp.yaml"
    exp_file.write_text(yaml.safe_dump(raw))
    run_dir = tmp_path / "via-out"  # --out, not the experiment's output_dir
    cmd = [sys.executable, "-m", "lume_ray.cli", "sweep", str(exp_file), "--out", str(run_dir), "--mlflow"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: any(json.loads(p.read_text()).get("status") == "completed"
                              for p in run_dir.glob("trials/*/trial.json")), 600, "the first trial to complete")
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out[-2000:]
    assert "--resume" in out
    assert not (run_dir / "results.parquet").exists()
    env["RAY_ADDRESS"] = ray_local.get_runtime_context().gcs_address
    done = subprocess.run([*cmd, "--resume"], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]

    # the consoles: lume-ray's lines only, the log directory named first
    for console in (out, done.stdout + done.stderr):
        lines = [ln for ln in console.splitlines() if ln.strip()]
        noisy = [ln for ln in lines if NOISE_PATTERNS.search(ln) or not OUR_LINE.match(ln)]
        assert not noisy, "\n".join(lines)
        assert lines[0] == f"logs: {run_dir / 'logs'}/", lines[:3]
    assert "[sweep] 2/2 trials" in done.stdout, done.stdout  # the view counted the trial of the first session
    log = "\n".join(p.read_text(errors="replace") for p in (run_dir / "logs").glob("*.log"))
    for pattern in (r"(Started a local Ray instance|Connected to Ray cluster)", r"\(RayTrainWorker pid=\d+\)",
                    r"A new study created in memory", r"\[unlearn\] step \d+/4"):
        assert re.search(pattern, log), pattern

    # the results: exactly the planned trials and points, none twice
    results = pd.read_parquet(run_dir / "results.parquet")
    assert results["trial_id"].nunique() == 2, results[["trial_id", "step", "status"]]
    assert (results["status"] == "ok").all()
    assert len(results) == 2 * 2 and not results.duplicated(["trial_id", "step"]).any()

    # the tracker: one run per trial under the parent, every point once
    runs = _runs(run_dir)
    children = runs.dropna(subset=["tags.lume_ray.trial_id"])
    assert sorted(children["tags.lume_ray.trial_id"]) == sorted(results["trial_id"].unique())
    assert len(runs) == len(children) + 1
    assert set(children["status"]) == {"FINISHED"}
    client = mlflow.MlflowClient(tracking_uri=local_uri(run_dir))
    for _, child in children.iterrows():
        steps = sorted(m.step for m in client.get_metric_history(child["run_id"], "forget_efficacy"))
        expected = sorted(results.loc[results["trial_id"] == child["tags.lume_ray.trial_id"], "step"])
        assert steps == expected
