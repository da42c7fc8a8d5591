"""`lume-ray status RUN_DIR` on hand-made run directories: finished, running, interrupted, a submitted job's, and
a directory that is not a run directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lume_ray.cli import main
from lume_ray.status import NotARunDir, run_status, status_lines
from tests.helpers import make_run


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_trials_early_stopping_ended_are_counted(tmp_path: Path) -> None:
    """A stopped trial is done (it ends there), and counted in a stopped column shown only when there is one."""
    rd = make_run(tmp_path / "run", driver_pid=dead_pid(), finished=True)
    rd.write_trial("npo_3", {"trial_id": "npo_3", "algorithm": "npo", "hp": {"lr": 1e-2, "beta": 0.1},
                             "status": "stopped", "error": "stopped at rung 2: position 2 of 2 points", "stopped_at": 2})
    st = run_status(rd.root)
    assert (st.algorithms["npo"].done, st.algorithms["npo"].stopped, st.algorithms["ga"].stopped) == (3, 1, 0)
    lines = status_lines(st)
    assert lines[2].split() == ["algorithm", "planned", "done", "stopped", "diverged", "unfinished", "failed", "points"]
    assert lines[4].split()[:4] == ["npo", "3", "3", "1"] and lines[3].split()[:5] == ["ga", "4", "3", "0", "1"]


def test_finished_run(tmp_path: Path) -> None:
    rd = make_run(tmp_path / "run", driver_pid=dead_pid(), finished=True)
    st = run_status(rd.root)
    assert st.state == "finished"
    ga, npo = st.algorithms["ga"], st.algorithms["npo"]
    assert (ga.planned, ga.done, ga.diverged, ga.running, ga.points) == (4, 3, 1, [], 5)
    assert ga.failed == [("ga_4", "TrialFailed: the Train worker died")]
    assert [(p.trial_id, p.step) for p in ga.best] == [("ga_1", 4), ("ga_1", 2)]  # the others are dominated
    assert (npo.done, npo.running) == (2, [])
    # A failed trial can still be retried by a resume of a finished run.
    assert st.resume is not None and st.resume.startswith(f"lume-ray sweep {rd.experiment_path} --resume --out {rd.root}")
    text = "\n".join(status_lines(st))
    assert "[ga] ga_4: TrialFailed: the Train worker died" in text
    assert "[ga] ga_1 step 4: forget_efficacy 0.90  retain_score 0.50  (lr 1e-3)" in text
    assert text.splitlines()[3].split() == ["ga", "4", "3", "1", "0", "1", "5"]


def test_running_run(tmp_path: Path) -> None:
    rd = make_run(tmp_path / "run", driver_pid=os.getpid())
    st = run_status(rd.root)
    assert st.state == "running" and st.resume is None
    assert st.algorithms["npo"].running == ["npo_2"]
    assert f"driver pid {os.getpid()} on this host" in st.detail


def test_interrupted_run_says_how_to_resume(tmp_path: Path) -> None:
    rd = make_run(tmp_path / "run", driver_pid=dead_pid())
    st = run_status(rd.root)
    assert st.state == "interrupted"
    assert "1 trial(s) left unfinished, 1 not started" in st.detail  # ga: 4 planned, 4 seen; npo: 3 planned, 2 seen
    assert st.resume == f"lume-ray sweep {rd.experiment_path} --resume --out {rd.root}"
    assert status_lines(st)[-1] == f"resume with: {st.resume}"


def test_interrupted_run_without_a_tune_experiment_cannot_resume(tmp_path: Path) -> None:
    rd = make_run(tmp_path / "run", tune_dir=False)
    st = run_status(rd.root)
    assert st.state == "interrupted" and st.resume is None
    assert "start it again without --resume" in st.detail


def test_submitted_jobs_run_dir(tmp_path: Path) -> None:
    """The driver ran as a Ray job on another host: status names the job and cannot check it from here."""
    rd = make_run(tmp_path / "run", driver_pid=4242, host="head-node-0", ray_job="lume-study-20260101-ab12")
    st = run_status(rd.root)
    assert st.state == "elsewhere"
    assert "head-node-0" in st.detail and "lume-ray jobs status lume-study-20260101-ab12" in st.detail
    assert st.resume is not None and st.resume.endswith("(only if that driver has stopped)")


def test_not_a_run_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(NotARunDir, match="not a run directory"):
        run_status(tmp_path / "empty")
    assert main(["status", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("lume-ray: error: ") and "not a run directory" in err
    assert main(["status", str(tmp_path / "missing")]) == 2
    assert "no such directory" in capsys.readouterr().err


def test_cli_status_prints_text_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rd = make_run(tmp_path / "run", driver_pid=dead_pid(), finished=True)
    assert main(["status", str(rd.root)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[1].startswith("state: finished")
    assert main(["status", str(rd.root), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["state"] == "finished" and data["algorithms"]["ga"]["done"] == 3
